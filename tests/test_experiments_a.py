"""Smoke tests of the course experiments e01-e10 (quick mode) and checks of their helpers."""

from __future__ import annotations

import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnkit
import nnkit.models
from experiments.e03_activations import collapsed_affine
from experiments.e09_learning_rate import diverged, pick_three
from experiments.fullbatch import predict, train_full_batch
from experiments.plane import classes_of, plane_grid
from nnkit import layers as L
from nnkit import optim

EXPERIMENTS = [
    "e01_perceptron", "e02_logic_gates", "e03_activations", "e04_five_points",
    "e05_regression", "e06_multitask", "e08_optimizers", "e09_learning_rate", "e10_schedules",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_quick(name, tmp_path):
    mod = importlib.import_module(f"experiments.{name}")
    assert isinstance(mod.TITLE, str) and mod.TITLE
    res = mod.main(tmp_path, quick=True)
    assert set(res) >= {"summary", "figures", "metrics"}
    assert res["summary"] and all(isinstance(s, str) for s in res["summary"])
    assert res["metrics"]
    assert res["figures"]
    for f in res["figures"]:
        data = open(f, "rb").read()
        assert data[:8] == PNG_MAGIC and len(data) > 2000, f
        assert str(tmp_path) in f
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"] == res["summary"]


def test_e01_outputs_match_closed_form(tmp_path):
    from experiments import e01_perceptron

    m = e01_perceptron.main(tmp_path)["metrics"]
    # sigmoid(-7) and sigmoid(3), from the definition
    np.testing.assert_allclose(m["outputs"], [1 / (1 + np.exp(7)), 1 / (1 + np.exp(-3))],
                               rtol=1e-5)
    np.testing.assert_allclose(m["outputs"], [0.00091, 0.95257], atol=5e-6)
    assert m["step_classes"] == [0.0, 1.0]


def test_train_full_batch_matches_hand_gd():
    """Two full-batch SGD steps on a linear model, against the gradient written out."""
    x = jnp.array([[1.0, 2.0], [-1.0, 0.5], [0.0, 1.0]])
    y = jnp.array([[1.0], [0.0], [2.0]])
    model = L.Dense(1)
    lr = 0.1
    ts, hist = train_full_batch(model, "mse", optim.make("sgd", lr), x, y, steps=2, key=3)
    _, p0, _ = model.init(jax.random.split(nnkit.train.as_key(nnkit.train.key_data(3)))[0],
                          (2,))
    w, b = np.asarray(p0["w"], np.float64), np.asarray(p0["b"], np.float64)
    xs, ys = np.asarray(x, np.float64), np.asarray(y, np.float64)
    losses = []
    for _ in range(2):
        r = xs @ w + b - ys  # residuals (3, 1); L = mean(r^2)
        losses.append(np.mean(r**2))
        w, b = w - lr * 2 * xs.T @ r / 3, b - lr * 2 * r.sum(0) / 3
    np.testing.assert_allclose(hist["loss"], losses, rtol=1e-5)
    np.testing.assert_allclose(ts.params["w"], w, rtol=1e-5)
    np.testing.assert_allclose(ts.params["b"], b, rtol=1e-5)
    np.testing.assert_allclose(predict(model, ts, x), xs @ w + b, rtol=1e-5)


def test_train_full_batch_rejects_bad_steps():
    with pytest.raises(ValueError, match="steps"):
        train_full_batch(L.Dense(1), "mse", optim.make("sgd", 0.1), jnp.ones((2, 1)),
                         jnp.ones((2, 1)), steps=0, key=0)


def test_collapsed_affine_equals_linear_mlp():
    model = nnkit.models.mlp((5, 4), 3, activation="linear")
    _, params, state = model.init(jax.random.key(1), (2,))
    x = np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32)
    w, b = collapsed_affine(params)
    assert w.shape == (2, 3) and b.shape == (3,)
    np.testing.assert_allclose(model.apply(params, state, x)[0], x @ w + b, atol=1e-5)


def test_plane_grid_and_classes():
    gx, gy, pts = plane_grid(np.array([[0.0, 0.0], [1.0, 2.0]]), padding=0.5, resolution=5)
    assert gx.shape == (5, 5) and pts.shape == (25, 2) and pts.dtype == np.float32
    np.testing.assert_allclose(pts.min(0), [-0.5, -0.5])
    np.testing.assert_allclose(pts.max(0), [1.5, 2.5])
    assert classes_of(np.array([[0.2, 0.9, 0.1], [3.0, 1.0, 2.0]])).tolist() == [1, 0]
    assert classes_of(np.array([[0.4], [0.6]])).tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        plane_grid(np.zeros((3, 3)))


def test_lr_picks():
    lrs = np.logspace(-4, 1, 11)
    bad = np.array([False] * 9 + [True, True])
    val = np.array([2.6, 2.3, 1.7, 0.9, 0.4, 0.2, 0.2, 0.18, 0.19, np.nan, np.nan])
    picks = pick_three(lrs, val, bad)
    assert picks == {"too small": 3, "good": 7, "too large": 9}
    assert diverged({"train_loss": [1.0, float("nan")]})
    assert diverged({"train_loss": [1.0, 2.0]})
    assert not diverged({"train_loss": [1.0, 0.5]})


def test_gallery_page_is_generated_from_the_results_and_its_figures_exist():
    """experiments/README.md is exactly what run_all writes from results.json (a hand edit
    or a stale page fails), every figure it shows is in the gallery, and every experiment
    module has results."""
    from pathlib import Path

    from experiments import run_all

    done = json.loads(run_all.RESULTS.read_text())
    assert (run_all.ROOT / "README.md").read_text() == run_all.readme_text(done)
    for name, r in done.items():
        for f in r.get("figures", []):
            assert (run_all.ROOT / f).is_file(), f"{name}: {f} missing"
    assert set(run_all.experiment_modules()) <= set(done)
    assert all(Path(run_all.ROOT / f).suffix == ".png" for r in done.values()
               for f in r.get("figures", []))
