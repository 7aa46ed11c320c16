"""Evaluation metrics: pure, jittable ``jnp`` functions returning scalars (or small arrays).

Classification metrics accept model outputs directly: ``(B, C)`` logits or probabilities
(class = argmax; ties go to the lowest index), or ``(B, 1)`` single-logit binary outputs
(class 1 where the logit ``> threshold``, default 0, i.e. probability > 0.5). Labels are
integer class ids ``(B,)`` or one-hot ``(B, C)``. ``num_classes`` arguments are static
Python ints.

:func:`get` maps config names to functions ``metric(predictions, targets) -> scalar``.

Metrics that are not a mean of per-example values (``rmse``, ``r2``, ``macro_f1``) also carry
``metric.batch_stats(predictions, targets) -> stats`` and ``metric.from_stats(stacked) ->
scalar``, where ``stacked`` holds the stats of several batches along a new leading axis: so a
set evaluated batch by batch (:func:`nnkit.train.make_evaluator`: ``val_*``, ``test_*``,
``nnkit eval``) gets the metric of the whole set, not a mean of batch values (``train_*``
logs stay means of the per-step values, as the running figures of an epoch).
:func:`with_stats` attaches them to a metric of one's own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from nnkit._memo import memoised

Array = jax.Array
MetricFn = Callable[..., Array]

__all__ = [
    "lower_is_better",
    "monitor_mode",
    "accuracy",
    "top_k_accuracy",
    "confusion_matrix",
    "precision_recall_f1",
    "macro_f1",
    "mae",
    "mse",
    "rmse",
    "r2_score",
    "with_stats",
    "METRICS",
    "get",
]


LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "error", "perplexity")
"""Parts of a logged name (``val_loss``, ``train_mae``...) that mean lower is better."""


def lower_is_better(name: str) -> bool:
    """Whether a logged metric ``name`` improves downwards (losses, errors) or upwards
    (accuracy, R², F1)."""
    return any(s in name for s in LOWER_IS_BETTER)


def monitor_mode(monitor: str, mode: str) -> str:
    """``mode`` (``"min"``/``"max"``), or for ``"auto"`` the direction of ``monitor``."""
    if mode == "auto":
        return "min" if lower_is_better(monitor) else "max"
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
    return mode


def _class_ids(labels: Any, batch_shape: tuple[int, ...] | None = None) -> Array:
    """Integer labels ``(B,)`` as-is; one-hot ``(B, C)`` -> argmax; ``(B, 1)`` -> squeeze."""
    y = jnp.asarray(labels)
    if batch_shape is not None and y.shape == (*batch_shape, 1):
        y = y[..., 0]
    elif batch_shape is not None and y.ndim == len(batch_shape) + 1:
        y = jnp.argmax(y, axis=-1)
    elif batch_shape is not None and y.shape != batch_shape:
        raise ValueError(
            f"labels shape {y.shape} fits neither class ids {batch_shape} nor one-hot "
            f"{(*batch_shape, 'C')}"
        )
    return y.astype(jnp.int32)


def _predicted(predictions: Any, threshold: float = 0.0) -> Array:
    """Predicted class ids from logits/probabilities ``(B, C)``, ``(B, 1)``, or ids ``(B,)``."""
    p = jnp.asarray(predictions)
    if p.ndim >= 2 and p.shape[-1] == 1:
        return (p[..., 0] > threshold).astype(jnp.int32)
    if p.ndim >= 2:
        return jnp.argmax(p, axis=-1).astype(jnp.int32)
    if p.ndim == 1 and jnp.issubdtype(p.dtype, jnp.integer):
        return p.astype(jnp.int32)
    raise ValueError(
        f"predictions of shape {p.shape} and dtype {p.dtype} are ambiguous: pass scores "
        "(B, C), a single logit per example (B, 1), or integer class ids (B,)"
    )


def accuracy(logits_or_probs: Any, labels: Any, *, threshold: float = 0.0) -> Array:
    """Fraction of examples whose predicted class equals the label: ``mean(pred == y)``.

    ``(B, C)`` scores -> argmax; ``(B, 1)`` -> binary, class 1 where the score is
    ``> threshold`` (0 for logits; pass ``threshold=0.5`` for sigmoid probabilities);
    integer ``(B,)`` -> already class ids. Labels: ids ``(B,)`` / ``(B, 1)`` or one-hot.
    """
    pred = _predicted(logits_or_probs, threshold)
    y = _class_ids(labels, pred.shape)
    return jnp.mean((pred == y).astype(jnp.float32))


def top_k_accuracy(logits: Any, labels: Any, k: int = 5) -> Array:
    """Fraction of examples whose label is among the ``k`` highest scores of ``(B, C)``.

    Ties are broken towards the lower class index (as ``argmax``), so ``k=1`` equals
    :func:`accuracy`.
    """
    z = jnp.asarray(logits)
    if z.ndim < 2 or not 1 <= k <= z.shape[-1]:
        raise ValueError(f"top_k_accuracy: need scores (B, C) with 1 <= k <= C, got "
                         f"shape {z.shape} and k={k}")
    y = _class_ids(labels, z.shape[:-1])
    _, idx = jax.lax.top_k(z, k)
    return jnp.mean(jnp.any(idx == y[..., None], axis=-1).astype(jnp.float32))


def with_stats(fn: MetricFn, batch_stats: Callable[[Any, Any], Any],
               from_stats: Callable[[Any], Array]) -> MetricFn:
    """``fn`` with the two functions that make it exact over a set evaluated in batches:
    ``batch_stats(pred, y)`` -> a pytree of one batch's statistics (sums, counts, a confusion
    matrix), and ``from_stats(stacked)`` -> the metric from those of several batches stacked
    along a leading axis. ``from_stats(batch_stats(p, y)[None])`` must equal ``fn(p, y)``."""
    fn.batch_stats = batch_stats
    fn.from_stats = from_stats
    return fn


def confusion_matrix(preds_or_logits: Any, labels: Any, num_classes: int) -> Array:
    """``(K, K)`` int32 counts: entry ``[i, j]`` = examples of true class ``i`` predicted ``j``.

    Rows are true classes, columns predictions. Computed as ``onehot(y)^T @ onehot(pred)``
    (jittable, no scatter). Predictions: class ids ``(B,)``, scores ``(B, K)`` (argmax) or
    a single logit ``(B, 1)`` (threshold 0). Ids outside ``[0, K)`` are not counted.
    """
    pred = _predicted(preds_or_logits)
    y = _class_ids(labels, pred.shape)
    oy = jax.nn.one_hot(y.reshape(-1), num_classes, dtype=jnp.int32)
    op = jax.nn.one_hot(pred.reshape(-1), num_classes, dtype=jnp.int32)
    return oy.T @ op


def precision_recall_f1(
    labels: Any, preds: Any, num_classes: int, average: str | None = "macro"
) -> tuple[Array, Array, Array]:
    """Precision, recall and F1 from the confusion matrix (note: *labels first*).

    Per class ``c``: ``P_c = TP / (TP + FP)``, ``R_c = TP / (TP + FN)``,
    ``F1_c = 2 P_c R_c / (P_c + R_c)``; a class never predicted has ``P_c = 0``, a class
    with no examples ``R_c = 0``, and ``F1_c = 0`` when ``P_c + R_c = 0``.

    Args:
      labels: integer ids ``(B,)`` or one-hot ``(B, K)``.
      preds: class ids ``(B,)``, scores ``(B, K)`` or a single logit ``(B, 1)``.
      num_classes: ``K`` (static).
      average: ``"macro"``: unweighted mean of the per-class values over the classes that
        occur in ``labels`` or ``preds`` (as scikit-learn; F1 is the mean of ``F1_c``, not
        the F1 of the means); ``"micro"``: from the pooled counts (all three equal accuracy
        for single-label data); ``None`` / ``"none"``: per-class arrays ``(K,)``.

    Returns:
      ``(precision, recall, f1)``: scalars, or ``(K,)`` arrays for ``average=None``.
    """
    cm = confusion_matrix(preds, labels, num_classes).astype(jnp.float32)
    if average == "micro":
        acc = jnp.diag(cm).sum() / jnp.maximum(cm.sum(), 1.0)
        return acc, acc, acc
    precision, recall, f1, present = _per_class(cm)
    if average is None or average == "none":
        return precision, recall, f1
    if average != "macro":
        raise ValueError(f"unknown average {average!r}; known: 'macro', 'micro', None")
    n = jnp.maximum(present.sum(), 1.0)
    return (precision * present).sum() / n, (recall * present).sum() / n, (f1 * present).sum() / n


def _per_class(cm: Array) -> tuple[Array, Array, Array, Array]:
    """Per-class precision, recall, F1 and a 0/1 "class occurs" mask from a float confusion
    matrix (rows: true classes)."""
    tp, predicted, support = jnp.diag(cm), cm.sum(axis=0), cm.sum(axis=1)
    precision = jnp.where(predicted > 0, tp / jnp.maximum(predicted, 1.0), 0.0)
    recall = jnp.where(support > 0, tp / jnp.maximum(support, 1.0), 0.0)
    denom = precision + recall
    f1 = jnp.where(denom > 0, 2 * precision * recall / jnp.where(denom > 0, denom, 1.0), 0.0)
    return precision, recall, f1, ((support + predicted) > 0).astype(jnp.float32)


def _f1_counts(logits: Any, labels: Any, threshold: float = 0.0) -> Array:
    """The ``(K, K)`` confusion matrix :func:`macro_f1` reads."""
    z = jnp.asarray(logits)
    if z.ndim >= 2 and z.shape[-1] == 1:
        return confusion_matrix(_predicted(z, threshold), labels, 2)
    return confusion_matrix(z, labels, z.shape[-1])


def _macro_f1_of(cm: Array) -> Array:
    """Macro F1 from a confusion matrix (rows: true classes), as :func:`precision_recall_f1`
    (classes absent from both the labels and the predictions are left out)."""
    _, _, f1, present = _per_class(cm.astype(jnp.float32))
    return (f1 * present).sum() / jnp.maximum(present.sum(), 1.0)


def macro_f1(logits: Any, labels: Any, *, threshold: float = 0.0) -> Array:
    """Macro-averaged F1 of ``(B, C)`` scores against labels, ``C`` from the scores' shape;
    ``(B, 1)``: binary, class 1 where the score is ``> threshold`` (as :func:`accuracy`).
    Over batches: from the summed confusion matrices (``batch_stats``/``from_stats``)."""
    return _macro_f1_of(_f1_counts(logits, labels, threshold))


def _thresholded_f1(threshold: float) -> MetricFn:
    def f1(logits: Any, labels: Any) -> Array:
        return macro_f1(logits, labels, threshold=threshold)

    f1.__name__ = "macro_f1"
    return with_stats(f1, lambda z, y: _f1_counts(z, y, threshold),
                      lambda cms: _macro_f1_of(jnp.sum(cms, axis=0)))


with_stats(macro_f1, _f1_counts, lambda cms: _macro_f1_of(jnp.sum(cms, axis=0)))


def _regression_pair(fn: str, predictions: Any, targets: Any) -> tuple[Array, Array]:
    p = jnp.asarray(predictions, jnp.float32)
    t = jnp.asarray(targets, jnp.float32)
    if p.shape != t.shape:
        if p.shape == (*t.shape, 1):
            p = p[..., 0]
        elif t.shape == (*p.shape, 1):
            t = t[..., 0]
        else:
            raise ValueError(f"{fn}: predictions shape {p.shape} != targets shape {t.shape}")
    return p, t


def mae(predictions: Any, targets: Any) -> Array:
    """Mean absolute error over all elements: ``mean |p - t|``."""
    p, t = _regression_pair("mae", predictions, targets)
    return jnp.mean(jnp.abs(p - t))


def mse(predictions: Any, targets: Any) -> Array:
    """Mean squared error over all elements: ``mean (p - t)^2`` (no 1/2)."""
    p, t = _regression_pair("mse", predictions, targets)
    return jnp.mean(jnp.square(p - t))


def rmse(predictions: Any, targets: Any) -> Array:
    """Root mean squared error: ``sqrt(mse)``, in the targets' units. Over batches: the root
    of the pooled mean square (``batch_stats``/``from_stats``), not a mean of roots."""
    return jnp.sqrt(mse(predictions, targets))


def _rmse_stats(predictions: Any, targets: Any) -> dict[str, Array]:
    p, t = _regression_pair("rmse", predictions, targets)
    return {"se": jnp.sum(jnp.square(p - t)), "n": jnp.asarray(p.size, jnp.float32)}


with_stats(rmse, _rmse_stats, lambda s: jnp.sqrt(jnp.sum(s["se"]) / jnp.sum(s["n"])))


def r2_score(predictions: Any, targets: Any) -> Array:
    """Coefficient of determination ``R^2 = 1 - SS_res / SS_tot``.

    ``SS_res = sum_i (t_i - p_i)^2``, ``SS_tot = sum_i (t_i - mean(t))^2`` over the batch
    axis, per output column for ``(B, D)``, then averaged over columns. A constant target
    column (``SS_tot = 0``) scores 1 if predicted exactly, else 0 (as scikit-learn). Over
    batches: ``SS_tot`` about the mean of the whole set, from each batch's count, mean and
    ``SS_tot`` (Chan et al.'s pairwise update, no cancellation of large sums).
    """
    return _r2_of(jax.tree_util.tree_map(lambda a: a[None], _r2_stats(predictions, targets)))


def _r2_stats(predictions: Any, targets: Any) -> dict[str, Array]:
    p, t = _regression_pair("r2_score", predictions, targets)
    p = p.reshape(p.shape[0], -1)
    t = t.reshape(t.shape[0], -1)
    mean = jnp.mean(t, axis=0)
    return {"n": jnp.asarray(t.shape[0], jnp.float32), "mean": mean,
            "ss_tot": jnp.sum(jnp.square(t - mean), axis=0),
            "ss_res": jnp.sum(jnp.square(t - p), axis=0)}


def _r2_of(s: dict[str, Array]) -> Array:
    """R^2 from the stats of ``k`` batches stacked on axis 0 (``n (k,)``, the rest
    ``(k, D)``): ``SS_tot = sum_b SS_tot_b + sum_b n_b (mean_b - mean)^2``."""
    n = s["n"][:, None]
    total = jnp.sum(n, axis=0)
    mean = jnp.sum(n * s["mean"], axis=0) / total
    ss_tot = jnp.sum(s["ss_tot"], axis=0) + jnp.sum(n * jnp.square(s["mean"] - mean), axis=0)
    ss_res = jnp.sum(s["ss_res"], axis=0)
    r2 = jnp.where(
        ss_tot > 0,
        1.0 - ss_res / jnp.where(ss_tot > 0, ss_tot, 1.0),
        jnp.where(ss_res == 0, 1.0, 0.0),
    )
    return jnp.mean(r2)


with_stats(r2_score, _r2_stats, _r2_of)


METRICS: dict[str, MetricFn] = {
    "accuracy": accuracy,
    "macro_f1": macro_f1,
    "mae": mae,
    "mse": mse,
    "rmse": rmse,
    "r2": r2_score,
    "r2_score": r2_score,
}

_TOP_K = re.compile(r"top_(\d+)_accuracy")


THRESHOLD_METRICS = frozenset({"accuracy", "macro_f1"})
"""Named metrics that read a binary ``(B, 1)`` output through a ``threshold``."""


@memoised(64)  # the same function for the same name: programs keyed on it are found again
def get(name_or_fn: str | MetricFn, *, threshold: float | None = None) -> MetricFn:
    """A metric ``fn(predictions, targets) -> scalar`` by config name; callables pass through.

    Names: those in :data:`METRICS` and ``"top_{k}_accuracy"`` (e.g. ``"top_5_accuracy"``).
    ``threshold``: for :data:`THRESHOLD_METRICS` on a binary ``(B, 1)`` output, class 1 where
    the output is above it: ``None`` keeps their default 0 (logits); ``0.5`` for
    probabilities (a ``Sigmoid`` output trained with ``"bce_probs"``).
    """
    if callable(name_or_fn):
        return name_or_fn
    if isinstance(name_or_fn, str):
        if name_or_fn in METRICS:
            fn = METRICS[name_or_fn]
            if threshold is None or name_or_fn not in THRESHOLD_METRICS:
                return fn
            if fn is macro_f1:
                return _thresholded_f1(threshold)

            def thresholded(predictions: Any, targets: Any) -> Array:
                return fn(predictions, targets, threshold=threshold)

            thresholded.__name__ = name_or_fn
            return thresholded
        m = _TOP_K.fullmatch(name_or_fn)
        if m and int(m.group(1)) >= 1:
            k = int(m.group(1))

            def top_k(logits: Any, labels: Any) -> Array:
                return top_k_accuracy(logits, labels, k)

            top_k.__name__ = name_or_fn
            return top_k
    raise ValueError(
        f"unknown metric {name_or_fn!r}; known: {sorted(METRICS) + ['top_{k}_accuracy']}"
    )
