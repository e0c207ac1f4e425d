"""Deep GA: seed-chain genomes rebuild exactly, the local and Ray back-ends agree (even when an actor dies), the GA
climbs a known function and a small control task, novelty search spreads behaviours, runs resume exactly."""

import dataclasses
import os

import numpy as np
import pytest
import torch

import policylab
from policylab.core.evaluation import evaluate_population
from policylab.evolution import GA, FunctionTask, GAConfig, GenomeDecoder, LocalEvaluator, PolicyTask
from policylab.evolution.genomes import counter_normal

HOPPER = PolicyTask("Hopper-v5", hidden_sizes=(8,), max_episode_steps=40, threads=1)
SMALL = GAConfig(population_size=12, truncation=4, mutation_power=0.05, elite_candidates=2, elite_episodes=2, seed=3)


def sphere(vector):
    return -float(np.sum((vector - 3.0) ** 2))


class RecordingEvaluator(LocalEvaluator):
    """Keeps every genome with the weights it was evaluated with."""

    def __init__(self, task, mutation_power):
        super().__init__(task, mutation_power)
        self.seen = {}

    def evaluate(self, genomes, episodes, seed):
        params = self.decoder.decode_batch(genomes)
        self.seen.update(zip(genomes, params))
        return self.task.evaluate(params, episodes, seed)


def test_genome_rebuilt_from_its_seeds_equals_the_weights_it_was_evaluated_with():
    evaluator = RecordingEvaluator(HOPPER, SMALL.mutation_power)
    ga = GA(HOPPER, SMALL, evaluator)
    ga.run(4, progress=False)
    fresh = GenomeDecoder(HOPPER.initial_params, SMALL.mutation_power)
    for genome, params in evaluator.seen.items():
        assert torch.equal(fresh.decode(genome), params)
    assert max(len(genome) for genome in evaluator.seen) == 4  # initialisation + three generations of mutations
    # each child of a cached parent costs one mutation: far fewer than rebuilding every chain
    assert evaluator.decoder.mutations_applied < sum(len(genome) - 1 for genome in evaluator.seen)
    assert torch.equal(ga.best_params(), fresh.decode(ga.elite))
    assert counter_normal(7, 5).tolist() == counter_normal(7, 9)[:5].tolist()  # the noise depends on the seed alone


def test_ga_climbs_a_known_function():
    ga = GA(FunctionTask(sphere, 8), GAConfig(population_size=40, truncation=8, mutation_power=0.2, elite_candidates=0))
    history = ga.run(40, progress=False)
    assert history[0]["elite_fitness"] < -20
    assert history[-1]["elite_fitness"] > -0.5
    np.testing.assert_allclose(ga.best_params().numpy(), 3.0, atol=0.4)


def test_ga_climbs_a_small_control_task():
    task = PolicyTask("Pendulum-v1", hidden_sizes=(8,), max_episode_steps=100)
    config = GAConfig(population_size=32, truncation=6, mutation_power=0.1, elite_candidates=3, elite_episodes=4)
    history = GA(task, config).run(6, progress=False)
    assert history[-1]["elite_fitness"] > history[0]["elite_fitness"] + 50


def test_novelty_search_spreads_behaviours():
    task = FunctionTask(lambda vector: (0.0, vector[:2]), 4, initial_std=0.1)  # no fitness signal at all
    spreads, archive_sizes = {}, {}
    for novelty in (True, False):
        config = GAConfig(population_size=20, truncation=5, mutation_power=0.1, elite_candidates=0, novelty=novelty)
        ga = GA(task, config)
        ga.run(15, progress=False)
        spreads[novelty] = np.linalg.norm(ga.parameters(ga.population)[:, :2].numpy(), axis=1).mean()
        archive_sizes[novelty] = ga.history[-1]["archive_size"]
    assert spreads[True] > 2 * spreads[False]  # novelty pushes behaviours apart; without it they only drift
    assert archive_sizes[True] > 0 and archive_sizes[False] == 0
    with pytest.raises(ValueError, match="novelty search needs behaviour descriptors"):
        GA(FunctionTask(sphere, 4), dataclasses.replace(config, novelty=True)).step()


