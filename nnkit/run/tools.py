"""``nnkit summary``, ``nnkit lr-find``, ``nnkit sweep`` and ``nnkit diagnose`` on a config."""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import yaml

from nnkit.config import Config, ConfigError, config_to_dict, overridden, parse_config
from nnkit.core import summary as layer_summary
from nnkit.run.prepare import prepare_named, schedule_of_lr
from nnkit.run.rundir import (
    RunError,
    check_out_dir,
    check_run_root,
    check_writable,
    new_run_dir,
    write_json,
)

__all__ = ["model_summary", "lr_find_run", "check_plot_path", "parse_grid", "sweep_run",
           "SweepRunResult", "FAST_SWEEP_KEYS", "format_table", "diagnose_run",
           "DiagnoseResult"]

FAST_SWEEP_KEYS = {"optimizer.lr": "learning_rates", "optimizer.weight_decay": "weight_decays",
                   "seed": "seeds"}
"""Grid keys :func:`nnkit.train.sweep` can vary inside one compiled program."""


def model_summary(cfg: Config, *, file: str | None = None,
                  overrides: Sequence[str] = ()) -> str:
    """The :func:`nnkit.summary` table of the config's model on its data's input shape
    (``overrides``: the ``--set`` values ``cfg`` was parsed with, named in errors)."""
    prep = prepare_named(cfg, file, overrides)
    head = (f"model {prep.cfg.model}\ndata {cfg.data.dataset}: train {len(prep.train[0])}"
            + (f", val {len(prep.val[0])}" if prep.val is not None else "")
            + (f", test {len(prep.test[0])}" if prep.test is not None else ""))
    return head + "\n" + layer_summary(prep.model, prep.input_shape, print_fn=None)


def plot_formats() -> list[str]:
    """The file suffixes (without the dot) matplotlib can save a figure as."""
    from matplotlib.backend_bases import FigureCanvasBase

    return sorted(FigureCanvasBase.get_supported_filetypes())


def check_plot_path(out: str | Path) -> Path:
    """The file a plot for ``out`` is saved to, checked before any work: ``out``, with
    ``.png`` added when it has no suffix (as matplotlib would); its suffix must be a format
    matplotlib writes, and it must be a file nnkit can replace or create (its directory is
    created if needed).

    Raises:
      RunError: ``out`` is a directory, has another suffix, or cannot be written.
    """
    path = Path(out)
    if path.is_dir():
        raise RunError(f"--out {path} is a directory; give a file name such as "
                       f"{path / 'lr_find.png'}")
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    formats = plot_formats()
    if path.suffix[1:].lower() not in formats:
        raise RunError(f"--out {path}: cannot save a plot as {path.suffix!r}; use one of "
                       + ", ".join("." + f for f in formats))
    check_writable(path, f"--out {path}", file=True)
    return path


def lr_find_run(cfg: Config, out: str | Path, *, steps: int = 100, min_lr: float = 1e-7,
                max_lr: float = 10.0, file: str | None = None,
                overrides: Sequence[str] = ()) -> tuple[Any, Path]:
    """Runs :func:`nnkit.train.lr_find` with the config's model, data, loss and optimizer
    (its ``lr`` and schedule are replaced by the range test) and saves the plot to ``out``
    (:func:`check_plot_path`, before the range test). Returns ``(LRFindResult, plot_path)``,
    the path of the file written."""
    from nnkit.train import lr_find

    out = check_plot_path(out)
    prep = prepare_named(cfg, file, overrides)
    kwargs: dict[str, Any] = dict(cfg.optimizer.options)
    if cfg.optimizer.weight_decay:
        kwargs["weight_decay"] = cfg.optimizer.weight_decay
    if cfg.optimizer.clip_norm is not None:
        kwargs["clip_norm"] = cfg.optimizer.clip_norm
    try:
        res = lr_find(prep.model, cfg.optimizer.name, prep.train, loss=cfg.loss,
                      batch_size=cfg.data.batch_size, min_lr=min_lr, max_lr=max_lr, steps=steps,
                      key=cfg.seed, **kwargs)
    except ValueError as e:
        raise ConfigError(str(e), key="lr-find") from None
    return res, Path(res.plot(str(out)))


