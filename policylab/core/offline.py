"""The loop every offline agent shares: sample, `update`, log, evaluate, checkpoint, resume.

A method subclasses `OfflineAgent` and writes `update(batch) -> metrics` (and, if it needs
dataset-derived state such as normalisation statistics, `prepare(dataset)`); `fit` does the rest.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from policylab.core.agent import (
    Agent,
    AgentConfig,
    restore_generator,
)
from policylab.core.buffers import ReplayBuffer, TransitionBatch
from policylab.core.data import OfflineDataset
from policylab.core.envs import make_env
from policylab.core.evaluation import EvaluationResult, evaluate
from policylab.core.logging import MetricAccumulator, MetricLogger, progress_bar
from policylab.core.nets import bf16_autocast
from policylab.core.runs import RunDirectory


def spaces_for_dataset(dataset: OfflineDataset) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """Observation and action spaces for a dataset: its environment's when known, else read from the data."""
    if dataset.env_id is not None:
        env = make_env(dataset.env_id)
        observation_space, action_space = env.observation_space, env.action_space
        env.close()
        if observation_space.shape != (dataset.observation_dim,) or action_space.shape != (dataset.action_dim,):
            raise ValueError(
                f"dataset {dataset.dataset_id} has observations of size {dataset.observation_dim} and actions of size "
                f"{dataset.action_dim}, but {dataset.env_id} has {observation_space.shape} and {action_space.shape}: "
                "set the dataset's env_id to the task it was collected on"
            )
        return observation_space, action_space
    if np.abs(dataset.actions).max() > 1.0:
        raise ValueError(
            "dataset has no env_id and actions outside [-1, 1], so the action bounds are unknown: set "
            "dataset.env_id, or build the agent with explicit spaces: Agent(observation_space, action_space, config)"
        )
    observation_space = gym.spaces.Box(-np.inf, np.inf, (dataset.observation_dim,), np.float32)
    return observation_space, gym.spaces.Box(-1.0, 1.0, (dataset.action_dim,), np.float32)


@dataclasses.dataclass
class OfflineConfig(AgentConfig):
    """Fields every offline agent's config has."""

    bf16_matmuls: bool = False
    """run `fit`'s updates with their matrix products in bfloat16 (autocast; weights and optimiser state stay
    float32): faster on AVX512-BF16/AMX CPUs and recent GPUs, slower on CPUs without native bfloat16"""


