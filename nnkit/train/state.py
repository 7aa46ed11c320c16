"""The training state: one pytree holding everything a training run changes."""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nnkit._checks import check_seed
from nnkit._memo import memoised
from nnkit.core import Layer, normalize_shape
from nnkit.optim import PlateauState, inject_states, is_inject_state
from nnkit.precision import DynamicLossScale, LossScaleState, Policy, get_policy, loss_scale_init

__all__ = [
    "TrainState", "create_train_state", "key_data", "as_key", "split_train_key", "adopt_optimizer",
]


class TrainState(NamedTuple):
    """Everything a training run updates, as one pytree (jit/scan/vmap/checkpoint friendly).

    Attributes:
      step: int32 scalar, number of optimizer steps taken.
      params: model parameters (nested dict).
      state: model state, e.g. BatchNorm running statistics (nested dict, ``{}`` if none).
      opt_state: the optimizer's state (holds the injected learning rate).
      key: raw uint32 key *data* (``jax.random.key_data``), so it saves like any array;
        :func:`as_key` turns it back into a typed key.
      plateau: :class:`nnkit.optim.PlateauState` when reduce-on-plateau is on, else ``None``;
        its ``scale`` multiplies every update.
      best_metric, best_epoch, bad_epochs: early-stopping scalars (``None`` when unused).
      best_params, best_state: copies of params/state at the best epoch (``None`` unless
        early stopping restores the best).
      loss_scale: :class:`nnkit.precision.LossScaleState` (current scale, good steps) under
        a precision policy with a dynamic loss scale (float16's default), else ``None``. A
        step whose gradients are not all finite leaves every other field as it was,
        ``step`` included (it counts the updates applied).
    """

    step: jax.Array
    params: Any
    state: Any
    opt_state: Any
    key: jax.Array
    plateau: PlateauState | None = None
    best_metric: jax.Array | None = None
    best_params: Any = None
    best_state: Any = None
    best_epoch: jax.Array | None = None
    bad_epochs: jax.Array | None = None
    loss_scale: LossScaleState | None = None


def key_data(key: int | jax.Array) -> jax.Array:
    """uint32 key data from an int seed, a typed key (``jax.random.key``) or a legacy
    ``PRNGKey`` (already uint32 data)."""
    if isinstance(key, int | np.integer):
        return jax.random.key_data(jax.random.key(check_seed(key)))
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    if key.dtype != jnp.uint32:
        raise TypeError(
            f"expected an int seed, jax.random.key or PRNGKey, got dtype {key.dtype} "
            f"shape {key.shape}"
        )
    return key


def as_key(data: jax.Array) -> jax.Array:
    """Typed key from uint32 key data (inverse of :func:`key_data`)."""
    return jax.random.wrap_key_data(data)


