"""PPO: proximal policy optimisation with a clipped objective (Schulman et al., 2017), continuous or discrete.

Defaults are CleanRL's MuJoCo settings (`ppo_continuous_action.py`): 2048 steps per rollout, 32
minibatches, 10 epochs, γ = 0.99, λ = 0.95, clip 0.2 on the ratio and on the value change, no
entropy bonus, value weight 0.5, gradient norm 0.5, Adam 3e-4 (ε = 1e-5) annealed linearly to 0,
64-64 tanh actor and critic with orthogonal init, a state-independent log-std, and running
normalisation of observations and rewards (clipped to ±10; rewards scaled by the std of the
discounted return). The normalisers are part of the agent, so evaluation and `act` see what
training saw (frozen). Unlike CleanRL, truncated episodes bootstrap from V(final observation), as SB3 does.
"""

from __future__ import annotations

import dataclasses
import math

import gymnasium as gym
import torch
from torch import nn

from policylab.core.agent import register_agent
from policylab.core.buffers import RolloutBuffer
from policylab.core.envs import VecEnv
from policylab.core.nets import RunningNormalizer, adam, gaussian_log_prob, mlp, orthogonal_init
from policylab.core.online import OnlineAgent, OnlineConfig
from policylab.core.runs import RunDirectory
from policylab.core.sampling_error import sampling_error


@dataclasses.dataclass
class PPOConfig(OnlineConfig):
    """PPO settings; defaults are CleanRL's for MuJoCo."""

    learning_rate: float = 3e-4
    """Adam learning rate (annealed linearly to 0 over the run when anneal_lr)"""
    anneal_lr: bool = True
    """anneal the learning rate linearly to 0 over total_timesteps"""
    rollout_steps: int = 2048
    """steps per env in each rollout"""
    num_minibatches: int = 32
    """minibatches per epoch"""
    update_epochs: int = 10
    """passes over each rollout"""
    discount: float = 0.99
    """discount factor γ"""
    gae_lambda: float = 0.95
    """GAE λ"""
    clip_coef: float = 0.2
    """PPO ratio clip ε"""
    clip_value_loss: bool = True
    """clip the value change to ±clip_coef, taking the larger of clipped and unclipped losses"""
    entropy_coef: float = 0.0
    """weight of the entropy bonus"""
    value_coef: float = 0.5
    """weight of the value loss"""
    max_grad_norm: float = 0.5
    """gradient norm clip"""
    normalize_advantages: bool = True
    """z-score advantages within each minibatch"""
    target_kl: float | None = None
    """stop an update's epochs early when the approximate KL exceeds this"""
    normalize_observations: bool = True
    """running z-score of observations, clipped to ±10"""
    normalize_rewards: bool = True
    """scale rewards by the running std of the discounted return, clipped to ±10"""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """hidden layer widths of actor and critic (tanh)"""
    sampling_error_every: int = 0
    """log the sampling error of the data each update learns from every this many updates (0: never; see
    `core.sampling_error`)"""

    def __post_init__(self) -> None:
        if self.sampling_error_every < 0:
            raise ValueError(f"sampling_error_every must be 0 (never) or positive, got {self.sampling_error_every}")


def value_network(observation_dim: int, hidden_sizes: tuple[int, ...]) -> nn.Sequential:
    """V(s) as a tanh MLP, orthogonally initialised with gain 1 on its output (CleanRL's critic)."""
    value = orthogonal_init(mlp(observation_dim, 1, hidden_sizes, nn.Tanh))
    orthogonal_init(value[-1], gain=1.0)
    return value


