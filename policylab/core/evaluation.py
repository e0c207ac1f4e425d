"""Evaluate a policy on a task (per-episode returns and lengths, D4RL-normalised scores), or a whole population."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from policylab.core.data.scores import normalized_score, reference_returns
from policylab.core.envs import make_vec_env, to_numpy

Policy = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass
class EvaluationResult:
    """Returns and lengths of the evaluated episodes, with normalised scores when the task has D4RL references."""

    env_id: str
    returns: np.ndarray
    lengths: np.ndarray
    normalized_scores: np.ndarray | None = None

    @property
    def return_mean(self) -> float:
        """Mean episode return."""
        return float(np.mean(self.returns))

    @property
    def return_std(self) -> float:
        """Standard deviation of episode returns."""
        return float(np.std(self.returns))

    def metrics(self, prefix: str = "eval/") -> dict[str, float]:
        """Summary statistics for a metric logger."""
        metrics = {
            f"{prefix}return_mean": self.return_mean,
            f"{prefix}return_std": self.return_std,
            f"{prefix}length_mean": float(np.mean(self.lengths)),
        }
        if self.normalized_scores is not None:
            metrics[f"{prefix}normalized_score"] = float(np.mean(self.normalized_scores))
            metrics[f"{prefix}normalized_score_std"] = float(np.std(self.normalized_scores))
        return metrics

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary with every episode."""
        result = {"env_id": self.env_id, "episodes": len(self.returns), **self.metrics(prefix="")}
        result["returns"] = self.returns.tolist()
        result["lengths"] = self.lengths.tolist()
        if self.normalized_scores is not None:
            result["normalized_scores"] = self.normalized_scores.tolist()
        return result


def evaluate(
    policy: Any,
    env_id: str,
    episodes: int = 10,
    seed: int = 0,
    num_envs: int | None = None,
    deterministic: bool = True,
    backend: str = "auto",
) -> EvaluationResult:
    """Run `episodes` episodes of `policy` (an agent, or a function from a batch of observations to actions) on
    `make_vec_env(env_id, num_envs, backend, seed)`.

    By default every episode runs at once (`num_envs = episodes`), so results depend only on `seed`; with
    fewer envs, each env runs its episodes one after another. Observations reach the policy as numpy arrays.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    act = _as_batched_policy(policy, deterministic)
    num_envs = min(num_envs or episodes, episodes)
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    with make_vec_env(env_id, num_envs, backend=backend, seed=seed) as envs:
        _check_spaces(policy, envs.single_observation_space, env_id)
        observations, _ = envs.reset()
        episode_of_env = np.arange(num_envs)  # the episode each env is running, -1 once it has no more to run
        next_episode = num_envs
        while (episode_of_env >= 0).any():
            observations, rewards, terminated, truncated, _ = envs.step(act(to_numpy(observations)))
            running = episode_of_env >= 0
            returns[episode_of_env[running]] += to_numpy(rewards)[running]
            lengths[episode_of_env[running]] += 1
            for env_index in np.flatnonzero(running & to_numpy(terminated | truncated)):
                episode_of_env[env_index] = next_episode if next_episode < episodes else -1
                next_episode += 1
    scores = normalized_score(env_id, returns) if reference_returns(env_id) is not None else None
    return EvaluationResult(env_id, returns, lengths, None if scores is None else np.asarray(scores))


def _as_batched_policy(policy: Any, deterministic: bool) -> Policy:
    if hasattr(policy, "act"):
        return lambda observations: policy.act(observations, deterministic=deterministic)
    if callable(policy):
        return policy
    raise TypeError(f"cannot evaluate a {type(policy).__name__}: pass an agent or a function of observations")


def _check_spaces(policy: Any, observation_space: Any, env_id: str) -> None:
    space = getattr(policy, "observation_space", None)
    if space is not None and space.shape != observation_space.shape:
        raise ValueError(
            f"{env_id} gives observations of shape {observation_space.shape} but the policy expects "
            f"{space.shape}: evaluate on the task the agent was trained for"
        )
