"""`make_vec_env`: backend choice, one same-step auto-reset rule for every backend, torch outputs, clear errors."""

import numpy as np
import pytest
import torch

from policylab.core.envs import make_vec_env, supported_backends
from policylab.core.envs.envpool_vec import envpool_task_ids

CPU_BACKENDS = ["mujoco", "gymnasium", "gymnasium-async", "envpool"]


def test_auto_picks_the_fastest_backend_for_the_task():
    assert supported_backends("Hopper-v5")[0] == "mujoco"
    assert supported_backends("Pendulum-v1")[0] == "torch"
    with make_vec_env("Hopper-v5", 2) as envs:
        assert envs.backend == "mujoco"
    with make_vec_env("MountainCarContinuous-v0", 2) as envs:
        assert envs.backend == supported_backends("MountainCarContinuous-v0")[0]
        assert envs.backend in ("envpool", "gymnasium")


def run_until_an_episode_ends(envs, actions, max_steps=300):
    envs.reset()
    for _ in range(max_steps):
        observations, rewards, terminated, truncated, info = envs.step(actions)
        if (terminated | truncated).any():
            return observations, terminated | truncated, info
    raise AssertionError("no episode ended")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_every_backend_resets_in_the_same_step_with_the_final_observation(backend):
    if backend == "envpool" and "Hopper-v5" not in envpool_task_ids():
        pytest.skip("EnvPool is not installed")
    with make_vec_env("Hopper-v5", 3, backend=backend, seed=0) as envs:
        assert envs.single_observation_space.shape == (11,) and envs.single_action_space.shape == (3,)
        assert envs.observation_space.shape == (3, 11)
        actions = np.tile(np.array([1.0, -1.0, 1.0], dtype=np.float32), (3, 1))
        observations, done, info = run_until_an_episode_ends(envs, actions)
        np.testing.assert_array_equal(info["_final_obs"], done)
        np.testing.assert_array_equal(info["_final_info"], done)
        assert info["final_obs"].shape == (3, 11)
        # the finished episode fell over; the returned observation starts a new one near the initial pose
        assert (info["final_obs"][done, 0] < 1.2).all()
        np.testing.assert_allclose(observations[done, 0], 1.25, atol=5e-3)
        # the next step continues from the fresh start
        observations, *_ = envs.step(np.zeros((3, 3), dtype=np.float32))
        np.testing.assert_allclose(observations[done, 0], 1.25, atol=0.05)


def test_torch_backend_keeps_the_same_rule():
    with make_vec_env("CartPole-v1", 4, seed=0) as envs:
        assert envs.backend == "torch"
        observations, done, info = run_until_an_episode_ends(envs, torch.ones(4, dtype=torch.int64))
        assert torch.equal(info["_final_obs"], done)
        assert (info["final_obs"][done, 2].abs() > 0.2).all()  # pole past 12 degrees
        assert (observations[done].abs() <= 0.05).all()  # fresh initial states


def test_device_gives_torch_tensors_from_numpy_engines():
    with make_vec_env("Hopper-v5", 2, seed=0, device="cpu") as envs:
        observations, info = envs.reset()
        assert isinstance(observations, torch.Tensor) and observations.dtype == torch.float64
        observations, rewards, terminated, truncated, info = envs.step(torch.zeros(2, 3))
        assert isinstance(rewards, torch.Tensor) and terminated.dtype == torch.bool
        assert isinstance(info["qpos"], torch.Tensor)


def test_same_seed_same_episodes():
    def first_observations(seed):
        with make_vec_env("Walker2d-v5", 4, seed=seed) as envs:
            return envs.reset()[0]

    np.testing.assert_array_equal(first_observations(3), first_observations(3))
    assert not np.array_equal(first_observations(3), first_observations(4))


def test_bad_requests_get_clear_errors():
    with pytest.raises(ValueError, match="unknown environment id 'Hoper-v5'.*Hopper-v5"):
        make_vec_env("Hoper-v5", 2)
    with pytest.raises(ValueError, match="unknown backend 'jax'; choose one of auto, torch"):
        make_vec_env("Hopper-v5", 2, backend="jax")
    with pytest.raises(ValueError, match="backend 'torch' cannot run 'Hopper-v5': it runs Pendulum-v1.*Backends for"):
        make_vec_env("Hopper-v5", 2, backend="torch")
    with pytest.raises(ValueError, match="backend 'mujoco' cannot run 'Pendulum-v1': it runs Hopper-v5"):
        make_vec_env("Pendulum-v1", 2, backend="mujoco")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs a CUDA device"):
            make_vec_env("Hopper-v5", 2, backend="warp")
    with pytest.raises(ValueError, match="num_envs must be at least 1"):
        make_vec_env("Hopper-v5", 0)


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Ant-v5", "Pendulum-v1"])
def test_saved_env_state_continues_exactly(env_id):
    import io

    first = make_vec_env(env_id, 3, seed=1, device="cpu")
    first.reset(seed=1)
    rng = np.random.default_rng(0)
    actions = [rng.uniform(-1, 1, first.action_space.shape).astype(np.float32) for _ in range(120)]
    for action in actions[:60]:
        first.step(action)
    file = io.BytesIO()
    torch.save(first.state_dict(), file)  # checkpoints hold plain data only
    file.seek(0)
    second = make_vec_env(env_id, 3, seed=99, device="cpu")
    second.reset()
    second.load_state_dict(torch.load(file, weights_only=True))
    for action in actions[60:]:
        expected, actual = first.step(action), second.step(action)
        for index in range(4):
            torch.testing.assert_close(actual[index], expected[index], rtol=0, atol=0)


def test_gymnasium_backend_says_it_cannot_save_state():
    envs = make_vec_env("Pendulum-v1", 2, backend="gymnasium")
    assert envs.state_dict() is None
    with pytest.raises(NotImplementedError, match="gymnasium"):
        envs.load_state_dict({})


def test_envpool_reset_with_a_seed_replays_that_seed():
    if "Hopper-v5" not in envpool_task_ids():
        pytest.skip("EnvPool is not installed")
    with make_vec_env("Hopper-v5", 2, backend="envpool", seed=0) as envs:
        first, _ = envs.reset(seed=3)
        envs.step(np.ones((2, 3), dtype=np.float32))
        again, _ = envs.reset(seed=3)
        other, _ = envs.reset(seed=4)
        np.testing.assert_array_equal(first, again)
        assert not np.array_equal(first, other)
        with pytest.raises(ValueError, match="one int seed"):
            envs.reset(seed=[1, 2])
