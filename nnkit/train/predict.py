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
import numpy as np
from jax import lax

from nnkit._checks import check_int
from nnkit._memo import memoised
from nnkit.core import Layer
from nnkit.train.gradients import resolve_loss, resolve_metrics
from nnkit.train.inputs import as_xy, check_data, check_values, count_examples
from nnkit.train.step import jitted_evaluator

__all__ = ["predict", "evaluate"]


def predict(model: Layer, params: Any, state: Any, x: Any, *,
            batch_size: int = 1024) -> Any:
    """``model.apply(params, state, x, train=False)[0]`` for any number of examples.

    ``x``: ``(n, *input_shape)`` (or a tree of such arrays); returns ``(n, *output_shape)``
    (a tree for a model with several outputs), computed ``batch_size`` examples at a time.
    """
    batch_size = check_int(batch_size, "batch_size")
    n = count_examples(x, "x")
    _per_example_checked(model, _abstract(params), _abstract(state), _abstract(x))
    return _predict_program(model, n, batch_size)(params, state, x)


def _abstract(tree: Any) -> Any:
    """``tree`` as ``jax.ShapeDtypeStruct`` leaves: the key of the shape checks' memo."""
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), tree)


@memoised(64)
def _per_example_checked(model: Layer, params: Any, state: Any, x: Any) -> bool:
    """The model applied abstractly to the first examples of ``x`` (abstract, as are
    ``params`` and ``state``) must give one output per example: a shape error (a single
    example without its batch axis, data of another model) before anything compiles.
    Memoised: once per model and shapes."""

    def outputs(lead: Callable[[Any], tuple]) -> tuple[Any, BaseException | None]:
        xs = jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct((*lead(a), *np.shape(a)[1:]), jnp.result_type(a)), x)
        try:
            return jax.eval_shape(lambda p, s, xb: model.apply(p, s, xb, key=None,
                                                               train=False)[0],
                                  params, state, xs), None
        except (ValueError, TypeError) as e:
            return None, e

    def per_example(out: Any, k: int) -> bool:
        return out is not None and all(
            len(o.shape) > 0 and o.shape[0] == k for o in jax.tree_util.tree_leaves(out))

    k = min(2, count_examples(x, "x"))
    out, err = outputs(lambda a: (k,))
    if per_example(out, k):
        return True
    one, _ = outputs(lambda a: (1, a.shape[0]))  # x as one example
    if per_example(one, 1):
        raise ValueError(f"x of shape {jax.tree_util.tree_map(np.shape, x)} is one example "
                         "without its batch axis: pass x[None]")
    if err is not None:
        raise err
    raise ValueError(f"the model maps {k} examples of x to outputs of shape "
                     f"{jax.tree_util.tree_map(lambda o: o.shape, out)}: not one per example")


@memoised(64)
def _data_checked(model: Layer, loss_fn: Callable, metric_fns: tuple, x: Any, y: Any) -> Any:
    """:func:`~nnkit.train.inputs.check_data` on abstract ``x``, ``y`` (the checks of shapes,
    of the model and of the loss's targets), memoised; returns the per-example output
    shape."""
    return check_data(model, loss_fn, (x, y), {}, None, metrics=metric_fns,
                      train_name="data")[1]


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
    regression and multi-task losses). The data is checked as ``fit`` checks its own
    (``ValueError`` for NaN/inf, labels out of range, shapes the model or loss cannot take)
    before anything compiles; the shapes once per model and shapes.
    """
    batch_size = check_int(batch_size, "batch_size")
    x, y = as_xy(data, "data")
    loss_fn = resolve_loss(loss)
    metric_fns = resolve_metrics(metrics, loss_fn)
    # as fit checks its data: shapes and targets once per shapes, the values every call
    out_shape = _data_checked(model, loss_fn, metric_fns, _abstract(x), _abstract(y))
    check_values(loss_fn, out_shape, x, y, "data")
    ev = jitted_evaluator(model, loss_fn, metric_fns, count_examples(x, "data x"), batch_size)
    return {k: float(v) for k, v in jax.device_get(ev(params, state, x, y)).items()}
