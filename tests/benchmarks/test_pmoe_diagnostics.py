"""benchmarks/pmoe_diagnostics.py: a PMOE-SAC checkpoint's critic figures and acting returns."""

import pmoe_diagnostics as script  # benchmarks/pmoe_diagnostics.py (conftest puts benchmarks/ on the path)
import pytest
import torch

import policylab
from policylab.online_rl import PMOESAC, PMOESACConfig


def test_identical_experts_are_indistinguishable_and_act_alike(tmp_path):
    config = PMOESACConfig(seed=0, learning_starts=100, batch_size=32, hidden_sizes=(16, 16), num_experts=3)
    PMOESAC("Pendulum-v1", config).learn(300, eval_every=300, eval_episodes=1, run_dir=tmp_path, progress=False)
    agent = policylab.load(tmp_path / "agent.pt")
    states = script.recent_states(tmp_path, 3, agent.num_timesteps, recent=1000, count=256, seed=0)
    assert states.shape == (256, 3)

    trained = script.critic_figures(agent, states)
    assert 1 / 3 <= trained["largest_gate_weight"] <= 1 and trained["expert_action_distance"] > 0

    with torch.no_grad():  # every expert's heads become expert 0's: one policy, three times
        heads = agent.actor.heads
        weight, bias = heads.weight.unflatten(0, (3, -1)), heads.bias.unflatten(0, (3, -1))
        weight[1:], bias[1:] = weight[0].clone(), bias[0].clone()
    same = script.critic_figures(agent, states)
    assert same["expert_action_distance"] < 1e-6 and same["q_gap_best_worst"] < 1e-4
    returns = script.acting_returns(agent, episodes=2, seed=0)
    assert set(returns) == {"expert_0", "expert_1", "expert_2", "most_probable", "highest_q", "drawn_from_gate"}
    assert all(value == pytest.approx(returns["expert_0"]) for value in returns.values())
