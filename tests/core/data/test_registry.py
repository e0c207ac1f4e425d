import h5py
import numpy as np
import pytest

from policylab.core.data import (
    DatasetError,
    DatasetNotFoundError,
    OfflineDataset,
    UnknownTaskError,
    dataset_path,
    env_id_for_dataset,
    load_dataset,
    normalized_score,
    reference_returns,
)
from policylab.core.data.scores import dataset_kind

HOPPER_MIN, HOPPER_MAX = -20.272305, 3234.3


@pytest.fixture
def data_dirs(tmp_path, monkeypatch):
    """Points D4RL_DATASET_DIR and POLICYLAB_DATA at fresh folders."""
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    monkeypatch.setenv("POLICYLAB_DATA", str(tmp_path / "policylab"))
    return tmp_path


def small_dataset(**ids) -> OfflineDataset:
    """Four transitions ending in a timeout."""
    return OfflineDataset(
        observations=np.arange(8, dtype=np.float32).reshape(4, 2),
        actions=np.zeros((4, 1), dtype=np.float32),
        rewards=np.ones(4, dtype=np.float32),
        next_observations=np.arange(2, 10, dtype=np.float32).reshape(4, 2),
        terminals=np.zeros(4, dtype=bool),
        timeouts=np.array([False, False, False, True]),
        **ids,
    )


@pytest.mark.parametrize(
    ("dataset_id", "file_name"),
    [
        ("d4rl/hopper-medium-replay-v2", "hopper_medium_replay-v2.hdf5"),
        ("d4rl/halfcheetah-medium-expert-v2", "halfcheetah_medium_expert-v2.hdf5"),
        ("d4rl/walker2d-random-v1", "walker2d_random-v1.hdf5"),
        ("d4rl/antmaze-umaze-v2", "Ant_maze_u-maze_noisy_multistart_False_multigoal_False_sparse_fixed.hdf5"),
        ("d4rl/maze2d-large-v1", "maze2d-large-sparse-v1.hdf5"),
    ],
)
def test_d4rl_ids_use_d4rl_file_names(data_dirs, dataset_id, file_name):
    assert dataset_path(dataset_id) == data_dirs / "d4rl" / file_name


def test_generated_ids_live_under_policylab_data(data_dirs):
    assert dataset_path("gen/hopper-medium-v0") == data_dirs / "policylab" / "datasets" / "hopper-medium-v0.hdf5"


