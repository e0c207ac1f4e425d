import dataclasses
import json
import math

import gymnasium as gym
import pytest
import torch
from torch import distributions as D
from torch import nn

import policylab
from policylab.cli import main
from policylab.core.nets import MixtureGaussianActor
from policylab.online_rl import PMOEPPO, PMOESAC, PMOEPPOConfig, PMOESACConfig
from policylab.online_rl.pmoe import expert_q_values

SPACES = (gym.spaces.Box(-5.0, 5.0, (3,)), gym.spaces.Box(-2.0, 2.0, (1,)))
EXPERT_MEANS = (-1.0, 0.0, 0.5, 1.0)  # before tanh; the experts' actions are 2·tanh(mean)


def test_mixture_log_density_equals_a_direct_computation():
    torch.manual_seed(0)
    actor = MixtureGaussianActor(4, [-2.0, -1.0, 0.0], [2.0, 3.0, 0.5], num_experts=3, hidden_sizes=(16, 16))
    observations = torch.randn(64, 4)
    actions = actor.act(observations)
    mean, log_std, gate_logits = actor(observations)
    squash = [D.TanhTransform(), D.AffineTransform(actor.scaler.bias, actor.scaler.scale)]
    experts = D.Independent(D.TransformedDistribution(D.Normal(mean, log_std.exp()), squash), 1)
    mixture = D.MixtureSameFamily(D.Categorical(logits=gate_logits), experts)
    torch.testing.assert_close(actor.log_prob(observations, actions), mixture.log_prob(actions))
    per_expert = experts.log_prob(actions.unsqueeze(1))
    torch.testing.assert_close(actor.expert_log_prob(observations, actions), per_expert)
    torch.testing.assert_close(actor.expert_log_prob(observations, actions, per_dimension=True).sum(-1), per_expert)
    samples = actor.sample_experts(observations)  # each expert's own sample and its density under that expert
    torch.testing.assert_close(samples.log_probs, experts.log_prob(samples.actions), atol=1e-4, rtol=1e-5)


def test_ppo_flavour_mixes_plain_gaussians_with_one_learned_log_std_per_expert():
    torch.manual_seed(0)
    actor = MixtureGaussianActor(
        4, [-2.0, -1.0], [2.0, 3.0], num_experts=3, hidden_sizes=(16,), squash=False, state_dependent_std=False
    )
    with torch.no_grad():
        actor.log_std.copy_(torch.randn(3, 2))
    observations = torch.randn(64, 4)
    mean, log_std, gate_logits = actor(observations)
    torch.testing.assert_close(log_std, actor.log_std.expand(64, 3, 2))  # the same at every state
    experts = D.Independent(D.Normal(mean, log_std.exp()), 1)
    mixture = D.MixtureSameFamily(D.Categorical(logits=gate_logits), experts)
    actions = 5.0 * torch.randn(64, 2)  # unbounded: the env clips them, as PPO's Gaussian
    torch.testing.assert_close(actor.log_prob(observations, actions), mixture.log_prob(actions))
    torch.testing.assert_close(actor.expert_log_prob(observations, actions), experts.log_prob(actions.unsqueeze(1)))
    samples = actor.sample_experts(observations)
    torch.testing.assert_close(samples.log_probs, experts.log_prob(samples.actions))
    expected_mode = mean[torch.arange(64), gate_logits.argmax(-1)]
    torch.testing.assert_close(actor.act(observations, deterministic=True), expected_mode)


def test_deterministic_action_is_the_most_probable_experts_squashed_mean():
    torch.manual_seed(0)
    actor = MixtureGaussianActor(4, [-2.0], [2.0], num_experts=3, hidden_sizes=(16,))
    observations = torch.randn(32, 4)
    mean, _, gate_logits = actor(observations)
    expected = 2.0 * torch.tanh(mean[torch.arange(32), gate_logits.argmax(-1)])
    torch.testing.assert_close(actor.act(observations, deterministic=True), expected)
    every_expert = actor.expert_actions(observations)  # [32, 3 experts, 1]: each expert's squashed mean
    torch.testing.assert_close(every_expert, 2.0 * torch.tanh(mean))
    torch.testing.assert_close(every_expert[torch.arange(32), gate_logits.argmax(-1)], expected)


