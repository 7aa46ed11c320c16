"""Host-side (NumPy) data preparation: random splits, standardisation, one-hot labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["split_indices", "split_contiguous", "split", "Standardizer", "standardize",
           "one_hot"]


def _counts(n: int, fractions: np.ndarray) -> np.ndarray:
    """Integer part sizes summing to ``n`` (largest-remainder rounding of ``n * fractions``)."""
    exact = n * fractions
    counts = np.floor(exact).astype(np.int64)
    short = n - counts.sum()
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:short]] += 1
    return counts


def _stratified_counts(sizes: Sequence[int], fractions: np.ndarray) -> np.ndarray:
    """``(classes, parts)`` integer sizes: each row sums to its class size, each column to the
    part's overall size ``_counts(sum(sizes), fractions)``, and every entry close to ``size *
    fraction`` (largest remainders first; within two). (Rounding each class on its own hands
    every class's leftover to the first parts: 100 classes of 3 split 0.8/0.1/0.1 gave parts
    of 300, 0 and 0.)"""
    sizes = np.asarray(sizes, np.int64)
    exact = sizes[:, None] * fractions[None, :]
    counts = np.floor(exact).astype(np.int64)
    row_left = sizes - counts.sum(axis=1)
    col_left = _counts(int(sizes.sum()), fractions) - counts.sum(axis=0)
    # largest remainders first (ties: earlier class, then earlier part), within what each
    # class and each part still needs
    rem = (exact - counts).ravel()
    for flat in np.lexsort((np.arange(rem.size), -rem)):
        c, p = divmod(int(flat), fractions.size)
        if row_left[c] > 0 and col_left[p] > 0 and rem[flat] > 0:
            counts[c, p] += 1
            row_left[c] -= 1
            col_left[p] -= 1
    for c in np.flatnonzero(row_left):  # rare: what the remainders could not place
        for p in np.flatnonzero(col_left):
            k = min(row_left[c], col_left[p])
            counts[c, p] += k
            row_left[c] -= k
            col_left[p] -= k
    return counts


def split_indices(
    n_or_y: int | np.ndarray,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    stratify: bool = False,
) -> tuple[np.ndarray, ...]:
    """Disjoint index arrays covering ``range(n)``, one per fraction, each shuffled.

    ``n_or_y`` is the number of examples, or the label array (n,) — required for
    ``stratify=True``, which splits every class in the given proportions. Fractions must be
    non-negative and sum to 1; sizes are rounded so that every example lands in exactly one
    part, each part gets ``round(n * fraction)`` examples (largest remainders) and, when
    stratified, each class within two examples (nearly always one) of its share of each part.
    """
    fr = np.asarray(fractions, np.float64)
    if fr.ndim != 1 or fr.size == 0 or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {tuple(fractions)}")
    rng = np.random.default_rng(seed)
    if isinstance(n_or_y, int | np.integer):
        if stratify:
            raise ValueError("stratify=True needs the labels y, not a count")
        groups = [np.arange(int(n_or_y))]
    else:
        y = np.asarray(n_or_y)
        if not stratify:
            groups = [np.arange(y.shape[0])]
        else:
            if y.ndim != 1:
                raise ValueError(f"stratify needs integer labels of shape (n,), got {y.shape}")
            _, inverse = np.unique(y, return_inverse=True)
            groups = [np.flatnonzero(inverse == c) for c in range(inverse.max(initial=-1) + 1)]
    parts: list[list[np.ndarray]] = [[] for _ in fr]
    sizes = _stratified_counts([len(g) for g in groups], fr)
    for g, row in zip(groups, sizes, strict=True):
        g = rng.permutation(g)
        bounds = np.cumsum(row)[:-1]
        for part, chunk in zip(parts, np.split(g, bounds), strict=True):
            part.append(chunk)
    return tuple(rng.permutation(np.concatenate(p)).astype(np.int64) for p in parts)


def split_contiguous(
    n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), gap: int = 0
) -> tuple[np.ndarray, ...]:
    """Index blocks ``[0, a)``, ``[a + gap, b)``, ``[b + gap, n)``...: one per fraction, in order.

    For examples that overlap their neighbours (windows of one sequence: example ``i`` shares
    data with ``i + k`` for ``k <= gap``), where a random split would put most held-out
    examples' data in the training set. ``gap`` examples are dropped between consecutive
    non-empty parts, so no two parts share data; the rest are shared out by ``fractions``
    (non-negative, summing to 1), rounded as in :func:`split_indices`.
    """
    fr = np.asarray(fractions, np.float64)
    if fr.ndim != 1 or fr.size == 0 or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {tuple(fractions)}")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    parts = int(np.count_nonzero(fr))
    usable = int(n) - gap * (parts - 1)
    if usable < parts:
        raise ValueError(f"{n} examples cannot make {parts} parts with {gap} dropped between "
                         f"each two")
    out, start = [], 0
    for count in _counts(usable, fr):
        out.append(np.arange(start, start + count, dtype=np.int64))
        if count:
            start += int(count) + gap
    return tuple(out)


def split(
    x: np.ndarray,
    y: np.ndarray,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    stratify: bool = False,
) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Random split into ``len(fractions)`` parts, e.g. ``(train, val, test)`` of ``(x, y)`` pairs.

    Parts are disjoint and together hold every example once; see :func:`split_indices`.
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]}")
    idx = split_indices(y if stratify else x.shape[0], fractions, seed, stratify)
    return tuple((x[i], y[i]) for i in idx)


class Standardizer(NamedTuple):
    """Per-feature statistics fitted on a training split; broadcast against ``x[0]``."""

    mean: np.ndarray
    std: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` as float32."""
        return ((np.asarray(x) - self.mean) / self.std).astype(np.float32)

    def invert(self, z: np.ndarray) -> np.ndarray:
        """Undo :meth:`apply`."""
        return (np.asarray(z) * self.std + self.mean).astype(np.float32)


