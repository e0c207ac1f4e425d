"""MAP-Elites, PGA-MAP-Elites and DCG-MAP-Elites: archives keep the fitter solution per cell, CVT centroids depend on
the seed alone, S(d, d') and the descriptor-conditioned critic target match hand-derived values, actor injection
equals the conditioned actor, policy-gradient variation raises Q, MAP-Elites beats random search on the planar arm,
runs resume exactly, and evaluate_population's transitions and time feature are consistent."""

import math

import numpy as np
import pytest
import torch

from policylab.core.buffers import TransitionBatch
from policylab.core.evaluation import PopulationTransitions, evaluate_population
from policylab.core.nets import PopulationMLP
from policylab.evolution import (
    CVTArchive,
    DCGConfig,
    DescriptorConditionedEmitter,
    GridArchive,
    MAPElites,
    MAPElitesConfig,
    PGAConfig,
    PlanarArmTask,
    PolicyGradientEmitter,
    QDPolicyTask,
    make_qd_method,
    random_search,
)
from policylab.evolution.archives import Insertion
from policylab.evolution.dcg_map_elites import inject_descriptor, similarity
from policylab.evolution.emitters import EvaluatedBatch, Offspring
from policylab.evolution.map_elites import make_archive
from policylab.evolution.tasks import Evaluations

WALKER = QDPolicyTask("walker2d_uni", hidden_sizes=(8,), episode_length=20, threads=1)
TINY_LEARNER = {"pg_batch_size": 4, "pg_steps": 5, "critic_steps": 20, "batch_size": 16, "replay_capacity": 5000}
TINY_ARCHIVE = MAPElitesConfig(ga_batch_size=6, cells=16, cvt_samples=2000, initial_population=8, seed=1)


def test_archive_keeps_the_fitter_solution_per_cell():
    archive = GridArchive((2, 2), [0.0, 0.0], [1.0, 1.0], solution_dim=1)
    descriptors = [[0.1, 0.1], [0.2, 0.3], [0.9, 0.9], [0.8, 0.7], [0.6, 0.1], [0.7, 0.2]]
    first = archive.add([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0]], [1.0, 3.0, 2.0, 2.0, -1.0, -5.0], descriptors)
    # cells: (0,0) holds 1.0 and 3.0 -> 3.0; (1,1) a tie 2.0/2.0 -> the earlier; (1,0) -1.0 beats -5.0
    assert first.added.tolist() == [False, True, True, False, True, False]
    assert archive.fitness.tolist() == [3.0, -math.inf, -1.0, 2.0]
    assert archive.solutions[:, 0].tolist() == [1.0, 0.0, 4.0, 2.0]
    second = archive.add([[6.0], [7.0], [8.0]], [2.5, 2.0, 0.0], [[0.3, 0.3], [0.6, 0.6], [0.1, 0.9]])
    assert second.added.tolist() == [False, False, True] and second.new_cell.tolist() == [False, False, True]
    assert archive.fitness.tolist() == [3.0, 0.0, -1.0, 2.0]  # a lower or equal fitness never replaces an elite
    assert archive.qd_score(offset=5.0) == pytest.approx(3.0 + 0.0 - 1.0 + 2.0 + 4 * 5.0)
    assert archive.coverage() == 1.0 and archive.max_fitness() == 3.0
    assert archive.cell_of(torch.tensor([[-3.0, 0.2], [7.0, 7.0]], dtype=torch.float64)).tolist() == [0, 3]
    with pytest.raises(ValueError, match="NaN"):
        archive.add([[0.0]], [float("nan")], [[0.5, 0.5]])


def test_cvt_centroids_depend_on_the_seed_alone_and_cells_are_nearest_centroids():
    first = CVTArchive(32, [-1.0, -1.0], [1.0, 1.0], 3, samples=3000, seed=4)
    again = CVTArchive(32, [-1.0, -1.0], [1.0, 1.0], 3, samples=3000, seed=4)
    other = CVTArchive(32, [-1.0, -1.0], [1.0, 1.0], 3, samples=3000, seed=5)
    assert torch.equal(first.centroids, again.centroids) and not torch.equal(first.centroids, other.centroids)
    points = torch.rand(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    nearest = ((points[:, None, :] - first.centroids[None]) ** 2).sum(-1).argmin(1)
    assert torch.equal(first.cell_of(points), nearest)


def test_similarity_values():
    zero = torch.zeros(3, 2)
    intended = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.3, 0.4]])
    expected = [1.0, math.exp(-1.0), math.exp(-5.0)]  # ||d - d'|| = 0, 0.1, 0.5 with l = 0.1
    assert similarity(zero, intended, 0.1).tolist() == pytest.approx(expected)
    assert similarity(zero, intended, 0.5).tolist() == pytest.approx([1.0, math.exp(-0.2), math.exp(-1.0)])


