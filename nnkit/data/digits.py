"""The UCI 8x8 handwritten digits shipped with nnkit (``files/digits.csv.gz``, see digits.rst).

1797 examples, x (1797, 8, 8, 1) float32 in [0, 1] (pixel / 16), y (1797,) int32 in 0..9.
``size=28`` (or any size) resizes bilinearly to (size, size, 1), e.g. for LeNet.
"""

from __future__ import annotations

import gzip
import io
from importlib import resources

import numpy as np

from nnkit.data.dataset import DataFormatError, Dataset
from nnkit.data.registry import register

__all__ = ["digits", "resize_images"]

_FILE = "files/digits.csv.gz"


def _read_csv() -> tuple[np.ndarray, np.ndarray]:
    raw = resources.files("nnkit.data").joinpath(_FILE).read_bytes()
    try:
        text = gzip.decompress(raw)
    except (OSError, EOFError) as e:
        raise DataFormatError(_FILE, f"corrupt gzip data: {e}") from None
    table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape[1] != 65:
        raise DataFormatError(
            _FILE, f"expected 65 columns (64 pixels + label), got {table.shape[1]}"
        )
    return table[:, :64], table[:, 64]


RESIZE_MAX_BYTES = 4 << 30
"""The largest output :func:`resize_images` makes (4 GiB)."""


def resize_images(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of NHWC images ``x`` (n, h, w, c) to (n, size, size, c), float32.

    Runs on the CPU when JAX has one (data preparation stays off the accelerator), else on
    the default device (``JAX_PLATFORMS=cuda`` loads no CPU backend)."""
    import jax
    import jax.numpy as jnp

    n, _, _, c = x.shape
    nbytes = 4 * n * size * size * c
    if nbytes > RESIZE_MAX_BYTES:
        raise ValueError(f"resizing {n} images to {size}x{size}x{c} would take "
                         f"{nbytes / 2**30:.1f} GiB (at most {RESIZE_MAX_BYTES >> 30} GiB)")
    try:  # this process's own CPU (in a multi-process run another's is not addressable)
        device = jax.local_devices(backend="cpu")[0]
    except RuntimeError:  # no CPU backend loaded
        device = jax.local_devices()[0]
    with jax.default_device(device):
        out = jax.image.resize(jnp.asarray(x), (n, size, size, c), method="bilinear")
    return np.asarray(out, dtype=np.float32)


def digits(size: int = 8) -> Dataset:
    """8x8 digits as x (1797, size, size, 1) float32 in [0, 1], y (1797,) int32, 10 classes."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    pixels, labels = _read_csv()
    x = (pixels.reshape(-1, 8, 8, 1) / 16.0).astype(np.float32)
    if size != 8:
        x = np.clip(resize_images(x, size), 0.0, 1.0)
    return Dataset.classification("digits", x, labels, 10)


register(
    "digits",
    digits,
    "UCI 8x8 handwritten digits (1797 images, 10 classes, shipped); size=28 resizes",
)
