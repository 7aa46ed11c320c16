"""Autoencoder pieces: KL closed form vs numerical integration, reparameterisation moments and
gradients, VAE wiring/modes, negative-ELBO hand values, a tiny AE that learns."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nnkit
from nnkit import autoencoder as AE
from nnkit.layers import Dense, Relu

KEY = jax.random.key(0)


def test_gaussian_kl_against_numerical_integration():
    # KL(N(m, s^2) || N(0, 1)) = integral q(z) (log q(z) - log p(z)) dz, by the trapezoid rule
    z = np.linspace(-20, 20, 400001)
    for m, s in [(0.0, 1.0), (1.0, 2.0), (-0.5, 0.3)]:
        q = np.exp(-0.5 * ((z - m) / s) ** 2) / (s * np.sqrt(2 * np.pi))
        logq = -0.5 * ((z - m) / s) ** 2 - np.log(s * np.sqrt(2 * np.pi))
        logp = -0.5 * z**2 - 0.5 * np.log(2 * np.pi)
        ref = np.trapezoid(q * (logq - logp), z)
        got = AE.gaussian_kl(jnp.array([m]), jnp.array([2 * math.log(s)]))
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-7)
    # sums over the last axis only: shape (B,)
    kl = AE.gaussian_kl(jnp.ones((3, 4)), jnp.zeros((3, 4)))
    np.testing.assert_allclose(kl, [2.0, 2.0, 2.0], rtol=1e-6)  # 0.5 * 4 * 1^2


def test_reparameterize_moments_and_gradients():
    mean, log_var = jnp.array([1.0, -2.0]), jnp.log(jnp.array([0.25, 4.0]))
    z = jax.vmap(lambda k: AE.reparameterize(k, mean, log_var))(
        jax.random.split(KEY, 20000))
    np.testing.assert_allclose(z.mean(0), mean, atol=0.05)
    np.testing.assert_allclose(z.std(0), [0.5, 2.0], rtol=0.03)
    # dz/dmean = 1, dz/dlog_var = 0.5 exp(log_var / 2) eps with eps = (z - mean) / std
    k = jax.random.key(5)
    z1 = AE.reparameterize(k, mean, log_var)
    eps = (z1 - mean) / jnp.exp(0.5 * log_var)
    gm, gl = jax.grad(lambda m, lv: AE.reparameterize(k, m, lv).sum(), argnums=(0, 1))(
        mean, log_var)
    np.testing.assert_allclose(gm, [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(gl, 0.5 * jnp.exp(0.5 * log_var) * eps, rtol=1e-5)


def _vae():
    return AE.VAE(nnkit.serial(Dense(8), Relu()), Dense(5), 3)


def test_vae_wiring_modes_and_shapes():
    vae = _vae()
    out, p, s = vae.init(KEY, (5,))
    assert out == ((5,), (3,), (3,))
    assert set(p) == {"encoder", "latent", "decoder"}
    chex.assert_shape([p["latent"]["w"], p["decoder"]["w"]], [(8, 6), (3, 5)])
    x = jax.random.uniform(jax.random.key(1), (4, 5))
    (r, m, lv), _ = vae.apply(p, s, x)
    # eval: z = mean, so recon = decoder(mean); mean/log_var are the two halves of the head
    h = jax.nn.relu(x @ p["encoder"]["dense_0"]["w"] + p["encoder"]["dense_0"]["b"])
    stats = h @ p["latent"]["w"] + p["latent"]["b"]
    np.testing.assert_allclose(m, stats[:, :3], rtol=1e-5)
    np.testing.assert_allclose(lv, stats[:, 3:], rtol=1e-5)
    np.testing.assert_allclose(r, m @ p["decoder"]["w"] + p["decoder"]["b"], rtol=1e-5)
    (rt, mt, _), _ = vae.apply(p, s, x, key=jax.random.key(2), train=True)
    np.testing.assert_allclose(mt, m, rtol=1e-6)
    assert not np.allclose(rt, r)  # sampled z
    with pytest.raises(ValueError, match="key"):
        vae.apply(p, s, x, train=True)
    with pytest.raises(nnkit.ShapeError, match="vae.*encoder must output"):
        AE.VAE(nnkit.Lambda(lambda x: x), Dense(5), 3).init(KEY, (2, 5))


def test_vae_loss_hand_values():
    x = jnp.array([[0.0, 1.0], [1.0, 1.0]])
    recon = jnp.array([[0.0, 0.0], [2.0, -1.0]])
    mean, lv = jnp.zeros((2, 1)), jnp.zeros((2, 1))
    loss, parts = AE.vae_loss(x, recon, mean, lv, likelihood="gaussian")
    # 0.5 * (0 + 1) and 0.5 * (1 + 4); KL = 0
    np.testing.assert_allclose(loss, (0.5 + 2.5) / 2, rtol=1e-6)
    np.testing.assert_allclose(parts["kl"], 0.0, atol=1e-7)
    # Bernoulli: BCE(logit 0, 0) = BCE(logit 0, 1) = log 2; plus beta * KL with KL = 0.5 m^2
    loss, parts = AE.vae_loss(jnp.array([[0.0, 1.0]]), jnp.zeros((1, 2)), jnp.array([[2.0]]),
                              jnp.zeros((1, 1)), beta=0.5)
    np.testing.assert_allclose(parts["recon"], 2 * math.log(2), rtol=1e-6)
    np.testing.assert_allclose(loss, 2 * math.log(2) + 0.5 * 2.0, rtol=1e-6)
    with pytest.raises(nnkit.ShapeError, match="recon shape"):
        AE.vae_loss(x, recon[:, :1], mean, lv)


def test_autoencoder_tree_and_learning():
    ae = AE.Autoencoder(nnkit.serial(Dense(2), Relu()), Dense(4))
    out, p, s = ae.init(KEY, (4,))
    assert out == (4,) and set(p) == {"encoder", "decoder"}
    # data on a 1-D subspace: a 2-unit bottleneck can reconstruct it
    t = jax.random.uniform(jax.random.key(3), (64, 1))
    x = t * jnp.array([[1.0, -1.0, 0.5, 2.0]])
    opt = optax.adam(3e-2)

    def loss(p):
        return jnp.mean(jnp.square(ae.apply(p, s, x)[0] - x))

    @jax.jit
    def train(p):
        def body(carry, _):
            p, o = carry
            g = jax.grad(loss)(p)
            u, o = opt.update(g, o, p)
            return (optax.apply_updates(p, u), o), None

        (p, _), _ = jax.lax.scan(body, (p, opt.init(p)), None, length=300)
        return p

    first = float(loss(p))
    last = float(loss(train(p)))
    assert last < 0.05 * first, (first, last)
    y, _ = ae.apply(p, s, x)
    h, _ = ae.children[0][1].apply(p["encoder"], {}, x)
    np.testing.assert_allclose(y, ae.children[1][1].apply(p["decoder"], {}, h)[0], rtol=1e-6)
