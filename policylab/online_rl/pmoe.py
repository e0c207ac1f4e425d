"""PMOE: probabilistic mixture-of-experts policies for SAC and PPO (Ren et al., 2021).

The policy is a mixture of K Gaussian experts (tanh-squashed for SAC) on a shared trunk, weighted by a gate on the
trunk's stop-gradient features (`core.nets.MixtureGaussianActor`). Its gate is trained by the frequency-approximate
gradient: at each state every expert proposes an action, the one with the highest Q-value wins, only the winner
receives the policy gradient, and the gate is regressed (MSE) towards the one-hot winner.

- PMOE-SAC (`pmoe-sac`): the library's SAC loop, with the actor's loss α·log π_k*(ã_k*) − Q(s, ã_k*) taken at the
  winner k* = argmax_k min(Q1, Q2)(s, ã_k) (chosen with the critics before their step, as the authors' code does),
  α tuned on log π_k*, and the critic target at an expert k' ∼ Cat(w(s')). K = 4 and SAC's settings otherwise.
- PMOE-PPO (`pmoe-ppo`): the library's PPO loop with PPO's Gaussian experts, the ratio of the mixture's densities
  Σ_k w_k π_k (whose gradient reaches the gate too, as in the authors' script, unless `ratio_trains_gate=False`),
  and an auxiliary Q(s, a) fitted to the rollout's returns that picks the winner among the experts' sampled
  actions for the gate's loss. K = 5 and PPO's settings otherwise.

The two estimators the paper compares against are options (`gate_estimator`): "gumbel" (SAC only) reparameterises
the choice of expert with a straight-through Gumbel-softmax sample, so the gate learns through dQ/da;
"score" trains the gate with the score-function (likelihood-ratio) gradient: for SAC −log w_k·(soft value of the
sampled expert k − the gate-weighted mean of all experts'), for PPO the clipped surrogate through the mixture's
density alone (no auxiliary Q).
"""

from __future__ import annotations

import dataclasses
from typing import Literal, get_args

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from policylab.core.agent import register_agent
from policylab.core.nets import EnsembleCritic, MixtureGaussianActor, orthogonal_init, take_expert
from policylab.online_rl.ppo import PPO, PPOConfig, value_network
from policylab.online_rl.sac import SAC, PolicySample, SACConfig

SACGateEstimator = Literal["frequency", "gumbel", "score"]
PPOGateEstimator = Literal["frequency", "score"]


def check_gate_estimator(value: str, choices: type) -> None:
    """A clear error for a gate estimator the variant does not have."""
    if value not in get_args(choices):
        raise ValueError(f"unknown gate_estimator {value!r}; choose one of {', '.join(get_args(choices))}")


@dataclasses.dataclass
class PMOESACConfig(SACConfig):
    """PMOE-SAC settings: SAC's, plus the mixture's (authors' defaults)."""

    num_experts: int = 4
    """experts K in the mixture"""
    gate_estimator: SACGateEstimator = "frequency"
    """how the gate learns: PMOE's frequency-approximate gradient, Gumbel-softmax or score function"""
    gumbel_temperature: float = 1.0
    """temperature of the Gumbel-softmax relaxation (gate_estimator=gumbel)"""

    def __post_init__(self) -> None:
        check_gate_estimator(self.gate_estimator, SACGateEstimator)


@dataclasses.dataclass
class PMOEPPOConfig(PPOConfig):
    """PMOE-PPO settings: PPO's, plus the mixture's (authors' defaults)."""

    num_experts: int = 5
    """experts K in the mixture"""
    gate_estimator: PPOGateEstimator = "frequency"
    """how the gate learns: PMOE's frequency-approximate gradient or the score function through the ratio"""
    auxiliary_q_coef: float = 0.5
    """weight of the auxiliary Q's regression on the returns (it picks the winner expert)"""
    ratio_trains_gate: bool = True
    """let the clipped surrogate's gradient reach the gate as well as the frequency estimator's loss, as the
    authors' PMOE-PPO does (False: that loss alone trains the gate; the score estimator has the ratio alone)"""

    def __post_init__(self) -> None:
        check_gate_estimator(self.gate_estimator, PPOGateEstimator)
        if self.gate_estimator == "score" and not self.ratio_trains_gate:
            raise ValueError(
                "the score estimator trains the gate through the ratio alone: ratio_trains_gate=False applies to "
                "the frequency estimator only"
            )


# -- pieces both variants use ------------------------------------------------------------------------------


