"""A probabilistic one-step dynamics ensemble (MBPO / MOPO style), the model-based baseline of policy-guided
diffusion: rolled out autoregressively under a policy, its synthetic transitions are compared with PGD's.

Each member maps a normalised (s, a) to a diagonal Gaussian over the normalised (s' − s, r); members train on their
own bootstrap batches with the Gaussian negative log-likelihood, their log-variances soft-bounded by learned limits.
A held-out split picks each member's best snapshot and the `elites` with the lowest held-out error; rollouts draw an
elite per row and step, and sample from its Gaussian (or take its mean).

    model = DynamicsEnsemble.from_dataset(dataset)
    model.fit(dataset)
    rollout = model.rollout(policy, dataset.observations[:256], horizon=31)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from policylab.core.agent import CHECKPOINT_FORMAT, config_from_dict, config_to_dict, load_checkpoint, save_checkpoint
from policylab.core.data import OfflineDataset
from policylab.core.logging import progress_bar
from policylab.core.nets import EnsembleMLP

__all__ = ["DynamicsEnsemble", "DynamicsEnsembleConfig"]

ENSEMBLE_FORMAT = "policylab-dynamics-ensemble/1"


@dataclasses.dataclass
class DynamicsEnsembleConfig:
    """MBPO's model settings, with training measured in updates rather than epochs to convergence."""

    ensemble_size: int = 7
    """members trained"""
    elites: int = 5
    """members with the lowest held-out error, the ones rollouts use"""
    hidden_sizes: tuple[int, ...] = (200, 200, 200, 200)
    """hidden layers of every member (SiLU activations)"""
    learning_rate: float = 1e-3
    weight_decay: float = 5e-5
    """L2 penalty of Adam"""
    batch_size: int = 256
    """transitions per member per update"""
    training_steps: int = 20_000
    """updates of `fit`"""
    holdout: int = 5000
    """transitions held out to select snapshots and elites"""
    eval_every: int = 1000
    """updates between held-out evaluations (each member keeps its best snapshot)"""
    seed: int = 0
    device: str = "cpu"


