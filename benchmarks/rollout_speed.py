"""Env-steps per second of every CPU rollout engine side by side, and population-forward throughput.

For Hopper-v5 and HalfCheetah-v5 at several batch sizes: Gymnasium's SyncVectorEnv and AsyncVectorEnv, EnvPool
(when installed), policylab's batched MuJoCo engine (both physics paths) and the open-loop physics ceiling (one
long `mujoco.rollout` call for the whole batch, no observations, rewards or resets). Every engine steps the
same uniform random actions. Then P policies evaluated on one observation each: one stacked network
(`PopulationMLP`, batched matmul) against a loop over P `nn.Sequential` networks.

Each figure is the median of `repeats` timings. Results go to benchmarks/results/rollout_speed.json as each
measurement finishes (a rerun with --resume skips those already there) and to rollout_speed.md at the end.

    python benchmarks/rollout_speed.py
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import platform
import statistics
import time

import gymnasium as gym
import mujoco
import numpy as np
import torch
import tyro
from mujoco import rollout

from policylab.core.envs import make_vec_env, supported_backends
from policylab.core.envs.mujoco_engine import LOCOMOTION_TASKS, usable_cores
from policylab.core.files import atomic_write
from policylab.core.nets import PopulationMLP

RESULTS = pathlib.Path(__file__).parent / "results"
ENGINES = ["gymnasium", "gymnasium-async", "envpool", "mujoco", "mujoco-mjdata", "ceiling"]


@dataclasses.dataclass
class Args:
    tasks: tuple[str, ...] = ("Hopper-v5", "HalfCheetah-v5")
    batch_sizes: tuple[int, ...] = (8, 32, 128, 1024)
    env_steps: int = 40_000
    """env-steps per timing (at least 20 batched steps)"""
    repeats: int = 3
    max_async_envs: int = 32
    """AsyncVectorEnv runs one process per env: larger batches are skipped"""
    population: int = 1024
    hidden_sizes: tuple[int, ...] = (64, 64)
    resume: bool = False
    output: pathlib.Path = RESULTS / "rollout_speed.json"


def time_engine(engine: str, env_id: str, num_envs: int, steps: int, seed: int = 0) -> float:
    """Seconds for `steps` batched steps of uniform random actions."""
    kwargs = {"physics": "mjdata"} if engine == "mujoco-mjdata" else {}
    backend = "mujoco" if engine == "mujoco-mjdata" else engine
    with make_vec_env(env_id, num_envs, backend=backend, seed=seed, **kwargs) as envs:
        low, high = envs.single_action_space.low, envs.single_action_space.high
        actions = np.random.default_rng(seed).uniform(low, high, (steps, num_envs, len(low))).astype(np.float32)
        envs.reset()
        for action in actions[:3]:  # warm-up
            envs.step(action)
        start = time.perf_counter()
        for action in actions:
            envs.step(action)
        return time.perf_counter() - start


def time_ceiling(env_id: str, num_envs: int, steps: int, seed: int = 0) -> float:
    """Seconds for the physics alone: one `mujoco.rollout` call of `steps` env steps for the whole batch."""
    task = LOCOMOTION_TASKS[env_id]
    model = task.load_model()
    data = mujoco.MjData(model)
    state = np.zeros(mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_FULLPHYSICS))
    mujoco.mj_getState(model, data, state, mujoco.mjtState.mjSTATE_FULLPHYSICS)
    rng = np.random.default_rng(seed)
    controls = rng.uniform(-1, 1, (num_envs, steps * task.frame_skip, model.nu))
    initial = np.tile(state, (num_envs, 1))
    threads = usable_cores()
    with rollout.Rollout(nthread=threads) as pool:
        datas = [mujoco.MjData(model) for _ in range(threads)]
        pool.rollout(model, datas, initial, controls[:, :10])  # warm-up
        start = time.perf_counter()
        pool.rollout(model, datas, initial, controls)
        return time.perf_counter() - start


def population_forward(population: int, hidden_sizes: tuple[int, ...], repeats: int) -> dict[str, float]:
    """Policy evaluations per second for P policies on one observation each: stacked network vs a loop."""
    spec = PopulationMLP(11, 3, hidden_sizes)
    params = spec.initial_params(population, torch.Generator().manual_seed(0))
    observations = torch.randn(population, 1, 11)
    networks = [spec.to_module(params[member]).requires_grad_(False) for member in range(population)]
    layers = spec.stack(params)
    half_layers = [(weight.bfloat16(), bias.bfloat16()) for weight, bias in layers]

    def stacked() -> None:
        spec.forward(layers, observations)

    def stacked_bf16() -> None:
        spec.forward(half_layers, observations.bfloat16())

    def loop() -> None:
        for network, observation in zip(networks, observations):
            network(observation)

    rates = {}
    with torch.no_grad():
        for name, function, calls in (
            ("stacked_fp32", stacked, 200),
            ("stacked_bf16", stacked_bf16, 200),
            ("loop", loop, 10),
        ):
            function()
            timings = []
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(calls):
                    function()
                timings.append((time.perf_counter() - start) / calls)
            rates[name] = population / statistics.median(timings)
    return rates


def write_text(path: pathlib.Path, text: str) -> None:
    atomic_write(path, lambda file: file.write(text.encode()))


def machine_description() -> dict[str, str]:
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        cpu = names[0] if names else cpu
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = {"mujoco": mujoco.__version__, "gymnasium": gym.__version__, "torch": torch.__version__}
    try:
        import envpool

        versions["envpool"] = envpool.__version__
    except ImportError:
        versions["envpool"] = "not installed"
    return {
        "cpu": cpu,
        "usable_cores": str(usable_cores()),
        "memory_gib": f"{memory:.0f}",
        "python": platform.python_version(),
        **versions,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
    }


def write_markdown(results: dict, path: pathlib.Path) -> None:
    machine = results["machine"]
    lines = [
        "# Rollout speed",
        "",
        f"Measured by `benchmarks/rollout_speed.py` on {machine['cpu']}, {machine['usable_cores']} usable cores, "
        f"{machine['memory_gib']} GiB, no GPU in use; Python {machine['python']}, MuJoCo {machine['mujoco']}, "
        f"Gymnasium {machine['gymnasium']}, EnvPool {machine['envpool']}, torch {machine['torch']}.",
        f"Env-steps per second under uniform random actions (median of {results['repeats']} timings of about "
        f"{results['env_steps']:,} env-steps each). `mujoco` is policylab's engine with the default rollout physics, "
        "`mujoco-mjdata` the same engine with the per-thread MjData physics that carries the solver warm-start "
        "(bit-equal to Gymnasium); the ceiling is one long open-loop `mujoco.rollout` call for the whole batch "
        "(physics only). — marks runs not made.",
        "",
    ]
    for task in results["tasks"]:
        lines += [
            f"## {task}",
            "",
            "| B | " + " | ".join(ENGINES) + " | mujoco / ceiling | mujoco / sync | mujoco / envpool |",
        ]
        lines.append("|---" * (len(ENGINES) + 4) + "|")
        for batch in results["batch_sizes"]:
            rates = {engine: results["steps_per_second"].get(f"{task}/{engine}/{batch}") for engine in ENGINES}
            cells = [f"{rates[engine]:,.0f}" if rates[engine] else "—" for engine in ENGINES]
            ratios = [
                f"{rates['mujoco'] / rates[other]:.2f}" if rates["mujoco"] and rates[other] else "—"
                for other in ("ceiling", "gymnasium", "envpool")
            ]
            lines.append(f"| {batch} | " + " | ".join(cells + ratios) + " |")
        lines.append("")
    forward = results["population_forward"]
    lines += [
        f"## Population forward, P = {forward['population']} policies, one observation each",
        "",
        f"MLP 11 → {' → '.join(map(str, forward['hidden_sizes']))} → 3, tanh; policy evaluations per second.",
        "",
        "| stacked fp32 (baddbmm) | stacked bf16 | loop over P networks | fp32 stacked / loop | bf16 stacked / loop |",
        "|---|---|---|---|---|",
        f"| {forward['stacked_fp32']:,.0f} | {forward['stacked_bf16']:,.0f} | {forward['loop']:,.0f} | "
        f"{forward['stacked_fp32'] / forward['loop']:.1f} | {forward['stacked_bf16'] / forward['loop']:.1f} |",
        "",
    ]
    write_text(path, "\n".join(lines))


def main(args: Args) -> None:
    results = json.loads(args.output.read_text()) if args.resume and args.output.exists() else {}
    results.setdefault("steps_per_second", {})
    results |= {
        "machine": machine_description(),
        "tasks": list(args.tasks),
        "batch_sizes": list(args.batch_sizes),
        "env_steps": args.env_steps,
        "repeats": args.repeats,
    }
    for task in args.tasks:
        for batch in args.batch_sizes:
            steps = max(20, args.env_steps // batch)
            for engine in ENGINES:
                key = f"{task}/{engine}/{batch}"
                skip = (engine == "gymnasium-async" and batch > args.max_async_envs) or (
                    engine == "envpool" and "envpool" not in supported_backends(task)
                )
                if skip or key in results["steps_per_second"]:
                    continue
                timer = time_ceiling if engine == "ceiling" else lambda *a, e=engine: time_engine(e, *a)
                seconds = statistics.median(timer(task, batch, steps) for _ in range(args.repeats))
                results["steps_per_second"][key] = batch * steps / seconds
                print(f"{key}: {batch * steps / seconds:,.0f} env-steps/s", flush=True)
                write_text(args.output, json.dumps(results, indent=1))
    if "population_forward" not in results:
        rates = population_forward(args.population, args.hidden_sizes, args.repeats)
        results["population_forward"] = {
            "population": args.population,
            "hidden_sizes": list(args.hidden_sizes),
            **rates,
        }
        print("population forward:", {name: f"{rate:,.0f}/s" for name, rate in rates.items()}, flush=True)
        write_text(args.output, json.dumps(results, indent=1))
    write_markdown(results, args.output.with_suffix(".md"))


if __name__ == "__main__":
    main(tyro.cli(Args))