def ensemble_expert_q_values(
    critic: EnsembleCritic, observations: torch.Tensor, expert_actions: torch.Tensor
) -> torch.Tensor:
    """Every ensemble member's Q(s, ã_k) for each expert's action `expert_actions` [batch, experts, action]:
    [members, batch, experts]."""
    batch, experts, _ = expert_actions.shape
    repeated = observations.unsqueeze(1).expand(-1, experts, -1).reshape(batch * experts, -1)
    return critic(repeated, expert_actions.reshape(batch * experts, -1)).unflatten(-1, (batch, experts))


def expert_q_values(critic: EnsembleCritic, observations: torch.Tensor, expert_actions: torch.Tensor) -> torch.Tensor:
    """min over the critic ensemble of Q(s, ã_k) for each expert's action `expert_actions` [batch, experts, action]:
    [batch, experts]."""
    return ensemble_expert_q_values(critic, observations, expert_actions).min(dim=0).values


def gate_regression_loss(gate_logits: torch.Tensor, winners: torch.Tensor) -> torch.Tensor:
    """PMOE's frequency-approximate gate loss: MSE between the gate's weights and the one-hot winner experts."""
    targets = F.one_hot(winners, gate_logits.shape[-1]).to(gate_logits.dtype)
    return F.mse_loss(torch.softmax(gate_logits, dim=-1), targets)


