"""Trajectory diffusion: EDM's coefficients, windows within episodes, the token layout, the Karras sampler against
an exact denoiser, policy guidance, and training that lowers the loss and resumes exactly."""

import math

import numpy as np
import pytest
import torch

from policylab.core.data import OfflineDataset
from policylab.core.data.generate import make_pendulum_scripted
from policylab.offline_rl.trajectory_diffusion import (
    TrajectoryDiffusion,
    TrajectoryDiffusionConfig,
    edm_loss_weight,
    edm_scalings,
    guidance_schedule,
    karras_sigmas,
    sample_trajectories,
    sequence_layout,
    trajectories_to_transitions,
    windows_within_episodes,
)

# A 1-D Gaussian mixture: weights, means, standard deviations.
WEIGHTS, MEANS, STDS = torch.tensor([0.3, 0.7]), torch.tensor([-2.0, 1.5]), torch.tensor([0.5, 0.5])


def mixture_posterior_mean(noisy: torch.Tensor, sigma: torch.Tensor, use_ema: bool = True) -> torch.Tensor:
    """E[y | y + σε = x] for y drawn elementwise from the mixture: the exact denoiser."""
    sigma = sigma.reshape(-1, *([1] * (noisy.dim() - 1)))[..., None]
    variance = STDS**2 + sigma**2
    log_responsibility = torch.log(WEIGHTS) - 0.5 * (noisy[..., None] - MEANS) ** 2 / variance - 0.5 * variance.log()
    responsibility = torch.softmax(log_responsibility, dim=-1)
    component_means = MEANS + STDS**2 / variance * (noisy[..., None] - MEANS)
    return (responsibility * component_means).sum(-1)


def exact_mixture_model(sampling_steps: int = 32) -> TrajectoryDiffusion:
    model = TrajectoryDiffusion(1, 1, TrajectoryDiffusionConfig(horizon=4, features=8, sampling_steps=sampling_steps))
    model.denoise = mixture_posterior_mean  # every token dimension is an independent draw of the mixture
    return model


def test_edm_coefficients_and_loss_weight_on_known_sigmas():
    c_skip, c_out, c_in = edm_scalings(torch.tensor([1.0, 2.0]), sigma_data=1.0)
    torch.testing.assert_close(c_skip, torch.tensor([0.5, 0.2]))
    torch.testing.assert_close(c_out, torch.tensor([1 / math.sqrt(2), 2 / math.sqrt(5)]))
    torch.testing.assert_close(c_in, torch.tensor([1 / math.sqrt(2), 1 / math.sqrt(5)]))
    torch.testing.assert_close(edm_loss_weight(torch.tensor([1.0, 2.0]), 1.0), torch.tensor([2.0, 1.25]))
    c_skip, c_out, c_in = edm_scalings(torch.tensor([2.0]), sigma_data=0.5)
    torch.testing.assert_close(c_skip, torch.tensor([0.25 / 4.25]))
    torch.testing.assert_close(c_out, torch.tensor([1.0 / math.sqrt(4.25)]))
    torch.testing.assert_close(edm_loss_weight(torch.tensor([2.0]), 0.5), torch.tensor([4.25]))


def test_karras_schedule_and_guidance_schedule():
    sigmas = karras_sigmas(8, 0.002, 80.0, 7.0)
    assert len(sigmas) == 9 and sigmas[-1] == 0
    torch.testing.assert_close(sigmas[[0, 7]], torch.tensor([80.0, 0.002], dtype=torch.float64))
    assert torch.all(sigmas[1:] < sigmas[:-1])
    strengths = guidance_schedule(2.0, 4)
    expected = [2.0 * ((1 - i / 4) + 0.3 * math.sin(math.pi * (i + 1) / 4)) for i in range(3)] + [0.0]
    torch.testing.assert_close(strengths, torch.tensor(expected, dtype=torch.float64))


def test_unguided_sampler_recovers_the_moments_of_a_gaussian_mixture():
    model = exact_mixture_model(sampling_steps=128)  # 32 steps leave a 3% bias in the variance
    samples = sample_trajectories(model, 4096, generator=torch.Generator().manual_seed(0)).flatten()
    mean = float((WEIGHTS * MEANS).sum())
    variance = float((WEIGHTS * (STDS**2 + MEANS**2)).sum()) - mean**2
    assert abs(samples.mean().item() - mean) < 0.03
    assert abs(samples.var().item() / variance - 1) < 0.02
    assert abs((samples < 0).float().mean().item() - 0.3) < 0.01  # the weight of the left component


def test_guidance_raises_the_target_policys_likelihood_of_generated_actions():
    model = exact_mixture_model()

    def log_likelihood(observations, actions):  # a policy that prefers the action 0.3, whatever the state
        return -0.5 * ((actions - 0.3) / 0.2).square().sum(-1)

    def mean_likelihood(guidance):
        windows = sample_trajectories(model, 512, log_likelihood, guidance, generator=torch.Generator().manual_seed(1))
        transitions = trajectories_to_transitions(model, windows)
        return log_likelihood(transitions.observations, transitions.actions).mean().item()

    unguided, mild, strong = mean_likelihood(0.0), mean_likelihood(0.1), mean_likelihood(0.5)
    assert unguided < mild < strong
    assert strong > unguided + 5.0


