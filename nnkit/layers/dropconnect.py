"""Weight-level and non-inverted dropout: :func:`DropConnect` and :func:`ScaledDropout`.

Two conventions keep a dropped network's *expected* training output equal to its test
output (``p`` = drop rate, ``m ~ Bernoulli(1 - p)`` element-wise):

* **inverted** (``nnkit.layers.Dropout``, and ``DropConnect`` by default): train
  ``y = m * x / (1 - p)``, test ``y = x``. ``E[m / (1 - p)] = 1``, so nothing changes at test
  time and a trained model can be used without the dropout layer.
* **non-inverted / classic** (Srivastava et al. 2014; :func:`ScaledDropout`, and
  ``DropConnect(..., inverted=False)``): train ``y = m * x``, test ``y = (1 - p) x``.
  ``E[m] = 1 - p``; scaling activations by ``1 - p`` at test time is the same as scaling
  the next layer's weights by ``1 - p``.

Both need ``key`` when ``train=True`` and ``rate > 0``; with ``train=False`` they are
deterministic.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nnkit._checks import check_int
from nnkit.core import Layer, ShapeError, layer
from nnkit.initializers import InitSpec
from nnkit.layers.dense import Dense

__all__ = ["DropConnect", "ScaledDropout"]


def _check_rate(kind: str, name: str | None, rate: float) -> float:
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name or kind}: rate must be in [0, 1), got {rate}")
    return rate


def _need_key(kind: str, name: str | None, key) -> None:
    if key is None:
        raise ValueError(
            f"{name or kind}: apply(..., train=True) needs key= (a jax.random.key) to draw "
            "the dropout mask"
        )


def DropConnect(
    features: int,
    rate: float = 0.5,
    *,
    inverted: bool = True,
    use_bias: bool = True,
    w_init: InitSpec | None = None,
    b_init: InitSpec | None = None,
    name: str | None = None,
) -> Layer:
    """A :func:`~nnkit.layers.Dense` layer whose *weights* are randomly dropped in training.

    Train: ``y = x @ (M * w) * s + b`` with ``M ~ Bernoulli(1 - rate)`` of ``w``'s shape,
    one mask per forward pass (shared by the batch: the cheap variant of Wan et al. 2013,
    which samples a mask per example), and ``s = 1 / (1 - rate)`` if ``inverted`` else 1.
    The bias is never dropped.
    Eval: ``y = x @ w + b`` if ``inverted`` (plain Dense), else ``y = (1 - rate) x @ w + b``.
    Either way ``E_M[y_train] = y_eval``.

    Shapes: input ``(..., in)``, output ``(..., features)``; params
    ``{"w": (in, features), "b": (features,)}`` initialised as in ``Dense``.
    """
    rate = _check_rate("dropconnect", name, rate)
    features = check_int(features, f"{name or 'dropconnect'}: features", error=ShapeError)
    keep = 1.0 - rate

    # same params and init as Dense (and its shape check)
    init = Dense(features, use_bias=use_bias, w_init=w_init, b_init=b_init, name=name).init

    def apply(params, state, x, *, key=None, train=False):
        w = params["w"]
        if x.ndim < 1 or x.shape[-1] != w.shape[0]:
            raise ShapeError(f"{name or 'dropconnect'}: x of shape {tuple(x.shape)} has "
                             f"{x.shape[-1] if x.ndim else 0} features on its last axis, the "
                             f"weights w {tuple(w.shape)} expect {w.shape[0]}")
        if train and rate > 0.0:
            _need_key("dropconnect", name, key)
            mask = jax.random.bernoulli(key, keep, w.shape)
            w = jnp.where(mask, w / keep if inverted else w, jnp.zeros((), w.dtype))
        elif not inverted:
            w = w * keep
        y = jnp.matmul(x, w)
        if use_bias:
            y = y + params["b"]
        return y, {}

    return layer(
        "dropconnect", init, apply, name=name,
        meta={"features": features, "rate": rate, "inverted": inverted},
    )


def ScaledDropout(rate: float = 0.5, *, name: str | None = None) -> Layer:
    """Non-inverted ("classic") dropout: train ``y = m * x``, eval ``y = (1 - rate) * x``.

    ``m ~ Bernoulli(1 - rate)`` per element, drawn from ``key``. ``E_m[y_train] = y_eval``,
    like inverted dropout, but the test-time network is scaled instead of the training one.
    Shapes: any; output shape = input shape. No params.
    """
    rate = _check_rate("scaled_dropout", name, rate)
    keep = 1.0 - rate

    def init(key, input_shape):
        return input_shape, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        if not train:
            return x * jnp.asarray(keep, x.dtype), {}
        if rate == 0.0:
            return x, {}
        _need_key("scaled_dropout", name, key)
        mask = jax.random.bernoulli(key, keep, x.shape)
        return jnp.where(mask, x, jnp.zeros((), x.dtype)), {}

    return layer("scaled_dropout", init, apply, name=name, meta={"rate": rate})
