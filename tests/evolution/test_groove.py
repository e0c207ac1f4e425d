import math

import pytest
import torch

from policylab.core.envs.grid_worlds import LevelDistribution, sample_levels
from policylab.evolution.groove import (
    GROOVE,
    GROOVEConfig,
    LevelBuffer,
    LPGNetwork,
    MinAtarConfig,
    NetworkAgent,
    ObservationTrajectory,
    Trajectory,
    evaluate_returns,
    lpg_agent_update,
    lpg_network_update,
    meta_loss,
    meta_test_minatar,
    rank_weights,
    train_on_levels,
)

DOUBLE = torch.float64


def tiny_trajectory() -> Trajectory:
    """One agent, one env, two steps: state 0 then 2 (time features 0 and 0.001), actions 1 and 4, the episode
    ending at the second step."""
    return Trajectory(
        index=torch.tensor([[[0, 2]]]),
        time=torch.tensor([[[0.0, 0.001]]], dtype=DOUBLE),
        action=torch.tensor([[[1, 4]]]),
        reward=torch.tensor([[[0.0, 1.0]]]),
        terminated=torch.tensor([[[False, True]]]),
        truncated=torch.tensor([[[False, False]]]),
        next_index=torch.tensor([[[2, 1]]]),
        next_time=torch.tensor([[[0.001, 0.002]]], dtype=DOUBLE),
    )


def heads(generator: torch.Generator, outputs: int) -> dict[str, torch.Tensor]:
    return {
        "table": torch.randn(1, 3, outputs, generator=generator, dtype=DOUBLE),
        "time": torch.randn(1, outputs, generator=generator, dtype=DOUBLE),
        "bias": torch.randn(1, outputs, generator=generator, dtype=DOUBLE),
    }


