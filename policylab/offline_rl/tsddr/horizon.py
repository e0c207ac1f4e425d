"""Several stages of a `StageLP` in one LP: the perfect-information bound and the rolling-horizon planner.

Stage t's linking rows read `A y_t - state_in @ y_{t-1}[state] = offset + noise_in @ w_t` (for t = 0 the previous
state is the given initial state), so one solve plans the whole horizon for known noises.
"""

from __future__ import annotations

import dataclasses

import highspy
import numpy as np
import scipy.sparse as sp

from policylab.offline_rl.tsddr.stage_problem import StageLP, new_highs, to_highs_lp


@dataclasses.dataclass
class HorizonSolution:
    """Plan over the horizon."""

    stage_costs: np.ndarray
    """(stages,) cost of each stage"""
    states: np.ndarray
    """(stages, k) planned state after each stage"""


class HorizonProblem:
    """`num_stages` copies of a stage LP chained through their states, built once; solves change right-hand sides."""

    def __init__(self, stage: StageLP, num_stages: int):
        self.stage, self.num_stages = stage, num_stages
        m, n = stage.matrix.shape
        coupling = sp.csr_matrix(
            (
                -stage.state_in.ravel(),
                (
                    np.repeat(stage.linking_rows, stage.num_states),
                    np.tile(stage.state_columns, len(stage.linking_rows)),
                ),
            ),
            shape=(m, n),
        )
        # block (t, t) is the stage matrix, block (t, t-1) moves the previous stage's state into the linking rows
        matrix = sp.kron(sp.identity(num_stages), stage.matrix) + sp.kron(sp.eye(num_stages, k=-1), coupling)
        self.row_lower = np.tile(stage.row_lower, num_stages)
        self.row_upper = np.tile(stage.row_upper, num_stages)
        self.linking_rows = (np.arange(num_stages)[:, None] * m + stage.linking_rows).ravel().astype(np.int32)
        self.highs = new_highs()
        self.highs.passModel(
            to_highs_lp(
                np.tile(stage.cost, num_stages),
                matrix,
                self.row_lower,
                self.row_upper,
                np.tile(stage.col_lower, num_stages),
                np.tile(stage.col_upper, num_stages),
            )
        )

    def solve(self, initial_state: np.ndarray, noises: np.ndarray) -> HorizonSolution:
        """Plan from `initial_state` for the (stages, w) `noises`."""
        rhs = self.stage.linking_offset + noises @ self.stage.noise_in.T  # (stages, p)
        rhs[0] += self.stage.state_in @ initial_state
        rhs = rhs.ravel()
        self.highs.changeRowsBounds(len(self.linking_rows), self.linking_rows, rhs, rhs)
        self.highs.run()
        status = self.highs.getModelStatus()
        if status != highspy.HighsModelStatus.kOptimal:
            raise RuntimeError(f"horizon LP not solved to optimality: {self.highs.modelStatusToString(status)}")
        columns = np.asarray(self.highs.getSolution().col_value).reshape(self.num_stages, -1)
        return HorizonSolution(stage_costs=columns @ self.stage.cost, states=columns[:, self.stage.state_columns])
