"""GAN losses against closed forms, and the jitted alternating step: D learns on a fixed G,
both nets change, one trace, reproducible keys, shape checks."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nnkit
from nnkit import gan
from nnkit.layers import Dense, Relu

LATENT, DATA = 3, 2


def _nets(counter=None):
    def count(x):
        if counter is not None:
            counter.append(1)  # runs at trace time only
        return x

    g = nnkit.serial(Dense(8), Relu(), Dense(DATA), nnkit.Lambda(count, kind="count"))
    d = nnkit.serial(Dense(8), Relu(), Dense(1))
    return g, d


def _real(n=32, seed=1):
    return jax.random.normal(jax.random.key(seed), (n, DATA)) * 0.3 + jnp.array([2.0, -1.0])


def _sig(z):
    return 1.0 / (1.0 + math.exp(-z))


# ----------------------------------------------------------------------------- losses


def test_losses_hand_values():
    lr, lf = jnp.array([0.0, 2.0]), jnp.array([-1.0, 0.5])
    expect_d = -np.mean([math.log(_sig(0.0)), math.log(_sig(2.0))]) - np.mean(
        [math.log(1 - _sig(-1.0)), math.log(1 - _sig(0.5))])
    np.testing.assert_allclose(gan.discriminator_loss(lr, lf), expect_d, rtol=1e-6)
    expect_ns = -np.mean([math.log(_sig(-1.0)), math.log(_sig(0.5))])
    np.testing.assert_allclose(gan.generator_loss(lf), expect_ns, rtol=1e-6)
    expect_mm = np.mean([math.log(1 - _sig(-1.0)), math.log(1 - _sig(0.5))])
    np.testing.assert_allclose(gan.generator_loss(lf, "minimax"), expect_mm, rtol=1e-6)
    # one-sided label smoothing: BCE(l, 0.9) = -(0.9 log s + 0.1 log(1 - s))
    smooth = gan.discriminator_loss(jnp.array([1.0]), jnp.array([-30.0]), real_label=0.9)
    np.testing.assert_allclose(
        smooth, -(0.9 * math.log(_sig(1.0)) + 0.1 * math.log(1 - _sig(1.0))), rtol=1e-5)
    with pytest.raises(ValueError, match="unknown GAN loss"):
        gan.generator_loss(lf, "wasserstein")


def test_non_saturating_vs_minimax_gradients():
    # d/dl [-log s(l)] = s(l) - 1 ; d/dl [log(1 - s(l))] = -s(l)
    ls = jnp.array([-8.0, 0.0, 3.0])
    g_ns = jax.grad(lambda l: gan.generator_loss(l) * 3)(ls)
    g_mm = jax.grad(lambda l: gan.generator_loss(l, "minimax") * 3)(ls)
    s = np.array([_sig(v) for v in [-8.0, 0.0, 3.0]])
    np.testing.assert_allclose(g_ns, s - 1, rtol=1e-5)
    np.testing.assert_allclose(g_mm, -s, rtol=1e-4, atol=1e-7)
    # where D confidently rejects fakes the minimax gradient vanishes, the other does not
    assert abs(float(g_mm[0])) < 1e-3 < abs(float(g_ns[0]))
    # stable from logits: no inf/NaN at extreme logits
    assert np.isfinite(gan.discriminator_loss(jnp.array([-200.0]), jnp.array([200.0])))


# ----------------------------------------------------------------------------- step


@functools.cache
def _fixed_generator_setup():
    """A frozen G and a learning D, with the jitted step shared by the tests (one compile)."""
    g, d = _nets()
    g_opt, d_opt = optax.set_to_zero(), optax.adam(5e-2)
    st0 = gan.init_gan(0, g, d, g_opt, d_opt, latent_dim=LATENT, data_shape=(DATA,))
    return g, d, st0, gan.make_gan_step(g, d, g_opt, d_opt, latent_dim=LATENT, donate=False)


def test_discriminator_loss_decreases_on_fixed_generator():
    _, _, st0, step = _fixed_generator_setup()
    st, losses = st0, []
    real = _real()
    for _ in range(15):
        st, m = step(st, real)
        losses.append(m["d_loss"])
    losses = np.asarray(losses)
    assert losses[-1] < 0.5 * losses[0], losses
    chex.assert_trees_all_equal(st.g_params, st0.g_params)  # G really was fixed
    assert int(st.step) == 15


def test_both_nets_change_and_step_traced_once():
    traces = []
    g, d = _nets(traces)
    g_opt, d_opt = optax.adam(1e-3), optax.sgd(1e-2)
    st0 = gan.init_gan(jax.random.key(0), g, d, g_opt, d_opt, latent_dim=LATENT,
                       data_shape=(DATA,))
    n_init = len(traces)
    step = gan.make_gan_step(g, d, g_opt, d_opt, latent_dim=LATENT)
    st0_copy = jax.tree.map(jnp.copy, st0)
    st, m = step(st0, _real())
    n_first = len(traces) - n_init
    assert n_first > 0
    # donated by default: the input state's buffers now hold the new state
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(st0))
    st0 = st0_copy
    for i in range(3):
        st, m = step(st, _real(seed=2 + i))
    assert len(traces) - n_init == n_first  # no retrace on later steps
    for a, b in zip(jax.tree.leaves(st.g_params), jax.tree.leaves(st0.g_params), strict=True):
        assert not np.allclose(a, b)
    for a, b in zip(jax.tree.leaves(st.d_params), jax.tree.leaves(st0.d_params), strict=True):
        assert not np.allclose(a, b)
    assert set(m) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(isinstance(v, jax.Array) and v.shape == () for v in m.values())
    assert 0.0 < float(m["d_real"]) < 1.0 and 0.0 < float(m["d_fake"]) < 1.0


def test_step_is_pure_and_noise_changes_per_step():
    g, d = _nets()
    opt = optax.sgd(1e-2)
    st0 = gan.init_gan(jax.random.PRNGKey(3), g, d, opt, opt, latent_dim=LATENT,
                       data_shape=(DATA,))
    step = gan.make_gan_step(g, d, opt, opt, latent_dim=LATENT, donate=False)
    a, ma = step(st0, _real())
    b, mb = step(st0, _real())
    chex.assert_trees_all_equal((a, ma), (b, mb))
    # the same params at step 1 draw different noise than at step 0
    c, mc = step(st0._replace(step=jnp.ones((), jnp.int32)), _real())
    assert float(mc["g_loss"]) != float(ma["g_loss"])


def test_g_step_uses_updated_discriminator():
    # with a frozen G and D learning, the G loss reported after D's update must equal the
    # generator loss of the *new* D on fresh fakes: recompute it from the returned state.
    g, d, st0, step = _fixed_generator_setup()
    st, m = step(st0, _real())
    k = jax.random.fold_in(jax.random.wrap_key_data(st0.key), 0)
    kz_g = jax.random.split(k, 7)[4]
    z = jax.random.normal(kz_g, (32, LATENT))
    fake, _ = g.apply(st0.g_params, st0.g_state, z)
    new_logits, _ = d.apply(st.d_params, st.d_state, fake)
    old_logits, _ = d.apply(st0.d_params, st0.d_state, fake)
    np.testing.assert_allclose(m["g_loss"], gan.generator_loss(new_logits[:, 0]), rtol=1e-5)
    assert not np.isclose(float(m["g_loss"]), float(gan.generator_loss(old_logits[:, 0])))


def test_init_gan_shape_errors_and_generate():
    g, d = _nets()
    opt = optax.sgd(1e-2)
    with pytest.raises(nnkit.ShapeError, match="generator.*data_shape"):
        gan.init_gan(0, g, d, opt, opt, latent_dim=LATENT, data_shape=(5,))
    with pytest.raises(nnkit.ShapeError, match="discriminator.*one logit"):
        gan.init_gan(0, g, Dense(2), opt, opt, latent_dim=LATENT,
                     data_shape=(DATA,))
    with pytest.raises(nnkit.ShapeError, match="latent_dim"):
        gan.init_gan(0, g, d, opt, opt, latent_dim=0, data_shape=(DATA,))
    with pytest.raises(ValueError, match="unknown GAN loss"):
        gan.make_gan_step(g, d, opt, opt, latent_dim=LATENT, loss="hinge")
    st = gan.init_gan(0, g, d, opt, opt, latent_dim=LATENT, data_shape=(DATA,))
    x = gan.generate(g, st, 1, 6, latent_dim=LATENT)
    chex.assert_shape(x, (6, DATA))
    chex.assert_trees_all_equal(x, gan.generate(g, st, 1, 6, latent_dim=LATENT))
    # a few rows of z at a time (6 = 4 + 2, and 6 = 3 + 3): the same samples
    for b in (4, 3, 9):
        np.testing.assert_allclose(gan.generate(g, st, 1, 6, latent_dim=LATENT, batch_size=b),
                                   x, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="batch_size"):
        gan.generate(g, st, 1, 6, latent_dim=LATENT, batch_size=0)
