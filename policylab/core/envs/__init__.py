"""Environment construction. The batched engines (`make_vec_env`) join here with the rollouts issue."""

from __future__ import annotations

import difflib
from typing import Any

import gymnasium as gym


def make_env(env_id: str, seed: int | None = None, **kwargs: Any) -> gym.Env:
    """A Gymnasium environment by id, reset once with `seed` when given; unknown ids get close matches."""
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else " See `gymnasium.pprint_registry()` for the ids."
        raise ValueError(f"unknown environment id {env_id!r}.{hint}")
    env = gym.make(env_id, **kwargs)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env
