"""D4RL-style offline benchmark: any offline agents × datasets × seeds → a table of normalised scores.

Every (algorithm, dataset, seed) is one run of `OfflineAgent.fit` in `<work-dir>/<run>/`, evaluated every
`eval_every` updates with `eval_episodes` deterministic episodes (seeded with seed + 100). A run's score is
the mean D4RL-normalised score (0 = random, 100 = expert) of its last `last_evaluations` evaluations; tasks
without D4RL reference returns (e.g. Pendulum) report raw returns instead. Each finished run writes
`<out>/runs/<run>.json` at once (its whole evaluation curve), so a killed sweep loses no finished run; a rerun
skips finished runs and resumes unfinished ones from their checkpoints.

    python benchmarks/offline_suite.py --algorithms td3bc iql prdc --datasets gen/hopper-medium-v0 --seeds 0 1
    python benchmarks/offline_suite.py --datasets gen/pendulum-scripted-v0 --steps 20000 --seeds 0   # a quick look
    python benchmarks/offline_suite.py --agent-options "hidden_sizes=[64,64]" iql.beta=10   # any config field
    python benchmarks/offline_suite.py --backend ray --threads 2              # runs in parallel on a local Ray
    python benchmarks/offline_suite.py --backend ray --ray-address auto       # on a running Ray cluster
    python benchmarks/offline_suite.py --report-only                          # table and plot from finished runs
    python benchmarks/offline_suite.py --algorithms td3bc pgd-td3bc iql pgd-iql   # real data vs PGD's synthetic

With `--backend ray` each run is a Ray task of `threads` CPUs: the datasets are loaded once by this process
and shared through Ray's object store, results come back here as they finish. On a cluster, every node needs
policylab installed, and resuming a run on another node needs `--work-dir` on a shared filesystem.

Writes `<out>/<report-name>.json`, `.md` and `.png` (`offline_suite` by default; one plot panel per dataset,
mean score over seeds against updates with a min–max band).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import traceback
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import tyro

from policylab.core.agent import AgentConfig, config_from_dict, config_to_dict, recorded_defaults, registered_agents
from policylab.core.data import OfflineDataset, load_dataset
from policylab.core.files import atomic_write
from policylab.core.logging import MetricLogger
from policylab.core.offline import OfflineAgent


@dataclasses.dataclass
class Settings:
    """What to run."""

    algorithms: tuple[str, ...] = ("td3bc", "iql", "prdc")
    """registered offline agents (policylab train --help lists them), or pgd-td3bc / pgd-iql (PGD around one)"""
    datasets: tuple[str, ...] = ("gen/hopper-medium-v0", "gen/halfcheetah-medium-v0", "gen/walker2d-medium-v0")
    """dataset ids load_dataset accepts (gen/ ids are made on first use)"""
    seeds: tuple[int, ...] = (0, 1)
    """seeds of every (algorithm, dataset)"""
    steps: int = 200_000
    """gradient updates per run"""
    eval_every: int = 5000
    """updates between evaluations (and checkpoints)"""
    eval_episodes: int = 10
    """deterministic episodes per evaluation"""
    last_evaluations: int = 10
    """a run's score is the mean of its last this-many evaluations"""
    agent_options: tuple[str, ...] = ()
    """config fields as field=value (every algorithm whose config has the field) or algorithm.field=value;
    values are JSON (hidden_sizes=[64,64], batch_size=128) or plain strings (device=cpu)"""
    work_dir: Path = Path("benchmarks/results/work/offline_suite")
    """run directories (config, metrics, checkpoints), one per algorithm/dataset/seed"""
    out: Path = Path("benchmarks/results/offline_suite")
    """results: runs/<run>.json per finished run, and the table, summary and plot"""
    backend: Literal["sequential", "ray"] = "sequential"
    """run one after another in this process, or as Ray tasks"""
    ray_address: str | None = None
    """Ray cluster to join ("auto" or an address); None starts Ray on this machine"""
    threads: int = 1
    """torch threads per run (and CPUs per Ray task)"""
    report_only: bool = False
    """only rebuild the table and plot from finished runs"""
    report_name: str = "offline_suite"
    """file name of the table, summary and plot in `out` (another name keeps a second table, e.g. an ablation's)"""


