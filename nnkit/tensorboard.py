"""TensorBoard event files, written directly: scalars and histograms.

An event file is a sequence of TFRecords, each holding one serialized ``Event`` protocol
buffer (TensorFlow's ``event.proto``)::

    record = len (uint64 LE) | masked_crc32c(len) (uint32 LE) | data | masked_crc32c(data)
    masked_crc32c(b) = ((c >> 15 | c << 17) + 0xA282EAD8) mod 2^32,  c = CRC-32C of b

The first event carries ``file_version = "brain.Event:2"``; each later one a ``Summary`` of
``(tag, simple_value)`` scalars or ``(tag, histo)`` histograms at a step, or a
``SessionLog`` START (:meth:`EventWriter.restart`: a resumed run's first step). This module
writes exactly those few fields by hand (about 100 lines) instead of depending on a
summary-writer package: those pull in protobuf and, when PyTorch is installed, import
PyTorch (~1 s at every ``nnkit train``). TensorBoard reads the files as it reads TensorFlow's.

Usage::

    with EventWriter("runs/x/tensorboard") as w:
        w.scalar("loss/train", 0.25, step=3)
        w.histogram("params/dense_0/w", weights, step=3)
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

__all__ = ["EventWriter", "crc32c", "masked_crc32c"]


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)  # Castagnoli polynomial, reflected
        table.append(c)
    return tuple(table)


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``: ``crc32c(b"123456789") == 0xE3069283``."""
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum: CRC-32C rotated right by 15 bits plus ``0xA282EAD8``."""
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _record(data: bytes) -> bytes:
    n = struct.pack("<Q", len(data))
    return n + struct.pack("<I", masked_crc32c(n)) + data + struct.pack("<I", masked_crc32c(data))


# --------------------------------------------------------------------- protocol buffers


def _varint(n: int) -> bytes:
    n &= 0xFFFFFFFFFFFFFFFF  # int64 two's complement, as protobuf encodes negative ints
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _bytes(number: int, data: bytes) -> bytes:
    return _field(number, 2) + _varint(len(data)) + data


def _double(number: int, x: float) -> bytes:
    return _field(number, 1) + struct.pack("<d", x)


def _doubles(number: int, xs: np.ndarray) -> bytes:  # packed repeated double
    return _bytes(number, np.asarray(xs, "<f8").tobytes())


def _event(step: int, *, summary: bytes | None = None, file_version: str | None = None,
           session_log: bytes | None = None) -> bytes:
    """``Event{wall_time=1 (now), step=2, file_version=3, summary=5, session_log=7}``."""
    out = _double(1, time.time())
    out += _field(2, 0) + _varint(int(step))
    if file_version is not None:
        out += _bytes(3, file_version.encode())
    if summary is not None:
        out += _bytes(5, summary)
    if session_log is not None:
        out += _bytes(7, session_log)
    return out


def _histo(values: np.ndarray, bins: int) -> bytes:
    """``HistogramProto{min=1, max=2, num=3, sum=4, sum_squares=5, bucket_limit=6,
    bucket=7}`` of the finite values: ``bins`` equal-width buckets from min to max
    (``numpy.histogram``), ``bucket_limit`` holding each one's right edge."""
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        lo = hi = 0.0
        limits, counts = np.array([0.0]), np.array([0.0])
    else:
        lo, hi = float(v.min()), float(v.max())
        if lo == hi:
            limits, counts = np.array([hi]), np.array([float(v.size)])
        else:
            counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
            limits, counts = edges[1:], counts.astype(np.float64)
    return (_double(1, lo) + _double(2, hi) + _double(3, float(v.size))
            + _double(4, float(v.sum())) + _double(5, float(np.dot(v, v)))
            + _doubles(6, limits) + _doubles(7, counts))


# --------------------------------------------------------------------------- the writer

_serial = itertools.count()


def _stamp(logdir: Path) -> int:
    """The new file's timestamp: now, or one past the latest file already in ``logdir``.

    TensorBoard reads a directory's files in name order, so a resumed run's file (whose
    restart mark drops the old events it redoes) must sort after the earlier ones, also when
    it is created within the same second (by another process, whose pid may sort first)."""
    latest = 0
    for f in logdir.glob("events.out.tfevents.*"):
        try:
            latest = max(latest, int(f.name.split(".")[3]))
        except (IndexError, ValueError):
            continue
    now = int(time.time())
    return now if now > latest else latest + 1


class EventWriter:
    """Appends events to a new ``events.out.tfevents.*`` file in ``logdir`` (created if
    needed; other files there are left alone, so a resumed run adds a file beside the old).

    Scalars and histograms are buffered in memory and written by :meth:`flush` (also on
    :meth:`close` and when leaving a ``with`` block).
    """

    def __init__(self, logdir: str | os.PathLike) -> None:
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        name = (f"events.out.tfevents.{_stamp(self.logdir):010d}.{socket.gethostname()}."
                f"{os.getpid()}.{next(_serial):06d}")
        self.path = self.logdir / name
        self._file: Any = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        self._pending = [_record(_event(0, file_version="brain.Event:2"))]
        self.flush()

    def _add(self, step: int, value: bytes) -> None:
        if self._file is None:
            raise ValueError(f"EventWriter for {self.logdir} is closed")
        self._pending.append(_record(_event(step, summary=_bytes(1, value))))

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One scalar ``value`` (stored as float32, as TensorBoard does) at ``step``."""
        with np.errstate(over="ignore"):  # beyond float32's range: +-inf
            f32 = np.asarray(value, "<f4").tobytes()
        self._add(step, _bytes(1, tag.encode()) + _field(2, 5) + f32)

    def restart(self, step: int) -> None:
        """A ``SessionLog{status=START}`` event at ``step``: the events of any file in this
        directory at steps ``>= step`` are from a run that went on from an earlier state
        (a resumed run redoes them), so TensorBoard drops them (its orphaned-data purge)."""
        if self._file is None:
            raise ValueError(f"EventWriter for {self.logdir} is closed")
        self._pending.append(_record(_event(step, session_log=_field(1, 0) + _varint(1))))

    def histogram(self, tag: str, values: Any, step: int, bins: int = 30) -> None:
        """A histogram of ``values`` (any shape; NaN and inf left out) in ``bins``
        equal-width buckets between their min and max, at ``step``."""
        self._add(step, _bytes(1, tag.encode()) + _bytes(5, _histo(values, bins)))

    def flush(self) -> None:
        """Writes the buffered events to disk."""
        if self._file is not None and self._pending:
            self._file.write(b"".join(self._pending))
            self._file.flush()
            self._pending = []

    def close(self) -> None:
        """Flushes and closes the file (closing twice is a no-op)."""
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
