"""MAP-Elites archives: a descriptor space cut into cells, each holding its fittest solution (its elite).

`GridArchive` cuts the space into a regular grid, `CVTArchive` into the Voronoi cells of centroids placed by
k-means on uniform samples (a centroidal Voronoi tessellation). Both keep solutions, fitness and descriptors as
tensors on one device and insert a whole batch with a few vectorised operations.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


@dataclasses.dataclass
class Insertion:
    """What one `add` did, per solution of the batch: `added` is True where the solution became its cell's elite,
    `new_cell` where that cell was empty before."""

    cells: torch.Tensor
    added: torch.Tensor
    new_cell: torch.Tensor


class Archive:
    """Elites of `num_cells` cells of the box [lower, upper] of descriptors. Subclasses say which cell a descriptor
    falls in (`cell_of`) and where each cell's centre lies (`centroids`). Empty cells have fitness −inf."""

    def __init__(
        self,
        centroids: torch.Tensor,
        lower: Sequence[float],
        upper: Sequence[float],
        solution_dim: int,
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.lower = torch.as_tensor(lower, dtype=torch.float64, device=self.device).reshape(-1)
        self.upper = torch.as_tensor(upper, dtype=torch.float64, device=self.device).reshape(-1)
        if self.lower.shape != self.upper.shape or not bool((self.lower < self.upper).all()):
            raise ValueError(f"descriptor bounds need lower < upper in every dimension, got {lower} and {upper}")
        self.centroids = centroids.to(device=self.device, dtype=torch.float64)
        self.solution_dim = solution_dim
        self.solutions = torch.zeros(self.num_cells, solution_dim, device=self.device)
        self.fitness = torch.full((self.num_cells,), -math.inf, dtype=torch.float64, device=self.device)
        self.descriptors = torch.zeros(self.num_cells, self.descriptor_dim, dtype=torch.float64, device=self.device)

    @property
    def num_cells(self) -> int:
        """Number of cells."""
        return self.centroids.shape[0]

    @property
    def descriptor_dim(self) -> int:
        """Length of a descriptor."""
        return self.lower.numel()

    @property
    def filled(self) -> torch.Tensor:
        """Mask (num_cells,) of the cells that hold an elite."""
        return torch.isfinite(self.fitness)

    def __len__(self) -> int:
        return int(self.filled.sum())

    def cell_of(self, descriptors: torch.Tensor) -> torch.Tensor:
        """Cell index (B,) of each descriptor (B, D); descriptors outside the box go to the nearest border cell."""
        raise NotImplementedError

    def add(self, solutions: Any, fitness: Any, descriptors: Any) -> Insertion:
        """Insert a batch: each cell keeps the fittest of its current elite and the batch's solutions that fall in
        it (a tie with the elite keeps the elite; a tie inside the batch keeps the earliest solution)."""
        solutions = torch.as_tensor(solutions, dtype=torch.float32, device=self.device)
        fitness = torch.as_tensor(fitness, dtype=torch.float64, device=self.device).reshape(-1)
        descriptors = torch.as_tensor(descriptors, dtype=torch.float64, device=self.device).reshape(len(fitness), -1)
        if solutions.shape != (len(fitness), self.solution_dim) or descriptors.shape[1] != self.descriptor_dim:
            raise ValueError(
                f"expected solutions ({len(fitness)}, {self.solution_dim}) and descriptors ({len(fitness)}, "
                f"{self.descriptor_dim}), got {tuple(solutions.shape)} and {tuple(descriptors.shape)}"
            )
        if not bool(torch.isfinite(fitness).all() and torch.isfinite(descriptors).all()):
            raise ValueError("fitness or descriptors hold NaN or infinite values: check the task's evaluation")
        cells = self.cell_of(descriptors)
        batch_best = torch.full_like(self.fitness, -math.inf).scatter_reduce(0, cells, fitness, "amax")
        is_batch_best = fitness == batch_best[cells]
        rows = torch.arange(len(fitness), device=self.device)
        first_best = torch.full((self.num_cells,), len(fitness), device=self.device)
        first_best = first_best.scatter_reduce(0, cells[is_batch_best], rows[is_batch_best], "amin")
        winners = is_batch_best & (first_best[cells] == rows) & (fitness > self.fitness[cells])
        new_cell = winners & ~self.filled[cells]
        self.solutions[cells[winners]] = solutions[winners]
        self.fitness[cells[winners]] = fitness[winners]
        self.descriptors[cells[winners]] = descriptors[winners]
        return Insertion(cells, winners, new_cell)

    def sample(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` elites drawn uniformly with replacement: (solutions (count, S), descriptors (count, D))."""
        cells = self.filled.nonzero().squeeze(1)
        if len(cells) == 0:
            raise RuntimeError("cannot sample from an empty archive: add solutions first")
        chosen = cells[torch.randint(len(cells), (count,), generator=generator, device=generator.device)]
        return self.solutions[chosen], self.descriptors[chosen]

    def qd_score(self, offset: float = 0.0) -> float:
        """Sum over filled cells of (fitness + offset); the offset makes every term non-negative."""
        return float((self.fitness[self.filled] + offset).sum())

    def coverage(self) -> float:
        """Fraction of cells filled."""
        return len(self) / self.num_cells

    def max_fitness(self) -> float:
        """Best fitness in the archive (−inf when empty)."""
        return float(self.fitness.max())

    def empty_copy(self) -> Archive:
        """An archive with the same cells and no elites."""
        empty = copy.copy(self)
        empty.solutions = torch.zeros_like(self.solutions)
        empty.fitness = torch.full_like(self.fitness, -math.inf)
        empty.descriptors = torch.zeros_like(self.descriptors)
        return empty

    def normalize(self, descriptors: torch.Tensor) -> torch.Tensor:
        """Descriptors mapped from the box [lower, upper] to [-1, 1]."""
        lower, upper = self.lower.to(descriptors), self.upper.to(descriptors)
        return 2 * (descriptors - lower) / (upper - lower) - 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The elites and the cell layout."""
        names = ("centroids", "solutions", "fitness", "descriptors")
        return {name: getattr(self, name) for name in names}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the elites saved by `state_dict` (the cell layout must be the same)."""
        if not torch.equal(state["centroids"].to(self.centroids), self.centroids):
            raise ValueError("the saved archive has another cell layout (bounds, cells or CVT seed differ)")
        for name in ("solutions", "fitness", "descriptors"):
            getattr(self, name).copy_(state[name])


class GridArchive(Archive):
    """A regular grid of `cells_per_dimension` cells along each descriptor dimension."""

    def __init__(
        self,
        cells_per_dimension: Sequence[int],
        lower: Sequence[float],
        upper: Sequence[float],
        solution_dim: int,
        device: str | torch.device = "cpu",
    ) -> None:
        self.shape = tuple(int(cells) for cells in cells_per_dimension)
        if len(self.shape) != len(lower) or min(self.shape) < 1:
            raise ValueError(f"give a positive number of cells for each of the {len(lower)} descriptor dimensions")
        axes = [
            low + (np.arange(cells) + 0.5) * (high - low) / cells for cells, low, high in zip(self.shape, lower, upper)
        ]
        centres = np.stack([grid.reshape(-1) for grid in np.meshgrid(*axes, indexing="ij")], axis=1)
        super().__init__(torch.from_numpy(centres), lower, upper, solution_dim, device)
        self._shape = torch.tensor(self.shape, device=self.device)

    def cell_of(self, descriptors: torch.Tensor) -> torch.Tensor:
        scaled = (descriptors - self.lower) / (self.upper - self.lower) * self._shape
        coordinates = torch.minimum(scaled.floor().long().clamp(min=0), self._shape - 1)
        strides = torch.tensor([math.prod(self.shape[axis + 1 :]) for axis in range(len(self.shape))])
        return (coordinates * strides.to(self.device)).sum(1)


class CVTArchive(Archive):
    """The Voronoi cells of `num_cells` centroids: k-means (scipy's `kmeans2`, 20 Lloyd iterations started from
    random sample points) on `samples` points drawn uniformly in the box with `seed`, so a seed always gives the
    same centroids."""

    def __init__(
        self,
        num_cells: int,
        lower: Sequence[float],
        upper: Sequence[float],
        solution_dim: int,
        samples: int = 50_000,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(cvt_centroids(num_cells, lower, upper, samples, seed), lower, upper, solution_dim, device)

    def cell_of(self, descriptors: torch.Tensor) -> torch.Tensor:
        return torch.cdist(descriptors.clamp(self.lower, self.upper), self.centroids).argmin(1)


def cvt_centroids(
    num_cells: int, lower: Sequence[float], upper: Sequence[float], samples: int = 50_000, seed: int = 0
) -> torch.Tensor:
    """Centroids (num_cells, D) of a centroidal Voronoi tessellation of the box, by k-means on uniform samples."""
    from scipy.cluster.vq import kmeans2

    if samples < num_cells:
        raise ValueError(f"a CVT of {num_cells} cells needs at least as many samples, got {samples}")
    rng = np.random.default_rng(seed)
    points = rng.uniform(lower, upper, size=(samples, len(lower)))
    centroids, _ = kmeans2(points, num_cells, iter=20, minit="points", rng=rng)  # "++" takes minutes for 1024 cells
    return torch.from_numpy(centroids)
