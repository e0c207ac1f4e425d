"""Replay buffer storage and sampling; GAE against a hand-computed example."""

import numpy as np
import pytest
import torch

from policylab.core.agent import restore_generator
from policylab.core.buffers import ReplayBuffer, RolloutBuffer, compute_gae


def test_replay_buffer_from_dataset_holds_every_transition(random_dataset):
    buffer = ReplayBuffer.from_dataset(random_dataset, seed=0)
    assert len(buffer) == len(random_dataset)
    batch = buffer.sample(4096)
    # every sampled row is one of the dataset's transitions, columns kept together
    rows = {tuple(np.round(obs, 5)): i for i, obs in enumerate(random_dataset.observations)}
    for obs, action, reward, terminal in zip(
        batch.observations.numpy()[:50], batch.actions.numpy(), batch.rewards.numpy(), batch.terminals.numpy()
    ):
        index = rows[tuple(np.round(obs, 5))]
        np.testing.assert_allclose(action, random_dataset.actions[index])
        assert reward == random_dataset.rewards[index]
        assert terminal == float(random_dataset.terminals[index])
    assert batch.terminals.max() == 1.0  # terminals are carried, timeouts are not terminals


def test_replay_buffer_ring_keeps_the_newest_and_is_reproducible():
    buffer = ReplayBuffer(capacity=5, observation_dim=1, action_dim=1, seed=3)
    for start in range(0, 8, 2):  # 8 transitions in batches of 2 (like 2 envs)
        values = np.array([[start], [start + 1]], dtype=np.float32)
        buffer.add(values, values, values[:, 0], values, np.zeros(2))
    assert len(buffer) == 5
    assert sorted(buffer.storage[:, 0].tolist()) == [3.0, 4.0, 5.0, 6.0, 7.0]
    state = buffer.state_dict()
    first = buffer.sample(16).observations
    restored = ReplayBuffer(capacity=5, observation_dim=1, action_dim=1, seed=99)
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.sample(16).observations, first)


def test_normalize_observations_in_place(random_dataset):
    buffer = ReplayBuffer.from_dataset(random_dataset)
    mean, std = random_dataset.state_statistics()
    buffer.normalize_observations(torch.as_tensor(mean), torch.as_tensor(std))
    expected = (random_dataset.next_observations - mean) / std
    np.testing.assert_allclose(buffer.storage[:, 7:11].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_gae_hand_computed_with_truncation_and_termination():
    # step 0 continues, step 1 is truncated (V(final obs) = 10), step 2 terminates, step 3 continues.
    buffer = RolloutBuffer(steps=4, num_envs=1, observation_shape=(1,), action_shape=(1,))
    rewards, values = [1.0, 2.0, 3.0, 4.0], [0.5, 1.0, 1.5, 2.0]
    terminated, truncated, final_values = [0, 0, 1, 0], [0, 1, 0, 0], [0.0, 10.0, 7.0, 0.0]
    for step in range(4):
        buffer.add(
            observations=torch.zeros(1, 1),
            actions=torch.zeros(1, 1),
            log_probs=torch.zeros(1),
            values=torch.tensor([values[step]]),
            rewards=torch.tensor([rewards[step]]),
            terminations=torch.tensor([terminated[step]]),
            truncations=torch.tensor([truncated[step]]),
            final_values=torch.tensor([final_values[step]]),
        )
    buffer.compute_advantages(last_values=torch.tensor([3.0]), gamma=0.9, gae_lambda=0.5)
    # deltas: 1 + .9·1 − .5 = 1.4;  2 + .9·10 − 1 = 10;  3 − 1.5 = 1.5 (no bootstrap);  4 + .9·3 − 2 = 4.7
    # A3 = 4.7; A2 = 1.5 (episode ended); A1 = 10 (episode ended); A0 = 1.4 + .45·10 = 5.9
    torch.testing.assert_close(buffer.advantages[:, 0], torch.tensor([5.9, 10.0, 1.5, 4.7]))
    torch.testing.assert_close(buffer.returns[:, 0], torch.tensor([6.4, 11.0, 3.0, 6.7]))


def test_gae_with_lambda_one_is_the_discounted_return():
    rewards = torch.tensor([[1.0], [1.0], [1.0]])
    values = torch.zeros(3, 1)
    terminations = torch.tensor([[0.0], [0.0], [1.0]])
    advantages, returns = compute_gae(rewards, values, torch.zeros(3, 1), terminations, torch.zeros(3, 1), 0.5, 1.0)
    torch.testing.assert_close(returns[:, 0], torch.tensor([1.75, 1.5, 1.0]))


def test_rollout_minibatches_cover_the_rollout_once():
    buffer = RolloutBuffer(steps=3, num_envs=2, observation_shape=(1,), action_shape=(1,))
    for step in range(3):
        obs = torch.tensor([[2.0 * step], [2.0 * step + 1]])
        buffer.add(obs, obs, torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2))
    buffer.compute_advantages(torch.zeros(2), 0.99, 0.95)
    seen = torch.cat([batch["observations"][:, 0] for batch in buffer.minibatches(4)])
    assert sorted(seen.tolist()) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def _add_numbered_rows(buffer: ReplayBuffer, start: int, count: int) -> None:
    values = torch.arange(start, start + count, dtype=torch.float32)
    buffer.add(values[:, None], values[:, None], values, values[:, None], torch.zeros(count))


