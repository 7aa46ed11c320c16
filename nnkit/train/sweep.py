"""Hyper-parameter sweeps as ONE compiled program: the epoch function ``vmap``-ed over a
leading model axis. Each model has its own params (its seed), learning rate and weight decay
(set through the optimizer's injected hyper-parameters, so no recompilation per value)."""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from nnkit import optim
from nnkit import parallel as par
from nnkit._checks import check_int, check_seed
from nnkit._memo import memoised
from nnkit.core import Layer
from nnkit.metrics import monitor_mode
from nnkit.optim import Plateau
from nnkit.train.early_stopping import EarlyStopping, stop_reason
from nnkit.train.epoch import gather_rows, make_epoch_fns, make_val_evaluator
from nnkit.train.gradients import resolve_loss, resolve_metrics
from nnkit.train.inputs import as_xy, check_data
from nnkit.train.order import epoch_order, key_words
from nnkit.train.state import TrainState, create_train_state
from nnkit.train.step import make_train_step

__all__ = ["sweep", "SweepResult", "sweep_program", "SweepProgram", "VMAP_MAX_PARAMS",
           "epochs_per_call", "EPOCHS_PER_CALL_MAX_ROWS"]

_WHERE_BAD = ("nonfinite_step", "nonfinite_params")

VMAP_MAX_PARAMS = 100_000
"""``vectorize="auto"`` vmaps models up to this many parameters each, else maps them."""


class SweepResult(NamedTuple):
    """Result of :func:`sweep`.

    Attributes:
      configs: one dict per model: ``learning_rate``, ``weight_decay``, ``seed``.
      histories: one :func:`fit`-style history per model (``epoch``, ``train_loss``, ...),
        one entry per epoch the model trained: a model stopped early has a shorter
        history, one whose loss or parameters went non-finite has NaN from that epoch on.
      train_states: the models' :class:`TrainState` stacked on a leading axis.
      devices: the devices the models were spread over (see :func:`sweep`'s ``devices``).
      stop_reasons: per model, ``"completed"`` or why it stopped (:func:`fit`'s wording).
    """

    configs: list[dict[str, Any]]
    histories: list[dict[str, list[float]]]
    train_states: TrainState
    devices: tuple[jax.Device, ...] = ()
    stop_reasons: tuple[str, ...] = ()

    def best(self, monitor: str = "val_loss", mode: str = "auto") -> int:
        """Index of the model with the best final ``monitor`` (NaN counts as worst);
        ``mode="auto"``: lowest for losses and errors, highest for accuracy and the like."""
        mode = monitor_mode(monitor, mode)
        vals = np.array([h[monitor][-1] for h in self.histories], np.float64)
        vals = np.where(np.isfinite(vals), vals, np.inf if mode == "min" else -np.inf)
        return int(np.argmin(vals) if mode == "min" else np.argmax(vals))

    def train_state(self, i: int) -> TrainState:
        """Model ``i``'s train state (un-stacked). To train it on, pass ``fit`` the optimizer
        with its rate, ``optim.make(name, configs[i]["learning_rate"], weight_decay=...)``:
        ``fit(train_state=...)`` trains with the optimizer it is given."""
        return jax.tree_util.tree_map(lambda a: a[i], self.train_states)


