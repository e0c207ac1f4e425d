import torch

from policylab.core.logging import MetricAccumulator


def test_metric_accumulator_means_over_updates_reporting_different_metrics():
    accumulator = MetricAccumulator()
    # a TD3-style run: every update reports the critic loss, every second one the actor loss too
    for step in range(1, 5):
        metrics = {"critic": torch.tensor(float(step))}
        if step % 2 == 0:
            metrics["actor"] = torch.tensor(10.0 * step)
        accumulator.add(metrics)
    accumulator.add({})
    assert accumulator.means() == {"critic": 2.5, "actor": 30.0}
    assert accumulator.means() == {}  # reset after reading
