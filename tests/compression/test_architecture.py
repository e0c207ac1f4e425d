"""Layer descriptions: shrunk and layer-removed networks build and run, parameter counts, invalid networks."""

import pytest
import torch
from torch import nn

from policylab.compression import Architecture, InvalidArchitecture, Layer, describe_module, uniform_shrink

CNN = Architecture(
    (3, 12, 12),
    (Layer("conv", 8, 3, 1, 1), Layer("conv", 16, 3, 2, 1), Layer("linear", 32), Layer("linear", 10)),
)


def module_params(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def test_shapes_and_parameter_count():
    assert CNN.shapes() == [(8, 12, 12), (16, 6, 6), (32,), (10,)]
    # by hand: conv 3->8 k3, conv 8->16 k3, linear 576->32, linear 32->10
    assert CNN.num_params == (27 + 1) * 8 + (72 + 1) * 16 + (576 + 1) * 32 + (32 + 1) * 10
    assert CNN.num_params == module_params(CNN.build())


def test_removed_and_shrunk_networks_build_and_run():
    removed = CNN.remove_layers([False, True, False, True])
    assert removed.describe() == "conv16k3s2-linear10" and removed.problem(CNN) is None
    assert removed.build()(torch.randn(4, 3, 12, 12)).shape == (4, 10)
    # shrinkable: conv0 width, conv0 kernel, conv1 width, conv1 kernel, linear width (not the output layer)
    assert CNN.shrinkable == [(0, "width"), (0, "kernel"), (1, "width"), (1, "kernel"), (2, "width")]
    shrunk = CNN.shrink([0.5, 0.25, 1.0, 1.0, 0.25])
    assert shrunk.layers[0] == Layer("conv", 4, 1, 1, 0) and shrunk.layers[2] == Layer("linear", 8)
    network = shrunk.build()
    assert network(torch.randn(2, 3, 12, 12)).shape == (2, 10)
    assert shrunk.num_params == module_params(network) and shrunk.num_params < CNN.num_params
    assert [layer.width for layer in uniform_shrink(CNN, 0.5).layers] == [4, 8, 16, 10]


def test_invalid_architectures_are_named():
    assert "output layer was removed" in CNN.remove_layers([True, True, True, False]).problem(CNN)
    assert "no layers" in CNN.remove_layers([False] * 4).problem(CNN)
    tiny = Architecture((3, 2, 2), (Layer("conv", 4, 3, 1, 0), Layer("linear", 10)))
    with pytest.raises(InvalidArchitecture, match="shrinks the image"):
        tiny.build()
    conv_after_linear = Architecture((3, 8, 8), (Layer("linear", 4), Layer("conv", 4, 3), Layer("linear", 10)))
    assert "input is flat" in conv_after_linear.problem(conv_after_linear)
    assert CNN.problem(CNN) is None  # the teacher's own architecture is valid (its compression reward is 0)
    wider = CNN.shrink([2.0, 1.0, 1.0, 1.0, 1.0])
    assert "more than the teacher's" in wider.problem(CNN)


def test_describe_module_keeps_weights():
    module = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 5))
    architecture, rebuilt = describe_module(module, (3, 6, 6))
    assert architecture.describe() == "conv8k3s1-linear5"
    inputs = torch.randn(3, 3, 6, 6)
    torch.testing.assert_close(rebuilt(inputs), module(inputs))
    with pytest.raises(ValueError, match="MaxPool2d"):
        describe_module(nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2)), (3, 6, 6))
