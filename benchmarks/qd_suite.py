"""Quality-diversity suite: MAP-Elites, PGA-MAP-Elites and DCG-MAP-Elites on the QD-RL locomotion tasks, and the
library's MAP-Elites next to pyribs' on the planar arm.

Locomotion: each (task, method, seed) is one run directory under `run_root` (git-ignored), resumed when the script
is run again, and one result file `output/<task>-<method>-s<seed>.json` written as soon as the run ends (QD-score,
coverage, max fitness; for DCG-ME the distilled actor's QD-score, coverage and distance to its target descriptor).
`--budget paper` is the papers' setting (batch 256, 1024 CVT cells, 3000 critic and 150 PG steps, 4000 iterations
= 1,024,000 evaluations); `--budget reduced` is what a small CPU affords (see `REDUCED`), stated in the results.

Planar arm: the same iso-line MAP-Elites (same grid, σ, bounds, initial solutions and objective function) run by
policylab and by pyribs (`pip install ribs`, needed by this comparison only), with random search as the floor:
QD-score, coverage and evaluations per second side by side.

    python benchmarks/qd_suite.py --part arm                          # writes results/qd_suite/planar_arm.{json,md}
    python benchmarks/qd_suite.py --part locomotion --budget reduced  # results/qd_suite/*.json, summary.md, png
    python benchmarks/qd_suite.py --smoke                             # a tiny run of both parts, writes nothing
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import platform
import shutil
import tempfile
import time
from typing import Any, Literal

import numpy as np
import torch
import tyro

from policylab.core.files import atomic_write
from policylab.evolution import (
    DCGConfig,
    MAPElitesConfig,
    PGAConfig,
    PlanarArmTask,
    QDPolicyTask,
    evaluate_distilled_actor,
    make_qd_method,
    random_search,
)
from policylab.evolution.map_elites import MAPElites, make_archive

RESULTS = pathlib.Path(__file__).parent / "results" / "qd_suite"
METHODS = ("me", "pga-me", "dcg-me")


@dataclasses.dataclass(frozen=True)
class Budget:
    """Everything a locomotion run's size depends on."""

    iterations: int
    batch_size: int
    """offspring per iteration; ME all iso-line, PGA-ME half iso-line, half PG (one of them the greedy actor),
    DCG-ME half iso-line, a quarter PG and a quarter actor injection"""
    cells: int
    critic_steps: int
    pg_steps: int
    replay_capacity: int
    episode_length: int | None
    """None: the task's (1000 for *_uni, 250 for ant_omni)"""
    hidden_sizes: tuple[int, ...] = (128, 128)


PAPER = Budget(4000, 256, 1024, 3000, 150, 1_000_000, None)
REDUCED = Budget(15, 64, 256, 300, 50, 200_000, 250)
SMOKE = Budget(2, 8, 16, 4, 2, 2000, 10, (8,))


@dataclasses.dataclass
class Args:
    part: Literal["all", "arm", "locomotion"] = "all"
    tasks: tuple[str, ...] = ("walker2d_uni", "ant_omni")
    methods: tuple[str, ...] = METHODS
    seeds: tuple[int, ...] = (0, 1)
    budget: Literal["reduced", "paper"] = "reduced"
    threads: int = 1
    """physics and torch threads"""
    arm_dof: int = 100
    arm_iterations: int = 500
    arm_batch_size: int = 100
    arm_cells: tuple[int, int] = (100, 100)
    smoke: bool = False
    """a tiny run of every part that writes nothing"""
    output: pathlib.Path = RESULTS
    run_root: pathlib.Path = RESULTS.parent / "work" / "qd_suite"
    """run directories (git-ignored: their checkpoints hold replay buffers of hundreds of MB)"""


def method_configs(method: str, budget: Budget, seed: int) -> tuple[MAPElitesConfig, Any]:
    """The MAP-Elites config and emitter config of `method` at `budget`."""
    learner = {
        "pg_steps": budget.pg_steps,
        "critic_steps": budget.critic_steps,
        "replay_capacity": budget.replay_capacity,
    }
    half = budget.batch_size // 2
    common = {"cells": budget.cells, "initial_population": budget.batch_size, "seed": seed}
    if method == "me":
        return MAPElitesConfig(ga_batch_size=budget.batch_size, **common), None
    if method == "pga-me":
        return MAPElitesConfig(ga_batch_size=half, **common), PGAConfig(pg_batch_size=half - 1, **learner)
    quarter = half // 2
    dcg = DCGConfig(pg_batch_size=quarter, injection_batch_size=half - quarter, **learner)
    return MAPElitesConfig(ga_batch_size=half, **common), dcg


