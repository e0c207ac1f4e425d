"""Evaluation: exact episode counts, seed-determined episodes, D4RL-normalised scores, clear shape errors."""

import gymnasium as gym
import numpy as np
import pytest

from policylab.core.data import normalized_score
from policylab.core.evaluation import evaluate


def zero_hopper_policy(observations):
    return np.zeros((len(observations), 3), dtype=np.float32)


def test_episodes_are_fixed_by_the_seed():
    first = evaluate(zero_hopper_policy, "Hopper-v5", episodes=3, seed=5)
    again = evaluate(zero_hopper_policy, "Hopper-v5", episodes=3, seed=5)
    other = evaluate(zero_hopper_policy, "Hopper-v5", episodes=3, seed=6)
    np.testing.assert_array_equal(first.returns, again.returns)
    np.testing.assert_array_equal(first.lengths, again.lengths)
    assert not np.array_equal(first.returns, other.returns)


def test_fewer_envs_than_episodes_run_every_episode_to_its_end():
    result = evaluate(zero_hopper_policy, "Hopper-v5", episodes=5, seed=3, num_envs=2)
    assert len(result.returns) == 5 and (result.lengths > 0).all()
    # the zero policy falls over long before the time limit, so every episode ended by termination
    assert (result.lengths < 1000).all() and (result.returns > 0).all()


def test_returns_and_normalized_scores_match_a_hand_rollout():
    # Gymnasium's vector envs seed env k with seed + k, so each episode can be replayed by hand
    result = evaluate(zero_hopper_policy, "Hopper-v5", episodes=2, seed=11, backend="gymnasium")
    env = gym.make("Hopper-v5")
    for episode in range(2):
        env.reset(seed=11 + episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(np.zeros(3, dtype=np.float32))
            total += reward
            done = terminated or truncated
        assert result.returns[episode] == pytest.approx(total)
    expected = 100 * (result.returns + 20.272305) / (3234.3 + 20.272305)
    np.testing.assert_allclose(result.normalized_scores, expected)
    np.testing.assert_allclose(result.normalized_scores, normalized_score("Hopper-v5", result.returns))
    assert result.metrics()["eval/normalized_score"] == pytest.approx(expected.mean())


def test_tasks_without_references_have_no_normalized_score():
    result = evaluate(lambda obs: np.zeros((len(obs), 1)), "Pendulum-v1", episodes=1)
    assert result.normalized_scores is None and "eval/normalized_score" not in result.metrics()


def test_agent_for_another_task_is_refused():
    class Agent:
        observation_space = gym.spaces.Box(-1, 1, (4,))

        def act(self, observations, deterministic=True):
            return np.zeros((len(observations), 3))

    with pytest.raises(ValueError, match="expects"):
        evaluate(Agent(), "Hopper-v5", episodes=1)
    with pytest.raises(ValueError, match="unknown environment id 'Hoper-v5'.*Hopper-v5"):
        evaluate(zero_hopper_policy, "Hoper-v5", episodes=1)
