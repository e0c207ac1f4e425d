import h5py
import numpy as np
import pytest

from policylab.core.data import DatasetError, OfflineDataset, load_hdf5, save_hdf5

TRANSITION_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


def make_dataset(n: int = 12) -> OfflineDataset:
    """A dataset using every part of the layout: infos, nested metadata, extras and ids."""
    rng = np.random.default_rng(0)
    terminals = np.zeros(n, dtype=bool)
    timeouts = np.zeros(n, dtype=bool)
    terminals[4] = True
    timeouts[9] = True
    return OfflineDataset(
        observations=rng.normal(size=(n, 3)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=rng.normal(size=(n, 3)).astype(np.float32),
        terminals=terminals,
        timeouts=timeouts,
        infos={"qpos": rng.normal(size=(n, 4)), "action_log_probs": rng.normal(size=n).astype(np.float32)},
        metadata={
            "algorithm": b"SAC",
            "iteration": np.int64(7),
            "return_scale": np.float64(0.5),
            "policy/fc0/weight": rng.normal(size=(2, 3)).astype(np.float32),
            "policy/fc0/bias": np.zeros(2),
            "policy/nonlinearity": b"relu",
        },
        extras={"episode_ids": np.arange(n, dtype=np.int32)},
        env_id="Hopper-v5",
        dataset_id="gen/hopper-medium-v0",
    )


def assert_same_values(loaded: dict, original: dict):
    """Same keys, same types and dtypes, equal values."""
    assert loaded.keys() == original.keys()
    for key, value in original.items():
        assert type(loaded[key]) is type(value), key
        assert np.asarray(loaded[key]).dtype == np.asarray(value).dtype, key
        np.testing.assert_array_equal(loaded[key], value)


def assert_same_dataset(loaded: OfflineDataset, original: OfflineDataset):
    """Every array, dtype, metadata value and id equal."""
    for key in TRANSITION_KEYS:
        assert getattr(loaded, key).dtype == getattr(original, key).dtype, key
        np.testing.assert_array_equal(getattr(loaded, key), getattr(original, key))
    assert_same_values(loaded.infos, original.infos)
    assert_same_values(loaded.metadata, original.metadata)
    assert_same_values(loaded.extras, original.extras)
    assert (loaded.env_id, loaded.dataset_id) == (original.env_id, original.dataset_id)


def test_round_trip_is_exact(tmp_path):
    original = make_dataset()
    path = tmp_path / "data.hdf5"
    original.save(path)
    loaded = OfflineDataset.load(path)
    assert_same_dataset(loaded, original)
    loaded.save(tmp_path / "again.hdf5")
    assert_same_dataset(load_hdf5(tmp_path / "again.hdf5"), original)


def test_file_has_d4rl_layout(tmp_path):
    path = tmp_path / "data.hdf5"
    save_hdf5(make_dataset(), path)
    with h5py.File(path, "r") as file:
        assert set(file) == {*TRANSITION_KEYS, "infos", "metadata", "episode_ids"}
        assert set(file["infos"]) == {"qpos", "action_log_probs"}
        assert isinstance(file["metadata/policy"], h5py.Group)
        assert isinstance(file["metadata/policy/fc0/weight"], h5py.Dataset)
        assert file["terminals"].dtype == bool and file["rewards"].shape == (12,)
        assert file.attrs["policylab_env_id"] == "Hopper-v5"
        assert file.attrs["policylab_dataset_id"] == "gen/hopper-medium-v0"


def test_explicit_ids_override_the_file(tmp_path):
    path = tmp_path / "data.hdf5"
    make_dataset().save(path)
    loaded = load_hdf5(path, dataset_id="d4rl/walker2d-medium-v2", env_id="Custom-v0")
    assert (loaded.dataset_id, loaded.env_id) == ("d4rl/walker2d-medium-v2", "Custom-v0")


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "data.hdf5"
    make_dataset(12).save(path)
    make_dataset(20).save(path)
    assert len(load_hdf5(path)) == 20
    unwritable = make_dataset(30)
    unwritable.metadata["bad"] = object()
    with pytest.raises(TypeError):
        unwritable.save(path)
    assert len(load_hdf5(path)) == 20
    assert [child.name for child in tmp_path.iterdir()] == ["data.hdf5"]


def write_d4rl_style(path, arrays: dict):
    """Writes plain datasets at the root the way D4RL's own files are laid out (no policylab attributes)."""
    with h5py.File(path, "w") as file:
        for key, value in arrays.items():
            file.create_dataset(key, data=value)


def d4rl_arrays(n: int = 7) -> dict:
    """Hand-made D4RL-style arrays: observation i is [i, 10 i], a terminal at 4 and a timeout at 2."""
    observations = np.stack([np.arange(n), 10 * np.arange(n)], axis=1).astype(np.float32)
    terminals = np.zeros(n, dtype=bool)
    timeouts = np.zeros(n, dtype=bool)
    terminals[4] = True
    timeouts[2] = True
    return {
        "observations": observations,
        "actions": np.arange(n, dtype=np.float32).reshape(n, 1) / 10,
        "rewards": np.arange(n, dtype=np.float32) + 100,
        "terminals": terminals,
        "timeouts": timeouts,
        "infos/qpos": np.arange(n, dtype=np.float64) * 2,
        "metadata/algorithm": "SAC",
    }


def test_d4rl_file_with_next_observations_loads_as_is(tmp_path):
    arrays = d4rl_arrays()
    arrays["next_observations"] = arrays["observations"] + 1
    path = tmp_path / "hopper_medium-v2.hdf5"
    write_d4rl_style(path, arrays)
    dataset = load_hdf5(path)
    assert len(dataset) == 7
    np.testing.assert_array_equal(dataset.next_observations, arrays["observations"] + 1)
    np.testing.assert_array_equal(dataset.terminals, arrays["terminals"])
    np.testing.assert_array_equal(dataset.timeouts, arrays["timeouts"])
    np.testing.assert_array_equal(dataset.infos["qpos"], arrays["infos/qpos"])
    assert dataset.metadata == {"algorithm": b"SAC"}
    assert dataset.extras == {} and dataset.env_id is None and dataset.dataset_id is None


def test_missing_next_observations_are_rebuilt_like_qlearning_dataset(tmp_path):
    path = tmp_path / "old.hdf5"
    write_d4rl_style(path, d4rl_arrays())
    dataset = load_hdf5(path, dataset_id="d4rl/hopper-medium-v1")
    # Step 2 is a timeout and step 6 the last: both dropped, steps 0, 1, 3, 4, 5 kept.
    assert len(dataset) == 5
    np.testing.assert_array_equal(dataset.observations[:, 0], [0, 1, 3, 4, 5])
    np.testing.assert_array_equal(dataset.next_observations, [[1, 10], [2, 20], [4, 40], [5, 50], [6, 60]])
    np.testing.assert_array_equal(dataset.rewards, [100, 101, 103, 104, 105])
    np.testing.assert_allclose(dataset.actions[:, 0], [0.0, 0.1, 0.3, 0.4, 0.5])
    np.testing.assert_array_equal(dataset.terminals, [False, False, False, True, False])
    # Step 1 preceded the dropped timeout, so its episode now ends there by truncation.
    np.testing.assert_array_equal(dataset.timeouts, [False, True, False, False, False])
    np.testing.assert_array_equal(dataset.infos["qpos"], [0, 2, 6, 8, 10])
    assert dataset.env_id == "Hopper-v5"


def test_file_without_timeouts_loads_when_transitions_are_complete(tmp_path):
    arrays = d4rl_arrays()
    arrays["next_observations"] = arrays["observations"] + 1
    del arrays["timeouts"]
    path = tmp_path / "qlearning.hdf5"
    write_d4rl_style(path, arrays)
    dataset = load_hdf5(path)
    assert len(dataset) == 7 and not dataset.timeouts.any()
    np.testing.assert_array_equal(dataset.terminals, arrays["terminals"])


def test_file_without_timeouts_or_next_observations_is_refused(tmp_path):
    arrays = d4rl_arrays()
    del arrays["timeouts"]
    path = tmp_path / "old.hdf5"
    write_d4rl_style(path, arrays)
    with pytest.raises(DatasetError, match="no 'timeouts' and no 'next_observations'") as error:
        load_hdf5(path)
    assert str(path) in str(error.value)


def test_column_rewards_and_float64_observations_are_accepted(tmp_path):
    arrays = d4rl_arrays()
    arrays["rewards"] = arrays["rewards"].reshape(-1, 1)
    arrays["observations"] = arrays["observations"].astype(np.float64)
    arrays["next_observations"] = arrays["observations"]
    path = tmp_path / "data.hdf5"
    write_d4rl_style(path, arrays)
    dataset = load_hdf5(path)
    assert dataset.rewards.shape == (7,) and dataset.observations.dtype == np.float32


def test_random_bytes_are_not_a_dataset(tmp_path):
    path = tmp_path / "noise.hdf5"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DatasetError, match="not HDF5 or is truncated") as error:
        load_hdf5(path)
    assert str(path) in str(error.value)


