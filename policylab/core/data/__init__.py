"""Offline datasets: the OfflineDataset container, D4RL HDF5 and Minari formats, ids and scores."""

from policylab.core.data.d4rl import load_hdf5, save_hdf5
from policylab.core.data.dataset import DatasetError, DatasetNotFoundError, Episode, OfflineDataset
from policylab.core.data.minari import from_minari
from policylab.core.data.registry import dataset_path, load_dataset
from policylab.core.data.scores import (
    REFERENCE_RETURNS,
    UnknownTaskError,
    env_id_for_dataset,
    normalized_score,
    reference_returns,
)

__all__ = [
    "REFERENCE_RETURNS",
    "DatasetError",
    "DatasetNotFoundError",
    "Episode",
    "OfflineDataset",
    "UnknownTaskError",
    "dataset_path",
    "env_id_for_dataset",
    "from_minari",
    "load_dataset",
    "load_hdf5",
    "normalized_score",
    "reference_returns",
    "save_hdf5",
]
