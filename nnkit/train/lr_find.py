"""Learning-rate range test (Smith 2017; fastai's ``lr_find``) in ONE ``lax.scan``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from nnkit._checks import check_int
from nnkit._memo import memoised
from nnkit.core import Layer
from nnkit.optim import get_lr, set_hyperparam
from nnkit.train.gradients import resolve_loss
from nnkit.train.inputs import as_xy, check_data
from nnkit.train.order import epoch_order, key_words
from nnkit.train.state import create_train_state
from nnkit.train.step import make_train_step

__all__ = ["lr_find", "LRFindResult", "smooth_losses", "suggest_lr", "resolve_optimizer"]


class LRFindResult(NamedTuple):
    """Result of :func:`lr_find`.

    Attributes:
      lrs: learning rates tried, increasing, before the first divergent step.
      losses: the bias-corrected exponentially smoothed training losses at those rates.
      suggestion: the rate where the smoothed loss falls fastest: the steepest negative
        slope of loss vs ``log10 lr`` measured across one decade of rates centred on it
        (:func:`suggest_lr`; a slope between neighbouring points follows the noise of the
        flat start), searched up to the minimum; if the rates below the minimum span under
        a decade, ``lr_at_min / 10`` (not below ``min_lr``).
      lr_at_min: the rate of the lowest smoothed loss (``lr_at_min / 10`` is the other
        common rule of thumb).
      diverged_at: index (into the full ``steps`` schedule) of the first step whose smoothed
        loss exceeded ``diverge_factor`` times the best so far (or was non-finite), else None.
      raw_losses: the unsmoothed losses at ``lrs``.
    """

    lrs: np.ndarray
    losses: np.ndarray
    suggestion: float
    lr_at_min: float
    diverged_at: int | None
    raw_losses: np.ndarray

    def plot(self, path: str) -> str:
        """Saves loss vs learning rate (log x) with the suggestion marked; returns ``path``."""
        from nnkit.plots import plot_lr_find

        return plot_lr_find(self, path)


def resolve_optimizer(
    optimizer: str | Callable[[float], optax.GradientTransformation] | optax.GradientTransformation,
    learning_rate: float,
    **kwargs: Any,
) -> optax.GradientTransformation:
    """An optimizer from a :func:`nnkit.optim.make` name, a factory ``lr -> optimizer``, or
    a ready transformation (used as is)."""
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    if isinstance(optimizer, str):
        from nnkit import optim

        return optim.make(optimizer, learning_rate, **kwargs)
    if callable(optimizer):
        return optimizer(learning_rate)
    raise TypeError(f"expected an optimizer name, factory or transformation, got {optimizer!r}")


def smooth_losses(losses: np.ndarray, smoothing: float) -> np.ndarray:
    """Bias-corrected EMA: ``a_i = b a_{i-1} + (1 - b) l_i``; ``s_i = a_i / (1 - b^(i+1))``."""
    out = np.empty(len(losses), dtype=np.float64)
    avg = 0.0
    for i, v in enumerate(np.asarray(losses, np.float64)):
        avg = smoothing * avg + (1.0 - smoothing) * v
        out[i] = avg / (1.0 - smoothing ** (i + 1))
    return out


def suggest_lr(lrs: np.ndarray, losses: np.ndarray, decades: float = 1.0) -> float:
    """The rate of steepest descent of ``losses`` (increasing ``lrs``, the losses smoothed).

    For each rate ``r`` up to the loss minimum, the slope is the secant
    ``(L(hi) - L(lo)) / (log10 hi - log10 lo)`` over the rates within ``decades / 2``
    decades of ``r`` (clipped at the minimum; windows narrower than ``decades / 2`` are
    skipped); the suggestion is the rate with the most negative slope. With under
    ``decades`` decades below the minimum: ``lr_at_min / 10``, not below ``lrs[0]``.
    """
    lrs, losses = np.asarray(lrs, np.float64), np.asarray(losses, np.float64)
    logs = np.log10(lrs)
    i_min = int(np.argmin(losses))
    best, pick = 0.0, None
    for i in range(i_min + 1):
        lo = int(np.searchsorted(logs, logs[i] - decades / 2))
        hi = min(int(np.searchsorted(logs, logs[i] + decades / 2, side="right")) - 1, i_min)
        if hi <= lo or logs[hi] - logs[lo] < decades / 2:
            continue
        slope = (losses[hi] - losses[lo]) / (logs[hi] - logs[lo])
        if slope < best:
            best, pick = slope, i
    if pick is None or logs[i_min] - logs[0] < decades:
        return max(float(lrs[i_min]) / 10.0, float(lrs[0]))
    return float(lrs[pick])


@memoised(8)
def _range_test_program(model: Layer, loss_fn: Callable, opt: Any) -> Callable:
    """The jitted range test ``run(ts, x, y, lrs, idx) -> losses`` for a configuration,
    memoised so that a second :func:`lr_find` with equal arguments compiles nothing."""
    step = make_train_step(model, loss_fn, opt, metrics=(), jit=False)

    @jax.jit
    def run(ts, x, y, lrs, idx):
        def body(ts, inp):
            lr, i = inp
            ts = ts._replace(opt_state=set_hyperparam(ts.opt_state, "learning_rate", lr))
            xb = jax.tree_util.tree_map(lambda a: jnp.take(a, i, axis=0), x)
            yb = jax.tree_util.tree_map(lambda a: jnp.take(a, i, axis=0), y)
            ts, m = step(ts, (xb, yb))
            return ts, m["loss"]

        _, losses = lax.scan(body, ts, (lrs, idx))
        return losses

    return run


def lr_find(
    model: Layer,
    optimizer: str | Callable[[float], optax.GradientTransformation],
    train_data: Any,
    *,
    loss: str | Callable = "cross_entropy",
    batch_size: int = 32,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    steps: int = 100,
    smoothing: float = 0.98,
    diverge_factor: float = 4.0,
    key: int | jax.Array = 0,
    input_shape: Any = None,
    **optimizer_kwargs: Any,
) -> LRFindResult:
    """Trains with ``lr_i = min_lr * (max_lr / min_lr) ** (i / (steps - 1))`` for ``steps``
    steps (one compiled ``lax.scan``; the rate is set through the injected hyper-parameter)
    and records the loss of each step's batch before its update.

    Batches follow the same shuffled epochs as :func:`fit` with the same ``key``. Losses
    after the first divergent step (smoothed loss > ``diverge_factor`` * best so far, or
    non-finite) are masked off. See :class:`LRFindResult` for the suggestion rule.

    Args:
      optimizer: a :func:`nnkit.optim.make` name (``optimizer_kwargs`` go to it) or a
        factory ``lr -> optimizer`` whose learning rate is injected.
    """
    if not (math.isfinite(min_lr) and math.isfinite(max_lr) and 0 < min_lr < max_lr):
        raise ValueError(f"lr_find: need finite rates 0 < min_lr < max_lr, got min_lr={min_lr}, "
                         f"max_lr={max_lr}")
    steps = check_int(steps, "lr_find: steps", minimum=2)
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"lr_find: smoothing must be in [0, 1), got {smoothing}")
    if not diverge_factor > 1.0:
        raise ValueError(f"lr_find: diverge_factor must be > 1, got {diverge_factor}")
    batch_size = check_int(batch_size, "batch_size")
    loss_fn = resolve_loss(loss)
    train = as_xy(train_data, "train_data")
    n = int(jax.tree_util.tree_leaves(train[0])[0].shape[0])
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} is larger than the training set ({n})")
    input_shape, _ = check_data(model, loss_fn, train, {}, input_shape)
    opt = resolve_optimizer(optimizer, min_lr, **optimizer_kwargs)
    ts = create_train_state(model, input_shape, opt, key)
    try:
        get_lr(ts.opt_state)
    except KeyError:
        raise ValueError(
            "lr_find needs an optimizer with an injected learning_rate (nnkit.optim.make "
            "or optax.inject_hyperparams)"
        ) from None
    nb = n // batch_size
    n_epochs = math.ceil(steps / nb)
    lrs = min_lr * (max_lr / min_lr) ** (np.arange(steps) / (steps - 1))

    words = key_words(ts.key)  # fit's data order for the same key
    order = np.concatenate([epoch_order(words, e, n, batch_size) for e in range(n_epochs)])
    run = _range_test_program(model, loss_fn, opt)
    x, y = jax.device_put(train)
    raw = np.asarray(jax.device_get(run(ts, x, y, jnp.asarray(lrs, jnp.float32),
                                                order[:steps])), np.float64)
    smooth = smooth_losses(np.where(np.isfinite(raw), raw, np.inf), smoothing)
    best = np.minimum.accumulate(smooth)
    bad = ~np.isfinite(smooth) | (smooth > diverge_factor * best)
    diverged_at = int(np.argmax(bad)) if bad.any() else None
    keep = steps if diverged_at is None else diverged_at
    lrs_k, sm_k, raw_k = lrs[:keep], smooth[:keep], raw[:keep]
    if keep == 0:
        raise ValueError("lr_find: the loss was non-finite from the first step; lower min_lr")
    lr_at_min = float(lrs_k[int(np.argmin(sm_k))])
    return LRFindResult(lrs_k, sm_k, suggest_lr(lrs_k, sm_k), lr_at_min, diverged_at, raw_k)
