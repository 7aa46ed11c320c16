"""Helper for tests/test_parallel.py: ``nnkit.fit(..., parallel=...)`` against plain ``fit``.

The device count is fixed when JAX starts, so the parent runs this in a fresh interpreter::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/_fit_parallel_worker.py devices
    XLA_FLAGS=...=2 python tests/_fit_parallel_worker.py process ID PORT   # one of 2 processes

It trains the same small classifier (dropout and a batch-statistics state included, so the
per-step keys and the cross-device batch means both matter) in scan and step mode, with
``parallel=DataParallel(make_mesh())`` and (``devices``) without, and prints
``RESULT {json}``: histories, test metrics, parameters, placements, and the error for a batch
size the devices do not divide. ``devices`` also trains with FSDP on 2 of the devices with
every leaf eligible for sharding by size (``fsdp_min_size=1``), compiles an LSTM train step
on the split batch and reports its collectives and its parameters against one device, and
runs the recurrent layers inside ``jax.shard_map`` (outputs and summed gradients against one
device).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np

import nnkit
import nnkit.parallel as par
from nnkit import core, optim
from nnkit.layers import GRU, LSTM, RNN, Bidirectional, Dense, Dropout, Relu
from nnkit.train.order import key_words

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _multiprocess_worker import running_mean  # noqa: E402

N, IN, CLASSES, BATCH, EPOCHS = 96, 4, 3, 16, 2
MODES = ("scan", "step")


def data() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(train, val, test) splits of a 3-class problem: 96 / 20 / 20 rows."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N + 40, IN)).astype(np.float32)
    y = np.argmax(x[:, :CLASSES] + 0.3 * x[:, 1:CLASSES + 1], axis=1).astype(np.int32)
    return (x[:N], y[:N]), (x[N:N + 20], y[N:N + 20]), (x[N + 20:], y[N + 20:])


def run_fit(mode: str, parallel: par.DataParallel | None) -> dict:
    """One ``fit`` (2 epochs, batch 16) -> JSON-friendly summary."""
    model = core.serial(Dense(16), Relu(), running_mean(), Dropout(0.2), Dense(CLASSES))
    train, val, test = data()
    r = nnkit.fit(model, optim.make("adam", 0.05), train, val_data=val, test_data=test,
                  epochs=EPOCHS, batch_size=BATCH, key=3, mode=mode, progress=False,
                  parallel=parallel)
    ts = r.train_state
    w = ts.params["dense_0"]["w"]
    return {
        "history": {k: v for k, v in r.history.items() if k != "seconds"},
        "test": r.test_metrics,
        "leaves": [np.asarray(a).tolist() for a in jax.tree.leaves(jax.device_get(
            (ts.params, ts.state)))],
        "step": int(ts.step),
        "param_devices": len(w.sharding.device_set),
        "param_replicated": bool(w.sharding.is_fully_replicated),
        "key_replicated": bool(getattr(ts.key, "sharding", None) is None
                               or ts.key.sharding.is_fully_replicated),
    }


def run_lstm(dp: par.DataParallel) -> dict:
    """One LSTM train step (T=6, batch 16 split over the mesh): the collectives XLA compiles
    for it, and how far its parameters land from the same step on one device."""
    model = core.serial(LSTM(8, return_sequences=False), Dense(CLASSES))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(BATCH, 6, IN)).astype(np.float32)
    y = rng.integers(0, CLASSES, BATCH).astype(np.int32)
    opt = optim.make("sgd", 0.5)
    step = nnkit.make_train_step(model, "cross_entropy", opt, jit=False)
    ts = nnkit.create_train_state(model, (6, IN), opt, 0)
    ref, got, hlo = _split_step(dp, step, ts, (x, y))
    return {
        "all_gathers": hlo.count("all-gather("), "all_reduces": hlo.count("all-reduce("),
        "param_diff": _max_diff(got.params, ref.params),
        "param_moved": _max_diff(ref.params, ts.params),
    }


def _split_step(dp: par.DataParallel, step, ts, batch) -> tuple:
    """``step`` once on one device and once on the mesh's split batch: the two new states
    and the compiled split step's HLO text."""
    ref = jax.jit(step)(ts, batch)[0]
    placed = dp.place_state(ts)
    split = dp.jit_step(step, placed)
    sharded = dp.shard_batch(batch)
    hlo = split.lower(placed, sharded).compile().as_text()
    return ref, split(placed, sharded)[0], hlo