def test_sampled_deterministic_expert_is_drawn_from_the_gate():
    torch.manual_seed(0)
    actor = MixtureGaussianActor(4, [-2.0], [2.0], num_experts=3, hidden_sizes=(16,), deterministic_expert="sampled")
    with torch.no_grad():
        actor.gate.bias.copy_(torch.tensor([1.0, 0.0, -1.0]))
    observations = torch.randn(1, 4).expand(20000, -1)
    mean, _, gate_logits = actor(observations[:1])
    expert_actions = 2.0 * torch.tanh(mean[0, :, 0])  # [experts]
    actions = actor.act(observations, deterministic=True)[:, 0]
    distances = (actions.unsqueeze(-1) - expert_actions).abs()
    assert distances.min(-1).values.max() < 1e-6  # every action is exactly one expert's squashed mean, no noise
    shares = torch.bincount(distances.argmin(-1), minlength=3) / len(actions)
    torch.testing.assert_close(shares, torch.softmax(gate_logits[0], -1), atol=0.015, rtol=0)
    with pytest.raises(ValueError, match="most_probable"):
        MixtureGaussianActor(4, [-2.0], [2.0], deterministic_expert="mode")


class DistanceCritic(nn.Module):
    """Q(s, a) = −(a − target)² for both twin critics: the best expert is the one whose action is nearest."""

    def __init__(self, target: float) -> None:
        super().__init__()
        self.target = target

    def forward(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return -(actions - self.target).pow(2).sum(-1).expand(2, -1)


def hand_made_agent(**overrides) -> PMOESAC:
    """PMOE-SAC whose four experts act near 2·tanh(EXPERT_MEANS), almost deterministically, judged by a critic
    that prefers the action of expert 2."""
    agent = PMOESAC(SPACES, PMOESACConfig(seed=0, hidden_sizes=(8, 8), **overrides))
    with torch.no_grad():
        heads = agent.actor.heads
        heads.weight.zero_()
        bias = heads.bias.view(4, 2, 1)
        bias[:, 0, 0] = torch.tensor(EXPERT_MEANS)
        bias[:, 1, 0] = -10.0  # log-std at its lower bound
    agent.critic = DistanceCritic(target=2.0 * math.tanh(EXPERT_MEANS[2]))
    return agent


def test_the_winner_is_the_expert_with_the_highest_q():
    agent = hand_made_agent()
    observations = torch.randn(16, 3)
    samples = agent.actor.sample_experts(observations)
    q_values = expert_q_values(agent.critic, observations, samples.actions)
    assert q_values.shape == (16, 4) and (q_values.argmax(-1) == 2).all()
    policy = agent._policy_sample(observations)
    assert policy.metrics["experts/chosen_2"] == 1.0
    torch.testing.assert_close(policy.actions, torch.full((16, 1), 2.0 * math.tanh(EXPERT_MEANS[2])), atol=0.05, rtol=0)


def test_the_gate_loss_pulls_the_gate_towards_the_winner_and_leaves_the_trunk_alone():
    agent = hand_made_agent()
    observations = torch.randn(64, 3)
    gate_optimizer = torch.optim.Adam(agent.actor.gate.parameters(), lr=0.05)
    start = agent.actor.gate_weights(observations)[:, 2].mean().item()
    for _ in range(100):
        gate_loss = agent._policy_sample(observations).auxiliary_loss
        agent.actor.zero_grad(set_to_none=True)
        gate_loss.backward()
        assert all(parameter.grad is None for parameter in agent.actor.trunk.parameters())  # stop-gradient features
        gate_optimizer.step()
    assert start < 0.4 and agent.actor.gate_weights(observations)[:, 2].mean().item() > 0.9


@pytest.mark.parametrize("estimator", ["frequency", "gumbel", "score"])
def test_every_gate_estimator_trains_experts_and_gate(estimator):
    agent = PMOESAC("Pendulum-v1", PMOESACConfig(seed=0, hidden_sizes=(16, 16), gate_estimator=estimator))
    agent.setup_learning(1000)
    agent.buffer.add(
        torch.randn(64, 3), torch.rand(64, 1) * 4 - 2, torch.randn(64), torch.randn(64, 3), torch.zeros(64)
    )
    before = {name: value.clone() for name, value in agent.actor.named_parameters()}
    metrics = agent.update(agent.buffer.sample(64))
    changed = {name for name, value in agent.actor.named_parameters() if not torch.equal(value, before[name])}
    assert {"gate.weight", "heads.weight", "trunk.0.weight"} <= changed
    usage = [metrics[f"experts/gate_weight_{k}"] for k in range(4)]
    torch.testing.assert_close(sum(usage), torch.tensor(1.0))


def test_pmoe_sac_return_on_pendulum_rises_past_threshold(learns_pendulum):
    config = PMOESACConfig(seed=0, learning_starts=500, batch_size=128, hidden_sizes=(64, 64), learning_rate=1e-3)
    learns_pendulum(PMOESAC("Pendulum-v1", config), steps=4000)


@pytest.mark.parametrize("ratio_trains_gate", [True, False])
def test_pmoe_ppo_ratio_starts_at_one_and_reaches_the_gate_only_when_asked(ratio_trains_gate):
    config = PMOEPPOConfig(seed=0, rollout_steps=64, num_minibatches=2, update_epochs=1, hidden_sizes=(16, 16))
    agent = PMOEPPO("Pendulum-v1", dataclasses.replace(config, ratio_trains_gate=ratio_trains_gate))
    agent.setup_learning(64)
    agent.observations = torch.as_tensor(agent.make_envs().reset(seed=0)[0], dtype=torch.float32)
    agent._collect_rollout(agent.envs)
    batch = next(agent.buffer.minibatches(64))
    log_probs, _, _ = agent.policy.log_prob_entropy_value(batch["observations"], batch["actions"])
    torch.testing.assert_close(log_probs, batch["log_probs"])
    (-log_probs.mean()).backward()  # the ratio's gradient
    gate = agent.policy.actor.gate.weight
    assert (gate.grad is not None and gate.grad.abs().sum() > 0) == ratio_trains_gate
    agent.policy.zero_grad(set_to_none=True)
    auxiliary_loss, metrics = agent._auxiliary_loss(batch)
    auxiliary_loss.backward()  # the frequency estimator's loss trains the gate either way
    assert gate.grad.abs().sum() > 0 and "train/auxiliary_q_loss" in metrics


def test_pmoe_ppo_settings_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="entropy"):
        PMOEPPO("Pendulum-v1", PMOEPPOConfig(entropy_coef=0.01))
    with pytest.raises(ValueError, match="frequency, score"):
        PMOEPPOConfig(gate_estimator="gumbel")  # no pathwise gradient in PPO
    with pytest.raises(ValueError, match="ratio alone"):
        PMOEPPOConfig(gate_estimator="score", ratio_trains_gate=False)
    score = PMOEPPO("Pendulum-v1", PMOEPPOConfig(gate_estimator="score"))
    assert score.policy.gate_gradient and not hasattr(score.policy, "auxiliary_q")


