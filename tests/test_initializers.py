"""nnkit.initializers: sample statistics within sampling error, bounds, fans, determinism.

Tolerances come from the standard error of the estimate for n iid draws (fixed keys, so the
tests are deterministic; 5 standard errors leaves room without hiding a wrong factor):
  SE(mean) = sigma / sqrt(n);
  SE(var)  = sigma^2 sqrt(2 / n) for a normal, sigma^2 * 3 sqrt(4 / 45 / n) for a uniform.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnkit import initializers as I

KEY = jax.random.key(0)
Z = 5.0  # standard errors allowed


def assert_stats(w, var, dist):
    w = np.asarray(w, np.float64)
    n = w.size
    se_mean = math.sqrt(var / n)
    rel_se_var = math.sqrt(2 / n) if dist == "normal" else 3 * math.sqrt(4 / 45 / n)
    assert abs(w.mean()) < Z * se_mean, (w.mean(), se_mean)
    assert abs(w.var() / var - 1) < Z * rel_se_var, (w.var(), var)


def assert_uniform_bound(w, bound):
    w = np.asarray(w)
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.99 * bound  # the bound is reached, not a smaller one
    assert_stats(w, bound**2 / 3, "uniform")


SHAPE = (512, 256)  # fan_in 512 != fan_out 256, so a swapped fan is caught


def test_he_normal_variance_is_2_over_fan_in():
    assert_stats(I.he_normal()(KEY, SHAPE), 2 / 512, "normal")
    assert_stats(I.kaiming_normal(mode="fan_out")(KEY, SHAPE), 2 / 256, "normal")
    assert_stats(I.he_normal(nonlinearity="tanh")(KEY, SHAPE), (5 / 3) ** 2 / 512, "normal")


def test_he_uniform_bound():
    assert_uniform_bound(I.he_uniform()(KEY, SHAPE), math.sqrt(6 / 512))
    a = 0.2
    assert_uniform_bound(I.he_uniform(nonlinearity="leaky_relu", negative_slope=a)(KEY, SHAPE),
                         math.sqrt(6 / (1 + a * a) / 512))


def test_glorot():
    assert_uniform_bound(I.glorot_uniform()(KEY, SHAPE), math.sqrt(6 / (512 + 256)))
    assert_stats(I.xavier_normal()(KEY, SHAPE), 2 / (512 + 256), "normal")


def test_lecun():
    assert_stats(I.lecun_normal()(KEY, SHAPE), 1 / 512, "normal")
    assert_uniform_bound(I.lecun_uniform()(KEY, SHAPE), math.sqrt(3 / 512))


def test_plain_normal_uniform_constant():
    w = I.normal(stddev=0.5, mean=2.0)(KEY, (512, 512))
    assert_stats(np.asarray(w) - 2.0, 0.25, "normal")
    u = np.asarray(I.uniform(-0.3, 0.1)(KEY, (512, 512)))
    assert u.min() >= -0.3 and u.max() < 0.1
    assert_stats(u + 0.1, 0.4**2 / 12, "uniform")  # centred: U[-0.2, 0.2)
    np.testing.assert_array_equal(I.zeros(KEY, (2, 3)), np.zeros((2, 3)))
    np.testing.assert_array_equal(I.ones(KEY, (2,)), np.ones(2))
    np.testing.assert_array_equal(I.constant(0.5)(KEY, (3,)), [0.5, 0.5, 0.5])


def test_course_weight_and_bias():
    w = I.course_weight()(KEY, SHAPE)
    assert_uniform_bound(w, math.sqrt(6 / 512))  # var = 6/n * 1/3 = 2/n_in
    assert_stats(w, 2 / 512, "uniform")
    b = I.course_bias(400)(KEY, (512, 512))  # large sample for the statistics
    assert_uniform_bound(b, 1 / math.sqrt(400))


def test_orthogonal():
    tall = np.asarray(I.orthogonal()(KEY, (256, 128)), np.float64)
    np.testing.assert_allclose(tall.T @ tall, np.eye(128), atol=1e-5)
    wide = np.asarray(I.orthogonal(scale=2.0)(KEY, (64, 128)), np.float64)
    np.testing.assert_allclose(wide @ wide.T, 4 * np.eye(64), atol=4e-5)
    conv = np.asarray(I.orthogonal()(KEY, (3, 3, 16, 32)), np.float64).reshape(144, 32)
    np.testing.assert_allclose(conv.T @ conv, np.eye(32), atol=1e-5)
    low = I.orthogonal()(KEY, (32, 32), jnp.bfloat16)  # QR has no bf16 kernel
    assert low.dtype == jnp.bfloat16
    m = np.asarray(low, np.float64)
    np.testing.assert_allclose(m.T @ m, np.eye(32), atol=0.05)


def test_conv_hwio_fans():
    assert I.fans((3, 3, 16, 32)) == (144, 288)
    assert I.fans((5, 8, 4)) == (40, 20)  # 1-D conv (W, in, out)
    assert I.fans((7, 9)) == (7, 9)
    shape = (3, 3, 128, 64)  # fan_in 1152, fan_out 576
    assert_stats(I.he_normal()(KEY, shape), 2 / 1152, "normal")
    assert_uniform_bound(I.glorot_uniform()(KEY, shape), math.sqrt(6 / (1152 + 576)))


def test_gain():
    assert I.gain("relu") == pytest.approx(math.sqrt(2))
    assert I.gain("leaky_relu", 0.1) == pytest.approx(math.sqrt(2 / 1.01))
    assert I.gain("tanh") == pytest.approx(5 / 3)
    assert I.gain("linear") == 1.0
    with pytest.raises(ValueError, match="'softsign'"):
        I.gain("softsign")


NAMES = ["zeros", "ones", "normal", "uniform", "he_normal", "he_uniform", "kaiming_normal",
         "kaiming_uniform", "glorot_normal", "glorot_uniform", "xavier_normal", "xavier_uniform",
         "lecun_normal", "lecun_uniform", "orthogonal", "course"]


@pytest.mark.parametrize("name", NAMES)
def test_get_by_name_is_deterministic_per_key(name):
    init = I.get(name)
    a = init(jax.random.key(3), (6, 4))
    assert a.shape == (6, 4) and a.dtype == jnp.float32
    np.testing.assert_array_equal(a, init(jax.random.key(3), (6, 4)))
    np.testing.assert_array_equal(a, init(jax.random.PRNGKey(3), (6, 4)))  # legacy keys
    if name not in ("zeros", "ones"):
        assert not np.array_equal(a, init(jax.random.key(4), (6, 4)))
    assert init(KEY, (3, 5), jnp.bfloat16).dtype == jnp.bfloat16
    assert jax.jit(init, static_argnums=1)(KEY, (6, 4)).shape == (6, 4)


def test_get_aliases_unknown_and_callable():
    a = I.get("kaiming_normal")(KEY, (8, 8))
    np.testing.assert_array_equal(a, I.he_normal()(KEY, (8, 8)))
    assert I.get("course")(KEY, (8, 8)).shape == (8, 8)
    custom = I.normal(0.1)
    assert I.get(custom) is custom
    with pytest.raises(ValueError, match=r"unknown initializer 'he'; known: \[.*'he_normal'"):
        I.get("he")


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="unknown mode 'fanin'"):
        I.he_normal(mode="fanin")
    with pytest.raises(ValueError, match=r"fan_in of shape \(0, 4\) is 0"):
        I.he_normal()(KEY, (0, 4))
