"""SAC: soft actor-critic with automatic entropy tuning (Haarnoja et al., 2018).

Twin critics are one batched module (`EnsembleCritic`), the replay buffer lives on the agent's
device, and metrics stay tensors until logged. Defaults follow Stable-Baselines3 and CleanRL for
MuJoCo: 256-256 networks, learning rate 3e-4, batch 256, τ = 0.005, γ = 0.99, target entropy
−dim(A), entropy coefficient starting at 1, 5000 uniformly random steps before learning.

Each update follows SB3's order: the entropy coefficient steps on the current policy's
log-density (the update itself uses α from before that step), the critics on the soft Bellman
target with the target critics, then the actor on the updated critics' min-Q, then the targets by
Polyak averaging.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from policylab.core.agent import register_agent
from policylab.core.buffers import ReplayBuffer, TransitionBatch
from policylab.core.envs import VecEnv
from policylab.core.nets import EnsembleCritic, TanhGaussianActor, adam, bf16_autocast, freeze, polyak_update
from policylab.core.online import OnlineAgent, OnlineConfig
from policylab.core.runs import RunDirectory


@dataclasses.dataclass
class SACConfig(OnlineConfig):
    """SAC settings; defaults are the common MuJoCo ones (SB3, CleanRL)."""

    learning_rate: float = 3e-4
    """Adam learning rate of actor, critics and entropy coefficient"""
    buffer_size: int = 1_000_000
    """replay capacity in transitions"""
    batch_size: int = 256
    """transitions per gradient update"""
    learning_starts: int = 5000
    """env steps of uniformly random actions before the first update"""
    discount: float = 0.99
    """discount factor γ"""
    tau: float = 0.005
    """Polyak rate of the target critics"""
    updates_per_step: float = 1.0
    """gradient updates per env step (with num_envs envs, num_envs × this per vector step)"""
    initial_entropy_coefficient: float = 1.0
    """starting value of the entropy coefficient α"""
    autotune_entropy: bool = True
    """tune α towards the target entropy; False keeps it fixed"""
    target_entropy: float | None = None
    """entropy target of the α update (default −dim(A))"""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """hidden layer widths of actor and critics"""
    bf16_matmuls: bool = False
    """update's matrix products in bfloat16 (autocast; float32 weights): faster on AVX512-BF16/AMX CPUs, recent GPUs"""


class PolicySample(NamedTuple):
    """What the actor's loss is taken at: reparameterised actions, their log-densities (which also drive α), a loss
    a variant adds to the actor's (PMOE's gate loss) and that variant's metrics."""

    actions: torch.Tensor
    log_probs: torch.Tensor
    auxiliary_loss: torch.Tensor | None
    metrics: dict[str, torch.Tensor]


class LogEntropyCoefficient(nn.Module):
    """log α as a module, so it is saved and optimised like the networks."""

    def __init__(self, initial_value: float) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.tensor(float(initial_value)).log())


