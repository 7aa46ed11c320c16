"""Helper for tests/test_parallel.py: runs in a fresh interpreter, prints one JSON line.

The number of CPU devices is fixed when JAX starts, so the parent test sets
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` and runs::

    JAX_PLATFORMS=cpu python tests/_multiprocess_worker.py devices   # N devices, one process
    python tests/_multiprocess_worker.py process ID PORT OUTDIR   # one of 2 processes

It trains a small MLP with a hand-written step (optax Adam, mean-squared error) on the same
synthetic data (a) on one device and (b) data-parallel, and reports losses, parameter
differences, shardings and compile counts. The last stdout line is ``RESULT {json}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import nnkit.parallel as parallel  # the name nnkit.parallel is also a combinator
from nnkit import core
from nnkit.layers import Dense, Relu

IN, OUT, N_ROWS, STEPS, BATCH = 4, 2, 64, 4, 16


def running_mean(name: str = "running_mean") -> core.Layer:
    """Identity layer whose state tracks the mean of its input over the (global) batch."""

    def init(key, input_shape):
        return input_shape, {}, {"mean": jnp.zeros(input_shape[-1:], jnp.float32)}

    def apply(params, state, x, *, key=None, train=False):
        if not train:
            return x, state
        return x, {"mean": 0.5 * state["mean"] + 0.5 * jnp.mean(x, axis=0)}

    return core.layer("running_mean", init, apply, name=name)


def make_model() -> core.Layer:
    return core.serial(Dense(32), Relu(), running_mean(), Dense(OUT))


def make_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_ROWS, IN)).astype(np.float32)
    w = rng.normal(size=(IN, OUT)).astype(np.float32)
    y = np.tanh(x @ w).astype(np.float32)
    return x, y


def make_step(model: core.Layer, opt: optax.GradientTransformation):
    def loss_fn(params, state, x, y):
        pred, new_state = model.apply(params, state, x, train=True)
        return jnp.mean((pred - y) ** 2), new_state

    def step(ts, batch):
        x, y = batch
        (loss, new_state), g = jax.value_and_grad(loss_fn, has_aux=True)(
            ts["params"], ts["state"], x, y
        )
        updates, opt_state = opt.update(g, ts["opt"], ts["params"])
        params = optax.apply_updates(ts["params"], updates)
        return {"params": params, "state": new_state, "opt": opt_state}, {"loss": loss}

    return step


def init_state(model, opt):
    _, params, state = model.init(jax.random.key(0), (IN,))
    return {"params": params, "state": state, "opt": opt.init(params)}


def flat(tree) -> dict[str, np.ndarray]:
    return {
        jax.tree_util.keystr(p): np.asarray(v)
        for p, v in jax.tree_util.tree_leaves_with_path(tree)
    }


def max_diff(a, b) -> float:
    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys(), (fa.keys(), fb.keys())
    return float(max(np.max(np.abs(fa[k] - fb[k])) for k in fa))


def tree_hash(tree) -> str:
    h = hashlib.sha256()
    for k, v in sorted(flat(tree).items()):
        h.update(k.encode())
        h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()


def train(step, ts, batches):
    losses = []
    for b in batches:
        ts, m = step(ts, b)
        losses.append(m["loss"])
    return ts, [float(v) for v in jax.device_get(losses)]


def specs(tree) -> dict[str, str]:
    return {
        jax.tree_util.keystr(p): str(v.sharding.spec)
        for p, v in jax.tree_util.tree_leaves_with_path(tree)
        if isinstance(v.sharding, jax.sharding.NamedSharding)
    }


def fit_path(dps: dict, x, y, epochs: int = 2, unwrapped: bool = False) -> dict:
    """The lines proposed for ``nnkit.train.fit`` (scan mode), on nnkit.train's own pieces.

    Reference: the same compiled epochs on one device. Parallel (for each ``DataParallel`` in
    ``dps``): state placed once, data sets made device-resident with ``shard_dataset``, the
    step wrapped with ``wrap_step``. The epoch is compiled ahead of time once, so feeding
    it its own output state errors if the state's layout drifted. Also reports the shapes of
    the matmuls each device runs (from the compiled HLO); with ``unwrapped``, also for the
    same epoch without ``wrap_step``.
    """
    from nnkit import optim
    from nnkit.train.epoch import make_epoch_fns
    from nnkit.train.order import epoch_order
    from nnkit.train.state import create_train_state
    from nnkit.train.step import make_train_step

    model, opt = make_model(), optim.make("adam", 1e-2)
    n = int(x.shape[0])

    def compiled(dp, wrap=True):
        step = make_train_step(model, "mse", opt, metrics=(), jit=False)
        if dp is not None and wrap:
            step = dp.wrap_step(step)
        epoch = jax.jit(make_epoch_fns(step, n=n, batch_size=BATCH).epoch, donate_argnums=(0,))
        ts = create_train_state(model, (IN,), opt, 0)
        xs, ys = x, y
        if dp is not None:
            ts = dp.place_state(ts)
            xs, ys = dp.shard_dataset(x, y)
        exe = epoch.lower(ts, jnp.int32(0), order(ts, 0, dp), xs, ys, None, None).compile()
        # output shapes of the per-device matmuls, e.g. "2,32" for (rows, features)
        dots = sorted(set(re.findall(r"= f32\[(\d+,\d+)\]\{[^}]*\} dot\(", exe.as_text())))
        return exe, ts, xs, ys, dots

    def order(ts, e, dp):
        idx = epoch_order(ts.key, e, n, BATCH)
        return idx if dp is None else dp.replicate(idx)

    def run(dp):
        exe, ts, xs, ys, dots = compiled(dp)
        losses = []
        for e in range(epochs):
            ts, logs = exe(ts, jnp.int32(e), order(ts, e, dp), xs, ys, None, None)
            losses.append(float(np.asarray(logs["train_loss"])))
        return ts, losses, dots

    ref_ts, ref_losses, _ = run(None)
    out: dict = {"ref_losses": ref_losses}
    for name, dp in dps.items():
        ts, losses, dots = run(dp)
        out[name] = {
            "losses": losses,
            "param_diff": max_diff(dp.gather(ts.params), ref_ts.params),
            "step": int(np.asarray(ts.step)),
            "dots": dots,
        }
    if unwrapped:
        out["dots_unwrapped"] = compiled(next(iter(dps.values())), wrap=False)[-1]
    return out


def run_devices() -> dict:
    """All checks that need N devices in one process."""
    x, y = make_data()
    batches = [(x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH]) for i in
               range(STEPS)]
    model, opt = make_model(), optax.adam(1e-2)
    step = make_step(model, opt)
    res: dict = {"device_count": jax.device_count()}

    ref_state, ref_losses = train(jax.jit(step), init_state(model, opt), batches)
    res["ref_losses"] = ref_losses

    # plain data parallel: replicate state, shard batches, ordinary jit
    dp = parallel.DataParallel(parallel.make_mesh())
    jstep = jax.jit(make_step(model, opt))  # a new function: its own compile cache
    sharded = [dp.shard_batch(b) for b in batches]
    x0 = sharded[0][0]
    res["batch_spec"] = str(x0.sharding.spec)
    res["batch_shard_shapes"] = sorted({tuple(s.data.shape) for s in x0.addressable_shards})
    res["batch_num_shards"] = len(x0.addressable_shards)
    ts, losses = train(jstep, dp.place_state(init_state(model, opt)), sharded)
    res["dp_losses"] = losses
    res["dp_param_diff"] = max_diff(ts["params"], ref_state["params"])
    res["dp_state_diff"] = max_diff(ts["state"], ref_state["state"])
    res["dp_compiles"] = jstep._cache_size()
    res["dp_out_replicated"] = all(
        v.sharding.is_fully_replicated for v in jax.tree.leaves(ts["params"])
    )

    # FSDP over "data" with fixed shardings (jit_step), min_size=0 so every big-enough leaf splits
    fs = parallel.DataParallel(parallel.make_mesh(), fsdp=True, fsdp_min_size=0)
    ts0 = fs.place_state(init_state(model, opt))
    fstep = fs.jit_step(step, ts0)
    ts, losses = train(fstep, ts0, [fs.shard_batch(b) for b in batches])
    res["fsdp_losses"] = losses
    res["fsdp_param_diff"] = max_diff(ts["params"], ref_state["params"])
    res["fsdp_param_specs"] = specs(ts["params"])
    res["fsdp_opt_specs"] = specs(ts["opt"])
    res["fsdp_compiles"] = fstep._cache_size()

    # 2-D mesh (data=4, model=2): batch over "data", params split over "model"
    mp = parallel.DataParallel(
        parallel.make_mesh(model_parallel=2), fsdp=True, fsdp_min_size=0, fsdp_axis="model"
    )
    ts0 = mp.place_state(init_state(model, opt))
    mstep = mp.jit_step(step, ts0)
    ts, losses = train(mstep, ts0, [mp.shard_batch(b) for b in batches])
    res["mesh2d_shape"] = dict(mp.mesh.shape)
    res["mesh2d_losses"] = losses
    res["mesh2d_param_diff"] = max_diff(ts["params"], ref_state["params"])
    res["mesh2d_param_specs"] = specs(ts["params"])

    # a whole epoch as (steps, batch, ...) sharded on axis 1, trained with lax.scan
    ex = np.stack([b[0] for b in batches])
    ey = np.stack([b[1] for b in batches])

    @jax.jit
    def epoch(ts, xs, ys):
        return jax.lax.scan(lambda c, b: step(c, (dp.constrain_batch(b[0]),
                                                  dp.constrain_batch(b[1]))), ts, (xs, ys))

    ts, ms = epoch(dp.place_state(init_state(model, opt)),
                   *dp.shard_batch((ex, ey), batch_axis=1))
    res["scan_losses"] = [float(v) for v in np.asarray(ms["loss"])]
    res["scan_param_diff"] = max_diff(ts["params"], ref_state["params"])

    res["fit"] = fit_path({"dp": dp, "fsdp": fs}, x, y, unwrapped=True)

    # errors
    try:
        dp.shard_batch((x[:12], y[:12]))
        res["indivisible_error"] = None
    except ValueError as e:
        res["indivisible_error"] = str(e)
    try:
        dp.local_batch_size(10)
        res["local_bs_error"] = None
    except ValueError as e:
        res["local_bs_error"] = str(e)
    return res


def run_process(pid: int, port: int, outdir: str) -> dict:
    """One of two OS processes joined by jax.distributed on 127.0.0.1."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    started = parallel.initialize_distributed(
        f"127.0.0.1:{port}", 2, pid,
        coordinator_bind_address=f"127.0.0.1:{port}", initialization_timeout=60,
    )
    res: dict = {
        "started": started, "process_index": jax.process_index(),
        "process_count": jax.process_count(), "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "is_main": parallel.is_main_process(),
    }
    x, y = make_data()  # the full set only for the 1-device reference below
    model, opt = make_model(), optax.adam(1e-2)
    step = make_step(model, opt)
    local_bs = parallel.local_batch_size(BATCH)
    res["local_batch_size"] = local_bs

    # reference: one device of this process, the global batches assembled by hand
    half = N_ROWS // 2
    ref_batches = [
        tuple(np.concatenate([a[i * local_bs : (i + 1) * local_bs],
                              a[half + i * local_bs : half + (i + 1) * local_bs]])
              for a in (x, y))
        for i in range(STEPS)
    ]
    ref_state, ref_losses = train(jax.jit(step), init_state(model, opt), ref_batches)
    res["ref_losses"] = ref_losses

    for mode in ("dp", "fsdp"):
        dp = parallel.DataParallel(parallel.make_mesh(), fsdp=mode == "fsdp", fsdp_min_size=0)
        xl, yl = dp.process_shard(x, y)  # this process's rows only
        ts = dp.place_state(init_state(model, opt))
        jstep = jax.jit(step)
        losses = []
        for i in range(STEPS):
            b = (xl[i * local_bs : (i + 1) * local_bs], yl[i * local_bs : (i + 1) * local_bs])
            ts, m = jstep(ts, dp.shard_batch(b))
            losses.append(m["loss"])
        full = dp.gather(ts["params"])
        res[f"{mode}_losses"] = [float(np.asarray(v)) for v in losses]
        res[f"{mode}_hash"] = tree_hash(full)
        res[f"{mode}_param_diff"] = max_diff(full, ref_state["params"])
        res[f"{mode}_rows"] = int(xl.shape[0])
        res[f"{mode}_first_row"] = [float(v) for v in xl[0]]
        res[f"{mode}_fully_addressable"] = all(
            v.is_fully_addressable for v in jax.tree.leaves(ts["params"])
        )

    # the scanned fit epoch: each process holds half the rows of the global data set
    res["fit"] = fit_path({"dp": parallel.DataParallel(parallel.make_mesh())}, x, y)

    # checkpoint: only process 0 writes, everyone waits, then process 1 reads it back
    path = os.path.join(outdir, "params.npz")
    if parallel.is_main_process():
        np.savez(path, **{k: v for k, v in flat(full).items()})
    parallel.sync_global_devices("checkpoint_written")
    with np.load(path) as f:
        res["ckpt_hash"] = tree_hash({k: f[k] for k in f.files})
    res["ckpt_matches"] = res["ckpt_hash"] == tree_hash(
        {k: v for k, v in flat(full).items()}
    )
    parallel.sync_global_devices("done")
    jax.distributed.shutdown()
    return res


def main(argv: list[str]) -> None:
    if argv[0] == "devices":
        res = run_devices()
    elif argv[0] == "process":
        res = run_process(int(argv[1]), int(argv[2]), argv[3])
    else:
        raise SystemExit(f"unknown mode {argv[0]!r}")
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
