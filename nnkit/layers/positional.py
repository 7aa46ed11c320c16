"""Positional information for attention models: fixed sinusoids or a learned table.

Both layers add a ``(T, D)`` position code to ``x`` of shape ``(B, T, D)``. They also accept
the pair ``(x, padding_mask)`` (``input_shape ((T, D), (T,))``) and return
``(x + pe, padding_mask)``, so a masked pipeline ``serial(pos, block, block)`` stacks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from nnkit import initializers as inits
from nnkit._checks import check_int
from nnkit.core import Layer, ShapeError
from nnkit.initializers import InitSpec
from nnkit.layers._masked import multi_input_layer, split_mask_input, split_mask_shape

__all__ = ["sinusoidal_encoding", "SinusoidalPositionalEncoding", "LearnedPositionalEmbedding"]

Array = jax.Array


def sinusoidal_encoding(
    length: int, dim: int, *, max_wavelength: float = 10000.0,
    dtype: DTypeLike = jnp.float32
) -> Array:
    """The ``(length, dim)`` table of Vaswani et al. (2017).

    ``pe[t, 2i] = sin(t / w^(2i/dim))``, ``pe[t, 2i+1] = cos(t / w^(2i/dim))`` with
    ``w = max_wavelength``; an odd ``dim`` drops the last cosine column.
    """
    if length <= 0 or dim <= 0:
        raise ShapeError(f"sinusoidal_encoding: length and dim must be positive, got "
                         f"{length}, {dim}")
    half = (dim + 1) // 2
    t = jnp.arange(length, dtype=jnp.float32)[:, None]
    inv_freq = max_wavelength ** (-2.0 * jnp.arange(half, dtype=jnp.float32) / dim)
    angle = t * inv_freq  # (length, half)
    pe = jnp.stack([jnp.sin(angle), jnp.cos(angle)], axis=-1).reshape(length, 2 * half)
    return pe[:, :dim].astype(dtype)


def _check_x(who: str, x: Array) -> None:
    if x.ndim != 3:
        raise ShapeError(f"{who}: expected x of shape (B, T, D), got {x.shape}")


def SinusoidalPositionalEncoding(
    *, max_wavelength: float = 10000.0, name: str | None = None
) -> Layer:
    """``y = x + sinusoidal_encoding(T, D)``: ``(B, T, D) -> (B, T, D)``, no params.

    Any ``T`` works at apply time (the table is built from the static shape).
    """
    who = name or "sinusoidal_positional_encoding"

    def init(key, input_shape):
        x_shape, _ = split_mask_shape(input_shape)
        if len(x_shape) != 2:
            raise ShapeError(f"expected input shape (T, D) (data (B, T, D)), got {x_shape}")
        return input_shape, {}, {}

    def apply(params, state, inputs, *, key=None, train=False):
        x, pad = split_mask_input(inputs)
        _check_x(who, x)
        y = x + sinusoidal_encoding(x.shape[1], x.shape[2], max_wavelength=max_wavelength,
                                    dtype=x.dtype)
        return (y if pad is None else (y, pad)), {}

    return multi_input_layer("sinusoidal_positional_encoding", init, apply, name=name,
                             meta={"max_wavelength": max_wavelength})


def LearnedPositionalEmbedding(
    max_len: int, *, embedding_init: InitSpec | None = None, name: str | None = None
) -> Layer:
    """``y = x + table[:T]``: ``(B, T, D) -> (B, T, D)`` for any ``T <= max_len``.

    Params: ``{"table": (max_len, D)}``, default init ``N(0, 0.02^2)``.
    """
    who = name or "learned_positional_embedding"
    max_len = check_int(max_len, f"{who}: max_len", error=ShapeError)

    def init(key, input_shape):
        x_shape, _ = split_mask_shape(input_shape)
        if len(x_shape) != 2:
            raise ShapeError(f"expected input shape (T, D) (data (B, T, D)), got {x_shape}")
        t, d = x_shape
        if t > max_len:
            raise ShapeError(f"sequence length {t} > max_len {max_len}")
        table = inits.get(embedding_init or inits.normal(0.02))(key, (max_len, d))
        return input_shape, {"table": table}, {}

    def apply(params, state, inputs, *, key=None, train=False):
        x, pad = split_mask_input(inputs)
        _check_x(who, x)
        t = x.shape[1]
        if t > max_len:
            raise ShapeError(f"{who}: sequence length {t} > max_len {max_len}")
        d = params["table"].shape[1]
        if x.shape[2] != d:
            raise ShapeError(f"{who}: x of shape {tuple(x.shape)} has {x.shape[2]} features, "
                             f"the table {tuple(params['table'].shape)} has {d}")
        y = x + params["table"][:t].astype(x.dtype)
        return (y if pad is None else (y, pad)), {}

    return multi_input_layer("learned_positional_embedding", init, apply, name=name,
                             meta={"max_len": max_len})
