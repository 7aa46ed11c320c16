"""nnkit.diagnose: every check fires on a constructed bad case and is quiet on a healthy MLP;
the numbers behind the findings match closed forms; the monitor callback writes TensorBoard
events (parsed back here) and PNGs."""

import json
import struct
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnkit
from nnkit import initializers as inits
from nnkit.diagnose import Report, Thresholds, checks, diagnose, layer_outputs, monitor
from nnkit.layers import Dense, DropConnect, Relu, ScaledDropout, Sigmoid

LN3 = float(np.log(3.0))


def healthy_data(n=192, d=8, seed=0):
    """Standardised Gaussian inputs, 3 exactly balanced classes (tertiles of a projection)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    score = x @ rng.normal(size=d)
    y = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3])).astype(np.int32)
    return ((x - x.mean(0)) / x.std(0)).astype(np.float32), y


X, Y = healthy_data()


def mlp():
    return nnkit.serial(Dense(32), Relu(), Dense(32), Relu(), Dense(3))


def ce_numpy(logits, y):
    z = np.asarray(logits, np.float64)
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


# ----------------------------------------------------------------------------- healthy


def test_healthy_standardised_mlp_is_all_ok(tmp_path):
    report = diagnose(mlp(), X, Y, key=0)
    assert [f.check for f in report.findings] == list(nnkit.diagnose.CHECKS)
    assert report.ok, str(report)
    text = str(report)
    for check in nnkit.diagnose.CHECKS:
        assert check in text
    assert "0 error(s), 0 warning(s)" in text
    json.dumps(report.to_dict())  # JSON-friendly
    paths = report.plot(tmp_path)
    assert sorted(Path(p).name for p in paths) == [
        "activations.png", "gradients.png", "inputs.png", "overfit.png"]
    assert all(Path(p).stat().st_size > 1000 for p in paths)


def test_module_is_callable_and_accepts_legacy_key():
    r = nnkit.diagnose(mlp(), X, Y, key=jax.random.PRNGKey(0), checks=("initial_loss",))
    assert isinstance(r, Report) and r.findings[0].check == "initial_loss"


# ----------------------------------------------------------------------------- 1. inputs


def test_inputs_0_to_255_warn():
    x255 = np.random.default_rng(0).integers(0, 256, size=(100, 16)).astype(np.float32)
    r = diagnose(mlp(), x255, Y[:100], checks=("inputs",))
    f = r["inputs"]
    assert f.severity == "warn" and "255" in f.message
    assert "training split" in f.advice
    assert r.numbers["inputs"]["max"] == 255.0


def test_inputs_mixed_feature_scales_warn_and_nan_is_error():
    x = X.copy()
    x[:, 0] *= 1000.0
    f = diagnose(mlp(), x, Y, checks=("inputs",))["inputs"]
    assert f.severity == "warn" and "scales differ" in f.message
    x = X.copy()
    x[5, 2] = np.nan
    f = diagnose(mlp(), x, Y, checks=("inputs",))["inputs"]
    assert f.severity == "error" and "(5, 2)" in f.message


def test_input_stats_closed_form():
    x = np.array([[0.0, 10.0], [2.0, 10.0], [4.0, 10.0]])
    s = checks.input_stats(x)
    np.testing.assert_allclose(s["feature_mean"], [2.0, 10.0])
    np.testing.assert_allclose(s["feature_std"], [np.sqrt(8 / 3), 0.0], rtol=1e-6)
    assert s["constant_features"] == 1 and s["min"] == 0 and s["max"] == 10
    assert s["mean"] == pytest.approx(6.0)


# ----------------------------------------------------------------------------- 2. labels


def test_label_imbalance_warns_with_exact_counts():
    y = np.array([0] * 90 + [1] * 6 + [2] * 4, np.int32)
    r = diagnose(mlp(), X[:100], y, checks=("labels",))
    assert r["labels"].severity == "warn" and "imbalanced" in r["labels"].message
    np.testing.assert_array_equal(r.numbers["labels"]["counts"], [90, 6, 4])
    assert r.numbers["labels"]["ratio"] == pytest.approx(22.5)
    # one-hot labels give the same counts
    onehot = np.eye(3, dtype=np.float32)[y]
    r2 = diagnose(mlp(), X[:100], onehot, checks=("labels",))
    np.testing.assert_array_equal(r2.numbers["labels"]["counts"], [90, 6, 4])


def test_labels_out_of_range_is_error():
    y = Y.copy()
    y[7] = 3
    f = diagnose(mlp(), X, y, checks=("labels",))["labels"]
    assert f.severity == "error" and "index 7" in f.message


# ----------------------------------------------------------------------------- 3. initial loss


def test_initial_loss_matches_cross_entropy_and_ln_c():
    model = mlp()
    _, p, s = model.init(jax.random.key(1), (8,))
    r = diagnose(model, X, Y, params=p, state=s, checks=("initial_loss",))
    nums = r.numbers["initial_loss"]
    assert nums["expected"] == pytest.approx(LN3, rel=1e-6)
    logits, _ = model.apply(p, s, X)
    assert nums["loss"] == pytest.approx(ce_numpy(logits, Y), rel=1e-5)
    assert r["initial_loss"].severity == "ok"


def test_last_layer_weights_x100_warns():
    model = mlp()
    _, p, s = model.init(jax.random.key(1), (8,))
    p["dense_2"]["w"] = p["dense_2"]["w"] * 100.0
    f = diagnose(model, X, Y, params=p, state=s, checks=("initial_loss",))["initial_loss"]
    assert f.severity == "warn" and "confidently wrong" in f.message
    assert "last layer" in f.advice


def test_reference_losses_closed_form():
    from nnkit import losses
    from nnkit.diagnose import reference_loss

    pred = jnp.ones((4, 5))
    y = jnp.array([0, 1, 2, 3])
    assert float(reference_loss(losses.softmax_cross_entropy, pred, y)[0]) == pytest.approx(
        np.log(5), rel=1e-6)
    assert float(reference_loss(losses.nll, pred, y)[0]) == pytest.approx(np.log(5), rel=1e-6)
    t = jnp.array([[0.0], [1.0], [1.0], [0.0]])
    assert float(reference_loss(losses.binary_cross_entropy_with_logits, jnp.ones((4, 1)), t)[0]
                 ) == pytest.approx(np.log(2), rel=1e-6)
    yr = jnp.array([[1.0, 2.0], [3.0, -1.0]])
    assert float(reference_loss(losses.mse, jnp.ones((2, 2)), yr)[0]) == pytest.approx(15 / 4)


def test_initial_loss_rules_on_hand_numbers():
    assert checks.check_initial_loss(1.2, LN3).severity == "ok"
    assert checks.check_initial_loss(2.3, LN3).severity == "warn"  # > 2 ln 3
    assert "lower than chance" in checks.check_initial_loss(0.4, LN3).message
    assert checks.check_initial_loss(float("nan"), LN3).severity == "error"
    tight = Thresholds(loss_high=0.2)
    assert checks.check_initial_loss(1.4, LN3, th=tight).severity == "warn"


# ----------------------------------------------------------------------------- 4. overfit


def test_overfit_curve_starts_at_the_batch_loss_and_fits():
    model = mlp()
    _, p, s = model.init(jax.random.key(2), (8,))
    r = diagnose(model, X, Y, params=p, state=s, batch_size=192, checks=("overfit",))
    nums = r.numbers["overfit"]
    assert nums["curve"].shape == (301,)
    assert nums["initial"] == pytest.approx(ce_numpy(model.apply(p, s, X)[0], Y), rel=1e-5)
    assert nums["reference"] == pytest.approx(LN3, rel=1e-6)
    assert r["overfit"].severity == "ok" and nums["final"] < 0.1 * LN3


def test_model_that_cannot_learn_is_an_error():
    frozen = nnkit.serial(Dense(3), nnkit.Lambda(jax.lax.stop_gradient, kind="stop"))
    r = diagnose(frozen, X, Y, checks=("overfit",), overfit_steps=20)
    f = r["overfit"]
    assert f.severity == "error" and "broken" in f.advice
    np.testing.assert_allclose(r.numbers["overfit"]["curve"], r.numbers["overfit"]["initial"])


@pytest.mark.parametrize("loss,head", [("bce_probs", "sigmoid"), ("binary_cross_entropy", None)])
def test_overfit_accuracy_thresholds_probabilities_at_one_half(loss, head):
    """Binary accuracy: class 1 where a probability is > 0.5 (a logit > 0). The model is
    frozen (stop_gradient), so the accuracy is that of the given params, by hand."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype(np.float32)
    y = (x[:, :1] + 0.5 * x[:, 1:] > 0.3).astype(np.float32)
    layers = [Dense(1), nnkit.Lambda(jax.lax.stop_gradient, kind="stop")]
    model = nnkit.serial(*layers, *([Sigmoid()] if head else []))
    _, p, s = model.init(jax.random.key(0), (2,))
    p = jax.tree_util.tree_map(jnp.asarray, {**p, "dense_0": {
        "w": np.array([[1.0], [0.0]], np.float32), "b": np.array([-0.1], np.float32)}})
    r = diagnose(model, x, y, loss=loss, params=p, state=s, batch_size=64,
                 checks=("overfit",), overfit_steps=5)
    z = x @ np.array([[1.0], [0.0]]) - 0.1
    want = float(np.mean((z > 0) == (y > 0.5)))
    assert 0.6 < want < 1.0 and want != float(np.mean(y))  # threshold 0 on probs: mean(y)
    assert r.numbers["overfit"]["accuracy"] == pytest.approx(want, abs=1e-7)


