"""The batched MinAtar env: shapes and minimal action sets, per-env seeds, same-step auto-reset with the final
observation (against MinAtar's own `Environment` stepped alone), truncation, and the errors."""

import sys

import numpy as np
import pytest
import torch

from policylab.core.envs.minatar import MinAtarVecEnv, import_minatar


def test_a_missing_minatar_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "minatar", None)  # what `import minatar` meets when it is not installed
    with pytest.raises(ImportError, match=r'pip install "policylab\[minatar\]"'):
        import_minatar()


@pytest.mark.parametrize("game, channels, actions", [("breakout", 4, 3), ("space_invaders", 6, 4), ("seaquest", 10, 6)])
def test_observations_are_channel_first_and_actions_the_minimal_set(game, channels, actions):
    pytest.importorskip("minatar")
    env = MinAtarVecEnv(game, 3, seed=0)
    observation, _ = env.reset()
    assert observation.shape == (3, channels, 10, 10) and observation.dtype == torch.float32
    assert set(observation.unique().tolist()) <= {0.0, 1.0} and observation.sum() > 0
    assert env.single_action_space.n == actions and env.observation_space.shape == (3, channels, 10, 10)
    observation, reward, terminated, truncated, info = env.step(torch.zeros(3, dtype=torch.long))
    assert reward.shape == terminated.shape == truncated.shape == (3,) and info["final_obs"].shape == observation.shape


def test_each_env_follows_minatar_stepped_alone_and_restarts_in_the_step_its_game_ends():
    minatar = pytest.importorskip("minatar")
    env = MinAtarVecEnv("breakout", 3, seed=10)
    env.reset()
    games = []
    for index in range(3):
        game = minatar.Environment("breakout")
        game.seed(10 + index)
        game.reset()
        games.append(game)
    actions = np.random.default_rng(0).integers(0, 3, (60, 3))
    ended = 0
    for step in range(60):
        observation, reward, terminated, _, info = env.step(torch.from_numpy(actions[step]))
        for index, game in enumerate(games):
            expected_reward, expected_terminal = game.act(env.action_set[actions[step, index]])
            assert reward[index] == expected_reward and terminated[index] == expected_terminal
            final = torch.from_numpy(game.state().transpose(2, 0, 1).astype(np.float32))
            assert torch.equal(info["final_obs"][index], final) and info["_final_obs"][index] == expected_terminal
            if expected_terminal:
                game.reset()
                ended += 1
            assert torch.equal(observation[index], torch.from_numpy(game.state().transpose(2, 0, 1).astype(np.float32)))
    assert ended >= 3  # random play loses the ball within a few dozen steps


def test_seeds_reproduce_and_a_slice_of_a_batch_equals_a_smaller_batch():
    pytest.importorskip("minatar")
    whole, part, again = MinAtarVecEnv("asterix", 4), MinAtarVecEnv("asterix", 2), MinAtarVecEnv("asterix", 4, seed=10)
    first, _ = whole.reset(seed=[10, 11, 12, 13])
    second, _ = part.reset(seed=[12, 13])
    third, _ = again.reset()
    actions = np.random.default_rng(1).integers(0, 5, (50, 4))
    for step in range(50):
        assert torch.equal(first[2:], second) and torch.equal(first, third)
        first, *_ = whole.step(actions[step])
        second, *_ = part.step(actions[step, 2:])
        third, *_ = again.step(actions[step])


def test_episodes_truncate_after_max_episode_steps():
    pytest.importorskip("minatar")
    env = MinAtarVecEnv("freeway", 2, seed=0, max_episode_steps=5)  # freeway's own limit is 2500 steps
    env.reset()
    for step in range(5):
        observation, _, terminated, truncated, info = env.step(torch.tensor([1, 2]))
        assert not terminated.any() and truncated.all() == (step == 4)
    assert not torch.equal(observation, info["final_obs"]) and (env.elapsed_steps == 0).all()


def test_bad_input_gets_clear_errors():
    pytest.importorskip("minatar")
    with pytest.raises(ValueError, match="unknown MinAtar game"):
        MinAtarVecEnv("pong", 2)
    env = MinAtarVecEnv("breakout", 2, seed=0)
    env.reset()
    with pytest.raises(ValueError, match="expects 2 actions in 0..2"):
        env.step(torch.tensor([0, 3]))
