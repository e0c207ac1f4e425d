"""The dynamics ensemble learns known linear dynamics, picks its elites on held-out data, rolls out, and saves."""

import numpy as np
import torch

from policylab.core.data import OfflineDataset
from policylab.offline_rl.dynamics_ensemble import DynamicsEnsemble, DynamicsEnsembleConfig

TRANSITION = np.array([[0.9, 0.2], [-0.1, 0.8]], dtype=np.float32)
CONTROL = np.array([[0.5], [1.0]], dtype=np.float32)


def linear_dataset(size: int = 4000, noise: float = 0.01) -> OfflineDataset:
    """s' = A s + B a + ε, r = −|s|²."""
    rng = np.random.default_rng(0)
    observations = rng.normal(size=(size, 2)).astype(np.float32)
    actions = rng.uniform(-1, 1, (size, 1)).astype(np.float32)
    next_observations = observations @ TRANSITION.T + actions @ CONTROL.T + noise * rng.normal(size=(size, 2))
    return OfflineDataset(
        observations=observations,
        actions=actions,
        rewards=-(observations**2).sum(axis=1),
        next_observations=next_observations.astype(np.float32),
        terminals=np.zeros(size, dtype=bool),
        timeouts=(np.arange(size) % 100 == 99),
    )


def small_config(**changes) -> DynamicsEnsembleConfig:
    settings = dict(ensemble_size=4, elites=2, hidden_sizes=(64, 64), training_steps=600, holdout=500, eval_every=100)
    return DynamicsEnsembleConfig(**(settings | changes))


def test_learns_linear_dynamics_and_picks_elites():
    dataset = linear_dataset()
    torch.manual_seed(0)
    model = DynamicsEnsemble.from_dataset(dataset, small_config())
    history = model.fit(dataset)
    assert history[-1] < 0.2 * history[0], history
    assert sorted(model.elite_members.tolist()) == sorted(torch.argsort(model.holdout_error)[:2].tolist())

    observations = torch.tensor([[0.5, -1.0], [1.0, 1.0]])
    actions = torch.tensor([[0.3], [-0.6]])
    next_observations, rewards = model.step(observations, actions, sample=False)
    expected = observations @ torch.as_tensor(TRANSITION).T + actions @ torch.as_tensor(CONTROL).T
    torch.testing.assert_close(next_observations, expected, atol=0.1, rtol=0)
    torch.testing.assert_close(rewards, -(observations**2).sum(dim=1), atol=0.3, rtol=0)


def test_rollout_shapes_follow_the_policy(tmp_path):
    dataset = linear_dataset(size=1000)
    model = DynamicsEnsemble.from_dataset(dataset, small_config(training_steps=20, holdout=100))
    model.fit(dataset)
    calls = []

    def policy(observations: torch.Tensor) -> torch.Tensor:
        calls.append(observations)
        return -0.1 * observations[:, :1]

    rollout = model.rollout(policy, dataset.observations[:8], horizon=5, generator=torch.Generator().manual_seed(0))
    assert rollout["observations"].shape == (8, 5, 2) and rollout["actions"].shape == (8, 5, 1)
    assert rollout["rewards"].shape == (8, 5) and rollout["next_observations"].shape == (8, 5, 2)
    torch.testing.assert_close(rollout["observations"][:, 1:], rollout["next_observations"][:, :-1])
    torch.testing.assert_close(rollout["actions"][:, 2], -0.1 * calls[2][:, :1])

    model.save(tmp_path / "model.pt")
    loaded = DynamicsEnsemble.load(tmp_path / "model.pt")
    observations, actions = torch.as_tensor(dataset.observations[:4]), torch.as_tensor(dataset.actions[:4])
    for original, restored in zip(
        model.distribution(observations, actions), loaded.distribution(observations, actions)
    ):
        torch.testing.assert_close(original, restored)
    assert torch.equal(loaded.elite_members, model.elite_members)
