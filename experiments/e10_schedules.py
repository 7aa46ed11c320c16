"""Learning-rate schedules: constant, step decay, cyclic, SGDR and reduce-on-plateau.

The same MLP ``784 -> 128 -> ReLU -> 10`` on 12,000 Fashion-MNIST training images (80/20
train/val, the official test set; the 8x8 digits instead if Fashion-MNIST is not installed,
and in quick mode), trained for 21 epochs with SGD + momentum 0.9 from the same init and
batch order, with the learning rate following (``t`` = step, peak ``lr``):

* constant ``lr``;
* step decay ``lr * 0.1^k`` after the k-th boundary (at 50% and 75% of training);
* cyclic (triangular, Smith 2017) between ``lr/20`` and ``lr``, a cycle every 7 epochs;
* SGDR (cosine with warm restarts): cycles of 3, 6, 12 epochs, ``lr -> 0`` in each;
* reduce-on-plateau: ``lr`` times 0.2 whenever the validation loss has not improved for
  2 epochs (``nnkit.optim.Plateau``, applied between epochs).

Schedules are ``nnkit.optim.schedule`` functions given to ``nnkit.optim.make``; the
learning rate the optimizer actually used is read back from the training history (dots on
the schedule curves).

A constant rate at the schedules' peak is not a fair baseline: a peak that a schedule soon
leaves can be too large to hold. So the constant rate is also tuned: a grid of constant
rates trained as one ``nnkit.sweep`` program, the one with the lowest validation loss then
trained and tested like the others ("constant, tuned"). The schedules' peak is not tuned.

    python -m experiments.e10_schedules [--quick] [--out DIR]
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import nnkit
import nnkit.models
from experiments.common import out_dir, plt, run_cli, save_results, savefig
from experiments.opt_data import digits_splits, fashion_splits
from nnkit import optim

TITLE = "Learning-rate schedules: constant, step, cyclic, SGDR, reduce-on-plateau"
NAME = "e10_schedules"
LR = 0.05
CONSTANT_GRID = (0.05, 0.02, 0.01, 0.005)


def schedules(steps_per_epoch: int, epochs: int) -> dict[str, Any]:
    """``{label: (learning rate or schedule, Plateau or None)}`` for a run of ``epochs``
    (the cycle lengths fit 21 epochs: 3 triangles of 7, SGDR cycles of 3 + 6 + 12)."""
    total = steps_per_epoch * epochs
    e = steps_per_epoch
    return {
        "constant at the peak": (LR, None),
        "step (x0.1 at 50%, 75%)": (optim.schedule(
            "step", learning_rate=LR, boundaries=[total // 2, 3 * total // 4], factor=0.1),
            None),
        "cyclic (triangular, 7 epochs)": (optim.schedule(
            "cyclic", base_lr=LR / 20, max_lr=LR, step_size=max(1, 7 * e // 2)), None),
        "SGDR (3, 6, 12 epochs)": (optim.schedule(
            "sgdr", learning_rate=LR, period=max(1, 3 * e), t_mult=2.0), None),
        "reduce on plateau (x0.2)": (LR, optim.Plateau(monitor="val_loss", patience=2,
                                                       factor=0.2)),
    }


def load_data(quick: bool) -> tuple[str, Any]:
    """``(name, (train, val, test))``: Fashion-MNIST if installed (not in quick mode), else
    the 8x8 digits."""
    if not quick:
        try:
            return "Fashion-MNIST (12,000 images: 9,600 train / 2,400 val; 10,000 test)", \
                fashion_splits(12000)
        except FileNotFoundError as e:
            print(f"{NAME}: Fashion-MNIST not available ({e}); using the 8x8 digits")
    return "8x8 digits (70/15/15)", digits_splits()


def _figure(runs: dict, spe: int, epochs: int, path: str) -> str:
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(13, 3.9))
    t = np.arange(spe * epochs)
    for label, (lr, res) in runs.items():
        h = res.history
        ep_end = (np.asarray(h["epoch"]) + 1) * spe - 1  # step of each epoch's last update
        if callable(lr):
            rate = np.asarray(jax.vmap(lr)(jnp.asarray(t)))  # schedules take a scalar step
            line, = ax0.plot(t / spe, rate, lw=1.2, label=label)
            ax0.plot(ep_end / spe, h["lr"], ".", color=line.get_color(), ms=4)
        else:
            xs = np.concatenate([[0.0], ep_end / spe])  # the rate holds over each epoch
            ys = np.concatenate([h["lr"][:1], h["lr"]])
            line, = ax0.step(xs, ys, where="pre", lw=1.2, marker=".", ms=4, label=label)
        done = np.asarray(h["epoch"]) + 1
        ax1.semilogy(done, h["train_loss"], color=line.get_color(), label=label)
        ax1.semilogy(done, h["val_loss"], "--", color=line.get_color(), lw=0.9)
    ax0.set_yscale("log")
    ax0.set_xlabel("epochs completed")
    ax0.set_ylabel("learning rate (log)")
    ax0.set_title("learning rate (lines: schedule; dots: rate used, read from the history)",
                  fontsize=9)
    ax0.grid(alpha=0.3)
    ax1.set_xlabel("epochs completed")
    ax1.set_ylabel("cross entropy")
    ax1.set_title("training loss (solid) and validation loss (dashed)", fontsize=9)
    ax1.grid(alpha=0.3, which="both")
    ax1.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    return savefig(fig, path)


def main(out: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Trains once per schedule; plots the rates and losses, tabulates the results."""
    out = out_dir(NAME, out)
    epochs = 2 if quick else 21
    batch = 64
    data_name, (train, val, test) = load_data(quick)
    spe = len(train[0]) // batch
    model = nnkit.models.mlp((128,), 10)
    chosen = schedules(spe, epochs)
    if quick:
        chosen = {k: v for k, v in chosen.items() if k.startswith(("step", "reduce"))}
    grid = CONSTANT_GRID[:2] if quick else CONSTANT_GRID
    swept = nnkit.sweep(model, "momentum", train, learning_rates=list(grid), seeds=[0],
                        val_data=val, epochs=epochs, batch_size=batch)
    best_val = [float(np.nanmin(h["val_loss"])) for h in swept.histories]
    tuned = grid[int(np.argmin(best_val))]
    chosen = {**chosen, f"constant, tuned (lr {tuned:g})": (tuned, None)}
    runs = {}
    for label, (lr, plateau) in chosen.items():
        res = nnkit.fit(model, optim.make("momentum", lr), train, val_data=val,
                        test_data=test, epochs=epochs, batch_size=batch, key=0,
                        plateau=plateau, progress=False)
        runs[label] = (lr, res)
    fig = _figure(runs, spe, epochs, str(out / "schedules.png"))

    summary = [
        f"{data_name}; MLP {train[0].shape[1]}-128-10; SGD + momentum 0.9, peak lr {LR:g}, "
        f"batch {batch} ({spe} steps/epoch), {epochs} epochs, same init and batch order "
        "for all. Constant rate tuned on the validation set: "
        + ", ".join(f"lr {g:g}: best val loss {v:.4f}" for g, v in zip(grid, best_val,
                                                                      strict=True))
        + f" -> {tuned:g}.",
        "",
        "| schedule | final lr | final train loss | best val loss | final val loss "
        "| test accuracy |",
        "|---|---|---|---|---|---|",
    ]
    table = {}
    for label, (_, res) in runs.items():
        h = res.history
        table[label] = {"final_lr": h["lr"][-1], "train_loss": h["train_loss"][-1],
                        "best_val_loss": float(np.min(h["val_loss"])),
                        "val_loss": h["val_loss"][-1],
                        "test_accuracy": res.test_metrics["test_accuracy"]}
        r = table[label]
        summary.append(f"| {label} | {r['final_lr']:.2g} | {r['train_loss']:.4f} | "
                       f"{r['best_val_loss']:.4f} | {r['val_loss']:.4f} | "
                       f"{r['test_accuracy']:.1%} |")
    results = {"summary": summary, "figures": [fig],
               "metrics": {"schedules": table, "epochs": epochs, "peak_lr": LR,
                           "constant_grid_best_val_loss": dict(zip(map(str, grid), best_val,
                                                                   strict=True)),
                           "constant_tuned_lr": tuned,
                           "data": data_name}}
    return save_results(out, results)


if __name__ == "__main__":
    run_cli(main)
