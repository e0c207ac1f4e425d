"""O-DICE: DICE with an orthogonal-gradient update (Mao, Xu, Zhang & Zhan, ICLR 2024), as the authors' code does it.

The state value V minimises (1 − λ)·E[V(s)] + λ·E[f*(r + γ·(1 − d)·V(s') − V(s))], f* the convex conjugate of an
f-divergence. Its true gradient has a forward part, through V(s), and a backward part, through V(s'). Each update, on
one batch:

1. the residuals, each with the other side's value taken from the EMA target V̄ (min over its heads):
   forward δ_f = r + γ·(1 − d)·V̄(s') − V(s), backward δ_b = r + γ·(1 − d)·V(s') − V̄(s);
2. the forward gradient g_f = ∇ λ·mean f*(δ_f) and the backward gradient g_b = ∇ λ·η·mean f*(δ_b), over all the value
   parameters flattened together; the step uses ∇ (1 − λ)·mean V(s) + g_f + (g_b − c·g_f) with
   c = (g_f·g_b) / max(g_f·g_f, 1e-10): the backward gradient projected onto the plane normal to g_f
   (`core.gradients.orthogonal_gradient`);
3. V̄ moves 0.005 of the way to V;
4. the policy by weighted behaviour cloning, −mean(w·log π(a|s)), with w = max(δ_f, 0) for Pearson χ² and
   exp(δ_f − 1) for reverse KL, clipped at 100 (δ_f from step 1, before V's step).

With twin V heads (the default), each head has its own residuals, the targets are the min over the target heads,
and the means and the policy's weights run over both heads' residuals, as the authors' code has it.

`gradient` picks the paper's ablation: "semi" is the semi-gradient (V(s') a constant from V̄, so only the forward
part), and "true" the plain true gradient: one residual r + γ·(1 − d)·V(s') − V(s) with the online V on both sides
and no target (so η plays no part), the authors' `true_g_update`.

Defaults are the authors' (maoliyuan/ODICE-Pytorch: `configs/offline_RL.yaml`, `main_odice_rl.py`, `odice.py`,
`policy.py`): Pearson χ², λ = 0.6, η = 1, γ = 0.99, V 2×256 with LayerNorm and twin heads, policy 2×1024 Gaussian
with an unbounded mean and a state-independent log-std clamped to [−5, 2], its mean clipped to the action bounds when
acting, Adam 2e-4 for both with weight decay 1e-4 on the policy, batch 256, no state normalisation. Rewards are
scaled by 1000 / (max − min episode return), which the authors do for the locomotion tasks (here for every dataset
but AntMaze, as IQL); AntMaze rewards become −3 short of the goal and 0 at it. For AntMaze the authors also turn
LayerNorm off, and twin heads off on the large and umaze-diverse mazes: set `layer_norm` and `twin_values` for that.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch.nn import functional as F

from policylab.core.agent import register_agent
from policylab.core.buffers import ReplayBuffer, TransitionBatch
from policylab.core.data import OfflineDataset
from policylab.core.gradients import orthogonal_gradient
from policylab.core.nets import EnsembleValue, GaussianActor, adam, freeze, polyak_update
from policylab.core.offline import OfflineAgent, OfflineConfig
from policylab.offline_rl.iql import reward_scale_from_returns

FDivergence = Literal["pearson_chi2", "reverse_kl"]


@dataclasses.dataclass
class ODICEConfig(OfflineConfig):
    """O-DICE settings; defaults are the authors' for the D4RL locomotion tasks."""

    # The paper tunes λ and η per dataset (its appendix D, which the authors' README points to). That table could not
    # be found (not in the authors' repository, and the paper's appendix was not reachable here), so every dataset
    # takes the authors' command-line defaults (`main_odice_rl.py`: --Lambda 0.6, --eta 1.0).
    residual_weight: float = 0.6
    """λ: weight of the f-divergence term λ·f*(residual) against (1 − λ)·V(s) in the value objective"""
    backward_weight: float = 1.0
    """η: weight of the backward residual's term, and so of the projected backward gradient"""
    f_divergence: FDivergence = "pearson_chi2"
    """f-divergence whose conjugate f* the value objective uses"""
    gradient: Literal["orthogonal", "true", "semi"] = "orthogonal"
    """value update: O-DICE's orthogonal gradient, the plain true gradient, or the semi-gradient (the ablation)"""
    discount: float = 0.99
    """discount factor γ"""
    tau: float = 0.005
    """EMA rate of the target V"""
    max_weight: float = 100.0
    """clip of the policy's behaviour-cloning weights"""
    value_lr: float = 2e-4
    """Adam learning rate of V"""
    policy_lr: float = 2e-4
    """Adam learning rate of the policy"""
    policy_weight_decay: float = 1e-4
    """Adam weight decay (L2) of the policy"""
    batch_size: int = 256
    """transitions per update"""
    hidden_sizes: tuple[int, ...] = (1024, 1024)
    """hidden layer widths of the policy"""
    value_hidden_sizes: tuple[int, ...] = (256, 256)
    """hidden layer widths of V"""
    layer_norm: bool = True
    """LayerNorm after every hidden layer of V"""
    twin_values: bool = True
    """two V heads, each on its own residuals, with targets from the min of the target heads; else one"""
    normalize_rewards: bool = True
    """multiply rewards by 1000 / (max − min episode return of the dataset) (AntMaze rewards are shaped instead)"""