def test_overfit_rules_on_hand_numbers():
    assert checks.check_overfit([2.0, 1.0, 0.5], reference=LN3).severity == "warn"
    assert checks.check_overfit([2.0, 1.0, 0.5], reference=LN3, accuracy=1.0).severity == "ok"
    assert checks.check_overfit([2.0, 1.95], reference=LN3).severity == "error"
    assert checks.check_overfit([2.0, np.inf]).severity == "error"


# ----------------------------------------------------------------------------- 5. activations


def test_sigmoid_stack_with_huge_weights_saturates():
    big = inits.normal(10.0)
    model = nnkit.serial(Dense(32, w_init=big), Sigmoid(), Dense(32, w_init=big), Sigmoid(),
                         Dense(3))
    r = diagnose(model, X, Y, checks=("activations",))
    f = r["activations"]
    assert f.severity == "warn" and "saturated" in f.message and "init scale" in f.advice
    acts = r.numbers["activations"]
    assert acts["sigmoid_0"]["saturated"] > 0.8 and acts["sigmoid_1"]["saturated"] > 0.8
    assert "saturated" not in acts["dense_0"]  # only sigmoid/tanh layers are rated


def test_dead_relu_layer_bias_minus_100():
    model = nnkit.serial(Dense(32, b_init=inits.constant(-100.0)), Relu(), Dense(3))
    r = diagnose(model, X, Y, checks=("activations", "gradients"))
    assert r.numbers["activations"]["relu_0"]["dead"] == 1.0
    assert r["activations"].severity == "error" and "He init" in r["activations"].advice
    g = r["gradients"]
    assert g.severity == "warn" and "no gradient reaches ['dense_0']" in g.message


