"""``nnkit eval``: a run directory's checkpoint evaluated on one of its data splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from nnkit.checkpoint import CheckpointManager
from nnkit.run.fingerprint import check_eval_data
from nnkit.run.prepare import initial_state, prepare_named
from nnkit.run.rundir import RunError, read_run_config
from nnkit.train.gradients import resolve_loss, resolve_metrics
from nnkit.train.step import make_evaluator

__all__ = ["evaluate_run", "default_checkpoint"]


def default_checkpoint(cfg: Any) -> str:
    """``"best"`` when early stopping restores the best epoch (what ``summary.json``'s test
    metrics used), else ``"latest"``."""
    es = cfg.training.early_stopping
    return "best" if es is not None and es.restore_best else "latest"


def evaluate_run(run_dir: str | Path, split: str = "test",
                 checkpoint: str | None = None) -> dict[str, Any]:
    """Metrics of a run's checkpoint on ``split`` (``train``, ``val`` or ``test``).

    The data are rebuilt from the run's ``config.yaml`` (same split seed, standardisation
    fitted on the same training split). When ``split`` differs from the data the run
    started with (its ``run.data_fingerprint``: files under ``data.options.path``
    replaced), a warning on stderr names what differs and the split is evaluated anyway
    (:func:`nnkit.run.fingerprint.check_eval_data`); a run from before the fingerprint was
    recorded gets a note instead. Returns ``{"split", "checkpoint", "epoch", "n", "loss",
    <metric>...}``.

    Raises:
      RunError: unknown split, a split the run does not have, or no such checkpoint.
    """
    if split not in ("train", "val", "test"):
        raise RunError(f"unknown split {split!r}; use train, val or test")
    run_dir = Path(run_dir)
    cfg, meta = read_run_config(run_dir)
    prep = prepare_named(cfg, str(run_dir / "config.yaml"))
    data = {"train": prep.train, "val": prep.val, "test": prep.test}[split]
    if data is None:
        raise RunError(f"the run has no {split} split (data.split = {list(cfg.data.split)})")
    check_eval_data(run_dir, prep, meta, split)  # warns: the numbers describe other data
    which = checkpoint or default_checkpoint(prep.cfg)
    manager = CheckpointManager(run_dir / "checkpoints")
    if which == "best" and not manager.best_path.exists():
        raise RunError(f"{manager.best_path} does not exist")
    if which == "latest" and manager.latest_path() is None:
        raise RunError(f"{run_dir} has no checkpoints")
    ts, meta = manager.restore(jax.eval_shape(lambda: initial_state(prep)), which)
    x, y = data
    n = int(x.shape[0])
    loss_fn = resolve_loss(prep.cfg.loss)
    ev = jax.jit(make_evaluator(prep.model, loss_fn, resolve_metrics(prep.cfg.metrics, loss_fn),
                                n, prep.cfg.data.eval_batch_size))
    out = jax.device_get(ev(ts.params, ts.state, x, y))
    return {"split": split, "checkpoint": which, "epoch": meta.get("epoch"), "n": n,
            **{k: float(np.asarray(v)) for k, v in out.items()}}
