"""Hydrothermal dispatch: reservoirs in cascade, thermal generators, deficit, and an optional DC power flow.

The stage LP follows HydroPowerModels.jl's DC model (checked against its `DCPPowerModel.mof.json` exports): powers in
per unit of `base_mva`, costs per unit of power, volumes in hm³, flows in m³/s, and

    reservoir_out = reservoir_in + K (inflow - outflow) - spill + K Σ upstream outflow + Σ upstream spill
    base_mva · pg_hydro = production_factor · outflow
    Σ pg + deficit + Σ flows in - Σ flows out = load     (per bus; deficit priced at cost_deficit · base_mva)
    flow = b (va_from - va_to),  b = x / (r² + x²)

with K = 0.0036 · stage_hours (m³/s over `stage_hours` hours, in hm³). Two sources of cases: `synthetic_case` and
`load_hydropowermodels` (the HydroPowerModels.jl layout: PowerModels.json, hydro.json, inflows.csv).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch

from policylab.offline_rl.tsddr.stage_problem import LPBuilder, StageLP

FLOW_TO_VOLUME_PER_HOUR = 0.0036
"""hm³ carried by 1 m³/s in one hour"""


@dataclasses.dataclass
class Network:
    """Buses, generators, loads and branches, in per unit of `base_mva`."""

    base_mva: float
    num_buses: int
    reference_bus: int
    load: np.ndarray
    """(buses,) demand per bus"""
    deficit_cost: float
    """cost per unit of unserved demand (already × base_mva, like generator costs)"""
    generator_bus: np.ndarray
    generator_min: np.ndarray
    generator_max: np.ndarray
    generator_cost: np.ndarray
    """(generators,) linear cost per unit"""
    branch_from: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=int))
    branch_to: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=int))
    branch_susceptance: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    branch_rating: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    angle_min: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    angle_max: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))

    @property
    def has_branches(self) -> bool:
        return len(self.branch_from) > 0


@dataclasses.dataclass
class Reservoirs:
    """Hydro plants (one reservoir and one turbine each), arrays over plants."""

    min_volume: np.ndarray
    max_volume: np.ndarray
    initial_volume: np.ndarray
    min_outflow: np.ndarray
    max_outflow: np.ndarray
    production_factor: np.ndarray
    """MW per m³/s"""
    generator: np.ndarray
    """index of each plant's generator in the network"""
    spill_cost: np.ndarray
    min_volume_violation_cost: np.ndarray
    min_outflow_violation_cost: np.ndarray
    downstream_outflow: list[list[int]]
    """for each plant, the plants its turbined water flows into"""
    downstream_spill: list[list[int]]
    """for each plant, the plants its spilled water flows into"""
    names: list[str] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.max_volume)


class HistoricalInflows:
    """Stage-wise independent inflows: each stage draws one of the recorded scenarios of its row (rows cycled)."""

    def __init__(self, table: np.ndarray, period: int | None = None):
        self.table = np.asarray(table, dtype=np.float64)
        """(rows, plants, scenarios)"""
        self.period = period or self.table.shape[0]

    def sample(self, num_scenarios: int, num_stages: int, rng: np.random.Generator) -> np.ndarray:
        """(scenarios, stages, plants) inflows."""
        rows = np.arange(num_stages) % self.table.shape[0]
        choice = rng.integers(self.table.shape[2], size=(num_scenarios, num_stages))
        return self.table[rows[None, :], :, choice]

    def expected(self, num_stages: int) -> np.ndarray:
        """(stages, plants) mean inflows."""
        return self.table.mean(axis=2)[np.arange(num_stages) % self.table.shape[0]]


class LogNormalInflows:
    """Seasonal log-normal inflows with AR(1) log-noise: mean_r · season(t) · exp(z_t - σ²/2), z AR(1) of std σ."""

    def __init__(
        self, mean: np.ndarray, amplitude: float = 0.6, sigma: float = 0.4, correlation: float = 0.6, period=12
    ):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.amplitude, self.sigma, self.correlation, self.period = amplitude, sigma, correlation, period

    def season(self, num_stages: int) -> np.ndarray:
        return 1.0 + self.amplitude * np.cos(2 * np.pi * np.arange(num_stages) / self.period)

    def sample(self, num_scenarios: int, num_stages: int, rng: np.random.Generator) -> np.ndarray:
        shocks = rng.standard_normal((num_scenarios, num_stages, len(self.mean)))
        z = np.empty_like(shocks)
        z[:, 0] = self.sigma * shocks[:, 0]
        innovation = self.sigma * math.sqrt(1 - self.correlation**2)
        for t in range(1, num_stages):
            z[:, t] = self.correlation * z[:, t - 1] + innovation * shocks[:, t]
        return self.expected(num_stages) * np.exp(z - self.sigma**2 / 2)

    def expected(self, num_stages: int) -> np.ndarray:
        return self.season(num_stages)[:, None] * self.mean


