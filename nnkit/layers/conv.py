"""Convolution layers: :func:`Conv1D` (NWC, kernel WIO) and :func:`Conv2D` (NHWC, kernel HWIO).

``y[n, o, f] = b[f] + sum_{k, c} x_pad[n, o * stride + k * dilation, c] * w[k, c, f]`` (a
cross-correlation, as in every deep-learning library), per spatial dimension, with input
channels split into ``groups`` independent groups (``groups == in_channels``: depthwise).

Three implementations give the same numbers (up to float rounding):

* ``"xla"``: :func:`jax.lax.conv_general_dilated`.
* ``"im2col"``: one strided slice of the padded input per kernel tap, stacked into a
  channels-first patch matrix ``(k_1 * ... * k_d * C, batch * prod(out))``, then ONE matmul
  with the kernel reshaped to ``(k_1 * ... * k_d * C, F)`` (:func:`conv_im2col`).
* ``"toeplitz"``: one slice per tap of the leading spatial axes (``kh`` row slices in 2-D),
  cut into blocks of ``wb`` output columns, and the last spatial axis folded into a banded
  weight matrix ``T (kh * span * C, wb * F)`` over the ``span = wb + kw - 1`` input columns
  of a block: ONE matmul, output already channels-last (:func:`conv_toeplitz`). It spends
  ``span / kw`` times im2col's flops on the zeros of the band and copies the input about
  ``kh * span / wb`` times instead of ``kh * kw``; :func:`toeplitz_block` picks ``wb``.
* ``"auto"`` (default): on the CPU backend, ``"toeplitz"`` for kernels of more than one tap
  while ``T`` is small (at most :data:`TOEPLITZ_MAX_ELEMENTS` elements) and the batch is not
  tiny (im2col's patch matrix at least :data:`TOEPLITZ_MIN_PATCHES` elements; this also
  keeps ``vmap``'s per-example batches of one on im2col), else ``"im2col"`` for kernels of
  at most :data:`IM2COL_MAX_WINDOW` taps, else ``"xla"``; GPUs/TPUs always use ``"xla"``.
  Decided from the shapes at trace time and from the platform when lowered
  (:func:`jax.lax.platform_dependent`): the platform the program is compiled for, not the
  process's default backend.

Measured on CPU (2 cores), whole networks trained in a compiled ``lax.scan`` (the epoch of
``nnkit.fit``): LeNet-5 at batch 128 ran ~1.5x faster with ``"toeplitz"`` than with
``"im2col"``, 3x3 CIFAR- and VGG-style nets 1.1-1.7x, a 7x7 layer 2.9x (the figures are
at :data:`TOEPLITZ_MAX_ELEMENTS`); im2col was in turn 1.5x faster than XLA's convolution per
step, and inside ``lax.scan`` XLA's convolution gets 5-30x slower still, while the
matmul-based ones do not. For wide layers run step by step, outside ``lax.scan``, XLA's
convolution can be the fastest: pass ``impl="xla"`` there.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nnkit import initializers as inits
from nnkit._checks import check_int
from nnkit.core import Layer, ShapeError, layer
from nnkit.initializers import InitSpec
from nnkit.layers import _spatial as sp

__all__ = [
    "Conv1D", "Conv2D", "conv", "conv_im2col", "conv_toeplitz", "conv_xla", "im2col_size",
    "toeplitz_block", "toeplitz_size", "IM2COL_MAX_WINDOW", "TOEPLITZ_COPY_COST",
    "TOEPLITZ_MAX_ELEMENTS", "TOEPLITZ_MIN_PATCHES",
]

Array = jax.Array

#: ``impl="auto"`` uses im2col on CPU when ``prod(kernel_size) <= IM2COL_MAX_WINDOW``.
IM2COL_MAX_WINDOW = 49

_IMPLS = ("auto", "xla", "im2col", "toeplitz")
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


def _banded(kernel: int, stride: int, dilation: int, width: int, out: int, dtype) -> Array:
    """``E (k, width, out)``: ``E[t, o * stride + t * dilation, o] = 1``, zeros elsewhere."""
    e = np.zeros((kernel, width, out), np.float32)
    for t in range(kernel):
        e[t, np.arange(out) * stride + t * dilation, np.arange(out)] = 1.0
    return jnp.asarray(e, dtype)


def conv_toeplitz(
    x: Array,
    w: Array,
    stride: Sequence[int],
    pads: sp.Pads,
    dilation: Sequence[int],
    groups: int = 1,
    block: int | None = None,
) -> Array:
    """Channels-last convolution with the LAST spatial axis folded into a banded weight matrix.

    Shapes as :func:`conv_xla`. For a 2-D ``x_pad (N, Hp, Wp, C)``, ``w (kh, kw, C, F)`` and
    blocks of ``wb`` output columns (``block``, an int in ``1..W_out``, else a
    ``ValueError``; default :func:`toeplitz_block`), block ``b`` reading the
    ``span = (wb - 1) * s_w + (kw - 1) * d_w + 1`` input columns from ``q0 = b * wb * s_w``::

        R[(n, i, b), (a, p, c)] = x_pad[n, i * s_h + a * d_h, q0 + p, c]     (kh row slices)
        T[(a, p, c), (j, f)]    = w[a, t, c, f]  where p = j * s_w + t * d_w (0 elsewhere)
        y[(n, i, b), (j, f)]    = (R @ T)[(n, i, b), (j, f)]                  (ONE matmul)

    and ``y`` is already ``(N, H_out, W_out, F)`` (the last block cropped when ``wb`` does not
    divide ``W_out``; the input is zero-padded on the right for it). ``T (kh * span * C,
    wb * F)`` is the same for every block (a convolution is translation invariant) and is
    built from ``w`` each call by a small einsum with a constant 0/1 band ``E`` (so gradients
    reach ``w`` through it). The blocks of a row slice are not sliced one by one: the
    columns from ``p * wb * s_w`` reshaped to ``(blocks, wb * s_w)`` are every block's
    ``p``-th piece, and a block's span is its first ``ceil(span / (wb * s_w))`` pieces,
    cropped (one slice per block made a 1-D gradient over 2000 steps 50x slower). ``R``
    copies the input about ``kh * span / wb`` times instead of im2col's ``kh * kw``, and the
    matmul spends ``span / kw`` times im2col's flops on zeros in ``T``; ``wb = W_out`` is a
    single band over the whole row (``Wp / kw`` times the flops).
    Leading spatial axes (the rows of a 2-D input) are unfolded by slicing, as in im2col; a
    1-D input has no row slices. ``groups > 1`` builds a block-diagonal ``T`` (``groups``
    times the flops).
    """
    nd = w.ndim - 2
    kernel, cg, f = tuple(w.shape[:nd]), w.shape[-2], w.shape[-1]
    x, w = _common_dtype(x, w)
    if any(lo or hi for lo, hi in pads):
        x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    out = sp.output_spatial(x.shape[1:-1], kernel, stride, dilation, ((0, 0),) * nd)
    n, width, c = x.shape[0], x.shape[-2], x.shape[-1]
    if groups > 1:  # w_full[..., c, f] = w[..., c % cg, f] if c and f are in the same group
        fg = f // groups
        same = (np.arange(c)[:, None] // cg) == (np.arange(f)[None, :] // fg)
        w = jnp.tile(w, (*(1,) * nd, groups, 1)) * jnp.asarray(same, w.dtype)
    ow, sw, kw, dw = out[-1], stride[-1], kernel[-1], dilation[-1]
    wb, nb, span = _blocks(ow, kw, sw, dw, block)
    step = wb * sw  # input columns between the starts of two blocks
    pieces = -(-span // step)  # block b reads pieces b, b + 1, ... of `step` columns each
    need = (nb + pieces - 1) * step
    if need > width:
        x = jnp.pad(x, ((0, 0),) * nd + ((0, need - width), (0, 0)))
    rows = []  # one slice per tap of the leading spatial axes: (N, *out[:-1], nb, span, C)
    for t in itertools.product(*(range(k) for k in kernel[:-1])):
        lo = tuple(a * d for a, d in zip(t, dilation[:-1], strict=True))
        hi = tuple(s0 + (o - 1) * s + 1
                   for s0, o, s in zip(lo, out[:-1], stride[:-1], strict=True))
        row = lax.slice(x, (0, *lo, 0, 0), (n, *hi, need, c), (1, *stride[:-1], 1, 1))
        # the blocks without one slice each: piece p of every block is a reshape of the
        # columns from p * step, and a block's span is its first `pieces` pieces, cropped
        lead_shape = row.shape[:-2]
        parts = [lax.slice_in_dim(row, p * step, (p + nb) * step, axis=nd).reshape(
            *lead_shape, nb, step, c) for p in range(pieces)]
        blk = parts[0] if pieces == 1 else jnp.concatenate(parts, axis=nd + 1)
        rows.append(blk[..., :span, :])
    lead = len(rows)
    r = rows[0][..., None, :, :] if lead == 1 else jnp.stack(rows, axis=nd + 1)
    r = r.reshape(n * sp.prod(out[:-1]) * nb, lead * span * c)
    band = _banded(kw, sw, dw, span, wb, w.dtype)
    t_mat = jnp.einsum("lkcf,kpj->lpcjf", w.reshape(lead, kw, c, f), band)
    y = r @ t_mat.reshape(lead * span * c, wb * f)
    y = y.reshape(n, *out[:-1], nb * wb, f)
    return y if nb * wb == ow else y[..., :ow, :]


#: :func:`toeplitz_block`'s price of one input copy in ``R``, in units of one multiply-add
#: of the band (fitted to LeNet-5's two convolutions on CPU; see :func:`toeplitz_block`).
TOEPLITZ_COPY_COST = 5


def _blocks(out: int, kernel: int, stride: int, dilation: int,
            block: int | None = None) -> tuple[int, int, int]:
    """``(wb, blocks, span)``: output columns per block (``block``, else
    :func:`toeplitz_block`), the number of blocks (the last one cropped if ``wb`` does not
    divide ``out``) and the input columns one block reads."""
    if block is None:
        wb = toeplitz_block(out, kernel, stride, dilation)
    elif isinstance(block, bool) or not isinstance(block, (int, np.integer)) or not (
            1 <= block <= out):
        raise ValueError(f"conv_toeplitz: block must be an int in 1..{out} (output columns "
                         f"of the last spatial axis), got {block!r}")
    else:
        wb = int(block)
    return wb, -(-out // wb), (wb - 1) * stride + (kernel - 1) * dilation + 1


def toeplitz_block(out: int, kernel: int, stride: int = 1, dilation: int = 1) -> int:
    """Output columns per band of :func:`conv_toeplitz` for a last spatial axis of ``out``.

    A block of ``wb`` output columns reads ``span = (wb - 1) * stride + (kernel - 1) *
    dilation + 1`` input columns, so ``ceil(out / wb)`` blocks cost multiply-adds
    ``~ blocks * wb * span`` (zeros of the band included) and input copies ``~ blocks * span``.
    Returns the ``wb >= 2`` (or ``out``) that minimises ``blocks * span * (wb +
    TOEPLITZ_COPY_COST)``, preferring fewer blocks on ties. ``wb = out`` is one band over the
    whole width; ``wb = 1`` would be im2col. For LeNet-5 (``out`` 28 and 10, ``kernel`` 5)
    it picks 4 and 5, which on CPU trained ~20% faster than one band per layer.
    """
    def cost(wb: int) -> tuple[int, int]:
        _, blocks, span = _blocks(out, kernel, stride, dilation, wb)
        return blocks * span * (wb + TOEPLITZ_COPY_COST), blocks

    return min(range(min(2, out), out + 1), key=cost)


def toeplitz_size(
    x_shape: Sequence[int], w_shape: Sequence[int], stride: Sequence[int], pads: sp.Pads,
    dilation: Sequence[int], groups: int = 1,
) -> tuple[int, float]:
    """``(elements of conv_toeplitz's T, its multiply-adds over im2col's)`` with the blocks of
    :func:`toeplitz_block`: ``(kh * span * C, wb * F)`` and ``blocks * wb * span / (W_out *
    kw)`` (times ``groups``: a grouped ``T`` is block-diagonal)."""
    nd = len(w_shape) - 2
    kw, s, d = w_shape[nd - 1], stride[-1], dilation[-1]
    (out,) = sp.output_spatial(x_shape[-2:-1], (kw,), (s,), (d,), pads[-1:])
    wb, blocks, span = _blocks(out, kw, s, d)
    lead = sp.prod(w_shape[: nd - 1])
    return (lead * span * x_shape[-1] * wb * w_shape[-1],
            groups * blocks * wb * span / (out * kw))


def im2col_size(
    x_shape: Sequence[int], w_shape: Sequence[int], stride: Sequence[int], pads: sp.Pads,
    dilation: Sequence[int],
) -> int:
    """Elements of :func:`conv_im2col`'s patch matrix, ``k_1 * ... * k_d * C * N * prod(out)``."""
    nd = len(w_shape) - 2
    out = sp.output_spatial(x_shape[1:-1], w_shape[:nd], stride, dilation, pads)
    return sp.prod(w_shape[:-1]) * x_shape[0] * sp.prod(out)


