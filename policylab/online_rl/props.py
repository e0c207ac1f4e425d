"""PROPS: proximal robust on-policy sampling (Corrado & Hanna, 2024), and PPO with a buffer, its control.

The library's PPO learns from a ring buffer of the last b rollout batches (b·n transitions) rather than the last
one alone. A behaviour policy π_φ collects the data, adapted so that the buffer as a whole looks as if the current
policy π_θ had sampled it: every m env steps, φ is reset to θ and trained to lower the probability of the actions the
buffer already holds more of than π_θ would give, by minimising

    L(φ) = mean[max(ρ, clip(ρ, 1 − ε_P, 1 + ε_P))] + λ·KL(π_φ ‖ π_θ),   ρ = π_φ(a|s) / π_θ(a|s)

over the buffer (less its m oldest transitions once full: the coming batch evicts them), for up to 16 epochs, stopping
before a minibatch whose estimate mean[(ρ − 1) − log ρ] of KL(π_θ ‖ π_φ) passes δ_P. Every n steps PPO updates θ on the
whole buffer. The buffer keeps raw observations and rewards: before each update they are normalised with the current
running statistics, and log π_θ, V and GAE are recomputed over the whole buffer with the current θ. Sampling error
(`core.sampling_error`, KL between the buffer's empirical policy and π_θ) is logged as `train/sampling_error`; with
`on_policy_reference`, beside it the authors' reference, `train/sampling_error_on_policy`: the sampling error of a
buffer of the same size that the same target policies (θ of each batch) collect on-policy in a separate copy of the
task, so that PROPS is compared with on-policy sampling along its own sequence of policies.

Registered as `props`, with the authors' tuned settings for the task where a field is left unset (`TASK_SETTINGS`),
and `ppo-buffer`: the same buffer sampled by π_θ itself (b = 2), the paper's control. With `buffer_batches=1` and
on-policy sampling the class is PPO as the paper runs it (same network and settings, no buffer).

PPO's side takes the authors' settings: 64-64 tanh networks with a tanh on the Gaussian's mean, clip 0.2 on ratio and
value, entropy bonus 0.01, 10 epochs of 32 minibatches, target KL 0.03, annealed learning rate. The main departures
from the authors' code (all listed in the README's PROPS section): truncated episodes bootstrap from V(final
observation), as the library's PPO does; the PROPS update that follows a PPO update takes log π_θ and the KL's π_θ
from the updated θ (the paper's algorithm), where the authors' code reuses the values computed before the PPO update;
and PPO's target KL is checked after each epoch (the library's PPO), where theirs stops before the minibatch passing it.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import math
from typing import Any, Literal, NamedTuple, get_args

import gymnasium as gym
import torch
from torch import nn

from policylab.core.agent import register_agent
from policylab.core.buffers import RolloutBuffer
from policylab.core.data.scores import task_family
from policylab.core.envs import VecEnv
from policylab.core.nets import adam
from policylab.core.runs import RunDirectory
from policylab.online_rl.ppo import PPO, ActorCritic, GaussianPolicy, PPOConfig

Sampling = Literal["props", "on-policy"]


class TaskSettings(NamedTuple):
    """The settings the authors tuned per task (their `commands/rl_props.txt`)."""

    rollout_steps: int  # n
    behaviour_steps: int  # m
    learning_rate: float
    behaviour_learning_rate: float
    behaviour_target_kl: float  # δ_P
    behaviour_kl_coef: float  # λ
    behaviour_num_minibatches: int
    behaviour_clip_coef: float  # ε_P


TASK_SETTINGS: dict[str, TaskSettings] = {
    "swimmer": TaskSettings(2048, 1024, 1e-3, 1e-5, 0.03, 0.1, 16, 0.3),
    "halfcheetah": TaskSettings(1024, 512, 1e-4, 1e-3, 0.05, 0.3, 16, 0.3),
    "hopper": TaskSettings(2048, 256, 1e-3, 1e-3, 0.05, 0.3, 16, 0.3),
    "walker2d": TaskSettings(2048, 256, 1e-3, 1e-3, 0.1, 0.3, 32, 0.3),
    "ant": TaskSettings(2048, 256, 1e-4, 1e-3, 0.03, 0.1, 16, 0.05),
    "humanoid": TaskSettings(8192, 256, 1e-4, 1e-4, 0.1, 0.1, 32, 0.3),
}
REFERENCE_SEED_OFFSET = 20_000  # seeds of the on-policy reference's envs and noise: config.seed + this + update
DEFAULT_TASK = "hopper"  # whose settings tasks the authors did not tune take


@dataclasses.dataclass
class PROPSConfig(PPOConfig):
    """PROPS settings: the authors'; fields left unset take the task's tuned values (`TASK_SETTINGS`)."""

    learning_rate: float | None = None
    """Adam learning rate of π_θ and V, annealed linearly to 0 (default: the task's)"""
    rollout_steps: int | None = None
    """steps per env between PPO updates, n (default: the task's)"""
    entropy_coef: float = 0.01
    """weight of the entropy bonus"""
    target_kl: float | None = 0.03
    """stop a PPO update's epochs early when the approximate KL exceeds this"""
    sampling_error_every: int = 10
    """log the buffer's sampling error every this many PPO updates (0: never)"""
    buffer_batches: int = 2
    """rollout batches the buffer keeps, b (the PPO update learns from b·n steps per env)"""
    sampling: Sampling = "props"
    """who collects the data: the PROPS behaviour policy, or the current policy itself (on-policy)"""
    behaviour_steps: int | None = None
    """steps per env between behaviour updates, m; divides rollout_steps (default: the task's)"""
    behaviour_learning_rate: float | None = None
    """Adam learning rate of the behaviour policy (default: the task's)"""
    behaviour_clip_coef: float | None = None
    """clip ε_P of the PROPS ratio (default: the task's)"""
    behaviour_kl_coef: float | None = None
    """weight λ of KL(π_φ ‖ π_θ) in the PROPS loss (default: the task's)"""
    behaviour_target_kl: float | None = None
    """stop the behaviour update before a minibatch whose KL estimate exceeds δ_P (default: the task's)"""
    behaviour_num_minibatches: int | None = None
    """minibatches per behaviour epoch (default: the task's)"""
    behaviour_update_epochs: int = 16
    """epochs of each behaviour update"""
    behaviour_max_grad_norm: float = 0.5
    """gradient norm clip of the behaviour update"""
    tanh_mean: bool = True
    """squash the Gaussian policy's mean with tanh (the authors' network)"""
    on_policy_reference: bool = False
    """with each sampling error, also log `train/sampling_error_on_policy`: the sampling error of an on-policy buffer
    of the same size collected by the same target policies (the one of each batch), in a separate copy of the task
    (the authors' `se_ref`, the reference their figures compare PROPS with)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sampling not in get_args(Sampling):
            raise ValueError(f"unknown sampling {self.sampling!r}; choose one of {', '.join(get_args(Sampling))}")
        if self.buffer_batches < 1:
            raise ValueError(f"buffer_batches must be at least 1, got {self.buffer_batches}")

    def resolved(self, env_id: str | None) -> PROPSConfig:
        """This config with every unset field taken from the task's tuned settings (Hopper's for a task the authors
        did not tune, or none given)."""
        tuned = TASK_SETTINGS.get(task_family(env_id or ""), TASK_SETTINGS[DEFAULT_TASK])
        unset = {name: value for name, value in tuned._asdict().items() if getattr(self, name) is None}
        config = dataclasses.replace(self, **unset)
        if config.rollout_steps % config.behaviour_steps != 0:
            raise ValueError(
                f"behaviour_steps ({config.behaviour_steps}) must divide rollout_steps ({config.rollout_steps})"
            )
        return config


@dataclasses.dataclass
class PPOBufferConfig(PROPSConfig):
    """PPO-buffer settings: PROPS's, with the data sampled by the current policy."""

    sampling: Sampling = "on-policy"
    """who collects the data: the PROPS behaviour policy, or the current policy itself (on-policy)"""


