"""Logic gates: what one perceptron can learn, and why XOR needs a hidden layer.

A perceptron ``p = sigmoid(w . x + b)`` (``nnkit.models.perceptron(activation="sigmoid")``)
is trained with binary cross entropy on each 2-input truth table (full batch, Adam) and
classifies with ``p > 0.5``. AND, OR and NAND are linearly separable (100%); XOR is not: a
line gets at most 3 of the 4 points right (<= 75%). A two-layer MLP
``Dense(H) -> tanh -> Dense(1) -> sigmoid`` learns XOR; it is trained from several seeds to
show how often.

The four gates are trained together (``jax.vmap`` over the label sets, one compilation),
and so are the MLP's seeds.

    python -m experiments.e02_logic_gates [--quick] [--out DIR]
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import nnkit
import nnkit.data
import nnkit.models
from experiments.common import out_dir, plt, run_cli, save_results, savefig
from experiments.fullbatch import predict, train_full_batch
from experiments.plane import draw_regions
from nnkit import layers as L
from nnkit import metrics, optim

TITLE = "Logic gates: a perceptron learns AND/OR/NAND but not XOR; an MLP learns XOR"
NAME = "e02_logic_gates"
GATES = ("and", "or", "nand", "xor")


def accuracy_05(p: jax.Array, y: jax.Array) -> jax.Array:
    """Accuracy of probabilities ``p`` (n, 1) thresholded at 0.5 against labels ``y`` (n,)."""
    return metrics.accuracy(p, y, threshold=0.5)


def xor_mlp(hidden: int = 4) -> nnkit.Layer:
    """``Dense(hidden) -> tanh -> Dense(1) -> sigmoid``: probabilities (n, 1)."""
    return nnkit.serial(L.Dense(hidden), L.Tanh(), L.Dense(1), L.Sigmoid())


def _fit_many(model, x, ys, keys, steps: int, lr: float):
    """Full-batch BCE training of ``model`` once per (labels, key) pair, vmapped."""
    opt = optim.make("adam", lr)

    def one(y, key):
        ts, hist = train_full_batch(model, "bce_probs", opt, x, y, steps=steps, key=key,
                                    metrics={"accuracy": accuracy_05})
        return ts, hist["loss"], predict(model, ts, x)

    return jax.jit(jax.vmap(one))(ys, keys)


def _figure(perc, perc_ts, mlp, mlp_ts, x, ys, acc, mlp_acc, losses, mlp_loss, path) -> str:
    fig, axes = plt.subplots(2, 3, figsize=(9.6, 6.4))
    cells = [(axes[0, i], g, i) for i, g in enumerate(GATES[:3])] + [(axes[1, 0], "xor", 3)]
    for ax, gate, i in cells:
        ts_i = jax.tree_util.tree_map(lambda a, i=i: a[i], perc_ts)
        draw_regions(ax, lambda p, t=ts_i: predict(perc, t, p), x, ys[i], 2, point_size=80,
                     title=f"perceptron, {gate.upper()}: accuracy {acc[i]:.0%}")
    ts0 = jax.tree_util.tree_map(lambda a: a[0], mlp_ts)
    draw_regions(axes[1, 1], lambda p: predict(mlp, ts0, p), x, ys[3], 2, point_size=80,
                 title=f"2-layer MLP, XOR (seed 0): accuracy {mlp_acc[0]:.0%}")
    for ax in axes.flat[:5]:
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
    ax = axes[1, 2]
    for i, g in enumerate(GATES):
        ax.plot(losses[i], label=f"perceptron {g.upper()}")
    ax.plot(mlp_loss[0], "k--", label="MLP XOR (seed 0)")
    ax.set_yscale("log")
    ax.set_xlabel("step (full batch)")
    ax.set_ylabel("BCE loss")
    ax.set_title("training loss", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.suptitle("decision regions (shade: predicted class, p > 0.5 = red; dots: targets)",
                 fontsize=10)
    return savefig(fig, path)


def main(out: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Trains the perceptron on the four gates and the MLP on XOR; tabulates accuracies."""
    out = out_dir(NAME, out)
    steps = 20 if quick else 1500
    seeds = 2 if quick else 10
    hidden = 4
    sets = [nnkit.data.load(g) for g in GATES]
    x = jnp.asarray(sets[0].x)
    if not all(np.array_equal(s.x, sets[0].x) for s in sets):
        raise ValueError(f"{NAME}: the gate truth tables list their inputs in different orders")
    ys = jnp.stack([jnp.asarray(s.y) for s in sets])

    perc = nnkit.models.perceptron(1, activation="sigmoid")
    perc_ts, perc_loss, perc_pred = _fit_many(
        perc, x, ys, jax.random.split(jax.random.key(0), len(GATES)), steps, 0.1)
    mlp = xor_mlp(hidden)
    mlp_keys = jax.random.split(jax.random.key(1), seeds)
    mlp_ts, mlp_loss, mlp_pred = _fit_many(
        mlp, x, jnp.broadcast_to(ys[3], (seeds, 4)), mlp_keys, steps, 0.05)

    acc = np.array([float(accuracy_05(perc_pred[i], ys[i])) for i in range(len(GATES))])
    mlp_acc = np.array([float(accuracy_05(mlp_pred[i], ys[3])) for i in range(seeds)])
    final_loss = np.asarray(perc_loss[:, -1])
    fig = _figure(perc, perc_ts, mlp, mlp_ts, np.asarray(x), np.asarray(ys), acc, mlp_acc,
                  np.asarray(perc_loss), np.asarray(mlp_loss),
                  str(out / "decision_regions.png"))

    summary = [
        f"Full-batch Adam, {steps} steps, BCE, class = p > 0.5.",
        "",
        "| gate | perceptron accuracy | final BCE | outputs p on (00, 01, 10, 11) |",
        "|---|---|---|---|",
    ]
    for i, g in enumerate(GATES):
        ps = ", ".join(f"{v:.2f}" for v in np.asarray(perc_pred[i])[:, 0])
        summary.append(f"| {g.upper()} | {acc[i]:.0%} | {final_loss[i]:.3f} | {ps} |")
    solved = int(np.sum(mlp_acc == 1.0))
    summary += [
        "",
        f"2-layer MLP (Dense({hidden}) -> tanh -> Dense(1) -> sigmoid) on XOR: accuracy "
        f"{mlp_acc[0]:.0%} with seed 0 (outputs "
        + ", ".join(f"{v:.2f}" for v in np.asarray(mlp_pred[0])[:, 0])
        + f"); 100% in {solved} of {seeds} seeds (median final BCE "
        f"{np.median(np.asarray(mlp_loss[:, -1])):.4f}).",
    ]
    results = {
        "summary": summary,
        "figures": [fig],
        "metrics": {
            "perceptron_accuracy": dict(zip(GATES, acc.tolist(), strict=True)),
            "perceptron_final_loss": dict(zip(GATES, final_loss.tolist(), strict=True)),
            "mlp_xor_accuracy": float(mlp_acc[0]),
            "mlp_xor_accuracy_per_seed": mlp_acc.tolist(),
            "mlp_xor_seeds_solved": solved,
            "steps": steps,
        },
    }
    return save_results(out, results)


if __name__ == "__main__":
    run_cli(main)
