"""The jitted train step and evaluation step.

``step(train_state, (x, y)) -> (train_state, metrics)`` does, in one compiled call:
per-step key ``fold_in(step_key, step)`` -> augment -> forward (``train=True``) -> loss
(+ penalties) -> ``jax.value_and_grad`` -> ``optimizer.update`` -> ``apply_updates``.

With a precision ``policy`` (:mod:`nnkit.precision`) the model computes in the policy's
dtype and, for a float16 policy, the objective is multiplied by the loss scale ``s``
before differentiation and the gradients divided by ``s`` after (before any clipping), so
the optimizer sees the gradient of the unscaled loss. A dynamic scale (float16's default)
reads ``s`` from ``train_state.loss_scale`` and, when the gradients are not all finite,
keeps the step's state as it was (``jnp.where`` on every leaf, no conditional) and lowers
``s`` (:func:`nnkit.precision.loss_scale_update`); a static ``s`` is a constant of the
program. float32 and bfloat16 policies have no loss scale and compile the same program as
no policy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

from nnkit import precision
from nnkit._checks import check_int
from nnkit._memo import memoised
from nnkit.core import Layer
from nnkit.optim import get_lr
from nnkit.train.gradients import (
    accumulated_grads,
    batch_grads,
    check_per_example,
    clip_per_example,
    make_objective,
    per_example_value_and_grads,
    resolve_loss,
    resolve_metrics,
)
from nnkit.train.state import TrainState, split_train_key

__all__ = [
    "make_train_step", "make_eval_step", "make_evaluator", "global_grad_norm", "apply_policy",
    "GRAD_MODES",
]

GRAD_MODES = ("batch", "accumulate", "per_example")
Batch = tuple[Any, Any]
Metrics = dict[str, jax.Array]


def global_grad_norm(grads: Any) -> jax.Array:
    """Global L2 norm ``sqrt(sum_leaves sum g^2)`` (same value as ``optax.tree.norm``).

    Written as ``|g| * |g|`` on purpose: XLA would otherwise merge this ``g * g`` with the
    ``g ** 2`` inside Adam/RMSProp's second-moment update and write the squares to memory as
    a separate array (about +10% step time on a CPU MLP); this way each reduction reads the
    gradient once and the optimizer's square stays fused.
    """
    leaves = jax.tree_util.tree_leaves(grads)
    sq = sum((jnp.sum(jnp.abs(g) * jnp.abs(g), dtype=jnp.float32) for g in leaves),
             jnp.zeros((), jnp.float32))
    return jnp.sqrt(sq)


def _wrap(model: Layer, pol: precision.Policy) -> Layer:
    if dict(model.meta).get("dtype_policy") == pol.name:
        return model  # already computes under these dtypes
    return precision.with_policy(model, pol)


_cached_wrap = functools.lru_cache(maxsize=32)(_wrap)


def apply_policy(model: Layer, policy: precision.Policy | str | None) -> Layer:
    """``model`` under a precision ``policy`` (:func:`nnkit.precision.with_policy`), or ``model``
    itself when ``policy`` is ``None`` or the model already carries the policy's dtypes.

    Memoised on ``(model, policy)``, so wrapping the same model twice gives the same
    :class:`Layer` (and ``fit`` reuses its compiled functions)."""
    if policy is None:
        return model
    pol = precision.get_policy(policy)
    try:
        return _cached_wrap(model, pol)
    except TypeError:  # unhashable meta
        return _wrap(model, pol)


def _mean_state(st: Any) -> Any:
    """Per-example model states ``(B, ...)`` -> one state (mean of floats, first of ints)."""

    def f(a):
        return jnp.mean(a, axis=0) if jnp.issubdtype(a.dtype, jnp.floating) else a[0]

    return jax.tree_util.tree_map(f, st)


def make_train_step(
    model: Layer,
    loss_fn: str | Callable,
    optimizer: optax.GradientTransformation,
    *,
    metrics: Sequence[str | Callable] | dict[str, Callable] | None = None,
    grad_mode: str = "batch",
    microbatches: int = 1,
    l1: float = 0.0,
    l2: float = 0.0,
    augment: Callable[[jax.Array, Any], Any] | None = None,
    jit: bool = True,
    donate: bool = True,
    per_example_clip: float | None = None,
    log_grad_norm: bool = False,
    policy: precision.Policy | str | None = None,
) -> Callable[..., tuple[TrainState, Metrics]]:
    """A train step ``step(train_state, (x, y), *, grad_norm=None) -> (train_state, metrics)``.

    Args:
      model: the :class:`nnkit.Layer` to train.
      loss_fn: ``fn(pred, y) -> scalar`` (mean over the batch) or a name for
        :func:`nnkit.losses.get`.
      optimizer: an Optax transformation (:func:`nnkit.optim.make` makes the LR observable).
      metrics: names for :func:`nnkit.metrics.get`, callables ``fn(pred, y)``, or a dict;
        ``None``: :func:`nnkit.train.gradients.default_metrics` of the loss.
      grad_mode: ``"batch"`` (one ``value_and_grad``), ``"accumulate"`` (``lax.scan`` over
        ``microbatches`` strided slices, rows ``i::microbatches``, summing gradients:
        activation memory / microbatches), or
        ``"per_example"`` (``vmap`` of the gradient over examples, then the mean; with
        ``per_example_clip`` each example's gradient is clipped first, DP-SGD style).
      microbatches: number of slices for ``"accumulate"`` (must divide the batch size).
      l1, l2: coefficients of ``l1_penalty`` / ``l2_penalty`` added to the loss.
      augment: ``augment(key, x) -> x`` applied to the batch inside the step.
      jit: return the ``jax.jit``-compiled step (compiled once per batch shape/dtype).
      donate: donate the input train state's buffers (the passed state is invalid after).
      per_example_clip: max per-example gradient norm (``grad_mode="per_example"`` only).
        The optimizer gets the mean of the clipped per-example gradients ``g_i *
        min(1, c / |g_i|)``; the logged ``grad_norm`` stays ``|mean_i g_i|`` (unclipped),
        computed only where the norm is asked for.
      log_grad_norm: add the ``grad_norm`` metric (off by default: it costs one extra read
        of the gradient per step, about 8 % of a 784-512-512-10 MLP step on CPU). With it
        on, the step's ``grad_norm`` keyword (below) computes it only on chosen steps;
        :func:`nnkit.fit` turns it on and computes it on each epoch's last step only.
      policy: a :class:`nnkit.precision.Policy` or its name (``"mixed_bfloat16"``, ...):
        the model is wrapped with :func:`nnkit.precision.with_policy` (unless it already
        carries that policy) and a loss-scaled (float16) policy differentiates
        ``s * objective`` and divides the gradients by ``s``. With a dynamic loss scale
        (float16's default) ``s`` is ``train_state.loss_scale.scale`` (a state from
        :func:`~nnkit.train.create_train_state` with the same ``policy``): a step whose
        gradients are not all finite changes nothing but the scale (``s / factor``; params,
        model and optimizer state, ``step`` as they were), and ``period`` finite steps in a
        row multiply it by ``factor``. A static scale that overflows gives non-finite
        gradients (``fit`` then stops at that epoch): lower ``loss_scale``.

    The returned ``step`` takes an optional keyword ``grad_norm``: ``None`` (default) follows
    ``log_grad_norm``; a boolean scalar array (traced, e.g. ``i == last`` in a ``lax.scan``)
    computes the norm only where it is true (on a CPU under ``lax.cond``; on accelerators
    on every step, masked, as a conditional there waits for the host) and reports ``0.0``
    elsewhere, so on a CPU a scanned epoch pays for one reduction instead of one per step.
    Ignored when ``log_grad_norm=False``.

    Speed on a CPU: a tiny model's step (a few thousand parameters) costs more in XLA's
    per-call dispatch than in arithmetic, so run many steps per call (``fit``'s scanned
    epoch, or ``lax.scan`` over this step) where possible. For a per-step Python loop, XLA's
    memory-ordered scheduler dispatches such a step faster than its default
    (``XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false``, set before JAX
    starts; a 2-16-16-2 MLP: ~1.5x the steps per second on 2 cores). The flag holds for
    the whole process, so nnkit does not set it.

    Returns metrics (scalars): ``loss`` (the data loss, without penalties), each metric,
    ``penalty`` (if ``l1``/``l2``), ``grad_norm`` (global norm of the mean gradient of the
    unscaled loss, before any clipping; with ``log_grad_norm=True``) and ``lr`` (the
    injected learning rate times the plateau scale; NaN if the optimizer has none); with a
    dynamic loss scale also ``loss_scale`` (the scale after this step: the next step's),
    and a skipped step's ``grad_norm`` is ``0.0``.
    """
    if grad_mode not in GRAD_MODES:
        raise ValueError(f"unknown grad_mode {grad_mode!r}; known: {', '.join(GRAD_MODES)}")
    microbatches = check_int(microbatches, "microbatches")
    if microbatches > 1 and grad_mode != "accumulate":
        raise ValueError("microbatches > 1 needs grad_mode='accumulate'")
    if per_example_clip is not None and grad_mode != "per_example":
        raise ValueError("per_example_clip needs grad_mode='per_example'")
    if grad_mode == "per_example":
        check_per_example(model)
    loss = resolve_loss(loss_fn)
    metric_fns = resolve_metrics(metrics, loss)
    pol = None if policy is None else precision.get_policy(policy)
    model = apply_policy(model, pol)
    dynamic = None if pol is None else pol.dynamic
    plain_objective = make_objective(model, loss, l1=l1, l2=l2, train=True)
    objective = plain_objective
    if pol is not None and dynamic is None:  # s * objective (identity when s == 1)
        objective = precision.scaled(objective, pol, has_aux=True)  # aux: the unscaled loss
    unscale = (lambda g: g) if pol is None else (lambda g: precision.unscale_grads(g, pol))
    with_penalty = bool(l1 or l2)

    def mean0(g):
        return jax.tree_util.tree_map(lambda a: jnp.mean(a, axis=0), g)

    def grads_and_metrics(objective, unscale, params, state, x, y, key):
        """-> (the gradient the optimizer gets, the unclipped mean gradient whose norm is
        logged (a function of no arguments: its work is only done where called), loss,
        penalty, new state, metrics)."""
        if grad_mode == "batch":
            g, (lv, pen, st, pred) = batch_grads(objective, params, state, x, y, key)
            g = unscale(g)
            ms = {n: f(pred, y) for n, f in metric_fns}
        elif grad_mode == "accumulate":
            g, lv, pen, st, ms = accumulated_grads(
                objective, params, state, x, y, key, microbatches, metric_fns
            )
            g = unscale(g)
        else:
            pe, (lv, pen, st, pred) = per_example_value_and_grads(
                objective, params, state, x, y, key
            )
            pe = unscale(pe)
            if per_example_clip is not None:
                g = mean0(clip_per_example(pe, per_example_clip))
                lv, pen, st = jnp.mean(lv), jnp.mean(pen), _mean_state(st)
                ms = {n: f(pred, y) for n, f in metric_fns}
                return g, lambda: mean0(pe), lv, pen, st, ms
            g = mean0(pe)
            lv, pen, st = jnp.mean(lv), jnp.mean(pen), _mean_state(st)
            ms = {n: f(pred, y) for n, f in metric_fns}
        return g, lambda: g, lv, pen, st, ms

    def step(
        ts: TrainState, batch: Batch, *, grad_norm: bool | jax.Array | None = None
    ) -> tuple[TrainState, Metrics]:
        x, y = batch
        _, k_step = split_train_key(ts.key)
        k_aug, k_model = jax.random.split(jax.random.fold_in(k_step, ts.step))
        if augment is not None:
            x = augment(k_aug, x)
        if dynamic is None:
            obj, uns = objective, unscale
        else:  # this step's scale s, a traced scalar of the train state
            if ts.loss_scale is None:
                raise ValueError(
                    "the policy's loss scale is dynamic but train_state.loss_scale is None: "
                    "create the state with create_train_state(..., policy=policy) (or set "
                    "loss_scale=nnkit.precision.loss_scale_init(policy))")
            s = ts.loss_scale.scale
            obj = precision.scaled(plain_objective, pol, has_aux=True, scale=s)
            uns = functools.partial(precision.unscale_grads, policy=pol, scale=s)
        grads, unclipped, lv, pen, new_state, ms = grads_and_metrics(
            obj, uns, ts.params, ts.state, x, y, k_model)
        updates, opt_state = optimizer.update(grads, ts.opt_state, ts.params)
        try:
            lr = jnp.asarray(get_lr(opt_state), jnp.float32)
        except KeyError:
            lr = jnp.float32(jnp.nan)
        if ts.plateau is not None:
            scale = ts.plateau.scale
            updates = jax.tree_util.tree_map(lambda u: (u * scale).astype(u.dtype), updates)
            lr = lr * scale
        params = optax.apply_updates(ts.params, updates)
        out = {"loss": lv, **ms}
        if with_penalty:
            out["penalty"] = pen
        if log_grad_norm:  # of the mean gradient before per-example clipping
            if grad_norm is None or grad_norm is True:
                out["grad_norm"] = global_grad_norm(unclipped())
            elif grad_norm is False:
                out["grad_norm"] = jnp.zeros((), jnp.float32)
            else:
                out["grad_norm"] = _norm_where(grad_norm, unclipped)
        out["lr"] = lr
        new_ts = ts._replace(
            step=ts.step + 1, params=params, state=new_state, opt_state=opt_state
        )
        if dynamic is not None:  # a non-finite gradient: keep the old state, lower s
            finite = precision.all_finite(grads)
            new_ts = precision.select_tree(finite, new_ts, ts)._replace(
                loss_scale=precision.loss_scale_update(dynamic, ts.loss_scale, finite))
            out["loss_scale"] = new_ts.loss_scale.scale
            if "grad_norm" in out:  # a skipped step's norm is inf/nan: report 0, as unasked
                out["grad_norm"] = jnp.where(finite, out["grad_norm"], 0.0)
        return new_ts, out

    if not jit:
        return step
    return jax.jit(step, donate_argnums=(0,) if donate else ())


def _norm_where(flag: jax.Array, grads: Callable[[], Any]) -> jax.Array:
    """``global_grad_norm(grads())`` where the traced ``flag`` is true, else ``0.0``. On a
    CPU under ``lax.cond``, so steps without the flag skip the norm; elsewhere computed on
    every step and masked: XLA:GPU runs a conditional's branch choice on the host, a
    device-to-host copy and a wait on every step of a scanned epoch, which costs more than
    one read of the gradients."""

    def on_cpu(f):
        return lax.cond(f, lambda: global_grad_norm(grads()), lambda: jnp.zeros((), jnp.float32))

    def masked(f):
        return jnp.where(f, global_grad_norm(grads()), jnp.zeros((), jnp.float32))

    return lax.platform_dependent(flag, cpu=on_cpu, default=masked)


def _eval_batch(model, loss, metric_fns, params, state, x, y) -> Metrics:
    pred, _ = model.apply(params, state, x, key=None, train=False)
    return {"loss": loss(pred, y), **{n: f(pred, y) for n, f in metric_fns}}


def make_eval_step(
    model: Layer,
    loss_fn: str | Callable,
    metrics: Sequence[str | Callable] | dict[str, Callable] | None = None,
    *,
    jit: bool = True,
) -> Callable[[Any, Any, Batch], Metrics]:
    """``eval_step(params, state, (x, y)) -> {"loss": ..., <metric>: ...}`` with ``train=False``.

    Values are means over the batch (for mean-reduced losses and metrics). Jitted unless
    ``jit=False``.
    """
    loss = resolve_loss(loss_fn)
    metric_fns = resolve_metrics(metrics, loss)

    def eval_step(params, state, batch):
        x, y = batch
        return _eval_batch(model, loss, metric_fns, params, state, x, y)

    return jax.jit(eval_step) if jit else eval_step


def make_evaluator(
    model: Layer,
    loss_fn: str | Callable,
    metrics: Sequence[str | Callable] | dict[str, Callable],
    n: int,
    batch_size: int,
    parallel: Any = None,
) -> Callable[[Any, Any, Any, Any], Metrics]:
    """Unjitted ``evaluate(params, state, x, y) -> metrics`` over a whole set of ``n`` examples.

    ``n // batch_size`` full batches run in a ``lax.map`` (memory ~ one batch) plus one
    remainder batch. The loss and the metrics that are means over examples are combined
    weighted by batch size: the exact mean over all ``n``. A metric that is not such a mean
    (``rmse``, ``r2``, ``macro_f1``: one with ``batch_stats``/``from_stats``, see
    :func:`nnkit.metrics.with_stats`) is computed from the statistics of all batches: the
    metric of the whole set. Meant to be traced inside a larger jitted function.

    With ``parallel`` (a :class:`nnkit.parallel.DataParallel`) and the set on its devices
    (replicated, as ``fit`` places it), every batch whose size the data axis divides is
    split over the devices (:meth:`~nnkit.parallel.DataParallel.constrain_batch`): each
    device evaluates its rows of each batch and the sums are all-reduced, instead of every
    device evaluating the whole set. A batch the data axis does not divide (the remainder,
    or all of them when it does not divide ``batch_size``) is evaluated whole on every
    device.
    """
    loss = resolve_loss(loss_fn)
    metric_fns = resolve_metrics(metrics, loss)
    pooled = {name: fn for name, fn in metric_fns if hasattr(fn, "from_stats")}
    bs = max(1, min(batch_size, n))
    full, rem = divmod(n, bs)

    def one(params, state, xb, yb):
        rows = jax.tree_util.tree_leaves(xb)[0].shape[0]
        if parallel is not None and rows % parallel.num_devices == 0:
            xb, yb = parallel.constrain_batch((xb, yb))
        pred, _ = model.apply(params, state, xb, key=None, train=False)
        means = {"loss": loss(pred, yb),
                 **{k: f(pred, yb) for k, f in metric_fns if k not in pooled}}
        return means, {k: f.batch_stats(pred, yb) for k, f in pooled.items()}

    def evaluate(params, state, x, y):
        head = lambda a: a[: full * bs].reshape(full, bs, *a.shape[1:])
        tail = lambda a: a[full * bs :]
        if full == 1 and rem == 0:
            means, stats = one(params, state, x, y)
            stacked = jax.tree_util.tree_map(lambda a: a[None], stats)
            return {**means, **{k: pooled[k].from_stats(stacked[k]) for k in pooled}}
        xs, ys = jax.tree_util.tree_map(head, x), jax.tree_util.tree_map(head, y)
        means, stats = lax.map(lambda b: one(params, state, *b), (xs, ys))
        total = jax.tree_util.tree_map(lambda v: jnp.sum(v, axis=0) * bs, means)
        if rem:
            last, last_stats = one(params, state, jax.tree_util.tree_map(tail, x),
                                   jax.tree_util.tree_map(tail, y))
            total = jax.tree_util.tree_map(lambda t, v: t + v * rem, total, last)
            stats = jax.tree_util.tree_map(lambda s, v: jnp.concatenate([s, v[None]]),
                                           stats, last_stats)
        out = jax.tree_util.tree_map(lambda t: t / n, total)
        return {**out, **{k: pooled[k].from_stats(stats[k]) for k in pooled}}

    return evaluate


@memoised(8)
def jitted_evaluator(
    model: Layer,
    loss_fn: str | Callable,
    metrics: Sequence[str | Callable] | dict[str, Callable],
    n: int,
    batch_size: int,
    parallel: Any = None,
) -> Callable[[Any, Any, Any, Any], Metrics]:
    """``jax.jit(make_evaluator(...))``, memoised (:mod:`nnkit._memo`), so that evaluating
    the same model on a set of the same size again compiles nothing."""
    return jax.jit(make_evaluator(model, loss_fn, metrics, n, batch_size, parallel))
