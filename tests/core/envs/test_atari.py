"""The atari backend: DQN-preprocessed frames, per-env seeds, same-step auto-reset with the final observation, and
a population of Nature-DQN networks evaluated on it."""

import numpy as np
import pytest
import torch

from policylab.core.envs import make_vec_env, supported_backends
from policylab.core.evaluation import evaluate_population
from policylab.core.nets import PopulationNatureCNN

pytest.importorskip("ale_py")


def test_frames_actions_and_the_backend_auto_picks():
    assert supported_backends("ALE/Pong-v5")[0] == "atari"
    with make_vec_env("ALE/Pong-v5", 3, seed=0) as envs:
        observations, _ = envs.reset()
        assert envs.backend == "atari" and observations.shape == (3, 4, 84, 84) and observations.dtype == np.uint8
        assert envs.single_action_space.n == 6 and envs.max_episode_steps == 27_000  # 108,000 frames, skip 4


def test_env_i_of_a_batch_equals_a_smaller_batch_seeded_with_its_seed():
    actions = np.random.default_rng(0).integers(0, 6, (40, 4))
    with make_vec_env("ALE/Pong-v5", 4) as whole, make_vec_env("ALE/Pong-v5", 2) as part:
        first, _ = whole.reset(seed=[10, 11, 12, 13])
        second, _ = part.reset(seed=[12, 13])
        np.testing.assert_array_equal(first[2:], second)
        for step in range(40):
            first, *_ = whole.step(actions[step])
            second, *_ = part.step(actions[step, 2:])
        np.testing.assert_array_equal(first[2:], second)
        with pytest.raises(ValueError, match="consecutive seeds"):
            part.reset(seed=[3, 5])


def test_truncation_resets_in_the_same_step_and_keeps_the_final_frames():
    with make_vec_env("ALE/Pong-v5", 2, seed=0, max_episode_steps=30) as envs:
        envs.reset()
        for _ in range(29):
            _, _, terminated, truncated, info = envs.step(np.zeros(2, dtype=np.int64))
            assert not (terminated | truncated).any() and "final_obs" not in info
        observations, _, terminated, truncated, info = envs.step(np.zeros(2, dtype=np.int64))
        assert truncated.all() and info["_final_obs"].all()
        assert not np.array_equal(info["final_obs"], observations)  # the last frames, not the new game's
        assert set(info["final_info"]) >= {"lives", "episode_frame_number"}


def test_a_population_shard_on_atari_equals_its_rows_of_the_whole_population():
    spec = PopulationNatureCNN(4, 6)
    params = spec.initial_params(4, torch.Generator().manual_seed(0))
    run = dict(policy_spec=spec, env_id="ALE/Pong-v5", episodes_per_member=2, max_episode_steps=120)
    whole = evaluate_population(params, seed=5, **run)
    shard = evaluate_population(params[1:3], seed=5 + 2, **run)
    assert whole.returns.shape == (4, 2) and (whole.lengths == 120).all()
    np.testing.assert_array_equal(shard.returns, whole.returns[1:3])
    assert whole.returns.min() < 0  # the untrained networks concede points within 120 steps
