"""The Deep GA (Such et al., 2017): neural-network weights evolved by truncation selection and Gaussian mutation
only, every genome stored as the chain of seeds that made it.

Each generation: evaluate the population; the top `truncation` members (by fitness, or by novelty with novelty
search) are the parents; the top `elite_candidates` by fitness and the previous elite are re-evaluated over
`elite_episodes` episodes and the best becomes the elite, kept unchanged; the next population is the elite plus
children, each a uniformly chosen parent plus σ·ε. No crossover.

    ga = GA(PolicyTask("Hopper-v5"), GAConfig(population_size=256, truncation=20, mutation_power=0.02))
    ga.run(generations=100, run_dir="runs/ga-hopper")       # GA(..., backend="ray", workers=16) for Ray actors
    agent = ga.best_agent()                                   # an ordinary agent: act, save, policylab.load

    genomes = ga.ask(); ga.tell(my_fitness(ga.parameters(genomes)))   # or evaluate with your own code
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policylab.core.logging import MetricLogger
from policylab.core.runs import RunDirectory, run_iterations
from policylab.evolution.backends import Evaluator, make_evaluator
from policylab.evolution.genomes import SEED_BOUND, Genome, GenomeDecoder, encoding_size_ratio
from policylab.evolution.novelty import NoveltyArchive
from policylab.evolution.policy import EvolvedPolicy, EvolvedPolicyConfig
from policylab.evolution.tasks import Evaluations, PolicyTask

CHECKPOINT_FORMAT = "policylab-ga/1"


@dataclasses.dataclass
class GAConfig:
    """Deep GA settings; the defaults are the paper's Atari ones (N=1000, T=20, σ=0.002, 10 elite candidates
    re-evaluated over 30 episodes)."""

    population_size: int = 1000
    """members per generation (N)"""
    truncation: int = 20
    """best members that become parents (T)"""
    mutation_power: float = 0.002
    """standard deviation σ of the Gaussian mutation"""
    elite_candidates: int = 10
    """best members re-evaluated, with the previous elite, to choose the elite (0: the best member, not re-run)"""
    elite_episodes: int = 30
    """episodes of each elite candidate's re-evaluation"""
    episodes: int = 1
    """episodes per member per generation"""
    novelty: bool = False
    """select parents by novelty of behaviour instead of fitness (novelty search; the elite is still the fittest)"""
    novelty_neighbours: int = 10
    """nearest behaviours whose mean distance is a member's novelty"""
    archive_probability: float = 0.01
    """chance that each evaluated member's behaviour joins the novelty archive"""
    seed: int = 0
    """seed of initialisation and mutation seeds, parent choices and evaluation seeds"""

    def __post_init__(self) -> None:
        if not 1 <= self.truncation <= self.population_size:
            raise ValueError(
                f"truncation must lie in [1, population_size={self.population_size}], got {self.truncation}"
            )
        if self.population_size < 2:
            raise ValueError(f"population_size must be at least 2 (the elite and a child), got {self.population_size}")
        if self.elite_candidates < 0 or self.elite_candidates > self.population_size:
            raise ValueError(f"elite_candidates must lie in [0, population_size], got {self.elite_candidates}")
        if self.mutation_power <= 0 or self.episodes < 1 or self.elite_episodes < 1:
            raise ValueError("mutation_power must be positive and episodes, elite_episodes at least 1")


