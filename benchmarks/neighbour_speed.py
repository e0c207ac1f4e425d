"""PRDC's dataset search against scipy's KD-tree, and a PRDC update against a TD3+BC update, side by side.

PRDC's authors build a `scipy.spatial.KDTree` over the dataset's (β·normalised state, action) keys and query
it with the batch's (β·s, π(s)) at every actor step; this script times that query and policylab's search on
the same batches of 256 and checks that both find keys at the same distance. Queries sit at dataset states
(as PRDC's do) with actions at several distances from the data: the dataset's own actions plus Gaussian
noise of each `noise` std (clipped to the bounds), and uniformly random actions. The one-off building of
each index (KD-tree, candidate lists) is timed separately.

First PRDC trains for `actor_updates` updates (early on, its actor's actions lie far from the data and need
more full searches than over most of a run). Then policylab's TD3+BC and PRDC train on the dataset in
alternating blocks of `updates` updates (after a warm-up block), and their median time per update is
compared: PRDC's actor step (every second update) adds the search, so the ratio is what the exact
constraint costs. The PRDC actor's actions are then the first kind of query timed.

    python benchmarks/neighbour_speed.py --dataset gen/hopper-medium-v0

Writes benchmarks/results/neighbour_speed.json.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import tyro
from scipy.spatial import cKDTree

from policylab.core.data import load_dataset
from policylab.core.neighbours import DatasetNeighbourSearch
from policylab.offline_rl import PRDC, TD3BC, PRDCConfig, TD3BCConfig


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
    updates: int = 1000
    """updates per timed block of TD3+BC and of PRDC"""
    actor_updates: int = 20_000
    """PRDC updates before its actor's queries are timed (the search is cheaper the closer π is to the data)"""
    repeats: int = 3
    """alternating blocks per agent"""
    threads: int = 2
    """torch threads; scipy queries with workers=-1 (every core)"""
    out: Path = Path("benchmarks/results/neighbour_speed.json")


def main(settings: Settings) -> None:
    torch.set_num_threads(settings.threads)
    dataset = load_dataset(settings.dataset)
    agents = {
        "td3bc": TD3BC.from_dataset(dataset, TD3BCConfig(seed=0)),
        "prdc": PRDC.from_dataset(
            dataset, PRDCConfig(seed=0, beta=settings.beta, num_candidates=settings.num_candidates)
        ),
    }
    buffers = {"td3bc": agents["td3bc"].prepare(dataset)}
    started = time.perf_counter()
    buffers["prdc"] = agents["prdc"].prepare(dataset)  # builds the search (its candidate lists, unless cached)
    search: DatasetNeighbourSearch = agents["prdc"].search
    search.nearest(torch.arange(4), search.actions[:4] + 10.0)  # far-off actions: builds the fallback's KD-tree
    build_policylab = time.perf_counter() - started
    started = time.perf_counter()
    tree = cKDTree(search.keys.numpy())
    build_scipy = time.perf_counter() - started

    prdc = agents["prdc"]
    while prdc.num_updates < settings.actor_updates:  # a learning actor, as most of a run's actor steps see it
        prdc.update(buffers["prdc"].sample(256))
    update_times = time_updates(agents, buffers, settings)

    rng = np.random.default_rng(0)
    actions = search.actions
    low, high = actions.min(0).values, actions.max(0).values
    normalised = prdc.normalizer(torch.as_tensor(dataset.observations))

    def policy_actions(indices: torch.Tensor, sigma: float | str | None) -> torch.Tensor:
        if sigma == "actor":
            with torch.no_grad():
                return prdc.actor(normalised[indices])
        if sigma is None:
            return low + (high - low) * torch.as_tensor(
                rng.random((len(indices), actions.shape[1])), dtype=torch.float32
            )
        noise = torch.as_tensor(rng.standard_normal((len(indices), actions.shape[1])), dtype=torch.float32)
        return (actions[indices] + sigma * noise).clamp(low, high)

    kinds = {f"PRDC actor after {prdc.num_updates} updates": "actor"}
    kinds |= {f"dataset action + N(0, {sigma}²)": sigma for sigma in settings.noise} | {"uniform action": None}
    rows = [search_row(kind, sigma, search, tree, policy_actions, settings, rng) for kind, sigma in kinds.items()]
    machine = f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {settings.threads} threads"
    result = {
        "machine": machine,
        "settings": dataclasses.asdict(settings),
        "dataset_transitions": len(dataset),
        "key_dimension": search.keys.shape[1],
        "build_seconds": {"policylab_search": build_policylab, "scipy_kdtree": build_scipy},
        "rows": rows,
        "ms_per_update": update_times,
        "prdc_over_td3bc": update_times["prdc"] / update_times["td3bc"],
    }
    settings.out.write_text(json.dumps(result, indent=1, default=str) + "\n")


