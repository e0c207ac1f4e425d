"""PRDC's dataset search: policylab's exact `DatasetNeighbourSearch` against scipy's KD-tree, side by side.

PRDC's authors build a `scipy.spatial.KDTree` over the dataset's (β·normalised state, action) keys and query
it with the batch's (β·s, π(s)) at every actor step; this script times that query and policylab's search on
the same batches of 256 and checks that both find keys at the same distance. Queries sit at dataset states
(as PRDC's do) with actions at several distances from the data: the dataset's own actions plus Gaussian
noise of each `noise` std (clipped to the bounds), and uniformly random actions. The one-off building of
each index (KD-tree, candidate lists) is timed separately.

    python benchmarks/neighbour_speed.py --dataset gen/hopper-medium-v0

Writes benchmarks/results/neighbour_speed.json.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import tyro
from scipy.spatial import cKDTree

from policylab.core.data import load_dataset
from policylab.core.neighbours import DatasetNeighbourSearch


@dataclasses.dataclass
class Settings:
    dataset: str = "gen/hopper-medium-v0"
    """dataset id or path"""
    beta: float = 2.0
    """PRDC's β (2 for the MuJoCo tasks)"""
    num_candidates: int = 32
    """candidate states per dataset state"""
    batch_size: int = 256
    """queries per batch, as one PRDC actor step"""
    batches: int = 50
    """timed batches per query kind"""
    noise: tuple[float, ...] = (0.05, 0.1, 0.2)
    """std of the Gaussian noise added to dataset actions (action units)"""
    threads: int = 2
    """torch threads; scipy queries with workers=-1 (every core)"""
    out: Path = Path("benchmarks/results/neighbour_speed.json")


def main(settings: Settings) -> None:
    torch.set_num_threads(settings.threads)
    dataset = load_dataset(settings.dataset)
    mean, std = dataset.state_statistics(eps=1e-3)
    states = torch.as_tensor((dataset.observations - mean) / std)
    actions = torch.as_tensor(dataset.actions)
    low, high = actions.min(0).values, actions.max(0).values

    started = time.perf_counter()
    search = DatasetNeighbourSearch(states, actions, settings.beta, settings.num_candidates, cache=False)
    search.nearest(torch.arange(4), low.expand(4, -1).clone())  # builds the fallback's KD-tree too
    build_policylab = time.perf_counter() - started
    started = time.perf_counter()
    tree = cKDTree(search.keys.numpy())
    build_scipy = time.perf_counter() - started

    rng = np.random.default_rng(0)
    kinds = {f"dataset action + N(0, {sigma}²)": sigma for sigma in settings.noise} | {"uniform action": None}
    rows = []
    for kind, sigma in kinds.items():
        batches = []
        for _ in range(settings.batches):
            indices = torch.as_tensor(rng.integers(0, len(states), settings.batch_size))
            if sigma is None:
                policy = low + (high - low) * torch.as_tensor(rng.random((settings.batch_size, actions.shape[1])))
            else:
                policy = actions[indices] + sigma * torch.as_tensor(
                    rng.standard_normal((len(indices), actions.shape[1]))
                )
            batches.append((indices, policy.float().clamp(low, high)))
        search.queries = search.fallbacks = 0
        started = time.perf_counter()
        found = [search.nearest(indices, policy) for indices, policy in batches]
        policylab_seconds = time.perf_counter() - started
        queries = [
            torch.cat([search.keys[indices, : -actions.shape[1]], policy], 1).numpy() for indices, policy in batches
        ]
        started = time.perf_counter()
        reference = [tree.query(batch, k=1, workers=-1) for batch in queries]
        scipy_seconds = time.perf_counter() - started
        mismatches = sum(
            int(
                (
                    ~np.isclose(((search.keys[index].numpy() - batch) ** 2).sum(1), distance**2, rtol=1e-4, atol=1e-6)
                ).sum()
            )
            for index, batch, (distance, _) in zip(found, queries, reference)
        )
        count = settings.batches * settings.batch_size
        row = {
            "queries": kind,
            "policylab_queries_per_s": count / policylab_seconds,
            "scipy_queries_per_s": count / scipy_seconds,
            "speedup": scipy_seconds / policylab_seconds,
            "full_search_fraction": search.fallbacks / search.queries,
            "distance_mismatches": mismatches,
        }
        rows.append(row)
        print(
            f"{kind:>32}: policylab {row['policylab_queries_per_s']:>9.0f} q/s, "
            f"scipy {row['scipy_queries_per_s']:>7.0f} q/s, {row['speedup']:.1f}x; "
            f"full searches {row['full_search_fraction']:.1%}; mismatches {mismatches}",
            flush=True,
        )
    machine = f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {settings.threads} threads"
    result = {
        "machine": machine,
        "settings": dataclasses.asdict(settings),
        "dataset_transitions": len(dataset),
        "key_dimension": search.keys.shape[1],
        "build_seconds": {"policylab_candidates": build_policylab, "scipy_kdtree": build_scipy},
        "rows": rows,
    }
    settings.out.write_text(json.dumps(result, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main(tyro.cli(Settings))
