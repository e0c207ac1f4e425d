"""Behaviour datasets (gen/<family>-<kind>-v0): layout, determinism, returns on the card, medium-expert and
medium-replay composition, and the cache path through `make_dataset` / `load_dataset`.

The datasets here roll out untrained actors written by the same `save_behaviour` the training script uses
(their Hopper episodes last a few dozen steps, so thousands of transitions take a second)."""

import numpy as np
import pytest
import torch

from policylab.core.data import load_dataset
from policylab.core.data.behaviour import (
    behaviour_tasks,
    load_behaviour,
    make_actor,
    make_behaviour_dataset,
    parse_dataset_name,
    policy_return,
    save_behaviour,
)
from policylab.core.data.generate import dataset_id_with_options, make_dataset, makeable_datasets

TASK = "Hopper-v5"


@pytest.fixture
def behaviour_dir(tmp_path, monkeypatch):
    """Untrained Hopper actors as behaviour policies, with a card evaluated like the training script's."""
    directory = tmp_path / "behaviour"
    actors = {}
    for index, kind in enumerate(("random", "medium", "expert", "snapshot")):
        torch.manual_seed(index)
        actors[kind] = make_actor(TASK)
    card = {
        "trainer": "untrained actors for tests",
        "evaluation_episodes": 4,
        "evaluation_seed": 100,
        "replay_steps": [0, 5000, 10000],
        "policies": {},
    }
    for step, kind in zip((0, 10000, 20000), ("random", "medium", "expert")):
        mean, std = policy_return(actors[kind], TASK, episodes=4, seed=100)
        card["policies"][kind] = {"step": step, "return_mean": mean, "return_std": std}
    weights = {kind: actors[kind].state_dict() for kind in ("random", "medium", "expert")}
    weights["replay"] = [actors[kind].state_dict() for kind in ("random", "snapshot", "medium")]
    save_behaviour(TASK, weights, card, directory)
    monkeypatch.setenv("POLICYLAB_BEHAVIOUR_DIR", str(directory))
    monkeypatch.setenv("POLICYLAB_DATA", str(tmp_path / "cache"))
    return directory


def test_dataset_layout_matches_the_rollout(behaviour_dir):
    dataset = make_behaviour_dataset("hopper-medium-v0-3k", progress=False)
    assert len(dataset) == 3000 and dataset.dataset_id == "gen/hopper-medium-v0-3k" and dataset.env_id == TASK
    assert set(dataset.infos) == {"qpos", "qvel", "action_log_probs"}
    # Hopper observes qpos without the x position, then qvel clipped to ±10: infos/ describe the observed state.
    np.testing.assert_allclose(dataset.observations[:, :5], dataset.infos["qpos"][:, 1:], rtol=1e-6)
    np.testing.assert_allclose(dataset.observations[:, 5:], dataset.infos["qvel"].clip(-10, 10), rtol=1e-6, atol=1e-6)
    # Episodes are contiguous: inside one, a transition's next observation is the next one's observation.
    inside = ~(dataset.terminals | dataset.timeouts)[:-1]
    np.testing.assert_array_equal(dataset.next_observations[:-1][inside], dataset.observations[1:][inside])
    assert dataset.terminals.any()  # the untrained hopper falls
    # 100 envs contribute 30 transitions each; every stream ends in a terminal or a timeout.
    ends = dataset.terminals | dataset.timeouts
    assert ends[29::30].all()
    # The log-probabilities are those of the actions under the medium actor.
    medium = load_behaviour(TASK).actors["medium"]
    with torch.no_grad():
        expected = medium.log_prob(torch.as_tensor(dataset.observations), torch.as_tensor(dataset.actions))
    np.testing.assert_allclose(dataset.infos["action_log_probs"], expected.numpy(), rtol=1e-3, atol=1e-3)


def test_dataset_is_deterministic_for_a_seed(behaviour_dir):
    first = make_behaviour_dataset("hopper-random-v0-1k", progress=False)
    again = make_behaviour_dataset("hopper-random-v0-1k", progress=False)
    other_seed = make_behaviour_dataset("hopper-random-v0-1k-seed1", progress=False)
    for key in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"):
        np.testing.assert_array_equal(getattr(first, key), getattr(again, key))
    assert not np.array_equal(first.actions, other_seed.actions)


def test_metadata_returns_equal_a_re_evaluation(behaviour_dir):
    dataset = make_behaviour_dataset("hopper-medium-expert-v0-1k", progress=False)
    metadata, behaviour = dataset.metadata, load_behaviour(TASK)
    assert "not D4RL's data" in metadata["source"] and metadata["seed"] == 0 and metadata["size_per_policy"] == 1000
    for kind in ("medium", "expert"):
        mean, std = policy_return(
            behaviour.actors[kind], TASK, metadata["evaluation_episodes"], metadata["evaluation_seed"]
        )
        assert metadata[f"policies/{kind}/return_mean"] == pytest.approx(mean)
        assert metadata[f"policies/{kind}/return_std"] == pytest.approx(std)


def test_medium_expert_is_medium_then_expert(behaviour_dir):
    medium_expert = make_behaviour_dataset("hopper-medium-expert-v0-1k", progress=False)
    medium = make_behaviour_dataset("hopper-medium-v0-1k", progress=False)
    expert = make_behaviour_dataset("hopper-expert-v0-1k", progress=False)
    assert len(medium_expert) == 2000
    for key in ("observations", "actions", "rewards", "terminals", "timeouts"):
        np.testing.assert_array_equal(
            getattr(medium_expert, key), np.concatenate([getattr(medium, key), getattr(expert, key)])
        )
    np.testing.assert_array_equal(
        medium_expert.infos["qpos"], np.concatenate([medium.infos["qpos"], expert.infos["qpos"]])
    )


