"""Diagnostic: PGD with the simulator's next states and terminals (and rewards) in place of the diffusion model's.

If PGD trained on relabelled synthetic data recovers the real-data agent's score where plain PGD loses, what the
simulator replaced (the model's dynamics error, its scarce terminals, its rewards) is what costs the score; if not,
the synthetic states and actions themselves do. The next state of each synthetic (observation, action) is MuJoCo's
(`core.envs.dynamics_error.simulator_steps`), and the transition is terminal when that state is unhealthy (the
task's health check); with the `pgd-simulator-rewards-*` variants the rewards are MuJoCo's too, otherwise they stay
the model's.

    python benchmarks/pgd_simulator_relabel.py --algorithms pgd-simulator-td3bc \\
        --datasets gen/walker2d-medium-replay-v0 --seeds 0 --steps 100000 \\
        --work-dir benchmarks/results/work/pgd_relabel --out benchmarks/results/pgd_relabel

Takes the flags of `benchmarks/offline_suite.py`, whose loop, budget and report it uses.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import tyro

from policylab.core.agent import register_agent
from policylab.core.buffers import TransitionBatch
from policylab.core.data import OfflineDataset
from policylab.core.envs.dynamics_error import SUPPORTED_ENV_IDS, simulator_steps
from policylab.offline_rl.pgd import PGD

sys.path.insert(0, str(Path(__file__).resolve().parent))
import offline_suite  # noqa: E402


@register_agent("pgd-simulator")
class SimulatorRelabelledPGD(PGD):
    """PGD whose synthetic next states and terminals come from the simulator (a diagnostic, not a method)."""

    relabelled_rewards = False

    def prepare(self, dataset: OfflineDataset):
        if dataset.env_id not in SUPPORTED_ENV_IDS:
            raise ValueError(f"no simulator for {dataset.env_id!r}: use a dataset of {', '.join(SUPPORTED_ENV_IDS)}")
        self.env_id = dataset.env_id
        return super().prepare(dataset)

    def synthetic_transitions(self, windows: torch.Tensor) -> TransitionBatch:
        batch = super().synthetic_transitions(windows)
        observations, actions = batch.observations.cpu().numpy(), batch.actions.cpu().numpy()
        simulated = simulator_steps(self.env_id, observations, actions, num_threads=1)
        kind = {"dtype": batch.observations.dtype, "device": batch.observations.device}
        relabelled = {
            "next_observations": torch.as_tensor(simulated.next_observations, **kind),
            "terminals": torch.as_tensor(simulated.terminated, **kind),
        }
        if self.relabelled_rewards:
            relabelled["rewards"] = torch.as_tensor(simulated.rewards, **kind)
        return batch._replace(**relabelled)


@register_agent("pgd-simulator-rewards")
class SimulatorRewardsPGD(SimulatorRelabelledPGD):
    """As `SimulatorRelabelledPGD`, and the rewards are the simulator's too."""

    relabelled_rewards = True


offline_suite.VARIANTS["pgd-simulator-td3bc"] = ("pgd-simulator", {"agent": "td3bc"})
offline_suite.VARIANTS["pgd-simulator-iql"] = ("pgd-simulator", {"agent": "iql"})
offline_suite.VARIANTS["pgd-simulator-rewards-td3bc"] = ("pgd-simulator-rewards", {"agent": "td3bc"})
offline_suite.VARIANTS["pgd-simulator-rewards-iql"] = ("pgd-simulator-rewards", {"agent": "iql"})

if __name__ == "__main__":
    try:
        offline_suite.main(tyro.cli(offline_suite.Settings))
    except ValueError as error:
        raise SystemExit(f"pgd_simulator_relabel: error: {error}") from None
