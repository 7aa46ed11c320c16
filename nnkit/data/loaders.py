"""Batching: a pure-JAX epoch for ``lax.scan`` and a host-side prefetching iterator."""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nnkit.data.shuffle import permutation

__all__ = ["epoch_batches", "batch_mask", "BatchIterator"]


def _leading(tree: Any) -> int:
    sizes = {int(np.shape(a)[0]) for a in jax.tree.leaves(tree)}
    if len(sizes) != 1:
        raise ValueError(f"all arrays need the same leading (example) dimension, got {sizes}")
    return sizes.pop()


def _num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    nb = n // batch_size if drop_last else math.ceil(n / batch_size)
    if nb == 0:
        raise ValueError(f"{n} examples make no batch of {batch_size} (drop_last={drop_last})")
    return nb


def epoch_batches(
    key: jax.Array, x: Any, y: Any, batch_size: int, drop_last: bool = True
) -> tuple[Any, Any]:
    """Shuffle on device and cut into batches: x (n, ...) -> (num_batches, batch_size, ...).

    Pure JAX and jittable (``batch_size`` and ``drop_last`` are Python values, static under
    ``jit``), made to feed ``lax.scan`` over one epoch. ``x`` and ``y`` may be arrays or pytrees
    of arrays sharing the leading dimension (``y`` may be ``None``). With ``drop_last=True`` the
    ``n % batch_size`` examples left over after the permutation are skipped this epoch; with
    ``drop_last=False`` the last batch is filled by wrapping around the permutation (see
    :func:`batch_mask` to ignore the repeats).
    """
    n = _leading((x, y))
    nb = _num_batches(n, batch_size, drop_last)
    perm = permutation(key, n)
    idx = perm[: nb * batch_size] if drop_last else jnp.resize(perm, (nb * batch_size,))
    idx = idx.reshape(nb, batch_size)

    def take(a: Any) -> jax.Array:
        return jnp.take(jnp.asarray(a), idx, axis=0)

    return jax.tree.map(take, x), jax.tree.map(take, y)


def batch_mask(n: int, batch_size: int, drop_last: bool = True) -> np.ndarray:
    """(num_batches, batch_size) bool: which slots of :func:`epoch_batches` are first visits."""
    nb = _num_batches(n, batch_size, drop_last)
    return (np.arange(nb * batch_size) < n).reshape(nb, batch_size)


def _entropy(key_or_seed: int | jax.Array) -> list[int]:
    if isinstance(key_or_seed, int | np.integer):
        if key_or_seed < 0:
            raise ValueError(f"seed must be non-negative, got {key_or_seed}")
        return [int(key_or_seed)]
    data = np.asarray(jax.random.key_data(key_or_seed)).astype(np.uint64).ravel()
    return [int(v) for v in data]


_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class BatchIterator:
    """Host-side batches of NumPy arrays, shuffled per epoch and prefetched to a device.

    ``x`` (n, ...) and ``y`` (n, ...) (or ``None``) stay in host memory; each batch
    ``(x[idx], y[idx])`` is moved with ``jax.device_put`` by a background thread that keeps up
    to ``prefetch`` batches ready (``prefetch=0``: no thread). The order of epoch ``i`` depends
    only on ``key_or_seed`` (an int seed or a JAX key) and ``i``, so runs are reproducible.

    ``for xb, yb in it`` runs the next epoch (a fresh shuffle each time); ``it.epoch(i)``
    iterates epoch ``i`` explicitly. With ``drop_last=False`` the final batch may be smaller.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray | None,
        batch_size: int,
        *,
        key_or_seed: int | jax.Array,
        shuffle: bool = True,
        drop_last: bool = False,
        prefetch: int = 2,
        device: jax.Device | jax.sharding.Sharding | None = None,
    ) -> None:
        self.x = np.asarray(x)
        self.y = None if y is None else np.asarray(y)
        self.n = _leading((self.x, self.y))
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        self.prefetch = int(prefetch)
        self.device = device
        self._entropy = _entropy(key_or_seed)
        self._num_batches = _num_batches(self.n, self.batch_size, drop_last)
        self._next_epoch = 0

    def __len__(self) -> int:
        """Batches per epoch."""
        return self._num_batches

    def order(self, i: int) -> np.ndarray:
        """The example order of epoch ``i`` (n,) int64 (``arange(n)`` when not shuffling)."""
        if not self.shuffle:
            return np.arange(self.n)
        rng = np.random.default_rng(np.random.SeedSequence([*self._entropy, int(i)]))
        return rng.permutation(self.n)

    def _host_batches(self, i: int) -> Iterator[tuple[Any, Any]]:
        order = self.order(i)
        for b in range(self._num_batches):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield self.x[idx], (None if self.y is None else self.y[idx])

    def _put(self, batch: tuple[Any, Any]) -> tuple[Any, Any]:
        return jax.device_put(batch, self.device)

    def epoch(self, i: int) -> Iterator[tuple[jax.Array, jax.Array]]:
        """Iterate the device batches ``(xb, yb)`` of epoch ``i``."""
        if self.prefetch == 0:
            return (self._put(b) for b in self._host_batches(i))
        return self._prefetched(i)

    def _prefetched(self, i: int) -> Iterator[tuple[jax.Array, jax.Array]]:
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def offer(item: object) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def worker() -> None:
            try:
                for batch in self._host_batches(i):
                    if not offer(self._put(batch)):
                        return
                offer(_DONE)
            except BaseException as e:  # handed to the consumer, re-raised there
                offer(_Failure(e))

        thread = threading.Thread(target=worker, name=f"BatchIterator-epoch{i}", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            stop.set()
            thread.join()

    def __iter__(self) -> Iterator[tuple[jax.Array, jax.Array]]:
        """The next epoch: the first ``iter()`` gives epoch 0, the next epoch 1, and so on."""
        i = self._next_epoch
        self._next_epoch += 1
        return self.epoch(i)
