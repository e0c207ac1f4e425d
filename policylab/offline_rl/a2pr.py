"""A2PR: Adaptive Advantage-guided Policy Regularization (Liu et al., ICML 2024), as the authors' code does it.

TD3+BC whose behaviour-cloning term is replaced by an advantage-guided one. Each update, on one batch:

1. the twin critics by TD3's loss (target policy smoothing, min of the target critics), as TD3+BC;
2. a VAE of the dataset's actions, trained to reconstruct only the actions with a positive advantage
   (Q1(s, a) > V(s)): mean(vae_weight·1[Q1 > V]·(â − a)²) + ½·mean over latent dimensions of KL(q(z|s,a) ‖ N(0, I));
3. every `policy_delay` updates, the actor on −λ·mean Q1(s, π(s)) + mean(w·(π(s) − target)²), λ = α / mean|Q1|,
   where â = VAE(s, π(s)) is the VAE's reconstruction of the policy's action, the target is whichever of â and the
   dataset action a has the larger advantage Q1 − V (â on ties), and w = mask_coef·(1[Q1(s, â) ≥ V] + 1[Q1(s, a) > V])
   is 0, mask_coef or 2·mask_coef. The reconstruction is not detached: the regulariser's gradient also reaches π
   through the VAE. Targets are Polyak-averaged with the actor;
4. V(s) by MSE to min(r + γ·(1 − d)·min_i Q_i(s', ã'), r + γ·(1 − d)·min_i Q̄_i(s', ã')), with the online critics
   just updated and the target critics, at the smoothed target action ã' of step 1.

The authors step V right after the critics, but their VAE mask and actor use V(s) as computed before that step;
stepping V last gives the same numbers. Networks and rates are theirs: actor 3×256, critics and V 4×256, VAE
750-750 with a latent of 2·action_dim, Adam 1e-3 for the VAE and 3e-4 for the rest, batch 256, states z-scored.

α, vae_weight, mask_coef and γ default to the authors' values for the dataset (`DATASET_DEFAULTS`), chosen from its
task and kind; other datasets take `FALLBACK_DEFAULTS`, their command-line defaults, with α = 40 on halfcheetah as
in all their halfcheetah rows.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import gymnasium as gym
import torch
from torch.nn import functional as F

from policylab.core.agent import register_agent
from policylab.core.buffers import ReplayBuffer, TransitionBatch
from policylab.core.data import OfflineDataset
from policylab.core.data.scores import dataset_kind, task_family
from policylab.core.nets import VAE, adam, mlp
from policylab.offline_rl.td3bc import TD3BC, TD3BCConfig


class A2PRSettings(NamedTuple):
    """The per-dataset hyper-parameters of A2PR."""

    alpha: float
    vae_weight: float
    mask_coef: float
    discount: float


# Per (task, dataset kind), from the authors' run commands (README of ltlhuuu/A2PR).
DATASET_DEFAULTS: dict[tuple[str, str], A2PRSettings] = {
    ("hopper", "medium"): A2PRSettings(2.5, 1.0, 0.4, 0.995),
    ("hopper", "medium-replay"): A2PRSettings(2.5, 1.5, 0.5, 0.99),
    ("hopper", "medium-expert"): A2PRSettings(2.5, 1.0, 4.0, 0.99),
    ("halfcheetah", "medium"): A2PRSettings(40.0, 1.0, 1.0, 0.99),
    ("halfcheetah", "medium-replay"): A2PRSettings(40.0, 1.5, 0.8, 0.995),
    ("halfcheetah", "medium-expert"): A2PRSettings(40.0, 1.0, 15.0, 0.99),
    ("walker2d", "medium"): A2PRSettings(2.5, 1.5, 1.0, 0.99),
    ("walker2d", "medium-replay"): A2PRSettings(2.5, 1.5, 1.2, 0.995),
    ("walker2d", "medium-expert"): A2PRSettings(2.5, 1.0, 0.8, 0.99),
}
# Datasets outside the table: the authors' command-line defaults, and α = 40 on halfcheetah.
FALLBACK_DEFAULTS = A2PRSettings(alpha=2.5, vae_weight=1.0, mask_coef=0.5, discount=0.99)
FALLBACK_ALPHA = {"halfcheetah": 40.0}


def dataset_defaults(dataset_id: str | None, env_id: str | None) -> A2PRSettings:
    """The authors' settings for a dataset, from its task (env id, else dataset id) and its kind (dataset id)."""
    task = task_family(env_id or dataset_id or "")
    kind = dataset_kind(dataset_id or "")
    if (task, kind) in DATASET_DEFAULTS:
        return DATASET_DEFAULTS[task, kind]
    return FALLBACK_DEFAULTS._replace(alpha=FALLBACK_ALPHA.get(task, FALLBACK_DEFAULTS.alpha))