@register_agent("sac")
class SAC(OnlineAgent):
    """Soft actor-critic for continuous actions."""

    config_class = SACConfig
    config: SACConfig

    def __init__(self, env: str | VecEnv | tuple[gym.Space, gym.Space], config: SACConfig | None = None) -> None:
        super().__init__(env, config)
        if not isinstance(self.action_space, gym.spaces.Box):
            raise ValueError(f"SAC needs a continuous (Box) action space, got {self.action_space}")
        cfg, device = self.config, self.device
        observation_dim, action_dim = self.observation_space.shape[0], self.action_space.shape[0]
        low, high = self.action_space.low, self.action_space.high
        self.actor = self._build_actor(observation_dim, low, high).to(device)
        self.critic = EnsembleCritic(observation_dim, action_dim, cfg.hidden_sizes, num_critics=2).to(device)
        self.critic_target = copy.deepcopy(self.critic)
        freeze([self.critic_target])
        self.log_alpha = LogEntropyCoefficient(cfg.initial_entropy_coefficient).to(device)
        self._actor_parameters = list(self.actor.parameters())
        self.actor_optimizer = adam(self._actor_parameters, lr=cfg.learning_rate)
        self.critic_optimizer = adam(self.critic.parameters(), lr=cfg.learning_rate)
        self.alpha_optimizer = adam(self.log_alpha.parameters(), lr=cfg.learning_rate)
        self.target_entropy = cfg.target_entropy if cfg.target_entropy is not None else -float(action_dim)
        self.buffer: ReplayBuffer | None = None
        self._pending_updates = 0.0

    def _build_actor(self, observation_dim: int, low: np.ndarray, high: np.ndarray) -> nn.Module:
        """The policy network (a variant may use another with the same `act`, `log_prob` and `scaler`)."""
        return TanhGaussianActor(observation_dim, low, high, self.config.hidden_sizes)

    def _policy(self, observations: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return self.actor.act(observations, deterministic=deterministic)

    def action_log_likelihood(
        self, observations: torch.Tensor, actions: torch.Tensor, deterministic_std: float = 1.0
    ) -> torch.Tensor:
        """The policy's own density (`deterministic_std` is not used: the policy is stochastic)."""
        return self.actor.log_prob(observations, actions)

    # -- training ----------------------------------------------------------------------------------

    def setup_learning(self, total_timesteps: int) -> None:
        if self.buffer is None:
            cfg = self.config
            self.buffer = ReplayBuffer(
                cfg.buffer_size,
                self.observation_space.shape[0],
                self.action_space.shape[0],
                device=self.device,
                seed=cfg.seed,
            )

    def collect_and_train(self, envs: VecEnv) -> dict[str, torch.Tensor]:
        """One vector-env step (random actions until `learning_starts`), then its share of updates."""
        cfg = self.config
        if self.num_timesteps < cfg.learning_starts:
            unit = 2.0 * torch.rand(envs.num_envs, self.action_space.shape[0], device=self.device) - 1.0
            actions = self.actor.scaler(unit)
        else:
            with torch.no_grad():
                actions = self.actor.act(self.observations)
        step = self.step_envs(envs, actions)
        # Truncated episodes bootstrap from their final observation; terminated ones do not bootstrap.
        self.buffer.add(step.observations, step.actions, step.rewards, step.final_observations, step.terminations)
        if self.num_timesteps < cfg.learning_starts:
            return {}
        self._pending_updates += cfg.updates_per_step * envs.num_envs
        metrics: dict[str, torch.Tensor] = {}
        while self._pending_updates >= 1.0:
            metrics = self.update(self.buffer.sample(cfg.batch_size))
            self._pending_updates -= 1.0
        return metrics

    def update(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        """One gradient step of α, the twin critics and the actor, then the target critics."""
        cfg = self.config
        observations, actions, rewards, next_observations, terminals, _ = batch

        with bf16_autocast(self.device, cfg.bf16_matmuls):
            policy = self._policy_sample(observations)
            with torch.no_grad():
                next_actions, next_log_probs = self._next_policy_sample(next_observations)
                next_q = self.critic_target(next_observations, next_actions).min(dim=0).values
            q_values = self.critic(observations, actions)
        log_probs = policy.log_probs
        alpha = self.log_alpha.value.detach().exp()  # this update's α is the one before its step, as in SB3
        if cfg.autotune_entropy:
            # The α loss −log α·(log π + target entropy), batch-averaged, has this gradient in log α;
            # set directly, it spares a backward pass.
            self.log_alpha.value.grad = -(log_probs.detach().mean() + self.target_entropy)
            self.alpha_optimizer.step()

        target_q = rewards + cfg.discount * (1.0 - terminals) * (next_q - alpha * next_log_probs)
        critic_loss = 0.5 * (q_values - target_q).pow(2).mean(dim=1).sum()  # ½ Σ_i MSE(Q_i, y), as SB3
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        with bf16_autocast(self.device, cfg.bf16_matmuls):  # reads the critics' stepped weights (no cast cache)
            q_policy = self.critic(observations, policy.actions).min(dim=0).values
        actor_loss = (alpha * log_probs - q_policy).mean()
        total_actor_loss = actor_loss if policy.auxiliary_loss is None else actor_loss + policy.auxiliary_loss
        self.actor_optimizer.zero_grad(set_to_none=True)
        # through the critics to dQ/da only, not their weights
        total_actor_loss.backward(inputs=self._actor_parameters)
        self.actor_optimizer.step()

        polyak_update(self.critic_target, self.critic, cfg.tau)
        self.num_updates += 1
        return {
            "train/critic_loss": critic_loss.detach(),
            "train/actor_loss": actor_loss.detach(),
            "train/alpha": alpha,
            "train/entropy": -log_probs.detach().mean(),
            "train/q_mean": q_values.detach().mean(),
            **policy.metrics,
        }

    def _policy_sample(self, observations: torch.Tensor) -> PolicySample:
        """The reparameterised actions of the actor's loss and the α step, with their log-densities."""
        return PolicySample(*self.actor(observations), auxiliary_loss=None, metrics={})

    def _next_policy_sample(self, next_observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions at the next observations for the soft Bellman target, with their log-densities."""
        return self.actor(next_observations)

    # -- resumable state -----------------------------------------------------------------------------

    def save_training_files(self, run: RunDirectory) -> None:
        self.buffer.save_new_rows(run.path / "replay")

    def training_state(self) -> dict:
        return {
            "buffer_rows": self.buffer.total_added,
            "buffer_generator": self.buffer.generator.get_state(),
            "pending_updates": self._pending_updates,
        }

    def load_training_state(self, state: dict, run: RunDirectory) -> None:
        self.buffer.load_rows(run.path / "replay", state["buffer_rows"], state["buffer_generator"])
        self._pending_updates = float(state["pending_updates"])