def test_half_dead_relu_fraction_is_exact():
    def half(key, shape, dtype=jnp.float32):
        return jnp.where(jnp.arange(shape[0]) < shape[0] // 2, -100.0, 0.0).astype(dtype)

    w_pos = inits.constant(0.05)  # with b = 0 the live half is positive for x = |x|
    model = nnkit.serial(Dense(16, w_init=w_pos, b_init=half), Relu(), Dense(3))
    r = diagnose(model, np.abs(X) + 0.1, Y, checks=("activations",))
    assert r.numbers["activations"]["relu_0"]["dead"] == 0.5
    assert r["activations"].severity == "warn"


def test_layer_outputs_reproduce_apply_with_keys_and_nesting():
    block = nnkit.named(nnkit.serial(DropConnect(8, 0.5, name="fc"), Relu()), "block")
    model = nnkit.serial(block, ScaledDropout(0.5), Dense(3))
    _, p, s = model.init(jax.random.key(0), (8,))
    k = jax.random.key(3)
    outs = layer_outputs(model, p, s, X[:5], key=k, train=True)
    assert [o[0] for o in outs] == ["block/fc", "block/relu_0", "scaled_dropout_0", "dense_0"]
    y, _ = model.apply(p, s, X[:5], key=k, train=True)
    np.testing.assert_array_equal(outs[-1][2], y)


# ----------------------------------------------------------------------------- 6. gradients


def test_vanishing_gradients_in_10_layer_sigmoid_net():
    model = nnkit.serial(*[lyr for _ in range(10) for lyr in (Dense(16), Sigmoid())], Dense(3))
    r = diagnose(model, X, Y, checks=("gradients",))
    f = r["gradients"]
    assert f.severity == "warn" and "vanishing" in f.message and "ReLU" in f.advice
    nums = r.numbers["gradients"]
    assert nums["ratio"] < 1e-3 and nums["first"] == "dense_0" and nums["last"] == "dense_10"
    assert list(nums["norms"]) == [f"dense_{i}" for i in range(11)]


def test_gradient_norm_closed_form_linear_mse():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    t = rng.normal(size=(64, 1)).astype(np.float32)
    model = Dense(1, use_bias=False)
    w = rng.normal(size=(5, 1)).astype(np.float32)
    r = diagnose(model, x, t, loss="mse", params={"w": jnp.asarray(w)}, batch_size=64,
                 checks=("gradients", "labels", "initial_loss"))
    g = 2.0 / 64 * x.T.astype(np.float64) @ (x @ w - t)  # d/dw mean((xw - t)^2)
    assert r.numbers["gradients"]["norms"]["params"] == pytest.approx(np.linalg.norm(g),
                                                                      rel=1e-4)
    assert r.numbers["gradients"]["param_norms"]["params"] == pytest.approx(
        np.linalg.norm(w), rel=1e-5)
    assert "real-valued" in r["labels"].message
    assert r.numbers["initial_loss"]["expected"] == pytest.approx(np.mean(t**2), rel=1e-5)


def test_gradient_rules_on_hand_numbers():
    assert "exploding" in checks.check_gradients({"a": 1e4, "b": 1.0})[0].message
    assert checks.check_gradients({"a": 1e-2, "b": 1.0})[0].severity == "ok"
    assert checks.check_gradients({"a": np.nan, "b": 1.0})[0].severity == "error"


# ----------------------------------------------------------------------------- errors, dataset


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"x \(192, 8\) and y \(10,\)"):
        diagnose(mlp(), X, Y[:10])
    with pytest.raises(ValueError, match="unknown check.*'speed'"):
        diagnose(mlp(), X, Y, checks=("speed",))
    with pytest.raises(TypeError, match="Layer"):
        diagnose(lambda x: x, X, Y)
    with pytest.raises(nnkit.ShapeError, match="out.*expected input shape"):
        diagnose(Dense(3, name="out"), X[:, 0], Y)  # per-example shape () for a Dense


