"""Private helpers for sequence layers whose input may be ``x`` or a tuple ``(x, mask)``.

A padding mask is a boolean ``(B, T)`` array, ``True`` at valid positions; a layer that
accepts one is initialised with ``input_shape = ((T, D), (T,))`` (a tuple of shapes).
:func:`nnkit.core.layer` only handles a single shape, hence :func:`multi_input_layer`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from nnkit.core import Layer, ShapeError, normalize_shape


def is_shape_tuple(input_shape: Any) -> bool:
    """True for a tuple of shapes ``((T, D), (T,))``, False for one shape ``(T, D)``."""
    return (
        isinstance(input_shape, tuple | list)
        and len(input_shape) > 0
        and all(isinstance(s, tuple | list) for s in input_shape)
    )


def multi_input_layer(
    kind: str,
    init: Callable,
    apply: Callable,
    *,
    name: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Layer:
    """Like :func:`nnkit.core.layer` but ``input_shape`` may be a tuple of shapes.

    Each shape is normalised; ``ShapeError`` messages are prefixed with the layer name.
    """

    def checked_init(key, input_shape):
        if is_shape_tuple(input_shape):
            shape = tuple(normalize_shape(s) for s in input_shape)
        else:
            shape = normalize_shape(input_shape)
        try:
            return init(key, shape)
        except ShapeError as e:
            raise ShapeError(f"{name or kind}: {e}") from None

    return Layer(checked_init, apply, kind, name, (), tuple((meta or {}).items()))


def split_mask_shape(input_shape: Any) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """``(T, D)`` -> ``((T, D), None)``; ``((T, D), (T,))`` -> ``((T, D), (T,))``, checked."""
    if not is_shape_tuple(input_shape):
        return tuple(input_shape), None
    if len(input_shape) != 2:
        raise ShapeError(
            f"expected input shape (T, D) or ((T, D), (T,)) for (x, padding_mask), got "
            f"{input_shape}"
        )
    x_shape, m_shape = (tuple(s) for s in input_shape)
    if len(x_shape) != 2 or m_shape != x_shape[:1]:
        raise ShapeError(
            f"expected shapes ((T, D), (T,)) for (x, padding_mask), got {x_shape} and {m_shape}"
        )
    return x_shape, m_shape


def split_mask_input(inputs: Any) -> tuple[Any, Any]:
    """``x`` -> ``(x, None)``; ``(x, mask)`` -> ``(x, mask)`` with ``mask`` cast to bool."""
    if isinstance(inputs, tuple | list):
        if len(inputs) != 2:
            raise ValueError(f"expected x or a pair (x, padding_mask), got {len(inputs)} items")
        x, mask = inputs
        return x, jnp.asarray(mask).astype(bool)
    return inputs, None
