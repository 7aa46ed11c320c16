"""epoch_batches (device, jittable) and BatchIterator (host, prefetching)."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnkit.data import BatchIterator, batch_mask, epoch_batches

N = 50
X = np.arange(N * 3, dtype=np.float32).reshape(N, 3)
Y = np.arange(N, dtype=np.int32)


@partial(jax.jit, static_argnames=("batch_size", "drop_last"))
def jit_epoch(key, x, y, batch_size, drop_last=True):
    return epoch_batches(key, x, y, batch_size, drop_last)


def test_epoch_batches_under_jit_is_a_permutation():
    xb, yb = jit_epoch(jax.random.key(0), X, Y, batch_size=8)
    assert xb.shape == (6, 8, 3) and yb.shape == (6, 8)
    ys = np.asarray(yb).ravel()
    assert len(set(ys.tolist())) == 48 and set(ys.tolist()) <= set(range(N))
    np.testing.assert_array_equal(np.asarray(xb)[..., 0], np.asarray(yb) * 3)  # rows stay paired
    full, fy = jit_epoch(jax.random.key(0), X, Y, batch_size=10)
    np.testing.assert_array_equal(np.sort(np.asarray(fy).ravel()), Y)
    other = jit_epoch(jax.random.key(1), X, Y, batch_size=10)[1]
    assert not np.array_equal(np.asarray(other), np.asarray(fy))
    again = jit_epoch(jax.random.key(0), X, Y, batch_size=10)[1]
    np.testing.assert_array_equal(np.asarray(again), np.asarray(fy))


def test_epoch_batches_feeds_scan():
    def epoch(key, x, y):
        xb, yb = epoch_batches(key, x, y, 10)

        def step(total, batch):
            bx, by = batch
            return total + bx[:, 0].sum() + by.sum(), None

        return jax.lax.scan(step, jnp.float32(0), (xb, yb))[0]

    total = jax.jit(epoch)(jax.random.PRNGKey(3), jnp.asarray(X), jnp.asarray(Y))
    assert float(total) == pytest.approx(float(X[:, 0].sum() + Y.sum()))


def test_epoch_batches_keep_last_and_pytrees():
    xb, yb = epoch_batches(jax.random.key(2), {"a": X, "b": Y}, None, 16, drop_last=False)
    assert yb is None and xb["a"].shape == (4, 16, 3) and xb["b"].shape == (4, 16)
    mask = batch_mask(N, 16, drop_last=False)
    assert mask.shape == (4, 16) and mask.sum() == N
    seen = np.asarray(xb["b"])[mask]
    np.testing.assert_array_equal(np.sort(seen), Y)
    with pytest.raises(ValueError, match="no batch"):
        epoch_batches(jax.random.key(0), X, Y, 64)
    with pytest.raises(ValueError, match="leading"):
        epoch_batches(jax.random.key(0), X, Y[:10], 5)


def collect(it_epoch):
    return [(np.asarray(xb), np.asarray(yb)) for xb, yb in it_epoch]


def test_batch_iterator_deterministic_and_reshuffles():
    it = BatchIterator(X, Y, 16, key_or_seed=7)
    assert len(it) == 4
    e0 = collect(it)
    e1 = collect(it)
    assert [b[1].shape[0] for b in e0] == [16, 16, 16, 2]
    for ep in (e0, e1):
        ys = np.concatenate([b[1] for b in ep])
        np.testing.assert_array_equal(np.sort(ys), Y)
        np.testing.assert_array_equal(np.concatenate([b[0] for b in ep])[:, 0], ys * 3)
    assert not np.array_equal(e0[0][1], e1[0][1])
    same = BatchIterator(X, Y, 16, key_or_seed=7, prefetch=0)
    for a, b in zip(e0, collect(same.epoch(0)), strict=True):
        np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(collect(it.epoch(1))[2][1], e1[2][1])
    assert isinstance(next(iter(it.epoch(0)))[0], jax.Array)


def test_batch_iterator_options():
    it = BatchIterator(X, Y, 16, key_or_seed=jax.random.key(1), shuffle=False, drop_last=True)
    ep = collect(it)
    assert len(ep) == len(it) == 3
    np.testing.assert_array_equal(np.concatenate([b[1] for b in ep]), Y[:48])
    keyed = BatchIterator(X, Y, 16, key_or_seed=jax.random.PRNGKey(1))
    keyed2 = BatchIterator(X, Y, 16, key_or_seed=jax.random.PRNGKey(1))
    np.testing.assert_array_equal(keyed.order(3), keyed2.order(3))
    assert not np.array_equal(keyed.order(3), keyed.order(4))
    xo = BatchIterator(X, None, 20, key_or_seed=0)
    assert all(yb is None for _, yb in xo)
    with pytest.raises(ValueError, match=r"make no batch of 100 \(drop_last=True\)"):
        BatchIterator(X, Y, 100, key_or_seed=0, drop_last=True)
    with pytest.raises(ValueError, match="seed must be non-negative, got -1"):
        BatchIterator(X, Y, 10, key_or_seed=-1)


def test_batch_iterator_early_break_and_errors():
    it = BatchIterator(X, Y, 5, key_or_seed=0, prefetch=1)
    for i, _ in enumerate(it):
        if i == 1:
            break  # the prefetch thread must stop; the next epoch still works
    assert len(collect(it)) == 10

    class Boom(BatchIterator):
        def _put(self, batch):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        collect(Boom(X, Y, 5, key_or_seed=0))
