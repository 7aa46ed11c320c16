"""The ``nnkit`` command line.

::

    nnkit train CONFIG [--set key=value ...] [--out DIR]    train into a new run directory
    nnkit train --resume DIR [--set key=value ...]          continue a run exactly
    nnkit eval DIR [--split test|val|train] [--checkpoint best|latest]
    nnkit summary CONFIG                                    layer table of the config's model
    nnkit lr-find CONFIG [--out PNG] [--steps N]            learning-rate range test
    nnkit sweep CONFIG --grid optimizer.lr=1e-4,1e-3 [--grid seed=0,1]
    nnkit diagnose CONFIG [--set key=value ...] [--out DIR] pre-training checks + figures
    nnkit datasets | nnkit models                           what configs can name

Exit status: 0 success; 2 user error (bad config, path, data file, checkpoint: one line on
stderr, no traceback); 1 internal error (traceback) or a non-finite training loss;
130 / 143 when SIGINT / SIGTERM stopped training (after writing a checkpoint).
``nnkit diagnose`` exits 0 when the diagnosis ran, whatever it found (warnings and errors
are findings about the model/data, printed and saved in ``report.json``; read its
``severity``); it exits 2/1 only when it could not run.

An ``--out`` directory (train, sweep, diagnose) must be new or empty: nnkit never writes over
earlier results; the check comes before any training or diagnosis, as does the check that
it (or the default run root ``runs``) can be written. ``lr-find --out`` names the plot file
(a suffix matplotlib writes) or a directory to put it in, checked before the range test.

The commands that compile (train, eval, lr-find, sweep, diagnose) keep JAX's compiled programs
on disk (:mod:`nnkit.compile_cache`: ``~/.cache/nnkit/jax``; ``NNKIT_COMPILE_CACHE=off``
or ``=DIR``), so a second run of a config skips XLA's compiles.

``nnkit train`` builds the config's ``parallel:`` section (:func:`nnkit.parallel.from_config`,
which may start JAX's multi-process runtime) before anything touches a device.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser", "user_errors"]


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types reported as user errors: one line on stderr, exit status 2."""
    from nnkit.checkpoint import CheckpointError
    from nnkit.config import ConfigError
    from nnkit.core import ShapeError
    from nnkit.data import DataFormatError
    from nnkit.run.rundir import RunError

    return (ConfigError, CheckpointError, RunError, DataFormatError, ShapeError,
            FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def _err(cmd: str, msg: str) -> None:
    print(f"nnkit {cmd}: error: {msg}", file=sys.stderr, flush=True)


def _fmt(v: Any, spec: str = ".4f") -> str:
    return "n/a" if v is None else format(v, spec)


# ----------------------------------------------------------------------------- commands


def _epochs(n: Any) -> str:
    """The epochs a run trained, numbered from 0 as everywhere else (metrics.jsonl,
    checkpoint names, messages): ``epochs 0-29``."""
    n = int(n or 0)
    return "no epochs" if n <= 0 else "epoch 0" if n == 1 else f"epochs 0-{n - 1}"


def _result_line(s: dict[str, Any]) -> str:
    """``test accuracy 0.9750, test loss 0.0912, best epoch 17 of epochs 0-29, wall 12.3 s``
    (train metrics of the last epoch when there is no test split; epochs count from 0)."""
    split = "test" if s.get("test_loss") is not None else "train"
    vals = s if split == "test" else {k: v for k, v in s.get("last_epoch", {}).items()}
    keys = [k for k in vals if k.startswith(split + "_") and k != f"{split}_loss"][:1]
    keys.append(f"{split}_loss")
    shown = ", ".join(f"{k.replace('_', ' ')} {_fmt(vals.get(k))}" for k in keys)
    if split == "train":
        shown += " (no test split)"
    best = s.get("best_epoch")
    return (f"{shown}, best epoch {'n/a' if best is None else best} of "
            f"{_epochs(s.get('epochs_run'))}, wall {s.get('wall_seconds', 0.0):.1f} s")



def _start_cpu_devices(args: argparse.Namespace) -> None:
    """``--cpu-devices N``: JAX's CPU platform with N devices, set before any device use."""
    if args.cpu_devices is None:
        return
    if args.cpu_devices < 1:
        from nnkit.config import ConfigError

        raise ConfigError(f"--cpu-devices must be >= 1, got {args.cpu_devices}")
    import jax

    jax.config.update("jax_num_cpu_devices", args.cpu_devices)


def _compile_cache() -> None:
    """JAX's persistent compilation cache (``nnkit.compile_cache``; after device setup)."""
    from nnkit.compile_cache import enable

    enable()


def _cmd_train(args: argparse.Namespace) -> int:
    _start_cpu_devices(args)
    from nnkit import run
    from nnkit.config import load_config

    progress = args.progress
    if args.resume:
        if args.config:
            _err("train", "give either CONFIG or --resume DIR, not both")
            return 2
        if args.out:
            _err("train", "--out cannot be used with --resume (the run directory is reused)")
            return 2
        cfg, _ = run.read_resume_config(args.resume, args.set)
        parallel = run.make_parallel(cfg, str(Path(args.resume) / "config.yaml"),
                                     args.set)  # first
        _compile_cache()
        res = run.resume(args.resume, overrides=args.set, progress=progress,
                         parallel=parallel)
    else:
        if not args.config:
            _err("train", "give a CONFIG file (or --resume DIR)")
            return 2
        cfg = load_config(args.config, args.set)
        parallel = run.make_parallel(cfg, args.config, args.set)  # before any device use
        _compile_cache()
        res = run.train(cfg, config_path=args.config, out=args.out, progress=progress,
                        parallel=parallel, overrides=args.set)
    if res.status == "nonfinite":
        _err("train", res.message)
    elif res.status == "interrupted":
        print(res.message, file=sys.stderr)
    else:
        print(f"done ({res.message}): {_result_line(res.summary)}")
    print(f"run directory: {res.run_dir}")
    return res.exit_code


def _cmd_eval(args: argparse.Namespace) -> int:
    from nnkit.run import evaluate_run

    _compile_cache()
    out = evaluate_run(args.run_dir, split=args.split, checkpoint=args.checkpoint)
    if args.json:
        print(json.dumps(out))
    else:
        ms = "  ".join(f"{k} {v:.4f}" for k, v in out.items()
                       if k not in ("split", "checkpoint", "epoch", "n"))
        print(f"{out['split']} ({out['n']} examples, {out['checkpoint']} checkpoint, "
              f"epoch {out['epoch']}): {ms}")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from nnkit.config import load_config
    from nnkit.run import model_summary

    print(model_summary(load_config(args.config, args.set), file=args.config,
                        overrides=args.set))
    return 0


def _free_name(stem: str, suffix: str) -> Path:
    """``stem + suffix`` (``stem`` may start with a directory), or ``stem-2 + suffix``,
    ``stem-3``, ...: the first that does not exist, so a default output never replaces an
    earlier one."""
    path, i = Path(stem + suffix), 1
    while path.exists():
        i += 1
        path = Path(f"{stem}-{i}{suffix}")
    return path


def _cmd_lr_find(args: argparse.Namespace) -> int:
    from nnkit.config import load_config
    from nnkit.run import lr_find_run
    from nnkit.run.tools import check_plot_path

    cfg = load_config(args.config, args.set)
    name = f"lr_find-{Path(args.config).stem}"
    if args.out is None:
        out = _free_name(name, ".png")
    elif Path(args.out).is_dir():  # the default name, inside it
        out = _free_name(str(Path(args.out) / name), ".png")
    else:
        out = Path(args.out)
    out = check_plot_path(out)  # before the range test
    _compile_cache()
    res, png = lr_find_run(cfg, out, steps=args.steps, min_lr=args.min_lr, max_lr=args.max_lr,
                           file=args.config, overrides=args.set)
    div = "" if res.diverged_at is None else f", diverged at step {res.diverged_at}"
    print(f"suggested learning rate {res.suggestion:.3g} (loss minimum at "
          f"{res.lr_at_min:.3g}{div})")
    print(f"plot: {png}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    _start_cpu_devices(args)
    from nnkit.config import read_yaml
    from nnkit.run import parse_grid, sweep_run

    grid = parse_grid(args.grid)
    _compile_cache()
    res = sweep_run(read_yaml(args.config), grid, config_path=args.config,
                    overrides=args.set, out=args.out)
    if res.status == "interrupted":
        print(f"{res.message}; table of the {len(res.rows)} point(s) that ran: "
              f"{res.sweep_dir / 'sweep.csv'}", file=sys.stderr)
        return res.exit_code
    how = ("one vmapped program" if res.method == "vmap"
           else "separate runs: " + "; ".join(res.separate_runs_because))
    if res.method == "vmap" and res.devices > 1:
        how += f" on {res.devices} devices"
    print(f"{len(res.rows)} configurations ({how}); table: {res.sweep_dir / 'sweep.csv'}")
    return 0


def _cmd_diagnose(args: argparse.Namespace) -> int:
    from nnkit.config import load_config
    from nnkit.run import diagnose_run

    cfg = load_config(args.config, args.set)
    _compile_cache()
    res = diagnose_run(cfg, args.out, file=args.config, overrides=args.set)
    print(res.report)
    print(f"report and {len(res.figures)} figure(s): {res.out_dir}")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from nnkit import data

    names = data.available()
    w = max(map(len, names), default=0)
    for k, v in names.items():
        print(f"{k.ljust(w)}  {v}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from nnkit import models

    archs = models.available()
    w = max(map(len, archs))
    for k, v in archs.items():
        print(f"{k.ljust(w)}  {v}")
    print("layer types for model.layers: " + ", ".join(sorted(models.LAYER_TYPES)))
    return 0


# ----------------------------------------------------------------------------- parser


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optimizer.lr=3e-3 (VALUE is "
                        "parsed as YAML; repeatable)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (one sub-parser per command, each with ``--help``)."""
    p = argparse.ArgumentParser(
        prog="nnkit",
        description="Config-driven training runs with nnkit (JAX).",
        epilog="exit status: 0 ok, 2 user error, 1 internal error or non-finite loss, "
               "130/143 interrupted by SIGINT/SIGTERM",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train a config into a run directory (or resume one)",
                       description="Train CONFIG into a new run directory (config.yaml, "
                       "metrics.jsonl, summary.json, checkpoints/, plots/, tensorboard/), "
                       "or continue one with --resume DIR. SIGINT/SIGTERM stop after the "
                       "current epoch with a checkpoint (exit 130/143).")
    t.add_argument("config", nargs="?", help="YAML config file")
    _add_set(t)
    t.add_argument("--out", help="run directory, new or empty (default "
                   "runs/<config-stem>-<timestamp>)")
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its latest "
                   "checkpoint (same final result as an uninterrupted run; refused when its "
                   "data are not the ones it started with)")
    t.add_argument("--cpu-devices", type=int, default=None, metavar="N",
                   help="on a CPU, start JAX with N devices, one per core, for "
                        "parallel.data_parallel to split each batch over (pays off when a "
                        "step is long: an LSTM trained ~1.5x faster on 2 cores; a small MLP's "
                        "step is faster on one device; default: JAX's single CPU device)")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="always show the progress bar")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="never show it (default: only on a terminal)")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="evaluate a run's checkpoint on a data split",
                       description="Rebuild a run's data from its config.yaml and evaluate a "
                       "checkpoint on one split (a warning on stderr when the split is not "
                       "the data the run started with: files under data.options.path "
                       "replaced).")
    e.add_argument("run_dir", metavar="DIR", help="run directory")
    e.add_argument("--split", choices=("test", "val", "train"), default="test")
    e.add_argument("--checkpoint", choices=("best", "latest"), default=None,
                   help="default: best if early stopping restores the best epoch, else latest")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=_cmd_eval)

    s = sub.add_parser("summary", help="print the layer table of a config's model",
                       description="Print nnkit.summary of the config's model on its data's "
                       "input shape (loads the data set).")
    s.add_argument("config", help="YAML config file")
    _add_set(s)
    s.set_defaults(func=_cmd_summary)

    lf = sub.add_parser("lr-find", help="learning-rate range test; writes a PNG",
                        description="Run the learning-rate range test with the config's "
                        "model, data and optimizer; print the suggested rate, save the plot.")
    lf.add_argument("config", help="YAML config file")
    _add_set(lf)
    lf.add_argument("--out", help="plot file (.png, .pdf, .svg, ...; .png added when "
                    "there is no suffix), replaced if it exists, or a directory to write "
                    "lr_find-<config-stem>.png in (default: the working directory; -2, -3, "
                    "... appended to keep an earlier plot)")
    lf.add_argument("--steps", type=int, default=100, help="number of steps (default 100)")
    lf.add_argument("--min-lr", type=float, default=1e-7, help="first rate (default 1e-7)")
    lf.add_argument("--max-lr", type=float, default=10.0, help="last rate (default 10)")
    lf.set_defaults(func=_cmd_lr_find)

    sw = sub.add_parser("sweep", help="train a grid of configs; writes a table",
                        description="Train every combination of the --grid values. Varying "
                        "only optimizer.lr, optimizer.weight_decay and seed, of a config "
                        "whose schedule (if any) is proportional to optimizer.lr and without "
                        "accumulation, augmentation, l1/l2 or special grad_mode, trains all "
                        "in one vmapped program (early stopping per model); otherwise each "
                        "point is a run directory of its own (the output says why). "
                        "SIGINT/SIGTERM during a separate run stop it after its epoch "
                        "(resumable) and the sweep with it: the table lists the points that "
                        "ran (exit 130/143); SIGINT during one program stops it at once, "
                        "without results (exit 130); sweep.json says it was interrupted.")
    sw.add_argument("config", help="YAML config file")
    sw.add_argument("--grid", action="append", default=[], required=True,
                    metavar="KEY=V1,V2,...", help="values of one key (repeatable: product)")
    _add_set(sw)
    sw.add_argument("--out", help="sweep directory, new or empty (default "
                    "runs/<stem>-sweep-<timestamp>)")
    sw.add_argument("--cpu-devices", type=int, default=None, metavar="N",
                    help="on a CPU, start JAX with N devices so that the models of a vmapped "
                         "sweep are spread over N cores (small models use one core each; "
                         "default: JAX's single CPU device)")
    sw.set_defaults(func=_cmd_sweep)

    dg = sub.add_parser("diagnose", help="check a config's model and data before training",
                        description="Build the model and training split as 'train' does, "
                        "run nnkit.diagnose (inputs, labels, initial loss, overfitting one "
                        "batch, activations, gradients), print the report and write "
                        "report.txt, report.json and PNG figures to --out. Exit status 0 "
                        "whenever the diagnosis ran, also when it reports warnings or "
                        "errors (see report.json's severity).")
    dg.add_argument("config", help="YAML config file")
    _add_set(dg)
    dg.add_argument("--out", help="output directory, new or empty (default "
                    "runs/<config-stem>-diagnose-<timestamp>)")
    dg.set_defaults(func=_cmd_diagnose)

    d = sub.add_parser("datasets", help="list the data sets configs can name",
                       description="List nnkit.data.available() with descriptions.")
    d.set_defaults(func=_cmd_datasets)

    m = sub.add_parser("models", help="list the architectures and layer types",
                       description="List nnkit.models.available() and the layer types of "
                       "layer-list model specs.")
    m.set_defaults(func=_cmd_models)
    return p


