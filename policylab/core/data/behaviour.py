"""The behaviour policies shipped for the `gen/*` MuJoCo datasets, made by `benchmarks/train_behaviour.py`."""

from __future__ import annotations

from pathlib import Path

BEHAVIOUR_DIR = Path(__file__).resolve().parents[2] / "data" / "behaviour"


def behaviour_file(task: str, directory: Path = BEHAVIOUR_DIR) -> Path:
    """The file holding a task's actors (random, medium, expert and the replay series)."""
    return directory / f"{task.lower()}.pt"
