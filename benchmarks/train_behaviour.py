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
import json
from pathlib import Path
from typing import Literal

import torch
import tyro

from policylab.core.data.behaviour import BEHAVIOUR_DIR, behaviour_file
from policylab.core.evaluation import evaluate
from policylab.core.files import atomic_path
from policylab.online_rl import SAC, SACConfig


@dataclasses.dataclass
class Settings:
    tasks: tuple[str, ...] = ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5")
    """MuJoCo tasks to train or select for"""
    stage: Literal["train", "select", "all"] = "all"
    """train (resumable), select and ship the behaviour actors, or both"""
    steps: int = 1_000_000
    """SAC env steps per task (D4RL's experts trained for 1M)"""
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


def stochastic_return(agent: SAC, actor_state: dict, task: str, episodes: int, seed: int) -> tuple[float, float]:
    """Mean and std of the return of `agent` with these actor weights and sampled actions, as the datasets
    roll policies out (`seed` seeds both the envs and the action noise)."""
    agent.actor.load_state_dict(actor_state)
    torch.manual_seed(seed)
    result = evaluate(agent, task, episodes=episodes, seed=seed, deterministic=False)
    return result.return_mean, result.return_std


def select(task: str, settings: Settings) -> dict:
    """Choose random, medium, expert and the replay series of `task`, evaluate them and write them out."""
    paths = sorted((settings.work_dir / task / "snapshots").glob("actor-*.pt"))
    snapshots = {int(path.stem.removeprefix("actor-")): torch.load(path, weights_only=True) for path in paths}
    if max(snapshots, default=0) != settings.steps:
        raise RuntimeError(
            f"{task} has not finished training: its last snapshot is at {max(snapshots, default=0)} steps"
        )
    agent = SAC(task, SACConfig())  # holds each snapshot in turn for evaluation
    seed = settings.seed + 100
    returns = {
        step: stochastic_return(agent, actor, task, settings.select_episodes, seed)[0]
        for step, actor in snapshots.items()
    }
    expert_step = settings.steps
    medium_step = min(snapshots, key=lambda step: abs(returns[step] - returns[expert_step] / 3.0))
    chosen = {"random": 0, "medium": medium_step, "expert": expert_step}
    card = {
        "task": task,
        "trainer": f"policylab SAC, {settings.steps} env steps, seed {settings.seed}, SACConfig defaults",
        "evaluation": f"sampled actions, {settings.report_episodes} episodes, seed {seed}",
        "snapshot_returns": {str(step): returns[step] for step in snapshots},
        "policies": {},
        "replay_steps": [step for step in snapshots if step <= medium_step],
    }
    for kind, step in chosen.items():
        mean, std = stochastic_return(agent, snapshots[step], task, settings.report_episodes, seed)
        card["policies"][kind] = {"step": step, "return_mean": mean, "return_std": std}
        print(f"{task} {kind}: step {step}, return {mean:.1f} ± {std:.1f}", flush=True)
    weights = {kind: snapshots[step] for kind, step in chosen.items()}
    weights["replay"] = [snapshots[step] for step in card["replay_steps"]]
    with atomic_path(behaviour_file(task, settings.out_dir)) as temporary:
        torch.save(weights, temporary)
    return card


def main(settings: Settings) -> None:
    torch.set_num_threads(settings.threads)
    if settings.stage in ("train", "all"):
        for task in settings.tasks:
            train(task, settings)
    if settings.stage in ("select", "all"):
        cards_path = settings.out_dir / "behaviour.json"
        cards = json.loads(cards_path.read_text()) if cards_path.exists() else {}
        for task in settings.tasks:
            cards[task] = select(task, settings)
            with atomic_path(cards_path) as temporary:
                temporary.write_text(json.dumps(cards, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main(tyro.cli(Settings))