#: ``impl="auto"`` on CPU uses :func:`conv_toeplitz` (kernels of more than one tap) while its
#: banded matrix ``T`` (:func:`toeplitz_size`) has at most this many elements (4 MiB of
#: float32). Whole networks trained in a compiled ``lax.scan`` on CPU (2 cores), ms per
#: step, im2col against blocked Toeplitz: LeNet-5 at batch 128 4.3 / 2.7; a 3-layer 3x3
#: CIFAR net (16-32-64 channels) 25.4 / 18.6 at batch 128, 1.96 / 1.77 at 8; a VGG-style
#: 32-32-64-64 net 114 / 67 at batch 64; 3x3 64-128-128 channels on 16x16, 34.3 / 32.3 at
#: batch 32; a 7x7 layer 12.4 / 4.2; a depthwise-separable net 69 / 42; a Conv1D net
#: 0.93 / 0.69. 1x1 convolutions (a plain matmul) stay im2col: 2.6 / 2.9.
TOEPLITZ_MAX_ELEMENTS = 1 << 20
#: ... and only while im2col's patch matrix (:func:`im2col_size`) has at least this many
#: elements. Below it im2col is as fast or faster: LeNet-5 ties at batches 4-16; the CIFAR
#: net above took 0.35 / 0.49 ms at batch 2, 0.62 / 0.67 at 4, 1.19 / 1.09 at 8 (its first
#: patch matrix: 110 k elements at batch 4, 221 k at 8). Under ``vmap`` for per-example
#: gradients each example is a batch of one, so im2col is used: 32 per-example gradients of
#: the CIFAR net took 5.6 ms with im2col and 13.7 with Toeplitz.
TOEPLITZ_MIN_PATCHES = 200_000


