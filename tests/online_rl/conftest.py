"""Shared checks of the online agents' tests."""

import pytest
import torch


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


class Killed(Exception):
    """Stands for a kill in the middle of a run."""


@pytest.fixture
def resumes_exactly(tmp_path):
    """A check that a run killed after `kill_at` env steps and resumed from its checkpoints ends with the same
    `modules` (state dicts, bit for bit) as an uninterrupted run of `steps`; `after_kill(run_dir)` may inspect what
    the killed run left. Returns the uninterrupted and the resumed agents."""

    def check(make_agent, steps, kill_at, checkpoint_every, modules, after_kill=None):
        uninterrupted = make_agent()
        uninterrupted.learn(steps, eval_every=10**6, progress=False)

        def kill(agent) -> None:
            if agent.num_timesteps >= kill_at:
                raise Killed

        run = {"eval_every": 10**6, "checkpoint_every": checkpoint_every, "run_dir": tmp_path, "progress": False}
        with pytest.raises(Killed):
            make_agent().learn(steps, callback=kill, **run)
        if after_kill is not None:
            after_kill(tmp_path)
        resumed = make_agent()
        resumed.learn(steps, resume=True, **run)
        for module in modules:
            expected, actual = getattr(uninterrupted, module).state_dict(), getattr(resumed, module).state_dict()
            torch.testing.assert_close(actual, expected, rtol=0, atol=0)
        return uninterrupted, resumed

    return check