def test_replay_shards_rebuild_a_wrapped_buffer_and_delete_stale_rows(tmp_path):
    original = ReplayBuffer(10, 1, 1, seed=0)
    _add_numbered_rows(original, 0, 6)
    original.save_new_rows(tmp_path)
    _add_numbered_rows(original, 6, 7)  # wraps: history rows 3..12 are kept
    original.save_new_rows(tmp_path)
    checkpoint = (original.storage.clone(), original.generator.get_state())
    _add_numbered_rows(original, 13, 2)
    original.save_new_rows(tmp_path)  # written after the checkpoint at 13 rows, as by a run killed later
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "rows-000000000000-000000000006.pt",
        "rows-000000000006-000000000013.pt",
        "rows-000000000013-000000000015.pt",
    ]

    restored = ReplayBuffer(10, 1, 1, seed=1)
    restored.load_rows(tmp_path, total_added=13, generator_state=checkpoint[1])
    assert (restored.size, restored.position, restored.total_added) == (10, 3, 13)
    torch.testing.assert_close(restored.storage, checkpoint[0], rtol=0, atol=0)
    torch.testing.assert_close(restored.storage[:, 0], torch.tensor([10.0, 11, 12, 3, 4, 5, 6, 7, 8, 9]))
    assert not (tmp_path / "rows-000000000013-000000000015.pt").exists()


def test_replay_shards_forget_overwritten_rows_and_refuse_missing_ones(tmp_path):
    buffer = ReplayBuffer(10, 1, 1, seed=0)
    for start, count in ((0, 6), (6, 7), (13, 5)):
        _add_numbered_rows(buffer, start, count)
        buffer.save_new_rows(tmp_path)
    # after 18 rows, history rows 0..7 are overwritten in the ring: the first shard (0..6) is deleted
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "rows-000000000006-000000000013.pt",
        "rows-000000000013-000000000018.pt",
    ]
    restored = ReplayBuffer(10, 1, 1)
    restored.load_rows(tmp_path, total_added=18, generator_state=buffer.generator.get_state())
    torch.testing.assert_close(restored.storage, buffer.storage, rtol=0, atol=0)
    with pytest.raises(ValueError, match="miss transitions"):  # rows 3..5 of a 13-row state are gone
        ReplayBuffer(10, 1, 1).load_rows(tmp_path, total_added=13, generator_state=buffer.generator.get_state())


def test_a_generator_state_from_another_device_reseeds_the_buffer_deterministically():
    """A CUDA generator's state (16 bytes of Philox seed and offset) cannot be set on a CPU generator: resuming on
    the CPU a run checkpointed on a GPU reseeds from that state, with a warning, the same way every time."""
    cuda_like_state = torch.arange(16, dtype=torch.uint8)
    draws = []
    for seed in (1, 2):  # the buffer's own seed no longer matters once the state is restored
        buffer = ReplayBuffer(capacity=50, observation_dim=1, action_dim=1, seed=seed)
        _add_numbered_rows(buffer, 0, 50)
        with pytest.warns(UserWarning, match="another kind of device"):
            restore_generator(buffer.generator, cuda_like_state)
        draws.append(buffer.sample(32).observations)
    torch.testing.assert_close(draws[0], draws[1])
    other = ReplayBuffer(capacity=50, observation_dim=1, action_dim=1, seed=1)
    _add_numbered_rows(other, 0, 50)
    with pytest.warns(UserWarning):
        restore_generator(other.generator, torch.arange(1, 17, dtype=torch.uint8))
    assert not torch.equal(other.sample(32).observations, draws[0])
