"""The torch backend: Pendulum and CartPole equal Gymnasium step for step; auto-reset, seeding and errors."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector.utils import batch_space

from policylab.core.envs.torch_envs import TORCH_TASKS, CartPole, Pendulum

GYMNASIUM_TWINS = ("Pendulum-v1", "CartPole-v1")  # the torch tasks that equal a Gymnasium task
INITIAL_STATE_BOUNDS = {"Pendulum-v1": [math.pi, 1.0], "CartPole-v1": [0.05, 0.05, 0.05, 0.05]}
PUSHED_OFF = [2.39, 5.0, 0.0, 0.0]  # the cart leaves the track (x > 2.4) on the next step
UPRIGHT = [0.0, 0.0, 0.0, 0.0]


def random_actions(env_id: str, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Actions of the task's single-env type; Pendulum's torques go past the limits to exercise clipping."""
    if env_id == "Pendulum-v1":
        return rng.uniform(-3.0, 3.0, (*shape, 1)).astype(np.float32)
    return rng.integers(0, 2, shape)


def assert_observations_close(actual: torch.Tensor, expected: np.ndarray) -> None:
    """float32 observations or rewards equal up to float32 rounding."""
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=torch.float32), rtol=1e-6, atol=1e-6)


def gymnasium_transitions(env_id: str, count: int) -> dict[str, np.ndarray]:
    """`count` single steps of a Gymnasium env along random rollouts: state, action and what the step gave."""
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    transitions = {key: [] for key in ("state", "action", "next_state", "observation", "reward", "terminated")}
    for action in random_actions(env_id, rng, (count,)):
        state = env.state.copy()
        observation, reward, terminated, _, _ = env.step(action)
        for key, value in zip(transitions, (state, action, env.state, observation, reward, terminated)):
            transitions[key].append(value)
        if terminated:
            env.reset()
    return {key: np.stack(values) for key, values in transitions.items()}


@pytest.mark.parametrize("env_id", GYMNASIUM_TWINS)
def test_one_step_from_gymnasium_states_matches_gymnasium(env_id: str):
    reference = gymnasium_transitions(env_id, count=64)
    env = TORCH_TASKS[env_id](64)
    env.set_state(reference["state"])
    _, reward, terminated, _, info = env.step(reference["action"])

    continuing = ~terminated
    expected_states = torch.from_numpy(reference["next_state"])[continuing]
    torch.testing.assert_close(env.state[continuing], expected_states, rtol=1e-12, atol=1e-12)
    assert_observations_close(info["final_obs"], reference["observation"])
    assert_observations_close(reward, reference["reward"])
    assert terminated.tolist() == reference["terminated"].tolist()
    if env_id == "CartPole-v1":
        assert reference["terminated"].any(), "the rollouts should include terminating steps"


@pytest.mark.parametrize("env_id", GYMNASIUM_TWINS)
def test_trajectories_match_gymnasium_until_each_episode_ends(env_id: str):
    num_envs, horizon = 8, 200
    references = [gym.make(env_id) for _ in range(num_envs)]
    for seed, reference in enumerate(references):
        reference.reset(seed=seed)
    env = TORCH_TASKS[env_id](num_envs)
    env.set_state(np.stack([reference.unwrapped.state for reference in references]))
    actions = random_actions(env_id, np.random.default_rng(0), (horizon, num_envs))
    running = np.ones(num_envs, dtype=bool)
    for step_actions in actions:
        _, reward, terminated, truncated, info = env.step(step_actions)
        indices = np.flatnonzero(running)
        expected = [references[i].step(step_actions[i]) for i in indices]
        observations, rewards, terminations, truncations, _ = (np.stack(column) for column in zip(*expected))
        assert_observations_close(info["final_obs"][indices], observations)
        assert_observations_close(reward[indices], rewards)
        assert terminated[indices].tolist() == terminations.tolist()
        assert truncated[indices].tolist() == truncations.tolist()
        running[indices] = ~(terminations | truncations)
        if not running.any():
            break
    assert not running.any(), "every reference episode should end within the horizon (Pendulum truncates at 200)"


