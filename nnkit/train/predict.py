"""Using a trained model: its outputs on new data, and its loss and metrics on a labelled set.

Both run in eval mode (``train=False``: dropout off, BatchNorm on its running statistics),
batch by batch (memory ~ one batch), as one compiled program per model and set size,
memoised, so calling them again on data of the same shape compiles nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from nnkit._checks import check_int
from nnkit._memo import memoised
from nnkit.core import Layer
from nnkit.train.gradients import resolve_loss, resolve_metrics
from nnkit.train.inputs import as_xy, count_examples
from nnkit.train.step import jitted_evaluator

__all__ = ["predict", "evaluate"]


def predict(model: Layer, params: Any, state: Any, x: Any, *,
            batch_size: int = 1024) -> Any:
    """``model.apply(params, state, x, train=False)[0]`` for any number of examples.

    ``x``: ``(n, *input_shape)`` (or a tree of such arrays); returns ``(n, *output_shape)``
    (a tree for a model with several outputs), computed ``batch_size`` examples at a time.
    """
    batch_size = check_int(batch_size, "batch_size")
    return _predict_program(model, count_examples(x, "x"), batch_size)(params, state, x)


@memoised(8)
def _predict_program(model: Layer, n: int, batch_size: int) -> Callable:
    bs = max(1, min(batch_size, n))
    full, rem = divmod(n, bs)

    def one(params, state, xb):
        return model.apply(params, state, xb, key=None, train=False)[0]

    @jax.jit
    def run(params, state, x):
        head = jax.tree_util.tree_map(lambda a: a[: full * bs].reshape(full, bs, *a.shape[1:]),
                                      x)
        ys = lax.map(lambda xb: one(params, state, xb), head)
        ys = jax.tree_util.tree_map(lambda a: a.reshape(full * bs, *a.shape[2:]), ys)
        if rem:
            last = one(params, state, jax.tree_util.tree_map(lambda a: a[full * bs:], x))
            ys = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), ys, last)
        return ys

    return run


def evaluate(model: Layer, params: Any, state: Any, data: Any, *,
             loss: str | Callable = "cross_entropy",
             metrics: Sequence[str | Callable] | dict[str, Callable] | None = None,
             batch_size: int = 1024) -> dict[str, float]:
    """``{"loss": ..., <metric>: ...}`` of the model on ``data = (x, y)``, in eval mode.

    The loss and per-example-mean metrics are exact means over all examples; ``rmse``,
    ``r2``, ``macro_f1`` are the metric of the whole set (as ``fit``'s ``test_metrics``,
    which uses the same evaluator). ``metrics=None``: as ``fit`` (accuracy, except for
    regression and multi-task losses).
    """
    batch_size = check_int(batch_size, "batch_size")
    x, y = as_xy(data, "data")
    loss_fn = resolve_loss(loss)
    metric_fns = resolve_metrics(metrics, loss_fn)
    ev = jitted_evaluator(model, loss_fn, metric_fns, count_examples(x, "data x"), batch_size)
    return {k: float(v) for k, v in jax.device_get(ev(params, state, x, y)).items()}
