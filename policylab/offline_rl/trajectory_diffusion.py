"""A diffusion model of whole sub-trajectories of an offline dataset, and its policy-guided sampler.

The two parts of policy-guided diffusion (Jackson et al., 2024) that stand on their own:

- `TrajectoryDiffusion`: an EDM denoiser (Karras et al., 2022) over windows of `horizon` consecutive steps, each step
  a token `[observation, arctanh(action), reward, terminal]` with every dimension z-scored by the dataset's statistics.
  The network is a 1-D convolutional U-Net over time; training keeps an EMA copy, which is what samples.
- `sample_trajectories`: the stochastic Karras sampler with Heun's second-order step. With a `log_likelihood(obs,
  actions)` of a target policy, every step first moves the action tokens up its gradient (policy guidance), with
  the coefficient schedule λ_i = c·[(1 − i/N) + 0.3·sin(π(i + 1)/N)].

`windows_within_episodes` cuts the dataset into sub-trajectories that never cross an episode end (a terminated
episode ends with a token of its last next observation, so synthetic data can end episodes too), and
`trajectories_to_transitions` turns sampled windows back into transitions for an agent's replay.
Defaults fit a 2-core CPU (64 features, 32 sampling steps); `TrajectoryDiffusionConfig.paper()` has the authors'.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from policylab.core.agent import (
    CHECKPOINT_FORMAT,
    config_from_dict,
    config_to_dict,
    load_checkpoint,
    restore_generator,
    save_checkpoint,
)
from policylab.core.buffers import TransitionBatch
from policylab.core.data import OfflineDataset
from policylab.core.logging import progress_bar

ACTION_CLIP = 0.999  # actions are clipped to ±this (in [-1, 1] units) before arctanh, as the authors do
DIFFUSION_FORMAT = "policylab-trajectory-diffusion/2"  # /2: a final token after each terminal step


@dataclasses.dataclass
class TrajectoryDiffusionConfig:
    """Trajectory diffusion settings: token windows, U-Net, EDM training and the Karras sampler."""

    horizon: int = 32
    """steps per generated sub-trajectory (each gives horizon − 1 transitions)"""
    stride: int = 8
    """step between the starts of consecutive training windows within an episode"""
    features: int = 64
    """channels of the U-Net's first level (doubling at each level below); the paper's is 1024"""
    levels: int = 3
    """U-Net levels (the sequence is halved between levels)"""
    batch_size: int = 64
    """windows per training step"""
    learning_rate: float = 2e-3
    """peak Adam learning rate (warm-up over the first 10% of steps from a tenth of it, then cosine to 0)"""
    ema_decay: float = 0.995
    """decay of the EMA weights that sample"""
    ema_every: int = 10
    """training steps between EMA updates"""
    sigma_data: float = 1.0
    """EDM's data standard deviation (tokens are z-scored)"""
    log_sigma_mean: float = -1.2
    """mean of ln σ during training (EDM's P_mean)"""
    log_sigma_std: float = 1.2
    """std of ln σ during training (EDM's P_std)"""
    sampling_steps: int = 32
    """denoising steps of the sampler (each two denoiser calls, Heun); the paper's is 256"""
    sigma_min: float = 0.002
    """smallest noise level of the sampling schedule"""
    sigma_max: float = 80.0
    """largest noise level of the sampling schedule"""
    rho: float = 7.0
    """curvature ρ of the Karras schedule"""
    churn: float = 80.0
    """S_churn: total stochasticity added along the sampling path"""
    churn_sigma_min: float = 0.05
    """S_tmin: noise is added only at σ at least this"""
    churn_sigma_max: float = 50.0
    """S_tmax: and at most this"""
    churn_noise: float = 1.003
    """S_noise: scale of the added noise"""

    @classmethod
    def paper(cls) -> TrajectoryDiffusionConfig:
        """The authors' settings (a GPU's worth): 1024 features, 256 sampling steps."""
        return cls(features=1024, sampling_steps=256)


# ---------------------------------------------------------------------------------------------
# Windows and tokens


