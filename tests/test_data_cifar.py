"""CIFAR-10 binary parser and refusal of the pickled version."""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnkit.data as data
from nnkit.data import DataFormatError, parse_cifar_bin


def records(n, seed=0, label_offset=0):
    rng = np.random.default_rng(seed)
    chw = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = ((np.arange(n) + label_offset) % 10).astype(np.uint8)
    blob = np.concatenate([labels[:, None], chw.reshape(n, -1)], 1).tobytes()
    return blob, chw, labels


def test_parse_records_to_nhwc():
    blob, chw, labels = records(4)
    x, y = parse_cifar_bin(blob, "b")
    assert x.shape == (4, 32, 32, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_array_equal(x[2, 5, 7], chw[2, :, 5, 7])  # pixel (5,7): R, G, B


@pytest.mark.parametrize(
    "blob,match",
    [
        (b"", "empty"),
        (bytes(3072), "record 0 is cut off after 3072 bytes at offset 0"),
        (bytes(3073 * 2 + 5), "record 2 is cut off after 5 bytes at offset 6146"),
        (bytes([11]) + bytes(3072), "label 11"),
    ],
)
def test_parse_errors(blob, match):
    with pytest.raises(DataFormatError, match=match):
        parse_cifar_bin(blob, "batch.bin")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=7000))
def test_fuzz(blob):
    try:
        x, y = parse_cifar_bin(blob)
        assert x.shape[1:] == (32, 32, 3) and y.max() < 10
    except DataFormatError:
        pass


def test_load_binary_dir(tmp_path):
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    parts = []
    for i in range(1, 6):
        blob, chw, labels = records(3, seed=i, label_offset=i)
        (d / f"data_batch_{i}.bin").write_bytes(blob)
        parts.append((chw, labels))
    blob, chw_t, labels_t = records(2, seed=9)
    (d / "test_batch.bin").write_bytes(blob)
    for path in (d, tmp_path, str(d)):
        ds = data.load("cifar10", path=path)
        assert ds.x.shape == (15, 32, 32, 3) and ds.x.dtype == np.float32
        assert ds.x_test.shape == (2, 32, 32, 3) and ds.y.dtype == np.int32
        np.testing.assert_array_equal(ds.y, np.concatenate([p[1] for p in parts]))
        np.testing.assert_allclose(ds.x[3] * 255, parts[1][0][0].transpose(1, 2, 0), atol=1e-3)
        assert ds.class_names[0] == "airplane" and ds.num_classes == 10
    assert data.load("cifar10", path=d, limit=4).x.shape[0] == 4
    (d / "data_batch_2.bin").write_bytes(bytes(100))
    with pytest.raises(DataFormatError, match="data_batch_2.bin"):
        data.load("cifar10", path=d)
    # a lost batch file would shrink the training set without a word
    (d / "data_batch_2.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"data_batch_2.bin missing in .* \(found "
                                                r"data_batch_1.bin, data_batch_3.bin, "):
        data.load("cifar10", path=d)
    (d / "data_batch_1.bin").rename(d / "data_batch_2.bin")
    (d / "data_batch_5.bin").rename(d / "data_batch_1.bin")
    with pytest.raises(FileNotFoundError, match=r"data_batch_5.bin missing in .* \(found "
                                                r"data_batch_1.bin, .*data_batch_4.bin\)"):
        data.load("cifar10", path=d)


def test_refuses_python_version(tmp_path):
    py = tmp_path / "cifar-10-batches-py"
    py.mkdir()
    for f in ("data_batch_1", "test_batch", "batches.meta"):
        (py / f).write_bytes(b"\x80\x02}q\x00.")  # would be a pickle; must never be loaded
    for path in (tmp_path, py):
        with pytest.raises(DataFormatError, match="binary version") as e:
            data.load("cifar10", path=path)
        assert "never unpickles" in str(e.value)


def test_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass path="):
        data.load("cifar10")
    with pytest.raises(FileNotFoundError, match="test_batch.bin"):
        data.load("cifar10", path=tmp_path)
    with pytest.raises(FileNotFoundError):
        data.load("cifar10", path=os.path.join(tmp_path, "absent"))
