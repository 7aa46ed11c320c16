"""The learning rate: too small, good, too large; a grid search; the LR range test.

Plain SGD ``theta -= lr * g`` trains an MLP ``64 -> 64 -> ReLU -> 10`` on the 8x8 digits.

* Grid search: ``nnkit.sweep`` trains one model per learning rate (a log grid) in ONE
  compiled, ``vmap``-ed program, each equal to its own ``nnkit.fit`` run (same init and
  batch order). A run whose loss overflows is rolled back epoch by epoch (NaN in its log).
* Three of those runs are shown as training curves: a rate ~100x below the best (slow), the
  best one (lowest final validation loss), and the smallest rate that diverged.
* ``nnkit.lr_find`` (Smith's range test): one short run whose rate grows exponentially every
  step, recording the smoothed loss; its suggestion is the rate of steepest descent (the
  slope measured across a decade of rates).

    python -m experiments.e09_learning_rate [--quick] [--out DIR]
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

import nnkit
import nnkit.models
from experiments.common import out_dir, plt, run_cli, save_results, savefig
from experiments.opt_data import digits_splits

TITLE = "Learning rate: too small / good / too large, a vmapped grid search, the LR range test"
NAME = "e09_learning_rate"
CLIP = 10.0  # losses above this are drawn at the top of the plots


def diverged(history: dict[str, list[float]]) -> bool:
    """A run diverged if a training loss is non-finite or ends above where it started."""
    loss = np.asarray(history["train_loss"], np.float64)
    return bool(not np.all(np.isfinite(loss)) or loss[-1] > loss[0])


def pick_three(lrs: np.ndarray, final_val: np.ndarray, bad: np.ndarray) -> dict[str, int]:
    """Indices of the 'too small', 'good' (lowest final val loss) and 'too large' (smallest
    diverged rate above the best; else the largest) runs of a sweep over increasing ``lrs``."""
    good = int(np.nanargmin(np.where(bad, np.nan, final_val)))
    small = int(np.argmin(np.abs(np.log10(lrs) - (np.log10(lrs[good]) - 2.0))))
    above = [i for i in range(good + 1, len(lrs)) if bad[i]]
    large = above[0] if above else len(lrs) - 1
    return {"too small": small, "good": good, "too large": large}


def _figure(lrs, hists, picks, bad, finder, path: str) -> str:
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    ax = axes[0]
    for (label, i), col in zip(picks.items(), ("tab:blue", "tab:green", "tab:red"),
                               strict=True):
        loss = np.asarray(hists[i]["train_loss"], np.float64)
        ok = np.isfinite(loss)
        ax.semilogy(np.asarray(hists[i]["epoch"])[ok], np.minimum(loss[ok], CLIP), "o-",
                    ms=3, color=col, label=f"{label}: lr {lrs[i]:.2g}")
        if not ok.all():
            e = int(np.argmax(~ok))
            ax.plot([e], [CLIP], "x", color=col, ms=10, mew=2)
            ax.annotate("diverged (NaN)", (e, CLIP), xytext=(5, -12),
                        textcoords="offset points", fontsize=8, color=col)
    ax.set_ylim(top=CLIP * 1.6)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"training loss (clipped at {CLIP:g})")
    ax.set_title("too small / good / too large", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)

    ax = axes[1]
    for key, style in (("train_loss", "o-"), ("val_loss", "s--")):
        v = np.array([h[key][-1] for h in hists], np.float64)
        v = np.where(np.isfinite(v), np.minimum(v, CLIP), np.nan)
        ax.loglog(lrs, v, style, ms=4, label=f"final {key.replace('_', ' ')}")
    if bad.any():
        ax.plot(lrs[bad], np.full(bad.sum(), CLIP), "rx", ms=9, mew=2, label="diverged")
    ax.axvline(finder.suggestion, color="k", ls=":", label=f"lr_find suggestion "
               f"{finder.suggestion:.2g}")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss after the last epoch")
    ax.set_title(f"grid search: {len(lrs)} models in one vmapped sweep", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)

    ax = axes[2]
    ax.semilogx(finder.lrs, np.minimum(finder.raw_losses, CLIP), color="0.75", lw=0.8,
                label="raw batch loss")
    ax.semilogx(finder.lrs, finder.losses, color="tab:blue", label="smoothed loss")
    i = int(np.argmin(np.abs(np.log(finder.lrs / finder.suggestion))))
    ax.plot([finder.suggestion], [finder.losses[i]], "ro", ms=8,
            label=f"suggestion {finder.suggestion:.2g} (steepest)")
    j = int(np.argmin(np.abs(np.log(finder.lrs / finder.lr_at_min))))
    ax.plot([finder.lr_at_min], [finder.losses[j]], "ks", ms=6,
            label=f"minimum at {finder.lr_at_min:.2g}")
    ax.set_xlabel("learning rate (grows every step)")
    ax.set_ylabel("training loss")
    ax.set_title(f"LR range test: {len(finder.lrs)} steps before divergence", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return savefig(fig, path)


def main(out: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Runs the LR sweep and the range test; plots curves, grid and range test."""
    out = out_dir(NAME, out)
    epochs = 2 if quick else 15
    lrs = np.logspace(-4, 1, 4 if quick else 11)
    train, val, _ = digits_splits()
    model = nnkit.models.mlp((64,), 10)
    sw = nnkit.sweep(model, "sgd", train, val_data=val, learning_rates=lrs.tolist(),
                     epochs=epochs, batch_size=32)
    hists = sw.histories
    bad = np.array([diverged(h) for h in hists])
    final_val = np.array([h["val_loss"][-1] for h in hists], np.float64)
    picks = pick_three(lrs, final_val, bad)
    finder = nnkit.lr_find(model, "sgd", train, min_lr=1e-5, max_lr=10.0,
                           steps=30 if quick else 300, smoothing=0.95, batch_size=32)
    fig = _figure(lrs, hists, picks, bad, finder, str(out / "learning_rate.png"))

    g = picks["good"]
    ratio = float(max(finder.suggestion / lrs[g], lrs[g] / finder.suggestion))
    summary = [
        f"SGD, MLP 64-64-10, digits ({len(train[0])} train / {len(val[0])} val), batch 32, "
        f"{epochs} epochs per run; grid of {len(lrs)} rates from {lrs[0]:g} to {lrs[-1]:g} "
        "trained as one vmapped program (`nnkit.sweep`).",
        "",
        "| learning rate | final train loss | final val loss | final val accuracy | |",
        "|---|---|---|---|---|",
    ]
    tags = {i: name for name, i in picks.items()}
    for i, (lr, h) in enumerate(zip(lrs, hists, strict=True)):
        note = "diverged" if bad[i] else ""
        if i in tags:
            note = f"**{tags[i]}**" + (f" ({note})" if note else "")
        acc = h["val_accuracy"][-1]  # NaN once a model stopped on a non-finite epoch
        acc_txt = f"{acc:.1%}" if np.isfinite(acc) else "-"
        summary.append(f"| {lr:.3g} | {h['train_loss'][-1]:.4f} | {h['val_loss'][-1]:.4f} | "
                       f"{acc_txt} | {note} |")
    summary += [
        "",
        f"Grid best: lr {lrs[g]:.3g}. LR range test (`nnkit.lr_find`, one run of "
        f"{len(finder.lrs)} steps from 1e-5 before divergence, EMA smoothing 0.95): "
        f"suggestion **{finder.suggestion:.3g}** (a factor {ratio:.1f} from the grid's best), "
        f"smoothed-loss minimum at {finder.lr_at_min:.3g}.",
    ]
    results = {
        "summary": summary,
        "figures": [fig],
        "metrics": {
            "learning_rates": lrs.tolist(),
            "final_train_loss": [h["train_loss"][-1] for h in hists],
            "final_val_loss": final_val.tolist(),
            "diverged": bad.tolist(),
            "picks": {k: float(lrs[i]) for k, i in picks.items()},
            "grid_best_lr": float(lrs[g]),
            "lr_find_suggestion": float(finder.suggestion),
            "lr_find_lr_at_min": float(finder.lr_at_min),
            "epochs": epochs,
        },
    }
    return save_results(out, results)


if __name__ == "__main__":
    run_cli(main)