def expert_usage(gate_logits: torch.Tensor, chosen: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Mean gate weight of each expert over the batch (how often acting picks it) and, when given, the share of
    rows where it was `chosen` (the winner, or the expert sampled for the update)."""
    metrics = {
        f"experts/gate_weight_{k}": weight for k, weight in enumerate(torch.softmax(gate_logits.detach(), -1).mean(0))
    }
    if chosen is not None:
        shares = F.one_hot(chosen, gate_logits.shape[-1]).float().mean(0)
        metrics |= {f"experts/chosen_{k}": share for k, share in enumerate(shares)}
    return metrics


def sample_from_gate(gate_logits: torch.Tensor) -> torch.Tensor:
    """One expert per row drawn from the gate's weights: [batch]."""
    return torch.multinomial(torch.softmax(gate_logits.detach(), dim=-1), 1).squeeze(-1)


# -- PMOE-SAC ----------------------------------------------------------------------------------------------


@register_agent("pmoe-sac")
class PMOESAC(SAC):
    """SAC with a probabilistic mixture-of-experts policy (PMOE)."""

    config_class = PMOESACConfig
    config: PMOESACConfig

    def _build_actor(self, observation_dim: int, low: np.ndarray, high: np.ndarray) -> nn.Module:
        cfg = self.config
        return MixtureGaussianActor(observation_dim, low, high, cfg.num_experts, cfg.hidden_sizes)

    def _policy_sample(self, observations: torch.Tensor) -> PolicySample:
        """Every expert's reparameterised action; the one that trains (and its gate loss) per `gate_estimator`."""
        cfg = self.config
        samples = self.actor.sample_experts(observations)
        if cfg.gate_estimator == "gumbel":
            selection = F.gumbel_softmax(samples.gate_logits, tau=cfg.gumbel_temperature, hard=True)
            actions = (selection.unsqueeze(-1) * samples.actions).sum(1)
            log_probs = (selection * samples.log_probs).sum(1)
            chosen, gate_loss = selection.detach().argmax(-1), None
        else:
            with torch.no_grad():
                q_values = expert_q_values(self.critic, observations, samples.actions)
            if cfg.gate_estimator == "frequency":
                chosen = q_values.argmax(-1)
                gate_loss = gate_regression_loss(samples.gate_logits, chosen)
            else:
                chosen = sample_from_gate(samples.gate_logits)
                alpha = self.log_alpha.value.detach().exp()
                soft_values = q_values - alpha * samples.log_probs.detach()
                gate_log_weights = torch.log_softmax(samples.gate_logits, dim=-1)
                baseline = (gate_log_weights.detach().exp() * soft_values).sum(-1)
                advantages = take_expert(soft_values, chosen) - baseline
                gate_loss = -(advantages * take_expert(gate_log_weights, chosen)).mean()
            actions, log_probs = take_expert(samples.actions, chosen), take_expert(samples.log_probs, chosen)
        metrics = expert_usage(samples.gate_logits, chosen)
        if gate_loss is not None:
            metrics["train/gate_loss"] = gate_loss.detach()
        return PolicySample(actions, log_probs, gate_loss, metrics)

    def mixture(self, observations: torch.Tensor) -> tuple[MixtureGaussianActor, torch.Tensor]:
        """The mixture actor and its input for env observations (to inspect the gate and the experts)."""
        return self.actor, observations

    def _next_policy_sample(self, next_observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The action of an expert drawn from the gate at s', with that expert's log-density."""
        samples = self.actor.sample_experts(next_observations)
        experts = sample_from_gate(samples.gate_logits)
        return take_expert(samples.actions, experts), take_expert(samples.log_probs, experts)


# -- PMOE-PPO ----------------------------------------------------------------------------------------------


class MixturePolicy(nn.Module):
    """PPO's actor-critic with a mixture-of-experts actor whose experts are PPO's Gaussians (tanh trunk, orthogonal
    init, small output layers, unsquashed means, a state-independent log-std per expert starting at 0, as in the
    authors' PMOE-PPO), its value network and, for the frequency estimator (`auxiliary_q`), the auxiliary Q that
    picks the winner expert. With `gate_gradient` the ratio's gradient reaches the gate."""

    def __init__(
        self,
        observation_dim: int,
        action_low: np.ndarray,
        action_high: np.ndarray,
        num_experts: int,
        hidden_sizes: tuple[int, ...],
        gate_gradient: bool,
        auxiliary_q: bool,
    ) -> None:
        super().__init__()
        self.actor = MixtureGaussianActor(
            observation_dim,
            action_low,
            action_high,
            num_experts,
            hidden_sizes,
            activation=nn.Tanh,
            squash=False,
            state_dependent_std=False,
            deterministic_expert="sampled",
        )
        orthogonal_init(self.actor)
        orthogonal_init(self.actor.heads, gain=0.01)
        orthogonal_init(self.actor.gate, gain=0.01)
        self.value = value_network(observation_dim, hidden_sizes)
        self.gate_gradient = gate_gradient
        if auxiliary_q:
            self.auxiliary_q = EnsembleCritic(observation_dim, self.actor.action_dim, hidden_sizes, num_critics=1)

    def log_prob_entropy_value(
        self, observations: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The mixture's log-density of `actions`, a one-sample estimate of its entropy (no gradient: a mixture's
        entropy has no closed form) and V(s), per sample."""
        log_probs = self.actor.log_prob(observations, actions, gate_gradient=self.gate_gradient)
        with torch.no_grad():
            entropy = -self.actor.log_prob(observations, self.actor.act(observations))
        return log_probs, entropy, self.value(observations).squeeze(-1)

    def sample(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """An action of an expert drawn from the gate, its log-density under the mixture, and V(s)."""
        actions = self.actor.act(observations)
        log_probs = self.actor.log_prob(observations, actions)  # as the update will compute it: the first ratio is 1
        return actions, log_probs, self.value(observations).squeeze(-1)

    def mode(self, observations: torch.Tensor) -> torch.Tensor:
        return self.actor.act(observations, deterministic=True)


@register_agent("pmoe-ppo")
class PMOEPPO(PPO):
    """PPO with a probabilistic mixture-of-experts policy (PMOE)."""

    config_class = PMOEPPOConfig
    config: PMOEPPOConfig

    def _build_policy(self, observation_dim: int) -> MixturePolicy:
        cfg = self.config
        if not isinstance(self.action_space, gym.spaces.Box) or len(self.action_space.shape) != 1:
            raise ValueError(f"PMOE-PPO needs a flat continuous (Box) action space, got {self.action_space}")
        if cfg.entropy_coef != 0.0:
            raise ValueError(
                "PMOE-PPO has no entropy bonus (a mixture's entropy has no closed form): set entropy_coef=0"
            )
        low, high = self.action_space.low, self.action_space.high
        frequency = cfg.gate_estimator == "frequency"
        gate_gradient = cfg.ratio_trains_gate or not frequency
        return MixturePolicy(observation_dim, low, high, cfg.num_experts, cfg.hidden_sizes, gate_gradient, frequency)

    def mixture(self, observations: torch.Tensor) -> tuple[MixtureGaussianActor, torch.Tensor]:
        """The mixture actor and its input (the normalised observations) for env observations."""
        return self.policy.actor, self._normalize(observations)

    def _auxiliary_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """With the frequency estimator: the auxiliary Q's regression on the returns and the gate's loss towards
        the expert whose sampled action that Q values most. The score estimator trains the gate through the ratio."""
        observations, actor = batch["observations"], self.policy.actor
        if self.config.gate_estimator == "score":
            with torch.no_grad():
                return None, expert_usage(actor(observations)[2], None)
        q_taken = self.policy.auxiliary_q(observations, batch["actions"]).squeeze(0)
        q_loss = 0.5 * (q_taken - batch["returns"]).pow(2).mean()
        samples = actor.sample_experts(observations)
        with torch.no_grad():
            winners = expert_q_values(self.policy.auxiliary_q, observations, samples.actions).argmax(-1)
        gate_loss = gate_regression_loss(samples.gate_logits, winners)
        metrics = {"train/auxiliary_q_loss": q_loss.detach(), "train/gate_loss": gate_loss.detach()}
        return self.config.auxiliary_q_coef * q_loss + gate_loss, metrics | expert_usage(samples.gate_logits, winners)