def test_termination_resets_in_the_same_step():
    env = CartPole(2, seed=0)
    env.set_state([PUSHED_OFF, UPRIGHT])
    observations, reward, terminated, truncated, info = env.step(np.array([1, 1]))

    assert terminated.tolist() == [True, False]
    assert truncated.tolist() == [False, False]
    assert reward.tolist() == [1.0, 1.0]
    assert info["_final_obs"].tolist() == [True, False]
    assert info["_final_info"].tolist() == [True, False]
    assert info["final_info"] == {}
    assert info["final_obs"][0, 0].item() == pytest.approx(2.39 + 0.02 * 5.0)
    assert (observations[0].abs() <= 0.05).all(), "the terminated env starts a fresh episode"
    torch.testing.assert_close(observations[1], info["final_obs"][1])
    assert env.elapsed_steps.tolist() == [0, 1]


def test_truncation_at_max_episode_steps_resets_in_the_same_step():
    env = Pendulum(3, seed=0)
    without_limit = Pendulum(3, max_episode_steps=10_000)
    env.reset()
    without_limit.set_state(env.state)
    actions = torch.full((3, 1), 0.5)
    for _ in range(env.max_episode_steps - 1):
        _, _, terminated, truncated, info = env.step(actions)
        without_limit.step(actions)
        assert not (terminated | truncated | info["_final_obs"]).any()
    observations, _, terminated, truncated, info = env.step(actions)
    expected_final_observations = without_limit.step(actions)[0]

    assert truncated.all() and not terminated.any()
    assert info["_final_obs"].all() and info["_final_info"].all()
    torch.testing.assert_close(info["final_obs"], expected_final_observations)
    assert not torch.equal(observations, info["final_obs"])
    assert (observations[:, 2].abs() <= 1.0).all(), "fresh episodes start with angular velocity in [-1, 1]"
    assert (env.elapsed_steps == 0).all()


def test_step_counters_are_per_env_and_truncation_holds_on_a_terminating_step():
    env = CartPole(2, seed=0, max_episode_steps=3)
    env.set_state([PUSHED_OFF, UPRIGHT])
    flags = [env.step(np.array([0, 1]))[2:4] for _ in range(3)]
    assert [(terminated.tolist(), truncated.tolist()) for terminated, truncated in flags] == [
        ([True, False], [False, False]),
        ([False, False], [False, False]),
        ([False, False], [False, True]),
    ]
    assert env.elapsed_steps.tolist() == [2, 0]

    one_step_limit = CartPole(1, seed=0, max_episode_steps=1)
    one_step_limit.set_state([PUSHED_OFF])
    _, _, terminated, truncated, _ = one_step_limit.step(np.array([1]))
    assert terminated.item() and truncated.item()


@pytest.mark.parametrize("env_id", GYMNASIUM_TWINS)
def test_initial_states_are_uniform_within_gymnasium_bounds(env_id: str):
    env = TORCH_TASKS[env_id](20_000, seed=0)
    env.reset()
    bounds = torch.tensor(INITIAL_STATE_BOUNDS[env_id], dtype=torch.float64)
    assert (env.state.abs() <= bounds).all()
    torch.testing.assert_close(env.state.mean(0), torch.zeros_like(bounds), rtol=0, atol=0.03 * bounds.min().item())
    torch.testing.assert_close(env.state.std(0), bounds / math.sqrt(3), rtol=0.02, atol=0)


def test_seeds_reproduce_initial_and_auto_reset_states():
    first, same_seed, other_seed = (Pendulum(16, seed=seed, max_episode_steps=2) for seed in (1, 1, 2))
    observations = first.reset()[0]
    assert torch.equal(same_seed.reset()[0], observations)
    assert not torch.allclose(other_seed.reset()[0], observations)
    assert torch.equal(other_seed.reset(seed=1)[0], observations), "reset(seed=...) reseeds"
    actions = np.zeros((16, 1), dtype=np.float32)
    for _ in range(2):
        after_auto_reset = first.step(actions)[0]
        assert torch.equal(same_seed.step(actions)[0], after_auto_reset)
    assert not torch.equal(first.reset()[0], observations), "later resets continue the random stream"


