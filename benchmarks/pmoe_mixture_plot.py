"""Plot a PMOE run's mixture: expert usage over training and, at a few states, each expert's action density.

    python benchmarks/pmoe_mixture_plot.py runs/pmoe-sac-Hopper-v5-s0
    python benchmarks/pmoe_mixture_plot.py benchmarks/results/pmoe/work/pmoe-ppo-policylab-Hopper-v5-s0 --dimension 2

Left: each expert's mean gate weight over training (how often acting picks it; metrics `experts/gate_weight_k`)
and, dashed, the share of updates in which it won (`experts/chosen_k`). Right, one panel per state: on one action
dimension, each expert's marginal density weighted by its gate weight, and the mixture's (their sum). The states
are spread over one episode of the trained agent's deterministic policy. Writes `<run>/mixture.png` unless --out.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import tyro


@dataclasses.dataclass
class Settings:
    """What to plot."""

    run_dir: tyro.conf.Positional[Path]
    """run directory of a pmoe-sac or pmoe-ppo run (metrics.csv and agent.pt, or checkpoint.pt while it trains)"""
    env: str | None = None
    """task whose states are shown (default: the agent's own)"""
    states: int = 3
    """states shown, spread over one episode"""
    dimension: int = 0
    """action dimension whose densities are drawn"""
    seed: int = 0
    """seed of the episode the states come from"""
    out: Path | None = None
    """image file (default: <run_dir>/mixture.png)"""


def usage_over_training(run_dir: Path) -> dict[str, tuple[list[int], list[float]]]:
    """Every logged `experts/...` metric as (steps, values)."""
    from policylab.core.logging import MetricLogger

    curves: dict[str, tuple[list[int], list[float]]] = {}
    for row in MetricLogger(run_dir, tensorboard=False).read():
        for name, value in row.items():
            if name.startswith("experts/") and value:
                steps, values = curves.setdefault(name, ([], []))
                steps.append(int(row["step"]))
                values.append(float(value))
    return curves


def visited_states(agent, env_id: str, count: int, seed: int) -> np.ndarray:
    """`count` observations spread evenly over one episode of the agent's deterministic policy."""
    from policylab.core.envs import make_env

    env = make_env(env_id)
    observation, _ = env.reset(seed=seed)
    observations, done = [observation], False
    while not done:
        observation, _, terminated, truncated, _ = env.step(agent.act(observation, deterministic=True))
        observations.append(observation)
        done = terminated or truncated
    env.close()
    return np.stack(observations)[np.linspace(0, len(observations) - 1, count).round().astype(int)]


@torch.no_grad()
def expert_densities(agent, observations: np.ndarray, dimension: int, points: int = 400):
    """A grid over action `dimension` ([points]) and each expert's gate-weighted marginal density on it
    ([states, experts, points])."""
    low = float(agent.action_space.low[dimension])
    high = float(agent.action_space.high[dimension])
    margin = 1e-3 * (high - low)  # tanh-Gaussian densities pile up at the bounds
    grid = torch.linspace(low + margin, high - margin, points)
    center = torch.as_tensor((agent.action_space.low + agent.action_space.high) / 2.0, dtype=torch.float32)
    actions = center.repeat(points, 1)
    actions[:, dimension] = grid
    observations = torch.as_tensor(observations, dtype=torch.float32, device=agent.device)
    actor, inputs = agent.mixture(observations)
    weights = actor.gate_weights(inputs)
    densities = []
    for state in range(len(inputs)):
        per_dimension = actor.expert_log_prob(inputs[state].expand(points, -1), actions.to(agent.device), True)
        densities.append(per_dimension[..., dimension].exp().T * weights[state].unsqueeze(-1))
    return grid.numpy(), torch.stack(densities).cpu().numpy()


def plot_mixture(
    run_dir: Path, env: str | None = None, states: int = 3, dimension: int = 0, seed: int = 0, out: Path | None = None
) -> Path:
    """Draw the run's expert usage and its experts' densities at a few states; returns the image's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import policylab

    run_dir = Path(run_dir)
    agent_file = run_dir / "agent.pt" if (run_dir / "agent.pt").exists() else run_dir / "checkpoint.pt"
    agent = policylab.load(agent_file, device="cpu")
    if not hasattr(agent, "mixture"):
        raise SystemExit(f"{agent_file} holds a {type(agent).__name__}, not a PMOE agent (pmoe-sac or pmoe-ppo)")
    env_id = env or agent.env_id
    observations = visited_states(agent, env_id, states, seed)
    grid, densities = expert_densities(agent, observations, dimension)
    experts = densities.shape[1]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    figure, axes = plt.subplots(1, 1 + states, figsize=(4.2 * (1 + states), 3.4))
    curves = usage_over_training(run_dir)
    for expert in range(experts):
        color = colors[expert % len(colors)]
        for kind, style in (("gate_weight", "-"), ("chosen", "--")):
            if f"experts/{kind}_{expert}" in curves:
                steps, values = curves[f"experts/{kind}_{expert}"]
                label = f"expert {expert}" if kind == "gate_weight" else None
                axes[0].plot(steps, values, style, color=color, label=label)
    axes[0].set_title("gate weight (—) and wins (- -)")
    axes[0].set_xlabel("env steps")
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    for index, axis in enumerate(axes[1:]):
        for expert in range(experts):
            axis.plot(grid, densities[index, expert], color=colors[expert % len(colors)], lw=1)
        axis.plot(grid, densities[index].sum(0), color="black", lw=1.5, label="mixture")
        axis.set_title(f"state {index + 1} of {states}")
        axis.set_xlabel(f"action[{dimension}]")
        axis.legend(fontsize=8)
    axes[1].set_ylabel("w_k · density")
    figure.suptitle(f"{agent.algorithm_name} on {env_id}, {agent.num_timesteps:,} steps")
    figure.tight_layout()
    out = Path(out) if out is not None else run_dir / "mixture.png"
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


if __name__ == "__main__":
    print(plot_mixture(**dataclasses.asdict(tyro.cli(Settings))))
