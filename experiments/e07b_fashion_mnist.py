"""Fashion-MNIST (70,000 28x28 clothing images): an MLP and LeNet-5, with the time per epoch.

Config-driven, like e07: ``configs/fashion_mnist_mlp.yaml`` and
``configs/fashion_mnist_lenet5.yaml`` (54k train / 6k validation from the official 60k
training set, the official 10k test set, standardised; Adam + cosine decay, batch 128), with
the number of epochs cut to the few needed for the targets (MLP >= 88%, LeNet-5 >= 89%;
LeNet-5 with a learning rate of 2e-3 instead of 1e-3 to get there in 8 epochs).
The data are read from ``/usr/share/datasets/fashion-mnist`` (:func:`nnkit.data.load`); if
they are missing the experiment is skipped with a message.

Time per epoch is the wall time of one compiled epoch (``history["seconds"]``), median over
the epochs after the first (the first one includes compilation).

    python -m experiments.e07b_fashion_mnist [--quick] [--out DIR]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

import nnkit
import nnkit.data
from experiments.common import out_dir, plt, run_cli, save_results, savefig
from experiments.e07_digits import CONFIGS, fit_config
from nnkit import metrics
from nnkit.config import load_config
from nnkit.data.mnist import FASHION_CLASSES, FASHION_MNIST_DIR
from nnkit.run import prepare

TITLE = "Fashion-MNIST (70,000 images): MLP >= 88%, LeNet-5 >= 89%, time per epoch"
NAME = "e07b_fashion_mnist"
# model label -> (config file, overrides of the full run: fewer epochs than the configs)
RUNS = {"MLP": ("fashion_mnist_mlp.yaml", ["training.epochs=10"]),
        "LeNet-5": ("fashion_mnist_lenet5.yaml", ["training.epochs=8", "optimizer.lr=2e-3"])}
QUICK_LIMIT = 1000  # examples per split in quick mode


def _run(file: str, overrides: list[str], quick: bool) -> dict[str, Any]:
    if quick:
        overrides = [*overrides, "training.epochs=1", f"data.options.limit={QUICK_LIMIT}"]
    cfg = load_config(CONFIGS / file, overrides)
    prep = prepare(cfg)
    res = fit_config(cfg, prep)
    ts = res.train_state
    predict = jax.jit(lambda x: jax.numpy.argmax(prep.model.apply(ts.params, ts.state, x)[0], -1))
    xt, yt = prep.test
    pred = np.concatenate([np.asarray(predict(xt[i:i + 2000])) for i in range(0, len(xt), 2000)])
    cm = np.asarray(metrics.confusion_matrix(pred, yt, prep.num_classes))
    secs = res.history["seconds"]
    per_epoch = float(np.median(secs[1:])) if len(secs) > 1 else float(secs[0])
    return {"prep": prep, "res": res, "cm": cm, "epoch_seconds": per_epoch,
            "first_epoch_seconds": float(secs[0]), "total_seconds": float(np.sum(secs)),
            "params": nnkit.param_count(ts.params)}


def _curves(runs: dict, path: Path) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for (label, r), color in zip(runs.items(), ("C0", "C1"), strict=False):
        h = r["res"].history
        ep = np.asarray(h["epoch"]) + 1
        for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
            ax.plot(ep, h[f"train_{key}"], "-o", ms=3, color=color, label=f"{label} train")
            ax.plot(ep, h[f"val_{key}"], "--s", ms=3, color=color, label=f"{label} val")
        acc = r["res"].test_metrics["test_accuracy"]
        axes[1].axhline(acc, color=color, lw=0.8, ls=":", label=f"{label} test {acc:.1%}")
    for ax, key in zip(axes, ("cross-entropy loss", "accuracy"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Fashion-MNIST: train (solid), validation (dashed), test (dotted)")
    return savefig(fig, path)


def _confusion(run: dict, label: str, path: Path) -> str:
    cm = run["cm"]
    rate = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if rate[i, j] >= 0.01:
                ax.text(j, i, f"{rate[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if rate[i, j] > 0.5 else "black")
    names = list(FASHION_CLASSES)
    ax.set_xticks(range(10), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(10), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    ax.set_title(f"{label} test confusion (rows sum to 1), acc "
                 f"{run['res'].test_metrics['test_accuracy']:.1%}", fontsize=9)
    return savefig(fig, path)


def _skipped(out: Path, why: str) -> dict[str, Any]:
    line = f"Skipped: Fashion-MNIST not available ({why})."
    print(line)
    return save_results(out, {"summary": [line], "figures": [], "metrics": {"skipped": True}})


def main(out: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Trains the MLP and LeNet-5 on Fashion-MNIST; table of accuracy and time per epoch."""
    out = out_dir(NAME, out)
    try:
        nnkit.data.load("fashion_mnist", limit=1)
    except FileNotFoundError as e:
        return _skipped(out, str(e))
    todo = {"MLP": RUNS["MLP"]} if quick else RUNS  # quick: LeNet-5 is exercised in e07
    runs = {label: _run(file, ov, quick) for label, (file, ov) in todo.items()}
    last = list(runs)[-1]
    figs = [_curves(runs, out / "curves.png"),
            _confusion(runs[last], last, out / "confusion.png")]
    prep = runs["MLP"]["prep"]
    n = [len(p[1]) for p in (prep.train, prep.val, prep.test)]
    summary = [
        f"Fashion-MNIST from `{FASHION_MNIST_DIR}`: {n[0]:,} train / {n[1]:,} val / "
        f"{n[2]:,} test (official test set); batch 128, Adam + cosine decay; 2 CPU cores.",
        "",
        "| model | params | config overrides | epochs | time / epoch | first epoch (with "
        "compile) | total | val acc | test accuracy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in runs.items():
        res = r["res"]
        ov = ", ".join(f"`{o}`" for o in todo[label][1])
        summary.append(
            f"| {label} | {r['params']:,} | {ov} | {res.epochs_run} | "
            f"{r['epoch_seconds']:.1f} s | "
            f"{r['first_epoch_seconds']:.1f} s | {r['total_seconds']:.0f} s | "
            f"{res.history['val_accuracy'][-1]:.1%} | "
            f"**{res.test_metrics['test_accuracy']:.1%}** |")
    summary += ["", "Targets: MLP >= 88%, LeNet-5 >= 89% test accuracy."]
    results = {
        "summary": summary,
        "figures": figs,
        "metrics": {
            "skipped": False,
            "n_train": n[0], "n_val": n[1], "n_test": n[2],
            "test_accuracy": {k: r["res"].test_metrics["test_accuracy"] for k, r in runs.items()},
            "epochs": {k: r["res"].epochs_run for k, r in runs.items()},
            "seconds_per_epoch": {k: r["epoch_seconds"] for k, r in runs.items()},
            "first_epoch_seconds": {k: r["first_epoch_seconds"] for k, r in runs.items()},
            "total_seconds": {k: r["total_seconds"] for k, r in runs.items()},
        },
    }
    return save_results(out, results)


if __name__ == "__main__":
    run_cli(main)