def test_medium_replay_gives_every_snapshot_an_equal_share(behaviour_dir):
    dataset = make_behaviour_dataset("hopper-medium-replay-v0-1000", progress=False)
    assert len(dataset) == 1000 and dataset.dataset_id == "gen/hopper-medium-replay-v0-1k"
    np.testing.assert_array_equal(dataset.metadata["replay_steps"], [0, 5000, 10000])
    replay = load_behaviour(TASK).replay
    shares = [334, 333, 333]
    starts = np.cumsum([0, *shares])
    for actor, start, stop in zip(replay, starts[:-1], starts[1:]):
        with torch.no_grad():
            log_probs = actor.log_prob(
                torch.as_tensor(dataset.observations[start:stop]), torch.as_tensor(dataset.actions[start:stop])
            )
        np.testing.assert_allclose(dataset.infos["action_log_probs"][start:stop], log_probs.numpy(), atol=1e-3)


def test_make_dataset_writes_d4rl_layout_and_load_dataset_makes_missing_ones(behaviour_dir, tmp_path, capsys):
    assert behaviour_tasks() == [TASK]
    assert "gen/hopper-medium-replay-v0" in makeable_datasets()
    path = make_dataset("gen/hopper-expert-v0-500", progress=False)
    assert path == tmp_path / "cache" / "datasets" / "hopper-expert-v0-500.hdf5"
    loaded = load_dataset("gen/hopper-expert-v0-500")
    made = make_behaviour_dataset("hopper-expert-v0-500", progress=False)
    np.testing.assert_array_equal(loaded.observations, made.observations)
    np.testing.assert_array_equal(loaded.infos["action_log_probs"], made.infos["action_log_probs"])
    assert loaded.metadata["policies/expert/step"] == 20000
    load_dataset("gen/hopper-random-v0-200")  # not in the cache: made first, saying so
    assert "gen/hopper-random-v0-200 is not in the cache" in capsys.readouterr().err


def test_load_dataset_remakes_a_file_made_from_other_policies(behaviour_dir, capsys):
    first = load_dataset("gen/hopper-medium-v0-500")
    capsys.readouterr()
    assert load_dataset("gen/hopper-medium-v0-500").metadata["policies/medium/step"] == 10000
    assert capsys.readouterr().err == ""  # made from the installed policies: read as it is
    # The policies are retrained: medium is now another snapshot, with other weights.
    behaviour = load_behaviour(TASK)
    card = behaviour.card | {"policies": behaviour.card["policies"] | {"medium": {"step": 15000}}}
    card["policies"]["medium"] |= dict(zip(("return_mean", "return_std"), (1.0, 0.0)))
    torch.manual_seed(99)
    weights = {kind: actor.state_dict() for kind, actor in behaviour.actors.items()}
    weights |= {"medium": make_actor(TASK).state_dict(), "replay": [actor.state_dict() for actor in behaviour.replay]}
    save_behaviour(TASK, weights, card, behaviour_dir)
    remade = load_dataset("gen/hopper-medium-v0-500")
    assert "made from other behaviour policies than the installed ones" in capsys.readouterr().err
    assert remade.metadata["policies/medium/step"] == 15000
    assert not np.array_equal(remade.actions, first.actions)


def test_dataset_names_and_options():
    assert parse_dataset_name("gen/hopper-medium-replay-v0").kind == "medium-replay"
    assert parse_dataset_name("walker2d-medium-expert-v0-100000-seed2").name == "walker2d-medium-expert-v0-100k-seed2"
    assert parse_dataset_name("hopper-medium-v2") is None and parse_dataset_name("pendulum-scripted-v0") is None
    assert dataset_id_with_options("gen/halfcheetah-expert-v0", size=200_000, seed=None) == (
        "gen/halfcheetah-expert-v0-200k"
    )
    assert dataset_id_with_options("gen/halfcheetah-expert-v0-200k", size=1_000_000, seed=3) == (
        "gen/halfcheetah-expert-v0-seed3"
    )
    with pytest.raises(ValueError, match="behaviour datasets"):
        dataset_id_with_options("gen/pendulum-scripted-v0", size=10)


def test_missing_behaviour_policies_say_how_to_train_them(tmp_path, monkeypatch):
    monkeypatch.setenv("POLICYLAB_BEHAVIOUR_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="benchmarks/train_behaviour.py --tasks Walker2d-v5"):
        make_behaviour_dataset("walker2d-medium-v0", progress=False)


@pytest.mark.parametrize("task", ["Hopper-v5", "HalfCheetah-v5", "Walker2d-v5"])
def test_shipped_returns_equal_a_re_evaluation(task, monkeypatch):
    monkeypatch.delenv("POLICYLAB_BEHAVIOUR_DIR", raising=False)
    if task not in behaviour_tasks():
        pytest.skip(f"no behaviour policies shipped for {task} yet (benchmarks/train_behaviour.py makes them)")
    behaviour = load_behaviour(task)
    card = behaviour.card
    for kind in ("random", "medium"):  # the expert's 1000-step episodes would cost CI more time for the same check
        mean, std = policy_return(behaviour.actors[kind], task, card["evaluation_episodes"], card["evaluation_seed"])
        assert (mean, std) == pytest.approx(
            (card["policies"][kind]["return_mean"], card["policies"][kind]["return_std"])
        )
    assert card["replay_steps"][-1] == card["policies"]["medium"]["step"] and len(behaviour.replay) == len(
        card["replay_steps"]
    )
