"""Diagnose a PMOE-SAC checkpoint: does the critic tell its experts apart, and what does the mixture cost?

    python benchmarks/pmoe_diagnostics.py benchmarks/results/pmoe/work/pmoe-sac-policylab-Hopper-v5-s0
    python benchmarks/pmoe_diagnostics.py RUN_DIR --checkpoint snapshots/step-50000.pt --json diagnostics.json

PMOE trains each expert only where its sampled action has the highest min(Q1, Q2), and regresses the gate towards
that winner. On states drawn from the replay shards up to the checkpoint's step this measures:

- the gate: the mean of each state's largest weight (1/K when it is uniform);
- the experts' spread: the mean distance between their deterministic actions;
- whether the critic ranks them: the mean gap between the best and worst expert's min(Q1, Q2) at their means,
  beside the twin critics' own disagreement |Q1 − Q2| there;
- whether the winner is signal or noise: the share of states where two independent draws of the experts' actions
  name the same winner (about 1/K for noise), and where the winner is the gate's most probable expert;
- what acting costs: deterministic returns of each expert acting alone and of the mixture acting with the gate's
  most probable expert, with the expert whose mean the critic ranks highest, and with an expert drawn from the gate
  at every step (as the training policy does).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
import tyro

import policylab
from policylab.core.buffers import replay_shards
from policylab.core.evaluation import evaluate
from policylab.core.files import atomic_write
from policylab.core.nets import take_expert
from policylab.online_rl.pmoe import ensemble_expert_q_values, expert_q_values, sample_from_gate


@dataclasses.dataclass
class Settings:
    """What to diagnose."""

    run_dir: tyro.conf.Positional[Path]
    """run directory of a pmoe-sac run (its replay/ shards give the states)"""
    checkpoint: Path | None = None
    """agent or checkpoint file (default: <run_dir>/checkpoint.pt)"""
    states: int = 4096
    """states drawn from the most recent transitions"""
    recent: int = 50_000
    """how many of the most recent transitions (up to the checkpoint's step) the states are drawn from"""
    episodes: int = 5
    """deterministic episodes per policy"""
    seed: int = 0
    json: Path | None = None
    """append the figures to this JSON list"""


def recent_states(run_dir: Path, observation_dim: int, until: int, recent: int, count: int, seed: int) -> torch.Tensor:
    """`count` observations drawn from replay rows [until − recent, until) of the run's shards."""
    shards = [
        torch.load(path, map_location="cpu", weights_only=True)
        for path, (_, end) in replay_shards(run_dir / "replay")
        if until - recent < end <= until
    ]
    if not shards:
        raise SystemExit(f"no replay shards in {run_dir / 'replay'} end at or before step {until}")
    observations = torch.cat(shards)[:, :observation_dim]
    generator = torch.Generator().manual_seed(seed)
    return observations[torch.randint(len(observations), (count,), generator=generator)]


@torch.no_grad()
def critic_figures(agent, observations: torch.Tensor) -> dict[str, float]:
    """Gate, expert spread, Q gaps and winner stability on `observations`."""
    actor, critic = agent.actor, agent.critic
    gate = actor.gate_weights(observations)
    means = actor.expert_actions(observations)
    experts = means.shape[1]
    pairs = [(i, j) for i in range(experts) for j in range(i + 1, experts)]
    twins = ensemble_expert_q_values(critic, observations, means)  # [2 critics, batch, experts]
    q_at_means = twins.min(dim=0).values
    winners = [
        expert_q_values(critic, observations, actor.sample_experts(observations).actions).argmax(-1) for _ in range(2)
    ]
    return {
        "largest_gate_weight": gate.max(-1).values.mean().item(),
        "expert_action_distance": float(
            np.mean([(means[:, i] - means[:, j]).norm(dim=-1).mean().item() for i, j in pairs])
        ),
        "q_mean": q_at_means.mean().item(),
        "q_gap_best_worst": (q_at_means.max(-1).values - q_at_means.min(-1).values).mean().item(),
        "twin_critic_disagreement": (twins[0] - twins[1]).abs().mean().item(),
        "same_winner_two_draws": (winners[0] == winners[1]).float().mean().item(),
        "winner_is_most_probable": (winners[0] == gate.argmax(-1)).float().mean().item(),
    }


def acting_returns(agent, episodes: int, seed: int) -> dict[str, float]:
    """Mean deterministic return of each expert alone and of the mixture under three ways of picking the expert."""
    actor, critic = agent.actor, agent.critic

    def policy(pick):
        @torch.no_grad()
        def act(observations: np.ndarray) -> np.ndarray:
            inputs = torch.as_tensor(observations, dtype=torch.float32, device=agent.device)
            means = actor.expert_actions(inputs)
            return take_expert(means, pick(inputs, means)).cpu().numpy()

        return act

    def fixed(k):
        return lambda inputs, means: torch.full((len(inputs),), k, dtype=torch.long, device=means.device)

    pickers = {f"expert_{k}": fixed(k) for k in range(actor.num_experts)}
    pickers["most_probable"] = lambda inputs, means: actor.gate_weights(inputs).argmax(-1)
    pickers["highest_q"] = lambda inputs, means: expert_q_values(critic, inputs, means).argmax(-1)
    pickers["drawn_from_gate"] = lambda inputs, means: sample_from_gate(actor(inputs)[2])
    return {
        name: float(evaluate(policy(pick), agent.env_id, episodes, seed).returns.mean())
        for name, pick in pickers.items()
    }


def main(settings: Settings) -> None:
    torch.manual_seed(settings.seed)
    agent = policylab.load(settings.checkpoint or settings.run_dir / "checkpoint.pt", device="cpu")
    observation_dim = agent.observation_space.shape[0]
    observations = recent_states(
        settings.run_dir, observation_dim, agent.num_timesteps, settings.recent, settings.states, settings.seed
    )
    figures = {"run": settings.run_dir.name, "step": agent.num_timesteps, **critic_figures(agent, observations)}
    figures |= acting_returns(agent, settings.episodes, settings.seed)
    print(json.dumps(figures, indent=1))
    if settings.json is not None:
        existing = json.loads(settings.json.read_text()) if settings.json.exists() else []
        text = json.dumps([*existing, figures], indent=1) + "\n"
        atomic_write(settings.json, lambda file: file.write(text.encode()))


if __name__ == "__main__":
    main(tyro.cli(Settings))
