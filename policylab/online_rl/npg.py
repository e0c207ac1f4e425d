"""NPG: natural policy gradient (Kakade 2001) with a KL-scaled conjugate-gradient step and line search (TRPO's step,
Schulman et al. 2015), in the finite-horizon form of HNPG's authors (YifeiZhou02/HNPG with `HYBRID = False`).

Each iteration collects `steps_per_iteration` online steps, fits one critic Q_h(s, a) per time step h to the
Monte-Carlo returns (30 Adam steps each, backwards over h), computes GAE advantages (γ = 1, λ = 0.97) with
V_h(s) = mean of Q_h(s, a) over 10 actions a ∼ π_h, and takes one natural gradient step per time step's policy
π_h (conjugate gradient on Fisher-vector products, 10 iterations, damping 0.1, step scaled to KL 0.01, 10
backtracks). Policies are 16-16 tanh Gaussians with a state-independent log-std, critics 64-64 tanh MLPs; the
policies (and the critics) of all time steps are one batched network.

On a task whose episodes all last H steps (`fixed_horizon`, e.g. `CombinationLock-H50-v0`) there are H policies
and critics; elsewhere one of each serves every step (set `horizon` to choose). A per-step agent needs each
observation's time step to act: `evaluate` passes it, `act(obs, time_steps=...)` takes it, and `predict` keeps it
in its recurrent `state`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from policylab.core.agent import register_agent
from policylab.core.buffers import compute_gae
from policylab.core.envs import VecEnv, fixed_horizon
from policylab.core.natural_gradient import natural_gradient_step
from policylab.core.nets import EnsembleLinear, EnsembleMLP, gaussian_log_prob
from policylab.core.online import OnlineAgent, OnlineConfig


@dataclasses.dataclass
class NPGConfig(OnlineConfig):
    """NPG settings; defaults are those of HNPG's authors for the combination lock."""

    num_envs: int = 10
    """environments stepped together; each iteration steps each of them steps_per_iteration / num_envs times"""
    clip_actions: bool = False
    """clip the Gaussian's samples to the action space's bounds; HNPG's authors pass them unclipped (on the
    combination lock the env takes any real vector: softmax(action / 0.1) is its choice distribution)"""
    steps_per_iteration: int = 1000
    """online env steps per iteration (rounded up to a multiple of num_envs)"""
    horizon: int | None = None
    """policies and critics, one per time step; None: the task's episode length if all its episodes last that long
    (the combination lock), else 0; 0: one policy and one critic for every step"""
    discount: float = 1.0
    """discount factor γ (1 on finite-horizon tasks)"""
    gae_lambda: float = 0.97
    """GAE λ of the policy's advantages"""
    max_kl: float = 0.01
    """KL radius of each natural gradient step"""
    damping: float = 0.1
    """damping added to the Fisher matrix"""
    cg_iterations: int = 10
    """conjugate gradient iterations"""
    line_search_backtracks: int = 10
    """halvings of the step the line search tries"""
    line_search_accept_ratio: float = 0.1
    """fraction of the first-order improvement a step must achieve"""
    critic_steps: int = 30
    """Adam steps fitting each time step's critic per iteration (a fresh optimiser each time, as the authors)"""
    critic_learning_rate: float = 3e-4
    """Adam learning rate of the critics"""
    value_samples: int = 10
    """actions a ∼ π_h averaged in V_h(s) = E[Q_h(s, a)]"""
    policy_hidden_sizes: tuple[int, ...] = (16, 16)
    """hidden widths of each policy (tanh)"""
    critic_hidden_sizes: tuple[int, ...] = (64, 64)
    """hidden widths of each critic (tanh)"""


def small_output_layer(network: EnsembleMLP) -> EnsembleMLP:
    """Scale the last layer's weights by 0.1 and zero its bias (the authors' initialisation)."""
    with torch.no_grad():
        network.layers[-1].weight.mul_(0.1)
        network.layers[-1].bias.zero_()
    return network


