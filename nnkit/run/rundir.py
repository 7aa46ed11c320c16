"""The run directory layout and its small writers.

::

    runs/<config-stem>-<YYYYmmdd-HHMMSS>/
      config.yaml      fully resolved config + a ``run`` section (versions, device, time,
                       ``data_fingerprint``: per split n, shapes, dtypes, digests of x and y)
      metrics.jsonl    one JSON object per epoch (epoch, train_loss, ..., lr, grad_norm, seconds)
      summary.json     best_epoch, epochs_run, test metrics, param_count, wall_seconds, status
      checkpoints/     ckpt-<epoch>.npz (latest N; every logging.checkpoint_every epochs
                       and the last epoch trained) + best.npz   (nnkit.checkpoint)
      plots/           history.png, lr.png, decision_boundary.png (2-D inputs)
      tensorboard/     event files (nnkit.tensorboard), one scalar per log key per epoch

``run.data_fingerprint`` (:mod:`nnkit.run.fingerprint`) is what the run's data were when it
started: ``--resume`` refuses data rebuilt from the config that differ, ``nnkit eval`` warns.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nnkit.checkpoint import jsonable
from nnkit.config import (
    Config,
    ConfigError,
    config_to_dict,
    dump_config,
    parse_config,
    read_yaml,
)

__all__ = [
    "RunError",
    "RUN_SECTION",
    "new_run_dir",
    "check_out_dir",
    "check_run_root",
    "check_writable",
    "checkpoint_steps",
    "write_config",
    "read_run_config",
    "read_resume_config",
    "check_resume_changes",
    "check_resume_epochs",
    "RESUME_KEYS",
    "changes_since_checkpoint",
    "describe_changes",
    "changed_keys",
    "config_value",
    "migrate_peak_rate",
    "MetricsLog",
    "write_json",
    "read_json",
    "environment",
    "TensorBoard",
]

RUN_SECTION = "run"
"""Top-level key of the metadata section nnkit writes into a run's ``config.yaml``."""


class RunError(ValueError):
    """A user-level problem with a run directory (missing, not a run, nothing to resume)."""


def _timestamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def new_run_dir(config_path: str | os.PathLike | None, out: str | os.PathLike | None,
                *, base: str | os.PathLike = "runs", suffix: str = "",
                create: bool = True) -> Path:
    """Creates the run directory: ``out`` if given (it must not exist or be an empty
    directory: :func:`check_out_dir`), else ``<base>/<config-stem><suffix>-<timestamp>``
    (``-2``, ``-3``... appended on a clash, as for ``lr-find``'s plots; ``base``:
    :func:`check_run_root`).

    ``create=False`` only returns the name (``out``, or the timestamped name without the
    clash suffix): what the processes other than process 0 of a multi-process run use."""
    if not create:
        stem = Path(config_path).stem if config_path else "run"
        return Path(out) if out is not None else Path(base) / f"{stem}{suffix}-{_timestamp()}"
    if out is not None:
        d = check_out_dir(out)
        d.mkdir(parents=True, exist_ok=True)
        return d
    check_run_root(base)
    stem = Path(config_path).stem if config_path else "run"
    root = Path(base) / f"{stem}{suffix}-{_timestamp()}"
    d, i = root, 1
    while True:
        try:
            d.mkdir(parents=True, exist_ok=False)
            return d
        except FileExistsError:
            i += 1
            d = root.with_name(f"{root.name}-{i}")


def checkpoint_steps(run_dir: str | os.PathLike) -> list[int]:
    """The epochs of the numbered checkpoints in ``run_dir/checkpoints``, ascending (from the
    file names; empty when the run saved none)."""
    from nnkit.checkpoint import CheckpointManager

    return CheckpointManager(Path(run_dir) / "checkpoints").steps()


def _no_checkpoint(d: Path) -> RunError:
    return RunError(f"{d} holds a run that saved no checkpoint, so it cannot be resumed: "
                    f"delete {d} or train into another --out")


def check_writable(path: str | os.PathLike, what: str, *, file: bool = False) -> None:
    """Raises RunError (naming ``what``, e.g. ``"--out runs/x"``) unless nnkit can write
    ``path``: a directory (``file=False``) that is one or can be created, or a file
    (``file=True``) that can be replaced or created. A directory to create needs its nearest
    existing ancestor to be a directory nnkit can write in. Creates nothing that stays (one
    unnamed temporary file is opened to try the directory)."""
    path = Path(path)
    if path.exists():
        if file:
            if path.is_dir():
                raise RunError(f"{what} is a directory, not a file")
            if not os.access(path, os.W_OK):
                raise RunError(f"{what}: cannot write it (permission denied)")
            return
        if not path.is_dir():
            raise RunError(f"{what} exists and is not a directory")
        _try_write(path, what)
        return
    p = path.parent
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise RunError(f"{what}: cannot create it: {p} is a file, not a directory")
    _try_write(p, what)


