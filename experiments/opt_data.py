"""Data as the optimisation experiments (e08-e10) use them: flat, split, standardised."""

from __future__ import annotations

import numpy as np

import nnkit.data

__all__ = ["digits_splits", "fashion_splits"]

XY = tuple[np.ndarray, np.ndarray]


def digits_splits(seed: int = 0) -> tuple[XY, XY, XY]:
    """``(train, val, test)`` of the 1797 digits: x ``(n, 64)`` float32, y ``(n,)`` int32.

    70/15/15 stratified split; x standardised per pixel with training-split statistics.
    """
    ds = nnkit.data.load("digits")
    x = ds.x.reshape(len(ds.x), -1)
    (xtr, ytr), (xva, yva), (xte, yte) = nnkit.data.split(x, ds.y, (0.7, 0.15, 0.15),
                                                          seed=seed, stratify=True)
    (xtr, xva, xte), _ = nnkit.data.standardize(xtr, xva, xte)
    return (xtr, ytr), (xva, yva), (xte, yte)


def fashion_splits(n: int = 15000, seed: int = 0) -> tuple[XY, XY, XY]:
    """``(train, val, test)`` from the first ``n`` Fashion-MNIST training images (80/20
    stratified) and the official test set: x ``(m, 784)`` float32 standardised per pixel
    with training statistics, y ``(m,)`` int32.

    Raises:
      FileNotFoundError: the Fashion-MNIST files are not installed.
    """
    ds = nnkit.data.load("fashion_mnist", limit=n)
    flat = lambda a: a.reshape(len(a), -1)
    (xtr, ytr), (xva, yva) = nnkit.data.split(flat(ds.x), ds.y, (0.8, 0.2), seed=seed,
                                              stratify=True)
    (xtr, xva, xte), _ = nnkit.data.standardize(xtr, xva, flat(ds.x_test))
    return (xtr, ytr), (xva, yva), (xte, ds.y_test)
