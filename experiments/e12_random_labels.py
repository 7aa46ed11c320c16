"""Random labels (Zhang et al., "Understanding deep learning requires rethinking
generalization", ICLR 2017): a network big enough to fit the data can also memorise noise.

The same MLP (64-512-512-10, Adam, no regularisation, same seed and steps) is trained twice
on the same 1,438 digit images: once with the true labels and once with labels drawn
uniformly at random (fixed for the run). Both reach 100% training accuracy; the random-label
network needs more epochs, and its test accuracy on the true test labels stays at chance
(10%), while the true-label network generalises. Nothing in the model or the optimiser
tells the two apart: generalisation is a property of the data, not of the capacity.

    python -m experiments.e12_random_labels [--quick] [--out DIR]
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

TITLE = "Random labels: the same MLP memorises noise to 100% train accuracy, test at chance"
NAME = "e12_random_labels"
HIDDEN = (512, 512)
LR = 1e-3
BATCH = 64


def _data(seed: int = 0) -> tuple:
    ds = nnkit.data.load("digits")
    (xtr, ytr), (xte, yte) = nnkit.data.split(ds.x, ds.y, (0.8, 0.2), seed=seed, stratify=True)
    (xtr, xte), _ = nnkit.data.standardize(xtr, xte)
    rand = np.random.default_rng(seed + 1).integers(0, 10, size=ytr.shape).astype(ytr.dtype)
    return xtr, ytr, rand, xte, yte


def _train(model, opt, x, y, xte, yte, epochs: int) -> dict[str, Any]:
    res = nnkit.fit(model, opt, (x, y), val_data=(xte, yte), epochs=epochs, batch_size=BATCH,
                    key=0, progress=False)
    ts = res.train_state
    ev = nnkit.make_eval_step(model, "cross_entropy")
    final_train = {k: float(v) for k, v in ev(ts.params, ts.state, (x, y)).items()}
    full = [i for i, a in enumerate(res.history["train_accuracy"]) if a >= 1.0]
    return {"history": res.history, "train_accuracy": final_train["accuracy"],
            "train_loss": final_train["loss"],
            "test_accuracy": float(res.history["val_accuracy"][-1]),
            "first_epoch_100": full[0] if full else None}


def _figure(runs: dict, path: Path) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.5))
    colors = {"true labels": "C0", "random labels": "C3"}
    for label, r in runs.items():
        h = r["history"]
        axes[0].plot(h["epoch"], h["train_accuracy"], color=colors[label], label=f"{label}: train")
        axes[0].plot(h["epoch"], h["val_accuracy"], "--", color=colors[label],
                     label=f"{label}: test (true labels)")
        axes[1].plot(h["epoch"], h["train_loss"], color=colors[label], label=label)
    axes[0].axhline(0.1, color="gray", lw=0.8, ls=":", label="chance (10%)")
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=7)
    axes[1].set_yscale("log")
    axes[1].set_ylabel("training loss (log)")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.suptitle(f"same MLP 64-{HIDDEN[0]}-{HIDDEN[1]}-10, same optimiser: true vs random "
                 "training labels", fontsize=10)
    return savefig(fig, path)


def main(out: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Trains the MLP on true and on random labels; curves and final accuracies."""
    out = out_dir(NAME, out)
    epochs = 2 if quick else 80
    xtr, ytr, rand, xte, yte = _data()
    model = nnkit.models.mlp(HIDDEN, 10)
    opt = optim.make("adam", LR)  # one model/optimizer: the compiled epoch is reused
    runs = {"true labels": _train(model, opt, xtr, ytr, xte, yte, epochs),
            "random labels": _train(model, opt, xtr, rand, xte, yte, epochs)}
    figs = [_figure(runs, out / "random_labels.png")]
    agree = float(np.mean(rand == ytr))
    summary = [
        f"Digits: {len(ytr)} training images (random labels agree with the true ones on "
        f"{agree:.1%}, i.e. chance), {len(yte)} test images with their true labels; MLP "
        f"64-{HIDDEN[0]}-{HIDDEN[1]}-10, Adam {LR:g}, batch {BATCH}, {epochs} epochs.",
        "",
        "| training labels | first epoch at 100% train acc | final train accuracy | "
        "final train loss | test accuracy |",
        "|---|---|---|---|---|",
    ]
    for label, r in runs.items():
        first = "never" if r["first_epoch_100"] is None else str(r["first_epoch_100"])
        summary.append(f"| {label} | {first} | {r['train_accuracy']:.1%} | "
                       f"{r['train_loss']:.1e} | **{r['test_accuracy']:.1%}** |")
    results = {
        "summary": summary,
        "figures": figs,
        "metrics": {
            "epochs": epochs,
            "label_agreement": agree,
            **{f"{k.split()[0]}_{m}": r[m] for k, r in runs.items()
               for m in ("train_accuracy", "train_loss", "test_accuracy", "first_epoch_100")},
        },
    }
    return save_results(out, results)


if __name__ == "__main__":
    run_cli(main)
