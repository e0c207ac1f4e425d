"""Evaluation: exact episode counts, seed-determined episodes, D4RL-normalised scores, clear shape errors."""

import gymnasium as gym
import numpy as np
import pytest

from policylab.core.data import normalized_score
from policylab.core.evaluation import evaluate


def zero_hopper_policy(observations):
    return np.zeros((len(observations), 3), dtype=np.float32)


def test_episodes_are_fixed_by_seed_not_by_the_number_of_envs():
    together = evaluate(zero_hopper_policy, "Hopper-v5", episodes=3, seed=5, num_envs=3)
    one_by_one = evaluate(zero_hopper_policy, "Hopper-v5", episodes=3, seed=5, num_envs=1)
    np.testing.assert_array_equal(together.returns, one_by_one.returns)
    np.testing.assert_array_equal(together.lengths, one_by_one.lengths)
    assert len(together.returns) == 3


def test_returns_and_normalized_scores_match_a_hand_rollout():
    result = evaluate(zero_hopper_policy, "Hopper-v5", episodes=2, seed=11)
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