def _max_diff(a, b) -> float:
    """The largest absolute difference between two trees' leaves."""
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def run_accumulate(dp: par.DataParallel) -> dict:
    """One ``grad_mode="accumulate"`` step (batch 32 in 2 microbatches of 16, split over the
    mesh): the rows of the first layer's products in the compiled step, its collectives and
    its parameters against the same step on one device."""
    import re

    model = core.serial(Dense(16), Relu(), Dense(CLASSES))
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2 * BATCH, IN)).astype(np.float32)
    y = rng.integers(0, CLASSES, 2 * BATCH).astype(np.int32)
    opt = optim.make("sgd", 0.5)
    step = nnkit.make_train_step(model, "cross_entropy", opt, grad_mode="accumulate",
                                 microbatches=2, jit=False)
    ts = nnkit.create_train_state(model, (IN,), opt, 0)
    ref, got, hlo = _split_step(dp, step, ts, (x, y))
    return {
        "dot_rows": sorted({int(m) for m in re.findall(r"f32\[(\d+),16\]\S* dot\(", hlo)}),
        "all_gathers": hlo.count("all-gather("), "all_reduces": hlo.count("all-reduce("),
        "param_diff": _max_diff(got.params, ref.params),
    }


def run_evaluate(dp: par.DataParallel) -> dict:
    """The evaluator ``fit`` uses for validation and test data, on a replicated set of 76
    rows in batches of 32 (2 full batches and a remainder of 12, which 8 devices do not
    divide): the rows of the hidden layer's products, the collectives, and the metrics
    against the same evaluator on one device."""
    import re

    from nnkit.train.step import jitted_evaluator

    model = core.serial(Dense(16), Relu(), Dense(CLASSES))
    _, params, state = model.init(jax.random.key(0), (IN,))
    rng = np.random.default_rng(5)
    x = rng.normal(size=(76, IN)).astype(np.float32)
    y = rng.integers(0, CLASSES, 76).astype(np.int32)
    metrics = ("accuracy", "macro_f1")
    ref = jitted_evaluator(model, "cross_entropy", metrics, 76, 32)(params, state, x, y)
    ev = jitted_evaluator(model, "cross_entropy", metrics, 76, 32, dp)
    args = dp.replicate((params, state, x, y))
    hlo = ev.lower(*args).compile().as_text()
    got = ev(*args)
    return {
        "dot_rows": sorted({int(m) for m in re.findall(r"f32\[(\d+),16\]\S* dot\(", hlo)}),
        "all_reduces": hlo.count("all-reduce("),
        "ref": {k: float(v) for k, v in ref.items()},
        "got": {k: float(v) for k, v in got.items()},
    }


