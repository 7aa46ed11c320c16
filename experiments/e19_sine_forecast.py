"""Sine-wave forecasting with an LSTM: one step ahead, and a long autoregressive rollout.

Driven by ``configs/sine_lstm.yaml``: windows of ``W = 30`` samples ``s_k = sin(w k dt + phi)``
(``dt = 0.1``, random phase ``phi``, frequency ``w ~ U(0.5, 1.5)``) -> the next sample
``s_W``; ``LSTM(32) -> Dense(1)`` trained with the MSE. The network has to infer both the
phase and the frequency from the window.

One-step test MSE is compared with two model-free forecasts: persistence
(``s_W ~ s_{W-1}``) and linear extrapolation (``s_W ~ 2 s_{W-1} - s_{W-2}``).

Rollout: starting from a true window, the model's prediction is appended to the window and
the oldest sample dropped, ``H`` times (``lax.scan``, one compiled loop): errors feed back,
so the rollout error grows with the horizon. The truth is the closed form
``sin(w k dt + phi)``.

    python -m experiments.e19_sine_forecast [--quick] [--out DIR]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import nnkit
from experiments.common import out_dir, plt, run_cli, save_results, savefig
from nnkit.config import load_config
from nnkit.run import prepare

TITLE = "Sine-wave forecasting with an LSTM: one step ahead and an autoregressive rollout"
NAME = "e19_sine_forecast"
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "sine_lstm.yaml"
OMEGAS = (0.6, 1.0, 1.4)  # rollout frequencies (inside the training range)
PHASE = 0.3


def rollout(model: nnkit.Layer, params: Any, state: Any, window: jax.Array,
            horizon: int) -> jax.Array:
    """Autoregressive forecast: ``window`` (B, W, 1) -> the next ``horizon`` values (B, H).

    ``x_{k+1} = model([x_{k-W+1}, ..., x_k])``; the prediction is pushed into the window.
    """

    def step(win, _):
        y, _ = model.apply(params, state, win)  # (B, 1)
        return jnp.concatenate([win[:, 1:], y[:, None, :]], axis=1), y[:, 0]

    _, ys = jax.lax.scan(step, window, None, length=horizon)
    return ys.T


def one_step(model: nnkit.Layer, params: Any, state: Any, series: jax.Array,
             width: int) -> jax.Array:
    """Teacher-forced one-step forecasts: every true window of ``series`` (B, N) -> (B, N-W)."""
    idx = jnp.arange(series.shape[1] - width)[:, None] + jnp.arange(width)[None, :]
    wins = series[:, idx]  # (B, N-W, W)
    b, m, _ = wins.shape
    y, _ = model.apply(params, state, wins.reshape(b * m, width, 1))
    return y.reshape(b, m)


def _figure(hist: dict, curves: dict, width: int, dt: float, path: str) -> str:
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4))
    ax = axes[0, 0]
    ep = np.asarray(hist["epoch"]) + 1
    ax.semilogy(ep, hist["train_loss"], "-o", ms=3, label="train")
    ax.semilogy(ep, hist["val_loss"], "--o", ms=3, label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("one-step MSE (log scale)")
    ax.set_title("training", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    for ax, (w, c) in zip(axes.flat[1:], curves.items(), strict=True):
        t = np.arange(len(c["truth"])) * dt
        tf = t[width:]
        ax.plot(t, c["truth"], color="0.6", lw=4, alpha=0.6,
                label=r"truth $\sin(\omega t + \varphi)$")
        ax.plot(t[:width], c["truth"][:width], "k", lw=2, label=f"given window ({width} pts)")
        ax.plot(tf, c["one_step"], ".", color="tab:green", ms=3, label="one-step (true inputs)")
        ax.plot(tf, c["rollout"], "-", color="tab:blue", lw=1.4,
                label="autoregressive rollout")
        ax.axvline(t[width - 1], color="k", ls=":", lw=0.8)
        ax.set_title(fr"$\omega$ = {w}: rollout MSE {c['rollout_mse']:.1e} over "
                     f"{len(tf)} steps", fontsize=9)
        ax.set_xlabel("t")
        ax.set_ylim(-1.6, 1.6)
        ax.grid(alpha=0.3)
    axes[0, 1].legend(fontsize=7, loc="lower left", ncol=2)
    return savefig(fig, path)


def main(out: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Trains the config's LSTM; one-step test MSE, baselines and rollouts."""
    out = out_dir(NAME, out)
    overrides = ["training.epochs=2", "data.options.n=600"] if quick else []
    cfg = load_config(CONFIG, overrides=overrides)
    prep = prepare(cfg)
    opts = cfg.data.options
    width, dt = int(opts["length"]), float(opts["dt"])
    res = nnkit.fit(prep.model, prep.optimizer, prep.train, val_data=prep.val,
                    test_data=prep.test, loss=cfg.loss, metrics=cfg.metrics,
                    epochs=cfg.training.epochs, batch_size=cfg.data.batch_size, key=cfg.seed,
                    progress=False)
    ts, model = res.train_state, prep.model
    x_te, y_te = prep.test
    test_mse = float(res.test_metrics["test_loss"])
    persistence = float(np.mean((x_te[:, -1, 0] - y_te[:, 0]) ** 2))
    linear = float(np.mean((2 * x_te[:, -1, 0] - x_te[:, -2, 0] - y_te[:, 0]) ** 2))

    horizon = 20 if quick else 150
    k = np.arange(width + horizon)
    truth = np.stack([np.sin(w * k * dt + PHASE) for w in OMEGAS]).astype(np.float32)
    roll = np.asarray(jax.jit(rollout, static_argnums=(0, 4))(
        model, ts.params, ts.state, jnp.asarray(truth[:, :width, None]), horizon))
    ones = np.asarray(jax.jit(one_step, static_argnums=(0, 4))(
        model, ts.params, ts.state, jnp.asarray(truth), width))
    err = roll - truth[:, width:]
    curves, per_w = {}, {}
    for i, w in enumerate(OMEGAS):
        bad = np.flatnonzero(np.abs(err[i]) > 0.1)
        per_w[str(w)] = {
            "rollout_mse": float(np.mean(err[i] ** 2)),
            "rollout_mse_first_30": float(np.mean(err[i, :30] ** 2)),
            "one_step_mse": float(np.mean((ones[i] - truth[i, width:]) ** 2)),
            "first_step_error_above_0.1": int(bad[0]) + 1 if bad.size else None,
        }
        curves[w] = {"truth": truth[i], "one_step": ones[i], "rollout": roll[i],
                     "rollout_mse": per_w[str(w)]["rollout_mse"]}
    fig = _figure(res.history, curves, width, dt, str(out / "forecast.png"))

    rows = [f"| {w} | {m['one_step_mse']:.1e} | {m['rollout_mse_first_30']:.1e} | "
            f"{m['rollout_mse']:.1e} | {m['first_step_error_above_0.1'] or 'never'} |"
            for w, m in per_w.items()]
    summary = [
        f"`configs/sine_lstm.yaml`: LSTM({cfg.model['hidden']}) -> Dense(1), windows of "
        f"{width} samples (dt = {dt}, ω ~ U{tuple(opts['freq'])}), {len(prep.train[0])} "
        f"training windows, {cfg.training.epochs} epochs.",
        "",
        "| one-step forecast | test MSE |",
        "|---|---|",
        f"| LSTM | {test_mse:.2e} |",
        f"| persistence `s_W = s_(W-1)` | {persistence:.2e} |",
        f"| linear extrapolation `s_W = 2 s_(W-1) - s_(W-2)` | {linear:.2e} |",
        "",
        f"Autoregressive rollout for {horizon} steps from a true window (phase {PHASE}):",
        "",
        "| ω | one-step MSE | rollout MSE, first 30 steps | rollout MSE, all steps | "
        "first step with error > 0.1 |",
        "|---|---|---|---|---|",
        *rows,
    ]
    metrics = {"test_mse": test_mse, "persistence_mse": persistence,
               "linear_extrapolation_mse": linear, "horizon": horizon, "rollouts": per_w,
               "final_train_mse": float(res.history["train_loss"][-1]),
               "epochs": cfg.training.epochs}
    return save_results(out, {"summary": summary, "figures": [fig], "metrics": metrics})


if __name__ == "__main__":
    run_cli(main)
