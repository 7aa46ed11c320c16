"""Config -> everything a run needs (model, data splits, optimizer), validated up front.

:func:`prepare` does all the checks that can fail on user input (data set options, data
files, model vs data shapes, loss and metrics vs model outputs and task, batch size vs data
size, the values of schedule, optimizer and augmentation options) BEFORE a run directory
exists, turning them into :class:`nnkit.config.ConfigError` where a config key is at fault.
Option values are checked against their functions' ``int`` / ``float`` annotations, then
each schedule, the optimizer (init + one update) and each augmentation is traced once
abstractly (``jax.eval_shape``); an error names the option at fault. A schedule is also
evaluated over the run's steps: a negative or non-finite learning rate is an error.

:func:`make_parallel` turns the config's ``parallel:`` section into a
:class:`nnkit.parallel.DataParallel` (it may start JAX's multi-process runtime, so the
command line calls it before anything touches a device); ``precision:`` becomes
:attr:`Prepared.policy` and the model is wrapped with it.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnkit import models, optim
from nnkit import precision as _precision
from nnkit._memo import memoised
from nnkit.config import AUGMENTATIONS, Config, ConfigError, typed_options
from nnkit.core import Layer, ShapeError, abstract_init
from nnkit.train import EarlyStopping, Plateau, TrainState, create_train_state
from nnkit.train.gradients import resolve_loss
from nnkit.train.inputs import check_binary_targets, check_data, check_finite, check_targets
from nnkit.train.step import apply_policy

__all__ = ["Prepared", "prepare", "prepare_named", "initial_state", "monitor_of",
           "make_parallel", "check_parallel", "policy_of", "SOFTMAX_LOSSES", "CLASS_METRICS"]

XY = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Prepared:
    """A validated run: the model, data splits (host NumPy arrays) and training objects.

    Attributes:
      cfg: the config, with the model's output width filled in from the data.
      model: the :class:`nnkit.Layer` (wrapped with :attr:`policy` when there is one).
      input_shape: per-example input shape (no batch dim).
      train, val, test: ``(x, y)`` splits (``val``/``test`` ``None`` when absent); x is
        standardised with train statistics when ``data.standardize``.
      num_classes: classes of a classification set, else ``None``.
      task: ``"classification"``, ``"regression"`` or ``"sequence"``.
      optimizer: the Optax transformation from :func:`nnkit.optim.make`.
      early_stopping, plateau: fit's settings or ``None``.
      augment: ``augment(key, x) -> x`` or ``None``.
      steps_per_epoch: ``n_train // batch_size``.
      policy: the ``precision:`` policy (:class:`nnkit.precision.Policy`) or ``None``.
    """

    cfg: Config
    model: Layer
    input_shape: tuple[int, ...]
    train: XY
    val: XY | None
    test: XY | None
    num_classes: int | None
    task: str
    optimizer: optax.GradientTransformation
    early_stopping: EarlyStopping | None
    plateau: Plateau | None
    augment: Callable | None
    steps_per_epoch: int
    policy: _precision.Policy | None = None


def _load_data(cfg: Config) -> Any:
    """The data set; a loader's argument errors (unknown option, value out of range) become
    ConfigErrors naming ``data.options``, corrupt files stay ``DataFormatError``."""
    from nnkit import data
    from nnkit.data.registry import loader

    fn = loader(cfg.data.dataset)
    options = typed_options(fn, cfg.data.options, "data.options")
    limit = options.get("limit")
    if limit is not None and limit < 1:  # before any file is read
        raise ConfigError(f"limit must be >= 1, got {limit}", key="data.options.limit")
    try:
        return data.load(cfg.data.dataset, **options)
    except data.DataFormatError:
        raise
    except (TypeError, ValueError) as e:
        # which option: the first whose default loads (generated sets: milliseconds)
        where = _culprit(fn, functools.partial(_probe_load, cfg.data.dataset), options,
                         "data.options", options, keep=("path",))
        raise ConfigError(str(e), key=where) from None


def _probe_load(name: str, options: dict[str, Any]) -> Any:
    """``data.load(name, **options)`` for :func:`_culprit`: files it cannot read make these
    options fail too (a ValueError), instead of ending the search."""
    from nnkit import data

    try:
        return data.load(name, **options)
    except OSError as e:
        raise ValueError(str(e)) from None


def _split(cfg: Config, ds: Any) -> tuple[XY, XY | None, XY | None]:
    from nnkit.data import split_contiguous, split_indices, standardize

    fr = list(cfg.data.split) + [0.0] * (3 - len(cfg.data.split))
    strat = (cfg.data.stratify and ds.task == "classification"
             and np.ndim(ds.y) == 1 and np.issubdtype(np.asarray(ds.y).dtype, np.integer))
    if getattr(ds, "overlap", 0) > 0:  # windows of one sequence: contiguous blocks, apart
        idx = split_contiguous(int(ds.x.shape[0]), fr, gap=ds.overlap)
    else:
        idx = split_indices(ds.y if strat else int(ds.x.shape[0]), fr, cfg.data.split_seed,
                            strat)
    parts: list[XY | None] = [
        (ds.x[i], ds.y[i]) if len(i) else None for i in idx
    ]
    train, val, test = parts
    if test is None and fr[2] == 0 and ds.x_test is not None:
        test = (ds.x_test, ds.y_test)
    if cfg.data.standardize:
        if not np.issubdtype(np.asarray(train[0]).dtype, np.floating):
            raise ConfigError(f"cannot standardize {np.asarray(train[0]).dtype} inputs "
                              "(token ids?)", key="data.standardize")
        others = [p[0] for p in (val, test) if p is not None]
        (xt, *rest), _ = standardize(train[0], *others)
        it = iter(rest)
        train = (xt, train[1])
        val = None if val is None else (next(it), val[1])
        test = None if test is None else (next(it), test[1])
    return train, val, test


_TRACE_ERRORS = (TypeError, ValueError, NotImplementedError, IndexError, KeyError)
"""What a bad option value raises while its function is built or traced (JAX, Optax)."""


def _fails(build: Callable[[dict[str, Any]], Any], kwargs: dict[str, Any]) -> Exception | None:
    """The error ``build(kwargs)`` raises (building and tracing with the options), or None."""
    try:
        build(kwargs)
    except _TRACE_ERRORS as e:
        return e
    return None


def _culprit(fn: Callable, build: Callable[[dict[str, Any]], Any], kwargs: dict[str, Any],
             key: str, given: Collection[str], keep: Collection[str] = ()) -> str:
    """The dotted key of the option at fault: the first optional one whose default makes
    ``build`` work, else the only required one the config ``given``, else ``key`` itself.
    Options in ``keep`` (a data set's ``path``) are never left out to find out."""
    params = inspect.signature(fn).parameters
    optional = [n for n in kwargs if n not in keep
                and (n not in params or params[n].default is not params[n].empty)]
    for name in optional:
        if _fails(build, {k: v for k, v in kwargs.items() if k != name}) is None:
            return f"{key}.{name}"
    required = [n for n in kwargs if n not in optional and n in given]
    return f"{key}.{required[0]}" if len(required) == 1 else key


def _checked(fn: Callable, build: Callable[[dict[str, Any]], Any], kwargs: dict[str, Any],
             key: str, given: Collection[str] | None = None) -> None:
    """Runs ``build(kwargs)`` once; its error -> ConfigError naming the option at fault
    (``given``: the options the config names, default all of ``kwargs``)."""
    err = _fails(build, kwargs)
    if err is not None:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        where = _culprit(fn, build, kwargs, key, kwargs if given is None else given)
        raise ConfigError(f"{msg} ({type(err).__name__})", key=where) from None


SCHEDULE_SAMPLES = 10_001
"""How many of a run's steps :func:`_check_rates` evaluates the schedule at, at most (all
of them when the run has fewer)."""


@memoised(16)
def _rates_program(sched: Callable) -> Callable:
    """``jit(vmap(sched))``, one per schedule (``optim.schedule`` memoises the schedules):
    a sweep prepares every grid point, and would compile it again each time."""
    return jax.jit(jax.vmap(sched))


def _check_rates(sched: Callable, total_steps: int) -> None:
    """The schedule evaluated on the host at the run's steps ``0..total_steps`` (evenly
    spaced ones when there are more than :data:`SCHEDULE_SAMPLES`): a negative rate (gradient
    ascent; not float rounding around 0) or a non-finite one -> ConfigError naming
    ``optimizer.schedule``."""
    total = max(int(total_steps), 1)
    steps = np.unique(np.linspace(0, total, min(total + 1, SCHEDULE_SAMPLES)).astype(np.int64))
    try:  # this process's own CPU (in a multi-process run another's is not addressable)
        host = jax.local_devices(backend="cpu")[0]
    except RuntimeError:  # no CPU backend in this process: the default device will do
        host = None
    with jax.default_device(host):
        rates = np.asarray(_rates_program(sched)(jnp.asarray(steps, jnp.int32)), np.float64)
    finite = np.isfinite(rates)
    peak = float(np.max(np.abs(rates[finite]), initial=0.0))
    bad = ~finite | (rates < -1e-6 * peak)  # float rounding below 0 (cosine, linear): zero
    if bad.any():
        i = int(np.argmax(bad))
        what = "negative" if np.isfinite(rates[i]) else "not finite"
        raise ConfigError(f"the learning rate is {what} ({rates[i]:g}) at step {steps[i]} of "
                          f"the run's {total} optimizer steps: check the schedule's arguments",
                          key="optimizer.schedule")


def _schedule(cfg: Config, total_steps: int) -> Any:
    """The learning rate: ``optimizer.lr``, or the schedule built and traced once on a step
    count (``auto`` step counts resolved; errors name ``optimizer.schedule.<argument>``)
    and evaluated over the run's steps (:func:`_check_rates`)."""
    spec = cfg.optimizer.schedule
    if spec is None:
        return cfg.optimizer.lr
    name = spec["name"]
    fn = optim.SCHEDULES[name]
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    params = inspect.signature(fn).parameters
    for lr_arg in ("learning_rate", "max_lr"):
        if lr_arg in params and lr_arg not in kwargs:
            kwargs[lr_arg] = cfg.optimizer.lr
            break
    for k, v in kwargs.items():
        if v == "auto":
            kwargs[k] = max(int(total_steps), 1)
    kwargs = typed_options(fn, kwargs, "optimizer.schedule")

    def build(kw: dict[str, Any]) -> Any:
        sched = optim.schedule(name, **kw)
        jax.eval_shape(sched, jax.ShapeDtypeStruct((), jnp.int32))
        return sched

    _checked(fn, build, kwargs, "optimizer.schedule", given=spec)
    sched = build(kwargs)
    _check_rates(sched, total_steps)
    return sched


def schedule_of_lr(cfg: Config, total_steps: int) -> Callable[[float], Any] | None:
    """The config's schedule as a function of the peak rate (``lr -> schedule`` with
    ``optimizer.lr`` replaced), what :func:`nnkit.train.sweep` takes; ``None`` without one."""
    if cfg.optimizer.schedule is None:
        return None
    import dataclasses

    def of(lr: float) -> Any:
        opt = dataclasses.replace(cfg.optimizer, lr=float(lr))
        return _schedule(dataclasses.replace(cfg, optimizer=opt), total_steps)

    return of


def _optimizer(cfg: Config, lr: Any, model: Layer,
               input_shape: tuple[int, ...]) -> optax.GradientTransformation:
    """:func:`nnkit.optim.make` from the config, traced once (init + update on the model's
    abstract parameters): a bad ``optimizer.options`` value -> ConfigError naming it."""
    o = cfg.optimizer
    params = abstract_init(model, input_shape)[1]

    def build(kw: dict[str, Any]) -> optax.GradientTransformation:
        opt = optim.make(o.name, lr, weight_decay=o.weight_decay, clip_norm=o.clip_norm,
                         accumulate=o.accumulate, **kw)
        jax.eval_shape(lambda p: opt.update(p, opt.init(p), p), params)
        return opt

    _checked(optim.OPTIMIZERS[o.name][0], build, dict(o.options), "optimizer.options")
    return build(dict(o.options))


def _check_sizes(fn: Callable, kwargs: dict[str, Any], key: str,
                 input_shape: tuple[int, ...]) -> None:
    """An augmentation's int arguments are sizes in pixels (``max_shift``, ``padding``): a
    negative one, or one not smaller than the (H, W, C) images (a shift or crop that can
    leave nothing of the image) -> ConfigError."""
    params = inspect.signature(fn, eval_str=True).parameters
    for name, v in kwargs.items():
        if name in params and params[name].annotation is int:
            if v < 0:
                raise ConfigError(f"must be >= 0 (a size in pixels), got {v}",
                                  key=f"{key}.{name}")
            h, w = input_shape[:2]
            if v >= min(h, w):
                raise ConfigError(f"must be smaller than the images ({h}x{w} pixels), got {v}: "
                                  "it could move the whole image out of view",
                                  key=f"{key}.{name}")


def _augment(cfg: Config, input_shape: tuple[int, ...], dtype: Any) -> Callable | None:
    """``augment(key, x)`` from ``data.augmentation``; each function is traced once on one
    example (errors name ``data.augmentation[i].<option>``)."""
    if not cfg.data.augmentation:
        return None
    from nnkit.data import augment as aug

    example = jax.ShapeDtypeStruct(input_shape, dtype)
    fns = []
    for i, spec in enumerate(cfg.data.augmentation):
        name, key = spec["name"], f"data.augmentation[{i}]"
        assert name in AUGMENTATIONS
        if name != "gaussian_noise" and len(input_shape) != 3:
            raise ConfigError(
                f"{name} needs (H, W, C) image inputs, the data have {input_shape}", key=key)
        fn = getattr(aug, name)
        kwargs = typed_options(fn, {k: v for k, v in spec.items() if k != "name"}, key)
        _check_sizes(fn, kwargs, key, input_shape)

        def build(kw: dict[str, Any], fn: Callable = fn) -> Callable:
            f = functools.partial(fn, **kw)
            jax.eval_shape(lambda x: f(jax.random.key(0), x), example)
            return f

        _checked(fn, build, kwargs, key)
        fns.append(functools.partial(fn, **kwargs))

    def augment(key: jax.Array, x: jax.Array) -> jax.Array:
        return aug.augment_batch(key, x, fns)

    return augment


def _check_model(cfg: Config, model: Layer, train: XY, others: dict[str, XY | None],
                 input_shape: tuple[int, ...]) -> Any:
    """The model's per-example output shape; a model that cannot take the data (or labels
    outside its outputs) -> ConfigError naming ``model``."""
    try:
        return check_data(model, None, train, others, None)[1]
    except (ShapeError, ValueError) as e:
        raise ConfigError(f"the model does not fit the data {cfg.data.dataset!r} "
                          f"(inputs {input_shape}): {e}", key="model") from None


SOFTMAX_LOSSES = ("cross_entropy", "nll")
"""Losses over a softmax of class scores: they need a classification data set (one with
``num_classes``) and a model with more than one output unit."""

CLASS_METRICS = ("accuracy", "macro_f1", "top_<k>_accuracy")
"""Metrics of predicted classes: they need a classification data set."""


def _is_class_metric(name: str) -> bool:
    return name in CLASS_METRICS or re.fullmatch(r"top_\d+_accuracy", name) is not None


def _units(out_shape: Any) -> int | None:
    ok = isinstance(out_shape, tuple) and out_shape and isinstance(out_shape[-1], int)
    return out_shape[-1] if ok else None


def _check_loss(cfg: Config, out_shape: Any, y: np.ndarray, num_classes: int | None,
                splits: dict[str, XY | None]) -> None:
    """A classification loss on data without classes, a softmax over one output unit,
    model outputs the loss cannot compare with the targets, or binary cross-entropy
    targets (of any of ``splits``) outside [0, 1] -> ConfigError naming ``loss``."""
    where = f"the data set {cfg.data.dataset!r}"
    if cfg.loss in SOFTMAX_LOSSES and num_classes is None:
        raise ConfigError(f"{cfg.loss!r} needs a classification data set; {where} has no "
                          "classes (regression targets): use mse, l1 or huber", key="loss")
    if cfg.loss in SOFTMAX_LOSSES and _units(out_shape) == 1:
        raise ConfigError(f"{cfg.loss!r} takes a softmax over the model's outputs, but the "
                          "model has 1 output unit (a constant softmax): give it one unit "
                          "per class, or use binary_cross_entropy", key="loss")
    units = _units(out_shape)
    if cfg.loss in SOFTMAX_LOSSES and units is not None and units != num_classes:
        raise ConfigError(f"the model has {units} output units but {where} has "
                          f"{num_classes} classes: give its last layer {num_classes} units "
                          "(or leave an arch's `out` unset: it is sized from the data)",
                          key="model")
    try:
        check_targets(resolve_loss(cfg.loss), out_shape, y, f"loss {cfg.loss!r}")
        for part, d in splits.items():
            if d is not None:
                check_binary_targets(resolve_loss(cfg.loss), d[1], f"its {part} y",
                                     f"loss {cfg.loss!r}")
    except ValueError as e:
        raise ConfigError(f"does not fit {where}: {e}", key="loss") from None


def _check_metrics(cfg: Config, out_shape: Any, y: np.ndarray, num_classes: int | None) -> None:
    """Each metric as :func:`_check_loss` checks the loss -> ConfigError naming
    ``metrics[i]``."""
    from nnkit import metrics as M

    for i, name in enumerate(cfg.metrics):
        key = f"metrics[{i}]"
        if _is_class_metric(name) and num_classes is None:
            raise ConfigError(f"{name!r} needs a classification data set; the data set "
                              f"{cfg.data.dataset!r} has no classes (regression targets): "
                              "use mae, mse, rmse or r2", key=key)
        try:
            check_targets(M.get(name), out_shape, y, f"metric {name!r}")
        except ValueError as e:
            raise ConfigError(f"does not fit the data set {cfg.data.dataset!r}: {e}",
                              key=key) from None


def prepare(cfg: Config) -> Prepared:
    """Loads and splits the data, builds the model and optimizer, and checks they fit.

    Raises:
      ConfigError: a config value that does not fit the data (data set options and their
        ranges, batch size, model shapes, a loss or metric that cannot take the model's
        outputs and targets or needs classes the data do not have, schedule, optimizer and
        augmentation option values, augmentation on non-images).
      FileNotFoundError, nnkit.data.DataFormatError: missing or corrupt data files.
    """
    ds = _load_data(cfg)
    train, val, test = _split(cfg, ds)
    for part, d in (("train", train), ("val", val), ("test", test)):
        for xy, a in zip("xy", d or (), strict=False):
            try:
                check_finite(a, f"its {part} {xy}")
            except ValueError as e:
                raise ConfigError(f"the data set {cfg.data.dataset!r} with these options: "
                                  f"{e}", key="data") from None
    n = int(train[0].shape[0])
    if cfg.data.batch_size > n:
        raise ConfigError(
            f"must be <= the training split size {n}, got {cfg.data.batch_size}",
            key="data.batch_size",
        )
    spec = models.with_output_size(cfg.model, ds.num_targets)
    cfg = _replace_model(cfg, spec)
    policy = policy_of(cfg)
    model = apply_policy(models.build(spec), policy)
    input_shape = tuple(int(d) for d in train[0].shape[1:])
    out_shape = _check_model(cfg, model, train, {"val": val, "test": test}, input_shape)
    _check_loss(cfg, out_shape, train[1], ds.num_classes,
                {"train": train, "val": val, "test": test})
    _check_metrics(cfg, out_shape, train[1], ds.num_classes)
    steps = n // cfg.data.batch_size
    total = cfg.training.epochs * steps // cfg.optimizer.accumulate
    if cfg.optimizer.accumulate > 1 and total == 0 and cfg.training.epochs > 0:
        raise ConfigError(f"{cfg.optimizer.accumulate} steps per update, but the whole run has "
                          f"{cfg.training.epochs * steps} steps ({cfg.training.epochs} epochs "
                          f"of {steps}): the parameters would never change",
                          key="optimizer.accumulate")
    optimizer = _optimizer(cfg, _schedule(cfg, total), model, input_shape)
    try:  # float16 state: an eps that rounds to 0 (nnkit.precision.check_optimizer)
        _precision.check_optimizer(policy, optimizer)
    except ValueError as e:
        raise ConfigError(f"optimizer {cfg.optimizer.name!r}: {e} (optimizer.options.eps)",
                          key="precision") from None
    augment = _augment(cfg, input_shape, train[0].dtype)
    es = None
    if (c := cfg.training.early_stopping) is not None:
        es = EarlyStopping(c.monitor, c.resolved_mode, c.patience, c.min_delta, c.restore_best)
    plateau = None
    if (p := cfg.optimizer.plateau) is not None:
        plateau = Plateau(p.monitor, p.mode, p.patience, p.factor, p.min_delta, p.cooldown,
                          p.min_scale)
    for what, mon in (("training.early_stopping.monitor", es and es.monitor),
                      ("optimizer.plateau.monitor", plateau and plateau.monitor)):
        if mon and mon.startswith("val_") and val is None:
            raise ConfigError(f"monitors {mon!r} but there is no validation split "
                              f"({_no_val(cfg, n, test)})", key=what)
    return Prepared(
        cfg=cfg, model=model, input_shape=input_shape, train=train, val=val, test=test,
        num_classes=ds.num_classes, task=ds.task, optimizer=optimizer, early_stopping=es,
        plateau=plateau, augment=augment, steps_per_epoch=steps,
        policy=policy,
    )


def _no_val(cfg: Config, n_train: int, test: XY | None) -> str:
    """Why there are no validation examples: no val fraction in ``data.split``, or one that
    rounds to 0 of the data set's examples (with the counts of the parts)."""
    split = list(cfg.data.split)
    if len(split) < 2 or split[1] == 0:
        return "data.split needs a val fraction"
    n_test = 0 if test is None or len(split) < 3 or split[2] == 0 else int(test[0].shape[0])
    n = n_train + n_test
    return (f"data.split {split} gives {n_train} train, 0 val and {n_test} test examples of "
            f"{n}: its val fraction {split[1]:g} rounds to 0 examples; raise it or use more "
            "data")


def prepare_named(cfg: Config, file: str | None,
                  overrides: Sequence[str] = ()) -> Prepared:
    """:func:`prepare`, its ConfigErrors naming ``--set`` for a key that one of
    ``overrides`` (``"a.b=value"``, as given to :func:`nnkit.config.parse_config`) set,
    else ``file``."""
    try:
        return prepare(cfg)
    except ConfigError as e:
        raise e.with_source(file, overrides) from None


def _replace_model(cfg: Config, spec: dict[str, Any]) -> Config:
    import dataclasses

    return dataclasses.replace(cfg, model=spec)


def initial_state(prep: Prepared) -> TrainState:
    """The train state :func:`nnkit.train.fit` starts from (seed ``cfg.seed``), with the
    early-stopping, plateau and dynamic loss-scale fields it adds: the structure a
    checkpoint restores into.
    Built by one compiled call (:func:`nnkit.train.create_train_state`)."""
    return create_train_state(prep.model, prep.input_shape, prep.optimizer, prep.cfg.seed,
                              early_stopping=prep.early_stopping, plateau=prep.plateau,
                              policy=prep.policy)


def _config_error(e: ValueError, section: str) -> ConfigError:
    """``"parallel.fsdp: expected ..."`` -> ConfigError(key="parallel.fsdp", "expected ...")."""
    msg = str(e)
    head, sep, rest = msg.partition(": ")
    if sep and (head == section or head.startswith(section + ".")):
        return ConfigError(rest, key=head)
    return ConfigError(msg, key=section)


def policy_of(cfg: Config) -> _precision.Policy | None:
    """The ``precision:`` section as a :class:`nnkit.precision.Policy` (``None``: off).

    Raises:
      ConfigError: naming ``precision`` or ``precision.<key>``.
    """
    try:
        return _precision.from_config(cfg.precision)
    except ValueError as e:
        raise _config_error(e, "precision") from None


def make_parallel(cfg: Config, file: str | None = None,
                  overrides: Sequence[str] = ()) -> Any:
    """The ``parallel:`` section as a :class:`nnkit.parallel.DataParallel`, or ``None`` (off).

    Calls :func:`nnkit.parallel.from_config`, which starts JAX's multi-process runtime when
    the section (or the environment) asks for it: call this before anything touches a
    device. An empty section (the default) is off and touches nothing.

    Raises:
      ConfigError: naming ``parallel.<key>`` (unknown key, wrong type, too many devices) and
        ``--set`` or ``file`` as :func:`prepare_named` does.
    """
    from nnkit import parallel as par

    try:
        return par.from_config(cfg.parallel or None)
    except ValueError as e:
        raise _config_error(e, "parallel").with_source(file, overrides) from None


def check_parallel(prep: Prepared, parallel: Any, file: str | None = None,
                   overrides: Sequence[str] = ()) -> None:
    """``data.batch_size`` must split evenly over the devices (and processes).

    Raises:
      ConfigError: naming ``data.batch_size`` (and ``--set`` or ``file``).
    """
    if parallel is None:
        return
    try:
        parallel.local_batch_size(prep.cfg.data.batch_size)
    except ValueError as e:
        raise ConfigError(str(e), key="data.batch_size").with_source(file, overrides) from None


def monitor_of(prep: Prepared) -> tuple[str, str]:
    """``(key, mode)`` deciding the *best* checkpoint: the early-stopping monitor, else
    ``val_loss`` (``train_loss`` without a validation split), lower is better."""
    if prep.early_stopping is not None:
        return prep.early_stopping.monitor, prep.early_stopping.direction
    return ("val_loss" if prep.val is not None else "train_loss"), "min"