def run_recurrent_shard_map(dp: par.DataParallel) -> dict:
    """Each recurrent layer applied per device inside ``jax.shard_map`` (its zero initial
    carry must be typed to vary like the per-device rows): the largest differences of the
    outputs and of the gradients (summed over the devices) from one device, or the error."""
    from jax.sharding import PartitionSpec as P

    mesh, axis = dp.mesh, par.DATA_AXIS
    rng = np.random.default_rng(2)
    x = rng.normal(size=(BATCH, 5, IN)).astype(np.float32)
    out: dict = {}
    for name, seq in (("lstm", LSTM(6)), ("lstm_last", LSTM(6, return_sequences=False)),
                      ("gru", GRU(6)), ("rnn", RNN(6)), ("bi_lstm", Bidirectional(LSTM(6)))):
        model = core.serial(seq, Dense(CLASSES))
        _, params, state = model.init(jax.random.key(0), (5, IN))

        def loss(p, xb, model=model, state=state):
            return jax.numpy.sum(model.apply(p, state, xb)[0] ** 2)

        def per_device(p, xb, model=model, state=state, loss=loss):
            # p is invariant over the mesh: its gradient is already summed over the devices
            return model.apply(p, state, xb)[0], jax.grad(loss)(p, xb)

        try:
            f = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(axis)),
                                      out_specs=(P(axis), P())))
            y, g = f(params, dp.shard_batch(x))
        except Exception as e:  # noqa: BLE001 - reported to the parent test
            out[name] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
            continue
        y_ref = model.apply(params, state, x)[0]
        g_ref = jax.grad(loss)(params, x)
        out[name] = {
            "out_diff": float(np.max(np.abs(np.asarray(y) - np.asarray(y_ref)))),
            "grad_diff": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                             for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref),
                                             strict=True)),
            "grad_size": max(float(np.max(np.abs(np.asarray(b))))
                             for b in jax.tree.leaves(g_ref)),
        }
    return out


def run_devices() -> dict:
    dp = par.DataParallel(par.make_mesh())
    res: dict = {"device_count": jax.device_count(), "mesh_devices": dp.num_devices,
                 "lstm": run_lstm(dp), "accumulate": run_accumulate(dp),
                 "evaluate": run_evaluate(dp),
                 "shard_map": run_recurrent_shard_map(dp)}
    for mode in MODES:
        res[mode] = {"ref": run_fit(mode, None), "dp": run_fit(mode, dp)}
    # FSDP on 2 devices with every leaf eligible by size: the 2-word train key would split
    # in two (and with it the data order); it must stay whole (replicated)
    fsdp2 = par.DataParallel(par.make_mesh(2), fsdp=True, fsdp_min_size=1)
    placed = fsdp2.place_state(nnkit.create_train_state(
        core.serial(Dense(CLASSES)), (IN,), optim.make("adam", 0.1), 3))
    res["fsdp_tiny_leaves"] = {
        "key_spec": str(placed.key.sharding.spec),
        "count_spec": str(jax.tree.leaves(placed.opt_state)[0].sharding.spec),
        "w_spec": str(placed.params["dense_0"]["w"].sharding.spec),
        "runs": {mode: run_fit(mode, fsdp2) for mode in MODES},
    }
    # a key someone did split: key_words reads all of it, not one shard
    whole = jax.device_get(placed.key)
    split = jax.device_put(whole, par.data_sharding(fsdp2.mesh))
    res["fsdp_tiny_leaves"]["split_key_words"] = [
        len(split.sharding.device_set), list(key_words(split)) == list(key_words(whole))]
    try:
        model = core.serial(Dense(CLASSES))
        nnkit.fit(model, "sgd", data()[0], epochs=1, batch_size=12, progress=False,
                  parallel=dp)
        res["indivisible_error"] = None
    except ValueError as e:
        res["indivisible_error"] = str(e)
    return res


def run_process(pid: int, port: int) -> dict:
    par.initialize_distributed(f"127.0.0.1:{port}", 2, pid)
    dp = par.DataParallel(par.make_mesh())
    res: dict = {"process_index": jax.process_index(), "device_count": jax.device_count(),
                 "local_device_count": jax.local_device_count()}
    for mode in MODES:
        res[mode] = run_fit(mode, dp)
    par.sync_global_devices("done")
    jax.distributed.shutdown()
    return res


if __name__ == "__main__":
    argv = sys.argv[1:]
    out = run_devices() if argv[0] == "devices" else run_process(int(argv[1]), int(argv[2]))
    print("RESULT " + json.dumps(out), flush=True)
