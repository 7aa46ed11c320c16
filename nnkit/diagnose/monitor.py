"""Training-time diagnostics: a ``fit`` callback that snapshots the network every N epochs.

Every ``every`` epochs (host side, between compiled epochs, never inside a step) it records

* histograms of each layer's parameters, of their gradients on a fixed sample batch, and of
  each layer's outputs on that batch (TensorBoard ``params/``, ``grads/``, ``activations/``);
* the learning rate (``logs["lr"]`` or the injected one in the optimizer state) and every
  float in ``logs`` (``logs/<name>``);
* per layer, the relative update ``||p_t - p_prev|| / ||p_prev||`` since the previous
  snapshot (``update_ratio/<layer>``) and, when the train state has a step counter, that
  ratio divided by the steps in between (``update_ratio_per_step/<layer>``: the per-step
  ratio if the updates all pointed one way, a lower bound otherwise; the rule of thumb for
  one step is ~1e-3: much smaller means a too small learning rate, much larger an unstable
  one).

It writes TensorBoard event files (:mod:`nnkit.tensorboard`) and PNGs in ``logdir``:
``histograms_epochNNNN.png`` (one row per layer: weights, gradients, outputs) and
``update_ratio.png`` (the per-layer ratio over epochs, rewritten at each snapshot).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nnkit import losses
from nnkit._checks import check_int
from nnkit.core import Layer
from nnkit.diagnose.probe import make_layer_outputs, param_groups, to_key
from nnkit.tensorboard import EventWriter

__all__ = ["Monitor", "monitor"]


def _field(train_state: Any, name: str, default: Any = None) -> Any:
    if isinstance(train_state, Mapping):
        return train_state.get(name, default)
    return getattr(train_state, name, default)


def _norm(arrays: Mapping[str, np.ndarray]) -> float:
    return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays.values()))


def _learning_rate(train_state: Any, logs: Mapping[str, Any]) -> float | None:
    for k in ("lr", "learning_rate"):
        if k in logs:
            return float(logs[k])
    opt_state = _field(train_state, "opt_state")
    if opt_state is None:
        return None
    try:
        from nnkit.optim import get_lr

        return float(get_lr(opt_state))
    except (ImportError, KeyError, ValueError, TypeError, AttributeError):
        return None


class Monitor:
    """The callable returned by :func:`monitor`: ``cb(epoch, train_state, logs) -> None``.

    Attributes:
      logdir: where event files and PNGs go.
      history: ``{"epoch": [...], "lr": [...], "update_ratio": {layer: [...]},
        "update_ratio_per_step": {layer: [...]}}`` (ratios start at the second snapshot).
      figures: paths of the PNGs written so far.
    """

    def __init__(
        self,
        *,
        every: int,
        logdir: str | os.PathLike,
        model: Layer | None = None,
        x_sample: Any = None,
        y_sample: Any = None,
        loss: Any = "cross_entropy",
        key: Any = 0,
        figures: bool = True,
        start_epoch: int = 0,
    ) -> None:
        every = check_int(every, "monitor: every")
        start_epoch = check_int(start_epoch, "monitor: start_epoch", 0)
        if (x_sample is None) != (model is None):
            raise ValueError("monitor: activations and gradients need both model= and x_sample=")
        if y_sample is not None and x_sample is None:
            raise ValueError("monitor: y_sample= needs x_sample= and model=")
        self.every = every
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.model = model
        self.figures_enabled = figures
        self.x = None if x_sample is None else jnp.asarray(x_sample)
        self.y = None if y_sample is None else jnp.asarray(y_sample)
        self._key = to_key(key)
        self._writer = EventWriter(self.logdir)
        if start_epoch > 0:  # a resumed run: TensorBoard drops the old files' later events
            self._writer.restart(start_epoch)
            self._writer.flush()
        self._prev: dict[str, dict[str, np.ndarray]] | None = None
        self._prev_step: int | None = None
        self.history: dict[str, Any] = {
            "epoch": [], "lr": [], "update_ratio": {}, "update_ratio_per_step": {}
        }
        self.figures: list[str] = []
        self._outputs = None
        self._grads = None
        if model is not None:
            self._names, self._outputs = make_layer_outputs(model, train=True)
            if self.y is not None:
                loss_fn = losses.get(loss)

                @jax.jit
                def grads(p, s, x, y, k):
                    return jax.grad(
                        lambda q: loss_fn(model.apply(q, s, x, key=k, train=True)[0], y))(p)

                self._grads = grads

    # ------------------------------------------------------------------------- recording

    def __call__(self, epoch: int, train_state: Any, logs: Mapping[str, Any]) -> None:
        """Records a snapshot when ``epoch % every == 0``; otherwise does nothing."""
        if epoch % self.every:
            return None
        params = _field(train_state, "params")
        if params is None:
            raise ValueError("monitor: train_state has no params")
        state = _field(train_state, "state") or {}
        step = _field(train_state, "step")
        w = self._writer
        host = {p: {k: np.asarray(v) for k, v in g.items()}
                for p, g in param_groups(jax.device_get(params), self.model).items()}
        for path, g in host.items():
            for leaf, a in g.items():
                w.histogram(f"params/{path}/{leaf}".rstrip("/"), a, epoch)

        grads: dict[str, dict[str, np.ndarray]] = {}
        if self._grads is not None:
            g_tree = jax.device_get(self._grads(params, state, self.x, self.y, self._key))
            grads = {p: {k: np.asarray(v) for k, v in g.items()}
                     for p, g in param_groups(g_tree, self.model).items()}
            for path, g in grads.items():
                for leaf, a in g.items():
                    w.histogram(f"grads/{path}/{leaf}".rstrip("/"), a, epoch)
                w.scalar(f"grad_norm/{path}", _norm(g), epoch)

        acts: dict[str, np.ndarray] = {}
        if self._outputs is not None:
            ys = jax.device_get(self._outputs(params, state, self.x, self._key))
            acts = {p: np.asarray(y) for (p, _), y in zip(self._names, ys, strict=True)}
            for path, a in acts.items():
                w.histogram(f"activations/{path}", a, epoch)

        lr = _learning_rate(train_state, logs)
        if lr is not None:
            w.scalar("lr", lr, epoch)
        for k, v in logs.items():
            if isinstance(v, int | float | np.floating | np.integer):
                w.scalar(f"logs/{k}", float(v), epoch)
        self.history["epoch"].append(epoch)
        self.history["lr"].append(lr)

        step_now = int(step) if step is not None else None
        if self._prev is not None:
            steps = (step_now - self._prev_step) if step_now is not None and \
                self._prev_step is not None else None
            for path, g in host.items():
                old = self._prev.get(path)
                if old is None or old.keys() != g.keys():
                    continue
                ref = _norm(old)
                r = _norm({k: g[k] - old[k] for k in g}) / ref if ref > 0 else math.inf
                self.history["update_ratio"].setdefault(path, []).append((epoch, r))
                w.scalar(f"update_ratio/{path}", r, epoch)
                if steps:
                    self.history["update_ratio_per_step"].setdefault(path, []).append(
                        (epoch, r / steps))
                    w.scalar(f"update_ratio_per_step/{path}", r / steps, epoch)
        self._prev, self._prev_step = host, step_now
        w.flush()
        if self.figures_enabled:
            self._plot(epoch, host, grads, acts)
        return None

    # ------------------------------------------------------------------------- figures

    def _plot(self, epoch: int, host, grads, acts) -> None:
        from matplotlib.figure import Figure

        from nnkit.diagnose.plots import draw_histogram
        from nnkit.plots import new_figure

        # Only the panels drawn get axes, and the margins are fixed in inches: matplotlib's
        # tight layout measures every tick label and cost as much as drawing the figure.
        rows = max(len(host), len(acts), 1)
        height = 1.7 * rows + 0.6
        fig = Figure(figsize=(8.4, height))
        fig.subplots_adjust(left=0.07, right=0.99, bottom=0.45 / height,
                            top=1 - 0.7 / height, wspace=0.32, hspace=0.62)

        def panel(i: int, col: int, values: np.ndarray, title: str, color: str, xlabel: str):
            c, e = np.histogram(values, bins=40)
            draw_histogram(fig.add_subplot(rows, 3, 3 * i + col + 1), c, e, title, color,
                           xlabel)

        for i, (path, g) in enumerate(host.items()):
            panel(i, 0, np.concatenate([a.ravel() for a in g.values()]), f"params {path}",
                  "tab:blue", "weight")
            if path in grads:
                panel(i, 1, np.concatenate([a.ravel() for a in grads[path].values()]),
                      f"grads {path}", "tab:red", "gradient")
        for i, (path, a) in enumerate(acts.items()):
            panel(i, 2, a[np.isfinite(a)], f"output {path}", "tab:green", "output value")
        fig.suptitle(f"epoch {epoch}: weights | gradients (sample batch) | layer outputs",
                     fontsize=10, y=1 - 0.12 / height)
        hist_path = self.logdir / f"histograms_epoch{epoch:04d}.png"
        fig.savefig(hist_path, dpi=80)
        self.figures.append(str(hist_path))

        per_step = bool(self.history["update_ratio_per_step"])
        series = self.history["update_ratio_per_step" if per_step else "update_ratio"]
        if series:
            fig, ax = new_figure(figsize=(5.5, 3.4))
            fig.subplots_adjust(left=0.17, right=0.97, bottom=0.14, top=0.91)
            for path, pts in series.items():
                e, r = zip(*pts, strict=True)
                ax.semilogy(e, np.maximum(r, 1e-12), "o-", ms=3, label=path)
            if per_step:
                ax.axhline(1e-3, color="k", lw=0.6, ls="--", label="1e-3 rule of thumb")
            ax.set_xlabel("epoch")
            ax.set_ylabel("|update| / |param| " + ("per step" if per_step else
                                                   "since last snapshot"))
            ax.set_title("relative update per layer")
            ax.legend(fontsize=6)
            path = str(self.logdir / "update_ratio.png")
            fig.savefig(path, dpi=80)
            if path not in self.figures:
                self.figures.append(path)

    def close(self) -> None:
        """Flushes and closes the TensorBoard writer."""
        self._writer.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def monitor(
    *,
    every: int = 1,
    logdir: str | os.PathLike,
    model: Layer | None = None,
    x_sample: Any = None,
    y_sample: Any = None,
    loss: Any = "cross_entropy",
    key: Any = 0,
    figures: bool = True,
    start_epoch: int = 0,
) -> Monitor:
    """A ``fit`` callback recording per-layer diagnostics every ``every`` epochs.

    ``fit(..., callbacks=[monitor(every=5, logdir=run_dir, model=model, x_sample=xs,
    y_sample=ys)])``. Without ``model``/``x_sample`` only parameter histograms, update
    ratios and the learning rate are recorded; without ``y_sample`` no gradients.
    ``x_sample`` (a small fixed batch, e.g. 128 examples) is run in training mode with the
    fixed ``key``; the two jitted functions (outputs, gradients) compile once. Call
    ``.close()`` (or use it as a context manager) at the end. See the module docstring for
    what is written where. ``start_epoch`` > 0 (training resumed at that epoch into a
    ``logdir`` that already has event files) marks a restart there, so TensorBoard drops
    the earlier files' events of the epochs trained again.
    """
    return Monitor(every=every, logdir=logdir, model=model, x_sample=x_sample,
                   y_sample=y_sample, loss=loss, key=key, figures=figures,
                   start_epoch=start_epoch)
