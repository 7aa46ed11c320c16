"""Convolution layers: :func:`Conv1D` (NWC, kernel WIO) and :func:`Conv2D` (NHWC, kernel HWIO).

``y[n, o, f] = b[f] + sum_{k, c} x_pad[n, o * stride + k * dilation, c] * w[k, c, f]`` (a
cross-correlation, as in every deep-learning library), per spatial dimension, with input
channels split into ``groups`` independent groups (``groups == in_channels``: depthwise).

Two implementations give the same numbers (up to float rounding):

* ``"xla"``: :func:`jax.lax.conv_general_dilated`.
* ``"im2col"``: one strided slice of the padded input per kernel tap, stacked into a
  channels-first patch matrix ``(k_1 * ... * k_d * C, batch * prod(out))``, then ONE matmul
  with the kernel reshaped to ``(k_1 * ... * k_d * C, F)`` (:func:`conv_im2col`).
  On CPU (2 cores, batch 128) a LeNet-5 training step ran 1.47x faster than with XLA's
  convolution, and 8.5x faster inside ``lax.scan`` (the compiled epoch), where XLA's
  convolution gets ~5x slower still while im2col does not; see
  ``benchmarks/bench_conv_impl.py``.
* ``"auto"`` (default): im2col on the CPU backend for kernels of at most
  :data:`IM2COL_MAX_WINDOW` taps (any ``groups``: grouped and depthwise XLA convolutions
  collapse inside ``lax.scan`` too), xla otherwise; GPUs/TPUs always use xla. Decided at trace
  time from :func:`jax.default_backend`. (The patch matrix costs ``taps`` times the input's
  memory, and for wide (>= 16 channels) or depthwise layers run step by step, outside
  ``lax.scan``, XLA's convolution can be faster: pass ``impl="xla"`` there.)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from nnkit import initializers as inits
from nnkit.core import Layer, ShapeError, layer
from nnkit.layers import _spatial as sp

__all__ = ["Conv1D", "Conv2D", "conv", "conv_im2col", "conv_xla", "IM2COL_MAX_WINDOW"]

Array = jax.Array

#: ``impl="auto"`` uses im2col on CPU when ``prod(kernel_size) <= IM2COL_MAX_WINDOW``.
IM2COL_MAX_WINDOW = 49

_IMPLS = ("auto", "xla", "im2col")
_SPATIAL_LETTERS = "DHW"


def _common_dtype(x: Array, w: Array) -> tuple[Array, Array]:
    dtype = jnp.result_type(x, w)
    return x.astype(dtype), w.astype(dtype)


def conv_xla(
    x: Array,
    w: Array,
    stride: Sequence[int],
    pads: sp.Pads,
    dilation: Sequence[int],
    groups: int = 1,
) -> Array:
    """Channels-last convolution with :func:`jax.lax.conv_general_dilated`.

    Shapes: ``x (N, *spatial, C)``, ``w (*k, C // groups, F)`` -> ``(N, *out, F)``.
    """
    nd = w.ndim - 2
    letters = _SPATIAL_LETTERS[-nd:] if nd <= 3 else "".join(chr(97 + i) for i in range(nd))
    x, w = _common_dtype(x, w)
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=tuple(stride),
        padding=tuple(pads),
        rhs_dilation=tuple(dilation),
        dimension_numbers=(f"N{letters}C", f"{letters}IO", f"N{letters}C"),
        feature_group_count=groups,
    )


def conv_im2col(
    x: Array,
    w: Array,
    stride: Sequence[int],
    pads: sp.Pads,
    dilation: Sequence[int],
    groups: int = 1,
) -> Array:
    """Channels-last convolution as strided slices + one matmul (im2col by slicing).

    Shapes as :func:`conv_xla`. The patch matrix is laid out **channels-first, taps-major**
    (the layout of ``benchmarks/conv_probe.py``): ``x`` is transposed once to
    ``(C, N, *spatial)``, each kernel tap is a contiguous strided slice ``(C, N, *out)``, the
    taps are stacked to ``P (taps * C, N * prod(out))`` (row order = an HWIO kernel's
    ``w.reshape(-1, F)``) and ``y^T = w^T P`` is ONE wide matmul ``(F, taps*C) @ (taps*C, M)``,
    transposed back to channels-last. (Concatenating the taps on the channel axis instead,
    ``(N, *out, taps * C)``, interleaves with stride ``taps * C`` and gives a skinny matmul; it
    measured ~2x slower for LeNet's first layer.) For ``groups > 1`` the contraction is
    batched over groups.
    """
    nd = w.ndim - 2
    kernel, f = tuple(w.shape[:nd]), w.shape[-1]
    x, w = _common_dtype(x, w)
    if any(lo or hi for lo, hi in pads):
        x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    out = sp.output_spatial(x.shape[1:-1], kernel, stride, dilation, ((0, 0),) * nd)
    xc = jnp.moveaxis(x, -1, 0)  # (C, N, *spatial)
    c, n = xc.shape[:2]
    taps = []
    for t in itertools.product(*(range(k) for k in kernel)):
        start = (0, 0, *(a * d for a, d in zip(t, dilation, strict=True)))
        limit = (
            c,
            n,
            *(s0 + (o - 1) * s + 1 for s0, o, s in zip(start[2:], out, stride, strict=True)),
        )
        taps.append(lax.slice(xc, start, limit, (1, 1, *stride)))
    patches = taps[0][None] if len(taps) == 1 else jnp.stack(taps, axis=0)  # (T, C, N, *out)
    m = n * sp.prod(out)
    if groups == 1:
        p = patches.reshape(len(taps) * c, m)
        yt = lax.dot_general(w.reshape(-1, f), p, (((0,), (0,)), ((), ())))  # (F, M)
    else:
        cg = c // groups
        p = patches.reshape(len(taps), groups, cg, m)
        wg = w.reshape(len(taps), cg, groups, f // groups)
        # batch over groups g: y[g, f, m] = sum_{t, c} w[t, c, g, f] p[t, g, c, m]
        yt = lax.dot_general(wg, p, (((0, 1), (0, 2)), ((2,), (1,)))).reshape(f, m)
    return jnp.moveaxis(yt.reshape(f, n, *out), 0, -1)


def _pick_impl(impl: str, kernel: Sequence[int], groups: int) -> str:
    if impl != "auto":
        return impl
    small = sp.prod(kernel) <= IM2COL_MAX_WINDOW
    return "im2col" if jax.default_backend() == "cpu" and small else "xla"


def conv(
    x: Array,
    w: Array,
    *,
    stride: Sequence[int] | int = 1,
    padding: str | int | Sequence = "VALID",
    dilation: Sequence[int] | int = 1,
    groups: int = 1,
    impl: str = "auto",
) -> Array:
    """Functional channels-last convolution: ``x (N, *spatial, C)``, ``w (*k, C//groups, F)``.

    ``padding`` as in :mod:`nnkit.layers._spatial`; ``impl`` as in the module docstring.
    """
    if impl not in _IMPLS:
        raise ValueError(f"conv: impl must be one of {_IMPLS}, got {impl!r}")
    nd = w.ndim - 2
    stride = sp.int_tuple(stride, nd, "stride", "conv")
    dilation = sp.int_tuple(dilation, nd, "dilation", "conv")
    pad_spec = sp.check_padding(padding, nd, "conv")
    pads = sp.resolve_pads(pad_spec, x.shape[1:-1], w.shape[:nd], stride, dilation)
    which = _pick_impl(impl, w.shape[:nd], groups)
    fn = conv_im2col if which == "im2col" else conv_xla
    return fn(x, w, stride, pads, dilation, groups)


def _conv_layer(
    nd: int,
    kind: str,
    features: int,
    kernel_size,
    stride,
    padding,
    dilation,
    groups: int,
    use_bias: bool,
    w_init,
    b_init,
    impl: str,
    name: str | None,
) -> Layer:
    who = name or kind
    if not isinstance(features, int) or isinstance(features, bool) or features <= 0:
        raise ValueError(f"{who}: features must be a positive int, got {features!r}")
    kernel = sp.int_tuple(kernel_size, nd, "kernel_size", who)
    strides = sp.int_tuple(stride, nd, "stride", who)
    dil = sp.int_tuple(dilation, nd, "dilation", who)
    pad_spec = sp.check_padding(padding, nd, who)
    if not isinstance(groups, int) or groups <= 0:
        raise ValueError(f"{who}: groups must be a positive int, got {groups!r}")
    if features % groups:
        raise ShapeError(f"{who}: features={features} is not divisible by groups={groups}")
    if impl not in _IMPLS:
        raise ValueError(f"{who}: impl must be one of {_IMPLS}, got {impl!r}")

    def init(key, input_shape):
        sp.check_rank(input_shape, nd)
        c = input_shape[-1]
        if c % groups:
            raise ShapeError(
                f"input channels {c} (input shape {tuple(input_shape)}) are not divisible by "
                f"groups={groups}"
            )
        pads = sp.resolve_pads(pad_spec, input_shape[:-1], kernel, strides, dil)
        try:
            out = sp.output_spatial(input_shape[:-1], kernel, strides, dil, pads)
        except ShapeError as e:
            raise ShapeError(f"{e}; input shape {tuple(input_shape)}") from None
        w_shape = (*kernel, c // groups, features)
        fan_in = sp.prod(kernel) * (c // groups)
        kw, kb = jax.random.split(key)
        params = {"w": inits.get(w_init or inits.course_weight())(kw, w_shape)}
        if use_bias:
            params["b"] = (inits.get(b_init) if b_init else inits.course_bias(fan_in))(
                kb, (features,)
            )
        return (*out, features), params, {}

    def apply(params, state, x, *, key=None, train=False):
        sp.check_apply_rank(x, nd, who)
        w = params["w"]
        if x.shape[-1] != w.shape[-2] * groups:
            raise ShapeError(
                f"{who}: x has {x.shape[-1]} channels (shape {tuple(x.shape)}) but the kernel "
                f"{tuple(w.shape)} expects {w.shape[-2] * groups}"
            )
        pads = sp.resolve_pads(pad_spec, x.shape[1:-1], kernel, strides, dil)
        fn = conv_im2col if _pick_impl(impl, kernel, groups) == "im2col" else conv_xla
        y = fn(x, w, strides, pads, dil, groups)
        if use_bias:
            y = y + params["b"]
        return y, {}

    meta = {
        "features": features, "kernel_size": kernel, "stride": strides, "padding": pad_spec,
        "dilation": dil, "groups": groups, "impl": impl,
    }
    return layer(kind, init, apply, name=name, meta=meta)


def Conv1D(
    features: int,
    kernel_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence = "SAME",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    use_bias: bool = True,
    w_init=None,
    b_init=None,
    impl: str = "auto",
    name: str | None = None,
) -> Layer:
    """1-D convolution over ``(W, C)`` inputs -> ``(W_out, features)``.

    Params: ``{"w": (k, C // groups, features), "b": (features,)}`` (WIO). Default init:
    ``w = sqrt(6 / fan_in) * U[-1, 1]``, ``b = U[-1, 1] / sqrt(fan_in)``,
    ``fan_in = k * C // groups``. ``W_out`` follows ``padding``/``stride``/``dilation``
    (see :mod:`nnkit.layers._spatial`); ``impl`` is ``"auto"``, ``"xla"`` or ``"im2col"``.
    """
    return _conv_layer(
        1, "conv1d", features, kernel_size, stride, padding, dilation, groups, use_bias,
        w_init, b_init, impl, name,
    )


def Conv2D(
    features: int,
    kernel_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence = "SAME",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    use_bias: bool = True,
    w_init=None,
    b_init=None,
    impl: str = "auto",
    name: str | None = None,
) -> Layer:
    """2-D convolution over ``(H, W, C)`` inputs -> ``(H_out, W_out, features)``.

    Params: ``{"w": (kh, kw, C // groups, features), "b": (features,)}`` (HWIO). Default
    init: ``w = sqrt(6 / fan_in) * U[-1, 1]``, ``b = U[-1, 1] / sqrt(fan_in)``,
    ``fan_in = kh * kw * C // groups``. ``groups == C`` is a depthwise convolution
    (``features`` a multiple of ``C``). ``impl`` is ``"auto"``, ``"xla"`` or ``"im2col"``.
    """
    return _conv_layer(
        2, "conv2d", features, kernel_size, stride, padding, dilation, groups, use_bias,
        w_init, b_init, impl, name,
    )
