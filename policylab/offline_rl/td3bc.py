"""TD3+BC: TD3 with a behaviour-cloning term in the actor loss (Fujimoto & Gu, 2021).

The actor maximises λ·Q(s, π(s)) − (π(s) − a)², with λ = α / mean|Q| so that the trade-off does
not depend on the scale of the rewards. States are z-scored with the dataset's statistics, and
evaluation states the same way. Defaults are the paper's (α = 2.5, policy noise 0.2 clipped at
0.5, actor and targets updated every 2 critic steps).
"""

from __future__ import annotations

import copy
import dataclasses

import gymnasium as gym
import torch
from torch.nn import functional as F

from policylab.core.agent import register_agent
from policylab.core.buffers import ReplayBuffer, TransitionBatch
from policylab.core.data import OfflineDataset
from policylab.core.nets import (
    DeterministicActor,
    EnsembleCritic,
    ObservationNormalizer,
    adam,
    freeze,
    polyak_update,
)
from policylab.core.offline import OfflineAgent, OfflineConfig


@dataclasses.dataclass
class TD3BCConfig(OfflineConfig):
    """TD3+BC settings; defaults are the paper's for the D4RL MuJoCo tasks."""

    alpha: float = 2.5
    """weight α of the Q term: λ = α / mean|Q(s, π(s))|"""
    discount: float = 0.99
    """discount factor γ"""
    tau: float = 0.005
    """Polyak rate of the target networks"""
    policy_noise: float = 0.2
    """std of the target policy smoothing noise, as a fraction of the action range's half-width"""
    noise_clip: float = 0.5
    """clip of the target policy smoothing noise (same units)"""
    policy_delay: int = 2
    """critic updates per actor and target update"""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor"""
    critic_lr: float = 3e-4
    """Adam learning rate of the twin critics"""
    batch_size: int = 256
    """transitions per update"""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """hidden layer widths of actor and critics"""
    normalize_observations: bool = True
    """z-score observations with the dataset's mean and std (+1e-3)"""


@register_agent("td3bc")
class TD3BC(OfflineAgent):
    """TD3+BC on an offline dataset."""

    config_class = TD3BCConfig
    config: TD3BCConfig

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, config: TD3BCConfig | None = None):
        super().__init__(observation_space, action_space, config)
        cfg, device = self.config, self.device
        observation_dim, action_dim = observation_space.shape[0], action_space.shape[0]
        self.normalizer = ObservationNormalizer(observation_dim).to(device)
        self.actor = DeterministicActor(observation_dim, action_space.low, action_space.high, cfg.hidden_sizes).to(
            device
        )
        self.critic = EnsembleCritic(observation_dim, action_dim, self.critic_hidden_sizes, num_critics=2).to(device)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_target = copy.deepcopy(self.critic)
        freeze([self.actor_target, self.critic_target])
        self.actor_optimizer = adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_optimizer = adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.alpha = cfg.alpha
        self.discount = cfg.discount

    @property
    def critic_hidden_sizes(self) -> tuple[int, ...]:
        """Hidden layer widths of the twin critics: TD3+BC's are the actor's."""
        return self.config.hidden_sizes

    def prepare(self, dataset: OfflineDataset) -> ReplayBuffer:
        """Record the dataset's state statistics and normalise the buffer's states with them."""
        buffer = super().prepare(dataset)
        if self.config.normalize_observations:
            self.normalize_states(dataset, buffer)
        return buffer

    def behaviour_loss(self, policy_actions: torch.Tensor, batch: TransitionBatch) -> torch.Tensor:
        """The actor's regulariser: the squared distance of π(s) to the batch's own actions."""
        return F.mse_loss(policy_actions, batch.actions)

    def _policy(self, observations: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return self.actor(self.normalizer(observations))

    def critic_targets(self, batch: TransitionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """TD3's smoothed target actions ã' = π̄(s') + clipped noise, and the TD targets r + γ·(1 − d)·min Q̄(s', ã')."""
        cfg = self.config
        scale = self.actor.scaler.scale
        with torch.no_grad():
            noise = (torch.randn_like(batch.actions) * cfg.policy_noise).clamp(-cfg.noise_clip, cfg.noise_clip) * scale
            low, high = self.actor.scaler.bias - scale, self.actor.scaler.bias + scale
            next_actions = torch.clamp(self.actor_target(batch.next_observations) + noise, low, high)
            next_q = self.critic_target(batch.next_observations, next_actions).min(dim=0).values
            target_q = batch.rewards + self.discount * (1.0 - batch.terminals) * next_q
        return next_actions, target_q

    def critic_step(self, batch: TransitionBatch, target_q: torch.Tensor) -> dict[str, torch.Tensor]:
        """One step of both critics on MSE(Q1, y) + MSE(Q2, y); counts the update."""
        q_values = self.critic(batch.observations, batch.actions)
        critic_loss = (q_values - target_q).pow(2).mean(dim=1).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()
        self.num_updates += 1
        return {"train/critic_loss": critic_loss.detach(), "train/q_mean": q_values.detach().mean()}

    def actor_step(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        """One actor step on −λ·mean Q1(s, π(s)) + `behaviour_loss`, then the Polyak update of both targets."""
        policy_actions = self.actor(batch.observations)
        self.critic.requires_grad_(False)  # the actor step needs dQ/da only, not critic weight gradients
        q_policy = self.critic(batch.observations, policy_actions, member=0)
        self.critic.requires_grad_(True)
        lmbda = self.alpha / q_policy.abs().mean().detach()
        bc_loss = self.behaviour_loss(policy_actions, batch)
        actor_loss = -lmbda * q_policy.mean() + bc_loss
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        polyak_update(self.actor_target, self.actor, self.config.tau)
        polyak_update(self.critic_target, self.critic, self.config.tau)
        return {"train/actor_loss": actor_loss.detach(), "train/bc_loss": bc_loss.detach()}

    def update(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        """One critic step, and every `policy_delay` steps an actor step and a target update."""
        _, target_q = self.critic_targets(batch)
        metrics = self.critic_step(batch, target_q)
        if self.num_updates % self.config.policy_delay == 0:
            metrics.update(self.actor_step(batch))
        return metrics
