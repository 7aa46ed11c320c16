"""The six checks as host-side functions of measured numbers: ``(numbers...) -> Finding``.

Each turns numbers computed by :func:`nnkit.diagnose.diagnose` (or by you) into a
:class:`~nnkit.diagnose.report.Finding` that says what was seen and what to do. They are
plain NumPy so each rule can be tested on hand-made numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from nnkit.diagnose.report import DEFAULT_THRESHOLDS, Finding, Thresholds

__all__ = [
    "input_stats",
    "check_inputs",
    "label_counts",
    "check_labels",
    "check_initial_loss",
    "check_overfit",
    "activation_stats",
    "check_activations",
    "check_gradients",
    "SATURATING",
    "RECTIFYING",
]

#: Layer kinds whose outputs are checked for saturation: ``kind -> (low, high)`` bounds
#: outside which an output counts as saturated.
SATURATING = {"sigmoid": (0.01, 0.99), "tanh": (-0.99, 0.99), "hard_tanh": (-0.99, 0.99)}
#: Layer kinds whose units can die (output exactly 0 for every input).
RECTIFYING = ("relu", "relu6")

_MAX_ROWS = 10_000  # rows used for per-feature statistics


def _fmt(v: float) -> str:
    return f"{v:.3g}"


# ----------------------------------------------------------------------------- 1. inputs


def input_stats(x: Any) -> dict[str, Any]:
    """Range, mean/std overall and per feature (features = the flattened example).

    ``abs_q99`` is the 99th percentile of ``|x|``: robust to the few large z-scores that
    standardised rare features (e.g. border pixels) produce, unlike the maximum.

    At most 10,000 rows (an evenly spaced subset) enter the per-feature statistics.
    ``scale_ratio`` is ``max / median`` of the non-constant features' stds.
    """
    x = np.asarray(x)
    n = x.shape[0]
    flat = x.reshape(n, -1)
    rows = flat if n <= _MAX_ROWS else flat[np.linspace(0, n - 1, _MAX_ROWS).astype(int)]
    rows = rows.astype(np.float64)
    fmean = rows.mean(axis=0)
    fstd = rows.std(axis=0)
    live = fstd[fstd > 0]
    return {
        "min": float(flat.min()),
        "max": float(flat.max()),
        "mean": float(rows.mean()),
        "std": float(rows.std()),
        "abs_q99": float(np.quantile(np.abs(rows), 0.99)),
        "feature_mean": fmean.astype(np.float32),
        "feature_std": fstd.astype(np.float32),
        "constant_features": int((fstd == 0).sum()),
        "scale_ratio": float(live.max() / np.median(live)) if live.size else 1.0,
    }


def check_inputs(x: Any, th: Thresholds = DEFAULT_THRESHOLDS) -> tuple[Finding, dict[str, Any]]:
    """(1) Non-finite values (error), unnormalised range / mean / std, mixed feature scales."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        return Finding("inputs", "ok", f"{x.dtype} inputs (token ids?): scale not checked"), {}
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        return Finding(
            "inputs", "error",
            f"x has {int(bad.sum())} NaN/inf value(s), the first at index {first}",
            "clean or impute the data before training (a single NaN makes every loss NaN)",
        ), {"nonfinite": int(bad.sum())}
    s = input_stats(x)
    issues = []
    if s["abs_q99"] > th.max_abs_input:
        hint = " (raw 0..255 pixels?)" if s["min"] >= 0 and 100 < s["max"] <= 255 else ""
        big = s["max"] if abs(s["max"]) >= abs(s["min"]) else s["min"]
        issues.append(f"values up to {_fmt(big)}{hint}, 99th percentile of |x| "
                      f"{_fmt(s['abs_q99'])}")
    if abs(s["mean"]) > th.mean_tol:
        issues.append(f"overall mean {_fmt(s['mean'])} is far from 0")
    worst_mean = float(np.abs(s["feature_mean"]).max()) if s["feature_mean"].size else 0.0
    if worst_mean > th.feature_mean_tol and abs(s["mean"]) <= th.mean_tol:
        issues.append(f"a feature has mean {_fmt(worst_mean)}")
    lo, hi = th.std_range
    if not lo <= s["std"] <= hi:
        issues.append(f"overall std {_fmt(s['std'])} is outside [{lo}, {hi}]")
    if s["scale_ratio"] > th.scale_ratio:
        issues.append(f"feature scales differ by a factor {_fmt(s['scale_ratio'])} "
                      "(max/median std)")
    summary = (f"range [{_fmt(s['min'])}, {_fmt(s['max'])}], mean {_fmt(s['mean'])}, "
               f"std {_fmt(s['std'])}, {s['constant_features']} constant feature(s)")
    if issues:
        return Finding(
            "inputs", "warn", "unnormalised inputs: " + "; ".join(issues) + f" ({summary})",
            "standardise each feature, x = (x - mean) / std, with the mean and std of the "
            "training split only (reuse them for validation/test); scale images to [0, 1] first",
        ), s
    return Finding("inputs", "ok", summary), s


