"""`policylab evolve ga` end to end: a run directory whose best policy `policylab eval` evaluates."""

import json

import pytest

from policylab.cli import main


def test_evolve_then_eval(tmp_path, capsys):
    run_dir = tmp_path / "ga"
    options = ["--population-size", "8", "--truncation", "3", "--mutation-power", "0.1", "--elite-candidates", "2"]
    options += ["--elite-episodes", "2", "--hidden-sizes", "8", "--eval-episodes", "2", "--no-progress"]
    main(["evolve", "ga", "--env", "Pendulum-v1", "--generations", "2", "--run-dir", str(run_dir), *options])
    summary = json.loads(capsys.readouterr().out)
    for name in ("agent.pt", "checkpoint.json", "config.json", "metrics.csv", "fitness.png", "evaluation.json"):
        assert (run_dir / name).exists()
    assert summary["generations"] == 2 and summary["genome_seeds"] >= 1
    main(["eval", str(run_dir / "agent.pt"), "--env", "Pendulum-v1", "--episodes", "2"])
    evaluation = json.loads(capsys.readouterr().out)
    assert evaluation["returns"] == json.loads((run_dir / "evaluation.json").read_text())["returns"]


def test_evolve_quality_diversity(tmp_path, capsys):
    arm_dir = tmp_path / "me"
    arm = ["--task", "planar_arm", "--iterations", "3", "--archive", "grid", "--grid-shape", "8", "8", "--no-progress"]
    main(["evolve", "me", *arm, "--ga-batch-size", "20", "--initial-population", "20", "--run-dir", str(arm_dir)])
    summary = json.loads(capsys.readouterr().out)
    assert summary["evaluations"] == 60 and 0 < summary["coverage"] <= 1
    assert summary == json.loads((arm_dir / "evaluation.json").read_text())
    with pytest.raises(SystemExit, match="resume"):  # a finished run is not overwritten without --resume
        main(["evolve", "me", *arm, "--run-dir", str(arm_dir)])

    dcg_dir = tmp_path / "dcg"
    options = ["--task", "walker2d_uni", "--iterations", "2", "--hidden-sizes", "8", "--episode-length", "10"]
    options += ["--cells", "16", "--cvt-samples", "1000", "--ga-batch-size", "4", "--initial-population", "6"]
    options += ["--dcg.pg-batch-size", "2", "--dcg.injection-batch-size", "2", "--dcg.pg-steps", "2"]
    options += ["--dcg.critic-steps", "4", "--dcg.batch-size", "8", "--dcg.replay-capacity", "1000", "--no-progress"]
    main(["evolve", "dcg-me", *options, "--run-dir", str(dcg_dir)])
    summary = json.loads(capsys.readouterr().out)
    assert summary["evaluations"] == 6 + 8 and summary["distilled_policies"] == round(summary["coverage"] * 16)
    assert summary["distilled_distance_to_target"] >= 0
    for name in ("checkpoint.pt", "config.json", "metrics.csv", "qd_score.png", "archive.png", "evaluation.json"):
        assert (dcg_dir / name).exists()


def test_evolve_groove_meta_trains_then_meta_tests(tmp_path, capsys):
    run_dir = tmp_path / "groove"
    options = ["--num-agents", "4", "--envs-per-agent", "2", "--rollout-length", "4", "--agent-updates", "2"]
    options += ["--lifetime", "4", "--hidden-size", "8", "--buffer-size", "6", "--score-envs", "2"]
    options += ["--levels.max-size", "5", "--levels.walls", "3", "--levels.episode-length-range", "10", "20"]
    options += ["--test-levels", "2", "--test-named", "sparse", "--test-updates", "2", "--no-progress"]
    main(["evolve", "groove", "--meta-updates", "3", "--run-dir", str(run_dir), *options])
    summary = json.loads(capsys.readouterr().out)
    assert summary["meta_updates"] == 3 and set(summary["meta_test"]) == {"random", "sparse"}
    assert {"lpg_return", "a2c_return", "random_return", "normalised_return"} <= set(summary["meta_test"]["random"])
    for name in ("checkpoint.pt", "config.json", "metrics.csv", "lpg.pt", "evaluation.json"):
        assert (run_dir / name).exists()
    with pytest.raises(SystemExit, match="unknown named levels"):
        main(["evolve", "groove", "--meta-updates", "3", "--run-dir", str(tmp_path / "x"), "--test-named", "maze"])
