"""Epoch callbacks: ``cb(epoch, train_state, logs) -> bool | str | None``.

:func:`nnkit.train.fit` calls every callback once after each epoch with the absolute epoch
index, the current :class:`TrainState` and that epoch's logs (floats). A callback returns

* ``None`` / ``False``: go on;
* ``True``: stop training normally (the test set, if any, is still evaluated);
* :data:`INTERRUPT` (the string ``"interrupt"``): stop because the *user* asked to (Ctrl-C,
  SIGTERM: the ``nnkit train`` runner returns it after a signal); ``fit`` skips the
  test-set evaluation so that it returns promptly, and its ``stop_reason`` starts with
  ``"interrupted"``.

Per-step callbacks (``fit(step_callbacks=...)``) exist only in ``mode="step"``: in the
scanned mode an epoch is one compiled call and there is no Python between steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from nnkit.metrics import monitor_mode

__all__ = ["Callback", "INTERRUPT", "stop_when", "print_logs", "record"]

INTERRUPT = "interrupt"
"""Callback return value: stop now and skip the test-set evaluation (a user interrupt)."""

Callback = Callable[[int, Any, Mapping[str, float]], bool | str | None]


def stop_when(monitor: str, threshold: float, mode: str = "auto") -> Callback:
    """Stops once ``logs[monitor] <= threshold`` (``mode="min"``) or ``>=`` (``"max"``);
    ``"auto"``: ``min`` for losses and errors, ``max`` for accuracy and the like."""
    try:
        mode = monitor_mode(monitor, mode)
    except ValueError as e:
        raise ValueError(f"stop_when: {e}") from None

    def cb(epoch: int, train_state: Any, logs: Mapping[str, float]) -> bool:
        if monitor not in logs:
            raise KeyError(f"stop_when: no {monitor!r} in logs; have {sorted(logs)}")
        v = logs[monitor]
        return v <= threshold if mode == "min" else v >= threshold

    cb.__name__ = f"stop_when({monitor} {'<=' if mode == 'min' else '>='} {threshold})"
    return cb


def print_logs(every: int = 1, keys: tuple[str, ...] | None = None,
               print_fn: Callable[[str], Any] = print) -> Callback:
    """Prints ``epoch k: key=value ...`` every ``every`` epochs."""

    def cb(epoch: int, train_state: Any, logs: Mapping[str, float]) -> None:
        if epoch % every == 0:
            shown = keys or tuple(logs)
            print_fn(f"epoch {epoch}: " + " ".join(f"{k}={logs[k]:.4g}" for k in shown
                                                    if k in logs))

    return cb


def record(store: list) -> Callback:
    """Appends ``(epoch, dict(logs))`` to ``store`` (for tests and notebooks)."""

    def cb(epoch: int, train_state: Any, logs: Mapping[str, float]) -> None:
        store.append((epoch, dict(logs)))

    return cb
