"""Early stopping as pure updates of :class:`TrainState` fields (runs inside a compiled epoch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from nnkit.metrics import monitor_mode
from nnkit.train.state import TrainState

__all__ = ["EarlyStopping", "early_stopping_init", "early_stopping_update", "should_stop",
           "stop_reason"]


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    consecutive epochs (``mode="min"``: lower is better; ``"max"``: higher is better;
    ``"auto"``, the default: ``min`` for losses and errors, ``max`` for accuracy, R², F1 --
    :func:`nnkit.metrics.lower_is_better`).

    ``monitor`` is a history key: ``val_loss``, ``val_accuracy``, ``train_loss``, ...
    With ``restore_best`` the returned params/state are those of the best epoch, whether or
    not patience ran out (the train state keeps a copy of them: one extra set of parameters
    in memory); ``FitResult.last_state`` keeps the last epoch's, to resume from.
    """

    monitor: str = "val_loss"
    mode: str = "auto"
    patience: int = 5
    min_delta: float = 0.0
    restore_best: bool = True

    def __post_init__(self) -> None:
        try:
            monitor_mode(self.monitor, self.mode)
        except ValueError as e:
            raise ValueError(f"EarlyStopping: {e}") from None
        if self.patience < 1 or self.min_delta < 0:
            raise ValueError(
                f"EarlyStopping: need patience >= 1 and min_delta >= 0, got {self.patience}, "
                f"{self.min_delta}"
            )

    @property
    def direction(self) -> str:
        """``"min"`` or ``"max"``: ``mode``, with ``"auto"`` resolved from ``monitor`` (kept
        unresolved in the field, so ``dataclasses.replace(..., monitor=...)`` re-resolves)."""
        return monitor_mode(self.monitor, self.mode)


def early_stopping_init(cfg: EarlyStopping, ts: TrainState) -> TrainState:
    """Fills the early-stopping fields of ``ts`` if they are unset (a resumed state keeps its
    own): best = worst possible, best epoch -1, no bad epochs, best params = current."""
    if ts.best_metric is not None:
        if cfg.restore_best and ts.best_params is None:
            ts = ts._replace(best_params=ts.params, best_state=ts.state)
        return ts
    worst = jnp.inf if cfg.direction == "min" else -jnp.inf
    ts = ts._replace(
        best_metric=jnp.float32(worst), best_epoch=jnp.int32(-1), bad_epochs=jnp.int32(0)
    )
    if cfg.restore_best:
        copy = lambda t: jax.tree_util.tree_map(jnp.copy, t)
        ts = ts._replace(best_params=copy(ts.params), best_state=copy(ts.state))
    return ts


def early_stopping_update(
    cfg: EarlyStopping, ts: TrainState, value: jax.Array, epoch: jax.Array
) -> TrainState:
    """One epoch's update (pure, jittable): on improvement record value/epoch (and params),
    else count a bad epoch. A non-finite value never counts as an improvement."""
    value = jnp.asarray(value, jnp.float32)
    if cfg.direction == "min":
        improved = value < ts.best_metric - cfg.min_delta
    else:
        improved = value > ts.best_metric + cfg.min_delta
    improved = improved & jnp.isfinite(value)
    ts = ts._replace(
        best_metric=jnp.where(improved, value, ts.best_metric),
        best_epoch=jnp.where(improved, jnp.asarray(epoch, jnp.int32), ts.best_epoch),
        bad_epochs=jnp.where(improved, 0, ts.bad_epochs + 1).astype(jnp.int32),
    )
    if ts.best_params is not None:
        pick = lambda new, old: jnp.where(improved, new, old)
        ts = ts._replace(
            best_params=jax.tree_util.tree_map(pick, ts.params, ts.best_params),
            best_state=jax.tree_util.tree_map(pick, ts.state, ts.best_state),
        )
    return ts


def should_stop(cfg: EarlyStopping, bad_epochs: int) -> bool:
    """Host-side test after an epoch: ``bad_epochs >= patience``."""
    return int(bad_epochs) >= cfg.patience


def stop_reason(cfg: EarlyStopping, best_epoch: Any) -> str:
    """The stop reason :func:`nnkit.train.fit` and :func:`nnkit.train.sweep` report."""
    return (f"early stopping: {cfg.monitor} did not improve for {cfg.patience} epochs "
            f"(best epoch {int(best_epoch)})")
