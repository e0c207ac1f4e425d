"""The batched MuJoCo engine equals Gymnasium's v5 locomotion tasks: one step from real states, whole
trajectories, reward terms, terminations, reset noise and same-step auto-reset."""

import gymnasium as gym
import mujoco
import numpy as np
import pytest

from policylab.core.envs.mujoco_engine import LOCOMOTION_TASKS, MujocoVecEnv

TASKS = ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v5", "Swimmer-v5"]
PHYSICS = [(task, physics) for task in TASKS for physics in ("rollout", "mjdata") if task != "Ant-v5"]
PHYSICS.append(("Ant-v5", "mjdata"))


def gymnasium_states(env_id, count, seed=0):
    """(qpos, qvel) pairs visited by Gymnasium under random actions, restarting when an episode ends."""
    env = gym.make(env_id).unwrapped
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    states, step = [], 0
    while len(states) < count:
        _, _, terminated, _, _ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        step += 1
        if step % 3 == 0:
            states.append((env.data.qpos.copy(), env.data.qvel.copy()))
        if terminated:
            env.reset()
    return states


def gymnasium_step(env, qpos, qvel, action):
    env.set_state(qpos, qvel)
    return env.step(action)


@pytest.mark.parametrize(("env_id", "physics"), PHYSICS)
def test_one_step_from_gymnasium_states_equals_gymnasium(env_id, physics):
    states = gymnasium_states(env_id, count=24)
    qpos, qvel = (np.stack(parts) for parts in zip(*states))
    actions = np.random.default_rng(1).uniform(-1, 1, (len(states), *gym.spec(env_id).make().action_space.shape))
    actions = actions.astype(np.float32)
    with MujocoVecEnv(env_id, len(states), physics=physics) as engine:
        engine.set_state(qpos, qvel)
        observations, rewards, terminated, truncated, info = engine.step(actions)
        assert not truncated.any()
        reference = gym.make(env_id).unwrapped
        reference.reset(seed=0)
        for index in range(len(states)):
            observation, reward, done, _, reference_info = gymnasium_step(
                reference, qpos[index], qvel[index], actions[index]
            )
            last_info = info["final_info"] if done else info
            last_observation = info["final_obs"][index] if done else observations[index]
            np.testing.assert_allclose(last_observation, observation, rtol=0, atol=1e-8)
            assert rewards[index] == pytest.approx(reward, rel=0, abs=1e-8)
            assert terminated[index] == done
            for key, value in reference_info.items():
                assert last_info[key][index] == pytest.approx(value, rel=0, abs=1e-8), key
            np.testing.assert_allclose(last_info["qpos"][index], reference.data.qpos, rtol=0, atol=1e-8)


def run_against_gymnasium(env_id, physics, actions_for_step, num_envs=3, steps=200):
    """Largest difference in observations and rewards between the engine and Gymnasium from the same initial
    states under the same actions, over `steps` steps or until each episode ends."""
    references = [gym.make(env_id).unwrapped for _ in range(num_envs)]
    for seed, env in enumerate(references):
        env.reset(seed=seed)
    difference, running = 0.0, np.ones(num_envs, dtype=bool)
    with MujocoVecEnv(env_id, num_envs, physics=physics) as engine:
        engine.set_state(np.stack([e.data.qpos for e in references]), np.stack([e.data.qvel for e in references]))
        for step in range(steps):
            actions = actions_for_step(step, num_envs, engine.single_action_space.shape[0]).astype(np.float32)
            observations, rewards, terminated, _, info = engine.step(actions)
            for index in np.flatnonzero(running):
                observation, reward, done, _, _ = references[index].step(actions[index])
                ours = info["final_obs"][index] if terminated[index] else observations[index]
                difference = max(difference, np.abs(ours - observation).max(), abs(rewards[index] - reward))
                assert terminated[index] == done
                running[index] = not done
    return difference


def uniform_actions(seed):
    rng = np.random.default_rng(seed)
    return lambda step, num_envs, size: rng.uniform(-1, 1, (num_envs, size))


def gait(step, num_envs, size):
    return np.tile(np.sin(0.3 * step + np.arange(size)), (num_envs, 1))


@pytest.mark.parametrize("env_id", TASKS)
def test_mjdata_physics_carries_the_warm_start_and_equals_gymnasium_bit_for_bit(env_id):
    assert run_against_gymnasium(env_id, "mjdata", uniform_actions(0)) == 0.0


