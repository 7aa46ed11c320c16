"""The shipped 8x8 digits."""

import numpy as np

import nnkit.data as data


def test_digits():
    ds = data.load("digits")
    assert ds.x.shape == (1797, 8, 8, 1) and ds.x.dtype == np.float32
    assert ds.y.shape == (1797,) and ds.y.dtype == np.int32
    assert ds.num_classes == 10 and ds.input_shape == (8, 8, 1) and ds.x_test is None
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    np.testing.assert_array_equal(np.unique(ds.x * 16), np.arange(17))  # pixel / 16
    assert np.bincount(ds.y).min() >= 170 and ds.y[:10].tolist() == list(range(10))


def test_digits_resized_for_lenet():
    small = data.load("digits")
    big = data.load("digits", size=28)
    assert big.x.shape == (1797, 28, 28, 1) and big.x.dtype == np.float32
    assert big.input_shape == (28, 28, 1)
    assert 0.0 <= big.x.min() and big.x.max() <= 1.0
    np.testing.assert_array_equal(big.y, small.y)
    # bilinear resize keeps the mean intensity close
    np.testing.assert_allclose(big.x.mean((1, 2, 3)), small.x.mean((1, 2, 3)), atol=0.03)
