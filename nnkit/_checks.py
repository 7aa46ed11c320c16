"""Argument checks shared across nnkit: one wording for every "must be a positive int"."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

__all__ = ["check_int", "check_seed"]


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


def check_seed(seed: Any) -> int:
    """An int seed for ``jax.random.key`` as a Python ``int``, or ``ValueError``.

    JAX keys hold 32-bit seeds (64-bit only with ``jax_enable_x64``): a larger seed would be
    cut to its low 32 bits, so ``2**32`` would silently give the same key as ``0``. Seeds in
    ``[-2**31, 2**32)`` are accepted.
    """
    s = check_int(seed, "seed", -(2**31))
    if s >= 2**32:
        raise ValueError(f"seed must be < 2**32 (JAX keys take 32-bit seeds; {s} would give "
                         f"the same key as {s % 2**32}), got {seed!r}")
    return s