def test_run_resumes_exactly_from_its_checkpoint(tmp_path):
    task, config = FunctionTask(sphere, 6), GAConfig(population_size=10, truncation=3, mutation_power=0.3)
    straight = GA(task, config).run(5, progress=False)
    GA(task, config).run(3, run_dir=tmp_path, progress=False)
    with pytest.raises(FileExistsError, match="resume"):
        GA(task, config).run(5, run_dir=tmp_path, progress=False)
    resumed = GA(task, config)
    history = resumed.run(5, run_dir=tmp_path, resume=True, progress=False)
    assert [row["elite_fitness"] for row in history] == [row["elite_fitness"] for row in straight]
    assert (tmp_path / "checkpoint.json").stat().st_size < 10_000
    assert (tmp_path / "fitness.png").exists()
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 1 + 5


def test_best_policy_is_an_agent_that_acts_as_it_was_evaluated(tmp_path):
    ga = GA(HOPPER, SMALL)
    ga.run(2, run_dir=tmp_path, progress=False)
    agent = policylab.load(tmp_path / "agent.pt")
    assert agent.config.genome == ga.elite
    observations = np.random.default_rng(0).normal(size=(5, 11))
    spec, params = HOPPER.spec, ga.best_params()[None]
    outputs = spec.forward(spec.stack(params), torch.as_tensor(observations, dtype=torch.float32)[None])[0]
    np.testing.assert_allclose(agent.act(observations), outputs.numpy(), rtol=1e-6, atol=1e-6)  # Hopper's box is ±1
    result = evaluate_population(params, spec, "Hopper-v5", max_episode_steps=40)
    assert result.returns.shape == (1, 1)


def test_atari_genomes_are_nature_dqn_networks_and_the_best_one_plays_as_an_agent(tmp_path):
    pytest.importorskip("ale_py")
    task = PolicyTask("ALE/Pong-v5", max_episode_steps=30)
    assert task.num_params == 1_687_206  # the Nature-DQN network, whatever hidden_sizes say
    config = GAConfig(population_size=4, truncation=2, mutation_power=0.002, elite_candidates=1, elite_episodes=1)
    ga = GA(task, config)
    ga.run(1, run_dir=tmp_path, progress=False)
    agent = policylab.load(tmp_path / "agent.pt")
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 4, 84, 84)).astype(np.uint8)
    scores = task.spec.forward(task.spec.stack(ga.best_params()[None]), torch.as_tensor(frames)[None].float())[0]
    np.testing.assert_array_equal(agent.act(frames), scores.argmax(-1).numpy())
    assert agent.act(frames).dtype.kind == "i"


# -- Ray ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_local_and_ray_give_identical_fitness(ray):
    from policylab.evolution import RayEvaluator

    local = GA(HOPPER, SMALL).run(2, progress=False)
    ga = GA(HOPPER, SMALL, backend="ray", workers=2)
    try:
        distributed = ga.run(2, progress=False)
    finally:
        ga.close()
    assert isinstance(ga.evaluator, RayEvaluator)
    for name in ("fitness_max", "fitness_mean", "elite_fitness", "env_steps"):
        assert [row[name] for row in distributed] == [row[name] for row in local]


def test_a_dead_ray_actor_costs_only_its_shard(ray, tmp_path):
    from policylab.evolution import RayEvaluator

    marker = str(tmp_path / "killed")

    def target(vector):  # defined here so that Ray ships it by value (a test module is not importable by workers)
        return -float(np.sum((vector - 1.5) ** 2))

    def dies_once(vector):
        """Kills the first process that evaluates it, mid-shard, as a crash would."""
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return target(vector)
        os._exit(1)

    config = GAConfig(population_size=16, truncation=4, mutation_power=0.3, elite_candidates=0)
    genomes = GA(FunctionTask(target, 5), config).ask()
    expected = LocalEvaluator(FunctionTask(target, 5), config.mutation_power).evaluate(genomes, 1, 0)
    evaluator = RayEvaluator(FunctionTask(dies_once, 5), config.mutation_power, workers=2)
    try:
        result = evaluator.evaluate(genomes, 1, 0)
    finally:
        evaluator.close()
    assert evaluator.failures == 1
    np.testing.assert_array_equal(result.fitness, expected.fitness)
