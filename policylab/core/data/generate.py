"""Datasets the library makes itself (`gen/<name>` ids), since none can be downloaded here.

`GENERATED_DATASETS` maps each scripted dataset's name to the function that makes it; the MuJoCo datasets
`<family>-<kind>-v0` roll out the shipped behaviour policies (`policylab.core.data.behaviour`). `make_dataset`
writes the file where `load_dataset("gen/<name>")` finds it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policylab.core.data.behaviour import DATASET_KINDS, behaviour_tasks, make_behaviour_dataset, parse_dataset_name
from policylab.core.data.dataset import OfflineDataset
from policylab.core.data.registry import GENERATED_PREFIX, dataset_path, generated_dataset_dir
from policylab.core.data.scores import GYMNASIUM_ENV_IDS
from policylab.core.envs import make_env, make_vec_env
from policylab.core.envs.torch_envs import COMBINATION_LOCK_HORIZONS, register_combination_lock

BatchPolicy = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def collect_episodes(env_id: str, policy: BatchPolicy, episodes: int, seed: int = 0) -> OfflineDataset:
    """Roll `policy(observations, rng)` out for whole episodes (episode k reset with `seed + k`) into a dataset.

    `next_observations` holds the true last observation of each episode; a time-limit end is a
    timeout, an environment end a terminal, as in D4RL's layout.
    """
    env = make_env(env_id)
    rng = np.random.default_rng(seed)
    columns: dict[str, list] = {key: [] for key in ("observations", "actions", "rewards", "next_observations")}
    terminals: list[bool] = []
    timeouts: list[bool] = []
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed + episode)
        done = False
        while not done:
            action = np.asarray(policy(observation[None], rng)[0], dtype=np.float32)
            next_observation, reward, terminated, truncated, _ = env.step(action)
            for key, value in zip(columns, (observation, action, reward, next_observation)):
                columns[key].append(value)
            terminals.append(bool(terminated))
            timeouts.append(bool(truncated and not terminated))
            observation, done = next_observation, terminated or truncated
    env.close()
    return OfflineDataset(
        observations=np.asarray(columns["observations"], dtype=np.float32),
        actions=np.asarray(columns["actions"], dtype=np.float32),
        rewards=np.asarray(columns["rewards"], dtype=np.float32),
        next_observations=np.asarray(columns["next_observations"], dtype=np.float32),
        terminals=np.asarray(terminals),
        timeouts=np.asarray(timeouts),
        env_id=env_id,
    )


def pendulum_swing_up(observations: np.ndarray) -> np.ndarray:
    """A scripted Pendulum-v1 expert: pump energy up to the upright level, then balance with a PD law.

    With θ measured from upright, the energy E = θ̇²/2 + 15·cos θ (15 = 3g/2l) is 15 at rest upright
    and dE/dt ∝ θ̇·u, so u ∝ (15 − E)·θ̇ swings the pendulum up. Mean return ≈ −133 (random ≈ −1180).
    """
    cos_theta, sin_theta, theta_dot = observations[:, 0], observations[:, 1], observations[:, 2]
    theta = np.arctan2(sin_theta, cos_theta)
    energy = 0.5 * theta_dot**2 + 15.0 * cos_theta
    pump = np.where(np.abs(theta_dot) < 1e-3, 2.0, 2.0 * (15.0 - energy) * theta_dot)
    balance = -(10.0 * theta + 2.0 * theta_dot)
    return np.clip(np.where(cos_theta > 0.85, balance, pump), -2.0, 2.0)[:, None]


def make_pendulum_scripted(episodes: int = 100, seed: int = 0) -> OfflineDataset:
    """`gen/pendulum-scripted-v0`: the scripted swing-up expert with Gaussian noise (std 0.5) and 10% random actions."""

    def noisy_expert(observations: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        actions = pendulum_swing_up(observations) + 0.5 * rng.standard_normal((len(observations), 1))
        random_actions = rng.uniform(-2.0, 2.0, size=actions.shape)
        return np.clip(np.where(rng.random(actions.shape) < 0.1, random_actions, actions), -2.0, 2.0)

    dataset = collect_episodes("Pendulum-v1", noisy_expert, episodes, seed)
    dataset.dataset_id = "gen/pendulum-scripted-v0"
    dataset.metadata["policy"] = np.bytes_("scripted energy-pumping swing-up + PD balance, noise std 0.5, 10% random")
    return dataset


COMBINATION_LOCK_DATASET = re.compile(r"combination-lock-h(?P<horizon>\d+)-v0(?:-(?P<episodes>\d+)ep)?")
COMBINATION_LOCK_EPISODES = 50_000
"""Episodes of the paper's offline data."""


def combination_lock_dataset_id(horizon: int, episodes: int | None = None) -> str:
    """The `gen/` id of the combination lock's offline data (the paper's 50,000 episodes unless `episodes`)."""
    suffix = "" if episodes is None or episodes == COMBINATION_LOCK_EPISODES else f"-{episodes}ep"
    return f"{GENERATED_PREFIX}combination-lock-h{horizon}-v0{suffix}"


