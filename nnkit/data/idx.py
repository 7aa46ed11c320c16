"""The IDX format of MNIST-style files: parse (validated) and write.

Layout: two zero bytes, a type code, the number of dimensions ``d``, then ``d`` big-endian
uint32 sizes, then the data in C order, big-endian. Anything that does not match — magic,
type code, dimension count, a size that disagrees with the byte count — raises
:class:`~nnkit.data.DataFormatError` naming the file, field and byte offset.
"""

from __future__ import annotations

import gzip
import math
import os
from os import PathLike

import numpy as np

from nnkit.data.dataset import DataFormatError
from nnkit.data.fileio import read_bytes

__all__ = ["parse_idx", "read_idx", "write_idx", "IDX_TYPES"]

IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("=") if dt.itemsize > 1 else dt: c for c, dt in IDX_TYPES.items()}


def _describe(dims: tuple[int, ...]) -> str:
    if len(dims) == 1:
        return f"{dims[0]} labels"
    if len(dims) == 3:
        return f"{dims[0]} images of {dims[1]}x{dims[2]}"
    return f"shape {dims}"


def parse_idx(
    data: bytes, name: str = "<bytes>", *, ndim: int | None = None, dtype: np.dtype | None = None
) -> np.ndarray:
    """Decode uncompressed IDX ``data`` into an array of the header's shape (native byte order).

    ``ndim`` / ``dtype``, when given, are required of the header. A uint8 result is a read-only
    view of ``data``. Raises ``DataFormatError`` on any mismatch.
    """
    if len(data) < 4:
        raise DataFormatError(
            name, f"{len(data)} bytes; an IDX header needs at least 4", offset=0, field="magic"
        )
    if data[0] != 0 or data[1] != 0:
        raise DataFormatError(
            name,
            f"bad IDX magic {data[:4].hex()} at offset 0 (must start with 0000)",
            offset=0,
            field="magic",
        )
    code, nd = data[2], data[3]
    if code not in IDX_TYPES:
        raise DataFormatError(
            name, f"unknown IDX type code 0x{code:02x} at offset 2", offset=2, field="type"
        )
    dt = IDX_TYPES[code]
    if dtype is not None and dt.newbyteorder("=") != np.dtype(dtype).newbyteorder("="):
        raise DataFormatError(
            name, f"IDX type is {dt.name}, expected {np.dtype(dtype).name}", offset=2, field="type"
        )
    if nd == 0:
        raise DataFormatError(name, "IDX header has 0 dimensions", offset=3, field="ndim")
    if ndim is not None and nd != ndim:
        raise DataFormatError(
            name, f"IDX header has {nd} dimensions, expected {ndim}", offset=3, field="ndim"
        )
    header = 4 + 4 * nd
    if len(data) < header:
        raise DataFormatError(
            name,
            f"truncated header: {nd} dimension sizes need {header} bytes but the file has "
            f"{len(data)}",
            offset=len(data),
            field="dims",
        )
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=nd, offset=4))
    expected = math.prod(dims) * dt.itemsize
    actual = len(data) - header
    if actual != expected:
        raise DataFormatError(
            name,
            f"header says {_describe(dims)} ({expected} bytes after offset {header}) "
            f"but {actual} bytes follow"
            + (" (truncated)" if actual < expected else " (oversized: trailing bytes)"),
            offset=header + min(actual, expected),
            field="data",
        )
    arr = np.frombuffer(data, dtype=dt, offset=header).reshape(dims)
    return arr if dt.itemsize == 1 else arr.astype(dt.newbyteorder("="))


def read_idx(
    path: str | PathLike, *, ndim: int | None = None, dtype: np.dtype | None = None
) -> np.ndarray:
    """Read an IDX file, raw or gzip (detected by magic bytes). See :func:`parse_idx`."""
    return parse_idx(read_bytes(path), os.fspath(path), ndim=ndim, dtype=dtype)


def write_idx(path: str | PathLike, array: np.ndarray) -> None:
    """Write ``array`` as IDX (gzip-compressed if ``path`` ends in ``.gz``)."""
    a = np.asarray(array)
    key = a.dtype.newbyteorder("=") if a.dtype.itemsize > 1 else a.dtype
    if key not in _CODES:
        raise TypeError(
            f"IDX cannot store dtype {a.dtype}; use one of uint8, int8, int16, "
            "int32, float32, float64"
        )
    if not 1 <= a.ndim <= 255:
        raise ValueError(f"IDX needs 1..255 dimensions, got {a.ndim}")
    code = _CODES[key]
    header = bytes([0, 0, code, a.ndim]) + np.asarray(a.shape, ">u4").tobytes()
    payload = header + np.ascontiguousarray(a, dtype=IDX_TYPES[code]).tobytes()
    if os.fspath(path).endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    with open(path, "wb") as f:
        f.write(payload)
