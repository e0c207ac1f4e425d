"""Policy-guided diffusion (Jackson et al., 2024): an offline agent trained on synthetic on-policy experience.

A trajectory diffusion model (`trajectory_diffusion.py`) is trained once on the dataset's sub-trajectories. The
agent (TD3+BC or IQL) then trains on batches of 240 synthetic and 16 real transitions; the synthetic set is sampled
from the diffusion model with the agent's current policy as guidance, and sampled again every 10,000 updates. The
first set is unguided (the policy is untrained). Guidance uses the agent's `action_log_likelihood`: the Gaussian
density of a stochastic policy (IQL), N(π(s), 1) for a deterministic one (TD3+BC).

The diffusion model is trained by `prepare` unless `diffusion_file` names one, and kept in the cache
($POLICYLAB_DATA/diffusion) under a digest of the dataset and its settings, so seeds and agents share it. Saved
agents hold the inner agent's state only: `policylab.load` gives a PGD agent that acts like its inner agent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from policylab.core.agent import register_agent, restore_generator
from policylab.core.buffers import ReplayBuffer, TransitionBatch
from policylab.core.data import OfflineDataset
from policylab.core.files import cache_dir
from policylab.core.offline import OfflineAgent, OfflineConfig
from policylab.offline_rl.iql import IQL, IQLConfig
from policylab.offline_rl.td3bc import TD3BC, TD3BCConfig
from policylab.offline_rl.trajectory_diffusion import (
    DIFFUSION_FORMAT,
    TrajectoryDiffusion,
    TrajectoryDiffusionConfig,
    sample_trajectories,
    trajectories_to_transitions,
)

INNER_AGENTS: dict[str, type[OfflineAgent]] = {"td3bc": TD3BC, "iql": IQL}


@dataclasses.dataclass
class PGDConfig(OfflineConfig):
    """PGD settings: the inner agent, the diffusion model, guidance and the synthetic/real batch mix. Defaults are
    the authors' except the diffusion network and the synthetic set's size, made to fit a 2-core CPU."""

    agent: Literal["td3bc", "iql"] = "td3bc"
    """offline agent trained on the mixed batches (its settings: the `td3bc` or `iql` group)"""
    td3bc: TD3BCConfig = dataclasses.field(default_factory=TD3BCConfig)
    """TD3+BC's settings when agent is td3bc (its seed and device are PGD's)"""
    iql: IQLConfig = dataclasses.field(default_factory=IQLConfig)
    """IQL's settings when agent is iql (its seed and device are PGD's)"""
    diffusion: TrajectoryDiffusionConfig = dataclasses.field(default_factory=TrajectoryDiffusionConfig)
    """the trajectory diffusion model's settings"""
    diffusion_steps: int = 20_000
    """training steps of the diffusion model"""
    diffusion_file: str | None = None
    """a trained model to sample from (`TrajectoryDiffusion.save`); default: train one and cache it"""
    diffusion_seed: int = 0
    """seed of the diffusion model's training (shared by the agent seeds, as the authors do)"""
    guidance: float = 1.0
    """policy guidance coefficient c (0 samples the dataset's behaviour, unguided)"""
    normalize_guidance: bool = False
    """scale each trajectory's guidance gradient to unit norm"""
    deterministic_guidance_std: float = 1.0
    """σ of N(π(s), σ²), the density that guides with a deterministic policy"""
    synthetic_trajectories: int = 1024
    """sub-trajectories per synthetic set (horizon − 1 transitions each); the authors' is 8192"""
    synthetic_batch_size: int = 240
    """synthetic transitions in each batch (the rest are real)"""
    regenerate_every: int = 10_000
    """updates between samplings of a new synthetic set with the current policy"""


class MixedReplay:
    """Batches of `synthetic_batch_size` synthetic and the rest real transitions, concatenated in that order."""

    def __init__(self, real: ReplayBuffer, synthetic: ReplayBuffer, synthetic_batch_size: int) -> None:
        self.real, self.synthetic, self.synthetic_batch_size = real, synthetic, synthetic_batch_size
        self.generator = real.generator  # what the offline loop saves for resumption (the synthetic one: PGD)

    def sample(self, batch_size: int) -> TransitionBatch:
        if not 0 <= self.synthetic_batch_size <= batch_size:
            raise ValueError(f"synthetic_batch_size must be in [0, {batch_size}], got {self.synthetic_batch_size}")
        synthetic = self.synthetic.sample(self.synthetic_batch_size)
        real = self.real.sample(batch_size - self.synthetic_batch_size)
        return TransitionBatch(*(torch.cat([s, r]) for s, r in zip(synthetic[:5], real[:5])))


def dataset_digest(dataset: OfflineDataset) -> str:
    """A short digest of a dataset's transition arrays."""
    digest = hashlib.blake2b(digest_size=8)
    for array in (dataset.observations, dataset.actions, dataset.rewards, dataset.terminals, dataset.timeouts):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@register_agent("pgd")
