"""Metrics of a run: a CSV file (and TensorBoard when installed), progress bars and learning-curve plots."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from tqdm.auto import tqdm

from policylab.core.files import atomic_path


class MetricLogger:
    """Appends rows of `{metric: value}` keyed by step to `metrics.csv`, and to TensorBoard if it is installed.

    A metric first seen after the header was written extends the header (the file is rewritten once).
    """

    def __init__(self, run_dir: str | os.PathLike, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.columns: list[str] = []
        if self.path.exists():
            with self.path.open(newline="") as file:
                self.columns = next(csv.reader(file), [])
        self.writer = _tensorboard_writer(self.path.parent) if tensorboard else None

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Write one row of metrics at `step`."""
        row = {"step": step, **metrics}
        if not self.columns or any(key not in self.columns for key in row):
            self._extend_header([key for key in row if key not in self.columns])
        with self.path.open("a", newline="") as file:
            csv.DictWriter(file, self.columns).writerow(row)
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def _extend_header(self, new_columns: list[str]) -> None:
        rows = self.read()
        self.columns = ["step"] + [key for key in self.columns + new_columns if key != "step"]
        _write_rows(self.path, self.columns, rows)

    def read(self) -> list[dict[str, str]]:
        """All rows written so far."""
        if not self.path.exists():
            return []
        with self.path.open(newline="") as file:
            return list(csv.DictReader(file))

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (work lost with a killed run, redone on resume)."""
        rows = [row for row in self.read() if int(row["step"]) <= step]
        if self.columns:
            _write_rows(self.path, self.columns, rows)

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self.writer is not None:
            self.writer.close()


def _write_rows(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    with atomic_path(path) as temporary, temporary.open("w", newline="") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        writer.writerows(rows)


def _tensorboard_writer(log_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        return None
    return SummaryWriter(log_dir=str(log_dir / "tensorboard"))


class MetricAccumulator:
    """Running means of per-update metrics kept as device tensors; read back to the host only by `means()`.

    Updates that report the same metric names are summed as one stacked tensor (one add per update).
    """

    def __init__(self) -> None:
        self.sums: dict[tuple[str, ...], torch.Tensor] = {}
        self.counts: dict[tuple[str, ...], int] = {}

    def add(self, metrics: Mapping[str, torch.Tensor]) -> None:
        """Accumulate one update's metrics (no host synchronisation)."""
        if not metrics:
            return
        names = tuple(metrics)
        values = torch.stack([value.detach().float() for value in metrics.values()])
        self.sums[names] = self.sums[names] + values if names in self.sums else values
        self.counts[names] = self.counts.get(names, 0) + 1

    def means(self) -> dict[str, float]:
        """Means since the last call, in one device-to-host transfer; resets the accumulator."""
        if not self.sums:
            return {}
        groups = list(self.sums)
        flat = torch.cat([self.sums[names] for names in groups]).tolist()
        totals: dict[str, float] = {}
        counts: dict[str, int] = {}
        offset = 0
        for names in groups:
            for name in names:
                totals[name] = totals.get(name, 0.0) + flat[offset]
                counts[name] = counts.get(name, 0) + self.counts[names]
                offset += 1
        self.sums.clear()
        self.counts.clear()
        return {name: totals[name] / counts[name] for name in totals}


def progress_bar(total: int, initial: int = 0, description: str = "", enabled: bool = True) -> tqdm:
    """A tqdm bar for long work (hidden when `enabled` is false)."""
    return tqdm(total=total, initial=initial, desc=description, disable=not enabled, dynamic_ncols=True, unit="step")


def plot_learning_curve(run_dir: str | os.PathLike, metric: str = "eval/return_mean") -> Path | None:
    """Plot `metric` against steps from a run's metrics.csv into `<metric>.png`; None when never logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    points = [
        (int(row["step"]), float(row[metric]))
        for row in MetricLogger(run_dir, tensorboard=False).read()
        if row.get(metric)
    ]
    if not points:
        return None
    steps, values = zip(*points)
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(steps, values, marker="o")
    axis.set_xlabel("step")
    axis.set_ylabel(metric)
    axis.set_title(run_dir.name)
    axis.grid(alpha=0.3)
    path = run_dir / f"{metric.replace('/', '_')}.png"
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
