"""`policylab evolve ...`: population methods on a task, with a run directory and the best policy as an agent.

policylab evolve ga --env Hopper-v5 --generations 100 --population-size 256 --mutation-power 0.02
policylab evolve ga --env Hopper-v5 --backend ray --workers 16 --address auto
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Literal

import tyro

from policylab.core.evaluation import evaluate
from policylab.core.runs import RunDirectory
from policylab.evolution import GA, GAConfig, PolicyTask


@dataclasses.dataclass
class EvolveGA:
    """Evolve an MLP policy with the Deep GA (truncation selection and mutation, seed-chain genomes)."""

    env: str
    """task id, e.g. Hopper-v5 (any make_vec_env id with a Box action space)"""
    generations: int = 100
    """generations in total"""
    backend: Literal["local", "ray"] = "local"
    """local: the population as one batched env in this process; ray: population shards on Ray actors"""
    workers: int | None = None
    """physics threads (local, default every core) or Ray actors (ray, default 2)"""
    address: str | None = None
    """Ray cluster to join (e.g. auto); default: start a local Ray"""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """hidden layer widths of the policy"""
    env_backend: str = "auto"
    """make_vec_env backend that runs the episodes"""
    max_episode_steps: int | None = None
    """shorter episodes than the task's own limit"""
    eval_episodes: int = 10
    """episodes of the best policy's final evaluation"""
    run_dir: Path | None = None
    """where config, metrics, checkpoint, fitness.png and agent.pt go (default: runs/ga-<env>-s<seed>)"""
    resume: bool = False
    """continue the run in run_dir from its checkpoint"""
    progress: bool = True
    """show a progress bar"""
    config: Annotated[GAConfig, tyro.conf.arg(name="")] = dataclasses.field(default_factory=GAConfig)


EVOLVE_COMMANDS = {"ga": EvolveGA}


def run_evolution(command: EvolveGA) -> None:
    """Run an `evolve` command and print where its results are."""
    config = command.config
    run_dir = command.run_dir or Path("runs") / f"ga-{command.env}-s{config.seed}"
    task = PolicyTask(
        command.env, command.hidden_sizes, backend=command.env_backend, max_episode_steps=command.max_episode_steps
    )
    ga = GA(task, config, backend=command.backend, workers=command.workers, address=command.address)
    try:
        history = ga.run(command.generations, run_dir, resume=command.resume, progress=command.progress)
    finally:
        ga.close()
    agent = ga.best_agent()
    result = evaluate(agent, command.env, episodes=command.eval_episodes, seed=config.seed)
    RunDirectory(run_dir).write_json("evaluation.json", result.to_dict())
    summary = {
        "run_dir": str(run_dir),
        "agent": str(run_dir / "agent.pt"),
        "generations": len(history),
        "elite_fitness": round(ga.elite_fitness, 3),
        "genome_seeds": len(ga.elite),
        "encoding_size_ratio": round(ga.encoding_size_ratio(), 1),
    }
    print(json.dumps(summary | {key: round(value, 3) for key, value in result.metrics(prefix="").items()}, indent=2))
