"""Loss functions: pure ``jnp`` functions ``loss(predictions, targets, ..., reduction="mean")``.

Shapes: the first axis is the batch. Each loss first computes one value per example (shape
``(B,)``) and then reduces it:

* ``reduction="mean"``: mean over the batch (a scalar; the usual training loss);
* ``reduction="sum"``: sum over the batch (a scalar);
* ``reduction="none"``: the per-example values, shape ``(B,)`` (for masking padded
  examples, per-example weighting, or logging).

Element-wise losses (:func:`mse`, :func:`l1`, :func:`huber`, the binary cross entropies)
average over the non-batch axes of an example. Distribution losses
(:func:`softmax_cross_entropy`, :func:`nll`, :func:`kl_divergence`) sum over the last
(class) axis and average over any axes between the batch and class axes (e.g. time steps).

Predictions and targets must have the same shape, except that a trailing axis of size 1 on
one side only is accepted (``(B, 1)`` vs ``(B,)``); anything else raises ``ValueError``
instead of broadcasting to ``(B, B)``.

Integer labels out of ``[0, C)`` cannot raise under ``jit``; the classification losses
return NaN for them, and :func:`check_labels` checks a whole label array on the host (the
training loop calls it once on the dataset).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nnkit._memo import memoised

Array = jax.Array
LossFn = Callable[..., Array]
PathFilter = Callable[..., bool]

__all__ = [
    "mse",
    "l1",
    "huber",
    "softmax_cross_entropy",
    "cross_entropy",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy",
    "nll",
    "kl_divergence",
    "check_labels",
    "reduce",
    "weighted_sum",
    "multi_task",
    "weights_only",
    "l1_penalty",
    "l2_penalty",
    "LOSSES",
    "get",
]

_REDUCTIONS = ("mean", "sum", "none")


# ----------------------------------------------------------------------------- helpers


def reduce(per_example: Array, reduction: str = "mean") -> Array:
    """Reduces per-example values ``(B,)``: ``"mean"``/``"sum"`` -> scalar, ``"none"`` as is."""
    if reduction == "mean":
        return jnp.mean(per_example)
    if reduction == "sum":
        return jnp.sum(per_example)
    if reduction == "none":
        return per_example
    raise ValueError(f"unknown reduction {reduction!r}; known: {list(_REDUCTIONS)}")


def _check_reduction(fn: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{fn}: unknown reduction {reduction!r}; known: {list(_REDUCTIONS)}")


def _per_example_mean(values: Array) -> Array:
    """Mean over every axis but the first: ``(B, ...) -> (B,)``."""
    return jnp.mean(values.reshape(values.shape[0], -1), axis=1)


def _float(x: Any) -> Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _align(fn: str, predictions: Any, targets: Any) -> tuple[Array, Array]:
    """Float arrays of one shape; a lone trailing size-1 axis is squeezed, never broadcast."""
    p, t = _float(predictions), _float(targets)
    if p.ndim == 0:
        raise ValueError(f"{fn}: predictions must have a leading batch axis, got a scalar")
    if p.shape != t.shape:
        if p.shape == (*t.shape, 1):
            p = p[..., 0]
        elif t.shape == (*p.shape, 1):
            t = t[..., 0]
        else:
            raise ValueError(
                f"{fn}: predictions shape {p.shape} != targets shape {t.shape} "
                "(only a trailing size-1 axis on one side is accepted)"
            )
    if p.ndim == 0:
        raise ValueError(f"{fn}: predictions must have a leading batch axis, got shape {p.shape}")
    return p, t


def _class_targets(
    fn: str, scores: Array, labels: Any, label_smoothing: float = 0.0
) -> tuple[Array | None, Array | None]:
    """Splits ``labels`` into ``(int_labels, None)`` or ``(None, prob_labels)``.

    Integer labels have shape ``scores.shape[:-1]`` and an integer dtype; probability /
    one-hot labels have shape ``scores.shape``.
    """
    labels = jnp.asarray(labels)
    if scores.ndim < 2:
        raise ValueError(f"{fn}: expected scores of shape (B, ..., C), got {scores.shape}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"{fn}: label_smoothing must be in [0, 1), got {label_smoothing}")
    if labels.shape == scores.shape[:-1]:
        if not jnp.issubdtype(labels.dtype, jnp.integer):
            raise ValueError(
                f"{fn}: labels of shape {labels.shape} (one per example) must be integer class "
                f"ids, got dtype {labels.dtype}; cast with .astype(int) or pass one-hot labels "
                f"of shape {scores.shape}"
            )
        return labels, None
    if labels.shape == scores.shape:
        return None, _float(labels)
    raise ValueError(
        f"{fn}: labels shape {labels.shape} fits neither integer labels {scores.shape[:-1]} "
        f"nor one-hot/probability labels {scores.shape} for scores of shape {scores.shape}"
    )


def _pick(log_p: Array, labels: Array) -> Array:
    """``log_p[..., labels]``; NaN where a label is outside ``[0, C)`` (no silent wrap).

    Picked with a one-hot mask, ``sum_c [c == label] log_p_c``, rather than a gather: the
    value is the same (one term plus zeros), its gradient ``[c == label] g`` is
    element-wise and fuses with the softmax's instead of being a scatter, and the step
    compiles fewer kernels (a 2-16-16-2 MLP's train step: ~12% less XLA compile time on a
    CPU).
    """
    c = log_p.shape[-1]
    ids = lax.broadcasted_iota(jnp.int32, log_p.shape, log_p.ndim - 1)
    hit = ids == labels[..., None].astype(jnp.int32)
    picked = jnp.sum(jnp.where(hit, log_p, 0.0), axis=-1)
    ok = (labels >= 0) & (labels < c)
    return jnp.where(ok, picked, jnp.nan)


def _xlogy_sum(p: Array, log_q: Array) -> Array:
    """``sum_c p_c * log_q_c`` over the last axis with ``0 * log 0 = 0`` (and 0 gradient)."""
    return jnp.sum(jnp.where(p > 0, p * jnp.where(p > 0, log_q, 0.0), 0.0), axis=-1)


def check_labels(labels: Any, num_classes: int) -> None:
    """Host-side check that integer ``labels`` lie in ``[0, num_classes)``.

    The losses cannot raise under ``jit`` (they return NaN for a bad label), so the training
    loop calls this once on the whole dataset before training.

    Raises:
      ValueError: naming the first offending index and value (and how many are bad), or a
        non-integer dtype.
    """
    arr = np.asarray(labels)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integer class ids, got dtype {arr.dtype}")
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    bad = (arr < 0) | (arr >= num_classes)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        where = first[0] if len(first) == 1 else first
        raise ValueError(
            f"label {int(arr[first])} at index {where} is outside [0, {num_classes}) "
            f"({int(bad.sum())} bad label(s) of {arr.size})"
        )


# ----------------------------------------------------------------------------- regression


def mse(predictions: Any, targets: Any, *, reduction: str = "mean") -> Array:
    """Mean squared error: ``mean_i (p_i - t_i)^2`` over each example, then ``reduction``.

    Note: ``optax.l2_loss`` is *half* the squared error, ``0.5 * (p - t)^2``; this is the
    full squared error (no 1/2), so its gradient is ``2 (p - t) / n``.
    Shapes: ``(B, ...)`` both; ``reduction="none"`` gives ``(B,)``.
    """
    _check_reduction("mse", reduction)
    p, t = _align("mse", predictions, targets)
    return reduce(_per_example_mean(jnp.square(p - t)), reduction)


def _abs(x: Array) -> Array:
    """``|x|`` with derivative ``sign(x)``: 0 at 0 (the subgradient PyTorch uses), where
    ``jnp.abs``'s is 1 -- which would push an exact prediction, or a weight at exactly 0
    under an L1 penalty, off its minimum."""
    return jnp.sign(x) * x


def l1(predictions: Any, targets: Any, *, reduction: str = "mean") -> Array:
    """Mean absolute error: ``mean_i |p_i - t_i|`` over each example, then ``reduction``.

    Shapes: ``(B, ...)`` both; ``reduction="none"`` gives ``(B,)``. (Optax has no L1 loss.)
    """
    _check_reduction("l1", reduction)
    p, t = _align("l1", predictions, targets)
    return reduce(_per_example_mean(_abs(p - t)), reduction)


def huber(
    predictions: Any, targets: Any, *, delta: float = 1.0, reduction: str = "mean"
) -> Array:
    """Huber loss averaged over each example, then ``reduction``.

    Per element with ``r = p - t``: ``0.5 r^2`` if ``|r| <= delta`` else
    ``delta (|r| - 0.5 delta)`` (same as ``optax.huber_loss``).
    """
    _check_reduction("huber", reduction)
    if delta <= 0:
        raise ValueError(f"huber: delta must be positive, got {delta}")
    p, t = _align("huber", predictions, targets)
    a = jnp.abs(p - t)
    quad = jnp.minimum(a, delta)  # this form has a continuous gradient and no branch NaNs
    return reduce(_per_example_mean(0.5 * quad**2 + delta * (a - quad)), reduction)


# ----------------------------------------------------------------------------- classification


def softmax_cross_entropy(
    logits: Any,
    labels: Any,
    *,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> Array:
    """Cross entropy of ``softmax(logits)`` against class labels.

    ``CE = -sum_c y_c log softmax(z)_c`` with ``log softmax = z - logsumexp(z)`` (stable for
    huge logits). Its gradient is ``softmax(z) - y`` per position.

    Args:
      logits: ``(B, C)`` (or ``(B, ..., C)``; extra axes are averaged per example).
      labels: integer class ids of shape ``(B,)`` / ``(B, ...)``, or one-hot / probability
        labels of the same shape as ``logits`` (detected by rank, checked by dtype).
        Integer labels outside ``[0, C)`` give NaN (see :func:`check_labels`).
      label_smoothing: ``eps`` in ``[0, 1)``; targets become ``(1 - eps) y + eps / C``.
      reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per-example ``(B,)``).
    """
    _check_reduction("softmax_cross_entropy", reduction)
    z = _float(logits)
    int_labels, probs = _class_targets("softmax_cross_entropy", z, labels, label_smoothing)
    log_p = jax.nn.log_softmax(z, axis=-1)
    if int_labels is not None:
        loss = -_pick(log_p, int_labels)
        if label_smoothing:
            eps = label_smoothing
            loss = (1.0 - eps) * loss - eps * jnp.mean(log_p, axis=-1)
    else:
        if label_smoothing:
            probs = (1.0 - label_smoothing) * probs + label_smoothing / z.shape[-1]
        loss = -_xlogy_sum(probs, log_p)
    return reduce(_per_example_mean(loss), reduction)


cross_entropy = softmax_cross_entropy


def nll(log_probs: Any, labels: Any, *, reduction: str = "mean") -> Array:
    """Negative log-likelihood of already-normalised log-probabilities.

    ``NLL = -log_probs[label]`` for integer labels ``(B,)``, or ``-sum_c y_c log_probs_c``
    for one-hot / probability labels ``(B, C)``. Use after a ``LogSoftmax`` layer; with raw
    logits use :func:`softmax_cross_entropy`. Out-of-range integer labels give NaN.
    """
    _check_reduction("nll", reduction)
    lp = _float(log_probs)
    int_labels, probs = _class_targets("nll", lp, labels)
    loss = -_pick(lp, int_labels) if int_labels is not None else -_xlogy_sum(probs, lp)
    return reduce(_per_example_mean(loss), reduction)


def kl_divergence(log_q_pred: Any, p_target: Any, *, reduction: str = "mean") -> Array:
    """``KL(p || q) = sum_c p_c (log p_c - log q_c)`` over the last axis, ``0 log 0 = 0``.

    Args:
      log_q_pred: the model's *log*-probabilities ``log q``, shape ``(B, ..., C)`` (e.g. a
        ``LogSoftmax`` output).
      p_target: the target *probabilities* ``p`` (not logs), same shape; entries with
        ``p_c = 0`` contribute 0 (and 0 gradient) even where ``log q_c = -inf``.
      reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per-example ``(B,)``).
    """
    _check_reduction("kl_divergence", reduction)
    log_q = _float(log_q_pred)
    p = _float(p_target)
    if p.shape != log_q.shape or log_q.ndim < 2:
        raise ValueError(
            f"kl_divergence: log_q_pred {log_q.shape} and p_target {p.shape} must have the "
            "same shape (B, ..., C)"
        )
    safe_p = jnp.where(p > 0, p, 1.0)
    kl = _xlogy_sum(p, jnp.log(safe_p)) - _xlogy_sum(p, log_q)
    return reduce(_per_example_mean(kl), reduction)


def binary_cross_entropy_with_logits(
    logits: Any, targets: Any, *, reduction: str = "mean"
) -> Array:
    """Binary cross entropy of ``sigmoid(logits)`` against targets in ``[0, 1]``.

    Per element ``-(t log sigmoid(z) + (1 - t) log sigmoid(-z))`` in log-sigmoid form, so
    values and the gradient ``sigmoid(z) - t`` are exact and finite at ``|z| = 1000``.
    Averaged over each example's elements. ``(B, 1)`` logits with ``(B,)`` targets are fine.
    """
    _check_reduction("binary_cross_entropy_with_logits", reduction)
    z, t = _align("binary_cross_entropy_with_logits", logits, targets)
    per = -(t * jax.nn.log_sigmoid(z) + (1.0 - t) * jax.nn.log_sigmoid(-z))
    return reduce(_per_example_mean(per), reduction)


def binary_cross_entropy(
    probs: Any, targets: Any, *, eps: float = 1e-7, reduction: str = "mean"
) -> Array:
    """Binary cross entropy from probabilities ``p`` (e.g. a ``Sigmoid`` output).

    Per element ``-(t log p + (1 - t) log(1 - p))`` with ``p`` clipped to ``[eps, 1 - eps]``
    (so at most ``-log eps`` ~ 16.1; the gradient is 0 where clipping is active), computed
    in at least float32: in bfloat16/float16 ``1 - eps`` rounds to 1 and a confident
    correct prediction would give ``0 * log 0 = NaN``. Prefer
    :func:`binary_cross_entropy_with_logits`, which needs no clipping.
    """
    _check_reduction("binary_cross_entropy", reduction)
    p, t = _align("binary_cross_entropy", probs, targets)
    p, t = (a.astype(jnp.promote_types(a.dtype, jnp.float32)) for a in (p, t))
    p = jnp.clip(p, eps, 1.0 - eps)
    per = -(t * jnp.log(p) + (1.0 - t) * jnp.log1p(-p))
    return reduce(_per_example_mean(per), reduction)


# ----------------------------------------------------------------------------- combinations


def weighted_sum(values: Mapping[str, Array], weights: Mapping[str, float]) -> Array:
    """``sum_i w_i * values_i`` over the names in ``weights`` (each must be in ``values``)."""
    missing = sorted(set(weights) - set(values))
    if missing:
        raise KeyError(f"weighted_sum: no value for {missing}; got {sorted(values)}")
    return sum(weights[k] * values[k] for k in weights)


@memoised(32)  # equal task lists give the same loss: programs keyed on it are found again
def multi_task(
    **tasks: LossFn | str | tuple[LossFn | str, float],
) -> Callable[..., tuple[Array, dict[str, Array]]]:
    """A loss over dicts of predictions and targets, one named loss per task.

    ``multi_task(label=("cross_entropy", 1.0), box=(mse, 0.5))`` returns
    ``loss(predictions, targets, *, reduction="mean") -> (total, parts)`` with
    ``total = sum_i w_i L_i(predictions[i], targets[i])`` and ``parts = {i: L_i}`` the
    *unweighted* per-task losses (for logging; under ``jax.value_and_grad(..., has_aux=True)``
    they come out as the aux). A task given as a bare loss (or name) has weight 1.
    ``predictions`` / ``targets`` may also be sequences in task order (a
    :func:`nnkit.fanout` model's outputs; ``fanout(..., as_dict=True)`` gives a dict keyed by
    the heads' names, which pairs heads and tasks by name instead; ``fit`` refuses a tuple
    fanout whose head names are the task names in another order). ``nnkit.fit`` /
    ``make_train_step`` accept it as ``loss=``: they train on ``total`` and log each part as
    the metric ``loss_<task>``.
    """
    if not tasks:
        raise ValueError("multi_task: give at least one task, e.g. label=('cross_entropy', 1.0)")
    fns: dict[str, LossFn] = {}
    weights: dict[str, float] = {}
    for name, spec in tasks.items():
        fn, w = spec if isinstance(spec, tuple) else (spec, 1.0)
        fns[name] = get(fn)
        weights[name] = float(w)

    names = tuple(fns)

    def by_task(tree: Any, what: str) -> Mapping[str, Any]:
        if isinstance(tree, tuple | list):  # e.g. a fanout model's outputs, in task order
            if len(tree) != len(names):
                raise ValueError(f"multi_task: {what} is a sequence of {len(tree)} but there "
                                 f"are {len(names)} tasks {list(names)}")
            return dict(zip(names, tree, strict=True))
        missing = sorted(set(names) - set(tree))
        if missing:
            raise KeyError(
                f"multi_task: {what} has no entry for task(s) {missing}; got {sorted(tree)}"
            )
        return tree

    def loss(predictions: Any, targets: Any, *,
             reduction: str = "mean") -> tuple[Array, dict[str, Array]]:
        p, t = by_task(predictions, "predictions"), by_task(targets, "targets")
        parts = {}
        for n, f in fns.items():
            try:
                parts[n] = f(p[n], t[n], reduction=reduction)
            except (TypeError, ValueError) as e:
                if type(e) not in (TypeError, ValueError):  # e.g. JAX's tracer errors
                    e.add_note(f"multi_task: in task {n!r}")
                    raise
                raise type(e)(f"multi_task: task {n!r}: {e}") from None
        return weighted_sum(parts, weights), parts

    @functools.cache  # one function per task: programs keyed on it reuse
    def part(task: str) -> Callable[[Any, Any], Array]:
        """``fn(predictions, targets) -> L_task`` (unweighted, mean): one task's loss."""
        def task_loss(predictions: Any, targets: Any) -> Array:
            return fns[task](by_task(predictions, "predictions")[task],
                             by_task(targets, "targets")[task])

        return task_loss

    loss.tasks = names  # type: ignore[attr-defined]  # fit logs each part as loss_<task>
    loss.weights = dict(weights)  # type: ignore[attr-defined]
    loss.part = part  # type: ignore[attr-defined]
    return loss


