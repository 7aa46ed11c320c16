"""The jitted functions of a :func:`fit` configuration, built once and reused.

``jax.jit`` caches compilations per function object, so building fresh closures in every
``fit`` call would recompile the epoch (about a second on CPU) each time. Here the jitted
functions are memoised on the (hashable) configuration: calling ``fit`` again with the same
model, optimizer and loss objects -- to resume, or to train more epochs -- reuses them.
The cache holds functions only, never arrays, so it does not change any result.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

from nnkit._memo import memoised
from nnkit.core import Layer
from nnkit.optim import Plateau
from nnkit.train.early_stopping import EarlyStopping
from nnkit.train.epoch import make_epoch_fns, make_val_evaluator
from nnkit.train.step import make_train_step

__all__ = ["Compiled", "compiled_fit_fns"]


@dataclass(frozen=True)
class Compiled:
    """Jitted pieces: ``epoch(ts, e, idx, x, y, xv, yv, go) -> (ts, logs, go_next)`` (the
    scanned epoch over the order ``idx``, donates the train state), ``step`` (one train
    step, donates), ``finish(ts, ts0, chunks, xv, yv, e)`` (end of a step-mode epoch, over
    the per-step metrics stacked in ``chunks``), ``stack`` (at most :data:`STACK_CHUNK`
    steps' metrics -> stacked: a bounded number of arguments, so the programs compile in
    the same time whatever the epoch's length). ``epoch``/``finish`` return the logs packed
    in one float32 vector whose keys are ``names`` (filled at the first trace).

    ``go`` (a bool scalar on the device) lets the host queue epoch ``e + 1`` before it has
    read epoch ``e``'s logs: ``epoch`` trains only if ``go`` is true, else it returns the
    state unchanged (logs NaN). Its ``go_next`` is false when this epoch's own outcome ends
    training -- a non-finite loss or parameters (rolled back) or early stopping's patience
    used up -- the same tests the host makes on the logs, so a queued epoch never trains
    past a stop."""

    epoch: Callable[..., Any]
    step: Callable[..., Any]
    finish: Callable[..., Any]
    stack: Callable[..., Any]
    names: list[str] = field(default_factory=list)


STACK_CHUNK = 64
"""Step mode stacks the per-step metrics on the device this many steps at a time."""


def _pack(logs: dict[str, jax.Array], names: list[str]) -> jax.Array:
    if not names:
        names.extend(sorted(logs))
    return jnp.stack([jnp.asarray(logs[k], jnp.float32) for k in names])


def _build(
    model: Layer,
    loss_fn: Callable,
    metric_fns: tuple,
    optimizer: optax.GradientTransformation,
    grad_mode: str,
    microbatches: int,
    l1: float,
    l2: float,
    augment: Callable | None,
    n: int,
    batch_size: int,
    val_n: int | None,
    eval_batch_size: int,
    early_stopping: EarlyStopping | None,
    plateau: Plateau | None,
    log_grad_norm: bool = True,
    parallel: Any = None,
    policy: Any = None,
) -> Compiled:
    """The jitted pieces of ``fit`` for one configuration: the train step
    (:func:`~nnkit.train.step.make_train_step`, its layout pinned under ``parallel``), the
    scanned epoch and the step-mode epoch end (:func:`~nnkit.train.epoch.make_epoch_fns`,
    with validation on ``val_n`` examples in batches of ``eval_batch_size``). Memoised as
    :func:`compiled_fit_fns`, so a second ``fit`` of the same configuration compiles
    nothing."""
    step = make_train_step(
        model, loss_fn, optimizer, metrics=metric_fns, grad_mode=grad_mode,
        microbatches=microbatches, l1=l1, l2=l2, augment=augment, jit=False,
        log_grad_norm=log_grad_norm, policy=policy,
    )
    if parallel is not None:
        step = _pinned(step, parallel)
    fns = make_epoch_fns(
        step, n=n, batch_size=batch_size,
        evaluator=make_val_evaluator(model, loss_fn, metric_fns, val_n, eval_batch_size,
                                     parallel),
        early_stopping=early_stopping, plateau=plateau, grad_norm_last_step=True,
    )
    names: list[str] = []

    def go_on(logs: dict[str, jax.Array]) -> jax.Array:
        ok = logs["nonfinite_step"] < 0
        if early_stopping is not None:  # the host's should_stop, on the device
            ok = ok & (logs["bad_epochs"] < early_stopping.patience)
        return ok

    def epoch(ts, e, idx, x, y, xv, yv, go):
        def train(ts):
            ts, logs = fns.epoch(ts, e, idx, x, y, xv, yv)
            return ts, _pack(logs, names), go_on(logs)

        def skip(ts):
            width = len(names) or jax.eval_shape(train, ts)[1].shape[0]
            return ts, jnp.full((width,), jnp.nan, jnp.float32), jnp.asarray(False)

        return lax.cond(go, train, skip, ts)

    def finish(ts, ts0, chunks, xv, yv, e):
        ms = jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *chunks)
        ts, logs = fns.finish(ts, ts0, ms, xv, yv, e)
        return ts, _pack(logs, names)

    def stack(ms):
        return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *ms)

    return Compiled(
        epoch=jax.jit(epoch, donate_argnums=(0,)),
        step=jax.jit(step, donate_argnums=(0,)),
        finish=jax.jit(finish, donate_argnums=(0,)),
        stack=jax.jit(stack),
        names=names,
    )


def _pinned(step: Callable[..., Any], parallel: Any) -> Callable[..., Any]:
    """``parallel.wrap_step(step)`` (layouts pinned), keeping the step's ``grad_norm`` keyword."""

    def pinned(ts, batch, *, grad_norm=None):
        return parallel.wrap_step(functools.partial(step, grad_norm=grad_norm))(ts, batch)

    return pinned


compiled_fit_fns = memoised(8)(_build)
