import copy
import csv
import json
import math

import pytest
import torch

import policylab
from policylab.cli import main
from policylab.online_rl import PROPS, PPOBuffer, PPOBufferConfig, PROPSConfig
from policylab.online_rl.props import props_objective


def cartpole_config(**overrides) -> PROPSConfig:
    # Small and fast: 8 torch envs, n = 128 steps per env, m = 64.
    values = dict(
        seed=0,
        num_envs=8,
        rollout_steps=128,
        behaviour_steps=64,
        num_minibatches=4,
        update_epochs=4,
        learning_rate=2.5e-3,
        behaviour_num_minibatches=4,
        behaviour_update_epochs=4,
        normalize_observations=False,
        normalize_rewards=False,
        hidden_sizes=(32, 32),
        sampling_error_every=2,
    )
    return PROPSConfig(**(values | overrides))


def test_props_objective_on_a_hand_made_batch():
    # ρ = 0.5 is clipped up to 1 − ε = 0.7 (no gradient); ρ = 1 and ρ = 1.5 pass unclipped (max picks ρ itself).
    log_ratio = torch.tensor([0.5, 1.0, 1.5]).log().requires_grad_()
    objective = props_objective(log_ratio, clip_coef=0.3)
    objective.backward()
    torch.testing.assert_close(objective, torch.tensor((0.7 + 1.0 + 1.5) / 3))
    torch.testing.assert_close(log_ratio.grad, torch.tensor([0.0, 1.0 / 3, 1.5 / 3]))  # d ρ / d log ρ = ρ


def test_behaviour_update_lowers_the_probability_of_an_over_sampled_action():
    config = PROPSConfig(seed=0, rollout_steps=64, behaviour_steps=32, normalize_observations=False)
    agent = PROPS("Pendulum-v1", config)
    agent.setup_learning(64)
    observations = torch.randn(64, 1, 3)
    with torch.no_grad():
        mean, std = agent.policy.mode(observations), agent.policy.log_std.exp()
    over_sampled, under_sampled = mean + std, mean - std  # the buffer holds only actions above the mean
    for observation, action in zip(observations, over_sampled):
        zeros = torch.zeros(1)
        agent.history.add(
            observations=observation,
            actions=action,
            rewards=zeros,
            terminations=zeros,
            truncations=zeros,
            final_observations=observation,
        )
    metrics = agent._update_behaviour()
    assert metrics["props/minibatch_updates"] > 0
    with torch.no_grad():
        behaviour, target = agent.behaviour_policy.distribution(observations), agent.policy.distribution(observations)
        log_ratio_over = (behaviour.log_prob(over_sampled) - target.log_prob(over_sampled)).mean()
        log_ratio_under = (behaviour.log_prob(under_sampled) - target.log_prob(under_sampled)).mean()
        assert log_ratio_over < -0.05 and log_ratio_under > 0.05
        assert behaviour.mean.mean() < target.mean.mean()
        # δ_P bounds the KL estimate before each step, so the behaviour policy stays near π_θ
        assert torch.distributions.kl_divergence(target, behaviour).mean() < 0.2


def test_props_differs_from_ppo_buffer_only_by_its_behaviour_update():
    # With no behaviour epochs φ is reset to θ and left there, so PROPS must equal its control step for step.
    settings = dict(seed=0, rollout_steps=64, behaviour_steps=32, num_minibatches=4, sampling_error_every=0)
    configs = {
        "no behaviour update": (PROPS, PROPSConfig(behaviour_update_epochs=0, **settings)),
        "control": (PPOBuffer, PPOBufferConfig(**settings)),
        "props": (PROPS, PROPSConfig(behaviour_update_epochs=1, **settings)),
    }
    runs = {}
    for name, (agent_class, config) in configs.items():  # one after another: they share the global random stream
        runs[name] = agent_class("Pendulum-v1", config)
        runs[name].learn(320, eval_every=10**9, eval_episodes=1, progress=False)
    control_actions = runs["control"].history.newest()["actions"]
    torch.testing.assert_close(runs["no behaviour update"].history.newest()["actions"], control_actions, rtol=0, atol=0)
    for parameter, reference in zip(
        runs["no behaviour update"].policy.parameters(), runs["control"].policy.parameters()
    ):
        torch.testing.assert_close(parameter, reference, rtol=0, atol=0)
    # The behaviour update is what changes the data: PROPS's own run sampled other actions.
    assert not torch.allclose(runs["props"].history.newest()["actions"], control_actions)