@dataclasses.dataclass(frozen=True)
class Run:
    """One (algorithm, dataset, seed) of the sweep."""

    algorithm: str
    dataset: str
    seed: int

    @property
    def name(self) -> str:
        """File-name-safe id, e.g. td3bc-gen_hopper-medium-v0-s0."""
        dataset = self.dataset.removesuffix(".hdf5").strip("/").replace("/", "_")
        return f"{self.algorithm}-{dataset}-s{self.seed}"


def sweep_runs(settings: Settings) -> list[Run]:
    """Every (algorithm, dataset, seed) of the sweep, dataset by dataset."""
    return [
        Run(algorithm, dataset, seed)
        for dataset in settings.datasets
        for algorithm in settings.algorithms
        for seed in settings.seeds
    ]


# Suite algorithms that are a registered agent with preset config fields: PGD around each of its inner agents, and
# O-DICE's value-update ablation (the plain true gradient and the semi-gradient instead of the orthogonal one).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "pgd-td3bc": ("pgd", {"agent": "td3bc"}),
    "pgd-iql": ("pgd", {"agent": "iql"}),
    "odice-true": ("odice", {"gradient": "true"}),
    "odice-semi": ("odice", {"gradient": "semi"}),
}


def offline_agents() -> dict[str, tuple[type[OfflineAgent], dict[str, Any]]]:
    """The suite's algorithms by name: every registered offline agent class and the `VARIANTS`, each with the
    config fields it presets, and each of those again as `<name>-bf16`, its updates' products in bfloat16."""
    agents = {name: (cls, {}) for name, cls in registered_agents().items() if issubclass(cls, OfflineAgent)}
    agents |= {name: (agents[agent][0], preset) for name, (agent, preset) in VARIANTS.items()}
    return agents | {f"{name}-bf16": (cls, preset | {"bf16_matmuls": True}) for name, (cls, preset) in agents.items()}


def parse_agent_options(settings: Settings) -> dict[str, dict[str, Any]]:
    """`--agent-options` as {algorithm: {field: value}}; an option no selected algorithm has is an error."""
    agents = offline_agents()
    unknown = [name for name in settings.algorithms if name not in agents]
    if unknown:
        raise ValueError(f"unknown offline algorithm(s) {unknown}; registered: {sorted(agents)}")
    options: dict[str, dict[str, Any]] = {name: {} for name in settings.algorithms}
    fields = {name: {field.name for field in dataclasses.fields(agents[name][0].config_class)} for name in options}
    for option in settings.agent_options:
        key, equals, text = option.partition("=")
        target, _, field = key.rpartition(".")
        if not equals or target not in ("", *settings.algorithms):
            raise ValueError(f"agent option {option!r} is not field=value or <algorithm>.field=value")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        targets = [name for name in options if target in ("", name) and field in fields[name]]
        if not targets:
            raise ValueError(f"agent option {option!r}: no config of {list(options)} has a field {field!r}")
        for name in targets:
            options[name][field] = value
    return options


def agent_config(run: Run, options: dict[str, dict[str, Any]]) -> AgentConfig:
    """The run's agent config: the algorithm's defaults, its preset fields, the options, and the run's seed."""
    agent_class, preset = offline_agents()[run.algorithm]
    config_class = agent_class.config_class
    values = config_to_dict(config_class()) | preset | options[run.algorithm] | {"seed": run.seed}
    return config_from_dict(config_class, values)


def budget(settings: Settings) -> dict[str, int]:
    """The loop settings a run's results depend on."""
    return {"steps": settings.steps, "eval_every": settings.eval_every, "eval_episodes": settings.eval_episodes}


def check_same(recorded: dict[str, Any], expected: dict[str, Any], where: Path) -> None:
    """Refuse to reuse work done with other settings."""
    differing = {key: recorded.get(key) for key in expected if recorded.get(key) != expected[key]}
    if differing:
        wanted = {key: expected[key] for key in differing}
        raise ValueError(
            f"{where} was made with {differing}, not {wanted}: run with the same settings, or choose another "
            "--work-dir and --out"
        )


def recorded_settings(budget: dict[str, int], config: dict[str, Any]) -> dict[str, Any]:
    """A run's budget and agent config as one flat dict to compare (a run may continue on another device)."""
    fields = {f"config.{key}": value for key, value in config.items() if key != "device"}
    return json.loads(json.dumps(budget | fields))


