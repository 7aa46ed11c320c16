"""The initial carry of a scan over time, typed to vary like the data inside ``shard_map``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def vary_like(carry: Any, *refs: Any) -> Any:
    """``carry`` plus a scalar zero made from ``refs`` (``jnp.zeros_like``): the same values.

    Inside ``jax.shard_map`` a scan's carry must keep one type, and the step's output varies
    over every mesh axis its inputs vary over; a zero initial state, made from shapes alone,
    varies over none. Adding this zero makes it vary like ``refs`` (the per-device data and
    the parameters). Elsewhere the zero is a constant and XLA folds the add away.
    """
    leaves = jax.tree_util.tree_leaves(refs)
    if not leaves:
        return carry
    zero = jnp.zeros_like(leaves[0], shape=())
    for r in leaves[1:]:
        zero = zero + jnp.zeros_like(r, shape=(), dtype=zero.dtype)
    return jax.tree_util.tree_map(lambda a: a + zero.astype(a.dtype), carry)
