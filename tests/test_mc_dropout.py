"""Monte-Carlo dropout: mean/std against per-key loops, closed forms and deterministic models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnkit
from nnkit import layers as L
from nnkit import mc_predict
from nnkit.layers import Dense, DropConnect, Relu, ScaledDropout

X = jax.random.normal(jax.random.key(1), (4, 6))


def _init(model, shape=(6,)):
    return model.init(jax.random.key(0), shape)[1:]


def test_mean_matches_eval_output_for_linear_model_and_std_positive():
    # a linear model with inverted (weight) dropout: E[y_train] = y_eval exactly
    model = nnkit.serial(DropConnect(3, 0.5, name="fc"), nnkit.Lambda(lambda h: h, kind="id"))
    p, s = _init(model)
    n = 2000
    mean, std = mc_predict(model, p, s, X, key=jax.random.key(2), num_samples=n)
    y_eval, _ = model.apply(p, s, X)
    assert mean.shape == std.shape == (4, 3)
    assert np.all(np.asarray(std) > 0)
    assert np.all(np.abs(mean - y_eval) < 5 * std / np.sqrt(n) + 1e-6)
    # closed-form std of inverted DropConnect: sqrt(p / (1-p) * sum_i x_i^2 w_ij^2)
    var = 0.5 / (1 - 0.5) * (np.asarray(X) ** 2) @ (np.asarray(p["fc"]["w"]) ** 2)
    np.testing.assert_allclose(std, np.sqrt(var), rtol=0.1)


def test_no_dropout_gives_zero_std_and_the_plain_output():
    model = nnkit.serial(Dense(8), Relu(), Dense(3))
    p, s = _init(model)
    mean, std = mc_predict(model, p, s, X, key=0, num_samples=7)
    assert np.all(np.asarray(std) == 0.0)
    np.testing.assert_array_equal(mean, model.apply(p, s, X, train=True)[0])


def test_equals_an_explicit_loop_over_split_keys():
    model = nnkit.serial(Dense(8), Relu(), ScaledDropout(0.3), Dense(3))
    p, s = _init(model)
    key = jax.random.key(5)
    mean, std = mc_predict(model, p, s, X, key=key, num_samples=6)
    ys = np.stack([
        np.asarray(model.apply(p, s, X, key=k, train=True)[0])
        for k in jax.random.split(key, 6)
    ])
    np.testing.assert_allclose(mean, ys.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, ys.std(0), rtol=1e-4, atol=1e-6)
    # a few passes at a time (6 = 4 + 2: a group and a remainder): the same samples
    for b in (4, 1):
        mb, sb = mc_predict(model, p, s, X, key=key, num_samples=6, batch_size=b)
        np.testing.assert_allclose(mb, ys.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(sb, ys.std(0), rtol=1e-4, atol=1e-6)


def test_transform_softmax_averages_probabilities_and_jit_and_legacy_key():
    model = nnkit.serial(Dense(8), Relu(), ScaledDropout(0.5), Dense(3))
    p, s = _init(model)
    f = jax.jit(lambda p, s, x, k: mc_predict(model, p, s, x, key=k, num_samples=5,
                                              transform=jax.nn.softmax))
    mean, std = f(p, s, X, jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.sum(mean, axis=-1), 1.0, rtol=1e-5)
    assert np.all((np.asarray(mean) >= 0) & (np.asarray(std) <= 0.5))


def test_batchnorm_warning_and_bad_arguments():
    fake_bn = nnkit.Lambda(lambda x: x, kind="batchnorm", name="bn")
    model = nnkit.serial(Dense(4), fake_bn)
    p, s = _init(model)
    with pytest.warns(UserWarning, match="bn.*statistics of this batch"):
        mc_predict(model, p, s, X, key=0, num_samples=2)
    with pytest.raises(ValueError, match="num_samples"):
        mc_predict(model, p, s, X, key=0, num_samples=0)
    with pytest.raises(ValueError, match="batch_size"):
        mc_predict(model, p, s, X, key=0, num_samples=2, batch_size=0)
    with pytest.raises(ValueError, match="key"):
        mc_predict(Dense(4), p["dense_0"], {}, X, key=None)



def test_a_model_with_two_outputs_gets_mean_and_std_per_output():
    fo = nnkit.fanout(L.Dense(2), nnkit.serial(L.Dropout(0.5), L.Dense(3)))
    _, p, s = fo.init(jax.random.key(0), (4,))
    x = jnp.ones((5, 4))
    mean, std = nnkit.mc_predict(fo, p, s, x, key=0, num_samples=16)
    assert [m.shape for m in mean] == [(5, 2), (5, 3)] and [d.shape for d in std] == [(5, 2),
                                                                                      (5, 3)]
    np.testing.assert_array_equal(std[0], 0.0)  # the deterministic head
    assert float(jnp.max(std[1])) > 0
    ys = jax.vmap(lambda k: fo.apply(p, s, x, key=k, train=True)[0][1])(
        jax.random.split(jax.random.key(0), 16))
    np.testing.assert_allclose(mean[1], ys.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std[1], ys.std(0), rtol=1e-4, atol=1e-6)