# HalfCheetah under uniform random actions is left out: it flips over, the motion turns chaotic and the
# zero warm-start difference (1e-13 at step 10) grows to order 10 by step 200; the mjdata physics is exact there.
ROLLOUT_CASES = [
    (task, policy) for task in ("Hopper-v5", "Walker2d-v5", "Swimmer-v5") for policy in ("uniform", "gait")
]


@pytest.mark.parametrize(("env_id", "policy"), [*ROLLOUT_CASES, ("HalfCheetah-v5", "gait")])
def test_rollout_physics_trajectories_stay_within_1e_6(env_id, policy):
    actions = uniform_actions(0) if policy == "uniform" else gait
    assert run_against_gymnasium(env_id, "rollout", actions) < 1e-6


@pytest.mark.parametrize("env_id", TASKS)
def test_reset_noise_has_gymnasium_distribution(env_id):
    task = LOCOMOTION_TASKS[env_id]
    with MujocoVecEnv(env_id, 4000, seed=0) as engine:
        engine.reset(seed=1)
        info = engine.reset()[1]
    qpos, qvel = info["qpos"], info["qvel"]
    scale, init_qpos = task.reset_noise_scale, engine.task.init_qpos
    position_noise = qpos - init_qpos
    assert np.abs(position_noise).max() <= scale
    np.testing.assert_allclose(position_noise.mean(0), 0, atol=4 * scale / np.sqrt(3 * 4000))
    np.testing.assert_allclose(position_noise.std(0), scale / np.sqrt(3), rtol=0.05)
    velocity_std = scale if task.normal_velocity_noise else scale / np.sqrt(3)
    np.testing.assert_allclose(qvel.std(0), velocity_std, rtol=0.05)
    if not task.normal_velocity_noise:
        assert np.abs(qvel).max() <= scale
    # Gymnasium's own reset, for the same bounds
    reference = gym.make(env_id).unwrapped
    reference.reset(seed=3)
    assert np.abs(reference.data.qpos - init_qpos).max() <= scale


def test_termination_resets_in_the_same_step_and_reports_the_final_observation():
    with MujocoVecEnv("Hopper-v5", 4, seed=0) as engine:
        engine.reset(seed=0)
        actions = np.tile(np.array([1.0, -1.0, 1.0], dtype=np.float32), (4, 1))
        for _ in range(200):
            observations, _, terminated, truncated, info = engine.step(actions)
            if terminated.any():
                break
        steps_taken = engine._elapsed_steps.max()
        assert not truncated.any() and "final_obs" in info
        done = terminated
        np.testing.assert_array_equal(info["_final_obs"], done)
        np.testing.assert_array_equal(info["_final_info"], done)
        # the final observation is unhealthy, the returned one is a fresh start near the initial pose
        final_height = info["final_obs"][done, 0]
        final_angle = info["final_obs"][done, 1]
        assert ((final_height <= 0.7) | (np.abs(final_angle) >= 0.2)).all()
        np.testing.assert_allclose(observations[done, 0], 1.25, atol=5e-3)
        np.testing.assert_allclose(info["qpos"][done, 1], 1.25, atol=5e-3)
        np.testing.assert_allclose(info["final_info"]["qpos"][done, 1:], info["final_obs"][done, :5])
        assert (engine._elapsed_steps[done] == 0).all() and (engine._elapsed_steps[~done] == steps_taken).all()


def test_truncation_at_the_step_limit():
    with MujocoVecEnv("HalfCheetah-v5", 3, seed=0, max_episode_steps=5) as engine:
        engine.reset()
        for _ in range(4):
            _, _, terminated, truncated, info = engine.step(np.zeros((3, 6), dtype=np.float32))
            assert not truncated.any() and "final_obs" not in info
        observations, _, terminated, truncated, info = engine.step(np.zeros((3, 6), dtype=np.float32))
        assert truncated.all() and not terminated.any()
        assert not np.allclose(info["final_obs"], observations)
        assert set(info["final_info"]) >= {"reward_forward", "reward_ctrl", "x_position", "qpos", "feet_contact"}


