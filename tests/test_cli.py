"""The command line end to end: make data, train, evaluate, inspect."""

import json

import pytest

from policylab.cli import main


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "eval", "data"):
        assert command in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "td3bc" in capsys.readouterr().out


def test_make_train_eval_and_info(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POLICYLAB_DATA", str(tmp_path / "data"))
    main(["data", "make", "gen/pendulum-scripted-v0"])
    assert (tmp_path / "data" / "datasets" / "pendulum-scripted-v0.hdf5").exists()
    capsys.readouterr()
    main(["data", "info", "gen/pendulum-scripted-v0"])
    info = json.loads(capsys.readouterr().out)
    assert info["transitions"] == 20000 and info["env_id"] == "Pendulum-v1"

    run_dir = tmp_path / "run"
    args = ["train", "td3bc", "--dataset", "gen/pendulum-scripted-v0", "--steps", "50", "--eval-every", "25"]
    main(
        [
            *args,
            "--eval-episodes",
            "2",
            "--run-dir",
            str(run_dir),
            "--no-progress",
            "--hidden-sizes",
            "16",
            "16",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["run_dir"] == str(run_dir) and "return_mean" in summary
    for name in ("config.json", "metrics.csv", "checkpoint.pt", "agent.pt", "evaluation.json"):
        assert (run_dir / name).exists(), name
    assert json.loads((run_dir / "config.json").read_text())["agent"]["hidden_sizes"] == [16, 16]

    main(["eval", str(run_dir / "agent.pt"), "--env", "Pendulum-v1", "--episodes", "3"])
    result = json.loads(capsys.readouterr().out)
    assert len(result["returns"]) == 3 and result["lengths"] == [200, 200, 200]


def test_missing_dataset_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    with pytest.raises(SystemExit, match="D4RL_DATASET_DIR"):
        main(["train", "td3bc", "--dataset", "d4rl/hopper-medium-v2", "--steps", "1"])


def test_train_online_agents_and_resume(tmp_path, capsys):
    run_dir = tmp_path / "ppo"
    args = ["train", "ppo", "--env", "CartPole-v1", "--steps", "512", "--eval-every", "256", "--eval-episodes", "2"]
    args += ["--rollout-steps", "64", "--num-envs", "4", "--num-minibatches", "2", "--run-dir", str(run_dir)]
    main([*args, "--no-progress"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["agent"] == str(run_dir / "agent.pt") and (run_dir / "replay").exists() is False
    with pytest.raises(SystemExit, match="--resume"):  # the run exists: refuse to overwrite it
        main([*args, "--no-progress"])
    main([*args, "--steps", "768", "--resume", "--no-progress"])
    assert "return_mean" in json.loads(capsys.readouterr().out)
    assert (run_dir / "metrics.csv").read_text().splitlines()[-1].startswith("768,")  # resumed from 512

    sac_dir = tmp_path / "sac"
    sac = ["train", "sac", "--env", "Pendulum-v1", "--steps", "300", "--learning-starts", "100", "--batch-size", "32"]
    main([*sac, "--hidden-sizes", "16", "16", "--eval-episodes", "1", "--run-dir", str(sac_dir), "--no-progress"])
    assert sorted(path.name for path in (sac_dir / "replay").iterdir()) == ["rows-000000000000-000000000300.pt"]


def test_train_online_bad_backend_is_a_clear_error():
    with pytest.raises(SystemExit, match="backend"):
        main(["train", "sac", "--env", "Pendulum-v1", "--backend", "nope", "--no-progress"])


def test_train_tsddr_on_a_tiny_synthetic_case(tmp_path, capsys):
    run_dir = tmp_path / "tsddr"
    args = ["train", "tsddr", "--case", "synthetic", "--num-stages", "4", "--iterations", "4", "--eval-every", "2"]
    args += ["--eval-scenarios", "3", "--batch-size", "2", "--validation-scenarios", "2", "--hidden-sizes", "8"]
    main([*args, "--run-dir", str(run_dir), "--no-progress"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["checkpoint"] == str(run_dir / "checkpoint.pt")
    assert summary["perfect_information_cost_mean"] <= summary["tsddr_cost_mean"] + 1e-6
    for name in ("config.json", "metrics.csv", "checkpoint.pt", "evaluation.json"):
        assert (run_dir / name).exists(), name
    assert len(json.loads((run_dir / "evaluation.json").read_text())["costs"]["tsddr"]) == 3
    with pytest.raises(SystemExit, match="--resume"):  # the run exists: refuse to overwrite it
        main([*args, "--run-dir", str(run_dir), "--no-progress"])
    main([*args, "--iterations", "6", "--resume", "--run-dir", str(run_dir), "--no-progress"])
    assert (run_dir / "metrics.csv").read_text().splitlines()[-1].startswith("6,")


def test_train_tsddr_unknown_case_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="neither 'synthetic' nor a folder"):
        main(["train", "tsddr", "--case", str(tmp_path / "nope"), "--no-progress"])
