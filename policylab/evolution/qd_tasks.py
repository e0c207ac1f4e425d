"""Quality-diversity tasks: what a solution scores (fitness) and how it behaves (its descriptor).

- `QDPolicyTask`: an MLP policy on the batched MuJoCo engine, the tasks of the QD-RL literature (QDax's names):
  `*_uni` (hopper, walker2d, halfcheetah, ant; descriptor: the fraction of steps each foot touches the floor,
  in [0, 1]^feet, 1000 steps) and `ant_omni` (descriptor: the final x-y position, in [-30, 30]^2, 250 steps, no
  forward reward). Policies see the fraction of the episode left as one more observation. Fitness is the
  episode return; `qd_offset` (QDax's per-step reward offset × episode length) makes fitness + offset
  non-negative for the QD-score.
- `PlanarArmTask`: the arm repertoire, a small analytic task: joint angles in [-π, π]^dof, fitness −variance of
  the angles, descriptor the end effector's position.
"""

from __future__ import annotations

import dataclasses
import math
from functools import cached_property

import gymnasium as gym
import torch

from policylab.core.envs import make_vec_env
from policylab.core.evaluation import evaluate_population
from policylab.core.nets import PopulationMLP
from policylab.evolution.tasks import Evaluations


@dataclasses.dataclass(frozen=True)
class QDTaskSpec:
    """One QD locomotion task: its MuJoCo task, descriptor, episode length, descriptor box and reward offset."""

    env_id: str
    descriptor: str
    """feet_contact or final_xy"""
    episode_length: int
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    reward_offset: float
    """per-step reward offset (QDax's, found experimentally) that keeps rewards non-negative"""
    forward_reward_weight: float | None = None
    """replaces the task's forward reward weight (0 for the omnidirectional task)"""


QD_TASKS: dict[str, QDTaskSpec] = {
    "hopper_uni": QDTaskSpec("Hopper-v5", "feet_contact", 1000, (0.0,), (1.0,), 0.9),
    "walker2d_uni": QDTaskSpec("Walker2d-v5", "feet_contact", 1000, (0.0, 0.0), (1.0, 1.0), 1.413),
    "halfcheetah_uni": QDTaskSpec("HalfCheetah-v5", "feet_contact", 1000, (0.0, 0.0), (1.0, 1.0), 9.231),
    "ant_uni": QDTaskSpec("Ant-v5", "feet_contact", 1000, (0.0,) * 4, (1.0,) * 4, 3.24),
    "ant_omni": QDTaskSpec("Ant-v5", "final_xy", 250, (-30.0, -30.0), (30.0, 30.0), 3.0, forward_reward_weight=0.0),
}


