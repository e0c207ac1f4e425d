"""The agent contract: save/load, safe checkpoints, and resuming a killed run exactly."""

import json
import pickle

import numpy as np
import pytest
import torch

import policylab
from policylab.core.agent import CHECKPOINT_FORMAT, load_checkpoint
from policylab.offline_rl import TD3BC, TD3BCConfig

SMALL = {"hidden_sizes": (32, 32), "batch_size": 32, "device": "cpu"}


def test_save_load_gives_identical_actions(random_dataset, tmp_path):
    agent = TD3BC.from_dataset(random_dataset, TD3BCConfig(seed=3, **SMALL))
    agent.fit(random_dataset, steps=20, progress=False)
    agent.save(tmp_path / "agent.pt")
    loaded = policylab.load(tmp_path / "agent.pt")
    assert type(loaded) is TD3BC and loaded.config == agent.config
    observations = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.act(observations), agent.act(observations))
    np.testing.assert_array_equal(loaded.predict(observations[0], deterministic=True)[0], agent.act(observations[0]))
    # optimiser state travels too, so training can continue where it stopped
    saved = agent.actor_optimizer.state_dict()["state"][0]["exp_avg"]
    torch.testing.assert_close(loaded.actor_optimizer.state_dict()["state"][0]["exp_avg"], saved)
    assert loaded.num_updates == 20


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoint_with_pickled_object_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "payload": _RunsCode()}, path)
    with pytest.raises(ValueError, match="refusing to load"):
        policylab.load(path)
    assert "this must never run" not in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the garbage file is a plain pickle on purpose
def test_non_checkpoint_files_are_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a policylab checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(pickle.dumps([1, 2]) + b"garbage")
    with pytest.raises(ValueError):
        load_checkpoint(tmp_path / "garbage.pt")


class _Killed(Exception):
    pass


def test_killed_run_resumes_to_the_same_parameters(random_dataset, tmp_path):
    config = TD3BCConfig(seed=7, **SMALL)
    uninterrupted = TD3BC.from_dataset(random_dataset, config)
    uninterrupted.fit(random_dataset, steps=40, checkpoint_every=20, run_dir=tmp_path / "full", progress=False)

    def kill_at_30(step):
        if step == 30:
            raise _Killed

    interrupted = TD3BC.from_dataset(random_dataset, config)
    with pytest.raises(_Killed):
        interrupted.fit(
            random_dataset,
            steps=40,
            checkpoint_every=20,
            run_dir=tmp_path / "killed",
            progress=False,
            callback=kill_at_30,
        )
    with pytest.raises(FileExistsError, match="resume"):
        TD3BC.from_dataset(random_dataset, config).fit(random_dataset, steps=40, run_dir=tmp_path / "killed")
    resumed = TD3BC.from_dataset(random_dataset, config)
    resumed.fit(
        random_dataset,
        steps=40,
        checkpoint_every=20,
        run_dir=tmp_path / "killed",
        resume=True,
        progress=False,
    )

    assert resumed.num_updates == uninterrupted.num_updates == 40
    for name in ("actor", "critic", "actor_target", "critic_target"):
        for resumed_value, full_value in zip(
            getattr(resumed, name).state_dict().values(), getattr(uninterrupted, name).state_dict().values()
        ):
            torch.testing.assert_close(resumed_value, full_value, rtol=0, atol=0)
    steps_logged = [
        int(line.split(",")[0]) for line in (tmp_path / "killed" / "metrics.csv").read_text().splitlines()[1:]
    ]
    assert steps_logged == sorted(set(steps_logged))  # nothing logged twice after the resume


def test_resume_with_another_config_is_refused(random_dataset, tmp_path):
    TD3BC.from_dataset(random_dataset, TD3BCConfig(seed=0, **SMALL)).fit(
        random_dataset, steps=10, run_dir=tmp_path, progress=False
    )
    other = TD3BC.from_dataset(random_dataset, TD3BCConfig(seed=0, alpha=5.0, **SMALL))
    with pytest.raises(ValueError, match="different configuration"):
        other.fit(random_dataset, steps=20, run_dir=tmp_path, resume=True, progress=False)


def test_a_field_added_to_the_config_since_the_run_began_resumes_only_at_its_default(random_dataset, tmp_path):
    TD3BC.from_dataset(random_dataset, TD3BCConfig(seed=0, **SMALL)).fit(
        random_dataset, steps=10, run_dir=tmp_path, progress=False
    )
    recorded = json.loads((tmp_path / "config.json").read_text())
    del recorded["agent"]["alpha"]  # as if the run began before the config had this field
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    with pytest.raises(ValueError, match="different configuration"):  # the old run did not have alpha = 5
        TD3BC.from_dataset(random_dataset, TD3BCConfig(seed=0, alpha=5.0, **SMALL)).fit(
            random_dataset, steps=20, run_dir=tmp_path, resume=True, progress=False
        )
    resumed = TD3BC.from_dataset(random_dataset, TD3BCConfig(seed=0, **SMALL))  # alpha at its default
    resumed.fit(random_dataset, steps=20, run_dir=tmp_path, resume=True, progress=False)
    assert resumed.num_updates == 20


def test_act_rejects_wrong_observation_shape(random_dataset):
    agent = TD3BC.from_dataset(random_dataset, TD3BCConfig(**SMALL))
    assert agent.act(np.zeros(4)).shape == (2,)
    assert agent.act(np.zeros((5, 4))).shape == (5, 2)
    with pytest.raises(ValueError, match="does not match"):
        agent.act(np.zeros(3))
