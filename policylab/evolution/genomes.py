"""Seed-chain genomes: a parameter vector stored as the random seeds that made it.

A genome is a tuple of integers: the seed of its initial parameters, then one seed per mutation, so that
θ₀ = init(seed₀) and θ_g = θ_{g−1} + σ·ε(seed_g). The noise ε comes from a counter-based generator (Philox keyed
by the seed, Box-Muller on its raw bits), so any process rebuilds any genome without a shared table and without
state. Weights are float32 and every step is the same elementwise operation, so a genome rebuilt from scratch
equals, bit for bit, the one built from a cached parent.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import torch

Genome = tuple[int, ...]
SEED_BOUND = 2**63
"""seeds are drawn from [0, SEED_BOUND)"""


def counter_uniform(seed: int, size: int) -> np.ndarray:
    """`size` uniform float64 numbers in [0, 1) that depend on `seed` alone (Philox keyed by the seed)."""
    raw = np.random.Philox(key=seed % SEED_BOUND).random_raw(size)
    return (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53


def counter_normal(seed: int, size: int) -> np.ndarray:
    """`size` standard normal float64 numbers that depend on `seed` alone (Box-Muller on `counter_uniform`)."""
    uniform = counter_uniform(seed, 2 * ((size + 1) // 2)).reshape(-1, 2)
    radius = np.sqrt(-2.0 * np.log1p(-uniform[:, 0]))  # 1 - u lies in (0, 1]
    angle = 2.0 * np.pi * uniform[:, 1]
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).reshape(-1)[:size]


class GenomeDecoder:
    """Turns genomes into float32 parameter vectors, keeping the parents of recent batches so that each child
    costs one mutation.

    `initial_params(seed)` gives θ₀ (a float32 vector); `mutation_power` is σ. `cache_size` bounds how many
    decoded parents are kept (least recently used go first).
    """

    def __init__(
        self, initial_params: Callable[[int], torch.Tensor], mutation_power: float, cache_size: int = 64
    ) -> None:
        if mutation_power <= 0:
            raise ValueError(f"mutation_power must be positive, got {mutation_power}")
        self.initial_params = initial_params
        self.mutation_power = mutation_power
        self.cache_size = cache_size
        self.cache: OrderedDict[Genome, torch.Tensor] = OrderedDict()
        self.mutations_applied = 0
        """mutations computed so far (the work the cache saves shows here)"""

    def mutate(self, params: torch.Tensor, seed: int) -> torch.Tensor:
        """θ + σ·ε(seed), in float32."""
        self.mutations_applied += 1
        noise = torch.from_numpy(counter_normal(seed, params.numel()).astype(np.float32))
        return params + self.mutation_power * noise

    def decode(self, genome: Genome) -> torch.Tensor:
        """The parameter vector of one genome, built from its longest cached prefix."""
        if not genome:
            raise ValueError("a genome holds at least its initialisation seed")
        start = next((length for length in range(len(genome), 0, -1) if genome[:length] in self.cache), 0)
        if start:
            params = self.cache[genome[:start]]
            self.cache.move_to_end(genome[:start])
        else:
            params, start = self.initial_params(genome[0]), 1
        for seed in genome[start:]:
            params = self.mutate(params, seed)
        return params

    def decode_batch(self, genomes: Sequence[Genome]) -> torch.Tensor:
        """Parameter vectors (P, num_params) of many genomes; each parent is built once and cached."""
        for parent in dict.fromkeys(genome[:-1] for genome in genomes if len(genome) > 1):
            if parent not in self.cache:
                self.cache[parent] = self.decode(parent)
            self.cache.move_to_end(parent)
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
        return torch.stack([self.decode(genome) for genome in genomes])


def encoding_size_ratio(genome: Genome, num_params: int) -> float:
    """How many times smaller the genome (8 bytes per seed) is than its float32 weights."""
    return 4 * num_params / (8 * len(genome))
