"""The `"torch"` backend: batched tasks whose whole state is a torch tensor on a device (CPU or CUDA).

`TorchVecEnv` owns what every task shares: the random generator, step counting and truncation, same-step
auto-reset, action checking and dtypes. A task implements three small hooks: `_sample_initial_state`,
`_dynamics` and `_observe`. `Pendulum` and `CartPole` equal Gymnasium 1.4's `Pendulum-v1` and `CartPole-v1`
step for step; `CombinationLock` is the continuous combination lock of HNPG (Song et al. 2023; Zhou et al. 2023),
one id per horizon (`CombinationLock-H50-v0`; `register_combination_lock` adds other horizons).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.classic_control import CartPoleEnv, PendulumEnv
from gymnasium.vector.utils import batch_space
from scipy.linalg import hadamard

from policylab.core.agent import restore_generator
from policylab.core.envs.vector import VecEnv, check_env_seeds


def torch_dtype(numpy_dtype: np.dtype | type) -> torch.dtype:
    """The torch dtype equal to a numpy dtype."""
    return torch.from_numpy(np.empty(0, dtype=numpy_dtype)).dtype


def gymnasium_spaces(env_class: type[gym.Env]) -> tuple[gym.Space, gym.Space]:
    """The (observation, action) spaces of a Gymnasium environment class built with its defaults."""
    env = env_class()
    return env.observation_space, env.action_space


class TorchVecEnv(VecEnv):
    """A batch of `num_envs` copies of a task, its state one tensor of shape (num_envs, *state_shape) on `device`.

    Auto-reset follows `policylab.core.envs.vector`: envs that terminate or truncate are reset within the step.
    The info keys `final_obs`, `_final_obs`, `final_info` and `_final_info` are always present, so the step's
    output has a fixed structure and never needs a device-to-host sync to decide them. `final_obs` holds the
    observation every env reached by this step, before any reset: where `_final_obs` is false it equals the
    returned observation. The tasks here report no per-step info, so `final_info` is `{}`.
    Each step draws fresh initial states for the whole batch and keeps those of the finished envs, so the
    random stream depends only on the seed and the number of steps, again with no sync.

    Subclasses set `env_id`, `single_observation_space`, `single_action_space`, `state_shape`,
    `max_episode_steps` (and `state_dtype` when not float64), and implement the three hooks.
    """

    backend = "torch"
    returns_tensors = True
    seeds_each_env = True
    state_shape: tuple[int, ...]
    state_dtype: torch.dtype = torch.float64
    max_episode_steps: int
    fixed_horizon: bool = False
    """whether every episode lasts exactly `max_episode_steps` steps (a finite-horizon task)"""

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        max_episode_steps: int | None = None,
        state_dtype: torch.dtype | None = None,
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be at least 1, got {max_episode_steps}")
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.max_episode_steps = max_episode_steps or self.max_episode_steps
        self.state_dtype = state_dtype or self.state_dtype
        # Copies per instance: a space carries its own random generator.
        self.single_observation_space = copy.deepcopy(self.single_observation_space)
        self.single_action_space = copy.deepcopy(self.single_action_space)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_dtype = torch_dtype(self.single_observation_space.dtype)
        self.action_dtype = torch_dtype(self.single_action_space.dtype)
        self.generator = torch.Generator(device=self.device)
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self.state: torch.Tensor | None = None
        self.elapsed_steps = torch.zeros(num_envs, dtype=torch.int64, device=self.device)

    def _sample_initial_state(self, count: int) -> torch.Tensor:
        """Fresh initial states, shape (count, *state_shape), drawn with `self.generator`."""
        raise NotImplementedError

    def _dynamics(self, state: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step of every env: (next state, reward, terminated as bool), all batch-first."""
        raise NotImplementedError

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        """The observations of a batch of states."""
        raise NotImplementedError

    def _episode_step_limits(self) -> int | torch.Tensor:
        """Steps after which episodes truncate: `max_episode_steps`, or a per-env tensor for tasks whose envs differ."""
        return self.max_episode_steps

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Start a new episode in every env, reseeding the generator first when `seed` is given; with one seed per
        env, env i's initial state is drawn from its own seed (later resets go on from the last one's stream)."""
        if options:
            raise ValueError(f"{self.env_id} (torch backend) takes no reset options, got {sorted(options)}")
        if isinstance(seed, list | tuple | np.ndarray):
            states = []
            for each in check_env_seeds(seed, self.num_envs):
                self.generator.manual_seed(each)
                states.append(self._sample_initial_state(1))
            return self.set_state(torch.cat(states)), {}
        if seed is not None:
            self.generator.manual_seed(seed)
        return self.set_state(self._sample_initial_state(self.num_envs)), {}

    def set_state(self, state: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Start a new episode in every env from the given batch-first state; returns its observations."""
        state = torch.as_tensor(state, dtype=self.state_dtype, device=self.device)
        expected_shape = (self.num_envs, *self.state_shape)
        if tuple(state.shape) != expected_shape:
            raise ValueError(f"{self.env_id} expects a state of shape {expected_shape}, got {tuple(state.shape)}")
        self.state = state.clone()
        self.elapsed_steps.zero_()
        return self._observations(self.state)

    def state_dict(self) -> dict[str, Any] | None:
        """Episode states, step counts and the generator."""
        if self.state is None:
            raise RuntimeError(f"{self.env_id}: call reset() before state_dict()")
        return {
            "state": self.state.clone(),
            "elapsed_steps": self.elapsed_steps.clone(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from what `state_dict` returned."""
        self.set_state(state["state"])
        self.elapsed_steps.copy_(state["elapsed_steps"])
        restore_generator(self.generator, state["generator"])

    def step(
        self, actions: torch.Tensor | np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Step every env, resetting those that terminate or truncate within the same step."""
        if self.state is None:
            raise RuntimeError(f"{self.env_id}: call reset() (or set_state()) before step()")
        next_state, reward, terminated = self._dynamics(self.state, self._as_actions(actions))
        self.elapsed_steps += 1
        truncated = self.elapsed_steps >= self._episode_step_limits()
        done = terminated | truncated
        final_observations = self._observations(next_state)
        done_rows = done.reshape(-1, *(1,) * len(self.state_shape))
        self.state = torch.where(done_rows, self._sample_initial_state(self.num_envs), next_state)
        self.elapsed_steps.masked_fill_(done, 0)
        info = {"final_obs": final_observations, "_final_obs": done, "final_info": {}, "_final_info": done}
        return self._observations(self.state), reward.to(torch.float32), terminated, truncated, info

    def _as_actions(self, actions: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Actions as a tensor on the device in the action space's dtype, checked against the batch shape."""
        actions = torch.as_tensor(actions, dtype=self.action_dtype, device=self.device)
        if tuple(actions.shape) != self.action_space.shape:
            raise ValueError(
                f"{self.env_id} with num_envs={self.num_envs} expects actions of shape {self.action_space.shape}, "
                f"got {tuple(actions.shape)}"
            )
        return actions

    def _observations(self, state: torch.Tensor) -> torch.Tensor:
        """The observations of a batch of states in the observation space's dtype."""
        return self._observe(state).to(self.observation_dtype)

    def _uniform(self, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
        """Samples uniform in [low, high) of the state dtype, drawn with the env's generator."""
        unit = torch.rand(shape, generator=self.generator, dtype=self.state_dtype, device=self.device)
        return low + (high - low) * unit


def angle_normalize(angle: torch.Tensor) -> torch.Tensor:
    """Angles wrapped into [-pi, pi), as Gymnasium's Pendulum wraps them."""
    return ((angle + math.pi) % (2 * math.pi)) - math.pi


class Pendulum(TorchVecEnv):
    """Gymnasium's `Pendulum-v1`: swing a pendulum upright. State (angle, angular velocity)."""

    env_id = "Pendulum-v1"
    single_observation_space, single_action_space = gymnasium_spaces(PendulumEnv)
    state_shape = (2,)
    max_episode_steps = 200
    max_speed = 8.0
    max_torque = 2.0
    dt = 0.05
    gravity = 10.0
    mass = 1.0
    length = 1.0

    def _sample_initial_state(self, count: int) -> torch.Tensor:
        angle = self._uniform((count,), -math.pi, math.pi)
        angular_velocity = self._uniform((count,), -1.0, 1.0)
        return torch.stack([angle, angular_velocity], dim=-1)

    def _dynamics(self, state: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        angle, angular_velocity = state.unbind(-1)
        # The torque keeps the action dtype (float32), so its terms round as Gymnasium's do.
        torque = actions[:, 0].clamp(-self.max_torque, self.max_torque)
        cost = angle_normalize(angle) ** 2 + 0.1 * angular_velocity**2 + 0.001 * torque**2
        angular_acceleration = (
            3 * self.gravity / (2 * self.length) * torch.sin(angle) + 3.0 / (self.mass * self.length**2) * torque
        )
        new_angular_velocity = (angular_velocity + angular_acceleration * self.dt).clamp(
            -self.max_speed, self.max_speed
        )
        new_angle = angle + new_angular_velocity * self.dt
        next_state = torch.stack([new_angle, new_angular_velocity], dim=-1)
        return next_state, -cost, torch.zeros_like(angle, dtype=torch.bool)

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        angle, angular_velocity = state.unbind(-1)
        return torch.stack([torch.cos(angle), torch.sin(angle), angular_velocity], dim=-1)


class CartPole(TorchVecEnv):
    """Gymnasium's `CartPole-v1`: balance a pole on a cart. State (x, x velocity, angle, angular velocity)."""

    env_id = "CartPole-v1"
    single_observation_space, single_action_space = gymnasium_spaces(CartPoleEnv)
    state_shape = (4,)
    max_episode_steps = 500
    gravity = 9.8
    cart_mass = 1.0
    pole_mass = 0.1
    total_mass = pole_mass + cart_mass
    pole_half_length = 0.5
    pole_mass_length = pole_mass * pole_half_length
    force_magnitude = 10.0
    tau = 0.02
    angle_threshold = 12 * 2 * math.pi / 360
    position_threshold = 2.4

    def _sample_initial_state(self, count: int) -> torch.Tensor:
        return self._uniform((count, 4), -0.05, 0.05)

    def _dynamics(self, state: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        position, velocity, angle, angular_velocity = state.unbind(-1)
        force = torch.where(actions == 1, self.force_magnitude, -self.force_magnitude).to(state.dtype)
        cos_angle, sin_angle = torch.cos(angle), torch.sin(angle)
        force_per_mass = (force + self.pole_mass_length * angular_velocity**2 * sin_angle) / self.total_mass
        angular_acceleration = (self.gravity * sin_angle - cos_angle * force_per_mass) / (
            self.pole_half_length * (4.0 / 3.0 - self.pole_mass * cos_angle**2 / self.total_mass)
        )
        acceleration = force_per_mass - self.pole_mass_length * angular_acceleration * cos_angle / self.total_mass
        # Euler integration: positions advance with the old velocities.
        next_state = torch.stack(
            [
                position + self.tau * velocity,
                velocity + self.tau * acceleration,
                angle + self.tau * angular_velocity,
                angular_velocity + self.tau * angular_acceleration,
            ],
            dim=-1,
        )
        next_position, next_angle = next_state[:, 0], next_state[:, 2]
        terminated = (next_position.abs() > self.position_threshold) | (next_angle.abs() > self.angle_threshold)
        return next_state, torch.ones_like(position), terminated

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        return state


class CombinationLock(TorchVecEnv):
    """The continuous combination lock with rich observations (HNPG's test task), as in the authors' `Lock`.

    Latent states A (0), B (1) and the dead state C (2); episodes start in A or B with probability ½ and last
    exactly `horizon` steps. An action becomes a choice among 10 by sampling softmax(action / 0.1); the action space
    is [0, 1]^10, as the authors declare it, but any real vector is taken as it is, as their env does (their
    Gaussian policies send unclipped samples: `NPGConfig.clip_actions` is False).
    In A or B the right choice of that step (its own combination for A and for B) keeps the agent alive and
    switches between A and B with probability ½; any other choice, and every choice in C, leads to C. Reward comes
    at the last step only: 1 for the right last choice while alive, else 0.1 with probability ½ (the anti-reward
    that lures a myopic learner into giving up). The observation is one-hot(latent) + one-hot(step) +
    N(0, 0.1²) noise on those 3 + horizon coordinates, zero-padded to a power of two (≥ horizon + 4) and
    multiplied by the Hadamard matrix of that size. State: (latent, step) as integers.

    The combinations are drawn once per task from `combination_seed` (not the env seed), so training and
    evaluation envs, and the generated offline data, share one lock.
    """

    state_shape = (2,)
    state_dtype = torch.int64
    fixed_horizon = True
    horizon: int
    num_choices = 10
    temperature = 0.1
    switch_probability = 0.5
    anti_reward = 0.1
    anti_reward_probability = 0.5
    observation_noise = 0.1
    num_latents = 3
    dead = 2
    combination_seed = 0

    def __init__(self, num_envs: int, device: str | torch.device = "cpu", seed: int | None = None, **kwargs: Any):
        super().__init__(num_envs, device=device, seed=seed, **kwargs)
        if self.max_episode_steps != self.horizon:
            raise ValueError(
                f"{self.env_id} episodes last exactly {self.horizon} steps; register a lock of another horizon with "
                "register_combination_lock(horizon) instead of setting max_episode_steps"
            )
        generator = torch.Generator().manual_seed(self.combination_seed)
        self.combinations = torch.randint(0, self.num_choices, (2, self.horizon), generator=generator).to(self.device)
        size = self.single_observation_space.shape[0]
        self.mixing = torch.as_tensor(hadamard(size), dtype=torch.float32, device=self.device)

    def optimal_actions(self) -> torch.Tensor:
        """For every env, the one-hot action of the right choice at its current latent state and step (the dead
        state's rows hold A's choice: nothing is right there)."""
        latent, step = self.state.unbind(-1)
        right = self.combinations[latent.clamp(max=1), step.clamp(max=self.horizon - 1)]
        return torch.nn.functional.one_hot(right, self.num_choices).to(self.action_dtype)

    def live_state_observations(self, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`samples` noisy observations of each live state (A, B) at every step, `[horizon, 2, samples, dim]`, and
        the right choice there, `[horizon, 2]`: what a probe of a learnt policy or critic is fed."""
        latent = torch.arange(2, device=self.device).repeat_interleave(samples)
        step = torch.arange(self.horizon, device=self.device)
        states = torch.stack(torch.broadcast_tensors(latent[None, :], step[:, None]), dim=-1)  # [H, 2·samples, 2]
        observations = self._observe(states.reshape(-1, 2)).reshape(self.horizon, 2, samples, -1)
        return observations, self.combinations.T

    def choice_probabilities(self, actions: torch.Tensor) -> torch.Tensor:
        """The probability of each of the `num_choices` choices that `actions` (`[..., num_choices]`) make."""
        return torch.softmax(actions.float() / self.temperature, dim=-1)

    def _sample_initial_state(self, count: int) -> torch.Tensor:
        latent = (self._random(count) >= 0.5).long()  # A or B with probability ½
        return torch.stack([latent, torch.zeros_like(latent)], dim=-1)

    def _dynamics(self, state: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        latent, step = state.unbind(-1)
        probabilities = self.choice_probabilities(actions)
        choices = torch.multinomial(probabilities, 1, generator=self.generator).squeeze(-1)
        alive = latent != self.dead
        right = self.combinations[latent.clamp(max=1), step]
        correct = alive & (choices == right)
        last = step == self.horizon - 1
        switched = torch.where(self._random(len(latent)) < self.switch_probability, 1 - latent, latent)
        next_latent = torch.where(correct, torch.where(last, latent, switched), self.dead)
        anti_reward = torch.where(self._random(len(latent)) < self.anti_reward_probability, self.anti_reward, 0.0)
        reward = torch.where(last, torch.where(correct, 1.0, anti_reward), 0.0)
        return torch.stack([next_latent, step + 1], dim=-1), reward, last

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        latent, step = state.unbind(-1)
        rows = torch.arange(len(latent), device=self.device)
        size = self.mixing.shape[0]
        vectors = torch.zeros(len(latent), size, device=self.device)
        noisy = self.num_latents + self.horizon
        vectors[:, :noisy] = self.observation_noise * torch.randn(
            len(latent), noisy, generator=self.generator, device=self.device
        )
        vectors[rows, latent] += 1.0
        vectors[rows, self.num_latents + step] += 1.0
        return vectors @ self.mixing.T

    def _random(self, count: int) -> torch.Tensor:
        return torch.rand(count, generator=self.generator, device=self.device)


def combination_lock_id(horizon: int) -> str:
    """The task id of the combination lock of this horizon."""
    return f"CombinationLock-H{horizon}-v0"


def register_combination_lock(horizon: int) -> str:
    """Add the combination lock of `horizon` steps to the torch tasks (a no-op if it is there); returns its id."""
    if horizon < 1:
        raise ValueError(f"a combination lock needs a horizon of at least 1 step, got {horizon}")
    env_id = combination_lock_id(horizon)
    if env_id not in TORCH_TASKS:
        size = 2 ** math.ceil(math.log2(horizon + CombinationLock.num_latents + 1))
        TORCH_TASKS[env_id] = type(
            f"CombinationLockH{horizon}",
            (CombinationLock,),
            {
                "env_id": env_id,
                "horizon": horizon,
                "max_episode_steps": horizon,
                "single_observation_space": gym.spaces.Box(-np.inf, np.inf, (size,), np.float32),
                "single_action_space": gym.spaces.Box(0.0, 1.0, (CombinationLock.num_choices,), np.float32),
            },
        )
    return env_id


TORCH_TASKS: dict[str, type[TorchVecEnv]] = {task.env_id: task for task in (Pendulum, CartPole)}
COMBINATION_LOCK_HORIZONS = (5, 10, 20, 50)
"""Horizons registered on import (the paper's is 50)."""
for _horizon in COMBINATION_LOCK_HORIZONS:
    register_combination_lock(_horizon)

from policylab.core.envs import grid_worlds  # noqa: E402, F401  (registers the GridWorld-<level>-v0 ids)
