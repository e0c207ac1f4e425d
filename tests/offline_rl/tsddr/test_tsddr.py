"""TS-DDR learns to carry water over where a myopic dispatch does not, and a killed run resumes exactly."""

import numpy as np
import pytest
import torch

from policylab.offline_rl.tsddr import TSDDR, TSDDRConfig, myopic, perfect_information, synthetic_case


def test_tsddr_beats_myopic_on_synthetic_case():
    case = synthetic_case(num_stages=24)
    test = case.sample_noises(32, seed=123)
    myopic_cost = myopic(case, test).total_costs.mean()
    bound = perfect_information(case, test).total_costs.mean()
    agent = TSDDR(case, TSDDRConfig(seed=0)).fit(120, eval_every=20, progress=False)
    cost = agent.evaluate(test).total_costs.mean()
    assert bound < cost < myopic_cost - 0.5 * (myopic_cost - bound), (bound, cost, myopic_cost)


def test_killed_run_resumes_exactly(tmp_path):
    case = synthetic_case(num_stages=6, num_reservoirs=2)
    config = TSDDRConfig(batch_size=2, validation_scenarios=2, hidden_sizes=(8,))
    whole = TSDDR(case, config).fit(6, eval_every=3, run_dir=tmp_path / "whole", progress=False)
    killed = TSDDR(case, config)
    update, calls = killed.update, []

    def update_then_die(*args):
        calls.append(1)
        if len(calls) == 5:  # after the checkpoint at 3 and the metrics row of 4
            raise KeyboardInterrupt
        return update(*args)

    killed.update = update_then_die
    with pytest.raises(KeyboardInterrupt):
        killed.fit(6, eval_every=3, run_dir=tmp_path / "killed", progress=False)
    resumed = TSDDR(case, config).fit(6, eval_every=3, run_dir=tmp_path / "killed", resume=True, progress=False)
    assert resumed.iteration == whole.iteration == 6
    for key, value in whole.network.state_dict().items():
        torch.testing.assert_close(resumed.network.state_dict()[key], value, rtol=0, atol=0)
    loaded = TSDDR.load(tmp_path / "killed" / "checkpoint.pt", case)
    noises = case.sample_noises(3, seed=9)
    np.testing.assert_array_equal(loaded.evaluate(noises).total_costs, resumed.evaluate(noises).total_costs)
    steps = [row.split(",")[0] for row in (tmp_path / "killed" / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == [str(step) for step in range(1, 7)]
