"""Generated sets: gates, 2-D toys, 1-D regression, sequence tasks."""

import numpy as np
import pytest

import nnkit.data as data

GATES = {"and": [0, 0, 0, 1], "or": [0, 1, 1, 1], "nand": [1, 1, 1, 0], "xor": [0, 1, 1, 0]}
TOYS_2D = ["moons", "circles", "spirals", "blobs"]
REGRESSION = {"sin": np.pi, "abs": 1.0, "step": 1.0, "poly": 1.0}


def _same(a, b):
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)


@pytest.mark.parametrize("gate", GATES)
def test_gates(gate):
    ds = data.load(gate)
    np.testing.assert_array_equal(ds.x, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(ds.y, GATES[gate])
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int32
    assert ds.num_classes == 2 and ds.input_shape == (2,) and ds.task == "classification"


def test_five_points_exact():
    ds = data.load("five_points")
    expected = np.array([[1.2, -3.4], [2.3, 2.8], [-0.7, 1.2], [3.2, -0.4], [-1.3, 2.3]])
    np.testing.assert_array_equal(ds.x, expected.astype(np.float32))
    np.testing.assert_array_equal(ds.y, [0, 0, 1, 1, 2])
    assert ds.num_classes == 3 and ds.num_targets == 3 and ds.class_names == ("0", "1", "2")
    ds.x[0, 0] = 99.0  # a copy: the next load is unaffected
    assert data.load("five_points").x[0, 0] == np.float32(1.2)


@pytest.mark.parametrize("name", TOYS_2D)
def test_2d_toys_shapes_and_determinism(name):
    ds = data.load(name, n=101, seed=3)
    assert ds.x.shape == (101, 2) and ds.x.dtype == np.float32
    assert ds.y.shape == (101,) and ds.y.dtype == np.int32
    assert set(np.unique(ds.y)) == set(range(ds.num_classes))
    assert np.all(np.isfinite(ds.x))
    _same(ds, data.load(name, n=101, seed=3))
    assert not np.array_equal(ds.x, data.load(name, n=101, seed=4).x)


def test_toy_geometry():
    c = data.load("circles", n=200, noise=0.0, factor=0.3)
    r = np.linalg.norm(c.x, axis=1)
    np.testing.assert_allclose(r[c.y == 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(r[c.y == 1], 0.3, atol=1e-6)
    s = data.load("spirals", n=300, arms=5, noise=0.0)
    assert s.num_classes == 5 and np.bincount(s.y).tolist() == [60] * 5
    assert np.all(np.linalg.norm(s.x, axis=1) <= 1 + 1e-6)
    b = data.load("blobs", n=90, centers=4, dim=3, std=0.1)
    assert b.x.shape == (90, 3) and b.num_classes == 4
    m = data.load("moons", n=200, noise=0.0)
    assert np.all(m.x[m.y == 0][:, 1] >= -1e-6) and np.all(m.x[m.y == 1][:, 1] <= 0.5 + 1e-6)


@pytest.mark.parametrize("name,half", REGRESSION.items())
def test_regression(name, half):
    ds = data.load(name, n=64, seed=1)
    assert ds.x.shape == (64, 1) and ds.y.shape == (64, 1)
    assert ds.x.dtype == ds.y.dtype == np.float32
    assert ds.task == "regression" and ds.num_classes is None and ds.num_targets == 1
    assert np.all(np.abs(ds.x) <= half + 1e-6)
    _same(ds, data.load(name, n=64, seed=1))
    noisy = data.load(name, n=64, seed=1, noise=0.1)
    np.testing.assert_array_equal(noisy.x, ds.x)
    resid = noisy.y - ds.y
    assert 0.05 < resid.std() < 0.2


def test_regression_values():
    x = data.load("sin", n=50, grid=True).x
    np.testing.assert_allclose(x[[0, -1], 0], [-np.pi, np.pi], rtol=1e-6)
    for name, f in [
        ("sin", np.sin),
        ("abs", np.abs),
        ("step", lambda x: (x > 0).astype(float)),
        ("poly", lambda x: 2 * x**3 - x),
    ]:
        ds = data.load(name, n=50)
        np.testing.assert_allclose(ds.y, f(ds.x.astype(np.float64)), atol=1e-5)
    p = data.load("poly", n=20, coeffs=(1.0, 0.0, 3.0))
    np.testing.assert_allclose(p.y, 1 + 3 * p.x.astype(np.float64) ** 2, rtol=1e-5)


def test_sine_wave():
    ds = data.load("sine_wave", n=40, length=12, dt=0.2, seed=0)
    assert ds.x.shape == (40, 12, 1) and ds.y.shape == (40, 1) and ds.task == "sequence"
    assert ds.input_shape == (12, 1) and ds.num_targets == 1
    # consecutive samples of one unit-frequency sine: x[t+1] = sin(asin-free recurrence)
    w = np.concatenate([ds.x[..., 0], ds.y], 1).astype(np.float64)
    c = np.cos(0.2)
    np.testing.assert_allclose(w[:, 2:], 2 * c * w[:, 1:-1] - w[:, :-2], atol=1e-5)
    _same(ds, data.load("sine_wave", n=40, length=12, dt=0.2, seed=0))
    varied = data.load("sine_wave", n=40, length=12, freq=(0.5, 2.0), noise=0.1, seed=0)
    assert varied.x.shape == (40, 12, 1)


def test_adding_problem():
    ds = data.load("adding_problem", n=30, length=10, seed=5)
    assert ds.x.shape == (30, 10, 2) and ds.y.shape == (30, 1) and ds.x.dtype == np.float32
    marks = ds.x[..., 1]
    assert np.all(marks.sum(1) == 2) and set(np.unique(marks)) == {0.0, 1.0}
    assert np.all(marks[:, :5].sum(1) == 1)
    np.testing.assert_allclose(ds.y[:, 0], (ds.x[..., 0] * marks).sum(1), rtol=1e-6)
    assert np.all((ds.x[..., 0] >= 0) & (ds.x[..., 0] < 1))
    _same(ds, data.load("adding_problem", n=30, length=10, seed=5))


def test_chars_default_text():
    ds = data.load("chars", length=16, stride=8)
    v = ds.num_classes
    assert ds.x.shape[1:] == (16,) and ds.y.shape == ds.x.shape
    assert ds.x.dtype == ds.y.dtype == np.int32
    assert len(ds.class_names) == v == ds.num_targets and "e" in ds.class_names
    assert ds.x.min() >= 0 and ds.x.max() < v
    np.testing.assert_array_equal(ds.x[:, 1:], ds.y[:, :-1])  # next-char targets
    text = data.sequence.default_text()
    assert len(text.encode()) <= 20_000
    decoded = "".join(ds.class_names[i] for i in ds.x[1])
    assert decoded == text[8:24]


@pytest.mark.parametrize("length,stride", [(8, 1), (8, 4), (8, 9), (5, 3)])
def test_chars_overlap_is_how_many_following_windows_share_text(length, stride):
    ds = data.load("chars", length=length, stride=stride)
    span = length + 1  # window i covers characters [i*stride, i*stride + length]

    def shares(i, j):
        return abs(i - j) * stride < span

    assert shares(0, ds.overlap) and not shares(0, ds.overlap + 1)


def test_config_runner_splits_chars_into_blocks_that_share_no_text():
    import dataclasses

    from nnkit.config import parse_config
    from nnkit.run.prepare import _split

    length = 8
    ds = data.load("chars", length=length)  # stride 1: window i starts at character i
    n = len(ds.x)
    rows = np.repeat(np.arange(n)[:, None], length, 1)  # row i holds its start, i
    at = dataclasses.replace(ds, x=rows, y=rows)
    raw = {"model": {"arch": "mlp", "hidden": [4]},
           "data": {"dataset": "chars", "split": [0.8, 0.1, 0.1], "batch_size": 32}}
    train, val, test = (p[1][:, 0] for p in _split(parse_config(raw), at))
    assert len(train) + len(val) + len(test) == n - 2 * ds.overlap
    for a, b in ((train, val), (val, test)):  # windows `length` apart share no character
        assert a.max() + length < b.min()


def test_chars_from_path(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("abcabcabcé", encoding="utf-8")
    ds = data.load("chars", path=p, length=3)
    assert ds.class_names == ("a", "b", "c", "é")
    assert ds.x.shape == (7, 3)
    np.testing.assert_array_equal(ds.x[0], [0, 1, 2])
    np.testing.assert_array_equal(ds.y[-1], [1, 2, 3])
    oh = data.load("chars", path=str(p), length=3, one_hot=True)
    assert oh.x.shape == (7, 3, 4) and oh.x.dtype == np.float32
    np.testing.assert_array_equal(oh.x.argmax(-1), ds.x)
    with pytest.raises(ValueError, match="at least"):
        data.load("chars", path=p, length=50)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"abc\xffdef")
    with pytest.raises(data.DataFormatError, match="bad.txt: not UTF-8 text at byte 3"):
        data.load("chars", path=bad, length=2)


@pytest.mark.parametrize("name,opts", [("moons", {"n": 10**9}), ("circles", {"n": 10**9}),
                                       ("spirals", {"n": 10**9}),
                                       ("blobs", {"n": 1000, "dim": 10**8}),
                                       ("sin", {"n": 10**9}), ("poly", {"n": 10**9}),
                                       ("sine_wave", {"n": 10**8}),
                                       ("adding_problem", {"n": 10**7, "length": 1000})])
def test_huge_generated_sets_are_refused_before_allocating(name, opts):
    with pytest.raises(ValueError, match=rf"{name}: n=.* would take [0-9.]+ GiB \(at most 1 GiB\)"):
        data.load(name, **opts)


def test_chars_names_a_bad_path(tmp_path):
    with pytest.raises(IsADirectoryError, match=r"chars: path .* is a directory; pass path= a "
                                                r"UTF-8 text file"):
        data.load("chars", path=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"chars: no text file at path .*absent.txt"):
        data.load("chars", path=tmp_path / "absent.txt")
