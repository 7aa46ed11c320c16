"""Full-batch training of a small model in ONE compiled ``lax.scan`` (for the toy experiments).

The toy sets of the course (logic gates, five points, 1-D functions) have a handful of
examples, so every step uses the whole set: ``theta <- theta - opt(grad L(theta; x, y))``.
The loop is nnkit's own train step (:func:`nnkit.train.make_train_step`) scanned for
``steps`` steps, so there is one compilation and one device->host copy per run; the
function is pure and can be ``jax.vmap``-ed over data sets and keys (several fits at once).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

import nnkit
from nnkit.train import TrainState, create_train_state, make_train_step

__all__ = ["train_full_batch", "predict"]


def train_full_batch(
    model: nnkit.Layer,
    loss: str | Callable,
    optimizer: optax.GradientTransformation,
    x: jax.Array,
    y: Any,
    *,
    steps: int,
    key: int | jax.Array,
    metrics: Sequence[str | Callable] | dict[str, Callable] = (),
) -> tuple[TrainState, dict[str, jax.Array]]:
    """Trains ``model`` on the whole batch ``(x, y)`` for ``steps`` steps.

    Shapes: ``x`` ``(n, *input_shape)``, ``y`` ``(n, ...)`` (any pytree of arrays).
    Returns the final :class:`nnkit.train.TrainState` and the step metrics stacked over steps:
    ``{"loss": (steps,), <metric>: (steps,), "lr": (steps,)}``; step ``t``'s values are
    measured on the parameters *before* update ``t``. Traceable (jit/vmap over x, y, key).
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"train_full_batch: steps must be a positive int, got {steps!r}")
    ts = create_train_state(model, tuple(x.shape[1:]), optimizer, key)
    step = make_train_step(model, loss, optimizer, metrics=metrics, jit=False,
                           log_grad_norm=False)

    def body(ts: TrainState, _):
        return step(ts, (x, y))

    return lax.scan(body, ts, None, length=steps)


def predict(model: nnkit.Layer, ts: TrainState, x: Any) -> Any:
    """``model(x)`` in inference mode (``train=False``) with the train state's parameters."""
    y, _ = model.apply(ts.params, ts.state, jnp.asarray(x), key=None, train=False)
    return y
