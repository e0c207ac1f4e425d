"""Deep GA scaling: evaluations per second with 1, 2, ... local workers and on a local Ray, and the same workload on
EvoTorch's GeneticAlgorithm with Ray actors (when evotorch is installed), side by side in one run.

Workload: an MLP policy (64-64 tanh by default) on Hopper-v5, a population of `population` members, one episode
each capped at `max_episode_steps`, no elite re-evaluation (EvoTorch's GA has none), `generations` timed
generations after one warm-up generation (Ray actors and envs start there). The same GA seed gives the same
populations on every policylab back-end, so their fitness histories must agree (the table says whether they do).
Efficiency per worker = rate with W workers / (W × rate of 1 local worker).

    python benchmarks/ga_scaling.py                      # writes benchmarks/results/ga_scaling.{json,md}
    python benchmarks/ga_scaling.py --local-workers 1 2 4 8 16 --ray-workers 2 16 --evotorch-workers 2 16
    python benchmarks/ga_scaling.py --smoke              # a tiny run that checks the script, writes nothing
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import platform
import time
from typing import Any

import torch
import tyro

from policylab.core.envs.mujoco_engine import usable_cores
from policylab.core.files import atomic_write
from policylab.evolution import GA, GAConfig, PolicyTask

RESULTS = pathlib.Path(__file__).parent / "results"


@dataclasses.dataclass
class Args:
    env: str = "Hopper-v5"
    population: int = 256
    generations: int = 5
    """timed generations (after one warm-up generation)"""
    max_episode_steps: int = 1000
    hidden_sizes: tuple[int, ...] = (64, 64)
    mutation_power: float = 0.02
    local_workers: tuple[int, ...] = (1, 2)
    ray_workers: tuple[int, ...] = (2,)
    evotorch_workers: tuple[int, ...] = (2,)
    """Ray actors of EvoTorch's GymNE (skipped when evotorch is not installed)"""
    seed: int = 0
    smoke: bool = False
    """population 16, 2 generations, 50-step episodes; prints the table and writes no results"""
    output: pathlib.Path = RESULTS / "ga_scaling.json"


def measure_policylab(args: Args, backend: str, workers: int) -> dict[str, Any]:
    """Rates of policylab's Deep GA on one back-end."""
    task = PolicyTask(args.env, args.hidden_sizes, max_episode_steps=args.max_episode_steps)
    config = GAConfig(args.population, truncation=max(2, args.population // 10), mutation_power=args.mutation_power)
    config = dataclasses.replace(config, elite_candidates=0, seed=args.seed)
    torch.set_num_threads(workers if backend == "local" else 1)
    ga = GA(task, config, backend=backend, workers=workers)
    try:
        ga.step()  # warm-up: envs, actors
        steps_before, start = ga.env_steps, time.perf_counter()
        history = [ga.step() for _ in range(args.generations)]
        seconds = time.perf_counter() - start
    finally:
        ga.close()
    return {
        "method": f"policylab {backend}",
        "workers": workers,
        "seconds": seconds,
        "evaluations_per_second": args.population * args.generations / seconds,
        "env_steps_per_second": (ga.env_steps - steps_before) / seconds,
        "fitness_max": [row["fitness_max"] for row in history],
    }


def measure_evotorch(args: Args, workers: int) -> dict[str, Any]:
    """Rates of EvoTorch's GeneticAlgorithm (Gaussian mutation, elitist) on GymNE with `workers` Ray actors."""
    import ray
    from evotorch.algorithms import GeneticAlgorithm
    from evotorch.neuroevolution import GymNE
    from evotorch.operators import GaussianMutation

    sizes = ["obs_length", *map(str, args.hidden_sizes), "act_length"]
    network = " >> ".join(f"Linear({fan_in}, {fan_out}) >> Tanh()" for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))
    torch.manual_seed(args.seed)
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        problem = GymNE(
            env=args.env,
            network=network,
            num_actors=workers,
            actor_config={"num_cpus": 1},
            episode_length=args.max_episode_steps,
            initial_bounds=(-0.1, 0.1),
        )
        ga = GeneticAlgorithm(
            problem,
            popsize=args.population,
            operators=[GaussianMutation(problem, stdev=args.mutation_power)],
            re_evaluate=False,
        )
        ga.step()  # warm-up: actors, envs
        steps_before, start = ga.status["total_interaction_count"], time.perf_counter()
        fitness_max = []
        for _ in range(args.generations):
            ga.step()
            fitness_max.append(float(ga.population.evals.max()))
        seconds = time.perf_counter() - start
        steps = ga.status["total_interaction_count"] - steps_before
    finally:
        ray.shutdown()
    return {
        "method": "EvoTorch GeneticAlgorithm (GymNE, Ray actors)",
        "workers": workers,
        "seconds": seconds,
        "evaluations_per_second": args.population * args.generations / seconds,
        "env_steps_per_second": steps / seconds,
        "fitness_max": fitness_max,
    }


def evotorch_installed() -> bool:
    try:
        import evotorch  # noqa: F401
    except ImportError:
        return False
    return True


def report(args: Args, rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the rates and per-worker efficiencies."""
    single = next((row for row in rows if row["method"] == "policylab local" and row["workers"] == 1), None)
    reference = [row["fitness_max"] for row in rows if row["method"].startswith("policylab")][0]
    lines = [
        f"# Deep GA scaling on {args.env}",
        "",
        f"Population {args.population}, {args.generations} timed generations (after one warm-up), one episode per "
        f"member capped at {args.max_episode_steps} steps, MLP {list(args.hidden_sizes)} tanh, σ = "
        f"{args.mutation_power}. Machine: {platform.processor() or platform.machine()}, {usable_cores()} usable "
        f"cores, {os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f}.",
        "",
        "| method | workers | evaluations/s | env steps/s | efficiency per worker | same fitness as policylab local |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        efficiency = (
            ""
            if single is None
            else f"{row['env_steps_per_second'] / (row['workers'] * single['env_steps_per_second']):.2f}"
        )
        same = "yes" if row["fitness_max"] == reference else ("no" if row["method"].startswith("policylab") else "n/a")
        lines.append(
            f"| {row['method']} | {row['workers']} | {row['evaluations_per_second']:.1f} | "
            f"{row['env_steps_per_second']:.0f} | {efficiency} | {same} |"
        )
    lines += [
        "",
        "Efficiency is measured on env steps/s (episodes end early for falling policies, so evaluations differ in "
        "length between methods whose populations differ).",
    ]
    return "\n".join(lines) + "\n"


def main(args: Args) -> None:
    if args.smoke:
        args = dataclasses.replace(args, population=16, generations=2, max_episode_steps=50)
    rows = [measure_policylab(args, "local", workers) for workers in args.local_workers]
    rows += [measure_policylab(args, "ray", workers) for workers in args.ray_workers]
    if evotorch_installed():
        rows += [measure_evotorch(args, workers) for workers in args.evotorch_workers]
    else:
        print("evotorch is not installed (pip install evotorch): its rows are skipped")
    table = report(args, rows)
    print(table)
    if not args.smoke:
        text = json.dumps({"settings": dataclasses.asdict(args), "results": rows}, indent=2, default=str)
        atomic_write(args.output, lambda file: file.write(text.encode()))
        atomic_write(args.output.with_suffix(".md"), lambda file: file.write(table.encode()))


if __name__ == "__main__":
    main(tyro.cli(Args))
