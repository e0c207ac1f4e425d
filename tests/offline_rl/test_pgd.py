"""PGD: batches mix synthetic and real transitions in the agent's units, the synthetic set is regenerated with the
agent's guidance, a killed run resumes exactly, and saved agents act like their inner agent."""

import dataclasses

import numpy as np
import pytest
import torch

import policylab
from policylab.core.buffers import TransitionBatch
from policylab.core.data.generate import make_pendulum_scripted
from policylab.offline_rl import PGD, IQLConfig, PGDConfig, TD3BCConfig
from policylab.offline_rl.trajectory_diffusion import TrajectoryDiffusionConfig

SMALL_DIFFUSION = TrajectoryDiffusionConfig(horizon=8, features=8, levels=2, batch_size=16, sampling_steps=4)


@pytest.fixture(scope="module")
def pendulum():
    return make_pendulum_scripted(episodes=3, seed=0)


@pytest.fixture
def small_config(tmp_path, monkeypatch):
    monkeypatch.setenv("POLICYLAB_DATA", str(tmp_path / "cache"))  # the diffusion model's cache
    return PGDConfig(
        seed=0,
        device="cpu",
        td3bc=TD3BCConfig(hidden_sizes=(16, 16)),
        iql=IQLConfig(hidden_sizes=(16, 16)),
        diffusion=SMALL_DIFFUSION,
        diffusion_steps=20,
        synthetic_trajectories=8,
        synthetic_batch_size=24,
        regenerate_every=10,
    )


def rows(batch: TransitionBatch) -> torch.Tensor:
    """A batch as the replay buffer's rows: [observation, action, reward, next observation, terminal]."""
    return torch.cat(
        [batch.observations, batch.actions, batch.rewards[:, None], batch.next_observations, batch.terminals[:, None]],
        dim=1,
    )


def test_batches_mix_synthetic_and_real_transitions_in_the_agents_units(pendulum, small_config):
    agent = PGD.from_dataset(pendulum, dataclasses.replace(small_config, agent="iql"))
    replay = agent.prepare(pendulum)
    assert len(replay.synthetic) == 8 * 7  # horizon − 1 transitions per sampled window
    # env-unit transitions are converted as `prepare` converted the real data: normalised states, scaled rewards
    assert agent.agent.reward_scale != 1.0
    real = TransitionBatch(
        *(
            torch.as_tensor(values, dtype=torch.float32)
            for values in (
                pendulum.observations,
                pendulum.actions,
                pendulum.rewards,
                pendulum.next_observations,
                pendulum.terminals,
            )
        )
    )
    torch.testing.assert_close(rows(agent.agent.training_transitions(real)), replay.real.storage)
    batch = rows(replay.sample(32))
    assert (batch[:24, None] == replay.synthetic.storage[None]).all(-1).any(1).all()  # 24 synthetic rows ...
    assert (batch[24:, None] == replay.real.storage[None]).all(-1).any(1).all()  # ... then 8 real ones


def test_synthetic_set_is_regenerated_with_guidance_every_regenerate_every_updates(pendulum, small_config):
    agent = PGD.from_dataset(pendulum, small_config)
    calls = []
    original = agent.action_log_likelihood

    def recording_log_likelihood(observations, actions, deterministic_std=1.0):
        calls.append(agent.num_updates)
        return original(observations, actions, deterministic_std)

    agent.action_log_likelihood = recording_log_likelihood
    replay = agent.prepare(pendulum)
    first_set = replay.synthetic.storage.clone()
    assert calls == []  # the first set is unguided: the policy is untrained
    for _ in range(10):
        agent.update(replay.sample(32))
    assert calls and set(calls) == {10}  # one guided sampling, after update 10
    assert not torch.equal(replay.synthetic.storage, first_set)


def test_a_killed_pgd_run_resumes_exactly_and_reuses_the_cached_diffusion_model(pendulum, small_config, tmp_path):
    def make():
        return PGD.from_dataset(pendulum, small_config)

    full = make()
    full.fit(pendulum, steps=40, checkpoint_every=20, run_dir=tmp_path / "full", progress=False)
    cached = list((tmp_path / "cache" / "diffusion").glob("*.pt"))
    assert len(cached) == 1

    def kill(step):
        if step == 30:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make().fit(pendulum, steps=40, checkpoint_every=20, run_dir=tmp_path / "killed", progress=False, callback=kill)
    resumed = make()
    resumed.fit(pendulum, steps=40, checkpoint_every=20, run_dir=tmp_path / "killed", resume=True, progress=False)
    assert resumed.num_updates == full.num_updates == 40
    for name in ("actor", "critic", "actor_optimizer", "critic_optimizer"):
        expected, actual = getattr(full.agent, name).state_dict(), getattr(resumed.agent, name).state_dict()
        torch.testing.assert_close(actual, expected, rtol=0, atol=0, msg=name)
    assert list((tmp_path / "cache" / "diffusion").glob("*.pt")) == cached  # trained once, then read


def test_saved_pgd_agent_loads_and_acts_like_its_inner_agent(pendulum, small_config, tmp_path):
    agent = PGD.from_dataset(pendulum, small_config)
    agent.fit(pendulum, steps=20, progress=False)
    agent.save(tmp_path / "agent.pt")
    loaded = policylab.load(tmp_path / "agent.pt")
    assert isinstance(loaded, PGD) and loaded.config.agent == "td3bc"
    observations = pendulum.observations[:16]
    np.testing.assert_array_equal(loaded.act(observations), agent.agent.act(observations))


def test_deterministic_guidance_density_is_a_gaussian_around_the_policys_action(pendulum, small_config):
    agent = PGD.from_dataset(pendulum, small_config)
    observations = torch.as_tensor(pendulum.observations[:5])
    mean = agent.agent._policy(observations, deterministic=True).detach()
    actions = mean + 0.5
    expected = -0.5 * (0.5 / 2.0) ** 2 - np.log(2.0) - 0.5 * np.log(2 * np.pi)
    log_likelihood = agent.action_log_likelihood(observations, actions, deterministic_std=2.0)
    torch.testing.assert_close(log_likelihood, torch.full((5,), float(expected)))