def pearson_chi2_conjugate(residuals: torch.Tensor) -> torch.Tensor:
    """f*(y) = y·ω − (ω − 1)² with ω = max(y/2 + 1, 0): the conjugate of f(x) = (x − 1)² on x ≥ 0."""
    ratio = F.relu(residuals / 2 + 1)
    return residuals * ratio - (ratio - 1).square()


def reverse_kl_conjugate(residuals: torch.Tensor) -> torch.Tensor:
    """f*(y) = exp(y − 1): the conjugate of f(x) = x·log x."""
    return torch.exp(residuals - 1)


CONJUGATES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "pearson_chi2": pearson_chi2_conjugate,
    "reverse_kl": reverse_kl_conjugate,
}
# The policy's weight for a forward residual y, as in the authors' code: max(y, 0) for Pearson χ², exp(y − 1) for
# reverse KL (its density ratio (f')⁻¹(y)).
POLICY_WEIGHTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "pearson_chi2": F.relu,
    "reverse_kl": reverse_kl_conjugate,
}


def is_antmaze(dataset: OfflineDataset) -> bool:
    """Whether the dataset's id or task names an AntMaze."""
    return any("antmaze" in (name or "").lower() for name in (dataset.dataset_id, dataset.env_id))


@register_agent("odice")
class ODICE(OfflineAgent):
    """O-DICE on an offline dataset."""

    config_class = ODICEConfig
    config: ODICEConfig

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, config: ODICEConfig | None = None):
        super().__init__(observation_space, action_space, config)
        cfg, device = self.config, self.device
        if cfg.f_divergence not in CONJUGATES:
            raise ValueError(f"unknown f_divergence {cfg.f_divergence!r}; choose one of {', '.join(CONJUGATES)}")
        if cfg.gradient not in ("orthogonal", "true", "semi"):
            raise ValueError(f"unknown gradient {cfg.gradient!r}; choose orthogonal, true or semi")
        observation_dim = observation_space.shape[0]
        self.actor = GaussianActor(
            observation_dim, action_space.low, action_space.high, cfg.hidden_sizes, squash_mean=False
        ).to(device)
        self.value = EnsembleValue(
            observation_dim, cfg.value_hidden_sizes, num_values=2 if cfg.twin_values else 1, layer_norm=cfg.layer_norm
        ).to(device)
        self.value_target = copy.deepcopy(self.value)
        freeze([self.value_target])
        self.actor_optimizer = adam(self.actor.parameters(), lr=cfg.policy_lr, weight_decay=cfg.policy_weight_decay)
        self.value_optimizer = adam(self.value.parameters(), lr=cfg.value_lr)

    def prepare(self, dataset: OfflineDataset) -> ReplayBuffer:
        """The buffer of the dataset with the authors' rewards: AntMaze's −3 short of the goal and 0 at it; any other
        dataset's scaled by 1000 / (max − min episode return) when `normalize_rewards`."""
        if is_antmaze(dataset):
            dataset = dataclasses.replace(dataset, rewards=np.where(dataset.rewards == 0, -3.0, 0.0).astype(np.float32))
        elif self.config.normalize_rewards:
            dataset = dataclasses.replace(dataset, rewards=dataset.rewards * reward_scale_from_returns(dataset))
        return super().prepare(dataset)

    def _policy(self, observations: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return self.actor.act(observations, deterministic)

    def action_log_likelihood(
        self, observations: torch.Tensor, actions: torch.Tensor, deterministic_std: float = 1.0
    ) -> torch.Tensor:
        """The policy's own density (`deterministic_std` is not used: the policy is stochastic)."""
        return self.actor.log_prob(observations, actions)

    def value_gradients(self, batch: TransitionBatch) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """The gradient of V's parameters for the configured `gradient`, V(s) `[heads, batch]`, and the residuals
        `[heads, batch]` that weight the policy (δ_f, or the true gradient's residual)."""
        cfg = self.config
        f_star = CONJUGATES[cfg.f_divergence]
        parameters = list(self.value.parameters())
        bootstrap = cfg.discount * (1.0 - batch.terminals)
        values = self.value(batch.observations)
        value_term = (1.0 - cfg.residual_weight) * values.mean()
        if cfg.gradient == "true":
            residuals = batch.rewards + bootstrap * self.value(batch.next_observations) - values
            loss = value_term + cfg.residual_weight * f_star(residuals).mean()
            return list(torch.autograd.grad(loss, parameters)), values, residuals

        with torch.no_grad():
            target_next_values = self.value_target(batch.next_observations).min(dim=0).values
        forward_residuals = batch.rewards + bootstrap * target_next_values - values
        forward_loss = cfg.residual_weight * f_star(forward_residuals).mean()
        if cfg.gradient == "semi":
            return list(torch.autograd.grad(value_term + forward_loss, parameters)), values, forward_residuals

        with torch.no_grad():
            target_values = self.value_target(batch.observations).min(dim=0).values
        backward_residuals = batch.rewards + bootstrap * self.value(batch.next_observations) - target_values
        backward_loss = cfg.residual_weight * cfg.backward_weight * f_star(backward_residuals).mean()
        value_gradients = torch.autograd.grad(value_term, parameters, retain_graph=True)
        forward_gradients = torch.autograd.grad(forward_loss, parameters)
        backward_gradients = torch.autograd.grad(backward_loss, parameters)
        combined = orthogonal_gradient(forward_gradients, backward_gradients)
        return [value + other for value, other in zip(value_gradients, combined)], values, forward_residuals

    def update(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        """One V step with the configured gradient, the target's EMA, and one weighted behaviour-cloning step."""
        cfg = self.config
        gradients, values, residuals = self.value_gradients(batch)
        for parameter, gradient in zip(self.value.parameters(), gradients):
            parameter.grad = gradient
        self.value_optimizer.step()
        polyak_update(self.value_target, self.value, cfg.tau)

        residuals = residuals.detach()
        weights = POLICY_WEIGHTS[cfg.f_divergence](residuals).clamp(max=cfg.max_weight)
        # weights [heads, batch] times the batch's log-likelihoods: the mean runs over both heads' weights
        policy_loss = -(weights * self.actor.log_prob(batch.observations, batch.actions)).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        policy_loss.backward()
        self.actor_optimizer.step()
        self.num_updates += 1
        return {
            "train/policy_loss": policy_loss.detach(),
            "train/residual_mean": residuals.mean(),
            "train/weight_mean": weights.mean(),
            "train/value_mean": values.detach().mean(),
        }
