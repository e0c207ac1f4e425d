import pytest
import torch

from policylab.online_rl import PPO, PPOConfig


def cartpole_config(**overrides) -> PPOConfig:
    # CleanRL's CartPole settings, with a higher learning rate and more envs so it solves in seconds.
    values = dict(
        seed=0,
        num_envs=8,
        rollout_steps=128,
        num_minibatches=4,
        update_epochs=4,
        learning_rate=2.5e-3,
        entropy_coef=0.01,
        normalize_observations=False,
        normalize_rewards=False,
        hidden_sizes=(32, 32),
    )
    return PPOConfig(**(values | overrides))


def test_ppo_solves_cartpole_on_the_torch_backend():
    agent = PPO("CartPole-v1", cartpole_config())
    assert agent.evaluate("CartPole-v1", episodes=10).return_mean < 100
    result = agent.learn(30_000, eval_every=30_000, progress=False)
    assert agent.envs.backend == "torch"
    assert result.return_mean > 300  # 500 is the cap


def test_ppo_resume_after_kill_equals_uninterrupted_run(resumes_exactly):
    config = cartpole_config(normalize_observations=True, normalize_rewards=True)
    modules = ("policy", "observation_normalizer", "return_normalizer", "optimizer")
    resumes_exactly(lambda: PPO("CartPole-v1", config), 5 * 1024, 3 * 1024, 2048, modules)


def test_ppo_bootstraps_truncated_episodes_from_the_final_observation():
    # Pendulum only truncates (after 200 steps): the rollout must record V(final observation) there.
    config = PPOConfig(seed=0, num_envs=2, rollout_steps=200, num_minibatches=4, update_epochs=1)
    agent = PPO("Pendulum-v1", config)
    agent.setup_learning(400)
    agent.observations = torch.as_tensor(agent.make_envs().reset(seed=0)[0], dtype=torch.float32)
    final_observations = []
    step_envs = agent.step_envs

    def recording_step(envs, actions):
        step = step_envs(envs, actions)
        final_observations.append(step.final_observations)
        return step

    agent.step_envs = recording_step
    agent._collect_rollout(agent.envs)
    buffer = agent.buffer
    assert buffer.truncations[-1].tolist() == [1.0, 1.0] and buffer.truncations[:-1].sum() == 0
    expected = agent.policy.value(agent.observation_normalizer(final_observations[-1])).squeeze(-1)
    torch.testing.assert_close(buffer.final_values[-1], expected)
    # GAE at the last step: δ = r + γ V(final) − V(s), not r − V(s)
    delta = buffer.rewards[-1] + config.discount * expected - buffer.values[-1]
    torch.testing.assert_close(buffer.advantages[-1], delta)


def test_ppo_checks_its_action_space():
    import gymnasium as gym

    spaces = (gym.spaces.Box(-1, 1, (3,)), gym.spaces.MultiDiscrete([2, 2]))
    with pytest.raises(ValueError, match="Box or a Discrete"):
        PPO(spaces)


def test_ppo_learns_on_a_given_vec_env_and_a_loaded_agent_continues(tmp_path):
    import policylab
    from policylab.core.envs import make_vec_env

    envs = make_vec_env("CartPole-v1", 4, backend="gymnasium", seed=3)
    agent = PPO(envs, cartpole_config(num_envs=4, rollout_steps=32, num_minibatches=2))
    agent.learn(256, eval_every=10**6, progress=False)
    assert agent.num_timesteps == 256 and agent.env_id == "CartPole-v1"
    agent.save(tmp_path / "agent.pt")
    loaded = policylab.load(tmp_path / "agent.pt")
    assert loaded.num_timesteps == 256 and loaded.env_id == "CartPole-v1"
    loaded.learn(512, eval_every=10**6, progress=False)  # builds its own envs from the recorded task
    assert loaded.num_timesteps == 512 and loaded.envs.backend == "torch"
