"""What the offline agents' tests share: that an agent learns Pendulum from scripted expert data, and that a killed
run resumes exactly."""

import numpy as np
import pytest
import torch

from policylab.core.evaluation import evaluate


def assert_beats_random_pendulum(agent, margin: float = 600.0) -> None:
    """The agent's return on Pendulum-v1 (10 episodes from seed 100) beats uniformly random actions' (below −900)
    by `margin`."""
    trained = evaluate(agent, "Pendulum-v1", episodes=10, seed=100)
    rng = np.random.default_rng(0)
    random_policy = evaluate(lambda obs: rng.uniform(-2, 2, (len(obs), 1)), "Pendulum-v1", episodes=10, seed=100)
    assert random_policy.return_mean < -900
    assert trained.return_mean > random_policy.return_mean + margin, (trained.return_mean, random_policy.return_mean)


def killed_and_uninterrupted_runs(make_agent, dataset, run_root, names, steps: int = 40, kill_at: int = 30):
    """Fit one agent for `steps` updates without a break, and another killed at update `kill_at` (after its
    checkpoint at `steps` / 2) then resumed; asserts both end with the same update count and, exactly, the same
    state of every module or optimiser in `names`. Returns (uninterrupted, resumed) for further checks."""

    def fit(run: str, **loop):
        agent = make_agent()
        agent.fit(dataset, steps=steps, checkpoint_every=steps // 2, run_dir=run_root / run, progress=False, **loop)
        return agent

    def kill(step: int) -> None:
        if step == kill_at:
            raise KeyboardInterrupt  # what Ctrl-C or a batch scheduler's signal does to the loop

    uninterrupted = fit("full")
    with pytest.raises(KeyboardInterrupt):
        fit("killed", callback=kill)
    resumed = fit("killed", resume=True)
    assert resumed.num_updates == uninterrupted.num_updates == steps
    for name in names:
        expected, actual = getattr(uninterrupted, name).state_dict(), getattr(resumed, name).state_dict()
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    return uninterrupted, resumed
