"""Atari games through ale-py's C++ vector env, with the DQN preprocessing (optional extra: `pip install ale-py`).

Observations are the last 4 frames, grey, 84×84, uint8 (`[num_envs, 4, 84, 84]`); each action is repeated for
4 frames (the last two max-pooled); episodes start with up to 30 random no-ops; rewards are the game's own
(not clipped) and an episode is the whole game (not one life), as population methods score it. Sticky actions
follow the id's own setting (`ALE/*-v5`: repeat probability 0.25; pass `repeat_action_probability=0.0` for the
deterministic ALE of the Deep GA paper). Env i of a batch reset with seed s runs on seed s + i alone.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from policylab.core.envs.vector import VecEnv, check_env_seeds

FRAME_SKIP = 4


def atari_games() -> dict[str, str]:
    """Task id → ROM name of every ALE game Gymnasium knows, or nothing when ale-py is not installed."""
    try:
        import ale_py
    except ImportError:
        return {}
    gym.register_envs(ale_py)
    return {
        env_id: spec.kwargs["game"]
        for env_id, spec in gym.registry.items()
        if env_id.startswith("ALE/") and spec.kwargs.get("obs_type", "rgb") == "rgb" and "game" in spec.kwargs
    }


class AtariVecEnv(VecEnv):
    """`num_envs` copies of an ALE game stepped by ale-py's threads, same-step auto-reset."""

    backend = "atari"
    seeds_each_env = True

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        seed: int | None = None,
        max_episode_steps: int | None = None,
        repeat_action_probability: float | None = None,
        num_threads: int = 0,
    ):
        games = atari_games()
        if env_id not in games:
            raise ValueError(f"the atari backend has no game {env_id!r} (is ale-py installed? pip install ale-py)")
        from ale_py.vector_env import AtariVectorEnv

        spec = gym.spec(env_id)
        frames = spec.kwargs.get("max_num_frames_per_episode", 108_000)
        self.env_id, self.num_envs = env_id, num_envs
        self.max_episode_steps = max_episode_steps or frames // FRAME_SKIP
        sticky = spec.kwargs.get("repeat_action_probability", 0.0)
        self.env = AtariVectorEnv(
            games[env_id],
            num_envs,
            num_threads=num_threads,
            max_num_frames_per_episode=self.max_episode_steps * FRAME_SKIP,
            repeat_action_probability=sticky if repeat_action_probability is None else repeat_action_probability,
            autoreset_mode="SameStep",
            frameskip=FRAME_SKIP,
            reward_clipping=False,
            episodic_life=False,
        )
        self.single_observation_space, self.single_action_space = (
            self.env.single_observation_space,
            self.env.single_action_space,
        )
        self.observation_space, self.action_space = self.env.observation_space, self.env.action_space
        self._seed = seed

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        """Start a new game in every env. ale-py seeds env i with s + i: a list of seeds must count up by one."""
        if isinstance(seed, list | tuple | np.ndarray):
            seeds = check_env_seeds(seed, self.num_envs)
            if seeds != list(range(seeds[0], seeds[0] + self.num_envs)):
                raise ValueError("the atari backend seeds env i with s + i: pass consecutive seeds s, s + 1, ...")
            seed = seeds[0]
        seed = self._seed if seed is None else seed
        self._seed = None
        return self.env.reset(seed=seed)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.asarray(actions)
        if actions.shape != self.action_space.shape:
            raise ValueError(f"expected actions of shape {self.action_space.shape}, got {actions.shape}")
        observations, rewards, terminated, truncated, info = self.env.step(actions.astype(np.int64))
        done = terminated | truncated
        if done.any():
            info["_final_obs"] = info["_final_info"] = done
            info["final_info"] = {
                key: value.copy() for key, value in info.items() if not key.startswith(("final", "_"))
            }
        return observations, rewards.astype(np.float32), terminated, truncated, info

    def close(self, **kwargs: Any) -> None:
        self.env.close()