def test_cli_trains_resumes_and_loads_pmoe_agents(tmp_path, capsys):
    sac_dir = tmp_path / "pmoe-sac"
    sac = ["train", "pmoe-sac", "--env", "Pendulum-v1", "--steps", "300", "--learning-starts", "100"]
    sac += ["--batch-size", "32", "--hidden-sizes", "16", "16", "--num-experts", "2", "--gate-estimator", "gumbel"]
    main([*sac, "--eval-episodes", "1", "--run-dir", str(sac_dir), "--no-progress"])
    agent = policylab.load(sac_dir / "agent.pt")
    assert isinstance(agent, PMOESAC) and agent.config.num_experts == 2 and agent.num_timesteps == 300
    assert "experts/chosen_1" in (sac_dir / "metrics.csv").read_text().splitlines()[0]

    ppo_dir = tmp_path / "pmoe-ppo"
    ppo = ["train", "pmoe-ppo", "--env", "Pendulum-v1", "--steps", "256", "--rollout-steps", "64", "--num-envs", "2"]
    ppo += ["--num-minibatches", "2", "--update-epochs", "1", "--eval-every", "128", "--eval-episodes", "1"]
    main([*ppo, "--run-dir", str(ppo_dir), "--no-progress"])
    capsys.readouterr()
    main([*ppo, "--steps", "384", "--resume", "--run-dir", str(ppo_dir), "--no-progress"])
    assert "return_mean" in json.loads(capsys.readouterr().out)
    assert (ppo_dir / "metrics.csv").read_text().splitlines()[-1].startswith("384,")
    assert isinstance(policylab.load(ppo_dir / "agent.pt"), PMOEPPO)
