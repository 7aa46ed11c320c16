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


def test_resize_runs_without_a_cpu_backend_and_refuses_huge_outputs(monkeypatch):
    import jax
    import pytest

    from nnkit.data.digits import resize_images

    x = data.load("digits").x[:3]
    want = resize_images(x, 12)
    real = jax.local_devices

    def no_cpu(backend=None):  # as under JAX_PLATFORMS=cuda: no CPU backend loaded
        if backend == "cpu":
            raise RuntimeError("Unknown backend cpu")
        return real()

    monkeypatch.setattr(jax, "local_devices", no_cpu)
    np.testing.assert_array_equal(resize_images(x, 12), want)
    with pytest.raises(ValueError, match=r"resizing 1797 images to 100000x100000x1 would take "
                                         r"[0-9.]+ GiB \(at most 4 GiB\)"):
        data.load("digits", size=100000)
