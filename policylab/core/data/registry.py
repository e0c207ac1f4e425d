"""Dataset ids ("d4rl/...", "gen/...", "minari/...") to files on disk, and loading by id or path."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from policylab.core.data.d4rl import load_hdf5
from policylab.core.data.dataset import DatasetError, DatasetNotFoundError, OfflineDataset
from policylab.core.data.minari import from_minari
from policylab.core.files import cache_dir

D4RL_PREFIX = "d4rl/"
GENERATED_PREFIX = "gen/"
MINARI_PREFIX = "minari/"
HDF5_SUFFIXES = (".hdf5", ".h5")
ACCEPTED_FORMS = (
    "d4rl/<name>-v<k> (D4RL's file, e.g. d4rl/hopper-medium-replay-v2)",
    "gen/<name> (made by `policylab data make`, e.g. gen/hopper-medium-v0)",
    "minari/<id> (a local Minari dataset, e.g. minari/mujoco/hopper/medium-v0)",
    "a path to an existing .hdf5 or .h5 file",
)

# D4RL's downloads are named <name with underscores>-v<k>.hdf5 (gym_mujoco v1/v2); these are not.
# File names from the URLs in D4RL's `d4rl/infos.py`.
D4RL_FILE_NAMES = {
    "maze2d-umaze-v1": "maze2d-umaze-sparse-v1.hdf5",
    "maze2d-medium-v1": "maze2d-medium-sparse-v1.hdf5",
    "maze2d-large-v1": "maze2d-large-sparse-v1.hdf5",
    "maze2d-umaze-dense-v1": "maze2d-umaze-dense-v1.hdf5",
    "maze2d-medium-dense-v1": "maze2d-medium-dense-v1.hdf5",
    "maze2d-large-dense-v1": "maze2d-large-dense-v1.hdf5",
    "antmaze-umaze-v0": "Ant_maze_u-maze_noisy_multistart_False_multigoal_False_sparse.hdf5",
    "antmaze-umaze-diverse-v0": "Ant_maze_u-maze_noisy_multistart_True_multigoal_True_sparse.hdf5",
    "antmaze-medium-play-v0": "Ant_maze_big-maze_noisy_multistart_True_multigoal_False_sparse.hdf5",
    "antmaze-medium-diverse-v0": "Ant_maze_big-maze_noisy_multistart_True_multigoal_True_sparse.hdf5",
    "antmaze-large-play-v0": "Ant_maze_hardest-maze_noisy_multistart_True_multigoal_False_sparse.hdf5",
    "antmaze-large-diverse-v0": "Ant_maze_hardest-maze_noisy_multistart_True_multigoal_True_sparse.hdf5",
    "antmaze-umaze-v2": "Ant_maze_u-maze_noisy_multistart_False_multigoal_False_sparse_fixed.hdf5",
    "antmaze-umaze-diverse-v2": "Ant_maze_u-maze_noisy_multistart_True_multigoal_True_sparse_fixed.hdf5",
    "antmaze-medium-play-v2": "Ant_maze_big-maze_noisy_multistart_True_multigoal_False_sparse_fixed.hdf5",
    "antmaze-medium-diverse-v2": "Ant_maze_big-maze_noisy_multistart_True_multigoal_True_sparse_fixed.hdf5",
    "antmaze-large-play-v2": "Ant_maze_hardest-maze_noisy_multistart_True_multigoal_False_sparse_fixed.hdf5",
    "antmaze-large-diverse-v2": "Ant_maze_hardest-maze_noisy_multistart_True_multigoal_True_sparse_fixed.hdf5",
}


def d4rl_dataset_dir() -> Path:
    """Where D4RL's files are looked for: $D4RL_DATASET_DIR, else ~/.d4rl/datasets (D4RL's own default)."""
    return Path(os.environ.get("D4RL_DATASET_DIR", "~/.d4rl/datasets")).expanduser()


def generated_dataset_dir() -> Path:
    """Where generated datasets live: $POLICYLAB_DATA/datasets, else ~/.cache/policylab/datasets."""
    return cache_dir("datasets")


def minari_dataset_dir() -> Path:
    """Minari's local store: $MINARI_DATASETS_PATH, else ~/.minari/datasets (Minari's own default)."""
    return Path(os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")).expanduser()


def _is_file_path(dataset_id_or_path: str) -> bool:
    """Whether the argument names an HDF5 file rather than a dataset id."""
    return dataset_id_or_path.endswith(HDF5_SUFFIXES)


def dataset_path(dataset_id: str) -> Path:
    """The file (or, for Minari, the folder) a dataset id refers to; it need not exist yet."""
    if _is_file_path(dataset_id):
        return Path(dataset_id).expanduser()
    if dataset_id.startswith(D4RL_PREFIX):
        name = dataset_id.removeprefix(D4RL_PREFIX)
        match = re.fullmatch(r"(?P<stem>[\w-]+)-v(?P<version>\d+)", name)
        if match is None:
            raise DatasetError(
                f"D4RL id {dataset_id!r} has no version: D4RL ids end in -v<k>, e.g. d4rl/hopper-medium-v2"
            )
        file_name = D4RL_FILE_NAMES.get(name, f"{match['stem'].replace('-', '_')}-v{match['version']}.hdf5")
        return d4rl_dataset_dir() / file_name
    if dataset_id.startswith(GENERATED_PREFIX):
        return generated_dataset_dir() / f"{dataset_id.removeprefix(GENERATED_PREFIX)}.hdf5"
    if dataset_id.startswith(MINARI_PREFIX):
        return minari_dataset_dir() / dataset_id.removeprefix(MINARI_PREFIX)
    raise DatasetError(f"unknown dataset id {dataset_id!r}; use one of: " + "; ".join(ACCEPTED_FORMS))


def _missing_file_message(dataset_id: str, path: Path) -> str:
    """For a missing d4rl/ or gen/ file: names the path looked at and how to get the file there."""
    if dataset_id.startswith(D4RL_PREFIX):
        return (
            f"D4RL dataset {dataset_id} not found at {path}: put D4RL's file there "
            "or set D4RL_DATASET_DIR to the folder that holds it"
        )
    from policylab.core.data.generate import makeable_datasets  # generate.py imports this module

    return (
        f"unknown generated dataset {dataset_id} (nothing at {path}); this installation makes: "
        f"{', '.join(makeable_datasets())} (behaviour datasets also take -<size> and -seed<k>, e.g. "
        "gen/hopper-medium-v0-100k)"
    )


def load_dataset(dataset_id_or_path: str | os.PathLike) -> OfflineDataset:
    """Loads a dataset by id ("d4rl/...", "gen/...", "minari/...") or from an .hdf5/.h5 path; a `gen/` dataset
    missing from the cache, or made from other behaviour policies than the installed ones, is made first (saying
    so on stderr)."""
    name = os.fspath(dataset_id_or_path)
    if _is_file_path(name):
        return load_hdf5(Path(name).expanduser())
    if name.startswith(MINARI_PREFIX):
        return from_minari(name.removeprefix(MINARI_PREFIX))
    path = dataset_path(name)
    generated = name.startswith(GENERATED_PREFIX)
    if generated:
        from policylab.core.data.behaviour import made_from_other_policies
        from policylab.core.data.generate import can_make, make_dataset

        if not path.is_file() and can_make(name):
            print(f"{name} is not in the cache ({path}): making it now", file=sys.stderr, flush=True)
            path = make_dataset(name)
    if not path.is_file():
        raise DatasetNotFoundError(_missing_file_message(name, path))
    dataset = load_hdf5(path, dataset_id=name)
    if generated and made_from_other_policies(dataset):
        print(
            f"{name} in the cache ({path}) was made from other behaviour policies than the installed ones: "
            "making it again",
            file=sys.stderr,
            flush=True,
        )
        dataset = load_hdf5(make_dataset(name, overwrite=True), dataset_id=name)
    return dataset
