"""HNPG: hybrid natural policy gradient (Zhou et al., 2023, "Offline data enhanced on-policy policy gradient with
provable guarantees"; authors' code YifeiZhou02/HNPG).

NPG on online data, with critics fitted on online and offline data together. Each iteration draws, at every time
step h, as many offline transitions as the online rollout has per step, then fits Q_h backwards over h:

    L(Q_h) = mean_online (Q_h(s, a) − G_MC)² + mean_offline (Q_h(s, a) − [r + Q_{h+1}(s', a' ∼ π_{h+1})])²

(at the last step the offline target is r). Online advantages are GAE with V_h from the hybrid critics; offline
states get re-sampled actions a ∼ π_h with Â = Q_h(s, a) − V_h(s); the natural gradient step of each π_h is taken
on the union. Offline data that fits the task speeds the critics up; data that does not only adds a regression
term, while the policy's improvement is still measured on its own online samples.
"""

from __future__ import annotations

import dataclasses
import re

import gymnasium as gym
import numpy as np
import torch

from policylab.core.agent import register_agent
from policylab.core.data import OfflineDataset, load_dataset
from policylab.core.data.generate import combination_lock_dataset_id
from policylab.core.envs import VecEnv
from policylab.online_rl.npg import NPG, CriticBatch, NPGConfig, PolicyBatch, group_by_step


@dataclasses.dataclass
class HNPGConfig(NPGConfig):
    """HNPG settings: NPG's, and the offline data."""

    dataset: str | None = None
    """offline data (gen/<name>, d4rl/<name>, a D4RL-layout .hdf5 path); default on CombinationLock-H<H>-v0: the
    paper's data, gen/combination-lock-h<H>-v0 (50,000 episodes of the optimal policy with 1/H random actions)"""
    offline_ratio: float = 1.0
    """offline transitions drawn per time step and iteration, as a multiple of the online samples per time step
    (1: as many, the authors' setting); they feed both the critic fit and the policy step"""


def steps_within_episodes(dataset: OfflineDataset) -> np.ndarray:
    """Each transition's time step in its episode (episodes split after terminals and timeouts)."""
    steps = np.arange(len(dataset))
    for episode in dataset.episodes():
        steps[episode.start : episode.stop] -= episode.start
    return steps


@register_agent("hnpg")
class HNPG(NPG):
    """Hybrid NPG: natural policy gradient whose critics also fit offline data."""

    config_class = HNPGConfig
    config: HNPGConfig

    def __init__(self, env: str | VecEnv | tuple[gym.Space, gym.Space], config: HNPGConfig | None = None) -> None:
        super().__init__(env, config)
        self.offline: dict[str, torch.Tensor] | None = None
        self._offline_rows: torch.Tensor | None = None  # this iteration's offline rows, [steps, per step]

    def setup_learning(self, total_timesteps: int) -> None:
        if self.offline is None:
            self.load_offline_data(load_dataset(self._dataset_id()))

    def _dataset_id(self) -> str:
        if self.config.dataset is not None:
            return self.config.dataset
        lock = re.fullmatch(r"CombinationLock-H(\d+)-v0", self.env_id or "")
        if lock is None:
            raise ValueError(f"HNPG needs offline data for {self.env_id}: set config.dataset (--dataset)")
        return combination_lock_dataset_id(int(lock[1]))

    def load_offline_data(self, dataset: OfflineDataset) -> None:
        """Keep the dataset's transitions on the device, indexed by time step (steps past the horizon are not
        used)."""
        expected = (self.observation_space.shape[0], self.action_space.shape[0])
        if (dataset.observation_dim, dataset.action_dim) != expected:
            raise ValueError(
                f"offline data {dataset.dataset_id} has observations of size {dataset.observation_dim} and actions of "
                f"size {dataset.action_dim}; {self.env_id} has {expected[0]} and {expected[1]}: use data of this task"
            )
        self.offline = dataset.as_tensors(self.device)
        steps = torch.as_tensor(steps_within_episodes(dataset), device=self.device)
        if self.config.horizon == 0:
            steps.zero_()
        kept = (steps < self.num_steps).nonzero().flatten()
        groups = group_by_step(steps[kept], self.num_steps)
        self._offline_index, self._offline_counts = kept[groups.index], groups.mask.sum(dim=1)
        empty = (self._offline_counts == 0).nonzero().flatten()
        if len(empty):
            raise ValueError(f"offline data {dataset.dataset_id} has no transition at time step {int(empty[0])}")

    # -- the hybrid parts NPG leaves open ---------------------------------------------------------------

    def _prepare_offline_batch(self, per_step: int) -> None:
        draws = torch.rand(self.num_steps, max(round(per_step * self.config.offline_ratio), 1), device=self.device)
        columns = (draws * self._offline_counts[:, None]).long()
        self._offline_rows = self._offline_index.gather(1, columns)

    @torch.no_grad()
    def _offline_critic_batch(self, step: int) -> CriticBatch:
        rows = self._offline_rows[step]
        observations, actions = self.offline["observations"][rows], self.offline["actions"][rows]
        targets = self.offline["rewards"][rows]
        if not (self.config.horizon > 0 and step == self.num_steps - 1):  # the last step of an episode ends it
            next_step = min(step + 1, self.num_steps - 1)
            next_observations = self.offline["next_observations"][rows]
            next_actions = self.policy.sample(next_observations, next_step)
            next_q = self.critic(next_observations, next_actions, next_step)
            targets = targets + self.config.discount * (1.0 - self.offline["terminals"][rows]) * next_q
        return CriticBatch(observations, actions, targets)

    @torch.no_grad()
    def _offline_policy_batch(self) -> PolicyBatch:
        observations = self.offline["observations"][self._offline_rows]
        actions = self.policy.sample(observations)
        advantages = self.critic(observations, actions) - self.critic.value(
            observations, self.policy, self.config.value_samples
        )
        return PolicyBatch(observations, actions, advantages, torch.ones_like(advantages, dtype=torch.bool))
