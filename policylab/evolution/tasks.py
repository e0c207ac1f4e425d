"""What a population method evaluates: a policy on a `make_vec_env` task, or any function of a parameter vector.

A task maps a batch of parameter vectors (P, num_params) to `Evaluations`. Its results depend only on the vectors
and the seed: member i's episode r runs on env seed `seed + i * episodes + r`, so a shard [a, b) evaluated with
`seed + a * episodes` equals rows [a, b) of the whole batch, whichever process evaluates it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import cached_property
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from policylab.core.envs import make_vec_env, supported_backends
from policylab.core.evaluation import PopulationTransitions, evaluate_population
from policylab.core.nets import PopulationMLP, PopulationNatureCNN
from policylab.evolution.genomes import counter_normal, counter_uniform
from policylab.evolution.policy import population_network


@dataclasses.dataclass
class Evaluations:
    """Outcomes of a batch: fitness (P,), behaviour descriptors (P, B) when the task has them, env steps taken, and
    every step's transition when asked for (off-policy learners of quality-diversity methods train on them)."""

    fitness: np.ndarray
    behaviours: np.ndarray | None = None
    env_steps: int = 0
    transitions: PopulationTransitions | None = None

    @staticmethod
    def concatenate(parts: list[Evaluations]) -> Evaluations:
        """Join the evaluations of consecutive shards."""
        behaviours = None if parts[0].behaviours is None else np.concatenate([part.behaviours for part in parts])
        steps = sum(part.env_steps for part in parts)
        transitions = None
        if parts[0].transitions is not None:
            offsets = np.cumsum([0] + [len(part.fitness) for part in parts[:-1]]).tolist()
            transitions = PopulationTransitions.concatenate([part.transitions for part in parts], offsets)
        return Evaluations(np.concatenate([part.fitness for part in parts]), behaviours, steps, transitions)


@dataclasses.dataclass
class PolicyTask:
    """A policy network on task `env_id` (`population_network`: an MLP with tanh outputs scaled to the action box,
    or on Atari games the Nature-DQN CNN), the population run as one batched network on one batched env
    (`evaluate_population`). Fitness is the mean episode return; the behaviour is the final x-y position
    ("final_xy") or each foot's contact fraction ("feet_contact") of locomotion tasks."""

    env_id: str
    hidden_sizes: tuple[int, ...] = (64, 64)
    """hidden layer widths of the policy"""
    activation: str = "tanh"
    """hidden activation: tanh or relu"""
    backend: str = "auto"
    """make_vec_env backend (auto: the fastest that runs the task)"""
    max_episode_steps: int | None = None
    """shorter episodes than the task's own limit"""
    behaviour: str = "final_xy"
    """behaviour descriptor for novelty search: final_xy or feet_contact"""
    threads: int | None = None
    """physics threads of the mujoco backend (default: every usable core)"""

    def __post_init__(self) -> None:
        self.hidden_sizes = tuple(self.hidden_sizes)
        if self.behaviour not in ("final_xy", "feet_contact"):
            raise ValueError(f"unknown behaviour {self.behaviour!r}; choose final_xy or feet_contact")

    @cached_property
    def spaces(self) -> tuple[gym.Space, gym.Space]:
        """(observation, action) spaces of one env."""
        with make_vec_env(self.env_id, 1, backend=self.backend) as env:
            return env.single_observation_space, env.single_action_space

    @cached_property
    def spec(self) -> PopulationMLP | PopulationNatureCNN:
        """The policy architecture."""
        return population_network(*self.spaces, self.hidden_sizes, self.activation)

    @property
    def num_params(self) -> int:
        """Length of a parameter vector."""
        return self.spec.num_params

    @cached_property
    def _initial_bounds(self) -> np.ndarray:
        return self.spec.initial_bounds().numpy()

    def initial_params(self, seed: int) -> torch.Tensor:
        """θ₀ of `seed`: each layer uniform in ±1/sqrt(fan_in), as `nn.Linear` and `nn.Conv2d` draw it (float32)."""
        uniform = counter_uniform(seed, self.num_params)
        return torch.from_numpy(((2 * uniform - 1) * self._initial_bounds).astype(np.float32))

    def evaluate(self, params: torch.Tensor, episodes: int, seed: int) -> Evaluations:
        """Fitness and behaviour of every row of `params` over `episodes` episodes each."""
        env_kwargs = {} if self.threads is None or self._backend != "mujoco" else {"num_threads": self.threads}
        result = evaluate_population(
            params, self.spec, self.env_id, episodes, seed, self._backend, self.max_episode_steps, **env_kwargs
        )
        behaviours = result.mean_final_xy if self.behaviour == "final_xy" else result.mean_feet_contact
        return Evaluations(result.fitness, behaviours, int(result.lengths.sum()))

    @property
    def _backend(self) -> str:
        return supported_backends(self.env_id)[0] if self.backend == "auto" else self.backend


@dataclasses.dataclass
class FunctionTask:
    """Maximise `function(vector)` over parameter vectors of length `num_params`. The function returns a float, or
    (float, behaviour array) for novelty search. Initial vectors are `initial_std`·N(0, I) around `center`."""

    function: Callable[[np.ndarray], Any]
    num_params: int
    initial_std: float = 1.0
    center: np.ndarray | None = None

    def initial_params(self, seed: int) -> torch.Tensor:
        """θ₀ of `seed` (float32)."""
        vector = self.initial_std * counter_normal(seed, self.num_params)
        if self.center is not None:
            vector = vector + np.asarray(self.center, dtype=np.float64)
        return torch.from_numpy(vector.astype(np.float32))

    def evaluate(self, params: torch.Tensor, episodes: int, seed: int) -> Evaluations:
        """One call of the function per row (`episodes` and `seed` do not matter to a deterministic function)."""
        outputs = [self.function(row) for row in params.double().numpy()]
        if outputs and isinstance(outputs[0], tuple):
            fitness = np.array([float(output[0]) for output in outputs])
            return Evaluations(fitness, np.array([np.asarray(output[1], dtype=np.float64) for output in outputs]))
        return Evaluations(np.array([float(output) for output in outputs]))
