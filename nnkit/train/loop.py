"""``fit``: the training loop. One compiled call and one host sync per epoch; without epoch
callbacks the next epoch is queued before the host reads this one's logs.

Modes:

* ``"scan"``: the data are put on the device once; each epoch is ONE jitted call that
  gathers ``n // batch_size`` full batches in the epoch's order (drawn on the host from the
  train key and the epoch by :func:`nnkit.train.order.epoch_order` while the device runs the
  previous epoch; the last ``n % batch_size`` examples of each epoch's permutation are
  dropped), runs the train step in a ``lax.scan``, evaluates the validation set, updates
  early stopping / plateau and rolls back a non-finite epoch (a non-finite loss, or
  non-finite parameters after the epoch's last update). The logs come back as one
  small vector.
* ``"step"``: the same jitted train step called from Python for each batch (for data that
  does not fit on the device, iterators, or per-step callbacks). Same key, same data ->
  the same parameters as ``"scan"`` (up to float reassociation in the compiler).
* ``"auto"``: ``"scan"`` for arrays under ~1 GB (and no per-step callbacks), else ``"step"``.

Data parallelism (``parallel=DataParallel(make_mesh())``, see :mod:`nnkit.parallel`): the
train state is replicated (or FSDP-sharded) over the mesh once, every batch is split along
its rows over the ``"data"`` axis, and XLA partitions the same jitted step, so results match
a one-device run up to float summation order. ``batch_size`` is the *global* batch and must
be divisible by the number of devices. Scan mode keeps the data set on every device (one
process) or each process's rows (several processes); step mode cuts each global batch on
the host and places it split over the devices (with several processes each process places
its slice of the same global batch; a streaming ``train_data`` must yield this process's
rows). Validation and test sets sit on every device, and each of their batches that the
devices divide (``eval_batch_size``) is evaluated split over them. Only process 0 draws the
progress bar.

Precision (``policy="mixed_bfloat16"`` or a :class:`nnkit.precision.Policy`): the model is
wrapped with :func:`nnkit.precision.with_policy` (params stay in ``param_dtype``, float32 for
the mixed policies) and float16 policies use a loss scale (see
:func:`~nnkit.train.step.make_train_step`): by default a dynamic one, whose state is
``TrainState.loss_scale`` (a step with non-finite gradients is skipped and the scale
halved; ``history["loss_scale"]`` is the scale at each epoch's end), or a static one
(``Policy.from_name("mixed_float16", loss_scale="static")``). Validation and test run under
the policy too.

Interrupts: an epoch callback that returns :data:`INTERRUPT` stops training like ``True``
does, but ``fit`` then skips the test-set evaluation (``test_metrics == {}``) and
``stop_reason`` starts with ``"interrupted"``: the user asked to stop now, not to finish.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnkit._checks import check_int
from nnkit.core import Layer
from nnkit.optim import Plateau, plateau_init
from nnkit.precision import check_optimizer, loss_scale_init
from nnkit.train.callbacks import INTERRUPT, Callback
from nnkit.train.compiled import STACK_CHUNK, compiled_fit_fns
from nnkit.train.early_stopping import EarlyStopping, early_stopping_init, should_stop
from nnkit.train.early_stopping import stop_reason as early_stop_reason
from nnkit.train.epoch import gather_rows
from nnkit.train.gradients import resolve_loss, resolve_metrics
from nnkit.train.inputs import as_xy, check_data, check_params, data_nbytes
from nnkit.train.order import epoch_order, key_words
from nnkit.train.prefetch import prefetch
from nnkit.train.progress import EpochProgress
from nnkit.train.state import TrainState, adopt_optimizer, create_train_state
from nnkit.train.step import apply_policy, jitted_evaluator

if TYPE_CHECKING:
    from nnkit.parallel import DataParallel
    from nnkit.precision import Policy

__all__ = ["fit", "FitResult", "SCAN_LIMIT_BYTES", "INTERRUPT"]

SCAN_LIMIT_BYTES = 1 << 30
"""``mode="auto"`` scans when the training + validation arrays are below this size."""

_HIDDEN = ("nonfinite_step", "nonfinite_params", "bad_epochs", "best_epoch")


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      train_state: the final :class:`TrainState`: with early stopping's ``restore_best``,
        the best epoch's params/state, however the run ended (as Keras restores them); the
        last good state if training went non-finite.
      history: ``{key: [one float per epoch run]}``: ``epoch``, ``train_loss``,
        ``train_<metric>``, ``val_loss``, ``val_<metric>``, ``lr`` (at the epoch's last
        step), ``grad_norm`` (the global gradient norm at the epoch's last step, unless
        ``log_grad_norm=False``), ``seconds`` (wall time; the first epoch includes
        compilation), and ``lr_scale`` with a plateau (the scale after the epoch's plateau
        update, so the one the next epoch trains with: ``lr`` already includes the scale
        the epoch used); ``loss_scale`` with a dynamic loss scale (after the epoch's last
        step).
      best_epoch: epoch index with the best monitored value (early stopping), else the
        epoch of the lowest ``val_loss``, else ``None``.
      epochs_run: epochs whose updates were kept in this call.
      stop_reason: ``"completed"``, or why training stopped early (``"interrupted ..."``
        when a callback returned :data:`INTERRUPT`).
      test_metrics: ``{"test_loss": ..., "test_<metric>": ...}`` on ``test_data`` with the
        returned params, or ``{}`` (no test data, or interrupted).
      last_state: the state after the last epoch run, before any best params were
        restored: pass it back with ``start_epoch`` to resume exactly where training
        stopped (it is ``train_state`` when nothing was restored).
    """

    train_state: TrainState
    history: dict[str, list[float]]
    best_epoch: int | None
    epochs_run: int
    stop_reason: str
    test_metrics: dict[str, float]
    last_state: TrainState | None = None


