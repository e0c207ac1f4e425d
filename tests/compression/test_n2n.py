"""N2N: the reward, the policies' log-probabilities, a REINFORCE step, and a search end to end with resume."""

import math

import pytest
import torch

from policylab.compression import N2N, Architecture, ClassifierTeacher, Layer, N2NConfig, RandomSearch, n2n_reward
from policylab.compression.datasets import synthetic_images
from policylab.compression.n2n import (
    SCALE_CHOICES,
    RemovalPolicy,
    ShrinkagePolicy,
    StudentTrainer,
    layer_features,
    pareto_front,
    reinforce_update,
    shrinkage_features,
    train_student,
)
from policylab.compression.teachers import train_classifier

TEACHER = Architecture((3, 8, 8), (Layer("conv", 8, 3, 2, 1), Layer("linear", 32), Layer("linear", 10)))


@pytest.fixture(scope="module")
def teacher():
    train = synthetic_images(600, seed=0, size=8, noise=1.0)
    test = synthetic_images(300, seed=1, size=8, noise=1.0)
    return ClassifierTeacher(TEACHER, train_classifier(TEACHER, train, epochs=3), train, test)


def test_reward_on_known_values():
    # C = 1 - 25/100 = 0.75, R_c = 0.75 * 1.25 = 0.9375, R = 0.9375 * 0.8
    assert n2n_reward(25, 100, 0.8) == pytest.approx(0.75)
    # above the constraint: (eps - 1) + eps * R
    assert n2n_reward(25, 100, 0.8, max_parameters=20, epsilon=0.1) == pytest.approx(-0.9 + 0.075)
    assert n2n_reward(100, 100, 1.0) == 0.0


def test_invalid_removals_get_minus_one(teacher):
    search = N2N(teacher, N2NConfig(removal_epochs=1, shrinkage_epochs=0, distill_epochs=1))
    no_output = TEACHER.remove_layers([True, True, False])
    rewards = search.score([no_output, TEACHER.remove_layers([False, False, False])], "removal")
    assert rewards == [-1.0, -1.0] and search.students_trained == 0
    assert "output layer was removed" in search.candidates[0]["problem"]


def test_removal_policy_log_probability():
    policy = RemovalPolicy()
    with torch.no_grad():
        policy.head.weight.zero_()
        policy.head.bias.copy_(torch.tensor([math.log(0.25), math.log(0.75)]))  # remove 1/4, keep 3/4
    features = layer_features(TEACHER, TEACHER)
    keep = torch.tensor([1, 0, 1])
    assert float(policy.log_prob(features, keep).detach()) == pytest.approx(
        2 * math.log(0.75) + math.log(0.25), rel=1e-5
    )


def test_shrinkage_log_probability_equals_step_by_step():
    torch.manual_seed(0)
    policy = ShrinkagePolicy()
    features = shrinkage_features(TEACHER, TEACHER)  # conv width, conv kernel, linear width
    choices = policy.sample(features, torch.Generator().manual_seed(1))
    state, previous, expected = None, torch.zeros(len(SCALE_CHOICES)), 0.0
    for step_features, choice in zip(features, choices):
        output, state = policy.lstm(torch.cat([step_features, previous]).view(1, 1, -1), state)
        expected += float(torch.log_softmax(policy.head(output.view(-1)), -1)[choice].detach())
        previous = torch.nn.functional.one_hot(choice, len(SCALE_CHOICES)).float()
    assert float(policy.log_prob(features, choices).detach()) == pytest.approx(expected, rel=1e-5)


def test_reinforce_raises_the_probability_of_a_rewarded_action():
    torch.manual_seed(0)
    policy = RemovalPolicy()
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    features = layer_features(TEACHER, TEACHER)
    rewarded, other = torch.tensor([0, 1, 1]), torch.tensor([1, 0, 0])  # the other choice at every layer
    before = float(policy.log_prob(features, rewarded).detach())
    reinforce_update(policy, optimizer, features, [rewarded, other], [1.0, 0.0], baseline=0.5)
    assert float(policy.log_prob(features, rewarded).detach()) > before


def test_pareto_front():
    assert pareto_front([10, 5, 20, 5, 30], [0.5, 0.4, 0.9, 0.6, 0.8]) == [3, 2]


def test_search_runs_and_resumes(teacher, tmp_path):
    config = N2NConfig(removal_epochs=2, shrinkage_epochs=2, rollouts=3, distill_epochs=1, seed=3)
    whole = N2N(teacher, config)
    summary = whole.run(tmp_path / "whole", progress=False)
    for name in ("student.pt", "pareto.png", "candidates.json", "best.json", "metrics.csv"):
        assert (tmp_path / "whole" / name).exists()
    assert summary["best_params"] < TEACHER.num_params and len(whole.candidates) == 12

    interrupted = N2N(teacher, config)
    step = interrupted.step
    interrupted.step = lambda: step() if interrupted.epoch < 3 else (_ for _ in ()).throw(KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        interrupted.run(tmp_path / "resumed", progress=False)
    with pytest.raises(FileExistsError):
        N2N(teacher, config).run(tmp_path / "resumed", progress=False)
    resumed = N2N(teacher, config)
    assert resumed.run(tmp_path / "resumed", resume=True, progress=False) == summary
    assert resumed.candidates == whole.candidates


def test_random_search_trains_the_students_asked(teacher):
    search = RandomSearch(teacher, students=4, config=N2NConfig(rollouts=3, distill_epochs=1))
    summary = search.run(progress=False)
    assert summary["students_trained"] == 4


def test_students_trained_in_worker_processes_equal_those_trained_here(teacher):
    config = N2NConfig(distill_epochs=1, workers=2)
    architectures = [TEACHER.shrink([0.5, 1.0, 0.5]), TEACHER.remove_layers([False, True, True])]
    trainer = StudentTrainer(teacher, config)
    try:
        in_workers = trainer.train(architectures)
        assert trainer.pool is not None
    finally:
        trainer.close()
    for architecture, (score, weights) in zip(architectures, in_workers):
        here_score, here_weights = train_student(teacher, architecture, config)
        assert score == here_score
        for name, value in weights.items():
            torch.testing.assert_close(value, here_weights[name])
