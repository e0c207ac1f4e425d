"""A2PR: the actor's advantage-guided target and weights, the masked VAE and V's target, the per-dataset settings,
learning from a scripted expert's data, resuming a killed run, and the CLI."""

import copy
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from policylab.cli import main
from policylab.core.buffers import TransitionBatch
from policylab.core.data.generate import make_pendulum_scripted
from policylab.core.nets import VAE
from policylab.offline_rl import A2PR, A2PRConfig
from policylab.offline_rl import a2pr as a2pr_module
from policylab.offline_rl.a2pr import A2PRSettings, dataset_defaults, regularisation_targets, weighted_vae_losses
from tests.conftest import make_random_dataset
from tests.offline_rl.conftest import assert_beats_random_pendulum, killed_and_uninterrupted_runs

SMALL = {"hidden_sizes": (16, 16), "critic_hidden_sizes": (16, 16), "vae_hidden_sizes": (16, 16), "device": "cpu"}


def test_regularisation_targets_and_weights_take_every_branch():
    # V = 0; rows: both advantages positive, â better | a better; only â's positive; only a's; neither; a tie at V
    q_dataset = torch.tensor([1.0, 2.0, -1.0, 0.5, -1.0, 0.0])
    q_reconstructed = torch.tensor([2.0, 1.0, 0.5, -1.0, -2.0, 0.0])
    dataset_actions = torch.arange(6.0).unsqueeze(-1)
    reconstructed = -dataset_actions - 10.0
    targets, weights = regularisation_targets(
        dataset_actions, reconstructed, q_dataset, q_reconstructed, torch.zeros(6), mask_coef=0.4
    )
    use_reconstruction = torch.tensor([True, False, True, False, False, True]).unsqueeze(-1)
    torch.testing.assert_close(targets, torch.where(use_reconstruction, reconstructed, dataset_actions))
    torch.testing.assert_close(weights, torch.tensor([0.8, 0.8, 0.4, 0.4, 0.0, 0.4]))


class FixedCritic(nn.Module):
    """Q1(s, a) = s₀·a₀."""

    def forward(self, observations, actions, member=None):
        assert member == 0
        return observations[:, 0] * actions[:, 0]


class FixedValue(nn.Module):
    """V(s) = s₁, shaped [batch, 1] as the agent's MLP."""

    def forward(self, observations):
        return observations[:, 1:]


class HalvingVAE(nn.Module):
    """Reconstructs an action as half of it."""

    def forward(self, observations, actions):
        return 0.5 * actions, torch.zeros_like(actions), torch.ones_like(actions)


def test_behaviour_loss_on_a_hand_made_batch(monkeypatch):
    box = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    agent = A2PR(gym.spaces.Box(-np.inf, np.inf, (2,), np.float32), box, A2PRConfig(mask_coef=0.5, **SMALL))
    monkeypatch.setattr(agent, "critic", FixedCritic())
    monkeypatch.setattr(agent, "value", FixedValue())
    monkeypatch.setattr(agent, "vae", HalvingVAE())
    # s₀ = 1 so Q1(s, a) = a, V = s₁, â = π/2. Rows: â's advantage larger and both positive (target â, weight 1);
    # a's larger, both positive (a, 1); only â's positive (â, 0.5); only a's (a, 0.5); neither (a, 0).
    values = torch.tensor([0.0, 0.0, 0.3, 0.3, 0.9])
    observations = torch.stack([torch.ones(5), values], dim=1)
    actions = torch.tensor([[0.2], [0.6], [-0.5], [0.5], [0.6]])
    policy_actions = torch.tensor([[0.8], [0.2], [0.8], [-0.4], [0.4]], requires_grad=True)
    batch = TransitionBatch(observations, actions, torch.zeros(5), observations, torch.zeros(5))

    loss = agent.behaviour_loss(policy_actions, batch)
    loss.backward()

    # weight·(π − target)²: 1·0.4² + 1·0.4² + 0.5·0.4² + 0.5·0.9² + 0, averaged over the 5 rows
    torch.testing.assert_close(loss, torch.tensor(0.805 / 5))
    # the target â = π/2 is not detached: rows with target â have gradient w·2·(π − π/2)·(1 − 1/2) = w·π/2
    expected_gradient = torch.tensor([[1 * 0.4], [1 * 2 * (0.2 - 0.6)], [0.5 * 0.4], [0.5 * 2 * (-0.4 - 0.5)], [0.0]])
    torch.testing.assert_close(policy_actions.grad, expected_gradient / 5)