class PGD(OfflineAgent):
    """Policy-guided diffusion: TD3+BC or IQL on synthetic trajectories sampled with guidance from its own policy."""

    config_class = PGDConfig
    config: PGDConfig

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, config: PGDConfig | None = None):
        super().__init__(observation_space, action_space, config)
        cfg = self.config
        if cfg.agent not in INNER_AGENTS:
            raise ValueError(f"PGD trains one of {sorted(INNER_AGENTS)}, not {cfg.agent!r}")
        inner_config = dataclasses.replace(getattr(cfg, cfg.agent), seed=cfg.seed, device=cfg.device)
        self.agent = INNER_AGENTS[cfg.agent](observation_space, action_space, inner_config)
        self.diffusion: TrajectoryDiffusion | None = None
        self.replay: MixedReplay | None = None
        self.sampling_generator = torch.Generator(device=self.device)
        self.sampling_generator.manual_seed(cfg.seed)

    @property
    def batch_size(self) -> int:
        return self.agent.batch_size

    # -- state: the inner agent's (the diffusion model lives in its own file) --------------------------

    def _stateful_attributes(self) -> dict[str, Any]:
        return self.agent._stateful_attributes()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.agent.load_state_dict(state)
        self.num_updates = self.agent.num_updates

    def _policy(self, observations: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return self.agent._policy(observations, deterministic)

    def action_log_likelihood(
        self, observations: torch.Tensor, actions: torch.Tensor, deterministic_std: float = 1.0
    ) -> torch.Tensor:
        return self.agent.action_log_likelihood(observations, actions, deterministic_std)

    # -- training ------------------------------------------------------------------------------------

    def setup_training(self, steps: int) -> None:
        self.agent.setup_training(steps)

    def diffusion_path(self, dataset: OfflineDataset) -> Path:
        """Where the diffusion model for this dataset and these settings is cached."""
        cfg = self.config
        settings = json.dumps(
            [DIFFUSION_FORMAT, dataclasses.asdict(cfg.diffusion), cfg.diffusion_steps, cfg.diffusion_seed]
        )
        key = hashlib.blake2b(f"{dataset_digest(dataset)}{settings}".encode(), digest_size=8).hexdigest()
        name = (dataset.dataset_id or "dataset").replace("/", "_")
        return cache_dir("diffusion") / f"{name}-{key}.pt"

    def trained_diffusion(self, dataset: OfflineDataset, progress: bool | None = None) -> TrajectoryDiffusion:
        """The diffusion model of `diffusion_file`, else the cached one for the dataset, trained first if missing
        (resuming an interrupted training), under its own seed so the agent's random streams do not depend on it.
        The progress bar shows by default when stderr is a terminal."""
        cfg = self.config
        if cfg.diffusion_file is not None:
            model = TrajectoryDiffusion.load(cfg.diffusion_file, device=self.device)
            if (model.observation_dim, model.action_dim) != (dataset.observation_dim, dataset.action_dim):
                raise ValueError(
                    f"{cfg.diffusion_file} models observations of size {model.observation_dim} and actions of size "
                    f"{model.action_dim}, but the dataset has {dataset.observation_dim} and {dataset.action_dim}"
                )
            return model
        path = self.diffusion_path(dataset)
        if not path.exists():
            print(f"training a trajectory diffusion model ({cfg.diffusion_steps} steps) into {path}", file=sys.stderr)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(cfg.diffusion_seed)
            low, high = self.action_space.low, self.action_space.high
            model = TrajectoryDiffusion.from_dataset(dataset, cfg.diffusion, low, high).to(self.device)
            progress = sys.stderr.isatty() if progress is None else progress
            model.fit(dataset, cfg.diffusion_steps, checkpoint=path, progress=progress)
        return model

    def regenerate(self) -> None:
        """Sample a new synthetic set with the current policy's guidance (unguided before the first update)."""
        cfg = self.config
        guidance = cfg.guidance if self.num_updates > 0 else 0.0

        def log_likelihood(observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
            return self.action_log_likelihood(observations, actions, cfg.deterministic_guidance_std)

        windows = sample_trajectories(
            self.diffusion,
            cfg.synthetic_trajectories,
            log_likelihood,
            guidance,
            cfg.normalize_guidance,
            generator=self.sampling_generator,
        )
        transitions = self.agent.training_transitions(self.synthetic_transitions(windows))
        self.replay.synthetic.add(*transitions[:5])  # exactly its capacity: the old set is overwritten

    def synthetic_transitions(self, windows: torch.Tensor) -> TransitionBatch:
        """The transitions (env units) of sampled windows; a diagnostic may override it to relabel them."""
        return trajectories_to_transitions(self.diffusion, windows)

    def prepare(self, dataset: OfflineDataset) -> MixedReplay:
        """Prepare the inner agent on the real data, get the diffusion model, and sample the first synthetic set."""
        cfg = self.config
        real = self.agent.prepare(dataset)
        self.diffusion = self.trained_diffusion(dataset)
        capacity = cfg.synthetic_trajectories * (cfg.diffusion.horizon - 1)
        synthetic = ReplayBuffer(capacity, dataset.observation_dim, dataset.action_dim, self.device, seed=cfg.seed + 1)
        self.replay = MixedReplay(real, synthetic, cfg.synthetic_batch_size)
        self.regenerate()
        return self.replay

    def update(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        """The inner agent's update; every `regenerate_every` updates, a new synthetic set."""
        metrics = self.agent.update(batch)
        self.num_updates = self.agent.num_updates
        if self.num_updates % self.config.regenerate_every == 0:
            self.regenerate()
        return metrics

    # -- resumption: the synthetic set and its sampling state travel with the checkpoint ---------------

    def sampling_state(self, buffer: MixedReplay) -> dict[str, Any]:
        return {
            **super().sampling_state(buffer),
            "synthetic": buffer.synthetic.state_dict(),
            "diffusion_generator": self.sampling_generator.get_state(),
        }

    def restore_sampling_state(self, buffer: MixedReplay, training: dict[str, Any]) -> None:
        super().restore_sampling_state(buffer, training)
        buffer.synthetic.load_state_dict(training["synthetic"])
        restore_generator(self.sampling_generator, training["diffusion_generator"])
