"""Gymnasium's own vector envs (sync or async) behind the `VecEnv` interface, for any registered task."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from policylab.core.envs.vector import SAME_STEP, VecEnv, check_env_seeds


class GymnasiumVecEnv(VecEnv):
    """`gymnasium.make_vec` with same-step auto-reset; `final_obs` is made a dense batch-first array."""

    seeds_each_env = True

    def __init__(
        self, env_id: str, num_envs: int, seed: int | None = None, asynchronous: bool = False, **env_kwargs: Any
    ):
        self.env_id, self.num_envs = env_id, num_envs
        self.backend = "gymnasium-async" if asynchronous else "gymnasium"
        self.env = gym.make_vec(
            env_id,
            num_envs,
            vectorization_mode="async" if asynchronous else "sync",
            vector_kwargs={"autoreset_mode": SAME_STEP},
            **env_kwargs,
        )
        self.single_observation_space = self.env.single_observation_space
        self.single_action_space = self.env.single_action_space
        self.observation_space, self.action_space = self.env.observation_space, self.env.action_space
        self._first_seed = seed

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """Reset every env; env i is seeded `seed + i`, or `seed[i]` given one seed per env (the constructor's seed
        on the first reset)."""
        if seed is None:
            seed, self._first_seed = self._first_seed, None
        if isinstance(seed, list | tuple | np.ndarray):
            seed = check_env_seeds(seed, self.num_envs)
        if seed is not None:
            self.action_space.seed(seed if isinstance(seed, int) else seed[0])
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        observations, rewards, terminated, truncated, info = self.env.step(actions)
        if "final_obs" in info:
            finished = info["_final_obs"]
            dense = np.array(observations, copy=True)
            dense[finished] = np.stack(info["final_obs"][finished])
            info["final_obs"] = dense
        return observations, rewards, terminated, truncated, info

    def close(self, **kwargs: Any) -> None:
        self.env.close(**kwargs)
