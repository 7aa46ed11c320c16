"""``x @ w`` for a layer's weights, with a weight gradient that stays one plain matmul.

The weight gradient of ``y = x @ w`` is ``dL/dw = x^T g``: a contraction over the rows of
both ``x (N, in)`` and ``g (N, out)``. Left to itself, XLA folds the transpose of ``x`` into
the dot, and XLA:CPU runs such a dot through a generic path rather than its matmul library:
for one small model that doubles the cost of the weight gradients (below), and under
``vmap`` over models -- :func:`nnkit.sweep` trains several models as one batched program --
the gradient becomes a *batched* dot contracting a non-minor axis of both operands (the 16x16
weight gradients of 4 models from a batch of 32: ~3.9 us, against ~1.7 us for the same
products with ``x^T`` laid out in memory).

:func:`matmul` computes the same values, and the same derivatives of every order; only its
JVP writes the ``w`` term as ``x^T``-major, which makes the reverse-mode weight gradient
``(x^T) @ g``, with ``x^T`` materialised behind :func:`jax.lax.optimization_barrier` (so XLA
cannot fold it back into the dot) where that is the faster layout:

* under ``vmap``, always: the gradient is then a plain batched matmul;
* without ``vmap``, for small weights and batches (:func:`lays_out_transpose`: at most 256
  rows of ``x``, and the weight's smaller side at most 16 or at most 128 x 128 entries).
  XLA:CPU runs its own dot with the transposed ``x`` (``lhs_contracting_dims={0}``) outside
  its matmul library: measured in a loop, ``(32, 16)^T @ (32, 16)`` took ~1.2 us that way
  against ~0.6 us laid out, ``(128, 512)^T @ (128, 2)`` ~107 us against ~46 us. For large
  weights (``(128, 512)^T @ (128, 512)``: 212 us against 226 us) and many rows (``(2048,
  784)^T @ (2048, 16)``: 414 us against 671 us) the copy of ``x^T`` costs more than it
  saves, so there the transpose is left to XLA, as for ``jnp.matmul``.

All of this is for XLA's CPU backend, where it was measured. On other platforms (GPU, TPU),
whose matmul libraries take a transposed operand as it comes, the barrier is left out and
the transpose is XLA's to fold: no extra kernel. The choice is made when the program is
lowered (:func:`jax.lax.platform_dependent`), so a function jitted for a CPU device in a
process whose default backend is a GPU still gets the CPU layout.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

__all__ = ["matmul", "lays_out_transpose"]

_SMALL_SIDE = 16
_SMALL_WEIGHT = 128 * 128
_MAX_ROWS = 256


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
    return (_on_cpu_laid_out(xt) if batched else xt), batched


def _on_cpu_laid_out(xt: jax.Array) -> jax.Array:
    """``xt`` behind an optimization barrier when lowered for a CPU, else as it is."""
    return lax.platform_dependent(xt, cpu=lax.optimization_barrier, default=lambda a: a)


def lays_out_transpose(rows: int, in_features: int, out_features: int) -> bool:
    """Whether the weight gradient ``x^T g`` of an ``(in_features, out_features)`` weight,
    ``x`` holding ``rows`` rows, is computed from a laid-out ``x^T`` outside ``vmap`` (under
    ``vmap`` it always is): true when ``rows <= 256`` and ``min(in, out) <= 16`` or
    ``in * out <= 128 * 128``."""
    small = (min(in_features, out_features) <= _SMALL_SIDE
             or in_features * out_features <= _SMALL_WEIGHT)
    return rows <= _MAX_ROWS and small


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _laid_out_transpose(x: jax.Array, always: bool) -> jax.Array:
    """``x.T`` of a 2-D ``x``, materialised behind an optimization barrier (on a CPU) under
    ``vmap``, and also without it when ``always`` (custom_vmap has no autodiff of its own: this
    custom_jvp gives it the transpose's)."""
    return _on_cpu_laid_out(x.T) if always else _transpose_impl(x)


_laid_out_transpose.defjvp(lambda always, primals, tangents: (
    _laid_out_transpose(primals[0], always), tangents[0].T))


def _matmul_jvp(primals, tangents):
    x, w = primals
    dx, dw = tangents
    y = matmul(x, w)
    t = None
    if not isinstance(dx, SymbolicZero):
        t = matmul(dx, w)
    if not isinstance(dw, SymbolicZero):
        # d(x @ w) along dw = x @ dw, written as (x^T)^T dw: its transpose w.r.t. dw (the
        # weight gradient) is then x^T @ g, with x^T a laid-out (in, N) array where the
        # module docstring says (on a CPU: under vmap, and for small weights and batches).
        rows = x.reshape(-1, x.shape[-1]).astype(y.dtype)
        xt = _laid_out_transpose(rows, lays_out_transpose(rows.shape[0], *w.shape))
        tw = lax.dot_general(xt, dw.astype(y.dtype), (((0,), (0,)), ((), ())))
        tw = tw.reshape(*x.shape[:-1], w.shape[-1])
        t = tw if t is None else t + tw
    return y, (jnp.zeros_like(y) if t is None else t)


matmul.defjvp(_matmul_jvp, symbolic_zeros=True)
