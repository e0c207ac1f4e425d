"""policylab's SAC and PPO next to Stable-Baselines3's, with matched hyper-parameters, on MuJoCo tasks.

Every (algorithm, framework, task, seed) is one run in its own process; each finished run writes
`<out>/runs/<name>.json` (its evaluation curve, final return, area under the curve and training
env-steps/s), so a killed benchmark resumes where it stopped (policylab runs also resume mid-way from
their checkpoints). Both frameworks are evaluated by the same code (`policylab.core.evaluation.evaluate`,
deterministic actions, `eval_episodes` episodes seeded with seed + 100) every `eval_every` env steps, and
evaluation time is excluded from env-steps/s. policylab trains on `make_vec_env`'s fastest backend, SB3 on
Gymnasium envs in its own `DummyVecEnv`, as their users would.

    python benchmarks/online_mujoco.py                        # the committed comparison
    python benchmarks/online_mujoco.py --sac-steps 20000 --ppo-steps 50000 --seeds 0   # a quick look

Matched settings. SAC: 256-256, Adam 3e-4 everywhere, batch 256, buffer 1M, 5000 random steps, τ 0.005,
γ 0.99, one update per env step, entropy coefficient tuned from 1.0 towards −dim(A). PPO (CleanRL's MuJoCo
settings): 2048 steps × 1 env, 32 minibatches of 64, 10 epochs, lr 3e-4 annealed, clip 0.2 on ratio and
value, γ 0.99, λ 0.95, no entropy bonus, 64-64 tanh, orthogonal init, observations and rewards normalised
(SB3's `VecNormalize`). SB3's value clipping uses the clipped prediction alone, policylab takes the larger of
the clipped and unclipped losses (CleanRL's form).

PMOE (`pmoe-sac`, `pmoe-ppo`, and PMOE-SAC with the gate trained by Gumbel-softmax, `pmoe-sac-gumbel`, or by
the score function, `pmoe-sac-score`) runs on policylab only, with the settings of its family (SAC's or PPO's)
and the mixture's defaults; its comparison with the unimodal policies at equal steps goes in its own directory:

    python benchmarks/online_mujoco.py --algorithms sac pmoe-sac ppo pmoe-ppo --frameworks policylab \
        --sac-steps 200000 --ppo-steps 1001472 --out benchmarks/results/pmoe
    python benchmarks/online_mujoco.py --algorithms pmoe-sac-gumbel pmoe-sac-score --frameworks policylab \
        --envs Hopper-v5 --sac-steps 200000 --ppo-steps 1001472 --out benchmarks/results/pmoe
    python benchmarks/pmoe_mixture_plot.py benchmarks/results/pmoe/work/pmoe-sac-policylab-Hopper-v5-s0

PROPS (`props`), its control PPO-buffer (`ppo-buffer`, b = 2, sampled by the current policy) and PPO as the paper
runs it (`ppo-b1`: the same class, settings and network with a one-batch buffer) take the authors' tuned settings per
task and the PPO step budget; their runs also record the buffer's sampling error (every `sampling_error_every` PPO
updates), and PROPS's runs its on-policy reference as the authors measure it (the sampling error of an on-policy
buffer collected by the same target policies), summarised in the table, compared window by window (the ratio of
the two over each 100k env steps) and drawn in `online_mujoco_sampling_error.png` (references dashed):

    python benchmarks/online_mujoco.py --algorithms ppo-b1 ppo-buffer props --frameworks policylab \
        --ppo-steps 1000000 --seeds 0 1 2 --out benchmarks/results/props_1m

`--props-behaviour-learning-rate` changes PROPS's one setting the sampling-error ablation varies:

    python benchmarks/online_mujoco.py --algorithms props --frameworks policylab --ppo-steps 1000000 --seeds 0 \
        --props-behaviour-learning-rate 1e-4 --out benchmarks/results/props_1m_behaviour_lr

Writes `<out>/online_mujoco.json`, `<out>/online_mujoco.md` and `<out>/online_mujoco.png`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import platform
import time
from pathlib import Path

import numpy as np
import tyro

from policylab.core.files import atomic_write

ALGORITHMS = ("sac", "ppo")
FRAMEWORKS = ("policylab", "sb3")
# The SB3 run a policylab algorithm's speed is compared with (SAC with bfloat16 products against SB3's SAC).
SB3_COUNTERPART = {"sac": "sac", "sac-bf16": "sac", "ppo": "ppo"}
# Every algorithm a run may name, with its family (whose step budget, evaluation interval and settings it takes).
FAMILIES = {
    "sac": "sac",
    "sac-bf16": "sac",
    "ppo": "ppo",
    "pmoe-sac": "sac",
    "pmoe-sac-gumbel": "sac",
    "pmoe-sac-score": "sac",
    "pmoe-ppo": "ppo",
    "props": "ppo",
    "ppo-buffer": "ppo",
    "ppo-b1": "ppo",
}


@dataclasses.dataclass
class Settings:
    """What to run."""

    envs: tuple[str, ...] = ("Hopper-v5", "HalfCheetah-v5")
    """MuJoCo tasks"""
    algorithms: tuple[str, ...] = ALGORITHMS
    """any of sac, sac-bf16 (SAC with `bf16_matmuls`), ppo, pmoe-sac, pmoe-sac-gumbel, pmoe-sac-score, pmoe-ppo,
    props, ppo-buffer, ppo-b1 (all but sac and ppo on policylab only)"""
    frameworks: tuple[str, ...] = FRAMEWORKS
    """policylab and/or sb3"""
    seeds: tuple[int, ...] = (0, 1)
    """seeds of every (algorithm, framework, task)"""
    sac_steps: int = 100_000
    """env steps of each SAC run"""
    ppo_steps: int = 501_760
    """env steps of each PPO run (245 rollouts of 2048)"""
    sac_eval_every: int = 5000
    """env steps between SAC evaluations"""
    ppo_eval_every: int = 10_240
    """env steps between PPO evaluations (a multiple of the 2048-step rollout)"""
    eval_episodes: int = 10
    """episodes per evaluation"""
    sampling_error_every: int = 2
    """PPO updates between sampling-error measurements of props, ppo-buffer and ppo-b1"""
    props_behaviour_learning_rate: float | None = None
    """PROPS's behaviour-policy Adam learning rate (default: the authors' value for the task; set it for an ablation,
    in an `--out` of its own)"""
    workers: int = 2
    """runs in parallel, one process each"""
    threads: int = 1
    """torch threads per run"""
    out: Path = Path("benchmarks/results")
    """where results go (runs/ holds one JSON per finished run, work/ the policylab checkpoints)"""
    report_only: bool = False
    """only rebuild the table and plot from finished runs"""


def run_name(algorithm: str, framework: str, env_id: str, seed: int) -> str:
    return f"{algorithm}-{framework}-{env_id}-s{seed}"


def area_under_curve(steps: list[int], returns: list[float]) -> float:
    """Mean evaluated return over the run (trapezoidal area under the curve divided by its length)."""
    if len(steps) < 2:
        return float(returns[-1])
    return float(np.trapezoid(returns, steps) / (steps[-1] - steps[0]))


class EvalClock:
    """Evaluates a policy at fixed step intervals and records the curve and the time spent evaluating."""

    def __init__(self, env_id: str, episodes: int, seed: int) -> None:
        self.env_id, self.episodes, self.seed = env_id, episodes, seed
        self.steps: list[int] = []
        self.returns: list[float] = []
        self.seconds = 0.0

    def evaluate(self, policy):
        """One timed evaluation of `policy`; returns its `EvaluationResult`."""
        from policylab.core.evaluation import evaluate

        started = time.perf_counter()
        result = evaluate(policy, self.env_id, episodes=self.episodes, seed=self.seed + 100)
        self.seconds += time.perf_counter() - started
        return result

    def __call__(self, step: int, policy) -> float:
        """Evaluate and record the return at `step`."""
        return_mean = self.evaluate(policy).return_mean
        self.steps.append(step)
        self.returns.append(return_mean)
        return return_mean


def make_policylab_agent(
    algorithm: str,
    env_id: str,
    seed: int,
    sampling_error_every: int = 2,
    props_behaviour_learning_rate: float | None = None,
):
    """policylab's agent with the matched settings (the library defaults); PMOE with its family's settings; PROPS
    and its controls with the authors' settings for the task."""
    from policylab.online_rl import (
        PMOEPPO,
        PMOESAC,
        PPO,
        PROPS,
        SAC,
        PMOEPPOConfig,
        PMOESACConfig,
        PPOBuffer,
        PPOBufferConfig,
        PPOConfig,
        PROPSConfig,
        SACConfig,
    )

    if algorithm == "props":
        config = PROPSConfig(
            seed=seed,
            sampling_error_every=sampling_error_every,
            on_policy_reference=True,
            behaviour_learning_rate=props_behaviour_learning_rate,
        )
        return PROPS(env_id, config)
    if algorithm in ("ppo-buffer", "ppo-b1"):
        batches = 2 if algorithm == "ppo-buffer" else 1
        config = PPOBufferConfig(seed=seed, buffer_batches=batches, sampling_error_every=sampling_error_every)
        return PPOBuffer(env_id, config)
    if algorithm.startswith("pmoe-sac"):
        estimator = algorithm.removeprefix("pmoe-sac").removeprefix("-") or "frequency"
        return PMOESAC(env_id, PMOESACConfig(seed=seed, gate_estimator=estimator))
    if algorithm == "pmoe-ppo":
        return PMOEPPO(env_id, PMOEPPOConfig(seed=seed))
    if algorithm in ("sac", "sac-bf16"):
        return SAC(env_id, SACConfig(seed=seed, bf16_matmuls=algorithm == "sac-bf16"))
    return PPO(env_id, PPOConfig(seed=seed))