@pytest.mark.parametrize("max_grad_norm", [1e9, 0.05])
def test_agent_update_from_lpg_outputs_equals_the_hand_computed_step(max_grad_norm):
    generator = torch.Generator().manual_seed(0)
    actor, critic = heads(generator, 5), heads(generator, 3)
    policy_target = torch.tensor([[[0.5, -1.0]]], dtype=DOUBLE)
    target = torch.tensor([[[[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]]], dtype=DOUBLE)

    def fixed_lpg(*inputs):
        return policy_target, target

    config = GROOVEConfig(actor_learning_rate=0.3, critic_learning_rate=0.7, max_grad_norm=max_grad_norm)
    new_actor, new_critic, _ = lpg_agent_update(fixed_lpg, actor, critic, tiny_trajectory(), config)

    # By hand: d/dlogits of (1/2) Σ_t π̂_t log π_t(a_t) is (1/2) π̂_t (onehot(a_t) − π_t); d/dz of
    # (c/2) Σ_t KL(softmax(z_t) ‖ ŷ_t) is (c/2) y_t ⊙ (log y_t − log ŷ_t − KL_t).
    states, times, actions = [0, 2], [0.0, 0.001], [1, 4]

    def expected(params, output_grads, learning_rate):
        grads = {name: torch.zeros_like(value) for name, value in params.items()}
        for step in range(2):
            grads["table"][0, states[step]] += output_grads[step]
            grads["time"][0] += times[step] * output_grads[step]
            grads["bias"][0] += output_grads[step]
        norm = math.sqrt(sum(float((grad**2).sum()) for grad in grads.values()))
        scale = min(1.0, max_grad_norm / norm)
        return {name: params[name] - learning_rate * scale * grads[name] for name in params}

    actor_output_grads, critic_output_grads = [], []
    for step in range(2):
        logits = actor["table"][0, states[step]] + times[step] * actor["time"][0] + actor["bias"][0]
        policy = torch.softmax(logits, -1)
        actor_output_grads.append(
            0.5 * policy_target[0, 0, step] * (torch.eye(5, dtype=DOUBLE)[actions[step]] - policy)
        )
        z = critic["table"][0, states[step]] + times[step] * critic["time"][0] + critic["bias"][0]
        y, y_hat = torch.softmax(z, -1), target[0, 0, step]
        kl = (y * (y.log() - y_hat.log())).sum()
        critic_output_grads.append(0.5 * 0.5 * y * (y.log() - y_hat.log() - kl))
    for name, value in expected(actor, actor_output_grads, 0.3).items():
        torch.testing.assert_close(new_actor[name], value, rtol=1e-6, atol=1e-7)
    for name, value in expected(critic, critic_output_grads, 0.7).items():
        torch.testing.assert_close(new_critic[name], value, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("max_grad_norm", [1e9, 0.05])
def test_a_network_agent_that_is_a_linear_layer_on_the_one_hot_takes_the_tabular_agents_step(max_grad_norm):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(2)
    lpg = LPGNetwork(target_size=3, embedding_width=4, hidden_size=5).double()
    actor, critic = heads(generator, 5), heads(generator, 3)
    config = GROOVEConfig(target_size=3, actor_learning_rate=0.3, critic_learning_rate=0.7, max_grad_norm=max_grad_norm)
    trajectory = tiny_trajectory()
    new_actor, new_critic, _ = lpg_agent_update(lpg, actor, critic, trajectory, config)

    def linear_layer(params):  # the heads as one Linear over (one-hot state, time feature)
        layer = torch.nn.Linear(4, params["bias"].shape[1]).double()
        with torch.no_grad():
            layer.weight.copy_(torch.cat([params["table"][0], params["time"]]).T)
            layer.bias.copy_(params["bias"][0])
        return layer

    def observations(index, time_feature):
        return torch.cat([torch.nn.functional.one_hot(index, 3).double(), time_feature[..., None]], -1)

    agent = NetworkAgent(linear_layer(actor), linear_layer(critic), 0.3, 0.7, torch.optim.SGD, max_grad_norm)
    network_trajectory = ObservationTrajectory(
        **{name: getattr(trajectory, name) for name in ("action", "reward", "terminated", "truncated")},
        observation=observations(trajectory.index, trajectory.time),
        next_observation=observations(trajectory.next_index, trajectory.next_time),
    )
    lpg_network_update(lpg, agent, network_trajectory, config.target_coefficient)
    for layer, params in ((agent.actor, new_actor), (agent.critic, new_critic)):
        expected = linear_layer(params)
        assert not torch.allclose(layer.weight, linear_layer(actor if layer is agent.actor else critic).weight)
        torch.testing.assert_close(layer.weight, expected.weight, rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(layer.bias, expected.bias, rtol=1e-5, atol=1e-9)


def test_minatar_meta_test_runs_end_to_end_and_repeats_with_its_seed():
    pytest.importorskip("minatar")
    config = MinAtarConfig(
        num_envs=4, rollout_length=5, hidden_sizes=(16,), evaluation_episodes=4, max_episode_steps=40
    )
    lpg = LPGNetwork(target_size=4, embedding_width=4, hidden_size=8)
    result = meta_test_minatar(lpg, "breakout", updates=3, config=config, seed=1)
    assert set(result) == {"a2c_return", "random_return", "lpg_return", "normalised_return"}
    gap = result["a2c_return"] - result["random_return"]
    if abs(gap) > 1e-8:
        assert result["normalised_return"] == pytest.approx((result["lpg_return"] - result["random_return"]) / gap)
    assert all(0.0 <= result[key] <= 40 for key in ("a2c_return", "random_return", "lpg_return"))
    references = {key: result[key] for key in ("a2c_return", "random_return")}
    assert meta_test_minatar(lpg, "breakout", updates=3, config=config, seed=1, references=references) == result


def test_meta_gradient_through_one_unrolled_update_equals_finite_differences():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    lpg = LPGNetwork(target_size=3, embedding_width=4, hidden_size=5).double()
    actor, critic = heads(generator, 5), heads(generator, 3)
    config = GROOVEConfig(target_size=3)  # the paper's learning rates 40 / 4 and clipping 0.5
    trajectory = tiny_trajectory()
    evaluation = Trajectory(**{**vars(tiny_trajectory()), "action": torch.tensor([[[3, 0]]])})
    advantages = torch.tensor([[[0.7, -0.2]]], dtype=DOUBLE)

    def objective():
        new_actor, _, outputs = lpg_agent_update(lpg, actor, critic, trajectory, config, meta_gradient=True)
        return meta_loss(new_actor, evaluation, advantages, [outputs], config)[0]

    parameters = list(lpg.parameters())
    gradients = torch.autograd.grad(objective(), parameters)
    directions = [torch.randn_like(parameter) for parameter in parameters]
    analytic = sum(float((gradient * direction).sum()) for gradient, direction in zip(gradients, directions))
    epsilon = 1e-6
    values = []
    with torch.no_grad():
        for sign in (1, -1):
            for parameter, direction in zip(parameters, directions):
                parameter.add_(sign * epsilon * direction)
            values.append(float(objective()))
            for parameter, direction in zip(parameters, directions):
                parameter.sub_(sign * epsilon * direction)
    numeric = (values[0] - values[1]) / (2 * epsilon)
    assert abs(analytic) > 1e-4  # the LPG's weights do move the outcome
    assert analytic == pytest.approx(numeric, rel=1e-5)


def test_level_buffer_replays_by_rank_and_replaces_the_lowest_score():
    scores = torch.tensor([0.3, 2.0, -1.0, 0.5])
    weights = torch.tensor([1 / 9, 1.0, 1 / 16, 1 / 4], dtype=torch.float64)  # ranks 3, 1, 4, 2; β = 0.5
    torch.testing.assert_close(rank_weights(scores, 0.5), weights / weights.sum())

    generator = torch.Generator().manual_seed(0)
    levels = sample_levels(5, generator, LevelDistribution(max_size=5, walls=3))
    buffer = LevelBuffer(capacity=4, replay_probability=1.0, temperature=0.5)
    buffer.update(levels.select(slice(0, 4)), torch.full((4,), -1), scores)  # fresh levels fill the buffer
    torch.testing.assert_close(buffer.replay_probabilities(), weights / weights.sum())
    draws = torch.zeros(4)
    for _ in range(2000):
        _, slots = buffer.sample(1, generator, fresh_levels=None)
        draws[slots] += 1
        buffer.active[slots] = False
    torch.testing.assert_close(draws / draws.sum(), (weights / weights.sum()).float(), atol=0.03, rtol=0)

    _, slots = buffer.sample(2, generator, fresh_levels=None)  # two levels in use are not replayed
    assert buffer.replay_probabilities()[slots].sum() == 0
    buffer.update(levels.select(slots), slots, torch.tensor([5.0, 6.0]))  # their new scores, and release
    assert not buffer.active.any() and sorted(buffer.scores[slots].tolist()) == [5.0, 6.0]

    lowest = int(buffer.scores.argmin())
    buffer.update(levels.select(slice(4, 5)), torch.tensor([-1]), torch.tensor([-5.0]))  # scores below all: dropped
    assert len(buffer) == 4 and -5.0 not in buffer.scores.tolist()
    buffer.update(levels.select(slice(4, 5)), torch.tensor([-1]), torch.tensor([1.5]))  # replaces the lowest
    assert buffer.scores[lowest] == 1.5
    assert torch.equal(buffer.levels.select(slice(lowest, lowest + 1)).object_cell, levels.select([4]).object_cell)


def test_a2c_reference_beats_a_random_policy():
    generator = torch.Generator().manual_seed(0)
    distribution = LevelDistribution(min_size=4, max_size=5, max_objects=2, walls=3, episode_length_range=(20, 40))
    levels = sample_levels(8, generator, distribution)
    levels.object_reward.abs_()  # every object worth collecting
    config = GROOVEConfig(envs_per_agent=8, score_envs=16)
    actor = train_on_levels(levels, 30, config, generator)
    trained = evaluate_returns(levels, actor, 16, generator, "cpu").mean()
    random = evaluate_returns(levels, None, 16, generator, "cpu").mean()
    assert trained > random + 0.4


def tiny_config(**changes) -> GROOVEConfig:
    distribution = LevelDistribution(min_size=4, max_size=4, max_objects=2, walls=2, episode_length_range=(10, 20))
    settings = dict(num_agents=4, envs_per_agent=2, rollout_length=4, agent_updates=2, lifetime=4, hidden_size=8)
    return GROOVEConfig(**(settings | dict(buffer_size=6, score_envs=2, levels=distribution) | changes))


@pytest.mark.parametrize("curriculum", ["regret", "value-loss"])
def test_meta_training_resumes_exactly_from_its_checkpoint(tmp_path, curriculum):
    config = tiny_config(curriculum=curriculum)
    whole = GROOVE(config)
    whole.run(5, progress=False)
    first = GROOVE(config)
    first.run(3, tmp_path / "run", progress=False, checkpoint_every=3)
    resumed = GROOVE(config)
    resumed.run(5, tmp_path / "run", resume=True, progress=False)
    for name, value in whole.lpg.state_dict().items():
        torch.testing.assert_close(resumed.lpg.state_dict()[name], value)
    assert len(resumed.buffer) > 0 and (tmp_path / "run" / "lpg.pt").exists()
    with pytest.raises(FileExistsError, match="resume"):
        GROOVE(config).run(6, tmp_path / "run", progress=False)


def test_evolution_strategies_move_the_lpg_and_keep_pairs_on_one_level():
    groove = GROOVE(tiny_config(meta_optimizer="es", curriculum="uniform", envs_per_agent=8, rollout_length=10))
    before = [parameter.detach().clone() for parameter in groove.lpg.parameters()]
    for _ in range(3):
        stats = groove.step()
    assert "fitness" in stats
    assert any(not torch.equal(old, new) for old, new in zip(before, groove.lpg.parameters()))
    assert torch.equal(groove.levels.object_cell[0::2], groove.levels.object_cell[1::2])
    assert torch.equal(groove.actor["table"][0::2], groove.actor["table"][1::2])  # each pair goes on from the better


def test_bad_settings_get_clear_errors():
    with pytest.raises(ValueError, match="multiple of agent_updates"):
        GROOVEConfig(lifetime=7, agent_updates=5)
    with pytest.raises(ValueError, match="curriculum"):
        GROOVEConfig(curriculum="hard")