def sequence_layout(dataset: OfflineDataset) -> tuple[np.ndarray, np.ndarray]:
    """The token sequence the model trains on: every dataset step in order, and after each terminal step a final
    token holding that step's next observation, so the transition that ends an episode has its successor inside a
    window. Returns each step's position in the sequence `[N]` and the terminal steps `[M]` (the final token of
    terminal step j sits at position[j] + 1)."""
    terminal_rows = np.flatnonzero(dataset.terminals)
    steps = np.arange(len(dataset))
    return steps + np.searchsorted(terminal_rows, steps), terminal_rows


def windows_within_episodes(dataset: OfflineDataset, horizon: int, stride: int) -> np.ndarray:
    """Start positions (in `sequence_layout`'s sequence) of the training windows: every `stride` steps within each
    episode, plus the window that ends on a terminated episode's final token. A window never spans two episodes;
    one that ends on a time-out step is left out (its last step has no successor), as are episodes shorter than
    `horizon`."""
    if horizon < 2 or stride < 1:
        raise ValueError(f"horizon must be at least 2 and stride at least 1, got {horizon} and {stride}")
    positions, _ = sequence_layout(dataset)
    starts = []
    for episode in dataset.episodes():
        first = int(positions[episode.start])
        stop = int(positions[episode.stop - 1]) + 1 + int(episode.terminated)
        last_start = stop - horizon
        if last_start < first:
            continue
        episode_starts = set(range(first, last_start + 1, stride))
        if episode.terminated:
            episode_starts.add(last_start)
        elif episode.truncated:
            episode_starts.discard(last_start)
        starts.extend(sorted(episode_starts))
    if not starts:
        raise ValueError(
            f"dataset {dataset.dataset_id or ''} has no episode of at least {horizon} steps: lower the horizon"
        )
    return np.asarray(starts, dtype=np.int64)


def action_units(actions: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Actions in the env's bounds mapped to the unbounded token space: arctanh of their [-1, 1] position."""
    unit = (2.0 * (actions - low) / (high - low) - 1.0).clamp(-ACTION_CLIP, ACTION_CLIP)
    return torch.atanh(unit)


def env_actions(action_tokens: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Inverse of `action_units`: tanh, then scaled to the env's bounds."""
    return low + (torch.tanh(action_tokens) + 1.0) * 0.5 * (high - low)


# ---------------------------------------------------------------------------------------------
# EDM


def edm_scalings(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM's preconditioning (Karras et al., 2022, table 1): c_skip, c_out, c_in for noise level σ."""
    variance = sigma.square() + sigma_data**2
    return sigma_data**2 / variance, sigma * sigma_data / variance.sqrt(), variance.rsqrt()


def edm_loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """EDM's loss weight λ(σ) = (σ² + σ_data²) / (σ·σ_data)², which gives the network unit-variance targets."""
    return (sigma.square() + sigma_data**2) / (sigma * sigma_data).square()


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    """The `steps` noise levels from σ_max down to σ_min, evenly spaced in σ^(1/ρ), followed by 0."""
    ramp = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    inverse_rho_min, inverse_rho_max = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    sigmas = (inverse_rho_max + ramp * (inverse_rho_min - inverse_rho_max)) ** rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])


def guidance_schedule(coefficient: float, steps: int, cosine_weight: float = 0.3) -> torch.Tensor:
    """Guidance strength per sampling step: c·[(1 − i/N) + w·sin(π(i + 1)/N)], and none at the last step."""
    index = torch.arange(steps, dtype=torch.float64)
    strength = coefficient * ((1.0 - index / steps) + cosine_weight * torch.sin(math.pi * (index + 1) / steps))
    strength[-1] = 0.0
    return strength


# ---------------------------------------------------------------------------------------------
# The denoiser network


class NoiseEmbedding(nn.Module):
    """Sinusoidal features of the noise input c_noise(σ), mixed by a two-layer SiLU MLP."""

    def __init__(self, features: int) -> None:
        super().__init__()
        half = max(features // 8, 2)
        self.register_buffer("frequencies", torch.exp(-math.log(10000.0) * torch.arange(half) / (half - 1)))
        self.mlp = nn.Sequential(nn.Linear(2 * half, features), nn.SiLU(), nn.Linear(features, features))

    def forward(self, noise_input: torch.Tensor) -> torch.Tensor:
        angles = noise_input[:, None] * self.frequencies
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))


