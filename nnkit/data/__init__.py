"""nnkit.data: data sets by name, splits, batching and augmentation.

``load(name, **options) -> Dataset`` is the single entry point; ``available()`` lists the
names. Generated sets take ``seed``; file-backed sets take ``path`` (and ``limit``)::

    ds = nnkit.data.load("moons", n=500, noise=0.2, seed=1)
    ds.x.shape, ds.y.shape, ds.num_classes        # (500, 2) (500,) 2
    fm = nnkit.data.load("fashion_mnist", limit=1000)
    fm.x.shape, fm.x_test.shape                   # (1000, 28, 28, 1) (1000, 28, 28, 1)

Modules: ``dataset`` (Dataset, DataFormatError), ``registry``, ``synthetic`` (2-D toy
classification), ``regression`` (1-D), ``sequence``, ``digits``, ``idx`` + ``mnist``
(IDX files), ``cifar`` (binary CIFAR-10), ``fileio`` (raw/gzip reading), ``splits``,
``loaders`` (device-side epochs, prefetching iterator), ``shuffle`` (fast on-device
permutation), ``augment``.
"""

from __future__ import annotations

# Importing the loader modules registers their data sets.
from nnkit.data import cifar, digits, mnist, regression, sequence, synthetic  # noqa: F401
from nnkit.data.augment import (
    augment_batch,
    gaussian_noise,
    mixup,
    random_crop,
    random_flip_lr,
    random_rotate,
    random_translate,
    rotate,
)
from nnkit.data.cifar import parse_cifar_bin
from nnkit.data.dataset import DataFormatError, Dataset
from nnkit.data.idx import parse_idx, read_idx, write_idx
from nnkit.data.loaders import BatchIterator, batch_mask, epoch_batches
from nnkit.data.registry import available, load, register
from nnkit.data.splits import (
    Standardizer,
    one_hot,
    split,
    split_contiguous,
    split_indices,
    standardize,
)

__all__ = [
    "Dataset",
    "DataFormatError",
    "load",
    "available",
    "register",
    "split",
    "split_indices",
    "split_contiguous",
    "standardize",
    "Standardizer",
    "one_hot",
    "epoch_batches",
    "batch_mask",
    "BatchIterator",
    "random_translate",
    "random_rotate",
    "rotate",
    "random_flip_lr",
    "random_crop",
    "gaussian_noise",
    "mixup",
    "augment_batch",
    "parse_idx",
    "read_idx",
    "write_idx",
    "parse_cifar_bin",
]
