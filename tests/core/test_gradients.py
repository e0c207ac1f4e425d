"""The orthogonal-gradient projection: a hand-computed case, the projection on a network's gradients, and the
parallel, orthogonal and vanishing cases."""

import pytest
import torch
from torch import nn

from policylab.core.gradients import orthogonal_gradient


def test_projection_on_a_linear_value_equals_the_hand_computed_one():
    # V(x) = w·x + b with w = (1, 2), b = 0.5. Forward loss V(x₁), x₁ = (1, 0): g_f = (w: 1, 0; b: 1).
    # Backward loss 3·V(x₂), x₂ = (1, 1): g_b = (3, 3; 3). c = g_f·g_b / g_f·g_f = 6 / 2 = 3,
    # so g_f + g_b − 3·g_f = (1, 3; 1), whose backward part g_b − 3·g_f = (0, 3; 0) is orthogonal to g_f.
    value = nn.Linear(2, 1)
    with torch.no_grad():
        value.weight.copy_(torch.tensor([[1.0, 2.0]]))
        value.bias.fill_(0.5)
    parameters = list(value.parameters())
    forward = torch.autograd.grad(value(torch.tensor([1.0, 0.0])).sum(), parameters)
    backward = torch.autograd.grad(3 * value(torch.tensor([1.0, 1.0])).sum(), parameters)

    weight_gradient, bias_gradient = orthogonal_gradient(forward, backward)
    torch.testing.assert_close(weight_gradient, torch.tensor([[1.0, 3.0]]))
    torch.testing.assert_close(bias_gradient, torch.tensor([1.0]))


def test_projection_runs_over_all_parameters_of_a_network_flattened_together():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 1))
    parameters = list(network.parameters())
    states, next_states = torch.randn(16, 3), torch.randn(16, 3)
    forward = torch.autograd.grad(-network(states).square().mean(), parameters)
    backward = torch.autograd.grad(network(next_states).exp().mean(), parameters)

    combined = orthogonal_gradient(forward, backward)

    assert [gradient.shape for gradient in combined] == [parameter.shape for parameter in parameters]
    forward_flat = torch.cat([gradient.flatten() for gradient in forward])
    backward_flat = torch.cat([gradient.flatten() for gradient in backward])
    parallel = (forward_flat @ backward_flat) / (forward_flat @ forward_flat)
    expected = forward_flat + backward_flat - parallel * forward_flat
    torch.testing.assert_close(torch.cat([gradient.flatten() for gradient in combined]), expected)
    # what is added to g_f has no component along g_f
    assert torch.dot(expected - forward_flat, forward_flat).abs() < 1e-5 * forward_flat.norm() * backward_flat.norm()
    # per layer, the projection differs from the one over all parameters flattened together
    per_layer = [orthogonal_gradient(f, b) for f, b in zip(forward, backward)]
    assert not all(torch.allclose(a, b) for a, b in zip(per_layer, combined))


@pytest.mark.parametrize("scale", [2.5, -0.7])
def test_a_parallel_backward_gradient_vanishes(scale):
    forward = [torch.tensor([[1.0, -2.0], [0.5, 3.0]]), torch.tensor([4.0])]
    backward = [scale * gradient for gradient in forward]
    for combined, expected in zip(orthogonal_gradient(forward, backward), forward):
        torch.testing.assert_close(combined, expected)


def test_an_orthogonal_backward_gradient_is_added_unchanged():
    forward = [torch.tensor([1.0, 2.0]), torch.tensor([0.0, 3.0])]
    backward = [torch.tensor([2.0, -1.0]), torch.tensor([5.0, 0.0])]  # dot product 2 − 2 + 0 + 0 = 0
    for combined, f, b in zip(orthogonal_gradient(forward, backward), forward, backward):
        torch.testing.assert_close(combined, f + b)


def test_flat_vectors_and_a_vanishing_forward_gradient():
    backward = torch.tensor([1.0, -2.0, 3.0])
    combined = orthogonal_gradient(torch.zeros(3), backward)
    assert isinstance(combined, torch.Tensor)
    torch.testing.assert_close(combined, backward)  # c = 0 / max(0, 1e-10): the backward gradient as it is
    with pytest.raises(ValueError, match="same parameters"):
        orthogonal_gradient(torch.zeros(3), torch.zeros(4))
