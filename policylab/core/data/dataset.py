"""The in-memory offline dataset: transition arrays, their checks, episodes and statistics."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

FLOAT_KEYS = ("observations", "actions", "rewards", "next_observations")
FLAG_KEYS = ("terminals", "timeouts")
TRANSITION_KEYS = FLOAT_KEYS + FLAG_KEYS


class DatasetError(ValueError):
    """A dataset that cannot be loaded or is malformed; the message says what is wrong and how to fix it."""


class DatasetNotFoundError(DatasetError):
    """A dataset file that is not on disk; the message names the path looked at and how to get the file."""


@dataclass(frozen=True)
class Episode:
    """One episode of a dataset: transitions `start` (inclusive) to `stop` (exclusive)."""

    start: int
    stop: int
    episode_return: float
    terminated: bool
    truncated: bool

    @property
    def length(self) -> int:
        """Number of transitions in the episode."""
        return self.stop - self.start


def as_float32(key: str, values: Any) -> np.ndarray:
    """Returns `values` as a float32 array; integers, bools and other floats are converted."""
    array = np.asarray(values)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise DatasetError(f"{key} has dtype {array.dtype}: pass real numbers (float32 preferred)")
    return array.astype(np.float32, copy=False)


def as_flags(key: str, values: Any) -> np.ndarray:
    """Returns `values` as a bool array; only bools and the numbers 0 and 1 are accepted."""
    array = np.asarray(values)
    if array.dtype == bool:
        return array
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise DatasetError(f"{key} has dtype {array.dtype}: pass a bool array (or 0/1 numbers)")
    not_binary = np.flatnonzero((array != 0) & (array != 1))
    if not_binary.size:
        index = np.unravel_index(not_binary[0], array.shape)
        raise DatasetError(
            f"{key}[{', '.join(map(str, index))}] is {array[index]}: flags must be 0/1 or bool; "
            "fix the value where the dataset was made"
        )
    return array.astype(bool)


def first_non_finite(key: str, array: np.ndarray) -> str | None:
    """Describes the first nan/inf entry of `array`, or returns None when all are finite."""
    bad = np.flatnonzero(~np.isfinite(array))
    if not bad.size:
        return None
    index = np.unravel_index(bad[0], array.shape)
    value = array[index]
    where = f"{key}[{index[0]}]" if array.ndim == 1 else f"{key}[{index[0]}] (column {index[1]})"
    return f"{where} is {value}: remove or repair that transition before building the dataset"


@dataclass(eq=False)
class OfflineDataset:
    """Transitions of a fixed dataset in D4RL's layout, checked on construction."""

    observations: np.ndarray  # [N, obs_dim] float32
    actions: np.ndarray  # [N, act_dim] float32
    rewards: np.ndarray  # [N] float32
    next_observations: np.ndarray  # [N, obs_dim] float32
    terminals: np.ndarray  # [N] bool: the environment ended the episode (no bootstrap)
    timeouts: np.ndarray  # [N] bool: a time limit cut the episode (bootstrap)
    # The file's `infos/` group, one row per transition, keyed by path inside the group ("qpos", "a/b").
    infos: dict[str, np.ndarray] = field(default_factory=dict)
    # The file's `metadata/` group keyed the same way; values as h5py returns them (str comes back as bytes).
    metadata: dict[str, Any] = field(default_factory=dict)
    # Any other datasets of the file, kept so that saving writes them back.
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    env_id: str | None = None  # Gymnasium id to evaluate on, e.g. "Hopper-v5"
    dataset_id: str | None = None  # e.g. "d4rl/hopper-medium-v2", "gen/hopper-medium-v0"

    def __post_init__(self) -> None:
        for key in FLOAT_KEYS:
            setattr(self, key, as_float32(key, getattr(self, key)))
        for key in FLAG_KEYS:
            setattr(self, key, as_flags(key, getattr(self, key)))
        self.infos = {key: np.asarray(value) for key, value in self.infos.items()}
        self.validate()

    def validate(self) -> None:
        """Checks shapes, lengths, finiteness and flags; raises DatasetError naming the first bad entry."""
        for key, ndim, shape in (
            ("observations", 2, "[N, obs_dim]"),
            ("actions", 2, "[N, act_dim]"),
            ("next_observations", 2, "[N, obs_dim]"),
            ("rewards", 1, "[N]"),
            ("terminals", 1, "[N]"),
            ("timeouts", 1, "[N]"),
        ):
            array = getattr(self, key)
            if array.ndim != ndim:
                raise DatasetError(f"{key} has shape {array.shape}: it must be {shape}; reshape it")
        n = len(self.observations)
        if n == 0:
            raise DatasetError("the dataset has no transitions: pass arrays with at least one row")
        for key in TRANSITION_KEYS[1:]:
            if len(getattr(self, key)) != n:
                raise DatasetError(
                    f"{key} has {len(getattr(self, key))} rows but observations has {n}: "
                    "every array needs one row per transition"
                )
        if self.next_observations.shape != self.observations.shape:
            raise DatasetError(
                f"next_observations has shape {self.next_observations.shape} but observations has "
                f"{self.observations.shape}: they must match"
            )
        for key, value in self.infos.items():
            if value.ndim == 0 or len(value) != n:
                raise DatasetError(
                    f"infos/{key} has shape {value.shape} but the dataset has {n} transitions: "
                    "infos hold one row per transition; move other data to metadata"
                )
        for key in FLOAT_KEYS:
            problem = first_non_finite(key, getattr(self, key))
            if problem:
                raise DatasetError(problem)
        both = np.flatnonzero(self.terminals & self.timeouts)
        if both.size:
            raise DatasetError(
                f"terminals[{both[0]}] and timeouts[{both[0]}] are both set: a step either ends the "
                "episode for real (terminal) or is cut by a time limit (timeout); keep one"
            )

    def __len__(self) -> int:
        """Number of transitions."""
        return len(self.observations)

    @property
    def observation_dim(self) -> int:
        """Size of one observation."""
        return self.observations.shape[1]

    @property
    def action_dim(self) -> int:
        """Size of one action."""
        return self.actions.shape[1]

    def _episode_bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Start index, stop index and return (float64) of every episode."""
        stops = np.flatnonzero(self.terminals | self.timeouts) + 1
        if not stops.size or stops[-1] != len(self):
            stops = np.append(stops, len(self))
        starts = np.concatenate(([0], stops[:-1]))
        returns = np.add.reduceat(self.rewards.astype(np.float64), starts)
        return starts, stops, returns

    def episodes(self) -> list[Episode]:
        """Splits the transitions after every terminal or timeout; an unfinished tail is an episode too."""
        starts, stops, returns = self._episode_bounds()
        return [
            Episode(
                start=int(start),
                stop=int(stop),
                episode_return=float(episode_return),
                terminated=bool(self.terminals[stop - 1]),
                truncated=bool(self.timeouts[stop - 1]),
            )
            for start, stop, episode_return in zip(starts, stops, returns, strict=True)
        ]

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every episode, in order (float64)."""
        return self._episode_bounds()[2]

    def state_statistics(self, eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation (+ eps) of the observations, float32 of shape [obs_dim]."""
        mean = self.observations.mean(axis=0, dtype=np.float64)
        std = self.observations.std(axis=0, dtype=np.float64) + eps
        return mean.astype(np.float32), std.astype(np.float32)

    def as_tensors(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """The transition arrays as float32 tensors on `device` (flags as 0/1), one transfer per array."""
        import torch

        return {key: torch.from_numpy(getattr(self, key)).to(device).float() for key in TRANSITION_KEYS}

    def save(self, path: str | os.PathLike) -> None:
        """Writes the dataset to `path` in D4RL's HDF5 layout, atomically."""
        from policylab.core.data.d4rl import save_hdf5

        save_hdf5(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, dataset_id: str | None = None, env_id: str | None = None) -> OfflineDataset:
        """Reads a dataset from a D4RL-layout HDF5 file."""
        from policylab.core.data.d4rl import load_hdf5

        return load_hdf5(path, dataset_id=dataset_id, env_id=env_id)

    @classmethod
    def concatenate(cls, parts: list[OfflineDataset]) -> OfflineDataset:
        """The transitions and infos of `parts`, one after another (metadata and ids from the first part)."""
        if not parts:
            raise DatasetError("nothing to concatenate: pass at least one dataset")
        info_keys = set(parts[0].infos)
        for part in parts[1:]:
            if set(part.infos) != info_keys:
                raise DatasetError(
                    f"cannot concatenate datasets whose infos differ: {sorted(info_keys)} vs {sorted(part.infos)}"
                )
        first = parts[0]
        return cls(
            **{key: np.concatenate([getattr(part, key) for part in parts]) for key in TRANSITION_KEYS},
            infos={key: np.concatenate([part.infos[key] for part in parts]) for key in first.infos},
            metadata=dict(first.metadata),
            env_id=first.env_id,
            dataset_id=first.dataset_id,
        )

    def summary(self) -> dict[str, Any]:
        """Sizes, return statistics and flag counts, as plain Python values."""
        returns = self.episode_returns()
        return {
            "dataset_id": self.dataset_id,
            "env_id": self.env_id,
            "transitions": len(self),
            "episodes": len(returns),
            "observation_dim": self.observation_dim,
            "action_dim": self.action_dim,
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "return_min": float(returns.min()),
            "return_max": float(returns.max()),
            "terminals": int(self.terminals.sum()),
            "timeouts": int(self.timeouts.sum()),
        }