def _try_write(d: Path, what: str) -> None:
    try:
        with tempfile.TemporaryFile(dir=d):
            pass
    except OSError as e:
        raise RunError(f"{what}: cannot write in {d} ({e.strerror or e})") from None


def check_out_dir(out: str | os.PathLike) -> Path:
    """``Path(out)`` if nnkit may write results there: it does not exist (and can be
    created), or is an empty directory it can write in. Nothing already saved is overwritten.

    Raises:
      RunError: ``out`` holds a run (use ``--resume``, or, when the run saved no checkpoint,
        delete it), other files (named), is a file, or cannot be written.
    """
    d = Path(out)
    if (d / "config.yaml").exists():
        if not checkpoint_steps(d):
            raise _no_checkpoint(d)
        raise RunError(f"{d} already holds a run; use --resume {d} or another --out")
    if d.exists() and not d.is_dir():
        raise RunError(f"--out {d} exists and is not a directory")
    if d.is_dir():
        names = sorted(p.name for p in d.iterdir())
        if names:
            shown = ", ".join(names[:5]) + (f", ... ({len(names)} entries)" if len(names) > 5
                                            else "")
            raise RunError(f"--out {d} is not empty (holds {shown}); nnkit does not overwrite "
                           "earlier results: give a new or empty directory")
    check_writable(d, f"--out {d}")
    return d


def check_run_root(base: str | os.PathLike) -> Path:
    """``Path(base)`` if default run directories can be made in it (it is a directory nnkit
    can write in, or can be created).

    Raises:
      RunError: naming ``base`` (e.g. ``runs`` is a file) and ``--out`` as the way out.
    """
    d = Path(base)
    if d.exists() and not d.is_dir():
        raise RunError(f"the run root {d} (where runs go without --out) is a file, not a "
                       "directory: move it away or give --out")
    check_writable(d, f"the run root {d} (where runs go without --out)")
    return d


def environment() -> dict[str, Any]:
    """Versions and device of this process, for the ``run`` section of ``config.yaml``."""
    import jax

    from nnkit import __version__

    devs = jax.devices()
    return {
        "nnkit_version": __version__,
        "jax_version": jax.__version__,
        "python_version": platform.python_version(),
        "device": f"{devs[0].platform}: {devs[0].device_kind}",
        "device_count": len(devs),
        "host": platform.node(),
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
    }


def write_config(run_dir: Path, cfg: Config, extra: Mapping[str, Any]) -> Path:
    """Writes ``config.yaml``: the resolved config plus ``run: extra``."""
    from nnkit.checkpoint import atomic_write

    text = dump_config(cfg, {RUN_SECTION: dict(extra)})
    return atomic_write(run_dir / "config.yaml", lambda f: f.write(text.encode("utf-8")))


def read_run_config(run_dir: str | os.PathLike,
                    overrides: tuple[str, ...] | list[str] = ()) -> tuple[Config, dict]:
    """``(config, run_section)`` from a run directory's ``config.yaml``."""
    d = Path(run_dir)
    if not d.is_dir():
        raise RunError(f"run directory not found: {d}")
    path = d / "config.yaml"
    if not path.is_file():
        raise RunError(f"{d} is not a run directory (no config.yaml)")
    raw = read_yaml(path)
    meta = raw.pop(RUN_SECTION, None) or {}
    if not isinstance(meta, dict):
        raise ConfigError("expected a mapping", key=RUN_SECTION, file=str(path))
    return parse_config(migrate_peak_rate(raw), file=str(path), overrides=overrides), meta


def migrate_peak_rate(raw: Any) -> Any:
    """A run directory's config written before a schedule's peak rate had to be
    ``optimizer.lr``: its ``optimizer.schedule.learning_rate`` (or ``max_lr``), which then
    overrode ``optimizer.lr``, becomes ``optimizer.lr`` -- the rate the run trained with."""
    opt = raw.get("optimizer") if isinstance(raw, dict) else None
    sched = opt.get("schedule") if isinstance(opt, dict) else None
    if isinstance(sched, dict):
        for peak in ("learning_rate", "max_lr"):
            if peak in sched:
                opt["lr"] = sched.pop(peak)
                break
    return raw