class StepwiseGaussianPolicy(nn.Module):
    """One Gaussian policy per time step, tanh-MLP mean and state-independent log-std, as one batched network.
    Inputs are grouped by time step: [steps, batch, observation]."""

    def __init__(self, observation_dim: int, action_dim: int, num_steps: int, hidden_sizes: tuple[int, ...]):
        super().__init__()
        self.mean = small_output_layer(EnsembleMLP(observation_dim, action_dim, num_steps, hidden_sizes, nn.Tanh))
        self.log_std = nn.Parameter(torch.zeros(num_steps, 1, action_dim))

    def forward(self, observations: torch.Tensor, step: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-std of every step's batch ([steps, batch, action]), or of `step` alone on [batch, ...]."""
        mean = self.mean(observations, step)
        return mean, (self.log_std if step is None else self.log_std[step]).expand_as(mean)

    def sample(self, observations: torch.Tensor, step: int | None = None) -> torch.Tensor:
        """Actions a ∼ π_h(s), grouped as `forward`'s outputs."""
        mean, log_std = self(observations, step)
        return mean + log_std.exp() * torch.randn_like(mean)

    def rows(self, observations: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-std for observations [batch, observation] each at its own time step [batch]."""
        rows = torch.arange(len(steps), device=steps.device)
        return self.mean(observations)[steps, rows], self.log_std[steps, 0]


class StepwiseCritic(nn.Module):
    """One Q_h(s, a) per time step (tanh MLP), as one batched network; inputs grouped [steps, batch, ...]."""

    def __init__(self, observation_dim: int, action_dim: int, num_steps: int, hidden_sizes: tuple[int, ...]):
        super().__init__()
        self.q = small_output_layer(EnsembleMLP(observation_dim + action_dim, 1, num_steps, hidden_sizes, nn.Tanh))

    def forward(self, observations: torch.Tensor, actions: torch.Tensor, step: int | None = None) -> torch.Tensor:
        """Q of every step's batch ([steps, batch]), or of `step` alone on a [batch, ...] input ([batch])."""
        return self.q(torch.cat([observations, actions], dim=-1), step).squeeze(-1)

    def step_parameters(self, step: int) -> list[torch.Tensor]:
        """Copies of one time step's weights, as leaf tensors to optimise on their own (see `with_parameters`)."""
        return [parameter[step].detach().clone().requires_grad_(True) for parameter in self.parameters()]

    def with_parameters(
        self, parameters: list[torch.Tensor], observations: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor:
        """Q of a [batch, ...] input under one step's weights as `step_parameters` gives them ([batch])."""
        x, weights = torch.cat([observations, actions], dim=-1), iter(parameters)
        for layer in self.q.layers:
            if isinstance(layer, EnsembleLinear):  # its parameters in module order: weight [in, out], bias [1, out]
                weight, bias = next(weights), next(weights)
                x = torch.addmm(bias, x, weight)
            else:
                x = layer(x)
        return x.squeeze(-1)

    @torch.no_grad()
    def load_step_parameters(self, step: int, parameters: list[torch.Tensor]) -> None:
        """Write one time step's weights back (the inverse of `step_parameters`)."""
        for parameter, value in zip(self.parameters(), parameters):
            parameter[step] = value

    @torch.no_grad()
    def value(self, observations: torch.Tensor, policy: StepwiseGaussianPolicy, samples: int) -> torch.Tensor:
        """V_h(s) = mean of Q_h(s, a) over `samples` actions a ∼ π_h(s), for grouped observations ([steps, batch])."""
        repeated = observations.repeat(1, samples, 1)
        q = self(repeated, policy.sample(repeated))
        return q.reshape(q.shape[0], samples, -1).mean(dim=1)


class StepGroups(NamedTuple):
    """Rows of a flat batch grouped by time step: `index[h, j]` is the j-th row at step h, valid where `mask`."""

    index: torch.Tensor
    mask: torch.Tensor

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """[rows, ...] -> [steps, width, ...] (padding rows repeat row 0; mask them)."""
        return values[self.index]

    def scatter(self, grouped: torch.Tensor, rows: int) -> torch.Tensor:
        """[steps, width] -> [rows], the inverse of `gather` on valid entries."""
        flat = torch.zeros(rows, dtype=grouped.dtype, device=grouped.device)
        flat[self.index[self.mask]] = grouped[self.mask]
        return flat


def group_by_step(steps: torch.Tensor, num_steps: int) -> StepGroups:
    """Group the rows of a batch by their time step (0 <= step < num_steps), padding groups to the largest."""
    counts = torch.bincount(steps, minlength=num_steps)
    order = torch.argsort(steps, stable=True)
    sorted_steps = steps[order]
    position = torch.arange(len(steps), device=steps.device) - (torch.cumsum(counts, 0) - counts)[sorted_steps]
    width = max(int(counts.max()), 1) if len(steps) else 1
    index = torch.zeros(num_steps, width, dtype=torch.long, device=steps.device)
    mask = torch.zeros(num_steps, width, dtype=torch.bool, device=steps.device)
    index[sorted_steps, position] = order
    mask[sorted_steps, position] = True
    return StepGroups(index, mask)


def masked_step_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each time step's valid entries ([steps, width] -> [steps]; 0 for a step with none)."""
    return (values * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)


class PolicyBatch(NamedTuple):
    """What one natural gradient step is taken on, grouped by time step ([steps, width, ...])."""

    observations: torch.Tensor
    actions: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor

    def join(self, other: PolicyBatch) -> PolicyBatch:
        return PolicyBatch(*(torch.cat([mine, theirs], dim=1) for mine, theirs in zip(self, other)))


class CriticBatch(NamedTuple):
    """Inputs and regression targets of one time step's critic."""

    observations: torch.Tensor
    actions: torch.Tensor
    targets: torch.Tensor


@register_agent("npg")
class NPG(OnlineAgent):
    """Natural policy gradient with per-time-step policies and critics on finite-horizon tasks."""

    config_class = NPGConfig
    config: NPGConfig

    def __init__(self, env: str | VecEnv | tuple[gym.Space, gym.Space], config: NPGConfig | None = None) -> None:
        super().__init__(env, config)
        cfg = self.config
        if not isinstance(self.action_space, gym.spaces.Box) or len(self.action_space.shape) != 1:
            raise ValueError(
                f"{type(self).__name__} needs a flat continuous (Box) action space, got {self.action_space}"
            )
        if cfg.steps_per_iteration < cfg.num_envs:
            raise ValueError(
                f"steps_per_iteration ({cfg.steps_per_iteration}) must be at least num_envs ({cfg.num_envs})"
            )
        if cfg.horizon is None:
            horizon = fixed_horizon(self.env_id) if self.env_id is not None else None
            if isinstance(env, VecEnv) and getattr(env.unwrapped, "fixed_horizon", False):
                horizon = env.unwrapped.max_episode_steps
            self.config = dataclasses.replace(cfg, horizon=horizon or 0)
        elif cfg.horizon < 0:
            raise ValueError(f"horizon must be 0 (one policy for all steps) or a number of steps, got {cfg.horizon}")
        self.num_steps = max(self.config.horizon, 1)
        observation_dim, action_dim = self.observation_space.shape[0], self.action_space.shape[0]
        self.policy = StepwiseGaussianPolicy(
            observation_dim, action_dim, self.num_steps, self.config.policy_hidden_sizes
        ).to(self.device)
        self.critic = StepwiseCritic(observation_dim, action_dim, self.num_steps, self.config.critic_hidden_sizes).to(
            self.device
        )
        self._time_steps: torch.Tensor | None = None

    # -- acting --------------------------------------------------------------------------------------

    @property
    def acts_by_time_step(self) -> bool:
        """Whether acting needs each observation's time step (one policy per step)."""
        return self.config.horizon > 0

    def act(
        self,
        observations: np.ndarray | torch.Tensor,
        deterministic: bool = True,
        time_steps: np.ndarray | int | None = None,
    ) -> np.ndarray:
        """Actions for one observation or a batch; a per-step agent needs each observation's time step in its
        episode (`time_steps`, an int or one per row)."""
        if self.acts_by_time_step and time_steps is None:
            raise ValueError(
                f"this {type(self).__name__} keeps one policy per time step (horizon {self.config.horizon}): pass "
                "time_steps= (each observation's step in its episode), or use predict(obs, state=steps)"
            )
        rows = 1 if np.ndim(observations) == 1 else len(observations)
        steps = np.broadcast_to(np.asarray(0 if time_steps is None else time_steps), (rows,)).copy()
        self._time_steps = torch.as_tensor(steps, dtype=torch.long, device=self.device).clamp(0, self.num_steps - 1)
        try:
            return super().act(observations, deterministic)
        finally:
            self._time_steps = None

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """Stable-Baselines3's signature; `state` is each env's time step (None at the start), returned advanced."""
        rows = 1 if np.ndim(observation) == 1 else len(observation)
        steps = np.zeros(rows, dtype=np.int64) if state is None else np.asarray(state, dtype=np.int64)
        if episode_start is not None:
            steps = np.where(np.asarray(episode_start, dtype=bool), 0, steps)
        return self.act(observation, deterministic, time_steps=steps), steps + 1

    def _policy(self, observations: torch.Tensor, deterministic: bool) -> torch.Tensor:
        mean, log_std = self.policy.rows(observations, self._time_steps)
        return mean if deterministic else mean + log_std.exp() * torch.randn_like(mean)

    def _current_steps(self) -> torch.Tensor:
        """The time step of every env's current observation (0 for a shared policy)."""
        return self._episode_lengths.long().clamp(max=self.num_steps - 1) * (self.config.horizon > 0)

    # -- training ----------------------------------------------------------------------------------

    def collect_and_train(self, envs: VecEnv) -> dict[str, torch.Tensor]:
        """One rollout of `steps_per_iteration` online steps, then critics and a natural gradient step."""
        rollout = self._collect_rollout(envs)
        return self.update(rollout)

    @torch.no_grad()
    def _collect_rollout(self, envs: VecEnv) -> dict[str, torch.Tensor]:
        columns: dict[str, list[torch.Tensor]] = {
            key: [] for key in ("observations", "actions", "steps", "rewards", "final_observations", "terminations")
        }
        columns["truncations"] = []
        for _ in range(-(-self.config.steps_per_iteration // envs.num_envs)):
            steps = self._current_steps()
            mean, log_std = self.policy.rows(self.observations, steps)
            actions = mean + log_std.exp() * torch.randn_like(mean)
            step = self.step_envs(envs, actions)
            for key, value in (
                ("observations", step.observations),
                ("actions", actions),
                ("steps", steps),
                ("rewards", step.rewards),
                ("final_observations", step.final_observations),
                ("terminations", step.terminations),
                ("truncations", step.truncations),
            ):
                columns[key].append(value)
        rollout = {key: torch.stack(values) for key, values in columns.items()}  # [time, envs, ...]
        rollout["last_observations"] = self.observations
        rollout["last_steps"] = self._current_steps()
        return rollout

    def update(self, rollout: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fit the critics backwards over time steps, then one natural gradient step per time step's policy."""
        time, envs = rollout["rewards"].shape
        observations = rollout["observations"].reshape(time * envs, -1)
        actions = rollout["actions"].reshape(time * envs, -1)
        steps = rollout["steps"].reshape(-1)
        groups = group_by_step(steps, self.num_steps)
        self._prepare_offline_batch(len(steps) // self.num_steps)

        returns = self._advantages(rollout, gae_lambda=1.0)[1].reshape(-1)  # Monte-Carlo returns
        online_losses, offline_losses = [], []
        for step in reversed(range(self.num_steps)):
            rows = groups.index[step][groups.mask[step]]
            online = CriticBatch(observations[rows], actions[rows], returns[rows])
            online_loss, offline_loss = self._fit_critic(step, online, self._offline_critic_batch(step))
            online_losses.append(online_loss)
            offline_losses.append(offline_loss)

        advantages = self._advantages(rollout, self.config.gae_lambda)[0].reshape(-1)
        batch = PolicyBatch(groups.gather(observations), groups.gather(actions), groups.gather(advantages), groups.mask)
        offline = self._offline_policy_batch()
        if offline is not None:
            batch = batch.join(offline)
        step_metrics = self._natural_gradient_step(batch)
        self.num_updates += 1
        metrics = {
            "train/critic_online_loss": torch.stack(online_losses).mean(),
            "train/policy_loss_before": step_metrics["loss_before"].mean(),
            "train/policy_loss_after": step_metrics["loss_after"].mean(),
            "train/step_fraction": step_metrics["step_fraction"].mean(),
            "train/policy_std": self.policy.log_std.exp().mean().detach(),
            "train/advantage_mean": advantages.mean(),
        }
        if offline is not None:
            metrics["train/critic_offline_loss"] = torch.stack(offline_losses).mean()
        return metrics

    @torch.no_grad()
    def _advantages(self, rollout: dict[str, torch.Tensor], gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE advantages and returns over the rollout ([time, envs]) with V_h from the current critics."""
        time, envs = rollout["rewards"].shape
        steps = rollout["steps"]
        next_steps = torch.cat([steps[1:], rollout["last_steps"][None]])
        ended = torch.maximum(rollout["terminations"], rollout["truncations"]).bool()
        # A finished episode bootstraps (on truncation) from its final observation, one step after the last.
        final_steps = (steps + 1).clamp(max=self.num_steps - 1) * (self.config.horizon > 0)
        next_steps = torch.where(ended, final_steps, next_steps)
        next_observations = torch.cat([rollout["observations"][1:], rollout["last_observations"][None]])
        next_observations = torch.where(ended[..., None], rollout["final_observations"], next_observations)
        values = self._values(rollout["observations"].reshape(time * envs, -1), steps.reshape(-1))
        next_values = self._values(next_observations.reshape(time * envs, -1), next_steps.reshape(-1))
        return compute_gae(
            rollout["rewards"],
            values.reshape(time, envs),
            next_values.reshape(time, envs),
            rollout["terminations"],
            rollout["truncations"],
            self.config.discount,
            gae_lambda,
        )

    def _values(self, observations: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """V_h(s) of rows at their own time steps."""
        groups = group_by_step(steps, self.num_steps)
        values = self.critic.value(groups.gather(observations), self.policy, self.config.value_samples)
        return groups.scatter(values, len(steps))

    def _fit_critic(
        self, step: int, online: CriticBatch, offline: CriticBatch | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`critic_steps` Adam steps on Q_step's squared error to its online (and offline) targets, with a fresh
        optimiser, on that step's weights alone. Returns the last losses."""
        batches = [batch for batch in (online, offline) if batch is not None and len(batch.targets)]
        if not batches:
            return torch.zeros((), device=self.device), torch.zeros((), device=self.device)
        # One forward pass over both parts; each part's mean squared error weighs the same.
        observations, actions, targets = (torch.cat(column) for column in zip(*batches))
        weight = torch.cat([torch.full_like(batch.targets, 1.0 / len(batch.targets)) for batch in batches])
        is_online = torch.cat([torch.full_like(batch.targets, batch is online) for batch in batches]).bool()
        parameters = self.critic.step_parameters(step)
        optimizer = torch.optim.Adam(parameters, lr=self.config.critic_learning_rate, foreach=True)
        for _ in range(self.config.critic_steps):
            errors = weight * (self.critic.with_parameters(parameters, observations, actions) - targets).pow(2)
            optimizer.zero_grad(set_to_none=True)
            errors.sum().backward()
            optimizer.step()
        self.critic.load_step_parameters(step, parameters)
        errors = errors.detach()
        return errors[is_online].sum(), errors[~is_online].sum()

    def _natural_gradient_step(self, batch: PolicyBatch) -> dict[str, torch.Tensor]:
        """Maximise each step's importance-weighted advantage within a KL radius of the current policy."""
        with torch.no_grad():
            old_mean, old_log_std = self.policy(batch.observations)
            old_log_prob = gaussian_log_prob(batch.actions, old_mean, old_log_std)

        def loss() -> torch.Tensor:
            mean, log_std = self.policy(batch.observations)
            ratio = (gaussian_log_prob(batch.actions, mean, log_std) - old_log_prob).exp()
            return masked_step_mean(-batch.advantages * ratio, batch.mask)

        def kl() -> torch.Tensor:
            mean, log_std = self.policy(batch.observations)
            divergence = (
                log_std - old_log_std + (old_log_std.exp().pow(2) + (old_mean - mean).pow(2)) / (2 * log_std.exp() ** 2)
            ).sum(-1) - 0.5 * mean.shape[-1]
            return masked_step_mean(divergence, batch.mask)

        cfg = self.config
        return natural_gradient_step(
            list(self.policy.parameters()),
            self.num_steps,
            loss,
            kl,
            max_kl=cfg.max_kl,
            damping=cfg.damping,
            cg_iterations=cfg.cg_iterations,
            backtracks=cfg.line_search_backtracks,
            accept_ratio=cfg.line_search_accept_ratio,
        )

    # -- what a hybrid variant adds (HNPG) -----------------------------------------------------------

    def _prepare_offline_batch(self, per_step: int) -> None:
        """Draw this iteration's offline transitions (`per_step` at each time step); NPG uses none."""

    def _offline_critic_batch(self, step: int) -> CriticBatch | None:
        """Offline inputs and targets of Q_step, fitted together with the online returns; NPG has none."""
        return None

    def _offline_policy_batch(self) -> PolicyBatch | None:
        """Offline samples added to the natural gradient step; NPG has none."""
        return None
