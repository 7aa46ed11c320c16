"""Shared argument handling for spatial layers (convolution, pooling): NWC / NHWC layouts.

Padding conventions (per spatial dimension, ``k_eff = (k - 1) * dilation + 1``):

* ``"VALID"``: no padding, ``out = (n - k_eff) // stride + 1``.
* ``"SAME"``: ``out = ceil(n / stride)``; total padding ``max((out - 1) * stride + k_eff - n, 0)``
  split ``lo = total // 2``, ``hi = total - lo`` (extra on the high side, as in TensorFlow/XLA).
* ``int p``: ``(p, p)`` on every spatial dimension; a sequence of ints: ``(p_i, p_i)`` per
  dimension; a sequence of ``(lo, hi)`` pairs: explicit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from nnkit.core import ShapeError

Pads = tuple[tuple[int, int], ...]

LAYOUTS = {1: "(W, C)", 2: "(H, W, C)", 3: "(D, H, W, C)"}


def int_tuple(value: Any, n: int, what: str, who: str, *, minimum: int = 1) -> tuple[int, ...]:
    """``value`` (an int or a length-``n`` sequence) as a tuple of ``n`` ints ``>= minimum``."""
    if isinstance(value, int) and not isinstance(value, bool):
        out = (value,) * n
    elif isinstance(value, Sequence) and len(value) == n and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        out = tuple(value)
    else:
        raise ValueError(f"{who}: {what} must be an int or {n} ints, got {value!r}")
    if any(v < minimum for v in out):
        raise ValueError(f"{who}: {what} must be >= {minimum}, got {value!r}")
    return out


def check_padding(padding: Any, n: int, who: str) -> str | Pads:
    """Validates a padding spec at construction; returns ``"SAME"``, ``"VALID"`` or pairs."""
    if isinstance(padding, str):
        p = padding.upper()
        if p not in ("SAME", "VALID"):
            raise ValueError(f"{who}: padding must be 'SAME', 'VALID' or ints, got {padding!r}")
        return p
    if isinstance(padding, int) and not isinstance(padding, bool):
        pairs: Any = ((padding, padding),) * n
    elif isinstance(padding, Sequence) and len(padding) == n:
        pairs = tuple(
            (p, p) if isinstance(p, int) else tuple(p) for p in padding  # type: ignore[arg-type]
        )
    else:
        raise ValueError(
            f"{who}: padding must be 'SAME', 'VALID', an int or {n} (lo, hi) pairs, "
            f"got {padding!r}"
        )
    ok = all(
        len(pr) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pr)
        for pr in pairs
    )
    if not ok:
        raise ValueError(f"{who}: padding must be non-negative ints, got {padding!r}")
    return tuple((int(lo), int(hi)) for lo, hi in pairs)


def resolve_pads(
    padding: str | Pads,
    spatial: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
) -> Pads:
    """Explicit ``((lo, hi), ...)`` pads for a checked padding spec (see module docstring)."""
    if padding == "VALID":
        return tuple((0, 0) for _ in spatial)
    if padding == "SAME":
        pads = []
        for n, k, s, d in zip(spatial, kernel, stride, dilation, strict=True):
            out = -(-n // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    return tuple(padding)  # type: ignore[arg-type]


def output_spatial(
    spatial: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    pads: Pads,
    *,
    what: str = "kernel",
) -> tuple[int, ...]:
    """``(n + lo + hi - k_eff) // stride + 1`` per dimension; ShapeError if the window is larger
    than the padded input."""
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(spatial, pads, strict=True))
    eff = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True))
    if any(e > p for e, p in zip(eff, padded, strict=True)):
        extra = f" (dilated to {eff})" if tuple(eff) != tuple(kernel) else ""
        raise ShapeError(
            f"{what} {tuple(kernel)}{extra} is larger than the padded input {padded} "
            f"(input spatial shape {tuple(spatial)}, pads {tuple(pads)})"
        )
    return tuple((p - e) // s + 1 for p, e, s in zip(padded, eff, stride, strict=True))


def check_rank(input_shape: Sequence[int], ndim: int) -> None:
    """ShapeError unless ``input_shape`` is ``(*spatial, C)`` with ``ndim`` spatial dims."""
    if len(input_shape) != ndim + 1:
        raise ShapeError(
            f"expected input shape {LAYOUTS.get(ndim, f'({ndim} spatial dims, C)')} "
            f"(rank {ndim + 1}, batch excluded), got {tuple(input_shape)} "
            f"(rank {len(input_shape)})"
        )


def check_apply_rank(x: Any, ndim: int, who: str) -> None:
    """ShapeError unless ``x`` is ``(batch, *spatial, C)`` with ``ndim`` spatial dims."""
    if x.ndim != ndim + 2:
        layout = LAYOUTS.get(ndim, "(..., C)")
        raise ShapeError(
            f"{who}: expected x of shape (batch, {layout[1:]} (rank {ndim + 2}), got "
            f"{tuple(x.shape)}; add the batch axis with x[None] for a single example"
        )


def prod(xs: Sequence[int]) -> int:
    """Product of ints (1 for an empty sequence)."""
    return math.prod(xs)
