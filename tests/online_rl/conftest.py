"""Shared checks of the online agents' tests."""

import pytest


@pytest.fixture
def learns_pendulum():
    """A check that `agent`, trained `steps` env steps on Pendulum, goes from leaving the pendulum hanging (return
    below −900) to swinging it up (above −600)."""

    def check(agent, steps: int) -> None:
        untrained = agent.evaluate("Pendulum-v1", episodes=10).return_mean
        result = agent.learn(steps, eval_every=steps, progress=False)
        assert untrained < -900  # an untrained policy leaves the pendulum hanging
        assert result.return_mean > -600

    return check
