"""Epoch-level progress display: a tqdm bar on a terminal, nothing otherwise."""

from __future__ import annotations

import sys
from collections.abc import Mapping

__all__ = ["EpochProgress", "format_logs"]

_SHOWN = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")


def format_logs(logs: Mapping[str, float], keys: tuple[str, ...] = _SHOWN) -> dict[str, str]:
    """The few log entries worth showing in a progress bar, as short strings."""
    return {k.replace("train_", "").replace("accuracy", "acc"): f"{logs[k]:.4g}"
            for k in keys if k in logs}


class EpochProgress:
    """One bar tick per epoch (never per step: no host sync is added).

    ``enabled=None`` shows the bar only when stderr is a TTY; ``True``/``False`` force it.
    """

    def __init__(self, total: int, initial: int = 0, enabled: bool | None = None) -> None:
        if enabled is None:
            enabled = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, unit="epoch", file=sys.stderr,
                             dynamic_ncols=True)

    def update(self, logs: Mapping[str, float]) -> None:
        """Advances one epoch and shows the main numbers."""
        if self._bar is not None:
            self._bar.set_postfix(format_logs(logs), refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        """Closes the bar (safe to call twice)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
