"""Multi-task learning: one shared trunk, a classification head and a regression head.

On two moons, each point has a class (which moon) and a real target, its distance to the
origin ``r = ||x||`` (standardised with training statistics). The network is

    trunk = Dense(64) -> ReLU -> Dense(64) -> ReLU            (shared)
    heads = fanout(Dense(2) "cls" -> logits, Dense(1) "reg" -> r_hat)

and the loss is ``w_cls * CE(logits, y) + w_reg * MSE(r_hat, r)``
(``nnkit.losses.multi_task``). Training with both weights learns both tasks; training with
one weight at 0 leaves the other head at its random initialisation, which the table shows.

    python -m experiments.e06_multitask [--quick] [--out DIR]
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
from experiments.plane import draw_points, draw_regions, plane_grid
from nnkit import layers as L
from nnkit import losses, metrics, optim

TITLE = "Multi-task: a shared trunk with a classification and a regression head"
NAME = "e06_multitask"
TASKS = ("cls", "reg")


def multitask_model(hidden: int = 64) -> nnkit.Layer:
    """``x (2,) -> (logits (2,), r_hat (1,))`` through a shared ReLU trunk."""
    trunk = nnkit.serial(L.Dense(hidden), L.Relu(), L.Dense(hidden), L.Relu(), name="trunk")
    heads = nnkit.fanout(L.Dense(2, name="cls"), L.Dense(1, name="reg"), name="heads")
    return nnkit.serial(trunk, heads)


def make_loss(w_cls: float, w_reg: float):
    """``loss((logits, r_hat), {"cls": y, "reg": r}) -> scalar``: the weighted task sum."""
    mt = losses.multi_task(cls=("cross_entropy", w_cls), reg=("mse", w_reg))

    def loss(pred, targets):
        total, _ = mt(dict(zip(TASKS, pred, strict=True)), targets)
        return total

    return loss


TASK_METRICS = {
    "accuracy": lambda pred, t: metrics.accuracy(pred[0], t["cls"]),
    "r2": lambda pred, t: metrics.r2_score(pred[1], t["reg"]),
    "reg_mse": lambda pred, t: metrics.mse(pred[1], t["reg"]),
    "cls_loss": lambda pred, t: losses.softmax_cross_entropy(pred[0], t["cls"]),
}


def _same(a: Any, b: Any) -> bool:
    """Whether two parameter trees are exactly equal."""
    return all(np.array_equal(x, y) for x, y in zip(
        jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True))


def _data(n: int = 1000):
    ds = nnkit.data.load("moons", n=n, noise=0.15, seed=0)
    (xtr, ytr), (xte, yte) = nnkit.data.split(ds.x, ds.y, (0.75, 0.25), seed=0, stratify=True)
    rtr, rte = (np.linalg.norm(a, axis=1, keepdims=True) for a in (xtr, xte))
    (rtr_z, rte_z), rstats = nnkit.data.standardize(rtr, rte)
    return (xtr, {"cls": ytr, "reg": rtr_z}), (xte, {"cls": yte, "reg": rte_z}), rstats


def _figure(model, ts, test, rstats, hist, path: str) -> str:
    xte, t = test
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))

    def heads(p):
        return model.apply(ts.params, ts.state, jnp.asarray(p))[0]

    draw_regions(axes[0], lambda p: heads(p)[0], xte, t["cls"], 2,
                 title="classification head: predicted moon")
    gx, gy, pts = plane_grid(xte, padding=0.5, resolution=120)
    r_hat = rstats.invert(np.asarray(heads(pts)[1])).reshape(gx.shape)
    levels = np.linspace(0, 2.6, 14)
    cf = axes[1].contourf(gx, gy, r_hat, levels=levels, cmap="viridis", extend="both")
    axes[1].contour(gx, gy, np.hypot(gx, gy), levels=levels[1::2], colors="w",
                    linewidths=0.7, linestyles="--")
    draw_points(axes[1], xte, t["cls"], 2, s=6)
    fig.colorbar(cf, ax=axes[1])
    axes[1].set_title("regression head: predicted |x|\n(white dashed: true |x|)", fontsize=9)
    r_true = rstats.invert(t["reg"])[:, 0]
    r_pred = rstats.invert(np.asarray(heads(xte)[1]))[:, 0]
    axes[2].plot(r_true, r_pred, ".", ms=3)
    lim = [0, max(r_true.max(), r_pred.max()) * 1.05]
    axes[2].plot(lim, lim, "k--", lw=0.8)
    axes[2].set_xlabel("true |x| (test)")
    axes[2].set_ylabel("predicted |x|")
    axes[2].set_title("regression head on the test set", fontsize=9)
    axes[2].grid(alpha=0.3)
    for key, lab in (("train_cls_loss", "classification CE"),
                     ("train_reg_mse", "regression MSE (standardised |x|)"),
                     ("train_loss", "weighted sum")):
        axes[3].semilogy(hist["epoch"], hist[key], label=lab)
    axes[3].set_xlabel("epoch")
    axes[3].set_ylabel("training loss (per task)")
    axes[3].set_title("both task losses fall together", fontsize=9)
    axes[3].grid(alpha=0.3, which="both")
    axes[3].legend(fontsize=8)
    for ax in axes[:2]:
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        ax.set_aspect("equal")
    return savefig(fig, path)


def main(out: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Trains the two-headed network with three task weightings; reports both tasks."""
    out = out_dir(NAME, out)
    epochs = 2 if quick else 60
    train, test, rstats = _data(200 if quick else 1000)
    model = multitask_model()
    weightings = {"both (1, 1)": (1.0, 1.0), "classification only (1, 0)": (1.0, 0.0),
                  "regression only (0, 1)": (0.0, 1.0)}
    if quick:
        weightings = {"both (1, 1)": weightings["both (1, 1)"]}
    runs = {}
    for label, (wc, wr) in weightings.items():
        res = nnkit.fit(model, optim.make("adam", 3e-3), train, test_data=test,
                        loss=make_loss(wc, wr), metrics=TASK_METRICS, epochs=epochs,
                        batch_size=32, key=0, progress=False)
        runs[label] = res
    main_run = runs["both (1, 1)"]
    fig = _figure(model, main_run.train_state, test, rstats, main_run.history,
                  str(out / "multitask.png"))
    r_std = float(rstats.std.reshape(-1)[0])

    summary = [
        f"Two moons (noise 0.15), 75/25 split; trunk 2-64-64 ReLU shared by a 2-logit head "
        f"and a 1-output head; Adam 3e-3, {epochs} epochs, batch 32. Regression target "
        f"|x| standardised (train std {r_std:.3f}). Test set:",
        "",
        "| loss weights (cls, reg) | test accuracy | test R² of \\|x\\| | test RMSE of \\|x\\| |",
        "|---|---|---|---|",
    ]
    table = {}
    for label, res in runs.items():
        m = res.test_metrics
        rmse = float(np.sqrt(m["test_reg_mse"])) * r_std  # back in units of |x|
        table[label] = {"accuracy": m["test_accuracy"], "r2": m["test_r2"], "rmse": rmse}
        summary.append(f"| {label} | {m['test_accuracy']:.1%} | {m['test_r2']:.3f} | "
                       f"{rmse:.3f} |")
    init = nnkit.create_train_state(model, (2,), optim.make("adam", 3e-3), 0).params["heads"]
    untouched = {}
    for label, head in (("classification only (1, 0)", "reg"), ("regression only (0, 1)", "cls")):
        if label in runs:
            untouched[f"{head} head, {label.split(' (')[0]}"] = _same(
                runs[label].train_state.params["heads"][head], init[head])
    summary += ["", "With both weights on, one network solves both tasks."]
    if untouched:
        summary[-1] += (" A head whose loss weight is 0 gets no gradient: its parameters after "
                        "training equal their initial values ("
                        + ", ".join(f"{k}: {v}" for k, v in untouched.items()) + ").")
    results = {
        "summary": summary,
        "figures": [fig],
        "metrics": {"test": table, "epochs": epochs, "zero_weight_head_unchanged": untouched},
    }
    return save_results(out, results)


if __name__ == "__main__":
    run_cli(main)
