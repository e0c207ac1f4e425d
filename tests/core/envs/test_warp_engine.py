"""The warp backend against the mujoco backend (which equals Gymnasium step for step): steps from Gymnasium's states,
short trajectories, auto-reset, reset noise and the device of the outputs.

Runs where torch sees a CUDA GPU, or on warp's CPU device with POLICYLAB_TEST_WARP_CPU=1 (the first run compiles
MuJoCo Warp's kernels, about 20 s, then a few seconds per further task; warp caches them). MuJoCo Warp computes in
float32 with a solver tolerance of 1e-6: one step agrees with the float64 engine to about 1e-4 (measured), checked at
1e-3 relative and absolute.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import torch

from policylab.core.envs.mujoco_engine import LOCOMOTION_TASKS, MujocoVecEnv

if torch.cuda.is_available():
    DEVICE = "cuda"
elif os.environ.get("POLICYLAB_TEST_WARP_CPU") == "1":
    DEVICE = "cpu"
else:
    DEVICE = None
pytestmark = pytest.mark.skipif(
    DEVICE is None, reason="the warp backend needs a CUDA GPU; POLICYLAB_TEST_WARP_CPU=1 runs it on the CPU"
)

NUM_ENVS = 4
STEP_TOLERANCE = {"rtol": 1e-3, "atol": 1e-3}
# Over 20 steps the dynamics amplify float32 rounding (measured below 5e-4 from various states of the tasks tested).
TRAJECTORY_TOLERANCE = {"rtol": 1e-2, "atol": 1e-2}
CAPSULE = mujoco.mjtGeom.mjGEOM_CAPSULE
STEEP_CAPSULE = 0.6  # length of a capsule axis projected on the floor under which MuJoCo Warp's contact frame differs


@pytest.fixture(scope="module")
def make_warp_env() -> Callable[..., Any]:
    """Builds `WarpVecEnv`s on the test device; skips where MuJoCo Warp is not installed."""
    pytest.importorskip("mujoco_warp", reason="the warp backend needs MuJoCo Warp: pip install mujoco-warp")
    from policylab.core.envs.warp_engine import WarpVecEnv

    return functools.partial(WarpVecEnv, device=DEVICE)


def steep_capsule_touches(model: mujoco.MjModel, data: mujoco.MjData) -> bool:
    """Whether a capsule nearly perpendicular to the floor touches something. MuJoCo Warp then gives its contact a
    fixed tangent frame where MuJoCo aligns it with the capsule, which turns the pyramidal friction cone: Ant's
    steps from such states differ by design, not by precision (planar tasks are unaffected)."""
    capsules = [geom for pair in data.contact.geom[: data.ncon] for geom in pair if model.geom_type[geom] == CAPSULE]
    return any(np.linalg.norm(data.geom_xmat[geom].reshape(3, 3)[:2, 2]) < STEEP_CAPSULE for geom in capsules)


@functools.cache
def gymnasium_states(env_id: str, count: int = NUM_ENVS) -> tuple[np.ndarray, np.ndarray]:
    """`count` states spread over a Gymnasium rollout under random actions: healthy ones touching the floor where
    the task has any, and none with a steep capsule contact."""
    env = gym.make(env_id)
    env.reset(seed=0)
    env.action_space.seed(0)
    model, data = env.unwrapped.model, env.unwrapped.data
    states, touching = [], []
    for _ in range(600):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
        elif not steep_capsule_touches(model, data):
            states.append((data.qpos.copy(), data.qvel.copy()))
            touching.append(data.ncon > 0)
    if any(touching):
        states = [state for state, touches in zip(states, touching) if touches]
    chosen = [states[index] for index in np.linspace(0, len(states) - 1, count).astype(int)]
    return np.array([qpos for qpos, _ in chosen]), np.array([qvel for _, qvel in chosen])


def both_engines(make_warp_env: Callable[..., Any], env_id: str, **kwargs: Any) -> tuple[Any, MujocoVecEnv]:
    """The warp and mujoco backends of `env_id`, both put in the same Gymnasium states."""
    warp_env = make_warp_env(env_id, NUM_ENVS, seed=0, **kwargs)
    mujoco_env = MujocoVecEnv(env_id, NUM_ENVS, seed=0, physics="mjdata", **kwargs)
    qpos, qvel = gymnasium_states(env_id)
    warp_env.set_state(qpos, qvel)
    mujoco_env.set_state(qpos, qvel)
    return warp_env, mujoco_env


def random_actions(env: MujocoVecEnv, rng: np.random.Generator) -> np.ndarray:
    """Uniform actions over the whole action box."""
    return rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)


def assert_close(
    actual: torch.Tensor, expected: np.ndarray, tolerance: dict[str, float], rows: Any = slice(None)
) -> None:
    """Equal up to `tolerance`, in the given rows."""
    np.testing.assert_allclose(actual.cpu().numpy()[rows], np.asarray(expected, dtype=np.float64)[rows], **tolerance)


def as_numpy(tree: Any) -> Any:
    """Tensors in a (nested tuple or dict of) tensors as numpy arrays."""
    if isinstance(tree, dict):
        return {key: as_numpy(value) for key, value in tree.items()}
    if isinstance(tree, tuple):
        return tuple(as_numpy(value) for value in tree)
    return tree.cpu().numpy()


def before_resets(observations: np.ndarray, info: dict[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A step's observations and info as they were before the same-step resets of the envs that finished."""
    if "final_obs" not in info:
        return observations, info
    finished = info["_final_obs"]
    last_info = {
        key: np.where(finished.reshape(-1, *[1] * (np.ndim(value) - 1)), value, info[key])
        for key, value in info["final_info"].items()
    }
    return np.where(finished[:, None], info["final_obs"], observations), last_info


