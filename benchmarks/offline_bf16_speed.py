"""Offline agents' updates per second with float32 and with bfloat16 matrix products (`bf16_matmuls`), in one run.

Each algorithm trains on the same synthetic Hopper-sized dataset (11-dim states, 3-dim actions; speed does not
depend on the values), at its own batch size, in alternating blocks of `updates` updates, float32 then bfloat16,
under `bf16_autocast` as `fit` applies it, after a warm-up block of each; the report gives the median of `repeats`
blocks and the ratio.

    python benchmarks/offline_bf16_speed.py --algorithms td3bc iql a2pr odice --repeats 3

Writes benchmarks/results/offline_bf16_speed.json.
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
from td3bc_speed import synthetic_dataset

from policylab.core.agent import registered_agents
from policylab.core.nets import bf16_autocast


@dataclasses.dataclass
class Args:
    algorithms: tuple[str, ...] = ("td3bc", "iql", "a2pr", "odice")
    """registered offline agents to time"""
    updates: int = 200
    """updates per timed block"""
    repeats: int = 3
    """timed blocks per precision and algorithm"""
    transitions: int = 100_000
    """size of the synthetic dataset"""
    threads: int = 1
    """torch threads (the offline suite runs each agent on one)"""
    output: Path = Path("benchmarks/results/offline_bf16_speed.json")


def updates_per_second(agent, buffer, updates: int, bf16: bool) -> float:
    """Updates per second over one block of `updates` updates."""
    started = time.perf_counter()
    with bf16_autocast(agent.device, bf16):
        for _ in range(updates):
            agent.update(buffer.sample(agent.batch_size))
    return updates / (time.perf_counter() - started)


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    dataset = synthetic_dataset(args.transitions)
    rows = {}
    for name in args.algorithms:
        agent_class = registered_agents()[name]
        agent = agent_class.from_dataset(dataset, agent_class.config_class(seed=0))
        buffer = agent.prepare(dataset)
        rates: dict[str, list[float]] = {"float32": [], "bfloat16": []}
        for block in range(args.repeats + 1):  # block 0 warms both paths up
            for precision in rates:
                rate = updates_per_second(agent, buffer, args.updates, bf16=precision == "bfloat16")
                if block:
                    rates[precision].append(rate)
        medians = {precision: statistics.median(values) for precision, values in rates.items()}
        rows[name] = {
            "float32_updates_per_s": [round(rate, 1) for rate in rates["float32"]],
            "bfloat16_updates_per_s": [round(rate, 1) for rate in rates["bfloat16"]],
            "float32_median": round(medians["float32"], 1),
            "bfloat16_median": round(medians["bfloat16"], 1),
            "speedup": round(medians["bfloat16"] / medians["float32"], 2),
        }
        print(f"{name}: float32 {medians['float32']:.1f}, bfloat16 {medians['bfloat16']:.1f} updates/s", flush=True)
    result = {
        "settings": {key: str(value) for key, value in dataclasses.asdict(args).items()},
        "torch": torch.__version__,
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads, CPU",
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main(tyro.cli(Args))
