"""Evaluation back-ends for seed-chain populations: `local` (one process, the batch as one batched network on one
batched env) and `ray` (shards of the batch on Ray actors, on this machine or a cluster). Both take genomes and
return `Evaluations`; for the same genomes, episodes and seed they return the same numbers."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from policylab.evolution.genomes import Genome, GenomeDecoder
from policylab.evolution.tasks import Evaluations

BACKENDS = ("local", "ray")


class Evaluator(Protocol):
    """Evaluates genomes; member i's episode r runs on env seed `seed + i * episodes + r`."""

    def evaluate(self, genomes: Sequence[Genome], episodes: int, seed: int) -> Evaluations: ...

    def close(self) -> None: ...


def _with_threads(task: Any, threads: int | None) -> Any:
    """The task running its physics on `threads` threads, where it has such a setting."""
    has_threads = dataclasses.is_dataclass(task) and "threads" in {field.name for field in dataclasses.fields(task)}
    return dataclasses.replace(task, threads=threads) if has_threads and threads else task


class LocalEvaluator:
    """Decodes the batch in this process (parents cached) and evaluates it as one batch; `workers` is the number
    of physics threads (default: every usable core)."""

    def __init__(self, task: Any, mutation_power: float, workers: int | None = None, cache_size: int = 64) -> None:
        self.task = _with_threads(task, workers)
        self.mutation_power = mutation_power
        self.decoder = GenomeDecoder(self.task.initial_params, mutation_power, cache_size)

    def evaluate(self, genomes: Sequence[Genome], episodes: int, seed: int) -> Evaluations:
        """Evaluations of `genomes`, in order."""
        return self.task.evaluate(self.decoder.decode_batch(genomes), episodes, seed)

    def evaluate_params(self, params: torch.Tensor, episodes: int, seed: int, **options: Any) -> Evaluations:
        """Evaluations of parameter vectors (rows of `params`), for methods whose solutions are not seed chains;
        `options` go to the task's `evaluate` (e.g. `record_transitions=True`)."""
        return self.task.evaluate(params, episodes, seed, **options)

    def close(self) -> None:
        """Nothing to release."""


class ShardWorker:
    """A Ray actor's state: its own decoder and parent cache; it receives seeds and returns fitnesses."""

    def __init__(self, task: Any, mutation_power: float, threads: int, cache_size: int) -> None:
        torch.set_num_threads(threads)
        self.evaluator = LocalEvaluator(task, mutation_power, threads, cache_size)

    def evaluate(self, genomes: Sequence[Genome], episodes: int, seed: int) -> Evaluations:
        """Evaluations of one shard."""
        return self.evaluator.evaluate(genomes, episodes, seed)

    def evaluate_params(self, params: torch.Tensor, episodes: int, seed: int, **options: Any) -> Evaluations:
        """Evaluations of one shard of parameter vectors."""
        return self.evaluator.evaluate_params(params, episodes, seed, **options)

    def pid(self) -> int:
        """The actor's process id."""
        return os.getpid()


class RayEvaluator:
    """Splits each batch into one contiguous shard per actor; only genomes (seeds) go out and fitnesses come back.

    Connects to the cluster at `address` (or starts a local Ray with `workers * cpus_per_worker` CPUs when none is
    running). An actor that dies costs its shard: the shard is re-run on a fresh actor, which Ray places on any
    node with room, and the batch's result is unchanged; more than `max_failures` deaths in one batch is an error.
    """

    def __init__(
        self,
        task: Any,
        mutation_power: float,
        workers: int = 2,
        address: str | None = None,
        cpus_per_worker: int = 1,
        cache_size: int = 64,
        max_failures: int = 8,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise ImportError('the ray backend needs Ray: pip install "policylab[ray]"') from None
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.ray = ray
        self.started_ray = not ray.is_initialized()
        if self.started_ray:
            cpus = None if address else workers * cpus_per_worker
            ray.init(address=address, num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        self.actor_class = ray.remote(num_cpus=cpus_per_worker, max_restarts=0)(ShardWorker)
        self.mutation_power = mutation_power
        self.actor_arguments = (task, mutation_power, cpus_per_worker, cache_size)
        self.max_failures = max_failures
        self.failures = 0
        """actors lost so far"""
        self.workers = [self._start_worker() for _ in range(workers)]

    def _start_worker(self) -> Any:
        return self.actor_class.remote(*self.actor_arguments)

    def evaluate(self, genomes: Sequence[Genome], episodes: int, seed: int) -> Evaluations:
        """Evaluations of `genomes`, in order, whatever actors die on the way."""
        return self._evaluate_shards("evaluate", list(genomes), episodes, seed, {})

    def evaluate_params(self, params: torch.Tensor, episodes: int, seed: int, **options: Any) -> Evaluations:
        """Evaluations of the rows of `params`, in order, whatever actors die on the way."""
        return self._evaluate_shards("evaluate_params", params, episodes, seed, options)

    def _evaluate_shards(
        self, method: str, batch: Sequence[Any] | torch.Tensor, episodes: int, seed: int, options: dict[str, Any]
    ) -> Evaluations:
        bounds = np.linspace(0, len(batch), len(self.workers) + 1).astype(int).tolist()
        shards = [(start, stop) for start, stop in zip(bounds[:-1], bounds[1:]) if stop > start]

        def submit(index: int) -> Any:
            start, stop = shards[index]
            remote = getattr(self.workers[index], method).remote
            return remote(batch[start:stop], episodes, seed + start * episodes, **options)

        pending = {submit(index): index for index in range(len(shards))}
        results: dict[int, Evaluations] = {}
        failures = 0
        while pending:
            [done], _ = self.ray.wait(list(pending), num_returns=1)
            index = pending.pop(done)
            try:
                results[index] = self.ray.get(done)
            except self.ray.exceptions.RayActorError:
                failures += 1
                self.failures += 1
                if failures > self.max_failures:
                    raise RuntimeError(f"{failures} Ray actors died while evaluating one batch; giving up") from None
                self.workers[index] = self._start_worker()
                pending[submit(index)] = index
        return Evaluations.concatenate([results[index] for index in range(len(shards))])

    def close(self) -> None:
        """Stop the actors (and Ray, when this evaluator started it)."""
        for worker in self.workers:
            self.ray.kill(worker)
        self.workers = []
        if self.started_ray:
            self.ray.shutdown()


def make_evaluator(
    task: Any,
    mutation_power: float,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    cache_size: int = 64,
) -> LocalEvaluator | RayEvaluator:
    """The evaluator of `backend` ("local" or "ray"); `workers` is threads for local, actors for ray (default 2)."""
    if backend == "local":
        return LocalEvaluator(task, mutation_power, workers, cache_size)
    if backend == "ray":
        return RayEvaluator(task, mutation_power, workers or 2, address, cache_size=cache_size)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
