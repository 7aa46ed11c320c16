"""The data fingerprint of a run: recorded in config.yaml when it starts, checked on
``--resume`` (a refusal that changes nothing) and ``nnkit eval`` (a warning)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from _run_cli import run_cli

from nnkit import checkpoint as C
from nnkit import run as runs
from nnkit.config import load_config
from nnkit.data.idx import write_idx
from nnkit.run.fingerprint import (
    FINGERPRINT_KEY,
    DataChangedError,
    data_differences,
    data_fingerprint,
    split_fingerprint,
)
from nnkit.train import INTERRUPT

CONFIG = """
model: {arch: mlp, hidden: [8]}
data:
  dataset: mnist
  options: {path: PATH}
  split: [0.75, 0.25]
  batch_size: 8
optimizer: {name: adam, lr: 0.01}
training: {epochs: 3}
logging: {tensorboard: false, plots: false}
"""


def write_mnist(d: Path, seed: int = 0, n_train: int = 32, n_test: int = 8,
                relabel: bool = False, size: int = 28) -> None:
    """MNIST-layout IDX files (as tests/test_data_idx.py writes them), replacing any;
    ``relabel``: other labels for the same test images."""
    d.mkdir(parents=True, exist_ok=True)
    for i, (split, n) in enumerate((("train", n_train), ("t10k", n_test))):
        rng = np.random.default_rng([seed, i])  # the test files do not depend on n_train
        x = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        y = ((np.arange(n) + (3 if relabel and split == "t10k" else 0)) % 10).astype(np.uint8)
        write_idx(os.path.join(d, f"{split}-images-idx3-ubyte"), x)
        write_idx(os.path.join(d, f"{split}-labels-idx1-ubyte"), y)


def files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def epochs(d: Path) -> list[int]:
    return [int(line.split('"epoch": ')[1].split(",")[0])
            for line in (d / "metrics.jsonl").read_text().splitlines()]


def interrupted_run(tmp_path: Path, name: str = "r") -> tuple[Path, Path, Path]:
    """A run on IDX files in ``tmp_path/data``, stopped after epoch 0 (resumable)."""
    data_dir = tmp_path / "data"
    write_mnist(data_dir)
    cfg_file = tmp_path / "mnist.yaml"
    cfg_file.write_text(CONFIG.replace("PATH", str(data_dir)))
    d = tmp_path / name
    r = runs.train(load_config(cfg_file), config_path=str(cfg_file), out=d, progress=False,
                   callbacks=[lambda e, ts, logs: INTERRUPT if e == 0 else None])
    assert r.status == "interrupted" and epochs(d) == [0]
    return d, data_dir, cfg_file


def test_fingerprint_is_recorded_in_the_run_section(tmp_path):
    d, data_dir, _ = interrupted_run(tmp_path)
    fp = yaml.safe_load((d / "config.yaml").read_text())["run"][FINGERPRINT_KEY]
    assert fp["digest"] == "blake2b-128"
    assert {s: fp[s]["n"] for s in ("train", "val", "test")} == {"train": 24, "val": 8,
                                                                 "test": 8}
    assert fp["train"]["x_shape"] == [28, 28, 1] and fp["train"]["x_dtype"] == "float32"
    assert fp["train"]["y_shape"] == [] and fp["train"]["y_dtype"] == "int32"
    assert len(fp["train"]["x_digest"]) == 32
    cfg, _ = runs.read_run_config(d)
    assert data_fingerprint(runs.prepare(cfg)) == fp  # the prepared arrays, recomputed


def test_differences_name_the_split_and_count_shape_or_content():
    rng = np.random.default_rng(0)
    x, y = rng.random((10, 3), dtype=np.float32), np.arange(10)
    was = {"digest": "blake2b-128", "train": split_fingerprint((x, y)), "val": None,
           "test": split_fingerprint((x[:4], y[:4]))}
    assert data_differences(was, dict(was)) == []
    now = {**was, "train": split_fingerprint((x[:9], y[:9]))}
    assert data_differences(was, now) == [
        "train split: count differs: 9 examples now, 10 when the run started"]
    now = {**was, "test": split_fingerprint((x[:4, :2], y[:4]))}
    assert data_differences(was, now) == [
        "test split: shape of the inputs (x) differs: 2 float32 per example now, 3 float32 "
        "when the run started"]
    now = {**was, "test": split_fingerprint((x[:4].astype(np.float64), y[:4]))}
    assert "test split: shape of the inputs (x) differs: 3 float64" in data_differences(was,
                                                                                      now)[0]
    x2 = x.copy()
    x2[3, 1] += 1e-6
    assert data_differences(was, {**was, "train": split_fingerprint((x2, y))}) == [
        "train split: content differs: same count (10) and shapes, other inputs (x)"]
    assert data_differences(was, {**was, "train": split_fingerprint((x, y[::-1]))}) == [
        "train split: content differs: same count (10) and shapes, other targets (y)"]
    assert data_differences(was, {**was, "val": split_fingerprint((x, y))}) == [
        "val split: 10 examples now, none when the run started"]
    # another hash: counts and shapes are still compared, contents are not
    other = {**was, "digest": "sha256", "train": {**was["train"], "x_digest": "0"}}
    assert data_differences(other, {**was, "train": split_fingerprint((x2, y))}) == []
    # big-endian data hash as the same values in little-endian
    assert split_fingerprint((x.astype(">f4"), y)) == was["train"]


def test_resume_after_the_data_files_were_replaced_is_refused_and_changes_nothing(tmp_path):
    d, data_dir, _ = interrupted_run(tmp_path)
    before = files(d)
    for kwargs, what in [
        ({"seed": 1}, "train split: content differs: same count (24) and shapes, other "
                      "inputs (x); val split: content differs: same count (8) and shapes, "
                      "other inputs (x); test split: content differs: same count (8) and "
                      "shapes, other inputs (x)"),
        ({"relabel": True}, "test split: content differs: same count (8) and shapes, other "
                            "targets (y))"),
        ({"n_train": 36}, "train split: count differs: 27 examples now, 24 when the run "
                          "started"),
        # named before the checkpoint, whose shapes no longer fit the model, is restored
        ({"size": 14}, "train split: shape of the inputs (x) differs: 14x14x1 float32 per "
                       "example now, 28x28x1 float32 when the run started; val split: shape"),
    ]:
        write_mnist(data_dir, **kwargs)
        rc, out, err = run_cli("train", "--resume", str(d), "--no-progress")
        assert rc == 2 and out == "", err
        assert err.startswith(f"nnkit train: error: {d}: cannot resume: the data are not the "
                              f"ones the run started with ({what}"), err
        assert err.endswith(
            f": the data under the config's data.options.path ({data_dir}) changed since the "
            "run started, and going on would train on other data: put back the data the run "
            "was trained on, or start a new run\n"), err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert files(d) == before  # byte-identical: config, metrics, summary, checkpoints
    with pytest.raises(DataChangedError, match="shape of the inputs"):
        runs.resume(d, overrides=["training.epochs=4"])
    assert files(d) == before
    write_mnist(data_dir)  # the original files back: the resume goes on
    rc, out, err = run_cli("train", "--resume", str(d), "--no-progress")
    assert rc == 0 and err == "", err
    assert epochs(d) == [0, 1, 2]


def test_eval_after_the_data_files_were_replaced_warns_naming_the_split(tmp_path):
    d, data_dir, _ = interrupted_run(tmp_path)
    rc, out, err = run_cli("eval", str(d), "--checkpoint", "latest", "--json")
    assert rc == 0 and err == "", err
    first = json.loads(out)
    write_mnist(data_dir, relabel=True)
    rc, out, err = run_cli("eval", str(d), "--checkpoint", "latest", "--json")
    assert rc == 0, err
    assert err == (
        f"warning: {d}: the test split is not the data the run started with (test split: "
        "content differs: same count (8) and shapes, other targets (y)): the data under the "
        f"config's data.options.path ({data_dir}) changed since the run started; these "
        "numbers describe other data than the run's test split\n"), err
    got = json.loads(out)  # evaluated anyway, on the new files
    assert got["n"] == 8 and got["loss"] != first["loss"]
    write_mnist(data_dir, seed=0, n_train=36)  # the test files as they were: no warning
    rc, _, err = run_cli("eval", str(d), "--checkpoint", "latest")
    assert rc == 0 and err == "", err
    rc, _, err = run_cli("eval", str(d), "--checkpoint", "latest", "--split", "val")
    assert rc == 0 and "warning: " in err and "the val split is not the data" in err
    assert "(val split: count differs: 9 examples now, 8 when the run started)" in err


def test_an_unchanged_run_resumes_exactly_and_evaluates_as_before(tmp_path):
    data_dir = tmp_path / "data"
    write_mnist(data_dir)
    cfg_file = tmp_path / "mnist.yaml"
    cfg_file.write_text(CONFIG.replace("PATH", str(data_dir)))
    a = tmp_path / "a"
    assert runs.train(load_config(cfg_file), config_path=str(cfg_file), out=a,
                      progress=False).status == "completed"
    b, _, _ = interrupted_run(tmp_path, "b")  # rewrites the same files
    rc, _, err = run_cli("train", "--resume", str(b), "--no-progress")
    assert rc == 0 and err == "", err
    fa, fb = (C.load_arrays(d / "checkpoints" / "ckpt-000000002.npz")[0] for d in (a, b))
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)
    ea, eb = (run_cli("eval", str(d), "--json") for d in (a, b))
    assert ea[0] == eb[0] == 0 and ea[2] == eb[2] == ""
    assert json.loads(ea[1]) == json.loads(eb[1])


def test_a_run_from_before_the_fingerprint_resumes_and_evaluates_with_a_note(tmp_path):
    d, data_dir, _ = interrupted_run(tmp_path)
    raw = yaml.safe_load((d / "config.yaml").read_text())
    del raw["run"][FINGERPRINT_KEY]
    (d / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    note = (f"note: {d} records no data fingerprint (a run from before nnkit recorded one): ")
    rc, out, err = run_cli("eval", str(d), "--checkpoint", "latest")
    assert rc == 0 and err == note + ("its test split was not checked against the data it was "
                                      "trained and evaluated on\n"), err
    rc, out, err = run_cli("train", "--resume", str(d), "--no-progress")
    assert rc == 0 and err == note + ("its data were not checked against the ones it trained "
                                      "on\n"), err
    assert epochs(d) == [0, 1, 2]
    assert FINGERPRINT_KEY not in yaml.safe_load((d / "config.yaml").read_text())["run"]
