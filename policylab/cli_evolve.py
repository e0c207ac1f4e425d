"""`policylab evolve ...`: population methods on a task, with a run directory and the best policy as an agent.

policylab evolve ga --env Hopper-v5 --generations 100 --population-size 256 --mutation-power 0.02
policylab evolve ga --env Hopper-v5 --backend ray --workers 16 --address auto
policylab evolve dcg-me --task walker2d_uni --iterations 4000      # also me, pga-me; --task ant_omni, planar_arm
policylab evolve groove --curriculum regret --meta-updates 500      # also uniform (LPG), value-loss (PLR)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Literal

import torch
import tyro

from policylab.core.envs.grid_worlds import NAMED_LEVELS, named_levels, sample_levels
from policylab.core.evaluation import evaluate
from policylab.core.runs import RunDirectory
from policylab.evolution import GA, GAConfig, PolicyTask
from policylab.evolution.dcg_map_elites import DCGConfig, evaluate_distilled_actor
from policylab.evolution.groove import GROOVE, GROOVEConfig, meta_test
from policylab.evolution.map_elites import MAPElitesConfig, make_qd_method
from policylab.evolution.pga_map_elites import PGAConfig
from policylab.evolution.qd_tasks import QD_TASKS, make_qd_task


@dataclasses.dataclass
class EvolveGA:
    """Evolve a policy with the Deep GA (truncation selection and mutation, seed-chain genomes): an MLP on a task with
    Box actions, the Nature-DQN CNN on an Atari game (ALE/*-v5, needs ale-py)."""

    env: str
    """task id, e.g. Hopper-v5 (any make_vec_env id with a Box action space) or ALE/Pong-v5"""
    generations: int = 100
    """generations in total"""
    backend: Literal["local", "ray"] = "local"
    """local: the population as one batched env in this process; ray: population shards on Ray actors"""
    workers: int | None = None
    """physics threads (local, default every core) or Ray actors (ray, default 2)"""
    address: str | None = None
    """Ray cluster to join (e.g. auto); default: start a local Ray"""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """hidden layer widths of an MLP policy"""
    env_backend: str = "auto"
    """make_vec_env backend that runs the episodes"""
    max_episode_steps: int | None = None
    """shorter episodes than the task's own limit"""
    eval_episodes: int = 10
    """episodes of the best policy's final evaluation"""
    run_dir: Path | None = None
    """where config, metrics, checkpoint, fitness.png and agent.pt go (default: runs/ga-<env>-s<seed>)"""
    resume: bool = False
    """continue the run in run_dir from its checkpoint"""
    progress: bool = True
    """show a progress bar"""
    config: Annotated[GAConfig, tyro.conf.arg(name="")] = dataclasses.field(default_factory=GAConfig)


@dataclasses.dataclass
class EvolveQD:
    """A quality-diversity run: an archive of diverse, high-performing solutions."""

    task: str
    """walker2d_uni, ant_omni, hopper_uni, halfcheetah_uni, ant_uni, or planar_arm"""
    iterations: int = 100
    """iterations in total (each evaluates one batch)"""
    backend: Literal["local", "ray"] = "local"
    """local: the batch as one batched env in this process; ray: batch shards on Ray actors"""
    workers: int | None = None
    """physics threads (local, default every core) or Ray actors (ray, default 2)"""
    address: str | None = None
    """Ray cluster to join (e.g. auto); default: start a local Ray"""
    hidden_sizes: tuple[int, ...] = (128, 128)
    """hidden layer widths of the policies (locomotion tasks)"""
    episode_length: int | None = None
    """shorter episodes than the task's (locomotion tasks)"""
    dof: int = 10
    """joints of the planar arm (planar_arm)"""
    run_dir: Path | None = None
    """where config, metrics, checkpoint.pt, qd_score.png, archive.png and evaluation.json go
    (default: runs/<method>-<task>-s<seed>)"""
    resume: bool = False
    """continue the run in run_dir from its checkpoint"""
    checkpoint_every: int = 10
    """iterations between checkpoints (and after the last)"""
    progress: bool = True
    """show a progress bar"""
    config: Annotated[MAPElitesConfig, tyro.conf.arg(name="")] = dataclasses.field(default_factory=MAPElitesConfig)


@dataclasses.dataclass
class EvolveME(EvolveQD):
    """MAP-Elites with the iso-line GA emitter."""


@dataclasses.dataclass
class EvolvePGAME(EvolveQD):
    """PGA-MAP-Elites: iso-line GA offspring, policy-gradient offspring from a TD3 critic, and the greedy actor."""

    config: Annotated[MAPElitesConfig, tyro.conf.arg(name="")] = dataclasses.field(
        default_factory=lambda: MAPElitesConfig(ga_batch_size=128)
    )
    pga: PGAConfig = dataclasses.field(default_factory=PGAConfig)


@dataclasses.dataclass
class EvolveDCGME(EvolveQD):
    """DCG-MAP-Elites: iso-line GA offspring, descriptor-conditioned policy-gradient offspring and actor injection;
    the descriptor-conditioned actor is evaluated on every elite's descriptor at the end."""

    config: Annotated[MAPElitesConfig, tyro.conf.arg(name="")] = dataclasses.field(
        default_factory=lambda: MAPElitesConfig(ga_batch_size=128)
    )
    dcg: DCGConfig = dataclasses.field(default_factory=DCGConfig)


@dataclasses.dataclass
class EvolveGROOVE:
    """Meta-train a learned policy gradient (LPG) on grid worlds with a level curriculum (GROOVE), then meta-test it
    against A2C on held-out levels."""

    meta_updates: int = 500
    """meta-updates in total"""
    run_dir: Path | None = None
    """where config, metrics, checkpoint.pt, lpg.pt and evaluation.json go
    (default: runs/groove-<curriculum>-s<seed>)"""
    resume: bool = False
    """continue the run in run_dir from its checkpoint"""
    checkpoint_every: int = 10
    """meta-updates between checkpoints (and after the last)"""
    test_levels: int = 32
    """held-out random levels of the meta-test (0: none)"""
    test_named: tuple[str, ...] = tuple(NAMED_LEVELS)
    """LPG's named levels of the meta-test (8 copies each)"""
    test_updates: int | None = None
    """agent updates of the meta-test's LPG and A2C agents (default: the lifetime)"""
    progress: bool = True
    """show a progress bar"""
    config: Annotated[GROOVEConfig, tyro.conf.arg(name="")] = dataclasses.field(default_factory=GROOVEConfig)


EVOLVE_COMMANDS = {
    "ga": EvolveGA,
    "me": EvolveME,
    "pga-me": EvolvePGAME,
    "dcg-me": EvolveDCGME,
    "groove": EvolveGROOVE,
}
QD_COMMAND_METHODS = {EvolveME: "me", EvolvePGAME: "pga-me", EvolveDCGME: "dcg-me"}


def run_quality_diversity(command: EvolveQD) -> None:
    """Run a QD command, write evaluation.json (archive metrics, and the distilled actor's for dcg-me) and print it."""
    method, config = QD_COMMAND_METHODS[type(command)], command.config
    if command.task != "planar_arm" and command.task not in QD_TASKS:
        raise ValueError(f"unknown QD task {command.task!r}; choose planar_arm or one of {', '.join(QD_TASKS)}")
    if command.task == "planar_arm":
        task = make_qd_task("planar_arm", dof=command.dof)
    else:
        task = make_qd_task(command.task, hidden_sizes=command.hidden_sizes, episode_length=command.episode_length)
    run_dir = command.run_dir or Path("runs") / f"{method}-{command.task}-s{config.seed}"
    emitter_config = getattr(command, "pga", None) or getattr(command, "dcg", None)
    me = make_qd_method(method, task, config, emitter_config, command.backend, command.workers, command.address)
    try:
        me.run(command.iterations, run_dir, command.resume, command.progress, command.checkpoint_every)
    finally:
        me.close()
    summary = {
        "run_dir": str(run_dir),
        "method": method,
        "task": command.task,
        "iterations": me.iteration,
        "evaluations": me.evaluations,
        "qd_score": me.archive.qd_score(me.qd_offset),
        "coverage": me.archive.coverage(),
        "max_fitness": me.archive.max_fitness(),
    }
    if method == "dcg-me":
        summary |= evaluate_distilled_actor(me.emitters[-1], me.archive, me.qd_offset, config.episodes, config.seed)
    RunDirectory(run_dir).write_json("evaluation.json", summary)
    print(json.dumps(summary, indent=2))


def run_groove(command: EvolveGROOVE) -> None:
    """Meta-train, meta-test on held-out levels (the LPG's return normalised by A2C's), write evaluation.json and
    print it."""
    config = command.config
    unknown = sorted(set(command.test_named) - set(NAMED_LEVELS))
    if unknown:
        raise ValueError(f"unknown named levels {unknown}; choose among {', '.join(NAMED_LEVELS)}")
    run_dir = command.run_dir or Path("runs") / f"groove-{config.curriculum}-s{config.seed}"
    groove = GROOVE(config)
    groove.run(command.meta_updates, run_dir, command.resume, command.progress, command.checkpoint_every)
    test_sets = {name: named_levels(name, 8, torch.Generator().manual_seed(config.seed)) for name in command.test_named}
    if command.test_levels:
        generator = torch.Generator().manual_seed(config.seed + 10_000)
        test_sets = {"random": sample_levels(command.test_levels, generator, config.levels)} | test_sets
    updates = command.test_updates or config.lifetime
    results = {name: meta_test(groove.lpg, levels, updates, config, config.seed) for name, levels in test_sets.items()}
    summary = {"run_dir": str(run_dir), "lpg": str(run_dir / "lpg.pt"), "meta_updates": groove.meta_updates}
    summary |= {"meta_test_updates": updates, "meta_test": results}
    RunDirectory(run_dir).write_json("evaluation.json", summary)
    print(json.dumps(summary, indent=2))


def run_evolution(command: EvolveGA | EvolveQD | EvolveGROOVE) -> None:
    """Run an `evolve` command and print where its results are."""
    if isinstance(command, EvolveQD):
        run_quality_diversity(command)
        return
    if isinstance(command, EvolveGROOVE):
        run_groove(command)
        return
    config = command.config
    run_dir = command.run_dir or Path("runs") / f"ga-{command.env}-s{config.seed}"
    task = PolicyTask(
        command.env, command.hidden_sizes, backend=command.env_backend, max_episode_steps=command.max_episode_steps
    )
    ga = GA(task, config, backend=command.backend, workers=command.workers, address=command.address)
    try:
        history = ga.run(command.generations, run_dir, resume=command.resume, progress=command.progress)
    finally:
        ga.close()
    agent = ga.best_agent()
    result = evaluate(agent, command.env, episodes=command.eval_episodes, seed=config.seed)
    RunDirectory(run_dir).write_json("evaluation.json", result.to_dict())
    summary = {
        "run_dir": str(run_dir),
        "agent": str(run_dir / "agent.pt"),
        "generations": len(history),
        "elite_fitness": round(ga.elite_fitness, 3),
        "genome_seeds": len(ga.elite),
        "encoding_size_ratio": round(ga.encoding_size_ratio(), 1),
    }
    print(json.dumps(summary | {key: round(value, 3) for key, value in result.metrics(prefix="").items()}, indent=2))
