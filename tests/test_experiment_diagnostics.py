"""Smoke test of the diagnostics gallery experiment (quick mode): files and verdicts."""

import json

import pytest

from experiments import e23_diagnostics as diagnostics


@pytest.mark.slow
def test_diagnostics_experiment_quick(tmp_path):
    res = diagnostics.main(tmp_path, quick=True)
    for name in ("compare_checks.png", "compare_activations.png", "compare_training.png",
                 "report.txt", "results.json", "healthy/activations.png",
                 "broken/gradients.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert list(tmp_path.glob("monitor_healthy/events.out.tfevents*"))
    text = (tmp_path / "report.txt").read_text()
    assert "### healthy" in text and "### broken" in text
    m = res["metrics"]
    # the broken network is flagged on every check it was built to fail
    assert {"inputs", "initial_loss", "activations"} <= set(m["broken"]["problems"])
    assert not {"inputs", "initial_loss", "activations"} & set(m["healthy"]["problems"])
    assert json.loads((tmp_path / "results.json").read_text())["metrics"] == json.loads(
        json.dumps(m))
    assert all(str(tmp_path) in f for f in res["figures"])
