"""PRDC: Policy Regularization with Dataset Constraint (Ran et al., 2023).

TD3+BC with the behaviour-cloning term replaced by a dataset constraint: the actor minimises
−λ·Q(s, π(s)) + (π(s) − a*)², λ = α / mean|Q|, where (s*, a*) is the dataset pair nearest to (s, π(s))
under d² = β²‖s − s*‖² + ‖π(s) − a*‖² (states normalised as the actor sees them). Everything else is
TD3+BC's: twin critics with target policy smoothing, actor and targets every second step, states z-scored
with the dataset's statistics (std + 1e-3) and evaluation states the same way, terminals only stopping
bootstrapping.

The nearest pair is found exactly by `policylab.core.neighbours.DatasetNeighbourSearch` (the authors query a
scipy KD-tree on the CPU at every actor step, the method's bottleneck). α and β default to the authors'
per-task values (README of LAMDA-RL/PRDC): halfcheetah α = 40, hopper and walker2d α = 2.5, β = 2 for all.
"""

from __future__ import annotations

import dataclasses

import torch
from torch.nn import functional as F

from policylab.core.agent import register_agent
from policylab.core.buffers import ReplayBuffer, TransitionBatch
from policylab.core.data import OfflineDataset
from policylab.core.data.scores import task_family
from policylab.core.neighbours import DatasetNeighbourSearch
from policylab.offline_rl.td3bc import TD3BC, TD3BCConfig

# (α, β) per task family, from the authors' README; other tasks take the hopper/walker2d values.
TASK_DEFAULTS: dict[str, tuple[float, float]] = {
    "halfcheetah": (40.0, 2.0),
    "hopper": (2.5, 2.0),
    "walker2d": (2.5, 2.0),
}
DEFAULT_ALPHA_BETA = (2.5, 2.0)


@dataclasses.dataclass
class PRDCConfig(TD3BCConfig):
    """PRDC settings: TD3+BC's, with α and β by default the authors' values for the dataset's task."""

    alpha: float | None = None
    """weight α of the Q term, λ = α / mean|Q(s, π(s))| (default: 40 for halfcheetah, else 2.5)"""
    beta: float | None = None
    """weight β of the state in the search's distance β²‖s − s'‖² + ‖a − a'‖² (default: 2)"""
    num_candidates: int = 32
    """nearest dataset states kept per state by the exact search (more: fewer full searches, more memory)"""


@register_agent("prdc")
class PRDC(TD3BC):
    """PRDC on an offline dataset."""

    config_class = PRDCConfig
    config: PRDCConfig

    def prepare(self, dataset: OfflineDataset) -> ReplayBuffer:
        """TD3+BC's preparation, the task's α and β, and the search over the dataset's (β·state, action) pairs."""
        buffer = super().prepare(dataset)
        default_alpha, default_beta = TASK_DEFAULTS.get(task_family(dataset.env_id or ""), DEFAULT_ALPHA_BETA)
        cfg = self.config
        self.alpha = default_alpha if cfg.alpha is None else cfg.alpha
        self.beta = default_beta if cfg.beta is None else cfg.beta
        states = self.normalizer(torch.as_tensor(dataset.observations, device=self.device))
        actions = torch.as_tensor(dataset.actions, device=self.device)
        self.search = DatasetNeighbourSearch(states, actions, self.beta, cfg.num_candidates)
        return buffer

    def actor_step(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        """TD3+BC's actor step, and the share of its queries that needed a full search (what PRDC's time hangs on)."""
        fallbacks = self.search.fallbacks
        metrics = super().actor_step(batch)
        share = (self.search.fallbacks - fallbacks) / len(batch.indices)
        return metrics | {"train/full_search_fraction": torch.tensor(share, device=self.device)}

    def behaviour_loss(self, policy_actions: torch.Tensor, batch: TransitionBatch) -> torch.Tensor:
        """The dataset constraint: the squared distance of π(s) to the action of the nearest dataset pair."""
        nearest = self.search.nearest(batch.indices, policy_actions)
        return F.mse_loss(policy_actions, self.search.actions[nearest])
