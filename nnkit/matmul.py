"""``x @ w`` for a layer's weights, with a weight gradient that stays one plain matmul.

The weight gradient of ``y = x @ w`` is ``dL/dw = x^T g``: a contraction over the rows of
both ``x (N, in)`` and ``g (N, out)``. Left to itself, XLA folds the transpose of ``x`` into
the dot. For one model that is fine (XLA:CPU copies ``x^T`` out when it lays the dot out),
but under ``vmap`` over models -- :func:`nnkit.sweep` trains several models as one batched
program -- the gradient becomes a *batched* dot contracting a non-minor axis of both
operands, which XLA:CPU runs through a slow generic path (the 16x16 weight gradients of 4
models from a batch of 32: ~3.9 us, against ~1.7 us for the same products with ``x^T``
laid out in memory).

:func:`matmul` computes the same values, and the same derivatives of every order; only its
JVP writes the ``w`` term as ``x^T``-major, which makes the reverse-mode weight gradient
``(x^T) @ g``. Under ``vmap``, ``x^T`` is materialised behind
:func:`jax.lax.optimization_barrier` (so XLA cannot fold it back) and the gradient is a plain
batched matmul; without ``vmap`` the transpose is left to XLA, as for ``jnp.matmul`` (the
barrier would only add compile time there: ~10% on a 784-512-512-10 MLP's train step).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

__all__ = ["matmul"]


@jax.custom_jvp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """``y = x @ w``: ``x (..., in)``, ``w (in, out)`` -> ``y (..., out)``.

    Same value and derivatives as ``jnp.matmul(x, w)`` (``w`` must be 2-D); differs only in
    how the weight gradient ``x^T g`` is laid out for XLA (see the module docstring).
    """
    if w.ndim != 2 or x.ndim < 1 or x.shape[-1] != w.shape[0]:
        raise ValueError(f"matmul: expected x (..., in) and w (in, out), got x {x.shape} "
                         f"and w {w.shape}")
    return jnp.matmul(x, w)


@jax.custom_batching.custom_vmap
def _transpose_impl(x: jax.Array) -> jax.Array:
    return x.T


@_transpose_impl.def_vmap
def _transpose_vmap(axis_size, in_batched, x):
    (batched,) = in_batched
    xt = jnp.swapaxes(x, -1, -2)
    return (lax.optimization_barrier(xt) if batched else xt), batched


@jax.custom_jvp
def _laid_out_transpose(x: jax.Array) -> jax.Array:
    """``x.T`` of a 2-D ``x``; under ``vmap``, materialised behind an optimization barrier
    (custom_vmap has no autodiff of its own: this custom_jvp gives it the transpose's)."""
    return _transpose_impl(x)


_laid_out_transpose.defjvp(lambda primals, tangents: (_laid_out_transpose(primals[0]),
                                                      tangents[0].T))


def _matmul_jvp(primals, tangents):
    x, w = primals
    dx, dw = tangents
    y = matmul(x, w)
    t = None
    if not isinstance(dx, SymbolicZero):
        t = matmul(dx, w)
    if not isinstance(dw, SymbolicZero):
        # d(x @ w) along dw = x @ dw, written as (x^T)^T dw: its transpose w.r.t. dw (the
        # weight gradient) is then x^T @ g with x^T a laid-out (in, N) array under vmap.
        xt = _laid_out_transpose(x.reshape(-1, x.shape[-1]).astype(y.dtype))
        tw = lax.dot_general(xt, dw.astype(y.dtype), (((0,), (0,)), ((), ())))
        tw = tw.reshape(*x.shape[:-1], w.shape[-1])
        t = tw if t is None else t + tw
    return y, (jnp.zeros_like(y) if t is None else t)


matmul.defjvp(_matmul_jvp, symbolic_zeros=True)
