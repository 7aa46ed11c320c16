"""nnkit.activations: hand values, limits at large |x|, gradients vs finite differences."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from nnkit import activations as A
from nnkit import layers

LN2, LN3 = math.log(2), math.log(3)


def phi(x):
    """Standard normal CDF."""
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


HAND = [
    (A.sigmoid, [0.0, LN3, -LN3], [0.5, 0.75, 0.25]),
    (A.tanh, [0.0, LN2, -LN2], [0.0, 0.6, -0.6]),  # tanh(ln 2) = (4 - 1) / (4 + 1)
    (A.relu, [-1.0, 0.0, 2.0], [0.0, 0.0, 2.0]),
    (A.leaky_relu, [-2.0, 0.0, 3.0], [-0.02, 0.0, 3.0]),
    (A.elu, [-LN2, 0.0, 1.5], [-0.5, 0.0, 1.5]),  # exp(-ln 2) - 1
    (A.gelu, [-1.0, 0.0, 1.0], [-phi(-1.0), 0.0, phi(1.0)]),
    (A.softplus, [0.0, LN3, -LN3], [LN2, math.log(4), math.log(4 / 3)]),
    (A.silu, [0.0, LN3, -LN3], [0.0, 0.75 * LN3, -0.25 * LN3]),
    (A.step, [-1e-8, 0.0, 5.0], [0.0, 1.0, 1.0]),
    (A.identity, [-2.0, 0.0, 3.0], [-2.0, 0.0, 3.0]),
]


@pytest.mark.parametrize("fn,x,y", HAND, ids=[f.__name__ for f, _, _ in HAND])
def test_values_at_hand_points(fn, x, y):
    np.testing.assert_allclose(fn(jnp.array(x)), y, rtol=1e-6, atol=1e-7)


def test_parameterised_values_and_softmax():
    np.testing.assert_allclose(A.leaky_relu(jnp.array([-2.0, 2.0]), alpha=0.2), [-0.4, 2.0])
    np.testing.assert_allclose(A.elu(jnp.array([-LN2]), alpha=2.0), [-1.0], rtol=1e-6)
    z = jnp.log(jnp.array([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(A.softmax(z), [[1 / 6, 2 / 6, 3 / 6]], rtol=1e-6)
    np.testing.assert_allclose(A.log_softmax(z), np.log([[1 / 6, 2 / 6, 3 / 6]]), rtol=1e-6)
    np.testing.assert_allclose(A.softmax(z.T, axis=0), [[1 / 6], [2 / 6], [3 / 6]], rtol=1e-6)
    assert A.step(1.0) == 1.0 and A.step(-1) == 0.0  # Python scalars too
    assert A.step(jnp.arange(-1, 2)).dtype == jnp.float32


BIG = [30.0, 100.0, 1000.0]
# (fn, limit at -inf, limit at +inf as a function of x, slope at -inf, slope at +inf)
LIMITS = [
    (A.sigmoid, lambda x: 0.0, lambda x: 1.0, 0.0, 0.0),
    (A.tanh, lambda x: -1.0, lambda x: 1.0, 0.0, 0.0),
    (A.relu, lambda x: 0.0, lambda x: x, 0.0, 1.0),
    (A.leaky_relu, lambda x: 0.01 * x, lambda x: x, 0.01, 1.0),
    (A.elu, lambda x: -1.0, lambda x: x, 0.0, 1.0),
    (A.gelu, lambda x: 0.0, lambda x: x, 0.0, 1.0),
    (lambda x: A.gelu(x, approximate=True), lambda x: 0.0, lambda x: x, 0.0, 1.0),
    (A.softplus, lambda x: 0.0, lambda x: x, 0.0, 1.0),
    (A.silu, lambda x: 0.0, lambda x: x, 0.0, 1.0),
    (A.step, lambda x: 0.0, lambda x: 1.0, 0.0, 0.0),
]


@pytest.mark.parametrize("big", BIG)
@pytest.mark.parametrize("fn,lo,hi,dlo,dhi", LIMITS, ids=lambda v: getattr(v, "__name__", ""))
def test_stable_limits_and_gradients_at_large_inputs(fn, lo, hi, dlo, dhi, big):
    x = jnp.array([-big, big], jnp.float32)
    y = fn(x)
    g = jax.vmap(jax.grad(fn))(x)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(g))
    np.testing.assert_allclose(y, [lo(-big), hi(big)], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(g, [dlo, dhi], atol=1e-6)


@pytest.mark.parametrize("big", BIG)
def test_softmax_stable_at_large_inputs(big):
    z = jnp.array([[big, -big, 0.0]])
    np.testing.assert_allclose(A.softmax(z), [[1.0, 0.0, 0.0]], atol=1e-7)
    np.testing.assert_allclose(A.log_softmax(z), [[0.0, -2 * big, -big]], rtol=1e-6)
    g = jax.grad(lambda v: A.log_softmax(v)[0, 1])(z)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, [[-1.0, 1.0, 0.0]], atol=1e-6)  # onehot - softmax


SMOOTH = [A.sigmoid, A.tanh, A.relu, A.leaky_relu, A.elu, A.gelu, A.softplus, A.silu,
          lambda x: A.gelu(x, approximate=True), lambda x: A.elu(x, alpha=0.5),
          lambda x: A.softmax(x, axis=-1), lambda x: A.log_softmax(x, axis=-1)]


@pytest.mark.parametrize("fn", SMOOTH, ids=lambda f: getattr(f, "__name__", "fn"))
def test_gradients_match_finite_differences(fn):
    x = np.array([[-2.3, -0.7, 0.4, 1.9], [3.1, -4.0, 0.05, -0.2]])  # away from kinks at 0
    with jax.enable_x64(True):
        check_grads(jax.jit(fn), (jnp.asarray(x),), order=2, modes=("rev",), atol=1e-5,
                    rtol=1e-5)


def test_step_gradient_is_zero():
    x = jnp.array([-3.0, -1e-3, 0.0, 1e-3, 2.0])
    np.testing.assert_array_equal(jax.vmap(jax.grad(A.step))(x), 0.0)
    np.testing.assert_array_equal(jax.jit(jax.grad(lambda v: A.step(v).sum()))(x), 0.0)
    assert float(jax.grad(jax.grad(A.step))(0.5)) == 0.0


def test_leaky_relu_slope():
    g = jax.vmap(jax.grad(lambda v: A.leaky_relu(v, alpha=0.2)))(jnp.array([-5.0, -0.1, 0.1, 5]))
    np.testing.assert_allclose(g, [0.2, 0.2, 1.0, 1.0])
    np.testing.assert_allclose(A.leaky_relu(jnp.array([-10.0])), [-0.1])  # default alpha 0.01


def test_closed_form_derivatives():
    x = jnp.linspace(-4.0, 4.0, 17)
    x64 = np.asarray(x, np.float64)
    s = 1 / (1 + np.exp(-x64))
    np.testing.assert_allclose(jax.vmap(jax.grad(A.sigmoid))(x), s * (1 - s), rtol=1e-5)
    np.testing.assert_allclose(jax.vmap(jax.grad(A.softplus))(x), s, rtol=1e-5)
    np.testing.assert_allclose(jax.vmap(jax.grad(A.tanh))(x), 1 / np.cosh(x64) ** 2,
                               rtol=1e-5, atol=5e-7)  # jax forms 1 - tanh^2: float32 eps abs


def test_gelu_exact_vs_tanh_approximation():
    x = jnp.linspace(-8.0, 8.0, 4001)
    exact, approx = A.gelu(x), A.gelu(x, approximate=True)
    diff = np.abs(np.asarray(exact - approx))
    assert diff.max() < 1e-3  # the tanh form is accurate to ~5e-4
    assert diff.max() > 1e-5  # ...but it is a different function
    np.testing.assert_allclose(A.gelu(jnp.array([2.0])), [2 * phi(2.0)], rtol=1e-6)


def test_get_and_layers():
    assert A.get("relu") is A.relu and A.get("swish") is A.silu and A.get("linear") is A.identity
    assert A.get(jnp.sin) is jnp.sin
    with pytest.raises(ValueError, match=r"unknown activation 'rellu'; known: \[.*'relu'"):
        A.get("rellu")
    x = jnp.array([[-2.0, 0.5]])
    y, _ = layers.LeakyRelu(0.3).apply({}, {}, x)
    np.testing.assert_allclose(y, A.leaky_relu(x, alpha=0.3))
    y, _ = layers.Gelu(approximate=True).apply({}, {}, x)
    np.testing.assert_allclose(y, A.gelu(x, approximate=True))


def test_leaky_relu_slope_at_zero_is_alpha_like_relus_zero():
    assert float(jax.grad(lambda v: A.leaky_relu(v, 0.2))(0.0)) == pytest.approx(0.2)
    assert float(jax.grad(A.relu)(0.0)) == 0.0
    assert float(A.leaky_relu(jnp.float32(0.0), 0.2)) == 0.0
