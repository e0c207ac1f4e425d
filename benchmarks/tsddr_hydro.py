"""TS-DDR on a hydrothermal dispatch case next to the myopic, rolling-horizon and perfect-information policies.

Every policy runs on the same held-out inflow scenarios through the same stage LPs. The default case is the Bolivian
system of the TS-DDR paper as the authors' scripts set it up (loads × 0.6, DC power flow, 96 monthly stages, the
water balance of their exported stage problem), read from ../shared; `--case synthetic` runs the built-in case.

Each part is written to `<out>/work/tsddr_hydro/` when it finishes (baselines as .npz, TS-DDR's run directory with
its checkpoint), so a killed run resumes where it stopped; the report is rebuilt after every part.

    python benchmarks/tsddr_hydro.py                                      # the committed Bolivian comparison
    python benchmarks/tsddr_hydro.py --case synthetic --iterations 100    # a quick look

Writes `<out>/tsddr_hydro.md`, `<out>/tsddr_hydro.json` and `<out>/tsddr_hydro.png` (mean stored volume per stage,
with the authors' curves from the case's `DCPPowerModel/MeanVolume.csv` when it has one).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import tyro

from policylab.core.files import atomic_write
from policylab.offline_rl.tsddr import (
    TSDDR,
    CaseOptions,
    HydroThermalCase,
    Rollout,
    TSDDRConfig,
    myopic,
    perfect_information,
    rolling_horizon,
)

BOLIVIA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hydropowermodels" / "bolivia"
AUTHORS_VOLUME_UNIT = 0.0036
"""the authors' MeanVolume.csv holds Σ volume / 0.0036 (their `volume_to_mw(volume, 1)`)"""
POLICIES = ("myopic", "rolling-horizon", "TS-DDR", "perfect information")


@dataclasses.dataclass
class Settings:
    """What to run."""

    problem: Annotated[CaseOptions, tyro.conf.arg(name="")] = dataclasses.field(
        default_factory=lambda: CaseOptions(str(BOLIVIA), num_stages=96, load_scale=0.6)
    )
    """the case (default: Bolivia as in the authors' scripts)"""
    test_scenarios: int = 100
    """held-out scenarios every policy is evaluated on"""
    test_seed: int = 2024
    """seed of the held-out scenarios (training and validation use TS-DDR's own streams)"""
    iterations: int = 2400
    """TS-DDR gradient steps"""
    eval_every: int = 100
    """TS-DDR steps between validations and checkpoints"""
    tsddr: TSDDRConfig = dataclasses.field(default_factory=lambda: TSDDRConfig(target_range="reachable"))
    """TS-DDR settings"""
    rolling_lookahead: int | None = None
    """stages the rolling-horizon policy plans ahead (default: to the end of the horizon)"""
    num_workers: int = 1
    """threads solving the baselines' stage LPs"""
    threads: int = 1
    """torch threads"""
    out: Path = Path("benchmarks/results")
    """where the report goes; work/tsddr_hydro/ holds the resumable parts"""
    parts: tuple[Literal["myopic", "perfect", "tsddr", "rolling"], ...] = ("myopic", "perfect", "tsddr", "rolling")
    """parts this process runs, in order (two processes may share the parts; each skips what is done)"""
    report_only: bool = False
    """only rebuild the report from the finished parts"""


