"""O-DICE: the conjugates, each variant's value gradient against the formula, the policy's weighted behaviour
cloning, the rewards, the authors' networks, learning from a scripted expert's data, resuming a killed run, and the
CLI."""

import copy
import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from policylab.cli import main
from policylab.core.data.generate import make_pendulum_scripted
from policylab.core.nets import EnsembleLayerNorm, EnsembleLinear
from policylab.offline_rl import ODICE, ODICEConfig
from policylab.offline_rl.iql import reward_scale_from_returns
from policylab.offline_rl.odice import pearson_chi2_conjugate, reverse_kl_conjugate
from tests.conftest import make_random_dataset
from tests.offline_rl.conftest import assert_beats_random_pendulum, killed_and_uninterrupted_runs

SMALL = {"hidden_sizes": (16, 16), "value_hidden_sizes": (16, 16), "device": "cpu"}


def test_conjugates_on_known_values():
    residuals = torch.tensor([-4.0, -2.0, 0.0, 2.0])
    # Pearson χ²: ω = max(y/2 + 1, 0) = 0, 0, 1, 2; f* = y·ω − (ω − 1)² = −1, −1, 0, 4 − 1
    torch.testing.assert_close(pearson_chi2_conjugate(residuals), torch.tensor([-1.0, -1.0, 0.0, 3.0]))
    torch.testing.assert_close(reverse_kl_conjugate(torch.tensor([1.0, 0.0])), torch.tensor([1.0, math.exp(-1.0)]))


@pytest.mark.parametrize(
    ("conjugate", "f"),
    [(pearson_chi2_conjugate, lambda x: (x - 1) ** 2), (reverse_kl_conjugate, lambda x: torch.xlogy(x, x))],
)
def test_conjugates_are_the_maximum_of_xy_minus_f_over_nonnegative_x(conjugate, f):
    ratios = torch.linspace(0.0, 20.0, 200_001, dtype=torch.float64)
    residuals = torch.tensor([-3.0, -0.5, 0.0, 0.7, 2.0], dtype=torch.float64)
    expected = (ratios * residuals[:, None] - f(ratios)).max(dim=1).values
    torch.testing.assert_close(conjugate(residuals), expected, atol=1e-6, rtol=0)


def hand_written_value_gradient(agent, batch, gradient, f_star):
    """∇ of O-DICE's value objective on the batch as the paper's formulas give it, for the agent's networks."""
    lam, eta, discount = 0.6, 0.5, 0.99
    parameters = list(agent.value.parameters())
    observations, actions, rewards, next_observations, terminals, _ = batch
    values, next_values = agent.value(observations), agent.value(next_observations)  # [2, batch]: both heads
    with torch.no_grad():
        target_values = agent.value_target(observations).min(dim=0).values
        target_next_values = agent.value_target(next_observations).min(dim=0).values
    bootstrap = discount * (1 - terminals)

    def flat_gradient(loss):
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, parameters, retain_graph=True)])

    value_gradient = flat_gradient((1 - lam) * values.mean())
    if gradient == "true":
        residuals = rewards + bootstrap * next_values - values
        return value_gradient + flat_gradient(lam * f_star(residuals).mean()), residuals
    forward_residuals = rewards + bootstrap * target_next_values - values
    forward = flat_gradient(lam * f_star(forward_residuals).mean())
    if gradient == "semi":
        return value_gradient + forward, forward_residuals
    backward = flat_gradient(lam * eta * f_star(rewards + bootstrap * next_values - target_values).mean())
    parallel = (forward @ backward) / (forward @ forward)
    return value_gradient + forward + (backward - parallel * forward), forward_residuals


@pytest.mark.parametrize("gradient", ["orthogonal", "true", "semi"])
@pytest.mark.parametrize(("f_divergence", "f_star"), [("pearson_chi2", pearson_chi2_conjugate), ("reverse_kl", None)])
def test_update_steps_with_the_formula_gradient_and_weighted_behaviour_cloning(
    random_dataset, gradient, f_divergence, f_star
):
    # unscaled rewards: the random data's return spread is small, and scaled rewards would overflow exp in f*
    config = ODICEConfig(
        seed=0, gradient=gradient, f_divergence=f_divergence, backward_weight=0.5, normalize_rewards=False, **SMALL
    )
    agent = ODICE.from_dataset(random_dataset, config)
    with torch.no_grad():  # a target V apart from V, so forward and backward residuals differ
        for parameter in agent.value_target.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    batch = agent.prepare(random_dataset).sample(64)
    before = copy.deepcopy(agent)
    metrics = agent.update(batch)

    conjugate = f_star or (lambda y: torch.exp(y - 1))
    expected_gradient, residuals = hand_written_value_gradient(before, batch, gradient, conjugate)
    torch.testing.assert_close(torch.cat([p.grad.flatten() for p in agent.value.parameters()]), expected_gradient)
    # the policy: −mean over heads and batch of w·log π(a|s), w = max(δ, 0) (χ²) or exp(δ − 1) (KL), clipped at 100
    residuals = residuals.detach()
    weights = (residuals.clamp(min=0) if f_divergence == "pearson_chi2" else torch.exp(residuals - 1)).clamp(max=100)
    with torch.no_grad():
        policy = torch.distributions.Normal(before.actor(batch.observations), before.actor.log_std.exp())
        expected_policy_loss = -(weights * policy.log_prob(batch.actions).sum(-1)).mean()
    torch.testing.assert_close(metrics["train/policy_loss"], expected_policy_loss)
    # V̄ moves 0.005 of the way to the updated V
    for target, old, new in zip(
        agent.value_target.parameters(), before.value_target.parameters(), agent.value.parameters()
    ):
        torch.testing.assert_close(target, 0.995 * old + 0.005 * new)
    assert agent.num_updates == 1


