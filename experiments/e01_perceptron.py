"""The perceptron exercise: one neuron with given weights, evaluated by hand and by the model.

``y_hat = sigmoid(w . x + b)`` with ``w = [4, -2]``, ``b = 1``. The course asks for the
outputs on ``(-1, 2)`` (``z = -7``, ``y_hat = sigmoid(-7) ~ 0.00091``) and ``(0, -1)``
(``z = 3``, ``y_hat ~ 0.95257``). The decision boundary ``y_hat = 0.5`` is the line
``w . x + b = 0``, i.e. ``x2 = 2 x1 + 0.5``.

    python -m experiments.e01_perceptron [--quick] [--out DIR]
"""

from __future__ import annotations

import os
from typing import Any

import jax.numpy as jnp
import numpy as np

import nnkit.models
from experiments.common import out_dir, plt, run_cli, save_results, savefig
from nnkit.core import abstract_init

TITLE = "Perceptron: one neuron with w = [4, -2], b = 1"
NAME = "e01_perceptron"

W = np.array([4.0, -2.0], np.float32)
B = 1.0
POINTS = np.array([[-1.0, 2.0], [0.0, -1.0]], np.float32)


def perceptron_params(model: nnkit.Layer) -> dict[str, Any]:
    """The model's parameter tree (shapes from ``init``, not allocated) filled with W, B."""
    _, params, _ = abstract_init(model, (2,))
    w, b = params["dense"]["w"], params["dense"]["b"]
    if w.shape != (2, 1) or b.shape != (1,):
        raise ValueError(f"{NAME}: unexpected perceptron params w{w.shape} b{b.shape}")
    return {"dense": {"w": jnp.asarray(W)[:, None], "b": jnp.asarray([B])}}


def _figure(model: nnkit.Layer, params: dict, outputs: np.ndarray, path: str) -> str:
    gx, gy = np.meshgrid(np.linspace(-2.5, 2.5, 201), np.linspace(-2.5, 3.0, 201))
    grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
    yhat = np.asarray(model.apply(params, {}, grid)[0]).reshape(gx.shape)
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    im = ax.contourf(gx, gy, yhat, levels=np.linspace(0, 1, 11), cmap="coolwarm", alpha=0.8)
    fig.colorbar(im, ax=ax, label=r"$\hat y = \sigma(w\cdot x + b)$")
    cs = ax.contour(gx, gy, yhat, levels=[0.5], colors="k", linewidths=2)
    ax.clabel(cs, fmt={0.5: r"$\hat y = 0.5$"}, fontsize=8)
    for (x1, x2), v in zip(POINTS, outputs, strict=True):
        ax.plot(x1, x2, "o", ms=9, mec="k", mfc="white")
        ax.annotate(f"({x1:g}, {x2:g})\n$\\hat y$ = {v:.5f}", (x1, x2), xytext=(8, -4),
                    textcoords="offset points", fontsize=8,
                    bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8})
    ax.annotate("", xy=(W[0] / 8, W[1] / 8), xytext=(0, 0),
                arrowprops={"arrowstyle": "->", "lw": 1.5})
    ax.text(W[0] / 8 + 0.05, W[1] / 8 - 0.25, "w / 8", fontsize=8)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title("perceptron w = [4, -2], b = 1: boundary $x_2 = 2x_1 + 0.5$", fontsize=9)
    return savefig(fig, path)


def main(out: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Evaluates the neuron on the two course points and draws its decision boundary."""
    del quick  # nothing is trained: the full run is already instant
    out = out_dir(NAME, out)
    model = nnkit.models.perceptron(1, activation="sigmoid")
    params = perceptron_params(model)
    outputs = np.asarray(model.apply(params, {}, POINTS)[0])[:, 0]
    z = POINTS @ W + B
    by_hand = 1.0 / (1.0 + np.exp(-z.astype(np.float64)))
    step_model = nnkit.models.perceptron(1, activation="step")
    classes = np.asarray(step_model.apply(params, {}, POINTS)[0])[:, 0]
    fig = _figure(model, params, outputs, str(out / "decision_boundary.png"))

    summary = [
        "| x | z = w.x + b | model: sigmoid(z) | by hand: 1/(1+e^-z) | step(z) |",
        "|---|---|---|---|---|",
    ]
    for p, zi, o, h, c in zip(POINTS, z, outputs, by_hand, classes, strict=True):
        summary.append(f"| ({p[0]:g}, {p[1]:g}) | {zi:g} | {o:.5f} | {h:.5f} | {c:g} |")
    summary.append("")
    summary.append(
        f"Largest |model - by hand| = {np.max(np.abs(outputs - by_hand)):.1e}. The decision "
        "boundary (y_hat = 0.5) is the line 4 x1 - 2 x2 + 1 = 0."
    )
    results = {
        "summary": summary,
        "figures": [fig],
        "metrics": {
            "outputs": outputs.tolist(),
            "by_hand": by_hand.tolist(),
            "z": z.tolist(),
            "step_classes": classes.tolist(),
            "max_abs_error": float(np.max(np.abs(outputs - by_hand))),
        },
    }
    return save_results(out, results)


if __name__ == "__main__":
    run_cli(main)