@torch.no_grad()
def make_combination_lock_dataset(
    horizon: int, episodes: int = COMBINATION_LOCK_EPISODES, epsilon: float | None = None, seed: int = 0
) -> OfflineDataset:
    """`gen/combination-lock-h<H>-v0[-<N>ep]`: HNPG's offline data on `CombinationLock-H<H>-v0`, episodes of the
    optimal policy (the one-hot action of the right choice) that takes a uniformly random action in [0, 1]^10 with
    probability `epsilon` (default 1/H) at each step. Rolled out on the torch backend, 10,000 episodes at a time;
    `infos/latent_state` (0 = A, 1 = B, 2 = dead) and `infos/step` record where each transition started."""
    env_id = register_combination_lock(horizon)
    epsilon = 1.0 / horizon if epsilon is None else epsilon
    generator = torch.Generator().manual_seed(seed)
    parts = []
    for first in range(0, episodes, 10_000):
        count = min(10_000, episodes - first)
        env = make_vec_env(env_id, count, backend="torch", seed=seed + first)
        observations, _ = env.reset()
        columns: dict[str, list[torch.Tensor]] = {key: [] for key in ("obs", "act", "rew", "next", "term", "trunc")}
        columns |= {"latent_state": [], "step": []}
        for _ in range(horizon):
            latent_states, steps = env.state.unbind(-1)
            explore = torch.rand(count, 1, generator=generator) < epsilon
            actions = torch.where(explore, torch.rand(count, 10, generator=generator), env.optimal_actions())
            next_observations, rewards, terminated, truncated, info = env.step(actions)
            step_columns = (observations, actions, rewards, info["final_obs"], terminated, truncated & ~terminated)
            for key, value in zip(columns, (*step_columns, latent_states, steps)):
                columns[key].append(value)
            observations = next_observations
        # Episode by episode ([envs, time] order), as D4RL stores them.
        arrays = {key: torch.stack(values, dim=1).flatten(0, 1).numpy() for key, values in columns.items()}
        infos = {key: arrays.pop(key) for key in ("latent_state", "step")}
        parts.append(OfflineDataset(*arrays.values(), infos=infos, env_id=env_id))
    dataset = OfflineDataset.concatenate(parts)
    dataset.dataset_id = combination_lock_dataset_id(horizon, episodes)
    dataset.metadata["policy"] = np.bytes_(f"optimal one-hot actions, uniformly random with probability {epsilon:g}")
    dataset.metadata["seed"] = seed
    return dataset


GENERATED_DATASETS: dict[str, Callable[[], OfflineDataset]] = {
    "pendulum-scripted-v0": make_pendulum_scripted,
}


def can_make(dataset_id: str) -> bool:
    """Whether `make_dataset` knows how to make this `gen/` id (behaviour datasets: if the family's policies ship)."""
    name = dataset_id.removeprefix(GENERATED_PREFIX)
    spec = parse_dataset_name(name)
    makeable = name in GENERATED_DATASETS or COMBINATION_LOCK_DATASET.fullmatch(name) is not None
    return makeable or (spec is not None and spec.task in behaviour_tasks())


def makeable_datasets() -> list[str]:
    """Every `gen/` id this installation can make at its default size and seed."""
    shipped = behaviour_tasks()
    behaviour = [
        f"{GENERATED_PREFIX}{family}-{kind}-v0"
        for family, task in GYMNASIUM_ENV_IDS.items()
        if task in shipped
        for kind in DATASET_KINDS
    ]
    locks = [combination_lock_dataset_id(horizon) for horizon in COMBINATION_LOCK_HORIZONS]
    return [GENERATED_PREFIX + name for name in GENERATED_DATASETS] + behaviour + locks


def make_dataset(dataset_id: str, overwrite: bool = False, progress: bool = True) -> Path:
    """Make the generated dataset `gen/<name>` and write it (atomically) where `load_dataset` looks; returns the
    path. An existing file is kept unless `overwrite`."""
    name = dataset_id.removeprefix(GENERATED_PREFIX)
    spec = parse_dataset_name(name)
    lock = COMBINATION_LOCK_DATASET.fullmatch(name)
    if name not in GENERATED_DATASETS and spec is None and lock is None:
        raise ValueError(f"no generator for {dataset_id!r}; this installation makes: {', '.join(makeable_datasets())}")
    if spec is not None:
        name = spec.name  # canonical: hopper-medium-v0-100000 and hopper-medium-v0-100k are one file
    path = dataset_path(GENERATED_PREFIX + name)
    if path.exists() and not overwrite:
        return path
    if lock is not None:
        episodes = int(lock["episodes"] or COMBINATION_LOCK_EPISODES)
        dataset = make_combination_lock_dataset(int(lock["horizon"]), episodes)
    elif spec is None:
        dataset = GENERATED_DATASETS[name]()
    else:
        dataset = make_behaviour_dataset(name, progress=progress)
    dataset.save(path)
    return path


def dataset_id_with_options(dataset_id: str, size: int | None = None, seed: int | None = None) -> str:
    """The canonical id of a behaviour dataset with `size` and `seed` set (None keeps the id's own)."""
    spec = parse_dataset_name(dataset_id.removeprefix(GENERATED_PREFIX))
    if spec is None:
        if size is not None or seed is not None:
            raise ValueError(f"--size and --seed apply to the MuJoCo behaviour datasets, not to {dataset_id}")
        return dataset_id
    if size is not None and size < 1:
        raise ValueError(f"size must be at least 1 transition, got {size}")
    spec = dataclasses.replace(spec, size=spec.size if size is None else size, seed=spec.seed if seed is None else seed)
    return GENERATED_PREFIX + spec.name


def cache_listing() -> dict[str, Any]:
    """The cache folder, the generated files in it (with sizes in MB) and the ids that can be made."""
    folder = generated_dataset_dir()
    files = sorted(folder.glob("*.hdf5")) if folder.is_dir() else []
    return {
        "cache": str(folder),
        "cached": {GENERATED_PREFIX + path.stem: round(path.stat().st_size / 2**20, 1) for path in files},
        "makeable": makeable_datasets(),
    }