def make_sb3_model(algorithm: str, env_id: str, seed: int):
    """Stable-Baselines3's model with the matched settings, on Gymnasium envs in its own `DummyVecEnv`; returns
    the model and its `VecNormalize` (None for SAC)."""
    import gymnasium as gym
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    env = DummyVecEnv([lambda: gym.make(env_id)])
    if algorithm == "sac":
        model = SAC(
            "MlpPolicy",
            env,
            learning_rate=3e-4,
            buffer_size=1_000_000,
            learning_starts=5000,
            batch_size=256,
            tau=0.005,
            gamma=0.99,
            train_freq=1,
            gradient_steps=1,
            ent_coef="auto_1.0",
            policy_kwargs={"net_arch": [256, 256]},
            seed=seed,
            device="cpu",
        )
        return model, None
    normalizer = VecNormalize(env, gamma=0.99, clip_obs=10.0, clip_reward=10.0)
    model = PPO(
        "MlpPolicy",
        normalizer,
        learning_rate=lambda remaining: 3e-4 * remaining,
        n_steps=2048,
        batch_size=64,
        n_epochs=10,
        gamma=0.99,
        gae_lambda=0.95,
        clip_range=0.2,
        clip_range_vf=0.2,
        ent_coef=0.0,
        vf_coef=0.5,
        max_grad_norm=0.5,
        policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}},
        seed=seed,
        device="cpu",
    )
    return model, normalizer