# ----------------------------------------------------------------------------- penalties


BIAS_AND_SCALE_NAMES = frozenset({"b", "bias", "scale"})
"""Leaf names :func:`weights_only` leaves out (with ``b_*``, e.g. an LSTM's ``b_ih``)."""


def weights_only(path: str) -> bool:
    """Default penalty filter: every leaf but biases and normalisation scales.

    Kept: kernels (``w``, a recurrent layer's ``w_ih``/``w_hh``, a custom layer's own names)
    and embedding tables; left out: leaves named ``b``, ``b_*``, ``bias`` or ``scale``.
    """
    name = path.rsplit("/", 1)[-1]
    return not (name in BIAS_AND_SCALE_NAMES or name.startswith("b_"))


def _path_str(path: tuple) -> str:
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        else:
            parts.append(str(k))
    return "/".join(parts)


def _takes_leaf(fn: Callable) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    positional = [
        p for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    varargs = any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values())
    return len(positional) >= 2 or varargs


def _selected(params: Any, filter: PathFilter | None) -> list[Array]:
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if filter is None:
        return [leaf for _, leaf in leaves]
    two = _takes_leaf(filter)
    out = []
    for path, leaf in leaves:
        p = _path_str(path)
        if filter(p, leaf) if two else filter(p):
            out.append(leaf)
    return out


