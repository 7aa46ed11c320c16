"""Pooling layers over channels-last inputs: max / average (1-D, 2-D) and global pooling.

``MaxPool``: ``y[n, o, c] = max_{k < window} x_pad[n, o * stride + k, c]`` (padding is
``-inf``, so never selected). ``AvgPool``: the mean of the same window. With padding
(``"SAME"`` or explicit), padded cells are **not counted** by default
(``count_include_pad=False``: divide by the number of real input cells in the window, as
TensorFlow's ``SAME``); ``count_include_pad=True`` divides by the full window size (zeros
padded in, PyTorch's default).

Speed: the common non-overlapping case (``stride == window``, no padding) is a reshape to
``(N, o_1, window_1, o_2, window_2, C)`` and a max/mean over the window axes (trailing rows
that do not fill a window are dropped, as VALID does); this was measured faster than
:func:`jax.lax.reduce_window` on CPU. Everything else uses ``reduce_window``.
Gradient of max pooling at ties: the fast path splits the gradient evenly between tied
maxima (``jnp.max``'s rule), ``reduce_window`` gives it to one of them. The fast path and
``GlobalMaxPool`` state that rule themselves (:func:`_window_max`) to count the ties as
``int32`` rather than float. On CPU, XLA hands float reductions to YNNPACK together with
whatever it fuses into them: LeNet-5's first pooling gradient (tie counts, the pooled
cotangent over them, the next convolution's input gradient) ran there in 1.4 ms per step
against 0.2 ms in XLA's own loop. With the integer count the compiled LeNet-5 epoch (batch
128) ran 16% faster with Toeplitz convolutions (3.48 against 4.13 ms per step) and 15%
faster with im2col ones (4.30 against 5.06 ms), with the same numbers (the counts are small
integers either way; the pooled cotangent is still divided by them once per window, which
keeps im2col's 25-slice input gradient out of the window-sized product).
A first-maximum JVP rule (the gradient as one select) was measured before that change and
not kept: on CPU it made a LeNet-5 step ~14% faster with Toeplitz convolutions but 20-35%
slower with im2col ones, whose 25-slice input gradient XLA then fused into the window-sized
select and recomputed for every window cell (re-measured on LeNet-5 at batch 128: 11% faster
with Toeplitz, 27% slower with im2col; an optimization barrier on the pooled cotangent does
not stop that fusion).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nnkit.core import Layer, ShapeError, layer
from nnkit.layers import _spatial as sp

Stride = int | Sequence[int] | None
Padding = str | int | Sequence

__all__ = [
    "MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D", "GlobalAvgPool", "GlobalMaxPool",
    "max_pool", "avg_pool",
]

Array = jax.Array


def _is_blocked(window, stride, pads) -> bool:
    return tuple(window) == tuple(stride) and all(lo == 0 and hi == 0 for lo, hi in pads)


def _blocked(x: Array, window: Sequence[int], reducer) -> Array:
    """Non-overlapping windows: crop to whole windows, reshape, reduce the window axes."""
    nd = len(window)
    out = [n // w for n, w in zip(x.shape[1:-1], window, strict=True)]
    x = x[(slice(None), *(slice(0, o * w) for o, w in zip(out, window, strict=True)))]
    shape = [x.shape[0]]
    for o, w in zip(out, window, strict=True):
        shape += [o, w]
    x = x.reshape(*shape, x.shape[-1])
    return reducer(x, axis=tuple(2 + 2 * i for i in range(nd)))


def _lowest(dtype) -> np.generic:
    """The identity of max as a concrete NumPy scalar (so JAX picks the differentiable
    ``reduce_window_max`` primitive instead of a generic reduction)."""
    if jnp.issubdtype(dtype, jnp.floating):
        return np.array(-np.inf, dtype)[()]
    return np.array(jnp.iinfo(dtype).min, dtype)[()]


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _window_max(x: Array, axes: tuple[int, ...]) -> Array:
    """``max`` of ``x`` over ``axes``, with ``jnp.max``'s derivative: a tie's gradient is split
    evenly between the tied maxima, ``dy = sum_{x_i = y} dx_i / #{i: x_i = y}``.

    The same values and derivatives as ``jnp.max(x, axes)``; the tie count is an ``int32``
    sum (see the module docstring for why).
    """
    return jnp.max(x, axis=axes)


@_window_max.defjvp
def _window_max_jvp(axes, primals, tangents):
    (x,), (t,) = primals, tangents
    y = jnp.max(x, axis=axes)
    hit = x == jnp.expand_dims(y, axes)
    counts = jnp.sum(hit, axis=axes, dtype=jnp.int32).astype(t.dtype)
    return y, jnp.sum(jnp.where(hit, t, 0), axis=axes) / counts


def _max(x: Array, axis: tuple[int, ...]) -> Array:
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return _window_max(x, axis)
    return jnp.max(x, axis=axis)


def max_pool(x: Array, window: Sequence[int], stride: Sequence[int], pads: sp.Pads) -> Array:
    """Max pooling of ``x (N, *spatial, C)`` with explicit ``pads`` -> ``(N, *out, C)``."""
    if _is_blocked(window, stride, pads):
        return _blocked(x, window, _max)
    return lax.reduce_window(
        x, _lowest(x.dtype), lax.max, (1, *window, 1), (1, *stride, 1),
        ((0, 0), *pads, (0, 0)),
    )


def _valid_counts(spatial, window, stride, pads) -> np.ndarray:
    """Number of real (unpadded) input cells in each output window, shape ``out``.

    Separable: per dimension ``min(n, o*s - lo + w) - max(0, o*s - lo)``; the product of the
    per-dimension counts is the count of the window.
    """
    counts = np.ones((), np.float64)
    for n, w, s, (lo, hi) in zip(spatial, window, stride, pads, strict=True):
        out = (n + lo + hi - w) // s + 1
        start = np.arange(out) * s - lo
        c = np.minimum(n, start + w) - np.maximum(0, start)
        counts = np.multiply.outer(counts, c)
    return counts


def avg_pool(
    x: Array,
    window: Sequence[int],
    stride: Sequence[int],
    pads: sp.Pads,
    count_include_pad: bool = False,
) -> Array:
    """Average pooling of ``x (N, *spatial, C)`` -> ``(N, *out, C)`` (see module docstring)."""
    if _is_blocked(window, stride, pads):
        return _blocked(x, window, jnp.mean)
    sums = lax.reduce_window(
        x, np.array(0, x.dtype)[()], lax.add, (1, *window, 1), (1, *stride, 1),
        ((0, 0), *pads, (0, 0)),
    )
    if count_include_pad or not any(lo or hi for lo, hi in pads):
        return sums / sp.prod(window)
    counts = _valid_counts(x.shape[1:-1], window, stride, pads)
    return sums / jnp.asarray(counts[None, ..., None], sums.dtype)


def _pool_layer(nd, kind, window, stride, padding, count_include_pad, name) -> Layer:
    who = name or kind
    win = sp.int_tuple(window, nd, "window", who)
    strides = win if stride is None else sp.int_tuple(stride, nd, "stride", who)
    pad_spec = sp.check_padding(padding, nd, who)
    ones = (1,) * nd
    is_max = kind.startswith("max")

    def init(key, input_shape):
        sp.check_rank(input_shape, nd)
        pads = sp.resolve_pads(pad_spec, input_shape[:-1], win, strides, ones)
        if any(max(lo, hi) >= w for (lo, hi), w in zip(pads, win, strict=True)):
            raise ShapeError(f"padding {pads} must be smaller than the window {win}")
        try:
            out = sp.output_spatial(input_shape[:-1], win, strides, ones, pads, what="window")
        except ShapeError as e:
            raise ShapeError(f"{e}; input shape {tuple(input_shape)}") from None
        return (*out, input_shape[-1]), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        sp.check_apply_rank(x, nd, who)
        pads = sp.resolve_pads(pad_spec, x.shape[1:-1], win, strides, ones)
        if is_max:
            return max_pool(x, win, strides, pads), {}
        return avg_pool(x, win, strides, pads, count_include_pad), {}

    meta = {"window": win, "stride": strides, "padding": pad_spec}
    if not is_max:
        meta["count_include_pad"] = count_include_pad
    return layer(kind, init, apply, name=name, meta=meta)


def MaxPool1D(window: int | Sequence[int] = 2, stride: Stride = None, padding: Padding = "VALID", *,
              name: str | None = None) -> Layer:
    """Max pooling over ``(W, C)``; ``stride`` defaults to ``window``. -> ``(W_out, C)``."""
    return _pool_layer(1, "max_pool1d", window, stride, padding, False, name)


def MaxPool2D(window: int | Sequence[int] = 2, stride: Stride = None, padding: Padding = "VALID", *,
              name: str | None = None) -> Layer:
    """Max pooling over ``(H, W, C)``; ``stride`` defaults to ``window``. -> ``(H_o, W_o, C)``."""
    return _pool_layer(2, "max_pool2d", window, stride, padding, False, name)


def AvgPool1D(
    window: int | Sequence[int] = 2,
    stride: Stride = None,
    padding: Padding = "VALID",
    *,
    count_include_pad: bool = False,
    name: str | None = None,
) -> Layer:
    """Average pooling over ``(W, C)``; padded cells not counted unless ``count_include_pad``."""
    return _pool_layer(1, "avg_pool1d", window, stride, padding, count_include_pad, name)


def AvgPool2D(
    window: int | Sequence[int] = 2,
    stride: Stride = None,
    padding: Padding = "VALID",
    *,
    count_include_pad: bool = False,
    name: str | None = None,
) -> Layer:
    """Average pooling over ``(H, W, C)``; padded cells not counted unless
    ``count_include_pad``."""
    return _pool_layer(2, "avg_pool2d", window, stride, padding, count_include_pad, name)


def _global(kind: str, reducer, name) -> Layer:
    def init(key, input_shape):
        if len(input_shape) < 2:
            raise ShapeError(
                f"expected input shape (*spatial, C) with at least one spatial axis, "
                f"got {tuple(input_shape)}"
            )
        return (input_shape[-1],), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        if x.ndim < 3:
            raise ShapeError(f"{name or kind}: expected x (batch, *spatial, C), got {x.shape}")
        return reducer(x, axis=tuple(range(1, x.ndim - 1))), {}

    return layer(kind, init, apply, name=name)


def GlobalAvgPool(*, name: str | None = None) -> Layer:
    """Mean over all spatial axes: ``(*spatial, C) -> (C,)``."""
    return _global("global_avg_pool", jnp.mean, name)


def GlobalMaxPool(*, name: str | None = None) -> Layer:
    """Max over all spatial axes: ``(*spatial, C) -> (C,)``."""
    return _global("global_max_pool", _max, name)
