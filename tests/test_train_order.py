"""nnkit.train.order: the epoch's data order, drawn on the host."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import nnkit
from nnkit import optim
from nnkit.train.order import epoch_order, key_words


def _words(seed: int) -> tuple[int, ...]:
    return key_words(jax.random.key_data(jax.random.key(seed)))


@pytest.mark.parametrize("n,b", [(10, 3), (64, 64), (1000, 32), (7, 1)])
def test_is_a_permutation_cut_into_full_batches(n, b):
    idx = epoch_order(_words(0), 0, n, b)
    assert idx.shape == (n // b, b) and idx.dtype == np.int32
    flat = idx.ravel()
    assert len(np.unique(flat)) == flat.size  # no repeats
    assert flat.min() >= 0 and flat.max() < n


def test_deterministic_and_depends_on_key_and_epoch():
    a = epoch_order(_words(0), 3, 100, 10)
    np.testing.assert_array_equal(a, epoch_order(_words(0), 3, 100, 10))
    assert not np.array_equal(a, epoch_order(_words(0), 4, 100, 10))
    assert not np.array_equal(a, epoch_order(_words(1), 3, 100, 10))


def test_key_forms_agree():
    """Key data (what TrainState.key holds), a typed key and the words give one order."""
    ts = nnkit.create_train_state(nnkit.models.mlp([4], 2), (3,), optim.make("sgd", 0.1), 5)
    want = epoch_order(ts.key, 2, 50, 8)
    np.testing.assert_array_equal(want, epoch_order(key_words(ts.key), 2, 50, 8))
    np.testing.assert_array_equal(want, epoch_order(nnkit.train.as_key(ts.key), 2, 50, 8))
    np.testing.assert_array_equal(want, epoch_order(np.asarray(ts.key), 2, 50, 8))


def test_dropped_remainder_changes_between_epochs():
    dropped = [set(range(10)) - set(epoch_order(_words(0), e, 10, 4).ravel().tolist())
               for e in range(8)]
    assert all(len(d) == 2 for d in dropped)
    assert len({frozenset(d) for d in dropped}) > 1


def test_uniform_first_position():
    """Chi-square: the example in the first slot is uniform over 8 examples (2,000 epochs;
    df = 7, the 0.999 quantile is 24.3)."""
    n, epochs = 8, 2000
    words = _words(11)
    counts = np.bincount([epoch_order(words, e, n, n)[0, 0] for e in range(epochs)],
                         minlength=n)
    expected = epochs / n
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert chi2 < 24.3, counts


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="batch_size 11 must be in"):
        epoch_order(_words(0), 0, 10, 11)
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        epoch_order(_words(0), -1, 10, 2)
    with pytest.raises(TypeError, match="uint32 key data"):
        key_words(np.zeros(2, np.float32))
