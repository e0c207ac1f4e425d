import torch

from policylab.core.envs import make_vec_env
from policylab.core.envs.grid_worlds import GridLevels, GridWorld, LevelDistribution, named_levels, sample_levels

UP, DOWN, LEFT, RIGHT, STAY = range(5)


def hand_made_levels() -> GridLevels:
    """Two copies of one 3x3 level (episode lengths 10 and 3): a wall right of the start (cell 0), a collectable
    worth 0.5 below it (cell 3) that respawns at once, and a -1 below that (cell 6) that always ends the episode.

        S # .
        a . .
        b . .
    """
    return GridLevels(
        size=torch.tensor([3, 3]),
        walls=torch.tensor([[False, True] + [False] * 7] * 2),
        start=torch.tensor([0, 0]),
        object_cell=torch.tensor([[3, 6]] * 2),
        object_present=torch.tensor([[True, True]] * 2),
        object_reward=torch.tensor([[0.5, -1.0]] * 2),
        object_termination=torch.tensor([[0.0, 1.0]] * 2),
        object_respawn=torch.tensor([[1.0, 0.0]] * 2),
        episode_length=torch.tensor([10, 3]),
    )


def test_hand_made_level_walls_rewards_respawn_termination_and_truncation():
    env = GridWorld(levels=hand_made_levels(), seed=0)
    observations, _ = env.reset(seed=0)
    # one-hot over 9 cells x 4 presence patterns, plus the time feature
    assert observations.shape == (2, 9 * 4 + 1)
    assert observations[0, 0 + 9 * 3] == 1 and observations[0].sum() == 1
    expected = [
        # action, cell after, presence after, reward, terminated (env 0)
        (RIGHT, 0, [1, 1], 0.0, False),  # the wall blocks
        (UP, 0, [1, 1], 0.0, False),  # the edge blocks
        (DOWN, 3, [0, 1], 0.5, False),  # collects a; it cannot respawn in the same step
        (STAY, 3, [1, 1], 0.0, False),  # a respawns (probability 1) under the agent
        (STAY, 3, [0, 1], 0.5, False),  # and is collected again
    ]
    for step, (action, cell, presence, reward, terminated) in enumerate(expected, start=1):
        observations, rewards, terminations, truncations, info = env.step(torch.tensor([action, action]))
        assert rewards[0] == reward and bool(terminations[0]) == terminated
        if step < 3:
            assert env.state[0].tolist() == [cell, *presence, step]
            index = cell + 9 * (presence[0] + 2 * presence[1])
            assert observations[0, index] == 1 and torch.isclose(observations[0, -1], torch.tensor(0.001 * step))
        if step == 3:  # env 1 has the same path but a 3-step episode: truncated, reset to the start
            assert bool(truncations[1]) and not bool(terminations[1]) and rewards[1] == 0.5
            assert env.state[1].tolist() == [0, 1, 1, 0]
            assert info["final_obs"][1, 3 + 9 * 2] == 1  # the episode's last observation: on a, a collected
        else:
            assert not bool(truncations[1])
        assert env.state[0].tolist() == [cell, *presence, step]
    _, rewards, terminations, truncations, _ = env.step(torch.tensor([DOWN, DOWN]))
    assert rewards[0] == -1.0 and bool(terminations[0]) and not bool(truncations[0])  # b ends the episode
    assert env.state[0].tolist() == [0, 1, 1, 0]


def test_index_observation_is_the_one_hot_position():
    levels = sample_levels(64, torch.Generator().manual_seed(0))
    dense = GridWorld(levels=levels, seed=3)
    compact = GridWorld(levels=levels, seed=3, observation="index")
    one_hot, _ = dense.reset(seed=3)
    index, _ = compact.reset(seed=3)
    for _ in range(30):
        assert torch.equal(one_hot[:, :-1].argmax(1), index[:, 0].long())
        assert torch.equal(one_hot[:, -1], index[:, 1])
        actions = torch.randint(0, 5, (64,))
        one_hot = dense.step(actions)[0]
        index = compact.step(actions)[0]


def test_random_and_named_levels_are_well_formed():
    distribution = LevelDistribution()
    for levels in (
        sample_levels(500, torch.Generator().manual_seed(1), distribution),
        named_levels("longer", 50, torch.Generator().manual_seed(1)),
        named_levels("long_dense", 50, torch.Generator().manual_seed(1), max_size=13, max_objects=5),
    ):
        cells = torch.cat([levels.start[:, None], levels.object_cell], 1)
        inside = cells < (levels.size**2)[:, None]
        assert inside.all() and not levels.walls.gather(1, cells).any()
        assert all(len(set(row)) == len(row) for row in cells.tolist())  # distinct cells
    levels = sample_levels(500, torch.Generator().manual_seed(1), distribution)
    assert levels.size.min() == 4 and levels.size.max() == 10
    assert set(levels.object_present.sum(1).tolist()) == {1, 2, 3, 4, 5}
    assert (levels.object_reward[:, 0] >= 0).all() and (levels.object_reward < 0).any()
    assert levels.episode_length.min() >= 20 and levels.episode_length.max() <= 750
    assert levels.walls.sum(1).max() == 15
    longer = named_levels("longer", 1, torch.Generator())
    assert longer.walls.sum() == 7 and not longer.walls[0, 1 * 9 + 4] and longer.walls[0, 4]


def test_registered_ids_make_batched_envs():
    env = make_vec_env("GridWorld-sparse-v0", 8, backend="torch", seed=0)
    observations, _ = env.reset(seed=0)
    assert observations.shape == (8, 13 * 13 * 4 + 1)
    env = make_vec_env("GridWorld-all-v0", 8, backend="torch", seed=0, observation="index")
    assert env.reset(seed=0)[0].shape == (8, 2)