@dataclasses.dataclass
class HydroThermalCase:
    """A hydrothermal dispatch problem: network, reservoirs, inflow model and horizon."""

    name: str
    network: Network
    reservoirs: Reservoirs
    inflows: HistoricalInflows | LogNormalInflows
    num_stages: int
    flow_to_volume: float
    """K: hm³ per m³/s over one stage"""

    def stage_lp(self) -> StageLP:
        """The stage LP (the same every stage; the previous volumes and inflows enter as right-hand sides)."""
        return build_stage_lp(self.network, self.reservoirs, self.flow_to_volume)

    @property
    def initial_state(self) -> np.ndarray:
        return self.reservoirs.initial_volume

    @property
    def season_length(self) -> int:
        return self.inflows.period

    def sample_noises(self, num_scenarios: int, seed: int | list[int]) -> np.ndarray:
        """(scenarios, stages, plants) inflow scenarios drawn with `seed`."""
        return self.inflows.sample(num_scenarios, self.num_stages, np.random.default_rng(seed))

    def expected_noises(self) -> np.ndarray:
        """(stages, plants) expected inflows."""
        return self.inflows.expected(self.num_stages)

    def reachable_states(
        self, previous: torch.Tensor, noises: torch.Tensor, upstream: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, plants) volumes one stage can reach without spilling, differentiable in `previous`: from what is left
        when turbining at full flow, to the previous volume plus the stage's natural inflow, within capacity.
        `upstream=True` adds to the upper end all the water the plants upstream could release into it (turbines at
        full flow, spill where it flows down), so that a target may store upstream releases."""
        as_tensor = lambda values: torch.as_tensor(values, dtype=previous.dtype, device=previous.device)  # noqa: E731
        available = previous + self.flow_to_volume * noises
        capacity = as_tensor(self.reservoirs.max_volume)
        max_release = self.flow_to_volume * as_tensor(self.reservoirs.max_outflow)
        lower = torch.clamp(available - max_release, min=0.0)
        upper = available + self._upstream_releases(available, max_release) if upstream else available
        return torch.minimum(lower, capacity), torch.minimum(upper, capacity)

    def _upstream_releases(self, available: torch.Tensor, max_release: torch.Tensor) -> torch.Tensor:
        """(S, plants) the most water all plants upstream of each plant can send into it in one stage."""
        reservoirs = self.reservoirs
        releasable: dict[int, torch.Tensor] = {}  # what a plant holds this stage, its own upstream releases included

        def holding(plant: int) -> torch.Tensor:
            if plant not in releasable:
                releasable[plant] = available[:, plant] + arriving(plant)
            return releasable[plant]

        def arriving(plant: int) -> torch.Tensor:
            total = torch.zeros_like(available[:, plant])
            for source in range(len(reservoirs)):
                if plant in reservoirs.downstream_spill[source]:
                    total = total + holding(source)
                elif plant in reservoirs.downstream_outflow[source]:
                    total = total + torch.minimum(holding(source), max_release[source])
            return total

        return torch.stack([arriving(plant) for plant in range(len(reservoirs))], dim=1)


def build_stage_lp(network: Network, reservoirs: Reservoirs, flow_to_volume: float) -> StageLP:
    """Assemble the stage LP of HydroPowerModels.jl's DC model (module docstring)."""
    lp = LPBuilder()
    num_plants = len(reservoirs)
    generation = lp.columns(
        "pg", len(network.generator_max), network.generator_min, network.generator_max, network.generator_cost
    )
    deficit = lp.columns("deficit", network.num_buses, cost=network.deficit_cost)
    volume = lp.columns("reservoir_out", num_plants, 0.0, reservoirs.max_volume)
    outflow = lp.columns("outflow", num_plants, 0.0, reservoirs.max_outflow)
    spill = lp.columns("spill", num_plants, cost=reservoirs.spill_cost)
    volume_violation = lp.columns("min_volume_violation", num_plants, cost=reservoirs.min_volume_violation_cost)
    outflow_violation = lp.columns("min_outflow_violation", num_plants, cost=reservoirs.min_outflow_violation_cost)

    balance = lp.rows(network.num_buses, network.load, network.load)
    lp.add(balance[network.generator_bus], generation, 1.0)
    lp.add(balance, deficit, 1.0)
    if network.has_branches:
        num_branches = len(network.branch_from)
        upper_angle = np.where(np.arange(network.num_buses) == network.reference_bus, 0.0, np.inf)
        angle = lp.columns("va", network.num_buses, -upper_angle, upper_angle)
        rating = np.where(network.branch_rating > 0, network.branch_rating, np.inf)
        flow = lp.columns("p", num_branches, -rating, rating)
        lp.add(balance[network.branch_to], flow, 1.0)
        lp.add(balance[network.branch_from], flow, -1.0)
        flow_rows = lp.rows(num_branches)  # p - b (va_from - va_to) = 0
        lp.add(flow_rows, flow, 1.0)
        lp.add(flow_rows, angle[network.branch_from], -network.branch_susceptance)
        lp.add(flow_rows, angle[network.branch_to], network.branch_susceptance)
        angle_rows = lp.rows(num_branches, network.angle_min, network.angle_max)
        lp.add(angle_rows, angle[network.branch_from], 1.0)
        lp.add(angle_rows, angle[network.branch_to], -1.0)

    water = lp.rows(num_plants)  # linking rows: right-hand side x_prev + K inflow
    lp.add(water, volume, 1.0)
    lp.add(water, outflow, flow_to_volume)
    lp.add(water, spill, 1.0)
    for plant in range(num_plants):
        for downstream in reservoirs.downstream_outflow[plant]:
            lp.add(water[downstream], outflow[plant], -flow_to_volume)
        for downstream in reservoirs.downstream_spill[plant]:
            lp.add(water[downstream], spill[plant], -1.0)
    energy = lp.rows(num_plants)
    lp.add(energy, generation[reservoirs.generator], network.base_mva)
    lp.add(energy, outflow, -reservoirs.production_factor)
    volume_floor = lp.rows(num_plants, reservoirs.min_volume, np.inf)
    lp.add(volume_floor, volume, 1.0)
    lp.add(volume_floor, volume_violation, 1.0)
    outflow_floor = lp.rows(num_plants, reservoirs.min_outflow, np.inf)
    lp.add(outflow_floor, outflow, 1.0)
    lp.add(outflow_floor, outflow_violation, 1.0)
    return lp.build(
        state_columns=volume,
        linking_rows=water,
        linking_offset=np.zeros(num_plants),
        state_in=np.eye(num_plants),
        noise_in=flow_to_volume * np.eye(num_plants),
    )


