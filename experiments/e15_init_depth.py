"""Initialisation and depth: why a 10-layer network trains with He init and ReLU, and not with
a naive init.

Ten Dense layers (64 -> 9 x 128 -> 10) with sigmoid or ReLU, the weights drawn from
``N(0, 1)``, ``N(0, 0.01^2)`` or He (``N(0, 2 / fan_in)``), biases zero. At initialisation,
on one batch of 512 standardised digits, we measure per layer the standard deviation of the
activations and the norm of the gradient of the loss with respect to the layer's weights:

* ``N(0, 1)``: pre-activations have variance ``fan_in`` -- sigmoids saturate (outputs
  pinned near 0 or 1), ReLU activations grow ~``sqrt(fan_in / 2) = 8x`` per layer
  (explode). Measured, the saturated sigmoids' first-layer gradients do not vanish: the
  large weights make up for the small slopes, and that network trains part of the way;
* ``N(0, 0.01^2)``: the signal shrinks layer after layer (ReLU: ~``0.08x`` per layer) and so
  do the gradients of the first layers;
* He: ReLU keeps the activation variance constant through depth (``Var w = 2 / fan_in``).
  It is derived for ReLU: with sigmoids the first layer's gradient is ~3e-5 of the last
  layer's and the network does not learn in this budget.

Then each network is trained with SGD + momentum (same learning rate, 20 epochs).

    python -m experiments.e15_init_depth [--quick] [--out DIR]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import nnkit
import nnkit.data
from experiments.common import out_dir, plt, run_cli, save_results, savefig
from nnkit import initializers as inits
from nnkit import layers as L
from nnkit import losses, optim

TITLE = "Initialisation and depth: 10 layers, sigmoid vs ReLU, N(0,1) / N(0,0.01) / He init"
NAME = "e15_init_depth"
DEPTH = 10  # Dense layers
WIDTH = 128
INITS = {"N(0,1)": lambda: inits.normal(1.0), "N(0,0.01)": lambda: inits.normal(0.01),
         "He": lambda: inits.he_normal()}
ACTS = ("sigmoid", "relu")
LR = 0.01
BATCH = 32


def deep_mlp(activation: str, w_init) -> nnkit.Layer:
    """``flatten -> [dense_i (WIDTH) -> act_i] x (DEPTH-1) -> out (10)``, zero biases."""
    parts: list[nnkit.Layer] = [L.Flatten(name="flatten")]
    for i in range(DEPTH - 1):
        parts += [L.Dense(WIDTH, w_init=w_init, b_init=inits.zeros, name=f"dense_{i}"),
                  L.Activation(activation, name=f"act_{i}")]
    parts.append(L.Dense(10, w_init=w_init, b_init=inits.zeros, name="out"))
    return nnkit.serial(*parts)


def layer_stats(model: nnkit.Layer, params: dict, x: jax.Array, y: jax.Array) -> dict:
    """Per Dense layer: std of its activation output (the logits for the last one) and
    ``||dL/dW||_F`` for the mean cross-entropy ``L`` on the batch ``(x, y)``."""
    dense = [n for n, _ in model.children if n.startswith("dense") or n == "out"]

    def forward(p):
        h, stds = x, {}
        for n, lyr in model.children:
            h, _ = lyr.apply(p.get(n, {}), {}, h)
            if n.startswith("act_"):
                stds[f"dense_{n[4:]}"] = jnp.std(h)
        stds["out"] = jnp.std(h)
        return losses.softmax_cross_entropy(h, y), stds

    grads, stds = jax.jit(jax.grad(forward, has_aux=True))(params)
    return {"act_std": np.array([float(stds[n]) for n in dense]),
            "grad_norm": np.array([float(jnp.linalg.norm(grads[n]["w"])) for n in dense])}


def _data() -> tuple:
    ds = nnkit.data.load("digits")
    train, val = nnkit.data.split(ds.x, ds.y, (0.8, 0.2), seed=0, stratify=True)
    (xtr, xva), _ = nnkit.data.standardize(train[0], val[0])
    return (xtr, train[1]), (xva, val[1])


def _figure(runs: dict, path: Path) -> str:
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.8))
    colors = {"N(0,1)": "C3", "N(0,0.01)": "C0", "He": "C2"}
    styles = {"sigmoid": "--", "relu": "-"}
    layers = np.arange(1, DEPTH + 1)
    for (act, init), r in runs.items():
        kw = {"color": colors[init], "ls": styles[act], "marker": "o", "ms": 3,
              "label": f"{act}, {init}"}
        axes[0].plot(layers, r["act_std"], **kw)
        axes[1].plot(layers, np.maximum(r["grad_norm"], 1e-30), **kw)
        h = r["history"]
        if h.get("val_accuracy"):
            axes[2].plot(np.asarray(h["epoch"]) + 1, h["val_accuracy"], color=colors[init],
                         ls=styles[act], label=f"{act}, {init}")
    axes[0].set_ylabel("std of the layer's output")
    axes[0].set_title("activations at init (forward)", fontsize=9)
    axes[1].set_ylabel("||dL/dW|| of the layer")
    axes[1].set_title("weight gradients at init (backward)", fontsize=9)
    for ax in axes[:2]:
        ax.set_yscale("log")
        ax.set_xlabel("layer (1 = input side)")
        ax.set_xticks(layers)
    stuck = [f"{a}, {i}" for (a, i), r in runs.items() if r["val_accuracy"] < 0.2]
    gone = [f"{a}, {i}" for (a, i), r in runs.items() if np.isnan(r["val_accuracy"])]
    note = ("at chance (~10%):\n" + "\n".join(stuck) if stuck else "") + (
        "\ndiverged (no curve):\n" + "\n".join(gone) if gone else "")
    if note:
        axes[2].text(0.97, 0.25, note.strip(), transform=axes[2].transAxes, ha="right",
                     va="bottom", fontsize=7, bbox={"fc": "white", "alpha": 0.8})
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("validation accuracy")
    axes[2].set_title(f"training: SGD momentum 0.9, lr {LR:g}", fontsize=9)
    axes[2].set_ylim(0, 1)
    for ax in axes:
        ax.grid(alpha=0.3, which="major")
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"{DEPTH}-layer MLP (width {WIDTH}) on digits: colour = init, dashed = "
                 "sigmoid, solid = ReLU (missing curves: training diverged)", fontsize=10)
    return savefig(fig, path)


def main(out: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Per-layer statistics at init and training curves for each activation x init."""
    out = out_dir(NAME, out)
    epochs = 1 if quick else 20
    combos = ([("relu", "N(0,1)"), ("relu", "He")] if quick
              else [(a, i) for a in ACTS for i in INITS])
    train, val = _data()
    xb, yb = jnp.asarray(train[0][:512]), jnp.asarray(train[1][:512])
    runs = {}
    for act, init in combos:
        model, opt = deep_mlp(act, INITS[init]()), optim.make("momentum", LR)
        # the statistics are taken at the very parameters fit starts from (same key)
        params = nnkit.create_train_state(model, train[0].shape[1:], opt, 0).params
        stats = layer_stats(model, params, xb, yb)
        res = nnkit.fit(model, opt, train, val_data=val, epochs=epochs, batch_size=BATCH,
                        key=0, progress=False)
        h = res.history
        runs[act, init] = {**stats, "history": h, "stop_reason": res.stop_reason,
                           "val_accuracy": h["val_accuracy"][-1] if h.get("val_accuracy")
                           else float("nan")}
    figs = [_figure(runs, out / "init_depth.png")]
    summary = [
        f"{DEPTH} Dense layers 64-{WIDTH}x{DEPTH - 1}-10 on {len(train[1])} digits "
        f"(standardised), zero biases; statistics on one batch of 512 at init; training "
        f"SGD momentum 0.9, lr {LR:g}, batch {BATCH}, {epochs} epochs.",
        "",
        "| activation | init | output std: layer 1 -> 9 -> logits | dL/dW norm: layer 1 / "
        "layer 10 | val accuracy | training |",
        "|---|---|---|---|---|---|",
    ]
    for (act, init), r in runs.items():
        s, g = r["act_std"], r["grad_norm"]
        status = "ok" if r["stop_reason"] == "completed" else "diverged (non-finite loss)"
        va = r["val_accuracy"]
        summary.append(
            f"| {act} | {init} | {s[0]:.2g} -> {s[-2]:.2g} -> {s[-1]:.2g} | "
            f"{g[0]:.1e} / {g[-1]:.1e} | {'-' if np.isnan(va) else f'{va:.1%}'} | {status} |")
    results = {
        "summary": summary,
        "figures": figs,
        "metrics": {
            "epochs": epochs,
            **{f"{a}_{i}": {"act_std": r["act_std"].tolist(), "grad_norm": r["grad_norm"].tolist(),
                            "val_accuracy": r["val_accuracy"], "stop_reason": r["stop_reason"]}
               for (a, i), r in runs.items()},
        },
    }
    return save_results(out, results)


if __name__ == "__main__":
    run_cli(main)
