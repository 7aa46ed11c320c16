"""nnkit.data.shuffle.permutation: a permutation, uniform, deterministic per key, jittable."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnkit.data import shuffle


@pytest.mark.parametrize("n", [0, 1, 2, 7, 3200, 70_000])  # 70,000: the 3-round branch
def test_is_a_permutation(n):
    p = np.asarray(shuffle.permutation(jax.random.key(n), n))
    assert p.dtype == np.int32 and p.shape == (n,)
    np.testing.assert_array_equal(np.sort(p), np.arange(n))


def test_deterministic_per_key_and_different_across_keys():
    a = shuffle.permutation(jax.random.key(0), 50)
    np.testing.assert_array_equal(a, shuffle.permutation(jax.random.key(0), 50))
    assert not jnp.array_equal(a, shuffle.permutation(jax.random.key(1), 50))
    legacy = shuffle.permutation(jax.random.PRNGKey(0), 50)  # raw uint32[2] keys work too
    np.testing.assert_array_equal(np.sort(legacy), np.arange(50))


def test_all_orders_equally_likely():
    """n = 4: 24 orders over 12,000 keys, each expected 500 times; chi-square with 23 dof
    stays under 60 (p ~ 4e-5) for a uniform shuffle and explodes for a biased one."""
    keys = jax.random.split(jax.random.key(5), 12_000)
    perms = np.asarray(jax.jit(jax.vmap(lambda k: shuffle.permutation(k, 4)))(keys))
    index = {p: i for i, p in enumerate(itertools.permutations(range(4)))}
    counts = np.bincount([index[tuple(p)] for p in perms.tolist()], minlength=24)
    chi2 = float(np.sum((counts - 500.0) ** 2 / 500.0))
    assert chi2 < 60, (chi2, counts)


def test_large_n_falls_back_to_jax_random(monkeypatch):
    monkeypatch.setattr(shuffle, "PACKED_LIMIT", 10)
    key = jax.random.key(3)
    np.testing.assert_array_equal(shuffle.permutation(key, 20),
                                  jax.random.permutation(key, 20))
    with pytest.raises(ValueError, match="n must be >= 0"):
        shuffle.permutation(key, -1)


def test_rounds_bound_the_expected_tied_pairs():
    for n in (2, 100, 3200, 8192, 8193, 60_000, 600_000, 1 << 24):
        r = shuffle.rounds(n)
        free = 32 - max(1, (n - 1).bit_length())
        left = lambda k, n=n, free=free: n * n / 2 * 2.0 ** (-k * free)  # noqa: E731
        assert left(r) <= n / 100 and (r == 1 or left(r - 1) > n / 100), (n, r)
    assert shuffle.rounds(3200) == 1 and shuffle.rounds(60_000) == 2