def test_single_value_head(random_dataset):
    agent = ODICE.from_dataset(random_dataset, ODICEConfig(twin_values=False, layer_norm=False, **SMALL))
    assert agent.value(torch.zeros(3, random_dataset.observation_dim)).shape == (1, 3)
    metrics = agent.update(agent.prepare(random_dataset).sample(32))
    assert all(torch.isfinite(value) for value in metrics.values())


def test_rewards_are_scaled_by_the_return_spread_and_antmaze_rewards_shaped(random_dataset):
    reward_column = random_dataset.observation_dim + random_dataset.action_dim
    agent = ODICE.from_dataset(random_dataset, ODICEConfig(**SMALL))
    buffer = agent.prepare(random_dataset)
    scale = reward_scale_from_returns(random_dataset)
    torch.testing.assert_close(buffer.storage[:, reward_column], torch.from_numpy(random_dataset.rewards) * scale)

    antmaze = make_random_dataset(transitions=100)
    antmaze.rewards = (np.arange(100) % 10 == 9).astype(np.float32)  # 1 at the goal, else 0
    antmaze.dataset_id = "d4rl/antmaze-umaze-v2"
    buffer = ODICE.from_dataset(antmaze, ODICEConfig(**SMALL)).prepare(antmaze)
    expected = torch.from_numpy(np.where(antmaze.rewards == 0, -3.0, 0.0).astype(np.float32))
    torch.testing.assert_close(buffer.storage[:, reward_column], expected)


def test_networks_and_optimisers_are_the_authors():
    box = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    agent = ODICE(gym.spaces.Box(-np.inf, np.inf, (11,), np.float32), box)
    assert [layer.out_features for layer in agent.actor.net if isinstance(layer, nn.Linear)] == [1024, 1024, 3]
    assert not any(isinstance(layer, nn.Tanh) for layer in agent.actor.net)  # an unbounded mean
    assert agent.actor.log_std_bounds == (-5.0, 2.0)
    layers = agent.value.v.layers
    assert [layer.out_features for layer in layers if isinstance(layer, EnsembleLinear)] == [256, 256, 1]
    assert sum(isinstance(layer, EnsembleLayerNorm) for layer in layers) == 2
    assert agent.value(torch.zeros(4, 11)).shape == (2, 4)  # twin heads
    assert agent.value_optimizer.param_groups[0]["lr"] == 2e-4
    assert agent.value_optimizer.param_groups[0]["weight_decay"] == 0
    assert agent.actor_optimizer.param_groups[0]["lr"] == 2e-4
    assert agent.actor_optimizer.param_groups[0]["weight_decay"] == 1e-4
    # acting deterministically gives the mean clipped to the bounds
    with torch.no_grad():
        agent.actor.net[-1].bias.copy_(torch.tensor([5.0, -5.0, 0.25]))
        agent.actor.net[-1].weight.zero_()
    np.testing.assert_allclose(agent.act(np.zeros(11)), [1.0, -1.0, 0.25])


def test_odice_learns_pendulum_from_scripted_expert_data():
    dataset = make_pendulum_scripted(episodes=30, seed=0)
    # Faster rates than the authors' 2e-4, so V falls to Pendulum's negative returns within a few thousand steps
    # (with seeds 0-3 the return is −245 to −209 after 3000 steps, −415 to −242 after 2000)
    config = ODICEConfig(seed=0, hidden_sizes=(64, 64), value_hidden_sizes=(64, 64), value_lr=3e-3, policy_lr=1e-3)
    agent = ODICE.from_dataset(dataset, config)
    agent.fit(dataset, steps=3000, eval_env=None, progress=False)
    assert_beats_random_pendulum(agent)


def test_killed_run_resumes_to_the_same_parameters(random_dataset, tmp_path):
    killed_and_uninterrupted_runs(
        lambda: ODICE.from_dataset(random_dataset, ODICEConfig(seed=7, batch_size=32, **SMALL)),
        random_dataset,
        tmp_path,
        ["actor", "value", "value_target", "actor_optimizer", "value_optimizer"],
    )


def test_cli_trains_odice(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POLICYLAB_DATA", str(tmp_path / "data"))
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "odice" in capsys.readouterr().out
    run_dir = tmp_path / "run"
    args = ["train", "odice", "--dataset", "gen/pendulum-scripted-v0", "--steps", "20", "--eval-every", "10"]
    args += ["--eval-episodes", "1", "--run-dir", str(run_dir), "--no-progress", "--gradient", "semi"]
    main([*args, "--hidden-sizes", "16", "16", "--value-hidden-sizes", "16", "16", "--f-divergence", "reverse_kl"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["run_dir"] == str(run_dir) and "return_mean" in summary
    config = json.loads((run_dir / "config.json").read_text())["agent"]
    assert (config["gradient"], config["f_divergence"], config["residual_weight"]) == ("semi", "reverse_kl", 0.6)
