"""Online samples to solve the continuous combination lock: NPG, HNPG and an off-policy hybrid (SAC with the
offline data in its replay buffer), as in HNPG's paper (Zhou et al., 2023).

A run is solved when the moving-average success probability exceeds 0.5: the fraction of training episodes (the
agent's own stochastic behaviour, the online samples themselves) that reach the last step alive and pick its
right action, among the episodes finished in the last `window` env steps, checked every 1000 env steps. Offline
data and evaluation episodes are not counted as samples. A run stops when solved or at its sample cap.

Methods:
- `npg`: NPG on online data alone (HNPG's critics without offline data), the authors' settings;
- `hnpg`: HNPG with `gen/combination-lock-h<H>-v0[-<N>ep]` (the optimal policy with 1/H random actions);
- `hybrid-sac`: the library's SAC with the same offline transitions added to its replay buffer before the first
  step (Hy-Q-style: batches drawn uniformly from offline and online data together), SAC's MuJoCo defaults but no
  random warm-up steps (the buffer is not empty), γ = 0.99.

Each (H, method, seed) writes `<out>/runs/h<H>-<method>-s<seed>.json` when it ends (its success curve and samples
to success, or None at the cap); the table goes to `<out>/combination_lock.md` and `.json`. While it runs, its
agent checkpoints every `checkpoint_every` env steps in `<work-dir>/h<H>-<method>-s<seed>/` with the success
records, so a killed run resumes from its last checkpoint, and a run that ended unsolved continues from its cap
when a higher cap is asked for (runs recorded before checkpoints existed start again).

    python benchmarks/combination_lock.py --horizons 5 10 --seeds 0 1 2
    python benchmarks/combination_lock.py --horizons 50 --methods hnpg --caps 50 4000000
"""

from __future__ import annotations

import bisect
import collections
import copy
import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tyro

from policylab.core.data import load_dataset
from policylab.core.data.generate import combination_lock_dataset_id
from policylab.core.envs import VecEnv, VecEnvWrapper, make_vec_env
from policylab.core.envs.torch_envs import register_combination_lock
from policylab.core.files import atomic_write
from policylab.online_rl import HNPG, NPG, SAC, HNPGConfig, NPGConfig, SACConfig

METHODS = ("npg", "hnpg", "hybrid-sac")


@dataclasses.dataclass
class Settings:
    horizons: tuple[int, ...] = (5, 10, 20, 50)
    """lock horizons H"""
    methods: tuple[str, ...] = METHODS
    """methods to run (npg, hnpg, hybrid-sac)"""
    seeds: tuple[int, ...] = (0, 1, 2)
    """seeds of every (H, method)"""
    caps: tuple[tuple[int, int], ...] = ((5, 100_000), (10, 300_000), (20, 1_000_000), (50, 2_000_000))
    """(H, steps) pairs: online env steps at most per run of NPG and HNPG at horizon H"""
    hybrid_sac_cap: int = 100_000
    """online env steps at most per hybrid-SAC run (one gradient step per env step makes it ~50x slower per sample
    than NPG/HNPG on a CPU)"""
    episodes: int = 50_000
    """offline episodes (the paper's 50,000)"""
    offline_ratio: float = 1.0
    """HNPG's offline transitions per time step and iteration, as a multiple of the online ones (1: the authors')"""
    window: int = 10_000
    """env steps whose finished training episodes make the moving-average success probability"""
    probe_every: int = 10_000
    """env steps between measures of each time step's right-choice probability (`right_choice_probabilities`)"""
    out: Path = Path("benchmarks/results/combination_lock")
    """where runs/ and the table go"""
    work_dir: Path | None = None
    """where the runs' checkpoints go (default `<out>/work`, not committed)"""
    checkpoint_every: int = 100_000
    """env steps between a run's checkpoints"""


