"""EnvPool's C++ vector envs behind the `VecEnv` interface (optional extra: `pip install envpool`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from policylab.core.envs.vector import VecEnv


def envpool_task_ids() -> list[str]:
    """The task ids EnvPool provides, or none when it is not installed."""
    try:
        import envpool
    except ImportError:
        return []
    return list(envpool.list_all_envs())


class EnvpoolVecEnv(VecEnv):
    """EnvPool in synchronous mode. EnvPool resets a finished env on the next step; here finished envs are reset
    within the step instead (one partial reset call), so the same-step rule holds."""

    backend = "envpool"

    def __init__(self, env_id: str, num_envs: int, seed: int | None = None, **envpool_kwargs: Any):
        self.env_id, self.num_envs, self.envpool_kwargs = env_id, num_envs, envpool_kwargs
        self.env = self._make_pool(0 if seed is None else seed)
        self.single_observation_space, self.single_action_space = self.env.observation_space, self.env.action_space
        self.observation_space = self._batch(self.single_observation_space)
        self.action_space = self._batch(self.single_action_space)

    def _make_pool(self, seed: int) -> Any:
        import envpool

        return envpool.make(self.env_id, env_type="gymnasium", num_envs=self.num_envs, seed=seed, **self.envpool_kwargs)

    def _batch(self, space: Any) -> Any:
        import gymnasium as gym

        return gym.vector.utils.batch_space(space, self.num_envs)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Reset every env; EnvPool takes its seed when a pool is made, so a `seed` makes a new pool with it."""
        if isinstance(seed, list | tuple):
            raise ValueError("EnvPool seeds a whole pool from one number: pass one int seed, not one per env")
        if seed is not None:
            self.env.close()
            self.env = self._make_pool(seed)
        return self.env.reset()

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        observations, rewards, terminated, truncated, info = self.env.step(np.asarray(actions))
        done = terminated | truncated
        if done.any():
            rows = np.flatnonzero(done)
            info["final_obs"], info["_final_obs"] = observations.copy(), done
            info["final_info"], info["_final_info"] = {key: np.copy(value) for key, value in info.items()}, done
            observations[rows], _ = self.env.reset(rows.astype(np.int32))
        return observations, rewards, terminated, truncated, info

    def close(self, **kwargs: Any) -> None:
        self.env.close()