def train(run: Run, dataset: OfflineDataset, config: AgentConfig, settings: Settings) -> dict[str, Any]:
    """Train (or resume) one run in its work directory; returns its result with the whole evaluation curve."""
    torch.set_num_threads(settings.threads)
    run_dir = settings.work_dir / run.name
    if (run_dir / "checkpoint.pt").exists():
        check_same(json.loads((run_dir / "config.json").read_text())["fit"], budget(settings), run_dir)
    agent = offline_agents()[run.algorithm][0].from_dataset(dataset, config)
    with warnings.catch_warnings():  # a dataset shared by Ray is read-only; fit only copies from it
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        agent.fit(
            dataset,
            settings.steps,
            eval_every=settings.eval_every,
            eval_episodes=settings.eval_episodes,
            run_dir=run_dir,
            resume=True,
            progress=False,
        )
    rows = MetricLogger(run_dir, tensorboard=False).read()
    evaluations = [row for row in rows if row.get("eval/return_mean")]
    rates = [float(row["time/updates_per_second"]) for row in rows if row.get("time/updates_per_second")]
    normalized = bool(evaluations) and bool(evaluations[0].get("eval/normalized_score"))
    return {
        **dataclasses.asdict(run),
        "env_id": dataset.env_id,
        "budget": budget(settings),
        "config": config_to_dict(config),
        "steps": [int(row["step"]) for row in evaluations],
        "returns": [float(row["eval/return_mean"]) for row in evaluations],
        "normalized_scores": [float(row["eval/normalized_score"]) for row in evaluations] if normalized else None,
        "machine": machine(),
        "torch": torch.__version__,
        "torch_threads": settings.threads,
        # the rate of the process that finished the run, since it started or resumed, evaluations included
        "updates_per_second": rates[-1] if rates else None,
    }


def machine() -> str:
    """This machine in a few words."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}"


def result_path(settings: Settings, run: Run) -> Path:
    """Where a finished run's result lives."""
    return settings.out / "runs" / f"{run.name}.json"


