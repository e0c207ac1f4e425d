"""The tabular grid-world family of LPG (Oh et al. 2020) and GROOVE (Jackson et al. 2023), batched in torch.

A level is a square grid of 4 to 13 cells a side with walls, a start cell and up to a few objects at fixed cells.
Every object has a reward, a termination probability and a respawn probability. Each step the agent moves
(0 up, 1 down, 2 left, 3 right, 4 stay; walls and edges block), collects every present object on its new cell
(earning its reward and ending the episode with its termination probability), and every absent object reappears
with its respawn probability (not one collected in this step). Episodes also end after the level's episode length.

Every env of a batch has its own level: `GridLevels` holds the parameters of a batch of levels as tensors, so
thousands of different levels step in one call. The observation is tabular: a one-hot over
(cell, which objects are present), as in the authors' code, plus 0.001 x the episode's time step in a last
coordinate. With `observation="index"` the env returns the one-hot's position and the time feature instead
(`[index, 0.001 t]`): a linear model over the one-hot is a row lookup, so learners need not build it.

Levels: `sample_levels` draws from the random distribution of GROOVE (`LevelDistribution`: size 4-10, 1-5
objects, 15 walls, episode length log-uniform in [20, 750]); `named_levels` builds LPG's tabular levels (dense,
sparse, long, longer, long_dense, with the authors' settings from EmptyJackson/groove; the start and object cells
are drawn per level, as there). Registered ids: `GridWorld-all-v0` (one random level per env, drawn from the
env's seed) and `GridWorld-<name>-v0` for each named level.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from policylab.core.envs.torch_envs import TORCH_TASKS, TorchVecEnv

NUM_ACTIONS = 5
TIME_FEATURE_SCALE = 0.001
MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1), (0, 0))
"""(row, column) change of each action: up, down, left, right, stay"""


@dataclasses.dataclass
class GridLevels:
    """Parameters of a batch of levels, batch-first tensors. Cells are numbered row * size + column in an array
    of `max_size`² cells (the authors' layout); objects past a level's count have `object_present` false."""

    size: torch.Tensor
    """(L,) cells per side"""
    walls: torch.Tensor
    """(L, max_size²) bool, true on wall cells"""
    start: torch.Tensor
    """(L,) the agent's start cell"""
    object_cell: torch.Tensor
    """(L, O) each object's cell"""
    object_present: torch.Tensor
    """(L, O) bool, whether the level has this object"""
    object_reward: torch.Tensor
    """(L, O) reward for collecting the object"""
    object_termination: torch.Tensor
    """(L, O) probability that collecting it ends the episode"""
    object_respawn: torch.Tensor
    """(L, O) per-step probability that it reappears once collected"""
    episode_length: torch.Tensor
    """(L,) steps after which an episode is truncated"""

    def __len__(self) -> int:
        return len(self.size)

    @property
    def max_size(self) -> int:
        """Side of the cell array every level of the batch lives in."""
        return math.isqrt(self.walls.shape[1])

    @property
    def max_objects(self) -> int:
        """Object slots per level."""
        return self.object_cell.shape[1]

    @property
    def num_states(self) -> int:
        """Length of the tabular one-hot: cells x object-presence patterns."""
        return self.walls.shape[1] * 2**self.max_objects

    def select(self, rows: torch.Tensor | slice) -> GridLevels:
        """The levels at `rows`."""
        return GridLevels(**{field: value[rows] for field, value in self.tensors().items()})

    def repeat_interleave(self, repeats: int) -> GridLevels:
        """Each level `repeats` times in a row (one copy per env of an agent)."""
        return GridLevels(**{field: value.repeat_interleave(repeats, 0) for field, value in self.tensors().items()})

    def to(self, device: str | torch.device) -> GridLevels:
        return GridLevels(**{field: value.to(device) for field, value in self.tensors().items()})

    def tensors(self) -> dict[str, torch.Tensor]:
        """The fields by name (also the checkpoint form: `GridLevels(**levels.tensors())`)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    @staticmethod
    def cat(batches: list[GridLevels]) -> GridLevels:
        """Levels of several batches with the same cell array and object slots, in order."""
        fields = [field.name for field in dataclasses.fields(GridLevels)]
        return GridLevels(**{field: torch.cat([getattr(batch, field) for batch in batches]) for field in fields})

    def put(self, rows: torch.Tensor, levels: GridLevels) -> None:
        """Overwrite the levels at `rows` with `levels`, in place."""
        for field, value in self.tensors().items():
            value[rows] = getattr(levels, field).to(value.device)


@dataclasses.dataclass
class LevelDistribution:
    """The random level distribution; defaults are GROOVE's `all` grid worlds."""

    min_size: int = 4
    max_size: int = 10
    min_objects: int = 1
    max_objects: int = 5
    walls: int = 15
    """wall cells drawn uniformly from the max_size² cell array (those outside a smaller grid do nothing)"""
    reward_range: tuple[float, float] = (-1.0, 1.0)
    """object rewards are uniform here, except the first object's, uniform in [0, high]"""
    termination_range: tuple[float, float] = (1e-2, 1.0)
    """log-uniform"""
    respawn_range: tuple[float, float] = (1e-3, 0.1)
    """log-uniform"""
    episode_length_range: tuple[int, int] = (20, 750)
    """log-uniform, rounded"""

    def __post_init__(self) -> None:
        if not 2 <= self.min_size <= self.max_size:
            raise ValueError(f"grid sizes need 2 <= min_size <= max_size, got {self.min_size}, {self.max_size}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"object counts need 1 <= min <= max, got {self.min_objects}, {self.max_objects}")
        if self.max_objects + 1 > self.min_size**2 // 2:
            raise ValueError(f"{self.max_objects} objects and a start cell do not fit a {self.min_size}² grid")
        if not 0 <= self.walls <= self.max_size**2 // 2:
            raise ValueError(f"walls must be between 0 and half the {self.max_size}² cells, got {self.walls}")


def sample_levels(count: int, generator: torch.Generator, distribution: LevelDistribution | None = None) -> GridLevels:
    """`count` levels from the random distribution, drawn with `generator` (on the CPU)."""
    dist = distribution or LevelDistribution()
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    cells, objects = dist.max_size**2, dist.max_objects

    def uniform(shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator)

    def log_uniform(shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
        return uniform(shape, math.log(low), math.log(high)).exp()

    size = torch.randint(dist.min_size, dist.max_size + 1, (count,), generator=generator)
    num_objects = torch.randint(dist.min_objects, dist.max_objects + 1, (count,), generator=generator)
    walls = torch.zeros(count, cells, dtype=torch.bool)
    wall_cells = torch.rand(count, cells, generator=generator).argsort(dim=1)[:, : dist.walls]
    walls.scatter_(1, wall_cells, True)
    inside = torch.arange(cells) < (size**2)[:, None]
    free = inside & ~walls
    # Walls leaving too few free cells (possible on the smallest grids) are thinned out.
    too_full = free.sum(1) < objects + 1
    walls[too_full] &= ~inside[too_full]
    free = inside & ~walls
    # Distinct start and object cells among the free ones.
    keys = torch.rand(count, cells, generator=generator).masked_fill(~free, -1.0)
    chosen = keys.topk(objects + 1, dim=1).indices
    reward = uniform((count, objects), *dist.reward_range)
    reward[:, 0] = uniform((count,), 0.0, dist.reward_range[1])
    length = log_uniform((count,), *dist.episode_length_range).round().long()
    return GridLevels(
        size=size,
        walls=walls,
        start=chosen[:, 0],
        object_cell=chosen[:, 1:],
        object_present=torch.arange(objects) < num_objects[:, None],
        object_reward=reward,
        object_termination=log_uniform((count, objects), *dist.termination_range),
        object_respawn=log_uniform((count, objects), *dist.respawn_range),
        episode_length=length,
    )


@dataclasses.dataclass(frozen=True)
class NamedLevel:
    """One of LPG's hand-designed tabular levels: objects listed one per slot."""

    size: int
    episode_length: int
    object_reward: tuple[float, ...]
    object_termination: tuple[float, ...]
    object_respawn: tuple[float, ...]
    wall_cells: tuple[int, ...] = ()


def _column_wall(size: int, column: int, open_rows: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(row * size + column for row in range(size) if row not in open_rows)


def _row_wall(size: int, row: int, open_columns: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(row * size + column for column in range(size) if column not in open_columns)


NAMED_LEVELS: dict[str, NamedLevel] = {
    # Object types as in the authors' configs, expanded to one entry per object.
    "dense": NamedLevel(11, 500, (1.0, 1.0, -1.0, -1.0), (0.0, 0.0, 0.5, 0.0), (0.05, 0.05, 0.1, 0.5)),
    "sparse": NamedLevel(13, 50, (1.0, -1.0), (1.0, 1.0), (0.0, 0.0)),
    "long": NamedLevel(11, 1000, (1.0, 1.0, -1.0, -1.0), (0.0, 0.0, 0.5, 0.5), (0.01, 0.01, 1.0, 1.0)),
    "longer": NamedLevel(
        9, 2000, (1.0, 1.0, -1.0, -1.0, -1.0), (0.1, 0.1, 0.8, 0.8, 0.8), (0.01, 0.01, 1.0, 1.0, 1.0),
        _column_wall(9, 4, open_rows=(1, 7)),
    ),
    "long_dense": NamedLevel(
        11, 2000, (1.0,) * 4, (0.0,) * 4, (0.005,) * 4,
        tuple(sorted(set(_column_wall(11, 5, open_rows=(0, 7)) + _row_wall(11, 4, open_columns=(2, 8))))),
    ),
}  # fmt: skip


def named_levels(
    name: str,
    count: int,
    generator: torch.Generator,
    max_size: int | None = None,
    max_objects: int | None = None,
) -> GridLevels:
    """`count` copies of LPG's level `name`, each with its own start and object cells drawn with `generator`; the
    cell array and object slots may be padded to `max_size` and `max_objects` (to batch with other levels)."""
    if name not in NAMED_LEVELS:
        raise ValueError(f"unknown grid-world level {name!r}; choose one of {', '.join(NAMED_LEVELS)}")
    level = NAMED_LEVELS[name]
    max_size, objects = max_size or level.size, len(level.object_reward)
    max_objects = max_objects or objects
    if max_size < level.size or max_objects < objects:
        raise ValueError(f"{name} needs max_size >= {level.size} and max_objects >= {objects}")
    cells = max_size**2
    walls = torch.zeros(count, cells, dtype=torch.bool)
    walls[:, list(level.wall_cells)] = True
    free = (torch.arange(cells) < level.size**2) & ~walls
    keys = torch.rand(count, cells, generator=generator).masked_fill(~free, -1.0)
    chosen = keys.topk(max_objects + 1, dim=1).indices

    def per_object(values: tuple[float, ...]) -> torch.Tensor:
        padded = torch.zeros(max_objects)
        padded[:objects] = torch.tensor(values)
        return padded.expand(count, -1).clone()

    return GridLevels(
        size=torch.full((count,), level.size),
        walls=walls,
        start=chosen[:, 0],
        object_cell=chosen[:, 1:],
        object_present=(torch.arange(max_objects) < objects).expand(count, -1).clone(),
        object_reward=per_object(level.object_reward),
        object_termination=per_object(level.object_termination),
        object_respawn=per_object(level.object_respawn),
        episode_length=torch.full((count,), level.episode_length),
    )


class GridWorld(TorchVecEnv):
    """A batch of grid-world levels, one per env (`levels`, or drawn by the class's `level_source` from `seed`).

    State per env (int64): the agent's cell, one presence flag per object slot, and the episode's time step.
    """

    env_id = "GridWorld-v0"
    state_dtype = torch.int64
    level_source: str = "all"
    """`all` (the random distribution) or a name of `NAMED_LEVELS`: where levels come from when none are given"""

    def __init__(
        self,
        num_envs: int | None = None,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        levels: GridLevels | None = None,
        observation: Literal["one-hot", "index"] = "one-hot",
        distribution: LevelDistribution | None = None,
    ):
        if levels is None:
            if num_envs is None:
                raise ValueError("GridWorld needs num_envs or levels")
            generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed() % 2**62)
            if self.level_source == "all":
                levels = sample_levels(num_envs, generator, distribution)
            else:
                levels = named_levels(self.level_source, num_envs, generator)
        if num_envs is not None and num_envs != len(levels):
            raise ValueError(f"num_envs={num_envs} differs from the {len(levels)} levels given")
        if observation not in ("one-hot", "index"):
            raise ValueError(f"observation must be 'one-hot' or 'index', got {observation!r}")
        self.observation = observation
        self.num_states = levels.num_states
        self.state_shape = (levels.max_objects + 2,)
        self.max_episode_steps = int(levels.episode_length.max())
        size = self.num_states + 1 if observation == "one-hot" else 2
        self.single_observation_space = gym.spaces.Box(0.0, np.inf, (size,), np.float32)
        self.single_action_space = gym.spaces.Discrete(NUM_ACTIONS)
        super().__init__(len(levels), device=device, seed=seed)
        self.levels = levels.to(self.device)
        self.next_cell = move_table(self.levels)
        """(num_envs, cells, 5): the cell each action leads to"""
        self.presence_weights = 2 ** torch.arange(self.levels.max_objects, device=self.device)

    def set_levels(self, env_rows: torch.Tensor, levels: GridLevels) -> torch.Tensor:
        """Put `levels` into the envs at `env_rows` and start new episodes there; returns every env's observation."""
        if self.state is None:
            raise RuntimeError(f"{self.env_id}: call reset() before set_levels()")
        levels = levels.to(self.device)
        self.levels.put(env_rows, levels)
        self.next_cell[env_rows] = move_table(levels)
        self.state[env_rows] = self._sample_initial_state(self.num_envs)[env_rows]
        self.elapsed_steps[env_rows] = 0
        return self.observations()

    def observations(self) -> torch.Tensor:
        """The observations of the envs' current states."""
        return self._observations(self.state)

    def _sample_initial_state(self, count: int) -> torch.Tensor:
        if count != self.num_envs:
            raise ValueError("grid-world initial states are per level: reset every env at once")
        presence = self.levels.object_present.long()
        zeros = torch.zeros_like(self.levels.start)
        return torch.cat([self.levels.start[:, None], presence, zeros[:, None]], dim=1)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if seed is not None and not isinstance(seed, int):
            raise ValueError("GridWorld.reset takes one int seed (start states are the levels' own)")
        return super().reset(seed=seed, options=options)

    def _dynamics(self, state: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        levels = self.levels
        cell, present, time = state[:, 0], state[:, 1:-1].bool(), state[:, -1]
        rows = torch.arange(self.num_envs, device=self.device)
        cell = self.next_cell[rows, cell, actions.long()]
        collected = present & (levels.object_cell == cell[:, None])
        reward = (levels.object_reward * collected).sum(1)
        termination_probability = (levels.object_termination * collected).sum(1)
        terminated = self._random(self.num_envs) < termination_probability
        respawned = self._random(present.shape) < levels.object_respawn
        present = (present | respawned) & ~collected & levels.object_present
        next_state = torch.cat([cell[:, None], present.long(), (time + 1)[:, None]], dim=1)
        return next_state, reward, terminated

    def _episode_step_limits(self) -> torch.Tensor:
        return self.levels.episode_length

    def tabular_index(self, state: torch.Tensor) -> torch.Tensor:
        """Position of each state in the one-hot: cell + cells x (presence flags as a binary number)."""
        return state[:, 0] + self.levels.walls.shape[1] * (state[:, 1:-1] * self.presence_weights).sum(1)

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        index = self.tabular_index(state)
        time_feature = TIME_FEATURE_SCALE * state[:, -1].float()
        if self.observation == "index":
            return torch.stack([index.float(), time_feature], dim=1)
        one_hot = torch.zeros(self.num_envs, self.num_states + 1, device=self.device)
        one_hot[torch.arange(self.num_envs, device=self.device), index] = 1.0
        one_hot[:, -1] = time_feature
        return one_hot

    def _random(self, shape: int | tuple[int, ...]) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=self.device)


def move_table(levels: GridLevels) -> torch.Tensor:
    """(L, cells, 5): the cell each action leads to from each cell of each level (edges and walls block)."""
    size = levels.size[:, None]
    cells = torch.arange(levels.walls.shape[1], device=levels.size.device)
    row, column = cells // size, cells % size
    moves = []
    for row_change, column_change in MOVES:
        new_row = torch.minimum((row + row_change).clamp(min=0), size - 1)
        new_column = torch.minimum((column + column_change).clamp(min=0), size - 1)
        target = new_row * size + new_column
        moves.append(torch.where(levels.walls.gather(1, target), cells, target))
    return torch.stack(moves, dim=-1)


def _register(name: str) -> str:
    env_id = f"GridWorld-{name}-v0"
    if name == "all":
        dist = LevelDistribution()
        cells, objects, length = dist.max_size**2, dist.max_objects, dist.episode_length_range[1]
    else:
        level = NAMED_LEVELS[name]
        cells, objects, length = level.size**2, len(level.object_reward), level.episode_length
    TORCH_TASKS[env_id] = type(
        f"GridWorld{name.title().replace('_', '')}",
        (GridWorld,),
        {
            "env_id": env_id,
            "level_source": name,
            "max_episode_steps": length,
            "single_observation_space": gym.spaces.Box(0.0, np.inf, (cells * 2**objects + 1,), np.float32),
            "single_action_space": gym.spaces.Discrete(NUM_ACTIONS),
        },
    )
    return env_id


GRID_WORLD_IDS = [_register(name) for name in ("all", *NAMED_LEVELS)]
