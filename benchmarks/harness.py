"""Timing harness: compile first, then interleaved (round-robin) windows of steps.

A benchmark *entry* builds a :class:`Runner` for a workload. ``runner.run(n)`` performs ``n``
units of work (a unit is one step, or one scanned call of ``steps_per_unit`` steps) and
blocks until the device is done. :func:`measure`:

1. builds every entry and times its first call (trace + compile + one unit);
2. calibrates each entry's window to about ``window_s`` seconds (and re-sizes it when a
   window took under a quarter or over four times that, e.g. after the machine's load changed);
3. runs ``windows`` rounds; in each round every entry runs one window, in an order rotated
   by one per round, so machine drift (other processes, clock changes) hits all entries;
4. reports per entry the median steps/s over the windows and the min-max.

Entries that cannot run (a peer library not installed) raise :class:`Skip` from their
builder and are reported as skipped with the reason.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Skip",
    "Runner",
    "Entry",
    "Measurement",
    "measure",
    "ratios",
    "peak_matmul_flops",
    "per_step_runner",
    "timed",
    "require",
    "cpu_snapshot",
    "foreign_load",
    "wait_quiet",
]


class Skip(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by an entry builder that cannot run here (library missing, unsupported)."""


def require(module: str) -> Any:
    """``importlib.import_module(module)``, or :class:`Skip` naming the missing module."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise Skip(f"{module} not installed ({e})") from None


@dataclass
class Runner:
    """A ready-to-time training loop.

    Attributes:
      run: ``run(n)`` does ``n`` units of work and blocks until finished.
      steps_per_unit: training steps per unit (1 for a per-step loop, ``K`` for a scanned
        call of ``K`` steps, ``K`` per model for a sweep).
      loss: optional ``loss() -> float``: the latest training loss (read after timing only).
      cache_size: optional ``cache_size() -> int``: compiled variants of the jitted step
        (1 means no retracing happened while timing).
      models: models trained at once (8 for a sweep); rates then count model-steps.
    """

    run: Callable[[int], None]
    steps_per_unit: int = 1
    loss: Callable[[], float] | None = None
    cache_size: Callable[[], int] | None = None
    models: int = 1


@dataclass(frozen=True)
class Entry:
    """A benchmark entry: ``build(workload) -> Runner`` (or raises :class:`Skip`)."""

    key: str
    label: str
    build: Callable[[Any], Runner]


@dataclass
class Measurement:
    """Timing of one entry on one workload.

    ``rates`` are steps/s of each window (model-steps/s when ``models > 1``); ``foreign`` is
    the CPU load of *other* processes during each window, in cores (see :func:`foreign_load`).
    """

    key: str
    label: str
    skipped: str | None = None
    first_call_s: float = math.nan
    rates: list[float] = field(default_factory=list)
    steps_per_unit: int = 1
    units_per_window: int = 0
    loss_before: float = math.nan
    loss_after: float = math.nan
    cache_size: int | None = None
    models: int = 1
    foreign: list[float] = field(default_factory=list)
    retried: int = 0

    @property
    def median(self) -> float:
        """Median steps/s over the windows (NaN if none)."""
        return statistics.median(self.rates) if self.rates else math.nan

    @property
    def lo(self) -> float:
        """Slowest window, steps/s."""
        return min(self.rates) if self.rates else math.nan

    @property
    def hi(self) -> float:
        """Fastest window, steps/s."""
        return max(self.rates) if self.rates else math.nan

    @property
    def unit_s(self) -> float:
        """Steady-state seconds per unit, from the median rate."""
        return self.steps_per_unit * self.models / self.median if self.rates else math.nan

    @property
    def compile_s(self) -> float:
        """First call minus one steady unit: an estimate of trace + compile time."""
        return self.first_call_s - self.unit_s

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (rates included)."""
        return {
            "key": self.key, "label": self.label, "skipped": self.skipped,
            "first_call_s": self.first_call_s, "compile_s": self.compile_s,
            "median": self.median, "lo": self.lo, "hi": self.hi, "rates": self.rates,
            "steps_per_unit": self.steps_per_unit, "units_per_window": self.units_per_window,
            "loss_before": self.loss_before, "loss_after": self.loss_after,
            "cache_size": self.cache_size, "models": self.models, "foreign": self.foreign,
            "retried": self.retried,
        }


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of ``fn()`` (which must block until its work is done)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _calibrate(runner: Runner, window_s: float, max_units: int) -> int:
    """Units per window so that one window takes about ``window_s`` seconds."""
    k = 1
    while True:
        t = timed(lambda k=k: runner.run(k))
        if t >= 0.25 * window_s or k >= max_units:
            return int(min(max_units, max(1, round(k * window_s / max(t, 1e-9)))))
        k = min(max_units, k * 4 if t < 0.05 * window_s else k * 2)


