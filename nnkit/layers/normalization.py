"""Normalisation layers: :func:`BatchNorm` (running statistics in ``state``) and
:func:`LayerNorm`.

Statistics are computed in at least float32 (bfloat16/float16 inputs are promoted), with the
two-pass variance ``mean((x - mean)^2)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nnkit.core import Layer, ShapeError, layer

__all__ = ["BatchNorm", "LayerNorm"]

Array = jax.Array


def _work_dtype(x: Array):
    return jnp.promote_types(x.dtype, jnp.float32)


def BatchNorm(
    momentum: float = 0.9,
    eps: float = 1e-5,
    *,
    axis: int = -1,
    use_scale: bool = True,
    use_bias: bool = True,
    name: str | None = None,
) -> Layer:
    """Batch normalisation over every axis but the feature ``axis``.

    ``y = scale * (x - mu) / sqrt(var + eps) + bias`` with per-feature ``mu, var``:

    * ``train=True``: ``mu, var`` are the batch statistics (mean over the batch and all
      non-feature axes; biased variance), and the returned state is
      ``mean <- momentum * mean + (1 - momentum) * mu``,
      ``var <- momentum * var + (1 - momentum) * var * m / (m - 1)`` (unbiased, ``m`` = number
      of values per feature; ``m == 1`` keeps the biased value).
    * ``train=False``: the running ``mean``/``var`` from ``state``; state returned unchanged.

    ``momentum`` is the weight of the OLD running average (Keras/Flax convention):
    PyTorch's ``momentum=0.1`` (weight of the NEW batch) is ``momentum=0.9`` here.

    ``axis`` is an axis of the per-example shape (``-1``: channels last). Shapes: input
    ``(batch, ..., C)``, output the same. Params ``{"scale": (C,), "bias": (C,)}`` (ones,
    zeros); state ``{"mean": (C,), "var": (C,)}`` (zeros, ones), dtypes kept float32.
    """
    who = name or "batch_norm"
    if not 0.0 <= float(momentum) <= 1.0:
        raise ValueError(f"{who}: momentum must be in [0, 1], got {momentum}")
    if not float(eps) > 0.0:
        raise ValueError(f"{who}: eps must be > 0, got {eps}")
    if not isinstance(axis, int):
        raise ValueError(f"{who}: axis must be an int, got {axis!r}")

    def init(key, input_shape):
        rank = len(input_shape)
        if not -rank <= axis < rank:
            raise ShapeError(
                f"feature axis {axis} is out of range for input shape {tuple(input_shape)}"
            )
        c = input_shape[axis]
        params = {}
        if use_scale:
            params["scale"] = jnp.ones((c,), jnp.float32)
        if use_bias:
            params["bias"] = jnp.zeros((c,), jnp.float32)
        state = {"mean": jnp.zeros((c,), jnp.float32), "var": jnp.ones((c,), jnp.float32)}
        return tuple(input_shape), params, state

    def apply(params, state, x, *, key=None, train=False):
        if x.ndim < 2:
            raise ShapeError(f"{who}: expected x of shape (batch, ..., C), got {x.shape}")
        ax = axis % (x.ndim - 1) + 1  # per-example axis -> axis of x
        c = state["mean"].shape[0]
        if x.shape[ax] != c:
            raise ShapeError(
                f"{who}: x of shape {tuple(x.shape)} has {x.shape[ax]} features on axis "
                f"{axis}, the state has {c}"
            )
        bshape = [1] * x.ndim
        bshape[ax] = c
        reduce = tuple(i for i in range(x.ndim) if i != ax)
        xf = x.astype(_work_dtype(x))
        if train:
            mu = jnp.mean(xf, axis=reduce)
            var = jnp.mean(jnp.square(xf - mu.reshape(bshape)), axis=reduce)
            m = x.size // c
            unbiased = var * (m / (m - 1)) if m > 1 else var
            sg = jax.lax.stop_gradient
            new_state = {
                "mean": (momentum * state["mean"] + (1 - momentum) * sg(mu)).astype(
                    state["mean"].dtype
                ),
                "var": (momentum * state["var"] + (1 - momentum) * sg(unbiased)).astype(
                    state["var"].dtype
                ),
            }
        else:
            mu, var, new_state = state["mean"], state["var"], state
        inv = jax.lax.rsqrt(var.astype(xf.dtype) + eps)
        if use_scale:
            inv = inv * params["scale"]
        y = (xf - mu.astype(xf.dtype).reshape(bshape)) * inv.reshape(bshape)
        if use_bias:
            y = y + params["bias"].reshape(bshape)
        return y.astype(x.dtype), new_state  # statistics in float32, output as x

    meta = {"momentum": momentum, "eps": eps, "axis": axis}
    return layer("batch_norm", init, apply, name=name, meta=meta)


def LayerNorm(
    eps: float = 1e-5,
    *,
    use_scale: bool = True,
    use_bias: bool = True,
    name: str | None = None,
) -> Layer:
    """Layer normalisation over the last axis, per example (no state; same in train/eval).

    ``y = scale * (x - mean(x)) / sqrt(var(x) + eps) + bias`` with the mean and (biased)
    variance over the last axis. Shapes: ``(..., C) -> (..., C)``, any leading dims. Params
    ``{"scale": (C,), "bias": (C,)}`` (ones, zeros).
    """
    who = name or "layer_norm"
    if not float(eps) > 0.0:
        raise ValueError(f"{who}: eps must be > 0, got {eps}")

    def init(key, input_shape):
        if len(input_shape) < 1:
            raise ShapeError(f"expected input shape (..., C), got {tuple(input_shape)}")
        c = input_shape[-1]
        params = {}
        if use_scale:
            params["scale"] = jnp.ones((c,), jnp.float32)
        if use_bias:
            params["bias"] = jnp.zeros((c,), jnp.float32)
        return tuple(input_shape), params, {}

    def apply(params, state, x, *, key=None, train=False):
        c = next((params[k].shape[0] for k in ("scale", "bias") if k in params), None)
        if x.ndim < 1 or (c is not None and x.shape[-1] != c):
            raise ShapeError(f"{who}: x of shape {tuple(x.shape)} has "
                             f"{x.shape[-1] if x.ndim else 0} features on its last axis, the "
                             f"params have {c}")
        xf = x.astype(_work_dtype(x))
        mu = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mu), axis=-1, keepdims=True)
        y = (xf - mu) * jax.lax.rsqrt(var + eps)
        if use_scale:
            y = y * params["scale"]
        if use_bias:
            y = y + params["bias"]
        return y.astype(x.dtype), {}  # statistics in float32, output as x

    return layer("layer_norm", init, apply, name=name, meta={"eps": eps})