class DiagnoseResult(NamedTuple):
    """What :func:`diagnose_run` returns: the :class:`nnkit.diagnose.Report`, the directory
    it was written to, and the figure paths."""

    report: Any
    out_dir: Path
    figures: list[str]


def diagnose_run(cfg: Config, out: str | Path | None = None, *, file: str | None = None,
                 base: str | Path = "runs", overrides: Sequence[str] = ()) -> DiagnoseResult:
    """:func:`nnkit.diagnose.diagnose_dataset` on the model and training split ``nnkit train``
    would use (same split, standardisation, output width and precision policy), with the
    config's loss and seed; writes ``report.txt``, ``report.json`` and the figures
    (``report.plot``) to ``out`` (default ``<base>/<config-stem>-diagnose-<timestamp>``), which
    must not exist or be empty (checked, with whether it can be written, before the diagnosis
    runs).

    The checks run on the training split only (val/test stay unseen), with their own probe
    settings (Adam 1e-3 for the overfitting check: see :func:`nnkit.diagnose.diagnose`).
    """
    import json

    from nnkit.data import Dataset
    from nnkit.diagnose import diagnose_dataset

    if out is not None:  # before the (expensive) diagnosis
        check_out_dir(out)
    else:
        check_run_root(base)
    prep = prepare_named(cfg, file, overrides)
    x, y = prep.train
    num_targets = prep.num_classes if prep.num_classes is not None else int(
        np.shape(y)[-1] if np.ndim(y) > 1 else 1)
    ds = Dataset(x=x, y=y, input_shape=prep.input_shape, num_classes=prep.num_classes,
                 num_targets=num_targets, class_names=(), task=prep.task,
                 name=cfg.data.dataset)
    report = diagnose_dataset(prep.model, ds, loss=prep.cfg.loss, key=prep.cfg.seed)
    out_dir = new_run_dir(file, out, base=base, suffix="-diagnose")
    (out_dir / "report.txt").write_text(str(report) + "\n", encoding="utf-8")
    (out_dir / "report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n",
                                         encoding="utf-8")
    figures = [str(f) for f in report.plot(out_dir)]
    return DiagnoseResult(report, out_dir, figures)


def _split_top(text: str) -> list[str]:
    """Splits on commas outside brackets/braces (``[64,32],[128]`` -> two items)."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["optimizer.lr=1e-4,1e-3", "seed=0,1"]`` -> ``{key: [values]}`` (YAML scalars)."""
    from nnkit.config import load_yaml_text, yaml_numbers

    grid: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{item!r} is not of the form key=v1,v2,...", key="--grid")
        key, text = item.split("=", 1)
        key = key.strip()
        if key in grid:
            raise ConfigError(f"{key!r} given twice", key="--grid")
        try:
            values = [yaml_numbers(load_yaml_text(v)) for v in _split_top(text)]
        except yaml.YAMLError as e:
            raise ConfigError(f"{key}: not YAML: {getattr(e, 'problem', None) or e}",
                              key="--grid") from None
        if not values:
            raise ConfigError(f"no values for {key!r}", key="--grid")
        grid[key] = values
    if not grid:
        raise ConfigError("give at least one --grid key=v1,v2,...", key="--grid")
    return grid


def _dump_value(v: Any) -> str:
    return yaml.safe_dump(v, default_flow_style=True, width=10**6).strip().removesuffix("...")\
        .strip()


