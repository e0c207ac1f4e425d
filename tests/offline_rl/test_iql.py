"""IQL: the losses match the paper's (as CORL writes them), it learns from a scripted expert's data, a killed run
resumes exactly, and the CLI trains it."""

import copy
import json
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from policylab.cli import main
from policylab.core.data.generate import make_pendulum_scripted
from policylab.core.evaluation import evaluate
from policylab.offline_rl import IQL, IQLConfig
from policylab.offline_rl.iql import advantage_weights, expectile_loss, reward_scale_from_returns
from tests.offline_rl.conftest import killed_and_uninterrupted_runs

SMALL = {"hidden_sizes": (32, 32), "batch_size": 32, "device": "cpu"}


def test_expectile_loss_on_a_hand_computed_case():
    differences = torch.tensor([-1.0, 2.0])
    torch.testing.assert_close(expectile_loss(differences, 0.7), torch.tensor((0.3 * 1.0 + 0.7 * 4.0) / 2))
    torch.testing.assert_close(expectile_loss(differences, 0.5), 0.5 * differences.square().mean())


def test_advantage_weights_are_exp_beta_advantage_clipped_at_100():
    advantages = torch.tensor([-1.0, 0.0, 0.5, 2.0])
    expected = torch.tensor([math.exp(-3.0), 1.0, math.exp(1.5), 100.0])  # exp(6) ≈ 403 is clipped
    torch.testing.assert_close(advantage_weights(advantages, beta=3.0, max_weight=100.0), expected)


def test_rewards_are_scaled_by_the_spread_of_episode_returns(random_dataset):
    returns = random_dataset.episode_returns()[:-1]  # the last episode has no terminal or timeout: left out
    assert not (random_dataset.terminals[-1] or random_dataset.timeouts[-1])
    scale = reward_scale_from_returns(random_dataset)
    assert scale == pytest.approx(1000.0 / (returns.max() - returns.min()))
    rewards = random_dataset.rewards.copy()
    agent = IQL.from_dataset(random_dataset, IQLConfig(**SMALL))
    buffer = agent.prepare(random_dataset)
    reward_column = random_dataset.observation_dim + random_dataset.action_dim
    torch.testing.assert_close(buffer.storage[:, reward_column], torch.from_numpy(rewards) * scale)
    np.testing.assert_array_equal(random_dataset.rewards, rewards)  # the caller's dataset is left as it was


def test_update_matches_hand_written_iql_losses(random_dataset):
    agent = IQL.from_dataset(random_dataset, IQLConfig(seed=0, hidden_sizes=(16, 16), device="cpu"))
    batch = agent.prepare(random_dataset).sample(32)
    before = copy.deepcopy(agent)
    metrics = agent.update(batch)

    with torch.no_grad():  # every term from the networks as they were before the update (CORL's order)
        advantages = before.critic_target(batch.observations, batch.actions).min(0).values - before.value(
            batch.observations
        ).squeeze(-1)
        expected_value_loss = (torch.where(advantages < 0, 0.3, 0.7) * advantages**2).mean()
        next_values = before.value(batch.next_observations).squeeze(-1)
        target = batch.rewards + 0.99 * (1 - batch.terminals) * next_values
        q1, q2 = before.critic(batch.observations, batch.actions)
        expected_q_loss = (F.mse_loss(q1, target) + F.mse_loss(q2, target)) / 2
        policy = torch.distributions.Normal(before.actor(batch.observations), before.actor.log_std.exp())
        log_probs = policy.log_prob(batch.actions).sum(-1)
        expected_actor_loss = -(torch.exp(3.0 * advantages).clamp(max=100) * log_probs).mean()
    torch.testing.assert_close(metrics["train/value_loss"], expected_value_loss)
    torch.testing.assert_close(metrics["train/q_loss"], expected_q_loss)
    torch.testing.assert_close(metrics["train/actor_loss"], expected_actor_loss)
    torch.testing.assert_close(metrics["train/advantage_mean"], advantages.mean())
    # the target Q moves 0.005 of the way to the updated critic
    for target, old, new in zip(
        agent.critic_target.parameters(), before.critic_target.parameters(), agent.critic.parameters()
    ):
        torch.testing.assert_close(target, 0.995 * old + 0.005 * new)
    assert agent.num_updates == 1


def test_iql_learns_pendulum_from_scripted_expert_data():
    dataset = make_pendulum_scripted(episodes=30, seed=0)
    agent = IQL.from_dataset(dataset, IQLConfig(seed=0, hidden_sizes=(128, 128), device="cpu"))
    agent.fit(dataset, steps=2000, eval_env=None, progress=False)
    assert agent.actor_optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)  # cosine-annealed to 0
    trained = evaluate(agent, "Pendulum-v1", episodes=10, seed=100)
    untrained = evaluate(
        IQL.from_dataset(dataset, IQLConfig(seed=0, hidden_sizes=(128, 128), device="cpu")),
        "Pendulum-v1",
        episodes=10,
        seed=100,
    )
    rng = np.random.default_rng(0)
    random_policy = evaluate(lambda obs: rng.uniform(-2, 2, (len(obs), 1)), "Pendulum-v1", episodes=10, seed=100)
    assert random_policy.return_mean < -900 and untrained.return_mean < -900
    assert trained.return_mean > random_policy.return_mean + 600, (trained.return_mean, random_policy.return_mean)


def test_killed_run_resumes_to_the_same_parameters_and_learning_rate(random_dataset, tmp_path):
    names = ["actor", "critic", "critic_target", "value", "actor_optimizer", "critic_optimizer", "value_optimizer"]
    uninterrupted, resumed = killed_and_uninterrupted_runs(
        lambda: IQL.from_dataset(random_dataset, IQLConfig(seed=7, **SMALL)), random_dataset, tmp_path, names
    )
    # the checkpoint at step 20 held the actor's rate at that point of CORL's cosine over the run's 40 steps
    assert resumed.actor_lr_schedule.last_epoch == uninterrupted.actor_lr_schedule.last_epoch == 40
    assert resumed.actor_optimizer.param_groups[0]["lr"] == 0.0  # annealed to 0 at the run's end


def test_cli_trains_iql(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POLICYLAB_DATA", str(tmp_path / "data"))
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "iql" in capsys.readouterr().out
    run_dir = tmp_path / "run"
    args = ["train", "iql", "--dataset", "gen/pendulum-scripted-v0", "--steps", "50", "--eval-every", "25"]
    args += ["--eval-episodes", "2", "--run-dir", str(run_dir), "--no-progress", "--hidden-sizes", "16", "16"]
    main([*args, "--beta", "5.0", "--batch-size", "32"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["run_dir"] == str(run_dir) and "return_mean" in summary
    for name in ("config.json", "metrics.csv", "checkpoint.pt", "agent.pt", "evaluation.json"):
        assert (run_dir / name).exists(), name
    recorded = json.loads((run_dir / "config.json").read_text())
    assert recorded["algorithm"] == "iql" and recorded["agent"]["beta"] == 5.0 and recorded["agent"]["expectile"] == 0.7
    main(["eval", str(run_dir / "agent.pt"), "--env", "Pendulum-v1", "--episodes", "2"])
    assert json.loads(capsys.readouterr().out)["lengths"] == [200, 200]
