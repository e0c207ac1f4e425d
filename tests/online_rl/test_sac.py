import copy
import dataclasses

import pytest
import torch

import policylab
from policylab.online_rl import SAC, SACConfig


def small_config(**overrides) -> SACConfig:
    values = dict(seed=0, learning_starts=100, batch_size=64, hidden_sizes=(32, 32), buffer_size=1000)
    return SACConfig(**(values | overrides))


def test_sac_return_on_pendulum_rises_past_threshold(learns_pendulum):
    config = SACConfig(seed=0, learning_starts=500, batch_size=128, hidden_sizes=(128, 128), learning_rate=1e-3)
    learns_pendulum(SAC("Pendulum-v1", config), steps=5000)


def test_sac_resume_after_kill_equals_uninterrupted_run(resumes_exactly, tmp_path):
    def replay_chunks(run_dir) -> None:  # the replay buffer is saved in chunks as it fills, not all at once
        assert sorted(path.name for path in (run_dir / "replay").iterdir()) == [
            "rows-000000000000-000000000200.pt",
            "rows-000000000200-000000000400.pt",
        ]

    modules = ("actor", "critic", "critic_target", "log_alpha")
    uninterrupted, resumed = resumes_exactly(
        lambda: SAC("Pendulum-v1", small_config()), 600, 450, 200, modules, after_kill=replay_chunks
    )
    assert resumed.num_timesteps == uninterrupted.num_timesteps == 600
    assert resumed.num_updates == uninterrupted.num_updates == 501  # updates from step 100 on
    torch.testing.assert_close(resumed.buffer.storage, uninterrupted.buffer.storage, rtol=0, atol=0)
    assert policylab.load(tmp_path / "agent.pt").num_timesteps == 600


def test_sac_entropy_coefficient_falls_while_entropy_is_above_target():
    agent = SAC("Pendulum-v1", small_config(target_entropy=-50.0))  # far below any policy's entropy
    agent.learn(300, eval_every=10_000, progress=False)
    assert agent.log_alpha.value.exp().item() < 0.95


def test_sac_entropy_gradient_equals_autograd_of_sb3s_alpha_loss_and_the_update_uses_the_alpha_before_it():
    agent = SAC("Pendulum-v1", small_config())
    agent.setup_learning(1000)
    agent.buffer.add(
        torch.randn(64, 3), torch.rand(64, 1) * 4 - 2, torch.randn(64), torch.randn(64, 3), torch.zeros(64)
    )
    batch = agent.buffer.sample(64)
    reference = copy.deepcopy(agent)
    torch.manual_seed(3)
    metrics = agent.update(batch)
    torch.manual_seed(3)  # the same policy noise: sampling the actor is the update's first random draw
    _, log_probs = reference.actor(batch.observations)
    alpha_loss = -(reference.log_alpha.value * (log_probs.detach() + reference.target_entropy)).mean()
    (expected,) = torch.autograd.grad(alpha_loss, reference.log_alpha.value)
    torch.testing.assert_close(agent.log_alpha.value.grad, expected)
    # The update's losses use α from before its step, as SB3's do; the step itself moved α.
    assert metrics["train/alpha"] == reference.log_alpha.value.exp()
    assert agent.log_alpha.value.exp() != reference.log_alpha.value.exp()


def test_sac_bf16_matmuls_stay_close_to_float32_and_the_actor_reads_the_stepped_critics():
    agent = SAC("Pendulum-v1", small_config(learning_rate=0.05))  # a large step moves Q far more than rounding does
    agent.setup_learning(1000)
    agent.buffer.add(
        torch.randn(64, 3), torch.rand(64, 1) * 4 - 2, torch.randn(64), torch.randn(64, 3), torch.zeros(64)
    )
    batch = agent.buffer.sample(64)
    before = copy.deepcopy(agent)
    bf16 = copy.deepcopy(agent)
    bf16.config = dataclasses.replace(agent.config, bf16_matmuls=True)
    torch.manual_seed(3)
    expected = agent.update(batch)
    torch.manual_seed(3)
    metrics = bf16.update(batch)
    for name in ("train/critic_loss", "train/actor_loss", "train/q_mean", "train/entropy"):
        torch.testing.assert_close(metrics[name], expected[name], rtol=2e-2, atol=2e-2)
    assert metrics["train/q_mean"] != expected["train/q_mean"]  # the products did run in bfloat16
    assert all(parameter.dtype == torch.float32 for parameter in bf16.critic.parameters())
    # An actor loss at the critics from before their step (what a stale bfloat16 weight cache would give) is far off.
    torch.manual_seed(3)
    actions, log_probs = before.actor(batch.observations)
    stale_q = before.critic(batch.observations, actions).min(dim=0).values
    stale_actor_loss = (expected["train/alpha"] * log_probs - stale_q).mean()
    assert (stale_actor_loss - expected["train/actor_loss"]).abs() > 0.2


def test_sac_stores_final_observation_and_bootstraps_truncation():
    # Pendulum truncates after 200 steps and never terminates. With 2 envs, vector step t writes rows 2t, 2t+1.
    agent = SAC("Pendulum-v1", small_config(num_envs=2))
    agent.learn(400, eval_every=10_000, progress=False)
    rows = agent.buffer.storage[:400]
    observations, next_observations, terminals = rows[:, :3], rows[:, 5:8], rows[:, -1]  # [s, a, r, s', done]
    assert terminals.abs().sum() == 0  # truncation is not termination: every row bootstraps
    # Within the episode, a row's next observation is where the env's next row starts ...
    torch.testing.assert_close(next_observations[:-2], observations[2:], rtol=0, atol=0)
    # ... and the last rows hold the episodes' final observations, not the reset ones that replaced them.
    assert not torch.allclose(next_observations[398:], agent.observations)


def test_sac_refuses_discrete_actions():
    with pytest.raises(ValueError, match="continuous"):
        SAC("CartPole-v1")