def _read_loss(runner: Runner) -> float:
    if runner.loss is None:
        return math.nan
    try:
        return float(runner.loss())
    except Exception:  # noqa: BLE001 - a diagnostic only
        return math.nan


def measure(
    entries: Sequence[Entry],
    workload: Any,
    *,
    windows: int = 5,
    window_s: float = 1.0,
    max_units: int = 100_000,
    retries: int = 0,
    max_foreign: float = 1.0,
    log: Callable[[str], None] = print,
) -> dict[str, Measurement]:
    """Builds, compiles and times ``entries`` on ``workload`` with interleaved windows.

    A window during which other processes kept more than ``max_foreign`` cores busy is run
    again (at most ``retries`` times) and the least disturbed attempt is kept. Returns
    ``{entry.key: Measurement}`` in the order of ``entries``; skipped entries have
    ``skipped`` set and no rates.
    """
    out: dict[str, Measurement] = {}
    runners: dict[str, Runner] = {}
    for e in entries:
        m = Measurement(e.key, e.label)
        out[e.key] = m
        try:
            r = e.build(workload)
        except Skip as s:
            m.skipped = str(s)
            log(f"  {e.key:18s} skipped: {s}")
            continue
        m.steps_per_unit, m.models = r.steps_per_unit, r.models
        m.first_call_s = timed(lambda r=r: r.run(1))
        m.loss_before = _read_loss(r)
        m.units_per_window = _calibrate(r, window_s, max_units)
        runners[e.key] = r
        log(f"  {e.key:18s} first call {m.first_call_s:6.2f} s, "
            f"{m.units_per_window} x {m.steps_per_unit} steps per window")
    keys = list(runners)
    for w in range(windows):
        order = keys[w % len(keys):] + keys[: w % len(keys)] if keys else []
        for k in order:
            m, r = out[k], runners[k]
            best: tuple[float, float] | None = None  # (foreign load, rate)
            for _ in range(1 + retries):
                before = cpu_snapshot()
                t = timed(lambda r=r, m=m: r.run(m.units_per_window))
                load = foreign_load(before, cpu_snapshot())
                rate = m.units_per_window * m.steps_per_unit * m.models / t
                if best is None or (load < best[0]):
                    best = (load, rate)
                if not load > max_foreign:
                    break
                m.retried += 1
            m.foreign.append(best[0])
            m.rates.append(best[1])
            # keep the next window near window_s if the speed changed a lot since calibration
            took = m.units_per_window * m.steps_per_unit * m.models / best[1]
            if not 0.25 * window_s <= took <= 4 * window_s:
                m.units_per_window = int(min(max_units, max(1, round(
                    m.units_per_window * window_s / took))))
    for k, r in runners.items():
        out[k].loss_after = _read_loss(r)
        if r.cache_size is not None:
            out[k].cache_size = int(r.cache_size())
    for k in keys:
        m = out[k]
        log(f"  {k:18s} {m.median:10.1f} steps/s  [{m.lo:.1f} - {m.hi:.1f}]  other procs "
            f"{statistics.median(m.foreign):.2f} cores")
    return out


def ratios(results: dict[str, Measurement], ref: str) -> dict[str, float]:
    """``median(entry) / median(ref)`` for every measured entry (NaN if ``ref`` is missing)."""
    base = results[ref].median if ref in results else math.nan
    return {k: m.median / base for k, m in results.items()}


# ----------------------------------------------------------------------------- machine load


