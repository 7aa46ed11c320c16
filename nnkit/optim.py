"""Optimizers, learning-rate schedules and reduce-on-plateau, all as Optax values.

* :func:`make` builds an ``optax.GradientTransformation`` by name. It is wrapped in
  ``optax.inject_hyperparams``, so the current learning rate lives in the optimizer state
  (``opt_state.hyperparams["learning_rate"]``): :func:`get_lr` reads it and
  :func:`set_hyperparam` replaces it, which is how a vmapped sweep gives each model its own
  learning rate in ONE compiled program, and how the LR finder raises it every step.
  ``fit(..., train_state=ts)`` trains with the optimizer it is given: that optimizer's
  injected values replace the state's (moments and counts carry on), so to go on at
  another rate, pass an optimizer made with that rate.
* :func:`schedule` builds an ``optax.Schedule`` (``step -> learning rate``) by name.
* Both are memoised: equal arguments give the same object. ``fit`` and ``sweep`` key their
  compiled programs on the optimizer object, so a second ``fit(model, make("adam", 1e-3),
  ...)`` written inline (or ``optimizer="adam"``) reuses the first one's programs instead
  of compiling them again. Arguments that cannot be hashed (arrays) skip the memo.
* :class:`Plateau` / :class:`PlateauState` / :func:`plateau_update`: reduce-on-plateau as a
  pure pytree updated once per epoch from a validation metric. Its ``scale`` multiplies
  the optimizer's updates -- for the optimizers here whose learning rate is the last factor
  of the update, this equals scaling the injected learning rate, and it composes with any
  schedule. Two are not like that (optax 0.2): ``lars`` applies its momentum after the
  learning rate and ``adafactor`` its weight decay, so for them the scale shrinks the whole
  step (momentum or decay included), not the learning rate alone.

  Why not ``optax.contrib.reduce_on_plateau``: it is a gradient transformation that needs
  the monitored ``value=`` at *every* ``update`` call, i.e. a per-step metric (usually the
  noisy training loss) and a patience counted in steps. Epoch-level validation loss, the
  usual trigger, is only known after the epoch's steps, so we keep the plateau state
  beside the optimizer and update it between epochs (inside the same compiled epoch).
  ``optax.contrib.reduce_on_plateau`` stays available for per-step use.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnkit._checks import check_int
from nnkit._memo import memoised
from nnkit.metrics import monitor_mode

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "make",
    "schedule",
    "get_lr",
    "get_hyperparam",
    "set_hyperparam",
    "inject_states",
    "is_inject_state",
    "Plateau",
    "PlateauState",
    "plateau_init",
    "plateau_update",
]

Schedule = Callable[[Any], Any]

MEMO_SIZE = 256
"""How many distinct optimizers (and, separately, schedules) :func:`make` and
:func:`schedule` keep."""


# ----------------------------------------------------------------------------- optimizers


def _sgd(learning_rate, **kw):
    return optax.sgd(learning_rate, **kw)


def _momentum(learning_rate, momentum=0.9, **kw):
    return optax.sgd(learning_rate, momentum=momentum, nesterov=False, **kw)


def _nesterov(learning_rate, momentum=0.9, **kw):
    return optax.sgd(learning_rate, momentum=momentum, nesterov=True, **kw)


# name -> (factory(learning_rate, **kwargs), name of its own decoupled weight-decay arg | None)
OPTIMIZERS: dict[str, tuple[Callable[..., optax.GradientTransformation], str | None]] = {
    "sgd": (_sgd, None),
    "momentum": (_momentum, None),
    "nesterov": (_nesterov, None),
    "adagrad": (optax.adagrad, None),
    "rmsprop": (optax.rmsprop, None),
    "adadelta": (optax.adadelta, None),
    "adam": (optax.adam, None),
    "adamax": (optax.adamax, None),
    "amsgrad": (optax.amsgrad, None),
    "nadam": (optax.nadam, None),
    "radam": (optax.radam, None),
    "adabelief": (optax.adabelief, None),
    "yogi": (optax.yogi, None),
    "novograd": (optax.novograd, "weight_decay"),
    "adamw": (optax.adamw, "weight_decay"),
    "nadamw": (optax.nadamw, "weight_decay"),
    "lamb": (optax.lamb, "weight_decay"),
    "lars": (optax.lars, "weight_decay"),
    "lion": (optax.lion, "weight_decay"),
    "adafactor": (optax.adafactor, "weight_decay_rate"),
}
"""Known optimizer names. The second entry names the optimizer's own *decoupled* weight
decay argument (``p <- p - lr * (update + wd * p)``), used for ``weight_decay=``; the others
get coupled L2 decay (``optax.add_decayed_weights`` before the optimizer: ``g <- g + wd * p``,
like ``torch.optim``'s ``weight_decay``)."""


SCALED_STEP_OPTIMIZERS = ("lars", "adafactor")
"""Optimizers whose learning rate is not the last factor of their update (see the module
docstring): a scale on the update (plateau, ``lr_scale``) shrinks their whole step."""


DECAY_OPTIONS = ("b1", "b2", "momentum", "decay", "rho")
"""Optax options that are decay rates of running averages (moments, momentum, RMSprop's
``decay``, Adadelta's ``rho``): :func:`make` requires them in ``[0, 1)``."""


def _number(v: Any) -> bool:
    """A plain (Python or NumPy) real number: what the option checks look at; arrays,
    schedules and ``None`` are left to the optimizer."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)


def _check_options(name: str, kwargs: dict[str, Any]) -> None:
    """``ValueError`` for common Optax options out of range: :data:`DECAY_OPTIONS` outside
    ``[0, 1)``, ``eps`` not a finite number > 0 (0 only beside an ``eps_root`` > 0, which
    then keeps the denominator away from 0), ``nesterov`` not a bool."""
    root = kwargs.get("eps_root", 0)
    for k, v in kwargs.items():
        if k in DECAY_OPTIONS and _number(v) and not 0 <= v < 1:
            raise ValueError(f"optimizer {name!r}: {k} must be in [0, 1), got {v!r}")
        if k == "eps" and _number(v) and not (math.isfinite(v) and (
                v > 0 or (v == 0 and _number(root) and root > 0))):
            raise ValueError(f"optimizer {name!r}: eps must be > 0 (or 0 with eps_root > 0), "
                             f"got {v!r}")
    if "nesterov" in kwargs and not isinstance(kwargs["nesterov"], bool | np.bool_):
        raise ValueError(f"optimizer {name!r}: nesterov must be true or false, got "
                         f"{type(kwargs['nesterov']).__name__} {kwargs['nesterov']!r}")


def _unknown(what: str, name: Any, known) -> ValueError:
    return ValueError(f"unknown {what} {name!r}; known: {', '.join(sorted(known))}")


@memoised(MEMO_SIZE)
def make(
    name: str,
    learning_rate: float | Schedule,
    *,
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
    accumulate: int = 1,
    lr_scale: float | None = None,
    **kwargs: Any,
) -> optax.GradientTransformation:
    """An Optax optimizer by name, with its hyper-parameters injected into its state.

    ``optax.chain(clip_by_global_norm(clip_norm)?, add_decayed_weights(wd)?, <name>(lr))``
    wrapped in ``optax.inject_hyperparams`` (and ``optax.MultiSteps`` when ``accumulate>1``).

    Args:
      name: one of :data:`OPTIMIZERS` (``sgd``, ``momentum`` (0.9), ``nesterov``, ``adam``,
        ``adamw``, ``rmsprop``, ``lamb``, ``lion``, ``adafactor``, ...).
      learning_rate: a float or a schedule (see :func:`schedule`); either way the value used
        by the latest update is ``opt_state.hyperparams["learning_rate"]``.
      weight_decay: decoupled (the optimizer's own argument) for ``adamw``, ``nadamw``,
        ``lamb``, ``lars``, ``lion``, ``novograd``, ``adafactor``; coupled L2
        (``g + wd * p`` before the optimizer, as ``torch.optim``) for all others. When it is
        0 no decay transform is added (no extra work per step).
      clip_norm: if given, gradients are first rescaled to global norm ``<= clip_norm``.
      accumulate: ``k > 1`` wraps in ``optax.MultiSteps``: updates are applied every ``k``
        calls with the mean of ``k`` gradients (a ``k`` times larger effective batch). It
        costs one extra copy of the parameters (the gradient accumulator) in the optimizer
        state; for a large effective batch *within* one step without that persistent copy,
        use ``make_train_step(grad_mode="accumulate")`` instead.
      lr_scale: if given, an injected factor on the update after the optimizer (``optax.scale``
        as the last transform): the effective learning rate is ``learning_rate * lr_scale``
        (:func:`get_lr` returns the product). A sweep sets it per model to give models that
        share one schedule shape their own peak rates. (For ``lars`` and ``adafactor`` it
        scales the whole step, as the plateau scale does: see the module docstring.)
      **kwargs: passed to the Optax factory (``b1``, ``b2``, ``eps``, ``momentum``...);
        numeric ones given here are injected hyper-parameters too (settable per model).
        Numbers are range-checked: ``b1``, ``b2``, ``momentum``, ``decay``, ``rho`` in
        ``[0, 1)``, ``eps > 0``; ``nesterov`` must be a bool.

    Raises:
      ValueError: unknown ``name`` (the message lists the known names) or bad arguments
        (naming the argument, its value and the allowed range).

    Equal arguments return the same (immutable) object, so programs compiled for it are
    found again (see the module docstring).
    """
    if name not in OPTIMIZERS:
        raise _unknown("optimizer", name, OPTIMIZERS)
    accumulate = check_int(accumulate, "accumulate")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"clip_norm must be positive or None, got {clip_norm!r}")
    if not callable(learning_rate) and not float(learning_rate) >= 0:
        raise ValueError(f"learning_rate must be >= 0, got {learning_rate!r}")
    if not callable(weight_decay) and not float(weight_decay) >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    _check_options(name, kwargs)
    factory, decay_arg = OPTIMIZERS[name]
    hyper: dict[str, Any] = {"learning_rate": learning_rate, **kwargs}
    use_decay = weight_decay != 0.0
    if decay_arg is not None:
        hyper["weight_decay"] = weight_decay  # always present: it is the optimizer's own arg
    elif use_decay:
        hyper["weight_decay"] = weight_decay
    if clip_norm is not None:
        hyper["clip_norm"] = clip_norm
    if lr_scale is not None:
        hyper["lr_scale"] = lr_scale

    def build(**hp: Any) -> optax.GradientTransformation:
        parts = []
        scale = hp.pop("lr_scale", None)
        clip = hp.pop("clip_norm", None)
        if clip is not None:
            parts.append(optax.clip_by_global_norm(clip))
        wd = hp.pop("weight_decay", None)
        if decay_arg is not None:
            hp[decay_arg] = wd
        elif wd is not None:
            parts.append(optax.add_decayed_weights(wd))
        try:
            parts.append(factory(**hp))
        except TypeError as e:
            raise ValueError(f"optimizer {name!r}: {e}") from None
        if scale is not None:
            parts.append(optax.scale(scale))
        return parts[0] if len(parts) == 1 else optax.chain(*parts)

    def inner_factory(**hp: Any) -> optax.GradientTransformation:
        return build(**hp)

    # inject_hyperparams inspects the factory's signature: give it explicit parameters.
    inner_factory.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY) for k in hyper]
    )
    opt = optax.inject_hyperparams(inner_factory)(**hyper)
    if accumulate > 1:
        opt = optax.MultiSteps(opt, every_k_schedule=accumulate)
    return opt


# ----------------------------------------------------------------------------- hyperparams


def is_inject_state(x: Any) -> bool:
    """Whether ``x`` is the state of an ``optax.inject_hyperparams`` transformation."""
    return isinstance(x, optax.InjectHyperparamsState | optax.InjectStatefulHyperparamsState)


def inject_states(opt_state: Any) -> list:
    """The ``inject_hyperparams`` states inside ``opt_state`` (through ``MultiSteps`` and
    ``chain``), in tree order; their ``hyperparams`` hold the injected values."""
    leaves = jax.tree_util.tree_leaves(opt_state, is_leaf=is_inject_state)
    return [x for x in leaves if is_inject_state(x)]




def get_hyperparam(opt_state: Any, name: str) -> jax.Array:
    """The injected hyper-parameter ``name`` of an :func:`make` optimizer state.

    Looks through ``MultiSteps`` / ``chain`` wrappers for the ``inject_hyperparams`` state.
    With a schedule, it is the value used by the latest update (``schedule(0)`` after init).
    """
    for s in inject_states(opt_state):
        if name in s.hyperparams:
            return s.hyperparams[name]
    found = sorted({k for s in inject_states(opt_state) for k in s.hyperparams})
    raise KeyError(
        f"no injected hyper-parameter {name!r} in this optimizer state (found: {found}); "
        "build the optimizer with nnkit.optim.make or optax.inject_hyperparams"
    )


def get_lr(opt_state: Any) -> jax.Array:
    """The current injected learning rate (scalar): ``get_hyperparam(s, "learning_rate")``,
    times the injected ``lr_scale`` when the optimizer has one (:func:`make`)."""
    lr = get_hyperparam(opt_state, "learning_rate")
    if any("lr_scale" in s.hyperparams for s in inject_states(opt_state)):
        lr = lr * get_hyperparam(opt_state, "lr_scale")
    return lr


def set_hyperparam(opt_state: Any, name: str, value: Any) -> Any:
    """A copy of ``opt_state`` with injected hyper-parameter ``name`` set to ``value``.

    Pure (usable under ``jit``/``vmap``/``scan``); works through ``MultiSteps`` and ``chain``.
    Note: a hyper-parameter given as a *schedule* is recomputed at every update, so setting
    it only lasts until the next update; set constants.

    Raises:
      KeyError: no injected hyper-parameter of that name.
    """
    get_hyperparam(opt_state, name)  # raises a clear KeyError if absent

    def fix(s):
        if is_inject_state(s) and name in s.hyperparams:
            old = s.hyperparams[name]
            hp = dict(s.hyperparams)
            hp[name] = jnp.asarray(value, dtype=jnp.asarray(old).dtype)
            return s._replace(hyperparams=hp)
        return s

    return jax.tree_util.tree_map(fix, opt_state, is_leaf=is_inject_state)


# ----------------------------------------------------------------------------- schedules


def _constant(learning_rate: float) -> Schedule:
    return optax.constant_schedule(learning_rate)


def _step(
    learning_rate: float,
    boundaries: list[int] | None = None,
    factor: float = 0.1,
    values: list[float] | None = None,
    step_size: int | None = None,
) -> Schedule:
    """Piecewise constant: ``lr`` until ``boundaries[0]``, then times ``factor`` at each
    boundary (or ``values[i]`` between boundaries); ``step_size=N`` = every N steps."""
    if step_size is not None:
        if boundaries is not None or values is not None:
            raise ValueError("step schedule: give step_size or boundaries/values, not both")
        if step_size <= 0:
            raise ValueError(f"step schedule: step_size must be positive, got {step_size}")
        return optax.exponential_decay(learning_rate, step_size, factor, staircase=True)
    if boundaries is None:
        raise ValueError("step schedule needs boundaries=[...] (and factor= or values=)")
    bounds = [int(b) for b in boundaries]
    if bounds != sorted(bounds) or any(b <= 0 for b in bounds):
        raise ValueError(f"step schedule: boundaries must be increasing and > 0, got {bounds}")
    if values is not None:
        if len(values) != len(bounds) + 1:
            raise ValueError(
                f"step schedule: values needs len(boundaries)+1 = {len(bounds) + 1} entries, "
                f"got {len(values)}"
            )
        vals = [float(v) for v in values]
    else:
        vals = [float(learning_rate) * factor**i for i in range(len(bounds) + 1)]
    b = jnp.asarray(bounds, jnp.int32)
    v = jnp.asarray(vals, jnp.float32)

    def sched(count):
        return v[jnp.sum(jnp.asarray(count) >= b)]

    return sched


def _exponential(
    learning_rate: float,
    decay_rate: float,
    transition_steps: int = 1,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
    """``lr * decay_rate ** (step / transition_steps)`` (floored with ``staircase``)."""
    return optax.exponential_decay(
        learning_rate, transition_steps, decay_rate, staircase=staircase, end_value=end_value
    )


def _cosine(learning_rate: float, decay_steps: int, alpha: float = 0.0) -> Schedule:
    """``lr * ((1 - alpha) * (1 + cos(pi * t / decay_steps)) / 2 + alpha)``, constant after."""
    return optax.cosine_decay_schedule(learning_rate, decay_steps, alpha)


def _warmup_cosine(
    learning_rate: float,
    warmup_steps: int,
    decay_steps: int,
    init_value: float = 0.0,
    end_value: float = 0.0,
) -> Schedule:
    """Linear ``init_value -> lr`` over ``warmup_steps``, then cosine to ``end_value`` at
    ``decay_steps`` (the total length, warmup included)."""
    return optax.warmup_cosine_decay_schedule(
        init_value, learning_rate, warmup_steps, decay_steps, end_value
    )


def _linear(learning_rate: float, end_value: float, transition_steps: int) -> Schedule:
    """Linear ``lr -> end_value`` over ``transition_steps``, constant after."""
    return optax.linear_schedule(learning_rate, end_value, transition_steps)


def _cyclic(
    base_lr: float, max_lr: float, step_size: int, mode: str = "triangular"
) -> Schedule:
    """Triangular cyclic LR (Smith 2017): ``base -> max`` over ``step_size`` steps and back.

    ``lr = base + (max - base) * max(0, 1 - |t / step_size - 2c + 1|) * s`` with cycle
    ``c = floor(1 + t / (2 step_size))``; ``s = 1`` (``triangular``) or ``2 ** -(c-1)``
    (``triangular2``, amplitude halves each cycle).
    """
    if step_size <= 0:
        raise ValueError(f"cyclic schedule: step_size must be positive, got {step_size}")
    if mode not in ("triangular", "triangular2"):
        raise ValueError(f"cyclic schedule: mode must be triangular|triangular2, got {mode!r}")

    def sched(count):
        t = jnp.asarray(count, jnp.float32)
        cycle = jnp.floor(1.0 + t / (2.0 * step_size))
        x = jnp.abs(t / step_size - 2.0 * cycle + 1.0)
        amp = jnp.maximum(0.0, 1.0 - x)
        if mode == "triangular2":
            amp = amp / 2.0 ** (cycle - 1.0)
        return base_lr + (max_lr - base_lr) * amp

    return sched


def _one_cycle(
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """One-cycle (Smith 2018): cosine ``max_lr/div -> max_lr`` over ``pct_start`` of
    ``total_steps``, then cosine down to ``max_lr / (div * final_div)``."""
    return optax.cosine_onecycle_schedule(
        total_steps, max_lr, pct_start, div_factor, final_div_factor
    )


def _sgdr(
    learning_rate: float, period: int, t_mult: float = 1.0, min_lr: float = 0.0
) -> Schedule:
    """Cosine annealing with warm restarts (Loshchilov & Hutter 2017).

    Cycle ``i`` lasts ``T_i = period * t_mult**i`` steps; within it
    ``lr = min_lr + (lr - min_lr) * (1 + cos(pi * t_cur / T_i)) / 2``; restarts at
    ``period``, ``period * (1 + t_mult)``, ... (unbounded).
    """
    if period <= 0 or t_mult < 1.0:
        raise ValueError(f"sgdr: need period > 0 and t_mult >= 1, got {period}, {t_mult}")

    def start(i):  # first step of cycle i
        if t_mult == 1.0:
            return period * i
        return period * (t_mult**i - 1.0) / (t_mult - 1.0)

    def sched(count):
        t = jnp.asarray(count, jnp.float32)
        if t_mult == 1.0:
            i = jnp.floor(t / period)
        else:
            i = jnp.floor(jnp.log1p(t * (t_mult - 1.0) / period) / math.log(t_mult))
        # correct float rounding of the log at exact restart steps; start() itself is float32
        # under jit (t_mult=10: start(2) = 10 * 99 / 9 = 110.0000076), so compare with a few
        # ulps of slack, else the restart at step 110 would be missed
        slack = 8 * jnp.finfo(jnp.float32).eps * jnp.maximum(t, 1.0)
        i = jnp.where(start(i + 1.0) <= t + slack, i + 1.0, i)
        i = jnp.where(start(i) > t + slack, i - 1.0, i)
        t_cur = t - start(i)
        t_i = period * t_mult**i
        cos = 0.5 * (1.0 + jnp.cos(jnp.pi * t_cur / t_i))
        return min_lr + (learning_rate - min_lr) * cos

    return sched


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": _constant,
    "step": _step,
    "piecewise": _step,
    "exponential": _exponential,
    "cosine": _cosine,
    "warmup_cosine": _warmup_cosine,
    "linear": _linear,
    "cyclic": _cyclic,
    "one_cycle": _one_cycle,
    "sgdr": _sgdr,
}
"""Known schedule names; see :func:`schedule` for each one's arguments."""


RATE_ARGS = ("learning_rate", "max_lr", "base_lr", "init_value", "end_value", "min_lr")
"""Schedule arguments that are learning rates (so are ``values`` entries): ``>= 0``."""


def _check_schedule_args(name: str, kwargs: dict[str, Any]) -> None:
    """``ValueError`` for schedule arguments (Python numbers; arrays are left alone) whose
    value the schedule's maths cannot take: a negative or non-finite rate, cosine's ``alpha``
    outside [0, 1], a decay factor that is not positive (a negative one alternates the sign
    of the rate or gives NaN; optax turns a zero ``decay_rate`` into a constant rate)."""
    rates = [(k, kwargs[k]) for k in RATE_ARGS if k in kwargs]
    values = kwargs.get("values")
    rates += [(f"values[{i}]", v) for i, v in enumerate(() if values is None else values)]
    for k, v in rates:
        if _number(v) and not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} schedule: {k} must be a finite learning rate >= 0, "
                             f"got {v!r}")
    alpha = kwargs.get("alpha")
    if name == "cosine" and _number(alpha) and not 0 <= alpha <= 1:
        raise ValueError(f"cosine schedule: alpha (the final fraction of the rate) must be in "
                         f"[0, 1], got {alpha!r}")
    for k in ("decay_rate", "factor"):
        v = kwargs.get(k)
        if k in kwargs and _number(v) and not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} schedule: {k} must be > 0, got {v!r}")