def l1_penalty(params: Any, *, filter: PathFilter | None = weights_only) -> Array:
    """``sum |w|`` over the selected leaves (a scalar; 0 when none is selected).

    ``filter`` picks leaves by their path string (``"hidden/w"``): ``filter(path) -> bool``
    or ``filter(path, leaf) -> bool``; the default :func:`weights_only` skips biases and norm
    scales; ``None`` keeps every leaf. Multiply by your coefficient and add to the loss.
    """
    return sum((jnp.sum(_abs(x)) for x in _selected(params, filter)), jnp.float32(0.0))


def l2_penalty(params: Any, *, filter: PathFilter | None = weights_only) -> Array:
    """``sum w^2`` over the selected leaves -- no 1/2 factor (its gradient is ``2 w``).

    ``filter`` as in :func:`l1_penalty` (default :func:`weights_only`: all but biases and
    norm scales).
    """
    return sum((jnp.sum(jnp.square(x)) for x in _selected(params, filter)), jnp.float32(0.0))


# ----------------------------------------------------------------------------- registry


LOSSES: dict[str, LossFn] = {
    "mse": mse,
    "l1": l1,
    "huber": huber,
    "cross_entropy": softmax_cross_entropy,
    "binary_cross_entropy": binary_cross_entropy_with_logits,
    "bce_probs": binary_cross_entropy,
    "nll": nll,
    "kl": kl_divergence,
}


def get(name_or_fn: str | LossFn) -> LossFn:
    """A loss by config name (see :data:`LOSSES`); a callable is returned unchanged.

    ``"cross_entropy"`` is :func:`softmax_cross_entropy`, ``"binary_cross_entropy"`` takes
    *logits*, ``"bce_probs"`` takes probabilities, ``"kl"`` is :func:`kl_divergence`.
    """
    if callable(name_or_fn):
        return name_or_fn
    try:
        return LOSSES[name_or_fn]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name_or_fn!r}; known: {sorted(LOSSES)}") from None
