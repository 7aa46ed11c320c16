"""Diagnosing networks before and during training: a healthy MLP and a broken one, side by side.

Healthy: 8x8 digits standardised with training-split statistics, a ReLU MLP 64-64-64-10
with the default (He-uniform) init. Broken: the same digits at raw pixel scale (0..255)
into a 4-layer sigmoid stack whose weights are drawn from N(0, 3^2).

``nnkit.diagnose`` runs its six checks on both (``report.txt`` holds the two reports); both
are then trained briefly with the same optimizer while ``nnkit.diagnose.monitor`` records
per-layer statistics, to see whether the warnings match the training outcome. The broken
network differs from the healthy one in four ways at once (input scale, sigmoid, init and
depth), so this pair shows what the checks report, not which fault causes what; e15 varies
the initialisation alone.

    python -m experiments.e23_diagnostics [--quick] [--out DIR]

Writes to ``experiments/out/e23_diagnostics/``: ``report.txt``, ``compare_checks.png``,
``compare_activations.png``, ``compare_training.png``, the per-model report figures under
``healthy/`` and ``broken/`` and the monitor's TensorBoard runs under ``monitor_*``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

import nnkit
import nnkit.data
from experiments.common import out_dir as make_out_dir
from experiments.common import plt, run_cli, save_results, savefig
from nnkit import initializers as inits
from nnkit.diagnose import plots as dplots
from nnkit.layers import Dense, Relu, Sigmoid

TITLE = "Diagnostics: what nnkit.diagnose says about a healthy and a broken network"
NAME = "e23_diagnostics"
COLORS = {"healthy": "tab:blue", "broken": "tab:red"}


def models() -> dict[str, nnkit.Layer]:
    """The healthy ReLU MLP and the broken sigmoid stack with a huge init."""
    big = inits.normal(3.0)
    return {
        "healthy": nnkit.serial(Dense(64), Relu(), Dense(64), Relu(), Dense(10)),
        "broken": nnkit.serial(
            *[lyr for _ in range(4) for lyr in (Dense(64, w_init=big), Sigmoid())],
            Dense(10, w_init=big),
        ),
    }


def data() -> dict[str, Any]:
    """Digits flattened to 64 features, an 80/20 stratified split, and the two input scalings."""
    ds = nnkit.data.load("digits")
    x = ds.x.reshape(len(ds.x), -1)
    (xtr, ytr), (xva, yva) = nnkit.data.split(x, ds.y, (0.8, 0.2), seed=0, stratify=True)
    (ztr, zva), _ = nnkit.data.standardize(xtr, xva)
    return {
        "healthy": ((ztr, ytr), (zva, yva)),
        "broken": ((xtr * 255.0, ytr), (xva * 255.0, yva)),  # raw 0..255 pixels
    }


def _compare_checks(reports: dict, path: Path) -> str:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, r in reports.items():
        s = np.sort(np.asarray(r.numbers["inputs"]["feature_std"]))[::-1]
        axes[0].semilogy(np.maximum(s, 1e-3), color=COLORS[name], label=name)
        dplots.draw_gradients(axes[1], r.numbers["gradients"], label=name, color=COLORS[name])
        dplots.draw_overfit(axes[2], r.numbers["overfit"], label=name, color=COLORS[name])
    axes[0].axhline(1.0, color="k", lw=0.5, ls="--", label="target std 1")
    axes[0].set_title("input feature stds, sorted (target 1)")
    axes[0].set_xlabel("feature (sorted)")
    axes[0].set_ylabel("standard deviation (log; 0 shown as 1e-3)")
    axes[0].legend(fontsize=7)
    axes[2].axhline(np.log(10), color="k", lw=0.5, ls="--", label="ln 10: chance, 10 classes")
    axes[2].legend(fontsize=7)
    axes[1].set_title(axes[1].get_title() + "\n(healthy: 3 Dense layers, broken: 5)", fontsize=9)
    return savefig(fig, path)


def _compare_activations(reports: dict, path: Path) -> str:
    rows = {n: [(p, s) for p, s in r.numbers["activations"].items() if "hist_counts" in s
                and s["kind"] != "dense"] for n, r in reports.items()}
    cols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(2, cols, figsize=(2.8 * cols, 4.2), squeeze=False)
    for i, (name, items) in enumerate(rows.items()):
        for ax in axes[i, len(items):]:
            ax.axis("off")
        for ax, (p, s) in zip(axes[i], items, strict=False):
            note = (f"saturated {s['saturated']:.0%}" if "saturated" in s else
                    f"dead {s['dead']:.0%}")
            dplots.draw_histogram(ax, s["hist_counts"], s["hist_edges"],
                                  f"{name}: {p}\n{note}",
                                  COLORS[name])
    fig.suptitle("activation outputs at init, one batch of 64", fontsize=10)
    return savefig(fig, path)


def _compare_training(runs: dict, path: Path) -> str:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, (res, mon) in runs.items():
        h, color = res.history, COLORS[name]
        axes[0].plot(h["epoch"], h["train_loss"], color=color, label=f"{name} train")
        axes[0].plot(h["epoch"], h["val_loss"], "--", color=color, label=f"{name} val")
        axes[1].plot(h["epoch"], h["val_accuracy"], color=color, label=name)
        series = mon.history["update_ratio_per_step"]
        cmap = plt.get_cmap("Blues" if name == "healthy" else "Reds")
        for i, (layer, pts) in enumerate(series.items()):
            e, r = zip(*pts, strict=True)
            axes[2].semilogy(e, r, "o-", ms=3, color=cmap(0.4 + 0.6 * i / max(1, len(series))),
                             label=f"{name} {layer}")
    axes[0].set_yscale("log")
    axes[0].set_title("loss")
    axes[0].set_ylabel("cross entropy (log)")
    axes[1].set_title("validation accuracy")
    axes[1].set_ylabel("accuracy")
    axes[2].axhline(1e-3, color="k", lw=0.5, ls=":", label="1e-3: a common rule of thumb")
    axes[2].set_title("|update| / |param| per step (monitor)")
    axes[2].set_ylabel("ratio (log)")
    for ax in axes[:2]:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=6)
    axes[2].set_xlabel("epoch")
    axes[2].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return savefig(fig, path)


def main(out_dir: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Runs the comparison; ``quick`` uses few steps/epochs (smoke test). Returns results."""
    out = make_out_dir(NAME, out_dir)
    nets, sets = models(), data()
    steps, epochs, every = (30, 2, 1) if quick else (300, 30, 5)
    reports, runs, text = {}, {}, []
    for name, net in nets.items():
        (xtr, ytr), (xva, yva) = sets[name]
        r = nnkit.diagnose(net, xtr, ytr, key=0, overfit_steps=steps)
        reports[name] = r
        r.plot(out / name)
        text += [f"### {name}", str(r), ""]
        xs, ys = xtr[:128], ytr[:128]
        with nnkit.diagnose.monitor(every=every, logdir=out / f"monitor_{name}", model=net,
                                    x_sample=xs, y_sample=ys, figures=not quick) as mon:
            res = nnkit.fit(net, nnkit.optim.make("adam", 1e-3), (xtr, ytr),
                            val_data=(xva, yva), epochs=epochs, batch_size=64, key=0,
                            callbacks=[mon], progress=False)
        runs[name] = (res, mon)
    (out / "report.txt").write_text("\n".join(text))
    figures = [
        _compare_checks(reports, out / "compare_checks.png"),
        _compare_activations(reports, out / "compare_activations.png"),
        _compare_training(runs, out / "compare_training.png"),
    ]
    metrics = {}
    for name, r in reports.items():
        h = runs[name][0].history
        metrics[name] = {
            "severity": r.severity,
            "problems": [f.check for f in r.problems],
            "initial_loss": r.numbers["initial_loss"]["loss"],
            "overfit_final_loss": r.numbers["overfit"]["final"],
            "grad_ratio_first_last": r.numbers["gradients"]["ratio"],
            "val_accuracy": h["val_accuracy"][-1],
        }
    summary = [
        "| network | diagnose verdict | flagged checks | initial loss (ln 10 = 2.30) "
        f"| val accuracy after {epochs} epochs |",
        "|---|---|---|---|---|",
    ]
    for name, m in metrics.items():
        summary.append(f"| {name} | {m['severity']} | {', '.join(m['problems']) or '-'} | "
                       f"{m['initial_loss']:.2f} | {m['val_accuracy']:.1%} |")
    summary += ["", "Full reports: `report.txt`."]
    return save_results(out, {"summary": summary, "figures": figures, "metrics": metrics})


if __name__ == "__main__":
    run_cli(main)