def test_diagnose_dataset_uses_task_and_num_classes():
    from nnkit.data.dataset import Dataset

    ds = Dataset.classification("toy", X, Y, 4)  # 4 classes declared, class 3 absent
    r = nnkit.diagnose.diagnose_dataset(mlp(), ds, checks=("labels",))
    assert r["labels"].severity == "warn" and "[3]" in r["labels"].message


# ----------------------------------------------------------------------------- monitor


def read_events(logdir):
    """``[(step, tag, value)]`` from the event files (TFRecord framing)."""
    from tensorboard.compat.proto import event_pb2

    out = []
    for f in sorted(Path(logdir).glob("events.out.tfevents*")):
        data, i = f.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            ev = event_pb2.Event()
            ev.ParseFromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            out += [(ev.step, v.tag, v) for v in ev.summary.value]
    return out


def test_monitor_records_exact_update_ratios_histograms_and_lr(tmp_path):
    p0 = {"a": {"w": jnp.ones((2, 2))}, "b": {"w": jnp.full((3,), 2.0)}}
    p1 = {"a": {"w": jnp.full((2, 2), 1.1)}, "b": {"w": jnp.full((3,), 2.0)}}
    cb = monitor(every=2, logdir=tmp_path)
    cb(0, {"params": p0, "step": 0}, {"lr": 0.5, "loss": 1.0})
    cb(1, {"params": p0, "step": 5}, {"lr": 0.5})  # skipped: not a multiple of every
    cb(2, {"params": p1, "step": 10}, {"lr": 0.25, "loss": 0.5})
    cb.close()
    assert cb.history["epoch"] == [0, 2] and cb.history["lr"] == [0.5, 0.25]
    assert cb.history["update_ratio"]["a"][0][1] == pytest.approx(0.1)
    assert cb.history["update_ratio"]["b"][0][1] == 0.0
    assert cb.history["update_ratio_per_step"]["a"][0][1] == pytest.approx(0.01)
    ev = read_events(tmp_path)
    scalars = {(s, t): v.simple_value for s, t, v in ev if v.HasField("simple_value")}
    assert scalars[(2, "update_ratio/a")] == pytest.approx(0.1, rel=1e-6)
    assert scalars[(0, "lr")] == 0.5 and scalars[(2, "logs/loss")] == 0.5
    hist = {(s, t): v.histo for s, t, v in ev if v.HasField("histo")}
    assert hist[(2, "params/a/w")].num == 4
    assert hist[(2, "params/a/w")].sum == pytest.approx(4.4, rel=1e-6)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "histograms_epoch0000.png", "histograms_epoch0002.png", "update_ratio.png"]
    # resumed at epoch 2 (epoch 2 trained again, now at lr 0.125): TensorBoard's reader drops
    # the first file's epoch 2 and keeps epoch 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with monitor(every=2, logdir=tmp_path, start_epoch=2) as again:
        again(2, {"params": p1, "step": 10}, {"lr": 0.125})
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("lr")] == [(0, 0.5), (2, 0.125)]


