"""nnkit's two training paths as benchmark entries.

* ``nnkit-step``: :func:`nnkit.train.make_train_step` (jitted, train state donated) called
  from Python per batch, over the same device batches as the hand-written ``jax`` entry.
  Defaults as a user gets them: metrics ``("accuracy",)``, plus ``lr`` (no ``grad_norm``:
  off by default), Adam from :func:`nnkit.optim.make` (learning rate injected into the
  optimizer state). ``nnkit-step-norm`` (analysis) turns ``log_grad_norm`` on.
* ``nnkit-epoch``: the compiled epoch that ``nnkit.fit(mode="scan")`` runs -- the jitted
  ``epoch`` of :func:`nnkit.train.compiled.compiled_fit_fns` (gather in the epoch's order,
  ``lax.scan`` of the step, epoch logs packed in one vector) -- called once per epoch as
  ``fit`` calls it without epoch callbacks: epoch ``e + 1`` (its order drawn on the host by
  :func:`nnkit.train.order.epoch_order`) is queued before the host reads epoch ``e``'s
  logs, one transfer per epoch. Throughput = ``K`` steps per epoch.
* ``nnkit-epoch-dp`` (analysis): the same epoch with ``fit``'s data parallelism over every
  device (``parallel=DataParallel.create()``): the batch split over the devices, the state
  replicated, one gradient all-reduce per step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import nnkit
from benchmarks.handwritten import device_batches
from benchmarks.harness import Runner, Skip, per_step_runner
from benchmarks.workloads import LR, Workload
from nnkit import optim, parallel
from nnkit.train.compiled import compiled_fit_fns
from nnkit.train.gradients import resolve_loss, resolve_metrics
from nnkit.train.order import epoch_order, key_words

__all__ = ["model", "build_step_entry", "build_fit_step_entry", "build_epoch_entry",
           "build_stepscan_entry",
           "make_step"]


def _lstm(hidden: int) -> nnkit.Layer:
    from nnkit.layers import LSTM

    return LSTM(hidden, return_sequences=False)


def model(wl: Workload, *, conv_impl: str = "auto") -> nnkit.Layer:
    """The workload's model built from nnkit layers (same shapes as every other entry)."""
    from nnkit.layers import Conv2D, Dense, Flatten, MaxPool2D, Relu

    if wl.kind == "mlp":
        hidden = [lyr for h in wl.hidden for lyr in (Dense(h), Relu())]
        return nnkit.serial(*hidden, Dense(wl.num_classes))
    if wl.kind == "lenet":
        return nnkit.serial(
            Conv2D(6, 5, padding="SAME", impl=conv_impl), Relu(), MaxPool2D(2),
            Conv2D(16, 5, padding="VALID", impl=conv_impl), Relu(), MaxPool2D(2),
            Flatten(), Dense(120), Relu(), Dense(84), Relu(), Dense(wl.num_classes),
        )
    if wl.kind == "lstm":
        return nnkit.serial(_lstm(wl.hidden[0]), Dense(wl.num_classes))
    raise ValueError(f"unknown workload kind {wl.kind!r}")


def _optimizer(lean: bool) -> optax.GradientTransformation:
    return optax.adam(LR) if lean else optim.make("adam", LR)


def make_step(wl: Workload, *, lean: bool = False, conv_impl: str = "auto",
              grad_norm: bool = False):
    """``(step, train_state)``: nnkit's jitted train step and a fresh state (seed 0).

    ``lean=True`` drops the extras (no metrics, plain ``optax.adam``) to attribute overhead;
    ``grad_norm=True`` adds the ``grad_norm`` metric (``log_grad_norm=True``).
    """
    net = model(wl, conv_impl=conv_impl)
    opt = _optimizer(lean)
    metrics = () if lean else ("accuracy",)
    step = nnkit.make_train_step(net, "cross_entropy", opt, metrics=metrics,
                                 log_grad_norm=grad_norm and not lean)
    ts = nnkit.create_train_state(net, wl.input_shape, opt, 0)
    return step, ts


def build_step_entry(
    wl: Workload,
    data: tuple[np.ndarray, np.ndarray],
    *,
    lean: bool = False,
    conv_impl: str = "auto",
    grad_norm: bool = False,
) -> Runner:
    """The ``nnkit-step`` entry (per-step Python loop over device batches)."""
    step, ts = make_step(wl, lean=lean, conv_impl=conv_impl, grad_norm=grad_norm)
    xs, ys = device_batches(wl, *data)

    def call(f, c, x, y):
        c, ms = f(c, (x, y))
        return c, ms["loss"]

    return per_step_runner(step, ts, xs, ys, call=call)


