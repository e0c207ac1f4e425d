"""PRDC: the actor's constraint pulls π(s) to the exact nearest dataset pair, α and β follow the task, and it
learns from a scripted expert's data."""

import copy
import json

import pytest
import torch
from torch.nn import functional as F

from policylab.cli import main
from policylab.core.data.generate import make_pendulum_scripted
from policylab.offline_rl import PRDC, PRDCConfig
from tests.conftest import make_random_dataset
from tests.offline_rl.conftest import assert_beats_random_pendulum


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("POLICYLAB_DATA", str(tmp_path))  # the search's candidate lists are cached here


def test_actor_loss_uses_the_brute_force_nearest_dataset_pair(random_dataset):
    agent = PRDC.from_dataset(random_dataset, PRDCConfig(seed=0, hidden_sizes=(16, 16), beta=1.5))
    buffer = agent.prepare(random_dataset)
    batch = buffer.sample(64)
    agent.update(batch)  # update 1: critic only
    actor_before = copy.deepcopy(agent.actor)
    metrics = agent.update(batch)  # update 2: critic, then the actor

    pi = actor_before(batch.observations)
    states = (torch.as_tensor(random_dataset.observations) - agent.normalizer.mean) / agent.normalizer.std
    keys = torch.cat([1.5 * states, torch.as_tensor(random_dataset.actions)], dim=1)
    queries = torch.cat([1.5 * batch.observations, pi.detach()], dim=1)  # batch states are normalised already
    nearest_actions = torch.as_tensor(random_dataset.actions)[torch.cdist(queries, keys).argmin(dim=1)]
    q_pi = agent.critic(batch.observations, pi, member=0)
    expected = -2.5 / q_pi.abs().mean() * q_pi.mean() + F.mse_loss(pi, nearest_actions)
    torch.testing.assert_close(metrics["train/actor_loss"], expected.detach(), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(nearest_actions, batch.actions)  # the constraint is not TD3+BC's own-action term
    assert metrics["train/full_search_fraction"].item() == agent.search.fallbacks / 64


def test_alpha_and_beta_follow_the_task_unless_set():
    hopper_like = make_random_dataset()  # no env id: the hopper/walker2d values
    agent = PRDC.from_dataset(hopper_like, PRDCConfig(seed=0, hidden_sizes=(8, 8)))
    agent.prepare(hopper_like)
    assert (agent.alpha, agent.beta) == (2.5, 2.0)
    cheetah = make_random_dataset(transitions=200, observation_dim=17, action_dim=6)
    cheetah.env_id = "HalfCheetah-v5"
    agent = PRDC.from_dataset(cheetah, PRDCConfig(seed=0, hidden_sizes=(8, 8)))
    agent.prepare(cheetah)
    assert (agent.alpha, agent.beta) == (40.0, 2.0)
    agent = PRDC.from_dataset(cheetah, PRDCConfig(seed=0, hidden_sizes=(8, 8), alpha=7.5, beta=7.5))
    agent.prepare(cheetah)
    assert (agent.alpha, agent.beta) == (7.5, 7.5) and agent.search.beta == 7.5


def test_prdc_learns_pendulum_from_scripted_expert_data():
    # A tenth of this data's actions are uniformly random, so at β = 2 nearly any action has a dataset pair close
    # by and the constraint barely binds (measured: no learning in 2000 steps); weighting states more, as the
    # authors do on AntMaze (β = 7.5), makes the nearest pair the one at the same state.
    dataset = make_pendulum_scripted(episodes=30, seed=0)
    agent = PRDC.from_dataset(dataset, PRDCConfig(seed=0, hidden_sizes=(64, 64), beta=10.0))
    agent.fit(dataset, steps=4000, eval_env=None, progress=False)
    assert_beats_random_pendulum(agent)


def test_cli_trains_prdc(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["train", "prdc", "--dataset", "gen/pendulum-scripted-v0", "--steps", "20", "--eval-every", "10"]
    main(
        [
            *args,
            "--eval-episodes",
            "1",
            "--beta",
            "10",
            "--hidden-sizes",
            "16",
            "16",
            "--run-dir",
            str(run_dir),
            "--no-progress",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["run_dir"] == str(run_dir) and "return_mean" in summary
    config = json.loads((run_dir / "config.json").read_text())["agent"]
    assert (config["alpha"], config["beta"]) == (None, 10.0)  # α left to the task default
