"""The diagnosis result: :class:`Finding` (one per check), :class:`Report`, :class:`Thresholds`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["Finding", "Report", "Thresholds", "DEFAULT_THRESHOLDS", "Severity", "CHECKS"]

Severity = Literal["ok", "warn", "error"]
_RANK = {"ok": 0, "warn": 1, "error": 2}

#: The checks :func:`nnkit.diagnose.diagnose` runs, in report order.
CHECKS = ("inputs", "labels", "initial_loss", "overfit", "activations", "gradients")


@dataclass(frozen=True)
class Thresholds:
    """When a check warns. The defaults and why:

    Attributes:
      max_abs_input: the 99th percentile of ``|x|`` above 10 -- standardised data has 99 %
        of its values within a few units (a Gaussian: 2.6); raw pixels (0..255) or raw
        physical units do not. (The maximum would flag standardised rare features.)
      mean_tol, feature_mean_tol: ``|mean of x| > 1``, or some ``|feature mean| > 3``
        -- standardised features have mean 0.
      std_range: the overall std of ``x`` outside ``[0.1, 10]``.
      scale_ratio: ``max feature std / median feature std > 10`` -- one feature on a much
        larger scale dominates the first layer's pre-activations and its gradient.
      class_ratio: ``largest / smallest class count > 3``.
      loss_high, loss_low: warn when ``L0 > (1 + loss_high) L_ref`` or
        ``L0 < (1 - loss_low) L_ref``, where ``L_ref`` is the loss of an uninformative
        output (``ln C`` for softmax cross entropy: zero logits). For random logits with
        per-class std ``s`` the expected initial CE is about ``ln C + s^2 (1 - 1/C) / 2``,
        so the default ``loss_high = 1`` (twice ``ln C``) is crossed at a logit std of
        ``sqrt(2 ln C / (1 - 1/C))``: 2.3 for C = 10, 1.8 for C = 3 -- confident random
        predictions. Measured: a default (He-uniform) 8-32-32-3 ReLU MLP on standardised
        inputs has a logit std of 0.85 to 2.0 over 20 seeds, 1 of 20 above the line (a
        tighter 0.5 ``ln C`` flags 9 of them); last-layer weights x100 give ~100. (He init
        on the *last* layer doubles the logit variance: a smaller last-layer init is the
        fix the advice names.) An initial loss below ``(1 - loss_low) L_ref`` means the
        model is right before training (label leakage, or the loss gets probabilities
        instead of logits).
      overfit_ratio: the batch counts as fitted when ``L_final < overfit_ratio * L_ref``
        with ``L_ref`` the uninformative output's loss (``ln C``; 0.23 nats for C = 10), or
        when the classification accuracy on it reaches 100 %; the loss not moving at all
        (``L_final > 0.9 L0``) is an error. (Relative to ``L_ref``, not to ``L0``: a huge
        initial loss must not make a poor fit look good.)
      saturated: warn when more than this fraction of a sigmoid/tanh layer's outputs is
        saturated (``sigmoid < 0.01 or > 0.99``, ``|tanh| > 0.99``; there the derivative is
        below ~0.01 / 0.02 and almost no gradient passes).
      dead: warn when more than this fraction of a ReLU layer's units outputs 0 for every
        example of the batch (dead units never get a gradient).
      grad_ratio: ``(vanish, explode)``: the first layer's gradient norm over the last
        layer's below ``vanish`` (1e-3) or above ``explode`` (1e3).
    """

    max_abs_input: float = 10.0
    mean_tol: float = 1.0
    feature_mean_tol: float = 3.0
    std_range: tuple[float, float] = (0.1, 10.0)
    scale_ratio: float = 10.0
    class_ratio: float = 3.0
    loss_high: float = 1.0
    loss_low: float = 0.5
    overfit_ratio: float = 0.1
    saturated: float = 0.2
    dead: float = 0.2
    grad_ratio: tuple[float, float] = (1e-3, 1e3)


#: The default rules.
DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Finding:
    """One check's verdict: ``severity`` is ``"ok"``, ``"warn"`` or ``"error"``.

    ``message`` says what was measured, ``advice`` what to do about it (empty when ok).
    """

    check: str
    severity: Severity
    message: str
    advice: str = ""

    def __post_init__(self) -> None:
        if self.severity not in _RANK:
            raise ValueError(f"severity must be 'ok', 'warn' or 'error', got {self.severity!r}")


@dataclass
class Report:
    """The findings of :func:`nnkit.diagnose.diagnose` and the numbers behind them.

    Attributes:
      findings: one :class:`Finding` per check that ran, in :data:`CHECKS` order.
      numbers: ``{check: {name: value}}`` -- scalars, per-layer dicts and small arrays
        (feature means/stds, class counts, the overfitting loss curve, activation
        histograms) for plotting or further analysis.
    """

    findings: list[Finding] = field(default_factory=list)
    numbers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __getitem__(self, check: str) -> Finding:
        for f in self.findings:
            if f.check == check:
                return f
        raise KeyError(f"no finding for check {check!r}; ran: {[f.check for f in self.findings]}")

    def __contains__(self, check: object) -> bool:
        return any(f.check == check for f in self.findings)

    @property
    def severity(self) -> Severity:
        """The worst severity over all findings (``"ok"`` when there are none)."""
        return max((f.severity for f in self.findings), key=_RANK.__getitem__, default="ok")

    @property
    def ok(self) -> bool:
        """``True`` when every check is ``"ok"``."""
        return self.severity == "ok"

    @property
    def problems(self) -> list[Finding]:
        """The findings that are not ``"ok"``."""
        return [f for f in self.findings if f.severity != "ok"]

    def __str__(self) -> str:
        n_warn = sum(f.severity == "warn" for f in self.findings)
        n_err = sum(f.severity == "error" for f in self.findings)
        head = (
            f"nnkit diagnosis: {len(self.findings)} checks, {n_err} error(s), "
            f"{n_warn} warning(s)"
        )
        lines = [head, "=" * len(head)]
        width = max((len(f.check) for f in self.findings), default=0)
        for f in self.findings:
            tag = {"ok": "ok   ", "warn": "WARN ", "error": "ERROR"}[f.severity]
            lines.append(f"[{tag}] {f.check.ljust(width)}  {f.message}")
            if f.advice:
                lines.append(f"        {' ' * width}  -> {f.advice}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy: findings as dicts, arrays as lists."""

        def conv(v):
            if isinstance(v, dict):
                return {str(k): conv(x) for k, x in v.items()}
            if isinstance(v, list | tuple):
                return [conv(x) for x in v]
            if isinstance(v, np.ndarray):
                return v.tolist()
            if isinstance(v, np.generic):
                return v.item()
            return v

        return {
            "severity": self.severity,
            "findings": [f.__dict__.copy() for f in self.findings],
            "numbers": conv(self.numbers),
        }

    def plot(self, directory: str | os.PathLike, *, prefix: str = "") -> list[str]:
        """Writes PNG figures of the numbers into ``directory``; returns their paths.

        ``inputs.png`` (per-feature mean and std, class counts), ``activations.png``
        (histogram of every layer's output at init, saturated / dead fractions),
        ``gradients.png`` (per-layer gradient norms at init, log scale) and ``overfit.png``
        (the loss while overfitting one batch) -- each only if its check ran.
        """
        from nnkit.diagnose import plots

        return plots.plot_report(self, directory, prefix=prefix)
