"""Several devices: data-parallel training on 8 (simulated) CPU devices gives the one-device
curve.

JAX fixes the number of devices when it starts, so the runs happen in a subprocess started
with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (``python -m
experiments.e17_devices --worker EPOCHS OUT.json``). There the same program runs twice: the
digits MLP (64-256-128-10, Adam 1e-3, batch 64, same seed) with the train step wrapped by
:class:`nnkit.parallel.DataParallel` over a mesh of 1 device and over a mesh of all 8
(``make_mesh``): every batch is split along its rows over the mesh axis ``"data"`` (8 rows
per device), the parameters and optimizer state are replicated, and XLA inserts the
all-reduce of the gradients. Each epoch is one jitted ``lax.scan`` and one transfer of its
per-step losses.

The maths is the one-device maths, so the curves agree up to float rounding (sums are
associated differently); the one-device run is also checked against :func:`nnkit.fit`.
8 simulated devices on 2 cores are of course not faster.

    python -m experiments.e17_devices [--quick] [--out DIR]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments.common import ROOT, out_dir, plt, run_cli, save_results, savefig

TITLE = "Several devices: data parallel on 8 simulated CPU devices matches one device"
NAME = "e17_devices"
DEVICES = (1, 8)
HIDDEN = (256, 128)
BATCH = 64
LR = 1e-3


# ----------------------------------------------------------------------------- worker


def train_data_parallel(num_devices: int, epochs: int) -> dict[str, Any]:
    """Runs in a process that sees ``num_devices`` devices. Returns per-step losses, per-epoch
    validation losses, timing, and facts about the placement."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    import nnkit
    import nnkit.data
    import nnkit.models
    from nnkit import optim
    from nnkit.parallel import DataParallel
    from nnkit.train import epoch_order, make_evaluator
    from nnkit.train.order import key_words

    ds = nnkit.data.load("digits")
    train, val = nnkit.data.split(ds.x, ds.y, (0.8, 0.2), seed=0, stratify=True)
    (xtr, xva), _ = nnkit.data.standardize(train[0], val[0])
    ytr, yva = train[1], val[1]
    model, opt = nnkit.models.mlp(HIDDEN, 10), optim.make("adam", LR)
    n = len(ytr)

    dp = DataParallel.create(num_devices)
    local = dp.local_batch_size(BATCH)  # rows per process; raises if BATCH % devices
    step = dp.wrap_step(nnkit.make_train_step(model, "cross_entropy", opt, jit=False))
    evaluate = make_evaluator(model, "cross_entropy", ("accuracy",), len(yva), 1024)

    def epoch(ts, idx, x, y, xv, yv):  # idx: fit's data order of the epoch
        ts, ms = lax.scan(step, ts, (jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0)))
        return ts, ms["loss"], evaluate(ts.params, ts.state, xv, yv)

    run = jax.jit(epoch, donate_argnums=(0,))
    ts = dp.place_state(nnkit.create_train_state(model, xtr.shape[1:], opt, 0))
    x, y, xv, yv = dp.shard_dataset(xtr, ytr, xva, yva)
    words = key_words(ts.key)

    def order(e):
        return dp.replicate(epoch_order(words, e, n, BATCH))

    lowered = run.lower(ts, order(0), x, y, xv, yv)
    hlo = lowered.compile().as_text()
    step_losses, val_loss, val_acc, seconds = [], [], [], []
    for e in range(epochs):
        t0 = time.perf_counter()
        ts, losses, logs = run(ts, order(e), x, y, xv, yv)
        losses, logs = jax.device_get((losses, logs))  # one transfer per epoch
        seconds.append(time.perf_counter() - t0)
        step_losses += np.asarray(losses).tolist()
        val_loss.append(float(logs["loss"]))
        val_acc.append(float(logs["accuracy"]))
    w = ts.params["out"]["w"]
    out = {
        "num_devices": num_devices, "jax_devices": jax.device_count(),
        "platform": jax.devices()[0].platform, "rows_per_device": local // num_devices,
        "param_devices": len(w.sharding.device_set), "all_reduce": "all-reduce" in hlo,
        "step_losses": step_losses, "val_loss": val_loss, "val_accuracy": val_acc,
        "seconds": seconds, "final_out_w": np.asarray(w).ravel()[:256].tolist(),
    }
    if num_devices == 1:  # the same run through nnkit.fit: the reference loop
        res = nnkit.fit(model, opt, (xtr, ytr), val_data=(xva, yva), epochs=epochs,
                        batch_size=BATCH, key=0, progress=False, log_grad_norm=True)
        per_epoch = np.asarray(step_losses).reshape(epochs, -1).mean(axis=1)
        out["fit_train_loss_max_diff"] = float(
            np.max(np.abs(per_epoch - np.asarray(res.history["train_loss"]))))
        out["fit_val_loss_max_diff"] = float(
            np.max(np.abs(np.asarray(val_loss) - np.asarray(res.history["val_loss"]))))
    return out


