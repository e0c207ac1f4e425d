"""Run directories: resolved config, metrics, atomic checkpoints, final evaluation and plots in one place.

runs/td3bc-hopper/
  config.json        what was run (agent config and loop settings)
  metrics.csv        training and evaluation metrics by step (tensorboard/ too when installed)
  checkpoint.pt      the latest resumable state, replaced atomically
  agent.pt           the final agent, loadable with `policylab.load`
  evaluation.json    the final evaluation, every episode
  eval_return_mean.png
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from policylab.core.files import atomic_write
from policylab.core.logging import MetricLogger, progress_bar


class RunDirectory:
    """Paths and small atomic writers for one run's outputs."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoint(self) -> Path:
        """The resumable checkpoint."""
        return self.path / "checkpoint.pt"

    @property
    def final_agent(self) -> Path:
        """The trained agent."""
        return self.path / "agent.pt"

    def write_json(self, name: str, data: Any) -> Path:
        """Write `data` as indented JSON to `<run>/<name>`, atomically."""
        path = self.path / name
        text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
        atomic_write(path, lambda file: file.write(text.encode()))
        return path

    def read_json(self, name: str) -> Any:
        """Read `<run>/<name>` written by `write_json`."""
        return json.loads((self.path / name).read_text())

    def begin(
        self,
        config: dict[str, Any],
        resume: bool,
        checkpoint: Path | None = None,
        compared: Callable[[dict[str, Any]], Any] = lambda config: config,
    ) -> bool:
        """Start or continue the run of `config`, and record it as config.json. Returns True when `checkpoint`
        (default `self.checkpoint`) exists and `resume` asks to continue from it (the caller then loads it), after
        checking that `compared(config)` is the same for the recorded and the current config (as JSON); raises
        when a checkpoint exists and `resume` is False, or when the configurations differ."""
        checkpoint = self.checkpoint if checkpoint is None else checkpoint
        config = json.loads(json.dumps(config, default=str))
        continuing = checkpoint.exists()
        if continuing and not resume:
            raise FileExistsError(
                f"{self.path} already holds a run: pass resume=True (--resume) to continue it, "
                "or choose another run directory"
            )
        if continuing:
            recorded, current = compared(self.read_json("config.json")), compared(config)
            if recorded != current:
                raise ValueError(
                    f"cannot resume {self.path}: it was started with a different configuration "
                    f"(config.json there: {recorded}; now: {current})"
                )
        self.write_json("config.json", config)
        return continuing


def run_iterations(
    step: Callable[[], dict[str, float]],
    done: Callable[[], int],
    total: int,
    run: RunDirectory | None,
    save_checkpoint: Callable[[], None],
    *,
    description: str,
    unit: str,
    postfix: Callable[[dict[str, float]], dict[str, Any]] = lambda stats: {},
    finished: Callable[[], bool] | None = None,
    checkpoint_every: int = 1,
    index_key: str | None = None,
    progress: bool = True,
) -> None:
    """The loop of a method that advances one iteration at a time (a generation, an epoch, a meta-update).

    Calls `step()` until `finished()` (default: `done()` iterations reach `total`), with a progress bar of `total`
    `unit`s. With a `run` (already begun and, when resumed, restored by the caller) each iteration's stats go to
    metrics.csv under the index of that iteration (`done() - 1`; `index_key`, a stat that repeats it, is left out),
    rows beyond a resumed checkpoint are dropped first, and `save_checkpoint()` runs every `checkpoint_every`
    iterations and after the last one.
    """
    finished = finished or (lambda: done() >= total)
    logger = None
    if run is not None:
        logger = MetricLogger(run.path, tensorboard=False)
        logger.truncate_after(done() - 1)
    with progress_bar(total, done(), description, progress) as bar:
        bar.unit = unit
        while not finished():
            stats = step()
            bar.update(1)
            bar.set_postfix(postfix(stats))
            if logger is not None:
                logger.log(done() - 1, {key: value for key, value in stats.items() if key != index_key})
                if done() % checkpoint_every == 0 or finished():
                    save_checkpoint()