def test_vae_reconstruction_ignores_masked_out_samples():
    torch.manual_seed(0)
    vae = VAE(3, -np.ones(2), np.ones(2), hidden_sizes=(16, 16))
    observations, actions = torch.randn(4, 3), torch.rand(4, 2) * 2 - 1
    weights = torch.tensor([1.5, 0.0, 1.5, 0.0])

    def losses(actions):
        torch.manual_seed(1)  # the same latent noise for every call
        return weighted_vae_losses(vae, observations, actions, weights)

    reconstruction, kl = losses(actions)
    torch.manual_seed(1)
    reconstructed, mean, std = vae(observations, actions)
    torch.testing.assert_close(reconstruction, (weights[:, None] * (reconstructed - actions) ** 2).mean())
    torch.testing.assert_close(kl, (-0.5 * (1 + torch.log(std**2) - mean**2 - std**2)).mean())

    masked_out_changed, masked_in_changed = actions.clone(), actions.clone()
    masked_out_changed[1] = -actions[1]
    masked_in_changed[0] = -actions[0]
    assert torch.equal(losses(masked_out_changed)[0], reconstruction)
    assert not torch.equal(losses(masked_in_changed)[0], reconstruction)


def test_vae_mask_and_value_target_in_an_update(random_dataset, monkeypatch):
    agent = A2PR.from_dataset(random_dataset, A2PRConfig(seed=0, vae_weight=1.5, discount=0.9, **SMALL))
    batch = agent.prepare(random_dataset).sample(64)
    before = copy.deepcopy(agent)
    vae_weights = []

    def record_weights(vae, observations, actions, weights):
        vae_weights.append(weights)
        # the mask uses the critic just stepped and V before its step
        q_dataset = agent.critic(observations, actions, member=0)
        torch.testing.assert_close(weights, 1.5 * (q_dataset > before.value(observations).squeeze(-1)).float())
        return weighted_vae_losses(vae, observations, actions, weights)

    monkeypatch.setattr(a2pr_module, "weighted_vae_losses", record_weights)
    torch.manual_seed(123)
    metrics = agent.update(batch)  # update 1: critics, VAE and V, no actor step
    assert len(vae_weights) == 1 and 0 < vae_weights[0].mean() < 1.5
    assert "train/actor_loss" not in metrics

    torch.manual_seed(123)
    noise = (torch.randn_like(batch.actions) * 0.2).clamp(-0.5, 0.5)
    with torch.no_grad():
        next_actions = (before.actor_target(batch.next_observations) + noise).clamp(-1, 1)
        bootstrap = 0.9 * (1 - batch.terminals)
        target_q = batch.rewards + bootstrap * before.critic_target(batch.next_observations, next_actions).min(0).values
        online_q = batch.rewards + bootstrap * agent.critic(batch.next_observations, next_actions).min(0).values
        expected = F.mse_loss(before.value(batch.observations).squeeze(-1), torch.minimum(target_q, online_q))
    torch.testing.assert_close(metrics["train/value_loss"], expected)


@pytest.mark.parametrize(
    ("dataset_id", "env_id", "expected"),
    [
        ("gen/hopper-medium-v0", "Hopper-v5", (2.5, 1.0, 0.4, 0.995)),
        ("gen/walker2d-medium-replay-v0-200k", "Walker2d-v5", (2.5, 1.5, 1.2, 0.995)),
        ("d4rl/halfcheetah-medium-expert-v2", "HalfCheetah-v5", (40.0, 1.0, 15.0, 0.99)),
        ("hopper-medium-replay-v2", None, (2.5, 1.5, 0.5, 0.99)),
        ("/data/walker2d_medium-v2.hdf5", "Walker2d-v5", (2.5, 1.5, 1.0, 0.99)),
        ("gen/halfcheetah-expert-v0", "HalfCheetah-v5", (40.0, 1.0, 0.5, 0.99)),  # outside the table
        ("gen/pendulum-scripted-v0", "Pendulum-v1", (2.5, 1.0, 0.5, 0.99)),
        (None, None, (2.5, 1.0, 0.5, 0.99)),
    ],
)
def test_dataset_defaults(dataset_id, env_id, expected):
    assert dataset_defaults(dataset_id, env_id) == A2PRSettings(*expected)


