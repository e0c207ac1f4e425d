"""What the offline agents' tests share: the check that an agent learns Pendulum from scripted expert data."""

import numpy as np

from policylab.core.evaluation import evaluate


def assert_beats_random_pendulum(agent, margin: float = 600.0) -> None:
    """The agent's return on Pendulum-v1 (10 episodes from seed 100) beats uniformly random actions' (below −900)
    by `margin`."""
    trained = evaluate(agent, "Pendulum-v1", episodes=10, seed=100)
    rng = np.random.default_rng(0)
    random_policy = evaluate(lambda obs: rng.uniform(-2, 2, (len(obs), 1)), "Pendulum-v1", episodes=10, seed=100)
    assert random_policy.return_mean < -900
    assert trained.return_mean > random_policy.return_mean + margin, (trained.return_mean, random_policy.return_mean)
