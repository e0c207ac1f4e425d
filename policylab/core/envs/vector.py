"""The batched environment interface every backend of `make_vec_env` returns.

Auto-reset rule, kept by every backend (Gymnasium 1.x `AutoresetMode.SAME_STEP`): when an env's episode
ends at a step, that env is reset within the same step. The returned observation is the first one of
the new episode; the finished episode's last observation is in `info["final_obs"]` (a dense batch-first
array, valid where `info["_final_obs"]` is true) and its last info in `info["final_info"]` (valid where
`info["_final_info"]` is true). Training code bootstraps from `final_obs` on truncation, never on
termination.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

SAME_STEP = AutoresetMode.SAME_STEP


class VecEnv(gym.vector.VectorEnv):
    """A batch of `num_envs` environments stepped together, with same-step auto-reset.

    Subclasses set `env_id`, `backend`, `num_envs`, `single_observation_space`, `single_action_space`,
    `observation_space` and `action_space`, and implement `reset` and `step`.
    """

    metadata: dict[str, Any] = {"autoreset_mode": SAME_STEP}
    env_id: str
    backend: str
    returns_tensors: bool = False
    """whether observations, rewards and flags come back as torch tensors (else numpy arrays)"""
    seeds_each_env: bool = False
    """whether `reset(seed=[s_0, ..., s_n-1])` starts env i from the initial state of seed s_i alone, whatever the
    batch (so a slice of a batch equals a smaller batch reset with the slice's seeds)"""

    def __enter__(self) -> VecEnv:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.env_id!r}, num_envs={self.num_envs}, backend={self.backend!r})"

    def state_dict(self) -> dict[str, Any] | None:
        """Everything the envs need to continue exactly where they are (episode states, step counts, random
        generator), as plain data; None when the backend cannot capture it (a resumed run then restarts the
        episodes)."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from what `state_dict` returned."""
        raise NotImplementedError(f"the {self.backend} backend cannot restore its state")


def check_env_seeds(seeds: Any, num_envs: int) -> list[int]:
    """A list of one integer seed per env, or a clear error."""
    seeds = [int(seed) for seed in seeds]
    if len(seeds) != num_envs:
        raise ValueError(f"reset got {len(seeds)} seeds for {num_envs} envs: pass one seed per env, or one int")
    return seeds


def to_numpy(array: Any) -> np.ndarray:
    """A numpy view of a torch tensor (moved to the CPU) or of any array-like."""
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def to_torch(tree: Any, device: torch.device) -> Any:
    """Numeric numpy arrays in a (nested dict of) arrays as tensors on `device`; other values unchanged."""
    if isinstance(tree, dict):
        return {key: to_torch(value, device) for key, value in tree.items()}
    if isinstance(tree, np.ndarray) and tree.dtype != object:
        return torch.from_numpy(np.ascontiguousarray(tree)).to(device)
    return tree


class VecEnvWrapper(VecEnv):
    """A `VecEnv` that passes everything through to `env`; subclasses override what they change."""

    def __init__(self, env: VecEnv):
        self.env = env
        self.env_id, self.backend, self.num_envs = env.env_id, env.backend, env.num_envs
        self.single_observation_space, self.single_action_space = env.single_observation_space, env.single_action_space
        self.observation_space, self.action_space = env.observation_space, env.action_space
        self.metadata = env.metadata
        self.returns_tensors, self.seeds_each_env = env.returns_tensors, env.seeds_each_env

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict]:
        return self.env.step(actions)

    def close(self, **kwargs: Any) -> None:
        self.env.close(**kwargs)

    def state_dict(self) -> dict[str, Any] | None:
        return self.env.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env.load_state_dict(state)

    @property
    def unwrapped(self) -> VecEnv:
        return self.env.unwrapped


class TorchArrays(VecEnvWrapper):
    """Wraps a numpy-backed `VecEnv` so observations, rewards, flags and info arrays are torch tensors on
    `device`; actions may be tensors or arrays."""

    def __init__(self, env: VecEnv, device: str | torch.device):
        super().__init__(env)
        self.device = torch.device(device)
        self.returns_tensors = True

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        observations, info = self.env.reset(seed=seed, options=options)
        return to_torch(observations, self.device), to_torch(info, self.device)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict]:
        results = self.env.step(to_numpy(actions))
        return tuple(to_torch(value, self.device) for value in results)
