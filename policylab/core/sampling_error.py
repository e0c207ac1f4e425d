"""Sampling error: how far the action distribution of a batch of data is from the policy it should follow.

On-policy algorithms assume their data follows the current policy π_θ, but a finite sample never matches it
exactly. PROPS (Corrado & Hanna, 2024) measures the mismatch as KL(π_D ‖ π_θ), where π_D is the empirical
policy of the data: the maximum-likelihood fit of the (s, a) pairs, found as the authors (and the ROS paper
before them) do, by starting from a copy of π_θ and training only its output layer (and log-std) with Adam
on −mean log π_D(a|s), its features frozen. The KL is then estimated on the data itself:
mean over (s, a) of log π_D(a|s) − log π_θ(a|s). Zero means the data is exactly as likely under π_θ as it
can be; sampling with π_θ gives a positive value that shrinks as the sample grows.
"""

from __future__ import annotations

import copy
from typing import Protocol

import torch
from torch import nn

from policylab.core.nets import adam


class FittablePolicy(Protocol):
    """A policy module the estimator can copy and fit: its distribution and its output parameters."""

    def distribution(self, observations: torch.Tensor) -> torch.distributions.Distribution: ...

    def output_parameters(self) -> list[nn.Parameter]: ...


def sampling_error(
    policy: FittablePolicy,
    observations: torch.Tensor,
    actions: torch.Tensor,
    epochs: int = 100,
    learning_rate: float = 1e-3,
    minibatch_size: int = 512,
    max_grad_norm: float = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """KL(π_D ‖ π_θ) of `(observations, actions)` [n, ...] under `policy` (π_θ), estimated as the module docstring
    says; the authors' settings are the defaults (100 epochs, Adam 1e-3, gradient norm 1, minibatches of 512 per
    rollout batch). `policy` is left unchanged and the global random state untouched (minibatches are drawn from
    a generator seeded with `seed`)."""
    if observations.shape[0] != actions.shape[0] or observations.shape[0] == 0:
        raise ValueError(
            f"sampling_error needs as many observations as actions, at least one: got {observations.shape[0]} "
            f"and {actions.shape[0]}"
        )
    empirical = copy.deepcopy(policy)
    empirical.requires_grad_(False)
    parameters = empirical.output_parameters()
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = adam(parameters, lr=learning_rate)
    generator = torch.Generator(device=observations.device).manual_seed(seed)
    count = observations.shape[0]
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(count, device=observations.device, generator=generator)
            for indices in order.split(minibatch_size):
                loss = -empirical.distribution(observations[indices]).log_prob(actions[indices]).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(parameters, max_grad_norm)
                optimizer.step()
    with torch.no_grad():
        empirical_log_probs = empirical.distribution(observations).log_prob(actions)
        return (empirical_log_probs - policy.distribution(observations).log_prob(actions)).mean()
