"""The course's 5-point, 3-class example, driven by ``configs/five_points_mlp.yaml``.

Five points in the plane with labels 0, 0, 1, 1, 2. An MLP ``2 -> 16 -> 3`` (ReLU) outputs
logits ``z``; ``p = softmax(z)``, the loss is ``-mean_i log p_{i, y_i}``. With 5 points and
49 parameters the training loss can be driven to ~0 (full batch, Adam): the logits of the
right class grow until every point is classified with probability ~1.

    python -m experiments.e04_five_points [--quick] [--out DIR]
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
from experiments.plane import draw_regions
from nnkit import losses
from nnkit.config import load_config
from nnkit.run import prepare

TITLE = "Five points, three classes: softmax cross entropy driven to ~0"
NAME = "e04_five_points"
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "five_points_mlp.yaml"


def _figure(predict, x, y, history, final_loss, path: str) -> str:
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9.4, 4.0))
    draw_regions(ax0, predict, x, y, 3, padding=1.0, resolution=200, point_size=90,
                 title="decision regions (argmax of softmax)")
    for i, (p, c) in enumerate(zip(x, y, strict=True)):
        ax0.annotate(f"x{i + 1}: class {c}", p, xytext=(7, 5), textcoords="offset points",
                     fontsize=8)
    ax0.set_xlabel("$x_1$")
    ax0.set_ylabel("$x_2$")
    ax1.semilogy(history["epoch"], history["train_loss"], label="training loss (full batch)")
    ax1.axhline(1e-3, color="k", ls="--", lw=0.8, label="1e-3")
    ax1.set_xlabel("step (= epoch: one batch of 5)")
    ax1.set_ylabel("softmax cross entropy")
    ax1.set_title(f"loss -> {final_loss:.1e}", fontsize=9)
    ax1.grid(alpha=0.3, which="both")
    ax1.legend(fontsize=8)
    return savefig(fig, path)


def main(out: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Trains the config's MLP on the five points; tabulates probabilities and argmax."""
    out = out_dir(NAME, out)
    cfg = load_config(CONFIG, overrides=["training.epochs=20"] if quick else ())
    prep = prepare(cfg)
    res = nnkit.fit(prep.model, prep.optimizer, prep.train, loss=cfg.loss,
                    metrics=cfg.metrics, epochs=cfg.training.epochs,
                    batch_size=cfg.data.batch_size, key=cfg.seed, progress=False)
    ts, model = res.train_state, prep.model
    predict = jax.jit(lambda p: model.apply(ts.params, ts.state, p)[0])

    ds = nnkit.data.load("five_points")  # the course's order of the points
    logits = predict(ds.x)
    final_loss = float(losses.softmax_cross_entropy(logits, ds.y))
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    pred = probs.argmax(axis=1)
    accuracy = float(np.mean(pred == ds.y))
    fig = _figure(predict, ds.x, ds.y, res.history, final_loss, str(out / "five_points.png"))

    summary = [
        f"`{CONFIG.parent.name}/{CONFIG.name}`: MLP 2-{cfg.model['hidden'][0]}-3 "
        f"({cfg.model['activation']}), {cfg.optimizer.name} lr {cfg.optimizer.lr:g}, "
        f"{cfg.training.epochs} full-batch steps. Final loss **{final_loss:.2e}**, "
        f"accuracy {accuracy:.0%}.",
        "",
        "| point | x | label | p(class 0) | p(class 1) | p(class 2) | argmax |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, (p, c, pr, k) in enumerate(zip(ds.x, ds.y, probs, pred, strict=True)):
        summary.append(f"| x{i + 1} | ({p[0]:g}, {p[1]:g}) | {c} | "
                       + " | ".join(f"{v:.4f}" for v in pr) + f" | {k} |")
    results = {
        "summary": summary,
        "figures": [fig],
        "metrics": {
            "final_loss": final_loss,
            "accuracy": accuracy,
            "predictions": pred.tolist(),
            "probabilities": probs.tolist(),
            "epochs": cfg.training.epochs,
        },
    }
    return save_results(out, results)


if __name__ == "__main__":
    run_cli(main)