class DynamicsEnsemble(nn.Module):
    """`ensemble_size` Gaussian models of (s' − s, r) given (s, a), in normalised units."""

    def __init__(self, observation_dim: int, action_dim: int, config: DynamicsEnsembleConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DynamicsEnsembleConfig()
        if not 1 <= config.elites <= config.ensemble_size:
            raise ValueError(f"elites must be between 1 and ensemble_size={config.ensemble_size}, got {config.elites}")
        self.observation_dim, self.action_dim = observation_dim, action_dim
        inputs, outputs = observation_dim + action_dim, observation_dim + 1
        self.network = EnsembleMLP(inputs, 2 * outputs, config.ensemble_size, config.hidden_sizes, nn.SiLU)
        self.max_log_variance = nn.Parameter(torch.full((outputs,), 0.5))
        self.min_log_variance = nn.Parameter(torch.full((outputs,), -10.0))
        for name, size in (("input_mean", inputs), ("target_mean", outputs)):
            self.register_buffer(name, torch.zeros(size))
        for name, size in (("input_std", inputs), ("target_std", outputs)):
            self.register_buffer(name, torch.ones(size))
        self.register_buffer("elite_members", torch.arange(config.elites))
        self.register_buffer("holdout_error", torch.full((config.ensemble_size,), float("inf")))
        self.training_steps = 0

    @classmethod
    def from_dataset(cls, dataset: OfflineDataset, config: DynamicsEnsembleConfig | None = None) -> DynamicsEnsemble:
        """A model sized for `dataset`, with its normalisation statistics."""
        model = cls(dataset.observation_dim, dataset.action_dim, config).to((config or DynamicsEnsembleConfig()).device)
        inputs, targets = _inputs_and_targets(dataset)
        for name, values in (("input", inputs), ("target", targets)):
            getattr(model, f"{name}_mean").copy_(torch.as_tensor(values.mean(axis=0)))
            getattr(model, f"{name}_std").copy_(torch.as_tensor(values.std(axis=0) + 1e-6))
        return model

    # -- model --------------------------------------------------------------------------------------

    def distribution(self, observations: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's mean and log-variance `[ensemble, batch, obs_dim + 1]` of the normalised (s' − s, r);
        inputs `[batch, ·]` are shared, `[ensemble, batch, ·]` give each member its own."""
        inputs = (torch.cat([observations, actions], dim=-1) - self.input_mean) / self.input_std
        mean, log_variance = self.network(inputs).chunk(2, dim=-1)
        log_variance = self.max_log_variance - F.softplus(self.max_log_variance - log_variance)
        log_variance = self.min_log_variance + F.softplus(log_variance - self.min_log_variance)
        return mean, log_variance

    def loss(self, observations: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Gaussian negative log-likelihood of normalised targets `[ensemble, batch, ·]`, plus the penalty that
        keeps the log-variance limits tight."""
        mean, log_variance = self.distribution(observations, actions)
        normalised = (targets - self.target_mean) / self.target_std
        likelihood = ((mean - normalised).square() * torch.exp(-log_variance) + log_variance).mean()
        return likelihood + 0.01 * (self.max_log_variance.sum() - self.min_log_variance.sum())

    @torch.no_grad()
    def member_errors(self, observations: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """`[ensemble]` mean squared error of each member's mean on normalised targets."""
        mean, _ = self.distribution(observations, actions)
        return (mean - (targets - self.target_mean) / self.target_std).square().mean(dim=(1, 2))

    # -- training -----------------------------------------------------------------------------------

    def fit(self, dataset: OfflineDataset, progress: bool = False) -> list[float]:
        """`config.training_steps` updates on bootstrap batches; keeps each member's best held-out snapshot and
        marks the elites. Returns the mean held-out error after each evaluation."""
        config, device = self.config, self.input_mean.device
        generator = torch.Generator().manual_seed(config.seed)
        inputs, targets = _inputs_and_targets(dataset)
        order = torch.randperm(len(inputs), generator=generator)
        holdout_size = min(config.holdout, len(inputs) // 5)
        if holdout_size < 1 or len(inputs) - holdout_size < config.batch_size:
            raise ValueError(f"{len(inputs)} transitions are too few to train a dynamics ensemble on")
        data = torch.as_tensor(inputs, device=device), torch.as_tensor(targets, device=device)
        train = [tensor[order[holdout_size:].to(device)] for tensor in data]
        holdout = [tensor[order[:holdout_size].to(device)] for tensor in data]
        split = self.observation_dim

        optimizer = torch.optim.Adam(self.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        best = {name: value.clone() for name, value in self.network.state_dict().items()}
        history = []
        bar = progress_bar(config.training_steps, description="dynamics ensemble", enabled=progress)
        for step in range(config.training_steps):
            rows = torch.randint(len(train[0]), (config.ensemble_size, config.batch_size), generator=generator)
            batch_inputs, batch_targets = train[0][rows.to(device)], train[1][rows.to(device)]
            loss = self.loss(batch_inputs[..., :split], batch_inputs[..., split:], batch_targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            self.training_steps += 1
            if (step + 1) % config.eval_every == 0 or step + 1 == config.training_steps:
                errors = self.member_errors(holdout[0][:, :split], holdout[0][:, split:], holdout[1])
                improved = errors < self.holdout_error
                self.holdout_error.copy_(torch.where(improved, errors, self.holdout_error))
                for name, value in self.network.state_dict().items():
                    best[name][improved] = value[improved]
                history.append(float(errors.mean()))
            bar.update()
        bar.close()
        self.network.load_state_dict(best)
        self.elite_members.copy_(torch.argsort(self.holdout_error)[: config.elites])
        return history

    # -- rollouts -----------------------------------------------------------------------------------

    @torch.no_grad()
    def step(
        self,
        observations: torch.Tensor,
        actions: torch.Tensor,
        sample: bool = True,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next observations `[batch, obs_dim]` and rewards `[batch]` from a random elite per row."""
        mean, log_variance = self.distribution(observations, actions)
        pick = torch.randint(len(self.elite_members), (len(observations),), generator=generator)
        member = self.elite_members[pick.to(mean.device)]
        rows = torch.arange(len(observations), device=mean.device)
        prediction = mean[member, rows]
        if sample:
            noise = torch.randn(prediction.shape, generator=generator).to(prediction.device)
            prediction = prediction + torch.exp(0.5 * log_variance[member, rows]) * noise
        prediction = prediction * self.target_std + self.target_mean
        return observations + prediction[:, :-1], prediction[:, -1]

    @torch.no_grad()
    def rollout(
        self,
        policy: Callable[[torch.Tensor], torch.Tensor],
        starts: torch.Tensor | np.ndarray,
        horizon: int,
        sample: bool = True,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Roll `policy` (observations → actions, env units) out in the model from `starts` `[N, obs_dim]` for
        `horizon` steps: observations, actions, rewards and next_observations, each `[N, horizon, ·]`. Episodes
        are not ended (the model has no termination function)."""
        observations = torch.as_tensor(starts, dtype=torch.float32, device=self.input_mean.device)
        steps: dict[str, list[torch.Tensor]] = {
            "observations": [],
            "actions": [],
            "rewards": [],
            "next_observations": [],
        }
        for _ in range(horizon):
            actions = torch.as_tensor(policy(observations), dtype=torch.float32, device=observations.device)
            next_observations, rewards = self.step(observations, actions, sample, generator)
            for key, value in zip(steps, (observations, actions, rewards, next_observations), strict=True):
                steps[key].append(value)
            observations = next_observations
        return {key: torch.stack(values, dim=1) for key, values in steps.items()}

    # -- files --------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write config, dimensions and weights to `path`, atomically."""
        payload = {
            "format": CHECKPOINT_FORMAT,
            "kind": ENSEMBLE_FORMAT,
            "config": config_to_dict(self.config),
            "observation_dim": self.observation_dim,
            "action_dim": self.action_dim,
            "training_steps": self.training_steps,
            "model": self.state_dict(),
        }
        save_checkpoint(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> DynamicsEnsemble:
        """Rebuild a model written by `save`."""
        payload = load_checkpoint(path, map_location=device)
        if payload.get("kind") != ENSEMBLE_FORMAT:
            raise ValueError(f"{path} is not a dynamics ensemble (it holds {payload.get('kind', 'an agent')})")
        config = config_from_dict(DynamicsEnsembleConfig, payload["config"])
        model = cls(payload["observation_dim"], payload["action_dim"], config).to(device)
        model.load_state_dict(payload["model"])
        model.training_steps = int(payload["training_steps"])
        return model


def _inputs_and_targets(dataset: OfflineDataset) -> tuple[np.ndarray, np.ndarray]:
    """(s, a) `[N, obs + act]` and (s' − s, r) `[N, obs + 1]` of every transition."""
    inputs = np.concatenate([dataset.observations, dataset.actions], axis=1)
    targets = np.concatenate([dataset.next_observations - dataset.observations, dataset.rewards[:, None]], axis=1)
    return inputs, targets
