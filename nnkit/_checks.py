"""Argument checks shared across nnkit: one wording for every "must be a positive int"."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

__all__ = ["check_int"]


def check_int(value: Any, name: str, minimum: int = 1, *, error: type[Exception] = ValueError
              ) -> int:
    """``value`` as a Python ``int``, or ``error`` naming ``name`` and ``value``.

    Accepts any integer (NumPy's included, ``bool`` excluded) ``>= minimum``; the message reads
    ``"{name} must be a positive int, got {value!r}"`` (or ``"an int >= {minimum}"``).
    """
    n = None
    if not isinstance(value, bool | np.bool_):
        try:
            n = operator.index(value)
        except TypeError:
            n = None
    if n is None or n < minimum:
        want = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise error(f"{name} must be {want}, got {value!r}")
    return n
