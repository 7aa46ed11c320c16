"""nnkit.tensorboard: event files that TensorBoard's own reader accepts, checksums from the
CRC-32C standard's check values, histograms against numpy."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto import event_pb2

from nnkit.tensorboard import EventWriter, crc32c, masked_crc32c


def _accumulator(logdir) -> EventAccumulator:
    ea = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0})
    ea.Reload()
    return ea


def test_crc32c_matches_the_standard_check_values():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC catalogue's check value
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720, B.4: 32 bytes of zeros
    assert crc32c(b"\xff" * 32) == 0x62A8AB43  # RFC 3720, B.4: 32 bytes of ones
    assert crc32c(bytes(range(32))) == 0x46DD794E  # RFC 3720, B.4: incrementing
    assert crc32c(b"") == 0
    c = crc32c(b"abc")
    assert masked_crc32c(b"abc") == (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_scalars_read_back_by_tensorboard(tmp_path):
    with EventWriter(tmp_path) as w:
        for step, v in enumerate([1.5, 0.25, -3.0]):
            w.scalar("loss/train", v, step)
        w.scalar("lr", 1e-3, 7)
        w.scalar("big", 1e300, -2)  # beyond float32: +inf; negative step: int64 varint
    ea = _accumulator(tmp_path)
    assert set(ea.Tags()["scalars"]) == {"loss/train", "lr", "big"}
    got = [(e.step, e.value) for e in ea.Scalars("loss/train")]
    assert got == [(0, 1.5), (1, 0.25), (2, -3.0)]
    (lr,) = ea.Scalars("lr")
    assert lr.step == 7 and lr.value == pytest.approx(1e-3, rel=1e-7)
    (big,) = ea.Scalars("big")
    assert big.step == -2 and big.value == np.inf


def test_first_event_is_the_file_version_and_records_are_checksummed(tmp_path):
    with EventWriter(tmp_path) as w:
        w.scalar("a", 2.0, 1)
    data = w.path.read_bytes()
    events, bodies, i = [], [], 0
    while i < len(data):  # TFRecord framing, parsed here independently of the writer
        (n,) = struct.unpack("<Q", data[i:i + 8])
        assert struct.unpack("<I", data[i + 8:i + 12])[0] == masked_crc32c(data[i:i + 8])
        body = data[i + 12:i + 12 + n]
        assert struct.unpack("<I", data[i + 12 + n:i + 16 + n])[0] == masked_crc32c(body)
        ev = event_pb2.Event()
        ev.ParseFromString(body)
        events.append(ev)
        bodies.append(body)
        i += 16 + n
    assert i == len(data) and len(events) == 2
    assert events[0].file_version == "brain.Event:2"
    assert events[1].step == 1 and events[1].summary.value[0].simple_value == 2.0
    assert list(RawEventFileLoader(str(w.path)).Load()) == bodies  # TensorBoard's framing
    # a flipped bit in the last record's data no longer matches its checksum
    bad = bytearray(data)
    bad[-6] ^= 0x01
    w.path.write_bytes(bytes(bad))
    assert len(list(RawEventFileLoader(str(w.path)).Load())) < 2


def test_histogram_matches_numpy(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.normal(size=(40, 25)).astype(np.float32)
    v[0, 0], v[0, 1] = np.nan, np.inf  # left out
    with EventWriter(tmp_path) as w:
        w.histogram("params/w", v, 4, bins=12)
        w.histogram("const", np.full(5, 2.5), 5)
        w.histogram("empty", np.array([]), 6)
    ea = _accumulator(tmp_path)
    (h,) = ea.Histograms("params/w")
    hv = h.histogram_value
    fin = v[np.isfinite(v)].astype(np.float64)
    counts, edges = np.histogram(fin, bins=12)
    assert h.step == 4 and hv.num == fin.size == 998
    assert hv.min == fin.min() and hv.max == fin.max()
    assert hv.sum == pytest.approx(fin.sum()) and hv.sum_squares == pytest.approx(fin @ fin)
    np.testing.assert_allclose(hv.bucket_limit, edges[1:])
    np.testing.assert_array_equal(hv.bucket, counts)
    (c,) = ea.Histograms("const")
    assert (c.histogram_value.bucket_limit, c.histogram_value.bucket) == ([2.5], [5.0])
    (e,) = ea.Histograms("empty")
    assert e.histogram_value.num == 0


def test_writers_get_their_own_files_and_a_closed_writer_refuses(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    a, b = EventWriter(tmp_path), EventWriter(tmp_path)
    assert a.path != b.path and a.path.name.startswith("events.out.tfevents.")
    a.scalar("t", 1.0, 0)
    b.scalar("t", 2.0, 1)
    a.close()
    b.close()
    b.close()  # twice: a no-op
    assert (tmp_path / "keep.txt").read_text() == "x"
    assert sorted(e.value for e in _accumulator(tmp_path).Scalars("t")) == [1.0, 2.0]
    with pytest.raises(ValueError, match="closed"):
        a.scalar("t", 3.0, 2)


def test_flush_makes_events_visible_before_close(tmp_path):
    w = EventWriter(tmp_path)
    w.scalar("t", 1.0, 0)
    assert len(list(RawEventFileLoader(str(w.path)).Load())) == 1  # buffered: version only
    w.flush()
    assert len(list(RawEventFileLoader(str(w.path)).Load())) == 2
    w.close()


def test_a_later_file_sorts_after_the_earlier_ones_within_one_second(tmp_path):
    """TensorBoard reads a directory's files in name order: a resumed run's file (with its
    restart mark) must come last even when made in the same second, by any process."""
    import time

    from nnkit.tensorboard import EventWriter

    ahead = int(time.time()) + 1000  # a file of another process, its clock ahead
    (tmp_path / f"events.out.tfevents.{ahead:010d}.other-host.99999.000000").write_bytes(b"")
    names = []
    for _ in range(12):  # past a serial of 9 -> 10, which sorts first as plain text
        w = EventWriter(tmp_path)
        w.close()
        names.append(w.path.name)
    assert sorted(p.name for p in tmp_path.iterdir())[-12:] == names
    assert int(names[0].split(".")[3]) == ahead + 1
