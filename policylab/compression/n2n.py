"""N2N (Ashok et al., 2018): network-to-network compression by two policies trained with REINFORCE.

Stage 1, layer removal: a bidirectional LSTM reads the teacher's layers (N2N's layer states) and chooses keep or
remove for each. Stage 2, layer shrinkage: an LSTM run over the shrinkable parameters of the best network of stage 1
(each layer's width, and a conv's kernel) chooses a scale for each from N2N's eleven, autoregressively (it sees
its previous choice). Each sampled architecture becomes a student trained by distillation (MSE between student and
teacher logits) and rewarded

    R = R_c · R_a,   C = 1 − params_student / params_teacher,   R_c = C·(2 − C),   R_a = score_student / score_teacher

with R = −1 for an architecture that cannot replace the teacher (shapes that do not connect, the output layer
removed, more parameters than the teacher) and R = (ε − 1) + ε·R_c·R_a when it breaks the size constraint. Each
epoch samples `rollouts` architectures, trains their students (in parallel processes when `workers` > 1) and takes
one REINFORCE step on −mean((R − b)·log π(actions)), b a moving average of past epochs' mean rewards.

    search = N2N(ClassifierTeacher.from_file("teacher.pt", train, test), N2NConfig(removal_epochs=20))
    best = search.run("runs/n2n")          # config, metrics, candidates.json, checkpoint, best student, pareto.png
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from policylab.compression.architecture import Architecture
from policylab.core.agent import load_checkpoint, restore_generator, save_checkpoint
from policylab.core.runs import RunDirectory, run_iterations

CHECKPOINT_FORMAT = "policylab-n2n/1"
SCALE_CHOICES = (0.25, 0.5, 0.5, 0.5, 0.5, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
"""N2N's shrinkage choices (0.5 five times, as in the authors' code, which makes halving the likeliest start)."""
STAGES = ("removal", "shrinkage")


@dataclasses.dataclass
class N2NConfig:
    """N2N settings; defaults are the authors' (100 epochs of 5 rollouts per stage, LSTMs of 2×30, Adam 3e-3 for
    removal and 0.1 for shrinkage, students distilled for 5 epochs with Adam 5e-4 and weight decay 5e-4)."""

    removal_epochs: int = 100
    """REINFORCE epochs of the layer-removal policy"""
    shrinkage_epochs: int = 100
    """REINFORCE epochs of the layer-shrinkage policy"""
    rollouts: int = 5
    """architectures sampled (students trained) per epoch"""
    removal_learning_rate: float = 3e-3
    """Adam learning rate of the removal policy"""
    shrinkage_learning_rate: float = 0.1
    """Adam learning rate of the shrinkage policy"""
    policy_hidden_size: int = 30
    """LSTM width of both policies"""
    policy_layers: int = 2
    """LSTM layers of both policies"""
    baseline_decay: float = 0.9
    """b ← decay·b + (1 − decay)·(epoch's mean reward), b starting at the first epoch's mean"""
    distill_epochs: int = 5
    """passes over the distillation set per student"""
    distill_learning_rate: float = 5e-4
    """Adam learning rate of the students"""
    distill_weight_decay: float = 5e-4
    """Adam weight decay of the students"""
    distill_batch_size: int = 128
    """distillation minibatch size"""
    max_parameters: int | None = None
    """size constraint: students with more parameters get R = (ε − 1) + ε·R_c·R_a"""
    constraint_epsilon: float = 0.1
    """ε of the constraint's reward (the authors' value was not found)"""
    workers: int = 1
    """processes training students side by side (1: in this process)"""
    seed: int = 0
    """seed of the policies' initialisation and sampling and of the students"""

    def __post_init__(self) -> None:
        if min(self.removal_epochs, self.shrinkage_epochs) < 0 or self.rollouts < 1 or self.workers < 1:
            raise ValueError("epochs must be >= 0, and rollouts and workers >= 1")
        if not 0 <= self.baseline_decay < 1 or not 0 < self.constraint_epsilon < 1:
            raise ValueError("baseline_decay must lie in [0, 1) and constraint_epsilon in (0, 1)")


# ---------------------------------------------------------------------------------------------
# Reward


