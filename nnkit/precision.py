"""Dtype policies: keep parameters in float32, compute in bfloat16/float16, return float32.

A :class:`Policy` names three dtypes (the convention of Keras and jmp):

* ``param_dtype``   what ``init`` stores and the optimizer updates (and so the optimizer state);
* ``compute_dtype`` what ``apply`` computes in: params and floating inputs are cast to it;
* ``output_dtype``  what ``apply`` returns, so the loss is computed in it.

:func:`with_policy` wraps a model so that ``apply`` casts ``params -> compute_dtype``,
``x -> compute_dtype`` and ``y -> output_dtype``. Since a cast is linear, the gradient of the
loss with respect to float32 params comes back float32 (``d cast(p) / dp`` is a cast of the
cotangent): the optimizer sees float32 grads and float32 params.

float16 has a narrow exponent range (smallest normal ``6.1e-5``), so small gradients
underflow to zero in the backward pass. A *static loss scale* ``s`` fixes that: differentiate
``s * loss`` (every cotangent in the float16 region is ``s`` times larger) and divide the
float32 grads by ``s``. :func:`value_and_grad` does both; :func:`all_finite` tells when ``s``
was too large (an overflow gives ``inf``) so the step can be skipped. bfloat16 has float32's
exponent range and needs no loss scale.

Non-trainable ``state`` (e.g. running statistics) is passed to the model uncast; the new
state is cast back to the dtypes of the incoming state so that a ``lax.scan`` carry keeps a
fixed dtype. Integer inputs (token ids, labels) are never cast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from nnkit.core import Layer

__all__ = [
    "Policy",
    "POLICY_NAMES",
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


@dataclasses.dataclass(frozen=True)
class Policy:
    """Which dtype params are stored in, computed in, and returned in.

    Attributes:
      param_dtype: dtype of stored params (and hence of grads and optimizer state).
      compute_dtype: dtype ``apply`` computes in.
      output_dtype: dtype of the model output (the loss is computed in it).
      loss_scale: static loss scale ``s`` used by :func:`value_and_grad`; ``1.0`` = none.
    """

    param_dtype: Any = jnp.float32
    compute_dtype: Any = jnp.float32
    output_dtype: Any = jnp.float32
    loss_scale: float = 1.0

    def __post_init__(self):
        for f in ("param_dtype", "compute_dtype", "output_dtype"):
            object.__setattr__(self, f, _float_dtype(getattr(self, f), f))
        s = self.loss_scale
        if isinstance(s, bool) or not isinstance(s, int | float) or not s > 0 or s == float("inf"):
            raise ValueError(f"Policy.loss_scale: expected a finite number > 0, got {s!r}")
        object.__setattr__(self, "loss_scale", float(s))

    @classmethod
    def from_name(cls, name: str, *, loss_scale: float | None = None) -> Policy:
        """A named policy.

        ``"float32"``: everything float32. ``"mixed_bfloat16"`` / ``"mixed_float16"``:
        float32 params and output, bfloat16/float16 compute (what you usually want).
        ``"bfloat16"`` / ``"float16"``: *everything* in 16 bits, params and optimizer state
        included (half the memory, but small updates round away).

        float16 compute gets a static loss scale of ``2**12`` unless ``loss_scale`` is given.
        """
        if not isinstance(name, str) or name not in _NAMED:
            raise ValueError(f"unknown precision policy {name!r}; expected one of {POLICY_NAMES}")
        p, c, o = _NAMED[name]
        if loss_scale is None:
            loss_scale = DEFAULT_FLOAT16_LOSS_SCALE if c == "float16" else 1.0
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


def scale_loss(loss: jax.Array, policy: Policy | str) -> jax.Array:
    """``loss * s`` with ``s`` the policy's static loss scale."""
    return loss * get_policy(policy).loss_scale


def unscale_grads(grads: Any, policy: Policy | str) -> Any:
    """``grads / s`` (computed in float32 or wider, returned in each leaf's own dtype)."""
    s = get_policy(policy).loss_scale
    if s == 1.0:
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


def scaled(fn: Callable[..., Any], policy: Policy | str, *, has_aux: bool = False):
    """``fn`` with its scalar output (the first of ``(loss, aux)`` with ``has_aux``) times ``s``.

    Differentiate the result and pass the grads to :func:`unscale_grads`; ``aux`` (which may
    carry the unscaled loss for logging) is untouched. Identity when ``s = 1``.
    """
    s = get_policy(policy).loss_scale
    if s == 1.0:
        return fn

    def wrapped(*args, **kwargs):
        out = fn(*args, **kwargs)
        if has_aux:
            loss, aux = out
            return loss * s, aux
        return out * s

    return wrapped


def value_and_grad(
    fn: Callable[..., Any], policy: Policy | str, *, has_aux: bool = False, argnums: int = 0
) -> Callable[..., Any]:
    """``jax.value_and_grad(fn)`` with the policy's static loss scale applied and removed.

    Differentiates ``s * fn(...)`` and returns ``(value, grads / s)`` (``(value, aux)`` with
    ``has_aux``); the value is unscaled. With ``s = 1`` this is ``jax.value_and_grad``.
    Check :func:`all_finite` on the grads when ``s`` might overflow float16.
    """
    pol = get_policy(policy)

    def keep_value(*args, **kwargs):
        out = fn(*args, **kwargs)
        return (out[0], out) if has_aux else (out, out)

    vg = jax.value_and_grad(scaled(keep_value, pol, has_aux=True), argnums=argnums, has_aux=True)

    def wrapped(*args, **kwargs):
        (_, value), grads = vg(*args, **kwargs)
        return value, unscale_grads(grads, pol)

    return wrapped


# ----------------------------------------------------------------------------- config

_CONFIG_KEYS = ("name", "param_dtype", "compute_dtype", "output_dtype", "loss_scale")


def from_config(value: Any, *, key: str = "precision") -> Policy | None:
    """A policy from a config value: ``None``, a name, or a mapping.

    ``precision: mixed_bfloat16`` or ``precision: {name: mixed_float16, loss_scale: 1024}``
    or ``precision: {compute_dtype: bfloat16}`` (unnamed dtypes default to float32).
    Errors name the key (``precision.loss_scale``).
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
    try:
        if name is not None:
            return Policy.from_name(name, loss_scale=value.get("loss_scale"))
        return Policy(**{k: value[k] for k in _CONFIG_KEYS[1:] if k in value})
    except ValueError as e:
        field = next((k for k in _CONFIG_KEYS if f"Policy.{k}" in str(e)), "name")
        raise ValueError(f"{key}.{field}: {e}") from None
