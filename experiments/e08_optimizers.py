"""Optimizers compared: the same MLP, data, initialisation and batch order for each.

8x8 digits (1797 images, 70/15/15 stratified split, standardised with training statistics),
an MLP ``64 -> 128 -> ReLU -> 10``, softmax cross entropy, batch 32. Every optimizer starts
from the same parameters (``key=0``) and sees the same batches; each uses a common
learning rate for its kind (listed in the table). Update rules (``g`` the gradient):

* SGD ``theta -= lr g``; momentum ``v = 0.9 v + g, theta -= lr v``;
* Adagrad ``s += g^2, theta -= lr g / sqrt(s)``; RMSProp ``s = 0.9 s + 0.1 g^2``;
* Adadelta scales by the ratio of running RMS of updates and gradients (lr = 1);
* Adam: bias-corrected first and second moments; AdamW adds decoupled weight decay.

    python -m experiments.e08_optimizers [--quick] [--out DIR]
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

import nnkit
import nnkit.models
from experiments.common import out_dir, plt, run_cli, save_results, savefig
from experiments.opt_data import digits_splits
from nnkit import optim

TITLE = "Optimizers: SGD, momentum, Adagrad, RMSProp, Adadelta, Adam, AdamW on digits"
NAME = "e08_optimizers"
OPTIMIZERS = {  # label -> (nnkit.optim.make name, learning rate, extra arguments)
    "SGD": ("sgd", 0.05, {}),
    "momentum 0.9": ("momentum", 0.01, {}),
    "Adagrad": ("adagrad", 0.05, {}),
    "RMSProp": ("rmsprop", 1e-3, {}),
    "Adadelta": ("adadelta", 1.0, {}),
    "Adam": ("adam", 1e-3, {}),
    "AdamW (wd 1e-2)": ("adamw", 1e-3, {"weight_decay": 1e-2}),
}


def _figure(runs: dict, path: str) -> str:
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, res in runs.items():
        h = res.history
        ls = "--" if label.startswith("AdamW") else "-"  # AdamW nearly overlaps Adam
        line, = ax0.semilogy(h["epoch"], h["train_loss"], ls, label=label)
        ax1.plot(h["epoch"], h["val_loss"], ls, color=line.get_color(), label=label)
    ax0.set_title("training loss (mean over each epoch's batches)", fontsize=9)
    ax1.set_title("validation loss (end of each epoch)", fontsize=9)
    for ax in (ax0, ax1):
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross entropy")
        ax.grid(alpha=0.3, which="both")
    ax0.legend(fontsize=7)
    return savefig(fig, path)


def main(out: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Trains the MLP once per optimizer; plots losses and tabulates test accuracy."""
    out = out_dir(NAME, out)
    epochs = 2 if quick else 20
    chosen = {"Adam": OPTIMIZERS["Adam"]} if quick else OPTIMIZERS
    train, val, test = digits_splits()
    model = nnkit.models.mlp((128,), 10)
    runs = {}
    for label, (name, lr, kw) in chosen.items():
        runs[label] = nnkit.fit(model, optim.make(name, lr, **kw), train, val_data=val,
                                test_data=test, epochs=epochs, batch_size=32, key=0,
                                progress=False)
    fig = _figure(runs, str(out / "optimizers.png"))

    summary = [
        f"Digits 8x8, MLP 64-128-10 (ReLU), batch 32, {epochs} epochs, same init and batch "
        f"order for all; {len(train[0])}/{len(val[0])}/{len(test[0])} train/val/test.",
        "",
        "| optimizer | learning rate | final train loss | best val loss | test accuracy |",
        "|---|---|---|---|---|",
    ]
    table = {}
    for label, res in runs.items():
        h, lr = res.history, chosen[label][1]
        table[label] = {"learning_rate": lr, "train_loss": h["train_loss"][-1],
                        "best_val_loss": float(np.nanmin(h["val_loss"])),
                        "test_accuracy": res.test_metrics["test_accuracy"]}
        t = table[label]
        summary.append(f"| {label} | {lr:g} | {t['train_loss']:.4f} | {t['best_val_loss']:.4f} "
                       f"| {t['test_accuracy']:.1%} |")
    results = {"summary": summary, "figures": [fig],
               "metrics": {"optimizers": table, "epochs": epochs}}
    return save_results(out, results)


if __name__ == "__main__":
    run_cli(main)