def _exit_now(code: int) -> None:
    """Ends the process at once with ``code``, after flushing stdout and stderr: device
    programs queued before an interruption (a vmapped sweep queues all its epochs) cannot
    be cancelled, and a normal exit would wait for them to finish (minutes). Files are
    written atomically or closed by then, so nothing half-written is left."""
    for f in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            f.flush()
    os._exit(code)


def _single_process() -> bool:
    """Whether this is the only process of the job: several processes exit normally, so
    that ``jax.distributed`` shuts down and the others do not wait for a timeout."""
    jax = sys.modules.get("jax")
    return jax is None or jax.process_count() == 1


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (see the module docstring).

    Called without ``argv`` (as the ``nnkit`` program), a ``KeyboardInterrupt`` (SIGINT
    outside training's own handling) ends the process at once with status 130
    (:func:`_exit_now`); with ``argv``, it returns 130."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        if argv is None and _single_process():
            _exit_now(130)
        return 130
    except Exception as e:  # noqa: BLE001 - sorted into user vs internal errors
        if isinstance(e, user_errors()):
            msg = str(e) if not isinstance(e, FileNotFoundError | PermissionError) or not (
                e.filename) else f"{e.strerror}: {e.filename}"
            _err(args.command, msg)
            return 2
        traceback.print_exc()
        _err(args.command, f"internal error: {type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
