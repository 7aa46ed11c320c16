"""Figures as PNG files (matplotlib, no display needed). Each returns its path.

Figures are made with matplotlib's object API (``matplotlib.figure.Figure``), not pyplot:
nothing here changes the process's matplotlib backend (a notebook keeps its inline plots),
and ``import nnkit`` does not import matplotlib at all (~0.2 s); the first figure does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["plot_history", "plot_lr_find", "plot_lr", "plot_decision_boundary", "new_figure",
           "release"]


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float],
               squeeze: bool = True) -> tuple[Any, Any]:
    """``(fig, axes)`` as ``pyplot.subplots`` returns them, from a ``Figure`` that pyplot
    does not track (saved to PNG by matplotlib's Agg renderer)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def release(fig: Any) -> None:
    """Closes ``fig`` in pyplot if pyplot made it (a user's figure); others need nothing."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)

_SKIP = {"epoch", "seconds", "lr", "lr_scale", "grad_norm", "loss_scale"}


def _save(fig: Any, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    release(fig)
    return path


def _epochs(history: Mapping[str, Sequence[float]], n: int) -> np.ndarray:
    ep = history.get("epoch")
    return np.asarray(ep if ep is not None and len(ep) == n else range(n))


def plot_history(
    history: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    log_loss: bool = False,
) -> str:
    """One panel per quantity (loss, then each metric): train and val curves vs epoch.

    ``history`` is :attr:`nnkit.train.FitResult.history` (``train_loss``, ``val_loss``,
    ``train_accuracy``, ...). ``log_loss`` puts the loss panel on a log scale.
    """
    names: list[str] = []
    for k in history:
        if k in _SKIP:
            continue
        base = k.split("_", 1)[1] if k.startswith(("train_", "val_")) else k
        if base not in names:
            names.append(base)
    if "loss" in names:
        names.remove("loss")
        names.insert(0, "loss")
    if not names:
        raise ValueError(f"plot_history: nothing to plot in keys {sorted(history)}")
    fig, axes = new_figure(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for prefix, style in (("train_", "-"), ("val_", "--"), ("", "-")):
            k = prefix + name
            if k in history and (prefix or k == name):
                v = np.asarray(history[k], float)
                ax.plot(_epochs(history, len(v)), v, style, marker="o", ms=3,
                        label=prefix.rstrip("_") or name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        if name == "loss" and log_loss:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_lr(history: Mapping[str, Sequence[float]], path: str | os.PathLike, *,
            title: str | None = None) -> str:
    """Learning rate per epoch (``history["lr"]``, the rate at each epoch's last step), log y."""
    if "lr" not in history:
        raise ValueError(f"plot_lr: history has no 'lr' (keys {sorted(history)})")
    lr = np.asarray(history["lr"], float)
    fig, ax = new_figure(figsize=(5, 3.4))
    ax.plot(_epochs(history, len(lr)), lr, marker="o", ms=3)
    if np.all(lr[np.isfinite(lr)] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(title or "learning rate")
    return _save(fig, path)


def plot_lr_find(result: Any, path: str | os.PathLike, *, title: str | None = None) -> str:
    """Smoothed loss vs learning rate (log x) from :func:`nnkit.train.lr_find`, with the
    suggested rate marked."""
    fig, ax = new_figure(figsize=(5.5, 3.6))
    ax.plot(result.lrs, result.losses, label="smoothed loss")
    ax.set_xscale("log")
    s = float(result.suggestion)
    i = int(np.argmin(np.abs(np.log(result.lrs) - np.log(s))))
    ax.plot([s], [result.losses[i]], "ro", label=f"suggestion {s:.2g}")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title(title or "learning-rate range test")
    return _save(fig, path)


def plot_decision_boundary(
    predict_fn: Callable[[np.ndarray], Any],
    x: Any,
    y: Any,
    path: str | os.PathLike,
    *,
    resolution: int = 200,
    padding: float = 0.5,
    title: str | None = None,
) -> str:
    """Predicted class over a grid covering 2-D points ``x`` ``(n, 2)``, with the points
    coloured by label ``y`` ``(n,)``.

    ``predict_fn(points (m, 2)) -> (m, C)`` scores (class = argmax), ``(m, 1)`` / ``(m,)``
    logits (class = ``> 0``) or integer classes ``(m,)``; it is called once on the grid.
    """
    x = np.asarray(x, float)
    y = np.asarray(y)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"plot_decision_boundary needs 2-D points (n, 2), got {x.shape}")
    lo, hi = x.min(axis=0) - padding, x.max(axis=0) + padding
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution),
                         np.linspace(lo[1], hi[1], resolution))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    out = np.asarray(predict_fn(grid))
    if out.ndim == 2 and out.shape[1] > 1:
        cls = out.argmax(axis=1)
    elif np.issubdtype(out.dtype, np.integer):
        cls = out.reshape(-1)
    else:
        cls = (out.reshape(-1) > 0).astype(int)
    labels = y.argmax(axis=1) if y.ndim == 2 else y.reshape(-1)
    k = int(max(cls.max(initial=0), labels.max(initial=0))) + 1
    fig, ax = new_figure(figsize=(5, 4.5))
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    ax.contourf(gx, gy, cls.reshape(gx.shape), levels=np.arange(k + 1) - 0.5, cmap=cmap,
                vmin=-0.5, vmax=cmap.N - 0.5, alpha=0.3)
    ax.scatter(x[:, 0], x[:, 1], c=labels, cmap=cmap, vmin=-0.5, vmax=cmap.N - 0.5, s=12,
               edgecolors="k", linewidths=0.3)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_title(title or "decision boundary")
    return _save(fig, path)