@memoised(MEMO_SIZE)
def schedule(name: str, **kwargs: Any) -> Schedule:
    """A learning-rate schedule ``step -> lr`` by name (an ``optax.Schedule``, jittable).

    * ``constant(learning_rate)``
    * ``step`` / ``piecewise(learning_rate, boundaries, factor=0.1 | values=[...])``: ``lr``
      times ``factor**k`` after the k-th boundary (or ``values[k]``); or ``step_size=N`` for
      a decay every ``N`` steps.
    * ``exponential(learning_rate, decay_rate, transition_steps=1, staircase=False,
      end_value=None)``: ``lr * decay_rate ** (t / transition_steps)``.
    * ``cosine(learning_rate, decay_steps, alpha=0)``: cosine from ``lr`` to ``alpha * lr``.
    * ``warmup_cosine(learning_rate, warmup_steps, decay_steps, init_value=0, end_value=0)``.
    * ``linear(learning_rate, end_value, transition_steps)``.
    * ``cyclic(base_lr, max_lr, step_size, mode="triangular"|"triangular2")``: peak at
      ``step_size``, back to ``base_lr`` at ``2 * step_size``.
    * ``one_cycle(max_lr, total_steps, pct_start=0.3, div_factor=25, final_div_factor=1e4)``.
    * ``sgdr(learning_rate, period, t_mult=1, min_lr=0)``: cosine with warm restarts.

    Raises:
      ValueError: unknown name (lists the known ones), missing/unexpected arguments, or
        values the schedule cannot take: a negative or non-finite rate (``learning_rate``,
        ``max_lr``, ``base_lr``, ``init_value``, ``end_value``, ``min_lr``, ``values``),
        ``alpha`` outside [0, 1], ``decay_rate`` or ``factor`` not > 0.
    """
    if name not in SCHEDULES:
        raise _unknown("schedule", name, SCHEDULES)
    _check_schedule_args(name, kwargs)
    try:
        return SCHEDULES[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"schedule {name!r}: {e}") from None