def train_policylab(algorithm: str, env_id: str, seed: int, steps: int, eval_every: int, settings: Settings) -> dict:
    agent = make_policylab_agent(
        algorithm, env_id, seed, settings.sampling_error_every, settings.props_behaviour_learning_rate
    )
    clock = EvalClock(env_id, settings.eval_episodes, seed)
    agent.evaluate = lambda env, episodes: clock.evaluate(agent)  # learn asks for this task and eval_episodes
    run_dir = settings.out / "work" / run_name(algorithm, "policylab", env_id, seed)
    started = time.perf_counter()
    first_step = None

    def note_start(agent_) -> None:
        nonlocal first_step, started
        if first_step is None:  # time from the end of the first iteration (after a resume, of this segment)
            first_step, started = agent_.num_timesteps, time.perf_counter()

    agent.learn(
        steps,
        eval_every=eval_every,
        eval_episodes=settings.eval_episodes,
        run_dir=run_dir,
        resume=True,
        progress=False,
        callback=note_start,
    )
    elapsed = time.perf_counter() - started - clock.seconds
    _read_curve_from_metrics(run_dir, clock)
    result = {
        "env_steps_per_second": (agent.num_timesteps - first_step) / elapsed,
        "backend": agent.envs.backend,
        "steps": clock.steps,
        "returns": clock.returns,
    }
    # the buffer's sampling error, and PROPS's on-policy reference (the same policies sampling on-policy)
    for key, metric in (
        ("sampling_error", "train/sampling_error"),
        ("on_policy_reference", "train/sampling_error_on_policy"),
    ):
        measured_at, values = _metric_curve(run_dir, metric)
        if values:
            result |= {f"{key}_steps": measured_at, f"{key}s": values}
    return result