def sweep(
    model: Layer,
    optimizer_name: str,
    train_data: Any,
    *,
    learning_rates: Sequence[float] | None = None,
    weight_decays: Sequence[float] | None = None,
    seeds: Sequence[int] | None = None,
    epochs: int,
    batch_size: int,
    loss: str | Callable = "cross_entropy",
    metrics: Sequence[str | Callable] | dict[str, Callable] | None = None,
    val_data: Any = None,
    input_shape: Any = None,
    eval_batch_size: int = 1024,
    vectorize: str = "auto",
    devices: str | Sequence[jax.Device] = "auto",
    schedule: Callable[[float], Callable] | None = None,
    early_stopping: EarlyStopping | None = None,
    plateau: Plateau | None = None,
    **optimizer_kwargs: Any,
) -> SweepResult:
    """Trains one model per point of ``learning_rates x weight_decays x seeds`` together.

    Model ``m`` gets exactly what ``fit(model, optim.make(optimizer_name, lr_m,
    weight_decay=wd_m, **optimizer_kwargs), train_data, key=seed_m, ...)`` would: params
    from its seed and **its own data order** (:func:`nnkit.train.order.epoch_order` of its
    seed, as in :func:`fit`), so each model equals its separate run. Models with the same
    seed have the same order, so a grid of one seed (learning rates, weight decays) gathers
    the data once per epoch for all models; models with their own seeds gather each batch
    inside the step, as :func:`fit` does (no copy of the data per model). Plus every
    model's params and optimizer state.
    Missing lists default to ``[optimizer_kwargs.get("learning_rate", 1e-3)]``, ``[0.0]``
    and ``[0]``. A model whose epoch goes non-finite stops there, as :func:`fit` does: that
    epoch is rolled back, the model keeps the state from the start of that epoch, its logs
    are NaN from that epoch on, and its ``stop_reasons`` entry says where; the other models
    go on. No host sync until the end: every epoch's logs come
    back in one transfer.

    ``vectorize``: how the models share the compiled epoch. ``"vmap"`` batches them into
    one wider computation (small models: on CPU 8 tiny MLPs train ~5x faster than one after
    another); ``"map"`` runs them one after another inside the same program (large models,
    where vmap's batched matmuls are slower than the same matmuls one at a time on a CPU;
    it also holds one model's activations at a time, not all of them); ``"auto"`` picks
    ``"map"`` on a CPU for models of more than :data:`VMAP_MAX_PARAMS` parameters, else
    ``"vmap"`` (on GPUs and TPUs always: there a batched matmul is one kernel that fills
    more of the device). Both give the same result.

    ``devices``: the devices the models are spread over, an equal share on each (the model
    axis of the stacked state is sharded; the data is replicated; no device waits for
    another, as the models never communicate). ``"auto"``: as many local devices as divide
    the number of models evenly, the most there can be (6 models on 4 devices: 3 devices,
    2 models each; 5 models: the default device alone); on a CPU, only
    for models of at most :data:`VMAP_MAX_PARAMS` parameters (CPU devices share the cores,
    and one large model already keeps them all busy: 8 W1 MLPs, 669k parameters each, took
    1.4x longer spread over 2 CPU devices than on one). On a CPU, JAX
    shows one device for all cores unless told otherwise before it starts --
    ``jax.config.update("jax_num_cpu_devices", os.cpu_count())`` -- and then tiny models,
    which use one core each, train on all of them (8 of W3's 2-16-16-2 MLPs on 2 cores:
    ~1.7x faster than on one device).

    ``schedule``: the learning-rate schedule as a function of the peak rate, ``lr ->
    optax.Schedule`` (e.g. ``lambda lr: optim.schedule("cosine", learning_rate=lr,
    decay_steps=1000)``): model ``m`` trains as ``fit`` would with
    ``optim.make(optimizer_name, schedule(lr_m), ...)``. The schedule must be proportional
    to its peak (``schedule(c * lr) = c * schedule(lr)``: checked, ``ValueError``
    otherwise), so that one compiled schedule serves all models, each scaled by its own
    rate (``lr_scale`` of :func:`nnkit.optim.make`; the logged ``lr`` is the product). Not
    for ``lars`` or ``adafactor``.

    ``early_stopping`` and ``plateau``: as in :func:`fit`, per model, inside the compiled
    epochs (no host sync): a model whose patience runs out stops after that epoch (the
    others go on; its history ends there, its ``stop_reasons`` entry says so as fit's does),
    and with ``restore_best`` its returned params and state are its best epoch's.
    """
    epochs = check_int(epochs, "epochs", 0)
    prog = sweep_program(
        model, optimizer_name, train_data, learning_rates=learning_rates,
        weight_decays=weight_decays, seeds=seeds, batch_size=batch_size, loss=loss,
        metrics=metrics, val_data=val_data, input_shape=input_shape,
        eval_batch_size=eval_batch_size, vectorize=vectorize, devices=devices,
        schedule=schedule, early_stopping=early_stopping, plateau=plateau, **optimizer_kwargs)
    stacked, live = prog.train_states, prog.live
    x, y = prog.data
    xv, yv = prog.val_data
    histories: list[dict[str, list[float]]] = [{} for _ in prog.configs]
    reasons = ["completed"] * len(prog.configs)
    # Nothing stops a sweep early and nothing is reported per epoch, so the host never waits
    # for an epoch: it queues the epochs in chunks of up to `k` per call while the devices
    # run, and reads every epoch's logs in one transfer at the end. (A read per epoch cost
    # ~90 us of host CPU each time, and a call per epoch ~0.1-0.3 ms, taken from the cores
    # the models train on.)
    k = epochs_per_call(epochs, int(np.size(prog.order(0))))
    pending = []
    for start in range(0, epochs, k):
        count = min(k, epochs - start)  # the last chunk is padded to the compiled k
        stacked, live, logs = prog.epochs(stacked, live, np.int32(start), np.int32(count),
                                          prog.orders(start, count, k), x, y, xv, yv)
        pending.append(logs)
    tables = (np.concatenate(jax.device_get(pending))[:epochs] if pending
              else np.zeros((0, 0, 0)))
    steps_per_epoch = prog.steps_per_epoch
    for epoch, table in enumerate(tables):  # table: (models, keys)
        for m, (h, row) in enumerate(zip(histories, table, strict=True)):
            if reasons[m].startswith("early stopping"):
                continue  # its history ends at the epoch it stopped, as fit's does
            logs = dict(zip(prog.names, row.tolist(), strict=True))
            bad = logs.pop("nonfinite_step")
            params_bad = logs.pop("nonfinite_params")
            bad_epochs, best_epoch = logs.pop("bad_epochs", 0), logs.pop("best_epoch", -1)
            if (reasons[m] == "completed" and bad < 0 and early_stopping is not None
                    and bad_epochs >= early_stopping.patience):
                reasons[m] = stop_reason(early_stopping, best_epoch)
            if reasons[m] == "completed" and bad >= 0:
                what = "parameters" if params_bad else "loss"
                reasons[m] = (
                    f"non-finite {what} at epoch {epoch}, step {int(bad)} of the epoch "
                    f"(global step {epoch * steps_per_epoch + int(bad)}); returning the train "
                    f"state from the start of epoch {epoch}")
            h.setdefault("epoch", []).append(epoch)
            for k, v in logs.items():
                h.setdefault(k, []).append(v)
    if early_stopping is not None and early_stopping.restore_best:
        stacked = _restore_best(stacked)
    return SweepResult(prog.configs, histories, stacked, prog.devices, tuple(reasons))


