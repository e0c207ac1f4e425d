import sys

import numpy as np
import pytest

from policylab.core.data import DatasetError, DatasetNotFoundError, from_minari, load_dataset

DATASET_ID = "test/pendulum/tiny-v0"
CREATION_INFO = {
    "algorithm_name": "random",
    "author": "policylab tests",
    "author_email": "tests@example.com",
    "code_permalink": "https://example.com/policylab",
    "description": "three hand-made Pendulum episodes",
    "eval_env": "Pendulum-v1",
}


@pytest.fixture
def minari(tmp_path, monkeypatch):
    """The minari package, with its local store in a fresh folder."""
    minari = pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return minari


def episode_buffer(episode_id: int, steps: int, terminated: bool, truncated: bool):
    """A Pendulum episode whose observation t is [episode_id, t, -t] and reward t."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    times = np.arange(steps + 1, dtype=np.float32)
    observations = np.stack([np.full(steps + 1, episode_id, dtype=np.float32), times, -times], axis=1)
    return EpisodeBuffer(
        id=episode_id,
        observations=list(observations),
        actions=list(np.full((steps, 1), 0.5 * episode_id, dtype=np.float32)),
        rewards=list(times[:-1].astype(np.float64)),
        terminations=[False] * (steps - 1) + [terminated],
        truncations=[False] * (steps - 1) + [truncated],
        infos={},
    )


@pytest.fixture
def tiny_dataset(minari):
    """Episodes of 3 steps (terminated), 4 steps (truncated) and 2 steps (neither: recording stopped)."""
    buffers = [
        episode_buffer(0, 3, True, False),
        episode_buffer(1, 4, False, True),
        episode_buffer(2, 2, False, False),
    ]
    return minari.create_dataset_from_buffers(DATASET_ID, buffers, env="Pendulum-v1", **CREATION_INFO)


def check_tiny(dataset):
    """The concatenation of the three hand-made episodes."""
    assert len(dataset) == 9
    assert dataset.env_id == "Pendulum-v1" and dataset.dataset_id == f"minari/{DATASET_ID}"
    np.testing.assert_array_equal(dataset.observations[:, 0], [0, 0, 0, 1, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(dataset.observations[:, 1], [0, 1, 2, 0, 1, 2, 3, 0, 1])
    np.testing.assert_array_equal(dataset.next_observations[:, 1], [1, 2, 3, 1, 2, 3, 4, 1, 2])
    np.testing.assert_array_equal(dataset.next_observations[:, 2], -dataset.next_observations[:, 1])
    np.testing.assert_array_equal(dataset.actions[:, 0], [0, 0, 0, 0.5, 0.5, 0.5, 0.5, 1, 1])
    np.testing.assert_array_equal(dataset.rewards, [0, 1, 2, 0, 1, 2, 3, 0, 1])
    np.testing.assert_array_equal(dataset.terminals, [0, 0, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(dataset.timeouts, [0, 0, 0, 0, 0, 0, 1, 0, 1])
    assert [episode.length for episode in dataset.episodes()] == [3, 4, 2]
    assert dataset.rewards.dtype == np.float32 and dataset.observations.dtype == np.float32


def test_from_minari_id(tiny_dataset):
    check_tiny(from_minari(DATASET_ID))


def test_from_minari_dataset_object(tiny_dataset):
    check_tiny(from_minari(tiny_dataset))


def test_load_dataset_minari_id(tiny_dataset):
    check_tiny(load_dataset(f"minari/{DATASET_ID}"))


def test_missing_minari_dataset(minari, tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset("minari/test/pendulum/absent-v0")
    assert str(tmp_path / "minari") in str(error.value)
    assert "minari download test/pendulum/absent-v0" in str(error.value)


@pytest.mark.filterwarnings("ignore:env_spec is None")
def test_dict_observations_are_refused(minari):
    import gymnasium as gym
    from minari.data_collector.episode_buffer import EpisodeBuffer

    observation_space = gym.spaces.Dict({"position": gym.spaces.Box(-1, 1, (2,), np.float32)})
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    buffer = EpisodeBuffer(
        id=0,
        observations={"position": [np.zeros(2, np.float32)] * 3},
        actions=[np.zeros(1, np.float32)] * 2,
        rewards=[0.0, 0.0],
        terminations=[False, True],
        truncations=[False, False],
        infos={},
    )
    dataset = minari.create_dataset_from_buffers(
        "test/dict/tiny-v0",
        [buffer],
        observation_space=observation_space,
        action_space=action_space,
        **CREATION_INFO,
    )
    with pytest.raises(DatasetError, match="Dict observation space.*flatten"):
        from_minari(dataset)


def test_missing_minari_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "minari", None)
    with pytest.raises(ImportError, match=r"pip install 'policylab\[minari\]'"):
        from_minari("anything-v0")