def build_fit_step_entry(wl: Workload, data: tuple[np.ndarray, np.ndarray]) -> Runner:
    """``nnkit-fit-step``: the step as ``fit(mode="step")`` calls it -- the same jitted step,
    with its ``grad_norm`` flag (a device bool made once) on for the last step of every
    ``K``-step epoch only, since that is the norm ``fit`` logs."""
    step, ts = make_step(wl, grad_norm=True)
    xs, ys = device_batches(wl, *data)
    flags = (jnp.asarray(False), jnp.asarray(True))
    count = [0]

    def call(f, c, x, y):
        count[0] += 1
        c, ms = f(c, (x, y), grad_norm=flags[count[0] % wl.steps_per_epoch == 0])
        return c, ms["loss"]

    return per_step_runner(step, ts, xs, ys, call=call)


def build_stepscan_entry(wl: Workload, data: tuple[np.ndarray, np.ndarray]) -> Runner:
    """``nnkit-stepscan`` (analysis): nnkit's unjitted train step in a bare ``lax.scan`` over
    the pre-stacked batches, ``K`` steps per call -- the epoch without its shuffle, gather,
    epoch logs and host sync."""
    net = model(wl)
    opt = optim.make("adam", LR)
    step = nnkit.make_train_step(net, "cross_entropy", opt, jit=False)
    k, b = wl.steps_per_epoch, wl.batch
    x, y = data
    xs = jax.device_put(x.reshape(k, b, *x.shape[1:]))
    ys = jax.device_put(y.reshape(k, b))
    run_k = jax.jit(lambda ts, xs, ys: lax.scan(step, ts, (xs, ys)), donate_argnums=(0,))
    box: dict[str, Any] = {"ts": nnkit.create_train_state(net, wl.input_shape, opt, 0),
                           "ms": None}

    def run(n: int) -> None:
        ts, ms = box["ts"], None
        for _ in range(n):
            ts, ms = run_k(ts, xs, ys)
        jax.block_until_ready(ts)
        box["ts"], box["ms"] = ts, ms

    return Runner(run, k, loss=lambda: float(box["ms"]["loss"][-1]),
                  cache_size=run_k._cache_size)


def build_epoch_entry(
    wl: Workload,
    data: tuple[np.ndarray, np.ndarray],
    *,
    conv_impl: str = "auto",
    data_parallel: bool = False,
) -> Runner:
    """The ``nnkit-epoch`` entry: the compiled epoch of ``fit(mode="scan")``, ``K`` steps;
    with ``data_parallel``, ``nnkit-epoch-dp`` (:class:`Skip` on one device).

    The last epoch of each ``run(n)`` is not queued ahead, as ``fit``'s last epoch."""
    dp = parallel.DataParallel.create() if data_parallel else None
    if dp is not None and dp.num_devices < 2:
        raise Skip("one device: nothing to split the batch over")
    net = model(wl, conv_impl=conv_impl)
    opt = optim.make("adam", LR)
    loss_fn = resolve_loss("cross_entropy")
    metric_fns = resolve_metrics(("accuracy",))
    cf = compiled_fit_fns(net, loss_fn, metric_fns, opt, "batch", 1, 0.0, 0.0, None, wl.n,
                          wl.batch, None, 1024, None, None, True, dp)
    ts = nnkit.create_train_state(net, wl.input_shape, opt, 0)
    if dp is None:
        x, y = jax.device_put(data)
    else:
        ts = dp.place_state(ts)
        x, y = dp.shard_dataset(*data)
    box: dict[str, Any] = {"ts": ts, "epoch": 0, "logs": None}
    words = key_words(box["ts"].key)
    go = jnp.asarray(True)

    def dispatch(ts, e, go):
        return cf.epoch(ts, np.int32(e), epoch_order(words, e, wl.n, wl.batch), x, y, None,
                        None, go)

    def run(n: int) -> None:
        ts, e = box["ts"], box["epoch"]
        out = dispatch(ts, e, go)
        for i in range(n):
            ts, packed, flag = out
            if i + 1 < n:  # queue the next epoch before reading this one's logs
                out = dispatch(ts, e + 1, flag)
            box["logs"] = np.asarray(jax.device_get(packed))  # one transfer per epoch
            e += 1
        jax.block_until_ready(ts)
        box["ts"], box["epoch"] = ts, e

    def loss() -> float:
        return float(box["logs"][cf.names.index("train_loss")])

    return Runner(run, wl.steps_per_epoch, loss=loss, cache_size=cf.epoch._cache_size)
