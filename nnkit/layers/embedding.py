"""Embedding lookup: :func:`Embedding`."""

from __future__ import annotations

import jax.numpy as jnp

from nnkit import initializers as inits
from nnkit._checks import check_int
from nnkit.core import Layer, layer
from nnkit.initializers import InitSpec

__all__ = ["Embedding"]


def Embedding(
    vocab_size: int,
    features: int,
    *,
    embedding_init: InitSpec | None = None,
    name: str | None = None,
) -> Layer:
    """``y[..., :] = table[ids[...], :]``: integer ids of any shape -> ``(*ids.shape, features)``.

    Params: ``{"table": (vocab_size, features)}``, default init ``N(0, 1)`` (as PyTorch).
    Equivalent to ``one_hot(ids) @ table``, so the gradient wrt ``table`` scatter-adds the
    upstream gradient into the looked-up rows (repeated ids accumulate). Ids outside
    ``[0, vocab_size)``, negative ones included, give NaN rows rather than a silently clamped
    or wrapped-around row (and no gradient reaches the table from them).
    """
    who = name or "embedding"
    vocab_size = check_int(vocab_size, f"{who}: vocab_size")
    features = check_int(features, f"{who}: features")

    def init(key, input_shape):
        table = inits.get(embedding_init or inits.normal(1.0))(key, (vocab_size, features))
        return (*input_shape, features), {"table": table}, {}

    def apply(params, state, x, *, key=None, train=False):
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise TypeError(f"{who}: expected integer token ids, got dtype {x.dtype}")
        # jnp.take wraps negative ids (-1 -> the last row); send them out of range instead
        x = jnp.where(x < 0, vocab_size, x)
        return jnp.take(params["table"], x, axis=0, mode="fill", fill_value=jnp.nan), {}

    return layer("embedding", init, apply, name=name, meta={"vocab_size": vocab_size,
                                                             "features": features})