@dataclasses.dataclass
class A2PRConfig(TD3BCConfig):
    """A2PR settings: the authors'; α, vae_weight, mask_coef and γ left as None take the dataset's defaults."""

    alpha: float | None = None
    """weight α of the Q term, λ = α / mean|Q1(s, π(s))| (default: the dataset's, 40 on halfcheetah, else 2.5)"""
    discount: float | None = None
    """discount factor γ (default: the dataset's, 0.99 or 0.995)"""
    vae_weight: float | None = None
    """weight of the VAE's reconstruction term on positive-advantage actions (default: the dataset's, 1 or 1.5)"""
    mask_coef: float | None = None
    """weight of the actor's regulariser per positive advantage, of the dataset action and of the VAE's
    reconstruction of π(s) (default: the dataset's, 0.4 to 15)"""
    hidden_sizes: tuple[int, ...] = (256, 256, 256)
    """hidden layer widths of the actor"""
    critic_hidden_sizes: tuple[int, ...] = (256, 256, 256, 256)
    """hidden layer widths of the twin critics and of V"""
    vae_hidden_sizes: tuple[int, ...] = (750, 750)
    """hidden layer widths of the VAE's encoder and decoder"""
    value_lr: float = 3e-4
    """Adam learning rate of V"""
    vae_lr: float = 1e-3
    """Adam learning rate of the VAE"""


