"""Run a target policy through the stage LPs of many scenarios at once, solving them in a thread pool.

HiGHS releases the GIL while it solves, so threads (each with its own warm-started `StageProblem`) run in parallel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import torch

from policylab.offline_rl.tsddr.stage_problem import StageLP, StageProblem, StageSolution


class MultiStageProblem(Protocol):
    """What TS-DDR and the baselines need from a problem family (`HydroThermalCase` is one)."""

    num_stages: int
    season_length: int

    @property
    def initial_state(self) -> np.ndarray: ...

    def stage_lp(self) -> StageLP: ...

    def sample_noises(self, num_scenarios: int, seed: int | list[int]) -> np.ndarray:
        """(scenarios, stages, noise dim)"""

    def expected_noises(self) -> np.ndarray:
        """(stages, noise dim)"""

    def reachable_states(
        self, previous: torch.Tensor, noises: torch.Tensor, upstream: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, k) lower and upper states reachable in one stage, differentiable in `previous` (only for TS-DDR's
        target_range="reachable" or "reachable-upstream", which sets `upstream`)."""


TargetPolicy = Callable[[int, np.ndarray, np.ndarray], np.ndarray]
"""(stage t, noises (S, w) of stage t, previous states (S, k)) -> targets (S, k)"""


@dataclasses.dataclass
class Rollout:
    """Stage-by-stage results of a batch of scenarios."""

    stage_costs: np.ndarray
    """(S, T) operational cost (target penalty excluded)"""
    objectives: np.ndarray
    """(S, T) stage LP optimum (target penalty included)"""
    states: np.ndarray
    """(S, T, k) realised state after each stage"""
    targets: np.ndarray
    """(S, T, k) targets the policy asked for"""
    target_duals: np.ndarray
    """(S, T, k) d stage objective / d target"""
    state_duals: np.ndarray
    """(S, T, k) d stage objective / d previous state"""

    @property
    def total_costs(self) -> np.ndarray:
        """(S,) operational cost over the horizon"""
        return self.stage_costs.sum(axis=1)


class StagePool:
    """`num_workers` copies of a stage problem; `solve` splits a batch of scenarios between them."""

    def __init__(self, stage: StageLP, target_penalty: float | None = None, num_workers: int = 1):
        self.problems = [StageProblem(stage, target_penalty) for _ in range(max(1, num_workers))]
        self.executor = ThreadPoolExecutor(len(self.problems)) if len(self.problems) > 1 else None

    @property
    def target_penalty(self) -> float:
        return self.problems[0].target_penalty

    @property
    def solves(self) -> int:
        return sum(problem.solves for problem in self.problems)

    def set_target_penalty(self, penalty: float) -> None:
        for problem in self.problems:
            problem.set_target_penalty(penalty)

    def solve(self, previous: np.ndarray, noises: np.ndarray, targets: np.ndarray) -> list[StageSolution]:
        """Solve scenario s's stage LP for previous[s], noises[s], targets[s]; solutions in scenario order."""
        chunks = np.array_split(np.arange(len(previous)), len(self.problems))

        def work(problem: StageProblem, indices: np.ndarray) -> list[StageSolution]:
            return [problem.solve(previous[i], noises[i], targets[i]) for i in indices]

        if self.executor is None:
            return work(self.problems[0], chunks[0])
        return [solution for part in self.executor.map(work, self.problems, chunks) for solution in part]

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown()


def rollout(pool: StagePool, policy: TargetPolicy, noises: np.ndarray, initial_state: np.ndarray) -> Rollout:
    """Simulate `policy` on (S, T, w) `noises`: at each stage it sets targets, the stage LPs realise the states."""
    num_scenarios, num_stages, _ = noises.shape
    k = len(initial_state)
    result = Rollout(
        stage_costs=np.zeros((num_scenarios, num_stages)),
        objectives=np.zeros((num_scenarios, num_stages)),
        states=np.zeros((num_scenarios, num_stages, k)),
        targets=np.zeros((num_scenarios, num_stages, k)),
        target_duals=np.zeros((num_scenarios, num_stages, k)),
        state_duals=np.zeros((num_scenarios, num_stages, k)),
    )
    previous = np.tile(np.asarray(initial_state, dtype=np.float64), (num_scenarios, 1))
    for t in range(num_stages):
        targets = np.asarray(policy(t, noises[:, t], previous), dtype=np.float64)
        solutions = pool.solve(previous, noises[:, t], targets)
        result.targets[:, t] = targets
        result.stage_costs[:, t] = [solution.operational_cost for solution in solutions]
        result.objectives[:, t] = [solution.objective for solution in solutions]
        result.states[:, t] = [solution.state for solution in solutions]
        result.target_duals[:, t] = [solution.target_duals for solution in solutions]
        result.state_duals[:, t] = [solution.state_duals for solution in solutions]
        previous = result.states[:, t]
    return result