def search_row(
    kind: str,
    sigma: float | str | None,
    search: DatasetNeighbourSearch,
    tree: cKDTree,
    policy_actions: Callable[[torch.Tensor, float | str | None], torch.Tensor],
    settings: Settings,
    rng: np.random.Generator,
) -> dict:
    """Time both searches on `batches` batches of this kind of query and compare what they found."""
    batches = []
    for _ in range(settings.batches):
        indices = torch.as_tensor(rng.integers(0, len(search.keys), settings.batch_size))
        batches.append((indices, policy_actions(indices, sigma)))
    search.queries = search.fallbacks = 0
    full_search_seconds = 0.0
    full_search = search._full_search

    def timed_full_search(*args: torch.Tensor) -> torch.Tensor:
        nonlocal full_search_seconds
        started = time.perf_counter()
        found = full_search(*args)
        full_search_seconds += time.perf_counter() - started
        return found

    search._full_search = timed_full_search  # what the queries the candidates cannot settle cost
    started = time.perf_counter()
    found = [search.nearest(indices, actions) for indices, actions in batches]
    policylab_seconds = time.perf_counter() - started
    del search._full_search
    action_dim = search.actions.shape[1]
    queries = [torch.cat([search.keys[indices, :-action_dim], actions], 1).numpy() for indices, actions in batches]
    started = time.perf_counter()
    reference = [tree.query(batch, k=1, workers=-1) for batch in queries]
    scipy_seconds = time.perf_counter() - started
    mismatches = sum(
        int((~np.isclose(((search.keys[index].numpy() - batch) ** 2).sum(1), distance**2, rtol=1e-4, atol=1e-6)).sum())
        for index, batch, (distance, _) in zip(found, queries, reference)
    )
    count = settings.batches * settings.batch_size
    row = {
        "queries": kind,
        "policylab_queries_per_s": count / policylab_seconds,
        "scipy_queries_per_s": count / scipy_seconds,
        "speedup": scipy_seconds / policylab_seconds,
        "full_search_fraction": search.fallbacks / search.queries,
        "full_search_time_share": full_search_seconds / policylab_seconds,
        "distance_mismatches": mismatches,
    }
    print(
        f"{kind:>34}: policylab {row['policylab_queries_per_s']:>9.0f} q/s, "
        f"scipy {row['scipy_queries_per_s']:>7.0f} q/s, {row['speedup']:.1f}x; "
        f"full searches {row['full_search_fraction']:.1%} of the queries, {row['full_search_time_share']:.0%} of "
        f"the time; mismatches {mismatches}",
        flush=True,
    )
    return row


def time_updates(agents: dict, buffers: dict, settings: Settings) -> dict[str, float]:
    """Median milliseconds per update of TD3+BC and PRDC, in alternating blocks after a warm-up block."""
    times: dict[str, list[float]] = {name: [] for name in agents}
    for block in range(settings.repeats + 1):
        for name, agent in agents.items():
            started = time.perf_counter()
            for _ in range(settings.updates):
                agent.update(buffers[name].sample(256))
            if block:
                times[name].append((time.perf_counter() - started) / settings.updates * 1e3)
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["prdc"] / medians["td3bc"]
    print(f"ms/update: TD3+BC {medians['td3bc']:.2f}, PRDC {medians['prdc']:.2f}, ratio {ratio:.2f}", flush=True)
    return medians


if __name__ == "__main__":
    main(tyro.cli(Settings))
