"""Replay storage for off-policy and offline agents, rollout storage with GAE for on-policy agents.

Both keep torch tensors on the agent's device, so sampling a batch never leaves it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from policylab.core.agent import restore_generator
from policylab.core.data import OfflineDataset
from policylab.core.files import atomic_write


class TransitionBatch(NamedTuple):
    """A batch of transitions; `terminals` is 1.0 where the episode truly ended (no bootstrap); `indices` are the
    buffer rows it was drawn from (for a buffer made by `from_dataset`, the dataset's transition indices)."""

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    terminals: torch.Tensor
    indices: torch.Tensor | None = None


class ReplayBuffer:
    """A ring buffer of transitions in one device tensor, sampled uniformly with its own generator.

    Each row holds `[observation, action, reward, next_observation, terminal]`, so a batch is
    gathered with a single indexing operation and split into views.
    """

    def __init__(
        self,
        capacity: int,
        observation_dim: int,
        action_dim: int,
        device: str | torch.device = "cpu",
        seed: int | None = None,
    ) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity, self.observation_dim, self.action_dim = capacity, observation_dim, action_dim
        self.device = torch.device(device)
        self.storage = torch.zeros(capacity, 2 * observation_dim + action_dim + 2, device=self.device)
        self.position = 0
        self.size = 0
        self.total_added = 0  # transitions ever added: row `g` of that history lives at `g % capacity`
        self._saved_until = 0  # history rows already written by `save_new_rows`
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed if seed is not None else int(torch.randint(2**62, ()).item()))
        boundaries = np.cumsum([0, observation_dim, action_dim, 1, observation_dim, 1])
        self._columns = [slice(int(start), int(stop)) for start, stop in zip(boundaries[:-1], boundaries[1:])]

    @classmethod
    def from_dataset(
        cls, dataset: OfflineDataset, device: str | torch.device = "cpu", seed: int | None = None
    ) -> ReplayBuffer:
        """A buffer holding exactly the dataset's transitions (`terminals` only stop bootstrapping)."""
        buffer = cls(len(dataset), dataset.observation_dim, dataset.action_dim, device=device, seed=seed)
        buffer.add(
            dataset.observations,
            dataset.actions,
            dataset.rewards,
            dataset.next_observations,
            dataset.terminals,
        )
        return buffer

    def __len__(self) -> int:
        return self.size

    def add(
        self,
        observations: np.ndarray | torch.Tensor,
        actions: np.ndarray | torch.Tensor,
        rewards: np.ndarray | torch.Tensor,
        next_observations: np.ndarray | torch.Tensor,
        terminals: np.ndarray | torch.Tensor,
    ) -> None:
        """Append a batch of transitions (leading dimension = number of transitions, e.g. envs)."""
        columns = [
            self._as_columns(observations, self.observation_dim),
            self._as_columns(actions, self.action_dim),
            self._as_columns(rewards, 1),
            self._as_columns(next_observations, self.observation_dim),
            self._as_columns(terminals, 1),
        ]
        count = columns[0].shape[0]
        self.total_added += count
        if count <= self.capacity - self.position:  # no wrap-around: write the rows in place
            torch.cat(columns, dim=1, out=self.storage[self.position : self.position + count])
        else:
            rows = torch.cat(columns, dim=1)
            if count > self.capacity:  # only the newest `capacity` rows survive a ring write anyway
                rows, count = rows[-self.capacity :], self.capacity
            self.storage[(self.position + torch.arange(count, device=self.device)) % self.capacity] = rows
        self.position = (self.position + count) % self.capacity
        self.size = min(self.size + count, self.capacity)

    def _as_columns(self, values: np.ndarray | torch.Tensor, width: int) -> torch.Tensor:
        tensor = torch.as_tensor(np.asarray(values) if not torch.is_tensor(values) else values)
        return tensor.to(device=self.device, dtype=torch.float32).reshape(-1, width)

    def sample(self, batch_size: int) -> TransitionBatch:
        """A uniform batch of stored transitions, drawn on the buffer's device."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        indices = torch.randint(0, self.size, (batch_size,), device=self.device, generator=self.generator)
        rows = self.storage[indices]
        observations, actions, rewards, next_observations, terminals = (rows[:, column] for column in self._columns)
        return TransitionBatch(
            observations, actions, rewards.squeeze(1), next_observations, terminals.squeeze(1), indices
        )

    def normalize_observations(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Replace stored observations and next observations by `(x − mean) / std`, in place."""
        mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device)
        std = torch.as_tensor(std, dtype=torch.float32, device=self.device)
        for column in (self._columns[0], self._columns[3]):
            self.storage[: self.size, column] = (self.storage[: self.size, column] - mean) / std

    def state_dict(self) -> dict[str, Any]:
        """Stored transitions, ring position and sampling generator, as plain data."""
        return {
            "storage": self.storage[: self.size].clone() if self.size < self.capacity else self.storage,
            "position": self.position,
            "size": self.size,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        size = int(state["size"])
        self.storage[:size] = state["storage"].to(self.device)
        self.position, self.size = int(state["position"]), size
        restore_generator(self.generator, state["generator"])

    # -- incremental saving: a checkpoint writes only the rows added since the last one ------------

    def save_new_rows(self, directory: str | os.PathLike) -> None:
        """Write the transitions added since the last call to a new shard file in `directory`, atomically, and
        delete shards whose rows have all been overwritten. A checkpoint of a full 1M buffer thus costs the
        rows of one checkpoint interval, not the whole buffer."""
        directory = Path(directory)
        end = self.total_added
        start = max(self._saved_until, end - self.capacity)
        if end > start:
            indices = torch.arange(start, end, device=self.device) % self.capacity
            rows = self.storage[indices].cpu()
            atomic_write(directory / f"rows-{start:012d}-{end:012d}.pt", lambda file: torch.save(rows, file))
        self._saved_until = end
        for shard, (_, shard_end) in replay_shards(directory):
            if shard_end <= end - self.capacity:
                shard.unlink()

    def load_rows(self, directory: str | os.PathLike, total_added: int, generator_state: torch.Tensor) -> None:
        """Rebuild the buffer as it was when `total_added` transitions had been added (shards written after that
        point, by a run killed before its checkpoint, are deleted)."""
        first_needed = max(0, total_added - self.capacity)
        shards = replay_shards(Path(directory))
        covered = first_needed
        for _, (start, end) in shards:
            if start < total_added and end > first_needed:
                if max(start, first_needed) > covered:
                    raise ValueError(f"replay shards in {directory} miss transitions {covered}..{start}")
                covered = max(covered, min(end, total_added))
        if covered < total_added:
            raise ValueError(f"replay shards in {directory} hold transitions up to {covered}, not {total_added}")
        for shard, (start, end) in shards:
            if start >= total_added:
                shard.unlink()
            elif end > first_needed:
                rows = torch.load(shard, map_location=self.device, weights_only=True)
                low, high = max(start, first_needed), min(end, total_added)
                indices = torch.arange(low, high, device=self.device) % self.capacity
                self.storage[indices] = rows[low - start : high - start]
        self.total_added = self._saved_until = total_added
        self.position, self.size = total_added % self.capacity, min(total_added, self.capacity)
        restore_generator(self.generator, generator_state)


def replay_shards(directory: Path) -> list[tuple[Path, tuple[int, int]]]:
    """Shard files written by `ReplayBuffer.save_new_rows`, oldest first, with their (start, end) rows."""
    shards = []
    for path in directory.glob("rows-*-*.pt"):
        start, end = path.stem.split("-")[1:]
        shards.append((path, (int(start), int(end))))
    return sorted(shards, key=lambda item: item[1])


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminations: torch.Tensor,
    truncations: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over `[time, envs]` tensors; returns (advantages, returns).

    `next_values[t]` is the value of the state reached at step t: the final observation of an
    episode that ended there, not the reset observation that replaced it. A termination cuts the
    bootstrap (`r` only); a truncation keeps it (`r + γ·V(final observation)`); both stop the
    λ-recursion, since the next row starts a new episode.
    """
    not_terminated = 1.0 - terminations.float()
    episode_continues = 1.0 - torch.maximum(terminations.float(), truncations.float())
    deltas = rewards + gamma * not_terminated * next_values - values
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for step in reversed(range(rewards.shape[0])):
        running = deltas[step] + gamma * gae_lambda * episode_continues[step] * running
        advantages[step] = running
    return advantages, advantages + values


class RolloutBuffer:
    """On-policy storage of `steps × num_envs` transitions, with GAE computed at the end of a rollout."""

    def __init__(
        self,
        steps: int,
        num_envs: int,
        observation_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        device: str | torch.device = "cpu",
    ) -> None:
        self.steps, self.num_envs, self.device = steps, num_envs, torch.device(device)
        shape = (steps, num_envs)
        self.observations = torch.zeros(*shape, *observation_shape, device=self.device)
        self.actions = torch.zeros(*shape, *action_shape, device=self.device)
        self.log_probs = torch.zeros(shape, device=self.device)
        self.values = torch.zeros(shape, device=self.device)
        self.rewards = torch.zeros(shape, device=self.device)
        self.terminations = torch.zeros(shape, device=self.device)
        self.truncations = torch.zeros(shape, device=self.device)
        self.final_values = torch.zeros(shape, device=self.device)
        self.advantages = torch.zeros(shape, device=self.device)
        self.returns = torch.zeros(shape, device=self.device)
        self.step = 0

    def add(
        self,
        observations: torch.Tensor,
        actions: torch.Tensor,
        log_probs: torch.Tensor,
        values: torch.Tensor,
        rewards: torch.Tensor,
        terminations: torch.Tensor,
        truncations: torch.Tensor,
        final_values: torch.Tensor | None = None,
    ) -> None:
        """Store one vector-env step; `final_values` is V(final observation) where an episode was truncated."""
        if self.step >= self.steps:
            raise RuntimeError("rollout buffer is full: call compute_advantages() and reset() first")
        row = self.step
        for name, value in (
            ("observations", observations),
            ("actions", actions),
            ("log_probs", log_probs),
            ("values", values),
            ("rewards", rewards),
            ("terminations", terminations),
            ("truncations", truncations),
        ):
            getattr(self, name)[row] = torch.as_tensor(value, dtype=torch.float32, device=self.device)
        self.final_values[row] = 0.0 if final_values is None else final_values
        self.step += 1

    def compute_advantages(self, last_values: torch.Tensor, gamma: float, gae_lambda: float) -> None:
        """GAE for the whole rollout; `last_values` is V of the observations after the last step."""
        next_values = torch.cat([self.values[1:], last_values.reshape(1, -1)], dim=0)
        episode_ended = torch.maximum(self.terminations, self.truncations).bool()
        next_values = torch.where(episode_ended, self.final_values, next_values)
        self.advantages, self.returns = compute_gae(
            self.rewards, self.values, next_values, self.terminations, self.truncations, gamma, gae_lambda
        )

    recorded = ("observations", "actions", "log_probs", "values", "rewards", "terminations", "truncations")
    """What a rollout records per step, besides `final_values`."""

    @classmethod
    def from_steps(cls, columns: dict[str, torch.Tensor]) -> RolloutBuffer:
        """A full buffer holding `[steps, num_envs, ...]` tensors recorded elsewhere, oldest step first: one per
        name in `recorded`, and `final_values`. Call `compute_advantages` next."""
        missing = {*cls.recorded, "final_values"} - set(columns)
        if missing:
            raise ValueError(f"RolloutBuffer.from_steps needs tensors for {sorted(missing)}")
        steps, num_envs = columns["rewards"].shape
        shapes = columns["observations"].shape[2:], columns["actions"].shape[2:]
        buffer = cls(steps, num_envs, *shapes, columns["rewards"].device)
        for name in (*cls.recorded, "final_values"):
            getattr(buffer, name).copy_(columns[name])
        buffer.step = steps
        return buffer

    @property
    def size(self) -> int:
        """Transitions the buffer holds when full: steps × num_envs."""
        return self.steps * self.num_envs

    def reset(self) -> None:
        """Start a new rollout (storage is overwritten in place)."""
        self.step = 0

    def minibatches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Shuffled minibatches over the flattened rollout (one epoch)."""
        total = self.steps * self.num_envs
        flat = {
            name: getattr(self, name).reshape(total, *getattr(self, name).shape[2:])
            for name in ("observations", "actions", "log_probs", "values", "advantages", "returns")
        }
        order = torch.randperm(total, device=self.device, generator=generator)
        for start in range(0, total, batch_size):
            indices = order[start : start + batch_size]
            yield {name: tensor[indices] for name, tensor in flat.items()}