def separate_run_reasons(cfg: Config, grid: dict[str, list[Any]]) -> list[str]:
    """Why a sweep of ``grid`` over ``cfg`` cannot train as one compiled program (empty when it
    can): the grid keys and config settings :func:`nnkit.train.sweep` does not vary or run."""
    reasons = [f"the grid varies {k}" for k in grid if k not in FAST_SWEEP_KEYS]
    if cfg.optimizer.schedule is not None:
        from nnkit.train.sweep import proportional_schedule

        try:  # one schedule shape for all points, each scaled by its rate
            proportional_schedule(schedule_of_lr(cfg, 1000), cfg.optimizer.name)
        except ValueError as e:
            reasons.append(f"optimizer.schedule: {str(e).removeprefix('sweep: ')}")
    checks = [("optimizer.accumulate", cfg.optimizer.accumulate != 1),
              ("data.augmentation", bool(cfg.data.augmentation)),
              ("training.grad_mode", cfg.training.grad_mode != "batch"),
              ("training.l1", cfg.training.l1 != 0),
              ("training.l2", cfg.training.l2 != 0)]
    return reasons + [f"the config sets {key}" for key, on in checks if on]


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain-text table (floats with 4 significant digits)."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if not math.isfinite(v) else f"{v:.4g}"
        return "-" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True))
    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


def _test_metrics(prep: Any, res: Any) -> list[dict[str, float]]:
    """Each swept model's ``test_*`` metrics, as a separate run reports them (the returned
    params: the best epoch's with ``restore_best``); one compiled evaluator for all."""
    if prep.test is None:
        return [{} for _ in res.configs]
    import jax

    from nnkit.train.step import make_evaluator

    n = int(jax.tree_util.tree_leaves(prep.test[0])[0].shape[0])
    ev = jax.jit(make_evaluator(prep.model, prep.cfg.loss, prep.cfg.metrics, n,
                                prep.cfg.data.eval_batch_size))
    x, y = jax.device_put(prep.test)
    out = []
    for i in range(len(res.configs)):
        ts = res.train_state(i)
        vals = jax.device_get(ev(ts.params, ts.state, x, y))
        out.append({f"test_{k}": float(v) for k, v in vals.items()})
    return out


class SweepRunResult(NamedTuple):
    """What :func:`sweep_run` made: one row per grid point, the sweep directory, how the points
    trained (``"vmap"``: one program; ``"runs"``: one run each), on how many devices, why
    not in one program (:func:`separate_run_reasons`; empty for ``"vmap"``), ``status``
    (``"completed"``, or ``"interrupted"`` when SIGINT/SIGTERM stopped a separate run: its
    row is the last), the exit status (0, or 128 + the signal) and a line for the user."""

    rows: list[dict[str, Any]]
    sweep_dir: Path
    method: str
    devices: int
    separate_runs_because: list[str]
    status: str = "completed"
    exit_code: int = 0
    message: str = ""


def _write_sweep(sweep_dir: Path, keys: list[str], rows: list[dict[str, Any]],
                 info: dict[str, Any], note: str | None = None) -> str:
    """Writes ``sweep.csv`` (when there are rows), ``sweep.txt`` (the table, then ``note``)
    and ``sweep.json`` (``info`` and the rows); returns the table."""
    preferred = ["train_loss", "train_accuracy", "val_loss", "val_accuracy", "best_val_loss",
                 "test_loss", "test_accuracy"]
    have = {k for r in rows for k in r}
    columns = keys + [k for k in preferred if k in have]
    if any(r.get("status") == "interrupted" for r in rows):
        columns.append("status")
    table = format_table(rows, columns) if rows else ""
    if rows:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys + sorted(have - set(keys)))
        w.writeheader()
        w.writerows(rows)
        (sweep_dir / "sweep.csv").write_text(buf.getvalue(), encoding="utf-8")
    text = "\n".join(t for t in (table, note) if t) + "\n"
    (sweep_dir / "sweep.txt").write_text(text, encoding="utf-8")
    write_json(sweep_dir / "sweep.json", {**info, "rows": rows})
    return table


