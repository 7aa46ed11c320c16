"""Why activations: without a nonlinearity, a deep MLP is one affine map.

Two MLPs ``2 -> H -> H -> 2`` (``nnkit.models.mlp``) are trained with Adam and softmax cross
entropy on the circles and the spirals: one with the identity as activation, one with ReLU.
The linear one collapses to ``x @ W + b`` with ``W = W1 W2 W3`` (checked on the trained
parameters) and cannot do better than a straight line; the ReLU one bends the boundary.

The first hidden layer's view of the plane: unit ``j`` computes ``act(w_j . x + b_j)``. For
the identity every unit is a tilted plane (a ramp); with ReLU it is a hinge, flat on one side
of the line ``w_j . x + b_j = 0``, and the next layers combine these creases.

Then the nonlinearities against each other on the spirals, the same MLP, optimizer and
budget for each (three seeds, trained together by ``nnkit.sweep``): sigmoid, tanh, ReLU and
leaky ReLU (slope 0.01 below 0). The held-out quarter is only scored, never used to choose.

    python -m experiments.e03_activations [--quick] [--out DIR]
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from matplotlib.gridspec import GridSpec, GridSpecFromSubplotSpec

import nnkit
import nnkit.data
import nnkit.models
from experiments.common import out_dir, plt, run_cli, save_results, savefig
from experiments.plane import draw_regions, plane_grid
from nnkit import optim

TITLE = "Why activations: a linear MLP stays linear, a ReLU MLP separates circles and spirals"
NAME = "e03_activations"
DATASETS = {"circles": {"n": 600, "noise": 0.08}, "spirals": {"n": 600, "noise": 0.03}}
ACTS = ("linear", "relu")
N_UNITS = 4  # hidden units shown per model
COMPARED = ("sigmoid", "tanh", "relu", "leaky_relu")
SEEDS = (0, 1, 2)


def first_layer(model: nnkit.Layer) -> nnkit.Layer:
    """The model up to its first activation (``flatten, dense_0, act_0``), same param names."""
    return nnkit.serial(*[lyr for _, lyr in model.children[:3]])


def collapsed_affine(params: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` of the single affine map equal to a stack of Dense layers without
    activations: ``W = W1 W2 ... Wk``, ``b = (...(b1 W2 + b2) W3 ...) + bk``."""
    names = [n for n in params if "w" in params[n]]  # dense_0, dense_1, ..., out (in order)
    w = np.eye(np.asarray(params[names[0]]["w"]).shape[0])
    b = np.zeros(w.shape[1])
    for n in names:
        wi, bi = np.asarray(params[n]["w"], np.float64), np.asarray(params[n]["b"], np.float64)
        w, b = w @ wi, b @ wi + bi
    return w, b


def _train(ds_name: str, act: str, hidden: tuple[int, ...], epochs: int) -> dict[str, Any]:
    ds = nnkit.data.load(ds_name, **DATASETS[ds_name], seed=0)
    (xtr, ytr), (xte, yte) = nnkit.data.split(ds.x, ds.y, (0.75, 0.25), seed=0, stratify=True)
    model = nnkit.models.mlp(hidden, 2, activation=act)
    res = nnkit.fit(model, optim.make("adam", 1e-2), (xtr, ytr), test_data=(xte, yte),
                    epochs=epochs, batch_size=32, key=0, progress=False)
    ts = res.train_state
    predict = jax.jit(lambda p: model.apply(ts.params, ts.state, p)[0])
    units = jax.jit(lambda p: first_layer(model).apply(ts.params, ts.state, p)[0])
    return {"model": model, "ts": ts, "x": ds.x, "y": ds.y, "xte": xte, "yte": yte,
            "predict": predict, "units": units, "history": res.history,
            "test_accuracy": res.test_metrics["test_accuracy"],
            "train_accuracy": res.history["train_accuracy"][-1]}


def _unit_order(params: dict, k: int) -> np.ndarray:
    """The ``k`` first-layer units with the largest outgoing weight norm (the ones used)."""
    names = [n for n in params if "w" in params[n]]
    w_next = np.asarray(params[names[1]]["w"])
    return np.argsort(-np.linalg.norm(w_next, axis=1))[:k]


def _figure(runs: dict, path: str) -> str:
    names = list(dict.fromkeys(d for d, _ in runs))
    fig = plt.figure(figsize=(12, 3.1 * len(names) + 0.4))
    outer = GridSpec(len(names), 3, figure=fig, width_ratios=[1, 1, 1.5])
    for r, ds_name in enumerate(names):
        for c, act in enumerate(ACTS):
            run = runs[ds_name, act]
            ax = fig.add_subplot(outer[r, c])
            draw_regions(ax, run["predict"], run["xte"], run["yte"], 2, padding=0.3,
                         title=f"{ds_name}, {act} MLP: test acc {run['test_accuracy']:.1%}")
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
        inner = GridSpecFromSubplotSpec(len(ACTS), N_UNITS, subplot_spec=outer[r, 2],
                                        hspace=0.25, wspace=0.05)
        for c, act in enumerate(ACTS):
            run = runs[ds_name, act]
            gx, gy, pts = plane_grid(run["x"], padding=0.3, resolution=60)
            h = np.asarray(run["units"](pts))
            for j, u in enumerate(_unit_order(run["ts"].params, N_UNITS)):
                ax = fig.add_subplot(inner[c, j])
                ax.imshow(h[:, u].reshape(gx.shape), origin="lower", cmap="viridis",
                          extent=(gx.min(), gx.max(), gy.min(), gy.max()))
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{act} unit {u}", fontsize=7)
                if j == 0:
                    ax.set_ylabel(f"{ds_name}\n{act}", fontsize=7)
    fig.suptitle("left: predicted class regions with the test points; right: first hidden "
                 "layer units act(w.x + b) over the plane (yellow = high)", fontsize=10)
    return savefig(fig, path)


