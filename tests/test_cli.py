"""The ``nnkit`` command line and the run machinery behind it (nnkit.run)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml
from _fresh_interpreter import cpu_env
from _run_cli import run_cli

import nnkit
from nnkit import checkpoint as C
from nnkit import run as runs
from nnkit.config import load_config, parse_config, read_yaml

ROOT = Path(__file__).resolve().parents[1]

TINY = """
model: {arch: mlp, hidden: [8], dropout: 0.1}
data:
  dataset: moons
  options: {n: 100, noise: 0.2, seed: 1}
  split: [0.6, 0.2, 0.2]
  standardize: true
  batch_size: 10
optimizer:
  name: adam
  lr: 0.02
  schedule: {name: cosine, decay_steps: auto, alpha: 0.1}
  plateau: {patience: 2, factor: 0.5}
training:
  epochs: 4
  early_stopping: {monitor: val_loss, patience: 10}
logging: {tensorboard: true, checkpoint_keep: 2, plots: true, histograms_every: 2}
"""

METRIC_KEYS = {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
               "grad_norm", "seconds"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    p.write_text(TINY)
    return p


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    d = tmp_path_factory.mktemp("runs") / "a"
    rc, out, err = run_cli("train", str(tiny), "--out", str(d))
    return d, rc, out, err


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def leaves(path: Path) -> dict[str, np.ndarray]:
    return C.load_arrays(path)[0]


# ----------------------------------------------------------------------------- help


@pytest.mark.parametrize("cmd", [[], ["train"], ["eval"], ["summary"], ["lr-find"], ["sweep"],
                                 ["diagnose"], ["datasets"], ["models"]])
def test_help_for_every_command(cmd):
    rc, out, _ = run_cli(*cmd, "--help")
    assert rc == 0 and out.startswith("usage: nnkit") and "--help" in out


def test_usage_errors_exit_2():
    assert run_cli()[0] == 2
    assert run_cli("trian")[0] == 2
    rc, _, err = run_cli("train")
    assert rc == 2 and "give a CONFIG" in err


def test_datasets_and_models_lists():
    rc, out, _ = run_cli("datasets")
    assert rc == 0 and {"digits", "moons", "xor", "fashion_mnist"} <= {
        line.split()[0] for line in out.splitlines()}
    rc, out, _ = run_cli("models")
    assert rc == 0 and "lenet5" in out and "mlp" in out and "conv2d" in out


def test_python_dash_m_entry_point():
    p = subprocess.run([sys.executable, "-m", "nnkit", "datasets"], capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0 and "digits" in p.stdout


# ----------------------------------------------------------------------------- train


def test_train_writes_complete_run_directory(trained, tiny):
    d, rc, out, err = trained
    assert rc == 0, err
    assert f"run directory: {d}" in out and "test accuracy" in out and "best epoch" in out
    names = {p.name for p in d.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "summary.json", "checkpoints", "plots",
            "tensorboard"} <= names
    rs = rows(d)
    assert [r["epoch"] for r in rs] == [0, 1, 2, 3]
    assert all(set(r) == METRIC_KEYS | {"lr_scale"} for r in rs)
    assert all(r["lr"] > 0 and r["grad_norm"] > 0 and 0 <= r["val_accuracy"] <= 1 for r in rs)
    assert rs[-1]["lr"] < rs[0]["lr"]  # cosine schedule
    s = json.loads((d / "summary.json").read_text())
    for k in ("best_epoch", "epochs_run", "test_loss", "test_accuracy", "param_count",
              "wall_seconds", "status"):
        assert k in s
    assert s["status"] == "completed" and s["epochs_run"] == 4
    assert s["param_count"] == 2 * 8 + 8 + 8 * 2 + 2
    best = int(np.argmin([r["val_loss"] for r in rs]))
    assert s["best_epoch"] == best
    ck = {p.name for p in (d / "checkpoints").iterdir()}
    assert ck == {"best.npz", "ckpt-000000002.npz", "ckpt-000000003.npz"}
    assert C.load_meta(d / "checkpoints" / "best.npz")["epoch"] == best
    for png in ("history.png", "lr.png", "decision_boundary.png"):
        assert (d / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = b"".join(p.read_bytes() for p in (d / "tensorboard").iterdir())
    assert b"loss/train" in events and b"accuracy/val" in events and b"lr" in events
    # logging.histograms_every: 2 -> the training monitor at epochs 0 and 2
    diag = {p.name for p in (d / "diagnostics").iterdir()}
    assert {"histograms_epoch0000.png", "histograms_epoch0002.png", "update_ratio.png"} <= diag
    events = b"".join((d / "diagnostics" / n).read_bytes() for n in diag
                      if n.startswith("events"))
    assert b"params/" in events and b"grads/" in events and b"activations/" in events


def test_run_config_is_resolved_and_reloadable(trained, tiny):
    d = trained[0]
    raw = read_yaml(d / "config.yaml")
    meta = raw.pop("run")
    assert meta["jax_version"] == jax.__version__ and meta["nnkit_version"] == nnkit.__version__
    assert meta["device"] and meta["config_file"] == str(tiny)
    assert raw["model"]["out"] == 2  # filled in from the data
    again = parse_config(raw)
    assert again.model == {**load_config(tiny).model, "out": 2}
    assert again.optimizer == load_config(tiny).optimizer


def test_eval_matches_summary_and_hand_computed_accuracy(trained):
    d = trained[0]
    rc, out, err = run_cli("eval", str(d), "--json")
    assert rc == 0, err
    got = json.loads(out)
    s = json.loads((d / "summary.json").read_text())
    assert got["checkpoint"] == "best" and got["n"] == 20
    assert got["loss"] == pytest.approx(s["test_loss"], rel=1e-6)
    assert got["accuracy"] == pytest.approx(s["test_accuracy"], abs=1e-7)
    # independent: restore the best params and count correct argmaxes by hand
    cfg, _ = runs.read_run_config(d)
    prep = runs.prepare(cfg)
    ts, _ = C.restore(d / "checkpoints" / "best.npz", runs.initial_state(prep))
    logits, _ = prep.model.apply(ts.params, ts.state, prep.test[0])
    assert got["accuracy"] == pytest.approx(
        float(np.mean(np.argmax(np.asarray(logits), 1) == prep.test[1])), abs=1e-7)
    rc, out, _ = run_cli("eval", str(d), "--split", "val", "--checkpoint", "latest")
    assert rc == 0 and out.startswith("val (20 examples, latest checkpoint, epoch 3)")
    assert f"loss {rows(d)[-1]['val_loss']:.4f}" in out


def test_config_error_exit_2_one_line_and_no_run_dir(tmp_path, monkeypatch, tiny):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.replace("lr: 0.02", "lrr: 0.02"))
    rc, out, err = run_cli("train", str(bad))
    assert rc == 2
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert str(bad) in err and "optimizer.lrr" in err and "did you mean 'lr'?" in err
    assert not (tmp_path / "runs").exists()
    rc, _, err = run_cli("train", str(tiny), "--set", "model.dropout=1.5", "--out",
                         str(tmp_path / "x"))
    assert rc == 2 and "model.dropout: must be in [0, 1)" in err and not (tmp_path / "x").exists()
    rc, _, err = run_cli("train", str(tiny), "--set", "data.batch_size=1000")
    assert rc == 2 and "error: --set: data.batch_size: must be <=" in err  # not the file
    big = tmp_path / "big.yaml"
    big.write_text(TINY.replace("batch_size: 10", "batch_size: 1000"))
    rc, _, err = run_cli("train", str(big))
    assert rc == 2 and f"error: {big}: data.batch_size: must be <=" in err
    big.unlink()
    rc, _, err = run_cli("train", str(tmp_path / "missing.yaml"))
    assert rc == 2 and "missing.yaml" in err
    rc, _, err = run_cli("train", str(tiny), "--set", "data.dataset=fashion_mnist",
                         "--set", f"data.options={{path: {tmp_path / 'nope'}}}")
    assert rc == 2 and "nope" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_out_dir_holding_a_run_and_resume_misuse(trained, tiny):
    d = trained[0]
    rc, _, err = run_cli("train", str(tiny), "--out", str(d))
    assert rc == 2 and "already holds a run" in err
    assert run_cli("train", str(tiny), "--resume", str(d))[0] == 2
    rc, _, err = run_cli("eval", str(d.parent / "nothing"))
    assert rc == 2 and "not found" in err


def test_default_run_dir_name_and_sigterm(tmp_path, monkeypatch, tiny):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(tiny, ["training.epochs=3", "logging.plots=false",
                             "logging.tensorboard=false"])
    before = signal.getsignal(signal.SIGTERM)

    def term(epoch, ts, logs):
        if epoch == 0:
            os.kill(os.getpid(), signal.SIGTERM)

    res = runs.train(cfg, config_path=str(tiny), callbacks=[term])
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
    assert res.status == "interrupted" and res.exit_code == 143
    assert res.run_dir.parent == Path("runs") and res.run_dir.name.startswith("tiny-")
    assert [r["epoch"] for r in rows(res.run_dir)] == [0]
    assert C.load_meta(res.run_dir / "checkpoints" / "ckpt-000000000.npz")["epoch"] == 0
    s = json.loads((res.run_dir / "summary.json").read_text())
    assert s["status"] == "interrupted" and s["stop_reason"].startswith("interrupted")
    # the signal asks to stop now: fit skips the test split (TINY has one)
    assert s["test_loss"] is None and s["test_accuracy"] is None


def test_stop_flag_handler():
    flag = runs.StopFlag()
    with contextlib.redirect_stderr(io.StringIO()):
        flag.handler(signal.SIGINT, None)
        assert flag.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            flag.handler(signal.SIGINT, None)


def test_final_line_numbers_epochs_from_0_as_everywhere_else(trained):
    """The best epoch is 0-based (metrics.jsonl, checkpoint names, messages): the final line
    shows the range it comes from, never "best epoch 199 of 200"."""
    from nnkit.cli import _result_line

    d, rc, out, _ = trained
    s = json.loads((d / "summary.json").read_text())
    assert f"best epoch {s['best_epoch']} of epochs 0-3, wall " in out
    line = _result_line({"test_loss": 0.5, "test_accuracy": 0.9, "best_epoch": 199,
                         "epochs_run": 200, "wall_seconds": 1.0})
    assert line == "test accuracy 0.9000, test loss 0.5000, best epoch 199 of epochs 0-199, " \
                   "wall 1.0 s"
    assert "best epoch 0 of epoch 0," in _result_line({"best_epoch": 0, "epochs_run": 1})
    assert "best epoch n/a of epochs 0-2," in _result_line({"best_epoch": None,
                                                            "epochs_run": 3})


def test_resume_is_exact(trained, tiny, tmp_path):
    a = trained[0]
    b = tmp_path / "b"

    def interrupt(epoch, ts, logs):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with contextlib.redirect_stderr(io.StringIO()):
        # logging settings do not change the numbers; skipping plots/events saves time
        quiet = ["logging.plots=false", "logging.tensorboard=false"]
        first = runs.train(load_config(tiny, quiet), config_path=str(tiny), out=b,
                           callbacks=[interrupt])
    assert first.exit_code == 130 and first.status == "interrupted"
    assert [r["epoch"] for r in rows(b)] == [0, 1]
    rc, out, err = run_cli("train", "--resume", str(b))
    assert rc == 0, err
    final_a = leaves(a / "checkpoints" / "ckpt-000000003.npz")
    final_b = leaves(b / "checkpoints" / "ckpt-000000003.npz")
    assert final_a.keys() == final_b.keys()
    for k in final_a:
        np.testing.assert_array_equal(final_a[k], final_b[k], err_msg=k)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
    assert strip(rows(a)) == strip(rows(b))
    assert (b / "plots").exists() is False
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sb["sessions"] == 2 and sb["status"] == "completed"
    for k in ("test_loss", "test_accuracy", "best_epoch", "epochs_run", "best_value"):
        assert sa[k] == sb[k], k
    rc, out, _ = run_cli("train", "--resume", str(b))
    assert rc == 0 and "nothing to do" in out


def test_resume_after_an_interrupt_in_the_early_stopping_epoch(tiny, tmp_path):
    """SIGINT in the epoch where early stopping fires: fit leaves before its early-stopping
    check and the run is marked interrupted; the resumed run must end as the uninterrupted
    one did (no extra epochs, same test metrics from the restored best params)."""
    sets = ["logging.plots=false", "logging.tensorboard=false", "training.epochs=40",
            "training.early_stopping.patience=2"]
    cfg = load_config(tiny, sets)
    with contextlib.redirect_stderr(io.StringIO()):
        a = runs.train(cfg, config_path=str(tiny), out=tmp_path / "a")
        assert a.status == "early_stopped" and a.summary["epochs_run"] < 40
        stop = a.summary["epochs_run"] - 1

        def interrupt(epoch, ts, logs):
            if epoch == stop:
                os.kill(os.getpid(), signal.SIGINT)

        b = runs.train(cfg, config_path=str(tiny), out=tmp_path / "b", callbacks=[interrupt])
        assert b.status == "interrupted" and b.summary["epochs_run"] == stop + 1
        c = runs.resume(tmp_path / "b")
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
    assert strip(rows(tmp_path / "a")) == strip(rows(tmp_path / "b"))
    # logging.plots=false: the diagnostics (histograms_every: 2) write events, no PNG
    diag = [p.name for p in (tmp_path / "a" / "diagnostics").iterdir()]
    assert any(n.startswith("events.out.tfevents") for n in diag)
    assert not [n for n in diag if n.endswith(".png")], diag
    assert c.status == "early_stopped" and c.exit_code == 0
    for k in ("stop_reason", "test_loss", "test_accuracy", "best_epoch", "best_value",
              "epochs_run"):
        assert c.summary[k] == a.summary[k], k
    assert a.summary["test_loss"] is not None
    fa, fc = (leaves(Path(s["latest_checkpoint"])) for s in (a.summary, c.summary))
    assert Path(c.summary["latest_checkpoint"]).name == Path(a.summary["latest_checkpoint"]).name
    assert fa.keys() == fc.keys()
    for k in fa:
        np.testing.assert_array_equal(fa[k], fc[k], err_msg=k)


def test_checkpoint_every_resumes_without_gaps_or_repeated_epochs(tiny, tmp_path):
    """logging.checkpoint_every: 2 over 5 epochs: checkpoints after epochs 1, 3 and 4 (the
    last). A run killed after epoch 2 (a crash: epoch 2 has no checkpoint, maybe a best.npz)
    resumes from epoch 1's: metrics.jsonl and TensorBoard hold each epoch once, and it ends
    as the uninterrupted run (bit-identical checkpoints and best.npz, same summary). A
    SIGINT after epoch 2 writes epoch 2's checkpoint, off schedule, before stopping."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(tiny, ["training.epochs=5", "logging.checkpoint_every=2",
                             "logging.checkpoint_keep=3", "logging.plots=false",
                             "logging.histograms_every=0"])
    a, b, c = (tmp_path / n for n in "abc")

    def crash(epoch, ts, logs):
        if epoch == 2:
            raise RuntimeError("killed")

    def interrupt(epoch, ts, logs):
        if epoch == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with contextlib.redirect_stderr(io.StringIO()):
        ra = runs.train(cfg, config_path=str(tiny), out=a)
        with pytest.raises(RuntimeError, match="killed"):
            runs.train(cfg, config_path=str(tiny), out=b, callbacks=[crash])
        assert [r["epoch"] for r in rows(b)] == [0, 1, 2]
        assert runs.rundir.checkpoint_steps(b) == [1]
        rb = runs.resume(b)
        rc = runs.train(cfg, config_path=str(tiny), out=c, callbacks=[interrupt])
    assert ra.status == rb.status == "completed" and rb.summary["sessions"] == 2
    assert runs.rundir.checkpoint_steps(a) == runs.rundir.checkpoint_steps(b) == [1, 3, 4]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
    assert [r["epoch"] for r in rows(b)] == list(range(5))
    assert strip(rows(a)) == strip(rows(b))
    for name in ("ckpt-000000004.npz", "best.npz"):
        fa, fb = (leaves(d / "checkpoints" / name) for d in (a, b))
        assert fa.keys() == fb.keys()
        for k in fa:
            np.testing.assert_array_equal(fa[k], fb[k], err_msg=f"{name}: {k}")
    for k in ("test_loss", "test_accuracy", "best_epoch", "best_value", "epochs_run"):
        assert ra.summary[k] == rb.summary[k], k
    ea = EventAccumulator(str(b / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    got = [(e.step, e.value) for e in ea.Scalars("loss/train")]
    assert got == [(r["epoch"], np.float32(r["train_loss"])) for r in rows(a)]
    assert rc.status == "interrupted" and [r["epoch"] for r in rows(c)] == [0, 1, 2]
    assert runs.rundir.checkpoint_steps(c) == [1, 2]


def test_a_failed_background_checkpoint_write_stops_the_run(tiny, tmp_path, monkeypatch):
    """An error writing a checkpoint (on the writer thread) is raised by the run, at the
    next checkpoint or at the end, before summary.json: never lost."""
    save = C.CheckpointManager.save

    def full(self, tree, step, **kw):
        if step == 1:
            raise OSError(28, "No space left on device", str(self.path(step)))
        return save(self, tree, step, **kw)

    monkeypatch.setattr(C.CheckpointManager, "save", full)
    cfg = load_config(tiny, ["training.epochs=3", "logging.plots=false",
                             "logging.tensorboard=false", "logging.histograms_every=0"])
    with pytest.raises(OSError, match="No space left on device") as e:
        runs.train(cfg, config_path=str(tiny), out=tmp_path / "r")
    assert any("ckpt-000000001.npz" in n for n in e.value.__notes__)
    assert runs.rundir.checkpoint_steps(tmp_path / "r") == [0]
    assert [r["epoch"] for r in rows(tmp_path / "r")] == [0, 1, 2]  # raised at epoch 2's
    assert not (tmp_path / "r" / "summary.json").exists()


NONFINITE = """
model: {arch: mlp, hidden: [4]}
data: {dataset: sin, options: {n: 40}, split: [1.0], batch_size: 10}
optimizer:
  name: sgd
  lr: 0.01
  schedule: {name: piecewise, boundaries: [8], values: [0.01, 1.0e+30]}
training: {epochs: 5}
loss: mse
metrics: [mae]
logging: {tensorboard: false, plots: false}
"""


@pytest.mark.parametrize("every", [1, 4])
def test_nonfinite_loss_exit_1_and_last_good_checkpoint(tmp_path, every):
    """A non-finite epoch 2: epoch 1's checkpoint is the latest (with checkpoint_every: 4,
    written when training stops)."""
    cfg = tmp_path / "nan.yaml"
    cfg.write_text(NONFINITE)
    d = tmp_path / "run"
    rc, out, err = run_cli("train", str(cfg), "--out", str(d), "--set",
                           f"logging.checkpoint_every={every}")
    assert rc == 1 and "Traceback" not in err
    assert "non-finite loss at epoch 2" in err and "last good checkpoint" in err
    assert [r["epoch"] for r in rows(d)] == [0, 1]
    s = json.loads((d / "summary.json").read_text())
    assert s["status"] == "nonfinite" and s["epochs_run"] == 2
    c, _ = runs.read_run_config(d)
    ts, meta = C.restore(s["latest_checkpoint"], runs.initial_state(runs.prepare(c)))
    assert meta["epoch"] == 1
    assert runs.rundir.checkpoint_steps(d) == ([0, 1] if every == 1 else [1])
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(ts.params))


def test_run_that_saved_no_checkpoint_says_delete_or_another_out(tmp_path):
    """A run that fails in its first epoch leaves a directory without a checkpoint: the
    failure, a rerun into it and --resume all say it cannot be resumed and what to do
    instead (delete it or train into another --out), and nothing in it is deleted."""
    cfg = tmp_path / "nan0.yaml"
    cfg.write_text(NONFINITE.replace("values: [0.01, 1.0e+30]", "values: [1.0e+30, 1.0e+30]"))
    d = tmp_path / "run"
    rc, _, err = run_cli("train", str(cfg), "--out", str(d), "--no-progress")
    assert rc == 1 and "non-finite loss at epoch 0" in err
    assert "no checkpoint was saved" in err and "None" not in err
    names = sorted(p.name for p in d.iterdir())
    assert "config.yaml" in names and runs.rundir.checkpoint_steps(d) == []
    before = (d / "config.yaml").read_text()
    expect = (f"{d} holds a run that saved no checkpoint, so it cannot be resumed: delete {d} "
              "or train into another --out")
    for argv in (["train", str(cfg), "--out", str(d)], ["train", "--resume", str(d)],
                 ["train", "--resume", str(d), "--set", "training.epochs=9"]):
        rc, _, err = run_cli(*argv)
        assert rc == 2 and err == f"nnkit train: error: {expect}\n", err
    assert sorted(p.name for p in d.iterdir()) == names
    assert (d / "config.yaml").read_text() == before


def _nnkit_interruptible(*args: str) -> list[str]:
    """``python -m nnkit ARGS`` with Python's SIGINT handler installed first: a suite
    started in the background by a shell without job control has SIGINT ignored, its
    children inherit that, and Python keeps an ignored SIGINT ignored (as POSIX programs
    do), so the SIGINT tests would test nothing there."""
    return [sys.executable, "-c", "import runpy, signal; "
            "signal.signal(signal.SIGINT, signal.default_int_handler); "
            "runpy.run_module('nnkit', run_name='__main__', alter_sys=True)", *args]


@pytest.mark.slow
def test_sigint_subprocess_then_resume(tiny, tmp_path):
    d = tmp_path / "run"
    cmd = _nnkit_interruptible(
        "train", str(tiny), "--out", str(d), "--set", "training.epochs=3000", "--set",
        "logging.tensorboard=false", "--set", "logging.plots=false",
        "--set", "optimizer.schedule.decay_steps=100")  # fixed steps: epochs change on resume
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    deadline = time.monotonic() + 120
    metrics = d / "metrics.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "SIGINT received" in err and "--resume" in err
    last = rows(d)[-1]["epoch"]
    assert 0 <= last < 2999
    assert C.load_meta(d / "checkpoints" / f"ckpt-{last:09d}.npz")["epoch"] == last
    assert json.loads((d / "summary.json").read_text())["status"] == "interrupted"
    rc, _, err = run_cli("train", "--resume", str(d), "--set", f"training.epochs={last + 3}")
    assert rc == 0, err
    assert [r["epoch"] for r in rows(d)] == list(range(last + 3))


def _sweep_until(tiny, out, grid, ready, *sets):
    """``nnkit sweep`` in a child process, sent SIGINT once ``ready()``; returns
    ``(returncode, stdout, stderr, seconds from the signal to the exit)``."""
    cmd = [*_nnkit_interruptible("sweep", str(tiny), "--grid", grid, "--out", str(out)),
           *(a for s in ["training.early_stopping=null", "logging.plots=false",
                         "logging.tensorboard=false", "logging.histograms_every=0", *sets]
             for a in ("--set", s))]
    # PYTHONFAULTHANDLER: a child that ignores the SIGINT is sent SIGABRT, and the failure
    # shows where each of its threads was
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            _, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
        pytest.fail(f"nnkit sweep still ran 90 s after SIGINT; its stacks:\n{err[-6000:]}")
    return proc.returncode, out, err, time.monotonic() - sent


@pytest.mark.slow
def test_sigint_stops_a_sweep_of_separate_runs(tiny, tmp_path):
    """SIGINT during a sweep's separate runs stops the current run after its epoch (its
    checkpoint kept) and the sweep with it: no later point runs, its row is marked
    interrupted, the tables are written and the exit status is 130."""
    d = tmp_path / "sw"
    metrics = d / "run-0" / "metrics.jsonl"
    rc, out, err, _ = _sweep_until(
        tiny, d, "model.hidden=[4],[6],[8]",
        lambda: metrics.exists() and metrics.read_text().count("\n") >= 1,
        "training.epochs=3000")
    assert rc == 130, err
    assert "SIGINT received" in err
    assert "interrupted: run-0 (model.hidden=[4]) stopped after epoch" in err
    assert f"nnkit train --resume {d / 'run-0'}); 2 of 3 point(s) not run" in err
    assert sorted(p.name for p in d.iterdir()) == ["run-0", "sweep.csv", "sweep.json",
                                                   "sweep.txt"]
    info = json.loads((d / "sweep.json").read_text())
    assert info["status"] == "interrupted"
    assert info["not_run"] == [{"model.hidden": [6]}, {"model.hidden": [8]}]
    [row] = info["rows"]
    assert row["status"] == "interrupted" and row["stop_reason"].startswith("interrupted")
    s = json.loads((d / "run-0" / "summary.json").read_text())
    assert s["status"] == "interrupted" and runs.rundir.checkpoint_steps(d / "run-0")
    assert len((d / "sweep.csv").read_text().splitlines()) == 2
    table = (d / "sweep.txt").read_text().splitlines()
    assert table[0].split()[-1] == "status" and table[2].split()[-1] == "interrupted"
    assert table[-1].startswith("interrupted: run-0 (model.hidden=[4]) stopped after epoch")


@pytest.mark.slow
def test_sigint_in_a_vmapped_sweep_exits_at_once_and_says_so(tiny, tmp_path):
    """SIGINT during a sweep trained as one program: the epochs it queued on the device
    cannot be cancelled, so the process ends at once (exit 130) rather than waiting for
    them, leaving a sweep.json and sweep.txt that say it was interrupted (no table)."""
    d = tmp_path / "sw"
    rc, out, err, took = _sweep_until(tiny, d, "seed=0,1", lambda: d.exists() and (
        time.sleep(2) or True), "training.epochs=1000000")  # minutes to the end
    assert rc == 130, err
    assert took < 60 and err.endswith("interrupted\n") and out == ""
    assert sorted(p.name for p in d.iterdir()) == ["sweep.json", "sweep.txt"]
    info = json.loads((d / "sweep.json").read_text())
    assert info["status"] == "interrupted" and info["method"] == "vmap" and info["rows"] == []
    assert (d / "sweep.txt").read_text() == (
        "interrupted: the points train together in one program, so none finished; run the "
        "sweep again for results\n")


def test_internal_error_exit_1_with_traceback(monkeypatch, tiny):
    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(runs, "train", broken)
    rc, _, err = run_cli("train", str(tiny))
    assert rc == 1 and "Traceback" in err and "internal error: RuntimeError: boom" in err


# ----------------------------------------------------------------------------- tools


def test_summary_command(tiny):
    rc, out, _ = run_cli("summary", str(tiny))
    assert rc == 0 and "total params 42" in out and "dense_0" in out and "(2,)" in out


def test_lr_find_command(tiny, tmp_path):
    png = tmp_path / "lr.png"
    rc, out, err = run_cli("lr-find", str(tiny), "--steps", "30", "--min-lr", "1e-5",
                           "--max-lr", "10", "--out", str(png))
    assert rc == 0, err
    assert png.read_bytes()[:4] == b"\x89PNG"
    lr = float(out.split("suggested learning rate ")[1].split()[0])
    assert 1e-5 <= lr <= 10


def test_lr_find_default_plot_name_keeps_an_earlier_plot(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lr_find-tiny.png").write_bytes(b"earlier")
    rc, out, err = run_cli("lr-find", str(tiny), "--steps", "5")
    assert rc == 0, err
    assert (tmp_path / "lr_find-tiny.png").read_bytes() == b"earlier"
    assert (tmp_path / "lr_find-tiny-2.png").read_bytes()[:4] == b"\x89PNG"
    assert "plot: lr_find-tiny-2.png" in out


def test_lr_find_checks_its_out_before_the_range_test(tiny, tmp_path, monkeypatch):
    """An --out matplotlib cannot save as, or in a place that cannot be created, is refused
    before the range test; a directory gets the default plot name inside it; the path
    printed is the file written."""
    import nnkit.train as train_mod
    from nnkit.run.tools import check_plot_path

    real = train_mod.lr_find

    def expensive(*a, **k):
        raise AssertionError("the range test ran before --out was checked")

    monkeypatch.setattr(train_mod, "lr_find", expensive)
    (tmp_path / "afile").write_text("x")
    for out, expect in [(tmp_path / "p.yaml", "cannot save a plot as '.yaml'; use one of "),
                        (tmp_path / "afile" / "lr.png",
                         f"cannot create it: {tmp_path / 'afile'} is a file, not a directory")]:
        rc, _, err = run_cli("lr-find", str(tiny), "--steps", "5", "--out", str(out))
        assert rc == 2 and err.startswith(f"nnkit lr-find: error: --out {out}: "), err
        assert expect in err and err.count("\n") == 1
        if out.suffix == ".yaml":
            assert all(f in err for f in (".png", ".pdf", ".svg"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert check_plot_path(tmp_path / "noext") == tmp_path / "noext.png"
    assert check_plot_path(tmp_path / "a" / "b.SVG") == tmp_path / "a" / "b.SVG"
    assert not (tmp_path / "a").exists()
    with pytest.raises(runs.RunError, match="is a directory"):
        check_plot_path(tmp_path)
    monkeypatch.setattr(train_mod, "lr_find", real)
    d = tmp_path / "plots"
    d.mkdir()
    rc, out, err = run_cli("lr-find", str(tiny), "--steps", "5", "--out", str(d))
    assert rc == 0, err
    assert f"plot: {d / 'lr_find-tiny.png'}\n" in out
    assert [p.name for p in d.iterdir()] == ["lr_find-tiny.png"]
    assert (d / "lr_find-tiny.png").read_bytes()[:4] == b"\x89PNG"


NO_EXTRAS = ["--set", "training.early_stopping=null", "--set", "optimizer.plateau=null",
             "--set", "optimizer.schedule=null", "--set", "training.epochs=3"]


def test_sweep_vmapped_equals_separate_run(tiny, tmp_path):
    d = tmp_path / "sw"
    rc, out, err = run_cli("sweep", str(tiny), "--grid", "optimizer.lr=3e-3,3e-2",
                           *NO_EXTRAS, "--out", str(d))
    assert rc == 0, err
    assert "one vmapped program" in out
    info = json.loads((d / "sweep.json").read_text())
    assert info["method"] == "vmap" and len(info["rows"]) == 2
    table = (d / "sweep.csv").read_text().splitlines()
    assert table[0].startswith("optimizer.lr,") and len(table) == 3
    row = next(r for r in info["rows"] if r["optimizer.lr"] == pytest.approx(0.03))
    sets = [a for a in NO_EXTRAS if a != "--set"] + ["optimizer.lr=3e-2", "logging.plots=false",
                                                     "logging.tensorboard=false"]
    single = runs.train(load_config(tiny, sets), out=tmp_path / "single")
    for k in ("train_loss", "val_loss", "val_accuracy"):
        assert row[k] == pytest.approx(single.summary["last_epoch"][k], rel=1e-4, abs=1e-6), k
    if "test_loss" in single.summary:  # the separate run's test metrics, per model
        assert row["test_loss"] == pytest.approx(single.summary["test_loss"], rel=1e-4)
    assert row["stop_reason"] == single.summary["stop_reason"] == "completed"


@pytest.mark.slow
def test_sweep_separate_runs_for_other_keys(tiny, tmp_path):
    d = tmp_path / "sw"
    rc, out, err = run_cli("sweep", str(tiny), "--grid", "model.hidden=[4],[6]",
                           "--set", "training.epochs=1", "--set", "logging.plots=false",
                           "--set", "logging.tensorboard=false", "--out", str(d))
    assert rc == 0, err
    assert "separate runs: the grid varies model.hidden" in out
    info = json.loads((d / "sweep.json").read_text())
    assert info["separate_runs_because"][0] == "the grid varies model.hidden"
    assert info["method"] == "runs" and [r["model.hidden"] for r in info["rows"]] == [[4], [6]]
    for i in range(2):
        s = json.loads((d / f"run-{i}" / "summary.json").read_text())
        assert s["param_count"] == [2 * 4 + 4 + 4 * 2 + 2, 2 * 6 + 6 + 6 * 2 + 2][i]
        assert info["rows"][i]["stop_reason"] == s["stop_reason"]
    rc, _, err = run_cli("sweep", str(tiny), "--grid", "optimizer.lrr=1,2")
    assert rc == 2 and "did you mean 'lr'?" in err


def test_parse_grid():
    g = runs.parse_grid(["optimizer.lr=1e-4, 1e-3", "model.hidden=[64,32],[128]", "seed=0"])
    assert g == {"optimizer.lr": [1e-4, 1e-3], "model.hidden": [[64, 32], [128]], "seed": [0]}
    with pytest.raises(ValueError, match="given twice"):
        runs.parse_grid(["seed=1", "seed=2"])
    assert yaml.safe_load("1e-3") == "1e-3"  # why numbers are fixed up after safe_load
    with pytest.raises(ValueError, match=r"--grid: model: .*'arch' repeated"):
        runs.parse_grid(["model={arch: mlp, arch: cnn}"])


# ----------------------------------------------------------------------------- prepare


def test_prepare_splits_standardizes_and_resolves_auto_steps(tiny):
    from nnkit.run.prepare import _schedule

    cfg = load_config(tiny, ["optimizer.schedule={name: linear, end_value: 0.0, "
                             "transition_steps: auto}", "optimizer.accumulate=2"])
    prep = runs.prepare(cfg)
    assert [len(p[0]) for p in (prep.train, prep.val, prep.test)] == [60, 20, 20]
    np.testing.assert_allclose(prep.train[0].mean(0), 0, atol=1e-5)  # fitted on train
    np.testing.assert_allclose(prep.train[0].std(0), 1, atol=1e-4)
    assert prep.steps_per_epoch == 6 and prep.cfg.model["out"] == 2
    total = 4 * 6 // 2  # epochs * steps per epoch // accumulate
    sched = _schedule(cfg, total)
    assert float(sched(0)) == pytest.approx(0.02)
    assert float(sched(total // 2)) == pytest.approx(0.01)
    assert float(sched(total)) == pytest.approx(0.0)


def test_prepare_two_way_split_and_augmentation(tiny):
    raw = read_yaml(tiny)
    raw["model"] = {"arch": "mlp", "hidden": [4]}
    raw["data"] = {"dataset": "digits", "split": [0.9, 0.1], "batch_size": 32,
                   "augmentation": [{"name": "random_translate", "max_shift": 1},
                                    {"name": "gaussian_noise", "std": 0.5}]}
    prep = runs.prepare(parse_config(raw))
    assert prep.test is None and len(prep.train[0]) + len(prep.val[0]) == 1797
    x = prep.train[0][:4]
    out = np.asarray(jax.jit(prep.augment)(jax.random.key(0), x))
    assert out.shape == x.shape and not np.allclose(out, x)
    raw["data"]["dataset"] = "moons"
    with pytest.raises(ValueError, match=r"data.augmentation\[0\]: random_translate needs"):
        runs.prepare(parse_config(raw))


# ----------------------------------------------------------------------------- parallel, precision


def test_train_with_precision_and_parallel_sections(trained, tiny, tmp_path):
    """precision: mixed_bfloat16 and parallel: {data_parallel: true} (a 1-device mesh here;
    tests/test_parallel.py runs fit on 8) reach fit: the run trains like the float32 run,
    not bit-identically, and checkpoints float32 params."""
    d = tmp_path / "mixed"
    rc, out, err = run_cli("train", str(tiny), "--out", str(d), "--set",
                           "precision=mixed_bfloat16", "--set", "parallel.data_parallel=true",
                           "--set", "logging.tensorboard=false", "--set", "logging.plots=false")
    assert rc == 0, err
    raw = read_yaml(d / "config.yaml")
    assert raw["precision"] == "mixed_bfloat16" and raw["parallel"] == {"data_parallel": True}
    ref, got = rows(trained[0]), rows(d)
    assert [r["epoch"] for r in got] == [0, 1, 2, 3]
    a = [r["train_loss"] for r in ref]
    b = [r["train_loss"] for r in got]
    assert a != b
    np.testing.assert_allclose(b, a, rtol=0.05)
    arrays = leaves(d / "checkpoints" / "ckpt-000000003.npz")
    floats = [k for k, v in arrays.items() if np.issubdtype(v.dtype, np.floating)]
    assert floats and all(arrays[k].dtype == np.float32 for k in floats)
    # eval rebuilds the policy from config.yaml and reproduces the summary's test loss
    rc, out, err = run_cli("eval", str(d), "--json")
    assert rc == 0, err
    s = json.loads((d / "summary.json").read_text())
    assert json.loads(out)["loss"] == pytest.approx(s["test_loss"], rel=1e-5)


def test_parallel_and_precision_errors_exit_2_before_a_run_dir(tmp_path, monkeypatch, tiny):
    monkeypatch.chdir(tmp_path)
    for setting, expect in [
        ("parallel.fsdp=3", "parallel.fsdp: expected true or false, got 3"),
        ("parallel.devices=2", "parallel: unknown key(s) ['devices']"),
        (f"parallel.data_parallel={jax.device_count() + 1}", "device(s) are visible"),
        ("precision=half", "precision: unknown precision policy 'half'"),
    ]:
        rc, _, err = run_cli("train", str(tiny), "--set", setting)
        assert rc == 2 and expect in err and "Traceback" not in err, (setting, err)
    assert not (tmp_path / "runs").exists()


def test_only_process_0_writes_and_every_process_gathers(tmp_path, monkeypatch, tiny):
    """Multi-process runs: each checkpoint epoch every process gathers the state (a
    collective); only process 0 writes metrics and checkpoints (in the background), and all
    meet at a checkpoint's barrier once its file is complete: at the next checkpoint, or
    when training ends."""
    from nnkit.run import trainer

    prep = runs.prepare(load_config(tiny))
    ts = runs.initial_state(prep)
    calls: list = []

    class Spy:
        def gather(self, tree):
            calls.append("gather")
            return jax.device_get(tree)

        def sync(self, name):
            epoch = int(name.rsplit("-", 1)[1])
            calls.append((name, (d / "checkpoints" / f"ckpt-{epoch:09d}.npz").is_file()))

    logs = {"train_loss": 1.0, "val_loss": 0.5, "val_accuracy": 0.5}
    for pid in (1, 0):
        monkeypatch.setattr(jax, "process_index", lambda pid=pid: pid)
        d = tmp_path / f"p{pid}"
        assert trainer.new_run_dir(None, d, create=pid == 0) == d
        d.mkdir(exist_ok=True)
        mgr = C.CheckpointManager(d / "checkpoints")
        rec = trainer._Recorder(d, prep, mgr, runs.StopFlag(), (), (None, None), Spy())
        assert rec(0, ts, logs) is None and calls == ["gather"]
        assert rec(1, ts, logs) is None
        rec.finish(None)
        rec.close()
        done = pid == 0  # process 0's file is complete at its barrier
        assert calls == ["gather", "gather", ("nnkit-checkpoint-0", done),
                         ("nnkit-checkpoint-1", done)]
        calls.clear()
    assert sorted(p.name for p in (tmp_path / "p1").iterdir()) == []
    assert (tmp_path / "p0" / "checkpoints" / "ckpt-000000001.npz").exists()
    assert [r["epoch"] for r in rows(tmp_path / "p0")] == [0, 1]


# ----------------------------------------------------------------------------- diagnose


def test_diagnose_command_reports_and_writes_figures(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli("diagnose", str(tiny), "--set", "data.options.n=200")
    assert rc == 0, err  # 0 whatever the findings
    assert out.startswith("nnkit diagnosis: 6 checks")
    (d,) = list((tmp_path / "runs").iterdir())
    assert d.name.startswith("tiny-diagnose-") and f"figure(s): runs/{d.name}" in out
    rep = json.loads((d / "report.json").read_text())
    assert [f["check"] for f in rep["findings"]] == ["inputs", "labels", "initial_loss",
                                                    "overfit", "activations", "gradients"]
    assert rep["severity"] in ("ok", "warn", "error")
    assert (d / "report.txt").read_text().startswith("nnkit diagnosis")
    for png in ("inputs.png", "activations.png", "gradients.png", "overfit.png"):
        assert (d / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # it diagnosed what train would see: the standardised 60 % training split
    prep = runs.prepare(load_config(tiny, ["data.options.n=200"]))
    counts = rep["numbers"]["labels"]["counts"]
    assert sum(counts) == len(prep.train[1]) == 120
    assert counts == np.bincount(prep.train[1]).tolist()
    np.testing.assert_allclose(rep["numbers"]["inputs"]["feature_mean"], 0.0, atol=1e-5)
    np.testing.assert_allclose(rep["numbers"]["inputs"]["feature_std"], 1.0, rtol=1e-4)
    # the model's initial loss was computed on it: ln 2 is the uninformative reference
    assert rep["numbers"]["initial_loss"]["expected"] == pytest.approx(np.log(2), rel=1e-5)


def test_sweep_over_cpu_devices(tiny, tmp_path):
    """--cpu-devices starts JAX with that many CPU devices (a fresh interpreter: the count is
    fixed when JAX starts) and the vmapped sweep spreads its models over them, with the same
    results as on one device."""
    def sweep_cli(out, *extra):
        env = cpu_env()
        return subprocess.run(
            [sys.executable, "-m", "nnkit", "sweep", str(tiny), "--grid",
             "optimizer.lr=3e-3,1e-2,3e-2,1e-1", *NO_EXTRAS, "--set", "logging.plots=false",
             "--out", str(out), *extra], env=env, capture_output=True, text=True, timeout=300)

    two, one = sweep_cli(tmp_path / "two", "--cpu-devices", "2"), sweep_cli(tmp_path / "one")
    assert two.returncode == 0 and one.returncode == 0, two.stderr[-3000:] + one.stderr[-3000:]
    assert "4 configurations (one vmapped program on 2 devices)" in two.stdout
    assert "4 configurations (one vmapped program)" in one.stdout
    a, b = (json.loads((tmp_path / d / "sweep.json").read_text()) for d in ("two", "one"))
    assert (a["devices"], b["devices"]) == (2, 1)
    for ra, rb in zip(a["rows"], b["rows"], strict=True):
        assert ra["val_loss"] == pytest.approx(rb["val_loss"], rel=1e-5, abs=1e-6)
    bad = sweep_cli(tmp_path / "bad", "--cpu-devices", "0")
    assert bad.returncode == 2
    assert bad.stderr == "nnkit sweep: error: --cpu-devices must be >= 1, got 0\n"


def test_train_data_parallel_over_cpu_devices(tiny, tmp_path):
    """train --cpu-devices 2 with parallel.data_parallel splits each batch over 2 CPU devices
    (a fresh interpreter: the count is fixed when JAX starts): the run records both devices
    and ends where the one-device run ends. A count below 1 is refused."""
    def train_cli(out, *extra):
        return subprocess.run(
            [sys.executable, "-m", "nnkit", "train", str(tiny), *NO_EXTRAS, "--set",
             "logging.plots=false", "--set", "logging.tensorboard=false", "--out", str(out),
             *extra], env=cpu_env(), capture_output=True, text=True, timeout=300, cwd=ROOT)

    two = train_cli(tmp_path / "two", "--cpu-devices", "2", "--set",
                    "parallel.data_parallel=true")
    one = train_cli(tmp_path / "one")
    assert two.returncode == 0 and one.returncode == 0, two.stderr[-3000:] + one.stderr[-3000:]
    runs_ = {d: read_yaml(tmp_path / d / "config.yaml")["run"] for d in ("two", "one")}
    assert (runs_["two"]["device_count"], runs_["one"]["device_count"]) == (2, 1)
    a, b = rows(tmp_path / "two"), rows(tmp_path / "one")
    assert len(a) == len(b) == 3
    for ra, rb in zip(a, b, strict=True):
        assert ra["val_loss"] == pytest.approx(rb["val_loss"], rel=1e-4, abs=1e-6)
    bad = train_cli(tmp_path / "bad", "--cpu-devices", "0")
    assert bad.returncode == 2
    assert bad.stderr == "nnkit train: error: --cpu-devices must be >= 1, got 0\n"
    assert not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------- --out


def test_run_dirs_of_the_same_second_count_like_lr_find_plots(tiny, tmp_path, monkeypatch):
    """Two runs of one config in one second: the second directory is ``-2``, the third ``-3``,
    the same numbering as ``lr-find``'s default plot names; nothing is reused."""
    from nnkit.run import rundir

    monkeypatch.setattr(rundir, "_timestamp", lambda: "20260101-000000")
    made = [rundir.new_run_dir(str(tiny), None, base=tmp_path) for _ in range(3)]
    root = tmp_path / f"{tiny.stem}-20260101-000000"
    assert made == [root, root.with_name(root.name + "-2"), root.with_name(root.name + "-3")]
    assert all(d.is_dir() for d in made)


def test_out_that_is_not_empty_is_refused_for_every_command(tiny, tmp_path, monkeypatch):
    from nnkit.run.rundir import new_run_dir

    d = tmp_path / "s"
    d.mkdir()
    (d / "sweep.csv").write_text("earlier results\n")
    with pytest.raises(runs.RunError, match=r"s is not empty \(holds sweep.csv\)"):
        new_run_dir(str(tiny), d)
    assert new_run_dir(str(tiny), tmp_path / "empty") == tmp_path / "empty"
    assert new_run_dir(str(tiny), tmp_path / "empty") == tmp_path / "empty"  # still empty
    rc, _, err = run_cli("sweep", str(tiny), "--grid", "seed=0,1", "--out", str(d))
    assert rc == 2 and "is not empty" in err and str(d) in err
    import nnkit.diagnose as diag

    def expensive(*a, **k):
        raise AssertionError("diagnosis ran before --out was checked")

    monkeypatch.setattr(diag, "diagnose_dataset", expensive)
    rc, _, err = run_cli("diagnose", str(tiny), "--out", str(d))
    assert rc == 2 and "is not empty" in err
    rc, _, err = run_cli("train", str(tiny), "--out", str(d))
    assert rc == 2 and "is not empty" in err
    assert sorted(p.name for p in d.iterdir()) == ["sweep.csv"]
    assert (d / "sweep.csv").read_text() == "earlier results\n"


def test_run_root_or_out_that_cannot_be_created_is_refused_first(tiny, tmp_path, monkeypatch):
    """A default run root ``runs`` that is a file, or an --out under a file, is named in a
    one-line error (exit 2) before any data is loaded, training or diagnosis."""
    from nnkit.run import tools, trainer

    def expensive(*a, **k):
        raise AssertionError("work started before the output location was checked")

    monkeypatch.setattr(trainer, "prepare_named", expensive)
    monkeypatch.setattr(tools, "prepare_named", expensive)
    monkeypatch.chdir(tmp_path)
    Path("runs").write_text("not a directory\n")
    root = ("the run root runs (where runs go without --out) is a file, not a directory: "
            "move it away or give --out")
    for cmd in (["train", str(tiny)], ["sweep", str(tiny), "--grid", "seed=0,1"],
                ["diagnose", str(tiny)]):
        rc, _, err = run_cli(*cmd)
        assert rc == 2 and err == f"nnkit {cmd[0]}: error: {root}\n", err
        rc, _, err = run_cli(*cmd, "--out", "runs/x")
        assert rc == 2 and err == (f"nnkit {cmd[0]}: error: --out runs/x: cannot create it: "
                                   "runs is a file, not a directory\n"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    assert Path("runs").read_text() == "not a directory\n"


def test_cpu_devices_below_1_is_a_user_error(tiny):
    for cmd in (["train", str(tiny)], ["sweep", str(tiny), "--grid", "seed=0,1"]):
        rc, out, err = run_cli(*cmd, "--cpu-devices", "0")
        assert rc == 2 and out == ""
        assert err == f"nnkit {cmd[0]}: error: --cpu-devices must be >= 1, got 0\n"


# ----------------------------------------------------------------------------- resume --set


def _interrupted_run(tiny, d, *sets):
    from nnkit.train import INTERRUPT

    quiet = ["logging.plots=false", "logging.tensorboard=false", "logging.histograms_every=0",
             "training.epochs=3", *sets]
    r = runs.train(load_config(tiny, quiet), config_path=str(tiny), out=d,
                   callbacks=[lambda e, ts, logs: INTERRUPT if e == 0 else None])
    # a callback's INTERRUPT, named as such (not as a signal); resume evaluates the test set
    assert r.status == "interrupted" and [row["epoch"] for row in rows(d)] == [0]
    assert r.summary["stop_reason"].startswith("interrupted: callback <lambda> asked to stop")
    return d


def test_resume_refuses_overrides_that_change_what_was_trained(tiny, tmp_path):
    d = _interrupted_run(tiny, tmp_path / "r")
    before = (d / "config.yaml").read_text()
    for item, key in [("data.split_seed=7", "data.split_seed"), ("optimizer.lr=0.5",
                      "optimizer.lr"), ("model.hidden=[4]", "model.hidden"),
                      ("training.l2=0.1", "training.l2"),
                      ("training={epochs: 3}", "training.early_stopping"),
                      ("training.epochs=5", "training.epochs")]:  # TINY: decay_steps: auto
        rc, _, err = run_cli("train", "--resume", str(d), "--no-progress", "--set", item)
        assert rc == 2 and err.startswith(f"nnkit train: error: --set: {key}: "), err
        assert "Traceback" not in err
    assert "decay_steps" in err  # why training.epochs cannot change here
    assert (d / "config.yaml").read_text() == before
    assert [r["epoch"] for r in rows(d)] == [0]  # nothing trained


def test_resume_allows_epochs_and_logging_and_appends_resumed_with(tiny, tmp_path):
    d = _interrupted_run(tiny, tmp_path / "r",
                         "optimizer.schedule={name: cosine, decay_steps: 50}")
    rc, _, err = run_cli("train", "--resume", str(d), "--no-progress", "--set",
                         "training.epochs=2", "--set", "logging.checkpoint_keep=1",
                         "--set", "data.split_seed=0")  # unchanged: allowed
    assert rc == 0, err
    rc, _, err = run_cli("train", "--resume", str(d), "--no-progress", "--set",
                         "training.epochs=3")
    assert rc == 0, err
    meta = yaml.safe_load((d / "config.yaml").read_text())
    assert meta["training"]["epochs"] == 3 and meta["logging"]["checkpoint_keep"] == 1
    assert meta["run"]["resumed_with"] == ["training.epochs=2", "logging.checkpoint_keep=1",
                                           "data.split_seed=0", "training.epochs=3"]
    assert [r["epoch"] for r in rows(d)] == [0, 1, 2]


def test_resume_reports_a_bad_metrics_line_and_changes_nothing(tiny, tmp_path):
    """A metrics.jsonl line that is not an object with an integer "epoch" (edited by hand)
    stops --resume with the file, the line number and what is wrong (exit 2), before
    config.yaml or metrics.jsonl are rewritten."""
    d = _interrupted_run(tiny, tmp_path / "r")
    first = (d / "metrics.jsonl").read_text()
    cases = [("[1, 2]\n", 2, "a JSON array, not an object"),
             ('{"train_loss": 0.5}\n', 2, 'no "epoch"'),
             ('{"epoch": "1"}\n', 2, '"epoch" is "1", not an integer >= 0'),
             ('{"epoch": 1, "lr": "fast"}\n', 2, "'lr' is \"fast\", not a number")]
    for line, n, what in cases:
        (d / "metrics.jsonl").write_text(first + line)
        before = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}
        rc, _, err = run_cli("train", "--resume", str(d), "--no-progress", "--set",
                             "logging.checkpoint_keep=1")
        assert rc == 2 and err == (
            f"nnkit train: error: {d / 'metrics.jsonl'}, line {n}: {what} (each line must be "
            'a JSON object with an integer "epoch" and numbers); fix or remove the line\n'), err
        assert {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()} == before
    (d / "metrics.jsonl").write_text(first + "[]\n")
    with pytest.raises(runs.RunError, match=r"metrics.jsonl, line 2: a JSON array"):
        runs.resume(d)


def test_sessions_and_wall_time_count_sessions_that_wrote_no_summary(tiny, tmp_path):
    """A session killed after a checkpoint (SIGKILL, a crash: simulated by a callback that
    raises) writes no summary.json; the next session still counts it and its time up to
    that checkpoint (each checkpoint records its session and the wall time so far)."""
    d = tmp_path / "r"
    quiet = ["logging.plots=false", "logging.tensorboard=false", "logging.histograms_every=0",
             "training.epochs=3"]

    def crash_at(n):
        def crash(epoch, ts, logs):
            if epoch == n:
                raise RuntimeError("killed")
        return crash

    with pytest.raises(RuntimeError, match="killed"):
        runs.train(load_config(tiny, quiet), config_path=str(tiny), out=d,
                   callbacks=[crash_at(0)])
    with pytest.raises(RuntimeError, match="killed"):
        runs.resume(d, callbacks=[crash_at(1)])
    assert not (d / "summary.json").exists()
    extra = [C.load_meta(d / "checkpoints" / f"ckpt-00000000{e}.npz")["extra"] for e in (0, 1)]
    assert [x["session"] for x in extra] == [1, 2]
    assert 0 < extra[0]["wall_seconds"] < extra[1]["wall_seconds"]
    r = runs.resume(d)
    assert r.status == "completed" and r.summary["sessions"] == 3
    assert r.summary["wall_seconds"] > extra[1]["wall_seconds"]
    assert json.loads((d / "summary.json").read_text())["sessions"] == 3
    assert C.load_meta(d / "checkpoints" / "ckpt-000000002.npz")["extra"]["session"] == 3


def test_resume_with_fewer_epochs_is_refused_and_nothing_to_do_writes_nothing(
        tiny, tmp_path, monkeypatch):
    """--resume --set training.epochs=N below the epochs trained is refused (exit 2) before
    anything is built or written; N equal to them has nothing to do and changes nothing."""
    d = tmp_path / "r"
    quiet = ["logging.plots=false", "logging.tensorboard=false", "logging.histograms_every=0",
             "training.epochs=2", "optimizer.schedule={name: cosine, decay_steps: 50}"]
    r = runs.train(load_config(tiny, quiet), config_path=str(tiny), out=d)
    assert r.status == "completed" and [row["epoch"] for row in rows(d)] == [0, 1]
    before = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}
    rc, out, err = run_cli("train", "--resume", str(d), "--no-progress", "--set",
                           "training.epochs=2", "--set", "logging.checkpoint_keep=1")
    assert rc == 0 and "already finished (2 epochs); nothing to do" in out, err
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()} == before

    def expensive(*a, **k):
        raise AssertionError("work started before training.epochs was checked")

    monkeypatch.setattr(runs, "make_parallel", expensive)
    rc, out, err = run_cli("train", "--resume", str(d), "--no-progress", "--set",
                           "training.epochs=1")
    assert rc == 2 and out == "" and err == (
        f"nnkit train: error: training.epochs 1 < the 2 epochs already trained in {d}: a "
        "resumed run can only go on (give training.epochs >= 2, or start a new run)\n"), err
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()} == before
    with pytest.raises(runs.RunError, match="training.epochs 1 < the 2 epochs"):
        runs.resume(d, overrides=["training.epochs=1"])
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()} == before


def test_sweep_says_why_it_cannot_train_in_one_program():
    """The shipped configs: xor_mlp's, digits_mlp's (a cosine schedule, proportional to the
    rate) and moons_mlp's (early stopping) sweeps are one program; augmentation, a schedule
    with an absolute end value, or another grid key are named as reasons for separate runs."""
    from nnkit.run.tools import separate_run_reasons

    root = Path(__file__).resolve().parents[1] / "configs"
    xor = load_config(root / "xor_mlp.yaml")
    assert separate_run_reasons(xor, {"optimizer.lr": [0.1, 1.0], "seed": [0, 1]}) == []
    assert separate_run_reasons(xor, {"model.hidden": [[4]]}) == ["the grid varies model.hidden"]
    digits = load_config(root / "digits_mlp.yaml")
    assert digits.optimizer.schedule is not None
    assert separate_run_reasons(digits, {"optimizer.lr": [1e-3, 1e-2]}) == []
    linear = load_config(root / "digits_mlp.yaml", [
        "optimizer.schedule={name: linear, end_value: 1e-5, transition_steps: auto}"])
    assert separate_run_reasons(linear, {"optimizer.lr": [1e-3]}) == [
        "optimizer.schedule: the schedule is not proportional to its peak learning rate (an "
        "absolute end value or bounds of its own): train the points as separate runs"]
    moons = load_config(root / "moons_mlp.yaml")  # early stopping: per model, one program
    assert moons.training.early_stopping is not None
    assert separate_run_reasons(moons, {"seed": [0, 1]}) == []
    shifted = load_config(root / "digits_lenet5.yaml", [
        "data.augmentation=[{name: random_translate, max_shift: 1}]"])
    assert separate_run_reasons(shifted, {"seed": [0]}) == ["the config sets data.augmentation"]


def test_an_interrupting_callback_on_the_last_epoch_leaves_the_test_set_to_resume(tiny,
                                                                                  tmp_path):
    d = _interrupted_run(tiny, tmp_path / "r", "training.epochs=1")
    assert json.loads((d / "summary.json").read_text())["test_loss"] is None
    rc, out, err = run_cli("train", "--resume", str(d), "--no-progress")
    assert rc == 0, err
    s = json.loads((d / "summary.json").read_text())
    assert s["status"] == "completed" and s["test_loss"] is not None
    rc, out, err = run_cli("eval", str(d), "--split", "test", "--checkpoint", "latest",
                           "--json")
    assert rc == 0 and json.loads(out)["loss"] == pytest.approx(s["test_loss"], rel=1e-6)


def test_resume_refuses_another_number_of_training_devices(tmp_path):
    from nnkit.run.trainer import _check_same_devices

    _check_same_devices(tmp_path, {"training_devices": 1}, None)
    _check_same_devices(tmp_path, {}, None)  # runs from before the count was recorded
    with pytest.raises(runs.RunError, match=r"trained on 2 device\(s\) and would go on on 1"
                                            r".*--cpu-devices 2"):
        _check_same_devices(tmp_path, {"training_devices": 2}, None)


def test_a_corrupt_latest_checkpoint_names_the_earlier_one(tiny, tmp_path):
    d = tmp_path / "r"
    quiet = ["logging.plots=false", "logging.tensorboard=false", "logging.histograms_every=0",
             "training.epochs=2", "optimizer.schedule={name: cosine, decay_steps: 50}"]
    assert runs.train(load_config(tiny, quiet), config_path=str(tiny), out=d).status == (
        "completed")
    latest = d / "checkpoints" / "ckpt-000000001.npz"
    latest.write_bytes(latest.read_bytes()[:500])
    rc, _, err = run_cli("train", "--resume", str(d), "--no-progress", "--set",
                         "training.epochs=3")
    assert rc == 2 and "corrupt or truncated checkpoint" in err
    assert f"checkpoint of epoch 0: move {latest} away to resume from it" in err


def test_a_config_edited_after_training_is_named_not_the_checkpoint(tiny, tmp_path):
    """Resuming after the model in the run's config.yaml was edited: the shape error says
    the config no longer matches the checkpoints and names the changed keys with both
    values; it does not suggest moving an intact checkpoint away."""
    d = tmp_path / "r"
    quiet = ["logging.plots=false", "logging.tensorboard=false", "logging.histograms_every=0",
             "training.epochs=2", "optimizer.schedule={name: cosine, decay_steps: 50}"]
    assert runs.train(load_config(tiny, quiet), config_path=str(tiny), out=d).status == (
        "completed")
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    cfg["model"]["hidden"] = [6]
    cfg["optimizer"]["lr"] = 0.5  # changes no shape, but is named too
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    before = {p.name: p.read_bytes() for p in d.rglob("*") if p.is_file()}
    rc, _, err = run_cli("train", "--resume", str(d), "--no-progress", "--set",
                         "training.epochs=3")
    latest = d / "checkpoints" / "ckpt-000000001.npz"
    assert rc == 2 and err.startswith(f"nnkit train: error: {latest}: leaf "), err
    assert err.endswith(
        f" -- the run's {d / 'config.yaml'} no longer matches its checkpoints: changed since "
        "they were written: model.hidden: [8] in the checkpoint, [6] now; optimizer.lr: 0.02 "
        "in the checkpoint, 0.5 now; put back the values the run was trained with, or start "
        "a new run\n"), err
    assert "away" not in err
    with pytest.raises(C.CheckpointMismatchError, match=r"no longer matches its checkpoints: "
                       r"changed since they were written: model.hidden: \[8\] in the"):
        runs.resume(d)
    assert {p.name: p.read_bytes() for p in d.rglob("*") if p.is_file()} == before


def test_a_config_edited_without_changing_shapes_is_refused_on_resume(tiny, tmp_path):
    """An edit of config.yaml that fits the checkpoints (a new learning rate) would make the
    resumed epochs another run's, as --resume --set optimizer.lr would: refused, naming the
    key, and nothing is written; the edit put back, the run resumes."""
    d = tmp_path / "r"
    quiet = ["logging.plots=false", "logging.tensorboard=false", "logging.histograms_every=0",
             "training.epochs=2", "optimizer.schedule=null"]
    assert runs.train(load_config(tiny, quiet), config_path=str(tiny), out=d).status == (
        "completed")
    original = (d / "config.yaml").read_text()
    cfg = yaml.safe_load(original)
    cfg["optimizer"]["lr"] = 0.5
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    before = {p.name: p.read_bytes() for p in d.rglob("*") if p.is_file()}
    rc, _, err = run_cli("train", "--resume", str(d), "--no-progress", "--set",
                         "training.epochs=3")
    assert rc == 2, err
    assert (f"{d / 'config.yaml'} was changed after the run's checkpoints were written "
            "(optimizer.lr: 0.02 in the checkpoint, 0.5 now): a resume may change only "
            "training.epochs and logging.*") in err, err
    assert {p.name: p.read_bytes() for p in d.rglob("*") if p.is_file()} == before
    (d / "config.yaml").write_text(original)
    assert runs.resume(d, overrides=["training.epochs=3"]).status == "completed"


def test_errors_in_grid_values_name_grid_and_bad_overrides_name_set(tiny):
    rc, _, err = run_cli("sweep", str(tiny), "--grid", "optimizer.lr=abc,0.1")
    assert rc == 2 and err.startswith("nnkit sweep: error: --grid: optimizer.lr: expected number")
    rc, _, err = run_cli("train", str(tiny), "--set", "model.hidden.5=3")
    assert rc == 2 and err.startswith("nnkit train: error: --set: model.hidden.5: list index")


def test_a_run_directory_from_before_peak_rates_in_lr_still_reads(tmp_path):
    """Runs written when optimizer.schedule.learning_rate overrode optimizer.lr (now a
    ConfigError in a new config) read back with that rate as optimizer.lr, what they
    trained with."""
    d = tmp_path / "old-run"
    d.mkdir()
    raw = {"model": {"arch": "mlp", "hidden": [4], "out": 2}, "data": {"dataset": "xor"},
           "optimizer": {"name": "adam", "lr": 1e-3,
                         "schedule": {"name": "cosine", "learning_rate": 0.05,
                                      "decay_steps": 100}},
           "run": {"nnkit_version": "0.1.0"}}
    (d / "config.yaml").write_text(yaml.safe_dump(raw))
    cfg, meta = runs.read_run_config(d)
    assert cfg.optimizer.lr == 0.05 and "learning_rate" not in cfg.optimizer.schedule
    assert meta == {"nnkit_version": "0.1.0"}
    with pytest.raises(nnkit.config.ConfigError, match="peak rate is optimizer.lr"):
        parse_config({k: v for k, v in raw.items() if k != "run"})


def test_config_changes_read_the_saved_config_as_a_run_directory_is_read():
    """Only real edits count: a key the saved config lacks (added since) takes this version's
    default, and an old-style schedule peak rate reads as optimizer.lr."""
    from nnkit.config import config_to_dict
    from nnkit.run.rundir import changes_since_checkpoint

    raw = {"model": {"arch": "mlp", "hidden": [4], "out": 2}, "data": {"dataset": "xor"},
           "optimizer": {"name": "adam", "lr": 0.05,
                         "schedule": {"name": "cosine", "decay_steps": 100}}}
    cfg = parse_config(raw)
    saved = json.loads(json.dumps(config_to_dict(cfg)))
    assert changes_since_checkpoint(saved, cfg)[0] == []
    older = json.loads(json.dumps(saved))
    del older["precision"]
    older["optimizer"]["lr"] = 1e-3
    older["optimizer"]["schedule"]["learning_rate"] = 0.05
    assert changes_since_checkpoint(older, cfg)[0] == []
    saved["optimizer"]["lr"] = 0.1
    saved["seed"] = 7
    assert changes_since_checkpoint(saved, cfg)[0] == ["optimizer.lr", "seed"]
