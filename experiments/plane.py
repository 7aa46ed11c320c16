"""Drawing 2-D classifiers: a grid over the input plane, decision regions and data points."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.colors import ListedColormap

__all__ = ["plane_grid", "classes_of", "class_cmap", "draw_regions", "draw_points"]

COLORS = ("tab:blue", "tab:red", "tab:green", "tab:orange", "tab:purple", "tab:brown")


def class_cmap(num_classes: int) -> ListedColormap:
    """One distinct colour per class (blue, red, green, ...)."""
    if not 1 <= num_classes <= len(COLORS):
        raise ValueError(f"class_cmap: 1 to {len(COLORS)} classes, got {num_classes}")
    return ListedColormap(COLORS[:max(num_classes, 2)])


def plane_grid(
    x: np.ndarray, *, padding: float = 0.5, resolution: int = 150
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A square grid around 2-D points ``x`` ``(n, 2)``.

    Returns ``(gx, gy, points)`` with ``gx, gy`` ``(resolution, resolution)`` (meshgrid) and
    ``points`` ``(resolution**2, 2)`` float32, the grid points in row-major order.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"plane_grid needs 2-D points (n, 2), got shape {x.shape}")
    lo, hi = x.min(axis=0) - padding, x.max(axis=0) + padding
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution),
                         np.linspace(lo[1], hi[1], resolution))
    return gx, gy, np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def classes_of(scores: Any) -> np.ndarray:
    """Class ids from scores: ``(m, C>1)`` -> argmax; ``(m, 1)`` probabilities -> ``> 0.5``."""
    s = np.asarray(scores)
    if s.ndim == 2 and s.shape[1] > 1:
        return s.argmax(axis=1)
    return (s.reshape(-1) > 0.5).astype(int)


def draw_regions(
    ax: Any,
    predict: Callable[[np.ndarray], Any],
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    *,
    padding: float = 0.5,
    resolution: int = 150,
    title: str | None = None,
    point_size: float = 14,
) -> np.ndarray:
    """Shades the predicted class over the plane and draws the points coloured by label.

    ``predict(points (m, 2)) -> scores`` is called once on the grid (see :func:`classes_of`).
    Returns the ``(resolution, resolution)`` predicted classes.
    """
    gx, gy, pts = plane_grid(x, padding=padding, resolution=resolution)
    cls = classes_of(predict(pts)).reshape(gx.shape)
    levels = np.arange(num_classes + 1) - 0.5
    ax.contourf(gx, gy, cls, levels=levels, cmap=class_cmap(num_classes),
                vmin=-0.5, vmax=max(num_classes, 2) - 0.5, alpha=0.3)
    draw_points(ax, x, y, num_classes, s=point_size)
    ax.set_xlim(gx.min(), gx.max())
    ax.set_ylim(gy.min(), gy.max())
    if title:
        ax.set_title(title, fontsize=9)
    return cls


def draw_points(ax: Any, x: np.ndarray, y: np.ndarray, num_classes: int, **kw: Any) -> None:
    """Scatter of 2-D points coloured by integer label on the regions' colour map."""
    x = np.asarray(x)
    ax.scatter(x[:, 0], x[:, 1], c=np.asarray(y).reshape(-1), cmap=class_cmap(num_classes),
               vmin=-0.5, vmax=max(num_classes, 2) - 0.5, s=kw.pop("s", 14), edgecolors="k",
               linewidths=0.4, **kw)