# ----------------------------------------------------------------------------- 2. labels


def label_counts(y: Any, num_classes: int) -> np.ndarray:
    """Examples per class from integer ids ``(n,)`` / ``(n, 1)`` or one-hot ``(n, C)``."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == num_classes and num_classes > 1:
        ids = y.argmax(axis=1)
    else:
        ids = y.reshape(y.shape[0], -1)[:, 0] if y.ndim > 1 else y
    ids = ids.astype(np.int64)
    return np.bincount(np.clip(ids, 0, num_classes - 1), minlength=num_classes)


def check_labels(
    y: Any, num_classes: int | None, th: Thresholds = DEFAULT_THRESHOLDS
) -> tuple[Finding, dict[str, Any]]:
    """(2) Class balance: labels out of range (error), absent classes, ``max/min`` ratio."""
    y = np.asarray(y)
    if num_classes is None:
        msg = f"real-valued targets (mean {_fmt(float(y.mean()))}, std {_fmt(float(y.std()))})"
        return Finding("labels", "ok", msg + ": class balance not checked"), {}
    if np.issubdtype(y.dtype, np.integer):
        bad = (y < 0) | (y >= num_classes)
        if bad.any():
            i = int(np.argwhere(bad.reshape(y.shape[0], -1).any(axis=1))[0, 0])
            return Finding(
                "labels", "error",
                f"{int(bad.sum())} label(s) outside [0, {num_classes}); the first at index {i} "
                f"is {int(np.asarray(y[i]).ravel()[0])}",
                "fix num_classes or the labels (the loss is NaN for such labels)",
            ), {}
    counts = label_counts(y, num_classes)
    absent = [int(c) for c in np.flatnonzero(counts == 0)]
    present = counts[counts > 0]
    ratio = float(present.max() / present.min()) if present.size else math.inf
    nums = {"counts": counts, "ratio": ratio, "absent": absent}
    summary = (f"{num_classes} classes, {int(present.min())}..{int(present.max())} examples "
               f"per class (largest/smallest {_fmt(ratio)})")
    issues = []
    if absent:
        issues.append(f"class(es) {absent} have no example")
    if ratio > th.class_ratio:
        issues.append(f"imbalanced: class {int(counts.argmax())} has {int(counts.max())} "
                      f"examples, class {int(np.where(counts > 0, counts, np.inf).argmin())} "
                      f"has {int(present.min())}")
    if issues:
        return Finding(
            "labels", "warn", "; ".join(issues) + f" ({summary})",
            "use class weights in the loss or resample the training set, split stratified, and "
            "report per-class metrics (macro F1), not accuracy alone",
        ), nums
    return Finding("labels", "ok", summary), nums


# ----------------------------------------------------------------------------- 3. initial loss


def check_initial_loss(
    loss0: float,
    expected: float,
    *,
    what: str = "an uninformative output",
    output_std: float | None = None,
    th: Thresholds = DEFAULT_THRESHOLDS,
) -> Finding:
    """(3) The initial loss against ``expected`` (e.g. ``ln C``); see :class:`Thresholds`."""
    if not math.isfinite(loss0):
        return Finding(
            "initial_loss", "error", f"initial loss is {loss0}",
            "check the inputs for NaN/inf, the labels' range, and the loss/output pairing",
        )
    extra = f"; output std {_fmt(output_std)}" if output_std is not None else ""
    msg = f"initial loss {_fmt(loss0)}, expected ~{_fmt(expected)} ({what}){extra}"
    if loss0 > (1 + th.loss_high) * expected:
        return Finding(
            "initial_loss", "warn", msg + ": the model is confidently wrong at init",
            "initial weights too large or a large last-layer bias: scale the last layer's init "
            "down (e.g. x0.01 or zeros) and start its bias at 0 (or the log class priors); "
            "standardise the inputs",
        )
    if loss0 < (1 - th.loss_low) * expected:
        return Finding(
            "initial_loss", "warn", msg + ": lower than chance before training",
            "check for label information leaking into the inputs, and that the loss gets "
            "what it expects (logits for cross_entropy, log-probabilities for nll)",
        )
    return Finding("initial_loss", "ok", msg)


# ----------------------------------------------------------------------------- 4. overfit


def check_overfit(
    curve: Any,
    *,
    reference: float | None = None,
    accuracy: float | None = None,
    th: Thresholds = DEFAULT_THRESHOLDS,
) -> Finding:
    """(4) Whether the loss on one repeated batch fell below ``overfit_ratio * reference``.

    ``curve`` is the loss before each step and after the last (``steps + 1`` values, as
    :func:`nnkit.diagnose.overfit_curve` returns); ``reference`` the uninformative output's
    loss on the batch (default: the first loss). 100 % ``accuracy`` on the batch also counts
    as fitted.
    """
    curve = np.asarray(curve, np.float64)
    l0, lf = float(curve[0]), float(curve[-1])
    ref = l0 if reference is None else float(reference)
    acc = f", batch accuracy {accuracy:.0%}" if accuracy is not None else ""
    msg = f"one batch, {len(curve) - 1} steps: loss {_fmt(l0)} -> {_fmt(lf)}{acc}"
    if not np.isfinite(curve).all():
        return Finding(
            "overfit", "error", msg + " (non-finite loss)",
            "the loss blew up: lower the learning rate, check inputs/init scale",
        )
    if lf < th.overfit_ratio * ref or (accuracy is not None and accuracy >= 1.0):
        return Finding("overfit", "ok", msg)
    if lf > 0.9 * l0:
        return Finding(
            "overfit", "error", msg + ": the loss barely moved",
            "model or loss is broken: check that gradients reach the params (see gradients), "
            "the loss/labels pairing and the output size; then the learning rate",
        )
    return Finding(
        "overfit", "warn", msg + ": could not memorise a single batch",
        "too little capacity, saturated/dead units (see activations), a bad init or learning "
        "rate; a healthy model drives the loss on one batch to ~0",
    )


# ----------------------------------------------------------------------------- 5. activations


def activation_stats(kind: str, y: Any, bins: int = 40) -> dict[str, Any]:
    """Mean, std, a histogram and -- by ``kind`` -- the saturated or dead fraction of ``y``.

    ``y`` is one layer's output ``(batch, ..., units)``. Saturated: the fraction of values
    outside :data:`SATURATING`'s bounds. Dead: the fraction of units (last axis) equal to 0
    for every example and position.
    """
    y = np.asarray(y, np.float64)
    finite = y[np.isfinite(y)]
    out: dict[str, Any] = {
        "kind": kind,
        "mean": float(finite.mean()) if finite.size else math.nan,
        "std": float(finite.std()) if finite.size else math.nan,
        "nonfinite": int(y.size - finite.size),
    }
    if finite.size:
        counts, edges = np.histogram(finite, bins=bins)
        out["hist_counts"], out["hist_edges"] = counts, edges
    if kind in SATURATING:
        lo, hi = SATURATING[kind]
        out["saturated"] = float(((y < lo) | (y > hi)).mean())
    if kind in RECTIFYING and y.ndim >= 2:
        alive = (y.reshape(-1, y.shape[-1]) > 0).any(axis=0)
        out["dead"] = float(1.0 - alive.mean())
    return out


def check_activations(
    stats: Mapping[str, Mapping[str, Any]], th: Thresholds = DEFAULT_THRESHOLDS
) -> Finding:
    """(5) Saturated sigmoid/tanh and dead ReLU layers from :func:`activation_stats` per layer."""
    nonfinite = [p for p, s in stats.items() if s.get("nonfinite")]
    if nonfinite:
        return Finding(
            "activations", "error", f"NaN/inf outputs at init in {nonfinite}",
            "check the inputs and the init scale",
        )
    sat = {p: s["saturated"] for p, s in stats.items() if s.get("saturated", 0) > th.saturated}
    dead = {p: s["dead"] for p, s in stats.items() if s.get("dead", 0) > th.dead}
    issues, advice = [], []
    if sat:
        issues.append("saturated: " + ", ".join(f"{p} {v:.0%}" for p, v in sat.items()))
        advice.append("lower the init scale (Glorot/LeCun for sigmoid/tanh), standardise the "
                      "inputs, or add BatchNorm before the activation")
    if dead:
        issues.append("dead ReLU units: " + ", ".join(f"{p} {v:.0%}" for p, v in dead.items()))
        advice.append("use He init and a zero (or small positive) bias, a lower init scale, "
                      "or LeakyReLU")
    checked = sum(("saturated" in s) or ("dead" in s) for s in stats.values())
    if issues:
        severity = "error" if any(v >= 1.0 for v in dead.values()) else "warn"
        return Finding("activations", severity, "; ".join(issues), "; ".join(advice))
    if not checked:
        return Finding("activations", "ok", f"{len(stats)} layer(s), no sigmoid/tanh/ReLU to check")
    return Finding("activations", "ok", f"{checked} sigmoid/tanh/ReLU layer(s) within limits "
                   f"(saturated <= {th.saturated:.0%}, dead <= {th.dead:.0%})")


# ----------------------------------------------------------------------------- 6. gradients


def check_gradients(
    norms: Mapping[str, float], th: Thresholds = DEFAULT_THRESHOLDS
) -> tuple[Finding, dict[str, Any]]:
    """(6) Per-layer gradient norms (in application order): first/last ratio, zero, NaN."""
    names = list(norms)
    vals = np.array([norms[n] for n in names], np.float64)
    if not names:
        return Finding("gradients", "ok", "the model has no parameters"), {}
    if not np.isfinite(vals).all():
        bad = [n for n, v in zip(names, vals, strict=True) if not np.isfinite(v)]
        return Finding(
            "gradients", "error", f"NaN/inf gradients in {bad}",
            "check inputs, init scale and the loss (log of 0?)",
        ), {}
    ratio = float(vals[0] / vals[-1]) if vals[-1] > 0 else math.inf
    nums = {"ratio": ratio, "first": names[0], "last": names[-1]}
    zero = [n for n, v in zip(names, vals, strict=True) if v == 0]
    summary = (f"{len(names)} layer(s): |grad| {names[0]} {_fmt(vals[0])} ... {names[-1]} "
               f"{_fmt(vals[-1])} (first/last {_fmt(ratio)})")
    vanish, explode = th.grad_ratio
    if zero:
        return Finding(
            "gradients", "warn", f"no gradient reaches {zero}; " + summary,
            "dead or saturated units upstream (see activations) or an output that ignores "
            "these params: fix the init (He for ReLU), use LeakyReLU",
        ), nums
    if len(names) > 1 and ratio < vanish:
        return Finding(
            "gradients", "warn", "vanishing gradients: " + summary,
            "use ReLU-family activations with He init instead of deep sigmoid/tanh stacks, "
            "add BatchNorm or residual connections",
        ), nums
    if len(names) > 1 and ratio > explode:
        return Finding(
            "gradients", "warn", "exploding gradients: " + summary,
            "lower the init scale, clip gradients (clip_norm=1.0), add normalisation",
        ), nums
    return Finding("gradients", "ok", summary), nums
