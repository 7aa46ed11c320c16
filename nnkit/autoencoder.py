"""Autoencoder pieces: an encoder/decoder pair, the VAE's Gaussian latent and its loss.

* :func:`Autoencoder` -- ``x -> decoder(encoder(x))`` with params ``{"encoder", "decoder"}``.
* :func:`VAE` -- ``x -> (recon, mean, log_var)``: the encoder's features go through a Dense
  head to ``(mean, log_var)`` of a diagonal Gaussian ``q(z|x)``, ``z`` is drawn with the
  reparameterisation trick (:func:`reparameterize`) in training and ``z = mean`` in eval.
* :func:`gaussian_kl` and :func:`vae_loss` -- the negative ELBO (Kingma & Welling 2014).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from nnkit._checks import check_int
from nnkit.core import Layer, ShapeError, child_key, named, normalize_shape, serial
from nnkit.layers.dense import Dense

__all__ = ["Autoencoder", "VAE", "reparameterize", "gaussian_kl", "vae_loss"]

Array = jax.Array


def Autoencoder(encoder: Layer, decoder: Layer, *, name: str | None = None) -> Layer:
    """``y = decoder(encoder(x))``; params/state ``{"encoder": ..., "decoder": ...}``.

    Encode or decode alone with ``encoder.apply(params["encoder"], ...)``. The decoder's
    output shape should equal the input shape for a reconstruction loss (not enforced, so a
    denoising/cropping decoder is possible).
    """
    return serial(named(encoder, "encoder"), named(decoder, "decoder"), name=name)


def reparameterize(key: Array, mean: Array, log_var: Array) -> Array:
    """``z = mean + exp(log_var / 2) * eps``, ``eps ~ N(0, I)``: a sample of
    ``N(mean, diag(exp(log_var)))`` that is differentiable in ``mean`` and ``log_var``."""
    eps = jax.random.normal(key, jnp.shape(mean), jnp.result_type(mean))
    return mean + jnp.exp(0.5 * log_var) * eps


def gaussian_kl(mean: Array, log_var: Array) -> Array:
    """``KL(N(mean, diag(exp(log_var))) || N(0, I))`` per example, summed over the last axis.

    ``= 0.5 * sum(exp(log_var) + mean^2 - 1 - log_var)``; shape ``mean.shape[:-1]``.
    """
    return 0.5 * jnp.sum(jnp.exp(log_var) + jnp.square(mean) - 1.0 - log_var, axis=-1)


def VAE(encoder: Layer, decoder: Layer, latent_dim: int, *, name: str | None = None) -> Layer:
    """Variational autoencoder: ``x -> (recon, mean, log_var)``.

    ``h = encoder(x)`` (``(B, H)``), ``[mean, log_var] = h W + b`` (a Dense head of width
    ``2 * latent_dim``), ``z = reparameterize(key, mean, log_var)`` when ``train=True`` (needs
    ``key=``) else ``z = mean``, ``recon = decoder(z)``. Output shape
    ``(decoder_out, (latent_dim,), (latent_dim,))``. Params
    ``{"encoder", "latent": {"w": (H, 2L), "b": (2L,)}, "decoder"}``; the decoder is
    initialised on ``(latent_dim,)``.
    """
    latent_dim = check_int(latent_dim, f"{name or 'vae'}: latent_dim", error=ShapeError)
    head = Dense(2 * latent_dim, name="latent")
    children = (("encoder", encoder), ("latent", head), ("decoder", decoder))

    def init(key, input_shape):
        who = name or "vae"
        shape = normalize_shape(input_shape)
        params, state = {}, {}
        try:
            h_shape, params["encoder"], s_e = encoder.init(child_key(key, "encoder"), shape)
            if len(h_shape) != 1:
                raise ShapeError(f"encoder must output (H,) features, got {tuple(h_shape)}")
            _, params["latent"], _ = head.init(child_key(key, "latent"), h_shape)
            out, params["decoder"], s_d = decoder.init(child_key(key, "decoder"),
                                                       (latent_dim,))
        except ShapeError as e:
            raise ShapeError(f"{who}: {e}") from None
        for n, s in (("encoder", s_e), ("decoder", s_d)):
            if s:
                state[n] = s
        params = {k: v for k, v in params.items() if v}
        return (tuple(out), (latent_dim,), (latent_dim,)), params, state

    def apply(params, state, x, *, key=None, train=False):
        new_state = {}
        h, s = encoder.apply(params.get("encoder", {}), state.get("encoder", {}), x,
                             key=child_key(key, "encoder"), train=train)
        if s:
            new_state["encoder"] = s
        stats, _ = head.apply(params["latent"], {}, h)
        mean, log_var = jnp.split(stats, 2, axis=-1)
        if train:
            if key is None:
                raise ValueError(f"{name or 'vae'}: apply(..., train=True) needs key= to "
                                 "sample z; pass train=False to use z = mean")
            z = reparameterize(child_key(key, "z"), mean, log_var)
        else:
            z = mean
        recon, s = decoder.apply(params.get("decoder", {}), state.get("decoder", {}), z,
                                 key=child_key(key, "decoder"), train=train)
        if s:
            new_state["decoder"] = s
        return (recon, mean, log_var), new_state

    return Layer(init, apply, "vae", name, children, (("latent_dim", latent_dim),))


def vae_loss(
    x: Array,
    recon: Array,
    mean: Array,
    log_var: Array,
    *,
    beta: float = 1.0,
    likelihood: str = "bernoulli",
) -> tuple[Array, dict[str, Array]]:
    """Negative ELBO, averaged over the batch: ``mean_b(recon_b + beta * KL_b)``.

    ``recon_b`` sums over all non-batch axes: ``"bernoulli"`` -- ``BCE(recon_logits, x)``
    for ``x`` in ``[0, 1]`` (``recon`` are logits); ``"gaussian"`` -- ``0.5 ||x - recon||^2``
    (unit variance, constants dropped). Returns ``(loss, {"recon": ..., "kl": ...})`` with
    the batch means of both terms.
    """
    if x.shape != recon.shape:
        raise ShapeError(f"vae_loss: x shape {x.shape} != recon shape {recon.shape}")
    axes = tuple(range(1, x.ndim))
    if likelihood == "bernoulli":
        rec = jnp.sum(optax.sigmoid_binary_cross_entropy(recon, x), axis=axes)
    elif likelihood == "gaussian":
        rec = 0.5 * jnp.sum(jnp.square(x - recon), axis=axes)
    else:
        raise ValueError(f"unknown likelihood {likelihood!r}; known: 'bernoulli', 'gaussian'")
    kl = gaussian_kl(mean, log_var)
    parts: dict[str, Any] = {"recon": jnp.mean(rec), "kl": jnp.mean(kl)}
    return jnp.mean(rec + beta * kl), parts
