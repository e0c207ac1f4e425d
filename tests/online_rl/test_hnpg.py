"""NPG and HNPG on the combination lock: HNPG solves a short lock, runs resume exactly, per-step acting."""

import dataclasses

import numpy as np
import pytest
import torch

import policylab
from policylab.cli import main
from policylab.core.data.generate import make_combination_lock_dataset
from policylab.core.envs import VecEnvWrapper, make_vec_env
from policylab.core.envs.torch_envs import register_combination_lock
from policylab.online_rl import HNPG, NPG, PPO, HNPGConfig, NPGConfig, PPOConfig

LOCK = register_combination_lock(3)


@pytest.fixture(scope="module")
def lock_data(tmp_path_factory):
    """The paper's kind of offline data for the 3-step lock, 2000 episodes, as a D4RL-layout file."""
    path = tmp_path_factory.mktemp("data") / "combination-lock-h3.hdf5"
    make_combination_lock_dataset(3, 2000).save(path)
    return str(path)


def test_hnpg_solves_a_short_lock_with_offline_data(lock_data):
    agent = HNPG(LOCK, HNPGConfig(seed=0, dataset=lock_data))
    assert (agent.config.horizon, agent.num_steps) == (3, 3)  # one policy and critic per step of the lock
    assert agent.evaluate(LOCK, episodes=50).return_mean < 0.2
    result = agent.learn(12_000, eval_every=12_000, eval_episodes=50, progress=False)
    assert result.return_mean > 0.9  # the deterministic policy opens the lock


def test_hnpg_resume_after_kill_equals_uninterrupted_run(lock_data, resumes_exactly):
    config = HNPGConfig(seed=0, dataset=lock_data, num_envs=4, steps_per_iteration=120, critic_steps=5)
    resumes_exactly(lambda: HNPG(LOCK, config), 600, 360, 240, ("policy", "critic"))


@pytest.mark.parametrize("ratio, drawn", [(1.0, 40), (2.5, 100)])
def test_offline_ratio_sets_the_offline_draws_per_time_step(lock_data, ratio, drawn):
    config = HNPGConfig(seed=0, dataset=lock_data, num_envs=4, steps_per_iteration=120, critic_steps=1)
    agent = HNPG(LOCK, dataclasses.replace(config, offline_ratio=ratio))
    agent.learn(120, eval_every=10_000, progress=False)  # one iteration: 40 online samples at each of 3 steps
    assert agent._offline_rows.shape == (3, drawn)


def test_per_step_policies_act_by_time_step_and_reload(tmp_path):
    agent = NPG(LOCK, NPGConfig(seed=0))
    with torch.no_grad():
        agent.policy.mean.layers[-1].weight.zero_()
        agent.policy.mean.layers[-1].bias.copy_(torch.arange(3.0).reshape(3, 1, 1))  # step h's mean is h
    observations = np.zeros((3, agent.observation_space.shape[0]), dtype=np.float32)
    np.testing.assert_allclose(agent.act(observations, time_steps=np.arange(3))[:, 0], [0.0, 1.0, 1.0])  # clipped
    np.testing.assert_allclose(agent.act(observations[0], time_steps=1), np.ones(10))
    with pytest.raises(ValueError, match="time_steps"):
        agent.act(observations)
    actions, state = agent.predict(observations[:2], deterministic=True)
    np.testing.assert_array_equal(state, [1, 1])
    _, state = agent.predict(observations[:2], state=state, episode_start=np.array([True, False]))
    np.testing.assert_array_equal(state, [1, 2])
    agent.save(tmp_path / "agent.pt")
    reloaded = policylab.load(tmp_path / "agent.pt")
    assert isinstance(reloaded, NPG) and reloaded.config.horizon == 3
    np.testing.assert_array_equal(
        reloaded.act(observations, time_steps=np.arange(3)), agent.act(observations, time_steps=np.arange(3))
    )


def test_tasks_without_a_fixed_horizon_get_one_policy_and_hnpg_asks_for_data():
    agent = NPG("Pendulum-v1", NPGConfig(seed=0))
    assert (agent.config.horizon, agent.num_steps, agent.acts_by_time_step) == (0, 1, False)
    assert agent.act(np.zeros(3, dtype=np.float32)).shape == (1,)
    with pytest.raises(ValueError, match="set config.dataset"):
        HNPG("Pendulum-v1", HNPGConfig(seed=0)).learn(1000, progress=False)
    with pytest.raises(ValueError, match="use data of this task"):
        HNPG("CombinationLock-H5-v0", HNPGConfig(seed=0)).load_offline_data(make_combination_lock_dataset(3, 10))


def test_train_hnpg_from_the_command_line(lock_data, tmp_path, capsys):
    run_dir = tmp_path / "hnpg"
    args = ["train", "hnpg", "--env", LOCK, "--steps", "200", "--dataset", lock_data, "--steps-per-iteration", "100"]
    main([*args, "--eval-episodes", "2", "--eval-every", "100", "--run-dir", str(run_dir), "--no-progress"])
    assert "eval/return_mean" in (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert (run_dir / "agent.pt").is_file() and (run_dir / "evaluation.json").is_file()


def test_npg_sends_the_envs_unclipped_samples_and_ppo_clips_them():
    class Recorder(VecEnvWrapper):
        def step(self, actions):
            self.actions = actions
            return self.env.step(actions)

    envs = Recorder(make_vec_env(LOCK, 2, backend="torch", seed=0))
    huge = torch.full((2, 10), 5.0)
    for agent, expected in ((NPG(envs, NPGConfig(num_envs=2)), 5.0), (PPO(envs, PPOConfig(num_envs=2)), 1.0)):
        agent.observations = agent._as_float(envs.reset(seed=0)[0])
        agent.step_envs(envs, huge)
        assert torch.all(envs.actions == expected)  # the lock's authors never clip; PPO clips to [0, 1] as SB3
