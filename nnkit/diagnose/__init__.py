"""Diagnostics: what is wrong with a model or its data, before and during training.

Before training::

    report = nnkit.diagnose(model, x, y, loss="cross_entropy")   # == nnkit.diagnose.diagnose
    print(report)                  # plain-words findings, each with what to do
    report.plot("run/diagnose")    # PNG figures
    report["gradients"].severity   # "ok" | "warn" | "error"

During training (a ``fit`` callback, every N epochs, host side)::

    cb = nnkit.diagnose.monitor(every=5, logdir=run_dir, model=model, x_sample=xs, y_sample=ys)
    fit(..., callbacks=[cb]); cb.close()

This module is callable: ``nnkit.diagnose(...)`` is :func:`diagnose`.

Modules: :mod:`~nnkit.diagnose.diagnosis` (the entry point), :mod:`~nnkit.diagnose.checks`
(the rules), :mod:`~nnkit.diagnose.report` (``Report``, ``Finding``, ``Thresholds``),
:mod:`~nnkit.diagnose.probe` (per-layer outputs, per-layer param groups),
:mod:`~nnkit.diagnose.plots` (figures), :mod:`~nnkit.diagnose.monitor` (training callback).
"""

from __future__ import annotations

import sys
import types
from typing import Any

from nnkit.diagnose.diagnosis import diagnose, diagnose_dataset, overfit_curve, reference_loss
from nnkit.diagnose.monitor import Monitor, monitor
from nnkit.diagnose.probe import layer_outputs, param_groups
from nnkit.diagnose.report import CHECKS, Finding, Report, Thresholds

__all__ = [
    "diagnose", "diagnose_dataset", "overfit_curve", "reference_loss", "Monitor", "monitor",
    "layer_outputs", "param_groups", "CHECKS", "Finding", "Report", "Thresholds",
]


class _CallableModule(types.ModuleType):
    """Lets ``nnkit.diagnose(model, x, y)`` call :func:`diagnose` on the module itself."""

    def __call__(self, *args: Any, **kwargs: Any) -> Report:
        return diagnose(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