class ConvBlock(nn.Module):
    """Two kernel-3 convolutions, each followed by GroupNorm and ReLU; the noise embedding is added after the
    first convolution."""

    def __init__(self, in_channels: int, channels: int, embedding_features: int, groups: int = 8) -> None:
        super().__init__()
        self.first = nn.Conv1d(in_channels, channels, 3, padding=1)
        self.embedding = nn.Linear(embedding_features, channels)
        self.first_norm = nn.GroupNorm(groups, channels)
        self.second = nn.Conv1d(channels, channels, 3, padding=1)
        self.second_norm = nn.GroupNorm(groups, channels)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        x = self.first(x) + self.embedding(embedding)[:, :, None]
        x = F.relu(self.first_norm(x))
        return F.relu(self.second_norm(self.second(x)))


class UpBlock(nn.Module):
    """Nearest-neighbour upsampling to the skip's length, a kernel-2 convolution with the noise embedding, then
    the skip concatenated and a `ConvBlock`-like pair of convolutions."""

    def __init__(self, in_channels: int, channels: int, embedding_features: int, groups: int = 8) -> None:
        super().__init__()
        self.up = nn.Conv1d(in_channels, channels, 2)
        self.embedding = nn.Linear(embedding_features, channels)
        self.up_norm = nn.GroupNorm(groups, channels)
        self.merge = nn.Sequential(
            nn.Conv1d(2 * channels, channels, 3, padding=1),
            nn.GroupNorm(groups, channels),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, padding=1),
            nn.GroupNorm(groups, channels),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-1], mode="nearest")
        x = self.up(F.pad(x, (0, 1))) + self.embedding(embedding)[:, :, None]
        x = F.relu(self.up_norm(x))
        return self.merge(torch.cat([x, skip], dim=1))


class TemporalUNet(nn.Module):
    """A 1-D U-Net over the time axis of token windows `[batch, horizon, token_dim]`: `levels` convolution blocks
    with channels features·2^level, max-pooled between levels, and their mirror with skip connections."""

    def __init__(self, token_dim: int, features: int = 64, levels: int = 3) -> None:
        super().__init__()
        if features % 8:
            raise ValueError(f"features must be a multiple of 8 (GroupNorm uses 8 groups), got {features}")
        channels = [features * 2**level for level in range(levels)]
        self.noise_embedding = NoiseEmbedding(features)
        self.down = nn.ModuleList(
            ConvBlock(previous, current, features) for previous, current in zip([token_dim] + channels, channels)
        )
        self.up = nn.ModuleList(UpBlock(channels[level + 1], channels[level], features) for level in range(levels - 1))
        self.out = nn.Conv1d(features, token_dim, 1)

    def forward(self, tokens: torch.Tensor, noise_input: torch.Tensor) -> torch.Tensor:
        embedding = F.silu(self.noise_embedding(noise_input))
        x, skips = tokens.transpose(1, 2), []
        for level, block in enumerate(self.down):
            if level:
                x = F.max_pool1d(x, 2)
            x = block(x, embedding)
            skips.append(x)
        for level in reversed(range(len(self.up))):
            x = self.up[level](x, skips[level], embedding)
        return self.out(x).transpose(1, 2)


# ---------------------------------------------------------------------------------------------
# The model


