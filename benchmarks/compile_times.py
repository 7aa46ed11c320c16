"""Compile time of nnkit's train step against the hand-written step.

For each repeat, a *fresh* jitted step is built for each side (new closures, so nothing is
cached in memory) and timed ahead of time: ``t_trace = jit(f).lower(*args)`` (tracing +
lowering to StableHLO) and ``t_compile = lowered.compile()`` (XLA). The sides alternate
within each repeat; the median over repeats is reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

from benchmarks import handwritten, nnkit_entries
from benchmarks.workloads import LR, Workload
from nnkit import optim
from nnkit.train.compiled import compiled_fit_fns
from nnkit.train.gradients import resolve_loss, resolve_metrics
from nnkit.train.order import epoch_order

__all__ = ["compile_pairs", "measure_compile"]


def _hand_step(wl: Workload, batch) -> tuple[Callable, tuple]:
    opt = optax.adam(LR)
    params = handwritten.init_params(wl, jax.random.key(0))
    return handwritten.make_step(wl, opt), ((params, opt.init(params)), *batch)


def _nnkit_step(wl: Workload, batch) -> tuple[Callable, tuple]:
    step, ts = nnkit_entries.make_step(wl)
    return step, (ts, batch)


def _hand_scan(wl: Workload, stacked) -> tuple[Callable, tuple]:
    opt = optax.adam(LR)
    params = handwritten.init_params(wl, jax.random.key(0))
    return handwritten.make_scan(wl, opt), ((params, opt.init(params)), *stacked)


def _nnkit_epoch(wl: Workload, full) -> tuple[Callable, tuple]:
    import nnkit

    net = nnkit_entries.model(wl)
    opt = optim.make("adam", LR)
    cf = compiled_fit_fns(net, resolve_loss("cross_entropy"), resolve_metrics(("accuracy",)),
                          opt, "batch", 1, 0.0, 0.0, None, wl.n, wl.batch, None, 1024, None,
                          None)
    ts = nnkit.create_train_state(net, wl.input_shape, opt, 0)
    idx = epoch_order(ts.key, 0, wl.n, wl.batch)
    return cf.epoch, (ts, np.int32(0), idx, *full, None, None, jax.numpy.asarray(True))


def compile_pairs() -> dict[str, tuple[str, str]]:
    """``{pair name: (reference side, nnkit side)}``."""
    return {"step": ("jax", "nnkit-step"), "scan": ("jax-scan", "nnkit-epoch")}


def measure_compile(
    wl: Workload,
    data: tuple[np.ndarray, np.ndarray],
    *,
    repeats: int = 3,
    sides: tuple[str, ...] = ("jax", "nnkit-step", "jax-scan", "nnkit-epoch"),
) -> dict[str, dict[str, float]]:
    """``{side: {"trace": s, "compile": s, "total": s}}`` medians over ``repeats``.

    ``sides`` picks among ``jax``, ``nnkit-step``, ``jax-scan``, ``nnkit-epoch``.
    """
    x, y = data
    b, k = wl.batch, wl.steps_per_epoch
    batch = jax.device_put((x[:b], y[:b]))
    stacked = jax.device_put((x.reshape(k, b, *x.shape[1:]), y.reshape(k, b)))
    full = jax.device_put((x, y))
    makers: dict[str, Callable[[], tuple[Callable, tuple]]] = {
        "jax": lambda: _hand_step(wl, batch),
        "nnkit-step": lambda: _nnkit_step(wl, batch),
        "jax-scan": lambda: _hand_scan(wl, stacked),
        "nnkit-epoch": lambda: _nnkit_epoch(wl, full),
    }
    times: dict[str, dict[str, list[float]]] = {
        s: {"trace": [], "compile": []} for s in sides}
    for _ in range(repeats):
        for s in sides:
            f, args = makers[s]()
            t0 = time.perf_counter()
            lowered = f.lower(*args)
            t1 = time.perf_counter()
            lowered.compile()
            t2 = time.perf_counter()
            times[s]["trace"].append(t1 - t0)
            times[s]["compile"].append(t2 - t1)
    out: dict[str, dict[str, Any]] = {}
    for s, d in times.items():
        tot = [a + c for a, c in zip(d["trace"], d["compile"], strict=True)]
        out[s] = {"trace": statistics.median(d["trace"]),
                  "compile": statistics.median(d["compile"]),
                  "total": statistics.median(tot)}
    return out