def read_result(settings: Settings, run: Run, options: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The run's result if it has finished (with these settings; other settings are an error), else None."""
    path = result_path(settings, run)
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    expected = recorded_settings(budget(settings), config_to_dict(agent_config(run, options)))
    # a config field added since the run was recorded did what its default does now
    recorded_config = recorded_defaults(offline_agents()[run.algorithm][0].config_class) | result["config"]
    check_same(recorded_settings(result["budget"], recorded_config), expected, path)
    return result


def write_result(settings: Settings, result: dict[str, Any]) -> None:
    """Save one finished run's result atomically and say so."""
    run = Run(result["algorithm"], result["dataset"], result["seed"])
    text = json.dumps(result, indent=1) + "\n"
    atomic_write(result_path(settings, run), lambda file: file.write(text.encode()))
    kind = "normalised score" if result["normalized_scores"] is not None else "return"
    print(f"{run.name}: {kind} {run_score(result, settings.last_evaluations):.1f}", flush=True)


def load_suite_dataset(dataset_id: str) -> OfflineDataset:
    """Load (or make) a dataset the suite can evaluate on."""
    dataset = load_dataset(dataset_id)
    if dataset.env_id is None:
        raise ValueError(f"dataset {dataset_id} names no environment (env_id), so its agents cannot be evaluated")
    return dataset


def run_sequential(runs: list[Run], options: dict[str, dict[str, Any]], settings: Settings) -> list[str]:
    """Train the runs one after another in this process; returns the names of those that failed."""
    datasets = {dataset_id: load_suite_dataset(dataset_id) for dataset_id in dict.fromkeys(run.dataset for run in runs)}
    failed = []
    for run in runs:
        config = agent_config(run, options)
        if not record(run, partial(train, run, datasets[run.dataset], config, settings), options, settings):
            failed.append(run.name)
    return failed


def run_ray(runs: list[Run], options: dict[str, dict[str, Any]], settings: Settings) -> list[str]:
    """Train the runs as Ray tasks, writing each result as it arrives; returns the names of those that failed."""
    try:
        import ray
    except ImportError:
        raise SystemExit('--backend ray needs Ray: pip install "policylab[ray]"') from None
    ray.init(address=settings.ray_address)
    try:
        datasets = {dataset_id: ray.put(load_suite_dataset(dataset_id)) for dataset_id in {run.dataset for run in runs}}
        remote_train = ray.remote(num_cpus=settings.threads)(train)
        task_settings = dataclasses.replace(settings, work_dir=settings.work_dir.resolve())  # workers' cwd differs
        pending = {
            remote_train.remote(run, datasets[run.dataset], agent_config(run, options), task_settings): run
            for run in runs
        }
        failed = []
        while pending:
            [done], _ = ray.wait(list(pending), num_returns=1)
            run = pending.pop(done)
            if not record(run, partial(ray.get, done), options, settings):
                failed.append(run.name)
        return failed
    finally:
        ray.shutdown()


def record(
    run: Run, result: Callable[[], dict[str, Any]], options: dict[str, dict[str, Any]], settings: Settings
) -> bool:
    """Write the run's `result()` and refresh the report; if it raises, print the error and return False."""
    try:
        write_result(settings, result())
    except Exception:
        print(f"{run.name} failed:\n{traceback.format_exc()}", flush=True)
        return False
    report(settings, options)
    return True


def run_score(result: dict[str, Any], last_evaluations: int) -> float:
    """Mean normalised score (raw return without D4RL references) of the run's last evaluations."""
    scores = result["normalized_scores"] if result["normalized_scores"] is not None else result["returns"]
    return float(np.mean(scores[-last_evaluations:]))


def report(settings: Settings, options: dict[str, dict[str, Any]]) -> None:
    """Aggregate the finished runs of the sweep into the JSON summary, the Markdown table and the plot."""
    runs = sweep_runs(settings)
    results = {run: read_result(settings, run, options) for run in runs}
    finished = {run: result for run, result in results.items() if result is not None}
    metric = {  # known once a run of the dataset has finished
        run.dataset: "return" if result["normalized_scores"] is None else "normalized_score"
        for run, result in finished.items()
    }
    cells = []
    for dataset in settings.datasets:
        for algorithm in settings.algorithms:
            seeds = [s for s in settings.seeds if Run(algorithm, dataset, s) in finished]
            scores = [run_score(finished[Run(algorithm, dataset, s)], settings.last_evaluations) for s in seeds]
            cells.append(
                {
                    "algorithm": algorithm,
                    "dataset": dataset,
                    "metric": metric.get(dataset),
                    "seeds": seeds,
                    "scores": scores,
                    "mean": float(np.mean(scores)) if scores else None,
                    "std": float(np.std(scores)) if scores else None,
                }
            )
    averaged = [dataset for dataset in settings.datasets if metric.get(dataset) == "normalized_score"]
    average = {
        algorithm: average_over_datasets(cells, algorithm, averaged, settings.seeds)
        for algorithm in settings.algorithms
    }
    machines = sorted({result["machine"] for result in finished.values()}) or [machine()]
    summary = {
        "protocol": protocol(settings),
        "budget": budget(settings) | {"seeds": list(settings.seeds), "last_evaluations": settings.last_evaluations},
        "agent_options": list(settings.agent_options),
        "machines": machines,
        "torch": torch.__version__,
        "cells": cells,
        "average": {"datasets": averaged, "scores": average},
        "pending": [run.name for run in runs if run not in finished],
    }
    settings.out.mkdir(parents=True, exist_ok=True)
    (settings.out / f"{settings.report_name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    (settings.out / f"{settings.report_name}.md").write_text(markdown_table(summary, settings))
    plot_curves(finished, settings)


def average_over_datasets(
    cells: list[dict[str, Any]], algorithm: str, datasets: list[str], seeds: tuple[int, ...]
) -> dict[str, float] | None:
    """Mean ± std over seeds of each seed's score averaged over `datasets`; None until all those runs finished."""
    by_dataset = {cell["dataset"]: cell for cell in cells if cell["algorithm"] == algorithm}
    if not datasets or any(by_dataset[dataset]["seeds"] != list(seeds) for dataset in datasets):
        return None
    per_seed = np.mean([by_dataset[dataset]["scores"] for dataset in datasets], axis=0)
    return {"mean": float(np.mean(per_seed)), "std": float(np.std(per_seed))}


def protocol(settings: Settings) -> str:
    """The evaluation protocol in one sentence."""
    return (
        f"{settings.steps:,} updates per run, evaluated every {settings.eval_every:,} updates with "
        f"{settings.eval_episodes} deterministic episodes; a run's score is the mean D4RL-normalised score "
        "(0 = random, 100 = expert; the raw return where the task has no D4RL reference returns) of its last "
        f"{settings.last_evaluations} evaluations; cells are mean ± std over seeds {list(settings.seeds)}"
    )


def markdown_table(summary: dict[str, Any], settings: Settings) -> str:
    """Rows = datasets, columns = algorithms, and an average row; the budget line above."""
    options = f"; agent options {' '.join(settings.agent_options)}" if settings.agent_options else ""
    lines = [
        f"Budget: {summary['protocol']}. Machine: {'; '.join(summary['machines'])}; torch {summary['torch']}, "
        f"{settings.threads} torch thread(s) per run{options}.",
    ]
    raw = sorted({cell["dataset"] for cell in summary["cells"] if cell["metric"] == "return"})
    if raw:
        lines.append(f"No D4RL reference returns, so raw returns are reported for: {', '.join(raw)}.")
    lines += ["", f"| dataset | {' | '.join(settings.algorithms)} |", "|---" * (len(settings.algorithms) + 1) + "|"]
    for dataset in settings.datasets:
        row = [cell for cell in summary["cells"] if cell["dataset"] == dataset]
        label = f"{dataset} (return)" if dataset in raw else dataset
        texts = [mean_std(cell if cell["scores"] else None, len(settings.seeds)) for cell in row]
        lines.append(f"| {label} | " + " | ".join(texts) + " |")
    if summary["average"]["datasets"]:
        cells = [mean_std(summary["average"]["scores"][algorithm]) for algorithm in settings.algorithms]
        lines.append("| average | " + " | ".join(cells) + " |")
        lines += ["", f"The average covers {', '.join(summary['average']['datasets'])} (normalised scores only)."]
    if summary["pending"]:
        lines += ["", f"Not finished yet: {', '.join(summary['pending'])}."]
    return "\n".join(lines) + "\n"


def mean_std(values: dict[str, Any] | None, seeds: int | None = None) -> str:
    """A cell's text: mean ± std, a dash for what is missing, and how many seeds where fewer than `seeds` finished."""
    if values is None:
        return "–"
    finished = len(values.get("seeds", ()))
    partial = f" ({finished} of {seeds} seeds)" if seeds is not None and finished < seeds else ""
    return f"{values['mean']:.1f} ± {values['std']:.1f}{partial}"


def plot_curves(finished: dict[Run, dict[str, Any]], settings: Settings) -> None:
    """One panel per dataset, one line per algorithm: mean score over seeds against updates, min–max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(settings.datasets))
    rows = math.ceil(len(settings.datasets) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.6 * rows), squeeze=False)
    for axis in axes.flat[len(settings.datasets) :]:
        axis.set_visible(False)
    for axis, dataset in zip(axes.flat, settings.datasets):
        normalized = True
        for algorithm in settings.algorithms:
            results = [finished[run] for run in finished if (run.algorithm, run.dataset) == (algorithm, dataset)]
            if not results:
                continue
            normalized = results[0]["normalized_scores"] is not None
            curves = np.array([result["normalized_scores"] if normalized else result["returns"] for result in results])
            steps = results[0]["steps"]
            [line] = axis.plot(steps, curves.mean(axis=0), label=f"{algorithm} ({len(results)} seeds)")
            axis.fill_between(steps, curves.min(axis=0), curves.max(axis=0), color=line.get_color(), alpha=0.2)
        axis.set_title(dataset)
        axis.set_xlabel("updates")
        axis.set_ylabel("normalised score" if normalized else "return")
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend()
    figure.tight_layout()
    figure.savefig(settings.out / f"{settings.report_name}.png", dpi=100)
    plt.close(figure)


def main(settings: Settings) -> None:
    """Train the runs that have not finished, writing each result as it finishes, then the report."""
    options = parse_agent_options(settings)
    evaluations = math.ceil(settings.steps / settings.eval_every)
    if settings.last_evaluations > evaluations:
        raise ValueError(
            f"--last-evaluations {settings.last_evaluations} but a run has only {evaluations} evaluations "
            f"({settings.steps} steps, one every {settings.eval_every}): lower it or --eval-every"
        )
    todo = [run for run in sweep_runs(settings) if read_result(settings, run, options) is None]
    failed = []
    if todo and not settings.report_only:
        failed = (run_ray if settings.backend == "ray" else run_sequential)(todo, options, settings)
    report(settings, options)
    if failed:
        raise SystemExit(
            f"{len(failed)} run(s) failed: {', '.join(failed)} (finished runs are saved; rerun the same command to "
            "resume the failed ones from their checkpoints)"
        )


if __name__ == "__main__":
    try:
        main(tyro.cli(Settings))
    except ValueError as error:  # bad input: say what and how to fix it
        raise SystemExit(f"offline_suite: error: {error}") from None