def test_truncated_file_is_reported(tmp_path):
    path = tmp_path / "data.hdf5"
    make_dataset(2000).save(path)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(DatasetError) as error:
        load_hdf5(path)
    assert str(path) in str(error.value)


def test_missing_key_is_named(tmp_path):
    arrays = d4rl_arrays()
    del arrays["actions"]
    path = tmp_path / "data.hdf5"
    write_d4rl_style(path, arrays)
    with pytest.raises(DatasetError, match="has no 'actions' dataset") as error:
        load_hdf5(path)
    assert str(path) in str(error.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DatasetError, match="no dataset file at"):
        load_hdf5(tmp_path / "absent.hdf5")


@pytest.mark.parametrize("with_next_observations", [True, False])
@pytest.mark.parametrize(
    ("key", "index", "value", "expected"),
    [
        ("rewards", 3, np.nan, "rewards[3] is nan"),
        ("observations", (1, 1), np.inf, "observations[1] (column 1) is inf"),
        ("terminals", 1, 2, "terminals[1] is 2"),
        ("timeouts", 0, 2, "timeouts[0] is 2"),
    ],
)
def test_bad_values_in_a_file_name_file_key_and_index(tmp_path, with_next_observations, key, index, value, expected):
    arrays = d4rl_arrays()
    arrays[key] = arrays[key].astype(np.float64)
    arrays[key][index] = value
    if with_next_observations:
        arrays["next_observations"] = np.zeros((7, 2), dtype=np.float32)
    path = tmp_path / "bad.hdf5"
    write_d4rl_style(path, arrays)
    with pytest.raises(DatasetError) as error:
        load_hdf5(path)
    assert expected in str(error.value) and str(path) in str(error.value)


@pytest.mark.parametrize("with_next_observations", [True, False])
def test_mismatched_lengths_in_a_file(tmp_path, with_next_observations):
    arrays = d4rl_arrays()
    arrays["actions"] = arrays["actions"][:5]
    if with_next_observations:
        arrays["next_observations"] = arrays["observations"]
    path = tmp_path / "bad.hdf5"
    write_d4rl_style(path, arrays)
    with pytest.raises(DatasetError, match=r"actions has (5 rows|shape \(5, 1\))"):
        load_hdf5(path)


def test_both_flags_set_in_a_file(tmp_path):
    arrays = d4rl_arrays()
    arrays["next_observations"] = arrays["observations"]
    arrays["timeouts"][4] = True
    path = tmp_path / "bad.hdf5"
    write_d4rl_style(path, arrays)
    with pytest.raises(DatasetError, match=r"terminals\[4\] and timeouts\[4\] are both set"):
        load_hdf5(path)
