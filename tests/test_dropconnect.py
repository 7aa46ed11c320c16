"""DropConnect and ScaledDropout: masks, expectations, eval behaviour, gradients, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import nnkit
from nnkit.layers import Dense, DropConnect, ScaledDropout

KEY = jax.random.key(0)


def _init(layer, shape):
    return layer.init(KEY, shape)


# ----------------------------------------------------------------------------- DropConnect


def test_dropconnect_params_and_eval_equal_dense():
    dc, dense = DropConnect(5, 0.3), Dense(5)
    out, p, s = _init(dc, (4,))
    out_d, p_d, _ = _init(dense, (4,))
    assert out == out_d == (5,) and s == {}
    # same initialisation as Dense (same key -> same arrays)
    np.testing.assert_array_equal(p["w"], p_d["w"])
    np.testing.assert_array_equal(p["b"], p_d["b"])
    x = jax.random.normal(jax.random.key(1), (3, 4))
    y, _ = dc.apply(p, s, x)  # eval: plain Dense
    np.testing.assert_allclose(y, np.asarray(x) @ p["w"] + p["b"], rtol=1e-6, atol=1e-6)


def test_dropconnect_non_inverted_eval_scales_weights():
    dc = DropConnect(5, 0.25, inverted=False)
    _, p, s = _init(dc, (4,))
    x = jax.random.normal(jax.random.key(1), (3, 4))
    y, _ = dc.apply(p, s, x)
    np.testing.assert_allclose(y, np.asarray(x) @ (0.75 * p["w"]) + p["b"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("inverted", [True, False])
def test_dropconnect_mask_fraction_and_values(inverted):
    rate, n = 0.3, 64
    dc = DropConnect(n, rate, use_bias=False, inverted=inverted)
    _, p, s = _init(dc, (n,))
    # x = identity rows -> y is exactly the effective weight matrix
    w_eff, _ = dc.apply(p, s, jnp.eye(n), key=jax.random.key(7), train=True)
    w_eff, w = np.asarray(w_eff), np.asarray(p["w"])
    dropped = w_eff == 0
    sigma = np.sqrt(rate * (1 - rate) / w.size)
    assert abs(dropped.mean() - rate) < 4 * sigma
    scale = 1 / (1 - rate) if inverted else 1.0
    np.testing.assert_allclose(w_eff[~dropped], scale * w[~dropped], rtol=1e-6)


def test_dropconnect_one_mask_per_pass_new_mask_per_key():
    dc = DropConnect(8, 0.5, use_bias=False)
    _, p, s = _init(dc, (8,))
    x = jnp.tile(jnp.eye(8), (2, 1))  # the batch repeats the identity twice
    y, _ = dc.apply(p, s, x, key=jax.random.key(1), train=True)
    np.testing.assert_array_equal(y[:8], y[8:])  # the mask is shared by the batch
    y2, _ = dc.apply(p, s, x, key=jax.random.key(2), train=True)
    assert not np.array_equal(y, y2)


def test_dropconnect_mean_output_preserved():
    rate, k = 0.5, 4000
    dc = DropConnect(3, rate)
    _, p, s = _init(dc, (6,))
    x = jax.random.normal(jax.random.key(3), (2, 6))
    keys = jax.random.split(jax.random.key(4), k)
    ys = jax.vmap(lambda kk: dc.apply(p, s, x, key=kk, train=True)[0])(keys)
    y_eval, _ = dc.apply(p, s, x)
    mean, se = ys.mean(0), ys.std(0) / np.sqrt(k)
    assert np.all(np.abs(mean - y_eval) < 5 * se + 1e-6)
    # closed-form variance of the inverted mask: Var(y_j) = (p / (1-p)) sum_i x_i^2 w_ij^2
    var = rate / (1 - rate) * (np.asarray(x) ** 2) @ (np.asarray(p["w"]) ** 2)
    np.testing.assert_allclose(ys.var(0), var, rtol=0.1)


def test_dropconnect_gradient_finite_differences_fixed_key():
    dc = DropConnect(3, 0.4)
    _, p, s = _init(dc, (4,))
    x = jax.random.normal(jax.random.key(5), (2, 4))
    k = jax.random.key(9)

    def f(w, b, xx):
        y, _ = dc.apply({"w": w, "b": b}, s, xx, key=k, train=True)
        return jnp.sum(jnp.tanh(y))

    check_grads(f, (p["w"], p["b"], x), order=1, modes=("fwd", "rev"), atol=1e-2, rtol=1e-2,
                eps=1e-2)
    # dropped weights get exactly zero gradient; kept ones x^T g / (1 - rate)
    g_w = jax.grad(f)(p["w"], p["b"], x)
    w_eff, _ = dc.apply({"w": p["w"], "b": jnp.zeros(3)}, s, jnp.eye(4), key=k, train=True)
    assert np.all(np.asarray(g_w)[np.asarray(w_eff) == 0] == 0)


def test_dropconnect_errors_and_rate_zero():
    with pytest.raises(ValueError, match="fc.*rate"):
        DropConnect(3, 1.0, name="fc")
    with pytest.raises(nnkit.ShapeError, match="features"):
        DropConnect(0, 0.5)
    dc = DropConnect(3, 0.5, name="fc")
    _, p, s = _init(dc, (4,))
    with pytest.raises(ValueError, match="fc.*key"):
        dc.apply(p, s, jnp.ones((1, 4)), train=True)
    dc0 = DropConnect(3, 0.0)
    y_t, _ = dc0.apply(p, s, jnp.ones((1, 4)), train=True)  # no key needed at rate 0
    y_e, _ = dc0.apply(p, s, jnp.ones((1, 4)))
    np.testing.assert_array_equal(y_t, y_e)


def test_dropconnect_in_serial_model_trains_under_jit():
    model = nnkit.serial(DropConnect(8, 0.5, name="fc"), nnkit.layers.Relu(), Dense(2))
    _, p, s = model.init(KEY, (4,))
    assert set(p) == {"fc", "dense_0"}
    x = jnp.ones((3, 4))

    @jax.jit
    def loss(p, k):
        return jnp.mean(model.apply(p, s, x, key=k, train=True)[0] ** 2)

    g = jax.grad(loss)(p, jax.random.PRNGKey(0))  # legacy key accepted
    assert all(np.isfinite(a).all() for a in jax.tree_util.tree_leaves(g))


# ----------------------------------------------------------------------------- ScaledDropout


def test_scaled_dropout_train_and_eval_values():
    rate = 0.4
    sd = ScaledDropout(rate)
    out, p, s = sd.init(KEY, (50, 40))
    assert out == (50, 40) and p == {} and s == {}
    x = jax.random.normal(jax.random.key(1), (2, 50, 40)) + 3.0  # no exact zeros in x
    y_eval, _ = sd.apply(p, s, x)
    np.testing.assert_allclose(y_eval, (1 - rate) * np.asarray(x), rtol=1e-6)
    y, _ = sd.apply(p, s, x, key=jax.random.key(2), train=True)
    y, xn = np.asarray(y), np.asarray(x)
    kept = y != 0
    np.testing.assert_array_equal(y[kept], xn[kept])  # no rescaling in training
    sigma = np.sqrt(rate * (1 - rate) / y.size)
    assert abs((~kept).mean() - rate) < 4 * sigma


def test_scaled_dropout_expectation_equals_eval_output():
    rate, k = 0.3, 4000
    sd = ScaledDropout(rate)
    x = jax.random.normal(jax.random.key(1), (2, 5))
    keys = jax.random.split(jax.random.key(3), k)
    ys = jax.vmap(lambda kk: sd.apply({}, {}, x, key=kk, train=True)[0])(keys)
    y_eval, _ = sd.apply({}, {}, x)
    se = np.sqrt(rate * (1 - rate) / k) * np.abs(np.asarray(x))  # Bernoulli std / sqrt(k)
    assert np.all(np.abs(ys.mean(0) - y_eval) < 5 * se + 1e-6)


def test_scaled_dropout_matches_inverted_convention_in_expectation():
    """Classic dropout + (1-p) at test == inverted dropout; the next layer absorbs the scale.

    Net A: inverted dropout (``nnkit.layers.Dropout`` when present, else its closed form
    ``m x / (1-p)``) -> matmul w2. Net B: ScaledDropout -> matmul ``w2 / (1 - p)``. Eval outputs
    are equal, and so are the expected training outputs.
    """
    rate, k = 0.5, 4000
    x = jax.random.normal(jax.random.key(1), (3, 4))
    w2 = jax.random.normal(jax.random.key(2), (4, 2))
    dropout = getattr(nnkit.layers, "Dropout", None)

    def inverted(h, key, train):
        if dropout is not None:
            return dropout(rate).apply({}, {}, h, key=key, train=train)[0]
        if not train:
            return h
        return jnp.where(jax.random.bernoulli(key, 1 - rate, h.shape), h / (1 - rate), 0.0)

    sd = ScaledDropout(rate)

    def net_a(key, train):
        return inverted(x, key, train) @ w2

    def net_b(key, train):
        return sd.apply({}, {}, x, key=key, train=train)[0] @ (w2 / (1 - rate))

    np.testing.assert_allclose(net_a(None, False), net_b(None, False), rtol=1e-5, atol=1e-6)
    keys = jax.random.split(jax.random.key(3), k)
    ya = jax.vmap(lambda kk: net_a(kk, True))(keys)
    yb = jax.vmap(lambda kk: net_b(kk, True))(keys)
    se = np.sqrt(ya.var(0) / k + yb.var(0) / k)
    assert np.all(np.abs(ya.mean(0) - yb.mean(0)) < 5 * se + 1e-6)
    assert np.all(np.abs(yb.mean(0) - net_b(None, False)) < 5 * yb.std(0) / np.sqrt(k) + 1e-6)


def test_scaled_dropout_errors():
    with pytest.raises(ValueError, match="sd.*rate"):
        ScaledDropout(-0.1, name="sd")
    with pytest.raises(ValueError, match="sd.*key"):
        ScaledDropout(0.5, name="sd").apply({}, {}, jnp.ones((1, 2)), train=True)
