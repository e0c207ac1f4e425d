"""Diagnostic: PGD with the simulator's next states and terminals in place of the diffusion model's.

If PGD trained on relabelled synthetic data recovers the real-data agent's score where plain PGD loses, the
diffusion model's dynamics error (and its scarce terminals) is what costs the score, not the on-policy guidance or
the synthetic states themselves. The next state of each synthetic (observation, action) is MuJoCo's
(`core.envs.dynamics_error.simulator_next_observations`), and the transition is terminal when that state is
unhealthy (the task's health check). Rewards stay the model's.

    python benchmarks/pgd_simulator_relabel.py --algorithms pgd-simulator-td3bc \\
        --datasets gen/walker2d-medium-replay-v0 --seeds 0 --steps 100000 \\
        --work-dir benchmarks/results/work/pgd_relabel --out benchmarks/results/pgd_relabel

Takes the flags of `benchmarks/offline_suite.py`, whose loop, budget and report it uses.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import tyro

from policylab.core.agent import register_agent
from policylab.core.buffers import TransitionBatch
from policylab.core.data import OfflineDataset
from policylab.core.envs.dynamics_error import simulator_next_observations
from policylab.core.envs.mujoco_engine import LOCOMOTION_TASKS
from policylab.offline_rl.pgd import PGD

sys.path.insert(0, str(Path(__file__).resolve().parent))
import offline_suite  # noqa: E402


def simulator_terminals(env_id: str, next_observations: np.ndarray) -> np.ndarray:
    """1.0 where the task's health check fails on the state an observation describes (0 for tasks that never
    terminate); the left-out x (and y) positions are set to 0, which no health check reads."""
    task_class = LOCOMOTION_TASKS[env_id]
    model = task_class.load_model()
    if task_class.healthy_reward is None:
        return np.zeros(len(next_observations))
    positions = model.nq - task_class.skipped_positions
    qpos = np.zeros((len(next_observations), model.nq))
    qpos[:, task_class.skipped_positions :] = next_observations[:, :positions]
    qvel = next_observations[:, positions : positions + model.nv]
    return (~task_class(model).is_healthy(qpos, qvel)).astype(np.float64)


@register_agent("pgd-simulator")
class SimulatorRelabelledPGD(PGD):
    """PGD whose synthetic next states and terminals come from the simulator (a diagnostic, not a method)."""

    def prepare(self, dataset: OfflineDataset):
        if dataset.env_id not in LOCOMOTION_TASKS:
            raise ValueError(f"no simulator for {dataset.env_id!r}: use a MuJoCo locomotion dataset")
        self.env_id = dataset.env_id
        return super().prepare(dataset)

    def synthetic_transitions(self, windows: torch.Tensor) -> TransitionBatch:
        batch = super().synthetic_transitions(windows)
        observations, actions = batch.observations.cpu().numpy(), batch.actions.cpu().numpy()
        next_observations = simulator_next_observations(self.env_id, observations, actions, num_threads=1)
        terminals = simulator_terminals(self.env_id, next_observations)
        kind = {"dtype": batch.observations.dtype, "device": batch.observations.device}
        return batch._replace(
            next_observations=torch.as_tensor(next_observations, **kind), terminals=torch.as_tensor(terminals, **kind)
        )


offline_suite.VARIANTS["pgd-simulator-td3bc"] = ("pgd-simulator", {"agent": "td3bc"})
offline_suite.VARIANTS["pgd-simulator-iql"] = ("pgd-simulator", {"agent": "iql"})

if __name__ == "__main__":
    try:
        offline_suite.main(tyro.cli(offline_suite.Settings))
    except ValueError as error:
        raise SystemExit(f"pgd_simulator_relabel: error: {error}") from None
