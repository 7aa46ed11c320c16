"""The data order of a training epoch, drawn on the host.

Epoch ``e`` of a run whose train state holds key data ``k`` visits the examples in the
order of a uniform random permutation of ``range(n)`` drawn by NumPy's PCG64 generator
seeded with ``SeedSequence([*k, e])``: a pure function of the run's key and the epoch, so a
resumed run, the scanned and the per-step paths, a sweep and every process of a
multi-process run all see the same order.

Why on the host: the permutation is the only part of an epoch that does not depend on the
previous epoch's result, so :func:`nnkit.fit` draws epoch ``e + 1``'s order while the device
runs epoch ``e`` and hands it to the compiled epoch as an argument (an ``(n // b, b)``
int32 array: 12.8 kB for 3,200 examples). On a CPU backend a device shuffle (random bits
and a sort) of 3,200 examples costs about 0.12 ms, an eighth of a small MLP's whole epoch;
drawn here it overlaps the previous epoch and costs the device nothing.

NumPy documents that a ``Generator``'s stream may change between NumPy releases; the order
is reproducible for a given NumPy version.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

__all__ = ["epoch_order", "key_words"]


def key_words(key: Any) -> tuple[int, ...]:
    """The train state's key data (``TrainState.key``, uint32 words) as Python ints.

    Reads the whole key: one local copy when it is replicated (over several devices or
    processes), else its shards gathered from this process's devices (one small transfer;
    :func:`nnkit.fit` calls it once per run).

    Raises:
      ValueError: a key split over several processes (no process holds it whole; the
        train state places its key replicated).
    """
    if isinstance(key, jax.Array):
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.key_data(key)
        if key.is_fully_replicated:
            key = key.addressable_data(0)
        elif not key.is_fully_addressable:
            raise ValueError(
                f"the train key is split over several processes ({key.sharding}); "
                "replicate TrainState.key on every device")
    words = np.asarray(key)
    if words.dtype != np.uint32:
        raise TypeError(f"expected uint32 key data, got dtype {words.dtype} shape {words.shape}")
    return tuple(int(w) for w in words.ravel())


def epoch_order(key: Any, epoch: int, n: int, batch_size: int) -> np.ndarray:
    """Epoch ``epoch``'s example indices, ``(n // batch_size, batch_size)`` int32.

    A uniform random permutation of ``range(n)`` (Fisher-Yates, NumPy PCG64 seeded with
    ``SeedSequence([*key_words(key), epoch])``) cut into batches; its last
    ``n % batch_size`` indices -- a different set every epoch -- are dropped so every step
    has the same shape.

    Args:
      key: the train state's key data (``TrainState.key``) or the words from :func:`key_words`.
      epoch: the epoch number (``>= 0``).
      n: number of training examples; ``batch_size``: examples per step (``<= n``).
    """
    words = key if isinstance(key, tuple) else key_words(key)
    if batch_size < 1 or batch_size > n:
        raise ValueError(f"epoch_order: batch_size {batch_size} must be in [1, n={n}]")
    if epoch < 0:
        raise ValueError(f"epoch_order: epoch must be >= 0, got {epoch}")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([*words, int(epoch)])))
    nb = n // batch_size
    perm = rng.permutation(n)[: nb * batch_size]
    return perm.astype(np.int32).reshape(nb, batch_size)
