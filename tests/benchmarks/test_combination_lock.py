"""benchmarks/combination_lock.py: a run continued from its checkpoint under a higher cap records what an
uninterrupted run records."""

import combination_lock as lock_benchmark  # benchmarks/combination_lock.py (conftest puts benchmarks/ on the path)
import pytest

from policylab.core.envs import make_vec_env
from policylab.core.envs.torch_envs import register_combination_lock


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("POLICYLAB_DATA", str(tmp_path / "data"))
    return lock_benchmark.Settings(
        episodes=300, window=1000, probe_every=1000, checkpoint_every=1000, out=tmp_path / "out"
    )


def test_moving_success_counts_the_window_only():
    finished = [(10, True), (10, False), (20, True), (30, False), (40, True)]
    assert lock_benchmark.moving_success(finished, 30, 15) == pytest.approx(0.5)  # steps 20 and 30
    assert lock_benchmark.moving_success(finished, 40, 30) == pytest.approx(2 / 3)  # steps 20, 30, 40
    assert lock_benchmark.moving_success(finished, 40, 5) == 1.0
    assert lock_benchmark.moving_success(finished, 9, 5) is None


def test_tracker_state_round_trips_with_the_envs():
    env_id = register_combination_lock(3)
    tracker = lock_benchmark.SuccessTracker(make_vec_env(env_id, 4, backend="torch", seed=0))
    tracker.reset(seed=0)
    for _ in range(5):
        tracker.step(tracker.unwrapped.optimal_actions())
    state = tracker.state_dict()
    copy = lock_benchmark.SuccessTracker(make_vec_env(env_id, 4, backend="torch", seed=1))
    copy.load_state_dict(state)
    assert copy.steps == 20 and copy.finished == tracker.finished and len(copy.finished) == 4
    actions = tracker.unwrapped.optimal_actions()
    assert (copy.step(actions)[0] == tracker.step(actions)[0]).all()


def test_a_run_continued_under_a_higher_cap_equals_an_uninterrupted_run(settings, monkeypatch):
    continued = lock_benchmark.Settings(**dict(settings.__dict__, work_dir=settings.out / "continued"))
    first = lock_benchmark.run("hnpg", 3, 0, 2000, continued)
    assert first["samples_to_success"] is None and first["samples_run"] == 2000
    env_steps = []
    step = lock_benchmark.SuccessTracker.step
    monkeypatch.setattr(
        lock_benchmark.SuccessTracker, "step", lambda self, actions: env_steps.append(1) or step(self, actions)
    )
    resumed = lock_benchmark.run("hnpg", 3, 0, 4000, continued)
    assert len(env_steps) * 10 == 2000  # 10 envs: it went on from its checkpoint at the old cap
    straight = lock_benchmark.run("hnpg", 3, 0, 4000, settings)
    assert resumed["samples_run"] == straight["samples_run"] == 4000
    assert resumed["success_curve"] == straight["success_curve"]
    assert resumed["right_choice_probability_curve"] == straight["right_choice_probability_curve"]
    assert len(straight["right_choice_probability_curve"]) == 4  # probes at 1000, 2000, 3000 and 4000 steps
