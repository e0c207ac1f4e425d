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
from pathlib import Path
from typing import Any

from policylab.core.files import atomic_write


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

    def record_config(self, config: Any, resume: bool, checkpoint: Path | None = None) -> bool:
        """Write `config` to config.json; returns whether the run continues from `checkpoint` (default
        checkpoint.pt). A checkpoint there without `resume`, or a resume with another config, is an error."""
        checkpoint = checkpoint or self.checkpoint
        config = json.loads(json.dumps(config, default=str))
        if checkpoint.exists():
            if not resume:
                raise FileExistsError(
                    f"{self.path} already holds a run: pass resume=True (--resume) to continue it, "
                    "or choose another run directory"
                )
            if self.read_json("config.json") != config:
                raise ValueError(f"cannot resume {self.path}: it was started with a different configuration")
        self.write_json("config.json", config)
        return checkpoint.exists()

    def write_json(self, name: str, data: Any) -> Path:
        """Write `data` as indented JSON to `<run>/<name>`, atomically."""
        path = self.path / name
        text = json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"
        atomic_write(path, lambda file: file.write(text.encode()))
        return path

    def read_json(self, name: str) -> Any:
        """Read `<run>/<name>` written by `write_json`."""
        return json.loads((self.path / name).read_text())