# ----------------------------------------------------------------------------- plateau


@dataclass(frozen=True)
class Plateau:
    """Reduce-on-plateau settings (applied once per epoch by the training loop).

    After ``patience`` consecutive epochs in which ``monitor`` did not improve by more than
    ``min_delta`` (in direction ``mode``; ``"auto"``, the default: ``min`` for losses and
    errors, ``max`` for accuracy and the like), the scale is multiplied by ``factor`` (not below
    ``min_scale``), then ``cooldown`` epochs pass before counting again. Effective learning
    rate = injected (scheduled) learning rate * scale (for ``lars`` and ``adafactor``: the
    whole step is scaled, see the module docstring).
    """

    monitor: str = "val_loss"
    mode: str = "auto"
    patience: int = 3
    factor: float = 0.1
    min_delta: float = 0.0
    cooldown: int = 0
    min_scale: float = 0.0

    def __post_init__(self) -> None:
        try:
            monitor_mode(self.monitor, self.mode)
        except ValueError as e:
            raise ValueError(f"Plateau: {e}") from None
        if not 0.0 < self.factor < 1.0:
            raise ValueError(f"Plateau: factor must be in (0, 1), got {self.factor}")
        if self.patience < 1 or self.cooldown < 0 or self.min_delta < 0:
            raise ValueError("Plateau: need patience >= 1, cooldown >= 0, min_delta >= 0")

    @property
    def direction(self) -> str:
        """``"min"`` or ``"max"``: ``mode``, with ``"auto"`` resolved from ``monitor``."""
        return monitor_mode(self.monitor, self.mode)