def n2n_reward(
    student_params: int,
    teacher_params: int,
    retained: float,
    max_parameters: int | None = None,
    epsilon: float = 0.1,
) -> float:
    """R = R_c·R_a with C = 1 − student/teacher parameters, R_c = C(2 − C) and R_a = `retained` (the student's
    score over the teacher's); (ε − 1) + ε·R_c·R_a above `max_parameters`."""
    compression = 1.0 - student_params / teacher_params
    reward = compression * (2.0 - compression) * retained
    if max_parameters is not None and student_params > max_parameters:
        return (epsilon - 1.0) + epsilon * reward
    return reward


INVALID_REWARD = -1.0


# ---------------------------------------------------------------------------------------------
# The two policies


def layer_features(architecture: Architecture, reference: Architecture) -> torch.Tensor:
    """[layers, 5] layer states, each column divided by its largest value over `reference`'s layers."""
    scale = torch.tensor([layer.features() for layer in reference.layers]).amax(dim=0).clamp(min=1.0)
    return torch.tensor([layer.features() for layer in architecture.layers]) / scale


class RemovalPolicy(nn.Module):
    """A bidirectional LSTM over the layers; logits of (remove, keep) for each."""

    def __init__(self, feature_dim: int = 5, hidden_size: int = 30, num_layers: int = 2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(feature_dim, hidden_size, num_layers, bidirectional=True)
        self.head = nn.Linear(2 * hidden_size, 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[layers, 2] logits of removing and keeping each layer."""
        outputs, _ = self.lstm(features.unsqueeze(1))
        return self.head(outputs.squeeze(1))

    def log_prob(self, features: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """log π(keep | layers), summed over layers."""
        return torch.log_softmax(self(features), dim=-1).gather(1, keep.long().unsqueeze(1)).sum()

    @torch.no_grad()
    def sample(self, features: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A keep (1) or remove (0) choice per layer."""
        return torch.multinomial(torch.softmax(self(features), dim=-1), 1, generator=generator).squeeze(1)


class ShrinkagePolicy(nn.Module):
    """An LSTM over the shrinkable parameters, each step seeing its layer's state, which parameter it is (width,
    kernel) and the previous step's choice; logits over `SCALE_CHOICES`."""

    def __init__(self, feature_dim: int = 7, hidden_size: int = 30, num_layers: int = 2) -> None:
        super().__init__()
        self.num_choices = len(SCALE_CHOICES)
        self.lstm = nn.LSTM(feature_dim + self.num_choices, hidden_size, num_layers)
        self.head = nn.Linear(hidden_size, self.num_choices)

    def log_prob(self, features: torch.Tensor, choices: torch.Tensor) -> torch.Tensor:
        """log π(choices | parameters), summed over steps (one pass: the previous choices are known)."""
        previous = torch.cat([torch.zeros(1, self.num_choices), F.one_hot(choices[:-1].long(), self.num_choices)])
        outputs, _ = self.lstm(torch.cat([features, previous.float()], dim=-1).unsqueeze(1))
        log_probs = torch.log_softmax(self.head(outputs.squeeze(1)), dim=-1)
        return log_probs.gather(1, choices.long().unsqueeze(1)).sum()

    @torch.no_grad()
    def sample(self, features: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """An index into `SCALE_CHOICES` for every step, each drawn after seeing the previous one."""
        choices, state, previous = [], None, torch.zeros(self.num_choices)
        for step_features in features:
            output, state = self.lstm(torch.cat([step_features, previous]).view(1, 1, -1), state)
            probabilities = torch.softmax(self.head(output.view(-1)), dim=-1)
            choice = torch.multinomial(probabilities, 1, generator=generator)
            choices.append(choice)
            previous = F.one_hot(choice.squeeze(0), self.num_choices).float()
        return torch.cat(choices) if choices else torch.zeros(0, dtype=torch.long)


def shrinkage_features(architecture: Architecture, reference: Architecture) -> torch.Tensor:
    """[shrinkable parameters, 7]: the parameter's layer state and a one-hot of width or kernel."""
    layers = layer_features(architecture, reference)
    rows = [
        torch.cat([layers[index], torch.tensor([name == "width", name == "kernel"]).float()])
        for index, name in architecture.shrinkable
    ]
    return torch.stack(rows) if rows else torch.zeros(0, 7)


def reinforce_update(
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    features: torch.Tensor,
    actions: Sequence[torch.Tensor],
    rewards: Sequence[float],
    baseline: float,
) -> float:
    """One REINFORCE step on −mean_i (R_i − b)·log π(actions_i); returns the loss."""
    log_probs = torch.stack([policy.log_prob(features, action) for action in actions])
    advantages = torch.tensor(rewards, dtype=torch.float32) - baseline
    loss = -(advantages * log_probs).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


# ---------------------------------------------------------------------------------------------
# Students


def architecture_key(architecture: Architecture) -> str:
    """A string naming an architecture exactly (the students' cache key)."""
    return json.dumps(architecture.to_dict(), sort_keys=True)


def student_seed(architecture: Architecture, seed: int) -> int:
    """The seed a student of `architecture` is trained with: the same for the same architecture and search seed."""
    return (zlib.crc32(architecture_key(architecture).encode()) + 1_000_003 * seed) % 2**31


def train_student(teacher: Any, architecture: Architecture, config: N2NConfig) -> tuple[float, dict[str, torch.Tensor]]:
    """Distil a student of `architecture` from `teacher`; its score on the teacher's task and its weights."""
    network = teacher.distill(architecture, config, student_seed(architecture, config.seed))
    return teacher.evaluate(network), network.state_dict()


_WORKER_TEACHER: Any = None


def _start_worker(teacher: Any) -> None:
    global _WORKER_TEACHER
    _WORKER_TEACHER = teacher
    torch.set_num_threads(1)


def _train_in_worker(architecture: dict[str, Any], config: N2NConfig) -> tuple[float, dict[str, torch.Tensor]]:
    return train_student(_WORKER_TEACHER, Architecture.from_dict(architecture), config)


class StudentTrainer:
    """Trains students in this process, or side by side in `config.workers` processes that each hold the teacher."""

    def __init__(self, teacher: Any, config: N2NConfig) -> None:
        self.teacher, self.config = teacher, config
        self.pool: ProcessPoolExecutor | None = None

    def train(self, architectures: list[Architecture]) -> list[tuple[float, dict[str, torch.Tensor]]]:
        """Each architecture's student score and weights, in order."""
        if self.config.workers == 1 or len(architectures) < 2:
            return [train_student(self.teacher, architecture, self.config) for architecture in architectures]
        if self.pool is None:
            self.pool = ProcessPoolExecutor(
                self.config.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(self.teacher,),
            )
        configs = [self.config] * len(architectures)
        return list(self.pool.map(_train_in_worker, [a.to_dict() for a in architectures], configs))

    def close(self) -> None:
        """Stop the worker processes."""
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None


# ---------------------------------------------------------------------------------------------
# Searches


class ArchitectureSearch:
    """What N2N and its random-search baseline share: scoring sampled architectures by training students (each
    distinct architecture once), the record of every candidate, the best student, and the run directory."""

    kind = ""

    def __init__(self, teacher: Any, config: N2NConfig | None = None) -> None:
        self.teacher, self.config = teacher, config or N2NConfig()
        self.trainer = StudentTrainer(teacher, self.config)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.epoch = 0
        self.candidates: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self._results: dict[str, dict[str, float]] = {}

    @property
    def students_trained(self) -> int:
        """Distinct architectures trained so far."""
        return len(self._results)

    def score(self, architectures: Sequence[Architecture], stage: str) -> list[float]:
        """Rewards of `architectures`: −1 for those that cannot replace the teacher, else N2N's reward of a
        student trained by distillation (once per distinct architecture); every one is recorded."""
        teacher_architecture = self.teacher.architecture
        problems = [architecture.problem(teacher_architecture) for architecture in architectures]
        new = {}
        for architecture, problem in zip(architectures, problems):
            key = architecture_key(architecture)
            if problem is None and key not in self._results:
                new[key] = architecture
        for (key, architecture), (score, weights) in zip(new.items(), self.trainer.train(list(new.values()))):
            retained = self.teacher.retained(score)
            reward = n2n_reward(
                architecture.num_params,
                teacher_architecture.num_params,
                retained,
                self.config.max_parameters,
                self.config.constraint_epsilon,
            )
            self._results[key] = {"score": score, "retained": retained, "reward": reward}
            if self.best is None or reward > self.best["reward"]:
                self.best = {"architecture": architecture.to_dict(), "params": architecture.num_params, "stage": stage}
                self.best |= self._results[key] | {"state_dict": weights}
        rewards = []
        for architecture, problem in zip(architectures, problems):
            record: dict[str, Any] = {"stage": stage, "epoch": self.epoch, "architecture": architecture.describe()}
            if problem is None:
                record |= {"params": architecture.num_params, **self._results[architecture_key(architecture)]}
            else:
                record |= {"params": None, "score": None, "retained": None, "reward": INVALID_REWARD}
            record["problem"] = problem
            self.candidates.append(record)
            rewards.append(record["reward"])
        return rewards

    def best_architecture(self) -> Architecture:
        """The architecture of the best student so far."""
        if self.best is None:
            raise RuntimeError("no valid student yet")
        return Architecture.from_dict(self.best["architecture"])

    def trained(self) -> list[tuple[Architecture, dict[str, float]]]:
        """Every distinct architecture trained so far, with its student's score, retained fraction and reward."""
        return [(Architecture.from_dict(json.loads(key)), result) for key, result in self._results.items()]

    def best_network(self) -> nn.Sequential:
        """The best student with its weights."""
        network = self.best_architecture().build()
        network.load_state_dict(self.best["state_dict"])
        return network.eval()

    # -- the loop ------------------------------------------------------------------------------

    @property
    def total_epochs(self) -> int:
        raise NotImplementedError

    @property
    def finished(self) -> bool:
        """Whether the search has done its work."""
        return self.epoch >= self.total_epochs

    def step(self) -> dict[str, float]:
        """One epoch: sample architectures, score them, learn; returns the epoch's metrics."""
        raise NotImplementedError

    def run(self, run_dir: str | os.PathLike | None = None, resume: bool = False, progress: bool = True):
        """Search until `finished`. With `run_dir`: config.json, metrics.csv, an atomic checkpoint after every epoch
        (`resume` continues from it), and at the end candidates.json, best.json, the best student (student.pt, or
        agent.pt for a policy teacher) and pareto.png. Returns the best student's record."""
        run = RunDirectory(run_dir) if run_dir is not None else None
        if run is not None:
            self._open_run(run, resume)

        def postfix(metrics: dict[str, float]) -> dict[str, Any]:
            return {} if self.best is None else {"best": f"{self.best['reward']:.3f}", "params": self.best["params"]}

        try:
            run_iterations(
                self.step,
                lambda: self.epoch,
                self.total_epochs,
                run,
                lambda: save_checkpoint(self.state_dict(), run.checkpoint),
                description=f"{self.kind} ({self.teacher.kind})",
                unit="epoch",
                postfix=postfix,
                finished=lambda: self.finished,
                progress=progress,
            )
        finally:
            self.trainer.close()
        if run is not None:
            self.write_results(run)
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """The teacher's and the best student's size and score, and how many students were trained."""
        teacher = self.teacher
        summary = {
            "teacher_params": teacher.architecture.num_params,
            f"teacher_{teacher.score_name}": teacher.score,
            "students_trained": self.students_trained,
            "candidates": len(self.candidates),
        }
        if self.best is not None:
            summary |= {
                "best_architecture": self.best_architecture().describe(),
                "best_params": self.best["params"],
                f"best_{teacher.score_name}": self.best["score"],
                "best_retained": self.best["retained"],
                "best_reward": self.best["reward"],
                "compression": teacher.architecture.num_params / self.best["params"],
            }
        return summary

    def write_results(self, run: RunDirectory) -> None:
        """candidates.json, best.json, the best student and pareto.png."""
        run.write_json("candidates.json", self.candidates)
        run.write_json("best.json", self.summary())
        if self.best is not None:
            name = "agent.pt" if self.teacher.kind == "policy" else "student.pt"
            info = {key: self.best[key] for key in ("score", "retained", "reward", "params")}
            self.teacher.save_student(run.path / name, self.best_architecture(), self.best_network(), **info)
        plot_pareto(self.candidates, self.teacher, run.path / "pareto.png", title=f"{self.kind}: {run.path.name}")

    def _open_run(self, run: RunDirectory, resume: bool) -> None:
        config = {
            "search": self.kind,
            "config": dataclasses.asdict(self.config),
            "teacher": {
                "kind": self.teacher.kind,
                "architecture": self.teacher.architecture.to_dict(),
                self.teacher.score_name: self.teacher.score,
            },
        }

        def compared(config: dict[str, Any]) -> dict[str, Any]:  # a run may continue on more or fewer cores
            return config | {"config": {key: value for key, value in config["config"].items() if key != "workers"}}

        if run.begin(config, resume, compared=compared):
            self.load_state_dict(load_checkpoint(run.checkpoint, expected_format=CHECKPOINT_FORMAT))

    # -- state -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed search needs, as plain data and tensors."""
        return {
            "format": CHECKPOINT_FORMAT,
            "kind": self.kind,
            "epoch": self.epoch,
            "generator": self.generator.get_state(),
            "candidates": self.candidates,
            "results": self._results,
            "best": self.best,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from what `state_dict` returned."""
        if state.get("kind") != self.kind:
            raise ValueError(f"the checkpoint holds a {state.get('kind')} search, not {self.kind}")
        self.epoch = int(state["epoch"])
        restore_generator(self.generator, state["generator"])
        self.candidates, self._results, self.best = list(state["candidates"]), dict(state["results"]), state["best"]


class N2N(ArchitectureSearch):
    """N2N's two stages: `removal_epochs` epochs of the layer-removal policy on the teacher, then
    `shrinkage_epochs` epochs of the shrinkage policy on the best network stage 1 found."""

    kind = "n2n"

    def __init__(self, teacher: Any, config: N2NConfig | None = None) -> None:
        super().__init__(teacher, config)
        cfg = self.config
        torch.manual_seed(cfg.seed)
        self.removal_policy = RemovalPolicy(5, cfg.policy_hidden_size, cfg.policy_layers)
        self.shrinkage_policy = ShrinkagePolicy(7, cfg.policy_hidden_size, cfg.policy_layers)
        self.removal_optimizer = torch.optim.Adam(self.removal_policy.parameters(), lr=cfg.removal_learning_rate)
        self.shrinkage_optimizer = torch.optim.Adam(self.shrinkage_policy.parameters(), lr=cfg.shrinkage_learning_rate)
        self.baselines: dict[str, float | None] = dict.fromkeys(STAGES)
        self.reduced: Architecture | None = None

    @property
    def total_epochs(self) -> int:
        return self.config.removal_epochs + self.config.shrinkage_epochs

    @property
    def stage(self) -> str:
        """The stage the next epoch belongs to."""
        return STAGES[0] if self.epoch < self.config.removal_epochs else STAGES[1]

    def reduced_architecture(self) -> Architecture:
        """What stage 2 shrinks: the best network stage 1 found (the teacher's if it found none)."""
        if self.reduced is None:
            self.reduced = self.best_architecture() if self.best is not None else self.teacher.architecture
        return self.reduced

    def sample(self) -> tuple[str, torch.Tensor, list[torch.Tensor], list[Architecture]]:
        """The next epoch's stage, policy input, sampled actions and the architectures they give."""
        teacher, rollouts = self.teacher.architecture, self.config.rollouts
        if self.stage == "removal":
            features = layer_features(teacher, teacher)
            actions = [self.removal_policy.sample(features, self.generator) for _ in range(rollouts)]
            return "removal", features, actions, [teacher.remove_layers(a.bool().tolist()) for a in actions]
        reduced = self.reduced_architecture()
        features = shrinkage_features(reduced, teacher)
        actions = [self.shrinkage_policy.sample(features, self.generator) for _ in range(rollouts)]
        return "shrinkage", features, actions, [reduced.shrink([SCALE_CHOICES[i] for i in a.tolist()]) for a in actions]

    def step(self) -> dict[str, float]:
        stage = self.stage
        if stage == "shrinkage" and not self.reduced_architecture().shrinkable:
            self.epoch = self.total_epochs  # only the output layer is left: nothing to shrink
            return {}
        stage, features, actions, architectures = self.sample()
        rewards = self.score(architectures, stage)
        policy, optimizer = (
            (self.removal_policy, self.removal_optimizer)
            if stage == "removal"
            else (self.shrinkage_policy, self.shrinkage_optimizer)
        )
        mean_reward = float(np.mean(rewards))
        baseline = mean_reward if self.baselines[stage] is None else self.baselines[stage]
        loss = reinforce_update(policy, optimizer, features, actions, rewards, baseline)
        decay = self.config.baseline_decay
        self.baselines[stage] = decay * baseline + (1 - decay) * mean_reward
        self.epoch += 1
        return {
            "stage": float(STAGES.index(stage)),
            "reward_mean": mean_reward,
            "reward_max": float(np.max(rewards)),
            "baseline": baseline,
            "policy_loss": loss,
            "valid_fraction": float(np.mean([reward != INVALID_REWARD for reward in rewards])),
            "students_trained": float(self.students_trained),
            "best_reward": self.best["reward"] if self.best is not None else INVALID_REWARD,
        }

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {
            "removal_policy": self.removal_policy.state_dict(),
            "shrinkage_policy": self.shrinkage_policy.state_dict(),
            "removal_optimizer": self.removal_optimizer.state_dict(),
            "shrinkage_optimizer": self.shrinkage_optimizer.state_dict(),
            "baselines": self.baselines,
            "reduced": None if self.reduced is None else self.reduced.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.removal_policy.load_state_dict(state["removal_policy"])
        self.shrinkage_policy.load_state_dict(state["shrinkage_policy"])
        self.removal_optimizer.load_state_dict(state["removal_optimizer"])
        self.shrinkage_optimizer.load_state_dict(state["shrinkage_optimizer"])
        self.baselines = dict(state["baselines"])
        self.reduced = None if state["reduced"] is None else Architecture.from_dict(state["reduced"])


class RandomSearch(ArchitectureSearch):
    """The baseline over N2N's action space: each candidate removes every layer with probability 1/2, then scales
    every shrinkable parameter left by a choice drawn uniformly from `SCALE_CHOICES`; `rollouts` candidates an
    epoch until `students` distinct students are trained (or `max_epochs` pass)."""

    kind = "random"

    def __init__(self, teacher: Any, students: int, config: N2NConfig | None = None, max_epochs: int | None = None):
        super().__init__(teacher, config)
        if students < 1:
            raise ValueError(f"students must be at least 1, got {students}")
        self.students = students
        self.max_epochs = max_epochs or 20 * math.ceil(students / self.config.rollouts)

    @property
    def total_epochs(self) -> int:
        return self.max_epochs

    @property
    def finished(self) -> bool:
        return self.students_trained >= self.students or self.epoch >= self.max_epochs

    def sample_architecture(self) -> Architecture:
        """One candidate drawn uniformly from N2N's action space."""
        teacher = self.teacher.architecture
        keep = torch.rand(len(teacher.layers), generator=self.generator) < 0.5
        reduced = teacher.remove_layers(keep.tolist())
        choices = torch.randint(len(SCALE_CHOICES), (len(reduced.shrinkable),), generator=self.generator)
        return reduced.shrink([SCALE_CHOICES[index] for index in choices.tolist()])

    def step(self) -> dict[str, float]:
        room = self.students - self.students_trained
        architectures = []
        while len(architectures) < min(self.config.rollouts, room):  # never train more students than asked
            architecture = self.sample_architecture()
            architectures.append(architecture)
            if architecture.problem(self.teacher.architecture) is None:
                room -= architecture_key(architecture) not in self._results
        rewards = self.score(architectures, "random")
        self.epoch += 1
        return {
            "reward_mean": float(np.mean(rewards)),
            "reward_max": float(np.max(rewards)),
            "students_trained": float(self.students_trained),
            "best_reward": self.best["reward"] if self.best is not None else INVALID_REWARD,
        }


def uniform_shrink(architecture: Architecture, scale: float) -> Architecture:
    """The baseline of one uniformly narrower network: every hidden layer's width times `scale` (kernels kept)."""
    return architecture.shrink([scale if name == "width" else 1.0 for _, name in architecture.shrinkable])


# ---------------------------------------------------------------------------------------------
# The Pareto front


def pareto_front(params: Sequence[float], scores: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats in both size (fewer) and score (higher), smallest first."""
    order = sorted(range(len(params)), key=lambda index: (params[index], -scores[index]))
    front, best = [], -math.inf
    for index in order:
        if scores[index] > best:
            front.append(index)
            best = scores[index]
    return front


def plot_pareto(
    candidates: Sequence[dict[str, Any]],
    teacher: Any,
    path: str | os.PathLike,
    title: str = "",
    references: dict[str, tuple[int, float]] | None = None,
) -> Path | None:
    """Score against parameters of every trained candidate, the Pareto front, the teacher, and optional
    `references` (label: (params, score)), written to `path`; None when no candidate was valid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    valid = [candidate for candidate in candidates if candidate["score"] is not None]
    if not valid:
        return None
    params = [candidate["params"] for candidate in valid]
    scores = [candidate["score"] for candidate in valid]
    front = pareto_front(params, scores)
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.scatter(params, scores, s=12, alpha=0.5, label="candidates")
    axis.plot([params[i] for i in front], [scores[i] for i in front], "o-", color="C3", label="Pareto front")
    axis.scatter([teacher.architecture.num_params], [teacher.score], marker="*", s=150, color="k", label="teacher")
    for index, (label, (size, score)) in enumerate((references or {}).items()):
        axis.scatter([size], [score], marker="D", s=50, color=f"C{index + 4}", label=label)
    axis.set_xscale("log")
    axis.set_xlabel("parameters")
    axis.set_ylabel(teacher.score_name)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)
