"""Generative adversarial networks: one jitted alternating (D then G) update.

A generator ``G: z (B, latent_dim) -> x (B, *data_shape)`` and a discriminator
``D: x -> logit (B, 1)`` (or ``(B,)``) are ordinary :class:`nnkit.Layer` values; each has its
own optax optimizer. With ``l = D(x)`` a logit and ``s(l) = sigmoid(l) = P(real)``:

* discriminator (standard binary cross-entropy):
  ``L_D = mean(BCE(D(x_real), 1)) + mean(BCE(D(G(z)), 0))``
  ``= -mean(log s(l_real)) - mean(log(1 - s(l_fake)))``;
* generator, ``loss="non_saturating"`` (Goodfellow et al. 2014, the one used in practice):
  ``L_G = mean(BCE(D(G(z)), 1)) = -mean(log s(l_fake))``, strong gradients while D wins;
* generator, ``loss="minimax"`` (the original game): ``L_G = mean(log(1 - s(l_fake)))``,
  which saturates (vanishing gradient) when D confidently rejects fakes.

All BCEs are computed from logits (``optax.sigmoid_binary_cross_entropy``), never from
probabilities, so they are stable for any logit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnkit._checks import check_int, check_seed
from nnkit._memo import memoised
from nnkit.core import Layer, ShapeError, normalize_shape

__all__ = ["GANState", "init_gan", "make_gan_step", "discriminator_loss", "generator_loss",
           "generate"]

Array = jax.Array
LOSSES = ("non_saturating", "minimax")


class GANState(NamedTuple):
    """Everything one GAN update changes, as one pytree.

    Attributes:
      step: int32 scalar, number of (D, G) update pairs taken.
      g_params, g_state: generator params / state (nested dicts).
      d_params, d_state: discriminator params / state.
      g_opt_state, d_opt_state: the two optimizers' states.
      key: raw uint32 key data; step ``t`` draws its noise from ``fold_in(key, t)``.
    """

    step: Array
    g_params: Any
    g_state: Any
    d_params: Any
    d_state: Any
    g_opt_state: Any
    d_opt_state: Any
    key: Array


def _key_data(key: int | Array) -> Array:
    """uint32 key data from an int seed, a ``jax.random.key`` or a legacy ``PRNGKey``."""
    if isinstance(key, int | np.integer):
        key = jax.random.key(check_seed(key))
    key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    if key.dtype != jnp.uint32:
        raise TypeError(f"expected an int seed, jax.random.key or PRNGKey, got dtype "
                        f"{key.dtype} shape {key.shape}")
    return key


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"unknown GAN loss {loss!r}; known: {LOSSES}")


def discriminator_loss(real_logits: Array, fake_logits: Array, *,
                       real_label: float = 1.0) -> Array:
    """``mean(BCE(real_logits, real_label)) + mean(BCE(fake_logits, 0))``; scalar.

    ``real_label < 1`` is one-sided label smoothing (Salimans et al. 2016).
    """
    real = optax.sigmoid_binary_cross_entropy(real_logits,
                                              jnp.full_like(real_logits, real_label))
    fake = optax.sigmoid_binary_cross_entropy(fake_logits, jnp.zeros_like(fake_logits))
    return jnp.mean(real) + jnp.mean(fake)


def generator_loss(fake_logits: Array, loss: str = "non_saturating") -> Array:
    """``-mean(log s(l))`` (``"non_saturating"``) or ``mean(log(1 - s(l)))`` (``"minimax"``)."""
    _check_loss(loss)
    if loss == "non_saturating":
        return jnp.mean(optax.sigmoid_binary_cross_entropy(fake_logits,
                                                           jnp.ones_like(fake_logits)))
    # log(1 - s(l)) = -BCE(l, 0)
    return -jnp.mean(optax.sigmoid_binary_cross_entropy(fake_logits,
                                                        jnp.zeros_like(fake_logits)))


def init_gan(
    key: int | Array,
    generator: Layer,
    discriminator: Layer,
    g_opt: optax.GradientTransformation,
    d_opt: optax.GradientTransformation,
    *,
    latent_dim: int,
    data_shape: Any,
) -> GANState:
    """Initialises both networks and optimizers; checks that the shapes fit together.

    ``G`` is initialised on ``(latent_dim,)`` and must output ``data_shape``; ``D`` on
    ``data_shape`` and must output ``(1,)`` or ``()`` (one logit per example).
    """
    latent_dim = check_int(latent_dim, "init_gan: latent_dim", error=ShapeError)
    data_shape = normalize_shape(data_shape)
    k_g, k_d, k_train = jax.random.split(jax.random.wrap_key_data(_key_data(key)), 3)
    g_out, g_params, g_state = generator.init(k_g, (latent_dim,))
    if tuple(g_out) != data_shape:
        raise ShapeError(f"init_gan: generator {generator.name or generator.kind} maps "
                         f"({latent_dim},) to {tuple(g_out)}, but data_shape is {data_shape}")
    d_out, d_params, d_state = discriminator.init(k_d, data_shape)
    if tuple(d_out) not in ((1,), ()):
        raise ShapeError(f"init_gan: discriminator {discriminator.name or discriminator.kind} "
                         f"must output one logit per example, (1,) or (), got {tuple(d_out)}")
    return GANState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_params,
        g_state=g_state,
        d_params=d_params,
        d_state=d_state,
        g_opt_state=g_opt.init(g_params),
        d_opt_state=d_opt.init(d_params),
        key=jax.random.key_data(k_train),
    )


def make_gan_step(
    generator: Layer,
    discriminator: Layer,
    g_opt: optax.GradientTransformation,
    d_opt: optax.GradientTransformation,
    *,
    latent_dim: int,
    loss: str = "non_saturating",
    real_label: float = 1.0,
    jit: bool = True,
    donate: bool = True,
) -> Callable[[GANState, Array], tuple[GANState, dict[str, Array]]]:
    """One GAN update ``(gan_state, real_batch) -> (gan_state, metrics)``, jitted once.

    In one compiled function: draw ``z ~ N(0, I)`` of shape ``(B, latent_dim)``; take one
    ``d_opt`` step on :func:`discriminator_loss` with the fakes held fixed
    (``stop_gradient``); draw fresh ``z`` and take one ``g_opt`` step on
    :func:`generator_loss` through the *updated* discriminator (D's params are constants
    there). Both networks run with ``train=True`` and keys derived from
    ``fold_in(state.key, state.step)``; D's state (e.g. BatchNorm statistics) is updated by
    its own step only, G's by its own step only.

    Metrics (device scalars, no host sync): ``d_loss``, ``g_loss``, ``d_real`` and
    ``d_fake`` (mean ``P(real)`` that D gives the real and the fake batch before its update).

    With ``donate=True`` (the default, as in :func:`nnkit.train.make_train_step`) the jitted
    step reuses the input state's buffers for the new state, so both nets' params and
    optimizer states are not held twice: the state passed in is invalid afterwards (keep
    ``donate=False`` to call the step again on the same state). ``jit=False`` returns the
    plain function, to be jitted (or scanned) by the caller.
    """
    _check_loss(loss)

    def logits(d_params, d_state, x, key):
        lg, d_state = discriminator.apply(d_params, d_state, x, key=key, train=True)
        return lg.reshape(lg.shape[0]), d_state

    def step(gs: GANState, real: Array):
        k = jax.random.fold_in(jax.random.wrap_key_data(gs.key), gs.step)
        kz_d, kg_d, kd_real, kd_fake, kz_g, kg_g, kd_g = jax.random.split(k, 7)
        b = real.shape[0]

        # ---- discriminator step: fakes are constants
        z = jax.random.normal(kz_d, (b, latent_dim), jnp.float32)
        fake, _ = generator.apply(gs.g_params, gs.g_state, z, key=kg_d, train=True)
        fake = jax.lax.stop_gradient(fake)

        def d_loss_fn(d_params):
            l_real, d_state = logits(d_params, gs.d_state, real, kd_real)
            l_fake, d_state = logits(d_params, d_state, fake, kd_fake)
            lo = discriminator_loss(l_real, l_fake, real_label=real_label)
            return lo, (d_state, jnp.mean(jax.nn.sigmoid(l_real)),
                        jnp.mean(jax.nn.sigmoid(l_fake)))

        (d_loss, (d_state, d_real, d_fake)), d_grads = jax.value_and_grad(
            d_loss_fn, has_aux=True)(gs.d_params)
        d_updates, d_opt_state = d_opt.update(d_grads, gs.d_opt_state, gs.d_params)
        d_params = optax.apply_updates(gs.d_params, d_updates)

        # ---- generator step through the updated discriminator
        z = jax.random.normal(kz_g, (b, latent_dim), jnp.float32)

        def g_loss_fn(g_params):
            x, g_state = generator.apply(g_params, gs.g_state, z, key=kg_g, train=True)
            l_fake, _ = logits(d_params, d_state, x, kd_g)
            return generator_loss(l_fake, loss), g_state

        (g_loss, g_state), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(gs.g_params)
        g_updates, g_opt_state = g_opt.update(g_grads, gs.g_opt_state, gs.g_params)
        g_params = optax.apply_updates(gs.g_params, g_updates)

        new = GANState(gs.step + 1, g_params, g_state, d_params, d_state, g_opt_state,
                       d_opt_state, gs.key)
        metrics = {"d_loss": d_loss, "g_loss": g_loss, "d_real": d_real, "d_fake": d_fake}
        return new, metrics

    if not jit:
        return step
    return jax.jit(step, donate_argnums=(0,) if donate else ())


def generate(generator: Layer, gan_state: GANState, key: int | Array, n: int, *,
             latent_dim: int, batch_size: int | None = None) -> Array:
    """``n`` samples ``G(z)``, ``z ~ N(0, I)`` of shape ``(n, latent_dim)``, in eval mode:
    ``(n, *data_shape)``.

    All ``n`` at once by default; ``batch_size=b`` runs the generator on ``b`` rows of ``z``
    at a time (``lax.map``), holding one group's activations: the same samples."""
    n = check_int(n, "generate: n")
    if batch_size is not None:
        batch_size = min(check_int(batch_size, "generate: batch_size"), n)
    k = jax.random.wrap_key_data(_key_data(key))
    return _generate_program(generator, n, latent_dim, batch_size)(
        gan_state.g_params, gan_state.g_state, k)


@memoised(16)
def _generate_program(generator: Layer, n: int, latent_dim: int,
                      batch_size: int | None) -> Callable:
    """:func:`generate` as one jitted program per generator, sample shape and group size."""

    @jax.jit
    def run(g_params, g_state, k):
        z = jax.random.normal(k, (n, latent_dim), jnp.float32)
        if batch_size is None or batch_size >= n:
            return generator.apply(g_params, g_state, z)[0]
        groups, rest = divmod(n, batch_size)
        head = jax.lax.map(lambda zb: generator.apply(g_params, g_state, zb)[0],
                           z[:groups * batch_size].reshape(groups, batch_size, latent_dim))
        out = head.reshape(groups * batch_size, *head.shape[2:])
        if rest:
            tail = generator.apply(g_params, g_state, z[groups * batch_size:])[0]
            out = jnp.concatenate([out, tail])
        return out

    return run