def synthetic_case(num_stages: int = 24, num_reservoirs: int = 3, seed: int = 0) -> HydroThermalCase:
    """A small single-bus system: reservoirs in one cascade, three thermal units, seasonal log-normal inflows.

    Hydro can cover all the demand in the wet season but not half of it in the dry one, when the thermal units
    alone fall short too: water must be carried over, which a myopic dispatch does not do.
    """
    rng = np.random.default_rng(seed)
    stage_hours = 720.0  # monthly stages
    flow_to_volume = FLOW_TO_VOLUME_PER_HOUR * stage_hours
    max_outflow = np.full(num_reservoirs, 50.0)
    thermal_max = np.array([0.25, 0.25, 0.25])
    network = Network(
        base_mva=100.0,
        num_buses=1,
        reference_bus=0,
        load=np.array([1.2]),
        deficit_cost=50_000.0,
        generator_bus=np.zeros(len(thermal_max) + num_reservoirs, dtype=int),
        generator_min=np.zeros(len(thermal_max) + num_reservoirs),
        generator_max=np.concatenate([thermal_max, max_outflow / 100.0]),
        generator_cost=np.concatenate([[5_000.0, 10_000.0, 20_000.0], np.zeros(num_reservoirs)]),
    )
    zeros = np.zeros(num_reservoirs)
    max_volume = np.full(num_reservoirs, 4 * 30.0 * flow_to_volume)  # four months of 30 m³/s
    reservoirs = Reservoirs(
        min_volume=zeros.copy(),
        max_volume=max_volume,
        initial_volume=0.5 * max_volume,
        min_outflow=zeros.copy(),
        max_outflow=max_outflow,
        production_factor=np.ones(num_reservoirs),
        generator=np.arange(len(thermal_max), len(thermal_max) + num_reservoirs),
        spill_cost=zeros.copy(),
        min_volume_violation_cost=zeros.copy(),
        min_outflow_violation_cost=zeros.copy(),
        downstream_outflow=[[r + 1] for r in range(num_reservoirs - 1)] + [[]],
        downstream_spill=[[r + 1] for r in range(num_reservoirs - 1)] + [[]],
        names=[f"hydro{r}" for r in range(num_reservoirs)],
    )
    mean_inflow = np.concatenate([[15.0], np.full(num_reservoirs - 1, 5.0)]) * rng.uniform(0.9, 1.1, num_reservoirs)
    return HydroThermalCase(
        name="synthetic",
        network=network,
        reservoirs=reservoirs,
        inflows=LogNormalInflows(mean_inflow),
        num_stages=num_stages,
        flow_to_volume=flow_to_volume,
    )


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path.name} not found in {path.parent}: a HydroPowerModels case folder holds PowerModels.json, "
            "hydro.json and inflows.csv"
        )
    return json.loads(path.read_text())


