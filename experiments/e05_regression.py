"""Regression: universal approximation with one hidden layer, and MSE vs L1 with outliers.

Part 1. ``f(x) = w2 . tanh(W1 x + b1) + b2`` with ``H`` hidden units fits ``sin`` (on
``[-pi, pi]``), ``|x|`` and a step (on ``[-1, 1]``) from 200 noise-free samples, for growing
``H``; the error is the mean squared error against the true function on a dense grid. More
units, smaller error: for ``sin`` and ``|x|`` by orders of magnitude up to ``H = 8`` (the
universal approximation theorem says any continuous function on a compact set can be
approximated this way; the step is not continuous, so its error shrinks only slowly, as
the tanh units get steeper). Beyond ``H = 8`` the measured error is no longer monotone in
``H``: with a fixed optimisation budget, the optimiser, not the number of units, sets the
last digits.

Part 2. A line ``y = a x + c`` fitted to data with a few gross outliers: the MSE fit
(``argmin sum r_i^2``, checked against the closed-form least squares solution) is pulled
towards the outliers; the L1 fit (``argmin sum |r_i|``, a median-like estimator) stays
near the clean line. Both are scored against the clean function.

All fits are full batch (one ``lax.scan`` each); the three functions of one width are
trained together with ``jax.vmap``.

    python -m experiments.e05_regression [--quick] [--out DIR]
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import nnkit
import nnkit.data
from experiments.common import out_dir, plt, run_cli, save_results, savefig
from experiments.fullbatch import predict, train_full_batch
from nnkit import layers as L
from nnkit import optim

TITLE = "Regression: universal approximation with one hidden layer; MSE vs L1 with outliers"
NAME = "e05_regression"
FUNCTIONS = {  # name -> (registry name, domain, numpy function)
    "sin": ("sin", (-np.pi, np.pi), np.sin),
    "abs": ("abs", (-1.0, 1.0), np.abs),
    "step": ("step", (-1.0, 1.0), lambda x: (x > 0).astype(np.float64)),
}
LABELS = {"sin": "sin(x)", "abs": "|x|", "step": "step [x > 0]"}
TRUE_LINE = (2.0, -0.5)  # slope, intercept of the clean function in part 2


def one_hidden(width: int) -> nnkit.Layer:
    """``Dense(width) -> tanh -> Dense(1)``: a scalar function of a scalar input."""
    return nnkit.serial(L.Dense(width), L.Tanh(), L.Dense(1))


def _fit_widths(widths, steps: int, n_grid: int) -> dict[str, Any]:
    names = list(FUNCTIONS)
    train = [nnkit.data.load(FUNCTIONS[f][0], n=200, seed=i) for i, f in enumerate(names)]
    xs = jnp.stack([jnp.asarray(d.x) for d in train])
    ys = jnp.stack([jnp.asarray(d.y) for d in train])
    grids = np.stack([np.linspace(*FUNCTIONS[f][1], n_grid) for f in names])[..., None]
    truth = np.stack([FUNCTIONS[f][2](g) for f, g in zip(names, grids, strict=True)])
    sched = optim.schedule("cosine", learning_rate=0.02, decay_steps=steps, alpha=0.05)
    opt = optim.make("adam", sched)
    errors = np.zeros((len(widths), len(names)))
    curves = {}
    for wi, width in enumerate(widths):
        model = one_hidden(width)

        def one(x, y, g, key, model=model):
            ts, _ = train_full_batch(model, "mse", opt, x, y, steps=steps, key=key)
            return predict(model, ts, g)

        keys = jax.random.split(jax.random.key(width), len(names))
        fits = np.asarray(jax.jit(jax.vmap(one))(xs, ys, jnp.asarray(grids, jnp.float32), keys))
        errors[wi] = np.mean((fits - truth) ** 2, axis=(1, 2))
        curves[width] = fits[..., 0]
    return {"names": names, "errors": errors, "curves": curves, "grids": grids[..., 0],
            "truth": truth[..., 0], "train": train}


def _outlier_data(n: int = 40, n_out: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-1, 1, n))
    y = TRUE_LINE[0] * x + TRUE_LINE[1] + 0.1 * rng.standard_normal(n)
    out_idx = np.sort(rng.choice(np.flatnonzero(x > 0.2), n_out, replace=False))
    y[out_idx] += 8.0  # gross errors, all upwards
    return x.astype(np.float32)[:, None], y.astype(np.float32)[:, None], out_idx


def _fit_line(loss: str, x, y, steps: int) -> tuple[float, float]:
    model = L.Dense(1)
    sched = optim.schedule("cosine", learning_rate=0.05, decay_steps=steps, alpha=0.01)
    ts, _ = jax.jit(lambda x, y: train_full_batch(
        model, loss, optim.make("adam", sched), x, y, steps=steps, key=0))(x, y)
    return float(ts.params["w"][0, 0]), float(ts.params["b"][0])


def _figure_widths(res, widths, path: str) -> str:
    names = res["names"]
    fig, axes = plt.subplots(1, 1 + len(names), figsize=(14, 3.4))
    ax = axes[0]
    for j, f in enumerate(names):
        ax.loglog(widths, res["errors"][:, j], "o-", label=LABELS[f])
    ax.set_xlabel("hidden units H")
    ax.set_ylabel("MSE vs true function")
    ax.set_title("error vs width", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    shown = [w for w in widths if w in (1, 2, 4, 16, 64)] or list(widths)
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(shown)))
    for j, f in enumerate(names):
        ax = axes[1 + j]
        ax.plot(res["grids"][j], res["truth"][j], "k", lw=3, alpha=0.35, label="true")
        for w, c in zip(shown, colors, strict=True):
            ax.plot(res["grids"][j], res["curves"][w][j], color=c, lw=1.2, label=f"H={w}")
        ax.set_title(f"fits of {LABELS[f]} ({len(res['train'][j].x)} samples)", fontsize=9)
        ax.set_xlabel("x")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    return savefig(fig, path)


def _figure_outliers(x, y, out_idx, fits, path: str) -> str:
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    clean = np.setdiff1d(np.arange(len(x)), out_idx)
    ax.plot(x[clean, 0], y[clean, 0], "o", color="tab:gray", ms=4, label="data")
    ax.plot(x[out_idx, 0], y[out_idx, 0], "x", color="k", ms=8, mew=2, label="outliers")
    g = np.linspace(-1, 1, 50)
    ax.plot(g, TRUE_LINE[0] * g + TRUE_LINE[1], "k--", lw=1, label="clean function")
    for (name, (a, c)), col in zip(fits.items(), ("tab:red", "tab:blue", "tab:orange"),
                                   strict=False):
        ax.plot(g, a * g + c, color=col, lw=2, label=f"{name} fit: y = {a:.2f}x {c:+.2f}")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title("a line fitted with MSE vs L1 loss, 4 of 40 points corrupted", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return savefig(fig, path)


def main(out: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Fits the three functions for each width, and the line with MSE and L1 losses."""
    out = out_dir(NAME, out)
    widths = (2,) if quick else (1, 2, 4, 8, 16, 64)
    steps = 20 if quick else 4000
    res = _fit_widths(widths, steps, 1000)
    fig1 = _figure_widths(res, widths, str(out / "universal_approximation.png"))

    x, y, out_idx = _outlier_data()
    line_steps = 20 if quick else 3000
    fits = {"MSE": _fit_line("mse", x, y, line_steps), "L1": _fit_line("l1", x, y, line_steps)}
    a_ls, c_ls = np.linalg.lstsq(np.c_[x[:, 0], np.ones(len(x))], y[:, 0], rcond=None)[0]
    grid = np.linspace(-1, 1, 1001)
    clean = TRUE_LINE[0] * grid + TRUE_LINE[1]
    clean_err = {k: float(np.mean((a * grid + c - clean) ** 2)) for k, (a, c) in fits.items()}
    fig2 = _figure_outliers(x, y, out_idx, fits, str(out / "outliers.png"))

    names = res["names"]
    summary = [
        f"One hidden layer of H tanh units, MSE loss, full-batch Adam (cosine decay), {steps} "
        "steps, 200 samples; error = MSE against the true function on 1000 grid points.",
        "",
        "| H | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for wi, w in enumerate(widths):
        summary.append(f"| {w} | " + " | ".join(f"{e:.2e}" for e in res["errors"][wi]) + " |")
    summary += [
        "",
        f"Line y = {TRUE_LINE[0]:g}x {TRUE_LINE[1]:+g} with {len(out_idx)} of {len(x)} points "
        f"shifted up by 8 ({line_steps} steps):",
        "",
        "| loss | slope | intercept | MSE vs clean line |",
        "|---|---|---|---|",
    ]
    for k, (a, c) in fits.items():
        summary.append(f"| {k} | {a:.3f} | {c:.3f} | {clean_err[k]:.4f} |")
    ls_gap = max(abs(fits["MSE"][0] - a_ls), abs(fits["MSE"][1] - c_ls))
    summary += [
        "",
        f"Closed-form least squares gives slope {a_ls:.3f}, intercept {c_ls:.3f} (largest "
        f"difference from the trained MSE fit: {ls_gap:.1e}).",
    ]
    results = {
        "summary": summary,
        "figures": [fig1, fig2],
        "metrics": {
            "widths": list(widths),
            "error_vs_width": {f: res["errors"][:, j].tolist() for j, f in enumerate(names)},
            "line_fits": {k: {"slope": a, "intercept": c} for k, (a, c) in fits.items()},
            "clean_mse": clean_err,
            "least_squares": {"slope": float(a_ls), "intercept": float(c_ls)},
            "mse_fit_vs_least_squares": float(ls_gap),
            "steps": steps,
        },
    }
    return save_results(out, results)


if __name__ == "__main__":
    run_cli(main)