RESUME_KEYS = ("training.epochs", "logging")
"""What ``--resume --set`` may change (a key, or a section and everything in it): how long
the run goes on and what it writes. Every other key decides what the run trains on (data,
split, model) or how (optimizer, loss, seed, precision, devices), so changing it would make
the epochs already trained belong to another run. ``training.epochs`` cannot change either
when a schedule step count is ``auto`` (computed from it)."""



def _resumable(key: str) -> bool:
    """Whether dotted ``key`` is one of :data:`RESUME_KEYS` or inside one of its sections."""
    return any(key == k or key.startswith(k + ".") for k in RESUME_KEYS)

def read_resume_config(run_dir: str | os.PathLike,
                       overrides: Sequence[str] = ()) -> tuple[Config, dict]:
    """:func:`read_run_config` for ``--resume``: the run must have a checkpoint, its
    ``training.epochs`` must not be below the epochs already trained, and ``overrides`` may
    change only :data:`RESUME_KEYS` (an override that leaves a value as it was is fine).

    Raises:
      ConfigError: naming ``--set`` and the first key whose value an override changes.
      RunError: no checkpoint (delete the directory or train elsewhere), or
        ``training.epochs`` below the epochs trained.
    """
    d = Path(run_dir)
    cfg, meta = read_run_config(d, overrides)
    if overrides:
        before, _ = read_run_config(d)
        check_resume_changes(before, cfg)
    steps = checkpoint_steps(d)
    if not steps:
        raise _no_checkpoint(d)
    check_resume_epochs(d, cfg, steps[-1] + 1)
    return cfg, meta


def check_resume_epochs(run_dir: str | os.PathLike, cfg: Config, trained: int) -> None:
    """Raises RunError when ``cfg.training.epochs`` is below ``trained``, the epochs the
    run's latest checkpoint holds (a resumed run only goes on)."""
    n = cfg.training.epochs
    if n < trained:
        raise RunError(f"training.epochs {n} < the {trained} epochs already trained in "
                       f"{run_dir}: a resumed run can only go on (give training.epochs >= "
                       f"{trained}, or start a new run)")


def changed_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between plain config trees ``a`` and ``b``
    (a key in only one of them counts as changed)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [k for name in dict.fromkeys([*a, *b])
                for k in changed_keys(a.get(name), b.get(name), f"{prefix}{name}.")]
    return [] if a == b else [prefix.rstrip(".")]


def check_resume_changes(before: Config, after: Config) -> None:
    """Raises ConfigError (file ``--set``) for a change outside :data:`RESUME_KEYS`."""
    old = config_to_dict(before)
    changed = changed_keys(old, config_to_dict(after))
    for key in changed:
        if not _resumable(key):
            raise ConfigError(
                f"cannot change when resuming (the run so far used {config_value(old, key)!r}): it "
                f"decides what the run trains on or how; --resume --set may change only "
                f"{', '.join(RESUME_KEYS)}: start a new run instead", key=key, file="--set")
    auto = [k for k, v in (before.optimizer.schedule or {}).items() if v == "auto"]
    if "training.epochs" in changed and auto:
        raise ConfigError(
            f"cannot change when resuming: optimizer.schedule.{auto[0]} is auto (all steps "
            f"of {before.training.epochs} epochs), so the learning rates of the epochs already "
            "trained would change: start a new run instead", key="training.epochs",
            file="--set")


def changes_since_checkpoint(saved: Mapping[str, Any], cfg: Config) -> tuple[list[str], dict]:
    """The keys outside :data:`RESUME_KEYS` whose values in ``cfg`` differ from ``saved``
    (the config a checkpoint was written with), and ``cfg`` as plain JSON.

    ``saved`` is read as a run's config.yaml is (this version's defaults for keys it lacks,
    old-style peak rates moved by :func:`migrate_peak_rate`), so only real edits count; one
    this version cannot read counts as no change (the checkpoint's shapes are still
    checked when it is restored)."""
    def plain(c: Config) -> dict:
        return json.loads(json.dumps(jsonable(config_to_dict(c))))

    now = plain(cfg)
    try:
        then = plain(parse_config(migrate_peak_rate(json.loads(json.dumps(saved)))))
    except (ConfigError, ValueError, TypeError):
        return [], now
    changed = [k for k in changed_keys(then, now)
               if not _resumable(k)]
    return changed, now


def describe_changes(saved: Mapping[str, Any], now: Mapping[str, Any],
                     changed: Sequence[str], limit: int = 5) -> str:
    """``"key: old in the checkpoint, new now; ..."`` for the first ``limit`` keys of
    ``changed`` (values as JSON), and how many more there are."""
    shown = "; ".join(f"{k}: {json.dumps(config_value(saved, k))} in the checkpoint, "
                      f"{json.dumps(config_value(now, k))} now" for k in changed[:limit])
    more = f" (and {len(changed) - limit} more)" if len(changed) > limit else ""
    return shown + more