class PlateauState(NamedTuple):
    """Reduce-on-plateau state (a pytree of scalars): the LR ``scale``, the ``best`` value
    seen, consecutive ``bad_epochs`` and the remaining ``cooldown`` epochs."""

    scale: jax.Array
    best: jax.Array
    bad_epochs: jax.Array
    cooldown: jax.Array


def plateau_init(cfg: Plateau | None = None) -> PlateauState:
    """Initial state: scale 1, best = +inf (``mode="min"``) or -inf (``"max"``)."""
    worst = jnp.inf if cfg is None or cfg.direction == "min" else -jnp.inf
    return PlateauState(
        jnp.float32(1.0), jnp.float32(worst), jnp.int32(0), jnp.int32(0)
    )


def plateau_update(cfg: Plateau, ps: PlateauState, value: jax.Array) -> PlateauState:
    """One epoch of reduce-on-plateau (pure, jittable). A non-finite value never improves.

    ``improved = value < best - min_delta`` (min mode); during cooldown bad epochs are not
    counted; when ``bad_epochs`` reaches ``patience``: ``scale <- max(scale * factor,
    min_scale)``, ``bad_epochs <- 0``, ``cooldown <- cfg.cooldown``.
    """
    value = jnp.asarray(value, jnp.float32)
    if cfg.direction == "min":
        improved = value < ps.best - cfg.min_delta
    else:
        improved = value > ps.best + cfg.min_delta
    improved = improved & jnp.isfinite(value)
    best = jnp.where(improved, value, ps.best)
    in_cooldown = ps.cooldown > 0
    bad = jnp.where(improved | in_cooldown, 0, ps.bad_epochs + 1)
    cooldown = jnp.maximum(ps.cooldown - 1, 0)
    reduce = bad >= cfg.patience
    scale = jnp.where(reduce, jnp.maximum(ps.scale * cfg.factor, cfg.min_scale), ps.scale)
    return PlateauState(
        scale.astype(jnp.float32),
        best.astype(jnp.float32),
        jnp.where(reduce, 0, bad).astype(jnp.int32),
        jnp.where(reduce, cfg.cooldown, cooldown).astype(jnp.int32),
    )