def episodes_dataset(lengths_and_ends):
    """A dataset of episodes given as (length, "terminal" | "timeout"), observations counting the steps."""
    total = sum(length for length, _ in lengths_and_ends)
    terminals, timeouts = np.zeros(total, bool), np.zeros(total, bool)
    stop = 0
    for length, end in lengths_and_ends:
        stop += length
        (terminals if end == "terminal" else timeouts)[stop - 1] = True
    steps = np.arange(total, dtype=np.float32)[:, None]
    rng = np.random.default_rng(0)
    return OfflineDataset(
        observations=np.hstack([steps, rng.standard_normal((total, 1)).astype(np.float32)]),
        actions=rng.uniform(-0.99, 0.99, (total, 2)).astype(np.float32),
        rewards=rng.standard_normal(total).astype(np.float32),
        next_observations=np.hstack([steps + 1, rng.standard_normal((total, 1)).astype(np.float32)]),
        terminals=terminals,
        timeouts=timeouts,
    )


def sequence_rows(dataset) -> np.ndarray:
    """The dataset step at each position of the token sequence, −1 for the final tokens after terminal steps."""
    positions, terminal_rows = sequence_layout(dataset)
    rows = np.full(len(dataset) + len(terminal_rows), -1)
    rows[positions] = np.arange(len(dataset))
    return rows


def test_windows_never_cross_an_episode_end():
    dataset = episodes_dataset([(10, "terminal"), (7, "timeout"), (12, "timeout"), (3, "terminal")])
    starts = windows_within_episodes(dataset, horizon=4, stride=3)
    # Sequence: steps 0-9, final token, steps 10-16, steps 17-28, steps 29-31, final token. Episode 1: strided
    # starts and the window ending on its final token; episodes 2 and 3 end in time-outs: the window ending there is
    # left out; episode 4 is 3 steps and its final token, one window.
    np.testing.assert_array_equal(starts, [0, 3, 6, 7, 11, 18, 21, 24, 30])
    rows, episode_of_step = sequence_rows(dataset), np.repeat(np.arange(4), [10, 7, 12, 3])
    for start in starts:
        window = rows[start : start + 4]
        steps = window[window >= 0]
        assert (np.diff(steps) == 1).all() and len(set(episode_of_step[steps])) == 1  # consecutive, one episode
        assert (window[:-1] >= 0).all()  # a final token can only close a window
        assert not dataset.timeouts[window[:-1][window[:-1] >= 0]].any()  # a time-out step always has its successor
    with pytest.raises(ValueError, match="no episode of at least"):
        windows_within_episodes(dataset, horizon=13, stride=1)


def test_windows_of_real_data_turn_back_into_the_datasets_transitions_terminal_ones_included():
    dataset = episodes_dataset([(20, "terminal"), (15, "timeout")])
    model = TrajectoryDiffusion.from_dataset(dataset, TrajectoryDiffusionConfig(horizon=5, features=8))
    tokens = model.normalize(model.raw_tokens(dataset))
    starts = windows_within_episodes(dataset, 5, 2)
    windows = tokens[torch.as_tensor(starts)[:, None] + torch.arange(5)]
    transitions = trajectories_to_transitions(model, windows)
    rows = sequence_rows(dataset)[starts[:, None] + np.arange(4)].reshape(-1)
    assert (rows >= 0).all() and 19 in rows  # the terminal step is among the transitions
    torch.testing.assert_close(transitions.observations, torch.as_tensor(dataset.observations[rows]))
    torch.testing.assert_close(transitions.actions, torch.as_tensor(dataset.actions[rows]), atol=1e-5, rtol=0)
    torch.testing.assert_close(transitions.rewards, torch.as_tensor(dataset.rewards[rows]), atol=1e-5, rtol=0)
    torch.testing.assert_close(transitions.terminals, torch.as_tensor(dataset.terminals[rows], dtype=torch.float32))
    # the step counter carries on into the next observation; the terminal step's is the dataset's, whole
    torch.testing.assert_close(transitions.next_observations[:, 0], torch.as_tensor(dataset.next_observations[rows, 0]))
    terminal = torch.as_tensor(rows == 19)
    torch.testing.assert_close(
        transitions.next_observations[terminal],
        torch.as_tensor(dataset.next_observations[[19]]).expand(int(terminal.sum()), -1),
    )


def test_training_lowers_the_loss_and_a_resumed_training_ends_where_an_uninterrupted_one_does(tmp_path):
    dataset = make_pendulum_scripted(episodes=4, seed=0)
    config = TrajectoryDiffusionConfig(horizon=8, features=16, levels=2, batch_size=32)

    def train(path, callback=None):
        torch.manual_seed(0)
        model = TrajectoryDiffusion.from_dataset(dataset, config, np.array([-2.0]), np.array([2.0]))
        return model, model.fit(dataset, 300, path, checkpoint_every=100, progress=False, callback=callback)

    def kill(step, loss):
        if step == 250:
            raise KeyboardInterrupt

    model, losses = train(tmp_path / "full.pt")
    assert np.mean(losses[-50:]) < 0.8 * np.mean(losses[:50])  # EDM losses are noisy: σ is drawn per window
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "split.pt", kill)  # killed after its checkpoint at step 200 ...
    resumed, _ = train(tmp_path / "split.pt")  # ... and continued
    assert resumed.training_steps == 300
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    loaded = TrajectoryDiffusion.load(tmp_path / "full.pt")
    torch.testing.assert_close(loaded.state_dict(), model.state_dict(), rtol=0, atol=0)