class TrajectoryDiffusion(nn.Module):
    """EDM-preconditioned denoiser of token windows, with its EMA copy and the token statistics.

    Build it with `from_dataset`, train it with `fit`, sample with `sample_trajectories`; `save`/`load` keep it in
    one plain-data file.
    """

    def __init__(self, observation_dim: int, action_dim: int, config: TrajectoryDiffusionConfig | None = None):
        super().__init__()
        self.config = config or TrajectoryDiffusionConfig()
        self.observation_dim, self.action_dim = observation_dim, action_dim
        self.token_dim = observation_dim + action_dim + 2
        self.denoiser = TemporalUNet(self.token_dim, self.config.features, self.config.levels)
        self.ema = TemporalUNet(self.token_dim, self.config.features, self.config.levels)
        self.ema.load_state_dict(self.denoiser.state_dict())
        self.ema.requires_grad_(False)
        self.register_buffer("token_mean", torch.zeros(self.token_dim))
        self.register_buffer("token_std", torch.ones(self.token_dim))
        self.register_buffer("action_low", -torch.ones(action_dim))
        self.register_buffer("action_high", torch.ones(action_dim))
        self.training_steps = 0

    @classmethod
    def from_dataset(
        cls,
        dataset: OfflineDataset,
        config: TrajectoryDiffusionConfig | None = None,
        action_low: np.ndarray | None = None,
        action_high: np.ndarray | None = None,
    ) -> TrajectoryDiffusion:
        """An untrained model whose token statistics are the dataset's (actions bounded by `action_low/high`,
        by default [-1, 1])."""
        model = cls(dataset.observation_dim, dataset.action_dim, config)
        if action_low is not None:
            model.action_low.copy_(torch.as_tensor(action_low, dtype=torch.float32))
            model.action_high.copy_(torch.as_tensor(action_high, dtype=torch.float32))
        tokens = model.raw_tokens(dataset)
        std = tokens.std(dim=0)
        model.token_mean.copy_(tokens.mean(dim=0))
        model.token_std.copy_(torch.where(std > 0, std, torch.ones_like(std)))
        return model

    # -- tokens -------------------------------------------------------------------------------------

    def raw_tokens(self, dataset: OfflineDataset) -> torch.Tensor:
        """The unnormalised token sequence of `sequence_layout`: `[observation, arctanh(action), reward, terminal]`
        per dataset step, and `[next observation, 0, 0, 1]` after each terminal step."""
        actions = torch.as_tensor(dataset.actions)
        outside = (actions < self.action_low) | (actions > self.action_high)
        if outside.any():
            raise ValueError(
                f"dataset actions reach {actions.min():.3g}..{actions.max():.3g}, outside the action bounds "
                f"{self.action_low.tolist()}..{self.action_high.tolist()}: pass the env's bounds to from_dataset"
            )
        steps = torch.cat(
            [
                torch.as_tensor(dataset.observations),
                action_units(actions, self.action_low, self.action_high),
                torch.as_tensor(dataset.rewards)[:, None],
                torch.as_tensor(dataset.terminals, dtype=torch.float32)[:, None],
            ],
            dim=1,
        ).float()
        positions, terminal_rows = sequence_layout(dataset)
        tokens = torch.zeros(len(steps) + len(terminal_rows), steps.shape[1])
        tokens[torch.as_tensor(positions)] = steps
        final = torch.as_tensor(positions[terminal_rows] + 1)
        tokens[final, : self.observation_dim] = torch.as_tensor(dataset.next_observations[terminal_rows])
        tokens[final, -1] = 1.0
        return tokens

    def normalize(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens - self.token_mean) / self.token_std

    def unnormalize(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens * self.token_std + self.token_mean

    @property
    def action_columns(self) -> slice:
        return slice(self.observation_dim, self.observation_dim + self.action_dim)

    # -- denoising ----------------------------------------------------------------------------------

    def denoise(self, noisy: torch.Tensor, sigma: torch.Tensor, use_ema: bool = True) -> torch.Tensor:
        """D(x; σ) = c_skip·x + c_out·F(c_in·x, ln(σ)/4) for windows `[batch, horizon, token_dim]` and σ `[batch]`."""
        c_skip, c_out, c_in = (c[:, None, None] for c in edm_scalings(sigma, self.config.sigma_data))
        network = self.ema if use_ema else self.denoiser
        return c_skip * noisy + c_out * network(c_in * noisy, sigma.log() / 4.0)

    def loss(self, windows: torch.Tensor) -> torch.Tensor:
        """EDM's training loss on clean normalised windows: λ(σ)·‖D(x + σε; σ) − x‖², σ log-normal."""
        cfg = self.config
        sigma = torch.exp(cfg.log_sigma_mean + cfg.log_sigma_std * torch.randn(len(windows), device=windows.device))
        noisy = windows + sigma[:, None, None] * torch.randn_like(windows)
        weight = edm_loss_weight(sigma, cfg.sigma_data)[:, None, None]
        return (weight * (self.denoise(noisy, sigma, use_ema=False) - windows).square()).mean()

    # -- training -----------------------------------------------------------------------------------

    def fit(
        self,
        dataset: OfflineDataset,
        steps: int,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 1000,
        progress: bool = True,
        callback: Callable[[int, float], None] | None = None,
    ) -> list[float]:
        """Train the denoiser for `steps` steps in total on windows of `dataset`; returns the loss of every step.

        With `checkpoint`, model, optimiser and random state are saved there every `checkpoint_every` steps and at
        the end, and a later call with the same file continues from it (a finished model returns at once).
        `callback(step, loss)` runs after every step.
        """
        cfg, device = self.config, self.token_mean.device
        tokens = self.normalize(self.raw_tokens(dataset).to(device))
        starts = torch.as_tensor(windows_within_episodes(dataset, cfg.horizon, cfg.stride), device=device)
        offsets = torch.arange(cfg.horizon, device=device)
        optimizer = torch.optim.Adam(self.denoiser.parameters(), lr=cfg.learning_rate)
        warmup = max(steps // 10, 1)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: (
                0.1 + 0.9 * step / warmup
                if step < warmup
                else 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, steps - warmup) / max(steps - warmup, 1)))
            ),
        )
        generator = torch.Generator(device=device)
        generator.manual_seed(int(torch.randint(2**62, ()).item()))
        if checkpoint is not None and Path(checkpoint).exists():
            state = load_checkpoint(checkpoint, map_location=device)
            self.load_state_dict(state["model"])
            self.training_steps = int(state["training_steps"])
            if self.training_steps < steps:
                optimizer.load_state_dict(state["training"]["optimizer"])
                schedule.load_state_dict(state["training"]["schedule"])
                restore_generator(generator, state["training"]["generator"])
                torch.set_rng_state(state["training"]["torch_rng"])
        losses = []
        with progress_bar(steps, self.training_steps, "TrajectoryDiffusion", progress) as bar:
            while self.training_steps < steps:
                chosen = starts[torch.randint(len(starts), (cfg.batch_size,), device=device, generator=generator)]
                loss = self.loss(tokens[chosen[:, None] + offsets])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                self.training_steps += 1
                if self.training_steps % cfg.ema_every == 0:
                    with torch.no_grad():
                        torch._foreach_lerp_(
                            list(self.ema.parameters()), list(self.denoiser.parameters()), 1.0 - cfg.ema_decay
                        )
                losses.append(loss.item())
                if callback is not None:
                    callback(self.training_steps, losses[-1])
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
                finished = self.training_steps == steps
                if checkpoint is not None and (self.training_steps % checkpoint_every == 0 or finished):
                    training = {
                        "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(),
                        "generator": generator.get_state(),
                        "torch_rng": torch.get_rng_state(),
                    }
                    self.save(checkpoint, training=training)
        return losses

    # -- files --------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike, training: dict[str, Any] | None = None) -> None:
        """Write config, dimensions, weights (and an unfinished run's `training` state) to `path`, atomically."""
        payload = {
            "format": CHECKPOINT_FORMAT,
            "kind": DIFFUSION_FORMAT,
            "config": config_to_dict(self.config),
            "observation_dim": self.observation_dim,
            "action_dim": self.action_dim,
            "training_steps": self.training_steps,
            "model": self.state_dict(),
            "training": training or {},
        }
        save_checkpoint(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> TrajectoryDiffusion:
        """Rebuild a model written by `save`."""
        payload = load_checkpoint(path, map_location=device)
        kind = payload.get("kind", "an agent")
        if kind != DIFFUSION_FORMAT:
            reason = "an older token layout: train it again" if kind.startswith(DIFFUSION_FORMAT[:-1]) else kind
            raise ValueError(f"{path} is not a {DIFFUSION_FORMAT} model ({reason})")
        config = config_from_dict(TrajectoryDiffusionConfig, payload["config"])
        model = cls(payload["observation_dim"], payload["action_dim"], config).to(device)
        model.load_state_dict(payload["model"])
        model.training_steps = int(payload["training_steps"])
        return model


# ---------------------------------------------------------------------------------------------
# Sampling


LogLikelihood = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""log π(a | s) per row for observations and actions in the env's units (differentiable in the actions)."""


def guidance_gradient(
    model: TrajectoryDiffusion, windows: torch.Tensor, log_likelihood: LogLikelihood, normalize: bool
) -> torch.Tensor:
    """∇ of Σ_t log π(a_t | s_t) with respect to the normalised action tokens of each window (observations are
    held fixed); with `normalize`, each window's gradient is scaled to unit norm."""
    with torch.enable_grad():
        tokens = model.unnormalize(windows.detach())
        action_tokens = windows[..., model.action_columns].detach().requires_grad_(True)
        raw_actions = action_tokens * model.token_std[model.action_columns] + model.token_mean[model.action_columns]
        actions = env_actions(raw_actions, model.action_low, model.action_high)
        observations = tokens[..., : model.observation_dim]
        total = log_likelihood(observations.reshape(-1, model.observation_dim), actions.reshape(-1, model.action_dim))
        (gradient,) = torch.autograd.grad(total.sum(), action_tokens)
    if normalize:
        gradient = gradient / (gradient.flatten(1).norm(dim=1)[:, None, None] + 1e-8)
    return gradient


@torch.no_grad()
def sample_trajectories(
    model: TrajectoryDiffusion,
    count: int,
    log_likelihood: LogLikelihood | None = None,
    guidance: float = 0.0,
    normalize_guidance: bool = False,
    chunk_size: int = 1024,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`count` windows `[count, horizon, token_dim]` in normalised token space, drawn by the stochastic Karras
    sampler with Heun steps from the EMA denoiser; with `log_likelihood` and `guidance` > 0, the actions are pushed
    up the target policy's log-likelihood at every step but the last."""
    cfg, device = model.config, model.token_mean.device
    sigmas = karras_sigmas(cfg.sampling_steps, cfg.sigma_min, cfg.sigma_max, cfg.rho).tolist()
    strengths = guidance_schedule(guidance, cfg.sampling_steps).tolist()
    churn = min(cfg.churn / cfg.sampling_steps, math.sqrt(2.0) - 1.0)
    chunks = []
    for start in range(0, count, chunk_size):
        size = min(chunk_size, count - start)
        shape = (size, cfg.horizon, model.token_dim)
        x = sigmas[0] * torch.randn(shape, device=device, generator=generator)
        for step, (sigma, next_sigma) in enumerate(zip(sigmas[:-1], sigmas[1:])):
            if log_likelihood is not None and strengths[step] != 0.0:
                gradient = guidance_gradient(model, x, log_likelihood, normalize_guidance)
                x[..., model.action_columns] += strengths[step] * gradient
            gamma = churn if cfg.churn_sigma_min <= sigma <= cfg.churn_sigma_max else 0.0
            sigma_hat = sigma * (1.0 + gamma)
            if gamma > 0:
                noise = torch.randn(shape, device=device, generator=generator)
                x = x + math.sqrt(sigma_hat**2 - sigma**2) * cfg.churn_noise * noise
            slope = (x - model.denoise(x, x.new_full((size,), sigma_hat))) / sigma_hat
            x_next = x + (next_sigma - sigma_hat) * slope
            if next_sigma > 0:  # Heun's correction
                next_slope = (x_next - model.denoise(x_next, x.new_full((size,), next_sigma))) / next_sigma
                x_next = x + (next_sigma - sigma_hat) * 0.5 * (slope + next_slope)
            x = x_next
        chunks.append(x)
    return torch.cat(chunks)


def trajectories_to_transitions(model: TrajectoryDiffusion, windows: torch.Tensor) -> TransitionBatch:
    """The horizon − 1 transitions of each sampled window, in the env's units, flattened: step t's observation,
    action, reward and terminal (rounded at 0.5), and step t + 1's observation."""
    tokens = model.unnormalize(windows)
    observations = tokens[..., : model.observation_dim]
    actions = env_actions(tokens[..., model.action_columns], model.action_low, model.action_high)
    rewards, terminals = tokens[..., -2], (tokens[..., -1] > 0.5).float()
    return TransitionBatch(
        observations[:, :-1].reshape(-1, model.observation_dim),
        actions[:, :-1].reshape(-1, model.action_dim),
        rewards[:, :-1].reshape(-1),
        observations[:, 1:].reshape(-1, model.observation_dim),
        terminals[:, :-1].reshape(-1),
    )
