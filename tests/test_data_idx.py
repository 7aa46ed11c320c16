"""IDX parsing (valid, corrupt, fuzzed), the MNIST-layout loaders and real Fashion-MNIST."""

import gzip
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnkit.data as data
from nnkit.data import DataFormatError, parse_idx, read_idx, write_idx
from nnkit.data.fileio import gunzip

FASHION = "/usr/share/datasets/fashion-mnist"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def idx_bytes(a: np.ndarray) -> bytes:
    code = {np.uint8: 8, np.int8: 9, np.int16: 11, np.int32: 12, np.float32: 13, np.float64: 14}
    head = bytes([0, 0, code[a.dtype.type], a.ndim]) + np.asarray(a.shape, ">u4").tobytes()
    return head + a.astype(a.dtype.newbyteorder(">")).tobytes()


IMAGES = np.arange(5 * 4 * 3, dtype=np.uint8).reshape(5, 4, 3)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_parse_all_types(dtype):
    a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    out = parse_idx(idx_bytes(a))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_write_read_roundtrip(tmp_path, suffix):
    p = tmp_path / f"imgs-idx3-ubyte{suffix}"
    write_idx(p, IMAGES)
    raw = p.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == (suffix == ".gz")
    np.testing.assert_array_equal(read_idx(p), IMAGES)
    np.testing.assert_array_equal(read_idx(str(p), ndim=3, dtype=np.uint8), IMAGES)
    assert (gzip.decompress(raw) if suffix else raw) == idx_bytes(IMAGES)


def test_multi_member_gzip(tmp_path):
    blob = idx_bytes(IMAGES)
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(blob[:20]) + gzip.compress(blob[20:]) + b"\0\0")
    np.testing.assert_array_equal(read_idx(p), IMAGES)


def test_truncated_message_names_file_sizes_and_offset(tmp_path):
    head = bytes([0, 0, 8, 3]) + np.asarray([60000, 28, 28], ">u4").tobytes()
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(head + bytes(1000)))
    with pytest.raises(DataFormatError) as e:
        read_idx(p)
    msg = str(e.value)
    assert msg.startswith(str(p))
    assert "header says 60000 images of 28x28 (47040000 bytes after offset 16)" in msg
    assert "1000 bytes follow" in msg and "truncated" in msg
    assert e.value.offset == 1016 and e.value.field == "data" and e.value.file == str(p)


@pytest.mark.parametrize(
    "blob,match",
    [
        (b"", "at least 4"),
        (b"\x00\x00", "at least 4"),
        (b"\x01\x00\x08\x01" + bytes(8), "bad IDX magic"),
        (b"PK\x03\x04" + bytes(8), "bad IDX magic"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown IDX type code 0x07"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated header"),
        (idx_bytes(IMAGES)[:-1], "truncated"),
        (idx_bytes(IMAGES) + b"\x00", "oversized"),
        (b"\x00\x00\x08\x01\xff\xff\xff\xff", "4294967295 labels"),
    ],
)
def test_corrupt_bytes(blob, match):
    with pytest.raises(DataFormatError, match=match):
        parse_idx(blob, "f")


def test_expected_ndim_and_dtype():
    with pytest.raises(DataFormatError, match="3 dimensions, expected 1"):
        parse_idx(idx_bytes(IMAGES), ndim=1)
    with pytest.raises(DataFormatError, match="expected uint8"):
        parse_idx(idx_bytes(IMAGES.astype(np.int32)), dtype=np.uint8)


def test_corrupt_gzip(tmp_path):
    good = gzip.compress(idx_bytes(IMAGES))
    cases = {
        "cut.gz": good[: len(good) // 2],
        "crc.gz": good[:-8] + bytes([good[-8] ^ 1]) + good[-7:],
        "body.gz": good[:12] + bytes(b ^ 0x55 for b in good[12:30]) + good[30:],
        "notgz.gz": idx_bytes(IMAGES),
        "junk.gz": good + b"garbage",
    }
    for fname, blob in cases.items():
        p = tmp_path / fname
        p.write_bytes(blob)
        with pytest.raises(DataFormatError, match=fname):
            read_idx(p)


def test_gunzip_size_cap():
    bomb = gzip.compress(bytes(10_000))
    with pytest.raises(DataFormatError, match="limit"):
        gunzip(bomb, "bomb.gz", max_bytes=1000)
    assert gunzip(bomb, "ok.gz", max_bytes=10_000) == bytes(10_000)


@FUZZ
@given(st.binary(max_size=64))
def test_fuzz_random_bytes(blob):
    try:
        parse_idx(blob, "fuzz")
    except DataFormatError:
        pass


@st.composite
def mutated(draw):
    shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3))
    dtype = draw(st.sampled_from([np.uint8, np.int16, np.float32]))
    blob = bytearray(idx_bytes(np.zeros(shape, dtype)))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "cut", "append", "insert"]))
        pos = draw(st.integers(0, max(len(blob) - 1, 0)))
        if op == "flip" and blob:
            blob[pos] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del blob[pos:]
        elif op == "append":
            blob += draw(st.binary(min_size=1, max_size=8))
        else:
            blob[pos:pos] = draw(st.binary(min_size=1, max_size=4))
    return bytes(blob), draw(st.booleans())


