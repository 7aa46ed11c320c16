"""Handwritten digits: an MLP on the 8x8 pixels and LeNet-5 on the digits resized to 28x28.

Both runs are config-driven: ``configs/digits_mlp.yaml`` (MLP 64-256-128-10, dropout 0.2,
Adam with cosine decay) and ``configs/digits_lenet5.yaml`` (LeNet-5, 61,706 parameters,
early stopping on the validation loss) are read with :func:`nnkit.config.load_config`,
turned into model / splits / optimizer by :func:`nnkit.run.prepare` (80/10/10 stratified
split, standardised with the training statistics) and trained with :func:`nnkit.fit`.

A third run trains the same LeNet-5 with 2x2 mean (average) pooling instead of max pooling
(``model.pool=mean``, the subsampling of the original LeNet-5), everything else equal.

Figures: training curves of all three; LeNet-5's six learned first-layer 5x5 filters with their
feature maps on one test digit; the test-set confusion matrices
(:func:`nnkit.metrics.confusion_matrix`).

    python -m experiments.e07_digits [--quick] [--out DIR]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

import nnkit
from experiments.common import out_dir, plt, run_cli, save_results, savefig
from nnkit import metrics
from nnkit.config import Config, load_config
from nnkit.run import Prepared, prepare

TITLE = ("Digits: an MLP (target 97%), LeNet-5 with max or mean pooling (target 98%), "
         "learned filters")
NAME = "e07_digits"
CONFIGS = Path(__file__).resolve().parent.parent / "configs"
RUNS = {"MLP": ("digits_mlp.yaml", []), "LeNet-5": ("digits_lenet5.yaml", []),
        "LeNet-5, mean pooling": ("digits_lenet5.yaml", ["model.pool=mean"])}
TARGETS = {"MLP": 0.97, "LeNet-5": 0.98}


def fit_config(cfg: Config, prep: Prepared) -> nnkit.FitResult:
    """:func:`nnkit.fit` with everything the config says (what ``nnkit train`` runs, without
    the run directory)."""
    t = cfg.training
    return nnkit.fit(
        prep.model, prep.optimizer, prep.train, val_data=prep.val, test_data=prep.test,
        loss=cfg.loss, metrics=cfg.metrics, epochs=t.epochs, batch_size=cfg.data.batch_size,
        key=cfg.seed, early_stopping=prep.early_stopping, plateau=prep.plateau,
        augment=prep.augment, grad_mode=t.grad_mode, microbatches=t.microbatches, l1=t.l1,
        l2=t.l2, mode=t.mode, eval_batch_size=cfg.data.eval_batch_size, progress=False,
    )


def _run(file: str, overrides: list[str], quick: bool) -> dict[str, Any]:
    cfg = load_config(CONFIGS / file, overrides + (["training.epochs=1"] if quick else []))
    prep = prepare(cfg)
    res = fit_config(cfg, prep)
    ts = res.train_state
    logits = jax.jit(lambda x: prep.model.apply(ts.params, ts.state, x)[0])(prep.test[0])
    cm = np.asarray(metrics.confusion_matrix(logits, prep.test[1], prep.num_classes))
    return {"cfg": cfg, "prep": prep, "res": res, "cm": cm,
            "params": nnkit.param_count(ts.params)}


def _curves(runs: dict, path: Path) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 3.4))
    for (label, r), color in zip(runs.items(), ("C0", "C1", "C2"), strict=False):
        h = r["res"].history
        for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
            ax.plot(h["epoch"], h[f"train_{key}"], "-", color=color, label=f"{label} train")
            ax.plot(h["epoch"], h[f"val_{key}"], "--", color=color, label=f"{label} val")
    axes[0].set_yscale("log")
    low = min(min(r["res"].history[f"{s}_accuracy"]) for r in runs.values()
              for s in ("train", "val"))
    axes[1].set_ylim(low - 0.02, 1.005)  # every epoch shown
    for ax, key in zip(axes, ("cross-entropy loss (log)", "accuracy"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("digits: training (solid) and validation (dashed) curves")
    return savefig(fig, path)


def _filters(run: dict, path: Path) -> str:
    """The conv1 kernels (5, 5, 1, 6) and their feature maps (after ReLU) on one digit."""
    ts, prep = run["res"].train_state, run["prep"]
    w = np.asarray(ts.params["conv1"]["w"])[:, :, 0, :]  # (5, 5, 6)
    x = prep.test[0][:1]
    first = nnkit.serial(*[lyr for _, lyr in prep.model.children[:2]])  # conv1, relu1
    maps = np.asarray(first.apply({"conv1": ts.params["conv1"]}, {}, x)[0])[0]  # (28, 28, 6)
    n = w.shape[-1]
    fig, axes = plt.subplots(2, n + 1, figsize=(1.45 * (n + 1), 3.6))
    axes[0, 0].imshow(x[0, :, :, 0], cmap="gray")
    axes[0, 0].set_title(f"input, label {int(prep.test[1][0])}\n(standardised)", fontsize=8)
    axes[1, 0].axis("off")
    lim = np.abs(w).max()
    for i in range(n):
        axes[0, i + 1].imshow(w[:, :, i], cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[0, i + 1].set_title(f"filter {i}", fontsize=8)
        axes[1, i + 1].imshow(maps[:, :, i], cmap="viridis")
        axes[1, i + 1].set_xlabel(f"map {i}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("LeNet-5 conv1: learned 5x5 filters (red +, blue -) and ReLU feature maps",
                 fontsize=10)
    return savefig(fig, path)


def _confusion(runs: dict, path: Path) -> str:
    fig, axes = plt.subplots(1, len(runs), figsize=(3.9 * len(runs), 3.7))
    for ax, (label, r) in zip(np.atleast_1d(axes), runs.items(), strict=True):
        cm = r["cm"]
        ax.imshow(cm, cmap="Blues")
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if cm[i, j] > cm.max() / 2 else "black")
        ax.set_xticks(range(cm.shape[1]))
        ax.set_yticks(range(cm.shape[0]))
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        acc = r["res"].test_metrics["test_accuracy"]
        ax.set_title(f"{label}: test acc {acc:.1%} ({int(np.trace(cm))}/{int(cm.sum())})",
                     fontsize=9)
    fig.suptitle("test-set confusion matrices", fontsize=10)
    return savefig(fig, path)


def main(out: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Trains the MLP and LeNet-5 from their configs; draws curves, filters, confusion."""
    out = out_dir(NAME, out)
    runs = {label: _run(file, over, quick) for label, (file, over) in RUNS.items()}
    figs = [_curves(runs, out / "curves.png"), _filters(runs["LeNet-5"], out / "filters.png"),
            _confusion(runs, out / "confusion.png")]
    n_tr, n_va, n_te = (len(getattr(runs["MLP"]["prep"], s)[1]) for s in ("train", "val", "test"))
    summary = [
        f"UCI digits, stratified split {n_tr} train / {n_va} val / {n_te} test, standardised; "
        "configs `configs/digits_mlp.yaml`, `configs/digits_lenet5.yaml` (mean pooling: "
        "`--set model.pool=mean`).",
        "",
        "| model | input | params | epochs run | stop | best val acc | test accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in runs.items():
        res, prep = r["res"], r["prep"]
        shape = "x".join(str(d) for d in prep.input_shape)
        stop = "early stop" if res.stop_reason.startswith("early") else "all epochs"
        summary.append(
            f"| {label} | {shape} | {r['params']:,} | {res.epochs_run} | {stop} | "
            f"{max(res.history['val_accuracy']):.1%} | "
            f"**{res.test_metrics['test_accuracy']:.1%}** |")
    verdicts = []
    for label, target in TARGETS.items():
        acc = runs[label]["res"].test_metrics["test_accuracy"]
        wrong = int(round((1 - acc) * n_te))
        verdicts.append(f"{label} >= {target:.0%} " + (
            "(met)" if acc >= target - 1e-9 else
            f"(**missed**: {wrong} of {n_te} test digits wrong, {target:.0%} allows "
            f"{int((1 - target) * n_te + 1e-9)})"))
    summary += ["", "Targets, test accuracy: " + ", ".join(verdicts) + "."]
    if "LeNet-5, mean pooling" in runs:
        wrong = {k: int(round((1 - runs[k]["res"].test_metrics["test_accuracy"]) * n_te))
                 for k in ("LeNet-5", "LeNet-5, mean pooling")}
        summary += ["", f"Max against mean pooling: {wrong['LeNet-5']} against "
                    f"{wrong['LeNet-5, mean pooling']} test digits wrong, from one seed and "
                    f"{n_te} test digits (one digit is {1 / n_te:.1%}): too few to rank the "
                    "two poolings."]
    results = {
        "summary": summary,
        "figures": figs,
        "metrics": {
            "test_accuracy": {k: r["res"].test_metrics["test_accuracy"] for k, r in runs.items()},
            "test_loss": {k: r["res"].test_metrics["test_loss"] for k, r in runs.items()},
            "epochs_run": {k: r["res"].epochs_run for k, r in runs.items()},
            "params": {k: r["params"] for k, r in runs.items()},
            "confusion": {k: r["cm"].tolist() for k, r in runs.items()},
            "n_test": n_te,
        },
    }
    return save_results(out, results)


if __name__ == "__main__":
    run_cli(main)
