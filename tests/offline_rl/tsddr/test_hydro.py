"""The hydrothermal stage LP equals the authors' exported stage problem (MathOptFormat) on the same inputs."""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.optimize import linprog

from policylab.offline_rl.tsddr import StageProblem, load_hydropowermodels, synthetic_case

CASES = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "hydropowermodels"
needs_cases = pytest.mark.skipif(not CASES.is_dir(), reason=f"HydroPowerModels test cases not found at {CASES}")


def solve_mof(model: dict, fixed: dict[str, float]) -> float:
    """Optimal value of a MathOptFormat LP (affine constraints, variable bounds), with some variables re-fixed."""
    names = [variable["name"] for variable in model["variables"]]
    column = {name: i for i, name in enumerate(names)}
    lower, upper = np.full(len(names), -np.inf), np.full(len(names), np.inf)
    rows, columns, values, row_lower, row_upper = [], [], [], [], []
    for constraint in model["constraints"]:
        function, bounds = constraint["function"], constraint["set"]
        low = bounds.get("lower", bounds.get("value", -np.inf))
        high = bounds.get("upper", bounds.get("value", np.inf))
        if bounds["type"] == "GreaterThan":
            high = np.inf
        if bounds["type"] == "LessThan":
            low = -np.inf
        if function["type"] == "Variable":
            i = column[function["name"]]
            if bounds["type"] == "EqualTo" and function["name"] in fixed:
                low = high = fixed[function["name"]]
            lower[i], upper[i] = max(lower[i], low), min(upper[i], high)
            continue
        assert function["type"] == "ScalarAffineFunction", function["type"]
        for term in function["terms"]:
            rows.append(len(row_lower))
            columns.append(column[term["variable"]])
            values.append(term["coefficient"])
        row_lower.append(low - function["constant"])
        row_upper.append(high - function["constant"])
    cost = np.zeros(len(names))
    for term in model["objective"]["function"]["terms"]:
        cost[column[term["variable"]]] += term["coefficient"]
    matrix = sp.csr_matrix((values, (rows, columns)), shape=(len(row_lower), len(names)))
    finite_low, finite_high = np.isfinite(row_lower), np.isfinite(row_upper)
    equal = finite_low & finite_high & (np.array(row_lower) == np.array(row_upper))
    a_ub = sp.vstack([matrix[finite_high & ~equal], -matrix[finite_low & ~equal]])
    b_ub = np.concatenate([np.array(row_upper)[finite_high & ~equal], -np.array(row_lower)[finite_low & ~equal]])
    result = linprog(
        cost,
        A_ub=a_ub,
        b_ub=b_ub,
        A_eq=matrix[equal],
        b_eq=np.array(row_lower)[equal],
        bounds=list(zip(lower, upper)),
        method="highs",
    )
    assert result.status == 0, result.message
    return result.fun + model["objective"]["function"]["constant"]


@needs_cases
@pytest.mark.parametrize(
    ("case", "load_scale", "inputs"),
    [
        ("case3", 1.0, [([0.18], [80.0]), ([0.0], [10.0]), ([0.54], [120.0]), ([0.3], [0.0])]),
        ("bolivia", 0.6, [("mof", "mof"), ("half", "low"), ("full", "high")]),
    ],
)
def test_stage_lp_matches_authors_mof(case, load_scale, inputs):
    folder = CASES / case
    model = json.loads((folder / "DCPPowerModel.mof.json").read_text())
    hydro = load_hydropowermodels(folder, load_scale=load_scale)
    num_plants = len(hydro.reservoirs)
    mof_inflow = np.array([_fixed_value(model, f"inflow[{i + 1}]") for i in range(num_plants)])
    named = {
        "mof": np.array([_fixed_value(model, f"reservoir[{i + 1}]_in") for i in range(num_plants)]),
        "half": 0.5 * hydro.reservoirs.max_volume,
        "full": hydro.reservoirs.max_volume,
        "low": 0.2 * mof_inflow,
        "high": 3.0 * mof_inflow,
    }
    problem = StageProblem(hydro.stage_lp(), target_penalty=0.0)  # a free target: the plain stage problem
    for volume, inflow in inputs:
        volume = np.asarray(named.get(volume, volume) if isinstance(volume, str) else volume, dtype=float)
        inflow = np.asarray(named.get(inflow, inflow) if isinstance(inflow, str) else inflow, dtype=float)
        fixed = {f"reservoir[{i + 1}]_in": volume[i] for i in range(num_plants)}
        fixed |= {f"inflow[{i + 1}]": inflow[i] for i in range(num_plants)}
        expected = solve_mof(model, fixed)
        ours = problem.solve(volume, inflow, np.zeros(num_plants))
        assert ours.operational_cost == pytest.approx(expected, rel=1e-7, abs=1e-6), (case, volume, inflow)
        assert ours.objective == pytest.approx(ours.operational_cost)


def _fixed_value(model: dict, name: str) -> float:
    for constraint in model["constraints"]:
        function = constraint["function"]
        if function["type"] == "Variable" and function["name"] == name and constraint["set"]["type"] == "EqualTo":
            return constraint["set"]["value"]
    raise KeyError(name)


@needs_cases
def test_bolivia_case_shape():
    hydro = load_hydropowermodels(CASES / "bolivia", num_stages=96, load_scale=0.6)
    assert (hydro.network.num_buses, len(hydro.network.generator_max), len(hydro.reservoirs)) == (28, 34, 11)
    assert hydro.network.load.sum() == pytest.approx(0.6 * 8.04220238095238)
    inflows = hydro.sample_noises(5, seed=0)
    assert inflows.shape == (5, 96, 11) and (inflows >= 0).all()
    # stage 48 cycles back to the first row of inflows.csv
    table = hydro.inflows.table
    assert all(any(np.allclose(inflows[s, 48], table[0, :, k]) for k in range(table.shape[2])) for s in range(5))


def test_missing_case_file_is_named(tmp_path):
    (tmp_path / "PowerModels.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"hydro\.json not found in .*" + tmp_path.name):
        load_hydropowermodels(tmp_path)


def test_reachable_states_count_upstream_releases_when_asked():
    case = synthetic_case(num_stages=4)  # a cascade 0 -> 1 -> 2, turbines and spill flowing down
    previous = torch.tensor(0.3 * case.reservoirs.max_volume)[None]
    noise = torch.tensor(case.sample_noises(1, seed=0)[:, 0])
    available = previous + case.flow_to_volume * noise
    capacity = torch.tensor(case.reservoirs.max_volume)
    lower, upper = case.reachable_states(previous, noise)
    wider_lower, wider = case.reachable_states(previous, noise, upstream=True)
    torch.testing.assert_close(upper, torch.minimum(available, capacity))
    torch.testing.assert_close(wider_lower, lower)
    torch.testing.assert_close(wider, torch.minimum(available.cumsum(dim=1), capacity))