def _restore_best(stacked: TrainState) -> TrainState:
    """Each model's params and state from its best epoch, where it had one (as :func:`fit`
    returns with ``restore_best``)."""
    has = np.asarray(stacked.best_epoch) >= 0

    def pick(best: Any, now: Any) -> Any:
        mask = has.reshape(-1, *([1] * (np.ndim(now) - 1)))
        return jnp.where(mask, best, now)

    return stacked._replace(params=jax.tree_util.tree_map(pick, stacked.best_params,
                                                          stacked.params),
                            state=jax.tree_util.tree_map(pick, stacked.best_state,
                                                         stacked.state))


class SweepProgram(NamedTuple):
    """The compiled sweep epoch and what it runs on (see :func:`sweep_program`).

    Attributes:
      configs: one dict per model (``learning_rate``, ``weight_decay``, ``seed``).
      train_states: the models' initial :class:`TrainState` stacked on a leading axis.
      live: ``(models,)`` bool, all ``True``: which models still train.
      epoch: jitted ``epoch(stacked, live, e, idx, x, y, xv, yv) -> (stacked, live, logs)``,
        ``logs`` of shape ``(models, len(names))``; the stacked state is donated. ``idx`` is
        ``order(e)``. A model whose epoch goes non-finite gets the state from the start of
        that epoch and ``live`` ``False``; its logs are NaN from that epoch on, except the
        failed epoch's ``nonfinite_step`` and ``nonfinite_params`` (see
        :func:`nnkit.train.epoch.make_epoch_fns`).
      order: ``order(e)``, epoch ``e``'s data order on the host
        (:func:`nnkit.train.order.epoch_order` of each model's seed): ``(num_batches,
        batch_size)`` int32 when all models share one seed, else ``(models, num_batches,
        batch_size)``.
      names: the log keys, in the column order of ``logs`` (known after the first call).
      data, val_data: the training / validation arrays on the device (``(None, None)``
        without validation data).
      vectorize: ``"vmap"`` or ``"map"``, as chosen.
      devices: the devices the models are spread over (one entry: no sharding).
      steps_per_epoch: optimizer steps in one epoch (``n // batch_size``).
      epochs: jitted ``epochs(stacked, live, e0, count, idxs, x, y, xv, yv) -> (stacked,
        live, logs)``: ``k = len(idxs)`` epochs ``e0, e0 + 1, ...`` in one call, ``idxs``
        the stacked ``order(e0 + i)``, ``logs`` of shape ``(k, models, len(names))``; the
        first ``count`` epochs run, the rest are skipped (state unchanged, logs NaN), so a
        last, shorter chunk can be padded to the compiled ``k``. Same result as ``k`` calls
        of ``epoch``; what :func:`sweep` runs (see :func:`epochs_per_call`).
    """

    configs: list[dict[str, Any]]
    train_states: TrainState
    live: jax.Array
    epoch: Callable[..., tuple[TrainState, jax.Array, jax.Array]]
    order: Callable[[int], np.ndarray]
    names: list[str]
    data: tuple[Any, Any]
    val_data: tuple[Any, Any]
    vectorize: str
    devices: tuple[jax.Device, ...]
    steps_per_epoch: int
    epochs: Callable[..., tuple[TrainState, jax.Array, jax.Array]]

    def orders(self, start: int, count: int, k: int) -> np.ndarray:
        """The ``idxs`` of one :attr:`epochs` call: ``order(start)``, ...,
        ``order(start + count - 1)`` stacked, padded with zeros to ``k`` epochs (the padded
        epochs are skipped)."""
        idxs = np.stack([self.order(start + i) for i in range(count)])
        if count == k:
            return idxs
        return np.concatenate([idxs, np.zeros((k - count, *idxs.shape[1:]), idxs.dtype)])