def test_prepare_takes_the_dataset_defaults_unless_set():
    dataset = make_random_dataset(transitions=200, observation_dim=11, action_dim=3)
    dataset.dataset_id = "gen/hopper-medium-replay-v0"
    agent = A2PR.from_dataset(dataset, A2PRConfig(**SMALL))
    agent.prepare(dataset)
    assert (agent.alpha, agent.vae_weight, agent.mask_coef, agent.discount) == (2.5, 1.5, 0.5, 0.99)
    agent = A2PR.from_dataset(dataset, A2PRConfig(mask_coef=3.0, discount=0.9, **SMALL))
    agent.prepare(dataset)
    assert (agent.alpha, agent.vae_weight, agent.mask_coef, agent.discount) == (2.5, 1.5, 3.0, 0.9)


def test_network_sizes_are_the_authors():
    agent = A2PR(gym.spaces.Box(-np.inf, np.inf, (11,), np.float32), gym.spaces.Box(-1, 1, (3,), np.float32))
    linear_widths = [layer.out_features for layer in agent.actor.net if isinstance(layer, nn.Linear)]
    assert linear_widths == [256, 256, 256, 3]
    assert [layer.weight.shape[-1] for layer in agent.critic.q.layers if hasattr(layer, "weight")] == [256] * 4 + [1]
    assert [layer.out_features for layer in agent.value if isinstance(layer, nn.Linear)] == [256] * 4 + [1]
    assert [layer.out_features for layer in agent.vae.decoder if isinstance(layer, nn.Linear)] == [750, 750, 3]
    assert agent.vae.latent_dim == 6
    assert agent.vae_optimizer.param_groups[0]["lr"] == 1e-3 and agent.value_optimizer.param_groups[0]["lr"] == 3e-4


def test_a2pr_learns_pendulum_from_scripted_expert_data():
    dataset = make_pendulum_scripted(episodes=30, seed=0)
    config = A2PRConfig(seed=0, hidden_sizes=(64, 64), critic_hidden_sizes=(64, 64), vae_hidden_sizes=(64, 64))
    agent = A2PR.from_dataset(dataset, config)
    agent.fit(dataset, steps=4000, eval_env=None, progress=False)
    assert_beats_random_pendulum(agent)


def test_killed_run_resumes_to_the_same_parameters(random_dataset, tmp_path):
    names = ["actor", "critic", "actor_target", "critic_target", "value", "vae"]
    killed_and_uninterrupted_runs(
        lambda: A2PR.from_dataset(random_dataset, A2PRConfig(seed=7, batch_size=32, **SMALL)),
        random_dataset,
        tmp_path,
        [*names, "actor_optimizer", "critic_optimizer", "value_optimizer", "vae_optimizer"],
    )


def test_cli_trains_a2pr(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POLICYLAB_DATA", str(tmp_path / "data"))
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "a2pr" in capsys.readouterr().out
    run_dir = tmp_path / "run"
    args = ["train", "a2pr", "--dataset", "gen/pendulum-scripted-v0", "--steps", "20", "--eval-every", "10"]
    args += ["--eval-episodes", "1", "--run-dir", str(run_dir), "--no-progress", "--mask-coef", "2.0"]
    main([*args, "--hidden-sizes", "16", "16", "--critic-hidden-sizes", "16", "16", "--vae-hidden-sizes", "16", "16"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["run_dir"] == str(run_dir) and "return_mean" in summary
    config = json.loads((run_dir / "config.json").read_text())["agent"]
    assert (config["mask_coef"], config["alpha"], config["vae_hidden_sizes"]) == (2.0, None, [16, 16])
