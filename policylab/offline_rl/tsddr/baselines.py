"""Policies to compare TS-DDR with, evaluated on the same scenarios and the same stage LPs.

- myopic: each stage minimises its own cost and gives water no future value; among equally cheap stage solutions it
  keeps the most water (it targets full reservoirs at a negligible penalty), so it never spills what it could store;
- rolling horizon: at each stage, plan to the end of the horizon (or `lookahead` stages) with the stage's observed
  noise and expected noises afterwards, and target the plan's first state;
- perfect information: one LP over the whole horizon per scenario, knowing every noise: a bound no policy can beat.
"""

from __future__ import annotations

import numpy as np

from policylab.offline_rl.tsddr.horizon import HorizonProblem
from policylab.offline_rl.tsddr.rollout import MultiStageProblem, Rollout, StagePool, rollout

MYOPIC_PENALTY = 1e-6
"""myopic policy's target penalty, relative to the largest cost: only breaks ties between equally cheap solutions"""


def myopic(problem: MultiStageProblem, noises: np.ndarray, num_workers: int = 1) -> Rollout:
    """Stage-wise cost minimisation, storing whatever water the stage does not use."""
    stage = problem.stage_lp()
    pool = StagePool(stage, MYOPIC_PENALTY * stage.max_abs_cost(), num_workers)

    def full_reservoirs(t: int, noise: np.ndarray, previous: np.ndarray) -> np.ndarray:
        return np.broadcast_to(stage.state_upper, previous.shape)

    result = rollout(pool, full_reservoirs, noises, problem.initial_state)
    pool.close()
    return result


class RollingHorizonPolicy:
    """Model-predictive targets: plan the remaining stages on expected noises, target the first planned state."""

    def __init__(self, problem: MultiStageProblem, lookahead: int | None = None):
        self.stage = problem.stage_lp()
        self.expected = problem.expected_noises()
        self.num_stages = problem.num_stages
        self.lookahead = lookahead or problem.num_stages
        self.plans: dict[int, HorizonProblem] = {}  # one warm-started LP per planning length

    def __call__(self, t: int, noise: np.ndarray, previous: np.ndarray) -> np.ndarray:
        length = min(self.lookahead, self.num_stages - t)
        if length not in self.plans:
            self.plans[length] = HorizonProblem(self.stage, length)
        plan = self.plans[length]
        targets = np.empty_like(previous)
        for s in range(len(previous)):
            noises = np.concatenate([noise[s][None], self.expected[t + 1 : t + length]])
            targets[s] = plan.solve(previous[s], noises).states[0]
        return targets


def rolling_horizon(
    problem: MultiStageProblem,
    noises: np.ndarray,
    target_penalty: float,
    lookahead: int | None = None,
    num_workers: int = 1,
) -> Rollout:
    """Simulate the rolling-horizon policy; its targets are reachable, so `target_penalty` only has to be large."""
    pool = StagePool(problem.stage_lp(), target_penalty, num_workers)
    result = rollout(pool, RollingHorizonPolicy(problem, lookahead), noises, problem.initial_state)
    pool.close()
    return result


def perfect_information(problem: MultiStageProblem, noises: np.ndarray) -> Rollout:
    """Per scenario, the optimal plan knowing all its noises in advance (a lower bound on any policy's cost)."""
    horizon = HorizonProblem(problem.stage_lp(), problem.num_stages)
    plans = [horizon.solve(problem.initial_state, scenario) for scenario in noises]
    states = np.stack([plan.states for plan in plans])
    stage_costs = np.stack([plan.stage_costs for plan in plans])
    return Rollout(
        stage_costs=stage_costs,
        objectives=stage_costs,
        states=states,
        targets=states,
        target_duals=np.zeros_like(states),
        state_duals=np.zeros_like(states),
    )
