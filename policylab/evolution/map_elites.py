"""MAP-Elites (Mouret & Clune, 2015) with pyribs' split: an archive, emitters and this scheduler loop.

Each iteration: every emitter proposes offspring from the archive's elites, the batch is evaluated (fitness,
descriptor and, for learning emitters, every transition), each cell keeps the fitter of its elite and the
newcomers, and every emitter is told the evaluated batch. The first iteration evaluates random solutions.

    me = MAPElites(QDPolicyTask("walker2d_uni"), MAPElitesConfig())                  # iso-line GA only
    me = MAPElites(task, MAPElitesConfig(ga_batch_size=128), [PolicyGradientEmitter(task, PGAConfig())])  # PGA-ME
    me.run(iterations=100, run_dir="runs/me-walker2d_uni")                           # or backend="ray"

    offspring = me.ask(); me.tell(my_evaluations(offspring.solutions))              # or evaluate with your own code
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from policylab.core.agent import restore_generator
from policylab.core.files import atomic_write
from policylab.core.logging import MetricLogger
from policylab.core.runs import RunDirectory, run_iterations
from policylab.evolution.archives import Archive, CVTArchive, GridArchive
from policylab.evolution.backends import make_evaluator
from policylab.evolution.emitters import Emitter, EvaluatedBatch, IsoLineEmitter, Offspring, no_intended_descriptors
from policylab.evolution.tasks import Evaluations

CHECKPOINT_FORMAT = "policylab-map-elites/1"


@dataclasses.dataclass
class MAPElitesConfig:
    """The archive, the iso-line GA emitter and the loop; defaults are QDax's MAP-Elites settings for the QD-RL
    tasks (1024 CVT cells, 256 iso-line offspring per iteration, σ_iso = 0.005, σ_line = 0.05)."""

    ga_batch_size: int = 256
    """iso-line GA offspring per iteration (0: no GA emitter)"""
    iso_sigma: float = 0.005
    """σ_iso: the Gaussian step of the iso-line variation"""
    line_sigma: float = 0.05
    """σ_line: the step along the line between two elites"""
    archive: Literal["cvt", "grid"] = "cvt"
    """cvt: Voronoi cells of k-means centroids; grid: a regular grid"""
    cells: int = 1024
    """cells of the CVT archive"""
    grid_shape: tuple[int, ...] = ()
    """cells per descriptor dimension of the grid archive (default: cells^(1/D) each)"""
    cvt_samples: int = 50_000
    """uniform samples k-means places the CVT centroids on"""
    initial_population: int = 256
    """random solutions evaluated in the first iteration"""
    episodes: int = 1
    """episodes per solution (fitness and descriptor are their means)"""
    seed: int = 0
    """seed of the CVT, the initial solutions, every variation and the evaluation seeds"""
    device: str = "cpu"
    """where the archive and learners live (cpu or cuda)"""

    def __post_init__(self) -> None:
        self.grid_shape = tuple(self.grid_shape)
        if self.ga_batch_size < 0 or self.initial_population < 1 or self.episodes < 1 or self.cells < 1:
            raise ValueError("ga_batch_size must be >= 0, and initial_population, episodes and cells >= 1")


def make_archive(task: Any, config: MAPElitesConfig) -> Archive:
    """The archive of `config` over the task's descriptor box."""
    if config.archive == "grid":
        dims = len(task.lower)
        shape = config.grid_shape or (max(1, round(config.cells ** (1 / dims))),) * dims
        return GridArchive(shape, task.lower, task.upper, task.num_params, config.device)
    if config.archive == "cvt":
        return CVTArchive(
            config.cells, task.lower, task.upper, task.num_params, config.cvt_samples, config.seed, config.device
        )
    raise ValueError(f"unknown archive {config.archive!r}; choose cvt or grid")


