"""A network described as a sequence of layers (linear, conv) that N2N edits: remove layers, shrink them, build.

    teacher = Architecture((3, 16, 16), (Layer("conv", 32, 3, 1, 1), Layer("conv", 64, 3, 2, 1), Layer("linear", 10)))
    student = teacher.remove_layers([True, False, True]).shrink([0.5, 1.0])   # one scale per shrinkable parameter
    problem = student.problem(teacher)        # None, or why the student cannot stand in for the teacher
    module = student.build()                  # conv -> act -> ... -> flatten -> linear -> act -> ... -> linear

Every layer but the last is followed by the activation; the first linear layer after a conv is preceded by a
flatten. A layer's description is N2N's layer state: kind, kernel, stride, width (outputs), padding.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from policylab.core.nets import ACTIVATIONS

LayerKind = Literal["linear", "conv"]
SHRINKABLE = {"linear": ("width",), "conv": ("width", "kernel")}
"""The parameters of a layer that the shrinkage policy scales, by kind (the output layer's are fixed)."""


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer: a linear layer of `width` outputs, or a square conv of `width` channels."""

    kind: LayerKind
    width: int
    kernel: int = 1
    stride: int = 1
    padding: int = 0

    def __post_init__(self) -> None:
        if self.kind not in SHRINKABLE:
            raise ValueError(f"unknown layer kind {self.kind!r}; N2N describes {', '.join(SHRINKABLE)} layers")
        if self.width < 1 or self.kernel < 1 or self.stride < 1 or self.padding < 0:
            raise ValueError(f"a layer needs positive width, kernel and stride and padding >= 0, got {self}")

    def features(self) -> list[float]:
        """N2N's layer state: [is conv, kernel, stride, width, padding]."""
        return [float(self.kind == "conv"), self.kernel, self.stride, self.width, self.padding]


class InvalidArchitecture(ValueError):
    """Layers whose shapes do not connect (a conv after a linear layer, an image shrunk to nothing)."""


@dataclasses.dataclass(frozen=True)
class Architecture:
    """An input shape ((features,) or (channels, height, width)), layers, and the activation between them."""

    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]
    activation: str = "relu"

    def __post_init__(self) -> None:
        if len(self.input_shape) not in (1, 3):
            raise ValueError(f"input_shape is (features,) or (channels, height, width), got {self.input_shape}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")

    # -- shapes and size ------------------------------------------------------------------------

    def shapes(self) -> list[tuple[int, ...]]:
        """The output shape of every layer; raises `InvalidArchitecture` where shapes do not connect."""
        if not self.layers:
            raise InvalidArchitecture("the network has no layers left")
        shape, shapes = self.input_shape, []
        for index, layer in enumerate(self.layers):
            if layer.kind == "conv":
                if len(shape) != 3:
                    raise InvalidArchitecture(f"layer {index} is a conv but its input is flat {shape}")
                size = [(side + 2 * layer.padding - layer.kernel) // layer.stride + 1 for side in shape[1:]]
                if min(size) < 1:
                    raise InvalidArchitecture(f"layer {index} shrinks the image {shape[1:]} to {tuple(size)}")
                shape = (layer.width, *size)
            else:
                shape = (layer.width,)
            shapes.append(shape)
        return shapes

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of the network's output."""
        return self.shapes()[-1]

    @property
    def num_params(self) -> int:
        """Weights and biases of the built network."""
        total, shape = 0, self.input_shape
        for layer, output in zip(self.layers, self.shapes()):
            if layer.kind == "conv":
                total += (shape[0] * layer.kernel**2 + 1) * layer.width
            else:
                total += (math.prod(shape) + 1) * layer.width
            shape = output
        return total

    def problem(self, teacher: Architecture) -> str | None:
        """Why this network cannot replace `teacher` (shapes that do not connect, another output, larger), or None
        when it can (as in the authors' code, the teacher's own architecture can: its compression reward is 0)."""
        try:
            output = self.output_shape
        except InvalidArchitecture as error:
            return str(error)
        if self.input_shape != teacher.input_shape:
            return f"input {self.input_shape} differs from the teacher's {teacher.input_shape}"
        if output != teacher.output_shape:
            return f"output {output} differs from the teacher's {teacher.output_shape} (the output layer was removed)"
        if self.num_params > teacher.num_params:
            return f"{self.num_params} parameters, more than the teacher's {teacher.num_params}"
        return None

    # -- edits -----------------------------------------------------------------------------------

    def remove_layers(self, keep: Sequence[bool]) -> Architecture:
        """The layers whose `keep` is true, in order (the result may be invalid: see `problem`)."""
        if len(keep) != len(self.layers):
            raise ValueError(f"{len(keep)} keep/remove choices for {len(self.layers)} layers")
        return dataclasses.replace(self, layers=tuple(layer for layer, kept in zip(self.layers, keep) if kept))

    @property
    def shrinkable(self) -> list[tuple[int, str]]:
        """(layer index, parameter) of every parameter the shrinkage policy scales, in order: each layer but the
        output one, its width then (convs) its kernel."""
        return [(index, name) for index, layer in enumerate(self.layers[:-1]) for name in SHRINKABLE[layer.kind]]

    def shrink(self, scales: Sequence[float]) -> Architecture:
        """Each shrinkable parameter scaled (rounded, at least 1); a conv's padding follows its kernel."""
        targets = self.shrinkable
        if len(scales) != len(targets):
            raise ValueError(f"{len(scales)} scales for {len(targets)} shrinkable parameters")
        layers = list(self.layers)
        for (index, name), scale in zip(targets, scales):
            layer = layers[index]
            value = max(1, math.floor(getattr(layer, name) * scale + 0.5))
            changes: dict[str, int] = {name: value}
            if name == "kernel":
                changes["padding"] = math.floor(layer.padding * value / layer.kernel + 0.5)
            layers[index] = dataclasses.replace(layer, **changes)
        return dataclasses.replace(self, layers=tuple(layers))

    # -- modules and plain data ---------------------------------------------------------------------

    def build(self) -> nn.Sequential:
        """The network as a module, freshly initialised (raises `InvalidArchitecture` if shapes do not connect)."""
        modules: list[nn.Module] = []
        shape = self.input_shape
        for index, (layer, output) in enumerate(zip(self.layers, self.shapes())):
            if layer.kind == "conv":
                modules.append(nn.Conv2d(shape[0], layer.width, layer.kernel, layer.stride, layer.padding))
            else:
                if len(shape) == 3:
                    modules.append(nn.Flatten())
                modules.append(nn.Linear(math.prod(shape), layer.width))
            if index < len(self.layers) - 1:
                modules.append(ACTIVATIONS[self.activation]())
            shape = output
        return nn.Sequential(*modules)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, ints, strings) for checkpoints and JSON."""
        return {
            "input_shape": list(self.input_shape),
            "layers": [dataclasses.asdict(layer) for layer in self.layers],
            "activation": self.activation,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Architecture:
        """Inverse of `to_dict`."""
        return cls(
            tuple(values["input_shape"]), tuple(Layer(**layer) for layer in values["layers"]), values["activation"]
        )

    @classmethod
    def mlp(cls, input_dim: int, hidden_sizes: Sequence[int], output_dim: int, activation: str = "relu"):
        """A fully connected network."""
        widths = (*hidden_sizes, output_dim)
        return cls((input_dim,), tuple(Layer("linear", width) for width in widths), activation)

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        """Widths of the layers before the output one."""
        return tuple(layer.width for layer in self.layers[:-1])

    def describe(self) -> str:
        """A short text such as `conv32k3s1-conv64k3s2-linear10`."""
        return "-".join(
            f"conv{layer.width}k{layer.kernel}s{layer.stride}" if layer.kind == "conv" else f"linear{layer.width}"
            for layer in self.layers
        )


def describe_module(module: nn.Module, input_shape: Sequence[int]) -> tuple[Architecture, nn.Sequential]:
    """The architecture of a feed-forward network (Linear, Conv2d, one kind of activation, Flatten, in a tree of
    containers) and the same network rebuilt by `Architecture.build` with its weights, so it can be distilled
    from. Anything else (pooling, normalisation, residual blocks) is refused with the module that was found."""
    layers: list[Layer] = []
    weights: list[nn.Module] = []
    activations: set[str] = set()
    names = {kind: name for name, kind in ACTIVATIONS.items()}
    for child in module.modules():
        if isinstance(child, nn.Conv2d):
            square = child.kernel_size[0] == child.kernel_size[1] and child.stride[0] == child.stride[1]
            if not square or child.groups != 1 or child.dilation != (1, 1) or isinstance(child.padding, str):
                raise ValueError(f"N2N describes square, ungrouped, undilated convs with integer padding, got {child}")
            layers.append(Layer("conv", child.out_channels, child.kernel_size[0], child.stride[0], child.padding[0]))
            weights.append(child)
        elif isinstance(child, nn.Linear):
            layers.append(Layer("linear", child.out_features))
            weights.append(child)
        elif type(child) in names:
            activations.add(names[type(child)])
        elif len(list(child.children())) == 0 and not isinstance(child, nn.Flatten | nn.Identity):
            raise ValueError(
                f"N2N cannot describe a {type(child).__name__} layer: networks of Linear, Conv2d, Flatten and one "
                f"activation ({', '.join(ACTIVATIONS)}) can be compressed"
            )
    if len(activations) > 1:
        raise ValueError(f"the network mixes activations {sorted(activations)}; N2N describes networks with one")
    architecture = Architecture(tuple(input_shape), tuple(layers), activations.pop() if activations else "relu")
    rebuilt = architecture.build()
    with torch.no_grad():
        for target, source in zip([m for m in rebuilt if isinstance(m, nn.Linear | nn.Conv2d)], weights):
            if target.weight.shape != source.weight.shape:
                raise ValueError(f"{source} does not take the output of the layer before it at input {input_shape}")
            target.load_state_dict(source.state_dict())
    return architecture, rebuilt
