"""Run directories: a run starts, refuses to be overwritten, and resumes only with the configuration it began with."""

import pytest

from policylab.core.runs import RunDirectory


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