def test_descriptor_conditioned_critic_target_on_a_hand_made_batch():
    config = DCGConfig(policy_noise=0.0, **TINY_LEARNER)
    emitter = DescriptorConditionedEmitter(WALKER, config, seed=0)
    archive = GridArchive((4, 4), WALKER.lower, WALKER.upper, WALKER.num_params)
    observation_dim = WALKER.observation_dim
    generator = torch.Generator().manual_seed(0)
    observations = torch.randn(3, observation_dim, generator=generator).numpy()
    next_observations = torch.randn(3, observation_dim, generator=generator).numpy()
    transitions = PopulationTransitions(
        observations=observations,
        actions=np.zeros((3, WALKER.action_dim), dtype=np.float32),
        rewards=np.array([1.0, -0.5, 2.0]),
        next_observations=next_observations,
        terminations=np.array([0.0, 0.0, 1.0]),
        members=np.array([0, 1, 1]),
    )
    achieved = np.array([[0.5, 0.5], [0.25, 0.75]])  # normalised: (0, 0) and (-0.5, 0.5)
    intended = torch.tensor([[float("nan"), float("nan")], [0.5, 0.5]], dtype=torch.float64)  # member 1 aimed at (0, 0)
    batch = EvaluatedBatch(
        Offspring(torch.zeros(2, WALKER.num_params), intended),
        Evaluations(np.zeros(2), achieved, 3, transitions),
        Insertion(torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=bool), torch.zeros(2, dtype=bool)),
    )
    states, actions, rewards, next_states, terminations = emitter.replay_rows(transitions, batch, archive)
    offset = WALKER.reward_offset
    scale = math.exp(-math.hypot(0.5, 0.5) / 0.1)  # member 1 reached (-0.5, 0.5) while aiming at (0, 0)
    expected_rewards = [1.0 + offset, scale * (-0.5 + offset), scale * (2.0 + offset)]
    assert rewards.tolist() == pytest.approx(expected_rewards, rel=1e-5)
    assert torch.equal(states[:, observation_dim:], torch.zeros(3, 2))  # conditioned on d' = (0, 0) for all rows
    target = emitter.td_target(TransitionBatch(states, actions, rewards, next_states, terminations))
    with torch.no_grad():
        bootstrap = []
        for row in range(3):
            state = next_states[row : row + 1]
            action = emitter.actor_target(state)
            q_values = [emitter.critic_target(state, action, member)[0].item() for member in (0, 1)]
            bootstrap.append(min(q_values))
    expected = [expected_rewards[0] + 0.99 * bootstrap[0], expected_rewards[1] + 0.99 * bootstrap[1]]
    expected.append(expected_rewards[2])  # terminal: no bootstrap
    assert target.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_injected_actor_equals_the_conditioned_actor():
    spec = PopulationMLP(5 + 2, 3, (6, 4), "tanh", "tanh")
    actor_params = spec.initial_params(1, torch.Generator().manual_seed(0))[0]
    descriptors = torch.tensor([[0.2, -0.7], [1.0, 0.5]])
    policies = inject_descriptor(actor_params, spec, descriptors)
    plain = PopulationMLP(5, 3, (6, 4), "tanh", "tanh")
    observations = torch.randn(2, 9, 5, generator=torch.Generator().manual_seed(1))
    conditioned = torch.cat([observations, descriptors[:, None, :].expand(-1, 9, -1)], 2)
    expected = spec.forward(spec.stack(actor_params.expand(2, -1)), conditioned)
    torch.testing.assert_close(plain.forward(plain.stack(policies), observations), expected)


def test_policy_gradient_variation_raises_the_critics_value():
    emitter = PolicyGradientEmitter(WALKER, PGAConfig(**TINY_LEARNER | {"pg_steps": 30}), seed=0)
    parents = WALKER.initial_params(4, torch.Generator().manual_seed(0))
    result = WALKER.evaluate(parents, 1, 0, record_transitions=True)
    emitter.buffer.add(*emitter.replay_rows(result.transitions, None, None))
    children = emitter.policy_gradient_variation(parents, None)
    states = torch.as_tensor(result.transitions.observations, dtype=torch.float32)

    def value(params):
        actions = WALKER.spec.forward(WALKER.spec.stack(params), states.expand(len(params), -1, -1))
        return emitter.critic(states.repeat(len(params), 1), actions.reshape(-1, WALKER.action_dim), 0).mean()

    with torch.no_grad():
        assert value(children) > value(parents) + 1e-3