def load_hydropowermodels(
    folder: str | Path,
    num_stages: int | None = None,
    load_scale: float = 1.0,
    stage_hours: float = 1.0,
    network: bool = True,
) -> HydroThermalCase:
    """Read a case in HydroPowerModels.jl's layout.

    `load_scale` multiplies every load (the TS-DDR scripts use 0.6 on the Bolivian case); `stage_hours` sets
    K = 0.0036 · stage_hours (HydroPowerModels' own default is 1, as in its exported stage problems; hydro.json's
    stage_hours is not used by its water balance); `network=False` drops the branches (one balance per bus).
    """
    folder = Path(folder)
    power = _read_json(folder / "PowerModels.json")
    hydro = _read_json(folder / "hydro.json")
    inflow_file = folder / "inflows.csv"
    if not inflow_file.is_file():
        raise FileNotFoundError(f"inflows.csv not found in {folder} (stages × plants·scenarios of inflows in m³/s)")

    buses = sorted(power["bus"].values(), key=lambda bus: bus["index"])
    buses = [bus for bus in buses if bus.get("bus_type", 1) != 4]
    bus_position = {bus["index"]: i for i, bus in enumerate(buses)}
    reference = [i for i, bus in enumerate(buses) if bus.get("bus_type") == 3]
    gens = sorted(power["gen"].items(), key=lambda item: int(item[0]))
    gens = [(key, gen) for key, gen in gens if gen.get("gen_status", 1) == 1]
    gen_position = {int(key): i for i, (key, _) in enumerate(gens)}

    def linear_cost(gen: dict) -> float:
        cost = gen.get("cost", [])
        if gen.get("model", 2) != 2 or (len(cost) > 2 and any(cost[:-2])):
            raise ValueError(f"generator {gen.get('index')}: only linear (polynomial, ncost <= 2) costs are supported")
        return float(cost[-2]) if len(cost) >= 2 else 0.0

    load = np.zeros(len(buses))
    for item in power["load"].values():
        if item.get("status", 1) == 1:
            load[bus_position[item["load_bus"]]] += load_scale * item["pd"]
    for shunt in power.get("shunt", {}).values():
        if shunt.get("status", 1) == 1:
            load[bus_position[shunt["shunt_bus"]]] += shunt.get("gs", 0.0)
    branches = [b for _, b in sorted(power["branch"].items(), key=lambda item: int(item[0])) if b["br_status"] == 1]
    if not network:
        branches = []
    grid = Network(
        base_mva=float(power["baseMVA"]),
        num_buses=len(buses),
        reference_bus=reference[0] if reference else 0,
        load=load,
        deficit_cost=float(power.get("cost_deficit", 0.0)) * float(power["baseMVA"]),
        generator_bus=np.array([bus_position[gen["gen_bus"]] for _, gen in gens], dtype=int),
        generator_min=np.array([gen["pmin"] for _, gen in gens], dtype=float),
        generator_max=np.array([gen["pmax"] for _, gen in gens], dtype=float),
        generator_cost=np.array([linear_cost(gen) for _, gen in gens]),
        branch_from=np.array([bus_position[b["f_bus"]] for b in branches], dtype=int),
        branch_to=np.array([bus_position[b["t_bus"]] for b in branches], dtype=int),
        branch_susceptance=np.array([b["br_x"] / (b["br_r"] ** 2 + b["br_x"] ** 2) for b in branches]),
        branch_rating=np.array([b.get("rate_a", 0.0) for b in branches], dtype=float),
        angle_min=np.array([b.get("angmin", -np.inf) for b in branches], dtype=float),
        angle_max=np.array([b.get("angmax", np.inf) for b in branches], dtype=float),
    )

    plants = hydro["Hydrogenerators"]
    plant_position = {plant["index"]: i for i, plant in enumerate(plants)}

    def field(name: str, default: float = 0.0) -> np.ndarray:
        # Some published files hold denormal garbage (≈1e-316) for zero; anything that small is zero.
        values = np.array([float(plant.get(name, default)) for plant in plants])
        return np.where(np.abs(values) < 1e-100, 0.0, values)

    missing = [plant["index_grid"] for plant in plants if plant["index_grid"] not in gen_position]
    if missing:
        raise ValueError(f"hydro.json: plants on generators {missing} that PowerModels.json does not have (in service)")
    reservoirs = Reservoirs(
        min_volume=field("min_volume"),
        max_volume=field("max_volume"),
        initial_volume=field("initial_volume"),
        min_outflow=field("min_turn"),
        max_outflow=field("max_turn"),
        production_factor=field("production_factor"),
        generator=np.array([gen_position[plant["index_grid"]] for plant in plants], dtype=int),
        spill_cost=field("spill_cost"),
        min_volume_violation_cost=field("minimal_volume_violation_cost"),
        min_outflow_violation_cost=field("minimal_outflow_violation_cost"),
        downstream_outflow=[[plant_position[i] for i in plant.get("downstream_turn", [])] for plant in plants],
        downstream_spill=[[plant_position[i] for i in plant.get("downstream_spill", [])] for plant in plants],
        names=[str(plant.get("name", plant["index"])).strip() for plant in plants],
    )

    table = np.loadtxt(inflow_file, delimiter=",", ndmin=2)
    if table.shape[1] % len(plants):
        raise ValueError(f"{inflow_file}: {table.shape[1]} columns is not a multiple of {len(plants)} plants")
    table = table.reshape(table.shape[0], len(plants), table.shape[1] // len(plants))  # plant-major columns
    return HydroThermalCase(
        name=folder.name,
        network=grid,
        reservoirs=reservoirs,
        inflows=HistoricalInflows(table),
        num_stages=num_stages or table.shape[0],
        flow_to_volume=FLOW_TO_VOLUME_PER_HOUR * stage_hours,
    )


@dataclasses.dataclass
class CaseOptions:
    """Which hydrothermal case to build: the synthetic one or a HydroPowerModels.jl case folder."""

    case: str = "synthetic"
    """"synthetic" (the built-in case) or a folder in HydroPowerModels.jl's layout (PowerModels.json, hydro.json,
    inflows.csv)"""
    num_stages: int | None = None
    """stages of the horizon (default: 24 for synthetic, the rows of inflows.csv for a folder)"""
    load_scale: float = 1.0
    """multiplies every load of a case folder (the TS-DDR paper's Bolivian runs use 0.6)"""
    stage_hours: float = 1.0
    """water balance K = 0.0036 · stage_hours for a case folder (1: the authors' exported stage problems)"""
    network: bool = True
    """DC power flow over a case folder's branches (False: one balance per bus)"""

    def build(self) -> HydroThermalCase:
        if self.case == "synthetic":
            return synthetic_case(num_stages=self.num_stages or 24)
        if not Path(self.case).is_dir():
            raise FileNotFoundError(
                f"case {self.case!r} is neither 'synthetic' nor a folder holding PowerModels.json, hydro.json and "
                "inflows.csv"
            )
        return load_hydropowermodels(self.case, self.num_stages, self.load_scale, self.stage_hours, self.network)
