"""The continuous combination lock: dynamics on hand-made actions, observations, and its generated offline data."""

import numpy as np
import pytest
import torch

from policylab.core.data import load_dataset
from policylab.core.data.generate import make_combination_lock_dataset
from policylab.core.envs import fixed_horizon, make_env, make_vec_env, task_spaces
from policylab.core.envs.torch_envs import register_combination_lock

A, B, DEAD = 0, 1, 2


def choice(index: int, num_envs: int = 1) -> torch.Tensor:
    """An action whose softmax(a / 0.1) puts all its mass on `index`."""
    actions = torch.zeros(num_envs, 10)
    actions[:, index] = 100.0
    return actions


def test_right_choices_keep_the_lock_alive_and_pay_at_the_last_step():
    env = make_vec_env("CombinationLock-H5-v0", 1, seed=0)
    env.set_state([[A, 0]])
    latents = []
    for step in range(5):
        latent = int(env.state[0, 0])
        latents.append(latent)
        right = int(env.combinations[latent, step])
        _, reward, terminated, truncated, info = env.step(choice(right))
        if step < 4:
            assert reward.item() == 0.0 and not terminated.item() and not truncated.item()
            assert env.state[0].tolist()[1] == step + 1
    assert reward.item() == 1.0 and terminated.item()
    assert set(latents) <= {A, B} and latents[0] == A
    assert info["_final_obs"].item() and env.elapsed_steps.item() == 0 and env.state[0, 1].item() == 0


def test_a_wrong_choice_kills_the_lock_for_the_rest_of_the_episode():
    env = make_vec_env("CombinationLock-H5-v0", 2000, seed=0)
    env.set_state(torch.tensor([[B, 0]]).repeat(2000, 1))
    right = int(env.combinations[B, 0])
    env.step(choice((right + 1) % 10, 2000))
    assert (env.state[:, 0] == DEAD).all()
    for step in range(1, 5):  # any choice, even the live states' right ones, stays dead
        _, reward, terminated, _, _ = env.step(choice(int(env.combinations[A, step]), 2000))
    assert terminated.all()
    anti_reward = reward == torch.tensor(0.1)
    assert ((reward == 0.0) | anti_reward).all()
    assert anti_reward.float().mean().item() == pytest.approx(0.5, abs=0.05)  # the anti-reward, half the time


def test_right_choices_switch_between_a_and_b_half_the_time():
    env = make_vec_env("CombinationLock-H5-v0", 4000, seed=1)
    env.set_state(torch.tensor([[A, 0]]).repeat(4000, 1))
    env.step(choice(int(env.combinations[A, 0]), 4000))
    assert set(env.state[:, 0].unique().tolist()) == {A, B}
    assert (env.state[:, 0] == B).float().mean().item() == pytest.approx(0.5, abs=0.03)


def test_observations_unmix_to_one_hot_latent_and_step_plus_noise():
    env = make_vec_env("CombinationLock-H10-v0", 3000, seed=0)
    observations, _ = env.reset()
    assert observations.shape == (3000, 16)  # 3 latents + 11 steps (0..10) padded to a power of two
    unmixed = observations @ env.mixing / 16  # the Hadamard matrix is its own inverse up to 1/n
    latent_part, step_part = unmixed[:, :3], unmixed[:, 3:14]
    assert torch.equal(latent_part.argmax(1), env.state[:, 0]) and (step_part.argmax(1) == 0).all()
    assert torch.allclose(unmixed[:, 13:], torch.zeros(3000, 3), atol=1e-5)  # padding carries no noise
    noise = unmixed[:, :13].clone()
    noise[torch.arange(3000), env.state[:, 0]] -= 1.0
    noise[:, 3] -= 1.0
    assert noise.std().item() == pytest.approx(0.1, rel=0.05) and abs(noise.mean().item()) < 0.005


def test_probe_observations_cover_both_live_states_at_every_step_with_their_right_choices():
    env = make_vec_env("CombinationLock-H10-v0", 1, seed=0)
    observations, right = env.live_state_observations(samples=50)
    assert observations.shape == (10, 2, 50, 16) and torch.equal(right, env.combinations.T)
    unmixed = observations @ env.mixing / 16
    assert (unmixed[..., :3].argmax(-1) == torch.tensor([A, B])[None, :, None]).all()
    assert (unmixed[..., 3:13].argmax(-1) == torch.arange(10)[:, None, None]).all()
    probabilities = env.choice_probabilities(choice(3))
    assert probabilities.shape == (1, 10) and probabilities[0, 3].item() == pytest.approx(1.0)


def test_the_lock_is_shared_by_every_env_seed_and_named_by_its_horizon():
    first, second = make_vec_env("CombinationLock-H20-v0", 2, seed=0), make_vec_env("CombinationLock-H20-v0", 3, seed=9)
    assert torch.equal(first.combinations, second.combinations)
    assert first.combinations.shape == (2, 20) and first.max_episode_steps == 20
    assert fixed_horizon("CombinationLock-H20-v0") == 20 and fixed_horizon("Pendulum-v1") is None
    assert register_combination_lock(7) == "CombinationLock-H7-v0"
    observation_space, action_space = task_spaces("CombinationLock-H7-v0")
    assert observation_space.shape == (16,) and action_space.shape == (10,) and action_space.low.max() == 0.0
    with pytest.raises(ValueError, match="torch-native task"):
        make_env("CombinationLock-H7-v0")
    with pytest.raises(ValueError, match="register_combination_lock"):
        make_vec_env("CombinationLock-H7-v0", 1, max_episode_steps=3)


def test_offline_data_follows_the_optimal_policy_with_one_in_h_random_actions(tmp_path, monkeypatch):
    monkeypatch.setenv("POLICYLAB_DATA", str(tmp_path))
    dataset = load_dataset("gen/combination-lock-h5-v0-4000ep")  # made on first use, in D4RL's layout
    assert (tmp_path / "datasets" / "combination-lock-h5-v0-4000ep.hdf5").is_file()
    assert len(dataset) == 20_000 and dataset.env_id == "CombinationLock-H5-v0"
    assert dataset.terminals.sum() == 4000 and not dataset.timeouts.any()
    np.testing.assert_array_equal(dataset.infos["step"], np.tile(np.arange(5), 4000))
    one_hot = (dataset.actions == 1.0).sum(1) == 1
    assert 1 - one_hot.mean() == pytest.approx(1 / 5, abs=0.01)  # random actions at rate ε = 1/H
    # A random action is right with probability 1/10, the one-hot one with e^10 / (e^10 + 9).
    right = (1 / 5) * 0.1 + (4 / 5) * np.exp(10) / (np.exp(10) + 9)
    assert (dataset.episode_returns() >= 1).mean() == pytest.approx(right**5, abs=0.025)
    again = make_combination_lock_dataset(5, 4000)
    np.testing.assert_array_equal(again.observations, dataset.observations)  # made the same way every time