class SuccessTracker(VecEnvWrapper):
    """Records, for every finished episode of the envs it wraps, the env step count and whether it was a success
    (reward 1 at its last step), and keeps the run's curves; the agent trains on it as on the envs themselves. The
    records are part of the envs' state, so they travel in the agent's checkpoints and come back on resuming."""

    def __init__(self, env: VecEnv) -> None:
        super().__init__(env)
        self.steps = 0
        self.finished: list[tuple[int, bool]] = []
        self.success_curve: list[tuple[int, float]] = []
        self.per_step_curve: list[tuple[int, list[float]]] = []
        self.last_check = 0
        self.seconds = 0.0

    def step(self, actions: Any) -> Any:
        observations, rewards, terminated, truncated, info = self.env.step(actions)
        self.steps += self.num_envs
        done = (terminated | truncated).cpu().numpy()
        successes = (rewards >= 1.0).cpu().numpy()
        self.finished += [(self.steps, bool(success)) for success in successes[done]]
        return observations, rewards, terminated, truncated, info

    RECORDS = ("steps", "finished", "success_curve", "per_step_curve", "last_check", "seconds")

    def state_dict(self) -> dict[str, Any] | None:
        env_state = self.env.state_dict()
        if env_state is None:  # records without the episodes they belong to cannot be resumed
            return None
        return {"env": env_state, **{name: copy.deepcopy(getattr(self, name)) for name in self.RECORDS}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env.load_state_dict(state["env"])
        for name in self.RECORDS:
            setattr(self, name, copy.deepcopy(state[name]))


class Solved(Exception):
    """Raised by the callback to end a run once the moving-average success probability passes 0.5."""


def moving_success(finished: list[tuple[int, bool]], at: int, window: int) -> float | None:
    """Success fraction of the episodes finished in (at − window, at]; None when none finished there. `finished`
    is in step order (bisected: a check costs the window's episodes, not the whole run's)."""
    first = bisect.bisect_right(finished, (at - window, True))
    last = bisect.bisect_right(finished, (at, True))
    recent = [success for _, success in finished[first:last]]
    return float(np.mean(recent)) if recent else None


@torch.no_grad()
def right_choice_probabilities(agent: Any, lock: Any, samples: int = 100) -> list[float] | None:
    """For every time step h, the probability that the agent's stochastic policy picks the right choice in an
    alive state at h (A and B equally, fresh observation noise): the per-step factors whose product is the success
    probability. Uses a separate probe env and restores torch's random state, so training is not disturbed; None
    for agents without per-step policies (hybrid SAC)."""
    if not hasattr(agent, "policy"):
        return None
    observations, right = lock.live_state_observations(samples)
    with torch.random.fork_rng(devices=[]):  # the per-step policies take [H, batch, dim]
        actions = agent.policy.sample(observations.flatten(1, 2).to(agent.device))
    choices = lock.choice_probabilities(actions.to(lock.device)).view(lock.horizon, 2, samples, -1)
    return choices.gather(-1, right[:, :, None, None].expand(-1, -1, samples, 1)).mean(dim=(1, 2, 3)).tolist()


def build_agent(method: str, horizon: int, seed: int, cap: int, envs: VecEnv, settings: Settings) -> Any:
    dataset_id = combination_lock_dataset_id(horizon, settings.episodes)
    if method == "npg":
        return NPG(envs, NPGConfig(seed=seed, num_envs=envs.num_envs))
    if method == "hnpg":
        config = HNPGConfig(seed=seed, num_envs=envs.num_envs, dataset=dataset_id, offline_ratio=settings.offline_ratio)
        return HNPG(envs, config)
    dataset = load_dataset(dataset_id)
    agent = SAC(envs, SACConfig(seed=seed, learning_starts=0, buffer_size=len(dataset) + cap))
    agent.setup_learning(0)
    agent.buffer.add(
        dataset.observations, dataset.actions, dataset.rewards, dataset.next_observations, dataset.terminals
    )
    return agent


def run_cap(method: str, horizon: int, settings: Settings) -> int:
    """The sample cap of a (method, H) run."""
    if method == "hybrid-sac":
        return settings.hybrid_sac_cap
    caps = dict(settings.caps)
    if horizon not in caps:
        raise ValueError(
            f"no sample cap for H={horizon}: give one with --caps {horizon} <steps> (pairs of H and steps)"
        )
    return caps[horizon]


def needs_run(path: Path, cap: int, settings: Settings) -> bool:
    """True when the run has no record yet, or ended unsolved under a lower cap than `cap`."""
    if not path.exists():
        return True
    record = json.loads(path.read_text())
    if record["method"] == "hnpg" and record.get("offline_ratio", 1.0) != settings.offline_ratio:
        raise ValueError(
            f"{path} was run with offline_ratio {record.get('offline_ratio', 1.0)}, not {settings.offline_ratio}: "
            "give runs of another offline ratio their own --out"
        )
    return record["samples_to_success"] is None and record["cap"] < cap


def run(method: str, horizon: int, seed: int, cap: int, settings: Settings) -> dict[str, Any]:
    """Train until solved or at the cap; returns the success curve and the samples to success."""
    env_id = register_combination_lock(horizon)
    num_envs = 1 if method == "hybrid-sac" else 10
    envs = SuccessTracker(make_vec_env(env_id, num_envs, backend="torch", seed=seed))
    agent = build_agent(method, horizon, seed, cap, envs, settings)
    work_dir = settings.work_dir if settings.work_dir is not None else settings.out / "work"
    last_time = time.perf_counter()

    def check(agent: Any) -> None:
        nonlocal last_time
        if envs.steps // 1000 == envs.last_check // 1000:
            return
        if envs.steps // settings.probe_every != envs.last_check // settings.probe_every:
            probe = make_vec_env(env_id, 1, backend="torch", seed=10_000 + seed + envs.steps).unwrapped
            probabilities = right_choice_probabilities(agent, probe)
            if probabilities is not None:
                envs.per_step_curve.append((envs.steps, probabilities))
        envs.last_check = envs.steps
        now = time.perf_counter()
        envs.seconds += now - last_time
        last_time = now
        success = moving_success(envs.finished, envs.steps, settings.window)
        if success is not None:
            envs.success_curve.append((envs.steps, success))
            if success > 0.5:
                raise Solved

    try:
        agent.learn(
            cap,
            eval_every=10 * cap,
            progress=False,
            env=envs,
            callback=check,
            run_dir=work_dir / f"h{horizon}-{method}-s{seed}",
            resume=True,
            checkpoint_every=settings.checkpoint_every,
        )
        solved_at = None
    except Solved:
        solved_at = envs.steps
    return {
        "horizon": horizon,
        "method": method,
        "seed": seed,
        "cap": cap,
        "window": settings.window,
        "offline_episodes": settings.episodes,
        "offline_ratio": settings.offline_ratio if method == "hnpg" else None,
        "samples_to_success": solved_at,
        "samples_run": envs.steps,
        "seconds": envs.seconds,
        "success_curve": envs.success_curve,
        "right_choice_probability_curve": envs.per_step_curve,
    }


def table(results: list[dict[str, Any]], settings: Settings) -> str:
    """Markdown: per (H, method), samples to success of each seed (> cap where unsolved), median and solved count."""
    cells: dict[tuple[int, str], list[dict[str, Any]]] = collections.defaultdict(list)
    for result in results:
        cells[result["horizon"], result["method"]].append(result)
    ratio = settings.offline_ratio
    ratio_note = f", HNPG drawing {ratio:g}x as many offline as online samples per step" if ratio != 1 else ""
    lines = [
        f"Online samples until the moving-average success probability (training episodes, {settings.window:,}-step "
        f'window) exceeds 0.5, counted until a sample cap given per run ("> cap" where a run did not get there); '
        f"offline data {settings.episodes:,} episodes{ratio_note}.",
        "",
        "| H | method | seeds solved | samples to success per seed | median |",
        "| --- | --- | --- | --- | --- |",
    ]
    for (horizon, method), runs in sorted(cells.items()):
        runs = sorted(runs, key=lambda run: run["seed"])
        samples = [run["samples_to_success"] for run in runs]
        solved = [value for value in samples if value is not None]
        per_seed = ", ".join(
            f"{value:,}" if value is not None else f"> {run['cap']:,}" for value, run in zip(samples, runs)
        )
        unsolved_caps = [run["cap"] for run in runs if run["samples_to_success"] is None]
        median = f"{int(np.median(solved)):,}" if len(solved) * 2 > len(samples) else f"> {min(unsolved_caps):,}"
        lines.append(f"| {horizon} | {method} | {len(solved)}/{len(runs)} | {per_seed} | {median} |")
    return "\n".join(lines) + "\n"


def plot_right_choice_probabilities(results: list[dict[str, Any]], path: Path) -> None:
    """One heat map per NPG/HNPG run of seed 0: each time step's right-choice probability over env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [run for run in results if run["seed"] == 0 and run.get("right_choice_probability_curve")]
    if not runs:
        return
    runs.sort(key=lambda run: (run["horizon"], run["method"]))
    figure, axes = plt.subplots(len(runs), 1, figsize=(8, 1.2 + 1.6 * len(runs)), squeeze=False, layout="constrained")
    for axis, run in zip(axes[:, 0], runs):
        steps = [step for step, _ in run["right_choice_probability_curve"]]
        grid = np.array([probabilities for _, probabilities in run["right_choice_probability_curve"]]).T
        image = axis.imshow(
            grid,
            aspect="auto",
            origin="lower",
            vmin=0,
            vmax=1,
            cmap="viridis",
            extent=(steps[0] / 1e3, steps[-1] / 1e3, -0.5, run["horizon"] - 0.5),
        )
        outcome = f"solved at {run['samples_to_success']:,}" if run["samples_to_success"] else "unsolved"
        axis.set_title(f"H={run['horizon']} {run['method']} seed 0 ({outcome})")
        axis.set_ylabel("time step h")
    axes[-1, 0].set_xlabel("online env steps (thousands)")
    figure.colorbar(image, ax=axes[:, 0], label="P(right choice | alive)")
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(settings: Settings) -> None:
    torch.set_num_threads(1)
    runs_dir = settings.out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    for horizon in settings.horizons:
        for seed in settings.seeds:
            for method in settings.methods:
                if method not in METHODS:
                    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
                path = runs_dir / f"h{horizon}-{method}-s{seed}.json"
                cap = run_cap(method, horizon, settings)
                if not needs_run(path, cap, settings):
                    continue
                result = run(method, horizon, seed, cap, settings)
                result["machine"] = f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread"
                atomic_write(path, lambda file, result=result: file.write(json.dumps(result, indent=1).encode()))
                print(
                    f"H={horizon} {method} seed {seed}: {result['samples_to_success']} samples to success "
                    f"({result['seconds']:.0f} s)",
                    flush=True,
                )
    results = [json.loads(path.read_text()) for path in sorted(runs_dir.glob("h*-*-s*.json"))]
    markdown = table(results, settings)
    atomic_write(settings.out / "combination_lock.md", lambda file: file.write(markdown.encode()))
    plot_right_choice_probabilities(results, settings.out / "right_choice_probability.png")
    summary = [{key: value for key, value in result.items() if key != "success_curve"} for result in results]
    atomic_write(
        settings.out / "combination_lock.json", lambda file: file.write(json.dumps(summary, indent=1).encode())
    )
    print(markdown)


if __name__ == "__main__":
    main(tyro.cli(Settings))