def sweep_run(
    cfg_raw: dict[str, Any],
    grid: dict[str, list[Any]],
    *,
    config_path: str | None = None,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    base: str | Path = "runs",
    print_fn: Callable[[str], Any] | None = print,
) -> SweepRunResult:
    """Trains every point of the ``grid`` product; returns a :class:`SweepRunResult`.

    When only ``optimizer.lr``, ``optimizer.weight_decay`` and ``seed`` vary (and the config
    uses no accumulation, augmentation, l1/l2 or special grad mode, and its schedule, if
    any, is proportional to ``optimizer.lr``: cosine, step decay, warm-up cosine to 0...;
    early stopping and reduce-on-plateau run per model) all points train together in ONE
    compiled program with
    :func:`nnkit.train.sweep` (``method == "vmap"``); otherwise each point is a full run in
    ``sweep_dir/run-<i>`` (``method == "runs"``; the reasons are returned and recorded in
    ``sweep.json``). Writes ``sweep.csv``, ``sweep.txt`` and ``sweep.json``.
    Every point's config is validated before anything is created; ``out`` must not exist or
    be empty.

    Interruptions: SIGINT/SIGTERM during a separate run stops that run after its epoch (its
    checkpoint kept, as ``nnkit train``) and the sweep with it: the tables list the points
    that ran, the last one with ``status`` ``interrupted``, ``sweep.json`` says
    ``"status": "interrupted"`` and names the points not run, and the result's
    ``exit_code`` is 128 + the signal. A ``KeyboardInterrupt`` (SIGINT in one vmapped
    program, or a second SIGINT during a run) writes the same files, with the rows finished
    so far (none for one program: its models finish together) and a note in ``sweep.txt``,
    then propagates.
    """
    if out is not None:  # before validating and training every point
        check_out_dir(out)
    else:
        check_run_root(base)
    keys = list(grid)
    points = list(itertools.product(*(grid[k] for k in keys)))
    cfgs, point_sets = [], []
    for values in points:
        sets = [*overrides, *(f"{k}={_dump_value(v)}" for k, v in zip(keys, values,
                                                                     strict=True))]
        try:
            cfgs.append(parse_config(cfg_raw, file=config_path, overrides=sets))
        except ConfigError as e:  # a value from --grid is named as such, not as --set
            grid_sets = sets[len(overrides):]
            if e.file == "--set" and not overridden(e.key, overrides) and overridden(
                    e.key, grid_sets):
                raise ConfigError(e.message, key=e.key, file="--grid") from None
            raise
        point_sets.append(sets)
    base_cfg = cfgs[0]
    why_runs = separate_run_reasons(base_cfg, grid)
    method = "runs" if why_runs else "vmap"
    # validates data/model before the directory exists
    prep = prepare_named(base_cfg, config_path, point_sets[0])
    if method == "runs":
        for c, sets in zip(cfgs[1:], point_sets[1:], strict=True):
            prepare_named(c, config_path, sets)
    sweep_dir = new_run_dir(config_path, out, base=base, suffix="-sweep")
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {"method": method, "separate_runs_because": why_runs, "grid": grid,
                            "devices": 1, "config": config_to_dict(base_cfg),
                            "status": "completed"}
    try:
        code, message = _sweep_points(
            method, cfgs, points, keys, point_sets, base_cfg, prep, grid, sweep_dir,
            config_path, rows, info)
    except KeyboardInterrupt:
        info["status"] = "interrupted"
        if method == "vmap":
            note = ("interrupted: the points train together in one program, so none "
                    "finished; run the sweep again for results")
        else:
            i = len(rows)
            if (sweep_dir / f"run-{i}").exists():
                info["interrupted_run"] = str(sweep_dir / f"run-{i}")
            info["not_run"] = [dict(zip(keys, v, strict=True)) for v in points[i + 1:]]
            note = (f"interrupted: run-{i} was stopped at once (its last checkpoint, if any, "
                    f"is kept); {i} point(s) finished before it, {len(points) - i - 1} not run")
        _write_sweep(sweep_dir, keys, rows, info, note)
        raise
    table = _write_sweep(sweep_dir, keys, rows, info, message or None)
    if print_fn is not None:
        print_fn(table)
    return SweepRunResult(rows, sweep_dir, method, info["devices"], why_runs, info["status"],
                          code, message)


