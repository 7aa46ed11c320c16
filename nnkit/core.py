"""The nnkit contract: a model is a pair of pure functions over pytrees.

Every layer, combinator and whole model is a :class:`Layer`::

    init(key, input_shape)                            -> (output_shape, params, state)
    apply(params, state, x, *, key=None, train=False) -> (y, new_state)

* ``input_shape`` excludes the batch dimension (a leading ``-1`` is accepted and ignored).
* ``apply`` takes ``x`` of shape ``(batch, *input_shape)``: exactly one leading batch
  dimension. (Element-wise layers and Dense also accept any number of leading dims.) For
  per-example work, ``jax.vmap`` over a function that adds the batch axis with ``x[None]``.
* ``params`` are trainable arrays, ``state`` non-trainable arrays (running statistics);
  both are nested dicts with readable names, ``{}`` when a layer has none.
* ``key`` is the only source of randomness; ``train`` is a static Python bool.

Combinators (:func:`serial`, :func:`parallel`, :func:`residual`) derive each child's name
and RNG key from the child's *name*, never from a global counter, so a model is a value
that can be built twice and gives the same tree.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nnkit._checks import check_seed

Array = jax.Array
Shape = tuple[int, ...]
Params = dict[str, Any]
State = dict[str, Any]

__all__ = [
    "Layer",
    "ShapeError",
    "TreeError",
    "layer",
    "named",
    "serial",
    "Sequential",
    "parallel",
    "fanout",
    "concat",
    "residual",
    "Lambda",
    "child_key",
    "normalize_shape",
    "summary",
    "param_count",
    "abstract_init",
]


class ShapeError(ValueError):
    """A layer was initialised with an input shape (or arguments) it cannot accept.

    The message names the layer path, the expected and the received shapes.
    """


class TreeError(ValueError, KeyError):
    """``apply`` was given a params or state tree that does not match the model (one built
    from another model, entries missing, params and state swapped, ``None``).

    The message names the layer path and the keys the tree has. It is also a ``KeyError``
    (the error it replaces), so code that caught that still does.
    """

    def __str__(self) -> str:  # a KeyError would show the message quoted
        return str(self.args[0]) if self.args else ""


class Layer(NamedTuple):
    """A model: ``init(key, input_shape)`` and ``apply(params, state, x, *, key, train)``.

    Attributes:
      init: ``(key, input_shape) -> (output_shape, params, state)``.
      apply: ``(params, state, x, *, key=None, train=False) -> (y, new_state)``.
      kind: short lowercase kind used for default names (``"dense"``, ``"conv2d"``).
      name: explicit name given by the user, or ``None`` for a default name.
      children: ``((name, Layer), ...)`` for combinators, ``()`` for leaves.
      meta: ``((key, value), ...)`` hyper-parameters for summaries and configs.
    """

    init: Callable[..., tuple[Shape, Params, State]]
    apply: Callable[..., tuple[Any, State]]
    kind: str
    name: str | None = None
    children: tuple[tuple[str, Layer], ...] = ()
    meta: tuple[tuple[str, Any], ...] = ()

    def __call__(self, params: Params, state: State, x: Any, *, key=None, train: bool = False):
        """Shorthand for :attr:`apply`."""
        return self.apply(params, state, x, key=key, train=train)


def normalize_shape(input_shape: Sequence[int] | int) -> Shape:
    """Returns ``input_shape`` as a tuple of ints without a leading ``-1`` batch entry.

    A tuple of shapes (the input of :func:`parallel`/:func:`concat`) is normalised
    element-wise and returned as a tuple of tuples.
    """
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    if not isinstance(input_shape, Sequence) and not hasattr(input_shape, "__iter__"):
        raise ShapeError(f"input_shape must be a tuple of ints, got {input_shape!r}")
    if len(input_shape) and all(
        isinstance(s, Sequence) and not isinstance(s, str) for s in input_shape
    ):
        return tuple(normalize_shape(s) for s in input_shape)  # type: ignore[misc]
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ShapeError(f"input_shape must be a tuple of ints, got {input_shape!r}") from None
    if shape and shape[0] == -1:
        shape = shape[1:]
    if any(d <= 0 for d in shape):
        raise ShapeError(f"input_shape {tuple(input_shape)} has a non-positive dimension")
    return shape


def layer(
    kind: str,
    init: Callable,
    apply: Callable,
    *,
    name: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Layer:
    """Builds a leaf :class:`Layer` from its two functions (the way to write your own layer).

    ``init(key, input_shape) -> (output_shape, params, state)`` receives ``input_shape`` as
    a tuple of ints without the batch dimension (a leading ``-1`` dropped); a
    :class:`ShapeError` it raises is prefixed with the layer's name. ``apply(params, state,
    x, *, key=None, train=False) -> (y, new_state)`` receives ``x`` with its batch axis and
    must return the pair, ``{}`` for a stateless layer. ``kind`` names the layer in its
    container (``{kind}_{i}``) unless ``name`` is given; ``meta`` is shown by summaries.
    """

    def checked_init(key, input_shape):
        shape = normalize_shape(input_shape)
        try:
            return init(as_prng_key(key), shape)
        except ShapeError as e:
            raise ShapeError(f"{name or kind}: {e}") from None

    def keyed_apply(params, state, x, *, key=None, train=False):
        return apply(params, state, x, key=as_prng_key(key), train=train)

    return Layer(checked_init, keyed_apply, kind, name, (), tuple((meta or {}).items()))


def named(model: Layer, name: str) -> Layer:
    """Returns ``model`` with an explicit name (its key in the parent's params dict)."""
    return model._replace(name=name)


def _stable_hash(name: str) -> int:
    return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF


def as_prng_key(key: Any) -> Any:
    """An int seed as ``jax.random.key(seed)``; keys, tracers and ``None`` unchanged."""
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        return jax.random.key(check_seed(key))
    return key


def child_key(key: Array | int | None, name: str) -> Array | None:
    """The child's RNG key: ``fold_in(key, crc32(name))``; ``None`` stays ``None``; an int
    seed is first made a key (so ``model.init(0, shape)`` works as ``fit(key=0)`` does).

    Deriving from the name (not the position) means inserting a layer leaves the other
    layers' randomness unchanged.
    """
    if key is None:
        return None
    return jax.random.fold_in(as_prng_key(key), _stable_hash(name))


def _child_names(layers: Sequence[Layer]) -> list[str]:
    """Explicit names, else ``{kind}_{i}`` numbered per kind within the container."""
    counts: dict[str, int] = {}
    names = []
    for lyr in layers:
        if not isinstance(lyr, Layer):
            raise TypeError(f"expected an nnkit Layer, got {type(lyr).__name__}: {lyr!r}")
        if lyr.name is not None:
            names.append(lyr.name)
        else:
            i = counts.get(lyr.kind, 0)
            counts[lyr.kind] = i + 1
            names.append(f"{lyr.kind}_{i}")
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ValueError(f"duplicate layer names in one container: {sorted(dupes)}")
    return names


def _relabelled(name: str, lyr: Layer, e: ShapeError) -> ShapeError:
    """``e`` labelled with the child's path in this container: a leaf's own "kind: msg"
    becomes "name: msg"; a nested container's "a/b: msg" becomes "name/a/b: msg"."""
    msg, own = str(e), f"{lyr.name or lyr.kind}: "
    if msg.startswith(own):
        msg = f"{name}: {msg[len(own):]}"
    elif not msg.startswith((f"{name}:", f"{name}/")):
        msg = f"{name}/{msg}"
    return ShapeError(msg)


def _init_child(name: str, lyr: Layer, key, shape):
    try:
        return lyr.init(key, shape)
    except ShapeError as e:
        raise _relabelled(name, lyr, e) from None
    except (TypeError, IndexError) as e:  # e.g. a (shape, state) pair where a shape belongs
        raise ShapeError(f"{name}: cannot be initialised on input shape {shape}: "
                         f"{type(e).__name__}: {e}") from e


def _put(tree: dict, name: str, value: dict) -> None:
    if value:
        tree[name] = value


def _check_trees(who: str, params: Any, state: Any) -> None:
    """A container's ``params``/``state`` must be dicts. Entries for no child are allowed:
    a prefix of a model (``serial(*model.children[:3])``) applies to the whole model's
    params; entries a child needs and lacks are named by :func:`_apply_child`."""
    for what, tree in (("params", params), ("state", state)):
        if not isinstance(tree, Mapping):
            raise TreeError(f"{who}: {what} must be a dict ({{}} when empty), got "
                            f"{type(tree).__name__}")


def _trees_differ(lyr: Layer, p: Mapping, st: Mapping, x: Any) -> bool:
    """Whether ``p``/``st`` lack entries that ``lyr.init`` gives on ``x``'s per-example shape
    (traced abstractly; only on the error path). ``True`` when that cannot be told."""
    leaves = jax.tree_util.tree_leaves(x)
    if len(leaves) != 1 or getattr(leaves[0], "ndim", 0) < 1:
        return True
    try:
        _, want_p, want_s = jax.eval_shape(
            lambda: lyr.init(jax.random.key(0), tuple(leaves[0].shape[1:])))
    except Exception:  # noqa: BLE001 - cannot tell: report the trees
        return True
    return not (set(want_p) <= set(p) and set(want_s) <= set(st))


def _apply_child(n: str, lyr: Layer, params: Mapping, state: Mapping, x: Any,
                 key: Array | None, train: bool) -> tuple[Any, Any]:
    """``lyr.apply`` on the child's entries; errors name the child's path, and the child
    must return the pair ``(y, new_state)``."""
    p, st = params.get(n, {}), state.get(n, {})
    try:
        out = lyr.apply(p, st, x, key=child_key(key, n), train=train)
    except ShapeError as e:  # a shape error while tracing names the path, as at init
        raise _relabelled(n, lyr, e) from None
    except TreeError as e:
        raise TreeError(f"{n}/{e}") from None
    except KeyError as e:
        if lyr.children or not _trees_differ(lyr, p, st, x):
            raise  # a lookup of the layer's own, not an entry its trees lack
        raise TreeError(
            f"{n}: {lyr.kind} looks up {e} in a tree without it (its params have keys "
            f"{sorted(p, key=str)}, its state {sorted(st, key=str)}): params or state of "
            "another model, or the two swapped?") from None
    pair = isinstance(out, tuple | list) and len(out) == 2
    if not pair or isinstance(out[1], jax.Array | np.ndarray):
        if not isinstance(out, tuple | list):
            got = f"one {type(out).__name__}"
        elif not pair:
            got = f"a sequence of {len(out)}"
        else:
            got = f"({type(out[0]).__name__}, {type(out[1]).__name__})"
        raise TypeError(f"{n}: {lyr.kind}.apply must return the pair (y, new_state) with "
                        f"new_state a dict ({{}} when stateless), got {got}")
    return tuple(out)


def serial(*layers: Layer, name: str | None = None) -> Layer:
    """Composes layers in sequence: ``y = f_n(... f_2(f_1(x)))``.

    Params and state are ``{child_name: child_tree}`` (children with an empty tree are left
    out). Child names are explicit names or ``{kind}_{i}`` numbered per kind.
    """
    if len(layers) == 1 and isinstance(layers[0], list | tuple) and not isinstance(
        layers[0], Layer
    ):
        layers = tuple(layers[0])
    names = _child_names(layers)
    children = tuple(zip(names, layers, strict=True))

    def init(key, input_shape):
        shape = normalize_shape(input_shape)
        params, state = {}, {}
        for n, lyr in children:
            shape, p, s = _init_child(n, lyr, child_key(key, n), shape)
            _put(params, n, p)
            _put(state, n, s)
        return shape, params, state

    def apply(params, state, x, *, key=None, train=False):
        _check_trees(name or "serial", params, state)
        new_state = {}
        for n, lyr in children:
            x, s = _apply_child(n, lyr, params, state, x, key, train)
            _put(new_state, n, s)
        return x, new_state

    return Layer(init, apply, "serial", name, children)


Sequential = serial


def parallel(*layers: Layer, name: str | None = None) -> Layer:
    """Applies layer ``i`` to input ``i`` of a tuple: ``(x_1, ..., x_n) -> (f_1(x_1), ...)``.

    ``input_shape`` is a tuple of shapes; the output shape is the tuple of output shapes.
    """
    names = _child_names(layers)
    children = tuple(zip(names, layers, strict=True))

    def init(key, input_shape):
        if len(input_shape) != len(children) or not all(
            isinstance(s, tuple | list) for s in input_shape
        ):
            raise ShapeError(
                f"{name or 'parallel'}: expected a tuple of {len(children)} input shapes, "
                f"got {input_shape}"
            )
        shapes, params, state = [], {}, {}
        for (n, lyr), shp in zip(children, input_shape, strict=True):
            out, p, s = _init_child(n, lyr, child_key(key, n), shp)
            shapes.append(out)
            _put(params, n, p)
            _put(state, n, s)
        return tuple(shapes), params, state

    def apply(params, state, xs, *, key=None, train=False):
        _check_trees(name or "parallel", params, state)
        ys, new_state = [], {}
        for (n, lyr), x in zip(children, xs, strict=True):
            y, s = _apply_child(n, lyr, params, state, x, key, train)
            ys.append(y)
            _put(new_state, n, s)
        return tuple(ys), new_state

    return Layer(init, apply, "parallel", name, children)


def fanout(*layers: Layer, name: str | None = None, as_dict: bool = False) -> Layer:
    """Applies every layer to the same input: ``x -> (f_1(x), ..., f_n(x))``.

    Follow it with :func:`concat` to join the branches, or use it for multi-head models.
    With ``as_dict=True`` the outputs (and output shapes) are ``{child_name: f_i(x)}``:
    :func:`nnkit.losses.multi_task` then pairs each head with its task by name, not by
    position.
    """
    names = _child_names(layers)
    children = tuple(zip(names, layers, strict=True))
    pack = (lambda ys: dict(zip(names, ys, strict=True))) if as_dict else tuple

    def init(key, input_shape):
        shape = normalize_shape(input_shape)
        shapes, params, state = [], {}, {}
        for n, lyr in children:
            out, p, s = _init_child(n, lyr, child_key(key, n), shape)
            shapes.append(out)
            _put(params, n, p)
            _put(state, n, s)
        return pack(shapes), params, state

    def apply(params, state, x, *, key=None, train=False):
        _check_trees(name or "fanout", params, state)
        ys, new_state = [], {}
        for n, lyr in children:
            y, s = _apply_child(n, lyr, params, state, x, key, train)
            ys.append(y)
            _put(new_state, n, s)
        return pack(ys), new_state

    return Layer(init, apply, "fanout", name, children, (("as_dict", as_dict),))


def concat(axis: int = -1, *, name: str | None = None) -> Layer:
    """Concatenates a tuple of arrays along ``axis`` (an axis of the per-example shape)."""

    def init(key, input_shapes):
        if not input_shapes or not all(isinstance(s, tuple | list) for s in input_shapes):
            raise ShapeError(
                f"{name or 'concat'}: expected a tuple of input shapes (the output of fanout or "
                f"parallel), got {input_shapes}"
            )
        shapes = [tuple(s) for s in input_shapes]
        ranks = {len(s) for s in shapes}
        if len(ranks) != 1:
            raise ShapeError(f"{name or 'concat'}: inputs of different ranks {shapes}")
        rank = ranks.pop()
        ax = axis % rank
        for s in shapes:
            if s[:ax] + s[ax + 1 :] != shapes[0][:ax] + shapes[0][ax + 1 :]:
                raise ShapeError(
                    f"{name or 'concat'}: shapes {shapes} differ off the concat axis {axis}"
                )
        out = list(shapes[0])
        out[ax] = sum(s[ax] for s in shapes)
        return tuple(out), {}, {}

    def apply(params, state, xs, *, key=None, train=False):
        ax = axis if axis < 0 else axis + 1  # skip the batch dim
        return jnp.concatenate(xs, axis=ax), {}

    return Layer(init, apply, "concat", name, (), (("axis", axis),))


def residual(block: Layer, shortcut: Layer | None = None, *, name: str | None = None) -> Layer:
    """``y = block(x) + shortcut(x)`` with ``shortcut`` the identity by default.

    The block's output shape must equal the shortcut's (the input shape by default).
    """
    children = (("block", block),) + ((("shortcut", shortcut),) if shortcut else ())

    def init(key, input_shape):
        shape = normalize_shape(input_shape)
        out, p, s = _init_child("block", block, child_key(key, "block"), shape)
        params, state = {}, {}
        _put(params, "block", p)
        _put(state, "block", s)
        short = shape
        if shortcut is not None:
            short, ps, ss = _init_child("shortcut", shortcut, child_key(key, "shortcut"), shape)
            _put(params, "shortcut", ps)
            _put(state, "shortcut", ss)
        if tuple(out) != tuple(short):
            raise ShapeError(
                f"{name or 'residual'}: block output {tuple(out)} != shortcut output "
                f"{tuple(short)}; pass a projection as shortcut="
            )
        return tuple(out), params, state

    def apply(params, state, x, *, key=None, train=False):
        _check_trees(name or "residual", params, state)
        new_state = {}
        y, s = _apply_child("block", block, params, state, x, key, train)
        _put(new_state, "block", s)
        if shortcut is not None:
            x, s2 = _apply_child("shortcut", shortcut, params, state, x, key, train)
            _put(new_state, "shortcut", s2)
        return y + x, new_state

    return Layer(init, apply, "residual", name, children)


def Lambda(
    fn: Callable[[Array], Array],
    *,
    kind: str | None = None,
    name: str | None = None,
) -> Layer:
    """Turns any shape-polymorphic function ``fn(x) -> y`` into a parameter-free layer.

    The output shape is found with ``jax.eval_shape`` on one example, so ``fn`` must accept
    a leading batch dimension and treat examples independently.
    """
    kind = kind or getattr(fn, "__name__", "lambda").strip("<>").lower()

    def init(key, input_shape):
        x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
        try:
            out = jax.eval_shape(fn, x)
        except Exception as e:  # noqa: BLE001 - re-raised with the layer name
            raise ShapeError(f"cannot apply to input shape {input_shape}: {e}") from None
        return tuple(out.shape[1:]), {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return fn(x), {}

    return layer(kind, init, apply, name=name)


# ----------------------------------------------------------------------------- summary


BATCH_NORM_KINDS = ("batchnorm", "batch_norm", "bn")
"""Layer kinds that normalise with the statistics of the batch in train mode."""


def batchnorm_paths(model: Layer, prefix: str = "") -> list[str]:
    """Paths (``serial_0/batch_norm_0``) of the layers in ``model`` whose kind is one of
    :data:`BATCH_NORM_KINDS`: layers whose train-mode output depends on the whole batch."""
    path = prefix.rstrip("/") or model.name or model.kind
    found = [path] if model.kind.lower().replace("-", "_") in BATCH_NORM_KINDS else []
    for n, child in model.children:
        found += batchnorm_paths(child, f"{prefix}{n}/")
    return found


def param_count(tree: Any) -> int:
    """Number of scalars in a pytree of arrays."""
    return int(sum(math.prod(jnp.shape(x)) for x in jax.tree_util.tree_leaves(tree)))


def abstract_init(model: Layer, input_shape: Any, key: Array | int | None = None
                  ) -> tuple[Any, Params, State]:
    """``model.init`` without allocating: params/state as ``jax.ShapeDtypeStruct`` trees."""
    box = {}

    def f(k):
        out, p, s = model.init(k, input_shape)
        box["out"] = out
        return p, s

    params, state = jax.eval_shape(f, jax.random.key(0) if key is None else key)
    return box["out"], params, state


def _rows(model: Layer, key, shape, prefix: str, depth: int, out: list):
    out_shape, params, state = abstract_init(model, shape, key)
    if model.kind == "serial" and model.children:
        cur = shape
        for n, child in model.children:
            cur = _rows(child, child_key(key, n), cur, f"{prefix}{n}/", depth + 1, out)
        return out_shape
    out.append(
        (prefix.rstrip("/") or model.name or model.kind, model.kind, out_shape,
         param_count(params), param_count(state))
    )
    return out_shape


def _shape_text(s: Any) -> str:
    """An output shape for :func:`summary`: a shape as a tuple, a tree of shapes as is."""
    flat = not isinstance(s, Mapping) and (
        not isinstance(s, tuple) or all(isinstance(d, int) for d in s))
    return str(tuple(s)) if flat else str(s)


def summary(model: Layer, input_shape: Sequence[int], *,
            print_fn: Callable[[str], Any] | None = print) -> str:
    """A table of layer paths, kinds, output shapes and parameter counts, plus the total.

    Nothing is allocated: shapes come from ``jax.eval_shape`` of ``init``. The returned text
    is stable, so a test can compare it with a golden file to pin a model's tree.
    """
    shape = normalize_shape(input_shape)
    key = jax.random.key(0)
    rows: list = []
    out = _rows(model, key, shape, "", 0, rows)
    header = ("layer", "kind", "output shape", "params", "state")
    body = [(p, k, _shape_text(s), f"{n:,}", f"{m:,}") for p, k, s, n, m in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(5)]

    def fmt(r):
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(
            zip(r, widths, strict=True)))

    total_p = sum(r[3] for r in rows)
    total_s = sum(r[4] for r in rows)
    lines = [f"input shape {shape}", fmt(header), "-" * len(fmt(header))]
    lines += [fmt(r) for r in body]
    lines += ["-" * len(fmt(header)),
              f"output shape {tuple(out) if isinstance(out, tuple) else out}",
              f"total params {total_p:,}  (state {total_s:,})"]
    text = "\n".join(lines)
    if print_fn is not None:
        print_fn(text)
    return text