def proportional_schedule(schedule: Callable[[float], Callable], optimizer_name: str = "",
                          steps: int = 10_000) -> Callable:
    """``schedule(1.0)``, after checking that ``schedule(lr)`` is ``lr`` times it at 64 steps
    in ``[0, steps]`` (cosine, step decay, exponential, warm-up cosine and SGDR to 0 are;
    an absolute end value or ``cyclic``'s own bounds are not): then one compiled schedule
    serves every model, each scaled by its peak rate. ``ValueError`` otherwise."""
    if optimizer_name in optim.SCALED_STEP_OPTIMIZERS:
        raise ValueError(f"sweep: a schedule with {optimizer_name!r} cannot be shared as a "
                         "scale (its learning rate is not the last factor of its update)")
    unit, double = schedule(1.0), schedule(2.0)
    t = np.unique(np.linspace(0, steps, 64).astype(np.int32))
    a = np.asarray(jax.vmap(unit)(t), np.float64)
    b = np.asarray(jax.vmap(double)(t), np.float64)
    if not np.allclose(b, 2 * a, rtol=1e-5, atol=1e-12):
        raise ValueError("sweep: the schedule is not proportional to its peak learning rate "
                         "(an absolute end value or bounds of its own): train the points as "
                         "separate runs")
    return unit


