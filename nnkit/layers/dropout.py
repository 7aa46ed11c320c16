"""Inverted dropout: :func:`Dropout`.

``rate`` is the probability of DROPPING a unit (PyTorch/Keras convention; ``jax.example_libraries
.stax.Dropout`` takes the KEEP probability instead).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nnkit.core import Layer, layer

__all__ = ["Dropout"]


def Dropout(rate: float = 0.5, *, name: str | None = None) -> Layer:
    """Inverted dropout with drop probability ``rate`` in ``[0, 1)``.

    Train: ``y = m * x / (1 - rate)``, ``m ~ Bernoulli(1 - rate)`` element-wise from ``key``,
    so ``E[y] = x``. Eval (``train=False``) and ``rate == 0``: ``y = x``. Shapes: any; output
    shape = input shape. No params, no state. ``apply(..., train=True)`` with ``rate > 0``
    needs ``key=``; the same key gives the same mask.
    """
    who = name or "dropout"
    try:
        rate = float(rate)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: rate must be a float in [0, 1), got {rate!r}") from None
    if not 0.0 <= rate < 1.0:
        raise ValueError(
            f"{who}: rate (the DROP probability) must be in [0, 1), got {rate}"
        )
    keep = 1.0 - rate

    def init(key, input_shape):
        return tuple(input_shape), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        if not train or rate == 0.0:
            return x, {}
        if key is None:
            raise ValueError(
                f"{who}: apply(..., train=True) needs key= (a jax.random.key) to draw the "
                "dropout mask; pass train=False for evaluation"
            )
        mask = jax.random.bernoulli(key, keep, x.shape)
        return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros((), x.dtype)), {}

    return layer("dropout", init, apply, name=name, meta={"rate": rate})
