"""The dataset neighbour search returns the brute-force nearest key, on random and on dataset-like queries."""

import numpy as np
import pytest
import torch

from policylab.core.neighbours import DatasetNeighbourSearch, brute_force_nearest, neighbour_cache_dir


def brute_force_distances(keys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Squared distance from each query to its nearest key, the naive way."""
    return torch.cdist(queries.double(), keys.double()).pow(2).min(dim=1).values


def make_search(tmp_path, monkeypatch, states, actions, beta=2.0, num_candidates=16, num_wide_candidates=0):
    monkeypatch.setenv("POLICYLAB_DATA", str(tmp_path))
    states, actions = torch.as_tensor(states), torch.as_tensor(actions)
    return DatasetNeighbourSearch(states, actions, beta, num_candidates, num_wide_candidates=num_wide_candidates)


def assert_exact(search, state_indices, actions):
    nearest = search.nearest(state_indices, actions)
    queries = torch.cat([search.keys[state_indices, : -actions.shape[1]], actions], dim=1)
    found = (search.keys[nearest] - queries).double().pow(2).sum(-1)
    torch.testing.assert_close(found, brute_force_distances(search.keys, queries), rtol=1e-5, atol=1e-6)


def test_random_queries_get_the_brute_force_neighbour(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    states, actions = rng.normal(size=(3000, 5)).astype(np.float32), rng.uniform(-1, 1, (3000, 2)).astype(np.float32)
    indices = torch.as_tensor(rng.integers(0, 3000, 512))
    queries = torch.as_tensor(rng.uniform(-1, 1, (512, 2)), dtype=torch.float32)
    # A small β weights states little, so uniformly random actions are often far from every candidate's action.
    one_tier = make_search(tmp_path, monkeypatch, states, actions, beta=0.5)
    assert_exact(one_tier, indices, queries)
    assert one_tier.fallbacks > 100
    two_tiers = make_search(tmp_path, monkeypatch, states, actions, beta=0.5, num_wide_candidates=32)
    assert_exact(two_tiers, indices, queries)
    assert 0 < two_tiers.fallbacks < one_tier.fallbacks / 2  # the wider tier settles most, the full search the rest


def test_dataset_like_queries_are_settled_by_the_candidates(tmp_path, monkeypatch):
    # States along trajectories (a random walk) and actions that vary smoothly with the state, as in real data.
    rng = np.random.default_rng(1)
    states = np.cumsum(rng.normal(scale=0.1, size=(4000, 6)), axis=0).astype(np.float32)
    actions = np.tanh(states[:, :3] + 0.1 * rng.normal(size=(4000, 3))).astype(np.float32)
    search = make_search(tmp_path, monkeypatch, states, actions)
    indices = torch.as_tensor(rng.integers(0, 4000, 1024))
    policy_actions = torch.as_tensor(actions)[indices] + 0.02 * torch.randn(1024, 3)
    assert_exact(search, indices, policy_actions)
    assert search.fallbacks < 0.1 * search.queries


def test_duplicate_states_stay_exact(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    states = np.repeat(rng.normal(size=(50, 3)), 40, axis=0).astype(np.float32)  # 40 copies of each state
    actions = rng.uniform(-1, 1, (2000, 2)).astype(np.float32)
    search = make_search(tmp_path, monkeypatch, states, actions, num_candidates=8)
    indices = torch.as_tensor(rng.integers(0, 2000, 256))
    assert_exact(search, indices, torch.as_tensor(rng.uniform(-1, 1, (256, 2)), dtype=torch.float32))


def test_candidate_lists_are_cached_per_dataset(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    states, actions = rng.normal(size=(500, 4)).astype(np.float32), rng.uniform(-1, 1, (500, 2)).astype(np.float32)
    first = make_search(tmp_path, monkeypatch, states, actions)
    assert len(list(neighbour_cache_dir().glob("*-500x4-k16.npz"))) == 1
    again = make_search(tmp_path, monkeypatch, states, actions)
    torch.testing.assert_close(again.candidates, first.candidates)
    torch.testing.assert_close(again.candidate_table, first.candidate_table)


@pytest.mark.parametrize("max_elements", [2**26, 1000])  # one chunk, and many
def test_brute_force_nearest_matches_the_naive_argmin(max_elements):
    torch.manual_seed(0)
    keys, queries = torch.randn(5000, 7), torch.randn(64, 7)
    expected = torch.cdist(queries.double(), keys.double()).argmin(dim=1)
    torch.testing.assert_close(brute_force_nearest(keys, queries, max_elements=max_elements), expected)


SEARCHES_OF_MANY_QUERIES = {
    "matrix products": lambda search, queries: search._matmul_search(queries, count=5, block=700),  # several blocks
    "kd-tree": lambda search, queries: search._tree_search(queries, count=5),
}


@pytest.mark.parametrize("kind", SEARCHES_OF_MANY_QUERIES)
def test_searches_of_many_queries_are_exact_even_among_copies(tmp_path, monkeypatch, kind):
    rng = np.random.default_rng(4)
    states, actions = rng.normal(size=(3000, 9)).astype(np.float32), rng.uniform(-1, 1, (3000, 3)).astype(np.float32)
    states[:20], actions[:20] = states[0], actions[0]  # twenty copies of one pair: many keys within rounding
    search = make_search(tmp_path, monkeypatch, states, actions)
    queries = torch.as_tensor(rng.normal(size=(200, 12)), dtype=torch.float32)
    queries[:50] = search.keys[:1] + 0.01 * torch.randn(50, 12)
    found, distances = SEARCHES_OF_MANY_QUERIES[kind](search, queries)
    expected = torch.cdist(queries.double(), search.keys.double()).pow(2).topk(5, dim=1, largest=False).values
    torch.testing.assert_close((search.keys[found] - queries.unsqueeze(1)).double().pow(2).sum(-1), expected)
    torch.testing.assert_close(distances.double(), expected, rtol=1e-5, atol=1e-6)
    assert (found[:50] < 20).all()  # the five nearest of a query beside the copies are copies


@pytest.mark.parametrize("many_query_search", ["_matmul_search", "_tree_search", None])  # None: the faster one
def test_revisited_states_are_settled_by_the_remembered_keys(tmp_path, monkeypatch, many_query_search):
    rng = np.random.default_rng(5)
    states, actions = rng.normal(size=(3000, 5)).astype(np.float32), rng.uniform(-1, 1, (3000, 2)).astype(np.float32)
    search = make_search(tmp_path, monkeypatch, states, actions, beta=0.5)
    if many_query_search is not None:
        search._faster_search = getattr(search, many_query_search)
    indices = torch.as_tensor(rng.permutation(3000)[:256])
    policy_actions = torch.as_tensor(rng.uniform(-1, 1, (256, 2)), dtype=torch.float32)
    assert_exact(search, indices, policy_actions)
    first_visits = search.fallbacks
    assert first_visits > 50  # far actions at a small β: the candidates settle few, the full search remembers
    assert_exact(search, indices, policy_actions + 0.01 * torch.randn(256, 2))  # a policy that moved a little
    assert search.fallbacks - first_visits < first_visits / 4
    assert_exact(search, indices, -policy_actions)  # one that moved far: the remembered keys prove nothing
    assert search.fallbacks - first_visits > first_visits / 2
