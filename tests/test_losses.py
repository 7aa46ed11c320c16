"""nnkit.losses against hand-computed values, finite differences and closed-form gradients."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import nnkit
from nnkit import losses as L
from nnkit.layers import Dense, Relu

LN2, LN3, LN6 = math.log(2), math.log(3), math.log(6)

P = np.array([[1.0, 2.0], [3.0, 5.0]], np.float32)
T = np.array([[0.0, 0.0], [3.0, 3.0]], np.float32)
# softmax([0, ln2, ln3]) = [1/6, 2/6, 3/6]
Z = np.log(np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], np.float32))


def grad_check(fn, *args):
    """Finite differences in float64 (first and second order, forward and reverse mode)."""
    with jax.enable_x64(True):
        args64 = tuple(jnp.asarray(np.asarray(a, np.float64)) for a in args)
        check_grads(jax.jit(fn), args64, order=2, modes=("rev",), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- regression


def test_mse_hand_values_and_reductions():
    # per example: (1 + 4) / 2 = 2.5 and (0 + 4) / 2 = 2
    np.testing.assert_allclose(L.mse(P, T, reduction="none"), [2.5, 2.0], rtol=1e-6)
    np.testing.assert_allclose(L.mse(P, T), 2.25, rtol=1e-6)
    np.testing.assert_allclose(L.mse(P, T, reduction="sum"), 4.5, rtol=1e-6)


def test_mse_is_twice_optax_l2_loss():
    np.testing.assert_allclose(L.mse(P, T), 2 * jnp.mean(optax.l2_loss(P, T)), rtol=1e-6)


def test_l1_hand_values():
    np.testing.assert_allclose(L.l1(P, T, reduction="none"), [1.5, 1.0], rtol=1e-6)
    np.testing.assert_allclose(L.l1(P, T), 1.25, rtol=1e-6)


def test_huber_hand_values_and_optax():
    # residuals [1, 2], [0, 2]; delta=1: 0.5, 1.5 | 0, 1.5
    np.testing.assert_allclose(L.huber(P, T, reduction="none"), [1.0, 0.75], rtol=1e-6)
    # delta=2: 0.5, 2 | 0, 2
    np.testing.assert_allclose(L.huber(P, T, delta=2.0, reduction="none"), [1.25, 1.0])
    expect = jnp.mean(optax.huber_loss(P, T, delta=0.5))
    np.testing.assert_allclose(L.huber(P, T, delta=0.5), expect, rtol=1e-6)
    with pytest.raises(ValueError, match="delta"):
        L.huber(P, T, delta=0.0)


def test_regression_gradients_closed_form():
    n = P.size
    np.testing.assert_allclose(jax.grad(L.mse)(P, T), 2 * (P - T) / n, rtol=1e-6)
    np.testing.assert_allclose(jax.grad(L.l1)(P + 0.5, T), np.sign(P + 0.5 - T) / n, rtol=1e-6)
    np.testing.assert_allclose(
        jax.grad(lambda p: L.huber(p, T, delta=1.5))(P), np.clip(P - T, -1.5, 1.5) / n, rtol=1e-6
    )


@pytest.mark.parametrize(
    "fn", [L.mse, L.l1, lambda p, t: L.huber(p, t, delta=0.7)], ids=["mse", "l1", "huber"]
)
def test_regression_finite_differences(fn):
    p = np.array([[0.3, -1.2, 2.0], [0.9, 0.1, -0.4]])  # no residual at a kink
    t = np.array([[0.0, 0.5, 1.0], [-1.0, 1.0, 0.2]])
    grad_check(lambda x: fn(x, t), p)


def test_trailing_singleton_axis_does_not_broadcast():
    p = np.array([[1.0], [2.0], [4.0]], np.float32)
    t = np.array([1.0, 1.0, 1.0], np.float32)
    np.testing.assert_allclose(L.mse(p, t), (0 + 1 + 9) / 3, rtol=1e-6)  # not a (3, 3) broadcast
    np.testing.assert_allclose(L.mse(t, p), (0 + 1 + 9) / 3, rtol=1e-6)
    with pytest.raises(ValueError, match=r"mse: predictions shape \(3, 2\) != targets"):
        L.mse(np.ones((3, 2)), np.ones(3))
    with pytest.raises(ValueError, match="batch axis"):
        L.mse(1.0, 1.0)


def test_unknown_reduction():
    with pytest.raises(ValueError, match="'avg'.*known"):
        L.mse(P, T, reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        L.softmax_cross_entropy(Z, np.array([0, 1]), reduction="avg")


# ----------------------------------------------------------------------------- cross entropy


def test_softmax_cross_entropy_hand_values():
    labels = np.array([2, 0])
    # -log(3/6) = ln 2 and -log(1/6) = ln 6
    np.testing.assert_allclose(L.softmax_cross_entropy(Z, labels, reduction="none"), [LN2, LN6],
                               rtol=1e-6)
    np.testing.assert_allclose(L.softmax_cross_entropy(Z, labels), (LN2 + LN6) / 2, rtol=1e-6)
    np.testing.assert_allclose(L.softmax_cross_entropy(Z, labels, reduction="sum"), LN2 + LN6,
                               rtol=1e-6)


def test_cross_entropy_one_hot_and_probability_labels():
    one_hot = np.array([[0, 0, 1], [1, 0, 0]], np.float32)
    np.testing.assert_allclose(L.softmax_cross_entropy(Z, one_hot, reduction="none"),
                               [LN2, LN6], rtol=1e-6)
    one_hot_int = one_hot.astype(np.int32)  # integer one-hot: same rank as logits
    np.testing.assert_allclose(L.softmax_cross_entropy(Z, one_hot_int, reduction="none"),
                               [LN2, LN6], rtol=1e-6)
    probs = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], np.float32)
    np.testing.assert_allclose(L.softmax_cross_entropy(Z, probs, reduction="none"),
                               [0.5 * LN6 + 0.5 * LN3, LN2], rtol=1e-6)
    np.testing.assert_allclose(
        L.softmax_cross_entropy(Z, probs), jnp.mean(optax.softmax_cross_entropy(Z, probs)),
        rtol=1e-6,
    )


def test_label_smoothing_by_hand():
    eps = 0.3  # C = 3: targets (1 - eps) onehot + eps / 3 -> [0.1, 0.1, 0.8] for label 2
    expect = 0.1 * LN6 + 0.1 * LN3 + 0.8 * LN2
    got = L.softmax_cross_entropy(Z[:1], np.array([2]), label_smoothing=eps)
    np.testing.assert_allclose(got, expect, rtol=1e-6)
    one_hot = np.array([[0.0, 0.0, 1.0]], np.float32)
    np.testing.assert_allclose(
        L.softmax_cross_entropy(Z[:1], one_hot, label_smoothing=eps), expect, rtol=1e-6
    )
    with pytest.raises(ValueError, match="label_smoothing"):
        L.softmax_cross_entropy(Z, np.array([0, 1]), label_smoothing=1.0)


def test_cross_entropy_gradient_is_softmax_minus_onehot():
    logits = np.array([[0.2, -1.0, 3.0, 0.5], [1.0, 1.0, -2.0, 0.0], [5.0, 0.0, 0.0, -5.0]],
                      np.float32)
    labels = np.array([1, 3, 0])
    sm = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    expect = (sm - np.eye(4)[labels]) / 3  # mean over the batch of 3
    g = jax.grad(L.softmax_cross_entropy)(logits, labels)
    np.testing.assert_allclose(g, expect, atol=1e-6)
    # with smoothing the target is (1 - eps) onehot + eps / C
    g = jax.grad(lambda z: L.softmax_cross_entropy(z, labels, label_smoothing=0.2))(logits)
    np.testing.assert_allclose(g, (sm - (0.8 * np.eye(4)[labels] + 0.05)) / 3, atol=1e-6)


def test_cross_entropy_finite_differences():
    logits = np.array([[0.2, -1.0, 3.0], [1.0, 0.7, -2.0]])
    grad_check(lambda z: L.softmax_cross_entropy(z, jnp.array([1, 2])), logits)
    grad_check(lambda z: L.softmax_cross_entropy(z, jnp.array([1, 2]), label_smoothing=0.1),
               logits)
    probs = np.array([[0.2, 0.8, 0.0], [0.3, 0.3, 0.4]])
    grad_check(lambda z: L.softmax_cross_entropy(z, probs), logits)


@pytest.mark.parametrize("big", [40.0, 1000.0, 1e30])
def test_cross_entropy_stable_for_huge_logits(big):
    logits = np.array([[big, -big, 0.0], [big, big, -big]], np.float32)
    labels = np.array([1, 0])
    loss = L.softmax_cross_entropy(logits, labels, reduction="none")
    # exact: -log softmax = 2 big (first), log 2 (second)
    np.testing.assert_allclose(loss, [2 * big, LN2], rtol=1e-6)
    g = jax.grad(L.softmax_cross_entropy)(logits, labels)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, np.array([[1, -1, 0], [-0.5, 0.5, 0]]) / 2, atol=1e-6)


def test_cross_entropy_supports_extra_axes():
    logits = np.stack([Z, Z[::-1]], axis=1)  # (B=2, T=2, C=3)
    labels = np.array([[2, 0], [0, 2]])
    # example 0: (ln2 + ln6)/2 ; example 1: (ln6 + ln2)/2
    np.testing.assert_allclose(L.softmax_cross_entropy(logits, labels, reduction="none"),
                               [(LN2 + LN6) / 2] * 2, rtol=1e-6)


def test_out_of_range_labels_give_nan_not_a_wrong_value():
    loss = L.softmax_cross_entropy(Z, np.array([3, -1]), reduction="none")
    assert np.all(np.isnan(loss))  # -1 must not silently wrap to the last class
    assert np.isnan(jax.jit(L.nll)(np.log(np.full((2, 3), 1 / 3)), jnp.array([0, 7])))


def test_integer_labels_pick_by_mask_any_int_dtype_no_gather_or_scatter():
    logits = np.random.default_rng(0).normal(size=(4, 300)).astype(np.float32)
    labels = np.array([0, 299, 255, 7])
    ref = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    for dt in (np.int32, np.int16, np.uint16):
        got = L.softmax_cross_entropy(logits, labels.astype(dt), reduction="none")
        np.testing.assert_allclose(got, ref, rtol=1e-6)
    with jax.enable_x64(True):  # a 64-bit label must not wrap into [0, C) when narrowed
        bad = jnp.array([2**32 + 1, 1], jnp.int64)
        got = L.softmax_cross_entropy(logits[:2], bad, reduction="none")
        assert np.isnan(got[0]) and np.isfinite(got[1])
    # the gradient is element-wise: softmax - onehot, with no gather/scatter to compile
    hlo = jax.jit(jax.grad(L.softmax_cross_entropy)).lower(logits, labels).as_text()
    assert "scatter" not in hlo and "gather" not in hlo


def test_check_labels_names_the_bad_value():
    L.check_labels(np.array([0, 1, 2, 1]), 3)
    with pytest.raises(ValueError, match=r"label 5 at index 2 is outside \[0, 3\) \(1 bad"):
        L.check_labels(np.array([0, 1, 5, 1]), 3)
    with pytest.raises(ValueError, match=r"label -1 at index 0 .*\(2 bad"):
        L.check_labels(np.array([-1, 1, 3]), 3)
    with pytest.raises(ValueError, match="integer"):
        L.check_labels(np.array([0.0, 1.0]), 3)


def test_classification_label_shape_errors():
    with pytest.raises(ValueError, match="integer class ids.*float32"):
        L.softmax_cross_entropy(Z, np.array([0.0, 1.0], np.float32))
    with pytest.raises(ValueError, match=r"labels shape \(2, 2\) fits neither"):
        L.softmax_cross_entropy(Z, np.zeros((2, 2), np.int32))


# ----------------------------------------------------------------------------- binary


def test_bce_with_logits_hand_values():
    z = np.array([0.0, math.log(3), math.log(3), math.log(3)], np.float32)  # sigmoid = 1/2, 3/4
    t = np.array([1.0, 1.0, 0.0, 0.5], np.float32)
    expect = [LN2, math.log(4 / 3), math.log(4), 0.5 * (math.log(4 / 3) + math.log(4))]
    np.testing.assert_allclose(L.binary_cross_entropy_with_logits(z, t, reduction="none"),
                               expect, rtol=1e-6)
    # (B, 1) logits with (B,) integer targets
    got = L.binary_cross_entropy_with_logits(z[:3, None], np.array([1, 1, 0]))
    np.testing.assert_allclose(got, np.mean(expect[:3]), rtol=1e-6)
    np.testing.assert_allclose(
        L.binary_cross_entropy_with_logits(z, t),
        jnp.mean(optax.sigmoid_binary_cross_entropy(z, t)), rtol=1e-6,
    )


@pytest.mark.parametrize("big", [40.0, 1000.0])
def test_bce_with_logits_stable(big):
    z = np.array([big, big, -big, -big], np.float32)
    t = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
    loss = L.binary_cross_entropy_with_logits(z, t, reduction="none")
    np.testing.assert_allclose(loss, [0.0, big, big, 0.0], atol=1e-6, rtol=1e-6)
    g = jax.grad(L.binary_cross_entropy_with_logits)(z, t)
    np.testing.assert_allclose(g, np.array([0.0, 1.0, -1.0, 0.0]) / 4, atol=1e-7)


def test_bce_with_logits_gradient_closed_form_and_fd():
    z = np.array([[0.3, -2.0], [1.5, 0.0]], np.float32)
    t = np.array([[1.0, 0.0], [0.25, 1.0]], np.float32)
    sig = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(jax.grad(L.binary_cross_entropy_with_logits)(z, t), (sig - t) / 4,
                               rtol=1e-5)
    grad_check(lambda x: L.binary_cross_entropy_with_logits(x, t), z)


def test_bce_from_probabilities():
    p = np.array([0.75, 0.75, 0.5], np.float32)
    t = np.array([1.0, 0.0, 1.0], np.float32)
    np.testing.assert_allclose(L.binary_cross_entropy(p, t, reduction="none"),
                               [math.log(4 / 3), math.log(4), LN2], rtol=1e-6)
    # clipping keeps p = 0 / 1 finite: about -log(eps) = 16.1
    edge = L.binary_cross_entropy(np.array([0.0, 1.0]), np.array([1.0, 0.0]), reduction="none")
    assert np.all(np.isfinite(edge)) and np.all(edge > 15) and np.all(edge < 17)
    assert np.all(np.isfinite(jax.grad(L.binary_cross_entropy)(np.array([0.0, 1.0]),
                                                             np.array([1.0, 0.0]))))
    # agrees with the logit form
    z = np.array([0.3, -1.0, 2.0], np.float32)
    np.testing.assert_allclose(L.binary_cross_entropy(jax.nn.sigmoid(z), t),
                               L.binary_cross_entropy_with_logits(z, t), rtol=1e-5)
    grad_check(lambda x: L.binary_cross_entropy(x, t), np.array([0.2, 0.6, 0.9]))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_bce_from_probabilities_in_16_bit_stays_finite(dtype):
    """In 16 bits ``1 - eps`` rounds to 1: confident correct predictions must not give
    ``0 * log 0``; the loss equals the float32 one of the same (rounded) probabilities."""
    p = jnp.array([0.9999, 1.0, 0.0, 0.25], dtype)
    t = jnp.array([1.0, 1.0, 0.0, 1.0], dtype)
    got = L.binary_cross_entropy(p, t, reduction="none")
    want = L.binary_cross_entropy(p.astype(jnp.float32), t.astype(jnp.float32), reduction="none")
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-6)
    g = jax.grad(lambda q: L.binary_cross_entropy(q, t))(p)
    assert g.dtype == dtype and bool(jnp.all(jnp.isfinite(g)))


# ----------------------------------------------------------------------------- nll, kl


def test_nll_hand_values_and_gradient():
    lp = np.log(np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]], np.float32))
    np.testing.assert_allclose(L.nll(lp, np.array([1, 2]), reduction="none"),
                               [-math.log(0.3), -math.log(0.8)], rtol=1e-6)
    np.testing.assert_allclose(L.nll(lp, np.eye(3)[[1, 2]]), L.nll(lp, np.array([1, 2])),
                               rtol=1e-6)
    # d nll / d log_probs = -onehot / B
    np.testing.assert_allclose(jax.grad(L.nll)(lp, np.array([1, 2])),
                               -np.eye(3)[[1, 2]] / 2)
    # log_softmax -> nll equals softmax cross entropy
    np.testing.assert_allclose(L.nll(jax.nn.log_softmax(Z), np.array([2, 0])),
                               L.softmax_cross_entropy(Z, np.array([2, 0])), rtol=1e-6)


def test_kl_divergence_hand_values():
    p = np.array([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5]], np.float32)
    log_q = np.log(np.array([[0.25, 0.25, 0.5], [0.25, 0.25, 0.5]], np.float32))
    # 0.5 ln2 + 0.5 ln2 + 0 log 0 = ln 2 ; p = q -> 0
    np.testing.assert_allclose(L.kl_divergence(log_q, p, reduction="none"), [LN2, 0.0],
                               atol=1e-6)
    # KL(p||q) = CE(p, q) - H(p)
    h = -(0.5 * math.log(0.5) * 2)
    np.testing.assert_allclose(L.kl_divergence(log_q[:1], p[:1]),
                               L.nll(log_q[:1], p[:1]) - h, rtol=1e-6)


def test_kl_zero_target_mass_is_zero_even_with_minus_inf():
    p = np.array([[1.0, 0.0]], np.float32)
    log_q = np.array([[0.0, -np.inf]], np.float32)
    np.testing.assert_allclose(L.kl_divergence(log_q, p), 0.0)
    g_q, g_p = jax.grad(L.kl_divergence, argnums=(0, 1))(log_q, p)
    assert np.all(np.isfinite(g_q)) and np.all(np.isfinite(g_p))
    np.testing.assert_allclose(g_q, [[-1.0, 0.0]])


def test_kl_nonnegative_and_finite_differences():
    key_q, key_p = jax.random.split(jax.random.key(0))
    log_q = jax.nn.log_softmax(jax.random.normal(key_q, (16, 5)))
    p = jax.nn.softmax(jax.random.normal(key_p, (16, 5)))
    assert np.all(np.asarray(L.kl_divergence(log_q, p, reduction="none")) >= -1e-6)
    lq = np.log(np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]))
    pt = np.array([[0.1, 0.1, 0.8], [0.5, 0.5, 0.0]])
    grad_check(lambda x: L.kl_divergence(x, pt), lq)
    grad_check(lambda x: L.kl_divergence(lq, x), pt + np.array([[0, 0, 0], [0, 0, 0.2]]))
    with pytest.raises(ValueError, match="same shape"):
        L.kl_divergence(lq, pt[:, :2])


def test_reductions_are_consistent_for_every_loss():
    logits = np.array([[0.1, 2.0, -1.0], [0.3, 0.2, 0.1], [-3.0, 1.0, 0.0]], np.float32)
    labels = np.array([1, 0, 2])
    probs = jax.nn.softmax(logits)
    cases = {
        "mse": (logits, probs), "l1": (logits, probs), "huber": (logits, probs),
        "cross_entropy": (logits, labels), "binary_cross_entropy": (logits, probs),
        "bce_probs": (probs, probs), "nll": (jax.nn.log_softmax(logits), labels),
        "kl": (jax.nn.log_softmax(logits), probs),
    }
    for name, (a, b) in cases.items():
        fn = L.get(name)
        none = fn(a, b, reduction="none")
        assert none.shape == (3,), name
        np.testing.assert_allclose(fn(a, b), np.mean(none), rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(fn(a, b, reduction="sum"), np.sum(none), rtol=1e-6,
                                   err_msg=name)
        np.testing.assert_allclose(jax.jit(fn)(a, b), fn(a, b), rtol=1e-6, err_msg=name)


# ----------------------------------------------------------------------------- multi-task


def test_multi_task_weighting_and_parts():
    loss_fn = L.multi_task(label=("cross_entropy", 2.0), box=(L.mse, 0.5), aux=L.l1)
    preds = {"label": Z, "box": P, "aux": P}
    targets = {"label": np.array([2, 0]), "box": T, "aux": T, "unused": np.zeros(2)}
    total, parts = loss_fn(preds, targets)
    assert set(parts) == {"label", "box", "aux"}
    np.testing.assert_allclose(parts["label"], (LN2 + LN6) / 2, rtol=1e-6)
    np.testing.assert_allclose(parts["box"], 2.25, rtol=1e-6)  # unweighted
    np.testing.assert_allclose(parts["aux"], 1.25, rtol=1e-6)
    np.testing.assert_allclose(total, 2.0 * (LN2 + LN6) / 2 + 0.5 * 2.25 + 1.25, rtol=1e-6)

    per_example, _ = loss_fn(preds, targets, reduction="none")
    np.testing.assert_allclose(per_example, 2 * np.array([LN2, LN6]) + 0.5 * np.array([2.5, 2.0])
                               + np.array([1.5, 1.0]), rtol=1e-6)

    # usable as value_and_grad(..., has_aux=True) under jit: gradient of box is w * d mse
    (tot, aux), g = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(preds, targets)
    np.testing.assert_allclose(tot, total, rtol=1e-6)
    np.testing.assert_allclose(g["box"], 0.5 * 2 * (P - T) / P.size, rtol=1e-6)


def test_multi_task_errors():
    loss_fn = L.multi_task(a=(L.mse, 1.0))
    with pytest.raises(KeyError, match=r"predictions has no entry for task\(s\) \['a'\]"):
        loss_fn({"b": P}, {"a": T})
    with pytest.raises(ValueError, match="unknown loss"):
        L.multi_task(a=("nope", 1.0))
    with pytest.raises(ValueError, match="at least one"):
        L.multi_task()
    np.testing.assert_allclose(L.weighted_sum({"a": 2.0, "b": 3.0}, {"a": 0.5, "b": 2.0}), 7.0)
    with pytest.raises(KeyError, match=r"\['c'\]"):
        L.weighted_sum({"a": 1.0}, {"c": 1.0})


# ----------------------------------------------------------------------------- penalties

PARAMS = {
    "hidden": {"w": jnp.array([[1.0, -2.0], [3.0, 0.0]]), "b": jnp.array([5.0, 5.0])},
    "norm": {"scale": jnp.array([7.0])},
    "out": {"w": jnp.array([-1.0])},
}


def test_penalties_exclude_biases_and_scales_by_default():
    np.testing.assert_allclose(L.l1_penalty(PARAMS), 1 + 2 + 3 + 1)
    np.testing.assert_allclose(L.l2_penalty(PARAMS), 1 + 4 + 9 + 1)  # no 1/2
    np.testing.assert_allclose(L.l1_penalty(PARAMS, filter=None), 7 + 10 + 7)
    np.testing.assert_allclose(L.l2_penalty(PARAMS, filter=None), 15 + 50 + 49)


def test_penalty_filters_on_path_and_leaf():
    np.testing.assert_allclose(L.l1_penalty(PARAMS, filter=lambda p: p.startswith("hidden/")),
                               6 + 10)
    np.testing.assert_allclose(L.l1_penalty(PARAMS, filter=lambda path, leaf: leaf.ndim == 1),
                               10 + 7 + 1)
    seen = []
    L.l2_penalty(PARAMS, filter=lambda p: seen.append(p) or False)
    assert sorted(seen) == ["hidden/b", "hidden/w", "norm/scale", "out/w"]
    np.testing.assert_allclose(L.l2_penalty({"b": jnp.ones(3)}), 0.0)


def test_default_penalty_covers_every_kernel_of_nnkit_layers():
    """Recurrent kernels (``w_ih``, ``w_hh``), attention projections, conv kernels and
    embedding tables are penalised; biases (``b``, ``b_ih``, ``b_hh``, ``bias``) and norm
    scales are not."""
    from nnkit.layers import (
        GRU,
        LSTM,
        RNN,
        BatchNorm,
        Conv2D,
        Embedding,
        Flatten,
        LayerNorm,
        MultiHeadAttention,
    )

    def names(model, shape):
        _, params, _ = model.init(jax.random.key(0), shape)
        leaves = jax.tree_util.tree_leaves_with_path(params)
        return {L._path_str(p): L.weights_only(L._path_str(p)) for p, _ in leaves}

    got = {}
    got.update(names(nnkit.serial(LSTM(3), GRU(3), RNN(3), LayerNorm(), Dense(2)), (4, 2)))
    got.update(names(nnkit.serial(Conv2D(2, 3), BatchNorm(), Flatten(), Dense(2)), (5, 5, 1)))
    got.update(names(nnkit.serial(Embedding(7, 4), MultiHeadAttention(2, 2)), (3,)))
    kept = {p.rsplit("/", 1)[-1] for p, k in got.items() if k}
    dropped = {p.rsplit("/", 1)[-1] for p, k in got.items() if not k}
    assert {"w", "w_ih", "w_hh", "table"} <= kept
    assert dropped == {"b", "b_ih", "b_hh", "bias", "scale"}
    # and fit's l2 reaches the LSTM's kernels: its gradient is 2 l2 w there
    model = nnkit.serial(LSTM(3, return_sequences=False), Dense(2))
    _, params, state = model.init(jax.random.key(0), (4, 2))
    g = jax.grad(lambda p: L.l2_penalty(p))(params)
    lstm = next(k for k in params if k.startswith("lstm"))
    np.testing.assert_allclose(g[lstm]["w_hh"], 2 * params[lstm]["w_hh"])
    np.testing.assert_allclose(g[lstm]["b"] if "b" in g[lstm] else 0.0, 0.0)


def test_penalty_gradients():
    g = jax.grad(L.l2_penalty)(PARAMS)
    np.testing.assert_allclose(g["hidden"]["w"], 2 * PARAMS["hidden"]["w"])
    np.testing.assert_allclose(g["hidden"]["b"], 0.0)
    np.testing.assert_allclose(g["norm"]["scale"], 0.0)
    g1 = jax.grad(L.l1_penalty)(PARAMS)
    np.testing.assert_allclose(g1["out"]["w"], [-1.0])


def test_penalty_on_a_real_model():
    model = nnkit.serial(Dense(4, name="hidden"), Relu(), Dense(2))
    _, params, _ = model.init(jax.random.key(1), (3,))
    expect = sum(float(np.sum(np.asarray(params[n]["w"]) ** 2)) for n in ("hidden", "dense_0"))
    np.testing.assert_allclose(jax.jit(L.l2_penalty)(params), expect, rtol=1e-6)


# ----------------------------------------------------------------------------- registry


def test_registry():
    assert L.get("cross_entropy") is L.softmax_cross_entropy
    assert L.get("binary_cross_entropy") is L.binary_cross_entropy_with_logits
    assert L.get("bce_probs") is L.binary_cross_entropy
    assert L.get("kl") is L.kl_divergence
    assert {L.get(n) for n in ("mse", "l1", "huber", "nll")} == {L.mse, L.l1, L.huber, L.nll}
    assert L.get(L.mse) is L.mse
    with pytest.raises(ValueError, match=r"unknown loss 'cce'; known: \['bce_probs'"):
        L.get("cce")
    assert nnkit.losses is L


def test_l1_loss_and_penalty_have_zero_slope_at_zero():
    """The subgradient at 0 is 0 (PyTorch's): an exact prediction is not pushed, and a weight at
    exactly 0 stays there under an L1 penalty; elsewhere the slope is sign(r) / n."""
    g = jax.grad(lambda p: L.l1(p, jnp.zeros((1, 2))))(jnp.array([[0.0, 1.0]]))
    np.testing.assert_array_equal(g, [[0.0, 0.5]])
    g = jax.grad(lambda w: L.l1_penalty({"w": w}))(jnp.array([0.0, -2.0, 3.0]))
    np.testing.assert_array_equal(g, [0.0, -1.0, 1.0])
    w = jnp.array([0.0, 0.5])
    for _ in range(3):  # plain gradient descent on the penalty alone
        w = w - 0.1 * jax.grad(lambda v: L.l1_penalty({"w": v}))(w)
    assert float(w[0]) == 0.0 and float(w[1]) == pytest.approx(0.2)
    check_grads(lambda p: L.l1(p, jnp.zeros((2, 2))), (jnp.array([[0.3, -1.2], [2.0, -0.7]]),),
                order=1, modes=["rev"])
