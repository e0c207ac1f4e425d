"""benchmarks/pmoe_mixture_plot.py: the mixture of a short PMOE-SAC run, drawn from its run directory."""

import pmoe_mixture_plot as script  # benchmarks/pmoe_mixture_plot.py (conftest puts benchmarks/ on the path)

import policylab
from policylab.online_rl import PMOESAC, PMOESACConfig


def test_plot_shows_expert_usage_and_densities(tmp_path):
    config = PMOESACConfig(seed=0, learning_starts=100, batch_size=32, hidden_sizes=(16, 16), num_experts=3)
    PMOESAC("Pendulum-v1", config).learn(300, eval_every=300, eval_episodes=1, run_dir=tmp_path, progress=False)

    usage = script.usage_over_training(tmp_path)
    assert {f"experts/gate_weight_{k}" for k in range(3)} <= set(usage) and usage["experts/chosen_0"][0] == [300]
    agent = policylab.load(tmp_path / "agent.pt")
    grid, densities = script.expert_densities(agent, script.visited_states(agent, "Pendulum-v1", 2, seed=0), 0)
    assert densities.shape == (2, 3, len(grid)) and (densities >= 0).all()
    # Each gate-weighted expert density integrates to its gate weight: the mixture's to about 1.
    assert abs(float((densities.sum(1)[:, 1:] * (grid[1:] - grid[:-1])).sum(-1).mean()) - 1.0) < 0.05
    assert script.plot_mixture(tmp_path, states=2).exists()
