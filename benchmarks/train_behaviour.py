"""Behaviour policies of the `gen/*` datasets, made the way D4RL made its MuJoCo ones.

policylab's SAC trains on each task for `steps` env steps, saving its actor every `snapshot_every`
steps (step 0 is the untrained initialisation). Then every snapshot is evaluated as the datasets roll
it out (stochastic actions, `select_episodes` episodes) and the behaviour policies are chosen:

- random: the untrained initialisation;
- expert: the final policy;
- medium: the snapshot whose return is closest to a third of the expert's (D4RL's rule);
- replay: the snapshot series up to medium, which stands for the replay buffer of that run.

The chosen actors are re-evaluated on `report_episodes` episodes and written with their returns to the
package (`policylab/data/behaviour/`), where `policylab data make` reads them. Training is resumable: run
the same command again after a kill and it continues from the last checkpoint.

    python benchmarks/train_behaviour.py --tasks Hopper-v5 --stage train
    python benchmarks/train_behaviour.py --stage select   # once every task has finished training
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import torch
import tyro

from policylab.core.data.behaviour import BEHAVIOUR_DIR, make_actor, policy_return, save_behaviour
from policylab.core.files import atomic_path
from policylab.online_rl import SAC, SACConfig


@dataclasses.dataclass
class Settings:
    tasks: tuple[str, ...] = ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5")
    """MuJoCo tasks to train or select for"""
    stage: Literal["train", "select", "all"] = "all"
    """train (resumable), select and ship the behaviour actors, or both"""
    steps: int = 500_000
    """SAC env steps per task (D4RL's experts trained for 1M; on a 2-core machine the three tasks side by side
    take about 2.5 hours for 500k. SAC has no schedule tied to the total, so a run continued to 1M with
    --steps 1000000 matches one started that way)"""
    snapshot_every: int = 10_000
    """env steps between saved actor snapshots"""
    select_episodes: int = 10
    """episodes per snapshot when choosing medium"""
    report_episodes: int = 20
    """episodes behind each shipped policy's recorded return"""
    seed: int = 0
    """SAC seed (evaluations use seed + 100)"""
    threads: int = 1
    """torch threads (one per process lets two tasks train side by side on two cores)"""
    work_dir: Path = Path("benchmarks/results/work/behaviour")
    """SAC run directories (checkpoints, replay shards, metrics) and snapshots"""
    out_dir: Path = BEHAVIOUR_DIR
    """where the chosen actors and their returns are written"""


def snapshot_path(run_dir: Path, step: int) -> Path:
    return run_dir / "snapshots" / f"actor-{step:08d}.pt"


def train(task: str, settings: Settings) -> None:
    """Train SAC on `task` to `settings.steps`, resuming a killed run, saving actor snapshots on the way."""
    run_dir = settings.work_dir / task
    agent = SAC(task, SACConfig(seed=settings.seed))
    resume = (run_dir / "checkpoint.pt").exists()
    if not resume:
        save_snapshot(agent, run_dir)  # step 0: the untrained initialisation, the `random` policy

    def on_step(agent: SAC) -> None:
        if agent.num_timesteps % settings.snapshot_every == 0:
            save_snapshot(agent, run_dir)

    agent.learn(
        settings.steps,
        eval_every=settings.snapshot_every,
        checkpoint_every=settings.snapshot_every,
        run_dir=run_dir,
        resume=resume,
        callback=on_step,
    )


def save_snapshot(agent: SAC, run_dir: Path) -> None:
    with atomic_path(snapshot_path(run_dir, agent.num_timesteps)) as temporary:
        torch.save(agent.actor.state_dict(), temporary)


def select(task: str, settings: Settings) -> None:
    """Choose random, medium, expert and the replay series of `task`, evaluate them and write them out."""
    paths = sorted((settings.work_dir / task / "snapshots").glob("actor-*.pt"))
    steps = [int(path.stem.removeprefix("actor-")) for path in paths]
    if settings.steps not in steps:
        raise RuntimeError(
            f"{task} has not reached {settings.steps} steps: its last snapshot is at {max(steps, default=0)}"
        )
    # A run continued past `steps` (towards a larger budget) leaves later snapshots: they are not this budget's.
    snapshots = {
        step: torch.load(path, weights_only=True) for step, path in zip(steps, paths) if step <= settings.steps
    }
    actor, seed = make_actor(task), settings.seed + 100

    def stochastic_return(step: int, episodes: int) -> tuple[float, float]:
        actor.load_state_dict(snapshots[step])
        return policy_return(actor, task, episodes, seed)

    returns = {step: stochastic_return(step, settings.select_episodes)[0] for step in snapshots}
    expert_step = settings.steps
    medium_step = min(snapshots, key=lambda step: abs(returns[step] - returns[expert_step] / 3.0))
    chosen = {"random": 0, "medium": medium_step, "expert": expert_step}
    card = {
        "trainer": f"policylab SAC (SACConfig defaults), {settings.steps} env steps, seed {settings.seed}",
        "evaluation_episodes": settings.report_episodes,
        "evaluation_seed": seed,
        "policies": {},
        "replay_steps": [step for step in snapshots if step <= medium_step],
        "snapshot_returns": {str(step): value for step, value in returns.items()},  # sampled actions
        "snapshot_return_episodes": settings.select_episodes,
    }
    for kind, step in chosen.items():
        mean, std = stochastic_return(step, settings.report_episodes)
        card["policies"][kind] = {"step": step, "return_mean": mean, "return_std": std}
        print(f"{task} {kind}: step {step}, return {mean:.1f} ± {std:.1f}", flush=True)
    weights = {kind: snapshots[step] for kind, step in chosen.items()}
    weights["replay"] = [snapshots[step] for step in card["replay_steps"]]
    save_behaviour(task, weights, card, settings.out_dir)


def main(settings: Settings) -> None:
    torch.set_num_threads(settings.threads)
    if settings.stage in ("train", "all"):
        for task in settings.tasks:
            train(task, settings)
    if settings.stage in ("select", "all"):
        for task in settings.tasks:
            select(task, settings)


if __name__ == "__main__":
    main(tyro.cli(Settings))
