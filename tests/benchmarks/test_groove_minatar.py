"""benchmarks/groove.py --minatar: every meta-trained LPG found (and the untrained one) meta-tested on MinAtar, results
written as they finish and skipped once written, a table, and a clear skip when minatar is missing."""

import json

import groove as groove_script  # benchmarks/groove.py (conftest puts benchmarks/ on the path)
import pytest

from policylab.evolution.groove import LPGNetwork, save_lpg


def test_minatar_option_meta_tests_every_lpg_found_and_skips_finished_ones(tmp_path, monkeypatch):
    pytest.importorskip("minatar")
    save_lpg(LPGNetwork(hidden_size=8), tmp_path / "work" / "reduced-regret-s3" / "lpg.pt")
    save_lpg(LPGNetwork(hidden_size=8), tmp_path / "work" / "paper-uniform-s0" / "lpg.pt")  # another budget's
    args = groove_script.Args(minatar=("breakout",), minatar_updates=1, output=tmp_path)
    groove_script.main(args)
    results = sorted(path.name for path in (tmp_path / "minatar").glob("reduced-*.json"))
    assert results == ["reduced-regret-s3-breakout-u1-a0.json", "reduced-untrained-LPG-breakout-u1-a0.json"]
    result = json.loads((tmp_path / "minatar" / results[0]).read_text())
    assert result["lpg"] == "regret-s3" and {"a2c_return", "random_return", "normalised_return"} <= set(result)
    table = (tmp_path / "minatar_reduced.md").read_text()
    assert "| regret-s3 |" in table and "| untrained LPG |" in table and "| A2C (return) |" in table

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished MinAtar meta-test ran again")

    monkeypatch.setattr(groove_script, "meta_test_minatar", must_not_run)
    monkeypatch.setattr(groove_script, "minatar_reference_returns", must_not_run)
    groove_script.main(args)
    assert (tmp_path / "minatar_reduced.md").read_text() == table


def test_minatar_option_says_why_it_skips_when_minatar_is_missing(tmp_path, monkeypatch, capsys):
    def missing():
        raise ImportError('the MinAtar games need the minatar package: pip install "policylab[minatar]"')

    monkeypatch.setattr(groove_script, "import_minatar", missing)
    groove_script.main(groove_script.Args(minatar=("breakout",), output=tmp_path))
    assert "MinAtar meta-test skipped" in capsys.readouterr().out and not (tmp_path / "minatar").exists()
    with pytest.raises(ValueError, match="unknown MinAtar games"):
        groove_script.main(groove_script.Args(minatar=("pong",), output=tmp_path))
