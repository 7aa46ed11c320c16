"""Minibatch size: small batches take many noisy steps per epoch, large ones few smooth steps.

The digits MLP (64-256-128-10, Adam 1e-3, same seed, same number of epochs) is trained with
batches of 8, 32, 128 and 512 examples. Per epoch, batch ``B`` makes ``n // B`` updates: the
small batches learn more per epoch but each epoch costs more wall time (a step has a fixed
cost, and a tiny matrix product uses the cores poorly); the large batches run through an
epoch fast but need many more epochs. Time per epoch is measured (median of
``history["seconds"]`` after the first, compiling, epoch), on 2 CPU cores.

    python -m experiments.e14_batch_size [--quick] [--out DIR]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

import nnkit
import nnkit.data
import nnkit.models
from experiments.common import out_dir, plt, run_cli, save_results, savefig
from nnkit import optim

TITLE = "Batch size: validation loss per epoch and measured time per epoch for B = 8 ... 512"
NAME = "e14_batch_size"
BATCHES = (8, 32, 128, 512)
HIDDEN = (256, 128)
LR = 1e-3


def _data() -> tuple:
    ds = nnkit.data.load("digits")
    train, val, test = nnkit.data.split(ds.x, ds.y, (0.8, 0.1, 0.1), seed=0, stratify=True)
    (xtr, xva, xte), _ = nnkit.data.standardize(train[0], val[0], test[0])
    return (xtr, train[1]), (xva, val[1]), (xte, test[1])


def _train(batch: int, data: tuple, epochs: int) -> dict[str, Any]:
    train, val, test = data
    res = nnkit.fit(nnkit.models.mlp(HIDDEN, 10), optim.make("adam", LR), train, val_data=val,
                    test_data=test, epochs=epochs, batch_size=batch, key=0, progress=False)
    secs = np.asarray(res.history["seconds"])
    per_epoch = float(np.median(secs[1:])) if len(secs) > 1 else float(secs[0])
    steps = len(train[1]) // batch
    return {"history": res.history, "epoch_seconds": per_epoch, "steps_per_epoch": steps,
            "step_ms": 1e3 * per_epoch / steps, "test_accuracy": res.test_metrics["test_accuracy"],
            "best_val_accuracy": float(np.max(res.history["val_accuracy"])),
            "final_val_loss": float(res.history["val_loss"][-1])}


def _figure(runs: dict, path: Path) -> str:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for i, (b, r) in enumerate(runs.items()):
        h, c = r["history"], f"C{i}"
        ep = np.asarray(h["epoch"]) + 1
        axes[0].plot(ep, h["val_loss"], color=c, label=f"B={b}")
        axes[1].plot(ep * r["steps_per_epoch"], h["val_loss"], color=c, label=f"B={b}")
        # wall time with the first (compiling) epoch counted at the median epoch time
        t = np.cumsum(np.r_[r["epoch_seconds"], np.asarray(h["seconds"][1:])])
        axes[2].plot(t, h["val_loss"], color=c, label=f"B={b}")
    axes[0].set_xlabel("epoch")
    axes[1].set_xlabel("optimizer steps (log)")
    axes[1].set_xscale("log")
    axes[2].set_xlabel("training wall time, s (compilation excluded)")
    for ax in axes:
        ax.set_ylabel("validation loss (log)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("digits MLP, Adam 1e-3, same epochs: validation loss per epoch, per step and "
                 "per second of training for each minibatch size",
                 fontsize=10)
    return savefig(fig, path)


def main(out: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Trains with each batch size; table of time per epoch and accuracy, plus curves."""
    out = out_dir(NAME, out)
    epochs = 2 if quick else 40
    batches = (32, 128) if quick else BATCHES
    data = _data()
    runs = {b: _train(b, data, epochs) for b in batches}
    figs = [_figure(runs, out / "batch_size.png")]
    summary = [
        f"Digits {len(data[0][1])} train / {len(data[1][1])} val / {len(data[2][1])} test, "
        f"MLP 64-{HIDDEN[0]}-{HIDDEN[1]}-10, Adam {LR:g}, {epochs} epochs, 2 CPU cores.",
        "",
        "| batch | steps / epoch | time / epoch | time / step | final val loss | "
        "best val acc | test accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for b, r in runs.items():
        summary.append(
            f"| {b} | {r['steps_per_epoch']} | {1e3 * r['epoch_seconds']:.1f} ms | "
            f"{1e3 * r['step_ms']:.0f} us | {r['final_val_loss']:.3f} | "
            f"{r['best_val_accuracy']:.1%} | **{r['test_accuracy']:.1%}** |")
    results = {
        "summary": summary,
        "figures": figs,
        "metrics": {
            "epochs": epochs,
            **{k: {str(b): r[k] for b, r in runs.items()} for k in (
                "epoch_seconds", "step_ms", "steps_per_epoch", "test_accuracy",
                "best_val_accuracy", "final_val_loss")},
        },
    }
    return save_results(out, results)


if __name__ == "__main__":
    run_cli(main)