class MAPElites:
    """The scheduler: `ask()` gives a batch of offspring, `tell(evaluations)` inserts them and informs the
    emitters. `run` and `step` evaluate with the evaluator of `backend` ("local" or "ray"; `workers`, `address` as
    in `make_evaluator`), made on first use."""

    def __init__(
        self,
        task: Any,
        config: MAPElitesConfig | None = None,
        emitters: list[Emitter] | None = None,
        backend: str = "local",
        workers: int | None = None,
        address: str | None = None,
    ) -> None:
        self.task = task
        self.config = config or MAPElitesConfig()
        self.archive = make_archive(task, self.config)
        self.emitters: list[Emitter] = list(emitters or [])
        if self.config.ga_batch_size:
            bounds = getattr(task, "solution_bounds", None)
            ga = IsoLineEmitter(self.config.ga_batch_size, self.config.iso_sigma, self.config.line_sigma, bounds)
            self.emitters.insert(0, ga)
        if not self.emitters:
            raise ValueError("MAP-Elites needs at least one emitter: set ga_batch_size > 0 or pass emitters")
        self.generator = torch.Generator(device=self.config.device).manual_seed(self.config.seed)
        self.evaluator = None
        self.evaluator_settings = {"backend": backend, "workers": workers, "address": address}
        self.iteration = 0
        self.evaluations = 0
        self.env_steps = 0
        self.history: list[dict[str, float]] = []
        self._asked: Offspring | None = None
        self._asked_sizes: list[int] = []
        self._asked_random = False
        """whether the asked batch is the random first one (no emitter's offspring)"""

    @property
    def needs_transitions(self) -> bool:
        """Whether an emitter learns from every step of every episode."""
        return any(emitter.needs_transitions for emitter in self.emitters)

    @property
    def evaluation_seed(self) -> int:
        """Env seed of the asked batch's first episode."""
        return int(np.random.SeedSequence([self.config.seed, self.iteration]).generate_state(1)[0] >> 2)

    # -- ask / tell -------------------------------------------------------------------------------

    def ask(self) -> Offspring:
        """The batch to evaluate: random solutions in the first iteration, then every emitter's offspring."""
        if len(self.archive) == 0:
            solutions = self.task.initial_params(self.config.initial_population, self.generator)
            solutions = solutions.to(self.archive.device)
            parts = [Offspring(solutions, no_intended_descriptors(len(solutions), self.archive))]
        else:
            parts = [emitter.ask(self.archive, self.generator) for emitter in self.emitters]
        self._asked_sizes = [len(part.solutions) for part in parts]
        self._asked_random = len(self.archive) == 0
        self._asked = Offspring(
            torch.cat([part.solutions for part in parts]), torch.cat([part.intended_descriptors for part in parts])
        )
        return self._asked

    def tell(self, evaluations: Evaluations) -> dict[str, float]:
        """Insert the evaluated offspring of the last `ask` and let every emitter learn; returns the iteration's
        metrics."""
        if self._asked is None:
            raise RuntimeError("tell needs an ask first")
        asked = self._asked
        if len(evaluations.fitness) != len(asked.solutions) or evaluations.behaviours is None:
            raise ValueError(
                f"tell needs the fitness and descriptors of the {len(asked.solutions)} asked solutions, got "
                f"{len(evaluations.fitness)} fitness values and descriptors {evaluations.behaviours is not None}"
            )
        insertion = self.archive.add(asked.solutions, evaluations.fitness, evaluations.behaviours)
        batch = EvaluatedBatch(asked, evaluations, insertion)
        metrics: dict[str, float] = {}
        offsets = np.cumsum([0, *self._asked_sizes]).tolist()
        for index, emitter in enumerate(self.emitters):
            own = slice(0, 0) if self._asked_random else slice(offsets[index], offsets[index + 1])
            metrics |= emitter.tell(batch, self.archive, own)
        self.evaluations += len(asked.solutions)
        self.env_steps += evaluations.env_steps
        stats = {
            "iteration": self.iteration,
            "evaluations": self.evaluations,
            "env_steps": self.env_steps,
            "qd_score": self.archive.qd_score(self.qd_offset),
            "coverage": self.archive.coverage(),
            "max_fitness": self.archive.max_fitness(),
            "added": int(insertion.added.sum()),
            "new_cells": int(insertion.new_cell.sum()),
            **metrics,
        }
        self.iteration += 1
        self._asked = None
        self.history.append(stats)
        return stats

    @property
    def qd_offset(self) -> float:
        """What the QD-score adds to each elite's fitness (the task's, else 0)."""
        return float(getattr(self.task, "qd_offset", 0.0))

    # -- the library's loop -------------------------------------------------------------------------

    def step(self) -> dict[str, float]:
        """One iteration evaluated by the evaluator of `backend`."""
        if self.evaluator is None:
            # mutation_power only matters to seed-chain genomes; MAP-Elites sends parameter vectors
            self.evaluator = make_evaluator(self.task, mutation_power=1.0, **self.evaluator_settings)
        started = time.perf_counter()
        offspring = self.ask()
        options = {"record_transitions": True} if self.needs_transitions else {}
        evaluations = self.evaluator.evaluate_params(
            offspring.solutions.cpu(), self.config.episodes, self.evaluation_seed, **options
        )
        evaluated = time.perf_counter()
        stats = self.tell(evaluations)
        finished = time.perf_counter()
        stats |= {"seconds": finished - started, "evaluation_seconds": evaluated - started}
        stats["evaluations_per_second"] = len(offspring.solutions) / (finished - started)
        self.history[-1] = stats
        return stats

    def run(
        self,
        iterations: int,
        run_dir: str | os.PathLike | None = None,
        resume: bool = False,
        progress: bool = True,
        checkpoint_every: int = 10,
    ) -> list[dict[str, float]]:
        """Iterate until `iterations` are done. With `run_dir`: config.json, metrics.csv, an atomic checkpoint every
        `checkpoint_every` iterations and at the end (archive, emitters' learners and replay buffers, generator),
        archive.png (2-D descriptors) and qd_score.png; `resume` continues a run from its checkpoint."""
        run = RunDirectory(run_dir) if run_dir is not None else None
        if run is not None:
            self._open_run(run, resume)
        run_iterations(
            self.step,
            lambda: self.iteration,
            iterations,
            run,
            lambda: self.save_checkpoint(run.checkpoint),
            description="MAP-Elites",
            unit="it",
            postfix=lambda stats: {"qd": f"{stats['qd_score']:.4g}", "cov": f"{stats['coverage']:.2f}"},
            checkpoint_every=checkpoint_every,
            index_key="iteration",
            progress=progress,
        )
        if run is not None:
            plot_qd_score(run.path)
            plot_archive(self.archive, run.path / "archive.png")
        return self.history

    def _open_run(self, run: RunDirectory, resume: bool) -> None:
        if run.begin(self.describe(), resume):
            self.load_checkpoint(run.checkpoint)

    def describe(self) -> dict[str, Any]:
        """The run's settings: MAP-Elites config, the task and every emitter's config."""
        emitters = [
            {"kind": type(emitter).__name__, **dataclasses.asdict(emitter.config)}
            for emitter in self.emitters
            if dataclasses.is_dataclass(getattr(emitter, "config", None))
        ]
        task = {"kind": type(self.task).__name__, **dataclasses.asdict(self.task)}
        return {"map_elites": dataclasses.asdict(self.config), "task": task, "emitters": emitters}

    # -- state ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (between iterations)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "iteration": self.iteration,
            "evaluations": self.evaluations,
            "env_steps": self.env_steps,
            "archive": self.archive.state_dict(),
            "emitters": [emitter.state_dict() for emitter in self.emitters],
            "generator": self.generator.get_state(),
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from what `state_dict` returned."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a MAP-Elites checkpoint (format {CHECKPOINT_FORMAT!r} expected)")
        self.iteration, self.evaluations = int(state["iteration"]), int(state["evaluations"])
        self.env_steps = int(state["env_steps"])
        self.archive.load_state_dict(state["archive"])
        for emitter, emitter_state in zip(self.emitters, state["emitters"], strict=True):
            emitter.load_state_dict(emitter_state)
        restore_generator(self.generator, state["generator"])
        self.history = list(state["history"])
        self._asked = None

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Write `state_dict` to `path` atomically."""
        state = self.state_dict()
        atomic_write(path, lambda file: torch.save(state, file))

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Continue from a checkpoint written by `save_checkpoint`."""
        self.load_state_dict(torch.load(path, map_location=self.config.device, weights_only=False))

    def close(self) -> None:
        """Release the evaluator (Ray actors)."""
        if self.evaluator is not None:
            self.evaluator.close()
            self.evaluator = None


