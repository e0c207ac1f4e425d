"""benchmarks/offline_suite.py, sequential backend: table, skipping finished runs, resuming a killed one."""

import dataclasses
import json

import offline_suite as suite  # benchmarks/offline_suite.py (conftest puts benchmarks/ on the path)
import pytest

from policylab.core.offline import OfflineAgent

DATASET = "gen/pendulum-scripted-v0"
FIT = OfflineAgent.fit


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """A tiny sweep: 200 updates of small networks, evaluated twice with 2 episodes."""
    monkeypatch.setenv("POLICYLAB_DATA", str(tmp_path / "data"))
    return suite.Settings(
        algorithms=("td3bc", "iql"),
        datasets=(DATASET,),
        seeds=(0,),
        steps=200,
        eval_every=100,
        eval_episodes=2,
        last_evaluations=2,
        agent_options=("hidden_sizes=[32,32]", "batch_size=64"),
        work_dir=tmp_path / "work",
        out=tmp_path / "out",
    )


def fit_with_callback(monkeypatch, callback):
    """Make every `OfflineAgent.fit` call `callback(step)` after each update."""
    monkeypatch.setattr(
        OfflineAgent, "fit", lambda agent, *args, **kwargs: FIT(agent, *args, callback=callback, **kwargs)
    )


def test_sweep_writes_one_cell_per_algorithm_and_dataset_and_skips_finished_runs(settings, monkeypatch):
    suite.main(settings)
    summary = json.loads((settings.out / "offline_suite.json").read_text())
    assert [(cell["algorithm"], cell["dataset"]) for cell in summary["cells"]] == [("td3bc", DATASET), ("iql", DATASET)]
    for cell in summary["cells"]:
        assert cell["metric"] == "return" and cell["seeds"] == [0] and cell["std"] == 0.0  # Pendulum: raw returns
        run = json.loads((settings.out / "runs" / f"{cell['algorithm']}-gen_pendulum-scripted-v0-s0.json").read_text())
        assert run["steps"] == [100, 200] and cell["mean"] == pytest.approx(sum(run["returns"]) / 2)
        assert run["updates_per_second"] > 0  # logged by fit as time/updates_per_second
    assert summary["pending"] == [] and summary["average"]["datasets"] == []
    table = (settings.out / "offline_suite.md").read_text()
    assert "last 2 evaluations" in table and "raw returns are reported for: gen/pendulum-scripted-v0" in table
    assert "| dataset | td3bc | iql |" in table
    td3bc, iql = (cell["mean"] for cell in summary["cells"])
    assert f"| {DATASET} (return) | {td3bc:.1f} ± 0.0 | {iql:.1f} ± 0.0 |" in table
    assert (settings.out / "offline_suite.png").exists()

    results = sorted((settings.out / "runs").glob("*.json"))
    modified = [path.stat().st_mtime_ns for path in results]
    monkeypatch.setattr(OfflineAgent, "fit", lambda *args, **kwargs: pytest.fail("a finished run was trained again"))
    suite.main(settings)
    assert [path.stat().st_mtime_ns for path in results] == modified

    only_iql = dataclasses.replace(settings, algorithms=("iql",), report_only=True, report_name="iql_only")
    suite.main(only_iql)  # a second table from the same runs, beside the first
    assert "| dataset | iql |" in (settings.out / "iql_only.md").read_text()
    assert "| dataset | td3bc | iql |" in (settings.out / "offline_suite.md").read_text()

    with pytest.raises(ValueError, match=r"was made with \{'steps': 200\}, not \{'steps': 400\}"):
        suite.main(dataclasses.replace(settings, steps=400, report_only=True))

    path = settings.out / "runs" / "td3bc-gen_pendulum-scripted-v0-s0.json"
    recorded = json.loads(path.read_text())
    del recorded["config"]["bf16_matmuls"]  # a result recorded before the config had this field
    path.write_text(json.dumps(recorded))
    suite.main(dataclasses.replace(settings, report_only=True))  # read as the field's default
    recorded["config"]["bf16_matmuls"] = True
    path.write_text(json.dumps(recorded))
    with pytest.raises(ValueError, match=r"\{'config.bf16_matmuls': True\}, not \{'config.bf16_matmuls': False\}"):
        suite.main(dataclasses.replace(settings, report_only=True))


def test_killed_run_resumes_from_its_checkpoint(settings, monkeypatch):
    settings = dataclasses.replace(settings, algorithms=("td3bc",))

    def crash(step: int) -> None:
        if step == 150:
            raise RuntimeError("killed")

    fit_with_callback(monkeypatch, crash)
    with pytest.raises(SystemExit, match="1 run.s. failed: td3bc-gen_pendulum-scripted-v0-s0"):
        suite.main(settings)
    assert not list((settings.out / "runs").glob("*.json"))
    table = (settings.out / "offline_suite.md").read_text()
    assert f"| {DATASET} | – |" in table and "Not finished yet: td3bc-gen_pendulum-scripted-v0-s0" in table

    steps = []
    fit_with_callback(monkeypatch, steps.append)
    suite.main(settings)
    assert steps == list(range(101, 201))  # continued after the checkpoint at 100
    run = json.loads((settings.out / "runs" / "td3bc-gen_pendulum-scripted-v0-s0.json").read_text())
    assert run["steps"] == [100, 200]  # the evaluation before the kill is kept once


def test_pgd_variants_are_pgd_around_each_inner_agent_and_take_options(settings):
    settings = dataclasses.replace(
        settings,
        algorithms=("pgd-td3bc", "pgd-iql"),
        agent_options=("guidance=0.5", "pgd-iql.synthetic_batch_size=128"),
    )
    options = suite.parse_agent_options(settings)
    td3bc_config = suite.agent_config(suite.Run("pgd-td3bc", DATASET, 3), options)
    iql_config = suite.agent_config(suite.Run("pgd-iql", DATASET, 3), options)
    assert (td3bc_config.agent, iql_config.agent) == ("td3bc", "iql")
    assert td3bc_config.guidance == iql_config.guidance == 0.5 and td3bc_config.seed == 3
    assert (td3bc_config.synthetic_batch_size, iql_config.synthetic_batch_size) == (240, 128)


def test_odice_ablation_variants_set_the_value_gradient(settings):
    settings = dataclasses.replace(settings, algorithms=("odice", "odice-true", "odice-semi"))
    options = suite.parse_agent_options(settings)
    gradients = [suite.agent_config(suite.Run(name, DATASET, 0), options).gradient for name in settings.algorithms]
    assert gradients == ["orthogonal", "true", "semi"]
