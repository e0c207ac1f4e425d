"""Shared fixtures: small datasets that tests build themselves."""

import numpy as np
import pytest

from policylab.core.data import OfflineDataset


def make_random_dataset(transitions: int = 512, observation_dim: int = 4, action_dim: int = 2, seed: int = 0):
    """Random transitions with actions in [-1, 1] and no env id (spaces are read from the data)."""
    rng = np.random.default_rng(seed)
    observations = rng.standard_normal((transitions, observation_dim)).astype(np.float32)
    ends = np.arange(transitions) % 50 == 49
    return OfflineDataset(
        observations=observations,
        actions=rng.uniform(-1, 1, (transitions, action_dim)).astype(np.float32),
        rewards=rng.standard_normal(transitions).astype(np.float32),
        next_observations=rng.standard_normal((transitions, observation_dim)).astype(np.float32),
        terminals=ends & (np.arange(transitions) % 100 == 99),
        timeouts=ends & (np.arange(transitions) % 100 != 99),
    )


@pytest.fixture
def random_dataset():
    return make_random_dataset()
