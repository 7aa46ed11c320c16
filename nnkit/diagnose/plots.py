"""Figures of a :class:`~nnkit.diagnose.report.Report` (matplotlib's object API, PNG).

The ``draw_*`` functions draw into a given axes so reports can be compared side by side;
:func:`plot_report` writes one PNG per check.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nnkit.plots import new_figure, release

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from nnkit.diagnose.report import Report

__all__ = [
    "draw_inputs",
    "draw_labels",
    "draw_gradients",
    "draw_overfit",
    "draw_histogram",
    "histogram_grid",
    "plot_report",
    "save_figure",
]


def _short(path: str, width: int = 22) -> str:
    return path if len(path) <= width else "..." + path[-(width - 3):]


def draw_inputs(ax: Axes, nums: Mapping[str, Any], label: str | None = None) -> None:
    """Per-feature mean and std against the feature index (0 and 1 are the targets)."""
    m, s = np.asarray(nums["feature_mean"]), np.asarray(nums["feature_std"])
    idx = np.arange(m.size)
    ax.plot(idx, m, ".", ms=3, label="mean" if label is None else f"{label}: mean")
    ax.plot(idx, s, ".", ms=3, label="std" if label is None else f"{label}: std")
    ax.axhline(0, color="k", lw=0.5)
    ax.axhline(1, color="k", lw=0.5, ls="--")
    ax.set_xlabel("feature")
    ax.set_ylabel("value")
    if max(np.abs(m).max(initial=0), s.max(initial=0)) > 20:
        ax.set_yscale("symlog")
    ax.set_title("inputs per feature (target: mean 0, std 1)")
    ax.legend(fontsize=7)


def draw_labels(ax: Axes, nums: Mapping[str, Any]) -> None:
    """Examples per class."""
    counts = np.asarray(nums["counts"])
    ax.bar(np.arange(counts.size), counts, color="tab:gray")
    ax.set_xlabel("class")
    ax.set_ylabel("examples")
    ax.set_title(f"label balance (max/min {nums['ratio']:.2g})")


def draw_gradients(
    ax: Axes, nums: Mapping[str, Any], label: str | None = None, color: str | None = None
) -> None:
    """Per-layer gradient norms at init (log scale), in application order."""
    names = list(nums["norms"])
    g = np.array([nums["norms"][n] for n in names], np.float64)
    ax.semilogy(np.arange(len(names)), np.maximum(g, 1e-30), "o-", label=label, color=color)
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels([_short(n, 14) for n in names], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("|grad| at init")
    ax.set_title("gradient norm per layer")
    if label:
        ax.legend(fontsize=7)


def draw_overfit(
    ax: Axes, nums: Mapping[str, Any], label: str | None = None, color: str | None = None
) -> None:
    """The loss on one repeated batch during the overfitting check (log scale)."""
    curve = np.asarray(nums["curve"], np.float64)
    ax.semilogy(np.arange(curve.size), np.maximum(curve, 1e-12), label=label, color=color)
    ax.set_xlabel("step")
    ax.set_ylabel("loss on the batch")
    ax.set_title(f"overfitting one batch of {nums.get('batch_size', '?')}")
    if label:
        ax.legend(fontsize=7)


def draw_histogram(ax: Axes, counts: Any, edges: Any, title: str, color: str = "tab:blue",
                   xlabel: str = "activation value") -> None:
    """One precomputed histogram (``counts[i]`` in ``[edges[i], edges[i+1])``), drawn as one
    filled step outline (one artist, not a bar per bin: ~10x cheaper to draw)."""
    counts, edges = np.asarray(counts), np.asarray(edges)
    ax.stairs(counts, edges, fill=True, color=color)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)
    ax.set_xlabel(xlabel, fontsize=7)
    ax.set_ylabel("count", fontsize=7)


def _stat_note(s: Mapping[str, Any]) -> str:
    if "saturated" in s:
        return f"saturated {s['saturated']:.0%}"
    if "dead" in s:
        return f"dead {s['dead']:.0%}"
    return f"std {s['std']:.2g}"


def histogram_grid(
    stats: Mapping[str, Mapping[str, Any]], title: str, cols: int = 4, color: str = "tab:blue"
) -> Figure:
    """A figure with one histogram panel per layer (``stats`` as in the activations check)."""
    items = [(p, s) for p, s in stats.items() if "hist_counts" in s]
    rows = max(1, -(-len(items) // cols))
    fig, axes = new_figure(rows, cols, figsize=(2.6 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.ravel()[len(items):]:
        ax.axis("off")
    for ax, (p, s) in zip(axes.ravel(), items, strict=False):
        draw_histogram(ax, s["hist_counts"], s["hist_edges"],
                       f"{_short(p)} ({s.get('kind', '')})\n{_stat_note(s)}", color)
    fig.suptitle(title, fontsize=10)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike) -> str:
    """Saves ``fig`` as a small PNG (80 dpi), closes it and returns the path."""
    top = 1.0 - 0.12 / fig.get_figheight() if fig._suptitle is not None else 1.0
    fig.tight_layout(rect=(0, 0, 1, top))
    fig.savefig(path, dpi=80)
    release(fig)
    return str(path)


def plot_report(report: Report, directory: str | os.PathLike, *, prefix: str = "") -> list[str]:
    """Writes ``{prefix}inputs.png``, ``activations.png``, ``gradients.png``, ``overfit.png``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    nums, paths = report.numbers, []
    if "feature_mean" in nums.get("inputs", {}):
        has_labels = "counts" in nums.get("labels", {})
        fig, axes = new_figure(1, 2 if has_labels else 1, figsize=(9 if has_labels else 5, 3),
                               squeeze=False)
        draw_inputs(axes[0, 0], nums["inputs"])
        if has_labels:
            draw_labels(axes[0, 1], nums["labels"])
        paths.append(save_figure(fig, d / f"{prefix}inputs.png"))
    if nums.get("activations"):
        fig = histogram_grid(nums["activations"], "layer outputs at init (one batch)")
        paths.append(save_figure(fig, d / f"{prefix}activations.png"))
    if nums.get("gradients", {}).get("norms"):
        fig, ax = new_figure(figsize=(5, 3.2))
        draw_gradients(ax, nums["gradients"])
        paths.append(save_figure(fig, d / f"{prefix}gradients.png"))
    if "curve" in nums.get("overfit", {}):
        fig, ax = new_figure(figsize=(5, 3))
        draw_overfit(ax, nums["overfit"])
        o = nums["overfit"]
        if "reference" in o:
            ax.axhline(o["reference"], color="k", lw=0.5, ls="--", label="uninformative output")
            ax.axhline(o["target"], color="tab:green", lw=0.8, ls=":", label="fitted below")
            ax.legend(fontsize=7)
        paths.append(save_figure(fig, d / f"{prefix}overfit.png"))
    return paths
