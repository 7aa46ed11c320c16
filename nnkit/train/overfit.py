"""Overfit-one-batch sanity check: a correct model and training setup drive the loss on a
single small batch close to zero; a bug (wrong labels, zero LR, a detached layer) does not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from jax import lax

from nnkit._memo import memoised
from nnkit.core import Layer
from nnkit.train.gradients import resolve_loss
from nnkit.train.inputs import as_xy, check_data
from nnkit.train.lr_find import resolve_optimizer
from nnkit.train.state import create_train_state
from nnkit.train.step import make_train_step

__all__ = ["overfit_batch", "OverfitResult"]


class OverfitResult(NamedTuple):
    """``passed`` = ``final_loss <= target``; ``losses`` has one value per step (before the
    step's update, training mode), ``final_loss`` is the loss after the last update in eval
    mode (dropout off: it can be well below ``losses[-1]``)."""

    passed: bool
    final_loss: float
    losses: np.ndarray


@memoised(8)
def _overfit_program(model: Layer, loss_fn: Callable, opt: Any, steps: int) -> Callable:
    """The jitted ``run(ts, x, y) -> (losses, final loss)``, memoised per configuration."""
    step = make_train_step(model, loss_fn, opt, metrics=(), jit=False)

    @jax.jit
    def run(ts, x, y):
        def body(ts, _):
            ts, m = step(ts, (x, y))
            return ts, m["loss"]

        ts, losses = lax.scan(body, ts, None, length=steps)
        pred, _ = model.apply(ts.params, ts.state, x, key=None, train=False)
        return losses, loss_fn(pred, y)

    return run


def overfit_batch(
    model: Layer,
    optimizer: optax.GradientTransformation | str,
    batch: tuple[Any, Any],
    *,
    loss: str | Callable = "cross_entropy",
    steps: int = 200,
    target: float = 1e-2,
    key: int | jax.Array = 0,
    learning_rate: float = 1e-2,
) -> OverfitResult:
    """Trains on the same ``batch`` for ``steps`` steps in one ``lax.scan`` and checks that
    the loss reaches ``target``.

    ``optimizer`` is a transformation, or a :func:`nnkit.optim.make` name used with
    ``learning_rate``. Randomness (dropout) still follows ``key``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    loss_fn = resolve_loss(loss)
    x, y = as_xy(batch, "batch")
    input_shape, _ = check_data(model, loss_fn, (x, y), {}, None)
    opt = resolve_optimizer(optimizer, learning_rate)
    ts = create_train_state(model, input_shape, opt, key)
    run = _overfit_program(model, loss_fn, opt, steps)
    losses, final = jax.device_get(run(ts, *jax.device_put((x, y))))
    final = float(final)
    return OverfitResult(bool(np.isfinite(final) and final <= target), final,
                         np.asarray(losses))