@FUZZ
@given(mutated())
def test_fuzz_mutated_idx_raw_and_gzip(case):
    blob, compress = case
    try:
        if compress:
            blob = gzip.compress(blob, mtime=0)
        out = parse_idx(gunzip(blob, "m.gz") if compress else blob, "m")
        assert isinstance(out, np.ndarray)
    except DataFormatError:
        pass


@FUZZ
@given(st.binary(min_size=0, max_size=200), st.integers(0, 199))
def test_fuzz_mutated_gzip_stream(payload, pos):
    z = bytearray(gzip.compress(payload, mtime=0))
    z[pos % len(z)] ^= 0xA5
    try:
        parse_idx(gunzip(bytes(z), "z.gz"), "z")
    except DataFormatError:
        pass


def write_mnist_dir(d, n_train=12, n_test=7, gz=True, dotted=False):
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        sep = "." if dotted else "-"
        write_idx(os.path.join(d, f"{split}-images{sep}idx3-ubyte{sfx}"), x)
        write_idx(os.path.join(d, f"{split}-labels{sep}idx1-ubyte{sfx}"), y)
        arrays[split] = (x, y)
    return arrays


@pytest.mark.parametrize("name", ["mnist", "kmnist", "fashion_mnist"])
@pytest.mark.parametrize("gz,dotted", [(True, False), (False, True)])
def test_mnist_layout_loaders(tmp_path, name, gz, dotted):
    arrays = write_mnist_dir(tmp_path, gz=gz, dotted=dotted)
    ds = data.load(name, path=tmp_path)
    assert ds.x.shape == (12, 28, 28, 1) and ds.x.dtype == np.float32
    assert ds.y.dtype == np.int32 and ds.x_test.shape == (7, 28, 28, 1) and ds.y_test.shape == (7,)
    np.testing.assert_allclose(ds.x[..., 0] * 255, arrays["train"][0], atol=1e-3)
    np.testing.assert_array_equal(ds.y_test, arrays["t10k"][1])
    assert ds.x.min() >= 0 and ds.x.max() <= 1 and len(ds.class_names) == 10
    small = data.load(name, path=str(tmp_path), limit=5)
    assert small.x.shape[0] == 5 and small.x_test.shape[0] == 5


def test_mnist_refuses_two_copies_of_a_file(tmp_path):
    """Raw and .gz copies of the same file may differ: which was read would be a guess."""
    write_mnist_dir(tmp_path, gz=True)
    write_mnist_dir(tmp_path, gz=False)
    with pytest.raises(DataFormatError, match=r"2 files hold train-images-idx3-ubyte in .* "
                                              r"\(train-images-idx3-ubyte, train-images-idx3-"
                                              r"ubyte.gz\): keep one"):
        data.load("mnist", path=tmp_path)


def test_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass path="):
        data.load("mnist")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load("fashion_mnist", path=tmp_path / "nowhere")
    write_mnist_dir(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        data.load("mnist", path=tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(6, dtype=np.uint8))
    with pytest.raises(DataFormatError, match="6 labels but .* 7 images"):
        data.load("mnist", path=tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 10, 0, 0], np.uint8))
    with pytest.raises(DataFormatError, match=r"label 10 at index 4 \(byte offset 12\)"):
        data.load("mnist", path=tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros((7, 1), np.uint8))
    with pytest.raises(DataFormatError, match="2 dimensions, expected 1"):
        data.load("mnist", path=tmp_path)


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    ds = data.load("fashion_mnist")
    assert ds.x.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int32
    assert np.bincount(ds.y).tolist() == [6000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