def _pick_impl(
    impl: str,
    kernel: Sequence[int],
    groups: int,
    x_shape: Sequence[int] | None = None,
    w_shape: Sequence[int] | None = None,
    stride: Sequence[int] | None = None,
    pads: sp.Pads | None = None,
    dilation: Sequence[int] | None = None,
) -> str:
    """The implementation ``impl`` runs when lowered for a CPU ("auto": from the shapes)."""
    if impl != "auto":
        return impl
    if sp.prod(kernel) > 1 and x_shape is not None:
        size, _ = toeplitz_size(x_shape, w_shape, stride, pads, dilation, groups)
        if (size <= TOEPLITZ_MAX_ELEMENTS
                and im2col_size(x_shape, w_shape, stride, pads, dilation) >= TOEPLITZ_MIN_PATCHES):
            return "toeplitz"
    return "im2col" if sp.prod(kernel) <= IM2COL_MAX_WINDOW else "xla"


def _run(impl: str, x: Array, w: Array, stride, pads, dilation, groups: int) -> Array:
    """The convolution by ``impl``; ``"auto"`` picks when the program is lowered: the CPU
    choice of :func:`_pick_impl` for a CPU, XLA's convolution for any other platform (so a
    program traced in a CPU process and lowered for a GPU or TPU, or the reverse, gets the
    convolution of the platform it runs on)."""
    which = _pick_impl(impl, w.shape[:-2], groups, x.shape, w.shape, stride, pads, dilation)
    if impl != "auto" or which == "xla":
        return _FNS[which](x, w, stride, pads, dilation, groups)
    return lax.platform_dependent(
        x, w,
        cpu=lambda x, w: _FNS[which](x, w, stride, pads, dilation, groups),
        default=lambda x, w: conv_xla(x, w, stride, pads, dilation, groups),
    )