@pytest.mark.parametrize("env_id", list(LOCOMOTION_TASKS))
def test_one_step_from_gymnasium_states_matches_mujoco_backend(make_warp_env, env_id):
    warp_env, mujoco_env = both_engines(make_warp_env, env_id)
    actions = random_actions(mujoco_env, np.random.default_rng(0))
    warp_obs, warp_reward, warp_terminated, warp_truncated, warp_info = as_numpy(warp_env.step(actions))
    obs, reward, terminated, truncated, info = mujoco_env.step(actions)

    assert np.array_equal(warp_terminated, terminated) and np.array_equal(warp_truncated, truncated)
    assert set(warp_info) == set(info)
    warp_obs, warp_info = before_resets(warp_obs, warp_info)
    obs, info = before_resets(obs, info)
    np.testing.assert_allclose(warp_obs, obs, **STEP_TOLERANCE)
    np.testing.assert_allclose(warp_reward, reward, **STEP_TOLERANCE)
    assert np.array_equal(warp_info["feet_contact"], info["feet_contact"])
    for key in info.keys() - {"feet_contact"}:
        np.testing.assert_allclose(warp_info[key], info[key], **STEP_TOLERANCE, err_msg=key)
    if LOCOMOTION_TASKS[env_id].feet:
        assert info["feet_contact"].any(), "the states should include feet on the floor"


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5", "Swimmer-v5"])
def test_twenty_steps_stay_close_to_mujoco_backend(make_warp_env, env_id):
    """Envs are compared until their episode ends in either backend (their resets differ). HalfCheetah and Ant are
    left out: HalfCheetah tumbles chaotically (rounding its start state to float32 moves the float64 engine itself
    by 0.3 within 20 steps) and Ant soon puts a leg steeply on the floor (see `steep_capsule_touches`)."""
    warp_env, mujoco_env = both_engines(make_warp_env, env_id)
    rng = np.random.default_rng(1)
    running = np.ones(NUM_ENVS, dtype=bool)
    for _ in range(20):
        actions = random_actions(mujoco_env, rng)
        warp_obs, warp_reward, warp_terminated, _, warp_info = warp_env.step(actions)
        obs, reward, terminated, _, info = mujoco_env.step(actions)
        assert np.array_equal(warp_terminated.cpu().numpy()[running], terminated[running])
        running &= ~terminated
        assert_close(warp_obs, obs, TRAJECTORY_TOLERANCE, running)
        assert_close(warp_reward, reward, TRAJECTORY_TOLERANCE, running)
        assert np.array_equal(warp_info["feet_contact"].cpu().numpy()[running], info["feet_contact"][running])
    assert running.any(), "every episode ended: the comparison checked too little"


