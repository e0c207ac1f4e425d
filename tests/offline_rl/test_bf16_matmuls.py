"""`bf16_matmuls` for the offline agents: `fit` runs their updates under bfloat16 autocast, an update's losses stay
within rounding of float32's, weights stay float32, and PRDC's search stays exact inside the context."""

import copy

import pytest
import torch

from policylab.core.agent import registered_agents
from policylab.core.nets import bf16_autocast
from tests.core.test_neighbours import assert_exact, make_search


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("POLICYLAB_DATA", str(tmp_path))  # PRDC's candidate lists are cached here


def make_agent(name, dataset, **settings):
    agent_class = registered_agents()[name]
    return agent_class.from_dataset(dataset, agent_class.config_class(seed=0, **settings))


@pytest.mark.parametrize("name", ["td3bc", "prdc", "a2pr", "iql", "odice"])
def test_an_update_in_bfloat16_stays_within_rounding_of_float32(name, random_dataset):
    agent = make_agent(name, random_dataset)
    batch = agent.prepare(random_dataset).sample(256)
    in_bf16 = copy.deepcopy(agent)
    torch.manual_seed(0)
    expected = [agent.update(batch) for _ in range(2)]  # two updates: the delayed actor steps at one of them
    torch.manual_seed(0)
    with bf16_autocast("cpu"):
        found = [in_bf16.update(batch) for _ in range(2)]
    for expected_metrics, found_metrics in zip(expected, found):
        for key, value in expected_metrics.items():
            torch.testing.assert_close(found_metrics[key].float(), value, rtol=3e-2, atol=3e-3, msg=key)
    assert any(not torch.equal(found[1][key].float(), value) for key, value in expected[1].items())  # bf16 ran
    modules = [value for value in vars(in_bf16).values() if isinstance(value, torch.nn.Module)]
    assert all(parameter.dtype == torch.float32 for module in modules for parameter in module.parameters())


def test_fit_runs_the_updates_under_bf16_autocast_only_when_asked(random_dataset):
    for enabled in (False, True):
        agent = make_agent("td3bc", random_dataset, bf16_matmuls=enabled, hidden_sizes=(16, 16))
        seen = []
        agent.update = lambda batch, agent=agent, seen=seen: (
            seen.append(torch.is_autocast_enabled("cpu")) or type(agent).update(agent, batch)
        )
        agent.fit(random_dataset, steps=3, progress=False)
        assert seen == [enabled] * 3


def test_prdc_search_stays_exact_inside_bf16_autocast(tmp_path, monkeypatch):
    # Far-off queries at a small β: most need the full search by matrix products, which must stay float32. States
    # far from the origin make the products' rounding in bfloat16 far larger than the gaps between neighbours.
    generator = torch.Generator().manual_seed(0)
    states, actions = torch.randn(3000, 9, generator=generator) + 30, torch.rand(3000, 3, generator=generator) * 2 - 1
    search = make_search(tmp_path, monkeypatch, states, actions, beta=0.5)
    indices = torch.randint(0, 3000, (256,), generator=generator)
    with bf16_autocast("cpu"):
        assert_exact(search, indices, torch.rand(256, 3, generator=generator) * 2 - 1)
    assert search.fallbacks > 100
