"""The shared integer-argument check: NumPy integers pass as Python ints, bools and floats fail
with the argument's name, everywhere the library takes a size or a count."""

import jax
import numpy as np
import pytest

import nnkit
from nnkit import layers as L
from nnkit._checks import check_int
from nnkit.core import ShapeError


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3)])
def test_integers_of_any_kind_come_back_as_python_ints(value):
    out = check_int(value, "n")
    assert out == 3 and type(out) is int


@pytest.mark.parametrize("value", [True, np.bool_(True), 3.0, "3", None, 0, -2, np.int64(0)])
def test_non_integers_and_small_values_are_named(value):
    with pytest.raises(ValueError, match=r"^n must be a positive int, got "):
        check_int(value, "n")


def test_minimum_and_error_class():
    assert check_int(0, "epochs", 0) == 0
    with pytest.raises(ValueError, match=r"epochs must be an int >= 0, got -1"):
        check_int(-1, "epochs", 0)
    with pytest.raises(ShapeError, match=r"dense: features must be a positive int, got 2\.5"):
        L.Dense(2.5)


def test_numpy_sizes_from_a_grid_build_and_train():
    """Sizes taken from a NumPy grid (``np.arange``, ``np.linspace(...).astype(int)``) work as
    Python ints: the layer builds, and ``fit``'s counts accept them."""
    width, epochs, batch = np.arange(4, 9)[0], np.int64(2), np.int32(8)
    model = nnkit.serial(L.Dense(width), L.Activation("relu"), L.Dense(np.int64(2)))
    out_shape, params, _ = model.init(jax.random.key(0), (3,))
    assert out_shape == (2,) and params["dense_0"]["w"].shape == (3, 4)
    x = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    result = nnkit.fit(model, "adam", (x, y), epochs=epochs, batch_size=batch, progress=False)
    assert result.history["epoch"] == [0, 1] and type(result.history["epoch"][0]) is int
