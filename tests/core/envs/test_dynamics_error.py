"""Simulator-measured dynamics error: zero on real Gymnasium transitions, the perturbation's size on perturbed ones."""

import gymnasium as gym
import numpy as np
import pytest

from policylab.core.envs.dynamics_error import (
    SUPPORTED_ENV_IDS,
    clipped_velocities,
    dynamics_error,
    simulator_next_observations,
    simulator_steps,
)

TASKS = ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v5"]


def gymnasium_transitions(env_id: str, steps: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    """Observations, random actions, next observations, rewards, terminations and the true |qvel| maximum of a
    Gymnasium rollout."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    observation, _ = env.reset(seed=seed)
    record = {key: [] for key in ("observations", "actions", "next_observations", "rewards", "terminated", "speed")}
    for _ in range(steps):
        action = env.action_space.sample()
        record["speed"].append(np.abs(env.unwrapped.data.qvel).max())
        next_observation, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(
            ("observations", "actions", "next_observations", "rewards", "terminated"),
            (observation, action, next_observation, reward, terminated),
        ):
            record[key].append(value)
        observation = env.reset()[0] if terminated or truncated else next_observation
    return {key: np.array(values) for key, values in record.items()}


@pytest.mark.parametrize("env_id", TASKS)
def test_real_transitions_have_no_error_where_the_state_is_observed(env_id):
    data = gymnasium_transitions(env_id)
    errors = dynamics_error(env_id, data["observations"], data["actions"], data["next_observations"])
    observed = ~clipped_velocities(env_id, data["observations"])
    assert observed.sum() > 20
    assert errors.shape == (len(data["observations"]),)
    assert errors[observed].max() < 1e-9
    # A dataset stores float32: rounding the inputs moves the next observation by little more than the rounding.
    float32 = {key: data[key].astype(np.float32) for key in ("observations", "actions", "next_observations")}
    assert np.median(dynamics_error(env_id, **float32)[observed]) < 1e-5


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"])
def test_simulated_rewards_and_terminations_are_gymnasiums(env_id):
    data = gymnasium_transitions(env_id, steps=300)
    simulated = simulator_steps(env_id, data["observations"], data["actions"])
    observed = ~clipped_velocities(env_id, data["observations"])
    assert observed.sum() > 20
    np.testing.assert_allclose(simulated.rewards[observed], data["rewards"][observed], atol=1e-7)
    np.testing.assert_array_equal(simulated.terminated[observed], data["terminated"][observed])
    if env_id != "HalfCheetah-v5":  # random actions make Hopper and Walker2d fall within 300 steps
        assert data["terminated"][observed].any()
    np.testing.assert_array_equal(
        simulated.next_observations,
        simulator_next_observations(env_id, **{key: data[key] for key in ("observations", "actions")}),
    )


def test_clipped_velocities_are_the_states_faster_than_the_observation_shows():
    data = gymnasium_transitions("Walker2d-v5", steps=300)  # random actions make Walker2d's joints fast
    clipped = clipped_velocities("Walker2d-v5", data["observations"])
    np.testing.assert_array_equal(clipped, data["speed"] > 10)
    assert clipped.any() and not clipped.all()
    assert not clipped_velocities("HalfCheetah-v5", np.full((3, 17), 50.0)).any()  # HalfCheetah does not clip


def test_error_of_a_perturbed_next_observation_is_the_perturbation():
    data = gymnasium_transitions("Hopper-v5")
    perturbation = np.random.default_rng(1).normal(0.0, 0.1, data["next_observations"].shape)
    perturbed = data["next_observations"] + perturbation
    errors = dynamics_error("Hopper-v5", data["observations"], data["actions"], perturbed)
    observed = ~clipped_velocities("Hopper-v5", data["observations"])
    np.testing.assert_allclose(errors[observed], np.linalg.norm(perturbation, axis=1)[observed], atol=1e-9)
    scale = np.linspace(0.5, 2.0, perturbation.shape[1])
    scaled = dynamics_error("Hopper-v5", data["observations"], data["actions"], perturbed, scale=scale)
    np.testing.assert_allclose(scaled[observed], np.linalg.norm(perturbation / scale, axis=1)[observed], atol=1e-9)


def test_chunks_give_the_same_next_observations():
    data = gymnasium_transitions("HalfCheetah-v5", steps=50)
    whole = simulator_next_observations("HalfCheetah-v5", data["observations"], data["actions"])
    chunked = simulator_next_observations("HalfCheetah-v5", data["observations"], data["actions"], chunk_size=16)
    np.testing.assert_array_equal(chunked, whole)


def test_bad_input_gets_clear_errors():
    observations, actions = np.zeros((4, 11)), np.zeros((4, 3))
    with pytest.raises(ValueError, match="Hopper-v5, Walker2d-v5"):
        dynamics_error("Pendulum-v1", observations, actions, observations)
    assert "Ant-v5" in SUPPORTED_ENV_IDS
    with pytest.raises(ValueError, match=r"expected \[N, 11\]"):
        dynamics_error("Hopper-v5", np.zeros((4, 17)), actions, observations)
    with pytest.raises(ValueError, match=r"actions has shape \(4, 6\)"):
        dynamics_error("Hopper-v5", observations, np.zeros((4, 6)), observations)
    with pytest.raises(ValueError, match="4 observations but 3 actions"):
        dynamics_error("Hopper-v5", observations, actions[:3], observations)
    with pytest.raises(ValueError, match="4 observations but 2 next_observations"):
        dynamics_error("Hopper-v5", observations, actions, observations[:2])
    with pytest.raises(ValueError, match=r"observations\[2\] is not finite"):
        dynamics_error("Hopper-v5", np.where(np.arange(4)[:, None] == 2, np.nan, observations), actions, observations)
    with pytest.raises(ValueError, match="positive"):
        dynamics_error("Hopper-v5", observations, actions, observations, scale=np.zeros(11))
