"""The loop every online agent shares: step the envs, train, log, evaluate, checkpoint, resume.

A method subclasses `OnlineAgent` and writes `collect_and_train(envs) -> metrics`: one iteration of
its algorithm (SAC: one vector-env step and its gradient updates; PPO: one rollout and its epochs),
stepping the envs through `step_envs`, which keeps the observations, the step count and the episode
statistics. `learn(total_timesteps)` does the rest, as Stable-Baselines3's `learn` does around `train()`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import gymnasium as gym
import torch

from policylab.core.agent import Agent, AgentConfig
from policylab.core.envs import VecEnv, make_vec_env, supported_backends, task_spaces
from policylab.core.evaluation import EvaluationResult, evaluate
from policylab.core.logging import MetricAccumulator, MetricLogger, progress_bar
from policylab.core.runs import RunDirectory


@dataclasses.dataclass
class OnlineConfig(AgentConfig):
    """Fields every online agent's config has."""

    num_envs: int = 1
    """environments stepped together (make_vec_env)"""
    backend: str = "auto"
    """make_vec_env backend of the training envs: auto, torch, warp, mujoco, envpool, gymnasium, ..."""
    clip_actions: bool = True
    """clip actions to a Box action space's bounds before the envs get them (as Stable-Baselines3 does)"""


