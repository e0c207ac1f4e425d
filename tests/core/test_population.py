"""Whole-population evaluation: the stacked network equals each member's own network, the batched episodes, masks
and behaviour statistics equal member-by-member rollouts, and dropping finished envs changes no result."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from policylab.core.envs.mujoco_engine import MujocoVecEnv
from policylab.core.evaluation import evaluate_population
from policylab.core.nets import PopulationMLP, PopulationNatureCNN

SPEC = PopulationMLP(11, 3, hidden_sizes=(16, 16))


def population(size, seed=0):
    return SPEC.initial_params(size, torch.Generator().manual_seed(seed)).double()


def test_stacked_network_equals_each_members_own_network():
    params = population(5)
    inputs = torch.randn(5, 7, 11, dtype=torch.float64)
    outputs = SPEC.forward(SPEC.stack(params), inputs)
    for member in range(5):
        module = SPEC.to_module(params[member]).double().requires_grad_(False)
        torch.testing.assert_close(outputs[member], module(inputs[member]), rtol=0, atol=1e-12)
        torch.testing.assert_close(SPEC.from_module(module), params[member])
    assert params.shape == (5, SPEC.num_params) == (5, (11 + 1) * 16 + (16 + 1) * 16 + (16 + 1) * 3)
    with pytest.raises(ValueError, match=r"expected parameters of shape \(population, 515\)"):
        SPEC.stack(params[:, :-1])


def test_stacked_nature_cnn_equals_each_members_own_network():
    spec = PopulationNatureCNN(4, 6)
    assert spec.num_params == 1_687_206  # the Nature-DQN network on Pong's 6 actions
    params = spec.initial_params(3, torch.Generator().manual_seed(0))
    frames = torch.randint(0, 256, (3, 2, 4, 84, 84), dtype=torch.uint8)
    outputs = spec.forward(spec.stack(params), frames.float())
    assert outputs.shape == (3, 2, 6)
    for member in range(3):
        module = spec.to_module(params[member]).requires_grad_(False)
        torch.testing.assert_close(outputs[member], module(frames[member].float()), rtol=1e-5, atol=1e-5)


def test_batched_episodes_equal_member_by_member_rollouts():
    params, repeats, seed = population(3, seed=1), 2, 7
    result = evaluate_population(params, SPEC, "Hopper-v5", episodes_per_member=repeats, seed=seed, backend="gymnasium")
    assert result.returns.shape == result.lengths.shape == (3, repeats)
    for member in range(3):
        network = SPEC.to_module(params[member]).double().requires_grad_(False)
        for repeat in range(repeats):
            env = gym.make("Hopper-v5")
            observation, _ = env.reset(seed=seed + member * repeats + repeat)  # env k is seeded seed + k
            total, length, done = 0.0, 0, False
            while not done:
                action = network(torch.as_tensor(observation)).numpy()  # tanh output on the [-1, 1] action box
                observation, reward, terminated, truncated, info = env.step(action)
                total, length, done = total + reward, length + 1, terminated or truncated
            assert result.lengths[member, repeat] == length
            assert result.returns[member, repeat] == pytest.approx(total, rel=1e-9)
            assert result.final_xy[member, repeat, 0] == pytest.approx(info["x_position"], rel=1e-9)
    np.testing.assert_allclose(result.fitness, result.returns.mean(axis=1))
    assert result.feet_contact is None  # Gymnasium's Hopper does not report contacts


def test_behaviour_statistics_equal_a_hand_loop_over_the_engine():
    params, seed = population(4, seed=2), 3
    result = evaluate_population(params, SPEC, "Hopper-v5", seed=seed, backend="mujoco")
    networks = [SPEC.to_module(params[member]).double().requires_grad_(False) for member in range(4)]
    contact_steps, final_x = np.zeros(4), np.zeros(4)
    lengths, running = np.zeros(4), np.ones(4, dtype=bool)
    with MujocoVecEnv("Hopper-v5", 4) as engine:
        observations, _ = engine.reset(seed=[seed + env for env in range(4)])  # env k is seeded seed + k
        while running.any():
            actions = np.stack([net(torch.as_tensor(obs)).numpy() for net, obs in zip(networks, observations)])
            observations, _, terminated, truncated, info = engine.step(actions)
            for env in np.flatnonzero(running):
                ended = terminated[env] or truncated[env]
                step_info = info["final_info"] if ended else info
                contact_steps[env] += step_info["feet_contact"][env, 0]
                lengths[env] += 1
                if ended:
                    final_x[env], running[env] = step_info["x_position"][env], False
    np.testing.assert_array_equal(result.lengths[:, 0], lengths)
    np.testing.assert_allclose(result.feet_contact[:, 0, 0], contact_steps / lengths)
    np.testing.assert_allclose(result.final_xy[:, 0, 0], final_x)
    assert (result.final_xy[:, :, 1] == 0).all()  # planar task
    assert 0 < result.mean_feet_contact.mean() < 1


@pytest.mark.parametrize(
    ("env_id", "backend", "spec"),
    [
        ("Hopper-v5", "mujoco", SPEC),
        ("Pendulum-v1", "torch", PopulationMLP(3, 1, hidden_sizes=(8,))),
        ("Pendulum-v1", "gymnasium", PopulationMLP(3, 1, hidden_sizes=(8,))),
    ],
)
def test_a_shard_equals_its_rows_of_the_whole_population(env_id, backend, spec):
    params, repeats, seed = spec.initial_params(5, torch.Generator().manual_seed(4)), 2, 11
    run = dict(policy_spec=spec, env_id=env_id, episodes_per_member=repeats, backend=backend, max_episode_steps=60)
    whole = evaluate_population(params, seed=seed, **run)
    shard = evaluate_population(params[2:4], seed=seed + 2 * repeats, **run)
    np.testing.assert_array_equal(shard.returns, whole.returns[2:4])
    np.testing.assert_array_equal(shard.lengths, whole.lengths[2:4])
    assert len(np.unique(whole.returns)) == whole.returns.size  # every env started from its own state


def test_dropping_finished_envs_gives_the_same_results_as_masking_them(monkeypatch):
    spec = PopulationMLP(18, 6, hidden_sizes=(16,))  # Walker2d with the time-left feature
    params = spec.initial_params(12, torch.Generator().manual_seed(5)) * 3  # varied episode lengths
    run = dict(episodes_per_member=2, seed=1, max_episode_steps=80, time_feature=True, record_transitions=True)
    dropped = evaluate_population(params, spec, "Walker2d-v5", **run)
    assert len(np.unique(dropped.lengths)) > 3
    monkeypatch.delattr(MujocoVecEnv, "keep")
    masked = evaluate_population(params, spec, "Walker2d-v5", **run)
    for field in ("returns", "lengths", "final_xy", "feet_contact"):
        np.testing.assert_array_equal(getattr(dropped, field), getattr(masked, field))
    for field in ("observations", "actions", "rewards", "next_observations", "terminations", "members"):
        np.testing.assert_array_equal(getattr(dropped.transitions, field), getattr(masked.transitions, field))


def test_mismatched_policy_is_refused():
    with pytest.raises(ValueError, match="Walker2d-v5 has observations"):
        evaluate_population(population(2), SPEC, "Walker2d-v5")
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        PopulationMLP(3, 1, activation="gelu")
