"""Layer conformance harness: one function every nnkit layer (and combinator) must pass.

``check_layer(layer, input_shape, key=...)`` checks, for each ``train`` mode in ``train_modes``:

1. **init**: ``params``/``state`` are nested dicts (string keys) of finite arrays with the
   shapes ``jax.eval_shape(init)`` predicts; (``legacy_key=True``) a legacy ``PRNGKey`` (the
   raw key data) gives the same tree as the typed ``jax.random.key``; a different key
   changes every randomly initialised leaf (a leaf with more than one distinct value).
2. **shapes**: the init output shape, with the batch prepended, equals the ``apply`` output
   shape from ``jax.eval_shape`` and from a real call.
3. **state**: the returned state has the same tree structure, shapes and dtypes as the input
   state; with ``train=False`` it is equal to it.
4. **jit**: ``apply`` runs under ``jax.jit``; with ``eager=True`` the op-by-op result is
   compared with the jitted one too (init always runs eagerly).
5. **vmap over a leading MODELS axis** (not over the batch, so batch-coupled layers such as
   BatchNorm keep their meaning): ``num_models`` models initialised from different keys, their
   params/state stacked, each applied to its own input batch and apply key, equal the per-model
   loop.
6. **determinism**: the same apply key gives the same output; for ``stochastic`` layers in
   training mode a different apply key gives a different output.
7. **gradients** (``grad=True``): ``jax.test_util.check_grads(order=1, modes=["rev"])`` of the
   output wrt params and wrt the input (input skipped for integer inputs), in float64 (under
   ``jax.enable_x64``) so finite differences are accurate.

Inputs are ``N(0, 1)`` of shape ``(batch, *input_shape)`` (integers in ``[0, int_maxval)`` for
integer dtypes). ``input_shape`` may be a tuple of shapes for layers taking a tuple (parallel,
concat).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

from nnkit.core import Layer

__all__ = ["check_layer", "make_input"]

_TOL = {"rtol": 1e-5, "atol": 1e-6}


def _is_multi(shape) -> bool:
    return len(shape) > 0 and all(isinstance(s, tuple | list) for s in shape)


def make_input(key, input_shape, batch: int, dtype=jnp.float32, int_maxval: int = 4) -> Any:
    """A random input ``(batch, *input_shape)`` (or a tuple of them for a tuple of shapes).

    Drawn with NumPy from a seed taken from ``key`` (no XLA compile per shape).
    """
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).tolist())
    return _draw(rng, input_shape, batch, np.dtype(dtype), int_maxval)


def _draw(rng, input_shape, batch, dtype, int_maxval):
    if _is_multi(input_shape):
        return tuple(_draw(rng, s, batch, dtype, int_maxval) for s in input_shape)
    shape = (batch, *input_shape)
    if np.issubdtype(dtype, np.integer):
        return jnp.asarray(rng.integers(0, int_maxval, shape), dtype)
    return jnp.asarray(rng.standard_normal(shape), dtype)


def _assert_dict_tree(tree, what: str) -> None:
    assert isinstance(tree, dict), f"{what} must be a dict, got {type(tree).__name__}"
    for k, v in tree.items():
        assert isinstance(k, str), f"{what} has a non-string key {k!r}"
        if isinstance(v, dict):
            _assert_dict_tree(v, f"{what}[{k!r}]")
        else:
            assert isinstance(v, jax.Array), f"{what}[{k!r}] is {type(v).__name__}, not an array"


def _out_shapes(out_shape, batch: int):
    if _is_multi(out_shape):
        return tuple(_out_shapes(s, batch) for s in out_shape)
    return (batch, *out_shape)


def _shapes(tree):
    return jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)


def _np_tree(tree, float_dtype=None):
    """Host copies (optionally casting floating leaves), made without XLA compiles."""

    def conv(a):
        a = np.asarray(a)
        return a.astype(float_dtype) if float_dtype and np.issubdtype(a.dtype, np.floating) else a

    return jax.tree_util.tree_map(conv, tree)


def _stack(trees):
    return jax.tree_util.tree_map(lambda *a: jnp.asarray(np.stack(a)), *_np_tree(trees))


def _varying_leaves(tree) -> list[int]:
    """Indices of leaves with more than one distinct value (randomly initialised ones)."""
    leaves = jax.tree_util.tree_leaves(_np_tree(tree))
    return [i for i, a in enumerate(leaves) if a.size > 1 and np.ptp(a) > 0]


def _check_init(layer: Layer, input_shape, key, legacy_key: bool) -> tuple[Any, dict, dict]:
    # Eager: the random ops inside init are jitted per shape by jax.random and cached across
    # layers, which compiles far less than one fused program per model.
    out_shape, params, state = layer.init(key, input_shape)
    _assert_dict_tree(params, "params")
    _assert_dict_tree(state, "state")
    chex.assert_tree_all_finite((params, state))
    abstract = jax.eval_shape(lambda k: layer.init(k, input_shape)[1:], key)
    chex.assert_trees_all_equal_shapes_and_dtypes(abstract, (params, state))

    if legacy_key:  # a raw uint32 key (legacy jax.random.PRNGKey) gives the same tree
        legacy = layer.init(jax.random.key_data(key), input_shape)
        chex.assert_trees_all_equal(legacy, (out_shape, params, state))

    other = layer.init(jax.random.fold_in(key, 1), input_shape)[1]
    a, b = jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(other)
    for i in _varying_leaves(params):
        assert not np.array_equal(a[i], b[i]), f"param leaf {i} does not depend on the init key"
    return out_shape, params, state


def _check_vmap_models(layer, input_shape, key, apply_jit, train, batch, dtype, int_maxval, n):
    k_init, k_x, k_apply = jax.random.split(key, 3)
    inits = [layer.init(k, input_shape)[1:] for k in jax.random.split(k_init, n)]
    xs = [make_input(k, input_shape, batch, dtype, int_maxval) for k in jax.random.split(k_x, n)]
    keys = jax.random.split(k_apply, n)

    def one(p, s, xi, k):
        return apply_jit(p, s, xi, key=k, train=train)

    params, state = _stack(inits)
    ys, states = jax.jit(jax.vmap(one))(params, state, _stack(xs), keys)
    for i, ((p, s), xi) in enumerate(zip(inits, xs, strict=True)):
        y_i, s_i = one(p, s, xi, keys[i])
        got = jax.tree_util.tree_map(lambda a, i=i: a[i], (ys, states))
        chex.assert_trees_all_close(got, (y_i, s_i), **_TOL)


def _check_grads(layer, params, state, x, key, train, int_input: bool) -> None:
    with jax.enable_x64(True):
        p64, s64 = _np_tree(params, np.float64), _np_tree(state, np.float64)
        x64 = _np_tree(x) if int_input else _np_tree(x, np.float64)

        def f(p, xi):
            return layer.apply(p, s64, xi, key=key, train=train)[0]

        has_params = bool(jax.tree_util.tree_leaves(p64))
        if int_input:
            if has_params:
                check_grads(jax.jit(lambda p: f(p, x64)), (p64,), order=1, modes=["rev"])
        elif has_params:
            check_grads(jax.jit(f), (p64, x64), order=1, modes=["rev"])
        else:
            check_grads(jax.jit(lambda xi: f(p64, xi)), (x64,), order=1, modes=["rev"])


def check_layer(
    layer: Layer,
    input_shape,
    *,
    key: jax.Array,
    dtype=jnp.float32,
    grad: bool = True,
    train_modes: tuple[bool, ...] = (False, True),
    batch: int = 3,
    int_maxval: int = 4,
    num_models: int = 2,
    stochastic: bool = False,
    eager: bool = False,
    legacy_key: bool = False,
) -> None:
    """Runs every conformance check (module docstring) on ``layer``; raises on failure.

    Args:
      layer: the layer or model under test.
      input_shape: per-example input shape (or a tuple of shapes).
      key: a ``jax.random.key``; all randomness is derived from it.
      dtype: input dtype; integer dtypes draw ids in ``[0, int_maxval)`` and skip input grads.
      grad: run ``check_grads`` (wrt params and float inputs).
      train_modes: the ``train`` flags to test.
      batch: the batch size of the test inputs.
      int_maxval: integer inputs are drawn from ``[0, int_maxval)``.
      num_models: models stacked on the vmapped models axis.
      stochastic: the layer is random in training mode (dropout): a different apply key must
        change the training output.
      eager: also run ``apply`` op-by-op (un-jitted) and compare with the jitted result. Off
        by default: every primitive then compiles separately, which is slow.
      legacy_key: also init with the raw ``uint32`` key data (a legacy ``PRNGKey``) and
        require the same params (off by default: it recompiles every random op).
    """
    k_init, k_x, k_apply, k_vmap = jax.random.split(key, 4)
    out_shape, params, state = _check_init(layer, input_shape, k_init, legacy_key)
    x = make_input(k_x, input_shape, batch, dtype, int_maxval)
    int_input = np.issubdtype(np.dtype(dtype), np.integer)
    expected = _out_shapes(out_shape, batch)
    apply_jit = jax.jit(layer.apply, static_argnames="train")

    for train in train_modes:
        abstract = jax.eval_shape(partial(layer.apply, key=k_apply, train=train), params, state, x)
        assert _shapes(abstract[0]) == expected, (
            f"train={train}: init says output {expected}, eval_shape(apply) gives "
            f"{_shapes(abstract[0])}"
        )

        y, new_state = apply_jit(params, state, x, key=k_apply, train=train)
        assert _shapes(y) == expected
        chex.assert_trees_all_equal_structs(new_state, state)
        chex.assert_trees_all_equal_shapes_and_dtypes(new_state, state)
        chex.assert_tree_all_finite(y)
        if not train:
            chex.assert_trees_all_equal(new_state, state)
        if eager:
            y_eager, s_eager = layer.apply(params, state, x, key=k_apply, train=train)
            chex.assert_trees_all_close((y_eager, s_eager), (y, new_state), **_TOL)

        y2, _ = apply_jit(params, state, x, key=jax.random.clone(k_apply), train=train)
        chex.assert_trees_all_equal(y2, y)
        if train and stochastic:
            y3, _ = apply_jit(params, state, x, key=jax.random.fold_in(k_apply, 7), train=train)
            assert not np.array_equal(y3, y), "training output does not depend on the key"

        _check_vmap_models(
            layer, input_shape, k_vmap, apply_jit, train, batch, dtype, int_maxval, num_models
        )

        if grad:
            _check_grads(layer, params, state, x, k_apply, train, int_input)