class EnvStep(NamedTuple):
    """One vector-env step as float tensors on the agent's device.

    `final_observations` is the observation each env reached at this step: the last one of a finished
    episode (what truncation bootstraps from), otherwise equal to `next_observations`.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    final_observations: torch.Tensor
    terminations: torch.Tensor
    truncations: torch.Tensor
    dones: torch.Tensor  # 1.0 where the episode ended (terminated or truncated)


class OnlineAgent(Agent):
    """An agent that learns by acting in an environment; subclasses implement `collect_and_train`.

    Built from a task id (`SAC("Hopper-v5", SACConfig())`), a `VecEnv` to train on, or a pair of spaces
    (as checkpoints rebuild it).
    """

    config_class = OnlineConfig
    config: OnlineConfig

    def __init__(self, env: str | VecEnv | tuple[gym.Space, gym.Space], config: OnlineConfig | None = None) -> None:
        self.envs: VecEnv | None = None
        if isinstance(env, str):
            observation_space, action_space = task_spaces(env)
            self.env_id: str | None = env
        elif isinstance(env, VecEnv):
            observation_space, action_space = env.single_observation_space, env.single_action_space
            self.env_id, self.envs = env.env_id, env
        elif isinstance(env, tuple) and len(env) == 2:
            (observation_space, action_space), self.env_id = env, None
        else:
            raise TypeError(f"expected a task id, a VecEnv or (observation_space, action_space), got {type(env)}")
        if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
            raise ValueError(f"online agents take flat Box observations, got {observation_space}")
        super().__init__(observation_space, action_space, config)
        if self.config.num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {self.config.num_envs}")
        self.num_timesteps = 0
        self._action_bounds = None
        if isinstance(action_space, gym.spaces.Box) and self.config.clip_actions:
            self._action_bounds = tuple(
                torch.as_tensor(bound, dtype=torch.float32, device=self.device)
                for bound in (action_space.low, action_space.high)
            )
        self.observations: torch.Tensor | None = None  # the envs' current observations
        self._episode_returns = torch.zeros(self.config.num_envs, device=self.device)
        self._episode_lengths = torch.zeros(self.config.num_envs, device=self.device)
        self._finished = torch.zeros(3, device=self.device)  # episodes, their return sum, their length sum

    @classmethod
    def from_spaces(cls, observation_space: gym.Space, action_space: gym.Space, config: AgentConfig) -> Agent:
        return cls((observation_space, action_space), config)

    # -- what a method implements ----------------------------------------------------------------

    def setup_learning(self, total_timesteps: int) -> None:
        """Allocate what training needs (buffers, schedules) before the first iteration."""

    def collect_and_train(self, envs: VecEnv) -> dict[str, torch.Tensor]:
        """One iteration: step the envs (through `step_envs`) and update; returns metrics as tensors."""
        raise NotImplementedError

    def training_state(self) -> dict[str, Any]:
        """Method state a resumed run needs beyond modules and optimisers (plain data)."""
        return {}

    def load_training_state(self, state: dict[str, Any], run: RunDirectory) -> None:
        """Restore what `training_state` returned (and anything saved by `save_training_files`)."""

    def save_training_files(self, run: RunDirectory) -> None:
        """Write large training state (a replay buffer) beside the checkpoint, before it is saved."""

    # -- stepping ----------------------------------------------------------------------------------

    def env_actions(self, envs: VecEnv, actions: torch.Tensor) -> Any:
        """`actions` as `envs.step` takes them: clipped to the action space (when `clip_actions`), numpy for numpy
        backends."""
        clipped = actions if self._action_bounds is None else actions.clamp(*self._action_bounds)
        return clipped if envs.returns_tensors else clipped.cpu().numpy()

    def step_envs(self, envs: VecEnv, actions: torch.Tensor) -> EnvStep:
        """Apply `actions` (clipped to the action space) and advance observations, step count and episode
        statistics."""
        next_observations, rewards, terminations, truncations, info = envs.step(self.env_actions(envs, actions))
        next_observations = self._as_float(next_observations)
        rewards = self._as_float(rewards)
        terminations, truncations = self._as_float(terminations), self._as_float(truncations)
        done = torch.maximum(terminations, truncations)
        final_observations = next_observations
        if "final_obs" in info:
            finished = torch.as_tensor(info["_final_obs"], device=self.device).reshape(-1, 1)
            final_observations = torch.where(finished, self._as_float(info["final_obs"]), next_observations)
        step = EnvStep(
            self.observations, actions, rewards, next_observations, final_observations, terminations, truncations, done
        )
        self._episode_returns += rewards
        self._episode_lengths += 1
        self._finished += torch.stack(
            [done.sum(), (done * self._episode_returns).sum(), (done * self._episode_lengths).sum()]
        )
        self._episode_returns *= 1.0 - done
        self._episode_lengths *= 1.0 - done
        self.observations = next_observations
        self.num_timesteps += envs.num_envs
        return step

    def _as_float(self, values: Any) -> torch.Tensor:
        return torch.as_tensor(values, device=self.device).to(torch.float32)

    def _episode_metrics(self) -> dict[str, float]:
        """Mean return and length of the training episodes finished since the last call."""
        episodes, return_sum, length_sum = self._finished.tolist()
        self._finished.zero_()
        if episodes == 0:
            return {}
        return {"rollout/episode_return": return_sum / episodes, "rollout/episode_length": length_sum / episodes}

    # -- the loop ----------------------------------------------------------------------------------

    def make_envs(self) -> VecEnv:
        """The training envs: `config.num_envs` copies of the task on `config.backend`, seeded with `config.seed`."""
        if self.envs is None:
            if self.env_id is None:
                raise ValueError("this agent was built from spaces: pass env= (a task id or VecEnv) to learn()")
            self.envs = self.build_envs(self.config.seed)
        if self.envs.num_envs != self.config.num_envs:
            raise ValueError(f"the envs hold {self.envs.num_envs} copies but config.num_envs={self.config.num_envs}")
        return self.envs

    def build_envs(self, seed: int) -> VecEnv:
        """`config.num_envs` new copies of the agent's task on `config.backend`, seeded with `seed`."""
        cfg = self.config
        backend = supported_backends(self.env_id, self.device)[0] if cfg.backend == "auto" else cfg.backend
        # Tensor-native backends run on the agent's device; numpy ones are converted in `step_envs`, which
        # reads only what training needs (cheaper than converting every info array each step).
        device = self.device if backend in ("torch", "warp") else None
        return make_vec_env(self.env_id, cfg.num_envs, backend=backend, seed=seed, device=device)

    def learn(
        self,
        total_timesteps: int,
        eval_every: int = 10_000,
        eval_episodes: int = 10,
        log_every: int = 1000,
        checkpoint_every: int | None = None,
        run_dir: str | os.PathLike | None = None,
        resume: bool = False,
        progress: bool = True,
        env: str | VecEnv | None = None,
        callback: Callable[[OnlineAgent], None] | None = None,
    ) -> EvaluationResult | None:
        """Train until `total_timesteps` env steps in all (counting earlier `learn` calls); returns the final
        evaluation on the task (None when the agent has no task id).

        Evaluations (deterministic, `eval_episodes` episodes seeded with `config.seed + 100`) run every
        `eval_every` env steps, metrics are logged every `log_every`. With `run_dir`, the run keeps its config,
        metrics, checkpoints every `checkpoint_every` steps (default `eval_every`), final agent and evaluation
        there; `resume=True` continues a killed run from its last checkpoint. On backends that can save their
        state (torch, mujoco) the resumed run equals an uninterrupted one; elsewhere the episodes restart.
        `callback(agent)` runs after every iteration.
        """
        if isinstance(env, VecEnv) and env is not self.envs:
            self.envs, self.env_id, self.observations = env, env.env_id, None
        elif isinstance(env, str) and env != self.env_id:  # another task: new envs, new episodes
            self.envs, self.env_id, self.observations = None, env, None
        envs = self.make_envs()
        checkpoint_every = checkpoint_every or eval_every
        run = RunDirectory(run_dir) if run_dir is not None else None
        logger = MetricLogger(run.path) if run is not None else None
        settings = {
            "learn": {
                "env": self.env_id,
                "backend": envs.backend,
                "total_timesteps": total_timesteps,
                "eval_every": eval_every,
                "eval_episodes": eval_episodes,
            }
        }
        self.setup_learning(total_timesteps)
        payload = self._open_run(run, logger, settings, resume) if run is not None else None
        if payload is not None:
            self._restore_training(envs, payload["training"], run)
        elif self.observations is None:
            observations, _ = envs.reset(seed=self.config.seed)
            self.observations = self._as_float(observations)

        accumulator = MetricAccumulator()
        result: EvaluationResult | None = None
        started, steps_at_start = time.perf_counter(), self.num_timesteps
        with progress_bar(total_timesteps, self.num_timesteps, type(self).__name__, enabled=progress) as bar:
            while self.num_timesteps < total_timesteps:
                before = self.num_timesteps
                accumulator.add(self.collect_and_train(envs))
                if callback is not None:
                    callback(self)
                done = self.num_timesteps >= total_timesteps
                metrics: dict[str, float] = {}
                if _crossed(before, self.num_timesteps, log_every) or done:
                    metrics.update(accumulator.means())
                    metrics.update(self._episode_metrics())
                    elapsed = time.perf_counter() - started
                    metrics["time/env_steps_per_second"] = (self.num_timesteps - steps_at_start) / max(elapsed, 1e-9)
                if self.env_id is not None and (_crossed(before, self.num_timesteps, eval_every) or done):
                    result = self.evaluate(self.env_id, eval_episodes)
                    metrics.update(result.metrics())
                    bar.set_postfix(eval_return=f"{result.return_mean:.1f}")
                if logger is not None and metrics:
                    logger.log(self.num_timesteps, metrics)
                if run is not None and (_crossed(before, self.num_timesteps, checkpoint_every) or done):
                    self._save_training_checkpoint(run, envs)
                bar.update(self.num_timesteps - before)
        if run is not None:
            self._finish_run(run, logger, result)
        return result

    def evaluate(self, env_id: str, episodes: int = 10) -> EvaluationResult:
        """Deterministic evaluation on `episodes` episodes seeded with `config.seed + 100`."""
        return evaluate(self, env_id, episodes=episodes, seed=self.config.seed + 100)

    # -- state -------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["num_timesteps"] = self.num_timesteps
        state["env_id"] = self.env_id or ""
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.num_timesteps = int(state.pop("num_timesteps"))
        self.env_id = state.pop("env_id") or self.env_id
        super().load_state_dict(state)

    def _save_training_checkpoint(self, run: RunDirectory, envs: VecEnv) -> None:
        self.save_training_files(run)
        training = {
            "envs": envs.state_dict(),
            "observations": self.observations,
            "episode_returns": self._episode_returns,
            "episode_lengths": self._episode_lengths,
            "method": self.training_state(),
        }
        self._save_run_checkpoint(run, self.num_timesteps, training)

    def _restore_training(self, envs: VecEnv, training: dict[str, Any], run: RunDirectory) -> None:
        self.load_training_state(training["method"], run)
        if training["envs"] is not None:
            envs.load_state_dict(training["envs"])
            self.observations = training["observations"].to(self.device)
            self._episode_returns.copy_(training["episode_returns"])
            self._episode_lengths.copy_(training["episode_lengths"])
        else:  # the backend cannot restore its episodes: start new ones
            observations, _ = envs.reset(seed=self.config.seed + self.num_timesteps)
            self.observations = self._as_float(observations)


def _crossed(before: int, after: int, every: int) -> bool:
    """Whether a multiple of `every` lies in (before, after]."""
    return after // every > before // every
