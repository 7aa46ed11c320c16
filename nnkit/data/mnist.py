"""MNIST-format image sets from IDX files: ``fashion_mnist``, ``mnist``, ``kmnist``.

A directory holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each raw or ``.gz``; the
``train-images.idx3-ubyte`` spelling is accepted too). Loaded as x (n, 28, 28, 1) float32 in
[0, 1], y (n,) int32, with the official test split in ``x_test`` / ``y_test``.
"""

from __future__ import annotations

import os
from os import PathLike

import numpy as np

from nnkit.data.dataset import DataFormatError, Dataset
from nnkit.data.idx import read_idx
from nnkit.data.registry import register

__all__ = ["load_idx_images", "fashion_mnist", "mnist", "kmnist", "FASHION_MNIST_DIR"]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DIGIT_CLASSES = tuple(str(i) for i in range(10))
KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")

_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _find(directory: str, stem: str) -> str | None:
    """The one file of ``stem`` in ``directory`` (``-idx`` or ``.idx`` spelling, raw or
    ``.gz``); two of them is an error (they may hold different data)."""
    alt = stem.replace("-idx", ".idx")
    found = [p for base in dict.fromkeys((stem, alt)) for suffix in ("", ".gz")
             if os.path.isfile(p := os.path.join(directory, base + suffix))]
    if len(found) > 1:
        raise DataFormatError(found[0], f"{len(found)} files hold {stem} in {directory} "
                              f"({', '.join(os.path.basename(p) for p in found)}): keep one",
                              field="files")
    return found[0] if found else None


def _read_pair(
    images_path: str, labels_path: str, num_classes: int, limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, ndim=3, dtype=np.uint8)
    labels = read_idx(labels_path, ndim=1, dtype=np.uint8)
    if images.shape[0] != labels.shape[0]:
        raise DataFormatError(
            labels_path,
            f"{labels.shape[0]} labels but {images_path} has {images.shape[0]} images",
            offset=4,
            field="dims",
        )
    if images.shape[0] == 0:
        raise DataFormatError(images_path, "contains no images", offset=4, field="dims")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    bad = np.flatnonzero(labels >= num_classes)
    if bad.size:
        i = int(bad[0])
        raise DataFormatError(
            labels_path,
            f"label {labels[i]} at index {i} (byte offset {8 + i}) is not in 0..{num_classes - 1}",
            offset=8 + i,
            field="data",
        )
    x = images.astype(np.float32)[..., None]
    x /= 255.0
    return x, labels.astype(np.int32)


def load_idx_images(
    path: str | PathLike,
    name: str,
    class_names: tuple[str, ...],
    limit: int | None = None,
    missing_hint: str = "",
) -> Dataset:
    """Load an MNIST-layout directory (see module doc) as a classification :class:`Dataset`.

    ``limit`` keeps the first ``limit`` examples of each split. Raises ``FileNotFoundError``
    (with ``missing_hint``) when a file is absent and ``DataFormatError`` when one is corrupt.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    directory = os.fspath(path)
    found = {k: _find(directory, stem) for k, stem in _FILES.items()}
    missing = [_FILES[k] + "[.gz]" for k, p in found.items() if p is None]
    if missing:
        where = directory if os.path.isdir(directory) else f"{directory} (no such directory)"
        raise FileNotFoundError(
            f"{name}: missing {', '.join(missing)} in {where}. {missing_hint}".rstrip()
        )
    k = len(class_names)
    x, y = _read_pair(found["train_images"], found["train_labels"], k, limit)
    xt, yt = _read_pair(found["test_images"], found["test_labels"], k, limit)
    if xt.shape[1:] != x.shape[1:]:
        raise DataFormatError(
            found["test_images"],
            f"images are {xt.shape[1]}x{xt.shape[2]} but training images are "
            f"{x.shape[1]}x{x.shape[2]}",
            offset=8,
            field="dims",
        )
    return Dataset.classification(name, x, y, k, class_names, x_test=xt, y_test=yt)


def fashion_mnist(path: str | PathLike | None = None, limit: int | None = None) -> Dataset:
    """Zalando's Fashion-MNIST: 60000 train / 10000 test 28x28 grey images, 10 classes.

    ``path`` defaults to ``/usr/share/datasets/fashion-mnist`` (Debian package
    ``dataset-fashion-mnist``).
    """
    hint = (
        "Install it with `apt-get install dataset-fashion-mnist` "
        "or pass path= to a directory holding the IDX files."
    )
    return load_idx_images(path or FASHION_MNIST_DIR, "fashion_mnist", FASHION_CLASSES, limit, hint)


def _needs_path(name: str, path: str | PathLike | None) -> str | PathLike:
    if path is None:
        raise FileNotFoundError(
            f"{name}: no default location; pass path= to a directory holding "
            + ", ".join(f"{s}[.gz]" for s in _FILES.values())
        )
    return path


def mnist(path: str | PathLike | None = None, limit: int | None = None) -> Dataset:
    """LeCun's MNIST digits from IDX files in ``path``: 28x28 grey images, 10 classes."""
    return load_idx_images(_needs_path("mnist", path), "mnist", DIGIT_CLASSES, limit)


def kmnist(path: str | PathLike | None = None, limit: int | None = None) -> Dataset:
    """Kuzushiji-MNIST (cursive Japanese hiragana) from IDX files in ``path``: 10 classes."""
    return load_idx_images(_needs_path("kmnist", path), "kmnist", KMNIST_CLASSES, limit)


register(
    "fashion_mnist",
    fashion_mnist,
    "Fashion-MNIST 28x28 clothing images, 10 classes, IDX files (path, limit); official test split",
)
register(
    "mnist",
    mnist,
    "MNIST 28x28 handwritten digits from IDX files (path, limit); official test split",
)
register(
    "kmnist",
    kmnist,
    "Kuzushiji-MNIST 28x28 hiragana from IDX files (path, limit); official test split",
)
