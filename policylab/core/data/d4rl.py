"""D4RL's HDF5 layout, read and written with h5py (the `d4rl` package is not needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from policylab.core.data.dataset import (
    FLAG_KEYS,
    TRANSITION_KEYS,
    DatasetError,
    DatasetNotFoundError,
    OfflineDataset,
    as_flags,
    as_float32,
    first_non_finite,
)
from policylab.core.data.scores import env_id_for_dataset
from policylab.core.files import atomic_path

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
OPTIONAL_KEYS = ("next_observations", "timeouts")
GROUPS = ("infos", "metadata")
ENV_ID_ATTR = "policylab_env_id"
DATASET_ID_ATTR = "policylab_dataset_id"


def save_hdf5(dataset: OfflineDataset, path: str | os.PathLike) -> None:
    """Writes `dataset` in D4RL's layout; a temp file is fsynced then renamed, so `path` is never partial."""
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as file:
        for key in TRANSITION_KEYS:
            file.create_dataset(key, data=getattr(dataset, key))
        for group, values in (("infos", dataset.infos), ("metadata", dataset.metadata)):
            for key, value in values.items():
                file.create_dataset(f"{group}/{key}", data=value)
        for key, value in dataset.extras.items():
            file.create_dataset(key, data=value)
        if dataset.env_id is not None:
            file.attrs[ENV_ID_ATTR] = dataset.env_id
        if dataset.dataset_id is not None:
            file.attrs[DATASET_ID_ATTR] = dataset.dataset_id


def load_hdf5(path: str | os.PathLike, dataset_id: str | None = None, env_id: str | None = None) -> OfflineDataset:
    """Reads a D4RL-layout file (D4RL's own files as they are, or files written by `save_hdf5`).

    `dataset_id` and `env_id` override the ids stored in the file; without either, the env id
    follows from the dataset id ("d4rl/hopper-..." -> "Hopper-v5"). Files without
    `next_observations` (older D4RL files) get it rebuilt as D4RL's `qlearning_dataset` does:
    next_observations[i] = observations[i + 1], dropping every timeout step and the very last
    step. A kept step whose successor was a dropped timeout is marked as a timeout itself, so
    episode boundaries survive. Files with `next_observations` but no `timeouts` (e.g. saved
    `qlearning_dataset` output) load with no timeouts set.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"no dataset file at {path}: check the path, or write the file first")
    try:
        with h5py.File(path, "r") as file:
            arrays = {key: _read_transition_array(file, key, path) for key in REQUIRED_KEYS}
            arrays.update({key: _read_transition_array(file, key, path) for key in OPTIONAL_KEYS if key in file})
            infos = _read_group(file["infos"]) if "infos" in file else {}
            metadata = _read_group(file["metadata"]) if "metadata" in file else {}
            extras = _read_extras(file)
            dataset_id = dataset_id or file.attrs.get(DATASET_ID_ATTR)
            env_id = env_id or file.attrs.get(ENV_ID_ATTR)
    except OSError as error:
        raise DatasetError(
            f"cannot read {path} as HDF5 ({error}): the file is not HDF5 or is truncated; write or download it again"
        ) from error
    if env_id is None and dataset_id is not None:
        env_id = env_id_for_dataset(dataset_id)
    try:
        if "timeouts" not in arrays:
            arrays["timeouts"] = _timeouts_for_file_without_them(arrays)
        if "next_observations" not in arrays:
            arrays, infos = _rebuild_next_observations(arrays, infos)
        return OfflineDataset(
            **arrays, infos=infos, metadata=metadata, extras=extras, env_id=env_id, dataset_id=dataset_id
        )
    except DatasetError as error:
        raise DatasetError(f"{path}: {error}") from error


def _read_transition_array(file: h5py.File, key: str, path: Path) -> np.ndarray:
    """Reads one root dataset; [N, 1] rewards and flags are flattened to [N], as D4RL does."""
    item = file.get(key)
    if not isinstance(item, h5py.Dataset):
        raise DatasetError(
            f"{path} has no '{key}' dataset at its root: a D4RL-layout file needs "
            f"{', '.join(REQUIRED_KEYS)} and timeouts or next_observations; add it or pick another file"
        )
    array = np.asarray(item[()])
    if key in ("rewards", "terminals", "timeouts") and array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    return array


def _timeouts_for_file_without_them(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """All-false timeouts when the transitions are complete; without next_observations, an error."""
    if "next_observations" not in arrays:
        raise DatasetError(
            "no 'timeouts' and no 'next_observations' dataset: next_observations cannot be rebuilt "
            "without knowing where time limits cut episodes; add a timeouts array to the file"
        )
    return np.zeros(np.shape(arrays["rewards"])[:1], dtype=bool)  # a bad rewards shape is reported later


def decoded(value: Any) -> Any:
    """A metadata value with strings as text: h5py gives strings stored in a file back as bytes."""
    return value.decode() if isinstance(value, bytes) else value


def _read_group(group: h5py.Group, prefix: str = "") -> dict[str, Any]:
    """Every dataset under `group`, keyed by its path relative to the group, values as h5py returns them."""
    values: dict[str, Any] = {}

    def visit(name: str, item: h5py.HLObject) -> None:
        if isinstance(item, h5py.Dataset):
            values[prefix + name] = item[()]

    group.visititems(visit)
    return values


def _read_extras(file: h5py.File) -> dict[str, Any]:
    """Root datasets and groups that are neither transitions nor infos/metadata, flattened to paths."""
    extras: dict[str, Any] = {}
    for name, item in file.items():
        if name in TRANSITION_KEYS or name in GROUPS:
            continue
        if isinstance(item, h5py.Dataset):
            extras[name] = item[()]
        else:
            extras.update(_read_group(item, prefix=f"{name}/"))
    return extras


def _rebuild_next_observations(
    arrays: dict[str, np.ndarray], infos: dict[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Rebuilds next_observations from observations[i + 1] the way D4RL's `qlearning_dataset` does.

    The file's arrays are checked first, so errors name rows of the file, not of the result.
    """
    n = len(arrays["observations"])
    checked = {}
    for key, array in arrays.items():
        ndim = 2 if key in ("observations", "actions") else 1
        if np.ndim(array) != ndim or len(array) != n:
            raise DatasetError(
                f"{key} has shape {np.shape(array)} but observations has {n} rows: "
                f"{key} needs {ndim} dimension(s) and one row per transition"
            )
        if key in FLAG_KEYS:
            checked[key] = as_flags(key, array)
            continue
        checked[key] = as_float32(key, array)
        problem = first_non_finite(key, checked[key])
        if problem:
            raise DatasetError(problem)
    observations, terminals, timeouts = checked["observations"], checked["terminals"], checked["timeouts"]
    keep = ~timeouts
    keep[-1:] = False  # the last step has no successor
    kept = np.flatnonzero(keep)
    rebuilt = {
        "observations": observations[kept],
        "actions": checked["actions"][kept],
        "rewards": checked["rewards"][kept],
        "next_observations": observations[kept + 1],
        "terminals": terminals[kept],
        "timeouts": timeouts[kept + 1] & ~terminals[kept],
    }
    per_step_infos = {
        key: value[kept] if np.ndim(value) > 0 and len(value) == n else value for key, value in infos.items()
    }
    return rebuilt, per_step_infos