def test_monitor_in_fit_writes_grads_activations_and_figures(tmp_path):
    model = nnkit.serial(Dense(8), Relu(), Dense(3))
    with monitor(every=1, logdir=tmp_path, model=model, x_sample=X[:16],
                 y_sample=Y[:16]) as cb:
        nnkit.fit(model, nnkit.optim.make("adam", 1e-2), (X, Y), epochs=2, batch_size=64,
                  callbacks=[cb], progress=False)
    assert cb.history["epoch"] == [0, 1]
    assert cb.history["lr"] == [pytest.approx(1e-2), pytest.approx(1e-2)]
    tags = {t for _, t, _ in read_events(tmp_path)}
    assert {"grads/dense_0/w", "activations/relu_0", "params/dense_1/b", "lr",
            "update_ratio/dense_0", "grad_norm/dense_1"} <= tags
    assert (tmp_path / "update_ratio.png").exists()
    assert (tmp_path / "histograms_epoch0001.png").exists()


def test_monitor_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="every"):
        monitor(every=0, logdir=tmp_path)
    with pytest.raises(ValueError, match="model= and x_sample="):
        monitor(every=1, logdir=tmp_path, x_sample=X)


def test_overfit_finding_counts_steps_not_losses():
    from nnkit.diagnose.checks import check_overfit

    # overfit_curve's shape: the loss before each of 100 steps and after the last
    assert check_overfit(np.linspace(1.0, 0.01, 101)).message.startswith("one batch, 100 steps")
