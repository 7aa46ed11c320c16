"""Shape-changing layers without parameters: :func:`Flatten` and :func:`Reshape`.

Both act on the per-example shape and keep the leading batch axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from nnkit.core import Layer, ShapeError, layer

__all__ = ["Flatten", "Reshape"]


def Flatten(*, name: str | None = None) -> Layer:
    """``(batch, d_1, ..., d_k) -> (batch, d_1 * ... * d_k)`` (row-major, C order)."""

    def init(key, input_shape):
        return (math.prod(input_shape),), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        if x.ndim < 1:
            raise ShapeError(f"{name or 'flatten'}: expected x with a batch axis, got a scalar")
        return x.reshape(x.shape[0], -1), {}

    return layer("flatten", init, apply, name=name)


def Reshape(shape: Sequence[int] | int, *, name: str | None = None) -> Layer:
    """``(batch, *in) -> (batch, *shape)``; ``shape`` is per example and may hold one ``-1``.

    The element count is checked at ``init``: ``prod(in) == prod(shape)`` (with ``-1``
    inferred), else :class:`~nnkit.core.ShapeError` naming both shapes.
    """
    who = name or "reshape"
    target = (shape,) if isinstance(shape, int) else tuple(shape)
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in target):
        raise ValueError(f"{who}: shape must be ints, got {shape!r}")
    if sum(d == -1 for d in target) > 1 or any(d == 0 or d < -1 for d in target):
        raise ValueError(f"{who}: shape needs positive dims and at most one -1, got {shape!r}")

    def init(key, input_shape):
        n = math.prod(input_shape)
        known = math.prod(d for d in target if d != -1)
        if -1 in target:
            if n % known:
                raise ShapeError(
                    f"cannot reshape input shape {tuple(input_shape)} ({n} elements) to "
                    f"{target}: {n} is not divisible by {known}"
                )
            out = tuple(n // known if d == -1 else d for d in target)
        else:
            if n != known:
                raise ShapeError(
                    f"cannot reshape input shape {tuple(input_shape)} ({n} elements) to "
                    f"{target} ({known} elements)"
                )
            out = target
        return out, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return x.reshape(x.shape[0], *target), {}

    return layer("reshape", init, apply, name=name, meta={"shape": target})
