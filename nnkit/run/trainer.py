"""``nnkit train``: a config -> a run directory; ``--resume`` continues it exactly.

Exactness: :func:`nnkit.train.fit` draws epoch ``e``'s data order from
``fold_in(data_key, e)`` and step ``t``'s randomness from ``fold_in(step_key, t)``, both
from the key in the :class:`~nnkit.train.TrainState`. A checkpoint after epoch ``e`` holds
that whole state (params, optimizer and model state, key, step, early-stopping and plateau
fields, a float16 policy's dynamic loss scale), so ``fit(train_state=restored,
start_epoch=e + 1)`` runs the same computations as the uninterrupted run and ends with
bit-identical parameters, on the same data: the run's ``config.yaml`` records a
fingerprint of its data splits when it starts, and ``--resume`` refuses data rebuilt from
the config that differ from them (files under ``data.options.path`` replaced:
:mod:`nnkit.run.fingerprint`).

Which epochs get one: ``logging.checkpoint_every: N`` writes ``ckpt-<e>.npz`` after epoch
``e`` when ``(e + 1) % N == 0`` and after the last epoch trained, however training ends
(the last epoch, early stopping, a stopping callback, a signal, a non-finite epoch: then
the epoch before it); ``best.npz`` after every epoch whose monitored value improves. A
resume goes on from the latest checkpoint: ``metrics.jsonl`` loses its lines after it,
TensorBoard gets a restart mark at the first epoch trained again (its readers drop the
earlier events from there), and a ``best.npz`` of a later epoch is deleted (the epochs are
trained again, bit for bit, and write it again).

Background writes: the state is copied to host memory on the training thread (every
process: :func:`nnkit.parallel.gather` is a collective), then the file is written by one
background thread while the next epoch trains. At most one write is in flight (the next
one waits for it), a write's error is raised on the training thread at the next
checkpoint or at the end, and the run waits for the write before ``summary.json``, before
returning, and when interrupted (a second signal: the file is complete or absent).

Signals: SIGINT/SIGTERM set a flag; after the current epoch finishes, its checkpoint is
written (whatever ``checkpoint_every`` says) and training stops (exit status 130 / 143):
the epoch callback returns :data:`nnkit.train.INTERRUPT`, so ``fit`` also skips the
test-set evaluation. A second signal interrupts at once, once a write in flight has
finished (the last complete checkpoint is untouched: writes are atomic).

Devices and precision: the config's ``parallel:`` section (or a ``parallel=`` argument, a
:class:`nnkit.parallel.DataParallel`) and ``precision:`` policy go to ``fit``. With several
processes every process runs the same training; only process 0 creates the run directory and
writes files (config, metrics, TensorBoard, summary, plots). Each checkpoint's train state
is gathered by every process (:func:`nnkit.parallel.gather`, a collective: FSDP-sharded or
multi-host arrays become whole host arrays) and written by process 0; the processes meet at
a barrier once the write has finished (at the next checkpoint, or at the end before any
process goes on to its summary and exits), so none reads an unfinished file or leaves
before it is complete. Give ``--out`` with several processes so that all of them report
the same directory (the default name has a timestamp).

Non-finite loss: training stops at the bad epoch, the parameters from the start of that
epoch are kept, the previous epoch's checkpoint is the latest (written then if
``checkpoint_every`` had skipped it), ``summary.json`` says ``status: nonfinite`` and the
CLI exits with status 1.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import numpy as np

from nnkit.checkpoint import (
    BackgroundWriter,
    CheckpointError,
    CheckpointManager,
    CheckpointMismatchError,
    HostTree,
    load_meta,
    to_host,
)
from nnkit.config import Config, config_to_dict
from nnkit.core import param_count
from nnkit.run.fingerprint import FINGERPRINT_KEY, check_resume_data, data_fingerprint
from nnkit.run.prepare import (
    Prepared,
    check_parallel,
    initial_state,
    make_parallel,
    monitor_of,
    prepare_named,
)
from nnkit.run.rundir import (
    MetricsLog,
    RunError,
    TensorBoard,
    changes_since_checkpoint,
    check_out_dir,
    check_resume_epochs,
    check_run_root,
    describe_changes,
    environment,
    new_run_dir,
    read_json,
    read_resume_config,
    write_config,
    write_json,
)
from nnkit.train import INTERRUPT, TrainState, fit
from nnkit.train.early_stopping import should_stop

if TYPE_CHECKING:
    from nnkit.parallel import DataParallel

__all__ = ["RunResult", "StopFlag", "train", "resume", "EXIT_CODES"]

EXIT_CODES = {"completed": 0, "early_stopped": 0, "stopped": 0, "nonfinite": 1}
"""Process exit status per run status; an interrupted run exits ``128 + signal``."""

Callback = Callable[[int, TrainState, dict], bool | str | None]


class RunResult(NamedTuple):
    """What :func:`train` / :func:`resume` return.

    Attributes:
      run_dir: the run directory.
      status: ``completed``, ``early_stopped``, ``stopped`` (a callback), ``interrupted``
        (SIGINT/SIGTERM, or a callback's :data:`nnkit.train.INTERRUPT`: the test set is not
        evaluated, and ``resume`` goes on and evaluates it) or ``nonfinite``.
      summary: the contents of ``summary.json``.
      exit_code: 0, 1 (non-finite loss) or 128 + signal number.
      message: one line for the user.
    """

    run_dir: Path
    status: str
    summary: dict[str, Any]
    exit_code: int
    message: str


class StopFlag:
    """Signal handler target: the first SIGINT/SIGTERM records the signal (training stops
    after the epoch), a second one raises ``KeyboardInterrupt`` at once."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def handler(self, signum: int, frame: Any) -> None:
        """Records ``signum``; raises ``KeyboardInterrupt`` if one was already recorded."""
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        name = signal.Signals(signum).name
        print(f"\n{name} received: stopping after this epoch (checkpoint kept); "
              "send again to stop now", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopFlag]:
        """Installs :meth:`handler` for SIGINT and SIGTERM (main thread only), restoring the
        previous handlers on exit."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self.handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def _is_main() -> bool:
    return jax.process_index() == 0


class _Recorder:
    """The epoch callback: metrics line, TensorBoard, checkpoint (+best), stop on signal.

    A numbered checkpoint is written after epoch ``e`` when ``(e + 1) % checkpoint_every ==
    0``, after the last epoch, and after an epoch that ends training (early stopping, a
    stopping callback, a signal; :meth:`finish` covers the rest: the epoch before a
    non-finite one); ``best.npz`` whenever the monitored value improves. The train state is
    copied to the host here (:func:`nnkit.checkpoint.to_host`), and the file written on a
    background thread (:class:`nnkit.checkpoint.BackgroundWriter`) while training goes on;
    the next write waits for it, and so does :meth:`finish`.

    Files are written by process 0 only; every process gathers the state for the checkpoint
    (a collective when arrays span processes). The barrier after a checkpoint says that its
    file is complete: every process meets it once process 0's write has finished, at the
    next checkpoint or in :meth:`finish` (so no process exits, or reads the file, before)."""

    def __init__(self, run_dir: Path, prep: Prepared, manager: CheckpointManager,
                 flag: StopFlag, extra: Sequence[Callback], best: tuple[Any, Any],
                 parallel: Any = None, session: int = 1, wall: float = 0.0,
                 t0: float | None = None, start_epoch: int = 0) -> None:
        self.main = _is_main()
        self.parallel = parallel
        self.metrics = MetricsLog(run_dir / "metrics.jsonl")
        self.tb = (TensorBoard(run_dir / "tensorboard", start_epoch)
                   if prep.cfg.logging.tensorboard and self.main else None)
        self.prep = prep
        self.manager = manager
        self.every = prep.cfg.logging.checkpoint_every
        self.epochs = prep.cfg.training.epochs
        self.writer = BackgroundWriter("nnkit-checkpoint-writer") if self.main else None
        self.flag = flag
        self.extra = tuple(extra)
        self.monitor, self.mode = monitor_of(prep)
        self.best_epoch, self.best_value = best
        self.last_epoch: int | None = None
        self.last_row: dict[str, Any] = {}
        self.saved_epoch: int | None = None  # the last numbered checkpoint handed over
        self.barrier: str | None = None  # the barrier of the last write handed over
        self.config = config_to_dict(prep.cfg)
        self.session, self.wall0 = session, wall  # this session's number, earlier time
        self.t0 = time.perf_counter() if t0 is None else t0
        self.__name__ = "signal"

    def _better(self, v: float) -> bool:
        if not math.isfinite(v):
            return False
        if self.best_value is None:
            return True
        return v < self.best_value if self.mode == "min" else v > self.best_value

    def _due(self, epoch: int, ts: TrainState) -> bool:
        """Whether epoch ``epoch`` gets a numbered checkpoint before the other callbacks
        run: every ``checkpoint_every`` epochs, the last epoch, and when early stopping ends
        training after it (fit checks after the callbacks; the same rule)."""
        if (epoch + 1) % self.every == 0 or epoch + 1 >= self.epochs:
            return True
        es = self.prep.early_stopping
        return es is not None and ts.bad_epochs is not None and should_stop(es, ts.bad_epochs)

    def _host(self, ts: TrainState) -> HostTree | Any:
        """The train state as host arrays (every process: a collective with several); a
        :class:`~nnkit.checkpoint.HostTree` copy on process 0, the one that writes it."""
        tree = ts if self.parallel is None else self.parallel.gather(ts)
        return to_host(tree) if self.main else tree

    def _write(self, host: HostTree | Any, epoch: int, *, numbered: bool,
               is_best: bool) -> None:
        """Hands ``host`` to the writer (process 0; after the previous write has finished),
        then meets the other processes at the previous write's barrier."""
        if self.main:
            assert self.writer is not None
            meta = {"epoch": epoch, "metrics": self.last_row, "config": self.config,
                    "extra": {"best_epoch": self.best_epoch, "best_value": self.best_value,
                              "monitor": self.monitor, "session": self.session,
                              "wall_seconds": self.wall0 + time.perf_counter() - self.t0}}
            manager = self.manager
            if numbered:
                self.writer.submit(lambda: manager.save(host, epoch, is_best=is_best, **meta),
                                   f"{manager.path(epoch)}")
            else:
                self.writer.submit(lambda: manager.save_best(host, epoch, **meta),
                                   f"{manager.best_path} (epoch {epoch})")
        self._sync()
        self.barrier = f"nnkit-checkpoint-{epoch}" + ("" if numbered else "-best")
        if numbered:
            self.saved_epoch = epoch

    def _sync(self) -> None:
        """The barrier of the last write handed over (every process; process 0 has waited
        for the write)."""
        if self.barrier is not None and self.parallel is not None:
            self.parallel.sync(self.barrier)
        self.barrier = None

    def __call__(self, epoch: int, ts: TrainState, logs: dict) -> bool | str | None:
        row = self.metrics.append(epoch, logs) if self.main else self.metrics.row(epoch, logs)
        if self.tb is not None:
            self.tb.log(epoch, row)
        value = float(logs.get(self.monitor, float("nan")))
        if self.prep.early_stopping is not None and ts.best_epoch is not None:
            is_best = int(ts.best_epoch) == epoch  # the state's own rule (min_delta)
        else:
            is_best = self._better(value)
        if is_best:
            self.best_epoch, self.best_value = epoch, value
        self.last_epoch, self.last_row = epoch, row
        due = self._due(epoch, ts)
        host = None
        if due or is_best:
            host = self._host(ts)
            self._write(host, epoch, numbered=due, is_best=is_best)
        stop: bool | str = False
        by = None
        for cb in self.extra:
            verdict = cb(epoch, ts, logs)
            if verdict == INTERRUPT and stop != INTERRUPT:
                stop, by = INTERRUPT, cb
            elif verdict and not stop:
                stop, by = True, cb
        if by is not None:  # fit names the callback that stopped training by this name
            self.__name__ = getattr(by, "__name__", type(by).__name__)
        if not due and (stop or self.flag.signum is not None):  # training ends here
            self._write(host or self._host(ts), epoch, numbered=True, is_best=False)
        if self.flag.signum is not None:
            self.__name__ = "signal"
            return INTERRUPT  # stop now: fit skips the test set
        return stop or None

    def finish(self, last_state: TrainState | None) -> None:
        """End of training: a numbered checkpoint of the last epoch trained if it has none
        (``last_state``: fit's state after it, e.g. rolled back from a non-finite epoch),
        then waits for the write in flight (raising its error) and meets the others at its
        barrier."""
        if (last_state is not None and self.last_epoch is not None
                and self.saved_epoch != self.last_epoch):
            self._write(self._host(last_state), self.last_epoch, numbered=True, is_best=False)
        if self.writer is not None:
            self.writer.wait()
        self._sync()

    def close(self) -> None:
        """Waits for the write in flight (also through further Ctrl-C: it is the newest
        checkpoint, and it is short) and closes TensorBoard; after an error, the writer's
        own error is reported on stderr instead of replacing the first."""
        try:
            while self.writer is not None:
                try:
                    self.writer.wait()
                    break
                except KeyboardInterrupt:
                    print("finishing the checkpoint being written", file=sys.stderr,
                          flush=True)
                except Exception as e:  # noqa: BLE001 - finish() raises it on success
                    print(f"warning: checkpoint write failed: {type(e).__name__}: {e}",
                          file=sys.stderr)
                    break
        finally:
            if self.tb is not None:
                self.tb.close()


