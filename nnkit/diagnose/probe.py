"""Looking inside a model: per-layer outputs of nested serial models, per-layer param groups.

Both are pure functions used by :func:`nnkit.diagnose.diagnose` (at init) and by
:func:`nnkit.diagnose.monitor` (during training).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nnkit._checks import check_seed
from nnkit.core import Layer, Params, State, child_key

__all__ = [
    "layer_outputs", "make_layer_outputs", "layer_paths", "param_groups", "group_norms", "to_key",
]


def to_key(key: Any) -> jax.Array:
    """An int seed as ``jax.random.key(seed)``; a typed key or legacy ``PRNGKey`` unchanged."""
    if isinstance(key, int | np.integer):
        return jax.random.key(check_seed(key))
    if key is None:
        raise ValueError("a key is required (an int seed or a jax.random.key)")
    return key


def layer_outputs(
    model: Layer,
    params: Params,
    state: State,
    x: Any,
    *,
    key: jax.Array | None = None,
    train: bool = False,
) -> list[tuple[str, str, jax.Array]]:
    """``[(path, kind, y)]``: the output of every layer of a (nested) serial model, in order.

    Serial models are walked child by child exactly as :func:`nnkit.core.serial` applies them
    (same per-child keys ``child_key(key, name)``), so the last ``y`` equals
    ``model.apply(params, state, x, key=key, train=train)[0]``. Any other layer or combinator
    (residual, fanout, ...) is one entry. ``path`` is ``"block/dense_0"`` style (the params
    path); a model that is not serial gives one entry named after it.
    """
    out: list[tuple[str, str, jax.Array]] = []

    def walk(m: Layer, p, s, h, k, prefix: str):
        if m.kind == "serial" and m.children:
            for n, child in m.children:
                h = walk(child, p.get(n, {}), s.get(n, {}), h, child_key(k, n), f"{prefix}{n}/")
            return h
        y, _ = m.apply(p, s, h, key=k, train=train)
        out.append((prefix.rstrip("/") or m.name or m.kind, m.kind, y))
        return y

    walk(model, params, state, x, key, "")
    return out


def make_layer_outputs(
    model: Layer, *, train: bool = False
) -> tuple[list[tuple[str, str]], Callable[..., list[jax.Array]]]:
    """A jitted ``f(params, state, x, key) -> [y_1, ..., y_n]`` and its ``[(path, kind)]``.

    The names are known only after a trace, so they are filled in on the first call (the
    list object returned here is updated in place). Compiled once per input shape.
    """
    names: list[tuple[str, str]] = []

    def f(params, state, x, key):
        outs = layer_outputs(model, params, state, x, key=key, train=train)
        names[:] = [(p, k) for p, k, _ in outs]
        return [y for _, _, y in outs]

    return names, jax.jit(f)


def layer_paths(model: Layer, prefix: str = "") -> list[str]:
    """The paths :func:`layer_outputs` reports, in application order, without running."""
    if model.kind == "serial" and model.children:
        return [p for n, child in model.children for p in layer_paths(child, f"{prefix}{n}/")]
    return [prefix.rstrip("/") or model.name or model.kind]


def _natural(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _groups(tree: Any, prefix: str, out: dict) -> None:
    leaves = {k: v for k, v in tree.items() if not isinstance(v, dict)}
    if leaves:
        out[prefix.rstrip("/") or "params"] = leaves
    for k, v in tree.items():
        if isinstance(v, dict):
            _groups(v, f"{prefix}{k}/", out)


def param_groups(tree: Any, model: Layer | None = None) -> dict[str, dict[str, Any]]:
    """The arrays of each layer: ``{"block/dense_0": {"w": ..., "b": ...}, ...}``.

    A group is a dict's array (non-dict) entries, keyed by the dict's path (``"params"``
    for arrays at the top). Ordered by application order when ``model`` is given (a group
    inside a layer reported by :func:`layer_paths` takes that layer's place), otherwise in
    natural order of the paths (``dense_2`` before ``dense_10``) -- ``jit`` and optimizers
    return dicts with sorted keys, so the tree's own order cannot be trusted.
    """
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        return {"params": {"": tree}}
    groups: dict[str, dict[str, Any]] = {}
    _groups(tree, "", groups)
    order = layer_paths(model) if model is not None else []

    def rank(path: str) -> tuple:
        for i, p in enumerate(order):
            if path == p or path.startswith(p + "/"):
                return (i, _natural(path))
        return (len(order), _natural(path))

    return {p: groups[p] for p in sorted(groups, key=rank)}


def group_norms(tree: Any, model: Layer | None = None) -> dict[str, jax.Array]:
    """``{layer_path: sqrt(sum of squares of the layer's arrays)}``, ordered as
    :func:`param_groups` (a ``jit`` output dict comes back with sorted keys: reorder with
    :func:`param_groups` on the host)."""
    return {
        path: jnp.sqrt(sum(jnp.sum(jnp.square(jnp.asarray(a, jnp.float32))) for a in g.values()))
        for path, g in param_groups(tree, model).items()
    }