def _metric_curve(run_dir: Path, metric: str) -> tuple[list[int], list[float]]:
    """The steps and values of `metric` over the whole run, including rows logged before a resume."""
    from policylab.core.logging import MetricLogger

    rows = [row for row in MetricLogger(run_dir, tensorboard=False).read() if row.get(metric)]
    return [int(row["step"]) for row in rows], [float(row[metric]) for row in rows]


def _read_curve_from_metrics(run_dir: Path, clock: EvalClock) -> None:
    """The whole evaluation curve, including evaluations made before a resume."""
    clock.steps, clock.returns = _metric_curve(run_dir, "eval/return_mean")


def train_sb3(algorithm: str, env_id: str, seed: int, steps: int, eval_every: int, settings: Settings) -> dict:
    from stable_baselines3.common.callbacks import BaseCallback

    clock = EvalClock(env_id, settings.eval_episodes, seed)
    model, normalizer = make_sb3_model(algorithm, env_id, seed)

    def policy(observations):
        if normalizer is not None:
            observations = normalizer.normalize_obs(observations)
        return model.predict(observations, deterministic=True)[0]

    class Evaluations(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % eval_every == 0 or self.num_timesteps == steps:
                clock(self.num_timesteps, policy)
            return True

    started = time.perf_counter()
    model.learn(steps, callback=Evaluations())
    elapsed = time.perf_counter() - started - clock.seconds
    return {
        "env_steps_per_second": steps / elapsed,
        "backend": "gymnasium (SB3 DummyVecEnv)",
        "steps": clock.steps,
        "returns": clock.returns,
    }


def run_one(algorithm: str, framework: str, env_id: str, seed: int, settings: Settings) -> dict:
    """Train one configuration and write its result file; returns the result."""
    import torch

    torch.set_num_threads(settings.threads)
    family = FAMILIES[algorithm]
    steps = settings.sac_steps if family == "sac" else settings.ppo_steps
    eval_every = settings.sac_eval_every if family == "sac" else settings.ppo_eval_every
    train = train_policylab if framework == "policylab" else train_sb3
    result = train(algorithm, env_id, seed, steps, eval_every, settings)
    result.update(
        {
            "algorithm": algorithm,
            "framework": framework,
            "env_id": env_id,
            "seed": seed,
            "total_steps": steps,
            "final_return": result["returns"][-1],
            "auc_return": area_under_curve(result["steps"], result["returns"]),
            "torch_threads": settings.threads,
            "parallel_runs": settings.workers,
            "machine": _machine(),
        }
    )
    if algorithm == "props" and settings.props_behaviour_learning_rate is not None:
        result["props_behaviour_learning_rate"] = settings.props_behaviour_learning_rate
    path = settings.out / "online_mujoco" / f"{run_name(algorithm, framework, env_id, seed)}.json"
    text = json.dumps(result, indent=1) + "\n"
    atomic_write(path, lambda file: file.write(text.encode()))
    return result


def budget_text(settings: Settings, families: set[str]) -> str:
    """The step budget and evaluation interval of each family that has runs."""
    parts = {
        "sac": f"SAC {settings.sac_steps:,} env steps (evaluated every {settings.sac_eval_every:,})",
        "ppo": f"PPO {settings.ppo_steps:,} env steps (evaluated every {settings.ppo_eval_every:,})",
    }
    return ", ".join(text for family, text in parts.items() if family in families) or "no runs yet"


def _machine() -> str:
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}"


