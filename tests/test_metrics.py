"""nnkit.metrics against hand-computed values and independent numpy implementations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnkit
from nnkit import metrics as M

# 3 classes, 8 examples; hand-built so that every cell of the confusion matrix is known.
Y = np.array([0, 0, 0, 1, 1, 2, 2, 2])
PRED = np.array([0, 0, 1, 1, 2, 2, 2, 0])
CM = np.array([[2, 1, 0], [0, 1, 1], [1, 0, 2]])  # rows = true, cols = predicted


def logits_for(pred, c=3):
    """Scores whose argmax is ``pred`` (and non-trivial elsewhere)."""
    z = np.linspace(-1.0, 1.0, len(pred) * c).reshape(len(pred), c).astype(np.float32) * 0.1
    z[np.arange(len(pred)), pred] = 5.0
    return z


def test_accuracy_integer_and_one_hot_labels():
    z = logits_for(PRED)
    np.testing.assert_allclose(M.accuracy(z, Y), 5 / 8)
    np.testing.assert_allclose(M.accuracy(z, np.eye(3)[Y]), 5 / 8)
    np.testing.assert_allclose(M.accuracy(jax.nn.softmax(z), Y), 5 / 8)  # probabilities
    np.testing.assert_allclose(M.accuracy(PRED, Y), 5 / 8)  # class ids
    np.testing.assert_allclose(jax.jit(M.accuracy)(z, Y), 5 / 8)


def test_accuracy_binary_single_logit_thresholds_at_zero():
    z = np.array([[2.0], [-0.5], [0.1], [-3.0]], np.float32)  # predicted 1, 0, 1, 0
    np.testing.assert_allclose(M.accuracy(z, np.array([1, 0, 0, 0])), 3 / 4)
    np.testing.assert_allclose(M.accuracy(z, np.array([[1], [1], [1], [0]])), 3 / 4)
    probs = jax.nn.sigmoid(z)  # probabilities need threshold 0.5
    np.testing.assert_allclose(M.accuracy(probs, np.array([1, 0, 0, 0]), threshold=0.5), 3 / 4)
    with pytest.raises(ValueError, match="ambiguous"):
        M.accuracy(np.array([0.3, 0.8]), np.array([0, 1]))


def test_accuracy_ties_go_to_the_lowest_index():
    z = np.array([[1.0, 1.0, 0.0]])
    np.testing.assert_allclose(M.accuracy(z, np.array([0])), 1.0)
    np.testing.assert_allclose(M.accuracy(z, np.array([1])), 0.0)


def test_top_k_accuracy():
    z = np.array([[0.1, 0.5, 0.2, 0.9],   # order 3, 1, 2, 0
                  [0.8, 0.1, 0.6, 0.3],   # order 0, 2, 3, 1
                  [0.0, 0.3, 0.2, 0.1]])  # order 1, 2, 3, 0
    y = np.array([1, 3, 0])
    np.testing.assert_allclose(M.top_k_accuracy(z, y, 1), 0.0)
    np.testing.assert_allclose(M.top_k_accuracy(z, y, 2), 1 / 3)
    np.testing.assert_allclose(M.top_k_accuracy(z, y, 3), 2 / 3)
    np.testing.assert_allclose(M.top_k_accuracy(z, y, 4), 1.0)
    zz = logits_for(PRED)
    np.testing.assert_allclose(M.top_k_accuracy(zz, Y, 1), M.accuracy(zz, Y))
    with pytest.raises(ValueError, match="k=5"):
        M.top_k_accuracy(z, y, 5)


def test_confusion_matrix_hand_and_numpy():
    np.testing.assert_array_equal(M.confusion_matrix(PRED, Y, 3), CM)
    np.testing.assert_array_equal(M.confusion_matrix(logits_for(PRED), Y, 3), CM)
    cm = jax.jit(M.confusion_matrix, static_argnums=2)(PRED, Y, 3)
    assert cm.dtype == jnp.int32
    np.testing.assert_array_equal(cm, CM)
    # independent count on random data
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    expect = np.zeros((5, 5), int)
    np.add.at(expect, (y, p), 1)
    np.testing.assert_array_equal(M.confusion_matrix(p, y, 5), expect)
    assert int(M.confusion_matrix(p, y, 5).sum()) == 200


def test_precision_recall_f1_macro_by_hand():
    # from CM: TP = [2, 1, 2]; predicted = [3, 2, 3]; support = [3, 2, 3]
    p_c = np.array([2 / 3, 1 / 2, 2 / 3])
    r_c = np.array([2 / 3, 1 / 2, 2 / 3])
    f_c = 2 * p_c * r_c / (p_c + r_c)
    p, r, f = M.precision_recall_f1(Y, PRED, 3, average=None)
    np.testing.assert_allclose(p, p_c, rtol=1e-6)
    np.testing.assert_allclose(r, r_c, rtol=1e-6)
    np.testing.assert_allclose(f, f_c, rtol=1e-6)
    p, r, f = M.precision_recall_f1(Y, logits_for(PRED), 3)
    np.testing.assert_allclose([p, r, f], [p_c.mean(), r_c.mean(), f_c.mean()], rtol=1e-6)
    np.testing.assert_allclose(f, 11 / 18, rtol=1e-6)  # (2/3 + 1/2 + 2/3) / 3
    micro = M.precision_recall_f1(Y, PRED, 3, average="micro")
    np.testing.assert_allclose(micro, [5 / 8] * 3, rtol=1e-6)


def test_precision_recall_f1_asymmetric_and_unpredicted_class():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 0, 2, 1])
    # class 0: TP 2, predicted 4, support 2 -> P 1/2, R 1, F1 2/3
    # class 1: TP 0, predicted 1, support 2 -> P 0, R 0, F1 0
    # class 2: TP 1, predicted 1, support 2 -> P 1, R 1/2, F1 2/3
    # class 3: never occurs, never predicted -> left out of the macro mean
    p, r, f = M.precision_recall_f1(y, pred, 4, average=None)
    np.testing.assert_allclose(p, [0.5, 0, 1, 0])
    np.testing.assert_allclose(r, [1, 0, 0.5, 0])
    np.testing.assert_allclose(f, [2 / 3, 0, 2 / 3, 0], rtol=1e-6)
    p, r, f = M.precision_recall_f1(y, pred, 4)
    np.testing.assert_allclose([p, r, f], [1.5 / 3, 1.5 / 3, (4 / 3) / 3], rtol=1e-6)
    # a class with examples but no predictions has precision 0 (and counts in the mean)
    p, r, f = M.precision_recall_f1(np.array([0, 1]), np.array([0, 0]), 2, average=None)
    np.testing.assert_allclose(p, [0.5, 0.0])
    np.testing.assert_allclose(r, [1.0, 0.0])
    assert np.all(np.isfinite(f))
    with pytest.raises(ValueError, match="average"):
        M.precision_recall_f1(y, pred, 4, average="weighted")


def test_macro_f1_registry_entry_infers_classes():
    np.testing.assert_allclose(M.get("macro_f1")(logits_for(PRED), Y), 11 / 18, rtol=1e-6)


def test_regression_metrics():
    p = np.array([1.0, 2.0, 4.0, 3.0])
    t = np.array([1.0, 3.0, 2.0, 4.0])
    np.testing.assert_allclose(M.mae(p, t), (0 + 1 + 2 + 1) / 4)
    np.testing.assert_allclose(M.mse(p, t), (0 + 1 + 4 + 1) / 4)
    np.testing.assert_allclose(M.rmse(p, t), np.sqrt(1.5), rtol=1e-6)
    np.testing.assert_allclose(M.mse(p[:, None], t), 1.5)  # (B, 1) vs (B,) not broadcast
    with pytest.raises(ValueError, match="shape"):
        M.mae(np.ones((4, 2)), t)


def test_r2_closed_form():
    t = np.array([1.0, 3.0, 2.0, 4.0])
    p = np.array([1.0, 2.0, 4.0, 3.0])
    # mean t = 2.5; SS_tot = 2.25 + 0.25 + 0.25 + 2.25 = 5; SS_res = 6 -> 1 - 6/5
    np.testing.assert_allclose(M.r2_score(p, t), -0.2, rtol=1e-6)
    np.testing.assert_allclose(M.r2_score(t, t), 1.0)
    np.testing.assert_allclose(M.r2_score(np.full(4, 2.5), t), 0.0, atol=1e-7)  # predict mean
    # multi-output: uniform average of per-column R^2
    p2 = np.stack([p, t], axis=1)
    t2 = np.stack([t, t], axis=1)
    np.testing.assert_allclose(M.r2_score(p2, t2), (-0.2 + 1.0) / 2, rtol=1e-6)
    # constant targets: 1 if exact, else 0 (no NaN)
    np.testing.assert_allclose(M.r2_score(np.ones(3), np.ones(3)), 1.0)
    np.testing.assert_allclose(M.r2_score(np.zeros(3), np.ones(3)), 0.0)
    rng = np.random.default_rng(1)
    t3, p3 = rng.normal(size=50), rng.normal(size=50)
    expect = 1 - np.sum((t3 - p3) ** 2) / np.sum((t3 - t3.mean()) ** 2)
    np.testing.assert_allclose(jax.jit(M.r2_score)(p3, t3), expect, rtol=1e-5)


def test_registry():
    assert M.get("accuracy") is M.accuracy
    assert M.get("r2") is M.r2_score
    assert M.get(M.mae) is M.mae
    z = np.array([[0.1, 0.5, 0.2, 0.9], [0.8, 0.1, 0.6, 0.3]])
    np.testing.assert_allclose(M.get("top_2_accuracy")(z, np.array([1, 3])), 0.5)
    with pytest.raises(ValueError, match=r"unknown metric 'f2'; known: .*accuracy"):
        M.get("f2")
    with pytest.raises(ValueError, match="unknown metric"):
        M.get("top_0_accuracy")
    assert nnkit.metrics is M


def test_probability_losses_threshold_binary_metrics_at_one_half():
    """A sigmoid output trained with ``"bce_probs"`` is a probability: the named binary
    metrics fit logs then read class 1 above 0.5, not above 0 (which every probability is)."""
    from nnkit import losses
    from nnkit.train.gradients import resolve_metrics

    probs = jnp.array([[0.1], [0.3], [0.7], [0.9]])
    labels = jnp.array([0, 0, 1, 1])
    for loss, want in ((losses.binary_cross_entropy, 1.0), ("logits", 0.5)):
        fns = dict(resolve_metrics(("accuracy", "macro_f1"),
                                   loss if callable(loss) else None))
        assert float(fns["accuracy"](probs, labels)) == pytest.approx(want)
    fns = dict(resolve_metrics(("accuracy", "macro_f1"), losses.binary_cross_entropy))
    # all four right: F1 of each class is 1
    assert float(fns["macro_f1"](probs, labels)) == pytest.approx(1.0)
    # logits keep threshold 0: z = [-2, -1, 1, 2] -> [0, 0, 1, 1]
    fns = dict(resolve_metrics(("accuracy", "macro_f1"),
                               losses.binary_cross_entropy_with_logits))
    z = jnp.array([[-2.0], [-1.0], [1.0], [2.0]])
    assert float(fns["accuracy"](z, labels)) == 1.0
    assert float(fns["macro_f1"](z, labels)) == pytest.approx(1.0)
    # and a model: the sigmoid perceptron through fit's named metric
    model = nnkit.models.perceptron(1, activation="sigmoid")
    _, params, state = model.init(jax.random.key(0), (1,))
    params = {"dense": {"w": jnp.array([[5.0]]), "b": jnp.array([0.0])}}
    x = jnp.array([[-1.0], [-0.5], [0.5], [1.0]])
    out = model.apply(params, state, x)[0]  # sigmoid(5x): 0.007, 0.08, 0.92, 0.993
    acc = dict(resolve_metrics(("accuracy",), losses.binary_cross_entropy))["accuracy"]
    assert float(acc(out, labels)) == 1.0


# ------------------------------------------------- metrics of a whole set, evaluated in batches


def _np_r2(p, t):
    p, t = p.reshape(len(p), -1).astype(np.float64), t.reshape(len(t), -1).astype(np.float64)
    ss_res = ((t - p) ** 2).sum(0)
    ss_tot = ((t - t.mean(0)) ** 2).sum(0)
    return float(np.mean(1 - ss_res / ss_tot))


def _np_macro_f1(pred, y, k):
    f1s = []
    for c in range(k):
        tp = np.sum((pred == c) & (y == c))
        fp, fn = np.sum((pred == c) & (y != c)), np.sum((pred != c) & (y == c))
        if tp + fp + fn == 0:
            continue  # class absent from both: left out, as scikit-learn
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


@pytest.mark.parametrize("batch_size", [1, 3, 4, 10, 64])
def test_evaluator_gives_the_metrics_of_the_whole_set(batch_size):
    """rmse, r2 and macro-F1 of a set evaluated in batches of 1, 3, 4 (a remainder of 2), the
    whole set and more equal NumPy's values on the whole set -- not a mean of batch values --
    also for targets far from zero (r2's total sum of squares without cancellation)."""
    from nnkit import layers as L
    from nnkit.train import make_evaluator

    rng = np.random.default_rng(3)
    x = rng.normal(size=(10, 3)).astype(np.float32)
    model = nnkit.serial(L.Dense(2))
    _, params, state = model.init(jax.random.key(0), (3,))
    params = {"dense_0": {**params["dense_0"], "b": params["dense_0"]["b"] + 1e4}}
    pred = np.asarray(model.apply(params, state, x)[0], np.float64)
    y = (pred + rng.normal(size=(10, 2))).astype(np.float32)  # around 1e4, spread ~1
    ev = jax.jit(make_evaluator(model, "mse", ["rmse", "r2", "mae"], 10, batch_size))
    out = ev(params, state, x, y)
    np.testing.assert_allclose(out["rmse"], np.sqrt(np.mean((pred - y) ** 2)), rtol=1e-5)
    np.testing.assert_allclose(out["mae"], np.mean(np.abs(pred - y)), rtol=1e-5)
    np.testing.assert_allclose(out["loss"], np.mean((pred - y) ** 2), rtol=1e-4)
    # the targets' float32 rounding at 1e4 (~1e-3) bounds what any float32 path can match
    np.testing.assert_allclose(out["r2"], _np_r2(pred, y), atol=2e-3)

    clf = nnkit.serial(L.Dense(4))
    _, params, state = clf.init(jax.random.key(1), (3,))
    labels = rng.integers(0, 4, 10)
    scores = np.asarray(clf.apply(params, state, x)[0])
    ev = jax.jit(make_evaluator(clf, "cross_entropy", ["accuracy", "macro_f1"], 10, batch_size))
    out = ev(params, state, x, labels)
    np.testing.assert_allclose(out["macro_f1"], _np_macro_f1(scores.argmax(1), labels, 4),
                               rtol=1e-6)
    np.testing.assert_allclose(out["accuracy"], np.mean(scores.argmax(1) == labels), rtol=1e-6)

    binary = nnkit.serial(L.Dense(1), L.Activation("sigmoid"))
    _, params, state = binary.init(jax.random.key(2), (3,))
    probs = np.asarray(binary.apply(params, state, x)[0])[:, 0]
    yb = (rng.random(10) < 0.5).astype(np.int32)
    ev = jax.jit(make_evaluator(binary, "bce_probs", ["macro_f1"], 10, batch_size))
    out = ev(params, state, x, yb[:, None])
    np.testing.assert_allclose(out["macro_f1"], _np_macro_f1((probs > 0.5).astype(int), yb, 2),
                               rtol=1e-6)


def test_stats_of_one_batch_give_the_metric_itself():
    rng = np.random.default_rng(0)
    p, t = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    z, y = rng.normal(size=(7, 5)), rng.integers(0, 5, 7)
    for fn, a, b in [(M.rmse, p, t), (M.r2_score, p, t), (M.macro_f1, z, y),
                     (M.get("macro_f1", threshold=0.5), rng.random((7, 1)), y % 2)]:
        one = jax.tree_util.tree_map(lambda s: s[None], fn.batch_stats(a, b))
        np.testing.assert_allclose(fn.from_stats(one), fn(a, b), rtol=1e-6, err_msg=fn.__name__)


def test_fit_reports_validation_r2_and_rmse_of_the_whole_set():
    from nnkit import layers as L

    rng = np.random.default_rng(0)
    w = np.array([[1.0], [2.0], [-1.0]], np.float32)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    xv = rng.normal(size=(10, 3)).astype(np.float32)
    yv = (xv @ w + rng.normal(size=(10, 1))).astype(np.float32)
    model = nnkit.serial(L.Dense(1))
    r = nnkit.fit(model, "sgd", (x, x @ w), val_data=(xv, yv), loss="mse",
                  metrics=["rmse", "r2"], epochs=1, batch_size=16, eval_batch_size=4,
                  progress=False)
    pred = np.asarray(model.apply(r.train_state.params, r.train_state.state, xv)[0])
    np.testing.assert_allclose(r.history["val_rmse"][-1], np.sqrt(np.mean((pred - yv) ** 2)),
                               rtol=1e-5)
    np.testing.assert_allclose(r.history["val_r2"][-1], _np_r2(pred, yv), rtol=1e-5)