def compare(epochs: int, hidden: tuple[int, ...], seeds=SEEDS) -> dict[str, Any]:
    """Each activation of :data:`COMPARED` on the spirals, one sweep over ``seeds`` each:
    ``{act: {"train_loss": (seeds, epochs), "test_accuracy": (seeds, epochs), ...}}``."""
    ds = nnkit.data.load("spirals", **DATASETS["spirals"], seed=0)
    (xtr, ytr), (xte, yte) = nnkit.data.split(ds.x, ds.y, (0.75, 0.25), seed=0, stratify=True)
    out = {}
    for act in COMPARED:
        res = nnkit.sweep(nnkit.models.mlp(hidden, 2, activation=act), "adam", (xtr, ytr),
                          learning_rates=[1e-2], seeds=list(seeds), val_data=(xte, yte),
                          epochs=epochs, batch_size=32)
        loss = np.array([h["train_loss"] for h in res.histories])
        acc = np.array([h["val_accuracy"] for h in res.histories])
        reached = [int(np.argmax(a >= 0.95)) + 1 if np.any(a >= 0.95) else None for a in acc]
        out[act] = {"train_loss": loss, "test_accuracy": acc, "epochs_to_95": reached}
    return out


def _compare_figure(cmp: dict, path: str) -> str:
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.6))
    for act, r in cmp.items():
        ep = np.arange(1, r["train_loss"].shape[1] + 1)
        line, = ax0.semilogy(ep, np.median(r["train_loss"], axis=0), label=act)
        ax0.fill_between(ep, r["train_loss"].min(0), r["train_loss"].max(0), alpha=0.2,
                         color=line.get_color())
        ax1.plot(ep, np.median(r["test_accuracy"], axis=0), color=line.get_color(), label=act)
    ax0.set_xlabel("epoch")
    ax0.set_ylabel("training cross entropy (log)")
    ax0.set_title("spirals: median over 3 seeds (band: min-max)", fontsize=9)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("held-out accuracy")
    ax1.set_ylim(0.4, 1.01)
    ax1.set_title("held-out accuracy (median over 3 seeds)", fontsize=9)
    for ax in (ax0, ax1):
        ax.grid(alpha=0.3, which="both")
    ax1.legend(loc="lower right", fontsize=8)
    return savefig(fig, path)


def main(out: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Trains the linear and ReLU MLPs on both data sets; draws regions and hidden units."""
    out = out_dir(NAME, out)
    epochs = 2 if quick else 150
    hidden = (32, 32)
    names = ["circles"] if quick else list(DATASETS)
    runs = {(d, a): _train(d, a, hidden, epochs) for d in names for a in ACTS}

    collapse_err = {}
    for d in names:
        run = runs[d, "linear"]
        w, b = collapsed_affine(run["ts"].params)
        direct = np.asarray(run["predict"](run["xte"]), np.float64)
        collapse_err[d] = float(np.max(np.abs(direct - (run["xte"] @ w + b))))
    fig = _figure(runs, str(out / "activations.png"))
    cmp = compare(epochs, hidden, SEEDS[:1] if quick else SEEDS)
    fig_cmp = _compare_figure(cmp, str(out / "compare.png"))

    summary = [
        f"MLP 2-{hidden[0]}-{hidden[1]}-2, Adam 1e-2, {epochs} epochs, batch 32, "
        "75/25 stratified split (600 points).",
        "",
        "| data | activation | train accuracy | test accuracy |",
        "|---|---|---|---|",
    ]
    for (d, a), run in runs.items():
        summary.append(f"| {d} | {a} | {run['train_accuracy']:.1%} | {run['test_accuracy']:.1%} |")
    summary += [
        "",
        "The trained linear MLPs equal one affine map x @ (W1 W2 W3) + b: largest difference "
        + ", ".join(f"{d} {e:.1e}" for d, e in collapse_err.items()) + ".",
        "",
        f"Nonlinearities on the spirals, the same MLP, Adam 1e-2 and {epochs} epochs for each, "
        f"seeds {list(SEEDS[:len(cmp['relu']['epochs_to_95'])])}:",
        "",
        "| activation | final train loss (median) | held-out accuracy (mean +- std) "
        "| epochs to 95% held-out (per seed) |",
        "|---|---|---|---|",
    ]
    for act, r in cmp.items():
        final = r["test_accuracy"][:, -1]
        summary.append(
            f"| {act} | {np.median(r['train_loss'][:, -1]):.2e} | {final.mean():.1%} +- "
            f"{final.std():.1%} | "
            f"{', '.join('-' if e is None else str(e) for e in r['epochs_to_95'])} |")
    results = {
        "summary": summary,
        "figures": [fig, fig_cmp],
        "metrics": {
            "test_accuracy": {f"{d}_{a}": r["test_accuracy"] for (d, a), r in runs.items()},
            "train_accuracy": {f"{d}_{a}": r["train_accuracy"] for (d, a), r in runs.items()},
            "linear_collapse_max_abs_diff": collapse_err,
            "compared": {a: {"final_train_loss": r["train_loss"][:, -1].tolist(),
                             "final_test_accuracy": r["test_accuracy"][:, -1].tolist(),
                             "epochs_to_95": r["epochs_to_95"]} for a, r in cmp.items()},
            "epochs": epochs,
        },
    }
    return save_results(out, results)


if __name__ == "__main__":
    run_cli(main)
