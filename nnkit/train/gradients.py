"""Gradients of the training objective: whole batch, accumulated micro-batches, per example.

The objective of a batch ``(x, y)`` is ``L = loss_fn(model(x), y) + l1 * sum|w| + l2 * sum w^2``
(penalties from :func:`nnkit.losses.l1_penalty` / :func:`nnkit.losses.l2_penalty`: every
parameter but biases and norm scales, :func:`nnkit.losses.weights_only`). All three modes
return the gradient of the *mean* loss over the batch, so for a mean-reduced loss and a model
without batch-coupled layers (BatchNorm) they agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from nnkit._memo import memoised
from nnkit.core import Layer, Params, State, batchnorm_paths

__all__ = [
    "resolve_loss",
    "resolve_metrics",
    "default_metrics",
    "REGRESSION_LOSSES",
    "make_objective",
    "batch_grads",
    "accumulated_grads",
    "per_example_value_and_grads",
    "check_per_example",
    "per_example_grads",
    "clip_per_example",
]

LossFn = Callable[[Any, Any], jax.Array]
Objective = Callable[..., tuple[jax.Array, tuple[Any, ...]]]


@memoised(64)  # one `total` wrapper per multi-task loss: programs keyed on it are found again
def resolve_loss(loss: str | LossFn) -> LossFn:
    """A loss ``fn(pred, y) -> scalar``: callables pass through, names go to
    :func:`nnkit.losses.get` (``"cross_entropy"``, ``"mse"``, ...). A combined loss from
    :func:`nnkit.losses.multi_task` (it returns ``(total, parts)``) is trained on ``total``;
    its per-task parts become metrics (:func:`resolve_metrics` with ``loss=``)."""
    if not callable(loss):
        from nnkit import losses

        return losses.get(loss)
    if getattr(loss, "tasks", None) is None or getattr(loss, "is_total", False):
        return loss

    def total(pred, y):
        return loss(pred, y)[0]

    total.tasks, total.part = loss.tasks, loss.part  # type: ignore[attr-defined]
    total.is_total = True  # type: ignore[attr-defined]
    total.__name__ = getattr(loss, "__name__", "multi_task")
    return total


REGRESSION_LOSSES = ("mse", "l1", "huber")
"""Losses (by name, or their functions) whose targets are not classes: no default metric."""


def default_metrics(loss: Any) -> tuple[str, ...]:
    """The metrics logged when none are given: ``("accuracy",)``, except for the regression
    losses of :data:`REGRESSION_LOSSES` and multi-task losses (which log each task's loss),
    where accuracy means nothing: ``()``."""
    from nnkit import losses as L

    regression = [L.LOSSES[n] for n in REGRESSION_LOSSES]
    named = isinstance(loss, str) and loss in REGRESSION_LOSSES
    if getattr(loss, "tasks", None) or named or any(loss is f for f in regression):
        return ()
    return ("accuracy",)


def resolve_metrics(
    metrics: Sequence[str | Callable] | dict[str, Callable] | None,
    loss: Any = None,
) -> tuple[tuple[str, Callable], ...]:
    """``((name, fn(pred, y) -> scalar), ...)`` from names (:func:`nnkit.metrics.get`),
    callables (named by ``__name__``; a lambda as ``metric_<i>``, its position),
    ``(name, fn)`` pairs or a ``{name: fn}`` dict; ``None`` gives :func:`default_metrics` of
    ``loss``.

    With a multi-task ``loss`` (:func:`nnkit.losses.multi_task`) each task's unweighted loss
    is added as metric ``loss_<task>`` (logged as ``train_loss_<task>``, ``val_loss_<task>``),
    unless a metric of that name is already there. With a loss on probabilities
    (:func:`nnkit.losses.binary_cross_entropy`, ``"bce_probs"``) the named binary metrics
    threshold the ``(B, 1)`` output at 0.5 instead of 0."""
    from nnkit import losses as L

    if metrics is None:
        metrics = default_metrics(loss)
    items = list(_metric_items(metrics, 0.5 if loss is L.binary_cross_entropy else None))
    have = {n for n, _ in items}
    for task in getattr(loss, "tasks", None) or ():
        if f"loss_{task}" not in have:
            items.append((f"loss_{task}", loss.part(task)))
    names = [n for n, _ in items]
    reserved = {"loss", "grad_norm", "lr", "penalty", "loss_scale"}
    if reserved & set(names) or len(set(names)) != len(names):
        raise ValueError(f"metric names must be unique and none of {sorted(reserved)}: {names}")
    return tuple(items)


def _metric_items(metrics: Any, threshold: float | None = None) -> list[tuple[str, Callable]]:
    if not metrics:
        return []
    if isinstance(metrics, str):
        metrics = (metrics,)
    if isinstance(metrics, dict):
        items = list(metrics.items())
    else:
        items = []
        for i, m in enumerate(metrics):
            if isinstance(m, tuple) and len(m) == 2 and callable(m[1]):
                items.append((str(m[0]), m[1]))
            elif callable(m):  # a lambda or partial has no usable name: metric_<i>
                name = getattr(m, "__name__", "")
                items.append((name if name.isidentifier() else f"metric_{i}", m))
            else:
                from nnkit import metrics as M

                items.append((m, M.get(m, threshold=threshold)))
    return items


def make_objective(
    model: Layer,
    loss_fn: LossFn,
    *,
    l1: float = 0.0,
    l2: float = 0.0,
    train: bool = True,
) -> Objective:
    """``objective(params, state, x, y, key) -> (total, (loss, penalty, new_state, pred))``.

    ``total = loss_fn(pred, y) + l1 * l1_penalty(params) + l2 * l2_penalty(params)``.
    """
    penalty_fns = []
    if l1 or l2:
        from nnkit import losses

        if l1:
            penalty_fns.append((l1, losses.l1_penalty))
        if l2:
            penalty_fns.append((l2, losses.l2_penalty))

    def objective(params, state, x, y, key):
        pred, new_state = model.apply(params, state, x, key=key, train=train)
        loss = loss_fn(pred, y)
        penalty = jnp.zeros((), jnp.float32)
        for coef, fn in penalty_fns:
            penalty = penalty + coef * fn(params)
        return loss + penalty, (loss, penalty, new_state, pred)

    return objective


def batch_grads(objective: Objective, params: Params, state: State, x: Any, y: Any,
                key: jax.Array | None) -> tuple[Params, tuple]:
    """Gradient of the objective on the whole batch: ``(grads, (loss, penalty, state, pred))``."""
    (_, aux), grads = jax.value_and_grad(objective, has_aux=True)(params, state, x, y, key)
    return grads, aux


def _split(tree: Any, m: int, what: str) -> Any:
    """``(m, B / m, ...)``: microbatch ``i`` holds rows ``i, i + m, i + 2m, ...``. Strided,
    not contiguous, so that a batch split over devices stays split: each device holds
    ``B / (m D)`` rows of every microbatch (contiguous microbatches would each sit on one
    device, and every device would compute all of them)."""

    def cut(a):
        a = jnp.asarray(a)
        if a.shape[0] % m:
            raise ValueError(
                f"grad_mode='accumulate': {what} batch of {a.shape[0]} is not divisible by "
                f"microbatches={m}"
            )
        return a.reshape(a.shape[0] // m, m, *a.shape[1:]).swapaxes(0, 1)

    return jax.tree_util.tree_map(cut, tree)


def accumulated_grads(
    objective: Objective,
    params: Params,
    state: State,
    x: Any,
    y: Any,
    key: jax.Array | None,
    microbatches: int,
    metric_fns: tuple[tuple[str, Callable], ...] = (),
) -> tuple[Params, tuple]:
    """Mean gradient over ``microbatches`` equal slices of the batch, one slice at a time.

    Slice ``i`` holds rows ``i, i + m, i + 2m, ...`` (strided: under data parallelism every
    device computes its share of every slice).

    A ``lax.scan`` keeps only one micro-batch's activations alive (memory ~ batch / m) and
    sums the gradients: ``g = (1/m) sum_i grad L(x_i)``. Model state is threaded through
    the slices in order. Micro-batch ``i`` uses key ``fold_in(key, i)``.

    Returns:
      ``(grads, loss, penalty, new_state, metrics)`` with loss/metrics averaged over slices.
    """
    xs, ys = _split(x, microbatches, "x"), _split(y, microbatches, "y")
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)

    def body(carry, inp):
        g_sum, st, loss_sum, pen_sum, m_sum = carry
        i, xi, yi = inp
        ki = None if key is None else jax.random.fold_in(key, i)
        g, (loss, pen, st, pred) = batch_grads(objective, params, st, xi, yi, ki)
        g_sum = jax.tree_util.tree_map(jnp.add, g_sum, g)
        m = {n: f(pred, yi) for n, f in metric_fns}
        m_sum = jax.tree_util.tree_map(jnp.add, m_sum, m)
        return (g_sum, st, loss_sum + loss, pen_sum + pen, m_sum), None

    m0 = {n: jnp.zeros((), jnp.float32) for n, _ in metric_fns}
    init = (zeros, state, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), m0)
    (g, st, loss, pen, ms), _ = lax.scan(body, init, (jnp.arange(microbatches), xs, ys))
    inv = 1.0 / microbatches
    g = jax.tree_util.tree_map(lambda a: a * inv, g)
    ms = {n: v * inv for n, v in ms.items()}
    return g, loss * inv, pen * inv, st, ms


def check_per_example(model: Layer) -> None:
    """``ValueError`` for a model with BatchNorm: per-example gradients run each example as
    a batch of one, whose train-mode BatchNorm output is its bias (zero variance), so every
    layer before it would get a zero gradient and the running variance would decay to 0."""
    norms = batchnorm_paths(model)
    if norms:
        raise ValueError(
            f"per-example gradients with {', '.join(norms)}: each example runs as a batch of "
            "one, and BatchNorm over one example outputs its bias (the layers before it get no "
            "gradient). Use grad_mode='batch' or 'accumulate', or a per-example normalisation "
            "(LayerNorm)")


def per_example_value_and_grads(objective: Objective, params: Params, state: State, x: Any,
                                y: Any, key: jax.Array | None) -> tuple[Params, tuple]:
    """``vmap`` of the gradient over examples, each run as a batch of one (``x[i][None]``).

    Returns ``(grads, (loss, penalty, new_state, pred))`` where every leaf has a leading
    example axis ``B``: grads ``(B, *param.shape)``, loss ``(B,)``, pred ``(B, *out)``.
    Example ``i`` uses key ``fold_in(key, i)``.
    """
    n = jax.tree_util.tree_leaves(x)[0].shape[0]

    def one(i, xi, yi):
        ki = None if key is None else jax.random.fold_in(key, i)
        add = lambda a: jnp.asarray(a)[None]
        g, (loss, pen, st, pred) = batch_grads(
            objective, params, state, jax.tree_util.tree_map(add, xi),
            jax.tree_util.tree_map(add, yi), ki,
        )
        return g, (loss, pen, st, jax.tree_util.tree_map(lambda a: a[0], pred))

    return jax.vmap(one)(jnp.arange(n), x, y)


def per_example_grads(
    model: Layer,
    loss_fn: str | LossFn,
    params: Any,
    state: Any,
    batch: tuple[Any, Any],
    key: jax.Array | None = None,
    *,
    l1: float = 0.0,
    l2: float = 0.0,
    train: bool = True,
) -> Any:
    """Per-example gradients of the objective: a params-shaped tree with a leading axis ``B``.

    ``grads[i] = d L(model(x[i:i+1]), y[i:i+1]) / d params``; their mean over ``i`` is the
    batch gradient of a mean-reduced loss. Clip them with :func:`clip_per_example` for
    DP-SGD-style training. Memory: ``B`` times the parameters. Compiled once per ``(model,
    loss_fn, l1, l2, train)``, as ``jax.jit`` would be: the loss is taken to be pure, so a
    new lambda each call compiles again, and a loss object whose behaviour changes must be
    a new object.
    """
    if train:
        check_per_example(model)
    x, y = batch
    return _per_example_program(model, resolve_loss(loss_fn), l1, l2, train)(
        params, state, x, y, key)


@memoised(16)
def _per_example_program(model: Layer, loss: LossFn, l1: float, l2: float,
                         train: bool) -> Callable:
    """:func:`per_example_grads` as one jitted program per configuration (run op by op from
    Python it costs ~50x more dispatch than compute on a small model)."""
    obj = make_objective(model, loss, l1=l1, l2=l2, train=train)

    def run(params, state, x, y, key):
        return per_example_value_and_grads(obj, params, state, x, y, key)[0]

    return jax.jit(run)


def clip_per_example(grads: Any, max_norm: float) -> Any:
    """Scales each example's gradient to global L2 norm ``<= max_norm`` (DP-SGD clipping).

    ``g_i <- g_i / max(1, ||g_i|| / max_norm)`` where ``||g_i||`` is the norm over all leaves
    of example ``i`` (leading axis). Returns the same per-example tree; take its mean after.
    """
    leaves = jax.tree_util.tree_leaves(grads)
    sq = sum(jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), axis=1) for g in leaves)
    factor = 1.0 / jnp.maximum(1.0, jnp.sqrt(sq) / max_norm)
    return jax.tree_util.tree_map(
        lambda g: g * factor.reshape((-1,) + (1,) * (g.ndim - 1)).astype(g.dtype), grads
    )