class ActorCritic(nn.Module):
    """Separate tanh MLPs for the policy head and the value, orthogonally initialised (CleanRL's `Agent`)."""

    def __init__(self, observation_dim: int, policy_outputs: int, hidden_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.head = orthogonal_init(mlp(observation_dim, policy_outputs, hidden_sizes, nn.Tanh))
        orthogonal_init(self.head[-1], gain=0.01)
        self.value = value_network(observation_dim, hidden_sizes)

    def log_prob_entropy_value(
        self, observations: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probability of `actions`, the policy's entropy and V(s), per sample."""
        raise NotImplementedError

    def sample(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A sampled action, its log-probability and V(s)."""
        raise NotImplementedError

    def mode(self, observations: torch.Tensor) -> torch.Tensor:
        """The most likely action (the deterministic policy)."""
        raise NotImplementedError

    def distribution(self, observations: torch.Tensor) -> torch.distributions.Distribution:
        """π(·|s) as a torch distribution over whole actions (for KL divergences between policies)."""
        raise NotImplementedError

    def output_parameters(self) -> list[nn.Parameter]:
        """The parameters of the policy's output (its last linear layer, and the log-std where it has one): what
        an empirical policy fitted on this policy's features may change."""
        return list([layer for layer in self.head if isinstance(layer, nn.Linear)][-1].parameters())


class GaussianPolicy(ActorCritic):
    """Continuous actions: a Gaussian whose mean is the head's output, with a state-independent log-std."""

    def __init__(self, observation_dim: int, action_dim: int, hidden_sizes: tuple[int, ...]) -> None:
        super().__init__(observation_dim, action_dim, hidden_sizes)
        self.log_std = nn.Parameter(torch.zeros(action_dim))

    def log_prob_entropy_value(
        self, observations: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-density of `actions`, the policy's entropy and V(s), per sample."""
        mean = self.head(observations)
        log_std = self.log_std.expand_as(mean)
        entropy = (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum(-1)
        return gaussian_log_prob(actions, mean, log_std), entropy, self.value(observations).squeeze(-1)

    def sample(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A sampled action, its log-density and V(s)."""
        mean = self.head(observations)
        actions = mean + self.log_std.exp() * torch.randn_like(mean)
        log_prob = gaussian_log_prob(actions, mean, self.log_std.expand_as(mean))
        return actions, log_prob, self.value(observations).squeeze(-1)

    def mode(self, observations: torch.Tensor) -> torch.Tensor:
        return self.head(observations)

    def distribution(self, observations: torch.Tensor) -> torch.distributions.Distribution:
        mean = self.head(observations)
        normal = torch.distributions.Normal(mean, self.log_std.exp().expand_as(mean))
        return torch.distributions.Independent(normal, 1)

    def output_parameters(self) -> list[nn.Parameter]:
        return [*super().output_parameters(), self.log_std]


class CategoricalPolicy(ActorCritic):
    """Discrete actions: a categorical distribution over the head's logits."""

    def log_prob_entropy_value(
        self, observations: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        log_probs = torch.log_softmax(self.head(observations), dim=-1)
        chosen = log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        return chosen, entropy, self.value(observations).squeeze(-1)

    def sample(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        log_probs = torch.log_softmax(self.head(observations), dim=-1)
        actions = torch.multinomial(log_probs.exp(), 1).squeeze(-1)
        chosen = log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        return actions, chosen, self.value(observations).squeeze(-1)

    def mode(self, observations: torch.Tensor) -> torch.Tensor:
        return self.head(observations).argmax(-1)

    def distribution(self, observations: torch.Tensor) -> torch.distributions.Distribution:
        return torch.distributions.Categorical(logits=self.head(observations))


@register_agent("ppo")
class PPO(OnlineAgent):
    """PPO with clipped policy and value objectives, for continuous (Box) or discrete actions."""

    config_class = PPOConfig
    config: PPOConfig

    def __init__(self, env: str | VecEnv | tuple[gym.Space, gym.Space], config: PPOConfig | None = None) -> None:
        super().__init__(env, config)
        cfg, device = self.config, self.device
        if cfg.rollout_steps * cfg.num_envs < cfg.num_minibatches:
            raise ValueError("rollout_steps × num_envs must be at least num_minibatches")
        observation_dim = self.observation_space.shape[0]
        self.policy = self._build_policy(observation_dim).to(device)
        if cfg.sampling_error_every and not isinstance(self.policy, ActorCritic):
            raise ValueError(
                f"{type(self).__name__}'s policy has no closed-form distribution to measure sampling error with: "
                "set sampling_error_every=0"
            )
        self.observation_normalizer = RunningNormalizer(observation_dim).to(device)
        self.return_normalizer = RunningNormalizer(()).to(device)
        self.optimizer = adam(self.policy.parameters(), lr=cfg.learning_rate, eps=1e-5)
        self.buffer: RolloutBuffer | None = None
        self._discounted_returns = torch.zeros(cfg.num_envs, device=device)
        self._total_iterations = 1

    def _build_policy(self, observation_dim: int) -> ActorCritic:
        """The policy and value networks for the action space (a variant may bring its own)."""
        hidden_sizes = self.config.hidden_sizes
        if isinstance(self.action_space, gym.spaces.Box) and len(self.action_space.shape) == 1:
            return GaussianPolicy(observation_dim, self.action_space.shape[0], hidden_sizes)
        if isinstance(self.action_space, gym.spaces.Discrete) and self.action_space.start == 0:
            return CategoricalPolicy(observation_dim, int(self.action_space.n), hidden_sizes)
        raise ValueError(f"PPO takes a flat Box or a Discrete action space starting at 0, got {self.action_space}")

    def _normalize(self, observations: torch.Tensor) -> torch.Tensor:
        return self.observation_normalizer(observations) if self.config.normalize_observations else observations

    def _policy(self, observations: torch.Tensor, deterministic: bool) -> torch.Tensor:
        normalized = self._normalize(observations)
        return self.policy.mode(normalized) if deterministic else self.policy.sample(normalized)[0]

    # -- training ----------------------------------------------------------------------------------

    def setup_learning(self, total_timesteps: int) -> None:
        cfg = self.config
        batch = cfg.rollout_steps * cfg.num_envs
        self._total_iterations = max(1, math.ceil(total_timesteps / batch))
        if self.buffer is None:
            self.buffer = RolloutBuffer(
                cfg.rollout_steps, cfg.num_envs, self.observation_space.shape, self.action_space.shape, self.device
            )

    def collect_and_train(self, envs: VecEnv) -> dict[str, torch.Tensor]:
        """One rollout of `rollout_steps` vector steps, then `update_epochs` epochs of minibatch updates."""
        self._anneal_learning_rate()
        self._collect_rollout(envs)
        return self.update()

    def _anneal_learning_rate(self) -> None:
        """Set the learning rate of the coming update (linear decay to 0 over the run when `anneal_lr`)."""
        cfg = self.config
        iteration = self.num_timesteps // (cfg.rollout_steps * cfg.num_envs)
        if cfg.anneal_lr:
            self.optimizer.param_groups[0]["lr"] = cfg.learning_rate * (1.0 - iteration / self._total_iterations)

    @torch.no_grad()
    def _collect_rollout(self, envs: VecEnv) -> None:
        cfg = self.config
        self.buffer.reset()
        for _ in range(cfg.rollout_steps):
            if cfg.normalize_observations:
                self.observation_normalizer.update(self.observations)
            normalized = self._normalize(self.observations)
            actions, log_probs, values = self.policy.sample(normalized)
            step = self.step_envs(envs, actions)
            rewards = self._scale_rewards(step.rewards, step.dones)
            final_values = None  # V(final observation) is needed only where an episode ended
            if step.dones.any():
                final_values = self.policy.value(self._normalize(step.final_observations)).squeeze(-1) * step.dones
            self.buffer.add(
                normalized, actions, log_probs, values, rewards, step.terminations, step.truncations, final_values
            )
        last_values = self.policy.value(self._normalize(self.observations)).squeeze(-1)
        self.buffer.compute_advantages(last_values, cfg.discount, cfg.gae_lambda)

    def _scale_rewards(self, rewards: torch.Tensor, dones: torch.Tensor) -> torch.Tensor:
        """SB3 `VecNormalize`'s reward scaling: divide by the running std of each env's discounted return."""
        if not self.config.normalize_rewards:
            return rewards
        self._track_discounted_returns(rewards, dones)
        return self._normalize_rewards(rewards)

    def _track_discounted_returns(self, rewards: torch.Tensor, dones: torch.Tensor) -> None:
        """Fold each env's discounted return into the statistics that scale rewards."""
        self._discounted_returns = self._discounted_returns * self.config.discount + rewards
        self.return_normalizer.update(self._discounted_returns)
        self._discounted_returns *= 1.0 - dones

    def _normalize_rewards(self, rewards: torch.Tensor) -> torch.Tensor:
        """Rewards divided by the current std of the discounted return, clipped."""
        scale = torch.sqrt(self.return_normalizer.var + self.return_normalizer.epsilon).float()
        return (rewards / scale).clamp(-self.return_normalizer.clip, self.return_normalizer.clip)

    def update(self) -> dict[str, torch.Tensor]:
        """Clipped-surrogate epochs over the rollout in the buffer."""
        cfg = self.config
        minibatch_size = self.buffer.size // cfg.num_minibatches
        sampling_error = self._sampling_error()  # of the data as it is before this update
        totals = None  # policy, value, entropy losses, approx KL, clip fraction, count, then a variant's metrics
        auxiliary_names: list[str] = []
        for _ in range(cfg.update_epochs):
            for batch in self.buffer.minibatches(minibatch_size):
                log_probs, entropy, values = self.policy.log_prob_entropy_value(batch["observations"], batch["actions"])
                log_ratio = log_probs - batch["log_probs"]
                ratio = log_ratio.exp()
                advantages = batch["advantages"]
                if cfg.normalize_advantages:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                policy_loss = torch.maximum(
                    -advantages * ratio, -advantages * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)
                ).mean()
                value_error = (values - batch["returns"]).pow(2)
                if cfg.clip_value_loss:
                    clipped = batch["values"] + (values - batch["values"]).clamp(-cfg.clip_coef, cfg.clip_coef)
                    value_error = torch.maximum(value_error, (clipped - batch["returns"]).pow(2))
                value_loss = 0.5 * value_error.mean()
                entropy_loss = entropy.mean()
                loss = policy_loss - cfg.entropy_coef * entropy_loss + cfg.value_coef * value_loss
                auxiliary_loss, auxiliary_metrics = self._auxiliary_loss(batch)
                if auxiliary_loss is not None:
                    loss = loss + auxiliary_loss
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                self.num_updates += 1
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean()
                    clip_fraction = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean()
                    step_metrics = torch.stack(
                        [
                            policy_loss.detach(),
                            value_loss.detach(),
                            entropy_loss.detach(),
                            approx_kl,
                            clip_fraction,
                            torch.ones((), device=self.device),
                            *auxiliary_metrics.values(),
                        ]
                    )
                    totals = step_metrics if totals is None else totals + step_metrics
                    auxiliary_names = list(auxiliary_metrics)
            if cfg.target_kl is not None and approx_kl.item() > cfg.target_kl:
                break
        means = torch.cat([totals[:5], totals[6:]]) / totals[5]
        returns, values = self.buffer.returns.flatten(), self.buffer.values.flatten()
        explained_variance = 1.0 - (returns - values).var() / returns.var().clamp_min(1e-8)
        names = [f"train/{name}" for name in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")]
        metrics = dict(zip(names + auxiliary_names, means))
        metrics["train/explained_variance"] = explained_variance
        metrics["train/learning_rate"] = torch.tensor(self.optimizer.param_groups[0]["lr"])
        if sampling_error is not None:
            metrics["train/sampling_error"] = sampling_error
        return metrics

    def _measured_update(self) -> int | None:
        """The coming update's index if its data's sampling error is measured (every `sampling_error_every`)."""
        cfg = self.config
        update = self.num_timesteps // (cfg.rollout_steps * cfg.num_envs)
        return update if cfg.sampling_error_every and update % cfg.sampling_error_every == 0 else None

    def _sampling_error(self) -> torch.Tensor | None:
        """KL(π_D ‖ π_θ) of the buffer's data before a measured update (`core.sampling_error`), else None."""
        update = self._measured_update()
        if update is None:
            return None
        return self._sampling_error_of(
            self.buffer.observations.flatten(0, 1), self.buffer.actions.flatten(0, 1), update
        )

    def _sampling_error_of(self, observations: torch.Tensor, actions: torch.Tensor, update: int) -> torch.Tensor:
        """KL(π_D ‖ π_θ) of normalised `observations` and `actions` [n, ...], minibatches of 512 per rollout batch
        drawn from a generator seeded by the update, so training's random stream is untouched and a resumed run
        measures the same."""
        cfg = self.config
        minibatch_size = 512 * len(observations) // (cfg.rollout_steps * cfg.num_envs)
        return sampling_error(self.policy, observations, actions, minibatch_size=minibatch_size, seed=cfg.seed + update)

    def _auxiliary_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """A loss a variant adds to each minibatch's (PMOE's gate and auxiliary Q), with its metrics (full names)."""
        return None, {}

    # -- resumable state -----------------------------------------------------------------------------

    def training_state(self) -> dict:
        return {"discounted_returns": self._discounted_returns}

    def load_training_state(self, state: dict, run: RunDirectory) -> None:
        self._discounted_returns = state["discounted_returns"].to(self.device)
