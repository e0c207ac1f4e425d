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
to success, or None at the cap), so a killed benchmark resumes where it stopped; the table goes to
`<out>/combination_lock.md` and `.json`.

    python benchmarks/combination_lock.py --horizons 5 10 --seeds 0 1 2
    python benchmarks/combination_lock.py --horizons 50 --episodes 10000 --cap 1000000
"""

from __future__ import annotations

import collections
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
from policylab.core.envs import VecEnv, make_vec_env
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
    cap: int = 200_000
    """online env steps at most per run (for every method)"""
    episodes: int = 50_000
    """offline episodes (the paper's 50,000)"""
    window: int = 10_000
    """env steps whose finished training episodes make the moving-average success probability"""
    out: Path = Path("benchmarks/results/combination_lock")
    """where runs/ and the table go"""


class SuccessTracker(VecEnv):
    """Passes a VecEnv through and records, for every finished episode, the env step count and whether it was a
    success (reward 1 at its last step); the agent trains on it as on the env itself."""

    def __init__(self, env: VecEnv) -> None:
        self.env = env
        self.env_id, self.backend, self.num_envs = env.env_id, env.backend, env.num_envs
        self.returns_tensors, self.seeds_each_env = env.returns_tensors, env.seeds_each_env
        self.single_observation_space, self.single_action_space = env.single_observation_space, env.single_action_space
        self.observation_space, self.action_space = env.observation_space, env.action_space
        self.steps = 0
        self.finished: list[tuple[int, bool]] = []

    def reset(self, **kwargs: Any) -> Any:
        return self.env.reset(**kwargs)

    def step(self, actions: Any) -> Any:
        observations, rewards, terminated, truncated, info = self.env.step(actions)
        self.steps += self.num_envs
        done = (terminated | truncated).cpu().numpy()
        successes = (rewards >= 1.0).cpu().numpy()
        self.finished += [(self.steps, bool(success)) for success in successes[done]]
        return observations, rewards, terminated, truncated, info

    def state_dict(self) -> dict[str, Any] | None:
        return self.env.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env.load_state_dict(state)

    @property
    def unwrapped(self) -> VecEnv:
        return self.env.unwrapped


class Solved(Exception):
    """Raised by the callback to end a run once the moving-average success probability passes 0.5."""


def moving_success(finished: list[tuple[int, bool]], at: int, window: int) -> float | None:
    """Success fraction of the episodes finished in (at − window, at]; None when none finished there."""
    recent = [success for step, success in finished if at - window < step <= at]
    return float(np.mean(recent)) if recent else None


def build_agent(method: str, horizon: int, seed: int, episodes: int, cap: int, envs: VecEnv) -> Any:
    dataset_id = combination_lock_dataset_id(horizon, episodes)
    if method == "npg":
        return NPG(envs, NPGConfig(seed=seed, num_envs=envs.num_envs))
    if method == "hnpg":
        return HNPG(envs, HNPGConfig(seed=seed, num_envs=envs.num_envs, dataset=dataset_id))
    dataset = load_dataset(dataset_id)
    agent = SAC(envs, SACConfig(seed=seed, learning_starts=0, buffer_size=len(dataset) + cap))
    agent.setup_learning(0)
    agent.buffer.add(
        dataset.observations, dataset.actions, dataset.rewards, dataset.next_observations, dataset.terminals
    )
    return agent


def run(method: str, horizon: int, seed: int, settings: Settings) -> dict[str, Any]:
    """Train until solved or at the cap; returns the success curve and the samples to success."""
    env_id = register_combination_lock(horizon)
    num_envs = 1 if method == "hybrid-sac" else 10
    envs = SuccessTracker(make_vec_env(env_id, num_envs, backend="torch", seed=seed))
    agent = build_agent(method, horizon, seed, settings.episodes, settings.cap, envs)
    curve: list[tuple[int, float]] = []
    checked = 0

    def check(agent: Any) -> None:
        nonlocal checked
        if envs.steps // 1000 == checked // 1000:
            return
        checked = envs.steps
        success = moving_success(envs.finished, envs.steps, settings.window)
        if success is not None:
            curve.append((envs.steps, success))
            if success > 0.5:
                raise Solved

    started = time.perf_counter()
    try:
        agent.learn(settings.cap, eval_every=10 * settings.cap, progress=False, env=envs, callback=check)
        solved_at = None
    except Solved:
        solved_at = envs.steps
    return {
        "horizon": horizon,
        "method": method,
        "seed": seed,
        "cap": settings.cap,
        "window": settings.window,
        "offline_episodes": settings.episodes,
        "samples_to_success": solved_at,
        "samples_run": envs.steps,
        "seconds": time.perf_counter() - started,
        "success_curve": curve,
    }


def table(results: list[dict[str, Any]], settings: Settings) -> str:
    """Markdown: per (H, method), samples to success of each seed (> cap where unsolved), median and solved count."""
    cells: dict[tuple[int, str], list[dict[str, Any]]] = collections.defaultdict(list)
    for result in results:
        cells[result["horizon"], result["method"]].append(result)
    lines = [
        f"Online samples until the moving-average success probability (training episodes, {settings.window:,}-step "
        f"window) exceeds 0.5; cap {settings.cap:,} steps; offline data {settings.episodes:,} episodes.",
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
        median = f"{int(np.median(solved)):,}" if len(solved) * 2 > len(samples) else f"> {runs[0]['cap']:,}"
        lines.append(f"| {horizon} | {method} | {len(solved)}/{len(runs)} | {per_seed} | {median} |")
    return "\n".join(lines) + "\n"


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
                if path.exists():
                    continue
                result = run(method, horizon, seed, settings)
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
    summary = [{key: value for key, value in result.items() if key != "success_curve"} for result in results]
    atomic_write(
        settings.out / "combination_lock.json", lambda file: file.write(json.dumps(summary, indent=1).encode())
    )
    print(markdown)


if __name__ == "__main__":
    main(tyro.cli(Settings))