def _plots(run_dir: Path, prep: Prepared, history: dict, ts: TrainState) -> list[str]:
    """history / lr / decision-boundary PNGs; a failing plot is reported, not fatal."""
    from nnkit import plots

    out = run_dir / "plots"
    made, jobs = [], [("history.png", lambda p: plots.plot_history(history, p,
                                                                    title=run_dir.name))]
    if history.get("lr"):
        jobs.append(("lr.png", lambda p: plots.plot_lr(history, p)))
    if prep.input_shape == (2,) and prep.task == "classification":
        model, params, state = prep.model, ts.params, ts.state
        predict = jax.jit(lambda x: model.apply(params, state, x, train=False)[0])
        x, y = prep.train
        jobs.append(("decision_boundary.png", lambda p: plots.plot_decision_boundary(
            lambda g: np.asarray(predict(g)), x, y, p, title=f"{run_dir.name} (train split)")))
    for name, job in jobs:
        try:
            made.append(job(out / name))
        except Exception as e:  # noqa: BLE001 - a figure must not lose a finished run
            print(f"warning: plot {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
    return made


def _monitor(run_dir: Path, prep: Prepared, start_epoch: int = 0) -> Any:
    """``logging.histograms_every: N`` (> 0): a :func:`nnkit.diagnose.monitor` callback
    writing per-layer histograms of parameters, gradients and outputs on a fixed batch of
    up to 128 training examples, the learning rate and update/parameter ratios, every N
    epochs, to ``<run>/diagnostics`` (TensorBoard events, and PNGs when ``logging.plots``).
    One process only (the monitor reads whole arrays on the host)."""
    every = prep.cfg.logging.histograms_every
    if not every or jax.process_count() > 1:
        return None
    from nnkit.diagnose import monitor

    x, y = prep.train
    k = min(128, int(np.shape(y)[0]))
    return monitor(every=every, logdir=run_dir / "diagnostics", model=prep.model,
                   x_sample=x[:k], y_sample=y[:k], loss=prep.cfg.loss, key=prep.cfg.seed,
                   start_epoch=start_epoch, figures=prep.cfg.logging.plots)


def _run(run_dir: Path, prep: Prepared, *, ts: TrainState | None, start_epoch: int,
         best: tuple[Any, Any], prior: dict[str, Any], callbacks: Sequence[Callback],
         progress: bool | None, parallel: Any = None) -> RunResult:
    cfg = prep.cfg
    manager = CheckpointManager(run_dir / "checkpoints", keep=cfg.logging.checkpoint_keep)
    flag = StopFlag()
    mon = _monitor(run_dir, prep, start_epoch)
    if mon is not None:
        callbacks = [*callbacks, mon]
    session = int(prior.get("sessions", 0)) + 1
    wall0 = float(prior.get("wall_seconds", 0.0))
    t0 = time.perf_counter()
    rec = _Recorder(run_dir, prep, manager, flag, callbacks, best, parallel, session, wall0, t0,
                    start_epoch)
    try:
        with flag.installed():  # a signal during the last write: it completes, then we stop
            result = fit(
                prep.model, prep.optimizer, prep.train, val_data=prep.val,
                test_data=prep.test, loss=cfg.loss, metrics=cfg.metrics,
                epochs=cfg.training.epochs, batch_size=cfg.data.batch_size, key=cfg.seed,
                early_stopping=prep.early_stopping, plateau=prep.plateau, callbacks=[rec],
                progress=progress, mode=cfg.training.mode, grad_mode=cfg.training.grad_mode,
                microbatches=cfg.training.microbatches, l1=cfg.training.l1, l2=cfg.training.l2,
                augment=prep.augment, train_state=ts, start_epoch=start_epoch,
                eval_batch_size=cfg.data.eval_batch_size, parallel=parallel,
                policy=prep.policy,
            )
            rec.finish(result.last_state)  # before summary.json: the checkpoints are on disk
    finally:
        rec.close()
        if mon is not None:
            mon.close()
    wall = time.perf_counter() - t0
    reason = result.stop_reason
    final = result.train_state
    if parallel is not None:  # whole host arrays for the plots (a collective)
        final = final._replace(**dict(zip(("params", "state"), parallel.gather(
            (final.params, final.state)), strict=True)))
    if flag.signum is not None or reason.startswith("interrupted"):
        status = "interrupted"  # a signal, or a callback's INTERRUPT: test set not evaluated
    elif reason.startswith("non-finite"):
        status = "nonfinite"
    elif reason.startswith("early stopping"):
        status = "early_stopped"
    elif reason != "completed":
        status = "stopped"
    else:
        status = "completed"
    history = rec.metrics.history() if rec.main else {}
    last = rec.last_epoch if rec.last_epoch is not None else start_epoch - 1
    test = {"test_loss": None, **{f"test_{m}": None for m in cfg.metrics},
            **result.test_metrics}
    summary = {
        "status": status,
        "stop_reason": reason,
        "best_epoch": rec.best_epoch,
        "monitor": rec.monitor,
        "best_value": rec.best_value,
        "epochs_run": last + 1,
        **test,
        "param_count": param_count(result.train_state.params),
        "wall_seconds": wall0 + wall,
        "sessions": session,
        "last_epoch": {k: v[-1] for k, v in history.items()} if history else {},
        "latest_checkpoint": str(manager.latest_path()) if manager.latest_path() else None,
        "best_checkpoint": str(manager.best_path) if manager.best_path.exists() else None,
    }
    if rec.main:
        write_json(run_dir / "summary.json", summary)
        if cfg.logging.plots and history:
            _plots(run_dir, prep, history, final)
    if status == "interrupted" and flag.signum is not None:
        code = 128 + int(flag.signum)
        msg = (f"interrupted by {signal.Signals(flag.signum).name} after epoch {last}; "
               f"resume with: nnkit train --resume {run_dir}")
    elif status == "interrupted":
        code = 0
        msg = f"{reason}; resume with: nnkit train --resume {run_dir}"
    elif status == "nonfinite":
        code = 1
        latest = summary["latest_checkpoint"]
        msg = (f"{reason}; last good checkpoint: {latest}" if latest else
               f"{reason}; no epoch finished, so no checkpoint was saved and the run cannot "
               f"be resumed")
    else:
        code = 0
        msg = reason
    return RunResult(run_dir, status, summary, code, msg)


def train(
    cfg: Config,
    *,
    config_path: str | None = None,
    out: str | Path | None = None,
    base: str | Path = "runs",
    callbacks: Sequence[Callback] = (),
    progress: bool | None = None,
    parallel: DataParallel | None = None,
    overrides: Sequence[str] = (),
) -> RunResult:
    """Trains ``cfg`` into a new run directory (``out``, or ``<base>/<stem>-<timestamp>``).

    Everything that can fail on user input is checked before the directory is created.
    ``callbacks`` (``cb(epoch, train_state, logs) -> bool | str | None``) run after each
    epoch's metrics line, and after its checkpoint (when one is due) is handed to the
    background writer (the file is complete by the next checkpoint, and when this returns
    or raises); ``True`` stops training, :data:`nnkit.train.INTERRUPT` stops it without the
    test-set evaluation, and both get the epoch a checkpoint. ``parallel``: a
    :class:`nnkit.parallel.DataParallel`; ``None`` builds it from ``cfg.parallel`` (off by
    default) with :func:`nnkit.run.prepare.make_parallel`. ``overrides``: the ``--set``
    values ``cfg`` was parsed with; errors in the keys they set name ``--set``, not the file.
    """
    if parallel is None:
        parallel = make_parallel(cfg, config_path, overrides)
    if _is_main() and out is not None:  # where the run goes, before the data is loaded
        check_out_dir(out)
    elif _is_main():
        check_run_root(base)
    prep = prepare_named(cfg, config_path, overrides)
    check_parallel(prep, parallel, config_path, overrides)
    run_dir = _new_dir(config_path, out, base)
    if _is_main():
        write_config(run_dir, prep.cfg, {**environment(), "config_file": config_path,
                                         "training_devices": _training_devices(parallel),
                                         FINGERPRINT_KEY: data_fingerprint(prep)})
    ts = initial_state(prep)  # the state fit would create from cfg.seed: one compiled call
    return _run(run_dir, prep, ts=ts, start_epoch=0, best=(None, None), prior={},
                callbacks=callbacks, progress=progress, parallel=parallel)


def _training_devices(parallel: Any) -> int:
    """How many devices a step runs on: the data-parallel mesh's, else 1."""
    return 1 if parallel is None else int(parallel.mesh.devices.size)


def _check_same_devices(run_dir: Path, meta: dict, parallel: Any) -> None:
    """A resumed run must split its steps over as many devices as it was trained on: the
    batch split and the gradient all-reduce decide the rounding of every update."""
    was = meta.get("training_devices")
    now = _training_devices(parallel)
    if was is not None and int(was) != now:
        raise RunError(f"{run_dir} trained on {was} device(s) and would go on on {now}: the "
                       "continuation would not be the same run; resume with the same devices "
                       f"(e.g. --cpu-devices {was} on a CPU)")


def _new_dir(config_path: str | None, out: str | Path | None, base: str | Path) -> Path:
    """The run directory: created by process 0; the others take its name without creating
    anything (``out``, or the default name, which may differ by a clash suffix)."""
    return new_run_dir(config_path, out, base=base, create=_is_main())


def _mismatch_hint(run_dir: Path, cfg: Config, path: Path) -> str:
    """Why an intact checkpoint does not fit the state built from the run's config.yaml:
    the keys (outside :data:`~nnkit.run.rundir.RESUME_KEYS`) whose values differ from the
    config stored in the checkpoint, with both values."""
    from nnkit import __version__

    head = f"the run's {run_dir / 'config.yaml'} no longer matches its checkpoints"
    try:
        meta = load_meta(path)
    except CheckpointError:  # pragma: no cover - restore has just read it
        meta = {}
    saved = meta.get("config")
    if not isinstance(saved, dict):
        return (f"{head} (the checkpoint does not record the config it was written with): "
                "put back the settings the run was trained with, or start a new run")
    changed, now = changes_since_checkpoint(saved, cfg)
    if not changed:
        then = meta.get("nnkit_version")
        if then is not None and then != __version__:
            return (f"{head}, though the config is the one the checkpoint was written with "
                    f"(by nnkit {then}; this is nnkit {__version__}): resume with that "
                    "nnkit, or start a new run")
        return (f"{head}, though the config is the one the checkpoint was written with: what "
                "the config builds from its data (the classes, the input shape) may have "
                "changed; start a new run")
    shown = describe_changes(saved, now, changed)
    return (f"{head}: changed since they were written: {shown}; put back the values "
            "the run was trained with, or start a new run")


def _so_far(summary: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``{"sessions", "wall_seconds"}`` of a run before this session, from what is on disk.

    Each checkpoint records the session that wrote it and the wall time up to it, so a
    session stopped without writing ``summary.json`` (SIGKILL, a crash) still counts, up to
    its last checkpoint. ``summary.json`` (written when a session ends) counts when it is
    from that session or a later one (it adds the time after the last checkpoint: test
    evaluation, plots) or when the checkpoint predates these records."""
    sessions, wall = summary.get("sessions"), summary.get("wall_seconds")
    if extra.get("session") is not None and (sessions is None
                                             or int(extra["session"]) > int(sessions)):
        sessions, wall = extra["session"], extra.get("wall_seconds")
    return {"sessions": int(sessions or 0), "wall_seconds": float(wall or 0.0)}


def _drop_best_after(manager: CheckpointManager, start: int) -> None:
    """Deletes ``best.npz`` when it holds an epoch ``>= start``: an epoch after the latest
    checkpoint (``logging.checkpoint_every`` > 1, or a kill between the two writes), which
    the resumed run trains again and writes again if it is still the best; kept, it could
    outlive the epochs it came from (a resume to fewer epochs, or a change of best)."""
    path = manager.best_path
    if not path.is_file():
        return
    try:
        epoch = load_meta(path).get("epoch")
    except CheckpointError:  # unreadable: the next improvement replaces it
        return
    if isinstance(epoch, int) and epoch >= start:
        path.unlink()


def resume(
    run_dir: str | Path,
    *,
    overrides: Sequence[str] = (),
    callbacks: Sequence[Callback] = (),
    progress: bool | None = None,
    parallel: DataParallel | None = None,
) -> RunResult:
    """Continues the run in ``run_dir`` from its latest checkpoint to ``training.epochs``.

    ``overrides`` may change only :data:`nnkit.run.rundir.RESUME_KEYS` (``training.epochs``,
    ``logging.*``); when training goes on they are saved to ``config.yaml`` and appended to
    its ``run.resumed_with`` list (a run with nothing left to do is left as it is).
    ``parallel`` as for :func:`train` (``None``: from the run's config).

    Raises:
      ConfigError: an override of another key (nothing is written).
      RunError: not a run directory, no checkpoint to resume from, or ``training.epochs``
        below the epochs already trained (nothing is written).
      nnkit.run.fingerprint.DataChangedError: a RunError: the data rebuilt from the config
        are not the ones the run started with (its ``run.data_fingerprint``: a split's
        count, shapes or content differ; nothing is written). A run from before the
        fingerprint was recorded is not checked (a note on stderr).
      CheckpointError: the latest checkpoint is corrupt or does not fit the config.
    """
    run_dir = Path(run_dir)
    cfg, meta = read_resume_config(run_dir, list(overrides))
    file = str(run_dir / "config.yaml")
    if parallel is None:
        parallel = make_parallel(cfg, file, overrides)
    _check_same_devices(run_dir, meta, parallel)
    prep = prepare_named(cfg, file, overrides)
    check_parallel(prep, parallel, file, overrides)
    check_resume_data(run_dir, prep, meta, quiet=not _is_main())  # the data it started with
    manager = CheckpointManager(run_dir / "checkpoints", keep=prep.cfg.logging.checkpoint_keep)
    if manager.latest_path() is None:  # read_resume_config checked; gone since
        raise RunError(f"{run_dir} has no checkpoint to resume from")
    try:
        ts, ck = manager.restore(jax.eval_shape(lambda: initial_state(prep)), "latest")
    except CheckpointMismatchError as e:  # an intact file: moving it away would not help
        raise CheckpointMismatchError(
            f"{e} -- {_mismatch_hint(run_dir, prep.cfg, manager.latest_path())}") from None
    except CheckpointError as e:  # corrupt or unreadable: an earlier one may do
        earlier = manager.steps()[:-1]
        if not earlier:
            raise
        raise CheckpointError(f"{e} -- the run also has the checkpoint of epoch "
                              f"{earlier[-1]}: move {manager.latest_path()} away to resume "
                              "from it") from None
    saved = ck.get("config")
    if isinstance(saved, dict):  # config.yaml edited by hand: as refused as --set would be
        changed, now = changes_since_checkpoint(saved, prep.cfg)
        if changed:
            shown = describe_changes(saved, now, changed)
            raise RunError(
                f"{run_dir / 'config.yaml'} was changed after the run's checkpoints were "
                f"written ({shown}): a resume may change only training.epochs and logging.*; "
                "put back the values the run was trained with, or start a new run")
    start = int(ck["epoch"]) + 1
    check_resume_epochs(run_dir, prep.cfg, start)
    extra = ck.get("extra") or {}
    best = (extra.get("best_epoch"), extra.get("best_value"))
    prior = read_json(run_dir / "summary.json") if (run_dir / "summary.json").exists() else {}
    so_far = _so_far(prior, extra)
    # nothing to do: nothing is written (config.yaml keeps what the run trained with)
    if start >= prep.cfg.training.epochs and prior.get("status") in (
        "completed", "early_stopped", "stopped"
    ):
        return RunResult(run_dir, prior["status"], prior, 0,
                         f"already finished ({start} epochs); nothing to do")
    if prior.get("status") == "early_stopped":
        return RunResult(run_dir, "early_stopped", prior, 0,
                         "already finished (early stopping); nothing to do")
    if _is_main():  # first: a metrics.jsonl it cannot read stops the resume unchanged
        MetricsLog(run_dir / "metrics.jsonl").truncate_from(start)
        _drop_best_after(manager, start)
    if overrides and _is_main():
        earlier = meta.get("resumed_with") or []
        earlier = earlier if isinstance(earlier, list) else [earlier]
        write_config(run_dir, prep.cfg, {**meta, "resumed_with": [*earlier, *overrides]})
    return _run(run_dir, prep, ts=ts, start_epoch=start, best=best, prior=so_far,
                callbacks=callbacks, progress=progress, parallel=parallel)