class OfflineAgent(Agent):
    """An agent trained from a fixed dataset; subclasses implement `update`."""

    config_class = OfflineConfig

    @classmethod
    def from_dataset(cls, dataset: OfflineDataset, config: AgentConfig | None = None) -> OfflineAgent:
        """An untrained agent whose spaces match the dataset."""
        observation_space, action_space = spaces_for_dataset(dataset)
        return cls(observation_space, action_space, config)

    def prepare(self, dataset: OfflineDataset) -> ReplayBuffer:
        """Compute dataset-derived state and return the buffer `fit` samples from (called once per `fit`)."""
        return ReplayBuffer.from_dataset(dataset, device=self.device, seed=self.config.seed)

    @property
    def bf16_matmuls(self) -> bool:
        """Whether `fit` runs updates under bfloat16 autocast: the config's `bf16_matmuls` (off when it has none)."""
        return getattr(self.config, "bf16_matmuls", False)

    @property
    def batch_size(self) -> int:
        """Transitions per update: the config's `batch_size` (256 when it has none)."""
        return getattr(self.config, "batch_size", 256)

    def training_transitions(self, batch: TransitionBatch) -> TransitionBatch:
        """Transitions in the env's units turned into those of the agent's buffer after `prepare`: states through
        the agent's `normalizer` and rewards times its `reward_scale`, when it has them (how PGD adds synthetic
        data to any agent's training)."""
        normalizer = getattr(self, "normalizer", None)
        scale = getattr(self, "reward_scale", 1.0)
        observations, actions, rewards, next_observations, terminals, _ = batch
        if normalizer is not None:
            observations, next_observations = normalizer(observations), normalizer(next_observations)
        return TransitionBatch(observations, actions, rewards * scale, next_observations, terminals)

    def setup_training(self, steps: int) -> None:
        """Set up what depends on the run's length (learning-rate schedules), before `fit` restores a checkpoint."""

    def normalize_states(self, dataset: OfflineDataset, buffer: ReplayBuffer) -> None:
        """Record the dataset's state statistics (std + 1e-3) in `self.normalizer`, which the policy applies to
        its inputs, and z-score the buffer's states with them."""
        self.normalizer.set_statistics(*dataset.state_statistics(eps=1e-3))
        buffer.normalize_observations(self.normalizer.mean, self.normalizer.std)

    def update(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        """One training step of the method on a batch; returns its metrics as detached tensors."""
        raise NotImplementedError

    def fit(
        self,
        dataset: OfflineDataset,
        steps: int,
        eval_env: str | None = None,
        eval_every: int = 5000,
        eval_episodes: int = 10,
        log_every: int = 1000,
        checkpoint_every: int | None = None,
        run_dir: str | os.PathLike | None = None,
        resume: bool = False,
        progress: bool = True,
        callback: Callable[[int], None] | None = None,
    ) -> EvaluationResult | None:
        """Train for `steps` updates in total; returns the final evaluation (None without `eval_env`).

        With `run_dir`, the run keeps its config, metrics, checkpoints every `checkpoint_every`
        updates (default `eval_every`), final agent and evaluation there; `resume=True` continues a
        killed run from its last checkpoint and ends exactly where an uninterrupted run would.
        `callback(step)` is called after every update.
        """
        eval_env = eval_env or dataset.env_id
        checkpoint_every = checkpoint_every or eval_every
        buffer = self.prepare(dataset)
        self.setup_training(steps)
        batch_size = self.batch_size
        run = RunDirectory(run_dir) if run_dir is not None else None
        logger = MetricLogger(run.path) if run is not None else None
        settings = {
            "fit": {
                "dataset": dataset.dataset_id,
                "steps": steps,
                "eval_env": eval_env,
                "eval_every": eval_every,
                "eval_episodes": eval_episodes,
            }
        }
        start = 0
        if run is not None:
            start = self._start_or_resume(run, buffer, logger, settings, resume)
        accumulator = MetricAccumulator()
        result: EvaluationResult | None = None
        started = time.perf_counter()
        with progress_bar(steps, initial=start, description=type(self).__name__, enabled=progress) as bar:
            for step in range(start + 1, steps + 1):
                with bf16_autocast(self.device, self.bf16_matmuls):
                    accumulator.add(self.update(buffer.sample(batch_size)))
                if callback is not None:
                    callback(step)
                metrics: dict[str, float] = {}
                if step % log_every == 0 or step == steps:
                    metrics.update(accumulator.means())
                    # this process's rate since it started or resumed, evaluations included
                    metrics["time/updates_per_second"] = (step - start) / max(time.perf_counter() - started, 1e-9)
                if eval_env is not None and (step % eval_every == 0 or step == steps):
                    result = self.evaluate(eval_env, eval_episodes)
                    metrics.update(result.metrics())
                    bar.set_postfix(eval_return=f"{result.return_mean:.1f}")
                if logger is not None and metrics:
                    logger.log(step, metrics)
                if run is not None and (step % checkpoint_every == 0 or step == steps):
                    self._save_training_checkpoint(run, buffer, step)
                bar.update(1)
        if run is not None:
            self._finish_run(run, logger, result)
        return result

    def evaluate(self, env_id: str, episodes: int = 10) -> EvaluationResult:
        """Deterministic evaluation; environments are seeded with `config.seed + 100` (as TD3+BC's authors do)."""
        return evaluate(self, env_id, episodes=episodes, seed=self.config.seed + 100)

    # -- run directory ----------------------------------------------------------------------------

    def _start_or_resume(
        self, run: RunDirectory, buffer: ReplayBuffer, logger: MetricLogger, settings: dict, resume: bool
    ) -> int:
        payload = self._open_run(run, logger, settings, resume)
        if payload is None:
            return 0
        self.restore_sampling_state(buffer, payload["training"])
        return int(payload["training"]["step"])

    def _save_training_checkpoint(self, run: RunDirectory, buffer: ReplayBuffer, step: int) -> None:
        self._save_run_checkpoint(run, step, self.sampling_state(buffer))

    def sampling_state(self, buffer: ReplayBuffer) -> dict[str, Any]:
        """What a checkpoint needs to draw the same batches after a resume: the buffer's generator (the dataset
        itself is read again by `prepare`)."""
        return {"buffer_generator": buffer.generator.get_state()}

    def restore_sampling_state(self, buffer: ReplayBuffer, training: dict[str, Any]) -> None:
        """Restore what `sampling_state` saved."""
        restore_generator(buffer.generator, training["buffer_generator"])
