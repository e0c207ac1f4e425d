"""TS-DDR (Rosemberg et al., LearningToOptimize/DecisionRules.jl): a neural decision rule for multi-stage LPs.

At stage t the policy maps the noise history (and the realised previous state) to target states x̂_t inside the
state bounds; the stage LP `min c_t + C_δ ‖δ_t‖₁  s.t. x_t + δ_t = x̂_t, ...` realises x_t, which starts stage t+1.
By the envelope theorem the dual λ_t of the target rows is d c_t / d x̂_t, and the dual μ_t of the linking rows is
d c_t / d x_{t-1}. The policy trains by SGD on the surrogate `Σ_t λ_t · x̂_t + μ_t · x_{t-1}` (duals held constant),
backpropagated through the policy over the whole trajectory, with x_t = x̂_t where the target was met: no
differentiable solver. (λ_t alone, the formula usually quoted, sees only stage t: it always says "use the water now".)
C_δ follows an annealed schedule.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from policylab.core.agent import AgentConfig, config_from_dict, config_to_dict, resolve_device
from policylab.core.files import atomic_write
from policylab.core.logging import MetricLogger, progress_bar
from policylab.core.runs import RunDirectory
from policylab.offline_rl.tsddr.rollout import MultiStageProblem, Rollout, StagePool, rollout

CHECKPOINT_FORMAT = "policylab-tsddr/1"
TRAINING_STREAM, VALIDATION_STREAM = 0, 1
"""training batch i is drawn with seed [0, config.seed, i], the validation set with [1, config.seed]"""


@dataclasses.dataclass
class TSDDRConfig(AgentConfig):
    """TS-DDR settings (the paper's: LSTM [32, 32], Adam 1e-3, C_δ = max |cost|, schedule 0.1 → 1 → 10 → 30)."""

    policy: Literal["lstm", "mlp"] = "lstm"
    """decision rule: "lstm" over the noise history, or "mlp" on the current noise and state"""
    hidden_sizes: tuple[int, ...] = (32, 32)
    """hidden layer sizes (LSTM layers or MLP layers)"""
    learning_rate: float = 1e-3
    """Adam step size"""
    batch_size: int = 8
    """scenarios per gradient step"""
    target_penalty: float | None = None
    """C_δ, cost per unit of target violation (default: the stage LP's largest |objective coefficient|)"""
    penalty_schedule: tuple[float, ...] = (0.1, 1.0, 10.0, 30.0)
    """multipliers of C_δ over equal parts of training; evaluation uses the last"""
    target_range: Literal["bounds", "reachable", "reachable-upstream"] = "bounds"
    """sigmoid outputs scaled to the state bounds (the paper), or to the range the problem says is reachable from
    the previous state and the stage's noise (for reservoirs whose capacity dwarfs one stage's flows);
    "reachable-upstream" widens it by what plants upstream could release"""
    validation_scenarios: int = 32
    """scenarios of the validation set that picks the best policy"""
    num_workers: int = 1
    """threads solving a batch's stage LPs (HiGHS releases the GIL)"""


class DifferentiableTrajectory:
    """A `rollout` policy that keeps targets and previous states as tensors, for the duals' surrogate.

    The realised state x_t is the LP's, but where the target was met it is x̂_t itself (there d x_t / d x̂_t = I),
    so the policy's next input and targets depend on x̂_t; elsewhere it is a constant (the effect of a target on
    states that missed theirs is neglected).
    """

    def __init__(
        self,
        step: Callable[[int, np.ndarray, torch.Tensor], torch.Tensor],
        device: torch.device | str = "cpu",
        tolerance: float = 1e-6,
    ):
        self.step, self.device, self.tolerance = step, device, tolerance
        self.targets: list[torch.Tensor] = []
        self.previous: list[torch.Tensor] = []

    def __call__(self, t: int, noise: np.ndarray, previous: np.ndarray) -> np.ndarray:
        realised = torch.as_tensor(previous, dtype=torch.float32, device=self.device)
        if self.targets:
            target = self.targets[-1]
            met = (realised - target.detach()).abs() <= self.tolerance * target.detach().abs().clamp_min(1.0)
            realised = torch.where(met, target, realised)
        self.previous.append(realised)
        self.targets.append(self.step(t, noise, realised))
        return self.targets[-1].detach().cpu().double().numpy()

    def surrogate(self, result: Rollout) -> torch.Tensor:
        """Σ_t λ_t · x̂_t + μ_t · x_{t-1} with the duals held constant: its gradient is the total cost's."""
        target_duals = torch.as_tensor(result.target_duals, dtype=torch.float32, device=self.device)
        state_duals = torch.as_tensor(result.state_duals, dtype=torch.float32, device=self.device)
        return (target_duals * torch.stack(self.targets, dim=1)).sum() + (
            state_duals * torch.stack(self.previous, dim=1)
        ).sum()


class TargetNetwork(nn.Module):
    """Features of stage t -> targets in (0, 1) per state (sigmoid), through LSTM cells or an MLP."""

    def __init__(self, input_dim: int, output_dim: int, hidden_sizes: tuple[int, ...], recurrent: bool):
        super().__init__()
        self.recurrent = recurrent
        sizes = (input_dim, *hidden_sizes)
        if recurrent:
            self.cells = nn.ModuleList(nn.LSTMCell(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        else:
            self.layers = nn.Sequential(
                *(m for a, b in zip(sizes[:-1], sizes[1:]) for m in (nn.Linear(a, b), nn.ReLU()))
            )
        self.head = nn.Linear(sizes[-1], output_dim)

    def forward(self, features: torch.Tensor, memory: list | None) -> tuple[torch.Tensor, list | None]:
        if not self.recurrent:
            return torch.sigmoid(self.head(self.layers(features))), None
        memory = memory or [None] * len(self.cells)
        hidden, new_memory = features, []
        for cell, state in zip(self.cells, memory):
            h, c = cell(hidden, state)
            new_memory.append((h, c))
            hidden = h
        return torch.sigmoid(self.head(hidden)), new_memory


class TSDDR:
    """Train and run a TS-DDR decision rule on a `MultiStageProblem`."""

    def __init__(self, problem: MultiStageProblem, config: TSDDRConfig | None = None):
        self.problem = problem
        self.config = config or TSDDRConfig()
        self.device = resolve_device(self.config.device)
        torch.manual_seed(self.config.seed)
        stage = problem.stage_lp()
        self.base_penalty = self.config.target_penalty or stage.max_abs_cost()
        self.pool = StagePool(stage, self.base_penalty, self.config.num_workers)
        self.lower = torch.as_tensor(stage.state_lower, dtype=torch.float32, device=self.device)
        self.range = torch.as_tensor(stage.state_upper - stage.state_lower, dtype=torch.float32, device=self.device)
        expected = problem.expected_noises()
        self.noise_scale = torch.as_tensor(
            np.maximum(np.abs(expected).mean(axis=0), 1e-6), dtype=torch.float32, device=self.device
        )
        input_dim = expected.shape[1] + stage.num_states + 3
        self.network = TargetNetwork(
            input_dim, stage.num_states, self.config.hidden_sizes, self.config.policy == "lstm"
        )
        self.network.to(self.device)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=self.config.learning_rate)
        self.best_network = {key: value.clone() for key, value in self.network.state_dict().items()}
        self.best_validation_cost = float("inf")
        self.iteration = 0
        self.train_seconds = 0.0

    # ------------------------------------------------------------------ policy

    def _features(self, t: int, noise: np.ndarray, previous: torch.Tensor) -> torch.Tensor:
        """Normalised noise, normalised previous state, and the stage's place in the season and horizon."""
        noise = torch.as_tensor(noise, dtype=torch.float32, device=self.device) / self.noise_scale
        state = (previous - self.lower) / self.range.clamp_min(1e-9)
        phase = 2 * np.pi * t / self.problem.season_length
        clock = torch.tensor([np.sin(phase), np.cos(phase), t / self.problem.num_stages], dtype=torch.float32)
        return torch.cat([noise, state, clock.to(self.device).expand(len(previous), 3)], dim=1)

    def _trajectory(self) -> DifferentiableTrajectory:
        """A fresh rollout policy (new LSTM memory) that records its targets as tensors."""
        memory: list | None = None

        def step(t: int, noise: np.ndarray, previous: torch.Tensor) -> torch.Tensor:
            nonlocal memory
            unit, memory = self.network(self._features(t, noise, previous), memory)
            if self.config.target_range != "bounds":
                noise = torch.as_tensor(noise, dtype=torch.float32, device=self.device)
                upstream = self.config.target_range == "reachable-upstream"
                lower, upper = self.problem.reachable_states(previous, noise, upstream=upstream)
                return lower + (upper - lower) * unit
            return self.lower + self.range * unit

        return DifferentiableTrajectory(step, self.device)

    def target_penalty_at(self, iteration: int, iterations: int) -> float:
        """C_δ during training iteration `iteration` of `iterations`."""
        schedule = self.config.penalty_schedule
        phase = min(len(schedule) - 1, iteration * len(schedule) // max(iterations, 1))
        return self.base_penalty * schedule[phase]

    @property
    def evaluation_penalty(self) -> float:
        return self.base_penalty * self.config.penalty_schedule[-1]

    @torch.no_grad()
    def evaluate(self, noises: np.ndarray, best: bool = True) -> Rollout:
        """Run the policy (the best on validation unless `best=False`) on (S, T, w) noises."""
        current = None
        if best:
            current = {key: value.clone() for key, value in self.network.state_dict().items()}
            self.network.load_state_dict(self.best_network)
        self.pool.set_target_penalty(self.evaluation_penalty)
        result = rollout(self.pool, self._trajectory(), noises, self.problem.initial_state)
        if current is not None:
            self.network.load_state_dict(current)
        return result

    # ---------------------------------------------------------------- training

    def update(self, noises: np.ndarray, target_penalty: float) -> dict[str, float]:
        """One gradient step on a batch of scenarios: roll out, then backpropagate the duals' surrogate."""
        self.pool.set_target_penalty(target_penalty)
        trajectory = self._trajectory()
        result = rollout(self.pool, trajectory, noises, self.problem.initial_state)
        surrogate = trajectory.surrogate(result) / len(noises)
        self.optimizer.zero_grad()
        surrogate.backward()
        self.optimizer.step()
        violation = np.abs(result.targets - result.states).sum(axis=2) / self.range.sum().item()
        return {
            "train/cost": float(result.total_costs.mean()),
            "train/objective": float(result.objectives.sum(axis=1).mean()),
            "train/violation": float(violation.mean()),
            "train/target_penalty": target_penalty,
        }

    def fit(
        self,
        iterations: int,
        eval_every: int = 50,
        run_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool = True,
    ) -> TSDDR:
        """Train for `iterations` gradient steps; validate, keep the best policy and checkpoint every `eval_every`."""
        run = RunDirectory(run_dir) if run_dir is not None else None
        logger = MetricLogger(run.path, tensorboard=False) if run is not None else None
        config = config_to_dict(self.config) | {"iterations": iterations}

        def compared(config: dict) -> dict:  # a run may go on for more iterations, on another device
            return {key: value for key, value in config.items() if key not in ("iterations", "device")}

        if run is not None and run.begin(config, resume, compared=compared):
            self.load_state(torch.load(run.checkpoint, weights_only=True))
            logger.truncate_after(self.iteration)
        validation = self.problem.sample_noises(self.config.validation_scenarios, [VALIDATION_STREAM, self.config.seed])
        bar = progress_bar(iterations, self.iteration, "TS-DDR", progress)
        while self.iteration < iterations:
            started = time.perf_counter()
            seed = [TRAINING_STREAM, self.config.seed, self.iteration]
            noises = self.problem.sample_noises(self.config.batch_size, seed)
            metrics = self.update(noises, self.target_penalty_at(self.iteration, iterations))
            self.iteration += 1
            self.train_seconds += time.perf_counter() - started
            if self.iteration % eval_every == 0 or self.iteration == iterations:
                metrics |= self._validate(validation)
                if run is not None:
                    self.save(run.checkpoint)
            if logger is not None:
                logger.log(self.iteration, metrics | {"time/train_seconds": self.train_seconds})
            bar.update(1)
            bar.set_postfix(cost=f"{metrics['train/cost']:.4g}", violation=f"{metrics['train/violation']:.3f}")
        bar.close()
        return self

    def _validate(self, validation: np.ndarray) -> dict[str, float]:
        cost = float(self.evaluate(validation, best=False).total_costs.mean())
        if cost < self.best_validation_cost:
            self.best_validation_cost = cost
            self.best_network = {key: value.clone() for key, value in self.network.state_dict().items()}
        return {"validation/cost": cost, "validation/best_cost": self.best_validation_cost}

    # ------------------------------------------------------------- checkpoints

    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs, as plain data."""
        return {
            "format": CHECKPOINT_FORMAT,
            "config": config_to_dict(self.config),
            "network": self.network.state_dict(),
            "best_network": self.best_network,
            "optimizer": self.optimizer.state_dict(),
            "best_validation_cost": self.best_validation_cost,
            "iteration": self.iteration,
            "train_seconds": self.train_seconds,
            "solves": self.pool.solves,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a TS-DDR checkpoint (format {CHECKPOINT_FORMAT!r} expected)")
        self.network.load_state_dict(state["network"])
        self.best_network = state["best_network"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.best_validation_cost = state["best_validation_cost"]
        self.iteration = state["iteration"]
        self.train_seconds = state["train_seconds"]

    def save(self, path: str | Path) -> None:
        """Write the resumable state atomically."""
        state = self.state()
        atomic_write(path, lambda file: torch.save(state, file))

    @classmethod
    def load(cls, path: str | Path, problem: MultiStageProblem) -> TSDDR:
        """Rebuild a saved TS-DDR for `problem` (the problem itself is not saved)."""
        state = torch.load(path, weights_only=True)
        agent = cls(problem, config_from_dict(TSDDRConfig, state["config"]))
        agent.load_state(state)
        return agent
