"""Smoke tests of the gallery experiments e07, e07b, e11-e17 (quick mode: a few steps each).

Each ``main(tmp_path, quick=True)`` must return ``summary`` / ``figures`` / ``metrics``, write
non-empty PNGs and a ``results.json`` equal to what it returned, and its numbers must be
coherent (accuracies in [0, 1], a passing/failing overfit check, agreeing gradients, the
same curve on 1 and 8 devices). The full-size targets are checked by running
``python -m experiments.run_all e07 e11 ...``, not here.
"""

from __future__ import annotations

import importlib
import json
import math

import matplotlib.image as mpimg
import pytest

import nnkit.data

EXPERIMENTS = [
    pytest.param("e07_digits", marks=pytest.mark.slow),
    pytest.param("e07b_fashion_mnist", marks=pytest.mark.slow),
    pytest.param("e11_regularization", marks=pytest.mark.slow),
    "e12_random_labels",
    "e13_overfit_batch",
    "e14_batch_size",
    "e15_init_depth",
    "e16_gradient_modes",
    pytest.param("e17_devices", marks=pytest.mark.slow),
]


def _fashion_available() -> bool:
    try:
        nnkit.data.load("fashion_mnist", limit=1)
    except FileNotFoundError:
        return False
    return True


def _run(name, tmp_path):
    mod = importlib.import_module(f"experiments.{name}")
    assert isinstance(mod.TITLE, str) and mod.TITLE
    return mod.main(tmp_path, quick=True)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_quick(name, tmp_path):
    res = _run(name, tmp_path)
    assert set(res) >= {"summary", "figures", "metrics"}
    assert all(isinstance(line, str) for line in res["summary"]) and res["summary"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"] == res["summary"]
    if res["metrics"].get("skipped"):
        assert name == "e07b_fashion_mnist" and not _fashion_available()
        return
    assert res["figures"]
    for f in res["figures"]:
        assert str(tmp_path) in f
        img = mpimg.imread(f)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, f
        assert img.std() > 0.01, f"{f} is blank"
    text = "\n".join(res["summary"])
    assert "|---" in text  # a markdown table of measured numbers
    assert "nan" not in text.lower().replace("non-finite", "")
    accs = list(_accuracies(res["metrics"]))
    assert all(0.0 <= a <= 1.0 for a in accs if not math.isnan(a))
    if name in CHECKS:
        CHECKS[name](res["metrics"])


def _accuracies(tree):
    if isinstance(tree, dict):
        for k, v in tree.items():
            if "accuracy" in k and isinstance(v, float):
                yield v
            else:
                yield from _accuracies(v)


def _check_e13(m):
    final = m["final_loss"]
    correct, broken = final["correct MLP"], final["broken: rows shuffled every step"]
    # even after a few steps the correct model is far below the broken one, which cannot get
    # much under the entropy of the batch's labels
    assert correct < 0.5 * broken
    assert broken > 0.8 * m["label_entropy"]
    assert not m["passed"]["broken: rows shuffled every step"]


def _check_e16(m):
    modes = m["modes"]
    assert modes["batch"]["max_abs_diff"] == 0.0
    for label, r in modes.items():
        assert r["max_abs_diff"] <= 1e-5 * max(1.0, m["max_abs_grad"]), label
        assert r["step_seconds"] > 0 and r["argument_mb"] > 0
    # per-example gradients need at most B copies of the parameters beyond the batch step's
    # scratch (for Dense layers XLA folds the mean over examples into the weight-gradient
    # matmul, so an MLP's per-example mode may need no more than the batch step)
    pe, batch = modes["per-example (vmap)"]["temp_mb"], modes["batch"]["temp_mb"]
    assert 0 < pe <= batch + m["batch"] * m["params"] * 4 / 2**20


def _check_e17(m):
    assert m["jax_devices"] == 8
    assert m["all_reduce"] == {"1": False, "8": True}
    assert m["max_abs_diff_step_loss"] < 1e-4
    assert m["fit_train_loss_max_diff"] < 1e-4


CHECKS = {"e13_overfit_batch": _check_e13, "e16_gradient_modes": _check_e16,
          "e17_devices": _check_e17}


def test_e13_shuffle_rows_is_a_permutation_in_training_only():
    import jax
    import jax.numpy as jnp

    from experiments.e13_overfit_batch import ShuffleRows

    lyr = ShuffleRows()
    x = jnp.arange(24.0).reshape(8, 3)
    y_eval, _ = lyr.apply({}, {}, x, train=False)
    y_train, _ = lyr.apply({}, {}, x, key=jax.random.key(1), train=True)
    assert (y_eval == x).all()
    assert not (y_train == x).all()
    assert sorted(map(tuple, y_train.tolist())) == sorted(map(tuple, x.tolist()))


def test_e15_layer_stats_match_closed_form():
    """One Dense layer with identity activation and w = 1: std(y) and ||dL/dW|| by hand."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from experiments.e15_init_depth import layer_stats
    from nnkit import initializers as inits
    from nnkit import layers as L

    model = nnkit.serial(L.Dense(2, w_init=inits.ones, b_init=inits.zeros, name="dense_0"),
                         L.Activation("linear", name="act_0"),
                         L.Dense(2, w_init=inits.ones, b_init=inits.zeros, name="out"))
    _, params, _ = model.init(jax.random.key(0), (3,))
    x = jnp.array([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]])
    y = jnp.array([0, 1])
    s = layer_stats(model, params, x, y)
    h = np.array([[1.0, 1.0], [3.0, 3.0]])  # x @ ones(3, 2)
    assert s["act_std"][0] == pytest.approx(h.std(), rel=1e-6)
    # logits are equal per row -> softmax 1/2 each; dL/dlogits = (p - onehot) / B
    d = (np.full((2, 2), 0.5) - np.eye(2)) / 2
    g_out = h.T @ d
    assert s["grad_norm"][1] == pytest.approx(np.linalg.norm(g_out), rel=1e-5)


def test_e13_label_entropy_closed_form():
    import numpy as np

    from experiments.e13_overfit_batch import label_entropy

    assert label_entropy(np.arange(10)) == pytest.approx(math.log(10))
    assert label_entropy(np.array([0, 0, 1, 1])) == pytest.approx(math.log(2))
    assert label_entropy(np.array([3, 3, 3])) == pytest.approx(0.0)


def test_e07b_skips_with_a_message_when_the_data_are_missing(tmp_path, monkeypatch, capsys):
    import nnkit.data.mnist
    from experiments import e07b_fashion_mnist

    monkeypatch.setattr(nnkit.data.mnist, "FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    res = e07b_fashion_mnist.main(tmp_path / "out", quick=True)
    assert res["metrics"] == {"skipped": True} and res["figures"] == []
    assert "Skipped: Fashion-MNIST not available" in res["summary"][0]
    assert "nowhere" in res["summary"][0]
    assert "Skipped" in capsys.readouterr().out
