"""Networks shared by every family: MLPs, critic ensembles, actors and a VAE.

Critic ensembles (TD3's twin Q, O-DICE's twin V, larger ensembles) are one module whose layers
hold a weight per member, so the whole ensemble runs as a single batched matmul.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import ClassVar, Literal, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

Activation = type[nn.Module]


def mlp(
    input_dim: int,
    output_dim: int,
    hidden_sizes: Sequence[int] = (256, 256),
    activation: Activation = nn.ReLU,
    output_activation: Activation | None = None,
    layer_norm: bool = False,
) -> nn.Sequential:
    """A fully connected network; `layer_norm` adds LayerNorm after every hidden linear layer."""
    layers: list[nn.Module] = []
    last = input_dim
    for size in hidden_sizes:
        layers.append(nn.Linear(last, size))
        if layer_norm:
            layers.append(nn.LayerNorm(size))
        layers.append(activation())
        last = size
    layers.append(nn.Linear(last, output_dim))
    if output_activation is not None:
        layers.append(output_activation())
    return nn.Sequential(*layers)


class EnsembleLinear(nn.Module):
    """`ensemble_size` independent linear layers applied as one batched matmul.

    Input `[batch, in]` is shared by every member; input `[ensemble, batch, in]` gives each member its own.
    Each member is initialised exactly as `nn.Linear` would be.
    """

    def __init__(self, in_features: int, out_features: int, ensemble_size: int) -> None:
        super().__init__()
        self.in_features, self.out_features, self.ensemble_size = in_features, out_features, ensemble_size
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_features))
        bound = 1.0 / math.sqrt(in_features)
        for member in range(ensemble_size):
            # nn.Linear's default: kaiming_uniform(a=sqrt(5)) on the [out, in] weight, uniform bias.
            weight = torch.empty(out_features, in_features)
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            self.weight.data[member] = weight.T
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, member: int | None = None) -> torch.Tensor:
        """`member` computes that one member only (`[batch, in] -> [batch, out]`)."""
        if member is not None:
            return torch.addmm(self.bias[member], x, self.weight[member])
        if x.dim() == 2:  # a view that shares the input between members (no copy, one batched matmul)
            x = x.unsqueeze(0).expand(self.ensemble_size, -1, -1)
        if self.out_features == 1:
            # A width-1 output is a matrix-vector product, which the batched GEMM does ~5x slower on CPU than
            # a multiply-and-sum (measured: 53 µs vs 10 µs for 2 members × 256 rows × 256 inputs).
            return (x * self.weight.transpose(1, 2)).sum(-1, keepdim=True) + self.bias
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, ensemble={self.ensemble_size}"


class EnsembleLayerNorm(nn.Module):
    """LayerNorm with a separate gain and bias per ensemble member."""

    def __init__(self, size: int, ensemble_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ensemble_size, 1, size))
        self.bias = nn.Parameter(torch.zeros(ensemble_size, 1, size))

    def forward(self, x: torch.Tensor, member: int | None = None) -> torch.Tensor:
        normalized = F.layer_norm(x, x.shape[-1:])
        if member is not None:
            return normalized * self.weight[member] + self.bias[member]
        return normalized * self.weight + self.bias


class EnsembleMLP(nn.Module):
    """An ensemble of identically shaped MLPs computed together: `[batch, in] -> [ensemble, batch, out]`."""

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        ensemble_size: int,
        hidden_sizes: Sequence[int] = (256, 256),
        activation: Activation = nn.ReLU,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        last = input_dim
        for size in hidden_sizes:
            layers.append(EnsembleLinear(last, size, ensemble_size))
            if layer_norm:
                layers.append(EnsembleLayerNorm(size, ensemble_size))
            layers.append(activation())
            last = size
        layers.append(EnsembleLinear(last, output_dim, ensemble_size))
        self.layers = nn.ModuleList(layers)
        self.ensemble_size = ensemble_size

    def forward(self, x: torch.Tensor, member: int | None = None) -> torch.Tensor:
        """All members `[ensemble, batch, out]`, or one `member` alone `[batch, out]`."""
        for layer in self.layers:
            x = layer(x, member) if isinstance(layer, EnsembleLinear | EnsembleLayerNorm) else layer(x)
        return x.to(self.layers[-1].weight.dtype)  # float32 out even when autocast ran the products in bfloat16


class EnsembleCritic(nn.Module):
    """`num_critics` Q-functions Q(s, a) as one module: returns `[num_critics, batch]`."""

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        hidden_sizes: Sequence[int] = (256, 256),
        num_critics: int = 2,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        self.q = EnsembleMLP(observation_dim + action_dim, 1, num_critics, hidden_sizes, layer_norm=layer_norm)

    def forward(self, observations: torch.Tensor, actions: torch.Tensor, member: int | None = None) -> torch.Tensor:
        """Q-values `[num_critics, batch]`, or `[batch]` of one `member`."""
        return self.q(torch.cat([observations, actions], dim=-1), member).squeeze(-1)


class EnsembleValue(nn.Module):
    """`num_values` state-value functions V(s) as one module: returns `[num_values, batch]`."""

    def __init__(
        self,
        observation_dim: int,
        hidden_sizes: Sequence[int] = (256, 256),
        num_values: int = 2,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        self.v = EnsembleMLP(observation_dim, 1, num_values, hidden_sizes, layer_norm=layer_norm)

    def forward(self, observations: torch.Tensor, member: int | None = None) -> torch.Tensor:
        """Values `[num_values, batch]`, or `[batch]` of one `member`."""
        return self.v(observations, member).squeeze(-1)


class ObservationNormalizer(nn.Module):
    """`(x − mean) / std` with statistics stored as buffers, so they are saved with the agent."""

    def __init__(self, observation_dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(observation_dim))
        self.register_buffer("std", torch.ones(observation_dim))

    def set_statistics(self, mean: torch.Tensor | Sequence[float], std: torch.Tensor | Sequence[float]) -> None:
        """Use these statistics from now on."""
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return (observations - self.mean) / self.std


class RunningNormalizer(nn.Module):
    """Running mean and variance of a stream of batches (Chan et al.'s parallel update, as Gymnasium's
    `NormalizeObservation` and SB3's `VecNormalize` keep them), normalising to `(x − mean) / sqrt(var + eps)`
    clipped to ±`clip`. Statistics are buffers, so they are saved with the agent."""

    def __init__(self, shape: int | tuple[int, ...], clip: float = 10.0, epsilon: float = 1e-8) -> None:
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))
        self.clip, self.epsilon = clip, epsilon

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        """Fold a batch `[n, *shape]` into the statistics."""
        batch = batch.to(torch.float64).reshape(-1, *self.mean.shape)
        batch_var, batch_mean = torch.var_mean(batch, dim=0, correction=0)
        count = batch.shape[0]
        total = self.count + count
        delta = batch_mean - self.mean
        self.mean.add_(delta * (count / total))
        self.var.mul_(self.count).add_(batch_var * count + delta.square() * (self.count * count / total)).div_(total)
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normalized = (x - self.mean) / torch.sqrt(self.var + self.epsilon)
        return normalized.clamp(-self.clip, self.clip).to(x.dtype if x.is_floating_point() else torch.float32)


def orthogonal_init(module: nn.Module, gain: float = math.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights with `gain` and constant biases for every linear layer of `module` (PPO's init)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight, gain)
            nn.init.constant_(layer.bias, bias)
    return module


class ActionScaler(nn.Module):
    """Maps actions between the squashed range [-1, 1] and a Box's [low, high]."""

    def __init__(self, low: torch.Tensor | Sequence[float], high: torch.Tensor | Sequence[float]) -> None:
        super().__init__()
        low_t = torch.as_tensor(low, dtype=torch.float32)
        high_t = torch.as_tensor(high, dtype=torch.float32)
        self.register_buffer("scale", (high_t - low_t) / 2.0)
        self.register_buffer("bias", (high_t + low_t) / 2.0)

    def forward(self, squashed: torch.Tensor) -> torch.Tensor:
        return squashed * self.scale + self.bias

    def inverse(self, actions: torch.Tensor) -> torch.Tensor:
        """From [low, high] back to [-1, 1]."""
        return (actions - self.bias) / self.scale


class DeterministicActor(nn.Module):
    """TD3-style policy: an MLP with a tanh output scaled to the action bounds."""

    def __init__(
        self,
        observation_dim: int,
        action_low: torch.Tensor | Sequence[float],
        action_high: torch.Tensor | Sequence[float],
        hidden_sizes: Sequence[int] = (256, 256),
    ) -> None:
        super().__init__()
        self.scaler = ActionScaler(action_low, action_high)
        self.net = mlp(observation_dim, self.scaler.scale.numel(), hidden_sizes, output_activation=nn.Tanh)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.scaler(self.net(observations))


class GaussianActor(nn.Module):
    """A Gaussian policy for weighted behaviour cloning (IQL, O-DICE): an MLP mean in the action's units and a
    state-independent log-std per action dimension, clamped to `log_std_bounds`. With `squash_mean` the mean is a
    tanh scaled to the action bounds, else the MLP's output scaled the same way but unbounded. Calling the module
    returns the mean."""

    def __init__(
        self,
        observation_dim: int,
        action_low: torch.Tensor | Sequence[float],
        action_high: torch.Tensor | Sequence[float],
        hidden_sizes: Sequence[int] = (256, 256),
        log_std_bounds: tuple[float, float] = (-5.0, 2.0),
        squash_mean: bool = True,
    ) -> None:
        super().__init__()
        self.scaler = ActionScaler(action_low, action_high)
        action_dim = self.scaler.scale.numel()
        self.net = mlp(observation_dim, action_dim, hidden_sizes, output_activation=nn.Tanh if squash_mean else None)
        self.log_std = nn.Parameter(torch.zeros(action_dim))
        self.log_std_bounds = log_std_bounds

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.scaler(self.net(observations))

    def log_prob(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Log-density `[batch]` of the given actions."""
        return gaussian_log_prob(actions, self(observations), self.log_std.clamp(*self.log_std_bounds))

    def act(self, observations: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """The mean clipped to the action bounds, or a sample from the Gaussian (not clipped)."""
        mean = self(observations)
        if deterministic:
            scale, bias = self.scaler.scale, self.scaler.bias
            return torch.clamp(mean, bias - scale, bias + scale)
        return torch.addcmul(mean, self.log_std.clamp(*self.log_std_bounds).exp(), torch.randn_like(mean))


class TanhGaussianActor(nn.Module):
    """SAC-style policy: a Gaussian squashed by tanh and scaled to the action bounds."""

    def __init__(
        self,
        observation_dim: int,
        action_low: torch.Tensor | Sequence[float],
        action_high: torch.Tensor | Sequence[float],
        hidden_sizes: Sequence[int] = (256, 256),
        log_std_bounds: tuple[float, float] = (-5.0, 2.0),
    ) -> None:
        super().__init__()
        self.scaler = ActionScaler(action_low, action_high)
        action_dim = self.scaler.scale.numel()
        self.trunk = mlp(observation_dim, hidden_sizes[-1], hidden_sizes[:-1], output_activation=nn.ReLU)
        self.head = nn.Linear(hidden_sizes[-1], 2 * action_dim)
        self.log_std_bounds = log_std_bounds
        # The action-independent part of the log-density (see `_log_density`), fixed by the bounds.
        self._log_density_constant = float(-action_dim * _TANH_GAUSSIAN_NORMALISER - self.scaler.scale.log().sum())

    def distribution(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-std of the Gaussian before squashing."""
        outputs = self.head(self.trunk(observations)).to(self.head.weight.dtype)  # float32 under bfloat16 autocast
        mean, log_std = outputs.chunk(2, dim=-1)
        return mean, bounded_log_std(log_std, self.log_std_bounds)

    def forward(self, observations: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action in the env's bounds and its log-density."""
        mean, log_std = self.distribution(observations)
        if deterministic:
            pre_tanh, noise = mean, torch.zeros_like(mean)
        else:
            noise = torch.randn_like(mean)
            pre_tanh = torch.addcmul(mean, log_std.exp(), noise)
        return torch.addcmul(self.scaler.bias, torch.tanh(pre_tanh), self.scaler.scale), self._log_density(
            pre_tanh, noise, log_std
        )

    def act(self, observations: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """An action in the env's bounds, without its log-density (cheaper, for acting)."""
        mean, log_std = self.distribution(observations)
        pre_tanh = mean if deterministic else torch.addcmul(mean, log_std.exp(), torch.randn_like(mean))
        return torch.addcmul(self.scaler.bias, torch.tanh(pre_tanh), self.scaler.scale)

    def log_prob(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Log-density of given in-bounds actions (clipped away from the tanh asymptotes)."""
        mean, log_std = self.distribution(observations)
        pre_tanh = torch.atanh(self.scaler.inverse(actions).clamp(-1.0 + 1e-6, 1.0 - 1e-6))
        return self._log_density(pre_tanh, (pre_tanh - mean) * torch.exp(-log_std), log_std)

    def _log_density(self, pre_tanh: torch.Tensor, noise: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
        """Log-density of the action tanh(u)·scale + bias (`tanh_gaussian_log_density_terms`); the constants are
        summed once, at construction."""
        return tanh_gaussian_log_density_terms(pre_tanh, noise, log_std).sum(-1) + self._log_density_constant


_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
# The action-independent part of a tanh-Gaussian's log-density per dimension, before −log scale.
_TANH_GAUSSIAN_NORMALISER = _LOG_SQRT_2PI + 2.0 * math.log(2.0)


def bounded_log_std(raw: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    """A network output smoothly clamped to log-std `bounds`, as CleanRL's SAC: low + (high − low)·(tanh x + 1)/2."""
    low, high = bounds
    return torch.add(torch.tanh(raw), 1.0 + 2.0 * low / (high - low)).mul_(0.5 * (high - low))


def tanh_gaussian_log_density_terms(pre_tanh: torch.Tensor, noise: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Per dimension, the action-dependent part of the log-density of tanh(u)·scale + bias with u = mean + std·noise,
    by the change of variables: log N(noise) − log std − log(1 − tanh²u) − log scale, where
    log(1 − tanh²u) = 2·(log 2 − u − softplus(−2u)); the constants (`_TANH_GAUSSIAN_NORMALISER`, log scale) are left
    to the caller."""
    return (pre_tanh + F.softplus(-2.0 * pre_tanh)).mul_(2.0).sub_(log_std).addcmul_(noise, noise, value=-0.5)


class ExpertSamples(NamedTuple):
    """One reparameterised action from every expert of a mixture, with the gate that weighs them."""

    actions: torch.Tensor  # [batch, experts, action_dim], in the env's bounds
    log_probs: torch.Tensor  # [batch, experts]: each expert's log-density of its own action
    gate_logits: torch.Tensor  # [batch, experts]


def take_expert(values: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Row i of `values` ([batch, experts, ...]) at expert `experts[i]`: [batch, ...]."""
    index = experts.reshape(-1, 1, *([1] * (values.dim() - 2))).expand(-1, 1, *values.shape[2:])
    return values.gather(1, index).squeeze(1)


class MixtureGaussianActor(nn.Module):
    """PMOE's policy (Ren et al., 2021): K diagonal Gaussian experts whose means are heads on one shared trunk,
    mixed by a softmax gate computed from the trunk's features with their gradient stopped (the gate is trained by
    its own loss, not through the trunk). Acting samples an expert from the gate, then its action; the
    deterministic action is the mean of the gate's most probable expert, or of an expert drawn from the gate
    (`deterministic_expert="sampled"`). Which is better depends on how the gate learns (README, PMOE section).

    Two flavours, as the authors use them: for SAC (the defaults) each expert is tanh-squashed into the env's
    bounds and its log-std is a state-dependent head clamped to `log_std_bounds`; for PPO (`squash=False`,
    `state_dependent_std=False`) each expert is a plain Gaussian whose actions the env clips and whose log-std is a
    free parameter per expert and dimension, starting at 0, exactly like PPO's unimodal `GaussianPolicy`."""

    def __init__(
        self,
        observation_dim: int,
        action_low: torch.Tensor | Sequence[float],
        action_high: torch.Tensor | Sequence[float],
        num_experts: int = 4,
        hidden_sizes: Sequence[int] = (256, 256),
        log_std_bounds: tuple[float, float] = (-5.0, 2.0),
        activation: Activation = nn.ReLU,
        squash: bool = True,
        state_dependent_std: bool = True,
        deterministic_expert: Literal["most_probable", "sampled"] = "most_probable",
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"a mixture needs at least one expert, got num_experts={num_experts}")
        if deterministic_expert not in ("most_probable", "sampled"):
            raise ValueError(f"deterministic_expert must be 'most_probable' or 'sampled', got {deterministic_expert!r}")
        self.scaler = ActionScaler(action_low, action_high)
        self.num_experts, self.action_dim = num_experts, self.scaler.scale.numel()
        self.squash, self.log_std_bounds, self.deterministic_expert = squash, log_std_bounds, deterministic_expert
        self.trunk = mlp(observation_dim, hidden_sizes[-1], hidden_sizes[:-1], activation, output_activation=activation)
        head_outputs = 2 if state_dependent_std else 1
        self.heads = nn.Linear(hidden_sizes[-1], num_experts * head_outputs * self.action_dim)
        self.log_std = None if state_dependent_std else nn.Parameter(torch.zeros(num_experts, self.action_dim))
        self.gate = nn.Linear(hidden_sizes[-1], num_experts)
        # Per action dimension, the log-density's constant (see `tanh_gaussian_log_density_terms`).
        constant = -_TANH_GAUSSIAN_NORMALISER - self.scaler.scale.log() if squash else torch.tensor(-_LOG_SQRT_2PI)
        self.register_buffer("_log_density_constant", constant, persistent=False)

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every expert's mean and log-std (before squashing) ([batch, experts, action_dim]) and the gate's logits."""
        features = self.trunk(observations)
        dtype = self.heads.weight.dtype  # float32 outputs even when autocast ran the products in bfloat16
        outputs = self.heads(features).to(dtype).unflatten(-1, (self.num_experts, -1, self.action_dim))
        if self.log_std is None:
            mean, raw_log_std = outputs.unbind(-2)
            log_std = bounded_log_std(raw_log_std, self.log_std_bounds)
        else:
            mean = outputs.squeeze(-2)
            log_std = self.log_std.expand_as(mean)
        return mean, log_std, self.gate(features.detach()).to(dtype)

    def gate_weights(self, observations: torch.Tensor) -> torch.Tensor:
        """The gate's probability of each expert: [batch, experts]."""
        return torch.softmax(self.gate(self.trunk(observations).detach()).to(self.gate.weight.dtype), dim=-1)

    def sample_experts(self, observations: torch.Tensor) -> ExpertSamples:
        """A reparameterised action from every expert and its log-density under that expert."""
        mean, log_std, gate_logits = self(observations)
        noise = torch.randn_like(mean)
        pre_squash = torch.addcmul(mean, log_std.exp(), noise)
        log_probs = self._log_density(pre_squash, noise, log_std).sum(-1)
        return ExpertSamples(self._squash(pre_squash), log_probs, gate_logits)

    def expert_log_prob(
        self, observations: torch.Tensor, actions: torch.Tensor, per_dimension: bool = False
    ) -> torch.Tensor:
        """Log-density of `actions` ([batch, action_dim]; in bounds when squashed) under every expert:
        [batch, experts], or per action dimension [batch, experts, action_dim] (each dimension's marginal, as the
        experts are diagonal)."""
        return self._expert_log_prob(self(observations)[:2], actions, per_dimension)

    def log_prob(self, observations: torch.Tensor, actions: torch.Tensor, gate_gradient: bool = True) -> torch.Tensor:
        """The mixture's log-density log Σ_k w_k(s)·π_k(a|s) of `actions`: [batch]. Without `gate_gradient` the
        gate's weights enter as constants."""
        mean, log_std, gate_logits = self(observations)
        log_weights = torch.log_softmax(gate_logits if gate_gradient else gate_logits.detach(), dim=-1)
        return torch.logsumexp(log_weights + self._expert_log_prob((mean, log_std), actions), dim=-1)

    def expert_actions(self, observations: torch.Tensor) -> torch.Tensor:
        """Every expert's deterministic action, its mean (squashed when the experts are): [batch, experts, action]."""
        return self._squash(self(observations)[0])

    def act(self, observations: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """An action (in the env's bounds when squashed): an expert drawn from the gate and that expert's sample;
        with `deterministic`, the mean (squashed) of the expert `deterministic_expert` names."""
        mean, log_std, gate_logits = self(observations)
        if deterministic and self.deterministic_expert == "most_probable":
            experts = gate_logits.argmax(-1)
        else:
            experts = torch.multinomial(torch.softmax(gate_logits, dim=-1), 1).squeeze(-1)
        pre_squash = take_expert(mean, experts)
        if not deterministic:
            pre_squash = torch.addcmul(pre_squash, take_expert(log_std, experts).exp(), torch.randn_like(pre_squash))
        return self._squash(pre_squash)

    def _squash(self, pre_squash: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.scaler.bias, torch.tanh(pre_squash), self.scaler.scale) if self.squash else pre_squash

    def _log_density(self, pre_squash: torch.Tensor, noise: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
        if self.squash:
            return tanh_gaussian_log_density_terms(pre_squash, noise, log_std) + self._log_density_constant
        return (noise.square() * -0.5 - log_std) + self._log_density_constant

    def _expert_log_prob(
        self, distribution: tuple[torch.Tensor, torch.Tensor], actions: torch.Tensor, per_dimension: bool = False
    ) -> torch.Tensor:
        mean, log_std = distribution
        if self.squash:
            squashed = self.scaler.inverse(actions).clamp(-1.0 + 1e-6, 1.0 - 1e-6)  # away from the tanh asymptotes
            actions = torch.atanh(squashed)
        pre_squash = actions.unsqueeze(-2).expand_as(mean)
        per_dimensions = self._log_density(pre_squash, (pre_squash - mean) * torch.exp(-log_std), log_std)
        return per_dimensions if per_dimension else per_dimensions.sum(-1)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Log-density of a diagonal Gaussian, summed over the last dimension."""
    z = (x - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


class VAE(nn.Module):
    """BCQ-style conditional VAE of actions given states, decoding through a tanh to the action bounds."""

    def __init__(
        self,
        observation_dim: int,
        action_low: torch.Tensor | Sequence[float],
        action_high: torch.Tensor | Sequence[float],
        latent_dim: int | None = None,
        hidden_sizes: Sequence[int] = (750, 750),
        log_std_bounds: tuple[float, float] = (-4.0, 15.0),
    ) -> None:
        super().__init__()
        self.scaler = ActionScaler(action_low, action_high)
        action_dim = self.scaler.scale.numel()
        self.latent_dim = latent_dim or 2 * action_dim
        self.encoder = mlp(observation_dim + action_dim, 2 * self.latent_dim, hidden_sizes)
        self.decoder = mlp(observation_dim + self.latent_dim, action_dim, hidden_sizes, output_activation=nn.Tanh)
        self.log_std_bounds = log_std_bounds

    def forward(
        self, observations: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction of `actions`, and the posterior's mean and std."""
        encoded = self.encoder(torch.cat([observations, actions], dim=-1)).to(self.scaler.scale.dtype)  # float32
        mean, log_std = encoded.chunk(2, dim=-1)
        std = log_std.clamp(*self.log_std_bounds).exp()
        latent = mean + std * torch.randn_like(std)
        return self.decode(observations, latent), mean, std

    def decode(self, observations: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        """Decode a latent (by default a prior sample clipped to [-0.5, 0.5], as BCQ does) into an action."""
        if latent is None:
            shape = (*observations.shape[:-1], self.latent_dim)
            latent = torch.randn(shape, device=observations.device).clamp(-0.5, 0.5)
        return self.scaler(self.decoder(torch.cat([observations, latent], dim=-1)))

    @staticmethod
    def kl_divergence(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """KL(q(z|s,a) || N(0, I)) per sample, summed over latent dimensions."""
        return 0.5 * (mean.pow(2) + std.pow(2) - 1.0 - 2.0 * std.log()).sum(-1)


def bf16_autocast(device: torch.device | str, enabled: bool = True) -> torch.autocast:
    """A context in which network calls run their matrix products in bfloat16 (when `enabled`), while weights,
    gradients and optimiser state stay float32: faster on CPUs with AVX512-BF16 or AMX and on recent GPUs, slower
    on CPUs without native bfloat16. The cache of bfloat16 weight copies is off, so a network stepped inside the
    context is read with its new weights (re-casting them costs little beside the products)."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=enabled, cache_enabled=False)


def adam(parameters: Iterable[nn.Parameter], lr: float, **kwargs) -> torch.optim.Adam:
    """Adam with the fused kernel (one call for all parameters; measured ~5-10% faster updates on CPU)."""
    return torch.optim.Adam(parameters, lr=lr, fused=True, **kwargs)


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target ← (1 − tau)·target + tau·source, for every parameter, in one fused call."""
    target_params = list(target.parameters())
    torch._foreach_lerp_(target_params, list(source.parameters()), tau)


def freeze(modules: Iterable[nn.Module]) -> None:
    """Turn off gradients of target networks."""
    for module in modules:
        module.requires_grad_(False)


ACTIVATIONS: dict[str, Activation] = {"tanh": nn.Tanh, "relu": nn.ReLU}


def _check_population_params(params: torch.Tensor, num_params: int) -> None:
    if params.ndim != 2 or params.shape[1] != num_params:
        raise ValueError(f"expected parameters of shape (population, {num_params}), got {tuple(params.shape)}")


def _stacked_linear_layers(
    params: torch.Tensor, offset: int, layer_shapes: Sequence[tuple[int, int]]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Linear layers read from the members' vectors from column `offset` on: (weight (P, in, out), bias (P, 1, out))
    per (in, out), each weight stored (in, out) row-major and followed by its bias."""
    layers = []
    for fan_in, fan_out in layer_shapes:
        weight = params[:, offset : offset + fan_in * fan_out].reshape(-1, fan_in, fan_out).contiguous()
        offset += fan_in * fan_out
        layers.append((weight, params[:, offset : offset + fan_out].unsqueeze(1).contiguous()))
        offset += fan_out
    return layers


@dataclasses.dataclass(frozen=True)
class PopulationMLP:
    """An MLP architecture whose weights are one flat vector per population member, so that P members run as
    one batched network: per layer, one batched matmul over stacked weights (`torch.baddbmm`).

    Layout of a member's vector, layer after layer: the weight as (in, out) row-major, then the bias.
    """

    input_dim: int
    output_dim: int
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    output_activation: str | None = "tanh"

    def __post_init__(self) -> None:
        for name in (self.activation, self.output_activation):
            if name is not None and name not in ACTIVATIONS:
                raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")

    @property
    def layer_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of every linear layer."""
        sizes = [self.input_dim, *self.hidden_sizes, self.output_dim]
        return list(zip(sizes[:-1], sizes[1:]))

    @property
    def num_params(self) -> int:
        """Length of one member's parameter vector."""
        return sum((fan_in + 1) * fan_out for fan_in, fan_out in self.layer_shapes)

    def initial_params(
        self, population: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """(population, num_params) vectors drawn like `nn.Linear`'s default: U(-1/sqrt(in), 1/sqrt(in))."""
        parts = []
        for fan_in, fan_out in self.layer_shapes:
            bound = 1 / math.sqrt(fan_in)
            unit = torch.rand(population, (fan_in + 1) * fan_out, generator=generator, device=device)
            parts.append((2 * unit - 1) * bound)
        return torch.cat(parts, dim=1)

    def stack(self, params: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(population, num_params) vectors as contiguous stacked (weight (P, in, out), bias (P, 1, out)) layers."""
        _check_population_params(params, self.num_params)
        return _stacked_linear_layers(params, 0, self.layer_shapes)

    def forward(self, layers: list[tuple[torch.Tensor, torch.Tensor]], inputs: torch.Tensor) -> torch.Tensor:
        """Outputs (P, N, output_dim) of every member (layers from `stack`) on its own inputs (P, N, input_dim)."""
        x = inputs
        for index, (weight, bias) in enumerate(layers):
            x = torch.baddbmm(bias, x, weight)
            name = self.activation if index < len(layers) - 1 else self.output_activation
            if name is not None:
                x = getattr(torch, name)(x)  # torch.tanh, torch.relu
        return x

    def to_module(self, vector: torch.Tensor) -> nn.Sequential:
        """One member as an ordinary `nn.Sequential` (built by `mlp`) holding the weights of `vector`."""
        output = ACTIVATIONS[self.output_activation] if self.output_activation else None
        module = mlp(self.input_dim, self.output_dim, self.hidden_sizes, ACTIVATIONS[self.activation], output)
        linears = [layer for layer in module if isinstance(layer, nn.Linear)]
        with torch.no_grad():
            for linear, (weight, bias) in zip(linears, self.stack(vector.reshape(1, -1))):
                linear.weight.copy_(weight[0].T)
                linear.bias.copy_(bias[0, 0])
        return module

    def from_module(self, module: nn.Module) -> torch.Tensor:
        """The parameter vector of a network of this architecture (the inverse of `to_module`)."""
        linears = [layer for layer in module.modules() if isinstance(layer, nn.Linear)]
        if [(linear.in_features, linear.out_features) for linear in linears] != self.layer_shapes:
            raise ValueError(f"the module's linear layers do not match {self.layer_shapes}")
        return torch.cat([torch.cat([linear.weight.T.reshape(-1), linear.bias]) for linear in linears]).detach()

    def initial_bounds(self) -> torch.Tensor:
        """Per parameter, the bound b of its default initialisation U(−b, b): 1/sqrt(fan_in) of its layer (float64)."""
        return torch.cat(
            [
                torch.full(((fan_in + 1) * fan_out,), 1 / math.sqrt(fan_in), dtype=torch.float64)
                for fan_in, fan_out in self.layer_shapes
            ]
        )


class PixelScale(nn.Module):
    """uint8 pixel values (as floats) to [0, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / 255.0


@dataclasses.dataclass(frozen=True)
class PopulationNatureCNN:
    """The Nature-DQN network (Mnih et al., 2015) on stacked 84×84 frames, with one flat weight vector per population
    member, so that P members run as grouped convolutions and batched matmuls. Pixels are scaled to [0, 1]; the
    outputs are one score per discrete action (the policy takes the best).

    Layout of a member's vector, layer after layer: the weight (a convolution's as (out, in, k, k), a linear
    layer's as (in, out)), then the bias.
    """

    input_dim: int
    """stacked frames"""
    output_dim: int
    """discrete actions"""
    convolutions: ClassVar[tuple[tuple[int, int, int], ...]] = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
    """(channels, kernel, stride) of each convolution"""
    hidden_size: ClassVar[int] = 512
    frame_size: ClassVar[int] = 84

    @property
    def conv_shapes(self) -> list[tuple[int, int, int, int]]:
        """(out, in, kernel, stride) of every convolution."""
        inputs = [self.input_dim] + [channels for channels, _, _ in self.convolutions[:-1]]
        return [(out, fan_in, kernel, stride) for fan_in, (out, kernel, stride) in zip(inputs, self.convolutions)]

    @property
    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of the two linear layers after the convolutions."""
        size = self.frame_size
        for _, kernel, stride in self.convolutions:
            size = (size - kernel) // stride + 1
        flat = self.convolutions[-1][0] * size * size
        return [(flat, self.hidden_size), (self.hidden_size, self.output_dim)]

    def _layers(self) -> list[tuple[int, int, int]]:
        """(fan_in, weights, biases) of every layer, convolutions first."""
        convs = [
            (fan_in * kernel * kernel, out * fan_in * kernel * kernel, out)
            for out, fan_in, kernel, _ in self.conv_shapes
        ]
        return convs + [(fan_in, fan_in * fan_out, fan_out) for fan_in, fan_out in self.linear_shapes]

    @property
    def num_params(self) -> int:
        """Length of one member's parameter vector."""
        return sum(weights + biases for _, weights, biases in self._layers())

    def initial_bounds(self) -> torch.Tensor:
        """Per parameter, the bound b of `nn.Conv2d`'s and `nn.Linear`'s default initialisation U(−b, b)."""
        return torch.cat(
            [
                torch.full((weights + biases,), 1 / math.sqrt(fan_in), dtype=torch.float64)
                for fan_in, weights, biases in self._layers()
            ]
        )

    def initial_params(
        self, population: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """(population, num_params) vectors drawn like `nn.Conv2d`'s and `nn.Linear`'s defaults (float32)."""
        unit = torch.rand(population, self.num_params, generator=generator, device=device)
        return (2 * unit - 1) * self.initial_bounds().to(unit)

    def stack(self, params: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(population, num_params) vectors as grouped-convolution weights (P·out, in, k, k) and biases (P·out), then
        stacked linear weights (P, in, out) and biases (P, 1, out)."""
        _check_population_params(params, self.num_params)
        layers, offset = [], 0
        for out, fan_in, kernel, _ in self.conv_shapes:
            size = out * fan_in * kernel * kernel
            weight = params[:, offset : offset + size].reshape(-1, fan_in, kernel, kernel).contiguous()
            offset += size
            layers.append((weight, params[:, offset : offset + out].reshape(-1).contiguous()))
            offset += out
        return layers + _stacked_linear_layers(params, offset, self.linear_shapes)

    def forward(self, layers: list[tuple[torch.Tensor, torch.Tensor]], inputs: torch.Tensor) -> torch.Tensor:
        """Scores (P, N, actions) of every member (layers from `stack`) on its own frames (P, N, C, 84, 84)."""
        population, batch = inputs.shape[:2]
        dtype = layers[0][0].dtype
        x = inputs.to(dtype).transpose(0, 1).reshape(batch, -1, *inputs.shape[3:]) / 255.0
        for (weight, bias), (_, _, _, stride) in zip(layers, self.conv_shapes):
            x = torch.relu(F.conv2d(x, weight, bias, stride=stride, groups=population))
        x = x.reshape(batch, population, -1).transpose(0, 1)
        (hidden_weight, hidden_bias), (output_weight, output_bias) = layers[len(self.conv_shapes) :]
        return torch.baddbmm(output_bias, torch.relu(torch.baddbmm(hidden_bias, x, hidden_weight)), output_weight)

    def to_module(self, vector: torch.Tensor) -> nn.Sequential:
        """One member as an ordinary network (pixel scaling, convolutions, linear layers) holding `vector`."""
        modules: list[nn.Module] = [PixelScale()]
        for out, fan_in, kernel, stride in self.conv_shapes:
            modules += [nn.Conv2d(fan_in, out, kernel, stride), nn.ReLU()]
        (flat, hidden), (_, actions) = self.linear_shapes
        modules += [nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, actions)]
        module = nn.Sequential(*modules)
        weighted = [layer for layer in module if isinstance(layer, nn.Conv2d | nn.Linear)]
        with torch.no_grad():
            for layer, (weight, bias) in zip(weighted, self.stack(vector.reshape(1, -1))):
                layer.weight.copy_(weight if isinstance(layer, nn.Conv2d) else weight[0].T)
                layer.bias.copy_(bias.reshape(-1))
        return module