def test_default_folders_are_under_home(tmp_path, monkeypatch):
    for name in ("D4RL_DATASET_DIR", "POLICYLAB_DATA", "MINARI_DATASETS_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert dataset_path("d4rl/hopper-medium-v2") == tmp_path / ".d4rl/datasets/hopper_medium-v2.hdf5"
    assert dataset_path("gen/hopper-medium-v0") == tmp_path / ".cache/policylab/datasets/hopper-medium-v0.hdf5"
    assert dataset_path("minari/mujoco/hopper/medium-v0") == tmp_path / ".minari/datasets/mujoco/hopper/medium-v0"


def test_d4rl_file_loads_with_ids(data_dirs):
    path = dataset_path("d4rl/hopper-medium-v2")
    small_dataset().save(path)
    dataset = load_dataset("d4rl/hopper-medium-v2")
    assert (dataset.dataset_id, dataset.env_id) == ("d4rl/hopper-medium-v2", "Hopper-v5")
    assert len(dataset) == 4


def test_generated_file_loads_with_ids(data_dirs):
    small_dataset(env_id="Hopper-v5").save(dataset_path("gen/hopper-medium-v0"))
    dataset = load_dataset("gen/hopper-medium-v0")
    assert (dataset.dataset_id, dataset.env_id) == ("gen/hopper-medium-v0", "Hopper-v5")


@pytest.mark.parametrize("suffix", [".hdf5", ".h5"])
def test_paths_load_directly(tmp_path, suffix):
    path = tmp_path / f"mine{suffix}"
    small_dataset(dataset_id="gen/walker2d-expert-v0").save(path)
    for argument in (path, str(path)):
        dataset = load_dataset(argument)
        assert dataset.dataset_id == "gen/walker2d-expert-v0" and len(dataset) == 4


def test_missing_d4rl_file_says_where_and_how(data_dirs):
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset("d4rl/hopper-medium-replay-v2")
    message = str(error.value)
    assert str(data_dirs / "d4rl" / "hopper_medium_replay-v2.hdf5") in message
    assert "D4RL_DATASET_DIR" in message


def test_missing_generated_dataset_is_made_on_first_use_saying_so(data_dirs, capsys):
    path = data_dirs / "policylab" / "datasets" / "pendulum-scripted-v0.hdf5"
    dataset = load_dataset("gen/pendulum-scripted-v0")
    assert path.is_file() and len(dataset) > 0
    assert f"gen/pendulum-scripted-v0 is not in the cache ({path}): making it now" in capsys.readouterr().err
    load_dataset("gen/pendulum-scripted-v0")  # now cached: read, not made again
    assert capsys.readouterr().err == ""


def test_unknown_generated_dataset_lists_the_known_ones(data_dirs):
    with pytest.raises(DatasetNotFoundError, match="gen/pendulum-scripted-v0") as error:
        load_dataset("gen/no-such-task-v0")
    assert "unknown generated dataset gen/no-such-task-v0" in str(error.value)


def test_missing_path_is_named(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="absent.h5"):
        load_dataset(tmp_path / "absent.h5")


@pytest.mark.parametrize("dataset_id", ["hopper-medium-v2", "d5rl/hopper-medium-v2", "data.npz"])
def test_unknown_forms_list_the_accepted_ones(dataset_id):
    with pytest.raises(DatasetError) as error:
        load_dataset(dataset_id)
    message = str(error.value)
    assert dataset_id in message
    assert all(form in message for form in ("d4rl/", "gen/", "minari/", ".hdf5"))


def test_d4rl_id_needs_a_version():
    with pytest.raises(DatasetError, match="-v<k>"):
        dataset_path("d4rl/hopper-medium")


def test_file_that_is_not_a_dataset_names_the_problem(data_dirs):
    path = dataset_path("gen/broken-v0")
    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as file:
        file.create_dataset("observations", data=np.zeros((3, 2)))
    with pytest.raises(DatasetError, match="has no 'actions' dataset"):
        load_dataset("gen/broken-v0")


def test_normalized_score_on_d4rl_scale():
    assert normalized_score("Hopper-v5", HOPPER_MAX) == pytest.approx(100.0)
    assert normalized_score("d4rl/hopper-medium-v2", HOPPER_MIN) == pytest.approx(0.0)
    assert normalized_score("hopper-medium-v2", (HOPPER_MIN + HOPPER_MAX) / 2) == pytest.approx(50.0)
    scores = normalized_score("gen/halfcheetah-medium-v0", np.array([-280.178953, 12135.0]))
    np.testing.assert_allclose(scores, [0.0, 100.0])
    assert normalized_score("antmaze-umaze-v0", 0.25) == pytest.approx(25.0)
    assert isinstance(normalized_score("Walker2d-v5", 1000.0), float)


@pytest.mark.parametrize(
    ("task_or_id", "expected"),
    [
        ("Hopper-v5", (HOPPER_MIN, HOPPER_MAX)),
        ("hopper-medium-v2", (HOPPER_MIN, HOPPER_MAX)),
        ("d4rl/hopper-medium-replay-v2", (HOPPER_MIN, HOPPER_MAX)),
        ("gen/hopper-medium-v0", (HOPPER_MIN, HOPPER_MAX)),
        ("HalfCheetah-v5", (-280.178953, 12135.0)),
        ("Walker2d-v5", (1.629008, 4592.3)),
        ("Ant-v5", (-325.6, 3879.7)),
        ("d4rl/ant-medium-expert-v2", (-325.6, 3879.7)),
        ("antmaze-umaze-v0", (0.0, 1.0)),
        ("d4rl/antmaze-large-diverse-v2", (0.0, 1.0)),
        ("maze2d-umaze-v1", (23.85, 161.86)),
        ("maze2d-medium-v1", (13.13, 277.39)),
        ("maze2d-large-v1", (6.7, 273.99)),
        ("Pendulum-v1", None),
        ("maze2d-open-v0", None),
        ("minari/mujoco/hopper/medium-v0", None),
    ],
)
def test_reference_returns_by_id(task_or_id, expected):
    assert reference_returns(task_or_id) == expected


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(UnknownTaskError) as error:
        normalized_score("Pendulum-v1", 0.0)
    assert isinstance(error.value, ValueError)
    assert all(task in str(error.value) for task in ("hopper", "halfcheetah", "walker2d", "antmaze", "maze2d-large"))


@pytest.mark.parametrize(
    ("dataset_id", "env_id"),
    [
        ("d4rl/hopper-medium-v2", "Hopper-v5"),
        ("d4rl/halfcheetah-medium-replay-v2", "HalfCheetah-v5"),
        ("d4rl/walker2d-expert-v2", "Walker2d-v5"),
        ("d4rl/ant-random-v2", "Ant-v5"),
        ("gen/hopper-medium-v0", "Hopper-v5"),
        ("gen/ant-expert-v0", "Ant-v5"),
        ("d4rl/antmaze-umaze-v2", None),
        ("d4rl/maze2d-large-v1", None),
        ("hopper-medium-v2", None),
        ("minari/mujoco/hopper/medium-v0", None),
    ],
)
def test_env_id_for_dataset(dataset_id, env_id):
    assert env_id_for_dataset(dataset_id) == env_id


@pytest.mark.parametrize(
    ("dataset_id", "expected"),
    [
        ("gen/hopper-medium-v0", "medium"),
        ("gen/hopper-medium-replay-v0-200k", "medium-replay"),
        ("walker2d-random-v0-seed3", "random"),
        ("hopper-medium-v2", "medium"),
        ("d4rl/halfcheetah-medium-expert-v2", "medium-expert"),
        ("d4rl/walker2d-expert-v2", "expert"),
        ("/data/d4rl/walker2d_medium_replay-v2.hdf5", "medium-replay"),
        ("minari/mujoco/hopper/medium-v0", "medium"),
        ("hopper-full-replay-v2", None),
        ("gen/pendulum-scripted-v0", None),
        ("Hopper-v5", None),
        ("antmaze-medium-play-v2", None),  # a maze's size, not a kind of data
        ("maze2d-medium-v1", None),
    ],
)
def test_dataset_kind_by_id_or_path(dataset_id, expected):
    assert dataset_kind(dataset_id) == expected