QD_METHODS = ("me", "pga-me", "dcg-me")


def make_qd_method(
    method: str,
    task: Any,
    config: MAPElitesConfig | None = None,
    emitter_config: Any = None,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
) -> MAPElites:
    """MAP-Elites ("me"), PGA-MAP-Elites ("pga-me", `emitter_config` a `PGAConfig`) or DCG-MAP-Elites
    ("dcg-me", a `DCGConfig`) on `task`; the policy-gradient emitters live on `config.device`, seeded by
    `config.seed`."""
    from policylab.evolution.dcg_map_elites import DescriptorConditionedEmitter
    from policylab.evolution.pga_map_elites import PolicyGradientEmitter

    config = config or MAPElitesConfig()
    emitter_classes = {"me": None, "pga-me": PolicyGradientEmitter, "dcg-me": DescriptorConditionedEmitter}
    if method not in emitter_classes:
        raise ValueError(f"unknown QD method {method!r}; choose one of {', '.join(QD_METHODS)}")
    emitter_class = emitter_classes[method]
    emitters = [] if emitter_class is None else [emitter_class(task, emitter_config, config.device, config.seed)]
    return MAPElites(task, config, emitters, backend, workers, address)


def random_search(task: Any, archive: Archive, evaluations: int, batch_size: int, seed: int = 0) -> Archive:
    """The baseline MAP-Elites must beat: `evaluations` random solutions (the task's initial distribution) added
    to `archive` in batches."""
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, evaluations, batch_size):
        solutions = task.initial_params(min(batch_size, evaluations - start), generator)
        result = task.evaluate(solutions, 1, seed + start)
        archive.add(solutions, result.fitness, result.behaviours)
    return archive