def _sweep_points(method: str, cfgs: list[Config], points: list[tuple], keys: list[str],
                  point_sets: list[list[str]], base_cfg: Config, prep: Any,
                  grid: dict[str, list[Any]], sweep_dir: Path, config_path: str | None,
                  rows: list[dict[str, Any]], info: dict[str, Any]) -> tuple[int, str]:
    """Trains the points of :func:`sweep_run`, appending to ``rows`` and updating ``info``
    as they finish; returns ``(exit_code, message)`` (``message`` only when a run was
    interrupted, which stops the sweep)."""
    if method == "vmap":
        from nnkit.train import sweep

        c = base_cfg
        lists = {arg: (grid[k] if k in grid else None) for k, arg in FAST_SWEEP_KEYS.items()}
        opt_kwargs: dict[str, Any] = dict(c.optimizer.options)
        if c.optimizer.clip_norm is not None:
            opt_kwargs["clip_norm"] = c.optimizer.clip_norm
        res = sweep(
            prep.model, c.optimizer.name, prep.train, val_data=prep.val, epochs=c.training.epochs,
            batch_size=c.data.batch_size, loss=c.loss, metrics=c.metrics,
            eval_batch_size=c.data.eval_batch_size,
            learning_rates=[float(v) for v in lists["learning_rates"]] if lists[
                "learning_rates"] else [c.optimizer.lr],
            weight_decays=[float(v) for v in lists["weight_decays"]] if lists[
                "weight_decays"] else [c.optimizer.weight_decay],
            seeds=[int(v) for v in lists["seeds"]] if lists["seeds"] else [c.seed],
            schedule=schedule_of_lr(c, c.training.epochs * prep.steps_per_epoch),
            early_stopping=prep.early_stopping, plateau=prep.plateau, **opt_kwargs,
        )
        info["devices"] = len(res.devices)
        names = {"learning_rate": "optimizer.lr", "weight_decay": "optimizer.weight_decay",
                 "seed": "seed"}
        tests = _test_metrics(prep, res)
        for conf, hist, reason, test in zip(res.configs, res.histories, res.stop_reasons,
                                            tests, strict=True):
            row = {names[k]: v for k, v in conf.items() if names[k] in grid}
            row.update({k: v[-1] for k, v in hist.items() if k not in ("epoch",)})
            if "val_loss" in hist:
                row["best_val_loss"] = float(np.nanmin(hist["val_loss"])) if np.isfinite(
                    hist["val_loss"]).any() else float("nan")
            row.update(test)
            row["stop_reason"] = reason
            rows.append(row)
        return 0, ""
    from nnkit.run.trainer import train

    for i, (c, values) in enumerate(zip(cfgs, points, strict=True)):
        r = train(c, config_path=config_path, out=sweep_dir / f"run-{i}",
                  overrides=point_sets[i])
        row = dict(zip(keys, values, strict=True))
        row.update(r.summary.get("last_epoch", {}))
        row.pop("epoch", None)
        row.update({k: v for k, v in r.summary.items() if k.startswith("test_")})
        row["stop_reason"] = r.summary["stop_reason"]
        row["status"] = r.status
        row["run_dir"] = str(r.run_dir)
        rows.append(row)
        if r.status == "interrupted":  # SIGINT/SIGTERM: the user wants the sweep to stop
            info["status"] = "interrupted"
            info["not_run"] = [dict(zip(keys, v, strict=True)) for v in points[i + 1:]]
            shown = ", ".join(f"{k}={_dump_value(v)}" for k, v in zip(keys, values,
                                                                        strict=True))
            return r.exit_code, (
                f"interrupted: run-{i} ({shown}) stopped after epoch "
                f"{r.summary['epochs_run'] - 1} (resume it with: nnkit train --resume "
                f"{r.run_dir}); {len(points) - i - 1} of {len(points)} point(s) not run")
    return 0, ""