@jax.jit
def _copy(tree: Any) -> Any:
    """Fresh buffers holding ``tree``'s values (a step donates its input state): one
    compiled program for the whole tree, not one per leaf shape."""
    return jax.tree_util.tree_map(jnp.copy, tree)


def _streaming(train_data: Any) -> bool:
    return callable(train_data) and not hasattr(train_data, "x")


def fit(
    model: Layer,
    optimizer: optax.GradientTransformation | str,
    train_data: Any,
    *,
    val_data: Any = None,
    test_data: Any = None,
    loss: str | Callable = "cross_entropy",
    metrics: Sequence[str | Callable] | dict[str, Callable] | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    key: int | jax.Array = 0,
    input_shape: Any = None,
    early_stopping: EarlyStopping | None = None,
    plateau: Plateau | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool | None = None,
    mode: str = "auto",
    grad_mode: str = "batch",
    microbatches: int = 1,
    l1: float = 0.0,
    l2: float = 0.0,
    augment: Callable | None = None,
    train_state: TrainState | None = None,
    start_epoch: int = 0,
    eval_batch_size: int = 1024,
    step_callbacks: Sequence[Callable[[int, TrainState, dict], bool | None]] = (),
    log_grad_norm: bool = True,
    parallel: DataParallel | None = None,
    policy: Policy | str | None = None,
    prefetch_batches: int | None = None,
) -> FitResult:
    """Trains ``model`` for epochs ``start_epoch .. epochs-1`` and returns a :class:`FitResult`.

    Args:
      model: an :class:`nnkit.Layer`.
      optimizer: an Optax transformation (:func:`nnkit.optim.make`), or a name for
        ``optim.make(name, 1e-3)``.
      train_data: ``(x, y)`` arrays or an object with ``.x``/``.y``; or (``mode="step"``) a
        callable ``epoch -> iterable of (x, y) batches`` for streaming data (then give
        ``input_shape``; ``batch_size`` is unused).
      val_data, test_data: ``(x, y)`` or ``.x``/``.y``; evaluated in batches of
        ``eval_batch_size`` with ``train=False``.
      loss: ``fn(pred, y) -> scalar`` or a :func:`nnkit.losses.get` name.
      metrics: :func:`nnkit.metrics.get` names or callables, logged as ``train_*``/``val_*``;
        ``None``: accuracy, except for regression (``mse``, ``l1``, ``huber``) and
        multi-task losses (:func:`nnkit.train.gradients.default_metrics`).
      epochs: the index to stop before (total epochs, as Keras), so a resumed run with the
        same ``epochs`` finishes where the uninterrupted one would.
      batch_size: examples per step; each epoch drops the ``n % batch_size`` remainder.
      key: int seed or PRNG key for a fresh train state (ignored with ``train_state``).
      input_shape: per-example input shape; default the data's (checked if given).
      early_stopping: :class:`EarlyStopping` or ``None``.
      plateau: :class:`nnkit.optim.Plateau` (reduce-on-plateau) or ``None``.
      callbacks: ``cb(epoch, train_state, logs) -> bool | str | None`` after each epoch;
        ``True`` stops, :data:`INTERRUPT` (``"interrupt"``) stops and skips the test set.
      progress: tqdm epoch bar; ``None`` = only if stderr is a terminal.
      mode: ``"auto"`` | ``"scan"`` | ``"step"`` (see the module docstring).
      grad_mode, microbatches, l1, l2, augment: see :func:`make_train_step`.
      train_state: resume from this state (it is copied, not consumed); its dynamic loss
        scale carries on (a fresh one if it has none; dropped if the policy has none). Its
        optimizer
        state must be one ``optimizer`` makes (else ``ValueError``); its moments and counts
        carry on, while ``optimizer``'s injected hyper-parameters (a new learning rate)
        replace the state's. If its ``bad_epochs`` already reached
        ``early_stopping.patience`` (a run interrupted in the epoch where early stopping
        fired), no epoch runs: fit finishes as early-stopped (best params restored, test
        set evaluated).
      start_epoch: the first epoch index to run (its data order is
        ``epoch_order(key, epoch, ...)``, so resuming reproduces an uninterrupted run exactly).
      eval_batch_size: batch size for validation/test evaluation.
      step_callbacks: ``cb(step, train_state, step_metrics) -> bool | None`` after every
        step; ``"step"`` mode only (reading the metrics syncs with the device each step).
      log_grad_norm: log ``grad_norm``, the norm at each epoch's last step (computed on that
        step only, except for streamed data and with ``step_callbacks``: every step).
      parallel: a :class:`nnkit.parallel.DataParallel` (data parallelism over its mesh; see
        the module docstring), or ``None`` for the default device.
      policy: a :class:`nnkit.precision.Policy` or policy name, or ``None`` (as the model is).
      prefetch_batches: step mode: batches made (cut from the data or drawn from a streaming
        ``train_data``, and placed on the devices) ahead of the step on a background thread
        (:func:`nnkit.train.prefetch.prefetch`); ``0`` makes each on the main thread.
        ``None``: 2 on a GPU or TPU, whose host is otherwise idle while the device runs a
        step; 0 on the CPU, where the host's cores are the device's and a thread handover
        only adds to each step (``docs/architecture.md``).

    Raises:
      ValueError: data that do not fit the model (shapes named), labels out of range,
        ``batch_size`` larger than the data or not divisible by the devices, ``epochs`` or
        ``start_epoch`` not an int >= 0, ``batch_size`` or ``eval_batch_size`` not a positive
        int, an unknown mode, monitor key or policy name.
    """
    if mode not in ("auto", "scan", "step"):
        raise ValueError(f"unknown mode {mode!r}; known: auto, scan, step")
    epochs = check_int(epochs, "epochs", 0)
    start_epoch = check_int(start_epoch, "start_epoch", 0)
    batch_size = check_int(batch_size, "batch_size")
    eval_batch_size = check_int(eval_batch_size, "eval_batch_size")
    if prefetch_batches is None:
        on_cpu = (jax.default_backend() if parallel is None
                  else parallel.mesh.devices.flat[0].platform) == "cpu"
        prefetch_batches = 0 if on_cpu else 2
    prefetch_batches = check_int(prefetch_batches, "prefetch_batches", 0)
    if isinstance(optimizer, str):
        from nnkit import optim

        optimizer = optim.make(optimizer, 1e-3)
    loss_fn = resolve_loss(loss)
    metric_fns = resolve_metrics(metrics, loss_fn)
    model = apply_policy(model, policy)  # init, steps and evaluation all under the policy
    check_optimizer(policy, optimizer)  # float16 state: an eps that rounds to 0
    streaming = _streaming(train_data)
    val = as_xy(val_data, "val_data")
    test = as_xy(test_data, "test_data")

    # ------------------------------------------------------------------ checks & state
    if streaming:
        if mode == "scan":
            raise ValueError("a callable train_data streams batches: use mode='step'")
        if input_shape is None:
            raise ValueError("streaming train_data needs input_shape=")
        mode = "step"
        train = None
        n = 0
    else:
        train = as_xy(train_data, "train_data")
        n = int(jax.tree_util.tree_leaves(train[0])[0].shape[0])
        if batch_size > n:
            raise ValueError(
                f"batch_size {batch_size} is larger than the training set ({n} examples)"
            )
        input_shape, _ = check_data(
            model, loss_fn, train, {"val_data": val, "test_data": test}, input_shape,
            metrics=metric_fns,
        )
    if mode == "auto":
        small = data_nbytes(train, val) < SCAN_LIMIT_BYTES
        mode = "scan" if small and not step_callbacks else "step"
    if step_callbacks and mode != "step":
        raise ValueError("step_callbacks need mode='step' (a scanned epoch has no Python steps)")

    if train_state is None:  # one compiled call, early-stopping / plateau fields included
        ts = create_train_state(model, input_shape, optimizer, key,
                                early_stopping=early_stopping, plateau=plateau, policy=policy)
    else:
        check_params(model, input_shape, train_state.params)
        ts = _copy(train_state)
        ts = ts._replace(opt_state=adopt_optimizer(optimizer, ts.params, ts.opt_state))
        if early_stopping is not None:
            ts = early_stopping_init(early_stopping, ts)
        if plateau is not None and ts.plateau is None:
            ts = ts._replace(plateau=plateau_init(plateau))
        if (ts.loss_scale is None) != (loss_scale_init(policy) is None):
            # a dynamic scale starts afresh; a policy without one drops the state's
            ts = ts._replace(loss_scale=loss_scale_init(policy))
    # A resumed state whose patience is already used up (a run interrupted in the epoch
    # where early stopping fired) finishes as that run would have: no more epochs.
    already_stopped = (train_state is not None and early_stopping is not None
                       and should_stop(early_stopping, ts.bad_epochs))
    if parallel is not None:
        local_bs = parallel.local_batch_size(batch_size)  # early error if not divisible
        ts = parallel.place_state(ts)
        if mode == "scan":
            train = parallel.shard_dataset(*train)  # on the devices; rows split by process
            n = int(jax.tree_util.tree_leaves(train[0])[0].shape[0])  # global rows

    available = ["train_loss", *(f"train_{m}" for m, _ in metric_fns)]
    if val is not None:
        available += ["val_loss", *(f"val_{m}" for m, _ in metric_fns)]
    for what, cfg in (("early_stopping", early_stopping), ("plateau", plateau)):
        if cfg is not None and cfg.monitor not in available:
            raise ValueError(
                f"{what} monitors {cfg.monitor!r}, which is not logged; available: {available}"
                + ("" if val is not None else " (give val_data for val_* keys)")
            )

    # ------------------------------------------------------------------ compiled pieces
    val_n = None if val is None else int(jax.tree_util.tree_leaves(val[0])[0].shape[0])
    cf = compiled_fit_fns(
        model, loss_fn, metric_fns, optimizer, grad_mode, microbatches, l1, l2, augment, n,
        batch_size, val_n, eval_batch_size, early_stopping, plateau, log_grad_norm, parallel,
        policy,
    )
    names = cf.names
    put = jax.device_put if parallel is None else parallel.replicate
    xv, yv = (None, None) if val is None else put(val)

    words = None if streaming else key_words(ts.key)  # the data order's seed, read once
    # Scan mode queues epoch e + 1 before reading epoch e's logs, so the device does not
    # wait for the host between epochs; epoch callbacks want each epoch's state first, so
    # they turn the queue off. A queued epoch is a no-op once training should stop (the
    # compiled epoch's `go` flag: non-finite loss or parameters, early stopping).
    queue = mode == "scan" and not callbacks
    go0 = None
    if mode == "scan":
        x, y = jax.device_put(train) if parallel is None else train
        go0 = jnp.asarray(True) if parallel is None else parallel.replicate(np.bool_(True))
        ahead: dict[int, Any] = {}

        def order(epoch: int):
            idx = epoch_order(words, epoch, n, batch_size)
            return idx if parallel is None else parallel.replicate(idx)

        def run_epoch(ts: TrainState, epoch: int, go: Any):
            idx = ahead.pop(epoch, None)
            # numpy scalars and arrays ride along with the call (a jnp.int32 would cost a
            # separate device transfer, ~50 us: most of a tiny model's epoch overhead)
            out = cf.epoch(ts, np.int32(epoch), order(epoch) if idx is None else idx,
                           x, y, xv, yv, go)
            if epoch + 1 < epochs and not queue:  # drawn while the device runs this epoch
                ahead[epoch + 1] = order(epoch + 1)
            return out
    else:

        # placed on the thread too (the transfer overlaps the step); unthreaded, NumPy
        # batches go with the step's call as they always did
        place = parallel.shard_batch if parallel is not None else (
            jax.device_put if prefetch_batches else None)

        def batches(ts: TrainState, epoch: int) -> Iterator:
            if streaming:
                return prefetch(train_data(epoch), prefetch_batches, place)
            idx = epoch_order(words, epoch, n, batch_size)
            if parallel is not None and jax.process_count() > 1:
                # this process's slice of every global batch; shard_batch joins the slices
                p = jax.process_index()
                idx = idx[:, p * local_bs:(p + 1) * local_bs]
            return prefetch((_rows(train, row) for row in idx), prefetch_batches, place)

        # The logged grad_norm is the epoch's last step's: compute it there only (a device
        # bool picks the branch of a lax.cond; the two flags live on the device, so no
        # transfer per step), unless step callbacks want it on every step.
        lazy_norm = log_grad_norm and parallel is None and not step_callbacks
        flags = (jnp.asarray(False), jnp.asarray(True))
        last = n // batch_size - 1

        def run_epoch(ts: TrainState, epoch: int, go: Any):
            ts0 = _copy(ts)
            ms = _StepLogs(cf.stack)
            # the step count, read once: one device read per epoch, not one per step
            step0 = int(ts.step) if step_callbacks else 0
            with contextlib.closing(batches(ts, epoch)) as made:  # stops the prefetch
                for i, batch in enumerate(made):
                    if lazy_norm:
                        ts, m = cf.step(ts, batch, grad_norm=flags[streaming or i == last])
                    else:
                        ts, m = cf.step(ts, batch)
                    ms.add(m)
                    for cb in step_callbacks:
                        if cb(step0 + i + 1, ts, m):
                            raise _StopSteps(ts, ts0, ms)
            if not ms.count:
                raise ValueError(f"train_data gave no batches in epoch {epoch}")
            return (*cf.finish(ts, ts0, ms.chunks(), xv, yv, np.int32(epoch)), go)

    # ------------------------------------------------------------------ the loop
    history: dict[str, list[float]] = {}
    stop_reason = "completed"
    interrupted = False
    if already_stopped:
        stop_reason = early_stop_reason(early_stopping, ts.best_epoch)
    end = start_epoch if already_stopped else epochs
    epochs_run = 0
    if parallel is not None and not parallel.is_main_process():
        progress = False
    bar = EpochProgress(max(end - start_epoch, 0), 0, progress)
    go, pending, t0 = go0, None, time.perf_counter()
    try:
        for epoch in range(start_epoch, end):
            if not queue:
                t0 = time.perf_counter()
            try:
                if pending is None:
                    ts, packed, go = run_epoch(ts, epoch, go)
                else:
                    (ts, packed, go), pending = pending, None
            except _StopSteps as s:
                ts, packed = cf.finish(s.ts, s.ts0, s.ms.chunks(), xv, yv, np.int32(epoch))
                stop_reason = f"step callback stopped training at step {int(ts.step)}"
            if queue and epoch + 1 < epochs:
                pending = run_epoch(ts, epoch + 1, go)  # consumes ts (donated)
                # If this epoch ends training, the queued one is a no-op: its state is ours.
                ts = pending[0]
            logs = dict(zip(names, np.asarray(jax.device_get(packed)).tolist(), strict=True))
            seconds = time.perf_counter() - t0
            t0 += seconds  # queued epochs: the next one's time runs from here
            bad_step = int(logs["nonfinite_step"])
            if bad_step >= 0:
                what = "parameters" if logs["nonfinite_params"] else "loss"
                stop_reason = (
                    f"non-finite {what} at epoch {epoch}, step {bad_step} of the epoch "
                    f"(global step {int(ts.step) + bad_step}); returning the train state "
                    f"from the start of epoch {epoch}"
                )
                break
            epochs_run += 1
            shown = {k: v for k, v in logs.items() if k not in _HIDDEN}
            shown["seconds"] = seconds
            history.setdefault("epoch", []).append(epoch)
            for k, v in shown.items():
                history.setdefault(k, []).append(v)
            bar.update(shown)
            if stop_reason != "completed":
                break
            for cb in callbacks:
                verdict = cb(epoch, ts, shown)
                if not verdict:
                    continue
                name = getattr(cb, "__name__", type(cb).__name__)
                if isinstance(verdict, str):
                    if verdict != INTERRUPT:
                        raise ValueError(f"callback {name} returned {verdict!r}; a callback "
                                         f"returns True, False, None or {INTERRUPT!r}")
                    interrupted = True
                    stop_reason = (f"interrupted: callback {name} asked to stop after epoch "
                                   f"{epoch}; test evaluation skipped")
                else:
                    stop_reason = f"callback {name} stopped training after epoch {epoch}"
                break
            if stop_reason != "completed":
                break
            if early_stopping is not None and should_stop(early_stopping, logs["bad_epochs"]):
                stop_reason = early_stop_reason(early_stopping, logs["best_epoch"])
                break
    finally:
        bar.close()

    # ------------------------------------------------------------------ results
    best_epoch = None
    last_state = ts
    if early_stopping is not None and ts.best_epoch is not None and int(ts.best_epoch) >= 0:
        best_epoch = int(ts.best_epoch)
        if early_stopping.restore_best and ts.best_params is not None:
            ts = ts._replace(params=_copy(ts.best_params), state=_copy(ts.best_state))
    elif history.get("val_loss"):
        best_epoch = int(history["epoch"][int(np.nanargmin(history["val_loss"]))]) if np.any(
            np.isfinite(history["val_loss"])) else None
    test_metrics: dict[str, float] = {}
    if test is not None and not interrupted:
        test_n = int(jax.tree_util.tree_leaves(test[0])[0].shape[0])
        ev = jitted_evaluator(model, loss_fn, metric_fns, test_n, eval_batch_size, parallel)
        out = jax.device_get(ev(ts.params, ts.state, *put(test)))
        test_metrics = {f"test_{k}": float(v) for k, v in out.items()}
    return FitResult(ts, history, best_epoch, epochs_run, stop_reason, test_metrics,
                     last_state)