@dataclasses.dataclass
class QDPolicyTask:
    """MLP policies (tanh outputs scaled to the action box) on the QD task `name` (a key of `QD_TASKS`), the
    population run as one batched network on one batched env."""

    name: str
    hidden_sizes: tuple[int, ...] = (128, 128)
    """hidden layer widths of the policies"""
    activation: str = "tanh"
    """hidden activation: tanh or relu"""
    episode_length: int | None = None
    """shorter episodes than the task's (for quick runs; the QD-score offset follows)"""
    backend: str = "mujoco"
    """make_vec_env backend that runs the episodes"""
    threads: int | None = None
    """physics threads of the mujoco backend (default: every usable core)"""

    def __post_init__(self) -> None:
        if self.name not in QD_TASKS:
            raise ValueError(f"unknown QD task {self.name!r}; choose one of {', '.join(QD_TASKS)}")
        self.hidden_sizes = tuple(self.hidden_sizes)
        if self.episode_length is not None and self.episode_length < 1:
            raise ValueError(f"episode_length must be at least 1, got {self.episode_length}")

    @property
    def info(self) -> QDTaskSpec:
        """The task's fixed settings."""
        return QD_TASKS[self.name]

    @property
    def steps(self) -> int:
        """Episode length."""
        return self.episode_length or self.info.episode_length

    @property
    def lower(self) -> tuple[float, ...]:
        """Lower corner of the descriptor box."""
        return self.info.lower

    @property
    def upper(self) -> tuple[float, ...]:
        """Upper corner of the descriptor box."""
        return self.info.upper

    @property
    def reward_offset(self) -> float:
        """Per-step reward offset that keeps rewards non-negative."""
        return self.info.reward_offset

    @property
    def qd_offset(self) -> float:
        """Added to each elite's fitness in the QD-score: the reward offset over a whole episode."""
        return self.info.reward_offset * self.steps

    @property
    def solution_bounds(self) -> None:
        """Policy weights are unbounded."""
        return None

    @cached_property
    def spaces(self) -> tuple[gym.spaces.Box, gym.spaces.Box]:
        """(observation, action) spaces of the task's env, without the time feature."""
        with make_vec_env(self.info.env_id, 1, backend=self.backend) as env:
            return env.single_observation_space, env.single_action_space

    @property
    def observation_dim(self) -> int:
        """Length of what the policy sees: the observation and the fraction of the episode left."""
        return self.spaces[0].shape[0] + 1

    @property
    def action_dim(self) -> int:
        """Length of an action."""
        return self.spaces[1].shape[0]

    @cached_property
    def spec(self) -> PopulationMLP:
        """The policy architecture."""
        return PopulationMLP(self.observation_dim, self.action_dim, self.hidden_sizes, self.activation, "tanh")

    @property
    def num_params(self) -> int:
        """Length of a parameter vector."""
        return self.spec.num_params

    def initial_params(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """`count` random policies (each layer uniform in ±1/sqrt(fan_in), as `nn.Linear` draws it)."""
        return self.spec.initial_params(count, generator)

    def evaluate(
        self, params: torch.Tensor, episodes: int = 1, seed: int = 0, record_transitions: bool = False
    ) -> Evaluations:
        """Fitness (mean return), descriptors and, when asked, every step's transition of each row of `params`."""
        env_kwargs = {} if self.threads is None else {"num_threads": self.threads}
        if self.info.forward_reward_weight is not None:
            env_kwargs["forward_reward_weight"] = self.info.forward_reward_weight
        result = evaluate_population(
            params.float(),
            self.spec,
            self.info.env_id,
            episodes,
            seed,
            self.backend,
            self.steps,
            time_feature=True,
            record_transitions=record_transitions,
            **env_kwargs,
        )
        descriptors = result.mean_feet_contact if self.info.descriptor == "feet_contact" else result.mean_final_xy
        return Evaluations(result.fitness, descriptors, int(result.lengths.sum()), result.transitions)


@dataclasses.dataclass
class PlanarArmTask:
    """The arm repertoire: `dof` joints of unit length; a solution is its joint angles, clipped to [-π, π]. Fitness
    is −variance of the angles (smooth arms are best), the descriptor the end effector's x-y position."""

    dof: int = 10

    @property
    def lower(self) -> tuple[float, float]:
        """Lower corner of the descriptor box (the arm's reach)."""
        return (-float(self.dof), -float(self.dof))

    @property
    def upper(self) -> tuple[float, float]:
        """Upper corner of the descriptor box."""
        return (float(self.dof), float(self.dof))

    @property
    def num_params(self) -> int:
        """Length of a solution."""
        return self.dof

    @property
    def solution_bounds(self) -> tuple[float, float]:
        """Joint angles lie in [-π, π]."""
        return (-math.pi, math.pi)

    @property
    def qd_offset(self) -> float:
        """The largest variance of angles in [-π, π] is π², so fitness + π² is non-negative."""
        return math.pi**2

    def initial_params(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """`count` arms with angles uniform in [-π, π]."""
        return (2 * torch.rand(count, self.dof, generator=generator) - 1) * math.pi

    def evaluate(self, params: torch.Tensor, episodes: int = 1, seed: int = 0) -> Evaluations:
        """Fitness and end-effector positions of each row (deterministic: `episodes` and `seed` do not matter)."""
        angles = params.double().clamp(-math.pi, math.pi)
        cumulative = torch.cumsum(angles, dim=1)
        positions = torch.stack([torch.cos(cumulative).sum(1), torch.sin(cumulative).sum(1)], dim=1)
        fitness = -angles.var(dim=1, unbiased=False)
        return Evaluations(fitness.numpy(), positions.numpy(), 0)


def make_qd_task(name: str, **options) -> QDPolicyTask | PlanarArmTask:
    """A QD task by name: `planar_arm` (option `dof`) or a key of `QD_TASKS` (options of `QDPolicyTask`)."""
    if name == "planar_arm":
        return PlanarArmTask(**options)
    return QDPolicyTask(name, **options)
