"""Stage linear programs with state targets, solved by HiGHS (highspy) with warm starts.

A stage of a multi-stage problem is an LP `min c·y  s.t.  row_lower <= A y <= row_upper, col_lower <= y <= col_upper`
whose "linking" rows are equalities with the right-hand side `offset + state_in @ x_prev + noise_in @ noise`, and whose
columns `state_columns` hold the realised state x_t. TS-DDR adds one target row per state,
`x_t + slack_up - slack_down = target`, with the slacks priced at `target_penalty`. By the envelope theorem the duals
of those rows are the gradient of the stage cost with respect to the targets, and the duals of the linking rows give
its gradient with respect to the previous state.
"""

from __future__ import annotations

import dataclasses

import highspy
import numpy as np
import scipy.sparse as sp


@dataclasses.dataclass
class StageLP:
    """One stage's LP and how the previous state and the stage's noise enter it."""

    cost: np.ndarray
    """(n,) objective coefficients"""
    matrix: sp.csr_matrix
    """(m, n) constraint matrix"""
    row_lower: np.ndarray
    """(m,) row lower bounds (-inf for none)"""
    row_upper: np.ndarray
    """(m,) row upper bounds (+inf for none)"""
    col_lower: np.ndarray
    """(n,) column lower bounds"""
    col_upper: np.ndarray
    """(n,) column upper bounds"""
    state_columns: np.ndarray
    """(k,) columns holding the realised state x_t"""
    linking_rows: np.ndarray
    """(p,) equality rows whose right-hand side depends on the previous state and the noise"""
    linking_offset: np.ndarray
    """(p,) constant part of those right-hand sides"""
    state_in: np.ndarray
    """(p, k) how the previous state x_{t-1} enters them"""
    noise_in: np.ndarray
    """(p, w) how the stage's noise enters them"""
    column_names: list[str] = dataclasses.field(default_factory=list)
    """optional names, for reading solutions"""

    @property
    def num_states(self) -> int:
        return len(self.state_columns)

    @property
    def state_lower(self) -> np.ndarray:
        return self.col_lower[self.state_columns]

    @property
    def state_upper(self) -> np.ndarray:
        return self.col_upper[self.state_columns]

    def linking_rhs(self, state: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Right-hand sides of the linking rows for previous state(s) and noise(s); batched over leading axes."""
        return self.linking_offset + state @ self.state_in.T + noise @ self.noise_in.T

    def max_abs_cost(self) -> float:
        """Largest |objective coefficient|: TS-DDR's default target penalty."""
        return float(np.abs(self.cost).max())


class LPBuilder:
    """Collects named blocks of columns, rows and matrix entries, then makes a `StageLP`."""

    def __init__(self) -> None:
        self.cost: list[np.ndarray] = []
        self.col_lower: list[np.ndarray] = []
        self.col_upper: list[np.ndarray] = []
        self.row_lower: list[np.ndarray] = []
        self.row_upper: list[np.ndarray] = []
        self.names: list[str] = []
        self.entries: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.num_columns = 0
        self.num_rows = 0

    def columns(self, name: str, count: int, lower=0.0, upper=np.inf, cost=0.0) -> np.ndarray:
        """Add `count` columns `name[i]`; returns their indices."""
        for values, target in ((cost, self.cost), (lower, self.col_lower), (upper, self.col_upper)):
            target.append(np.broadcast_to(np.asarray(values, dtype=np.float64), (count,)).copy())
        self.names.extend(f"{name}[{i}]" for i in range(count))
        self.num_columns += count
        return np.arange(self.num_columns - count, self.num_columns)

    def rows(self, count: int, lower=0.0, upper=0.0) -> np.ndarray:
        """Add `count` rows with bounds (equalities by default); returns their indices."""
        self.row_lower.append(np.broadcast_to(np.asarray(lower, dtype=np.float64), (count,)).copy())
        self.row_upper.append(np.broadcast_to(np.asarray(upper, dtype=np.float64), (count,)).copy())
        self.num_rows += count
        return np.arange(self.num_rows - count, self.num_rows)

    def add(self, rows, columns, values) -> None:
        """Add matrix entries (duplicates are summed)."""
        rows, columns = np.atleast_1d(rows), np.atleast_1d(columns)
        values = np.broadcast_to(np.asarray(values, dtype=np.float64), rows.shape)
        self.entries.append((rows, columns, values))

    def build(self, state_columns, linking_rows, linking_offset, state_in, noise_in) -> StageLP:
        rows, columns, values = (np.concatenate(part) if part else np.zeros(0) for part in zip(*self.entries))
        matrix = sp.csr_matrix(
            (values, (rows.astype(int), columns.astype(int))), shape=(self.num_rows, self.num_columns)
        )
        return StageLP(
            cost=np.concatenate(self.cost),
            matrix=matrix,
            row_lower=np.concatenate(self.row_lower),
            row_upper=np.concatenate(self.row_upper),
            col_lower=np.concatenate(self.col_lower),
            col_upper=np.concatenate(self.col_upper),
            state_columns=np.asarray(state_columns),
            linking_rows=np.asarray(linking_rows),
            linking_offset=np.asarray(linking_offset, dtype=np.float64),
            state_in=np.asarray(state_in, dtype=np.float64),
            noise_in=np.asarray(noise_in, dtype=np.float64),
            column_names=self.names,
        )


@dataclasses.dataclass
class StageSolution:
    """What one stage solve returns."""

    objective: float
    """optimal value, target penalty included"""
    operational_cost: float
    """optimal value without the target-slack penalty"""
    state: np.ndarray
    """(k,) realised state x_t"""
    target_duals: np.ndarray
    """(k,) d objective / d target"""
    state_duals: np.ndarray
    """(k,) d objective / d previous state"""
    primal: np.ndarray
    """(n,) values of the stage LP's own columns"""


def to_highs_lp(
    cost: np.ndarray,
    matrix: sp.spmatrix,
    row_lower: np.ndarray,
    row_upper: np.ndarray,
    col_lower: np.ndarray,
    col_upper: np.ndarray,
) -> highspy.HighsLp:
    """A HighsLp (column-wise matrix) from numpy/scipy arrays; infinities become HiGHS's."""
    lp = highspy.HighsLp()
    matrix = sp.csc_matrix(matrix)
    matrix.sort_indices()
    lp.num_col_, lp.num_row_ = matrix.shape[1], matrix.shape[0]
    lp.col_cost_ = np.asarray(cost, dtype=np.float64)
    lp.col_lower_ = _clip_infinity(col_lower)
    lp.col_upper_ = _clip_infinity(col_upper)
    lp.row_lower_ = _clip_infinity(row_lower)
    lp.row_upper_ = _clip_infinity(row_upper)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = matrix.indptr.astype(np.int32)
    lp.a_matrix_.index_ = matrix.indices.astype(np.int32)
    lp.a_matrix_.value_ = matrix.data.astype(np.float64)
    return lp


def _clip_infinity(values: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(values, dtype=np.float64), -highspy.kHighsInf, highspy.kHighsInf)


def new_highs() -> highspy.Highs:
    """A silent single-threaded HiGHS instance using the dual simplex (fast warm starts)."""
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    highs.setOptionValue("threads", 1)
    highs.setOptionValue("solver", "simplex")
    highs.setOptionValue("presolve", "off")  # presolve would discard the basis kept between solves
    return highs


class InfeasibleStageError(RuntimeError):
    """A stage LP has no solution (for example a demand no generator and no deficit can meet)."""


class StageProblem:
    """A stage LP with target rows, built once in HiGHS; each solve changes right-hand sides only (warm start)."""

    def __init__(self, stage: StageLP, target_penalty: float | None = None):
        self.stage = stage
        n, k = len(stage.cost), stage.num_states
        self.num_columns = n
        # columns: [stage columns | slack_up (k) | slack_down (k)]; rows: [stage rows | target rows (k)]
        slack = sp.hstack([sp.identity(k), -sp.identity(k)])
        target_rows = sp.hstack([sp.csr_matrix((np.ones(k), (np.arange(k), stage.state_columns)), shape=(k, n)), slack])
        matrix = sp.vstack([sp.hstack([stage.matrix, sp.csr_matrix((stage.matrix.shape[0], 2 * k))]), target_rows])
        penalty = stage.max_abs_cost() if target_penalty is None else target_penalty
        cost = np.concatenate([stage.cost, np.full(2 * k, penalty)])
        zeros = np.zeros(k)
        self.highs = new_highs()
        self.highs.passModel(
            to_highs_lp(
                cost,
                matrix,
                np.concatenate([stage.row_lower, zeros]),
                np.concatenate([stage.row_upper, zeros]),
                np.concatenate([stage.col_lower, zeros, zeros]),
                np.concatenate([stage.col_upper, np.full(2 * k, np.inf)]),
            )
        )
        self.target_rows = np.arange(stage.matrix.shape[0], stage.matrix.shape[0] + k, dtype=np.int32)
        self.slack_columns = np.arange(n, n + 2 * k, dtype=np.int32)
        self.rhs_rows = np.concatenate([stage.linking_rows, self.target_rows]).astype(np.int32)
        self.target_penalty = penalty
        self.solves = 0

    def set_target_penalty(self, penalty: float) -> None:
        """Price of one unit of target violation (per state, L1)."""
        self.target_penalty = float(penalty)
        self.highs.changeColsCost(
            len(self.slack_columns), self.slack_columns, np.full(len(self.slack_columns), penalty)
        )

    def solve(self, previous_state: np.ndarray, noise: np.ndarray, target: np.ndarray) -> StageSolution:
        """Solve the stage for x_{t-1}, the stage's noise and the target x̂_t."""
        rhs = np.concatenate([self.stage.linking_rhs(previous_state, noise), target])
        self.highs.changeRowsBounds(len(self.rhs_rows), self.rhs_rows, rhs, rhs)
        self.highs.run()
        self.solves += 1
        status = self.highs.getModelStatus()
        if status != highspy.HighsModelStatus.kOptimal:
            raise InfeasibleStageError(
                f"stage LP not solved to optimality ({self.highs.modelStatusToString(status)}) "
                f"for previous state {previous_state}, noise {noise}, target {target}"
            )
        solution = self.highs.getSolution()
        columns = np.asarray(solution.col_value)
        objective = self.highs.getInfo().objective_function_value
        penalty = self.target_penalty * columns[self.num_columns :].sum()
        row_duals = np.asarray(solution.row_dual)
        return StageSolution(
            objective=objective,
            operational_cost=objective - penalty,
            state=columns[self.stage.state_columns],
            target_duals=row_duals[self.target_rows],
            state_duals=row_duals[self.stage.linking_rows] @ self.stage.state_in,
            primal=columns[: self.num_columns],
        )
