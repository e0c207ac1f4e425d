"""Duals are the gradients TS-DDR trains on: they must equal finite differences of the costs."""

import numpy as np
import pytest
import torch

from policylab.offline_rl.tsddr import DifferentiableTrajectory, StageProblem, synthetic_case
from policylab.offline_rl.tsddr.rollout import StagePool, rollout


def central_difference(function, point: np.ndarray, step: float) -> np.ndarray:
    gradient = np.zeros_like(point)
    for i in range(len(point)):
        offset = np.zeros_like(point)
        offset[i] = step
        gradient[i] = (function(point + offset) - function(point - offset)) / (2 * step)
    return gradient


@pytest.fixture(scope="module")
def case():
    return synthetic_case(num_stages=4, num_reservoirs=2)


@pytest.mark.parametrize("fill", [0.3, 0.6, 0.95])  # targets met, and (0.95) out of reach of a dry stage
def test_stage_duals_equal_finite_differences(case, fill):
    stage = case.stage_lp()
    problem = StageProblem(stage)
    previous = 0.5 * stage.state_upper
    inflow = case.inflows.expected(12)[6]  # the dry season: water is worth the thermal cost it saves
    target = fill * stage.state_upper + np.array([0.0, 1.3])  # off any kink of the piecewise-linear value
    solution = problem.solve(previous, inflow, target)
    by_target = central_difference(lambda x: problem.solve(previous, inflow, x).objective, target, 1e-3)
    by_state = central_difference(lambda x: problem.solve(x, inflow, target).objective, previous, 1e-3)
    np.testing.assert_allclose(solution.target_duals, by_target, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(solution.state_duals, by_state, rtol=1e-6, atol=1e-6)
    assert np.abs(solution.target_duals).max() > 0  # the targets do bind


def test_trajectory_surrogate_gradients_equal_finite_differences_of_the_total_cost(case):
    """Through a rollout with fixed targets: d Σ_t objective_t / d x̂_t = λ_t + μ_{t+1} where x_t = x̂_t."""
    stage = case.stage_lp()
    pool = StagePool(stage)
    noises = case.sample_noises(1, seed=3)
    base = np.linspace(0.45, 0.3, case.num_stages)[:, None] * stage.state_upper + np.array([0.0, 0.7])

    def total_cost(targets: np.ndarray) -> float:
        result = rollout(pool, lambda t, noise, previous: targets[t][None], noises, case.initial_state)
        return result.objectives.sum()

    leaf = torch.tensor(base, dtype=torch.float32, requires_grad=True)
    trajectory = DifferentiableTrajectory(lambda t, noise, previous: leaf[t][None])
    result = rollout(pool, trajectory, noises, case.initial_state)
    assert np.allclose(result.states[0], base)  # falling targets are always met (spill is free)
    trajectory.surrogate(result).backward()
    numeric = central_difference(lambda x: total_cost(x.reshape(base.shape)), base.ravel(), 1e-3).reshape(base.shape)
    np.testing.assert_allclose(leaf.grad.numpy(), numeric, rtol=1e-5, atol=1e-3)
    # the target duals alone miss what stored water saves later
    assert not np.allclose(result.target_duals[0], numeric, rtol=1e-3)