def case_key(settings: Settings) -> str:
    """Short hash of what defines the case and the held-out scenarios (the baselines' cache key)."""
    fields = {"test_scenarios": settings.test_scenarios, "test_seed": settings.test_seed}
    text = json.dumps(dataclasses.asdict(settings.problem) | fields, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def tsddr_key(settings: Settings) -> str:
    """Short hash of TS-DDR's settings and budget (its run directory's name)."""
    text = json.dumps(
        [dataclasses.asdict(settings.tsddr), settings.iterations, settings.eval_every], sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def save_part(path: Path, result: Rollout, seconds: float, solves: int, **extra: float) -> None:
    arrays = {"stage_costs": result.stage_costs, "states": result.states, "seconds": seconds, "solves": solves}
    atomic_write(path, lambda file: np.savez(file, **arrays, **extra))


def run_baseline(name: str, path: Path, case: HydroThermalCase, noises: np.ndarray, settings: Settings) -> None:
    """Simulate one baseline on the held-out scenarios unless its result is already saved."""
    if path.exists():
        return
    started = time.perf_counter()
    if name == "myopic":
        result = myopic(case, noises, settings.num_workers)
    elif name == "rolling-horizon":
        penalty = 30 * case.stage_lp().max_abs_cost()
        result = rolling_horizon(case, noises, penalty, settings.rolling_lookahead, settings.num_workers)
    else:
        result = perfect_information(case, noises)
    seconds = time.perf_counter() - started
    solves = noises.shape[0] * noises.shape[1] if name != "perfect information" else noises.shape[0]
    save_part(path, result, seconds, solves)
    print(f"{name}: mean cost {result.total_costs.mean():.6g} in {seconds:.0f} s", flush=True)


def run_tsddr(work: Path, case: HydroThermalCase, noises: np.ndarray, settings: Settings) -> None:
    """Train TS-DDR (resuming its run directory), then evaluate its best validated policy."""
    run_dir = work / f"tsddr-{tsddr_key(settings)}"
    path = run_dir / "evaluation.npz"
    if path.exists():
        return
    started = time.perf_counter()
    agent = TSDDR(case, settings.tsddr)
    agent.fit(settings.iterations, settings.eval_every, run_dir=run_dir, resume=True, progress=False)
    wall = time.perf_counter() - started
    training_solves = agent.pool.solves
    evaluation_started = time.perf_counter()
    result = agent.evaluate(noises)
    evaluation_seconds = time.perf_counter() - evaluation_started
    save_part(
        path,
        result,
        evaluation_seconds,
        noises.shape[0] * noises.shape[1],
        train_seconds=agent.train_seconds,
        train_wall_seconds=wall,
        train_solves_this_session=training_solves,
        train_solves=settings.iterations * settings.tsddr.batch_size * case.num_stages,
        best_validation_cost=agent.best_validation_cost,
    )
    print(f"TS-DDR: mean cost {result.total_costs.mean():.6g}, trained {agent.train_seconds:.0f} s", flush=True)


def load_parts(work: Path, settings: Settings) -> dict[str, dict[str, np.ndarray]]:
    files = {
        "myopic": work / "myopic.npz",
        "rolling-horizon": work / "rolling.npz",
        "TS-DDR": work / f"tsddr-{tsddr_key(settings)}" / "evaluation.npz",
        "perfect information": work / "perfect.npz",
    }
    parts = {}
    for name, path in files.items():
        if path.exists():
            with np.load(path) as data:
                parts[name] = {key: data[key] for key in data.files}
    return parts


def summarise(parts: dict[str, dict[str, np.ndarray]], settings: Settings, case: HydroThermalCase) -> dict:
    """Mean ± std cost, the share of the myopic-to-bound gap closed, timings."""
    totals = {name: part["stage_costs"].sum(axis=1) for name, part in parts.items()}
    rows = {}
    for name, total in totals.items():
        row = {
            "mean_cost": float(total.mean()),
            "std_cost": float(total.std(ddof=1)),
            "seconds": float(parts[name]["seconds"]),
        }
        row["lp_solves_per_second"] = float(parts[name]["solves"] / parts[name]["seconds"])
        if "myopic" in totals:
            difference = total - totals["myopic"]
            row["vs_myopic_mean"] = float(difference.mean())
            row["vs_myopic_standard_error"] = float(difference.std(ddof=1) / np.sqrt(len(difference)))
        if "myopic" in totals and "perfect information" in totals:
            gap = totals["myopic"].mean() - totals["perfect information"].mean()
            row["gap_closed"] = float((totals["myopic"].mean() - total.mean()) / gap)
        rows[name] = row
    summary = {
        "settings": json.loads(json.dumps(dataclasses.asdict(settings), default=str)),
        "case": {
            "name": case.name,
            "stages": case.num_stages,
            "buses": case.network.num_buses,
            "generators": len(case.network.generator_max),
            "reservoirs": len(case.reservoirs),
            "branches": len(case.network.branch_from),
            "stage_lp_shape": list(case.stage_lp().matrix.shape),
        },
        "policies": rows,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": settings.threads},
    }
    if "TS-DDR" in parts:
        part = parts["TS-DDR"]
        summary["tsddr_training"] = {
            key: float(part[key])
            for key in ("train_seconds", "train_wall_seconds", "train_solves", "best_validation_cost")
            if key in part
        }
        if "train_seconds" in part:
            summary["tsddr_training"]["lp_solves_per_second"] = float(part["train_solves"] / part["train_seconds"])
    return summary


def write_report(out: Path, work: Path, settings: Settings, case: HydroThermalCase) -> None:
    parts = load_parts(work, settings)
    if not parts:
        return
    summary = summarise(parts, settings, case)
    atomic_write(out / "tsddr_hydro.json", lambda file: file.write(json.dumps(summary, indent=2).encode()))
    atomic_write(out / "tsddr_hydro.md", lambda file: file.write(markdown(summary, settings).encode()))
    plot_volumes(out / "tsddr_hydro.png", parts, settings, case)


def markdown(summary: dict, settings: Settings) -> str:
    case, config, problem = summary["case"], settings.tsddr, settings.problem
    network = " (DC power flow)" if problem.network and case["branches"] else ""
    loads = "" if problem.case == "synthetic" else f"; loads × {problem.load_scale}"
    lines = [
        "# TS-DDR on a hydrothermal dispatch case",
        "",
        f"Case `{case['name']}`: {case['buses']} buses, {case['generators']} generators, {case['reservoirs']} "
        f"reservoirs, {case['branches']} branches{network}{loads}; {case['stages']} stages; stage LP "
        f"{case['stage_lp_shape'][0]} rows × {case['stage_lp_shape'][1]} columns (HiGHS dual simplex, warm-started).",
        f"All policies on the same {settings.test_scenarios} held-out inflow scenarios (seed {settings.test_seed}). "
        "Gap closed = (myopic − policy) / (myopic − perfect information), on mean costs; Δ myopic is the paired "
        "mean difference ± its standard error.",
        "",
        "| policy | mean cost ± std | Δ myopic | gap closed | time (s) | LP solves/s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in POLICIES:
        row = summary["policies"].get(name)
        if row is None:
            lines.append(f"| {name} | (not run yet) | | | | |")
            continue
        delta = (
            f"{row['vs_myopic_mean']:+.0f} ± {row['vs_myopic_standard_error']:.0f}" if "vs_myopic_mean" in row else ""
        )
        gap = f"{100 * row['gap_closed']:.1f}%" if "gap_closed" in row else ""
        lines.append(
            f"| {name} | {row['mean_cost']:.0f} ± {row['std_cost']:.0f} | {delta} | {gap} | {row['seconds']:.0f} | "
            f"{row['lp_solves_per_second']:.0f} |"
        )
    lines += [
        "",
        "Time and LP solves/s are for simulating the held-out scenarios (perfect information: one "
        "whole-horizon LP per scenario).",
    ]
    training = summary.get("tsddr_training")
    if training:
        lines += [
            "",
            f"TS-DDR budget: {settings.iterations} updates × {config.batch_size} scenarios × {case['stages']} "
            f"stages = {training['train_solves']:.0f} stage LP solves; {config.policy.upper()} "
            f"{list(config.hidden_sizes)}, Adam {config.learning_rate}, target range `{config.target_range}`, "
            f"penalty schedule {list(config.penalty_schedule)} × max |cost|, best of validations every "
            f"{settings.eval_every} updates on {config.validation_scenarios} scenarios. Training took "
            f"{training['train_seconds']:.0f} s of updates ({training['lp_solves_per_second']:.0f} stage LP solves/s "
            f"with the policy's forward and backward passes), {config.num_workers} solver thread(s), "
            f"{settings.threads} torch thread(s)"
            + (
                f", {training['train_wall_seconds']:.0f} s wall in the last session."
                if "train_wall_seconds" in training
                else "."
            ),
        ]
    machine = summary["machine"]
    lines += [
        "",
        f"Machine: {machine['platform']}, {machine['cpus']} CPUs, shared with other jobs while this ran.",
        "",
        "![mean volume per stage](tsddr_hydro.png)",
        "",
    ]
    return "\n".join(lines)


def plot_volumes(path: Path, parts: dict, settings: Settings, case: HydroThermalCase) -> None:
    """Mean total stored volume per stage, in the authors' unit (Σ volume / 0.0036), next to their curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5))
    stages = np.arange(1, case.num_stages + 1)
    colours = dict(zip((*POLICIES, "TS-LDR", "SDDP-DCLL"), ("C0", "C1", "C2", "C3", "C4", "C5")))
    for name in POLICIES:
        if name in parts:
            volume = parts[name]["states"].sum(axis=2).mean(axis=0) / AUTHORS_VOLUME_UNIT
            axis.plot(stages, volume, color=colours[name], label=f"{name} (policylab)")
    reference = Path(settings.problem.case) / "DCPPowerModel" / "MeanVolume.csv"
    if settings.problem.case != "synthetic" and reference.exists():
        names = reference.read_text().splitlines()[0].split(",")
        values = np.loadtxt(reference, delimiter=",", skiprows=1, ndmin=2)
        for column, name in enumerate(names):
            axis.plot(
                np.arange(1, len(values) + 1),
                values[:, column],
                "--",
                color=colours.get(name),
                label=f"{name} (authors)",
            )
    axis.set_xlabel("stage")
    axis.set_ylabel("mean Σ volume / 0.0036")
    axis.set_title(f"{case.name}: mean stored water per stage")
    axis.legend(fontsize=8)
    figure.tight_layout()
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=120))
    plt.close(figure)


def main(settings: Settings) -> None:
    torch.set_num_threads(settings.threads)
    case = settings.problem.build()
    work = settings.out / "work" / "tsddr_hydro" / f"{case.name}-{case_key(settings)}"
    work.mkdir(parents=True, exist_ok=True)
    settings.out.mkdir(parents=True, exist_ok=True)
    if not settings.report_only:
        noises = case.sample_noises(settings.test_scenarios, settings.test_seed)
        baselines = {"myopic": "myopic", "perfect": "perfect information", "rolling": "rolling-horizon"}
        for part in settings.parts:
            if part == "tsddr":
                run_tsddr(work, case, noises, settings)
            else:
                run_baseline(baselines[part], work / f"{part}.npz", case, noises, settings)
            write_report(settings.out, work, settings, case)
    write_report(settings.out, work, settings, case)
    print(f"wrote {settings.out / 'tsddr_hydro.md'}")


if __name__ == "__main__":
    main(tyro.cli(Settings))
