"""Optimizers compared: the same MLP, data, initialisation and batch order for each.

8x8 digits (1797 images, 70/15/15 stratified split, standardised with training statistics),
an MLP ``64 -> 128 -> ReLU -> 10``, softmax cross entropy, batch 32. Every optimizer starts
from the same parameters (per seed) and sees the same batches; each one's learning rate is
tuned on the validation set around a common base rate for its kind (base x 1/3, 1, 3; three
seeds; one ``nnkit.sweep`` program per optimizer). Update rules (``g`` the gradient):

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
from nnkit.train.step import jitted_evaluator

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
LR_FACTORS = (1 / 3, 1.0, 3.0)
SEEDS = (0, 1, 2)


def _figure(histories: dict, path: str) -> str:
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, h in histories.items():
        ls = "--" if label.startswith("AdamW") else "-"  # AdamW nearly overlaps Adam
        line, = ax0.semilogy(h["epoch"], h["train_loss"], ls, label=label)
        ax1.semilogy(h["epoch"], h["val_loss"], ls, color=line.get_color(), label=label)
    ax0.set_title("training loss (mean over each epoch's batches)", fontsize=9)
    ax1.set_title("validation loss (end of each epoch)", fontsize=9)
    for ax in (ax0, ax1):
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross entropy (log)")
        ax.grid(alpha=0.3, which="both")
    ax0.legend(fontsize=7)
    return savefig(fig, path)


def _tuned(model, name: str, lr: float, kw: dict, data, epochs: int, seeds: list[int],
           factors: tuple[float, ...]) -> dict[str, Any]:
    """One ``nnkit.sweep`` over ``lr * factors`` x ``seeds``; the rate with the lowest mean
    best validation loss, its per-seed histories and test accuracies."""
    train, val, test = data
    grid = [lr * f for f in factors]
    kw = dict(kw)
    wds = [kw.pop("weight_decay")] if "weight_decay" in kw else None
    res = nnkit.sweep(model, name, train, learning_rates=grid, weight_decays=wds,
                      seeds=seeds, val_data=val, epochs=epochs, batch_size=32, **kw)
    best = np.array([np.nanmin(h["val_loss"]) for h in res.histories]).reshape(
        len(grid), len(seeds))
    i = int(np.argmin(best.mean(axis=1)))
    rows = range(i * len(seeds), (i + 1) * len(seeds))
    ev = jitted_evaluator(model, "cross_entropy", ("accuracy",), len(test[0]), 1024)
    accs = []
    for r in rows:
        ts = res.train_state(r)
        accs.append(float(ev(ts.params, ts.state, *test)["accuracy"]))
    return {"lr": grid[i], "grid": grid, "grid_val_loss": best.mean(axis=1).tolist(),
            "best_val_loss": best[i].tolist(), "test_accuracy": accs,
            "histories": [res.histories[r] for r in rows]}


def main(out: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Tunes each optimizer's rate on validation (one sweep each), plots and tabulates."""
    out = out_dir(NAME, out)
    epochs = 2 if quick else 20
    chosen = {"Adam": OPTIMIZERS["Adam"]} if quick else OPTIMIZERS
    seeds = [0] if quick else list(SEEDS)
    factors = (1.0,) if quick else LR_FACTORS
    data = digits_splits()
    train, val, test = data
    model = nnkit.models.mlp((128,), 10)
    tuned = {label: _tuned(model, name, lr, kw, data, epochs, seeds, factors)
             for label, (name, lr, kw) in chosen.items()}
    fig = _figure({k: t["histories"][0] for k, t in tuned.items()},
                  str(out / "optimizers.png"))

    summary = [
        f"Digits 8x8, MLP 64-128-10 (ReLU), batch 32, {epochs} epochs; "
        f"{len(train[0])}/{len(val[0])}/{len(test[0])} train/val/test. Each optimizer's rate "
        f"is tuned on the validation set over its base rate x "
        f"{', '.join(f'{f:.3g}' for f in factors)} (lowest mean "
        f"best validation loss over seeds {seeds}; each rate and seed is one model of one "
        "`nnkit.sweep` per optimizer); all start from the same initialisation per seed and "
        "see the same batches. Test accuracy: final parameters, mean +- std over the seeds.",
        "",
        "| optimizer | rates tried: mean best val loss | chosen rate | best val loss "
        "| test accuracy |",
        "|---|---|---|---|---|",
    ]
    table = {}
    for label, t in tuned.items():
        table[label] = {k: t[k] for k in ("lr", "grid", "grid_val_loss", "best_val_loss",
                                          "test_accuracy")}
        tried = ", ".join(f"{g:.3g}: {v:.3f}" for g, v in zip(t["grid"], t["grid_val_loss"],
                                                              strict=True))
        edge = " (grid edge)" if len(t["grid"]) > 1 and t["lr"] in (t["grid"][0],
                                                                   t["grid"][-1]) else ""
        bv, acc = np.array(t["best_val_loss"]), np.array(t["test_accuracy"])
        summary.append(f"| {label} | {tried} | {t['lr']:.3g}{edge} | {bv.mean():.4f} +- "
                       f"{bv.std():.4f} "
                       f"| {acc.mean():.1%} +- {acc.std():.1%} |")
    accs = {k: np.mean(t["test_accuracy"]) for k, t in tuned.items()}
    lo, hi = min(accs.values()), max(accs.values())
    summary += ["", f"Mean test accuracies span {lo:.1%} to {hi:.1%} "
                f"({(hi - lo) * len(test[0]):.1f} of {len(test[0])} images): this task is too "
                "easy to rank the optimizers by accuracy; the validation losses and the curves "
                f"show how each one moves (figure: seed {seeds[0]}, the chosen rates)."]
    results = {"summary": summary, "figures": [fig],
               "metrics": {"optimizers": table, "epochs": epochs, "seeds": seeds}}
    return save_results(out, results)


if __name__ == "__main__":
    run_cli(main)