def test_map_elites_beats_random_search_on_the_planar_arm():
    task = PlanarArmTask(dof=10)
    config = MAPElitesConfig(
        ga_batch_size=100, iso_sigma=0.01, line_sigma=0.2, archive="grid", grid_shape=(32, 32), initial_population=100
    )
    me = MAPElites(task, config)
    me.run(30, progress=False)
    baseline = random_search(task, make_archive(task, config), me.evaluations, batch_size=100)
    assert me.evaluations == 3000
    assert me.archive.coverage() > 1.5 * baseline.coverage()
    assert me.archive.qd_score(task.qd_offset) > 1.5 * baseline.qd_score(task.qd_offset)
    assert me.history[-1]["qd_score"] > me.history[0]["qd_score"]
    assert me.history[0]["ga_added"] == 0  # the first batch is random, no emitter's
    assert all(row["ga_added"] == row["added"] > 0 for row in me.history[1:4])


@pytest.mark.parametrize("method", ["pga-me", "dcg-me"])
def test_run_resumes_exactly(tmp_path, method):
    learner = DCGConfig(injection_batch_size=3, **TINY_LEARNER) if method == "dcg-me" else PGAConfig(**TINY_LEARNER)
    straight = make_qd_method(method, WALKER, TINY_ARCHIVE, learner)
    straight.run(3, tmp_path / "straight", progress=False)
    interrupted = make_qd_method(method, WALKER, TINY_ARCHIVE, learner)
    interrupted.run(2, tmp_path / "resumed", progress=False, checkpoint_every=1)
    resumed = make_qd_method(method, WALKER, TINY_ARCHIVE, learner)
    resumed.run(3, tmp_path / "resumed", resume=True, progress=False)
    assert resumed.iteration == 3 and resumed.evaluations == straight.evaluations
    for row in straight.history[1:]:  # each emitter's successes add up to the batch's
        assert row["ga_added"] + row["pg_added"] + row["actor_added"] == row["added"]
    assert torch.equal(resumed.archive.fitness, straight.archive.fitness)
    assert torch.equal(resumed.archive.solutions, straight.archive.solutions)
    for name in ("archive.png", "qd_score.png", "metrics.csv", "config.json"):
        assert (tmp_path / "resumed" / name).exists()
    with pytest.raises(FileExistsError, match="resume"):
        make_qd_method(method, WALKER, TINY_ARCHIVE, learner).run(3, tmp_path / "straight", progress=False)


def test_population_transitions_and_time_feature_are_consistent():
    spec = PopulationMLP(WALKER.observation_dim, WALKER.action_dim, (8,), "tanh", "tanh")
    params = spec.initial_params(3, torch.Generator().manual_seed(2))
    result = evaluate_population(
        params, spec, "Walker2d-v5", 2, 0, "mujoco", 15, time_feature=True, record_transitions=True, num_threads=1
    )
    transitions = result.transitions
    assert len(transitions.rewards) == result.lengths.sum()
    for member in range(3):
        rows = np.flatnonzero(transitions.members == member)
        assert transitions.rewards[rows].sum() == pytest.approx(result.returns[member].sum())
    full_steps = 6 * int(result.lengths.min())  # while all 6 envs run, each step is 6 rows, env 0 first
    first_env = transitions.observations[:full_steps:6]
    np.testing.assert_allclose(first_env[:, -1], 1 - np.arange(len(first_env)) / 15)
    np.testing.assert_array_equal(transitions.next_observations[: full_steps - 6 : 6], first_env[1:])
    assert set(np.unique(transitions.terminations)) <= {0.0, 1.0}
    assert np.abs(transitions.actions).max() <= 1.0


def test_shards_joined_equal_the_whole_batch_transitions_included():
    params = WALKER.initial_params(5, torch.Generator().manual_seed(3))
    whole = WALKER.evaluate(params, 1, 7, record_transitions=True)
    shards = [WALKER.evaluate(params[:2], 1, 7, True), WALKER.evaluate(params[2:], 1, 7 + 2, True)]
    joined = Evaluations.concatenate(shards)  # how the Ray back-end joins its actors' shards
    np.testing.assert_array_equal(joined.fitness, whole.fitness)
    np.testing.assert_array_equal(joined.behaviours, whole.behaviours)
    order = np.lexsort((joined.transitions.members,))  # shards list their steps member by member, not step by step
    for name in ("members", "rewards", "observations"):
        joined_rows = getattr(joined.transitions, name)[order]
        whole_rows = getattr(whole.transitions, name)[np.lexsort((whole.transitions.members,))]
        np.testing.assert_array_equal(joined_rows, whole_rows)
