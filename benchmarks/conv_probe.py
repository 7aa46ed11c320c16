"""W2 probe: a faster CPU convolution for small-channel layers, and why scan hurts XLA's conv.

``conv_cf_patches`` is im2col with the patch matrix laid out **channels-first, taps-major**:
``x (N, H, W, C)`` is transposed once to ``(C, N, H, W)``; each kernel tap is then a
*contiguous* shifted slice ``(C, N, oh, ow)``; stacking the taps gives
``P (k_h * k_w * C, N * oh * ow)`` and the layer is one wide matmul
``y^T = W^T P`` with ``W (k_h * k_w * C, F)`` (an HWIO kernel reshaped), transposed back to
NHWC. nnkit's ``impl="im2col"`` concatenates the taps on the channel axis instead
(``(N, oh, ow, k_h * k_w * C)``), which for LeNet's first layer (``C = 1``) is a
25-way interleaving copy with stride 25 and a skinny ``(100352, 25) @ (25, 6)`` matmul; the
channels-first form replaces both with contiguous copies and a ``(6, 25) @ (25, 100352)``
matmul. Same numbers up to float rounding (checked in the tests).

``hlo_conv_report`` compiles one train step with XLA's convolution, alone and inside
``lax.scan``, and lists the convolutions' dimension labels: inside the loop the weight-gradient
convolutions keep a non-canonical layout (``f01b_i01o->01bf``) that XLA:CPU runs far slower.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from benchmarks import handwritten
from benchmarks.harness import Runner, Skip
from benchmarks.workloads import Workload

__all__ = ["conv_cf_patches", "forward_cf", "build_cf_step", "build_cf_scan",
           "hlo_conv_report"]

Pads = Sequence[tuple[int, int]]


def conv_cf_patches(
    x: jax.Array,
    w: jax.Array,
    stride: Sequence[int] = (1, 1),
    pads: Pads = ((0, 0), (0, 0)),
    dilation: Sequence[int] = (1, 1),
) -> jax.Array:
    """2-D cross-correlation ``x (N, H, W, C)``, ``w (kh, kw, C, F)`` -> ``(N, oh, ow, F)``.

    ``y[n, i, j, f] = sum_{a, b, c} x_pad[n, i*s_h + a*d_h, j*s_w + b*d_w, c] w[a, b, c, f]``
    computed as ``(W^T P)^T`` with channels-first, taps-major patches ``P`` (module doc).
    """
    kh, kw, c, f = w.shape
    if any(lo or hi for lo, hi in pads):
        x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    n, h, wd, _ = x.shape
    (sh, sw), (dh, dw) = stride, dilation
    oh = (h - (kh - 1) * dh - 1) // sh + 1
    ow = (wd - (kw - 1) * dw - 1) // sw + 1
    xc = jnp.moveaxis(x, -1, 0)  # (C, N, H, W)
    taps = [
        lax.slice(xc, (0, 0, a * dh, b * dw),
                  (c, n, a * dh + (oh - 1) * sh + 1, b * dw + (ow - 1) * sw + 1),
                  (1, 1, sh, sw))
        for a in range(kh) for b in range(kw)
    ]
    p = jnp.stack(taps, axis=0).reshape(kh * kw * c, n * oh * ow)
    yt = lax.dot_general(w.reshape(kh * kw * c, f), p, (((0,), (0,)), ((), ())))  # (F, M)
    return jnp.moveaxis(yt.reshape(f, n, oh, ow), 0, -1)


def _pool(x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def forward_cf(wl: Workload, params: dict, x: jax.Array) -> jax.Array:
    """LeNet-5 logits with :func:`conv_cf_patches` and reshape max-pooling."""
    if wl.kind != "lenet":
        raise ValueError(f"forward_cf is LeNet only, got workload {wl.name} ({wl.kind})")
    p = params
    x = _pool(jax.nn.relu(conv_cf_patches(x, p["c1"]["w"], pads=((2, 2), (2, 2)))
                          + p["c1"]["b"]))
    x = _pool(jax.nn.relu(conv_cf_patches(x, p["c2"]["w"]) + p["c2"]["b"]))
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(x @ p["f1"]["w"] + p["f1"]["b"])
    x = jax.nn.relu(x @ p["f2"]["w"] + p["f2"]["b"])
    return x @ p["f3"]["w"] + p["f3"]["b"]


def build_cf_step(wl: Workload, data: tuple[np.ndarray, np.ndarray]) -> Runner:
    """``jax-cfpatch``: the hand-written step with channels-first patch convolutions."""
    if wl.kind != "lenet":
        raise Skip("LeNet (W2) only")
    return handwritten.build_step_entry(wl, data, fwd=forward_cf)


def build_cf_scan(wl: Workload, data: tuple[np.ndarray, np.ndarray]) -> Runner:
    """``jax-cfpatch-scan``: the same, ``K`` steps in one ``lax.scan``."""
    if wl.kind != "lenet":
        raise Skip("LeNet (W2) only")
    return handwritten.build_scan_entry(wl, data, fwd=forward_cf)


# ----------------------------------------------------------------------------- HLO


def _convolutions(hlo: str) -> list[str]:
    return re.findall(r"convolution\([^)]*\)[^\n]*?dim_labels=([\w>\-]+)", hlo)


def hlo_conv_report(wl: Workload, data: tuple[np.ndarray, np.ndarray], k: int = 4) -> dict:
    """Compiles nnkit's W2 train step with ``impl="xla"`` alone and in a ``k``-step scan.

    Returns ``{"step": {...}, "scan": {...}}`` with the convolutions' ``dim_labels`` and op
    counts (convolution, transpose, copy) of each optimized HLO module.
    """
    import nnkit
    from benchmarks.nnkit_entries import model

    net = model(wl, conv_impl="xla")
    opt = optax.adam(1e-3)
    step = nnkit.make_train_step(net, "cross_entropy", opt, metrics=(), jit=False)
    ts = nnkit.create_train_state(net, wl.input_shape, opt, 0)
    x, y = data
    b = wl.batch
    xb, yb = jnp.asarray(x[:b]), jnp.asarray(y[:b])
    xs = jnp.asarray(x[:k * b].reshape(k, b, *x.shape[1:]))
    ys = jnp.asarray(y[:k * b].reshape(k, b))
    texts = {
        "step": jax.jit(step).lower(ts, (xb, yb)).compile().as_text(),
        "scan": jax.jit(lambda t, xs, ys: lax.scan(step, t, (xs, ys)))
        .lower(ts, xs, ys).compile().as_text(),
    }
    out: dict[str, Any] = {}
    for name, t in texts.items():
        ops = Counter(re.findall(r"= \S+ ([a-z\-]+)\(", t))
        out[name] = {"dim_labels": _convolutions(t),
                     "ops": {o: ops.get(o, 0) for o in ("convolution", "transpose", "copy")}}
    return out
