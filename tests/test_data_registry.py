"""nnkit.data registry and Dataset record."""

import numpy as np
import pytest

import nnkit.data as data
from nnkit.data import Dataset

BUILTIN = {
    "and", "or", "nand", "xor", "five_points", "moons", "circles", "spirals", "blobs",
    "sin", "abs", "step", "poly", "sine_wave", "adding_problem", "chars", "digits",
    "fashion_mnist", "mnist", "kmnist", "cifar10",
}  # fmt: skip


def test_available_lists_builtins_with_one_line_descriptions():
    av = data.available()
    assert BUILTIN <= set(av)
    assert list(av) == sorted(av)
    for desc in av.values():
        assert desc and "\n" not in desc


def test_unknown_name_lists_known():
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*moons"):
        data.load("nope")


def test_unknown_option_is_a_type_error_listing_options():
    with pytest.raises(TypeError, match="options accepted: n, noise, seed"):
        data.load("moons", bogus=1)


def test_names_are_normalised():
    assert data.load("XOR").name == "xor"
    assert data.load("five-points").name == "five_points"


def test_register_custom_and_duplicate():
    def tiny(seed: int = 0) -> Dataset:
        x = np.random.default_rng(seed).normal(size=(3, 4))
        return Dataset.regression("tiny_test_set", x, x.sum(1))

    data.register("tiny_test_set", tiny, "three random rows")
    try:
        ds = data.load("tiny_test_set", seed=2)
        assert ds.y.shape == (3, 1) and ds.num_targets == 1 and ds.task == "regression"
        assert data.available()["tiny_test_set"] == "three random rows"
        with pytest.raises(ValueError, match="already registered"):
            data.register("tiny_test_set", tiny, "again")
        data.register("tiny_test_set", tiny, "replaced", overwrite=True)
        assert data.available()["tiny_test_set"] == "replaced"
    finally:
        from nnkit.data import registry

        registry._REGISTRY.pop("tiny_test_set", None)


def test_loader_must_return_dataset():
    from nnkit.data import registry

    data.register("bad_test_set", lambda: (1, 2), "returns a tuple")
    try:
        with pytest.raises(TypeError, match="not Dataset"):
            data.load("bad_test_set")
    finally:
        registry._REGISTRY.pop("bad_test_set", None)


def test_dataset_is_frozen_and_validated():
    ds = data.load("xor")
    with pytest.raises(AttributeError):
        ds.x = None
    with pytest.raises(ValueError, match="input_shape"):
        ds.replace(input_shape=(3,))
    with pytest.raises(ValueError, match="examples"):
        ds.replace(y=ds.y[:2])
    with pytest.raises(ValueError, match="task"):
        ds.replace(task="clustering")
    with pytest.raises(ValueError, match="together"):
        ds.replace(x_test=ds.x)
    assert len(ds) == 4 and not ds.has_test and ds.x_test is None and ds.y_test is None
    assert "xor" in repr(ds)
