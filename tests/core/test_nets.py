"""Shared networks: ensembles equal their members, Gaussian and tanh-Gaussian densities, VAE shapes, Polyak updates."""

import copy
import math

import pytest
import torch
from torch import nn

from policylab.core.nets import (
    VAE,
    EnsembleCritic,
    EnsembleLinear,
    GaussianActor,
    TanhGaussianActor,
    mlp,
    polyak_update,
)


@pytest.mark.parametrize("out_features", [3, 1])  # width 1 takes its own multiply-and-sum path
def test_ensemble_linear_equals_separate_linear_layers(out_features):
    torch.manual_seed(0)
    layer = EnsembleLinear(5, out_features, ensemble_size=4)
    x = torch.randn(8, 5)
    out = layer(x)
    assert out.shape == (4, 8, out_features)
    for member in range(4):
        torch.testing.assert_close(out[member], x @ layer.weight[member] + layer.bias[member, 0])
        torch.testing.assert_close(layer(x, member=member), out[member])
    per_member = torch.randn(4, 8, 5)
    torch.testing.assert_close(layer(per_member)[2], per_member[2] @ layer.weight[2] + layer.bias[2, 0])


def test_ensemble_critic_members_are_independent_and_one_member_matches():
    critic = EnsembleCritic(3, 2, hidden_sizes=(16, 16), num_critics=2, layer_norm=True)
    observations, actions = torch.randn(10, 3), torch.randn(10, 2)
    q = critic(observations, actions)
    assert q.shape == (2, 10)
    assert not torch.allclose(q[0], q[1])
    torch.testing.assert_close(critic(observations, actions, member=1), q[1])
    q[0].sum().backward()  # member 0's loss leaves member 1's weights untouched
    first_layer = critic.q.layers[0]
    assert first_layer.weight.grad[1].abs().sum() == 0 and first_layer.weight.grad[0].abs().sum() > 0


def test_tanh_gaussian_log_prob_matches_change_of_variables():
    torch.manual_seed(1)
    actor = TanhGaussianActor(4, action_low=[-2.0, -1.0], action_high=[2.0, 1.0], hidden_sizes=(16, 16))
    observations = torch.randn(6, 4)
    actions, log_prob = actor(observations)
    assert actions.shape == (6, 2) and (actions.abs() <= torch.tensor([2.0, 1.0])).all()
    mean, log_std = actor.distribution(observations)
    base = torch.distributions.Normal(mean, log_std.exp())
    transform = torch.distributions.TransformedDistribution(
        base,
        [
            torch.distributions.TanhTransform(),
            torch.distributions.AffineTransform(0.0, torch.tensor([2.0, 1.0])),
        ],
    )
    torch.testing.assert_close(log_prob, transform.log_prob(actions).sum(-1), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(actor.log_prob(observations, actions), log_prob, rtol=1e-3, atol=1e-3)
    with torch.no_grad():
        actor.head.bias[2:] = torch.tensor([-50.0, 50.0])  # log-std heads far outside the bounds
    log_std = actor.distribution(observations)[1]
    assert torch.allclose(log_std[:, 0], torch.tensor(-5.0)) and torch.allclose(log_std[:, 1], torch.tensor(2.0))
    deterministic, _ = actor(observations, deterministic=True)
    torch.testing.assert_close(deterministic, torch.tanh(mean) * torch.tensor([2.0, 1.0]))


@pytest.mark.parametrize("squash_mean", [True, False])
def test_gaussian_actor_density_bounds_and_clipped_mean(squash_mean):
    torch.manual_seed(2)
    bounds = {"action_low": [-2.0, -1.0], "action_high": [2.0, 1.0], "hidden_sizes": (16, 16)}
    actor = GaussianActor(4, **bounds, log_std_bounds=(-5.0, 2.0), squash_mean=squash_mean)
    observations, actions = torch.randn(6, 4), torch.randn(6, 2)
    with torch.no_grad():
        actor.log_std.copy_(torch.tensor([-9.0, 0.3]))  # the first is clamped to −5
    expected = torch.distributions.Normal(actor(observations), torch.tensor([-5.0, 0.3]).exp())
    torch.testing.assert_close(actor.log_prob(observations, actions), expected.log_prob(actions).sum(-1))
    output_layer = [layer for layer in actor.net if isinstance(layer, nn.Linear)][-1]
    with torch.no_grad():
        output_layer.weight.zero_()
        output_layer.bias.copy_(torch.tensor([3.0, -0.25]))
    mean = torch.tensor([2.0 * math.tanh(3.0), -math.tanh(0.25)]) if squash_mean else torch.tensor([6.0, -0.25])
    torch.testing.assert_close(actor(observations), mean.expand(6, 2))  # the raw output scaled to the bounds
    clipped = torch.clamp(mean, torch.tensor([-2.0, -1.0]), torch.tensor([2.0, 1.0]))  # the unsquashed 6 becomes 2
    torch.testing.assert_close(actor.act(observations, deterministic=True), clipped.expand(6, 2))


def test_vae_reconstructs_in_bounds_and_kl_is_zero_at_the_prior():
    vae = VAE(3, action_low=[-1.0] * 2, action_high=[1.0] * 2, hidden_sizes=(32, 32))
    reconstruction, mean, std = vae(torch.randn(5, 3), torch.rand(5, 2) * 2 - 1)
    assert reconstruction.shape == (5, 2) and mean.shape == (5, 4) and reconstruction.abs().max() <= 1
    assert vae.decode(torch.randn(7, 3)).shape == (7, 2)
    torch.testing.assert_close(VAE.kl_divergence(torch.zeros(2, 4), torch.ones(2, 4)), torch.zeros(2))


def test_polyak_update_moves_targets_by_tau():
    source = mlp(2, 2, (4,))
    target = copy.deepcopy(source)
    for parameter in target.parameters():
        nn.init.zeros_(parameter)
    polyak_update(target, source, tau=0.25)
    for target_parameter, source_parameter in zip(target.parameters(), source.parameters()):
        torch.testing.assert_close(target_parameter, 0.25 * source_parameter)


def test_running_normalizer_matches_gymnasiums_running_mean_std():
    import numpy as np
    from gymnasium.wrappers.utils import RunningMeanStd

    from policylab.core.nets import RunningNormalizer

    ours, reference = RunningNormalizer(3, clip=5.0), RunningMeanStd(shape=(3,))
    rng = np.random.default_rng(0)
    for size in (1, 5, 1, 64):
        batch = rng.normal(2.0, 3.0, (size, 3))
        ours.update(torch.as_tensor(batch))
        reference.update(batch)
    np.testing.assert_allclose(ours.mean.numpy(), reference.mean, rtol=1e-12)
    np.testing.assert_allclose(ours.var.numpy(), reference.var, rtol=1e-12)
    x = torch.tensor([[2.0, 100.0, -100.0]], dtype=torch.float32)
    expected = np.clip((x.numpy() - reference.mean) / np.sqrt(reference.var + 1e-8), -5.0, 5.0)
    np.testing.assert_allclose(ours(x).numpy(), expected, rtol=1e-6)
    assert ours(x).dtype == torch.float32
