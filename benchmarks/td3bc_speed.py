"""TD3+BC updates per second: policylab's agent next to a plain single-file loop, in one run.

The plain loop is TD3+BC written the obvious way (as in the authors' repository): two critic
networks in one module, a NumPy replay buffer sampled with `np.random.randint` and copied to
torch every step, `zero_grad()`, and Polyak updates parameter by parameter. Both train on the
same synthetic Hopper-sized dataset (11-dim states, 3-dim actions) with the same settings.

    python benchmarks/td3bc_speed.py --updates 3000 --repeats 3

Writes benchmarks/results/td3bc_speed.json.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import tyro
from torch import nn
from torch.nn import functional as F

from policylab.core.data import OfflineDataset
from policylab.offline_rl import TD3BC, TD3BCConfig


class PlainActor(nn.Module):
    def __init__(self, state_dim: int, action_dim: int) -> None:
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(state_dim, 256), nn.Linear(256, 256), nn.Linear(256, action_dim)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.l3(F.relu(self.l2(F.relu(self.l1(state))))))


class PlainCritic(nn.Module):
    def __init__(self, state_dim: int, action_dim: int) -> None:
        super().__init__()
        self.l1, self.l2, self.l3 = (
            nn.Linear(state_dim + action_dim, 256),
            nn.Linear(256, 256),
            nn.Linear(256, 1),
        )
        self.l4, self.l5, self.l6 = (
            nn.Linear(state_dim + action_dim, 256),
            nn.Linear(256, 256),
            nn.Linear(256, 1),
        )

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sa = torch.cat([state, action], 1)
        q1 = self.l3(F.relu(self.l2(F.relu(self.l1(sa)))))
        q2 = self.l6(F.relu(self.l5(F.relu(self.l4(sa)))))
        return q1, q2

    def q1(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        sa = torch.cat([state, action], 1)
        return self.l3(F.relu(self.l2(F.relu(self.l1(sa)))))


def plain_td3bc_updates(dataset: OfflineDataset, updates: int, seed: int) -> float:
    """Run the plain loop for `updates` steps; returns updates per second."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    mean, std = dataset.state_statistics()
    states = (dataset.observations - mean) / std
    next_states = (dataset.next_observations - mean) / std
    actions, rewards = dataset.actions, dataset.rewards.reshape(-1, 1)
    not_done = 1.0 - dataset.terminals.astype(np.float32).reshape(-1, 1)
    actor = PlainActor(states.shape[1], actions.shape[1])
    critic = PlainCritic(states.shape[1], actions.shape[1])
    actor_target, critic_target = copy.deepcopy(actor), copy.deepcopy(critic)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=3e-4)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=3e-4)
    start = time.perf_counter()
    for iteration in range(1, updates + 1):
        index = np.random.randint(0, len(states), size=256)
        state, action = torch.FloatTensor(states[index]), torch.FloatTensor(actions[index])
        next_state, reward = torch.FloatTensor(next_states[index]), torch.FloatTensor(rewards[index])
        done_mask = torch.FloatTensor(not_done[index])
        with torch.no_grad():
            noise = (torch.randn_like(action) * 0.2).clamp(-0.5, 0.5)
            next_action = (actor_target(next_state) + noise).clamp(-1.0, 1.0)
            target_q1, target_q2 = critic_target(next_state, next_action)
            target_q = reward + done_mask * 0.99 * torch.min(target_q1, target_q2)
        current_q1, current_q2 = critic(state, action)
        critic_loss = F.mse_loss(current_q1, target_q) + F.mse_loss(current_q2, target_q)
        critic_optimizer.zero_grad()
        critic_loss.backward()
        critic_optimizer.step()
        if iteration % 2 == 0:
            pi = actor(state)
            q = critic.q1(state, pi)
            lmbda = 2.5 / q.abs().mean().detach()
            actor_loss = -lmbda * q.mean() + F.mse_loss(pi, action)
            actor_optimizer.zero_grad()
            actor_loss.backward()
            actor_optimizer.step()
            for param, target_param in zip(critic.parameters(), critic_target.parameters()):
                target_param.data.copy_(0.005 * param.data + 0.995 * target_param.data)
            for param, target_param in zip(actor.parameters(), actor_target.parameters()):
                target_param.data.copy_(0.005 * param.data + 0.995 * target_param.data)
    return updates / (time.perf_counter() - start)


def policylab_td3bc_updates(dataset: OfflineDataset, updates: int, seed: int) -> float:
    """Run policylab's TD3+BC update loop (sampling included) for `updates` steps; returns updates per second."""
    agent = TD3BC.from_dataset(dataset, TD3BCConfig(seed=seed, device="cpu"))
    buffer = agent.prepare(dataset)
    start = time.perf_counter()
    for _ in range(updates):
        agent.update(buffer.sample(agent.config.batch_size))
    return updates / (time.perf_counter() - start)


def synthetic_dataset(
    transitions: int, observation_dim: int = 11, action_dim: int = 3, seed: int = 0
) -> OfflineDataset:
    """Random transitions of Hopper's sizes (speed does not depend on the values)."""
    rng = np.random.default_rng(seed)
    observations = rng.standard_normal((transitions, observation_dim)).astype(np.float32)
    terminals = rng.random(transitions) < 0.001
    return OfflineDataset(
        observations=observations,
        actions=rng.uniform(-1, 1, (transitions, action_dim)).astype(np.float32),
        rewards=rng.standard_normal(transitions).astype(np.float32),
        next_observations=observations + 0.01 * rng.standard_normal(observations.shape).astype(np.float32),
        terminals=terminals,
        timeouts=np.zeros(transitions, dtype=bool),
        dataset_id="synthetic/hopper-sized",
    )


@dataclasses.dataclass
class Args:
    updates: int = 3000
    """updates per timed run"""
    repeats: int = 3
    """timed runs of each implementation, interleaved; the median is reported"""
    transitions: int = 1_000_000
    """dataset size"""
    output: Path = Path(__file__).parent / "results" / "td3bc_speed.json"
    """where the result is written"""


def main(args: Args) -> None:
    dataset = synthetic_dataset(args.transitions)
    plain_td3bc_updates(dataset, 200, seed=0)  # warm-up of both paths
    policylab_td3bc_updates(dataset, 200, seed=0)
    plain, library = [], []
    for repeat in range(args.repeats):
        plain.append(plain_td3bc_updates(dataset, args.updates, seed=repeat))
        library.append(policylab_td3bc_updates(dataset, args.updates, seed=repeat))
    result = {
        "updates_per_run": args.updates,
        "repeats": args.repeats,
        "dataset_transitions": args.transitions,
        "plain_updates_per_s": [round(x, 1) for x in plain],
        "policylab_updates_per_s": [round(x, 1) for x in library],
        "plain_median": round(float(np.median(plain)), 1),
        "policylab_median": round(float(np.median(library)), 1),
        "speedup": round(float(np.median(library) / np.median(plain)), 3),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, CPU",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(tyro.cli(Args))