def test_outputs_are_tensors_on_the_device(make_warp_env):
    env = make_warp_env("Hopper-v5", NUM_ENVS, seed=0)
    observations, info = env.reset(seed=1)
    step = env.step(torch.zeros(env.action_space.shape))
    step_from_numpy = env.step(np.zeros(env.action_space.shape, dtype=np.float64))
    mujoco_env = MujocoVecEnv("Hopper-v5", NUM_ENVS, seed=0)

    assert env.backend == "warp"
    assert env.single_observation_space == mujoco_env.single_observation_space
    assert env.single_action_space == mujoco_env.single_action_space
    assert env.observation_space.shape == observations.shape == (NUM_ENVS, 11)
    for output in (observations, *info.values(), *step[:4], *step[4].values(), *step_from_numpy[:4]):
        assert isinstance(output, torch.Tensor)
        assert output.device.type == DEVICE
    assert observations.dtype == step[1].dtype == torch.float32
    assert step[2].dtype == step[3].dtype == info["feet_contact"].dtype == torch.bool
    with pytest.raises(ValueError, match="shape"):
        env.step(torch.zeros(NUM_ENVS + 1, 3))


def test_truncation_resets_in_the_same_step(make_warp_env):
    warp_env, mujoco_env = both_engines(make_warp_env, "HalfCheetah-v5", max_episode_steps=2)
    actions = np.zeros(mujoco_env.action_space.shape, dtype=np.float32)
    first = warp_env.step(actions)
    assert "final_obs" not in first[4] and not first[3].any()
    mujoco_env.step(actions)

    observations, _, terminated, truncated, info = warp_env.step(actions)
    *_, mujoco_info = mujoco_env.step(actions)
    assert truncated.all() and not terminated.any()
    assert info["_final_obs"].all() and info["_final_info"].all()
    assert_close(info["final_obs"], mujoco_info["final_obs"], STEP_TOLERANCE)
    assert_close(info["final_info"]["x_position"], mujoco_info["final_info"]["x_position"], STEP_TOLERANCE)
    assert not info["feet_contact"].any()
    assert_reset_states(warp_env, info["qpos"], info["qvel"])
    torch.testing.assert_close(observations, warp_env.task.observe(info["qpos"], info["qvel"], None))
    assert not warp_env.step(actions)[3].any(), "the step count restarts with the episode"


def test_termination_resets_only_the_finished_env(make_warp_env):
    env = make_warp_env("Hopper-v5", NUM_ENVS, seed=0)
    qpos = np.tile(LOCOMOTION_TASKS["Hopper-v5"](env.model).init_qpos, (NUM_ENVS, 1))
    qpos[0, 1] = 0.5  # below the healthy height
    env.set_state(qpos, np.zeros((NUM_ENVS, env.model.nv)))
    observations, reward, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))

    finished = torch.tensor([True, False, False, False], device=DEVICE)
    assert torch.equal(terminated, finished) and not truncated.any()
    assert torch.equal(info["_final_obs"], finished) and torch.equal(info["_final_info"], finished)
    assert info["final_obs"][0, 0] < 0.7 and info["final_info"]["reward_survive"][0] == 0.0
    assert reward[1:].gt(0.9).all()
    assert torch.equal(observations[1:], info["final_obs"][1:])
    assert_reset_states(env, info["qpos"][:1], info["qvel"][:1])
    assert not info["feet_contact"][0].any()


@pytest.mark.parametrize("env_id", ["Hopper-v5", "HalfCheetah-v5"])
def test_reset_noise_is_seeded_and_within_bounds(make_warp_env, env_id):
    env = make_warp_env(env_id, 2 * NUM_ENVS)
    first_observations, info = env.reset(seed=3)
    assert torch.equal(env.reset(seed=3)[0], first_observations)
    assert not torch.equal(env.reset(seed=4)[0], first_observations)
    assert_reset_states(env, info["qpos"], info["qvel"])
    scale = LOCOMOTION_TASKS[env_id].reset_noise_scale
    assert info["qvel"].abs().max() > scale / 2, "the noise spans its range"


def assert_reset_states(env: Any, qpos: torch.Tensor, qvel: torch.Tensor) -> None:
    """States drawn from the task's reset noise: uniform positions, uniform or Gaussian velocities."""
    task_class = LOCOMOTION_TASKS[env.env_id]
    scale, task = task_class.reset_noise_scale, task_class(env.model)
    rounding = 1e-6  # of the float32 states
    assert (np.abs(qpos.cpu().numpy() - task.init_qpos) <= scale + rounding).all()
    bound = 6 * scale if task_class.normal_velocity_noise else scale  # Gaussian: 6 standard deviations
    assert (np.abs(qvel.cpu().numpy() - task.init_qvel) <= bound + rounding).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where no CUDA GPU is present")
def test_cuda_without_a_gpu_is_a_clear_error(make_warp_env):
    with pytest.raises(RuntimeError, match="CUDA GPU"):
        make_warp_env("Hopper-v5", NUM_ENVS, device="cuda")