def _build_sweep_fns(model, loss_fn, metric_fns, opt, n, batch_size, val_n, eval_batch_size,
                     early_stopping, plateau, shared_order, vectorize, devs, sharded):
    """The jitted ``epoch`` and ``epochs`` of a sweep and its (filled on first trace) log
    names; memoised by :func:`_sweep_fns`, so an equal sweep compiles nothing again."""
    step = make_train_step(model, loss_fn, opt, metrics=metric_fns, jit=False,
                           log_grad_norm=True)  # logged at each epoch's last step only
    fns = make_epoch_fns(
        step, n=n, batch_size=batch_size,
        evaluator=make_val_evaluator(model, loss_fn, metric_fns, val_n, eval_batch_size),
        early_stopping=early_stopping, plateau=plateau, grad_norm_last_step=True,
    )
    names: list[str] = []

    def packed(ts_live, train):
        """One model's epoch, ``train(ts, keep) -> (ts, logs)``, and its packed log row."""
        ts, live = ts_live
        ts, logs = train(ts, live)
        if not names:
            names.extend(sorted(logs))
        row = jnp.stack([jnp.asarray(logs[k], jnp.float32) for k in names])
        ok = live & (logs["nonfinite_step"] < 0)
        # NaN from the failed epoch on; the failed epoch keeps the columns that say where
        shown = jnp.array([live if k in _WHERE_BAD else ok for k in names])
        go_on = ok
        if early_stopping is not None:  # the epoch that runs out of patience is its last
            go_on = ok & (logs["bad_epochs"] < early_stopping.patience)
        return ts, go_on, jnp.where(shown, row, jnp.nan)

    mesh = Mesh(np.array(devs), ("models",)) if sharded else None

    def on_device(fn, tree):
        """``fn`` over the leading model axis of one device's share of ``tree``: ``vmap``-ed,
        or mapped one model after another; a lone model runs unbatched (W3's MLP: a vmap
        of one model took ~9.8 us per step against ~7.4 us, its weight gradients' dots
        laid out for a batch of one)."""
        if jax.tree_util.tree_leaves(tree)[0].shape[0] == 1:
            out = fn(jax.tree_util.tree_map(lambda a: a[0], tree))
            return jax.tree_util.tree_map(lambda a: a[None], out)
        return jax.vmap(fn)(tree) if vectorize == "vmap" else lax.map(fn, tree)

    def over_models(fn, tree):
        """``fn`` over the leading model axis of ``tree``, each device running its own
        models (``shard_map``: the models never talk to each other, so the program holds
        no collective and a device's code is that of its share alone)."""
        if mesh is None:
            return on_device(fn, tree)
        # check_vma off: a model's step mixes per-device and replicated values (the
        # gradient-norm cond, the shared data) and no collective runs for it to guard.
        return jax.shard_map(functools.partial(on_device, fn), mesh=mesh,
                             in_specs=P("models"), out_specs=P("models"),
                             check_vma=False)(tree)

    def epoch_all(stacked, live, e, idx, x, y, xv, yv):
        if shared_order:  # one gather of the epoch's batches for all models
            xb, yb = gather_rows(x, idx), gather_rows(y, idx)

            def train_shared(ts, keep):
                return fns.train_on(ts, e, xb, yb, xv, yv, keep=keep)

            return over_models(lambda tl: packed(tl, train_shared), (stacked, live))

        def one(tl_idx):
            # each model its own order: gather each batch in the step, as fit does (a whole
            # epoch gathered per model would hold a copy of the data set per model)
            *tl, i = tl_idx

            def train_own(ts, keep):
                return fns.epoch(ts, e, i, x, y, xv, yv, keep=keep)

            return packed(tl, train_own)

        return over_models(one, (stacked, live, idx))

    def epochs_all(stacked, live, e0, count, idxs, x, y, xv, yv):
        """``len(idxs)`` epochs from epoch ``e0`` in one call (one dispatch, one set of
        buffers to hand over: on CPU that is ~0.1-0.3 ms a call, a tenth of a tiny model's
        epoch); epochs from ``count`` on (padding of a last, shorter chunk) are skipped."""

        def one(carry, i_idx):
            i, idx = i_idx

            def run(c):
                s, lv, logs = epoch_all(*c, e0 + i, idx, x, y, xv, yv)
                return (s, lv), logs

            shape = jax.eval_shape(run, carry)[1]
            return lax.cond(i < count, run,
                            lambda c: (c, jnp.full(shape.shape, jnp.nan, shape.dtype)), carry)

        steps = jnp.arange(idxs.shape[0], dtype=jnp.int32)
        (stacked, live), logs = lax.scan(one, (stacked, live), (steps, idxs))
        return stacked, live, logs

    if mesh is not None:
        by_model = par.data_sharding(mesh)
        run = jax.jit(epoch_all, donate_argnums=(0,),
                      out_shardings=(by_model, by_model, by_model))
        run_many = jax.jit(epochs_all, donate_argnums=(0,),
                           out_shardings=(by_model, by_model, par.data_sharding(mesh, 1)))
    else:
        run = jax.jit(epoch_all, donate_argnums=(0,))
        run_many = jax.jit(epochs_all, donate_argnums=(0,))
    return run, run_many, names


_sweep_fns = memoised(4)(_build_sweep_fns)