class GA:
    """The Deep GA with ask/tell: `ask()` gives genomes to evaluate, `tell(fitness)` takes their fitness. A
    generation asks twice when `elite_candidates` > 0: the population (`asked_episodes` = `episodes`), then the
    elite candidates (`asked_episodes` = `elite_episodes`). `run` and `step` do this with the evaluator of
    `backend` ("local" or "ray"; `workers` and `address` as in `make_evaluator`), made on first use, or with the
    `evaluator` given."""

    def __init__(
        self,
        task: Any,
        config: GAConfig | None = None,
        evaluator: Evaluator | None = None,
        backend: str = "local",
        workers: int | None = None,
        address: str | None = None,
    ) -> None:
        self.task = task
        self.config = config or GAConfig()
        self.decoder = GenomeDecoder(task.initial_params, self.config.mutation_power, 2 * self.config.truncation + 2)
        if evaluator is not None and getattr(evaluator, "mutation_power", None) != self.config.mutation_power:
            raise ValueError("the evaluator decodes genomes with another mutation_power than the GA's config")
        self.evaluator = evaluator
        self.evaluator_settings = {"backend": backend, "workers": workers, "address": address}
        self.rng = np.random.Generator(np.random.PCG64(self.config.seed))
        self.archive = NoveltyArchive(self.config.novelty_neighbours)
        self.generation = 0
        self.population: list[Genome] = [(self._new_seed(),) for _ in range(self.config.population_size)]
        self.elite: Genome | None = None
        self.elite_fitness = float("-inf")
        self.evaluations = 0
        """members and candidates evaluated so far (one per genome asked, whatever its episodes)"""
        self.env_steps = 0
        self.history: list[dict[str, float]] = []
        self._candidates: list[Genome] = []
        self._population_fitness: np.ndarray | None = None
        self._parents: list[Genome] = []

    # -- ask / tell -------------------------------------------------------------------------------

    def ask(self) -> list[Genome]:
        """Genomes to evaluate next: the population, or (after the population's `tell`) the elite candidates."""
        return self._candidates if self._population_fitness is not None else self.population

    @property
    def asked_episodes(self) -> int:
        """Episodes each asked genome should be evaluated over."""
        return self.config.elite_episodes if self._population_fitness is not None else self.config.episodes

    @property
    def evaluation_seed(self) -> int:
        """Env seed of the asked batch's first episode; member i's episode r uses `evaluation_seed + i·episodes + r`."""
        phase = 1 if self._population_fitness is not None else 0
        return int(np.random.SeedSequence([self.config.seed, self.generation, phase]).generate_state(1)[0] >> 2)

    def parameters(self, genomes: list[Genome]) -> torch.Tensor:
        """The float32 parameter vectors (P, num_params) of `genomes`."""
        return self.decoder.decode_batch(genomes)

    def tell(self, fitness: Any, behaviours: Any = None) -> dict[str, float] | None:
        """Take the fitness (and, for novelty search, behaviour descriptors) of the asked genomes; returns the
        generation's statistics when the generation is complete."""
        fitness = np.asarray(fitness, dtype=np.float64).reshape(-1)
        if len(fitness) != len(self.ask()):
            raise ValueError(f"tell got {len(fitness)} fitness values for {len(self.ask())} asked genomes")
        if not np.isfinite(fitness).all():
            raise ValueError("fitness holds NaN or infinite values: check the task's returns")
        self.evaluations += len(fitness)
        if self._population_fitness is None:
            return self._tell_population(fitness, behaviours)
        return self._tell_elite_candidates(fitness)

    def _tell_population(self, fitness: np.ndarray, behaviours: Any) -> dict[str, float] | None:
        score = fitness
        if self.config.novelty:
            if behaviours is None:
                raise ValueError("novelty search needs behaviour descriptors: tell(fitness, behaviours)")
            behaviours = np.asarray(behaviours, dtype=np.float64).reshape(len(fitness), -1)
            score = self.archive.novelty(behaviours)
            joins = self.rng.random(len(fitness)) < self.config.archive_probability
            self.archive.add(behaviours[joins])
        order = np.argsort(-score, kind="stable")
        self._parents = [self.population[index] for index in order[: self.config.truncation]]
        self._population_fitness = fitness
        if self.config.elite_candidates == 0:
            best = int(np.argmax(fitness))
            return self._next_generation(self.population[best], float(fitness[best]))
        best_first = np.argsort(-fitness, kind="stable")[: self.config.elite_candidates]
        candidates = [self.population[index] for index in best_first]
        if self.elite is not None and self.elite not in candidates:
            candidates.append(self.elite)
        self._candidates = candidates
        return None

    def _tell_elite_candidates(self, fitness: np.ndarray) -> dict[str, float]:
        best = int(np.argmax(fitness))
        return self._next_generation(self._candidates[best], float(fitness[best]))

    def _next_generation(self, elite: Genome, elite_fitness: float) -> dict[str, float]:
        fitness = self._population_fitness
        stats = {
            "generation": self.generation,
            "fitness_max": float(fitness.max()),
            "fitness_mean": float(fitness.mean()),
            "fitness_median": float(np.median(fitness)),
            "elite_fitness": elite_fitness,
            "evaluations": self.evaluations,
            "archive_size": len(self.archive),
        }
        self.elite, self.elite_fitness = elite, elite_fitness
        choices = self.rng.integers(len(self._parents), size=self.config.population_size - 1)
        children = [self._parents[choice] + (self._new_seed(),) for choice in choices]
        self.population = [elite, *children]
        self.generation += 1
        self._population_fitness, self._candidates, self._parents = None, [], []
        self.history.append(stats)
        return stats

    def _new_seed(self) -> int:
        return int(self.rng.integers(SEED_BOUND, dtype=np.uint64))

    # -- the library's loop -------------------------------------------------------------------------

    def step(self) -> dict[str, float]:
        """One generation evaluated by `self.evaluator` (a `LocalEvaluator` unless one was given)."""
        if self.evaluator is None:
            self.evaluator = make_evaluator(
                self.task, self.config.mutation_power, cache_size=self.decoder.cache_size, **self.evaluator_settings
            )
        started = time.perf_counter()
        evaluations_before, stats = self.evaluations, None
        while stats is None:
            result: Evaluations = self.evaluator.evaluate(self.ask(), self.asked_episodes, self.evaluation_seed)
            self.env_steps += result.env_steps
            stats = self.tell(result.fitness, result.behaviours)
        seconds = time.perf_counter() - started
        stats |= {"env_steps": self.env_steps, "seconds": seconds}
        stats["evaluations_per_second"] = (self.evaluations - evaluations_before) / seconds
        return stats

    def run(
        self,
        generations: int,
        run_dir: str | os.PathLike | None = None,
        resume: bool = False,
        progress: bool = True,
    ) -> list[dict[str, float]]:
        """Evolve until `generations` generations are done. With `run_dir`: config, metrics.csv, a checkpoint of
        the genome chains after every generation (atomic), fitness.png, and the best policy as agent.pt when the
        task is a `PolicyTask`; `resume` continues a run from its checkpoint."""
        run = RunDirectory(run_dir) if run_dir is not None else None
        if run is not None:
            self._open_run(run, resume)
        run_iterations(
            self.step,
            lambda: self.generation,
            generations,
            run,
            lambda: run.write_json("checkpoint.json", self.state_dict()),
            description="Deep GA",
            unit="gen",
            postfix=lambda stats: {"elite": f"{stats['elite_fitness']:.1f}", "best": f"{stats['fitness_max']:.1f}"},
            index_key="generation",
            progress=progress,
        )
        if run is not None:
            plot_fitness(run.path)
            if isinstance(self.task, PolicyTask) and self.elite is not None:
                self.best_agent().save(run.final_agent)
        return self.history

    def _open_run(self, run: RunDirectory, resume: bool) -> None:
        config = {"ga": dataclasses.asdict(self.config), "task": describe_task(self.task)}
        if run.begin(config, resume, checkpoint=run.path / "checkpoint.json"):
            self.load_state_dict(run.read_json("checkpoint.json"))

    # -- results and state --------------------------------------------------------------------------

    def best_params(self) -> torch.Tensor:
        """The elite's parameter vector (after at least one generation)."""
        if self.elite is None:
            raise RuntimeError("no elite yet: run at least one generation")
        return self.decoder.decode(self.elite)

    def best_agent(self) -> EvolvedPolicy:
        """The elite as an agent (a `PolicyTask` only): act, save, `policylab.load`, `policylab eval`."""
        if not isinstance(self.task, PolicyTask):
            raise TypeError("only a PolicyTask's genomes are policies; use best_params() for other tasks")
        observation_space, action_space = self.task.spaces
        config = EvolvedPolicyConfig(
            seed=self.config.seed,
            device="cpu",
            hidden_sizes=self.task.hidden_sizes,
            activation=self.task.activation,
            genome=self.elite,
            mutation_power=self.config.mutation_power,
        )
        return EvolvedPolicy.from_params(self.best_params(), observation_space, action_space, config)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs, as JSON-ready data: the genome chains, the elite, the novelty archive,
        the seed generator and the history (kilobytes, whatever the network's size)."""
        if self._population_fitness is not None:
            raise RuntimeError("state_dict is taken between generations, not between the population and elite asks")
        return {
            "format": CHECKPOINT_FORMAT,
            "config": dataclasses.asdict(self.config),
            "generation": self.generation,
            "population": [list(genome) for genome in self.population],
            "elite": None if self.elite is None else list(self.elite),
            "elite_fitness": self.elite_fitness,
            "evaluations": self.evaluations,
            "env_steps": self.env_steps,
            "archive": self.archive.behaviours.tolist(),
            "rng": self.rng.bit_generator.state,
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from what `state_dict` returned."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a Deep GA checkpoint (format {CHECKPOINT_FORMAT!r} expected)")
        self.generation = int(state["generation"])
        self.population = [tuple(genome) for genome in state["population"]]
        self.elite = None if state["elite"] is None else tuple(state["elite"])
        self.elite_fitness = float(state["elite_fitness"])
        self.evaluations, self.env_steps = int(state["evaluations"]), int(state["env_steps"])
        self.archive = NoveltyArchive(
            self.config.novelty_neighbours, np.array(state["archive"]) if state["archive"] else None
        )
        self.rng.bit_generator.state = state["rng"]
        self.history = list(state["history"])
        self._population_fitness, self._candidates, self._parents = None, [], []

    def close(self) -> None:
        """Release the evaluator (Ray actors)."""
        if self.evaluator is not None:
            self.evaluator.close()

    def encoding_size_ratio(self) -> float:
        """How many times smaller the elite's seed chain is than its float32 weights."""
        return encoding_size_ratio(self.elite, self.task.num_params)


def describe_task(task: Any) -> dict[str, Any]:
    """A task's settings as JSON-ready data (a function task by its function's name)."""
    if isinstance(task, PolicyTask):
        return {"kind": "policy", **dataclasses.asdict(task)}
    function = getattr(task, "function", None)
    return {"kind": type(task).__name__, "function": getattr(function, "__qualname__", repr(function))}


def plot_fitness(run_dir: str | os.PathLike) -> Path | None:
    """Plot best, mean and elite fitness against generations from a run's metrics.csv into fitness.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = MetricLogger(run_dir, tensorboard=False).read()
    if not rows:
        return None
    generations = [int(row["step"]) for row in rows]
    figure, axis = plt.subplots(figsize=(6, 4))
    for metric, label in (
        ("fitness_max", "best member"),
        ("fitness_mean", "population mean"),
        ("elite_fitness", "elite"),
    ):
        axis.plot(generations, [float(row[metric]) for row in rows], label=label)
    axis.set_xlabel("generation")
    axis.set_ylabel("fitness")
    axis.set_title(Path(run_dir).name)
    axis.grid(alpha=0.3)
    axis.legend()
    path = Path(run_dir) / "fitness.png"
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