def test_feet_contact_and_positions_in_info():
    with MujocoVecEnv("Walker2d-v5", 2, seed=0) as engine:
        engine.reset()
        for _ in range(30):  # the walker drops onto both feet
            _, _, _, _, info = engine.step(np.zeros((2, 6), dtype=np.float32))
        qpos = info["qpos"][[0, 0]]
        qpos[1, 1] += 0.5  # the same pose lifted clear of the floor
        engine.set_state(qpos, np.zeros((2, engine.model.nv)))
        _, _, _, _, info = engine.step(np.zeros((2, 6), dtype=np.float32))
        assert info["feet_contact"].shape == (2, 2)
        assert info["feet_contact"][0].all() and not info["feet_contact"][1].any()
        np.testing.assert_array_equal(info["x_position"], info["qpos"][:, 0])


@pytest.mark.parametrize("physics", ["rollout", "mjdata"])
def test_kept_envs_go_on_exactly_as_in_the_whole_batch(physics):
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 5, 3)).astype(np.float32)
    with (
        MujocoVecEnv("Hopper-v5", 5, physics=physics, num_threads=2) as whole,
        MujocoVecEnv("Hopper-v5", 5, physics=physics, num_threads=2) as part,
    ):
        whole.reset(seed=0)
        for step in range(8):
            whole.step(actions[step])
        part.load_state_dict(whole.state_dict())
        part.keep([4, 1])
        assert part.num_envs == 2 and part.action_space.shape == (2, 3)
        for step in range(8, 20):  # episodes that go on (a reset would draw other noise in the two batches)
            expected = whole.step(actions[step])
            observations, rewards, terminated, truncated, info = part.step(actions[step, [4, 1]])
            assert not (terminated | truncated).any()
            np.testing.assert_array_equal(observations, expected[0][[4, 1]])
            np.testing.assert_array_equal(rewards, expected[1][[4, 1]])
            np.testing.assert_array_equal(info["qpos"], expected[4]["qpos"][[4, 1]])
        with pytest.raises(ValueError, match="keep needs a non-empty list of env indices below 2"):
            part.keep([0, 2])


def test_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match="has no task 'Pusher-v5'.*Hopper-v5"):
        MujocoVecEnv("Pusher-v5", 2)
    with pytest.raises(ValueError, match="physics='rollout' cannot run Ant-v5.*mjdata"):
        MujocoVecEnv("Ant-v5", 2, physics="rollout")
    with MujocoVecEnv("Hopper-v5", 2) as engine:
        with pytest.raises(ValueError, match=r"expected actions of shape \(2, 3\), got \(3,\)"):
            engine.step(np.zeros(3))
        with pytest.raises(ValueError, match="expected qpos and qvel of shapes"):
            engine.set_state(np.zeros((2, 5)), np.zeros((2, 6)))


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v5"])
def test_feet_contact_agrees_with_mujocos_contact_list(env_id):
    task = LOCOMOTION_TASKS[env_id]
    model = task.load_model()
    data, detector = mujoco.MjData(model), task(model)
    feet, floor = [model.geom(foot).id for foot in task.feet], model.geom("floor").id
    rng = np.random.default_rng(0)
    touching = np.zeros(len(feet))
    for step in range(600):
        if step % 200 == 0:
            mujoco.mj_resetData(model, data)
        data.ctrl[:] = rng.uniform(-1, 1, model.nu)
        mujoco.mj_step(model, data)
        mujoco.mj_forward(model, data)  # contacts and sensors of the same state
        pairs = [{contact.geom1, contact.geom2} for contact in data.contact]
        expected = np.array([{foot, floor} in pairs for foot in feet])
        np.testing.assert_array_equal(detector.feet_contact(data.sensordata[None])[0], expected)
        touching += expected
    assert touching.min() > 0  # every foot touched the floor at some point


def test_forward_reward_weight_zero_leaves_survival_minus_costs():
    env = MujocoVecEnv("Ant-v5", 3, seed=0, num_threads=1, forward_reward_weight=0.0)
    env.reset(seed=0)
    _, rewards, _, _, info = env.step(np.full((3, 8), 0.3, dtype=np.float32))
    np.testing.assert_array_equal(info["reward_forward"], 0.0)
    expected = info["reward_survive"] + info["reward_ctrl"] + info["reward_contact"]
    np.testing.assert_allclose(rewards, expected)
    assert np.abs(info["x_velocity"]).max() > 0  # the body moved; only its reward weight is zero
    env.close()
