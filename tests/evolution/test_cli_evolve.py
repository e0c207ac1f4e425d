"""`policylab evolve ga` end to end: a run directory whose best policy `policylab eval` evaluates."""

import json

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