def run_locomotion(args: Args, task_name: str, method: str, seed: int, budget: Budget, output: pathlib.Path) -> dict:
    """One run to its end (resumed if its directory holds a checkpoint); returns its results."""
    task = QDPolicyTask(task_name, budget.hidden_sizes, episode_length=budget.episode_length, threads=args.threads)
    config, emitter_config = method_configs(method, budget, seed)
    me = make_qd_method(method, task, config, emitter_config, workers=args.threads)
    name = f"{task_name}-{method}-s{seed}"
    run_dir = args.run_root / name
    started = time.perf_counter()
    try:
        me.run(budget.iterations, run_dir, resume=True, progress=False, checkpoint_every=5)
    finally:
        me.close()
    result = {
        "task": task_name,
        "method": method,
        "seed": seed,
        "budget": dataclasses.asdict(budget),
        "evaluations": me.evaluations,
        "env_steps": me.env_steps,
        "qd_score": me.archive.qd_score(me.qd_offset),
        "coverage": me.archive.coverage(),
        "max_fitness": me.archive.max_fitness(),
        "seconds_this_session": time.perf_counter() - started,
        "machine": machine(args.threads),
        "qd_score_curve": [(row["evaluations"], row["qd_score"]) for row in me.history],
    }
    if method == "dcg-me":
        result |= evaluate_distilled_actor(me.emitters[-1], me.archive, me.qd_offset, seed=seed + 10_000)
    if (run_dir / "archive.png").exists():
        (output / "archives").mkdir(exist_ok=True)
        shutil.copyfile(run_dir / "archive.png", output / "archives" / f"{name}.png")
    return result


def locomotion(args: Args, output: pathlib.Path) -> list[dict]:
    """Every (task, method, seed) run not yet finished, then the summary table and plot."""
    budget = SMOKE if args.smoke else {"reduced": REDUCED, "paper": PAPER}[args.budget]
    results = []
    for task_name in args.tasks:
        for method in args.methods:
            for seed in args.seeds:
                path = output / f"{task_name}-{method}-s{seed}.json"
                if path.exists():
                    results.append(json.loads(path.read_text()))
                    continue
                result = run_locomotion(args, task_name, method, seed, budget, output)
                text = json.dumps(result, indent=2) + "\n"
                atomic_write(path, lambda file, text=text: file.write(text.encode()))
                print(f"{task_name} {method} seed {seed}: QD-score {result['qd_score']:.4g}", flush=True)
                results.append(result)
    write_summary(results, output)
    return results


def mean_and_error(values: list[float]) -> str:
    """mean ± standard error (± 0 for one value)."""
    error = np.std(values, ddof=1) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return f"{np.mean(values):.4g} ± {error:.2g}"


