"""Loader throughput on W1 data: can :mod:`nnkit.data` feed the W1 step fast enough?

Entries (rates in batches/s, or steps/s for the training entries):

* ``device-epoch``: :func:`nnkit.data.epoch_batches` jitted -- shuffle + gather of a whole
  epoch on the device (what a scanned epoch consumes);
* ``host-iterator``: :class:`nnkit.data.BatchIterator` with its prefetch thread (2 batches),
  NumPy indexing on the host + ``device_put`` per batch;
* ``host-iterator-noprefetch``: the same without the thread;
* ``nnkit-step+iterator``: nnkit's W1 train step fed by the prefetching iterator;
* ``nnkit-step``: the same step on batches already on the device (the bound).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from benchmarks import nnkit_entries
from benchmarks.harness import Entry, Runner
from benchmarks.workloads import Workload
from nnkit.data import BatchIterator, epoch_batches

__all__ = ["make_loader_entries"]


def _device_epoch(wl: Workload, data) -> Runner:
    x, y = jax.device_put(data)
    f = jax.jit(lambda k, x, y: epoch_batches(k, x, y, wl.batch))
    key = jax.random.key(0)
    box: dict[str, Any] = {"e": 0}

    def run(n: int) -> None:
        out = None
        for _ in range(n):
            out = f(jax.random.fold_in(key, box["e"]), x, y)
            box["e"] += 1
        jax.block_until_ready(out)

    return Runner(run, wl.steps_per_epoch)


def _host_iterator(wl: Workload, data, prefetch: int) -> Runner:
    it = BatchIterator(data[0], data[1], wl.batch, key_or_seed=0, drop_last=True,
                       prefetch=prefetch)
    box: dict[str, Any] = {"e": 0}

    def run(n: int) -> None:
        last = None
        for _ in range(n):
            for batch in it.epoch(box["e"]):
                last = batch
            box["e"] += 1
        jax.block_until_ready(last)

    return Runner(run, len(it))


def _step_with_iterator(wl: Workload, data) -> Runner:
    step, ts = nnkit_entries.make_step(wl)
    it = BatchIterator(data[0], data[1], wl.batch, key_or_seed=0, drop_last=True, prefetch=2)
    box: dict[str, Any] = {"ts": ts, "e": 0, "loss": None}

    def run(n: int) -> None:
        t, ms = box["ts"], None
        for _ in range(n):
            for xb, yb in it.epoch(box["e"]):
                t, ms = step(t, (xb, yb))
            box["e"] += 1
        jax.block_until_ready(t)
        box["ts"], box["loss"] = t, ms["loss"]

    return Runner(run, len(it), loss=lambda: float(box["loss"]))


def make_loader_entries(wl: Workload, data: tuple[np.ndarray, np.ndarray]) -> list[Entry]:
    """The loader entries on ``wl`` (W1)."""
    builders = {
        "device-epoch": ("nnkit.data.epoch_batches (jit, on device)", _device_epoch),
        "host-iterator": ("nnkit.data.BatchIterator, prefetch=2",
                          lambda w, d: _host_iterator(w, d, 2)),
        "host-iterator-noprefetch": ("BatchIterator, prefetch=0",
                                     lambda w, d: _host_iterator(w, d, 0)),
        "nnkit-step+iterator": ("nnkit step fed by BatchIterator", _step_with_iterator),
        "nnkit-step": ("nnkit step on device batches", nnkit_entries.build_step_entry),
    }
    return [Entry(k, label, lambda w, b=b: b(w, data)) for k, (label, b) in builders.items()]
