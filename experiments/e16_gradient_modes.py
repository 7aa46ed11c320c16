"""Three ways to compute the same minibatch gradient, and what each costs.

For a mean loss ``L = (1/B) sum_i l_i`` the gradient ``g = (1/B) sum_i grad l_i`` can be
computed

* **batch**: one ``jax.value_and_grad`` over the whole batch (activations of all ``B``
  examples alive at once);
* **accumulate**: a ``lax.scan`` over ``m`` micro-batches of ``B/m`` examples, summing their
  gradients (activation memory / ``m``; the same FLOPs in smaller pieces, which may run
  faster or slower than the whole batch depending on the device: measured below);
* **per-example**: ``jax.vmap`` of the gradient over the examples, then the mean (needed for
  per-example clipping / DP-SGD; up to ``B`` copies of the gradient in memory: when only
  the mean is kept, XLA folds it into a Dense layer's weight-gradient matmul).

All three are nnkit train steps (``make_train_step(grad_mode=...)``) on LeNet-5 with a batch
of 256 digits resized to 28x28. Measured: time per train step (median of repeated calls of
the compiled step), and XLA's compiled memory analysis
(``jax.jit(step).lower(...).compile().memory_analysis()``): the temporary buffers (scratch
for activations and gradients) and the arguments. The gradients agree to float rounding.

    python -m experiments.e16_gradient_modes [--quick] [--out DIR]
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import nnkit
import nnkit.data
import nnkit.models
from experiments.common import out_dir, plt, run_cli, save_results, savefig
from nnkit import optim
from nnkit.train.gradients import (
    accumulated_grads,
    batch_grads,
    make_objective,
    per_example_value_and_grads,
    resolve_loss,
)

TITLE = "Computing the gradient: batch vs accumulated micro-batches vs per-example (vmap)"
NAME = "e16_gradient_modes"
MB = 2**20


def modes(quick: bool) -> dict[str, dict[str, Any]]:
    """Label -> ``make_train_step`` keyword arguments."""
    m = {"batch": {"grad_mode": "batch"},
         "accumulate, 4 micro-batches": {"grad_mode": "accumulate", "microbatches": 4},
         "accumulate, 16 micro-batches": {"grad_mode": "accumulate", "microbatches": 16},
         "per-example (vmap)": {"grad_mode": "per_example"}}
    if quick:
        del m["accumulate, 16 micro-batches"]
    return m


def gradient(kw: dict[str, Any], objective, params, state, x, y) -> Any:
    """The mean gradient over the batch by the method ``kw`` describes (for comparison)."""
    if kw["grad_mode"] == "batch":
        return batch_grads(objective, params, state, x, y, None)[0]
    if kw["grad_mode"] == "accumulate":
        return accumulated_grads(objective, params, state, x, y, None, kw["microbatches"])[0]
    g, _ = per_example_value_and_grads(objective, params, state, x, y, None)
    return jax.tree_util.tree_map(lambda a: jnp.mean(a, axis=0), g)


def _memory(compiled) -> dict[str, float]:
    """Sizes from XLA's buffer assignment; ``total = arguments + outputs + temporaries -
    aliased`` (what the step needs at once, an upper bound on its peak)."""
    m = compiled.memory_analysis()
    total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)
    return {"temp_mb": m.temp_size_in_bytes / MB, "argument_mb": m.argument_size_in_bytes / MB,
            "output_mb": m.output_size_in_bytes / MB, "total_mb": total / MB}


def _time(steps: dict[str, Any], ts, batch, reps: int) -> dict[str, float]:
    """Median wall time of one call of each compiled step. The steps take turns (round
    robin) so that a slow spell of the machine hits all of them alike."""
    for f in steps.values():  # warm-up
        jax.block_until_ready(f(ts, batch))
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(reps):
        for k, f in steps.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(ts, batch))
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def _figure(rows: dict, what: str, path: Path) -> str:
    names = list(rows)
    y = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    vals = [1e3 * rows[n]["step_seconds"] for n in names]
    axes[0].barh(y, vals, color="C0")
    axes[0].set_xlabel("time per train step, ms (median)")
    temp = [rows[n]["temp_mb"] for n in names]
    args = [rows[n]["argument_mb"] for n in names]
    axes[1].barh(y, temp, color="C3", label="temporaries (activations, grads)")
    axes[1].barh(y, args, left=temp, color="C7", label="arguments (params, opt state, batch)")
    axes[1].set_xlabel("compiled memory, MiB (XLA memory analysis)")
    axes[1].legend(fontsize=7)
    for ax, v in zip(axes, (vals, [t + a for t, a in zip(temp, args, strict=True)]),
                     strict=True):
        ax.set_yticks(y, names, fontsize=8)
        ax.invert_yaxis()
        ax.grid(alpha=0.3, axis="x")
        for yi, vi in zip(y, v, strict=True):
            ax.text(vi, yi, f" {vi:.1f}", va="center", fontsize=7)
        ax.set_xlim(0, max(v) * 1.2)
    axes[1].set_yticklabels([])
    fig.suptitle(f"{what}: one Adam train step by gradient mode (2 CPU cores)",
                 fontsize=10)
    return savefig(fig, path)


def main(out: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Times and measures each gradient mode; checks the gradients agree."""
    out = out_dir(NAME, out)
    # quick: a small MLP on 8x8 digits (the same code path, a fraction of the compile time)
    batch, reps, size = (32, 3, 8) if quick else (256, 20, 28)
    ds = nnkit.data.load("digits", size=size)
    x, y = jnp.asarray(ds.x[:batch]), jnp.asarray(ds.y[:batch])
    model = nnkit.models.mlp((32,), 10) if quick else nnkit.models.lenet5()
    model_name = "MLP 64-32-10" if quick else "LeNet-5"
    opt = optim.make("adam", 1e-3)
    ts = nnkit.create_train_state(model, x.shape[1:], opt, 0)
    objective = make_objective(model, resolve_loss("cross_entropy"), train=True)
    grads, compiled = {}, {}
    rows: dict[str, dict[str, float]] = {}
    for label, kw in modes(quick).items():
        step = nnkit.make_train_step(model, "cross_entropy", opt, metrics=(), donate=False,
                                     log_grad_norm=False, **kw)
        compiled[label] = step.lower(ts, (x, y)).compile()
        rows[label] = _memory(compiled[label])
        grads[label] = jax.jit(lambda p, s, a, b, kw=kw: gradient(kw, objective, p, s, a, b))(
            ts.params, ts.state, x, y)
    for label, t in _time(compiled, ts, (x, y), reps).items():
        rows[label]["step_seconds"] = t
    ref = grads["batch"]
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(ref))
    for label, g in grads.items():
        diffs = jax.tree_util.tree_map(lambda a, b: jnp.max(jnp.abs(a - b)), g, ref)
        rows[label]["max_abs_diff"] = max(float(d) for d in jax.tree_util.tree_leaves(diffs))
    figs = [_figure(rows, f"{model_name}, batch {batch}", out / "gradient_modes.png")]
    n_params = nnkit.param_count(ts.params)
    summary = [
        f"{model_name} ({n_params:,} parameters), batch {batch} of {size}x{size} digits, Adam "
        f"step, 2 CPU cores; time = median of {reps} calls of the compiled step (modes taking "
        "turns); memory from XLA's buffer assignment, total = arguments + outputs + "
        f"temporaries - aliased. Largest gradient entry {scale:.2g}.",
        "",
        "| gradient | time / step | temporaries | arguments | total | "
        "max abs diff vs batch gradient |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        summary.append(
            f"| {label} | {1e3 * r['step_seconds']:.1f} ms | {r['temp_mb']:.1f} MiB | "
            f"{r['argument_mb']:.2f} MiB | {r['total_mb']:.1f} MiB | {r['max_abs_diff']:.1e} |")
    summary += ["", f"Per-example gradients alone take B x params x 4 bytes = "
                f"{batch * n_params * 4 / MB:.0f} MiB."]
    results = {
        "summary": summary,
        "figures": figs,
        "metrics": {"model": model_name, "batch": batch, "params": n_params,
                    "max_abs_grad": scale,
                    "modes": rows},
    }
    return save_results(out, results)


if __name__ == "__main__":
    run_cli(main)