def worker(epochs: int) -> dict[str, Any]:
    """The subprocess's work: both meshes, after checking the device count took effect."""
    import jax

    if jax.device_count() < max(DEVICES):
        raise RuntimeError(f"the worker sees {jax.device_count()} devices, needs "
                           f"{max(DEVICES)}: XLA_FLAGS was not applied")
    return {str(d): train_data_parallel(d, epochs) for d in DEVICES}


def _spawn(epochs: int, path: Path) -> dict[int, dict[str, Any]]:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(
        flags + [f"--xla_force_host_platform_device_count={max(DEVICES)}"])
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT.parent), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    cmd = [sys.executable, "-m", "experiments.e17_devices", "--worker", str(epochs), str(path)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT.parent, capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"e17 worker failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return {int(k): v for k, v in json.loads(path.read_text()).items()}


# ----------------------------------------------------------------------------- main


def _figure(runs: dict, path: Path) -> str:
    one, many = runs[DEVICES[0]], runs[DEVICES[-1]]
    a, b = np.asarray(one["step_losses"]), np.asarray(many["step_losses"])
    steps = np.arange(1, len(a) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].plot(steps, a, lw=2.5, color="C0", alpha=0.6, label=f"{DEVICES[0]} device")
    axes[0].plot(steps, b, lw=0.8, color="C3", ls="--", label=f"{DEVICES[-1]} devices")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("train step (batch 64)")
    axes[0].set_ylabel("training loss (log)")
    axes[0].legend(fontsize=8)
    axes[0].set_title("per-step training loss", fontsize=9)
    d = np.abs(a - b)
    axes[1].plot(steps, d, ".", ms=3, color="k")
    axes[1].set_xlabel("train step")
    axes[1].set_ylabel("|loss(1 device) - loss(8 devices)|")
    axes[1].set_title(f"difference: max {d.max():.1e} (float32 rounding), "
                      f"{np.mean(d == 0):.0%} of steps bit-identical", fontsize=9, pad=14)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("digits MLP, data parallel over simulated CPU devices: the same curve",
                 fontsize=10)
    return savefig(fig, path)


def main(out: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Runs the 1- and 8-device trainings in a subprocess and compares their curves."""
    out = out_dir(NAME, out)
    epochs = 1 if quick else 15
    runs = _spawn(epochs, out / "worker.json")
    one, many = runs[DEVICES[0]], runs[DEVICES[-1]]
    a, b = np.asarray(one["step_losses"]), np.asarray(many["step_losses"])
    step_diff = float(np.max(np.abs(a - b)))
    val_diff = float(np.max(np.abs(np.asarray(one["val_loss"]) - np.asarray(many["val_loss"]))))
    w_diff = float(np.max(np.abs(np.asarray(one["final_out_w"]) -
                                 np.asarray(many["final_out_w"]))))
    figs = [_figure(runs, out / "devices.png")]

    def ep_time(r):
        s = r["seconds"]
        return float(np.median(s[1:])) if len(s) > 1 else float(s[0])

    summary = [
        f"Digits MLP 64-{HIDDEN[0]}-{HIDDEN[1]}-10, Adam {LR:g}, global batch {BATCH}, "
        f"{epochs} epochs ({len(a)} steps), same seed; run in a subprocess with "
        f"`--xla_force_host_platform_device_count={max(DEVICES)}` "
        f"({one['jax_devices']} devices seen, 2 physical cores).",
        "",
        "| mesh devices | rows per device | params on devices | all-reduce in step | "
        "time / epoch | final val loss | final val acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for d, r in runs.items():
        summary.append(
            f"| {d} | {r['rows_per_device']} | {r['param_devices']} | "
            f"{'yes' if r['all_reduce'] else 'no'} | {1e3 * ep_time(r):.0f} ms | "
            f"{r['val_loss'][-1]:.4f} | {r['val_accuracy'][-1]:.1%} |")
    summary += [
        "",
        f"Max |difference| 1 vs 8 devices: per-step training loss **{step_diff:.1e}**, "
        f"per-epoch validation loss {val_diff:.1e}, final output weights {w_diff:.1e}. "
        f"The one-device run equals `nnkit.fit` (epoch train loss max diff "
        f"{one['fit_train_loss_max_diff']:.1e}, val loss {one['fit_val_loss_max_diff']:.1e}).",
    ]
    results = {
        "summary": summary,
        "figures": figs,
        "metrics": {
            "epochs": epochs, "steps": len(a),
            "max_abs_diff_step_loss": step_diff, "max_abs_diff_val_loss": val_diff,
            "max_abs_diff_out_w": w_diff,
            "fit_train_loss_max_diff": one["fit_train_loss_max_diff"],
            "fit_val_loss_max_diff": one["fit_val_loss_max_diff"],
            "jax_devices": one["jax_devices"],
            "all_reduce": {str(d): r["all_reduce"] for d, r in runs.items()},
            "seconds_per_epoch": {str(d): ep_time(r) for d, r in runs.items()},
            "final_val_accuracy": {str(d): r["val_accuracy"][-1] for d, r in runs.items()},
        },
    }
    return save_results(out, results)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        Path(sys.argv[3]).write_text(json.dumps(worker(int(sys.argv[2]))))
    else:
        run_cli(main)
