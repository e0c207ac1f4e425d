"""TD3+BC: the update matches the paper's losses, and it learns from a scripted expert's data."""

import copy

import torch
from torch.nn import functional as F

from policylab.core.data.generate import make_pendulum_scripted
from policylab.offline_rl import TD3BC, TD3BCConfig
from tests.offline_rl.conftest import assert_beats_random_pendulum


def test_update_matches_hand_written_td3bc_losses(random_dataset):
    agent = TD3BC.from_dataset(random_dataset, TD3BCConfig(seed=0, hidden_sizes=(16, 16), device="cpu"))
    buffer = agent.prepare(random_dataset)
    batch = buffer.sample(32)
    before = copy.deepcopy(agent)

    torch.manual_seed(123)
    metrics = agent.update(batch)  # update 1: critic only
    torch.manual_seed(123)
    noise = (torch.randn_like(batch.actions) * 0.2).clamp(-0.5, 0.5)
    with torch.no_grad():
        next_actions = (before.actor_target(batch.next_observations) + noise).clamp(-1, 1)
        target = (
            batch.rewards
            + 0.99 * (1 - batch.terminals) * before.critic_target(batch.next_observations, next_actions).min(0).values
        )
    q1, q2 = before.critic(batch.observations, batch.actions)
    expected_critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
    torch.testing.assert_close(metrics["train/critic_loss"], expected_critic_loss.detach())
    assert "train/actor_loss" not in metrics  # the actor waits for every second update

    actor_before = copy.deepcopy(agent.actor)
    critic_now = copy.deepcopy(agent.critic)
    metrics = agent.update(batch)  # update 2: critic, then actor and targets
    pi = actor_before(batch.observations)
    # the actor step uses the critic after this update's critic step
    q_pi = agent.critic(batch.observations, pi, member=0)
    expected_actor_loss = -2.5 / q_pi.abs().mean() * q_pi.mean() + F.mse_loss(pi, batch.actions)
    torch.testing.assert_close(metrics["train/actor_loss"], expected_actor_loss.detach(), rtol=1e-5, atol=1e-5)
    assert not torch.equal(critic_now.q.layers[0].weight, agent.critic.q.layers[0].weight)


def test_td3bc_learns_pendulum_from_scripted_expert_data():
    dataset = make_pendulum_scripted(episodes=30, seed=0)
    agent = TD3BC.from_dataset(dataset, TD3BCConfig(seed=0, hidden_sizes=(64, 64), device="cpu"))
    agent.fit(dataset, steps=2000, eval_env=None, progress=False)
    assert_beats_random_pendulum(agent)
