"""Emitters: the variation operators of MAP-Elites. Each iteration the scheduler asks every emitter for offspring
(`ask`), evaluates them all, adds them to the archive, then tells every emitter the whole evaluated batch (`tell`),
so learning emitters train on every transition, whichever emitter made the solution.

This module holds the interface and the iso-line GA emitter (Vassiliades & Mouret, 2018); the policy-gradient
emitters of PGA-MAP-Elites and DCG-MAP-Elites live in their own modules.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from policylab.evolution.archives import Archive, Insertion
from policylab.evolution.tasks import Evaluations


@dataclasses.dataclass
class Offspring:
    """Solutions an emitter proposes (B, S), and the descriptor each was meant to reach (B, D; NaN rows where the
    emitter aimed at none)."""

    solutions: torch.Tensor
    intended_descriptors: torch.Tensor


@dataclasses.dataclass
class EvaluatedBatch:
    """An iteration's whole batch after evaluation and insertion: the asked offspring, their evaluations and what the
    archive did with them. `intended_descriptors` is filled with the achieved descriptor where none was aimed at."""

    offspring: Offspring
    evaluations: Evaluations
    insertion: Insertion

    @property
    def descriptors(self) -> torch.Tensor:
        """Achieved descriptors (B, D)."""
        return torch.as_tensor(self.evaluations.behaviours, dtype=torch.float64)

    @property
    def intended_descriptors(self) -> torch.Tensor:
        """Intended descriptors (B, D), the achieved one where the emitter aimed at none."""
        intended = self.offspring.intended_descriptors.to(torch.float64)
        return torch.where(torch.isnan(intended), self.descriptors, intended)


class Emitter:
    """A variation operator: `ask` proposes `batch_size` solutions from the archive, `tell` sees the evaluated
    batch (and may learn from it). `needs_transitions` asks the evaluator for every step of every episode."""

    batch_size: int
    needs_transitions: bool = False

    def ask(self, archive: Archive, generator: torch.Generator) -> Offspring:
        """Offspring of elites of `archive`."""
        raise NotImplementedError

    def tell(self, batch: EvaluatedBatch, archive: Archive, own: slice) -> dict[str, float]:
        """Learn from the evaluated batch, whose rows `own` are this emitter's offspring (an empty slice in the
        first, random iteration); returns metrics to log."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from what `state_dict` returned."""


def no_intended_descriptors(count: int, archive: Archive) -> torch.Tensor:
    """NaN intended descriptors (count, D): offspring that aim at no descriptor."""
    return torch.full((count, archive.descriptor_dim), float("nan"), dtype=torch.float64, device=archive.device)


class IsoLineEmitter(Emitter):
    """The iso-line GA variation: for two elites x₁, x₂ drawn uniformly,
    x = x₁ + σ_iso·N(0, I) + σ_line·N(0, 1)·(x₂ − x₁), clipped to `bounds` when the solutions are bounded."""

    def __init__(
        self,
        batch_size: int,
        iso_sigma: float = 0.005,
        line_sigma: float = 0.05,
        bounds: tuple[float, float] | None = None,
    ) -> None:
        if batch_size < 1 or iso_sigma < 0 or line_sigma < 0:
            raise ValueError("the iso-line emitter needs batch_size >= 1 and non-negative iso_sigma, line_sigma")
        self.batch_size, self.iso_sigma, self.line_sigma, self.bounds = batch_size, iso_sigma, line_sigma, bounds

    def ask(self, archive: Archive, generator: torch.Generator) -> Offspring:
        first, _ = archive.sample(self.batch_size, generator)
        second, _ = archive.sample(self.batch_size, generator)
        device = first.device
        iso = torch.randn(first.shape, generator=generator, device=device)
        line = torch.randn((self.batch_size, 1), generator=generator, device=device)
        children = first + self.iso_sigma * iso + self.line_sigma * line * (second - first)
        if self.bounds is not None:
            children = children.clamp(*self.bounds)
        return Offspring(children, no_intended_descriptors(self.batch_size, archive))

    def tell(self, batch: EvaluatedBatch, archive: Archive, own: slice) -> dict[str, float]:
        """How many of its offspring became elites."""
        return {"ga_added": int(batch.insertion.added[own].sum())}
