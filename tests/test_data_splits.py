"""split / split_indices / standardize / one_hot."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnkit.data import one_hot, split, split_contiguous, split_indices, standardize


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 300),
    fr=st.lists(st.integers(0, 10), min_size=1, max_size=5).filter(lambda v: sum(v) > 0),
    seed=st.integers(0, 2**32 - 1),
)
def test_indices_disjoint_and_complete(n, fr, seed):
    fractions = [f / sum(fr) for f in fr]
    parts = split_indices(n, fractions, seed)
    assert len(parts) == len(fractions)
    allidx = np.concatenate(parts)
    assert np.array_equal(np.sort(allidx), np.arange(n))  # complete, no duplicates
    for p, f in zip(parts, fractions, strict=True):
        assert abs(len(p) - f * n) < 1 + 1e-9


def test_split_pairs_rows_and_is_deterministic():
    x = np.arange(100)[:, None] * np.ones((1, 3))
    y = np.arange(100)
    (xtr, ytr), (xva, yva), (xte, yte) = split(x, y, seed=1)
    assert (len(ytr), len(yva), len(yte)) == (80, 10, 10)
    for xs, ys in ((xtr, ytr), (xva, yva), (xte, yte)):
        np.testing.assert_array_equal(xs[:, 0], ys)
    assert not set(ytr) & set(yva) and not set(ytr) & set(yte) and not set(yva) & set(yte)
    assert set(ytr) | set(yva) | set(yte) == set(range(100))
    again = split(x, y, seed=1)
    np.testing.assert_array_equal(again[0][1], ytr)
    assert not np.array_equal(split(x, y, seed=2)[0][1], ytr)
    (a, _), (b, _) = split(x, y, fractions=(0.5, 0.5))
    assert len(a) == len(b) == 50


def test_stratified_proportions():
    y = np.repeat([0, 1, 2], [500, 300, 200])
    x = np.arange(len(y))
    parts = split(x, y, fractions=(0.6, 0.2, 0.2), seed=0, stratify=True)
    for (xs, ys), f in zip(parts, (0.6, 0.2, 0.2), strict=True):
        np.testing.assert_array_equal(np.bincount(ys), np.array([500, 300, 200]) * f)
        np.testing.assert_array_equal(y[xs], ys)
    assert np.array_equal(np.sort(np.concatenate([p[0] for p in parts])), x)
    # string labels work too
    names = np.array(["cat", "dog"])[y % 2]
    tr, te = split(x, names, fractions=(0.5, 0.5), stratify=True)
    assert (tr[1] == "cat").sum() == (te[1] == "cat").sum() == 350


def test_split_errors():
    with pytest.raises(ValueError, match="sum to 1"):
        split_indices(10, (0.5, 0.4))
    with pytest.raises(ValueError, match="non-negative"):
        split_indices(10, (1.5, -0.5))
    with pytest.raises(ValueError, match="labels"):
        split_indices(10, stratify=True)
    with pytest.raises(ValueError, match="examples"):
        split(np.zeros((3, 2)), np.zeros(4))


def test_standardize_uses_train_stats_only():
    rng = np.random.default_rng(0)
    tr = rng.normal(5.0, 2.0, (500, 3)).astype(np.float32)
    tr[:, 2] = 7.0  # constant feature: no division by zero
    te = rng.normal(-50.0, 30.0, (50, 3)).astype(np.float32)
    (ztr, zte), stats = standardize(tr, te)
    np.testing.assert_allclose(stats.mean, tr.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.std[:2], tr.std(0)[:2], rtol=1e-4)
    assert stats.std[2] == 1.0
    np.testing.assert_allclose(ztr[:, :2].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(ztr[:, :2].std(0), 1, atol=1e-4)
    np.testing.assert_allclose(zte, (te - tr.mean(0)) / stats.std, rtol=1e-4, atol=1e-4)
    assert zte.mean() < -5  # test data was NOT re-centred with its own mean
    np.testing.assert_allclose(stats.invert(zte), te, rtol=1e-4, atol=1e-3)
    assert ztr.dtype == np.float32


def test_standardize_per_channel_images():
    x = np.random.default_rng(1).uniform(size=(20, 4, 4, 3))
    (z,), stats = standardize(x, axis=(0, 1, 2))
    assert stats.mean.shape == (1, 1, 3) and z.shape == x.shape
    np.testing.assert_allclose(z.mean((0, 1, 2)), 0, atol=1e-5)
    with pytest.raises(ValueError, match="batch axis"):
        standardize(x, axis=1)


def test_one_hot():
    oh = one_hot(np.array([0, 2, 1]), 3)
    np.testing.assert_array_equal(oh, [[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    assert oh.dtype == np.float32 and isinstance(oh, np.ndarray)
    assert one_hot(np.array([[1], [0]]), 2).shape == (2, 1, 2)
    with pytest.raises(ValueError, match="0..2"):
        one_hot(np.array([3]), 3)
    with pytest.raises(ValueError, match="integer"):
        one_hot(np.array([0.5]), 3)
    j = one_hot(jnp.array([1, 0]), 2)
    np.testing.assert_array_equal(np.asarray(j), [[0, 1], [1, 0]])


def test_split_contiguous_blocks_with_gaps_hand_computed():
    tr, va, te = split_contiguous(20, (0.6, 0.2, 0.2), gap=2)
    # 20 - 2 gaps of 2 = 16 shared 0.6/0.2/0.2 -> 9.6, 3.2, 3.2 -> 10, 3, 3
    np.testing.assert_array_equal(tr, np.arange(0, 10))
    np.testing.assert_array_equal(va, np.arange(12, 15))
    np.testing.assert_array_equal(te, np.arange(17, 20))
    a, b = split_contiguous(7, (0.5, 0.5))  # no gap: every example once, in order
    np.testing.assert_array_equal(np.concatenate([a, b]), np.arange(7))
    a, b, c = split_contiguous(10, (0.7, 0.0, 0.3), gap=3)  # an empty part costs no gap
    np.testing.assert_array_equal(a, np.arange(5)) and np.testing.assert_array_equal(
        c, np.arange(8, 10))
    assert b.size == 0
    with pytest.raises(ValueError, match="cannot make 3 parts"):
        split_contiguous(4, (0.5, 0.25, 0.25), gap=1)
    with pytest.raises(ValueError, match="gap"):
        split_contiguous(4, (1.0,), gap=-1)


@pytest.mark.parametrize("per_class, classes, want", [
    (3, 100, [240, 30, 30]), (5, 50, [200, 25, 25]), (15, 10, [120, 15, 15])])
def test_stratified_part_sizes_follow_the_fractions_with_small_classes(per_class, classes,
                                                                       want):
    """Rounding each class alone gave every class's leftover to the first parts (100 classes
    of 3 split 0.8/0.1/0.1: 300, 0, 0); the parts now have the unstratified sizes."""
    y = np.repeat(np.arange(classes), per_class)
    parts = split_indices(y, (0.8, 0.1, 0.1), seed=0, stratify=True)
    assert [len(p) for p in parts] == want
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(y)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=25),
       st.lists(st.floats(0.05, 1.0), min_size=1, max_size=3))
def test_stratified_sizes_match_the_totals_and_each_class_its_share(sizes, weights):
    fr = np.asarray(weights) / np.sum(weights)
    y = np.repeat(np.arange(len(sizes)), sizes)
    parts = split_indices(y, fr, seed=1, stratify=True)
    unstratified = split_indices(len(y), fr, seed=1)
    assert [len(p) for p in parts] == [len(p) for p in unstratified]
    for c, size in enumerate(sizes):
        got = np.array([np.sum(y[p] == c) for p in parts])
        assert got.sum() == size and np.all(np.abs(got - size * fr) < 2)