def write_summary(results: list[dict], output: pathlib.Path) -> None:
    """summary.md (mean ± s.e. over seeds) and qd_score.png (QD-score against evaluations, one panel per task)."""
    columns = ["qd_score", "coverage", "max_fitness", "distilled_qd_score", "distilled_distance_to_target"]
    lines = ["| task | method | seeds | evaluations | " + " | ".join(columns) + " |", "|---" * (4 + len(columns)) + "|"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for result in results:
        groups.setdefault((result["task"], result["method"]), []).append(result)
    for (task_name, method), runs in groups.items():
        cells = [mean_and_error([run[column] for run in runs]) if column in runs[0] else "" for column in columns]
        evaluations = runs[0]["evaluations"]
        lines.append(f"| {task_name} | {method} | {len(runs)} | {evaluations} | " + " | ".join(cells) + " |")
    budget = results[0]["budget"] if results else {}
    text = f"Budget: {json.dumps(budget)}; machine: {results[0]['machine'] if results else ''}\n\n"
    (output / "summary.md").write_text(text + "\n".join(lines) + "\n")
    plot_curves(groups, output / "qd_score.png")


def plot_curves(groups: dict[tuple[str, str], list[dict]], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({task_name for task_name, _ in groups})
    if not tasks:
        return
    figure, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for axis, task_name in zip(axes[0], tasks):
        for (group_task, method), runs in groups.items():
            if group_task != task_name:
                continue
            curves = np.array([[score for _, score in run["qd_score_curve"]] for run in runs])
            evaluations = [count for count, _ in runs[0]["qd_score_curve"]]
            axis.plot(evaluations, curves.mean(0), label=method)
            if len(runs) > 1:
                axis.fill_between(evaluations, curves.min(0), curves.max(0), alpha=0.2)
        axis.set_title(task_name)
        axis.set_xlabel("evaluations")
        axis.set_ylabel("QD-score")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# -- planar arm: policylab next to pyribs ------------------------------------------------------------------


def arm_policylab(task: PlanarArmTask, config: MAPElitesConfig, iterations: int) -> dict:
    me = MAPElites(task, config)
    started = time.perf_counter()
    me.run(iterations, progress=False)
    seconds = time.perf_counter() - started
    archive = me.archive
    return {
        "qd_score": archive.qd_score(task.qd_offset),
        "coverage": archive.coverage(),
        "max_fitness": archive.max_fitness(),
        "evaluations": me.evaluations,
        "evaluations_per_second": me.evaluations / seconds,
    }


def arm_pyribs(task: PlanarArmTask, config: MAPElitesConfig, iterations: int) -> dict:
    """The same algorithm with pyribs' GridArchive, IsoLineEmitter and Scheduler, from the same initial solutions."""
    from ribs.archives import GridArchive
    from ribs.emitters import IsoLineEmitter
    from ribs.schedulers import Scheduler

    generator = torch.Generator().manual_seed(config.seed)
    initial = task.initial_params(config.initial_population, generator).numpy()
    archive = GridArchive(
        solution_dim=task.num_params,
        dims=config.grid_shape,
        ranges=list(zip(task.lower, task.upper)),
        qd_score_offset=-task.qd_offset,
        seed=config.seed,
    )
    emitter = IsoLineEmitter(
        archive,
        iso_sigma=config.iso_sigma,
        line_sigma=config.line_sigma,
        initial_solutions=initial,
        bounds=[task.solution_bounds] * task.num_params,
        batch_size=config.ga_batch_size,
        seed=config.seed,
    )
    scheduler = Scheduler(archive, [emitter])
    evaluations, started = 0, time.perf_counter()
    for _ in range(iterations):
        solutions = scheduler.ask()
        result = task.evaluate(torch.from_numpy(solutions))
        scheduler.tell(result.fitness, result.behaviours)
        evaluations += len(solutions)
    seconds = time.perf_counter() - started
    return {
        "qd_score": float(archive.stats.qd_score),
        "coverage": float(archive.stats.coverage),
        "max_fitness": float(archive.stats.obj_max),
        "evaluations": evaluations,
        "evaluations_per_second": evaluations / seconds,
    }


def planar_arm(args: Args, output: pathlib.Path | None) -> list[dict]:
    """policylab, pyribs (when installed) and random search at the same budget, for every seed."""
    dof, iterations = (10, 5) if args.smoke else (args.arm_dof, args.arm_iterations)
    task = PlanarArmTask(dof)
    rows = []
    for seed in args.seeds:
        config = MAPElitesConfig(
            ga_batch_size=args.arm_batch_size,
            iso_sigma=0.01,
            line_sigma=0.2,
            archive="grid",
            grid_shape=args.arm_cells,
            initial_population=args.arm_batch_size,
            seed=seed,
        )
        rows.append({"library": "policylab", "seed": seed} | arm_policylab(task, config, iterations))
        try:
            rows.append({"library": "pyribs", "seed": seed} | arm_pyribs(task, config, iterations))
        except ImportError:
            print("pyribs is not installed (pip install ribs): its column is left out")
        started = time.perf_counter()
        baseline = random_search(task, make_archive(task, config), rows[0]["evaluations"], args.arm_batch_size, seed)
        rows.append(
            {
                "library": "random search",
                "seed": seed,
                "qd_score": baseline.qd_score(task.qd_offset),
                "coverage": baseline.coverage(),
                "max_fitness": baseline.max_fitness(),
                "evaluations": rows[0]["evaluations"],
                "evaluations_per_second": rows[0]["evaluations"] / (time.perf_counter() - started),
            }
        )
    setting = {
        "dof": dof,
        "iterations": iterations,
        "batch_size": args.arm_batch_size,
        "grid": list(args.arm_cells),
        "iso_sigma": 0.01,
        "line_sigma": 0.2,
        "qd_offset": task.qd_offset,
        "machine": machine(args.threads),
    }
    print(json.dumps({"setting": setting, "rows": rows}, indent=2))
    if output is not None:
        (output / "planar_arm.json").write_text(json.dumps({"setting": setting, "rows": rows}, indent=2) + "\n")
        lines = ["| library | seeds | evaluations | QD-score | coverage | max fitness | evaluations/s |"]
        lines.append("|---|---|---|---|---|---|---|")
        for library in dict.fromkeys(row["library"] for row in rows):
            runs = [row for row in rows if row["library"] == library]
            cells = [mean_and_error([run[key] for run in runs]) for key in ("qd_score", "coverage", "max_fitness")]
            rate = mean_and_error([run["evaluations_per_second"] for run in runs])
            lines.append(
                f"| {library} | {len(runs)} | {runs[0]['evaluations']} | " + " | ".join(cells) + f" | {rate} |"
            )
        (output / "planar_arm.md").write_text(f"Setting: {json.dumps(setting)}\n\n" + "\n".join(lines) + "\n")
    return rows


def machine(threads: int) -> str:
    return f"{platform.processor() or platform.machine()}, {threads} thread(s), torch {torch.__version__}"


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        output = pathlib.Path(scratch) if args.smoke else args.output
        if args.smoke:
            args = dataclasses.replace(args, run_root=output / "runs")
        output.mkdir(parents=True, exist_ok=True)
        if args.part in ("all", "arm"):
            planar_arm(args, None if args.smoke else output)
        if args.part in ("all", "locomotion"):
            locomotion(args, output)


if __name__ == "__main__":
    main(tyro.cli(Args))
