"""Reading raw or gzip-compressed data files into bytes, with errors that name the file."""

from __future__ import annotations

import os
import zlib
from os import PathLike

from nnkit.data.dataset import DataFormatError

__all__ = ["read_bytes", "gunzip", "is_gzip", "MAX_BYTES"]

MAX_BYTES = 1 << 31  # refuse to inflate anything larger than 2 GiB
_GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(data: bytes) -> bool:
    """Whether ``data`` starts with the gzip magic bytes."""
    return data[:2] == _GZIP_MAGIC


def gunzip(data: bytes, name: str, max_bytes: int = MAX_BYTES) -> bytes:
    """Inflate a (possibly multi-member) gzip stream; corrupt input raises ``DataFormatError``.

    CRC and length trailers are verified. More than ``max_bytes`` of output is refused.
    """
    out: list[bytes] = []
    total = 0
    rest = data
    member = 0
    while True:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            chunk = d.decompress(rest, max_bytes - total + 1)
        except zlib.error as e:
            raise DataFormatError(name, f"corrupt gzip data (member {member}): {e}") from None
        total += len(chunk)
        if total > max_bytes:
            raise DataFormatError(name, f"gzip content exceeds the {max_bytes}-byte limit")
        out.append(chunk)
        if not d.eof:
            raise DataFormatError(
                name, f"truncated gzip stream (member {member} ends after {total} bytes)"
            )
        rest = d.unused_data
        member += 1
        if not rest.strip(b"\x00"):  # trailing zero padding is tolerated, like gzip(1)
            return b"".join(out)
        if not is_gzip(rest):
            offset = len(data) - len(rest)
            raise DataFormatError(
                name,
                f"trailing garbage after gzip member at compressed offset {offset}",
                offset=offset,
            )


def read_bytes(path: str | PathLike, max_bytes: int = MAX_BYTES) -> bytes:
    """The content of ``path``, inflated if it is gzip (detected by magic, not by suffix).

    A file named ``*.gz`` that is not gzip, or a corrupt gzip, raises ``DataFormatError``.
    """
    name = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise DataFormatError(name, f"file exceeds the {max_bytes}-byte limit")
    if is_gzip(data):
        return gunzip(data, name, max_bytes)
    if name.endswith(".gz"):
        raise DataFormatError(name, "named .gz but is not gzip data (bad magic bytes)", offset=0)
    return data
