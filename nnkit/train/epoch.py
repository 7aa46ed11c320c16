"""One training epoch as a pure function: scan the train step over the epoch's batches,
evaluate, update early stopping / plateau, and roll back if any step produced a non-finite
loss or the epoch ended with non-finite parameters. The data order comes in as an argument
(:func:`nnkit.train.order.epoch_order`).

Used by :func:`nnkit.train.fit` (jitted once, one call per epoch) and by
:func:`nnkit.train.sweep` (``vmap``-ed over a leading model axis).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from nnkit.optim import Plateau, plateau_update
from nnkit.precision import select_tree
from nnkit.train.early_stopping import EarlyStopping, early_stopping_update
from nnkit.train.state import TrainState
from nnkit.train.step import make_evaluator

__all__ = ["gather_rows", "all_finite", "EpochFns", "make_epoch_fns"]


def gather_rows(tree: Any, idx: jax.Array) -> Any:
    """Rows ``idx`` (any int array shape) of every leaf: ``(n, ...) -> (*idx.shape, ...)``."""
    return jax.tree_util.tree_map(lambda a: jnp.take(a, idx, axis=0), tree)


def all_finite(tree: Any) -> jax.Array:
    """``True`` (a bool scalar) iff every float leaf of ``tree`` is free of NaN and inf."""
    leaves = [a for a in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.result_type(a), jnp.inexact)]
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in leaves]))


@dataclass(frozen=True)
class EpochFns:
    """The pieces of an epoch (all unjitted and pure).

    * ``step(ts, (x, y)) -> (ts, step_metrics)`` the train step.
    * ``finish(ts, ts0, stacked_metrics, xv, yv, epoch) -> (ts, logs)``: averages the per-step
      metrics (``lr``, ``grad_norm`` and ``loss_scale``: the epoch's last step), evaluates,
      updates early stopping / plateau and returns ``ts0`` (the state at the start of the
      epoch) instead of ``ts`` if any step's loss or gradient norm was non-finite, or the
      end-of-epoch params hold a NaN/inf (the epoch's last update overflowed).
      ``logs["nonfinite_step"]`` is the first bad step of the epoch (the last step when only
      the end-of-epoch params are bad), or -1; ``logs["nonfinite_params"]`` is 1.0 when the
      steps' losses and norms were finite but the end-of-epoch params were not, else 0.0.
      A rolled-back epoch's ``train_loss`` is NaN. ``finish(..., keep)``: a bool scalar;
      ``False`` returns ``ts0`` whatever the epoch did (a sweep's model that has stopped;
      the logs are the epoch's own).
    * ``train_on(ts, epoch, xb, yb, xv, yv, keep=None) -> (ts, logs)``: scans the step over
      batches already cut (``xb``: ``(num_batches, batch_size, ...)``), then ``finish``.
    * ``epoch(ts, epoch, idx, x, y, xv, yv, keep=None) -> (ts, logs)``: as ``train_on`` with
      the batches ``x[idx[i]]``, ``y[idx[i]]`` (``idx``: ``(num_batches, batch_size)`` int32,
      the epoch's order from :func:`nnkit.train.order.epoch_order`; ``x``/``y`` on the
      device). Each step gathers its own batch inside the loop: gathering the whole epoch
      up front writes a copy of the data set to memory before the first step (40 MB for an
      MNIST-sized epoch: ~8% of a 784-512-512-10 MLP's epoch time on CPU).
    """

    step: Callable[..., tuple[TrainState, dict]]
    finish: Callable[..., tuple[TrainState, dict]]
    train_on: Callable[..., tuple[TrainState, dict]]
    epoch: Callable[..., tuple[TrainState, dict]]


def make_epoch_fns(
    step: Callable[..., tuple[TrainState, dict]],
    *,
    n: int,
    batch_size: int,
    evaluator: Callable[..., dict] | None = None,
    early_stopping: EarlyStopping | None = None,
    plateau: Plateau | None = None,
    grad_norm_last_step: bool = False,
) -> EpochFns:
    """Builds the epoch functions around an unjitted train ``step`` (``make_train_step(...,
    jit=False)``). ``evaluator(params, state, xv, yv)`` (see :func:`make_evaluator`) gives
    the ``val_*`` logs; ``None`` for no validation.

    ``grad_norm_last_step``: the scanned epoch calls ``step(ts, batch, grad_norm=i == last)``
    (the keyword of :func:`make_train_step`'s step), so the gradient norm -- logged for the
    last step only anyway -- is computed once per epoch instead of once per step. Needs a
    step that takes that keyword; with ``False`` the step is called as ``step(ts, batch)``.
    Either way the logged ``grad_norm`` is the last step's.

    Non-finite detection: every step's loss is checked; the gradient norm where computed
    (every step, or the last). Non-finite gradients at an earlier step make the next step's
    loss non-finite, so the epoch is still rolled back (the reported step is then the next).
    A step's loss is computed before its update, so the last update of the epoch shows in
    no loss: the end-of-epoch params are checked as well (one reduction over them per epoch).
    The optimizer state is not: some Optax states hold ``inf`` by design
    (``optax.contrib.reduce_on_plateau``'s best value, the line searches' initial values),
    and a non-finite moment shows in the next update's params anyway.
    """

    def finish(ts, ts0, ms, xv, yv, epoch, keep=None):
        last_only = ("lr", "grad_norm", "loss_scale")
        logs = {f"train_{k}": jnp.mean(v) for k, v in ms.items() if k not in last_only}
        logs["lr"] = ms["lr"][-1]
        if "loss_scale" in ms:  # a dynamic loss scale: the one the next epoch starts with
            logs["loss_scale"] = ms["loss_scale"][-1]
        finite = jnp.isfinite(ms["loss"])
        if "grad_norm" in ms:  # steps that skipped the norm report 0.0 (finite)
            logs["grad_norm"] = ms["grad_norm"][-1]
            finite = finite & jnp.isfinite(ms["grad_norm"])
        steps_ok = jnp.all(finite)
        params_ok = all_finite(ts.params)
        ok = steps_ok & params_ok
        last = finite.shape[0] - 1
        bad = jnp.where(steps_ok, last, jnp.argmin(finite))
        logs["nonfinite_step"] = jnp.where(ok, -1, bad).astype(jnp.int32)
        logs["nonfinite_params"] = (steps_ok & ~params_ok).astype(jnp.float32)
        logs["train_loss"] = jnp.where(ok, logs["train_loss"], jnp.nan)
        if evaluator is not None:
            logs.update({f"val_{k}": v for k, v in evaluator(ts.params, ts.state, xv, yv).items()})
        if early_stopping is not None:
            ts = early_stopping_update(early_stopping, ts, logs[early_stopping.monitor], epoch)
        if plateau is not None:
            ts = ts._replace(plateau=plateau_update(plateau, ts.plateau, logs[plateau.monitor]))
        if early_stopping is not None:
            logs["bad_epochs"] = ts.bad_epochs
            logs["best_epoch"] = ts.best_epoch
        if plateau is not None:
            logs["lr_scale"] = ts.plateau.scale
        return select_tree(ok if keep is None else ok & keep, ts, ts0), logs

    nb = n // batch_size

    def body(ts, inp):
        i, batch = inp
        if grad_norm_last_step:
            return step(ts, batch, grad_norm=i == nb - 1)
        return step(ts, batch)

    def train_on(ts, epoch, xb, yb, xv, yv, keep=None):
        ts1, ms = lax.scan(body, ts, (jnp.arange(nb, dtype=jnp.int32), (xb, yb)))
        return finish(ts1, ts, ms, xv, yv, epoch, keep)

    def epoch_fn(ts, epoch, idx, x, y, xv, yv, keep=None):
        def gather_then_step(ts, inp):
            i, rows = inp
            return body(ts, (i, (gather_rows(x, rows), gather_rows(y, rows))))

        ts1, ms = lax.scan(gather_then_step, ts, (jnp.arange(nb, dtype=jnp.int32), idx))
        return finish(ts1, ts, ms, xv, yv, epoch, keep)

    return EpochFns(step, finish, train_on, epoch_fn)


def make_val_evaluator(model, loss, metrics, val_n: int | None, eval_batch_size: int,
                       parallel: Any = None):
    """``make_evaluator`` for a validation set of ``val_n`` examples, or ``None``."""
    if not val_n:
        return None
    return make_evaluator(model, loss, metrics, val_n, eval_batch_size, parallel)
