"""Novelty search's archive: behaviour descriptors seen so far, and how far a new behaviour lies from them."""

from __future__ import annotations

import numpy as np
import torch


class NoveltyArchive:
    """Behaviour descriptors kept for novelty search. The novelty of a behaviour is its mean distance to its
    `neighbours` nearest behaviours among the archive and the rest of the current batch."""

    def __init__(self, neighbours: int = 10, behaviours: np.ndarray | None = None) -> None:
        if neighbours < 1:
            raise ValueError(f"neighbours must be at least 1, got {neighbours}")
        self.neighbours = neighbours
        self.behaviours = np.zeros((0, 0)) if behaviours is None else np.asarray(behaviours, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.behaviours)

    def novelty(self, batch: np.ndarray) -> np.ndarray:
        """Novelty (P,) of each row of `batch` (P, B) against the archive and the other rows."""
        batch = np.asarray(batch, dtype=np.float64)
        reference = np.concatenate([batch, self.behaviours]) if len(self) else batch
        distances = torch.cdist(torch.from_numpy(batch), torch.from_numpy(reference)).numpy()
        distances[np.arange(len(batch)), np.arange(len(batch))] = np.inf  # a row is not its own neighbour
        count = min(self.neighbours, len(reference) - 1)
        if count < 1:
            return np.zeros(len(batch))
        return np.sort(distances, axis=1)[:, :count].mean(axis=1)

    def add(self, behaviours: np.ndarray) -> None:
        """Keep these behaviour descriptors (B columns each)."""
        behaviours = np.asarray(behaviours, dtype=np.float64)
        if len(behaviours):
            self.behaviours = np.concatenate([self.behaviours, behaviours]) if len(self) else behaviours
