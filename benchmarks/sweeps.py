"""W4: eight models with eight learning rates, trained together.

Entries (rates are *model*-steps/s, so a ratio of 1.0 means "as fast per model as one
hand-written per-step model"):

* ``jax``: one hand-written model, per step (the reference);
* ``nnkit-epoch``: one model, nnkit's compiled epoch (as in ``fit(mode="scan")``);
* ``nnkit-sweep8``: nnkit's sweep program (:func:`nnkit.train.sweep.sweep_program`, what
  :func:`nnkit.sweep` runs, :data:`EPOCHS_PER_CALL` epochs per call): the epoch of
  :mod:`nnkit.train.epoch` over a leading model axis
  (``vectorize="auto"``: ``vmap`` for small models, ``lax.map`` for large ones), each model
  with its learning rate injected in its optimizer state, the data shuffled once for all
  (one seed), jitted with the states donated, one host transfer of the logs at the end; the
  models spread over the process's devices (``devices="auto"``; the benchmark runs with one
  JAX CPU device per core);
* ``nnkit-sweep8-1dev``: the same on one device;
* ``nnkit-sweep8-vmap`` / ``nnkit-sweep8-map``: ``nnkit-sweep8`` with ``vectorize`` forced;
* ``jax-vmap8``: hand-written, ``vmap`` of the step over 8 models, per step, one device;
* ``jax-vmap8-scan``: the same, ``K`` steps in one ``lax.scan``;
* ``jax-vmap8-scan-devices``: ``jax-vmap8-scan`` with the model axis sharded over all
  devices (the hand-written counterpart of ``nnkit-sweep8``).

"8 models in <= 2x the time of one" compares ``nnkit-sweep8``'s epoch with ``nnkit-epoch``'s.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh

from benchmarks import handwritten, nnkit_entries, workloads
from benchmarks.harness import Entry, Runner, per_step_runner, scanned_runner
from benchmarks.workloads import Workload
from nnkit import parallel as par
from nnkit.train.sweep import sweep_program

__all__ = ["LEARNING_RATES", "EPOCHS_PER_CALL", "build_nnkit_sweep", "build_jax_vmap",
           "make_sweep_entries", "SWEEP_ENTRIES", "sweep_workload"]

LEARNING_RATES = tuple(float(v) for v in np.geomspace(1e-4, 1e-2, 8))
"""The eight learning rates of the sweep."""


def sweep_workload(name: str) -> Workload:
    """The base workload of a W4 sweep: W3 as is (100 steps per epoch); W1 with 10 steps per
    epoch, so that one epoch of 8 compute-bound models stays under a second."""
    wl = workloads.get(name)
    return dataclasses.replace(wl, steps_per_epoch=10) if name == "W1" else wl


EPOCHS_PER_CALL = 20
"""Epochs per call of the sweep program in ``nnkit-sweep8``: :func:`nnkit.sweep` runs all
of a sweep's epochs in one call (up to a cap on the size of their data orders); the timed
windows hold any number of epochs, so the benchmark runs them as a 20-epoch sweep does,
20 per call, the last call padded with skipped epochs."""


def build_nnkit_sweep(
    wl: Workload, data: tuple[np.ndarray, np.ndarray], lrs=LEARNING_RATES,
    vectorize: str = "auto", devices: Any = "auto",
) -> Runner:
    """``nnkit-sweep8``: the compiled epochs of :func:`nnkit.sweep` for the 8 learning rates
    (seed 0 for all), from :func:`nnkit.train.sweep.sweep_program` -- the program ``sweep``
    itself runs -- called as ``sweep`` calls it: :data:`EPOCHS_PER_CALL` epochs per call
    (their data orders drawn on the host), each call queued without waiting for the
    previous one, the logs of all epochs read in one transfer at the end."""
    prog = sweep_program(nnkit_entries.model(wl), "adam", data, learning_rates=list(lrs),
                         batch_size=wl.batch, input_shape=wl.input_shape,
                         vectorize=vectorize, devices=devices)
    x, y = prog.data
    box: dict[str, Any] = {"ts": prog.train_states, "live": prog.live, "epoch": 0,
                           "logs": None}
    k = EPOCHS_PER_CALL

    def run(n: int) -> None:
        ts, live, e, pending = box["ts"], box["live"], box["epoch"], []
        count = 0
        while n > 0:
            count = min(k, n)
            ts, live, logs = prog.epochs(ts, live, np.int32(e), np.int32(count),
                                         prog.orders(e, count, k), x, y, None, None)
            pending.append(logs)
            e, n = e + count, n - count
        box["logs"] = np.asarray(jax.device_get(pending))[-1, count - 1]  # (models, keys)
        jax.block_until_ready(ts)
        box["ts"], box["live"], box["epoch"] = ts, live, e

    def loss() -> float:
        return float(np.mean(box["logs"][:, prog.names.index("train_loss")]))

    return Runner(run, wl.steps_per_epoch, loss=loss, cache_size=prog.epochs._cache_size,
                  models=len(lrs))


def _vmapped_step(wl: Workload, fwd: handwritten.Forward | None = None,
                  ce: handwritten.CrossEntropy | None = None):
    opt = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)

    def one(carry, x, y):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(
            lambda p: handwritten.loss_fn(wl, p, x, y, fwd, ce))(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return opt, jax.vmap(one, in_axes=(0, None, None))


def _stacked_carry(wl: Workload, opt, lrs) -> Any:
    params = handwritten.init_params(wl, jax.random.key(0))
    carries = []
    for lr in lrs:
        os_ = opt.init(params)
        os_.hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
        carries.append((params, os_))
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *carries)


def build_jax_vmap(
    wl: Workload, data: tuple[np.ndarray, np.ndarray], lrs=LEARNING_RATES, *,
    scan: bool = False, sharded: bool = False, fwd: handwritten.Forward | None = None,
    ce: handwritten.CrossEntropy | None = None,
) -> Runner:
    """``jax-vmap8`` (per step) or ``jax-vmap8-scan`` (``K`` steps per call); ``sharded``:
    the model axis of the carry over all devices, the data replicated; ``fwd``: the
    forward pass (default :func:`handwritten.forward`); ``ce``: the per-example
    cross-entropy (default optax's)."""
    opt, vstep = _vmapped_step(wl, fwd, ce)
    carry = _stacked_carry(wl, opt, lrs)
    put = jax.device_put
    if sharded:
        mesh = Mesh(np.array(jax.devices()), ("models",))
        carry = jax.device_put(carry, par.data_sharding(mesh))
        put = functools.partial(jax.device_put, device=par.replicated(mesh))
    if not scan:
        runner = per_step_runner(jax.jit(vstep, donate_argnums=(0,)), carry,
                                 *handwritten.device_batches(wl, *data))
        runner.models = len(lrs)
        return runner
    k, b = wl.steps_per_epoch, wl.batch
    x, y = data
    xs = put(x.reshape(k, b, *x.shape[1:]))
    ys = put(y.reshape(k, b))
    run_k = jax.jit(lambda c, xs, ys: lax.scan(lambda c, bt: vstep(c, *bt), c, (xs, ys)),
                    donate_argnums=(0,))
    return scanned_runner(run_k, carry, xs, ys, models=len(lrs))


SWEEP_ENTRIES: dict[str, tuple[str, Any]] = {
    "jax": ("hand-written, 1 model, per step", handwritten.build_step_entry),
    "nnkit-epoch": ("nnkit epoch-in-scan, 1 model", nnkit_entries.build_epoch_entry),
    "nnkit-sweep8": ("nnkit sweep: one compiled program, 8 models, over all devices",
                     build_nnkit_sweep),
    "nnkit-sweep8-1dev": ("nnkit sweep on one device",
                          lambda wl, d: build_nnkit_sweep(wl, d, devices=jax.devices()[:1])),
    "nnkit-sweep8-vmap": ("nnkit sweep, vectorize='vmap'",
                          lambda wl, d: build_nnkit_sweep(wl, d, vectorize="vmap")),
    "nnkit-sweep8-map": ("nnkit sweep, vectorize='map'",
                         lambda wl, d: build_nnkit_sweep(wl, d, vectorize="map")),
    "jax-vmap8": ("hand-written vmap, 8 models, per step", build_jax_vmap),
    "jax-vmap8-scan": ("hand-written vmap + scan, 8 models",
                       lambda wl, d: build_jax_vmap(wl, d, scan=True)),
    "jax-vmap8-scan-devices": ("hand-written vmap + scan, models over all devices",
                               lambda wl, d: build_jax_vmap(wl, d, scan=True, sharded=True)),
}


def make_sweep_entries(wl: Workload, data: tuple[np.ndarray, np.ndarray]) -> list[Entry]:
    """The W4 entries on base workload ``wl`` (W1 or W3)."""
    return [Entry(k, label, lambda w, b=b: b(w, data))
            for k, (label, b) in SWEEP_ENTRIES.items()]