def split_train_key(data: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(data_key, step_key)`` typed keys derived from a train state's key data.

    Step ``t``'s randomness (dropout, augmentation) comes from ``fold_in(step_key, t)``.
    Epoch ``e``'s data order does not use ``data_key``: it is drawn on the host by
    :func:`nnkit.train.order.epoch_order` from the key data's words and ``e``.
    """
    k_data, k_step = jax.random.split(as_key(data))
    return k_data, k_step


def create_train_state(
    model: Layer,
    input_shape: Any,
    optimizer: optax.GradientTransformation,
    key: int | jax.Array,
    *,
    early_stopping: Any = None,
    plateau: Any = None,
    policy: Policy | str | None = None,
) -> TrainState:
    """Initialises params/state with ``model.init`` and the optimizer state, in two jitted
    calls.

    ``key`` (an int seed, typed key or legacy ``PRNGKey``) is split into the init key and the
    training key stored in :attr:`TrainState.key`. ``input_shape`` excludes the batch dim.
    With ``early_stopping`` (:class:`~nnkit.train.EarlyStopping`) / ``plateau``
    (:class:`nnkit.optim.Plateau`) their fields are filled in too: the state
    :func:`nnkit.train.fit` starts from (and the structure its checkpoints restore into).
    With a ``policy`` whose loss scale is dynamic, ``loss_scale`` holds its first state
    (:func:`nnkit.precision.loss_scale_init`); the model is not wrapped here.

    The model's initialisers run in one compiled program built once per ``(model,
    input_shape)`` (shapes are static; the key is an argument), instead of one dispatch per
    initializer; the optimizer state (and early-stopping / plateau fields) in a second, small
    one. The split keeps the expensive program -- XLA:CPU takes ~0.1 s to compile each
    random-number kernel -- free of the optimizer's hyper-parameters, which a program holds
    as constants: a run that changes only the learning rate reads it back from JAX's
    persistent compilation cache (:mod:`nnkit.compile_cache`). Same values as the
    op-by-op version (an int seed in int32 range goes into the program as a traced value).
    """
    shape = normalize_shape(input_shape)
    top = not isinstance(jnp.zeros((), jnp.int32), jax.core.Tracer)  # not inside jit/eval_shape
    init = _model_init(model, shape, top)
    if isinstance(key, int | np.integer):
        key = check_seed(key)
    if isinstance(key, int) and -(2**31) <= key < 2**31:
        params, state, k_train = init(np.int32(key), True)
    else:
        params, state, k_train = init(key_data(key), False)
    dynamic = None if policy is None else get_policy(policy).dynamic
    finish = _state_init(optimizer, early_stopping, plateau, dynamic, top)
    return finish(params, state, k_train)


def _build_model_init(model, shape, top: bool):
    def init(key, is_seed: bool):
        data = jax.random.key_data(jax.random.key(key)) if is_seed else key
        k_init, k_train = jax.random.split(as_key(data))
        _, params, state = model.init(k_init, shape)
        return params, state, jax.random.key_data(k_train)

    return jax.jit(init, static_argnums=(1,), compiler_options=_run_once_options(top))


def _build_state_init(optimizer, early_stopping, plateau,
                      dynamic: DynamicLossScale | None, top: bool):
    def init(params, state, k_train):
        ts = TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            state=state,
            opt_state=optimizer.init(params),
            key=k_train,
        )
        if early_stopping is not None:
            from nnkit.train.early_stopping import early_stopping_init

            ts = early_stopping_init(early_stopping, ts)
        if plateau is not None:
            from nnkit.optim import plateau_init

            ts = ts._replace(plateau=plateau_init(plateau))
        if dynamic is not None:
            ts = ts._replace(loss_scale=loss_scale_init(Policy(loss_scale=dynamic)))
        return ts

    return jax.jit(init, compiler_options=_run_once_options(top))


def _run_once_options(top: bool) -> dict[str, Any] | None:
    """XLA options for a program that runs once per training run: on a CPU, LLVM's
    optimisation level 1 instead of 3 (``xla_backend_optimization_level``). The model's
    initialisers then compile in about half the time (MLP 64-256-128-10 ~0.78 -> ~0.40 s,
    LeNet-5 ~1.3 -> ~0.58 s) and run in a few milliseconds, once. The values are the same
    bit for bit (the test suite compares them with the op-by-op version for each kind of
    initializer); level 0 would compile faster still but rounds the orthogonal
    initializer's QR step differently. Only for a call at the top level: inside another
    trace (``jit``, ``eval_shape``) the enclosing program's options apply. A level set
    in ``XLA_FLAGS`` applies to every program and wins over this one."""
    if (not top or jax.default_backend() != "cpu"
            or "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", "")):
        return None
    return {"xla_backend_optimization_level": 1}


_model_init = memoised(16)(lambda *args: _build_model_init(*args))
_state_init = memoised(16)(lambda *args: _build_state_init(*args))


def adopt_optimizer(optimizer: optax.GradientTransformation, params: Any, opt_state: Any) -> Any:
    """``opt_state`` (of a train state given back to ``fit``) checked against the state
    ``optimizer.init(params)`` would make, with the optimizer's own injected
    hyper-parameters: moments and counts carry on, the optimizer given sets the rates.

    Raises:
      ValueError: ``opt_state`` has other entries or shapes than that state (the state of
        another optimizer), naming the first difference.
    """
    want = jax.eval_shape(optimizer.init, params)
    got_leaves = jax.tree_util.tree_flatten_with_path(opt_state)[0]
    want_leaves = jax.tree_util.tree_flatten_with_path(want)[0]
    got = {jax.tree_util.keystr(p): tuple(np.shape(a)) for p, a in got_leaves}
    exp = {jax.tree_util.keystr(p): tuple(a.shape) for p, a in want_leaves}
    if got != exp or (jax.tree_util.tree_structure(opt_state)
                      != jax.tree_util.tree_structure(want)):
        missing = [k for k in exp if k not in got]
        extra = [k for k in got if k not in exp]
        shapes = [f"{k}: {got[k]} instead of {exp[k]}" for k in exp
                  if k in got and got[k] != exp[k]]
        what = (f"lacks opt_state{missing[0]}" if missing
                else f"has opt_state{extra[0]}, which the optimizer does not make" if extra
                else f"has opt_state{shapes[0]}" if shapes
                else "has another structure")
        raise ValueError(
            f"fit: train_state.opt_state does not fit the optimizer given: it {what} "
            f"({len(got)} arrays, the optimizer's state {len(exp)}); resume with the "
            "optimizer the state was made with (its name, options and wrappers)")
    if not inject_states(want):
        return opt_state
    fresh = list(_init_hyperparams(optimizer)(params))

    def renew(s: Any) -> Any:
        if not is_inject_state(s):
            return s
        hp = fresh.pop(0)
        return s._replace(hyperparams={k: jnp.asarray(hp[k], jnp.asarray(v).dtype)
                                       for k, v in s.hyperparams.items()})

    return jax.tree_util.tree_map(renew, opt_state, is_leaf=is_inject_state)


@memoised(8)
def _init_hyperparams(optimizer: Any):
    """A jitted ``params -> optimizer.init(params)`` (only its hyper-parameters are read;
    XLA drops the rest of the state)."""
    return jax.jit(lambda p: [s.hyperparams for s in inject_states(optimizer.init(p))])
