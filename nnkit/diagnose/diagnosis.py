""":func:`diagnose`: six pre-training checks of a model and its data, in plain words.

All model computations run in training mode (``train=True``: dropout on, BatchNorm on batch
statistics) with a fixed key, i.e. the network as the first training step sees it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnkit import losses, metrics
from nnkit._memo import memoised
from nnkit.core import Layer, Params, State
from nnkit.diagnose import checks as C
from nnkit.diagnose.probe import group_norms, make_layer_outputs, param_groups, to_key
from nnkit.diagnose.report import CHECKS, Finding, Report, Thresholds

__all__ = [
    "diagnose", "diagnose_dataset", "reference_loss", "uninformative_output", "overfit_curve",
]

# Losses over class scores, and what their predictions are.
_CLASS_LOSSES = {
    losses.softmax_cross_entropy: "logits",
    losses.nll: "log_probs",
    losses.binary_cross_entropy_with_logits: "binary_logits",
    losses.binary_cross_entropy: "binary_probs",
}


def uninformative_output(loss_fn: Callable, num_outputs: int) -> tuple[float, str]:
    """The constant output that knows nothing for ``loss_fn``, and its loss in words.

    Softmax CE: zero logits (uniform), loss ``ln C``; NLL: ``log(1/C)`` everywhere, ``ln C``;
    binary CE: logit 0 / probability 0.5, ``ln 2``; any other loss: an all-zero output
    (e.g. ``mean(y^2)`` for MSE: what a small random init predicts).
    """
    kind = _CLASS_LOSSES.get(loss_fn)
    c = num_outputs
    if kind == "logits":
        return 0.0, f"ln {c} = {math.log(c):.3g}, uniform over {c} classes"
    if kind == "log_probs":
        return -math.log(c), f"ln {c} = {math.log(c):.3g}, uniform over {c} classes"
    if kind == "binary_logits":
        return 0.0, "ln 2, p = 0.5"
    if kind == "binary_probs":
        return 0.5, "ln 2, p = 0.5"
    return 0.0, "the loss of an all-zero output"


def reference_loss(
    loss_fn: Callable, predictions: jax.Array, targets: Any
) -> tuple[jax.Array, str]:
    """The loss of the :func:`uninformative_output` of ``predictions``' shape, and what it is.

    Only the shape and dtype of ``predictions`` matter. Jit-compatible for the value (the
    description is a static string).
    """
    const, what = uninformative_output(loss_fn, predictions.shape[-1])
    ref = loss_fn(jnp.full(predictions.shape, const, predictions.dtype), targets)
    return ref, what


def overfit_curve(
    model: Layer,
    params: Params,
    state: State,
    x: jax.Array,
    y: jax.Array,
    *,
    loss_fn: Callable,
    optimizer: optax.GradientTransformation,
    steps: int,
    key: jax.Array,
) -> tuple[jax.Array, Params, State]:
    """Trains on one batch for ``steps`` steps (one ``lax.scan``, compiled once).

    Returns the loss before each step and after the last, shape ``(steps + 1,)``, and the
    final params and state. Step ``t`` uses key ``fold_in(key, t)`` in training mode. The
    program is compiled once per model, loss, optimizer, step count and shapes.
    """
    return _overfit_run(model, loss_fn, optimizer, steps)(params, state, x, y, key)


@memoised(8)
def _overfit_run(model: Layer, loss_fn: Callable, optimizer: Any, steps: int) -> Callable:
    """The jitted ``run(params, state, x, y, key)`` of :func:`overfit_curve`."""

    def loss_of(p, s, x, y, k):
        pred, s2 = model.apply(p, s, x, key=k, train=True)
        return loss_fn(pred, y), s2

    @jax.jit
    def run(p, s, x, y, key):
        def step(carry, t):
            p, s, o = carry
            (loss, s2), g = jax.value_and_grad(loss_of, has_aux=True)(
                p, s, x, y, jax.random.fold_in(key, t))
            upd, o = optimizer.update(g, o, p)
            return (optax.apply_updates(p, upd), s2, o), loss

        (p, s, _), curve = jax.lax.scan(step, (p, s, optimizer.init(p)), jnp.arange(steps))
        last, _ = loss_of(p, s, x, y, jax.random.fold_in(key, steps))
        return jnp.append(curve, last), p, s

    return run


@jax.jit
def _split4(key: jax.Array) -> tuple[jax.Array, ...]:
    return tuple(jax.random.split(key, 4))


_permutation = jax.jit(jax.random.permutation, static_argnums=1)


@memoised(8)
def _programs(model: Layer, loss_fn: Callable, shape: tuple, with_acc: bool,
              threshold: float) -> SimpleNamespace:
    """:func:`diagnose`'s jitted programs for one model, loss and input shape, memoised
    so that diagnosing the same model again compiles nothing."""

    def apply_train(p, s, xx, k):
        return model.apply(p, s, xx, key=k, train=True)[0]

    @jax.jit
    def initial(p, s, xx, yy, k):
        pred = apply_train(p, s, xx, k)
        return loss_fn(pred, yy), jnp.std(pred), reference_loss(loss_fn, pred, yy)[0]

    @jax.jit
    def finish(p, s, xx, yy):
        pred = model.apply(p, s, xx, train=False)[0]
        acc = metrics.accuracy(pred, yy, threshold=threshold) if with_acc else jnp.nan
        return acc, reference_loss(loss_fn, jnp.zeros(pred.shape, jnp.float32), yy)[0]

    @jax.jit
    def grad_norms(p, s, xx, yy, k):
        g = jax.grad(lambda q: loss_fn(apply_train(q, s, xx, k), yy))(p)
        return group_norms(g), group_norms(p)

    return SimpleNamespace(
        init=jax.jit(lambda k: model.init(k, shape)[1:]),
        initial=initial, finish=finish, grad_norms=grad_norms,
        layer_outputs=make_layer_outputs(model, train=True),
    )


_DEFAULT_OPTIMIZER = optax.adam(1e-3)


def _classification(loss_fn: Callable, y: np.ndarray, num_classes: int | None) -> bool:
    if loss_fn in _CLASS_LOSSES:
        return True
    return num_classes is not None and np.issubdtype(y.dtype, np.integer)


def diagnose(
    model: Layer,
    x: Any,
    y: Any,
    *,
    loss: str | Callable = "cross_entropy",
    num_classes: int | None = None,
    key: Any = 0,
    params: Params | None = None,
    state: State | None = None,
    optimizer: optax.GradientTransformation | None = None,
    batch_size: int = 64,
    checks: Sequence[str] | None = None,
    overfit_steps: int = 300,
    eval_size: int = 1024,
    thresholds: Thresholds | None = None,
) -> Report:
    """Checks a model and its data before training; returns a :class:`Report`.

    The checks (see :class:`Thresholds` for each rule and its justification):

    1. ``inputs``: NaN/inf, values up to 255, means far from 0, stds far from 1, features on
       very different scales -> standardise with training-split statistics.
    2. ``labels``: labels out of range, absent classes, ``largest/smallest`` class ratio.
    3. ``initial_loss``: the loss at init on ``eval_size`` examples against an uninformative
       output's loss (``ln C`` for softmax cross entropy).
    4. ``overfit``: ``overfit_steps`` steps of ``optimizer`` (Adam, lr 1e-3) on one batch of
       ``batch_size`` examples must drive the loss below 10 % of the uninformative loss
       (``0.1 ln C``) or reach 100 % accuracy on it.
    5. ``activations``: per-layer outputs on that batch: fraction of saturated sigmoid/tanh
       outputs, fraction of ReLU units dead on the whole batch.
    6. ``gradients``: per-layer gradient norms on that batch; first/last ratio
       ``< 1e-3`` (vanishing) or ``> 1e3`` (exploding), layers with zero gradient.

    Args:
      model: any :class:`~nnkit.core.Layer`; per-layer activations need a (nested) serial.
      x: inputs ``(n, *input_shape)``, NumPy or JAX.
      y: targets ``(n, ...)``: class ids ``(n,)``, one-hot ``(n, C)`` or real values.
      loss: a name from ``nnkit.losses.LOSSES`` or ``loss(predictions, targets) -> scalar``.
      num_classes: for the label check; inferred from the output size for class losses.
      key: int seed or JAX key: init (when ``params`` is ``None``), batch choice, dropout.
      params, state: diagnose these instead of a fresh ``model.init`` (``state`` default ``{}``).
      optimizer: for the overfitting check; default ``optax.adam(1e-3)``.
      batch_size: examples in the probe batch (activations, gradients, overfitting).
      checks: a subset of :data:`~nnkit.diagnose.report.CHECKS` to run (default: all).
      overfit_steps: optimisation steps of the overfitting check.
      eval_size: at most this many (random) examples enter the initial loss.
      thresholds: override the rules' limits.

    Raises:
      ValueError: mismatched ``x``/``y`` lengths, an unknown check or loss.
    """
    th = thresholds or Thresholds()
    wanted = tuple(CHECKS if checks is None else checks)
    unknown = sorted(set(wanted) - set(CHECKS))
    if unknown:
        raise ValueError(f"diagnose: unknown check(s) {unknown}; known: {list(CHECKS)}")
    if not isinstance(model, Layer):
        raise TypeError(f"diagnose: expected an nnkit Layer as model, got {type(model).__name__}")
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"diagnose: x {x.shape} and y {y.shape} need the same number of "
                         "examples (first axis)")
    if batch_size < 1 or overfit_steps < 1:
        raise ValueError("diagnose: batch_size and overfit_steps must be positive")
    loss_fn = losses.get(loss)
    n = x.shape[0]
    # Everything on the device runs in a few jitted functions: eager op-by-op dispatch
    # would compile each primitive separately (dozens of tiny compilations).
    # Data-only checks (inputs, labels) allocate nothing: params stay abstract.
    uses_model = bool(set(wanted) - {"inputs", "labels"})
    k_init, k_perm, k_apply, k_fit = _split4(to_key(key))
    shape = tuple(x.shape[1:])
    with_acc = loss_fn in _CLASS_LOSSES  # accuracy on the overfitted batch
    # binary outputs: class 1 where a logit is > 0, a probability > 0.5
    threshold = 0.5 if _CLASS_LOSSES.get(loss_fn) == "binary_probs" else 0.0
    progs = _programs(model, loss_fn, shape, with_acc, threshold)
    if params is None:
        params, state = (progs.init(k_init) if uses_model
                         else jax.eval_shape(progs.init, k_init))
    state = {} if state is None else state
    order = np.asarray(_permutation(k_perm, n)) if uses_model else np.arange(n)
    xb, yb = x[order[:batch_size]], y[order[:batch_size]]
    xe, ye = x[order[:eval_size]], y[order[:eval_size]]

    pred_shape = jax.eval_shape(
        lambda p, s, xx: model.apply(p, s, xx, key=k_apply, train=True)[0],
        params, state, xe[:1]).shape
    if num_classes is None and with_acc:
        binary = _CLASS_LOSSES[loss_fn].startswith("binary")
        num_classes = 2 if binary else int(pred_shape[-1])
    classification = _classification(loss_fn, y, num_classes)

    report = Report()

    def add(finding: Finding, numbers: dict | None = None) -> None:
        report.findings.append(finding)
        if numbers:
            report.numbers[finding.check] = numbers

    if "inputs" in wanted:
        add(*C.check_inputs(x, th))
    if "labels" in wanted:
        add(*C.check_labels(y, num_classes if classification else None, th))
    if "initial_loss" in wanted:
        l0, out_std, ref = (float(v) for v in progs.initial(params, state, xe, ye, k_apply))
        what = uninformative_output(loss_fn, pred_shape[-1])[1]
        add(C.check_initial_loss(l0, ref, what=what, output_std=out_std, th=th),
            {"loss": l0, "expected": ref, "output_std": out_std})
    if "overfit" in wanted:
        opt = optimizer if optimizer is not None else _DEFAULT_OPTIMIZER
        curve, p_fit, s_fit = overfit_curve(model, params, state, xb, yb, loss_fn=loss_fn,
                                            optimizer=opt, steps=overfit_steps, key=k_fit)
        acc, ref_b = (float(v) for v in progs.finish(p_fit, s_fit, xb, yb))
        acc = acc if with_acc else None
        curve = np.asarray(curve)
        add(C.check_overfit(curve, reference=ref_b, accuracy=acc, th=th),
            {"curve": curve, "initial": float(curve[0]), "final": float(curve[-1]),
             "accuracy": acc, "steps": overfit_steps, "batch_size": int(xb.shape[0]),
             "reference": ref_b, "target": th.overfit_ratio * ref_b})
    if "activations" in wanted:
        names, outputs = progs.layer_outputs
        ys = outputs(params, state, xb, k_apply)
        stats = {p: C.activation_stats(kind, np.asarray(v))
                 for (p, kind), v in zip(names, ys, strict=True)}
        add(C.check_activations(stats, th), stats)
    if "gradients" in wanted:
        g, w = jax.device_get(progs.grad_norms(params, state, xb, yb, k_apply))
        order = list(param_groups(params, model))  # application order (jit sorts dict keys)
        g = {k: float(g[k]) for k in order}
        w = {k: w[k] for k in order}
        finding, nums = C.check_gradients(g, th)
        add(finding, {**nums, "norms": g, "param_norms": {k: float(v) for k, v in w.items()}})
    return report


def diagnose_dataset(model: Layer, dataset: Any, **kwargs: Any) -> Report:
    """:func:`diagnose` on an ``nnkit.data`` ``Dataset``'s training arrays.

    The loss defaults to ``"cross_entropy"`` for classification and ``"mse"`` otherwise;
    ``num_classes`` comes from the dataset. Other keyword arguments go to :func:`diagnose`.
    """
    task = getattr(dataset, "task", "classification")
    kwargs.setdefault("loss", "cross_entropy" if task == "classification" else "mse")
    kwargs.setdefault("num_classes", getattr(dataset, "num_classes", None))
    return diagnose(model, dataset.x, dataset.y, **kwargs)
