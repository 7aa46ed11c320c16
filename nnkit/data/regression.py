"""1-D regression sets ``sin``, ``abs``, ``step``, ``poly``: x (n, 1), y (n, 1), both float32.

``x`` is drawn uniformly (``grid=True``: evenly spaced) from ``[-π, π]`` for ``sin`` and from
``[-1, 1]`` for the others; ``noise`` is the std of Gaussian noise added to ``y``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from nnkit.data.dataset import Dataset, check_generated_size
from nnkit.data.registry import register

__all__ = ["function_1d", "sin", "abs_", "step", "poly"]

DEFAULT_POLY = (0.0, -1.0, 0.0, 2.0)  # 2x^3 - x


def function_1d(
    name: str,
    f: Callable[[np.ndarray], np.ndarray],
    lo: float,
    hi: float,
    n: int,
    noise: float,
    seed: int,
    grid: bool = False,
) -> Dataset:
    """Sample ``y = f(x) + noise·ε`` at ``n`` points of ``[lo, hi]``: x, y (n, 1) float32."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    check_generated_size(name, n, 1)
    rng = np.random.default_rng(seed)
    x = np.linspace(lo, hi, n) if grid else rng.uniform(lo, hi, n)
    y = f(x) + noise * rng.standard_normal(n)
    return Dataset.regression(name, x[:, None], y[:, None])


def sin(n: int = 200, noise: float = 0.0, seed: int = 0, grid: bool = False) -> Dataset:
    """``y = sin(x)`` for x in [-π, π]."""
    return function_1d("sin", np.sin, -np.pi, np.pi, n, noise, seed, grid)


def abs_(n: int = 200, noise: float = 0.0, seed: int = 0, grid: bool = False) -> Dataset:
    """``y = |x|`` for x in [-1, 1]."""
    return function_1d("abs", np.abs, -1.0, 1.0, n, noise, seed, grid)


def step(n: int = 200, noise: float = 0.0, seed: int = 0, grid: bool = False) -> Dataset:
    """``y = 1 if x > 0 else 0`` for x in [-1, 1]."""
    return function_1d(
        "step", lambda x: (x > 0).astype(np.float64), -1.0, 1.0, n, noise, seed, grid
    )


def poly(
    n: int = 200,
    noise: float = 0.0,
    seed: int = 0,
    grid: bool = False,
    coeffs: Sequence[float] = DEFAULT_POLY,
) -> Dataset:
    """``y = Σ coeffs[i]·x^i`` for x in [-1, 1] (default ``2x³ - x``)."""
    try:
        c = np.asarray(coeffs, np.float64)
    except (TypeError, ValueError):
        c = None
    if c is None or c.ndim != 1 or c.size == 0 or not np.isfinite(c).all():
        raise ValueError(f"poly: coeffs must be a non-empty list of finite numbers, got "
                         f"{coeffs!r}")
    return function_1d(
        "poly", lambda x: np.polynomial.polynomial.polyval(x, c), -1, 1, n, noise, seed, grid
    )


register("sin", sin, "1-D regression y = sin(x), x in [-pi, pi] (n, noise, seed)")
register("abs", abs_, "1-D regression y = |x|, x in [-1, 1] (n, noise, seed)")
register("step", step, "1-D regression y = [x > 0], x in [-1, 1] (n, noise, seed)")
register("poly", poly, "1-D regression y = polynomial(x), default 2x^3 - x, x in [-1, 1]")