def props_objective(log_ratio: torch.Tensor, clip_coef: float) -> torch.Tensor:
    """mean[max(ρ, clip(ρ, 1 − ε, 1 + ε))] with ρ = exp(`log_ratio`) = π_φ(a|s)/π_θ(a|s). Minimising it lowers
    π_φ on the buffer's actions; where ρ is already below 1 − ε the clip holds it constant (no gradient)."""
    ratio = log_ratio.exp()
    return torch.maximum(ratio, ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean()


class BatchHistory:
    """The last `capacity` vector steps as the envs gave them (raw observations and rewards, so they can be
    normalised anew), in ring storage read back oldest first. `final_observations[t]` is the observation step t
    reached (the last one of an episode that ended there)."""

    fields = ("observations", "actions", "rewards", "terminations", "truncations", "final_observations")

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        observation_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        device: torch.device,
    ) -> None:
        shapes = {"observations": observation_shape, "actions": action_shape, "final_observations": observation_shape}
        self.storage = {
            name: torch.zeros(capacity, num_envs, *shapes.get(name, ()), device=device) for name in self.fields
        }
        self.capacity, self.position, self.size = capacity, 0, 0

    def add(self, **step: torch.Tensor) -> None:
        """Store one vector step (one tensor per field), overwriting the oldest once full."""
        for name in self.fields:
            self.storage[name][self.position] = step[name]
        self.position = (self.position + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def newest(self, steps: int | None = None) -> dict[str, torch.Tensor]:
        """The newest `steps` vector steps (all held by default), oldest first: `[steps, num_envs, ...]` each."""
        steps = self.size if steps is None else min(steps, self.size)
        device = self.storage["rewards"].device
        indices = (self.position - steps + torch.arange(steps, device=device)) % self.capacity
        return {name: tensor[indices] for name, tensor in self.storage.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"storage": self.storage, "position": self.position, "size": self.size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self.fields:
            self.storage[name].copy_(state["storage"][name])
        self.position, self.size = int(state["position"]), int(state["size"])


@register_agent("props")
class PROPS(PPO):
    """PPO on a buffer of recent batches collected by an adaptive behaviour policy that keeps the buffer on-policy."""

    config_class = PROPSConfig
    config: PROPSConfig

    def __init__(self, env: str | VecEnv | tuple[gym.Space, gym.Space], config: PROPSConfig | None = None) -> None:
        config = config if config is not None else self.config_class()
        if isinstance(config, PROPSConfig):
            config = config.resolved(env if isinstance(env, str) else getattr(env, "env_id", None))
        super().__init__(env, config)
        cfg = self.config
        self.behaviour_policy = copy.deepcopy(self.policy)
        self.behaviour_optimizer = adam(self.behaviour_policy.parameters(), lr=cfg.behaviour_learning_rate, eps=1e-5)
        self.history: BatchHistory | None = None
        # with `on_policy_reference`: θ as it was while each batch in the buffer was collected, oldest first
        self.batch_policies: collections.deque[dict[str, torch.Tensor]] = collections.deque(maxlen=cfg.buffer_batches)
        self._reference_envs: VecEnv | None = None

    def _build_policy(self, observation_dim: int) -> ActorCritic:
        policy = super()._build_policy(observation_dim)
        if self.config.tanh_mean and isinstance(policy, GaussianPolicy):
            policy.head.append(nn.Tanh())
        return policy

    def setup_learning(self, total_timesteps: int) -> None:
        super().setup_learning(total_timesteps)
        cfg = self.config
        if self.history is None:
            capacity = cfg.buffer_batches * cfg.rollout_steps
            shapes = (self.observation_space.shape, self.action_space.shape)
            self.history = BatchHistory(capacity, cfg.num_envs, *shapes, self.device)

    def collect_and_train(self, envs: VecEnv) -> dict[str, torch.Tensor]:
        """n steps in batches of m, each preceded by a behaviour update (PROPS), then a PPO update on the buffer."""
        cfg = self.config
        self._anneal_learning_rate()
        if cfg.on_policy_reference:
            self.batch_policies.append(copy.deepcopy(self.policy.state_dict()))
        behaviour_metrics = []
        for _ in range(cfg.rollout_steps // cfg.behaviour_steps):
            if cfg.sampling == "props" and self.history.size > 0:
                behaviour_metrics.append(self._update_behaviour())
            self._collect(envs, cfg.behaviour_steps)
        self.buffer = self._rollout_from_history()
        reference = self._on_policy_reference_error()
        metrics = self.update()
        if reference is not None:
            metrics["train/sampling_error_on_policy"] = reference
        if behaviour_metrics:
            metrics |= {name: torch.stack([m[name] for m in behaviour_metrics]).mean() for name in behaviour_metrics[0]}
        return metrics

    @torch.no_grad()
    def _collect(self, envs: VecEnv, steps: int) -> None:
        """`steps` vector steps with the behaviour policy (or π_θ when sampling on-policy) into the history."""
        cfg = self.config
        sampler = self.behaviour_policy if cfg.sampling == "props" else self.policy
        for _ in range(steps):
            if cfg.normalize_observations:
                self.observation_normalizer.update(self.observations)
            observations = self.observations
            actions = sampler.sample(self._normalize(observations))[0]
            step = self.step_envs(envs, actions)
            if cfg.normalize_rewards:
                self._track_discounted_returns(step.rewards, step.dones)
            self.history.add(
                observations=observations,
                actions=actions,
                rewards=step.rewards,
                terminations=step.terminations,
                truncations=step.truncations,
                final_observations=step.final_observations,
            )

    @torch.no_grad()
    def _rollout_from_history(self) -> RolloutBuffer:
        """The whole history as a rollout for PPO: normalised with the current statistics, log π_θ and V
        recomputed with the current θ, advantages by GAE over the buffer."""
        cfg = self.config
        data = self.history.newest()
        observations = self._normalize(data["observations"])
        log_probs, _, values = self.policy.log_prob_entropy_value(observations, data["actions"])
        final_values = self.policy.value(self._normalize(data["final_observations"])).squeeze(-1)
        rewards = self._normalize_rewards(data["rewards"]) if cfg.normalize_rewards else data["rewards"]
        buffer = RolloutBuffer.from_steps(
            {
                "observations": observations,
                "actions": data["actions"],
                "log_probs": log_probs,
                "values": values,
                "rewards": rewards,
                "terminations": data["terminations"],
                "truncations": data["truncations"],
                "final_values": final_values,
            }
        )
        last_values = self.policy.value(self._normalize(self.observations)).squeeze(-1)
        buffer.compute_advantages(last_values, cfg.discount, cfg.gae_lambda)
        return buffer

    @torch.no_grad()
    def _on_policy_reference_error(self) -> torch.Tensor | None:
        """Before a measured update, with `on_policy_reference`: the sampling error of `rollout_steps` on-policy steps
        per env of each policy in `batch_policies`, from a fresh reset of a separate copy of the task. Reset and
        action noise are seeded by the update, on a forked random stream, so training is untouched and a resumed
        run measures the same."""
        cfg = self.config
        update = self._measured_update()
        if not cfg.on_policy_reference or update is None:
            return None
        if self._reference_envs is None:
            self._reference_envs = self.build_envs(cfg.seed + REFERENCE_SEED_OFFSET)
        envs, sampler = self._reference_envs, copy.deepcopy(self.policy)
        seed = cfg.seed + REFERENCE_SEED_OFFSET + update
        visited, taken = [], []
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            observations = self._as_float(envs.reset(seed=seed)[0])
            for state in self.batch_policies:
                sampler.load_state_dict(state)
                for _ in range(cfg.rollout_steps):
                    actions = sampler.sample(self._normalize(observations))[0]
                    visited.append(observations)
                    taken.append(actions)
                    observations = self._as_float(envs.step(self.env_actions(envs, actions))[0])
        return self._sampling_error_of(self._normalize(torch.cat(visited)), torch.cat(taken), update)

    def _update_behaviour(self) -> dict[str, torch.Tensor]:
        """φ ← θ, then PROPS epochs on the history (less the steps the next batch evicts)."""
        cfg = self.config
        self.behaviour_policy.load_state_dict(self.policy.state_dict())
        kept_steps = self.history.capacity - cfg.behaviour_steps
        data = self.history.newest(kept_steps)
        observations = self._normalize(data["observations"]).flatten(0, 1)
        actions = data["actions"].flatten(0, 1)
        minibatch_size = max(1, min(len(actions), kept_steps * cfg.num_envs // cfg.behaviour_num_minibatches))
        action_dims = math.prod(self.action_space.shape) or 1  # the KL is averaged over action dimensions
        totals, one = torch.zeros(4, device=self.device), torch.ones((), device=self.device)
        stopped = False
        for _ in range(cfg.behaviour_update_epochs):
            for indices in torch.randperm(len(actions), device=self.device).split(minibatch_size):
                behaviour = self.behaviour_policy.distribution(observations[indices])
                with torch.no_grad():
                    target = self.policy.distribution(observations[indices])
                log_ratio = behaviour.log_prob(actions[indices]) - target.log_prob(actions[indices])
                with torch.no_grad():
                    approx_kl = ((log_ratio.exp() - 1) - log_ratio).mean()
                if approx_kl.item() > cfg.behaviour_target_kl:
                    stopped = True
                    break
                objective = props_objective(log_ratio, cfg.behaviour_clip_coef)
                regulariser = torch.distributions.kl_divergence(behaviour, target).mean() / action_dims
                loss = objective + cfg.behaviour_kl_coef * regulariser
                self.behaviour_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.behaviour_policy.parameters(), cfg.behaviour_max_grad_norm)
                self.behaviour_optimizer.step()
                totals += torch.stack([objective.detach(), regulariser.detach(), approx_kl, one])
            if stopped:
                break
        steps = totals[3]
        means = totals[:3] / steps.clamp_min(1)
        return {
            "props/objective": means[0],
            "props/kl_regulariser": means[1],
            "props/approx_kl": means[2],
            "props/minibatch_updates": steps,
        }

    # -- resumable state -----------------------------------------------------------------------------

    def training_state(self) -> dict:
        return super().training_state() | {
            "history": self.history.state_dict(),
            "batch_policies": list(self.batch_policies),
        }

    def load_training_state(self, state: dict, run: RunDirectory) -> None:
        super().load_training_state(state, run)
        self.history.load_state_dict(state["history"])
        self.batch_policies.clear()
        self.batch_policies.extend(state.get("batch_policies", []))


@register_agent("ppo-buffer")
class PPOBuffer(PROPS):
    """PPO on a buffer of the last b batches, all sampled by the policy of their time (PROPS's control)."""

    config_class = PPOBufferConfig
    config: PPOBufferConfig
