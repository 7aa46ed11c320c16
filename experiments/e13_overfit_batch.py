"""Overfit one minibatch: the first sanity check before a long training run.

:func:`nnkit.overfit_batch` trains on the SAME 32 examples for a few hundred steps (one
``lax.scan``) and passes if the loss reaches ``1e-2``: a correct model, loss and optimiser
can always memorise one small batch. A deliberately broken model fails it visibly: its
first layer permutes the rows of the batch with a fresh random permutation at every
training step (a bug such as a wrong transpose or a shuffled data pipeline), which is the
same as shuffling the labels within the batch every step. It can only learn the label
frequencies, so its loss stays near their entropy.

    python -m experiments.e13_overfit_batch [--quick] [--out DIR]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

import nnkit
import nnkit.data
import nnkit.models
from experiments.common import out_dir, plt, run_cli, save_results, savefig
from nnkit.core import layer

TITLE = "Overfit one minibatch: the sanity check passes for a correct model, fails for a bug"
NAME = "e13_overfit_batch"
BATCH = 32
TARGET = 1e-2
LR = 1e-2


def ShuffleRows(name: str | None = None) -> nnkit.Layer:
    """The bug: in training mode, ``y = x[perm]`` with a new permutation per ``key``.

    Shapes: ``(batch, ...)`` -> same. Evaluation (``train=False``) is the identity.
    """

    def init(key, input_shape):
        return input_shape, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        if not train or key is None:
            return x, {}
        return x[jax.random.permutation(key, x.shape[0])], {}

    return layer("shuffle_rows", init, apply, name=name)


def label_entropy(y: np.ndarray) -> float:
    """``H = -sum_c p_c log p_c`` of the label frequencies: the best loss without the inputs."""
    p = np.bincount(y) / len(y)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def main(out: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Runs the overfit check on a correct and on a broken model; plots both loss curves."""
    out = out_dir(NAME, out)
    steps = 20 if quick else 200
    ds = nnkit.data.load("digits")
    x, y = ds.x[:BATCH], ds.y[:BATCH]
    net = nnkit.models.mlp((128,), 10)
    models = {"correct MLP": net,
              "broken: rows shuffled every step": nnkit.serial(ShuffleRows(name="bug"), net)}
    results = {name: nnkit.overfit_batch(m, "adam", (x, y), steps=steps, target=TARGET, key=0,
                                         learning_rate=LR)
               for name, m in models.items()}
    h = label_entropy(y)

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for (name, r), c in zip(results.items(), ("C0", "C3"), strict=True):
        verdict = "PASSED" if r.passed else "FAILED"
        ax.plot(np.arange(1, len(r.losses) + 1), r.losses, color=c,
                label=f"{name}: {verdict} (final {r.final_loss:.2g})")
    ax.axhline(TARGET, color="k", ls=":", lw=1, label=f"target {TARGET:g}")
    ax.axhline(h, color="gray", ls="--", lw=1, label=f"label entropy {h:.2f}")
    ax.set_yscale("log")
    ax.set_xlabel("step (same 32 examples every step)")
    ax.set_ylabel("training loss (log)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title("nnkit.overfit_batch: Adam 1e-2 on one batch of 32 digits", fontsize=10)
    fig_path = savefig(fig, Path(out) / "overfit_batch.png")

    summary = [
        f"{BATCH} digits, MLP 64-128-10, Adam {LR:g}, {steps} steps, pass if the final loss "
        f"<= {TARGET:g}. Entropy of the batch's labels (the best loss that ignores the "
        f"inputs): {h:.2f}.",
        "",
        "| model | passed | loss after step 1 | final loss |",
        "|---|---|---|---|",
    ]
    for name, r in results.items():
        summary.append(f"| {name} | **{'yes' if r.passed else 'no'}** | {r.losses[0]:.2f} | "
                       f"{r.final_loss:.2g} |")
    res = {
        "summary": summary,
        "figures": [fig_path],
        "metrics": {
            "steps": steps,
            "label_entropy": h,
            "passed": {k: r.passed for k, r in results.items()},
            "final_loss": {k: r.final_loss for k, r in results.items()},
        },
    }
    return save_results(out, res)


if __name__ == "__main__":
    run_cli(main)