def plot_qd_score(run_dir: str | os.PathLike) -> Path | None:
    """QD-score and coverage against evaluations from a run's metrics.csv, into qd_score.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = MetricLogger(run_dir, tensorboard=False).read()
    if not rows:
        return None
    evaluations = [int(row["evaluations"]) for row in rows]
    figure, (score_axis, coverage_axis) = plt.subplots(1, 2, figsize=(10, 4))
    score_axis.plot(evaluations, [float(row["qd_score"]) for row in rows])
    score_axis.set_ylabel("QD-score")
    coverage_axis.plot(evaluations, [100 * float(row["coverage"]) for row in rows])
    coverage_axis.set_ylabel("coverage (%)")
    for axis in (score_axis, coverage_axis):
        axis.set_xlabel("evaluations")
        axis.grid(alpha=0.3)
    figure.suptitle(Path(run_dir).name)
    path = Path(run_dir) / "qd_score.png"
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_archive(archive: Archive, path: str | os.PathLike) -> Path | None:
    """Heat-map of a 2-D archive's elite fitness (grid cells, or CVT centroids as points); None for other
    descriptor sizes."""
    if archive.descriptor_dim != 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fitness = archive.fitness.cpu().numpy().copy()
    fitness[~np.isfinite(fitness)] = np.nan
    lower, upper = archive.lower.cpu().numpy(), archive.upper.cpu().numpy()
    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    if isinstance(archive, GridArchive):
        image = axis.imshow(
            fitness.reshape(archive.shape).T, origin="lower", extent=(lower[0], upper[0], lower[1], upper[1])
        )
    else:
        centroids = archive.centroids.cpu().numpy()
        marker_size = max(1.0, 20000 / archive.num_cells / math.sqrt(archive.num_cells / 100))
        axis.scatter(centroids[:, 0], centroids[:, 1], s=marker_size, c="lightgrey", marker="s")
        filled = np.isfinite(fitness)
        image = axis.scatter(centroids[filled, 0], centroids[filled, 1], s=marker_size, c=fitness[filled], marker="s")
        axis.set_xlim(lower[0], upper[0])
        axis.set_ylim(lower[1], upper[1])
    figure.colorbar(image, ax=axis, label="fitness")
    axis.set_xlabel("descriptor 1")
    axis.set_ylabel("descriptor 2")
    axis.set_title(f"{len(archive)} of {archive.num_cells} cells filled")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)
