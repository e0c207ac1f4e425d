"""benchmarks/online_mujoco.py's report from finished run files, without Stable-Baselines3 installed."""

import json
import sys

import online_mujoco  # benchmarks/online_mujoco.py (conftest puts benchmarks/ on the path)
import pytest


def write_run(out, algorithm, seed, final, sampling_errors, references=None):
    run = {
        "algorithm": algorithm,
        "framework": "policylab",
        "env_id": "Hopper-v5",
        "seed": seed,
        "total_steps": 20480,
        "steps": [10240, 20480],
        "returns": [final / 2, final],
        "final_return": final,
        "auc_return": 0.75 * final,
        "env_steps_per_second": 1000.0,
        "sampling_error_steps": [10240, 20480],
        "sampling_errors": sampling_errors,
        "torch_threads": 1,
        "parallel_runs": 2,
    }
    if references is not None:  # PROPS's on-policy reference
        run |= {"on_policy_reference_steps": [10240, 20480], "on_policy_references": references}
    path = out / "online_mujoco" / f"{online_mujoco.run_name(algorithm, 'policylab', 'Hopper-v5', seed)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run))


def test_report_of_policylab_runs_needs_no_stable_baselines3(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)  # importing it now raises ImportError
    write_run(tmp_path, "props", 0, 100.0, [0.01, 0.03], references=[0.02, 0.04])
    write_run(tmp_path, "props", 1, 300.0, [0.02, 0.02], references=[0.03, 0.03])
    write_run(tmp_path, "ppo-buffer", 0, 200.0, [0.04, 0.06])
    settings = online_mujoco.Settings(
        algorithms=("props", "ppo-buffer"), frameworks=("policylab",), seeds=(0, 1), ppo_steps=20480, out=tmp_path
    )
    online_mujoco.report(settings)

    table = (tmp_path / "online_mujoco.md").read_text()
    assert table.startswith("policylab, torch ")
    assert "Budget per run: PPO 20,480 env steps (evaluated every 10,240);" in table and "SAC" not in table
    assert "| PROPS | Hopper-v5 | policylab | 20,480 | 2 | 200 (100–300) | 150 (75–225) | 1000 | – | 0.0200 |" in table
    assert (
        "| PPO-BUFFER | Hopper-v5 | policylab | 20,480 | 1 | 200 (200–200) | 150 (150–150) | 1000 | – | 0.0500 |"
        in table
    )
    rows = json.loads((tmp_path / "online_mujoco.json").read_text())["rows"]
    assert {row["algorithm"]: row["sampling_error_mean"] for row in rows} == pytest.approx(
        {"props": 0.02, "ppo-buffer": 0.05}
    )
    assert {row["algorithm"]: row["on_policy_reference_mean"] for row in rows} == {
        "props": pytest.approx(0.03),
        "ppo-buffer": None,
    }
    assert (tmp_path / "online_mujoco.png").exists() and (tmp_path / "online_mujoco_sampling_error.png").exists()
    # PROPS's sampling error over its reference's, per 100k-step window (one here): (0.01 + 0.03) / (0.02 + 0.04)
    assert "| PROPS Hopper-v5 seed 0 | 0.67 (2/2) |" in table
    assert "| PROPS Hopper-v5 seed 1 | 0.67 (2/2) |" in table
    assert "PPO-BUFFER Hopper-v5 seed" not in table  # no reference, no row


def test_reference_ratios_sum_each_window_and_fold_the_final_step_into_the_last():
    run = {
        "total_steps": 300,
        "sampling_error_steps": [50, 100, 150, 200, 300],
        "sampling_errors": [1.0, 3.0, 2.0, 4.0, 1.0],
        "on_policy_reference_steps": [50, 100, 150, 200, 300],
        "on_policy_references": [2.0, 2.0, 4.0, 1.0, 1.0],
    }
    ratios = online_mujoco.reference_ratios(run, window=100)
    # windows [0, 100): step 50; [100, 200): steps 100 and 150; [200, 300]: steps 200 and 300 (the final step)
    assert ratios == [
        {"start": 0, "ratio": pytest.approx(0.5), "lower": 1, "measurements": 1},
        {"start": 100, "ratio": pytest.approx(5 / 6), "lower": 1, "measurements": 2},
        {"start": 200, "ratio": pytest.approx(2.5), "lower": 0, "measurements": 2},
    ]
    assert online_mujoco.reference_ratios({"sampling_errors": [1.0]}) == []
