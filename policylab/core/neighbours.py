"""Exact nearest-neighbour search over a dataset's (β·state, action) keys, for queries at the dataset's own states.

PRDC's actor asks, at every step and for every state s_j of its batch, which dataset pair (s_i, a_i) is
nearest to (s_j, π(s_j)) under d² = β²‖s_j − s_i‖² + ‖π(s_j) − a_i‖². The query's state is always a dataset
state, and that makes an exact search cheap:

- once, for every dataset state j, the `num_candidates` nearest dataset states (in state space, j itself
  among them) and their squared distances are found with a KD-tree over the states; r_j is the last one's;
- per query, d² is computed to those candidates only, and only its action part is new work (each state's
  candidate actions and state distances are stored together, K × (1 + action dim) floats per state: 512 MB
  for 1M Hopper states at K = 32, read as one row per query); every other
  pair i has ‖s_j − s_i‖ ≥ r_j, hence d² ≥ β²r_j², so when the best candidate has d*² ≤ β²r_j² it is the
  exact nearest neighbour (ties aside);
- the queries where the bound does not settle it (a policy action far from the actions of nearby states)
  try a second, wider tier: the `num_wide_candidates` nearest states, whose keys are compared in full,
  with the same bound at the last one's distance (an option, `num_wide_candidates`: its lists take long to
  build in high dimension, 39 minutes for Hopper's 1M 11-dimensional states, and where the first tier leaves
  many queries unsettled the full search below answers them faster);
- next, what earlier full searches found: a CPU full search of many queries returns each query's
  `num_remembered` nearest keys, kept for its state with the query's action a₀ and the last one's distance R.
  Every other key is at least R from that old query, so at least R − ‖a − a₀‖ from a new query (β·s_j, a) at
  the same state; when the best of the remembered keys (and of the first tier) is nearer than that, it is
  exact. A policy changes little between two visits of a state, so most revisits are settled here;
- what that does not settle either is answered by a full search: on a GPU a chunked brute force; on the CPU,
  for many queries, matrix products (the distance expansion, whose rounding is bounded, the keys within that
  bound of the K-th best re-ranked exactly) or a KD-tree over all keys, whichever is faster on the dataset's
  keys (timed once: the tree in low dimension, the products in high), for a few the KD-tree bounded by the
  candidate distance.

The candidate lists depend only on the states and the tier sizes, so they are kept in cache files per
dataset and reused by later runs.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from policylab.core.files import atomic_path, cache_dir


def neighbour_cache_dir() -> Path:
    """Where candidate lists are kept: $POLICYLAB_DATA/neighbours, else ~/.cache/policylab/neighbours."""
    return cache_dir("neighbours")


def state_neighbours(
    states: np.ndarray, count: int, cache: bool = True, all_distances: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """For every row of `states`: the indices of its `count` nearest rows (int32 [N, count] below 2³¹ rows, else
    int64; nearest first, itself among them unless it has more than `count` duplicates) and their squared
    distances (float32 [N, count], or only the last one's [N, 1] without `all_distances`); read from the cache
    when computed before."""
    states = np.ascontiguousarray(states, dtype=np.float32)
    count = min(count, len(states))
    digest = hashlib.blake2b(states.tobytes(), digest_size=16).hexdigest()
    kept = "" if all_distances else "-last"
    path = neighbour_cache_dir() / f"{digest}-{states.shape[0]}x{states.shape[1]}-k{count}{kept}.npz"
    if cache and path.is_file():
        with np.load(path) as saved:
            return saved["indices"], saved["squared_distances"]
    distances, indices = cKDTree(states).query(states, k=count, workers=-1)
    indices = indices.reshape(len(states), count).astype(np.int32 if len(states) < 2**31 else np.int64)
    squared_distances = (distances.reshape(len(states), count) ** 2).astype(np.float32)
    if not all_distances:
        squared_distances = np.ascontiguousarray(squared_distances[:, -1:])
    if cache:
        with atomic_path(path) as temporary, open(temporary, "wb") as file:
            np.savez(file, indices=indices, squared_distances=squared_distances)
    return indices, squared_distances


MANY_QUERIES = 16
"""CPU full searches of at least this many queries return each query's nearest keys (to remember them), by matrix
products or the KD-tree, whichever is faster on the dataset; fewer go to the KD-tree for the nearest key alone"""


class DatasetNeighbourSearch:
    """Exact nearest (β·state, action) key of a dataset for queries (β·s_j, a) at its own states s_j.

    `states` are the (normalised) states the keys are built from, `actions` the dataset's actions; both on
    the device the queries come from.
    """

    def __init__(
        self,
        states: torch.Tensor,
        actions: torch.Tensor,
        beta: float,
        num_candidates: int = 32,
        cache: bool = True,
        num_wide_candidates: int = 0,
        num_remembered: int = 16,
    ) -> None:
        if states.shape[0] != actions.shape[0]:
            raise ValueError(
                f"states have {states.shape[0]} rows but actions {actions.shape[0]}: pass one per transition"
            )
        self.beta = float(beta)
        self.device = states.device
        self.keys = torch.cat([self.beta * states, actions], dim=1).float().contiguous()
        self.actions = actions.float().contiguous()
        states_array = states.cpu().numpy()
        candidates, squared_distances = state_neighbours(states_array, num_candidates, cache=cache)
        self.candidates = torch.as_tensor(candidates, device=self.device)
        self.num_candidates = self.candidates.shape[1]
        # The state part of a query's distance to each candidate, β²‖s_j − s_c‖², is fixed: only the action part
        # is computed per query. Points outside a state's list are at least its last entry away. Per state, one
        # row [K, 1 + action dim] holds both parts' data (state distance, candidate action), so a query reads one
        # contiguous row instead of K scattered actions: the search is bound by memory reads, not arithmetic.
        state_distances = torch.as_tensor(self.beta**2 * squared_distances, device=self.device)
        candidate_actions = self.actions[self.candidates.long()]
        self.candidate_table = torch.cat([state_distances.unsqueeze(-1), candidate_actions], dim=-1).contiguous()
        self.wide_candidates: torch.Tensor | None = None
        if num_candidates < num_wide_candidates < len(states):
            wide, wide_distances = state_neighbours(states_array, num_wide_candidates, cache=cache, all_distances=False)
            self.wide_candidates = torch.as_tensor(wide, device=self.device)
            self.wide_bounds = torch.as_tensor(self.beta**2 * wide_distances[:, -1], device=self.device)
        # What the last full search at each state found: its `num_remembered` nearest keys (−1: none yet), the
        # query's action, and the distance within which those keys are all the keys there are. Not on a GPU, whose
        # brute-force full search is cheap enough.
        self.num_remembered = min(num_remembered, len(states)) if self.device.type != "cuda" else 0
        if self.num_remembered > 0:
            self.remembered = torch.full((len(states), self.num_remembered), -1, dtype=torch.int32, device=self.device)
            self.remembered_actions = torch.zeros_like(self.actions)
            self.remembered_radius = torch.zeros(len(states), device=self.device)
        self._tree: cKDTree | None = None  # over the keys, built on the first CPU fallback
        self._faster_search: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]] | None = None
        self._key_norms: torch.Tensor | None = None  # ‖k‖² of every key, for the matrix-product search
        self.queries = 0
        self.fallbacks = 0

    def nearest(self, state_indices: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Indices of the nearest keys to (β·states[state_indices], actions)."""
        actions = actions.detach().float()
        table = self.candidate_table.index_select(0, state_indices)  # [B, K, 1 + action dim]
        distances = (table[:, :, 1:] - actions.unsqueeze(1)).square_().sum(-1).add_(table[:, :, 0])
        best_distance, best = distances.min(dim=1)
        nearest = self.candidates.view(-1).index_select(0, state_indices * self.num_candidates + best).long()
        unsettled = torch.nonzero(best_distance > table[:, -1, 0]).squeeze(1)
        self.queries += len(state_indices)
        if len(unsettled):
            queries = torch.cat([self.keys[state_indices[unsettled], : -actions.shape[1]], actions[unsettled]], dim=1)
            if self.wide_candidates is not None:
                unsettled_states = state_indices[unsettled]
                wide = self.wide_candidates.index_select(0, unsettled_states)  # [U, K2], the first tier among them
                wide_keys = self.keys.index_select(0, wide.reshape(-1)).view(*wide.shape, -1)
                wide_distance, wide_best = (wide_keys - queries.unsqueeze(1)).pow(2).sum(-1).min(dim=1)
                nearest[unsettled] = wide.gather(1, wide_best.unsqueeze(1)).squeeze(1).long()
                best_distance[unsettled] = wide_distance
                still = wide_distance > self.wide_bounds[unsettled_states]
                unsettled, queries = unsettled[still], queries[still]
            if len(unsettled) and self.num_remembered:
                unsettled_states = state_indices[unsettled]
                if bool((self.remembered[unsettled_states, 0] >= 0).any()):  # else nothing to recall
                    found, distance, settled = self._recall(unsettled_states, queries, best_distance[unsettled])
                    better = (found >= 0) & (distance < best_distance[unsettled])
                    nearest[unsettled] = torch.where(better, found, nearest[unsettled])
                    best_distance[unsettled] = torch.where(better, distance, best_distance[unsettled])
                    unsettled, queries = unsettled[~settled], queries[~settled]
            if len(unsettled):
                self.fallbacks += len(unsettled)
                found = self._full_search(queries, best_distance[unsettled], state_indices[unsettled])
                nearest[unsettled] = torch.where(found >= 0, found, nearest[unsettled])
        return nearest

    def _recall(
        self, states: torch.Tensor, queries: torch.Tensor, best_distance: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The nearest of the keys remembered for each query's state (−1 where none are), its squared distance, and
        whether no key is nearer than it or the best found so far (`best_distance`): every key not remembered is at
        least R − ‖a − a₀‖ away."""
        remembered = self.remembered.index_select(0, states)  # [U, M]
        keys = self.keys.index_select(0, remembered.clamp(min=0).reshape(-1)).view(*remembered.shape, -1)
        distance, column = (keys - queries.unsqueeze(1)).pow(2).sum(-1).min(dim=1)
        found = remembered.gather(1, column.unsqueeze(1)).squeeze(1).long()
        known = remembered[:, 0] >= 0
        shift = (queries[:, -self.actions.shape[1] :] - self.remembered_actions[states]).pow(2).sum(-1).sqrt()
        reach = (self.remembered_radius[states] - shift).clamp(min=0.0)
        # the margin covers the distances' rounding
        settled = known & (torch.minimum(distance, best_distance) <= reach.pow(2) * (1.0 - 1e-5))
        return torch.where(known, found, -1), distance, settled

    def _remember(
        self, states: torch.Tensor, queries: torch.Tensor, keys: torch.Tensor, distances: torch.Tensor
    ) -> None:
        """Keep a full search's `keys` [Q, M] (nearest first, squared `distances`) for the states it was run at."""
        unique, inverse = torch.unique(states, return_inverse=True)
        positions = torch.arange(len(states), device=self.device)
        first = torch.full((len(unique),), len(states), device=self.device).scatter_reduce_(
            0, inverse, positions, "amin"
        )
        rows = states[first]
        self.remembered[rows] = keys[first].to(self.remembered.dtype)
        self.remembered_actions[rows] = queries[first, -self.actions.shape[1] :]
        self.remembered_radius[rows] = distances[first, -1].sqrt()

    def _full_search(self, queries: torch.Tensor, upper_bounds: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """Exact nearest keys by a full search; `upper_bounds` are squared distances known to be reachable. A CPU
        search of many queries also remembers each query's nearest keys for its state (`_recall`)."""
        if self.device.type == "cuda":
            return brute_force_nearest(self.keys, queries)
        if len(queries) >= MANY_QUERIES:
            keys, distances = self._many_query_search(queries, max(self.num_remembered, 1))
            if self.num_remembered:
                self._remember(states, queries, keys, distances)
            return keys[:, 0]
        # One batched query bounded by the largest candidate distance: every query has a key within it.
        radius = float(np.sqrt(upper_bounds.max().item())) * (1 + 1e-5)
        # One thread: for these few queries, starting workers would cost more than the search.
        found = self._key_tree().query(queries.cpu().numpy(), k=1, distance_upper_bound=radius, workers=1)[1]
        # The bound is a candidate's own distance, so the tree finds a key at least as near; if rounding hid it
        # (the tree answers len(keys) for "none within the bound"), the candidate stands.
        found = np.where(found < len(self.keys), found, -1)
        return torch.as_tensor(found, dtype=torch.int64, device=self.device)

    def _key_tree(self) -> cKDTree:
        """A KD-tree over all keys, built on first use."""
        if self._tree is None:
            self._tree = cKDTree(self.keys.cpu().numpy())
        return self._tree

    def _many_query_search(self, queries: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The `count` nearest keys of each query [Q, count] (nearest first) and their squared distances, by the
        faster of the matrix-product search and the KD-tree, timed on the first call. Which wins depends on the
        keys: for 60 queries, the tree took 15 ms against 254 ms on Hopper's 14-dimensional keys, the products
        0.12 s against 0.5 s for 79 queries on HalfCheetah's 23-dimensional ones."""
        if self._faster_search is not None:
            return self._faster_search(queries, count)
        self._key_tree()  # built before the timing, which compares queries only
        seconds = {}
        for search in (self._matmul_search, self._tree_search):
            started = time.perf_counter()
            found = search(queries, count)
            seconds[search] = time.perf_counter() - started
        self._faster_search = min(seconds, key=seconds.__getitem__)
        return found

    def _tree_search(self, queries: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`_matmul_search`'s result through the KD-tree, on as many threads as torch uses."""
        found = self._key_tree().query(queries.cpu().numpy(), k=count, workers=torch.get_num_threads())[1]
        keys = torch.as_tensor(found.reshape(len(queries), count), dtype=torch.int64, device=self.device)
        return keys, (self.keys[keys] - queries.unsqueeze(1)).pow(2).sum(-1)

    @torch.autocast("cpu", enabled=False)  # float32 products (a CPU search): the rounding bound assumes them
    def _matmul_search(
        self, queries: torch.Tensor, count: int = 1, block: int = 4096, piece: int = 256
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The `count` nearest keys of each query [Q, count] (nearest first) and their squared distances, exactly,
        through e = ‖q‖² − 2q·k + ‖k‖² (matrix products over blocks of keys). The expansion's rounding is bounded,
        |e − d²| ≤ δ; the minima of e over pieces of each block give, at the count-th smallest m, `count` keys with
        e ≤ m, so the nearest `count` all have e ≤ m + 2δ; those few keys are re-ranked by exact differences. Blocks
        of 4096 keys keep each product's output in cache: on 1M 23-dimensional keys and 79 queries, 0.12 s on one
        thread for the nearest key against 0.5 s for the KD-tree on two (16,384: 0.30 s)."""
        if self._key_norms is None:
            self._key_norms = self.keys.pow(2).sum(1)
            self._max_key_norm = float(self._key_norms.max().sqrt())
        count = min(count, len(self.keys))
        piece = max(1, min(piece, len(self.keys) // (4 * count)))  # enough pieces for `count` minima
        query_norms = queries.pow(2).sum(1, keepdim=True)
        starts = range(0, len(self.keys), block)

        def expansion(rows: torch.Tensor | slice, start: int) -> torch.Tensor:
            keys, norms = self.keys[start : start + block], self._key_norms[start : start + block]
            return torch.addmm(norms, queries[rows], keys.T, alpha=-2.0) + query_norms[rows]

        def piece_minima(start: int) -> torch.Tensor:
            values = expansion(slice(None), start)
            values = F.pad(values, (0, -values.shape[1] % piece), value=torch.inf)
            return values.view(len(queries), -1, piece).amin(2)

        minima = [piece_minima(start) for start in starts]
        block_minima = torch.stack([values.amin(1) for values in minima], dim=1)
        count_th_minimum = torch.cat(minima, dim=1).kthvalue(count, dim=1).values
        # δ ≤ γ·(‖q‖ + ‖k‖)² for a dot product of `dim` terms plus two norms, γ ≈ (terms)·ε.
        gamma = 2 * (self.keys.shape[1] + 3) * torch.finfo(self.keys.dtype).eps
        threshold = count_th_minimum + 2 * gamma * (query_norms.squeeze(1).sqrt() + self._max_key_norm).pow(2)
        rows_found, keys_found = [], []
        for number, start in enumerate(starts):
            rows = torch.nonzero(block_minima[:, number] <= threshold).squeeze(1)
            if len(rows):
                row, column = torch.nonzero(expansion(rows, start) <= threshold[rows, None], as_tuple=True)
                rows_found.append(rows[row])
                keys_found.append(column + start)
        rows, keys = torch.cat(rows_found), torch.cat(keys_found)
        distances = (self.keys[keys] - queries[rows]).pow(2).sum(-1)
        order = torch.argsort(distances, stable=True)
        order = order[torch.argsort(rows[order], stable=True)]  # by query, nearest first within each
        rows, keys, distances = rows[order], keys[order], distances[order]
        per_query = torch.bincount(rows, minlength=len(queries))
        row_starts = torch.cumsum(per_query, 0) - per_query
        kept = torch.arange(len(rows), device=self.device) - row_starts[rows] < count  # each query has ≥ count
        return keys[kept].view(len(queries), count), distances[kept].view(len(queries), count)


def brute_force_nearest(keys: torch.Tensor, queries: torch.Tensor, max_elements: int = 2**26) -> torch.Tensor:
    """Index of the nearest row of `keys` to each query by exhaustive search, in chunks of keys whose difference
    tensor holds at most `max_elements` numbers (differences, not the ‖q‖² + ‖k‖² − 2q·k expansion, so that
    rounding cannot reorder near neighbours)."""
    chunk = max(1, max_elements // max(1, len(queries) * keys.shape[1]))
    best_distance = torch.full((len(queries),), torch.inf, device=keys.device)
    best = torch.zeros(len(queries), dtype=torch.int64, device=keys.device)
    for start in range(0, len(keys), chunk):
        distances = (queries.unsqueeze(1) - keys[start : start + chunk].unsqueeze(0)).pow(2).sum(-1)
        chunk_distance, chunk_best = distances.min(dim=1)
        better = chunk_distance < best_distance
        best_distance = torch.where(better, chunk_distance, best_distance)
        best = torch.where(better, chunk_best + start, best)
    return best
