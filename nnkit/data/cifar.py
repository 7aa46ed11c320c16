"""CIFAR-10 from its *binary version*: ``data_batch_{1..5}.bin`` and ``test_batch.bin``.

Each file is a run of 3073-byte records: one label byte, then 3072 pixel bytes in CHW order
(1024 red, 1024 green, 1024 blue, rows of 32). Loaded as x (n, 32, 32, 3) float32 NHWC in
[0, 1], y (n,) int32. The pickled "python version" is refused: nnkit never unpickles.
"""

from __future__ import annotations

import os
import re
from os import PathLike

import numpy as np

from nnkit.data.dataset import DataFormatError, Dataset
from nnkit.data.fileio import read_bytes
from nnkit.data.registry import register

__all__ = ["parse_cifar_bin", "cifar10", "RECORD_BYTES", "CIFAR10_CLASSES"]

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
IMAGE_SHAPE_CHW = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32
_BATCH_RE = re.compile(r"^data_batch_(\d+)\.bin$")

_USE_BINARY = (
    "nnkit never unpickles data. Use the CIFAR-10 binary version (cifar-10-binary.tar.gz, "
    "which unpacks to cifar-10-batches-bin/ with data_batch_1.bin ... test_batch.bin) and pass "
    "path= to that directory."
)


def parse_cifar_bin(
    data: bytes, name: str = "<bytes>", num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Decode CIFAR binary records: x (n, 32, 32, 3) uint8 NHWC, y (n,) uint8.

    Raises ``DataFormatError`` if the size is not a positive multiple of 3073 bytes or a label
    is ``>= num_classes``.
    """
    n, rem = divmod(len(data), RECORD_BYTES)
    if n == 0 or rem:
        detail = (
            "is empty"
            if not data
            else f"{len(data)} bytes is not a whole number of {RECORD_BYTES}-byte records "
            f"(1 label + 3072 pixels): record {n} is cut off after {rem} bytes at offset "
            f"{n * RECORD_BYTES}"
        )
        raise DataFormatError(name, detail, offset=n * RECORD_BYTES, field="record")
    records = np.frombuffer(data, np.uint8).reshape(n, RECORD_BYTES)
    labels = records[:, 0]
    bad = np.flatnonzero(labels >= num_classes)
    if bad.size:
        i = int(bad[0])
        raise DataFormatError(
            name,
            f"record {i}: label {labels[i]} at offset {i * RECORD_BYTES} is not in "
            f"0..{num_classes - 1}",
            offset=i * RECORD_BYTES,
            field="label",
        )
    x = records[:, 1:].reshape(n, *IMAGE_SHAPE_CHW).transpose(0, 2, 3, 1)
    return x, labels.copy()


TRAIN_BATCHES = 5
"""CIFAR-10's binary version has ``data_batch_1.bin`` ... ``data_batch_5.bin``."""


def _resolve(path: str) -> tuple[list[str], str]:
    """Train batch files (sorted by number) and the test file in ``path``; refuse python version."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"cifar10: {path} is not a directory. {_USE_BINARY}")
    for sub in ("cifar-10-batches-bin",):
        if os.path.isdir(os.path.join(path, sub)):
            path = os.path.join(path, sub)
    entries = set(os.listdir(path))
    batches = sorted((int(m.group(1)), e) for e in entries if (m := _BATCH_RE.match(e)))
    gaps = sorted(set(range(1, max(TRAIN_BATCHES, batches[-1][0]) + 1))
                  - {i for i, _ in batches}) if batches else []
    if gaps:  # a lost file would silently shrink the training set
        raise FileNotFoundError(
            f"cifar10: {', '.join(f'data_batch_{i}.bin' for i in gaps)} missing in {path} "
            f"(found {', '.join(e for _, e in batches)})")
    if batches and "test_batch.bin" in entries:
        return [os.path.join(path, e) for _, e in batches], os.path.join(path, "test_batch.bin")
    if "cifar-10-batches-py" in entries or os.path.basename(path.rstrip("/")) == (
        "cifar-10-batches-py"
    ):
        raise DataFormatError(
            path, f"this is the pickled CIFAR-10 'python version'. {_USE_BINARY}", field="format"
        )
    for e in ("data_batch_1", "test_batch", "batches.meta"):
        if e in entries:
            raise DataFormatError(
                os.path.join(path, e),
                f"is from the pickled CIFAR-10 'python version'. {_USE_BINARY}",
                field="format",
            )
    missing = [] if batches else ["data_batch_1.bin ..."]
    missing += [] if "test_batch.bin" in entries else ["test_batch.bin"]
    raise FileNotFoundError(f"cifar10: missing {', '.join(missing)} in {path}. {_USE_BINARY}")


def _to_float(x: np.ndarray) -> np.ndarray:
    out = x.astype(np.float32)
    out /= 255.0
    return out


def cifar10(path: str | PathLike | None = None, limit: int | None = None) -> Dataset:
    """CIFAR-10 (binary version) from directory ``path``: 32x32 RGB, 10 classes, test split.

    ``path`` may be ``cifar-10-batches-bin`` itself or its parent. ``limit`` keeps the first
    ``limit`` examples of each split.
    """
    if path is None:
        raise FileNotFoundError(f"cifar10: no default location; pass path=. {_USE_BINARY}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    train_files, test_file = _resolve(os.fspath(path))
    parts = [parse_cifar_bin(read_bytes(f), f) for f in train_files]
    x = np.concatenate([p[0] for p in parts])[:limit]
    y = np.concatenate([p[1] for p in parts])[:limit]
    xt, yt = parse_cifar_bin(read_bytes(test_file), test_file)
    xt, yt = xt[:limit], yt[:limit]
    return Dataset.classification(
        "cifar10", _to_float(x), y, 10, CIFAR10_CLASSES, x_test=_to_float(xt), y_test=yt
    )


register(
    "cifar10",
    cifar10,
    "CIFAR-10 32x32 RGB images, 10 classes, from the binary version "
    "(path, limit); official test split",
)
