"""`policylab compress` end to end: a classifier teacher made and compressed; a saved agent compressed and evaluated."""

import json

import pytest

from policylab.cli import main
from policylab.compression import load_network
from policylab.compression.datasets import image_data
from policylab.compression.teachers import accuracy, tensors_of
from policylab.online_rl import SAC

N2N_OPTIONS = ["--removal-epochs", "1", "--shrinkage-epochs", "1", "--rollouts", "2", "--distill-epochs", "1"]


def test_compress_a_classifier(tmp_path, capsys):
    data = ["--data", "synthetic", "--train-samples", "300", "--validation-samples", "100", "--test-samples", "100"]
    teacher = tmp_path / "teacher.pt"
    main(["compress", "train-classifier", "--output", str(teacher), "--conv-widths", "4", "--epochs", "1", *data])
    assert json.loads(capsys.readouterr().out)["params"] > 0
    run_dir = tmp_path / "n2n"
    main(
        ["compress", "n2n", "--teacher", str(teacher), "--run-dir", str(run_dir), "--no-progress", *data, *N2N_OPTIONS]
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["students_trained"] >= 1 and (run_dir / "student.pt").exists() and (run_dir / "pareto.png").exists()
    _, student, _ = load_network(run_dir / "student.pt")  # selected on validation images, reported on test images
    _, validation, test = image_data("synthetic", 300, 100, 100)
    assert summary["best_accuracy"] == pytest.approx(accuracy(student, *tensors_of(validation)))
    assert summary["best_test_accuracy"] == pytest.approx(accuracy(student, *tensors_of(test)))


def test_compress_a_saved_agent_then_evaluate_it(tmp_path, capsys):
    SAC("InvertedPendulum-v5").save(tmp_path / "sac.pt")
    run_dir = tmp_path / "n2n"
    options = ["--env", "InvertedPendulum-v5", "--num-states", "200", "--eval-episodes", "2", *N2N_OPTIONS]
    options += ["--dagger-rounds", "1", "--dagger-states", "100"]
    main(
        ["compress", "n2n", "--teacher", str(tmp_path / "sac.pt"), "--run-dir", str(run_dir), "--no-progress", *options]
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["student"].endswith("agent.pt")
    main(["eval", str(run_dir / "agent.pt"), "--env", "InvertedPendulum-v5", "--episodes", "2"])
    assert len(json.loads(capsys.readouterr().out)["returns"]) == 2


def test_an_agent_teacher_needs_its_task(tmp_path):
    SAC("InvertedPendulum-v5").save(tmp_path / "sac.pt")
    with pytest.raises(SystemExit, match="--env"):
        main(["compress", "n2n", "--teacher", str(tmp_path / "sac.pt"), "--no-progress"])
