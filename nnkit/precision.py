"""Dtype policies: keep parameters in float32, compute in bfloat16/float16, return float32.

A :class:`Policy` names three dtypes (the convention of Keras and jmp):

* ``param_dtype``   what ``init`` stores and the optimizer updates (and so the optimizer state);
* ``compute_dtype`` what ``apply`` computes in: params and floating inputs are cast to it;
* ``output_dtype``  what ``apply`` returns, so the loss is computed in it.

:func:`with_policy` wraps a model so that ``apply`` casts ``params -> compute_dtype``,
``x -> compute_dtype`` and ``y -> output_dtype``. Since a cast is linear, the gradient of the
loss with respect to float32 params comes back float32 (``d cast(p) / dp`` is a cast of the
cotangent): the optimizer sees float32 grads and float32 params.

float16 has a narrow exponent range (smallest normal ``6.1e-5``, largest ``65504``), so small
gradients underflow to zero in the backward pass. A *loss scale* ``s`` fixes that:
differentiate ``s * loss`` (every cotangent in the float16 region is ``s`` times larger) and
divide the float32 grads by ``s``. :func:`value_and_grad` does both; :func:`all_finite` tells
when ``s`` was too large (an overflow gives ``inf``). bfloat16 has float32's exponent range
and needs no loss scale; float32 and bfloat16 policies carry none (``loss_scale == 1``).

Two kinds of loss scale (``Policy.loss_scale``):

* **dynamic** (:class:`DynamicLossScale`, the default of float16 policies; as jmp's
  ``DynamicLossScale``, PyTorch's ``GradScaler`` and Keras' ``LossScaleOptimizer``): the
  current scale and a count of good steps are arrays, a :class:`LossScaleState` carried in
  the train state (``TrainState.loss_scale``, checkpointed with it). Each step, if the
  unscaled grads are all finite the update is applied and the count goes up; after
  ``period`` good steps in a row ``s <- s * factor``. If any grad is ``inf``/``nan`` the
  update is skipped (params, optimizer and model state unchanged), ``s <- max(s / factor,
  min_scale)`` and the count restarts (:func:`loss_scale_update`, :func:`select_tree`).
* **static** (a number, ``DEFAULT_FLOAT16_LOSS_SCALE = 2**12`` for ``loss_scale="static"``):
  a constant in the program; a step that overflows gives non-finite grads and ``fit`` stops.

Non-trainable ``state`` (e.g. running statistics) is passed to the model uncast; the new
state is cast back to the dtypes of the incoming state so that a ``lax.scan`` carry keeps a
fixed dtype. Integer inputs (token ids, labels) are never cast.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from nnkit.core import Layer

__all__ = [
    "Policy",
    "POLICY_NAMES",
    "DynamicLossScale",
    "LossScaleState",
    "DEFAULT_FLOAT16_LOSS_SCALE",
    "loss_scale_init",
    "loss_scale_update",
    "select_tree",
    "get_policy",
    "check_optimizer",
    "cast_floating",
    "cast_to_compute",
    "cast_to_param",
    "cast_to_output",
    "with_policy",
    "scale_loss",
    "unscale_grads",
    "all_finite",
    "scaled",
    "value_and_grad",
    "from_config",
]

DEFAULT_FLOAT16_LOSS_SCALE = 2.0**12
"""The static loss scale ``loss_scale="static"`` stands for."""

# name -> (param_dtype, compute_dtype, output_dtype); Keras' names and meanings.
_NAMED: dict[str, tuple[str, str, str]] = {
    "float32": ("float32", "float32", "float32"),
    "bfloat16": ("bfloat16", "bfloat16", "bfloat16"),
    "float16": ("float16", "float16", "float16"),
    "mixed_bfloat16": ("float32", "bfloat16", "float32"),
    "mixed_float16": ("float32", "float16", "float32"),
}
POLICY_NAMES: tuple[str, ...] = tuple(_NAMED)


def _float_dtype(value: Any, field: str) -> jnp.dtype:
    try:
        dt = jnp.dtype(value)
    except TypeError:
        raise ValueError(f"Policy.{field}: {value!r} is not a dtype") from None
    if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"Policy.{field}: expected a floating dtype, got {dt}")
    return dt


def _number(value: Any, field: str, *, ge: float | None = None, gt: float | None = None,
            integer: bool = False) -> float | int:
    """``value`` checked: a finite (int) number ``>= ge`` / ``> gt``; ``ValueError`` naming
    ``field`` (``DynamicLossScale.period: expected an int >= 1, got 0``)."""
    kind = "an int" if integer else "a finite number"
    bound = f" >= {ge:g}" if ge is not None else f" > {gt:g}" if gt is not None else ""
    ok = (not isinstance(value, bool)) and isinstance(value, int if integer else int | float)
    ok = ok and math.isfinite(value) and (ge is None or value >= ge) and (gt is None or value > gt)
    if not ok:
        raise ValueError(f"{field}: expected {kind}{bound}, got {value!r}")
    return int(value) if integer else float(value)


@dataclasses.dataclass(frozen=True)
class DynamicLossScale:
    """Settings of a dynamic loss scale (hashable; the changing values are a
    :class:`LossScaleState`).

    Attributes:
      initial: the scale of the first step (``2**15``, Keras' default; a scale that is too
        large costs a few skipped steps at the start, one halving each).
      period: good (all-finite) steps in a row after which the scale grows (``2000``).
      factor: the scale is multiplied by ``factor`` after ``period`` good steps and divided
        by it after a step with a non-finite gradient (``2``).
      min_scale: the scale never goes below this (``1``: no scale at all).
    """

    initial: float = 2.0**15
    period: int = 2000
    factor: float = 2.0
    min_scale: float = 1.0

    def __post_init__(self):
        name = "DynamicLossScale"
        object.__setattr__(self, "period", _number(self.period, f"{name}.period", ge=1,
                                                   integer=True))
        object.__setattr__(self, "factor", _number(self.factor, f"{name}.factor", gt=1))
        object.__setattr__(self, "min_scale", _number(self.min_scale, f"{name}.min_scale",
                                                      gt=0))
        object.__setattr__(self, "initial", _number(self.initial, f"{name}.initial",
                                                    ge=self.min_scale))


class LossScaleState(NamedTuple):
    """The changing part of a dynamic loss scale (a pytree of two scalars).

    Attributes:
      scale: float32 scalar, the scale ``s`` the next step differentiates ``s * loss`` with.
      good_steps: int32 scalar, steps with all-finite gradients since ``scale`` last changed.
    """

    scale: jax.Array
    good_steps: jax.Array


@dataclasses.dataclass(frozen=True)
class Policy:
    """Which dtype params are stored in, computed in, and returned in.

    Attributes:
      param_dtype: dtype of stored params (and hence of grads and optimizer state).
      compute_dtype: dtype ``apply`` computes in.
      output_dtype: dtype of the model output (the loss is computed in it).
      loss_scale: a static loss scale ``s`` (a number; ``1.0`` = none) or a
        :class:`DynamicLossScale`. ``"static"`` stands for ``DEFAULT_FLOAT16_LOSS_SCALE``
        and ``"dynamic"`` for ``DynamicLossScale()``.
    """

    param_dtype: Any = jnp.float32
    compute_dtype: Any = jnp.float32
    output_dtype: Any = jnp.float32
    loss_scale: float | DynamicLossScale = 1.0

    def __post_init__(self):
        for f in ("param_dtype", "compute_dtype", "output_dtype"):
            object.__setattr__(self, f, _float_dtype(getattr(self, f), f))
        s = self.loss_scale
        if isinstance(s, str) and s in ("dynamic", "static"):
            s = DynamicLossScale() if s == "dynamic" else DEFAULT_FLOAT16_LOSS_SCALE
        if not isinstance(s, DynamicLossScale):
            if isinstance(s, bool) or not isinstance(s, int | float) or not 0 < s < math.inf:
                raise ValueError("Policy.loss_scale: expected a finite number > 0, 'static', "
                                 f"'dynamic' or a DynamicLossScale, got {s!r}")
            s = float(s)
        object.__setattr__(self, "loss_scale", s)

    @property
    def dynamic(self) -> DynamicLossScale | None:
        """The :class:`DynamicLossScale` when the loss scale is dynamic, else ``None``."""
        return self.loss_scale if isinstance(self.loss_scale, DynamicLossScale) else None

    @classmethod
    def from_name(
        cls, name: str, *, loss_scale: float | str | DynamicLossScale | None = None
    ) -> Policy:
        """A named policy.

        ``"float32"``: everything float32. ``"mixed_bfloat16"`` / ``"mixed_float16"``:
        float32 params and output, bfloat16/float16 compute (what you usually want).
        ``"bfloat16"`` / ``"float16"``: *everything* in 16 bits, params and optimizer state
        included (half the memory, but small updates round away).

        float16 compute gets a dynamic loss scale (``DynamicLossScale()``) unless
        ``loss_scale`` is given (``"static"`` for ``2**12``, a number, or a
        :class:`DynamicLossScale`); the others none.
        """
        if not isinstance(name, str) or name not in _NAMED:
            raise ValueError(f"unknown precision policy {name!r}; expected one of {POLICY_NAMES}")
        p, c, o = _NAMED[name]
        if loss_scale is None:
            loss_scale = DynamicLossScale() if c == "float16" else 1.0
        return cls(p, c, o, loss_scale)

    @property
    def name(self) -> str:
        """The :data:`POLICY_NAMES` entry with these dtypes, else ``param/compute/output``."""
        dts = (self.param_dtype.name, self.compute_dtype.name, self.output_dtype.name)
        for n, v in _NAMED.items():
            if v == dts:
                return n
        return "/".join(dts)

    def cast_to_compute(self, tree: Any) -> Any:
        """Floating leaves of ``tree`` cast to ``compute_dtype``; others unchanged."""
        return cast_floating(tree, self.compute_dtype)

    def cast_to_param(self, tree: Any) -> Any:
        """Floating leaves of ``tree`` cast to ``param_dtype``; others unchanged."""
        return cast_floating(tree, self.param_dtype)

    def cast_to_output(self, tree: Any) -> Any:
        """Floating leaves of ``tree`` cast to ``output_dtype``; others unchanged."""
        return cast_floating(tree, self.output_dtype)


def check_optimizer(policy: Policy | str | None, optimizer: Any) -> None:
    """``ValueError`` when ``optimizer`` cannot update float16 parameters: with a float16
    ``param_dtype`` its state is float16 too, an ``eps`` below float16's smallest number
    (Adam's 1e-8) rounds to 0, and the first update divides 0 by 0. One update of a zero
    gradient, run op by op, shows it; other policies are not checked."""
    if policy is None or get_policy(policy).param_dtype != jnp.float16:
        return
    p = {"w": jnp.zeros((1,), jnp.float16)}
    upd, _ = optimizer.update(p, optimizer.init(p), p)
    if not bool(jnp.isfinite(upd["w"]).all()):
        raise ValueError("the optimizer gives a non-finite update with float16 parameters and "
                         "state (its eps rounds to 0 in float16): use mixed_float16 (float32 "
                         "params and state), or an eps of 1e-4 or more")


def get_policy(policy: Policy | str | None) -> Policy:
    """A :class:`Policy` from a policy, a name from :data:`POLICY_NAMES`, or ``None`` (float32)."""
    if policy is None:
        return Policy()
    if isinstance(policy, Policy):
        return policy
    return Policy.from_name(policy)


def _is_floating(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Casts every floating-point array leaf of ``tree`` to ``dtype`` (ints, keys untouched)."""
    dtype = jnp.dtype(dtype)
    return jax.tree.map(
        lambda x: x.astype(dtype) if _is_floating(x) and x.dtype != dtype else x, tree
    )


def cast_to_compute(tree: Any, policy: Policy | str) -> Any:
    """Floating leaves of ``tree`` cast to the policy's ``compute_dtype``."""
    return get_policy(policy).cast_to_compute(tree)


def cast_to_param(tree: Any, policy: Policy | str) -> Any:
    """Floating leaves of ``tree`` cast to the policy's ``param_dtype``."""
    return get_policy(policy).cast_to_param(tree)


def cast_to_output(tree: Any, policy: Policy | str) -> Any:
    """Floating leaves of ``tree`` cast to the policy's ``output_dtype``."""
    return get_policy(policy).cast_to_output(tree)


def _restore_dtypes(new: Any, old: Any) -> Any:
    """``new`` with each leaf cast to the dtype of the matching leaf of ``old`` (if any)."""
    if jax.tree.structure(new) != jax.tree.structure(old):
        return new
    return jax.tree.map(
        lambda n, o: n.astype(o.dtype) if _is_floating(n) and _is_floating(o) else n, new, old
    )


def with_policy(model: Layer, policy: Policy | str) -> Layer:
    """``model`` computing under ``policy``; same params tree, same names, same shapes.

    ``init`` returns params cast to ``param_dtype``. ``apply(params, state, x)`` computes
    ``cast_out(model.apply(cast_c(params), state, cast_c(x)))`` where ``cast_c`` casts floating
    leaves to ``compute_dtype`` and ``cast_out`` to ``output_dtype``; the new state keeps the
    incoming state's dtypes. The wrapper is transparent: ``kind``, ``name`` and ``children``
    are the model's, so checkpoints and summaries are unchanged.
    """
    if not isinstance(model, Layer):
        raise TypeError(f"with_policy: expected an nnkit Layer, got {type(model).__name__}")
    pol = get_policy(policy)

    def init(key, input_shape):
        out_shape, params, state = model.init(key, input_shape)
        return out_shape, pol.cast_to_param(params), state

    def apply(params, state, x, *, key=None, train=False):
        y, new_state = model.apply(
            pol.cast_to_compute(params), state, pol.cast_to_compute(x), key=key, train=train
        )
        return pol.cast_to_output(y), _restore_dtypes(new_state, state)

    meta = tuple(kv for kv in model.meta if kv[0] != "dtype_policy") + (("dtype_policy", pol.name),)
    return model._replace(init=init, apply=apply, meta=meta)


# ----------------------------------------------------------------------------- loss scale


Scale = float | jax.Array
"""A loss scale: a Python number (static) or a float32 scalar array (dynamic)."""


def _scale_of(policy: Policy | str, scale: Scale | None) -> Scale:
    """``scale`` if given, else the policy's static scale (``ValueError`` for a dynamic one,
    whose current value lives in a :class:`LossScaleState`)."""
    if scale is not None:
        return scale
    pol = get_policy(policy)
    if pol.dynamic is not None:
        raise ValueError("a dynamic loss scale has no fixed value: pass scale= (the "
                         "LossScaleState's scale, see loss_scale_init)")
    return pol.loss_scale


def _is_one(s: Scale) -> bool:
    return isinstance(s, int | float) and s == 1.0


def scale_loss(loss: jax.Array, policy: Policy | str, *, scale: Scale | None = None) -> jax.Array:
    """``loss * s``: ``s`` is ``scale`` if given, else the policy's static loss scale (an
    array ``s`` is cast to the loss's dtype, so the result keeps it)."""
    s = _scale_of(policy, scale)
    if isinstance(s, int | float):
        return loss * s
    return loss * jnp.asarray(s).astype(jnp.result_type(loss))


def unscale_grads(grads: Any, policy: Policy | str, *, scale: Scale | None = None) -> Any:
    """``grads / s`` (computed in float32 or wider, returned in each leaf's own dtype); ``s``
    as for :func:`scale_loss`."""
    s = _scale_of(policy, scale)
    if _is_one(s):
        return grads
    return jax.tree.map(
        lambda g: (g.astype(jnp.promote_types(g.dtype, jnp.float32)) / s).astype(g.dtype)
        if _is_floating(g)
        else g,
        grads,
    )


def all_finite(tree: Any) -> jax.Array:
    """Scalar bool array: no ``inf``/``nan`` in any floating leaf (use to skip a bad step)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if _is_floating(x)]
    if not leaves:
        return jnp.array(True)
    return jnp.stack(leaves).all()


def scaled(
    fn: Callable[..., Any], policy: Policy | str, *, has_aux: bool = False,
    scale: Scale | None = None,
) -> Callable[..., Any]:
    """``fn`` with its scalar output (the first of ``(loss, aux)`` with ``has_aux``) times ``s``
    (``scale`` if given, else the policy's static scale).

    Differentiate the result and pass the grads to :func:`unscale_grads`; ``aux`` (which may
    carry the unscaled loss for logging) is untouched. Identity when ``s = 1``.
    """
    s = _scale_of(policy, scale)
    if _is_one(s):
        return fn

    def wrapped(*args, **kwargs):
        out = fn(*args, **kwargs)
        if has_aux:
            loss, aux = out
            return scale_loss(loss, policy, scale=s), aux
        return scale_loss(out, policy, scale=s)

    return wrapped


def value_and_grad(
    fn: Callable[..., Any], policy: Policy | str, *, has_aux: bool = False, argnums: int = 0,
    scale: Scale | None = None,
) -> Callable[..., Any]:
    """``jax.value_and_grad(fn)`` with a loss scale applied and removed.

    Differentiates ``s * fn(...)`` and returns ``(value, grads / s)`` (``(value, aux)`` with
    ``has_aux``); the value is unscaled. ``s`` is ``scale`` if given (a dynamic scale's
    ``LossScaleState.scale``), else the policy's static scale; with ``s = 1`` this is
    ``jax.value_and_grad``. Check :func:`all_finite` on the grads when ``s`` might overflow
    float16.
    """
    pol = get_policy(policy)
    s = _scale_of(pol, scale)

    def keep_value(*args, **kwargs):
        out = fn(*args, **kwargs)
        return (out[0], out) if has_aux else (out, out)

    vg = jax.value_and_grad(scaled(keep_value, pol, has_aux=True, scale=s), argnums=argnums,
                            has_aux=True)

    def wrapped(*args, **kwargs):
        (_, value), grads = vg(*args, **kwargs)
        return value, unscale_grads(grads, pol, scale=s)

    return wrapped


def loss_scale_init(policy: Policy | str | None) -> LossScaleState | None:
    """The first :class:`LossScaleState` of a policy with a dynamic loss scale: ``scale =
    initial`` (float32), ``good_steps = 0`` (int32); ``None`` for any other policy."""
    dyn = None if policy is None else get_policy(policy).dynamic
    if dyn is None:
        return None
    return LossScaleState(jnp.asarray(dyn.initial, jnp.float32), jnp.zeros((), jnp.int32))


def loss_scale_update(
    dyn: DynamicLossScale, state: LossScaleState, finite: jax.Array
) -> LossScaleState:
    """The state after a step whose gradients were ``finite`` (a bool scalar).

    Finite: ``good_steps + 1``, and when that reaches ``period``: ``scale * factor`` (kept
    if that overflows float32) and ``good_steps = 0``. Not finite: ``scale = max(scale /
    factor, min_scale)`` and ``good_steps = 0``. Branch-free (``jnp.where``): jit/scan/vmap
    friendly.
    """
    good = state.good_steps + 1
    grow = finite & (good >= dyn.period)
    grown = state.scale * jnp.float32(dyn.factor)
    grown = jnp.where(jnp.isfinite(grown), grown, state.scale)
    shrunk = jnp.maximum(state.scale / jnp.float32(dyn.factor), jnp.float32(dyn.min_scale))
    scale = jnp.where(finite, jnp.where(grow, grown, state.scale), shrunk)
    good = jnp.where(finite & ~grow, good, 0)
    return LossScaleState(scale.astype(jnp.float32), good.astype(jnp.int32))


def select_tree(pred: jax.Array, on_true: Any, on_false: Any) -> Any:
    """Leafwise ``jnp.where(pred, on_true, on_false)`` for two trees of one structure (a
    scalar bool ``pred``): keeps or drops a whole update without a conditional."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


# ----------------------------------------------------------------------------- config

_CONFIG_KEYS = ("name", "param_dtype", "compute_dtype", "output_dtype", "loss_scale")
_DYNAMIC_KEYS = tuple(f.name for f in dataclasses.fields(DynamicLossScale))


def _loss_scale_from_config(value: Any, key: str) -> float | str | DynamicLossScale | None:
    """``precision.loss_scale``: ``None``, ``dynamic``, ``static``, a number, or a mapping of
    :class:`DynamicLossScale`'s fields (a dynamic scale with those settings)."""
    if not isinstance(value, dict):
        return value  # checked by Policy
    unknown = sorted(set(value) - set(_DYNAMIC_KEYS))
    if unknown:
        raise ValueError(f"{key}: unknown key(s) {unknown} of a dynamic loss scale; expected "
                         f"some of {list(_DYNAMIC_KEYS)}")
    try:
        return DynamicLossScale(**value)
    except ValueError as e:
        field, _, rest = str(e).partition(": ")
        raise ValueError(f"{key}.{field.rpartition('.')[2]}: {rest}") from None


def from_config(value: Any, *, key: str = "precision") -> Policy | None:
    """A policy from a config value: ``None``, a name, or a mapping.

    ``precision: mixed_bfloat16`` or ``precision: {compute_dtype: bfloat16}`` (unnamed
    dtypes default to float32). ``precision.loss_scale`` picks float16's loss scale:
    ``dynamic`` (the default of the float16 policies), ``static`` (``2**12``), a number (a
    static scale: ``{name: mixed_float16, loss_scale: 1024}``) or a mapping of
    :class:`DynamicLossScale`'s fields, a dynamic scale with those settings
    (``{name: mixed_float16, loss_scale: {initial: 65536, period: 1000}}``).
    Errors name the key (``precision.loss_scale``, ``precision.loss_scale.period``).
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return Policy.from_name(value)
        except ValueError as e:
            raise ValueError(f"{key}: {e}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{key}: expected a policy name or a mapping, got {value!r}")
    unknown = sorted(set(value) - set(_CONFIG_KEYS))
    if unknown:
        raise ValueError(f"{key}: unknown key(s) {unknown}; expected some of {list(_CONFIG_KEYS)}")
    name = value.get("name")
    if name is not None and any(k in value for k in _CONFIG_KEYS[1:4]):
        raise ValueError(f"{key}: give either name or dtypes, not both")
    value = dict(value)
    if "loss_scale" in value:
        value["loss_scale"] = _loss_scale_from_config(value["loss_scale"], f"{key}.loss_scale")
    try:
        if name is not None:
            return Policy.from_name(name, loss_scale=value.get("loss_scale"))
        return Policy(**{k: value[k] for k in _CONFIG_KEYS[1:] if k in value})
    except ValueError as e:
        field = next((k for k in _CONFIG_KEYS if f"Policy.{k}" in str(e)), "name")
        raise ValueError(f"{key}.{field}: {e}") from None
