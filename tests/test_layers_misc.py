"""Dropout statistics and semantics; Flatten/Reshape; Embedding lookup and gradient."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnkit
from nnkit.layers import Dense, Dropout, Embedding, Flatten, Reshape

# ----------------------------------------------------------------------------- Dropout


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_statistics(rate):
    n = 200_000
    x = jnp.full((1, n), 3.0)
    y, state = jax.jit(Dropout(rate).apply, static_argnames="train")(
        {}, {}, x, key=jax.random.key(0), train=True
    )
    y = np.asarray(y)
    assert state == {}
    zeros = np.mean(y == 0)
    # fraction dropped ~ Binomial(n, rate) / n: within 5 standard errors
    assert abs(zeros - rate) < 5 * math.sqrt(rate * (1 - rate) / n)
    # kept units are scaled by 1 / (1 - rate) exactly (inverted dropout) ...
    np.testing.assert_allclose(y[y != 0], 3.0 / (1 - rate), rtol=1e-6)
    # ... so the mean is preserved: sd of the mean is 3 * sqrt(rate / (1 - rate) / n)
    assert abs(y.mean() - 3.0) < 5 * 3.0 * math.sqrt(rate / (1 - rate) / n)


def test_dropout_eval_identity_and_determinism():
    layer = Dropout(0.5)
    x = jax.random.normal(jax.random.key(1), (4, 10))
    y_eval, _ = layer.apply({}, {}, x, key=jax.random.key(0), train=False)
    assert y_eval is x
    assert layer.apply({}, {}, x)[0] is x  # eval needs no key
    a = layer.apply({}, {}, x, key=jax.random.key(3), train=True)[0]
    b = layer.apply({}, {}, x, key=jax.random.key(3), train=True)[0]
    c = layer.apply({}, {}, x, key=jax.random.key(4), train=True)[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    legacy = layer.apply({}, {}, x, key=jax.random.PRNGKey(3), train=True)[0]
    np.testing.assert_array_equal(legacy, a)  # legacy uint32 keys: same mask
    assert Dropout(0.0).apply({}, {}, x, train=True)[0] is x  # rate 0: no key needed


def test_dropout_errors():
    with pytest.raises(ValueError, match=r"drop: .*needs key="):
        Dropout(0.3, name="drop").apply({}, {}, jnp.ones((2, 2)), train=True)
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"rate .* \[0, 1\)"):
            Dropout(bad)
    with pytest.raises(ValueError, match="rate"):
        Dropout("half")


def test_dropout_in_model_uses_child_key():
    model = nnkit.serial(Dense(50), Dropout(0.5), Dense(50), Dropout(0.5))
    _, params, state = model.init(jax.random.key(0), (8,))
    x = jnp.ones((2, 8))
    y1, _ = model.apply(params, state, x, key=jax.random.key(1), train=True)
    y2, _ = model.apply(params, state, x, key=jax.random.key(1), train=True)
    np.testing.assert_array_equal(y1, y2)
    with pytest.raises(ValueError, match="dropout"):
        model.apply(params, state, x, train=True)


# ----------------------------------------------------------------------------- reshaping


def test_flatten_and_reshape_values():
    x = jnp.arange(24.0).reshape(2, 3, 4)
    out, _, _ = Flatten().init(None, (3, 4))
    assert out == (12,)
    np.testing.assert_array_equal(Flatten().apply({}, {}, x)[0], np.arange(24.0).reshape(2, 12))
    out, _, _ = Reshape((2, -1)).init(None, (3, 4))
    assert out == (2, 6)
    y, _ = Reshape((2, -1)).apply({}, {}, x)
    np.testing.assert_array_equal(y, np.arange(24.0).reshape(2, 2, 6))
    assert Reshape(12).init(None, (3, 4))[0] == (12,)


def test_reshape_errors():
    with pytest.raises(nnkit.ShapeError, match=r"rs: cannot reshape input shape \(3, 4\).*5, 2"):
        Reshape((5, 2), name="rs").init(None, (3, 4))
    with pytest.raises(nnkit.ShapeError, match="not divisible by 5"):
        Reshape((5, -1)).init(None, (3, 4))
    for bad in ((-1, -1), (0, 3), (2, -2)):
        with pytest.raises(ValueError, match="reshape"):
            Reshape(bad)


# ----------------------------------------------------------------------------- Embedding


def test_embedding_lookup_and_shapes():
    layer = Embedding(5, 3)
    out, params, state = layer.init(jax.random.key(0), (2, 4))
    assert out == (2, 4, 3) and params["table"].shape == (5, 3) and state == {}
    ids = jnp.array([[[0, 4, 4, 1], [2, 3, 0, 0]]], jnp.int32)
    y, _ = layer.apply(params, state, ids)
    np.testing.assert_array_equal(y, np.asarray(params["table"])[np.asarray(ids)])
    table = np.asarray(params["table"])
    assert abs(table.std() - 1.0) < 0.6  # N(0, 1) init (15 draws: loose)


def test_embedding_gradient_scatter_adds():
    layer = Embedding(4, 2)
    _, params, _ = layer.init(jax.random.key(0), (3,))
    ids = jnp.array([[1, 3, 1], [1, 0, 3]])
    cot = jax.random.normal(jax.random.key(1), (2, 3, 2))

    def loss(p):
        return jnp.sum(layer.apply(p, {}, ids)[0] * cot)

    g = np.asarray(jax.grad(loss)(params)["table"])
    c = np.asarray(cot)
    want = np.zeros((4, 2))
    for (b, t), i in np.ndenumerate(np.asarray(ids)):
        want[i] += c[b, t]  # repeated ids accumulate
    np.testing.assert_allclose(g, want, rtol=1e-6)
    np.testing.assert_array_equal(g[2], 0.0)  # an unused row gets no gradient


def test_embedding_errors():
    layer = Embedding(3, 2, name="emb")
    _, params, _ = layer.init(jax.random.key(0), (2,))
    with pytest.raises(TypeError, match="emb: expected integer token ids"):
        layer.apply(params, {}, jnp.ones((1, 2)))
    y, _ = layer.apply(params, {}, jnp.array([[0, 3]]))  # 3 is out of range -> NaN row
    assert np.isfinite(y[0, 0]).all() and np.isnan(y[0, 1]).all()
    # negative ids too: -1 (a common padding value) must not wrap to the last row
    ids = jnp.array([[-1, 2, -3, -4]])
    y, _ = layer.apply(params, {}, ids)
    assert np.isnan(y[0, 0]).all() and np.isnan(y[0, 2]).all() and np.isnan(y[0, 3]).all()
    np.testing.assert_array_equal(y[0, 1], params["table"][2])
    g = jax.grad(lambda p: jnp.nansum(layer.apply(p, {}, ids)[0]))(params)["table"]
    np.testing.assert_array_equal(g, [[0, 0], [0, 0], [1, 1]])  # only id 2's row
    with pytest.raises(ValueError, match="vocab_size"):
        Embedding(0, 2)