def test_the_buffer_is_normalised_anew_with_the_current_statistics_before_each_update():
    config = PROPSConfig(seed=0, num_envs=2, rollout_steps=64, behaviour_steps=32, buffer_batches=2)
    agent = PROPS("Pendulum-v1", config)
    agent.setup_learning(256)
    agent.observations = torch.as_tensor(agent.make_envs().reset(seed=0)[0], dtype=torch.float32)
    raw_observations, raw_rewards, statistics_then = [], [], []
    step_envs = agent.step_envs

    def recording_step(envs, actions):
        raw_observations.append(agent.observations)
        if len(raw_observations) == 33:  # the oldest step the buffer will hold
            statistics_then.append(copy.deepcopy(agent.observation_normalizer))
        step = step_envs(envs, actions)
        raw_rewards.append(step.rewards)
        return step

    agent.step_envs = recording_step
    agent._collect(agent.envs, 160)  # more than the buffer's 128 steps: the oldest 32 are gone
    rollout = agent._rollout_from_history()
    fresh_observations = agent.observation_normalizer(torch.stack(raw_observations[-128:]))
    torch.testing.assert_close(rollout.observations, fresh_observations, rtol=0, atol=0)
    torch.testing.assert_close(rollout.rewards, agent._normalize_rewards(torch.stack(raw_rewards[-128:])))
    log_probs, _, values = agent.policy.log_prob_entropy_value(fresh_observations, rollout.actions)
    torch.testing.assert_close(rollout.log_probs, log_probs)
    torch.testing.assert_close(rollout.values, values)
    # The statistics moved since that step was stored: normalising it then would give other inputs.
    assert not torch.allclose(rollout.observations[0], statistics_then[0](raw_observations[32]), atol=1e-3)


def test_props_learns_cartpole():
    agent = PROPS("CartPole-v1", cartpole_config())
    assert agent.evaluate("CartPole-v1", episodes=10).return_mean < 100
    result = agent.learn(30_000, eval_every=30_000, progress=False)
    assert result.return_mean > 300  # 500 is the cap


def test_props_resumes_after_kill_as_an_uninterrupted_run_and_ppo_buffer_trains_from_the_cli(
    resumes_exactly, tmp_path, capsys
):
    config = cartpole_config(normalize_observations=True, normalize_rewards=True)
    modules = ("policy", "behaviour_policy", "observation_normalizer", "optimizer", "behaviour_optimizer")
    resumes_exactly(lambda: PROPS("CartPole-v1", config), 5 * 1024, 3 * 1024, 2048, modules)

    run_dir = tmp_path / "cli"
    command = ["train", "ppo-buffer", "--env", "Pendulum-v1", "--steps", "256", "--rollout-steps", "64"]
    command += ["--behaviour-steps", "64", "--num-minibatches", "4", "--sampling-error-every", "1"]
    main([*command, "--eval-episodes", "1", "--run-dir", str(run_dir), "--no-progress"])
    assert "return_mean" in json.loads(capsys.readouterr().out)
    agent = policylab.load(run_dir / "agent.pt")
    assert isinstance(agent, PPOBuffer) and agent.config.sampling == "on-policy" and agent.config.buffer_batches == 2
    assert "train/sampling_error" in (run_dir / "metrics.csv").read_text().splitlines()[0]


def test_props_takes_the_tasks_tuned_settings_where_unset():
    cheetah = PROPSConfig(behaviour_learning_rate=3e-4).resolved("HalfCheetah-v5")
    assert (cheetah.rollout_steps, cheetah.behaviour_steps, cheetah.learning_rate) == (1024, 512, 1e-4)
    assert cheetah.behaviour_learning_rate == 3e-4 and math.isclose(cheetah.behaviour_target_kl, 0.05)
    assert PROPSConfig().resolved("Pendulum-v1").rollout_steps == 2048  # untuned tasks take Hopper's
    with pytest.raises(ValueError, match="must divide"):
        PROPSConfig(rollout_steps=1000, behaviour_steps=256).resolved("Hopper-v5")
    with pytest.raises(ValueError, match="on-policy"):
        PROPSConfig(sampling="uniform")


def test_sampling_error_is_refused_for_a_policy_without_a_closed_form_distribution():
    from policylab.online_rl import PMOEPPO, PMOEPPOConfig

    with pytest.raises(ValueError, match="sampling_error_every=0"):
        PMOEPPO("Pendulum-v1", PMOEPPOConfig(sampling_error_every=1))
    with pytest.raises(ValueError, match="0 \\(never\\) or positive"):
        PROPSConfig(sampling_error_every=-1)


def test_on_policy_reference_leaves_training_untouched_and_matches_an_on_policy_buffer(tmp_path):
    # The reference re-collects the buffer on-policy with the batches' own target policies. Measuring it must not
    # change training; for PPO-buffer, whose buffer is itself on-policy, both sampling errors estimate the same thing.
    runs = {}
    for name, reference in (("plain", False), ("with reference", True)):
        settings = vars(cartpole_config(sampling_error_every=1, on_policy_reference=reference))
        runs[name] = PPOBuffer("CartPole-v1", PPOBufferConfig(**(settings | {"sampling": "on-policy"})))
        runs[name].learn(6 * 1024, eval_every=10**9, eval_episodes=1, run_dir=tmp_path / name, progress=False)
    for parameter, reference in zip(runs["with reference"].policy.parameters(), runs["plain"].policy.parameters()):
        torch.testing.assert_close(parameter, reference, rtol=0, atol=0)
    agent = runs["with reference"]
    assert len(agent.batch_policies) == 2  # θ of each batch in the buffer; the newest is θ before the last update
    assert any(
        not torch.equal(old, new)
        for old, new in zip(agent.batch_policies[-1].values(), agent.policy.state_dict().values())
    )

    with open(tmp_path / "with reference" / "metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row.get("train/sampling_error_on_policy")]
    own = [float(row["train/sampling_error"]) for row in rows]
    reference = [float(row["train/sampling_error_on_policy"]) for row in rows]
    assert len(rows) >= 4 and min(reference) > 0
    assert 0.5 < sum(reference) / sum(own) < 2.0
