"""Monte-Carlo dropout (Gal & Ghahramani 2016): predictive mean and spread from dropout masks.

``mc_predict`` runs the model ``num_samples`` times in training mode with independent keys
(vectorised with ``jax.vmap`` over the keys, one trace) and returns the mean and standard
deviation of the outputs over the samples.

Limitation: the contract has one ``train`` flag for the whole model, so *every* layer runs in
training mode. Dropout-like layers then sample masks (what we want), but ``BatchNorm``
normalises with the statistics of the batch given to ``mc_predict`` instead of its running
averages: predictions then depend on the other examples in ``x`` and differ from eval
predictions even with dropout off. :func:`mc_predict` warns when the model contains a batch
norm layer; for such models build a copy with the normalisation folded into a Dense/affine
layer, or accept the batch-statistics behaviour (with large, representative batches).
The returned state is discarded, so running statistics are never updated.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp

from nnkit._checks import check_int
from nnkit._memo import memoised
from nnkit.core import Layer, Params, State, as_prng_key, batchnorm_paths

__all__ = ["mc_predict"]

def _as_key(key) -> jax.Array:
    """An int seed, a ``jax.random.key`` or a legacy ``PRNGKey`` as a usable key."""
    if key is None:
        raise ValueError("a key is required (an int seed or a jax.random.key)")
    return as_prng_key(key)


def mc_predict(
    model: Layer,
    params: Params,
    state: State,
    x: jax.Array,
    *,
    key: int | jax.Array,
    num_samples: int = 20,
    transform: Callable[[jax.Array], jax.Array] | None = None,
    batch_size: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Monte-Carlo dropout prediction: ``(mean, std)`` of ``num_samples`` stochastic passes.

    Sample ``s`` is ``t(apply(params, state, x, key=k_s, train=True)[0])`` with
    ``k_1..k_S = split(key, S)`` and ``t = transform`` (identity by default; pass
    ``jax.nn.softmax`` to average class *probabilities* instead of logits). Returns
    ``mean = (1/S) sum_s y_s`` and the population ``std = sqrt((1/S) sum_s (y_s - mean)^2)``,
    both of the output's shape ``(batch, ...)`` (for a model with several outputs, trees of
    them, leaf by leaf). A model without stochastic layers gives
    ``std == 0`` exactly and ``mean`` equal to the train-mode output.

    All passes run at once (``jax.vmap`` over the keys), which holds ``num_samples`` times
    one pass's activations. ``batch_size=b`` runs ``b`` passes at a time instead (``lax.map``
    over groups of keys): the same samples, at most ``b`` passes' activations in memory.

    Compiled once per ``(model, num_samples, transform, batch_size)``, as ``jax.jit`` would
    be: the
    ``transform`` is taken to be pure (a new lambda each call compiles again; one whose
    behaviour changes must be a new object). Also callable inside ``jit`` (``num_samples``
    and ``transform`` static). See the module
    docstring for the BatchNorm limitation (a ``UserWarning`` is raised for such models).
    """
    num_samples = check_int(num_samples, "mc_predict: num_samples")
    if batch_size is not None:
        batch_size = min(check_int(batch_size, "mc_predict: batch_size"), num_samples)
    norms = batchnorm_paths(model)
    if norms:
        warnings.warn(
            f"mc_predict: {', '.join(norms)} will normalise with the statistics of this batch "
            "(train=True applies to every layer), not with its running averages",
            UserWarning,
            stacklevel=2,
        )
    return _mc_program(model, num_samples, transform, batch_size)(params, state, x,
                                                                  _as_key(key))


@memoised(16)
def _mc_program(model: Layer, num_samples: int,
                transform: Callable[[jax.Array], jax.Array] | None,
                batch_size: int | None) -> Callable:
    """:func:`mc_predict`'s passes and statistics as one jitted program per configuration."""
    t = transform if transform is not None else (lambda y: y)

    @jax.jit
    def run(params, state, x, key):
        def one(k):
            y, _ = model.apply(params, state, x, key=k, train=True)
            return t(y)

        keys = jax.random.split(key, num_samples)
        if batch_size is None or batch_size >= num_samples:
            ys = jax.vmap(one)(keys)  # (S, batch, ...)
        else:
            ys = jax.lax.map(one, keys, batch_size=batch_size)
        return jax.tree_util.tree_map(_mean, ys), jax.tree_util.tree_map(_std, ys)

    return run


# Shift by the first sample: identical samples give exactly std 0 and mean == sample.
# Per output leaf (a tuple-output model: a tree of them).
def _mean(y: jax.Array) -> jax.Array:
    return y[0] + jnp.mean(y - y[0], axis=0)


def _std(y: jax.Array) -> jax.Array:
    d = y - y[0]
    return jnp.sqrt(jnp.mean(jnp.square(d - jnp.mean(d, axis=0)), axis=0))
