"""The agent contract every policylab method keeps, and its single-file checkpoints.

An agent holds its config (a dataclass), its spaces, and torch modules and optimisers as plain
attributes. `save` finds those attributes itself, so a method never writes checkpoint code:

    agent.save("runs/x/agent.pt")
    agent = policylab.load("runs/x/agent.pt")
    action, _ = agent.predict(obs, deterministic=True)

Checkpoints hold only tensors, numbers, strings, lists and dicts, and are read with
`torch.load(weights_only=True)`: loading one can never run code. The class to rebuild is looked
up by name in the registry that `register_agent` fills, never imported from a path in the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import types
import typing
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from policylab.core.files import atomic_write
from policylab.core.logging import MetricLogger, plot_learning_curve
from policylab.core.nets import gaussian_log_prob
from policylab.core.runs import RunDirectory

CHECKPOINT_FORMAT = "policylab-agent/1"
AgentType = TypeVar("AgentType", bound="Agent")
_AGENT_CLASSES: dict[str, type[Agent]] = {}
# Modules whose import registers the library's own agents; `load` imports them on demand.
_AGENT_PACKAGES = (
    "policylab.offline_rl",
    "policylab.online_rl",
    "policylab.evolution",
    "policylab.compression",
)


def register_agent(name: str):
    """Class decorator: record an agent class under `name` so checkpoints and the CLI can find it."""

    def decorate(cls: type[AgentType]) -> type[AgentType]:
        if name in _AGENT_CLASSES and _AGENT_CLASSES[name] is not cls:
            raise ValueError(f"agent name {name!r} is already registered by {_AGENT_CLASSES[name].__qualname__}")
        cls.algorithm_name = name
        _AGENT_CLASSES[name] = cls
        return cls

    return decorate


def registered_agents() -> dict[str, type[Agent]]:
    """All registered agent classes by name, with the library's own families imported."""
    _import_families()
    return dict(_AGENT_CLASSES)


def _import_families() -> None:
    import importlib

    for package in _AGENT_PACKAGES:
        try:
            importlib.import_module(package)
        except ModuleNotFoundError as error:
            if error.name != package:  # the family exists but something it needs is missing
                raise


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`"auto"` means CUDA when present, else CPU; anything else is passed to `torch.device`."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global random generators' state, in a form `torch.load(weights_only=True)` accepts."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    numpy_state = np.random.get_state()
    state["numpy"] = {
        "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
        "pos": int(numpy_state[2]),
        "has_gauss": int(numpy_state[3]),
        "cached_gaussian": float(numpy_state[4]),
    }
    python_state = random.getstate()
    state["python"] = {
        "version": python_state[0],
        "internal": list(python_state[1]),
        "gauss": python_state[2],
    }
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["internal"]), python_state["gauss"]))


# ---------------------------------------------------------------------------------------------
# Configs and spaces as plain data


def restore_generator(generator: torch.Generator, state: torch.Tensor) -> None:
    """Restore a torch generator's saved state. A state saved on another kind of device (a CUDA generator's
    Philox state read back on the CPU, or the reverse) does not fit: the generator is then seeded from that state, so
    a run resumed on another device still draws a seed-determined stream, though not the one an uninterrupted run
    would have drawn (a warning says so)."""
    state = state.cpu()
    if state.numel() == generator.get_state().numel():
        generator.set_state(state)
        return
    digest = hashlib.sha256(state.numpy().tobytes()).digest()
    generator.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    warnings.warn(
        f"a random generator was saved on another kind of device than {generator.device}; it is reseeded from the "
        "saved state, so the random draws after this resume differ from an uninterrupted run's",
        stacklevel=2,
    )


@dataclasses.dataclass
class AgentConfig:
    """Fields every agent config has; method configs subclass it and add the paper's settings."""

    seed: int = 0
    """seed of network initialisation, sampling and exploration"""
    device: str = "auto"
    """torch device: "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:1", ..."""


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as JSON-friendly data (tuples become lists)."""
    return dataclasses.asdict(config)


def recorded_defaults(config_class: type) -> dict[str, Any]:
    """The default of each field of a config dataclass that has one, as a run's config.json records it."""
    defaults = {}
    for field in dataclasses.fields(config_class):
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory()
    return json.loads(json.dumps(defaults, default=str))


def config_from_dict(config_class: type, values: Mapping[str, Any]) -> Any:
    """Rebuild a config dataclass from `config_to_dict` output; unknown keys are an error."""
    fields = {field.name: field for field in dataclasses.fields(config_class)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"{config_class.__name__} has no field(s) {sorted(unknown)}; known: {sorted(fields)}")
    hints = typing.get_type_hints(config_class)
    converted = {}
    for name, value in values.items():
        origin = typing.get_origin(hints[name])
        if origin is types.UnionType or origin is typing.Union:
            origin = next(
                (typing.get_origin(arg) for arg in typing.get_args(hints[name]) if arg is not type(None)),
                None,
            )
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, Mapping):
            converted[name] = config_from_dict(hints[name], value)  # a nested config (PGD's agent settings)
        else:
            converted[name] = tuple(value) if origin is tuple and isinstance(value, list) else value
    return config_class(**converted)