def config_value(tree: Any, key: str) -> Any:
    """The value at dotted ``key`` in a plain config tree, ``None`` where it has none."""
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Mapping):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


def write_json(path: Path, obj: Mapping[str, Any]) -> Path:
    """Writes ``obj`` as indented JSON atomically (non-finite floats as ``null``)."""
    from nnkit.checkpoint import atomic_write

    text = json.dumps(_finite(dict(obj)), indent=2) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` (``RunError`` naming the file if unreadable)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunError(f"{path}: cannot read JSON ({e})") from None


def _metrics_row_problem(row: Any) -> str | None:
    """What is wrong with a parsed ``metrics.jsonl`` line, or ``None``."""
    if not isinstance(row, dict):
        kind = ("array" if isinstance(row, list) else "string" if isinstance(row, str)
                else "null" if row is None else "boolean" if isinstance(row, bool)
                else "number")
        return f"a JSON {kind}, not an object"
    if "epoch" not in row:
        return 'no "epoch"'
    epoch = row["epoch"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        return f'"epoch" is {json.dumps(epoch)}, not an integer >= 0'
    for k, v in row.items():
        if v is not None and (not isinstance(v, int | float) or isinstance(v, bool)):
            return f"{k!r} is {json.dumps(v)}, not a number"
    return None


class MetricsLog:
    """``metrics.jsonl``: one line per epoch, appended and flushed as training goes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def truncate_from(self, epoch: int) -> None:
        """Drops lines of epochs ``>= epoch`` (epochs re-run after a resume)."""
        rows = [r for r in self.read() if r["epoch"] < epoch]
        text = "".join(json.dumps(r) + "\n" for r in rows)
        from nnkit.checkpoint import atomic_write

        atomic_write(self.path, lambda f: f.write(text.encode("utf-8")))

    @staticmethod
    def row(epoch: int, logs: Mapping[str, float]) -> dict[str, Any]:
        """The line :meth:`append` writes: ``{"epoch": epoch, **logs}`` (non-finite -> None)."""
        return {"epoch": int(epoch), **{k: _finite(float(v)) for k, v in logs.items()
                                        if k != "epoch"}}

    def append(self, epoch: int, logs: Mapping[str, float]) -> dict[str, Any]:
        """Appends ``{"epoch": epoch, **logs}`` (non-finite values as ``null``)."""
        row = self.row(epoch, logs)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
        return row

    def read(self) -> list[dict[str, Any]]:
        """All rows (a torn last line from a crash is skipped).

        Raises:
          RunError: naming the file and line, for a line that is JSON but not an object with
            an integer ``"epoch"`` >= 0 and numbers (or ``null``) as the other values.
        """
        if not self.path.is_file():
            return []
        rows = []
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                row = json.loads(line)
            except ValueError:
                continue
            problem = _metrics_row_problem(row)
            if problem:
                raise RunError(f"{self.path}, line {n}: {problem} (each line must be a JSON "
                               'object with an integer "epoch" and numbers); fix or remove '
                               "the line")
            rows.append(row)
        return rows

    def history(self) -> dict[str, list[float]]:
        """Rows as a fit-style history ``{key: [value per epoch]}`` (``None`` -> NaN)."""
        rows = self.read()
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        return {k: [float("nan") if r.get(k) is None else float(r[k]) for r in rows]
                for k in keys}


class TensorBoard:
    """Per-epoch scalars to TensorBoard event files (``train_loss`` -> tag ``loss/train``)."""

    def __init__(self, logdir: Path, start_epoch: int = 0) -> None:
        """``start_epoch`` > 0 (a resumed run): marks a restart at that step, so TensorBoard
        drops the earlier files' events of the epochs this run trains again."""
        from nnkit.tensorboard import EventWriter

        self._w = EventWriter(logdir)
        if start_epoch > 0:
            self._w.restart(int(start_epoch))
            self._w.flush()

    @staticmethod
    def tag(key: str) -> str:
        """``train_x`` -> ``x/train``, ``val_x`` -> ``x/val``, others unchanged."""
        for split in ("train", "val", "test"):
            if key.startswith(split + "_"):
                return f"{key[len(split) + 1:]}/{split}"
        return key

    def log(self, epoch: int, logs: Mapping[str, float]) -> None:
        """One scalar per key at step ``epoch``; flushed."""
        for k, v in logs.items():
            if k != "epoch" and v is not None:
                self._w.scalar(self.tag(k), float(v), int(epoch))
        self._w.flush()

    def close(self) -> None:
        """Flushes and closes the event file."""
        self._w.close()