def sweep_program(
    model: Layer,
    optimizer_name: str,
    train_data: Any,
    *,
    learning_rates: Sequence[float] | None = None,
    weight_decays: Sequence[float] | None = None,
    seeds: Sequence[int] | None = None,
    batch_size: int,
    loss: str | Callable = "cross_entropy",
    metrics: Sequence[str | Callable] | dict[str, Callable] | None = None,
    val_data: Any = None,
    input_shape: Any = None,
    eval_batch_size: int = 1024,
    vectorize: str = "auto",
    devices: str | Sequence[jax.Device] = "auto",
    schedule: Callable[[float], Callable] | None = None,
    early_stopping: EarlyStopping | None = None,
    plateau: Plateau | None = None,
    **optimizer_kwargs: Any,
) -> SweepProgram:
    """Builds what :func:`sweep` runs, without running it: the stacked initial states and the
    compiled epoch of all models (same arguments as :func:`sweep`, less ``epochs``)."""
    if vectorize not in ("auto", "vmap", "map"):
        raise ValueError(f"unknown vectorize {vectorize!r}; known: auto, vmap, map")
    batch_size = check_int(batch_size, "batch_size")
    eval_batch_size = check_int(eval_batch_size, "eval_batch_size")
    for one, many, given in (("learning_rate", "learning_rates", learning_rates),
                             ("weight_decay", "weight_decays", weight_decays)):
        if given is not None and one in optimizer_kwargs:
            raise ValueError(f"sweep: give {one}= (one value) or {many}= (the values swept), "
                             "not both")
    lrs = list(learning_rates) if learning_rates is not None else [
        optimizer_kwargs.pop("learning_rate", 1e-3)]
    wds = list(weight_decays) if weight_decays is not None else [
        optimizer_kwargs.pop("weight_decay", 0.0)]
    seed_list = list(seeds) if seeds is not None else [0]
    if not lrs or not wds or not seed_list:
        raise ValueError("sweep: learning_rates, weight_decays and seeds must be non-empty")
    lrs, wds = _rates(lrs, "learning_rates"), _rates(wds, "weight_decays")
    seed_list = [check_seed(s) for s in seed_list]
    configs = [
        {"learning_rate": float(lr), "weight_decay": float(wd), "seed": int(s)}
        for lr, wd, s in itertools.product(lrs, wds, seed_list)
    ]
    _model_devices(devices, len(configs), small=True)  # bad devices: an error before any work
    loss_fn = resolve_loss(loss)
    metric_fns = resolve_metrics(metrics, loss_fn)
    train = as_xy(train_data, "train_data")
    val = as_xy(val_data, "val_data")
    n = int(jax.tree_util.tree_leaves(train[0])[0].shape[0])
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} is larger than the training set ({n})")
    input_shape, _ = check_data(model, loss_fn, train, {"val_data": val}, input_shape,
                                metrics=metric_fns)

    # One optimizer structure for all; per-model values go into the injected hyperparams.
    # The placeholders do not depend on the values swept, so the optimizer (memoised by
    # optim.make) and the compiled program are found again by a sweep over other values.
    wd_placeholder = 1.0 if any(wds) else 0.0
    if schedule is None:
        opt = optim.make(optimizer_name, 1.0, weight_decay=wd_placeholder,
                         **optimizer_kwargs)
        lr_name = "learning_rate"
    else:  # one schedule shape at peak 1, each model's peak as its lr_scale
        opt = optim.make(optimizer_name, proportional_schedule(schedule, optimizer_name),
                         weight_decay=wd_placeholder, lr_scale=1.0, **optimizer_kwargs)
        lr_name = "lr_scale"
    if early_stopping is not None or plateau is not None:
        monitors = [m.monitor for m in (early_stopping, plateau) if m is not None]
        if val is None and any(m.startswith("val_") for m in monitors):
            raise ValueError(f"sweep: monitoring {monitors} needs val_data")
    states = []
    for c in configs:
        ts = create_train_state(model, input_shape, opt, c["seed"],
                                early_stopping=early_stopping, plateau=plateau)
        os_ = optim.set_hyperparam(ts.opt_state, lr_name, c["learning_rate"])
        if wd_placeholder or "weight_decay" in _hyper_names(os_):
            os_ = optim.set_hyperparam(os_, "weight_decay", c["weight_decay"])
        states.append(ts._replace(opt_state=os_))
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *states)

    val_n = None if val is None else int(jax.tree_util.tree_leaves(val[0])[0].shape[0])
    # Models that share a seed share their data order: shuffle and gather once for all of
    # them, else once per model.
    shared_order = len(set(seed_list)) == 1
    per_model = sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(states[0].params))
    devs = _model_devices(devices, len(configs), small=per_model <= VMAP_MAX_PARAMS)
    vectorize = _vectorize(vectorize, per_model, devs[0].platform)

    words = [key_words(ts.key) for ts in states[:1 if shared_order else None]]

    def order(e: int) -> np.ndarray:
        idx = [epoch_order(w, e, n, batch_size) for w in words]
        return idx[0] if shared_order else np.stack(idx)

    sharded = len(devs) > 1 or not isinstance(devices, str)
    run, run_many, names = _sweep_fns(
        model, loss_fn, metric_fns, opt, n, batch_size, val_n, eval_batch_size,
        early_stopping, plateau, shared_order, vectorize, tuple(devs), sharded)
    if sharded:
        mesh = Mesh(np.array(devs), ("models",))
        by_model, replicated = par.data_sharding(mesh), par.replicated(mesh)
        stacked = jax.device_put(stacked, by_model)
        live = jax.device_put(np.ones(len(configs), bool), by_model)
    else:
        replicated = None
        live = jnp.ones(len(configs), bool)
    data = tuple(jax.device_put(train, replicated))
    vdata = (None, None) if val is None else tuple(jax.device_put(val, replicated))
    return SweepProgram(configs, stacked, live, run, order, names, data, vdata, vectorize, devs,
                        n // batch_size, run_many)


def _rates(values: Sequence[Any], name: str) -> list[float]:
    """``values`` (numbers, NumPy or JAX scalars) as floats, each finite and ``>= 0``."""
    out = []
    for v in values:
        try:
            f = float(v) if not isinstance(v, bool | np.bool_ | str) else None
        except (TypeError, ValueError):
            f = None
        if f is None or not (math.isfinite(f) and f >= 0):
            raise ValueError(f"sweep: {name} must be finite numbers >= 0, got {v!r}")
        out.append(f)
    return out


EPOCHS_PER_CALL_MAX_ROWS = 1 << 22
""":func:`sweep` hands at most this many data-order entries (int32) to one call."""


def epochs_per_call(epochs: int, order_size: int) -> int:
    """How many epochs :func:`sweep` runs per call of :attr:`SweepProgram.epochs`: all of
    them, unless their data orders (``order_size`` entries each) would exceed
    :data:`EPOCHS_PER_CALL_MAX_ROWS`; at least one."""
    return max(1, min(epochs, EPOCHS_PER_CALL_MAX_ROWS // max(1, order_size)))


def _model_devices(
    devices: str | Sequence[jax.Device], n_models: int, *, small: bool
) -> tuple:
    """The devices of a sweep of ``n_models`` models (see :func:`sweep`'s ``devices``);
    ``small``: one model is too small to keep all cores of a CPU busy."""
    if isinstance(devices, str):
        if devices != "auto":
            raise ValueError(f"unknown devices {devices!r}; give 'auto' or a list of devices")
        local = jax.local_devices()
        # CPU devices share the cores: a large model already uses all of them.
        if not small and local[0].platform == "cpu":
            return (local[0],)
        used = max(d for d in range(1, len(local) + 1) if n_models % d == 0)
        return tuple(local[:used])
    devs = tuple(devices)
    if not devs or n_models % len(devs):
        raise ValueError(
            f"sweep: {n_models} models cannot be shared evenly by {len(devs)} devices; give "
            f"a number of devices that divides the number of models")
    return devs


def _vectorize(vectorize: str, per_model: int, platform: str) -> str:
    """``vectorize="auto"`` resolved for models of ``per_model`` parameters on ``platform``:
    ``"vmap"`` except for models over :data:`VMAP_MAX_PARAMS` on a CPU, where XLA's batched
    matmuls lose to the same matmuls one model at a time. On GPUs and TPUs a batched matmul
    is one kernel that fills more of the device than one model's matmuls."""
    if vectorize != "auto":
        return vectorize
    return "map" if platform == "cpu" and per_model > VMAP_MAX_PARAMS else "vmap"


def _hyper_names(opt_state: Any) -> set[str]:
    try:
        optim.get_hyperparam(opt_state, "weight_decay")
        return {"weight_decay"}
    except KeyError:
        return set()
