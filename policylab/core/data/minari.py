"""Minari datasets as OfflineDatasets (needs the optional `minari` package)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np

from policylab.core.data.dataset import DatasetError, DatasetNotFoundError, OfflineDataset

if TYPE_CHECKING:
    from minari import MinariDataset


def _import_minari():
    """Imports minari, or says how to install it."""
    try:
        import minari
    except ImportError as error:
        raise ImportError(
            "reading Minari datasets needs the minari package: pip install 'policylab[minari]'"
        ) from error
    return minari


def _stack_rows(pieces: list[np.ndarray]) -> np.ndarray:
    """Concatenates per-episode arrays into one [N, dim] array (multi-dimensional Box values flattened)."""
    return np.concatenate([np.asarray(piece).reshape(len(piece), -1) for piece in pieces])


def from_minari(dataset_or_id: MinariDataset | str) -> OfflineDataset:
    """Concatenates the episodes of a Minari dataset (or a local Minari id) into an OfflineDataset.

    Each episode's observations[:-1] become observations and observations[1:] next_observations;
    terminations become terminals and truncations timeouts (a step with both is a terminal). An
    episode that ends with neither (the recording stopped) gets a timeout on its last step, so
    episodes stay apart. Infos are not kept.
    """
    minari = _import_minari()
    if isinstance(dataset_or_id, str):
        try:
            dataset = minari.load_dataset(dataset_or_id)
        except FileNotFoundError as error:
            raise DatasetNotFoundError(
                f"{error}. Download it with `minari download {dataset_or_id}` or set "
                "MINARI_DATASETS_PATH to the folder that holds it"
            ) from error
    else:
        dataset = dataset_or_id
    for name, space in (("observation", dataset.observation_space), ("action", dataset.action_space)):
        if not isinstance(space, gym.spaces.Box):
            raise DatasetError(
                f"Minari dataset {dataset.id} has a {type(space).__name__} {name} space; only Box spaces "
                "are supported: flatten it (e.g. with gymnasium.spaces.flatten) into a Box dataset first"
            )
    episodes = list(dataset.iterate_episodes())
    if not episodes:
        raise DatasetError(f"Minari dataset {dataset.id} has no episodes: record some before loading it")
    terminals, timeouts = [], []
    for episode in episodes:
        episode_terminals = np.asarray(episode.terminations, dtype=bool)
        episode_timeouts = np.asarray(episode.truncations, dtype=bool) & ~episode_terminals
        episode_timeouts[-1] = not episode_terminals[-1]
        terminals.append(episode_terminals)
        timeouts.append(episode_timeouts)
    env_spec = dataset.env_spec
    return OfflineDataset(
        observations=_stack_rows([episode.observations[:-1] for episode in episodes]),
        actions=_stack_rows([episode.actions for episode in episodes]),
        rewards=np.concatenate([episode.rewards for episode in episodes]),
        next_observations=_stack_rows([episode.observations[1:] for episode in episodes]),
        terminals=np.concatenate(terminals),
        timeouts=np.concatenate(timeouts),
        env_id=env_spec.id if env_spec is not None else None,
        dataset_id=f"minari/{dataset.id}",
    )
