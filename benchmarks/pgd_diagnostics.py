"""Policy-guided diffusion diagnostics on gen/* datasets: how far guidance moves the generated actions towards a
target policy, and how physically accurate the generated transitions are.

For each dataset:

1. a target policy: TD3+BC trained on the dataset for `target_steps` updates (the kind of policy PGD guides with;
   kept in the work directory and resumed if interrupted);
2. the dataset's trajectory diffusion model, the one PGD trains and caches with its default settings;
3. for each guidance coefficient, `trajectories` sampled sub-trajectories: (a) the target policy's log-likelihood
   of their actions (N(π(s), 1), as PGD guides a deterministic policy) and (b) the dynamics error of their
   transitions measured against MuJoCo (the simulator set to each generated state, the generated action applied,
   the next state compared);
4. (c) the baseline the paper compares against: an autoregressive one-step dynamics-model ensemble rolled out from
   dataset states with the same target policy, for as many steps as a generated window has transitions.

Results are written per dataset as each finishes (a rerun skips finished datasets):
`<out>/pgd_diagnostics.json`, `.md` and `.png`.

    python benchmarks/pgd_diagnostics.py --datasets gen/hopper-medium-v0 gen/walker2d-medium-replay-v0
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import tyro

from policylab.core.data import OfflineDataset, load_dataset
from policylab.core.envs.dynamics_error import simulator_next_observations
from policylab.core.files import atomic_write
from policylab.offline_rl import PGD, TD3BC, PGDConfig, TD3BCConfig
from policylab.offline_rl.dynamics_ensemble import DynamicsEnsemble, DynamicsEnsembleConfig
from policylab.offline_rl.trajectory_diffusion import sample_trajectories, trajectories_to_transitions


@dataclasses.dataclass
class Settings:
    """What to measure."""

    datasets: tuple[str, ...] = ("gen/hopper-medium-v0", "gen/walker2d-medium-replay-v0")
    """gen/* datasets of MuJoCo locomotion tasks"""
    coefficients: tuple[float, ...] = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    """guidance coefficients to sample with"""
    trajectories: int = 256
    """sub-trajectories sampled per coefficient (horizon − 1 transitions each)"""
    target_steps: int = 50_000
    """TD3+BC updates of the target policy"""
    seed: int = 0
    """seed of the target policy, the samples and the dynamics-model rollouts"""
    work_dir: Path = Path("benchmarks/results/work/pgd_diagnostics")
    """target policies and dynamics models, one directory per dataset"""
    out: Path = Path("benchmarks/results/pgd_diagnostics")
    """results: JSON, Markdown table and plot"""
    threads: int = 1
    """torch threads"""


def target_policy(dataset: OfflineDataset, settings: Settings, run_dir: Path) -> TD3BC:
    """TD3+BC trained on the dataset (resumed from its run directory; read back when finished)."""
    if (run_dir / "agent.pt").exists():
        return TD3BC.load(run_dir / "agent.pt")
    agent = TD3BC.from_dataset(dataset, TD3BCConfig(seed=settings.seed))
    agent.fit(dataset, settings.target_steps, eval_every=10_000, run_dir=run_dir, resume=True, progress=False)
    return agent


def dynamics_model(dataset: OfflineDataset, path: Path) -> DynamicsEnsemble:
    """The dataset's one-step dynamics ensemble (trained once, then read from `path`)."""
    if path.exists():
        return DynamicsEnsemble.load(path)
    model = DynamicsEnsemble.from_dataset(dataset, DynamicsEnsembleConfig())
    model.fit(dataset)
    model.save(path)
    return model


def error_summary(
    env_id: str, observations, actions, next_observations, scale: np.ndarray, windows: int | None = None
) -> dict:
    """Dynamics error of transitions `[N, ·]` (tensors or arrays): mean, median and p90 of the L2 distance, the mean
    in units of the dataset's per-dimension std, and, for `windows` windows of consecutive transitions, the mean at
    each step of a window."""
    observations, actions, next_observations = (np.asarray(x) for x in (observations, actions, next_observations))
    difference = next_observations - simulator_next_observations(env_id, observations, actions)
    errors, scaled = np.linalg.norm(difference, axis=1), np.linalg.norm(difference / scale, axis=1)
    result = {
        "mean": float(np.mean(errors)),
        "median": float(np.median(errors)),
        "p90": float(np.quantile(errors, 0.9)),
        "scaled_mean": float(np.mean(scaled)),
    }
    if windows is not None:
        result["mean_by_step"] = errors.reshape(windows, -1).mean(axis=0).tolist()
    return result


def diagnose(dataset_id: str, settings: Settings) -> dict:
    """All measurements on one dataset."""
    dataset = load_dataset(dataset_id)
    work = settings.work_dir / dataset_id.replace("/", "_")
    started = time.time()
    target = target_policy(dataset, settings, work / "target")
    pgd = PGD.from_dataset(dataset, PGDConfig(seed=settings.seed))
    diffusion = pgd.trained_diffusion(dataset)
    generator = torch.Generator().manual_seed(settings.seed)

    def log_likelihood(observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return target.action_log_likelihood(observations, actions, deterministic_std=1.0)

    rows = np.random.default_rng(settings.seed).choice(len(dataset), 4096, replace=False)
    scale = dataset.observations.std(axis=0).astype(np.float64) + 1e-6
    real = {
        "log_likelihood": float(
            log_likelihood(torch.as_tensor(dataset.observations[rows]), torch.as_tensor(dataset.actions[rows])).mean()
        ),
        "dynamics_error": error_summary(
            dataset.env_id, dataset.observations[rows], dataset.actions[rows], dataset.next_observations[rows], scale
        ),
    }
    guided = []
    for coefficient in settings.coefficients:
        windows = sample_trajectories(
            diffusion, settings.trajectories, log_likelihood, coefficient, generator=generator
        )
        transitions = trajectories_to_transitions(diffusion, windows)
        observations, actions = transitions.observations, transitions.actions
        guided.append(
            {
                "coefficient": coefficient,
                "log_likelihood": float(log_likelihood(observations, actions).mean()),
                "action_distance": float((actions - torch.as_tensor(target.act(observations))).norm(dim=1).mean()),
                "dynamics_error": error_summary(
                    dataset.env_id, observations, actions, transitions.next_observations, scale, len(windows)
                ),
            }
        )
        print(dataset_id, guided[-1], flush=True)

    horizon = diffusion.config.horizon - 1
    model = dynamics_model(dataset, work / "dynamics_ensemble.pt")
    starts = dataset.observations[rows[: settings.trajectories]]
    rollout = model.rollout(lambda obs: torch.as_tensor(target.act(obs)), starts, horizon, generator=generator)
    model_error = error_summary(
        dataset.env_id,
        rollout["observations"].reshape(-1, dataset.observation_dim),
        rollout["actions"].reshape(-1, dataset.action_dim),
        rollout["next_observations"].reshape(-1, dataset.observation_dim),
        scale,
        len(starts),
    )
    return {
        "dataset": dataset_id,
        "env_id": dataset.env_id,
        "transitions_per_window": horizon,
        "trajectories": settings.trajectories,
        "target_policy": f"TD3+BC, {settings.target_steps} updates, seed {settings.seed}",
        "diffusion": dataclasses.asdict(diffusion.config) | {"training_steps": diffusion.training_steps},
        "real": real,
        "guided": guided,
        "dynamics_model_rollouts": {"dynamics_error": model_error},
        "seconds": time.time() - started,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    }


def error_cells(row: dict) -> str:
    """Mean, median and p90 dynamics error as table cells."""
    error = row["dynamics_error"]
    return f"{error['mean']:.3g} | {error['median']:.3g} | {error['p90']:.3g} | {error['scaled_mean']:.3g}"


def write_report(results: dict[str, dict], out: Path) -> None:
    """JSON of every dataset, a Markdown table per dataset, and the plot."""
    text = json.dumps(results, indent=1) + "\n"
    atomic_write(out / "pgd_diagnostics.json", lambda file: file.write(text.encode()))
    lines = ["# Policy-guided diffusion diagnostics", ""]
    for result in results.values():
        lines += [
            f"## {result['dataset']}",
            "",
            f"Target policy: {result['target_policy']}. {result['trajectories']} sampled windows of "
            f"{result['transitions_per_window']} transitions per coefficient; diffusion model: "
            f"{result['diffusion']['features']} features, {result['diffusion']['training_steps']} training steps, "
            f"{result['diffusion']['sampling_steps']} sampling steps. Dynamics error: L2 distance between the next "
            "state a transition claims and the one MuJoCo gives; in stds: each dimension's difference divided by the "
            "dataset's std of that dimension.",
            "",
            "| data | target log-likelihood | ‖a − π(s)‖ | dynamics error mean | median | p90 | mean in stds |",
            "|---|---|---|---|---|---|---|",
        ]
        real = result["real"]
        lines.append(f"| dataset transitions | {real['log_likelihood']:.2f} | | {error_cells(real)} |")
        for row in result["guided"]:
            lines.append(
                f"| PGD, guidance {row['coefficient']:g} | {row['log_likelihood']:.2f} | "
                f"{row['action_distance']:.3f} | {error_cells(row)} |"
            )
        lines += [f"| dynamics-model ensemble rollouts | | | {error_cells(result['dynamics_model_rollouts'])} |", ""]
    atomic_write(out / "pgd_diagnostics.md", lambda file: file.write("\n".join(lines).encode()))
    plot(results, out / "pgd_diagnostics.png")


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    default_guidance = PGDConfig().guidance
    for result in results.values():
        coefficients = [max(row["coefficient"], 1e-3) for row in result["guided"]]
        axes[0].plot(coefficients, [row["log_likelihood"] for row in result["guided"]], "o-", label=result["dataset"])
        model_error = result["dynamics_model_rollouts"]["dynamics_error"]
        [line] = axes[1].plot(
            coefficients, [row["dynamics_error"]["mean"] for row in result["guided"]], "o-", label=result["dataset"]
        )
        axes[1].axhline(model_error["mean"], color=line.get_color(), linestyle="--")
        steps = np.arange(1, len(model_error["mean_by_step"]) + 1)
        axes[2].plot(steps, model_error["mean_by_step"], "--", color=line.get_color())
        for row in result["guided"]:
            if row["coefficient"] == default_guidance:
                axes[2].plot(steps, row["dynamics_error"]["mean_by_step"], color=line.get_color())
    axes[0].set(xscale="log", xlabel="guidance coefficient (0 plotted at 1e-3)", ylabel="target log-likelihood")
    axes[1].set(xscale="log", yscale="log", xlabel="guidance coefficient", ylabel="dynamics error (mean L2)")
    axes[1].set_title("dashed: dynamics-model ensemble rollouts", fontsize=9)
    axes[2].set(xlabel="step within the window / rollout", ylabel="dynamics error (mean L2)", yscale="log")
    axes[2].set_title(f"solid: PGD at guidance {default_guidance:g}; dashed: ensemble rollouts", fontsize=9)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(settings: Settings) -> None:
    torch.set_num_threads(settings.threads)
    path = settings.out / "pgd_diagnostics.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for dataset_id in settings.datasets:
        if dataset_id not in results:
            results[dataset_id] = diagnose(dataset_id, settings)
            write_report(results, settings.out)


if __name__ == "__main__":
    main(tyro.cli(Settings))
