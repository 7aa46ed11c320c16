"""BatchNorm train/eval semantics and LayerNorm, against closed forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnkit
from nnkit.core import ShapeError
from nnkit.layers import BatchNorm, Dense, LayerNorm


def _x(shape, seed=0, loc=3.0, scale=2.0):
    return loc + scale * jax.random.normal(jax.random.key(seed), shape)


def test_batchnorm_train_normalises_with_batch_stats():
    layer = BatchNorm()
    _, params, state = layer.init(None, (4, 4, 3))
    x = _x((8, 4, 4, 3))
    y, _ = jax.jit(layer.apply, static_argnames="train")(params, state, x, train=True)
    # per channel, over batch AND spatial axes: mean 0, (biased) variance 1 (up to eps)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    var = np.asarray(x).var(axis=(0, 1, 2))
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), var / (var + 1e-5), rtol=1e-4)


def test_batchnorm_running_stats_update_formula():
    layer = BatchNorm(momentum=0.8)
    _, params, _ = layer.init(None, (3,))
    state = {"mean": jnp.array([1.0, -1.0, 0.5]), "var": jnp.array([2.0, 1.0, 0.5])}
    x = _x((5, 3), seed=1)
    _, new = layer.apply(params, state, x, train=True)
    xn = np.asarray(x, np.float64)
    m = xn.shape[0]
    want_mean = 0.8 * np.array([1.0, -1.0, 0.5]) + 0.2 * xn.mean(0)
    # running var uses the UNBIASED batch variance: sum((x - mu)^2) / (m - 1)
    want_var = 0.8 * np.array([2.0, 1.0, 0.5]) + 0.2 * xn.var(0) * m / (m - 1)
    np.testing.assert_allclose(new["mean"], want_mean, rtol=1e-5)
    np.testing.assert_allclose(new["var"], want_var, rtol=1e-5)
    np.testing.assert_allclose(xn.var(0, ddof=1), xn.var(0) * m / (m - 1))  # sanity
    assert new["mean"].dtype == jnp.float32 and new["var"].dtype == jnp.float32


def test_batchnorm_momentum_convention():
    """momentum = weight of the OLD average: 0 -> batch stats; 1 -> frozen."""
    x = _x((6, 2), seed=2)
    for momentum, want in ((0.0, np.asarray(x).mean(0)), (1.0, np.zeros(2))):
        layer = BatchNorm(momentum=momentum)
        _, p, s = layer.init(None, (2,))
        np.testing.assert_allclose(layer.apply(p, s, x, train=True)[1]["mean"], want, atol=1e-6)


def test_batchnorm_eval_uses_running_stats_and_keeps_state():
    layer = BatchNorm(eps=1e-3)
    params = {"scale": jnp.array([2.0, 0.5]), "bias": jnp.array([1.0, -1.0])}
    state = {"mean": jnp.array([1.0, 2.0]), "var": jnp.array([4.0, 0.25])}
    x = jnp.array([[3.0, 2.5], [1.0, 0.0]])
    y, new = layer.apply(params, state, x, train=False)
    want = (np.asarray(x) - [1.0, 2.0]) / np.sqrt(np.array([4.0, 0.25]) + 1e-3) * [2, 0.5]
    np.testing.assert_allclose(y, want + [1.0, -1.0], rtol=1e-6)
    assert new is state
    # one example at eval is fine (no batch statistics needed) and does not depend on others
    y1, _ = layer.apply(params, state, x[:1], train=False)
    np.testing.assert_allclose(y1, y[:1], rtol=1e-6)


def test_batchnorm_axis_and_flags():
    layer = BatchNorm(axis=0, use_scale=False, use_bias=False)
    _, params, state = layer.init(None, (3, 5))  # features on per-example axis 0
    assert params == {} and state["mean"].shape == (3,)
    x = _x((4, 3, 5), seed=3)
    y, new = layer.apply(params, state, x, train=True)
    np.testing.assert_allclose(y.mean(axis=(0, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(new["mean"], 0.1 * np.asarray(x).mean(axis=(0, 2)), rtol=1e-5)


def test_batchnorm_in_a_model_and_errors():
    model = nnkit.serial(Dense(4), BatchNorm(), Dense(2))
    _, params, state = model.init(jax.random.key(0), (3,))
    assert set(state) == {"batch_norm_0"} and set(state["batch_norm_0"]) == {"mean", "var"}
    _, new_state = model.apply(params, state, _x((6, 3)), train=True)
    assert not np.allclose(new_state["batch_norm_0"]["mean"], 0.0)
    with pytest.raises(nnkit.ShapeError, match="bn: x of shape"):
        layer = BatchNorm(name="bn")
        _, p, s = layer.init(None, (3,))
        layer.apply(p, s, jnp.ones((2, 4)))
    with pytest.raises(nnkit.ShapeError, match="batch_norm: feature axis 2"):
        BatchNorm(axis=2).init(None, (3, 4))
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm(momentum=1.5)
    with pytest.raises(ValueError, match="eps"):
        BatchNorm(eps=0.0)


def test_layernorm_closed_form():
    layer = LayerNorm(eps=1e-5)
    _, params, state = layer.init(None, (2, 6))
    assert state == {} and params["scale"].shape == (6,)
    params = {"scale": jnp.linspace(0.5, 1.5, 6), "bias": jnp.arange(6.0)}
    x = _x((3, 2, 6), seed=4)
    xn = np.asarray(x, np.float64)
    mu, var = xn.mean(-1, keepdims=True), xn.var(-1, keepdims=True)
    want = (xn - mu) / np.sqrt(var + 1e-5) * np.asarray(params["scale"]) + np.arange(6.0)
    for train in (False, True):  # no train/eval difference
        y, _ = layer.apply(params, state, x, train=train)
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    y, _ = LayerNorm().apply({"scale": jnp.ones(6), "bias": jnp.zeros(6)}, {}, x)
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(-1), 1.0, rtol=1e-4)


def test_layernorm_rejects_a_feature_size_its_params_do_not_have():
    layer = LayerNorm(name="ln")
    _, params, state = layer.init(None, (4,))
    for bad in ((2, 1), (2, 5)):  # (.., 1) would broadcast silently
        with pytest.raises(ShapeError, match=rf"ln: x of shape \({bad[0]}, {bad[1]}\) has "
                                             rf"{bad[1]} features .* params have 4"):
            layer.apply(params, state, jnp.ones(bad))
    y, _ = LayerNorm(use_scale=False, use_bias=False).apply({}, {}, jnp.ones((2, 5)))
    assert y.shape == (2, 5)  # no params: any width


def test_norm_low_precision_input_uses_float32_stats():
    x = _x((16, 8), seed=5, loc=100.0, scale=1.0).astype(jnp.bfloat16)
    layer = BatchNorm()
    _, p, s = layer.init(None, (8,))
    y, new = layer.apply(p, s, x, train=True)
    assert new["mean"].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y, np.float32).mean(0), 0.0, atol=0.05)
