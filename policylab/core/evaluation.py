"""Evaluate a policy on a Gymnasium task: per-episode returns and lengths, and D4RL-normalised scores."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from policylab.core.data.scores import normalized_score, reference_returns
from policylab.core.envs import make_env

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
    num_envs: int = 10,
    deterministic: bool = True,
) -> EvaluationResult:
    """Run `episodes` episodes of `policy` (an agent, or a function from a batch of observations to actions).

    Episode k is reset with seed `seed + k`, so results do not depend on `num_envs`; up to `num_envs`
    environments step together, their observations batched into one policy call.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    act = _as_batched_policy(policy, deterministic)
    envs = [make_env(env_id) for _ in range(min(num_envs, episodes))]
    _check_spaces(policy, envs[0], env_id)
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    next_episode = 0
    running: dict[int, int] = {}  # env index -> episode index
    observations: dict[int, np.ndarray] = {}
    for index, env in enumerate(envs):
        observations[index], _ = env.reset(seed=seed + next_episode)
        running[index] = next_episode
        next_episode += 1
    while running:
        active = sorted(running)
        actions = act(np.stack([observations[index] for index in active]))
        for index, action in zip(active, actions):
            observation, reward, terminated, truncated, _ = envs[index].step(action)
            episode = running[index]
            returns[episode] += float(reward)
            lengths[episode] += 1
            observations[index] = observation
            if terminated or truncated:
                if next_episode < episodes:
                    observations[index], _ = envs[index].reset(seed=seed + next_episode)
                    running[index] = next_episode
                    next_episode += 1
                else:
                    del running[index]
    for env in envs:
        env.close()
    scores = normalized_score(env_id, returns) if reference_returns(env_id) is not None else None
    return EvaluationResult(env_id, returns, lengths, None if scores is None else np.asarray(scores))


def _as_batched_policy(policy: Any, deterministic: bool) -> Policy:
    if hasattr(policy, "act"):
        return lambda observations: policy.act(observations, deterministic=deterministic)
    if callable(policy):
        return policy
    raise TypeError(f"cannot evaluate a {type(policy).__name__}: pass an agent or a function of observations")


def _check_spaces(policy: Any, env: Any, env_id: str) -> None:
    space = getattr(policy, "observation_space", None)
    if space is not None and space.shape != env.observation_space.shape:
        raise ValueError(
            f"{env_id} gives observations of shape {env.observation_space.shape} but the policy expects "
            f"{space.shape}: evaluate on the task the agent was trained for"
        )
