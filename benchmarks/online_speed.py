"""Training env-steps/s of policylab's SAC and PPO next to Stable-Baselines3's, in one run, nothing else running.

The agents and models of `online_mujoco.py`, built by its functions: one env, one SAC update per env step (SAC
also as `sac-bf16`, its update's matrix products in bfloat16), PPO's 2048-step rollouts with 10 epochs of 32
minibatches. SAC is timed over `sac_steps` learning steps after its 5000 random ones, PPO over `ppo_rollouts`
rollouts after one warm-up rollout; no evaluation runs. The frameworks alternate, `repeats` times, and the median
is reported.

    python benchmarks/online_speed.py --repeats 3

Writes benchmarks/results/online_speed.json.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import tyro
from online_mujoco import FAMILIES, make_policylab_agent, make_sb3_model  # the matched settings, built in one place


@dataclasses.dataclass
class Settings:
    envs: tuple[str, ...] = ("Hopper-v5", "HalfCheetah-v5")
    """MuJoCo tasks"""
    sac_steps: int = 2000
    """timed SAC learning steps (after 5000 random steps)"""
    ppo_rollouts: int = 3
    """timed PPO rollouts of 2048 steps, each followed by its update"""
    repeats: int = 3
    """alternating repetitions per framework"""
    threads: int = 2
    """torch threads"""
    out: Path = Path("benchmarks/results/online_speed.json")


def time_policylab(algorithm: str, env_id: str, settings: Settings) -> float:
    """`algorithm` is any of `online_mujoco.py`'s (sac-bf16: SAC with its matrix products in bfloat16)."""
    agent = make_policylab_agent(algorithm, env_id, seed=0)
    sac = FAMILIES[algorithm] == "sac"
    warmup = 5001 if sac else 2048
    timed = settings.sac_steps if sac else 2048 * settings.ppo_rollouts
    agent.learn(warmup, eval_every=10**9, progress=False)
    agent.env_id = None  # keeps its envs, but no evaluation runs inside the timed part
    started = time.perf_counter()
    agent.learn(warmup + timed, eval_every=10**9, progress=False)
    return (agent.num_timesteps - warmup) / (time.perf_counter() - started)


def time_sb3(algorithm: str, env_id: str, settings: Settings) -> float:
    model, _ = make_sb3_model(algorithm, env_id, seed=0)
    warmup = 5001 if algorithm == "sac" else 2048
    timed = settings.sac_steps if algorithm == "sac" else 2048 * settings.ppo_rollouts
    model.learn(warmup)
    started = time.perf_counter()
    model.learn(timed, reset_num_timesteps=False)
    return (model.num_timesteps - warmup) / (time.perf_counter() - started)


def main(settings: Settings) -> None:
    torch.set_num_threads(settings.threads)
    rows = []
    for algorithm in ("sac", "ppo"):
        # policylab's variants timed beside SB3: SAC also with `bf16_matmuls` (named by online_mujoco.py's algorithm)
        variants = (
            {"policylab": algorithm, "policylab_bf16": "sac-bf16"} if algorithm == "sac" else {"policylab": algorithm}
        )
        for env_id in settings.envs:
            runs: dict[str, list[float]] = {name: [] for name in (*variants, "sb3")}
            for _ in range(settings.repeats):
                for name, variant in variants.items():
                    runs[name].append(time_policylab(variant, env_id, settings))
                runs["sb3"].append(time_sb3(algorithm, env_id, settings))
            speeds = {name: statistics.median(values) for name, values in runs.items()}
            ratios = {f"ratio{name.removeprefix('policylab')}": speeds[name] / speeds["sb3"] for name in variants}
            rows.append({"algorithm": algorithm, "env_id": env_id, **speeds, **ratios, "runs": runs})
            print(
                f"{algorithm} {env_id}: "
                + ", ".join(f"{name} {speed:.0f}" for name, speed in speeds.items())
                + " env-steps/s; "
                + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in ratios.items()),
                flush=True,
            )
    machine = f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {settings.threads} threads"
    settings.out.write_text(
        json.dumps({"machine": machine, "settings": dataclasses.asdict(settings), "rows": rows}, indent=1, default=str)
        + "\n"
    )


if __name__ == "__main__":
    main(tyro.cli(Settings))