_take_rows = jax.jit(gather_rows)


def _rows(data: Any, row: np.ndarray) -> Any:
    """Rows ``row`` of every leaf: NumPy leaves indexed on the host, device arrays in ONE
    compiled gather (indexing them one by one from Python costs several dispatches and
    transfers per leaf and step)."""
    leaves, tdef = jax.tree_util.tree_flatten(data)
    on_device = [i for i, a in enumerate(leaves) if isinstance(a, jax.Array)]
    out = [None if i in on_device else a[row] for i, a in enumerate(leaves)]
    if on_device:
        for i, a in zip(on_device, _take_rows([leaves[i] for i in on_device], row), strict=True):
            out[i] = a
    return tdef.unflatten(out)


class _StepLogs:
    """A step-mode epoch's per-step metrics, stacked on the device every
    :data:`~nnkit.train.compiled.STACK_CHUNK` steps: one jitted stack of a bounded number of
    arguments (stacking a whole epoch's steps at once compiled a program with one argument
    per step and metric, seconds for a few thousand steps, again for every epoch length)."""

    def __init__(self, stack: Callable[..., Any]) -> None:
        self.stack, self.count = stack, 0
        self._done: list[Any] = []
        self._open: list[Any] = []

    def add(self, m: Any) -> None:
        self._open.append(m)
        self.count += 1
        if len(self._open) == STACK_CHUNK:
            self._done.append(self.stack(self._open))
            self._open = []

    def chunks(self) -> list[Any]:
        """The stacked chunks, the last one partial; ``finish`` concatenates them."""
        return self._done + ([self.stack(self._open)] if self._open else [])


class _StopSteps(Exception):  # noqa: N818 - internal control flow
    """A per-step callback asked to stop: carries the partial epoch."""

    def __init__(self, ts: TrainState, ts0: TrainState, ms: _StepLogs) -> None:
        super().__init__("step callback stop")
        self.ts, self.ts0, self.ms = ts, ts0, ms
