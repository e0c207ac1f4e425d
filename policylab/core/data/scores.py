"""D4RL reference returns, normalised scores, and the Gymnasium task and dataset kind behind a dataset id."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import numpy as np

# (REF_MIN_SCORE, REF_MAX_SCORE) per task, from D4RL's `d4rl/infos.py` (Farama-Foundation/D4RL).
# D4RL gives every dataset of a locomotion task (random ... medium-expert, v0/v1/v2) the same pair.
REFERENCE_RETURNS: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
    "antmaze": (0.0, 1.0),
    "maze2d-umaze": (23.85, 161.86),
    "maze2d-medium": (13.13, 277.39),
    "maze2d-large": (6.7, 273.99),
    "maze2d-umaze-dense": (68.537689, 193.66285642381482),
    "maze2d-medium-dense": (44.264742, 297.4552547777125),
    "maze2d-large-dense": (30.569041, 303.4857382709002),
}

# The Gymnasium MuJoCo v5 task a dataset of each locomotion family is evaluated on.
GYMNASIUM_ENV_IDS: dict[str, str] = {
    "hopper": "Hopper-v5",
    "halfcheetah": "HalfCheetah-v5",
    "walker2d": "Walker2d-v5",
    "ant": "Ant-v5",
}

DATASET_PREFIXES = ("d4rl/", "gen/")

# D4RL's kinds of locomotion dataset, which the `gen/` datasets copy.
DATASET_KINDS = ("random", "medium", "medium-replay", "expert", "medium-expert")
# A kind as a whole "-"-separated word of a name; longer kinds first, so "medium-replay" is not read as "medium".
_KIND_IN_NAME = re.compile(rf"(?:^|-)(?P<kind>{'|'.join(sorted(DATASET_KINDS, key=len, reverse=True))})(?=-|\.|$)")


class UnknownTaskError(ValueError):
    """A task or dataset id with no known D4RL reference returns."""


def task_family(task_or_id: str) -> str:
    """Reduces "d4rl/hopper-medium-v2", "gen/...", "Hopper-v5" or "maze2d-large-v1" to a task key."""
    name = task_or_id.strip().lower()
    for prefix in DATASET_PREFIXES:
        name = name.removeprefix(prefix)
    parts = name.split("-")
    if parts[0] == "maze2d" and len(parts) > 1:
        return f"maze2d-{parts[1]}-dense" if "dense" in parts else f"maze2d-{parts[1]}"
    return parts[0]


def dataset_kind(dataset_id_or_path: str) -> str | None:
    """The kind of dataset (one of `DATASET_KINDS`) an id or file name names, or None: "gen/hopper-medium-v0-200k"
    is "medium", "d4rl/walker2d-medium-replay-v2" and ".../walker2d_medium_replay-v2.hdf5" are "medium-replay".
    Maze ids have none: the "medium" of "antmaze-medium-play-v2" or "maze2d-medium-v1" is the maze's size."""
    name = PurePosixPath(dataset_id_or_path.strip().lower()).name.replace("_", "-")
    if "maze" in task_family(name):
        return None
    match = _KIND_IN_NAME.search(name)
    return match["kind"] if match else None


def reference_returns(task_or_id: str) -> tuple[float, float] | None:
    """D4RL's (min, max) reference returns for a task or dataset id, or None when there are none."""
    return REFERENCE_RETURNS.get(task_family(task_or_id))


def normalized_score(task_or_id: str, returns: float | np.ndarray) -> float | np.ndarray:
    """D4RL's normalised score 100·(R − min)/(max − min): 0 is a random policy, 100 an expert."""
    reference = reference_returns(task_or_id)
    if reference is None:
        raise UnknownTaskError(
            f"no D4RL reference returns for {task_or_id!r}; known tasks: {', '.join(REFERENCE_RETURNS)}. "
            "Pass an id such as 'hopper-medium-v2', 'd4rl/walker2d-expert-v2', 'gen/hopper-medium-v0' "
            "or 'HalfCheetah-v5'"
        )
    low, high = reference
    scores = 100.0 * (np.asarray(returns, dtype=np.float64) - low) / (high - low)
    return float(scores) if scores.ndim == 0 else scores


def env_id_for_dataset(dataset_id: str) -> str | None:
    """The Gymnasium task for a "d4rl/..." or "gen/..." locomotion dataset id, e.g. "Hopper-v5"; else None."""
    if not dataset_id.startswith(DATASET_PREFIXES):
        return None
    return GYMNASIUM_ENV_IDS.get(task_family(dataset_id))
