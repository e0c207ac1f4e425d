"""TS-DDR: neural decision rules for multi-stage LPs trained through the duals of target constraints."""

from policylab.offline_rl.tsddr.baselines import myopic, perfect_information, rolling_horizon
from policylab.offline_rl.tsddr.horizon import HorizonProblem
from policylab.offline_rl.tsddr.hydro import (
    CaseOptions,
    HistoricalInflows,
    HydroThermalCase,
    LogNormalInflows,
    load_hydropowermodels,
    synthetic_case,
)
from policylab.offline_rl.tsddr.rollout import MultiStageProblem, Rollout, StagePool, rollout
from policylab.offline_rl.tsddr.stage_problem import StageLP, StageProblem, StageSolution
from policylab.offline_rl.tsddr.tsddr import TSDDR, DifferentiableTrajectory, TSDDRConfig

__all__ = [
    "TSDDR",
    "CaseOptions",
    "DifferentiableTrajectory",
    "HistoricalInflows",
    "HorizonProblem",
    "HydroThermalCase",
    "LogNormalInflows",
    "MultiStageProblem",
    "Rollout",
    "StageLP",
    "StagePool",
    "StageProblem",
    "StageSolution",
    "TSDDRConfig",
    "load_hydropowermodels",
    "myopic",
    "perfect_information",
    "rolling_horizon",
    "rollout",
    "synthetic_case",
]
