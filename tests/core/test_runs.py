"""Run directories: a run starts, refuses to be overwritten, and resumes only with the configuration it began with;
the iteration loop logs, checkpoints on its schedule and drops rows a killed run logged past its checkpoint."""

import pytest

from policylab.core.logging import MetricLogger
from policylab.core.runs import RunDirectory, run_iterations


def test_begin_starts_refuses_overwrite_and_resumes_the_same_configuration(tmp_path):
    run = RunDirectory(tmp_path / "run")
    config = {"lr": 3e-4, "device": "cpu", "path": tmp_path}
    assert run.begin(config, resume=False) is False  # no checkpoint yet: a fresh run
    assert run.read_json("config.json") == {"lr": 3e-4, "device": "cpu", "path": str(tmp_path)}
    run.checkpoint.write_bytes(b"state")
    with pytest.raises(FileExistsError, match="--resume"):
        run.begin(config, resume=False)
    assert run.begin(config, resume=True) is True
    with pytest.raises(ValueError, match="different configuration"):
        run.begin(config | {"lr": 1e-3}, resume=True)

    def without_device(config):
        return {key: value for key, value in config.items() if key != "device"}

    assert run.begin(config | {"device": "cuda"}, resume=True, compared=without_device) is True
    assert run.read_json("config.json")["device"] == "cuda"


def test_begin_checks_the_checkpoint_it_is_given(tmp_path):
    run = RunDirectory(tmp_path)
    run.begin({"generations": 3}, resume=False, checkpoint=tmp_path / "checkpoint.json")
    (tmp_path / "checkpoint.json").write_text("{}")
    assert run.begin({"generations": 3}, resume=True, checkpoint=tmp_path / "checkpoint.json") is True


class Counter:
    """A method whose state is the number of iterations done; its checkpoint remembers that number."""

    def __init__(self) -> None:
        self.done, self.saved_at = 0, []

    def step(self) -> dict[str, float]:
        self.done += 1
        return {"iteration": self.done - 1, "square": float(self.done**2)}


def test_run_iterations_logs_each_iteration_and_checkpoints_on_its_schedule(tmp_path):
    run, method = RunDirectory(tmp_path), Counter()
    args = (method.step, lambda: method.done, 7, run, lambda: method.saved_at.append(method.done))
    run_iterations(*args, description="test", unit="it", checkpoint_every=3, index_key="iteration", progress=False)
    assert method.saved_at == [3, 6, 7]  # every third iteration and the last
    rows = MetricLogger(tmp_path, tensorboard=False).read()
    assert [(int(row["step"]), float(row["square"])) for row in rows] == [(i, (i + 1) ** 2) for i in range(7)]
    assert "iteration" not in rows[0]

    # Resumed from a checkpoint taken after 4 iterations: rows 4-6, logged after it, are dropped and redone once.
    method.done = 4
    run_iterations(*args[:2], 9, run, args[4], description="test", unit="it", index_key="iteration", progress=False)
    rows = MetricLogger(tmp_path, tensorboard=False).read()
    assert [int(row["step"]) for row in rows] == list(range(9))


def test_run_iterations_stops_when_the_method_says_it_has_finished(tmp_path):
    method = Counter()
    run_iterations(
        method.step,
        lambda: method.done,
        10,
        None,
        lambda: None,
        description="test",
        unit="it",
        finished=lambda: method.done * 2 >= 6,
        progress=False,
    )
    assert method.done == 3