_FNS = {"xla": conv_xla, "im2col": conv_im2col, "toeplitz": conv_toeplitz}


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
    return _run(impl, x, w, stride, pads, dilation, groups)


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
    features = check_int(features, f"{who}: features")
    kernel = sp.int_tuple(kernel_size, nd, "kernel_size", who)
    strides = sp.int_tuple(stride, nd, "stride", who)
    dil = sp.int_tuple(dilation, nd, "dilation", who)
    pad_spec = sp.check_padding(padding, nd, who)
    groups = check_int(groups, f"{who}: groups")
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
        y = _run(impl, x, w, strides, pads, dil, groups)
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
    w_init: InitSpec | None = None,
    b_init: InitSpec | None = None,
    impl: str = "auto",
    name: str | None = None,
) -> Layer:
    """1-D convolution over ``(W, C)`` inputs -> ``(W_out, features)``.

    Params: ``{"w": (k, C // groups, features), "b": (features,)}`` (WIO). Default init:
    ``w = sqrt(6 / fan_in) * U[-1, 1]``, ``b = U[-1, 1] / sqrt(fan_in)``,
    ``fan_in = k * C // groups``. ``W_out`` follows ``padding``/``stride``/``dilation``
    (see :mod:`nnkit.layers._spatial`); ``impl`` is ``"auto"``, ``"xla"``, ``"im2col"`` or
    ``"toeplitz"``.
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
    w_init: InitSpec | None = None,
    b_init: InitSpec | None = None,
    impl: str = "auto",
    name: str | None = None,
) -> Layer:
    """2-D convolution over ``(H, W, C)`` inputs -> ``(H_out, W_out, features)``.

    Params: ``{"w": (kh, kw, C // groups, features), "b": (features,)}`` (HWIO). Default
    init: ``w = sqrt(6 / fan_in) * U[-1, 1]``, ``b = U[-1, 1] / sqrt(fan_in)``,
    ``fan_in = kh * kw * C // groups``. ``groups == C`` is a depthwise convolution
    (``features`` a multiple of ``C``). ``impl`` is ``"auto"``, ``"xla"``, ``"im2col"`` or
    ``"toeplitz"``.
    """
    return _conv_layer(
        2, "conv2d", features, kernel_size, stride, padding, dilation, groups, use_bias,
        w_init, b_init, impl, name,
    )