def cpu_snapshot() -> tuple[int, int, int]:
    """``(busy, total, own)`` jiffies: all CPUs' busy and total time from ``/proc/stat`` and
    this process's user + system time from ``/proc/self/stat`` (zeros off Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            own_fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0, 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    own = int(own_fields[11]) + int(own_fields[12])  # utime + stime
    return total - idle, total, own


def foreign_load(before: tuple[int, int, int], after: tuple[int, int, int]) -> float:
    """CPU cores kept busy by *other* processes between two :func:`cpu_snapshot` calls.

    ``(d_busy - d_own) / d_total * n_cpus`` (NaN when no time passed or not on Linux).
    """
    import os

    d_busy, d_total, d_own = (a - b for a, b in zip(after, before, strict=True))
    if d_total <= 0:
        return math.nan
    return max(0.0, (d_busy - d_own) / d_total * (os.cpu_count() or 1))


def wait_quiet(
    threshold: float = 0.5,
    max_wait_s: float = 30.0,
    sample_s: float = 0.5,
    log: Callable[[str], None] = print,
) -> float:
    """Waits (at most ``max_wait_s``) until other processes use less than ``threshold``
    cores over a ``sample_s`` sample; returns the last sampled foreign load."""
    deadline = time.perf_counter() + max_wait_s
    while True:
        before = cpu_snapshot()
        time.sleep(sample_s)
        load = foreign_load(before, cpu_snapshot())
        if not load >= threshold or time.perf_counter() >= deadline:
            if load >= threshold:
                log(f"  (machine still busy: other processes use {load:.1f} cores)")
            return load


# ----------------------------------------------------------------------------- runners


def per_step_runner(
    step: Callable[..., tuple[Any, Any]],
    carry: Any,
    xs: Sequence[Any],
    ys: Sequence[Any],
    *,
    call: Callable[[Callable, Any, Any, Any], tuple[Any, Any]] | None = None,
) -> Runner:
    """A Python loop of a jitted ``step(carry, x, y) -> (carry, loss)`` over device batches.

    ``xs``/``ys`` are lists of device arrays (cycled); ``call(step, carry, x, y)`` adapts
    other step signatures. Blocks on the final carry at the end of each ``run``.
    """
    call = call or (lambda f, c, x, y: f(c, x, y))
    box: dict[str, Any] = {"carry": carry, "loss": None}
    p = len(xs)

    def run(n: int) -> None:
        c, loss = box["carry"], None
        for i in range(n):
            c, loss = call(step, c, xs[i % p], ys[i % p])
        jax.block_until_ready((c, loss))
        box["carry"], box["loss"] = c, loss

    cache = getattr(step, "_cache_size", None)
    return Runner(run, 1, loss=lambda: box["loss"], cache_size=cache)


def scanned_runner(
    run_k: Callable[[Any, Any, Any], tuple[Any, Any]], carry: Any, xs: Any, ys: Any, *,
    models: int = 1,
) -> Runner:
    """Calls of a jitted ``run_k(carry, xs, ys) -> (carry, losses)`` that scans ``len(xs)``
    steps (the carry donated), one call per unit; ``loss()`` is the mean of the last step's
    losses (over the models, if ``losses`` is ``(K, models)``)."""
    box: dict[str, Any] = {"carry": carry, "loss": None}

    def run(n: int) -> None:
        c, losses = box["carry"], None
        for _ in range(n):
            c, losses = run_k(c, xs, ys)
        jax.block_until_ready((c, losses))
        box["carry"], box["loss"] = c, losses

    return Runner(run, len(xs), loss=lambda: float(jnp.mean(box["loss"][-1])),
                  cache_size=getattr(run_k, "_cache_size", None), models=models)


# ----------------------------------------------------------------------------- peak


def peak_matmul_flops(n: int = 2048, reps: int = 5) -> dict[str, float]:
    """Measured float32 matmul throughput of ``jnp.dot`` on ``(n, n) @ (n, n)``.

    ``flops = 2 n^3`` per call; returns ``{"best": ..., "median": ...}`` in FLOP/s over
    ``reps`` timed calls after one warm-up call.
    """
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    f = jax.jit(jnp.dot)
    jax.block_until_ready(f(a, b))
    ts = [timed(lambda: jax.block_until_ready(f(a, b))) for _ in range(reps)]
    flops = 2.0 * n**3
    return {"best": flops / min(ts), "median": flops / float(np.median(ts)), "n": n}