def weighted_vae_losses(
    vae: VAE, observations: torch.Tensor, actions: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's reconstruction term mean(w·(â − a)²) with per-sample weights `weights` [batch], and its KL term,
    KL(q(z|s,a) ‖ N(0, I)) averaged over samples and latent dimensions."""
    reconstructed, mean, std = vae(observations, actions)
    reconstruction = (weights.unsqueeze(-1) * (reconstructed - actions).square()).mean()
    return reconstruction, vae.kl_divergence(mean, std).mean() / vae.latent_dim


def regularisation_targets(
    dataset_actions: torch.Tensor,
    reconstructed_actions: torch.Tensor,
    q_dataset: torch.Tensor,
    q_reconstructed: torch.Tensor,
    values: torch.Tensor,
    mask_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The actor's per-sample regularisation target and weight: the target is the action, of the dataset's and the
    VAE's reconstruction of π(s), with the larger advantage Q1 − V (the reconstruction on ties); the weight is
    mask_coef·(1[Q1(s, â) ≥ V] + 1[Q1(s, a) > V])."""
    advantage_dataset, advantage_reconstructed = q_dataset - values, q_reconstructed - values
    use_reconstruction = (advantage_reconstructed >= advantage_dataset).unsqueeze(-1)
    targets = torch.where(use_reconstruction, reconstructed_actions, dataset_actions)
    weights = mask_coef * ((advantage_reconstructed >= 0).float() + (advantage_dataset > 0).float())
    return targets, weights


@register_agent("a2pr")
class A2PR(TD3BC):
    """A2PR on an offline dataset."""

    config_class = A2PRConfig
    config: A2PRConfig

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, config: A2PRConfig | None = None):
        super().__init__(observation_space, action_space, config)
        cfg, device = self.config, self.device
        observation_dim = observation_space.shape[0]
        self.value = mlp(observation_dim, 1, cfg.critic_hidden_sizes).to(device)
        self.vae = VAE(observation_dim, action_space.low, action_space.high, hidden_sizes=cfg.vae_hidden_sizes).to(
            device
        )
        self.value_optimizer = adam(self.value.parameters(), lr=cfg.value_lr)
        self.vae_optimizer = adam(self.vae.parameters(), lr=cfg.vae_lr)
        self.use_settings(dataset_defaults(None, None))

    @property
    def critic_hidden_sizes(self) -> tuple[int, ...]:
        """Hidden layer widths of the twin critics: the config's `critic_hidden_sizes`, not the actor's."""
        return self.config.critic_hidden_sizes

    def use_settings(self, defaults: A2PRSettings) -> None:
        """Train with these per-dataset settings, except where the config sets a value."""
        cfg = self.config
        self.alpha = defaults.alpha if cfg.alpha is None else cfg.alpha
        self.vae_weight = defaults.vae_weight if cfg.vae_weight is None else cfg.vae_weight
        self.mask_coef = defaults.mask_coef if cfg.mask_coef is None else cfg.mask_coef
        self.discount = defaults.discount if cfg.discount is None else cfg.discount

    def prepare(self, dataset: OfflineDataset) -> ReplayBuffer:
        """TD3+BC's preparation, and the settings for the dataset's task and kind."""
        buffer = super().prepare(dataset)
        self.use_settings(dataset_defaults(dataset.dataset_id, dataset.env_id))
        return buffer

    def behaviour_loss(self, policy_actions: torch.Tensor, batch: TransitionBatch) -> torch.Tensor:
        """The advantage-guided regulariser mean(w·(π(s) − target)²) (see `regularisation_targets`)."""
        observations = batch.observations
        self.vae.requires_grad_(False)  # gradients flow through the VAE to π(s), not into the VAE's weights
        reconstructed, _, _ = self.vae(observations, policy_actions)
        self.vae.requires_grad_(True)
        with torch.no_grad():
            q_dataset = self.critic(observations, batch.actions, member=0)
            q_reconstructed = self.critic(observations, reconstructed, member=0)
            values = self.value(observations).squeeze(-1)
        targets, weights = regularisation_targets(
            batch.actions, reconstructed, q_dataset, q_reconstructed, values, self.mask_coef
        )
        return (weights.unsqueeze(-1) * (policy_actions - targets).square()).mean()

    def update(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        """Critics, VAE, every `policy_delay` updates the actor and targets, then V (see the module's docstring)."""
        observations, actions = batch.observations, batch.actions
        next_actions, target_q = self.critic_targets(batch)
        metrics = self.critic_step(batch, target_q)
        values = self.value(observations).squeeze(-1)  # V(s) before its step, which the VAE and actor steps use
        with torch.no_grad():
            online_next_q = self.critic(batch.next_observations, next_actions).min(dim=0).values
            online_target_q = batch.rewards + self.discount * (1.0 - batch.terminals) * online_next_q
            positive_advantage = (self.critic(observations, actions, member=0) > values).float()

        reconstruction, kl = weighted_vae_losses(self.vae, observations, actions, self.vae_weight * positive_advantage)
        vae_loss = reconstruction + 0.5 * kl
        self.vae_optimizer.zero_grad(set_to_none=True)
        vae_loss.backward()
        self.vae_optimizer.step()
        metrics.update(
            {"train/vae_loss": vae_loss.detach(), "train/positive_advantage_fraction": positive_advantage.mean()}
        )

        if self.num_updates % self.config.policy_delay == 0:
            metrics.update(self.actor_step(batch))

        value_loss = F.mse_loss(values, torch.minimum(online_target_q, target_q))
        self.value_optimizer.zero_grad(set_to_none=True)
        value_loss.backward()
        self.value_optimizer.step()
        metrics["train/value_loss"] = value_loss.detach()
        return metrics