def standardize(
    train: np.ndarray,
    *others: np.ndarray,
    axis: int | tuple[int, ...] = 0,
    eps: float = 1e-7,
) -> tuple[tuple[np.ndarray, ...], Standardizer]:
    """Fit mean/std on ``train`` only (reducing over ``axis``) and apply to all arrays.

    Returns ``((train_z, *others_z), stats)``. The default ``axis=0`` gives per-feature
    (per-pixel) statistics; use ``axis=(0, 1, 2)`` for per-channel statistics of NHWC images.
    Features with std below ``eps`` are divided by 1 instead.
    """
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if 0 not in axes:
        raise ValueError(f"axis must include the batch axis 0, got {axis}")
    t = np.asarray(train, np.float64)
    mean = t.mean(axis=axis, keepdims=True)
    std = t.std(axis=axis, keepdims=True)
    std = np.where(std < eps, 1.0, std)
    stats = Standardizer(mean[0].astype(np.float32), std[0].astype(np.float32))
    return tuple(stats.apply(a) for a in (train, *others)), stats


def one_hot(y: np.ndarray, num_classes: int, dtype: np.dtype = np.float32) -> np.ndarray:
    """Labels (...,) in ``0..num_classes-1`` -> one-hot (..., num_classes).

    NumPy input gives NumPy output (out-of-range labels raise ``ValueError``); a JAX array
    gives ``jax.nn.one_hot`` (jittable; out-of-range labels give all-zero rows).
    """
    if not isinstance(y, np.ndarray | list | tuple | int | np.integer):
        import jax

        if isinstance(y, jax.Array):
            return jax.nn.one_hot(y, num_classes, dtype=dtype)
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"one_hot needs integer labels, got {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must be in 0..{num_classes - 1}, got {y.min()}..{y.max()}")
    return np.eye(num_classes, dtype=dtype)[y]