def space_to_dict(space: gym.Space) -> dict[str, Any]:
    """A Box or Discrete space as plain data."""
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "low": torch.from_numpy(np.asarray(space.low, dtype=np.float64)),
            "high": torch.from_numpy(np.asarray(space.high, dtype=np.float64)),
            "dtype": np.dtype(space.dtype).name,
        }
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    raise TypeError(f"cannot record a {type(space).__name__} space; agents support Box and Discrete spaces")


def space_from_dict(values: Mapping[str, Any]) -> gym.Space:
    """Inverse of `space_to_dict`."""
    if values["type"] == "Box":
        dtype = np.dtype(values["dtype"])
        return gym.spaces.Box(values["low"].numpy().astype(dtype), values["high"].numpy().astype(dtype), dtype=dtype)
    if values["type"] == "Discrete":
        return gym.spaces.Discrete(values["n"], start=values["start"])
    raise ValueError(f"unknown space type {values['type']!r} in checkpoint")


# ---------------------------------------------------------------------------------------------
# Checkpoint files


def save_checkpoint(payload: Mapping[str, Any], path: str | os.PathLike) -> None:
    """`torch.save` a dict of plain data atomically."""
    atomic_write(path, lambda file: torch.save(dict(payload), file))


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", expected_format: str = CHECKPOINT_FORMAT
) -> dict[str, Any]:
    """Read a checkpoint safely: anything but tensors and plain data (a pickled object) is refused, and so is a file
    whose "format" is not `expected_format` (an agent's by default)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises UnpicklingError for forbidden globals, others for corruption
        raise ValueError(
            f"refusing to load {path}: it is not a plain-data policylab checkpoint ({error.__class__.__name__}: "
            f"{str(error).splitlines()[0]}). Only files written by policylab's save() can be loaded."
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        found = payload.get("format") if isinstance(payload, dict) else None
        raise ValueError(f"{path} is not a policylab checkpoint of format {expected_format!r} (found {found!r})")
    return payload


# ---------------------------------------------------------------------------------------------
# The agent


class Agent:
    """Base class of every agent: `act`, `predict`, `save`, and state capture for checkpoints.

    Subclasses set `config_class`, build their modules and optimisers as attributes in
    `__init__(observation_space, action_space, config)`, and implement `_policy(observations)`
    (a batch of float tensors in, a batch of actions out).
    """

    config_class: ClassVar[type[AgentConfig]]
    algorithm_name: ClassVar[str] = ""

    def __init__(
        self, observation_space: gym.Space, action_space: gym.Space, config: AgentConfig | None = None
    ) -> None:
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} expects a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.observation_space = observation_space
        self.action_space = action_space
        self.device = resolve_device(self.config.device)
        self.num_updates = 0
        seed_everything(self.config.seed)

    # -- acting ---------------------------------------------------------------------------------

    def _policy(self, observations: torch.Tensor, deterministic: bool) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def act(self, observations: np.ndarray | torch.Tensor, deterministic: bool = True) -> np.ndarray:
        """Actions for one observation or a batch (numpy in, numpy out), clipped to the action space."""
        obs = torch.as_tensor(np.asarray(observations, dtype=np.float32), device=self.device)
        expected = self.observation_space.shape
        single = obs.shape == expected
        if not single and tuple(obs.shape[1:]) != expected:
            raise ValueError(
                f"observation shape {tuple(obs.shape)} does not match the agent's observation space {expected} "
                f"(or a batch of it, [batch, *{expected}])"
            )
        actions = self._policy(obs.unsqueeze(0) if single else obs, deterministic).cpu().numpy()
        if isinstance(self.action_space, gym.spaces.Box):
            actions = np.clip(actions, self.action_space.low, self.action_space.high)
        return actions[0] if single else actions

    def action_log_likelihood(
        self, observations: torch.Tensor, actions: torch.Tensor, deterministic_std: float = 1.0
    ) -> torch.Tensor:
        """log π(a | s) per row, differentiable in `actions` (observations and actions in the env's units). A
        deterministic policy is read as the Gaussian N(π(s), `deterministic_std`²); stochastic agents override this
        with their own density."""
        with torch.no_grad():
            mean = self._policy(observations, deterministic=True)
        return gaussian_log_prob(actions, mean, torch.full_like(mean, math.log(deterministic_std)))

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """Stable-Baselines3's signature: `(actions, next_state)`; feed-forward agents return `state` unchanged."""
        return self.act(observation, deterministic=deterministic), state

    # -- state ----------------------------------------------------------------------------------

    def _stateful_attributes(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        return {
            name: value
            for name, value in vars(self).items()
            if isinstance(value, nn.Module | torch.optim.Optimizer | torch.optim.lr_scheduler.LRScheduler)
        }

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser states and update counter, as plain data."""
        state = {name: value.state_dict() for name, value in self._stateful_attributes().items()}
        state["num_updates"] = self.num_updates
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        attributes = self._stateful_attributes()
        missing = set(attributes) - set(state)
        if missing:
            raise ValueError(f"checkpoint lacks state for {sorted(missing)} of {type(self).__name__}")
        for name, value in attributes.items():
            value.load_state_dict(state[name])
        self.num_updates = int(state["num_updates"])

    def checkpoint_payload(self) -> dict[str, Any]:
        """Everything `policylab.load` needs to rebuild this agent, as plain data."""
        from policylab import __version__

        return {
            "format": CHECKPOINT_FORMAT,
            "policylab_version": __version__,
            "algorithm": self.algorithm_name,
            "config": config_to_dict(self.config),
            "observation_space": space_to_dict(self.observation_space),
            "action_space": space_to_dict(self.action_space),
            "agent": self.state_dict(),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Save config, spaces, weights, optimiser states and the library version to one file, atomically."""
        save_checkpoint(self.checkpoint_payload(), path)

    # -- run directories (shared by the offline and online loops) ----------------------------------

    def _open_run(
        self, run: RunDirectory, logger: MetricLogger, settings: dict[str, Any], resume: bool
    ) -> dict[str, Any] | None:
        """Record the run's config; when resuming, restore agent and random state from the checkpoint and
        return its payload (None for a fresh run). `settings` are the loop's arguments."""
        config = {"algorithm": self.algorithm_name, "agent": config_to_dict(self.config), **settings}
        defaults = recorded_defaults(self.config_class)

        def compared(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
            # A run may continue on another device, and a field added to the config since it began changes
            # nothing while it keeps its default: fields at their defaults are left out on both sides.
            agent = config["agent"]
            left_out = {"device"} | {key for key, value in agent.items() if key in defaults and defaults[key] == value}
            return config["algorithm"], {key: value for key, value in agent.items() if key not in left_out}

        if not run.begin(config, resume, compared=compared):
            return None
        payload = load_checkpoint(run.checkpoint)
        self.load_state_dict(payload["agent"])
        set_rng_state(payload["training"]["rng"])
        logger.truncate_after(int(payload["training"]["step"]))
        return payload

    def _save_run_checkpoint(self, run: RunDirectory, step: int, training: dict[str, Any]) -> None:
        """Write the resumable checkpoint `_open_run` reads: the agent, the loop's `step`, the global random
        state, and the loop's own `training` state."""
        payload = self.checkpoint_payload()
        payload["training"] = {"step": step, "rng": rng_state(), **training}
        save_checkpoint(payload, run.checkpoint)

    def _finish_run(self, run: RunDirectory, logger: MetricLogger, result: Any) -> None:
        """Save the final agent and evaluation, close the metrics and plot the learning curve."""
        self.save(run.final_agent)
        if result is not None:
            run.write_json("evaluation.json", result.to_dict())
        logger.close()
        plot_learning_curve(run.path)

    @classmethod
    def from_spaces(cls, observation_space: gym.Space, action_space: gym.Space, config: AgentConfig) -> Agent:
        """An untrained agent for these spaces (how checkpoints are rebuilt)."""
        return cls(observation_space, action_space, config)

    @classmethod
    def from_checkpoint_payload(cls, payload: Mapping[str, Any], device: str | None = None) -> Agent:
        """Rebuild the agent recorded in a checkpoint payload (any registered class)."""
        agents = registered_agents()
        name = payload["algorithm"]
        if name not in agents:
            raise ValueError(f"checkpoint was written by unknown agent {name!r}; known agents: {sorted(agents)}")
        agent_class = agents[name]
        config_values = dict(payload["config"])
        if device is not None:
            config_values["device"] = device
        config = config_from_dict(agent_class.config_class, config_values)
        agent = agent_class.from_spaces(
            space_from_dict(payload["observation_space"]), space_from_dict(payload["action_space"]), config
        )
        if not isinstance(agent, cls):
            raise TypeError(f"checkpoint holds a {agent_class.__name__}, not a {cls.__name__}")
        agent.load_state_dict(payload["agent"])
        return agent

    @classmethod
    def load(cls: type[AgentType], path: str | os.PathLike, device: str | None = None) -> AgentType:
        """Load an agent saved by `save` (the class is read from the file)."""
        return cls.from_checkpoint_payload(load_checkpoint(path), device=device)  # type: ignore[return-value]


def load(path: str | os.PathLike, device: str | None = None) -> Agent:
    """Rebuild any policylab agent from a file written by `Agent.save`."""
    return Agent.load(path, device=device)
