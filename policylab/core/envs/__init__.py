"""Environment construction: single Gymnasium envs (`make_env`) and batched envs over several engines
(`make_vec_env`), all keeping one same-step auto-reset rule (see `policylab.core.envs.vector`)."""

from __future__ import annotations

import difflib
from typing import Any

import gymnasium as gym
import torch

from policylab.core.envs.vector import TorchArrays, VecEnv, VecEnvWrapper, to_numpy, to_torch

BACKENDS = ("auto", "torch", "warp", "mujoco", "atari", "envpool", "gymnasium", "gymnasium-async")

__all__ = [
    "BACKENDS",
    "TorchArrays",
    "VecEnv",
    "VecEnvWrapper",
    "fixed_horizon",
    "make_env",
    "make_vec_env",
    "supported_backends",
    "task_spaces",
    "to_numpy",
    "to_torch",
]


def make_env(env_id: str, seed: int | None = None, **kwargs: Any) -> gym.Env:
    """A Gymnasium environment by id, reset once with `seed` when given; unknown ids get close matches."""
    _check_known(env_id)
    if env_id not in gym.registry:
        raise ValueError(
            f"{env_id} is a torch-native task without a single-env Gymnasium version: "
            f"use make_vec_env({env_id!r}, num_envs, backend='torch')"
        )
    env = gym.make(env_id, **kwargs)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def task_spaces(env_id: str) -> tuple[gym.Space, gym.Space]:
    """The (observation, action) spaces of one env of a task, torch-native tasks included."""
    from policylab.core.envs.torch_envs import TORCH_TASKS

    _check_known(env_id)
    if env_id in TORCH_TASKS:
        task = TORCH_TASKS[env_id]
        return task.single_observation_space, task.single_action_space
    probe = gym.make(env_id)
    spaces = probe.observation_space, probe.action_space
    probe.close()
    return spaces


def fixed_horizon(env_id: str) -> int | None:
    """The episode length of a task whose every episode lasts exactly that many steps (the combination lock), else
    None."""
    from policylab.core.envs.torch_envs import TORCH_TASKS

    task = TORCH_TASKS.get(env_id)
    return task.max_episode_steps if task is not None and task.fixed_horizon else None


def supported_backends(env_id: str, device: str | torch.device | None = None) -> list[str]:
    """The backends that can run `env_id` here, fastest first (the first is what `backend="auto"` picks)."""
    from policylab.core.envs.atari import atari_games
    from policylab.core.envs.envpool_vec import envpool_task_ids
    from policylab.core.envs.mujoco_engine import LOCOMOTION_TASKS
    from policylab.core.envs.torch_envs import TORCH_TASKS

    backends = []
    if env_id in TORCH_TASKS:
        backends.append("torch")
    if env_id in LOCOMOTION_TASKS:
        if _is_cuda(device) and _warp_installed():
            backends.append("warp")
        backends.append("mujoco")
    if env_id.startswith("ALE/") and env_id in atari_games():
        backends.append("atari")
    if env_id in envpool_task_ids():
        backends.append("envpool")
    if env_id in gym.registry:
        backends += ["gymnasium", "gymnasium-async"]
    return backends


def make_vec_env(
    env_id: str,
    num_envs: int,
    backend: str = "auto",
    seed: int | None = None,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> VecEnv:
    """`num_envs` copies of task `env_id` stepped as one batch.

    Backends: "mujoco" (the library's batched MuJoCo engine for the v5 locomotion tasks), "warp" (the same tasks
    on a CUDA GPU through MuJoCo Warp), "torch" (torch-native tasks on CPU or GPU), "atari" (`ALE/*` games with
    the DQN preprocessing, when ale-py is installed), "envpool" (when installed),
    "gymnasium" / "gymnasium-async" (Gymnasium's vector envs, any task); "auto" picks the fastest that runs the
    task (see `supported_backends`). Arrays are numpy for the CPU engines and torch tensors for "torch" and
    "warp"; with `device` set, every backend returns torch tensors on that device. Other keyword arguments go to
    the backend (e.g. `physics="mjdata"` for "mujoco", task arguments for "gymnasium").
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be at least 1, got {num_envs}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    _check_known(env_id)
    available = supported_backends(env_id, device)
    if backend == "auto":
        backend = available[0]
    elif backend not in available:
        raise ValueError(_unsupported_message(env_id, backend, available))

    if backend == "torch":
        from policylab.core.envs.torch_envs import TORCH_TASKS

        return TORCH_TASKS[env_id](num_envs, device=device or "cpu", seed=seed, **kwargs)
    if backend == "warp":
        from policylab.core.envs.warp_engine import WarpVecEnv

        return WarpVecEnv(env_id, num_envs, seed=seed, device=device or "cuda", **kwargs)
    if backend == "mujoco":
        from policylab.core.envs.mujoco_engine import MujocoVecEnv

        env = MujocoVecEnv(env_id, num_envs, seed=seed, **kwargs)
    elif backend == "atari":
        from policylab.core.envs.atari import AtariVecEnv

        env = AtariVecEnv(env_id, num_envs, seed=seed, **kwargs)
    elif backend == "envpool":
        from policylab.core.envs.envpool_vec import EnvpoolVecEnv

        env = EnvpoolVecEnv(env_id, num_envs, seed=seed, **kwargs)
    else:
        from policylab.core.envs.gymnasium_vec import GymnasiumVecEnv

        env = GymnasiumVecEnv(env_id, num_envs, seed=seed, asynchronous=backend == "gymnasium-async", **kwargs)
    return env if device is None else TorchArrays(env, device)


def _check_known(env_id: str) -> None:
    from policylab.core.envs.atari import atari_games
    from policylab.core.envs.torch_envs import TORCH_TASKS

    if env_id.startswith("ALE/") and not atari_games():
        raise ValueError(f"{env_id} is an Atari game: install ale-py (pip install 'policylab[atari]')")

    if env_id not in gym.registry and env_id not in TORCH_TASKS:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else " See `gymnasium.pprint_registry()` for the ids."
        raise ValueError(f"unknown environment id {env_id!r}.{hint}")


def _unsupported_message(env_id: str, backend: str, available: list[str]) -> str:
    from policylab.core.envs.mujoco_engine import LOCOMOTION_TASKS
    from policylab.core.envs.torch_envs import TORCH_TASKS

    tasks = {"torch": list(TORCH_TASKS), "mujoco": list(LOCOMOTION_TASKS), "warp": list(LOCOMOTION_TASKS)}
    if backend == "warp" and env_id in LOCOMOTION_TASKS:
        reason = "it needs a CUDA device (device='cuda') and MuJoCo Warp (`pip install mujoco-warp`)"
    elif backend == "envpool":
        reason = "EnvPool is not installed (`pip install envpool`) or has no such task"
    elif backend in tasks:
        reason = f"it runs {', '.join(tasks[backend])}"
    else:
        reason = "it runs the ids registered with Gymnasium"
    return f"backend {backend!r} cannot run {env_id!r}: {reason}. Backends for {env_id!r}: {', '.join(available)}"


def _is_cuda(device: str | torch.device | None) -> bool:
    return device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available()


def _warp_installed() -> bool:
    try:
        import mujoco_warp  # noqa: F401
    except ImportError:
        return False
    return True