@pytest.mark.parametrize("env_id", GYMNASIUM_TWINS)
def test_numpy_and_tensor_actions_step_alike(env_id: str):
    actions = random_actions(env_id, np.random.default_rng(0), (4,))
    from_numpy, from_tensor = TORCH_TASKS[env_id](4, seed=0), TORCH_TASKS[env_id](4, seed=0)
    from_numpy.reset()
    from_tensor.reset()
    torch.testing.assert_close(from_numpy.step(actions), from_tensor.step(torch.as_tensor(actions)), rtol=0, atol=0)


@pytest.mark.parametrize("env_id", GYMNASIUM_TWINS)
def test_spaces_dtypes_and_limits_match_gymnasium(env_id: str):
    env = TORCH_TASKS[env_id](3)
    reference = gym.make(env_id)
    assert (env.env_id, env.backend) == (env_id, "torch")
    assert env.single_observation_space == reference.observation_space
    assert env.single_action_space == reference.action_space
    assert env.observation_space == batch_space(reference.observation_space, 3)
    assert env.action_space == batch_space(reference.action_space, 3)
    assert env.max_episode_steps == reference.spec.max_episode_steps
    observations, info = env.reset(seed=0)
    assert info == {} and env.observation_space.contains(observations.numpy())
    _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert (reward.dtype, terminated.dtype, truncated.dtype) == (torch.float32, torch.bool, torch.bool)
    assert reward.shape == terminated.shape == truncated.shape == (3,)


def test_bad_input_gets_a_clear_error():
    pendulum, cartpole = Pendulum(4, seed=0), CartPole(4, seed=0)
    with pytest.raises(RuntimeError, match=r"call reset\(\)"):
        pendulum.step(np.zeros((4, 1)))
    pendulum.reset()
    cartpole.reset()
    with pytest.raises(ValueError, match=r"expects actions of shape \(4, 1\), got \(4,\)"):
        pendulum.step(np.zeros(4))
    with pytest.raises(ValueError, match=r"expects actions of shape \(4,\), got \(4, 1\)"):
        cartpole.step(np.zeros((4, 1), dtype=np.int64))
    with pytest.raises(ValueError, match=r"expects a state of shape \(4, 2\), got \(4, 3\)"):
        pendulum.set_state(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="takes no reset options"):
        pendulum.reset(options={"x_init": 1.0})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("env_id", GYMNASIUM_TWINS)
def test_cuda_steps_like_cpu(env_id: str):
    on_cpu, on_cuda = TORCH_TASKS[env_id](64, seed=0), TORCH_TASKS[env_id](64, device="cuda", seed=0)
    on_cpu.reset()
    assert on_cuda.reset(seed=0)[0].device.type == "cuda"
    on_cuda.set_state(on_cpu.state)
    for step_actions in random_actions(env_id, np.random.default_rng(0), (20, 64)):
        cpu_final_observations = on_cpu.step(step_actions)[4]["final_obs"]
        observations, reward, terminated, truncated, info = on_cuda.step(step_actions)
        assert {tensor.device.type for tensor in (observations, reward, terminated, truncated)} == {"cuda"}
        torch.testing.assert_close(info["final_obs"].cpu(), cpu_final_observations, rtol=1e-6, atol=1e-6)


def test_float32_state_follows_the_float64_trajectory():
    single_precision, double_precision = Pendulum(8, seed=0, state_dtype=torch.float32), Pendulum(8)
    single_precision.reset()
    double_precision.set_state(single_precision.state)
    assert single_precision.state.dtype == torch.float32
    for step_actions in random_actions("Pendulum-v1", np.random.default_rng(0), (10, 8)):
        observations = single_precision.step(step_actions)[0]
        torch.testing.assert_close(observations, double_precision.step(step_actions)[0], rtol=0, atol=1e-4)
