import numpy as np
import pytest
import torch

from policylab.core.data import DatasetError, Episode, OfflineDataset


def make_arrays() -> dict[str, np.ndarray]:
    """Seven transitions: a terminal at step 2, a timeout at step 4, then an unfinished tail."""
    observations = np.stack([np.arange(7.0), np.full(7, 5.0)], axis=1)
    return {
        "observations": observations,
        "actions": np.linspace(-1, 1, 7).reshape(7, 1),
        "rewards": np.arange(1.0, 8.0),
        "next_observations": observations + 1,
        "terminals": np.array([0, 0, 1, 0, 0, 0, 0]),
        "timeouts": np.array([0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]),
    }


def test_construction_converts_dtypes():
    dataset = OfflineDataset(**make_arrays())
    for key in ("observations", "actions", "rewards", "next_observations"):
        assert getattr(dataset, key).dtype == np.float32
    assert dataset.terminals.dtype == bool and dataset.timeouts.dtype == bool
    assert dataset.terminals.tolist() == [False, False, True, False, False, False, False]
    assert len(dataset) == 7 and dataset.observation_dim == 2 and dataset.action_dim == 1


def test_episodes_split_after_terminals_and_timeouts():
    episodes = OfflineDataset(**make_arrays()).episodes()
    assert episodes == [
        Episode(start=0, stop=3, episode_return=6.0, terminated=True, truncated=False),
        Episode(start=3, stop=5, episode_return=9.0, terminated=False, truncated=True),
        Episode(start=5, stop=7, episode_return=13.0, terminated=False, truncated=False),
    ]
    assert [episode.length for episode in episodes] == [3, 2, 2]


def test_episode_returns_when_last_step_ends_an_episode():
    arrays = make_arrays()
    arrays["timeouts"][-1] = 1
    dataset = OfflineDataset(**arrays)
    np.testing.assert_array_equal(dataset.episode_returns(), [6.0, 9.0, 13.0])
    assert dataset.episodes()[-1].truncated


def test_state_statistics():
    mean, std = OfflineDataset(**make_arrays()).state_statistics(eps=1e-3)
    # column 0 is 0..6: mean 3, population variance (9+4+1+0+1+4+9)/7 = 4; column 1 is constant 5.
    np.testing.assert_allclose(mean, [3.0, 5.0])
    np.testing.assert_allclose(std, [2.001, 0.001], rtol=1e-6)
    assert mean.dtype == np.float32 and std.dtype == np.float32 and mean.shape == (2,)


def test_as_tensors():
    tensors = OfflineDataset(**make_arrays()).as_tensors("cpu")
    assert set(tensors) == {
        "observations",
        "actions",
        "rewards",
        "next_observations",
        "terminals",
        "timeouts",
    }
    assert all(tensor.dtype == torch.float32 for tensor in tensors.values())
    assert tensors["terminals"].tolist() == [0, 0, 1, 0, 0, 0, 0]
    assert tensors["timeouts"].tolist() == [0, 0, 0, 0, 1, 0, 0]
    assert tensors["observations"].shape == (7, 2)


def test_summary():
    summary = OfflineDataset(**make_arrays(), env_id="Hopper-v5", dataset_id="gen/hopper-medium-v0").summary()
    assert summary == {
        "dataset_id": "gen/hopper-medium-v0",
        "env_id": "Hopper-v5",
        "transitions": 7,
        "episodes": 3,
        "observation_dim": 2,
        "action_dim": 1,
        "return_mean": pytest.approx(28 / 3),
        "return_std": pytest.approx(np.std([6.0, 9.0, 13.0])),
        "return_min": 6.0,
        "return_max": 13.0,
        "terminals": 1,
        "timeouts": 1,
    }


def with_defect(key: str, index, value) -> dict[str, np.ndarray]:
    """The hand-made arrays with one entry replaced."""
    arrays = make_arrays()
    arrays[key] = arrays[key].astype(np.float64)
    arrays[key][index] = value
    return arrays


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        (with_defect("rewards", 4, np.nan), "rewards[4] is nan"),
        (with_defect("observations", (3, 1), np.inf), "observations[3] (column 1) is inf"),
        (with_defect("next_observations", (6, 0), -np.inf), "next_observations[6] (column 0) is -inf"),
        (with_defect("actions", (0, 0), np.nan), "actions[0] (column 0) is nan"),
        (with_defect("terminals", 5, 2), "terminals[5] is 2"),
        (with_defect("timeouts", 3, 0.5), "timeouts[3] is 0.5"),
        (with_defect("timeouts", 2, 1), "terminals[2] and timeouts[2] are both set"),
    ],
)
def test_bad_values_name_key_and_first_index(arrays, expected):
    with pytest.raises(DatasetError) as error:
        OfflineDataset(**arrays)
    assert expected in str(error.value)


def test_first_bad_index_is_reported():
    arrays = with_defect("rewards", 5, np.nan)
    arrays["rewards"][2] = np.nan
    with pytest.raises(DatasetError, match=r"rewards\[2\] is nan"):
        OfflineDataset(**arrays)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"actions": np.zeros((6, 1))}, "actions has 6 rows but observations has 7"),
        ({"timeouts": np.zeros(8, dtype=bool)}, "timeouts has 8 rows"),
        ({"next_observations": np.zeros((7, 3))}, "next_observations has shape (7, 3)"),
        ({"observations": np.zeros(7)}, "observations has shape (7,)"),
        ({"rewards": np.zeros((7, 1))}, "rewards has shape (7, 1)"),
        ({"actions": np.array(["a"] * 7).reshape(7, 1)}, "actions has dtype <U1"),
        ({"infos": {"qpos": np.zeros((6, 3))}}, "infos/qpos has shape (6, 3)"),
    ],
)
def test_bad_shapes_name_the_key(change, expected):
    with pytest.raises(DatasetError) as error:
        OfflineDataset(**{**make_arrays(), **change})
    assert expected in str(error.value)


def test_empty_dataset_is_rejected():
    arrays = {key: value[:0] for key, value in make_arrays().items()}
    with pytest.raises(DatasetError, match="no transitions"):
        OfflineDataset(**arrays)