def report(settings: Settings) -> None:
    """Aggregate finished runs into a JSON summary, a Markdown table and a learning-curve plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [json.loads(path.read_text()) for path in sorted((settings.out / "online_mujoco").glob("*.json"))]
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for result in results:
        groups.setdefault((result["algorithm"], result["env_id"], result["framework"]), []).append(result)
    rows = []
    for (algorithm, env_id, framework), runs in sorted(groups.items()):
        finals = [run["final_return"] for run in runs]
        aucs = [run["auc_return"] for run in runs]
        speeds = [run["env_steps_per_second"] for run in runs]
        rows.append(
            {
                "algorithm": algorithm,
                "env_id": env_id,
                "framework": framework,
                "seeds": [r["seed"] for r in runs],
                "steps": runs[0]["total_steps"],
                "final_mean": float(np.mean(finals)),
                "final_min": min(finals),
                "final_max": max(finals),
                "auc_mean": float(np.mean(aucs)),
                "auc_min": min(aucs),
                "auc_max": max(aucs),
                "env_steps_per_second": float(np.mean(speeds)),
                "sampling_error_mean": _mean_curve(runs, "sampling_errors"),
                "on_policy_reference_mean": _mean_curve(runs, "on_policy_references"),
            }
        )
    summary = {"machine": _machine(), "rows": rows}
    (settings.out / "online_mujoco.json").write_text(json.dumps(summary, indent=1) + "\n")

    import torch

    first = results[0] if results else {}
    frameworks = sorted({result["framework"] for result in results})
    if "sb3" in frameworks:
        import stable_baselines3

        frameworks[frameworks.index("sb3")] = f"sb3 (Stable-Baselines3 {stable_baselines3.__version__})"
    lines = [
        f"{' vs '.join(frameworks)}, torch {torch.__version__}, on "
        f"{summary['machine']}. Budget per run: {budget_text(settings, {FAMILIES[r['algorithm']] for r in results})}; "
        f"{settings.eval_episodes} deterministic episodes per evaluation; seeds {list(settings.seeds)}. Final = last "
        "evaluation, AUC = mean evaluated return over the run. env-steps/s is the learning runs' own training "
        f"throughput ({first.get('torch_threads', settings.threads)} torch thread each, "
        f"{first.get('parallel_runs', settings.workers)} of this sweep's runs at a time, evaluation excluded; other "
        "jobs sharing the machine lower it, and this report does not record them); `online_speed.py` measures speed "
        "alone."
        + "".join(
            f" PROPS's behaviour learning rate: {rate:g} (an ablation; the authors' value for the task otherwise)."
            for rate in sorted(
                {r["props_behaviour_learning_rate"] for r in results if "props_behaviour_learning_rate" in r}
            )
        ),
        "",
        "| algorithm | task | framework | env steps | seeds | final return (min–max) | AUC return (min–max) "
        "| env-steps/s | speed vs SB3 | sampling error (mean over run) | its on-policy reference (mean) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        sb3 = next(
            (
                r
                for r in rows
                if (r["algorithm"], r["env_id"], r["framework"])
                == (SB3_COUNTERPART.get(row["algorithm"]), row["env_id"], "sb3")
            ),
            None,
        )
        ratio = f"{row['env_steps_per_second'] / sb3['env_steps_per_second']:.2f}×" if sb3 else "–"
        lines.append(
            f"| {row['algorithm'].upper()} | {row['env_id']} | {row['framework']} | {row['steps']:,} | "
            f"{len(row['seeds'])} | {row['final_mean']:.0f} ({row['final_min']:.0f}–{row['final_max']:.0f}) | "
            f"{row['auc_mean']:.0f} ({row['auc_min']:.0f}–{row['auc_max']:.0f}) | "
            f"{row['env_steps_per_second']:.0f} | {ratio} | "
            + " | ".join(
                f"{row[key]:.4f}" if row[key] is not None else "–"
                for key in ("sampling_error_mean", "on_policy_reference_mean")
            )
            + " |"
        )
    lines += _reference_ratio_table(results)
    (settings.out / "online_mujoco.md").write_text("\n".join(lines) + "\n")

    pairs = sorted({(FAMILIES[r["algorithm"]], r["env_id"]) for r in results})
    if not pairs:
        return
    curves = sorted({(r["algorithm"], r["framework"]) for r in results})  # one colour per algorithm and framework
    colors = dict(zip(curves, plt.rcParams["axes.prop_cycle"].by_key()["color"] * len(curves)))
    figure, axes = plt.subplots(1, len(pairs), figsize=(4.5 * len(pairs), 3.6), squeeze=False)
    for axis, (family, env_id) in zip(axes[0], pairs):
        for algorithm, framework in (curve for curve in curves if FAMILIES[curve[0]] == family):
            runs = (
                r for r in results if (r["algorithm"], r["env_id"], r["framework"]) == (algorithm, env_id, framework)
            )
            for index, run in enumerate(runs):
                label = f"{algorithm}, {framework}" if index == 0 else None
                axis.plot(run["steps"], run["returns"], color=colors[algorithm, framework], alpha=0.8, label=label)
        axis.set_title(f"{family.upper()} {env_id}")
        axis.set_xlabel("env steps")
        axis.set_ylabel("evaluation return")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(settings.out / "online_mujoco.png", dpi=100)
    plt.close(figure)
    _plot_sampling_errors([r for r in results if r.get("sampling_errors")], colors, settings.out, plt)


def reference_ratios(run: dict, window: int = 100_000) -> list[dict]:
    """A run's sampling error against its on-policy reference, over consecutive windows of `window` env steps (the
    last window takes the measurements at the run's final step): per window the ratio of the two sums and how many
    of its paired measurements the run's own is lower; [] when the run has no reference."""
    if not run.get("on_policy_references"):
        return []
    own = dict(zip(run["sampling_error_steps"], run["sampling_errors"]))
    reference = dict(zip(run["on_policy_reference_steps"], run["on_policy_references"]))
    last_window = (run["total_steps"] - 1) // window
    windows: dict[int, list[int]] = {}
    for step in sorted(own.keys() & reference.keys()):
        windows.setdefault(min(step // window, last_window), []).append(step)
    return [
        {
            "start": index * window,
            "ratio": sum(own[step] for step in steps) / sum(reference[step] for step in steps),
            "lower": sum(own[step] < reference[step] for step in steps),
            "measurements": len(steps),
        }
        for index, steps in sorted(windows.items())
    ]


def _reference_ratio_table(results: list[dict], window: int = 100_000) -> list[str]:
    """Markdown lines: `reference_ratios` of every run that measured its on-policy reference, one row per run."""
    rows = {(r["algorithm"], r["env_id"], r["seed"]): reference_ratios(r, window) for r in results}
    rows = {key: ratios for key, ratios in sorted(rows.items()) if ratios}
    if not rows:
        return []
    windows = max(len(ratios) for ratios in rows.values())
    lines = [
        "",
        "Sampling error against the on-policy reference: the ratio of their sums over each window of "
        f"{window:,} env steps (below 1: the buffer is closer to on-policy than on-policy sampling gets), with how "
        "many of the window's paired measurements are lower than the reference's.",
        "",
        "| run | " + " | ".join(f"{i * window // 1000}k–" for i in range(windows)) + " |",
        "|---|" + "---|" * windows,
    ]
    for (algorithm, env_id, seed), ratios in rows.items():
        cells = [f"{r['ratio']:.2f} ({r['lower']}/{r['measurements']})" for r in ratios]
        cells += ["–"] * (windows - len(cells))
        lines.append(f"| {algorithm.upper()} {env_id} seed {seed} | " + " | ".join(cells) + " |")
    return lines


def _mean_curve(runs: list[dict], key: str) -> float | None:
    """Mean over runs of each run's mean of the curve `key` (None when the runs did not measure it)."""
    means = [float(np.mean(run[key])) for run in runs if run.get(key)]
    return float(np.mean(means)) if means else None


def _plot_sampling_errors(results: list[dict], colors: dict, out: Path, plt) -> None:
    """Sampling error against env steps, one panel per task, into `online_mujoco_sampling_error.png`."""
    env_ids = sorted({r["env_id"] for r in results})
    if not env_ids:
        return
    figure, axes = plt.subplots(1, len(env_ids), figsize=(4.5 * len(env_ids), 3.6), squeeze=False)
    for axis, env_id in zip(axes[0], env_ids):
        labelled = set()
        for run in (r for r in results if r["env_id"] == env_id):
            curve = run["algorithm"], run["framework"]
            label = None if curve in labelled else f"{run['algorithm']}, {run['framework']}"
            labelled.add(curve)
            axis.plot(run["sampling_error_steps"], run["sampling_errors"], color=colors[curve], alpha=0.8, label=label)
            if run.get("on_policy_references"):  # the same target policies sampling on-policy, dashed
                reference_label = None if label is None else f"{run['algorithm']}'s on-policy reference"
                axis.plot(
                    run["on_policy_reference_steps"],
                    run["on_policy_references"],
                    color=colors[curve],
                    alpha=0.8,
                    linestyle="--",
                    label=reference_label,
                )
        axis.set_title(f"sampling error, {env_id}")
        axis.set_xlabel("env steps")
        axis.set_ylabel("KL(π_D ‖ π_θ)")
        axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(out / "online_mujoco_sampling_error.png", dpi=100)
    plt.close(figure)


def main(settings: Settings) -> None:
    unknown = set(settings.algorithms) - set(FAMILIES)
    if unknown:
        raise SystemExit(f"unknown algorithm(s) {sorted(unknown)}; choose from {', '.join(FAMILIES)}")
    finished = {path.stem for path in (settings.out / "online_mujoco").glob("*.json")}
    # seed-major, so that a sweep cut short leaves whole seeds of every algorithm and task
    jobs = [
        (algorithm, framework, env_id, seed)
        for seed in settings.seeds
        for env_id in settings.envs
        for algorithm in settings.algorithms
        for framework in settings.frameworks
        if run_name(algorithm, framework, env_id, seed) not in finished
        and (framework == "policylab" or algorithm in ALGORITHMS)
    ]
    if not settings.report_only and jobs:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(settings.workers, mp_context=context) as pool:
            futures = {pool.submit(run_one, *job, settings): job for job in jobs}
            for future in concurrent.futures.as_completed(futures):
                result = future.result()
                print(
                    f"{run_name(*futures[future])}: final {result['final_return']:.0f}, "
                    f"AUC {result['auc_return']:.0f}, {result['env_steps_per_second']:.0f} env-steps/s",
                    flush=True,
                )
                report(settings)
    report(settings)


if __name__ == "__main__":
    main(tyro.cli(Settings))
