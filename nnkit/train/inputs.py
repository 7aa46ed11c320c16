"""Checks of training data against the model, done on the host before anything compiles."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nnkit.core import Layer, ShapeError, abstract_init, normalize_shape

__all__ = ["as_xy", "check_data", "check_finite", "check_targets", "check_binary_targets",
           "check_params", "data_nbytes"]


def as_xy(data: Any, what: str) -> tuple[Any, Any] | None:
    """``(x, y)`` from an ``(x, y)`` tuple or an object with ``.x`` and ``.y``; ``None`` stays."""
    if data is None:
        return None
    if hasattr(data, "x") and hasattr(data, "y"):
        x, y = data.x, data.y
    elif isinstance(data, tuple | list) and len(data) == 2:
        x, y = data
    else:
        raise TypeError(f"{what} must be an (x, y) tuple or have .x and .y, got {type(data)}")
    x, y = _array(x), _array(y)
    nx, ny = count_examples(x, what + " x"), count_examples(y, what + " y")
    if nx != ny:
        raise ValueError(f"{what}: x has {nx} examples but y has {ny}")
    if nx == 0:
        raise ValueError(f"{what} is empty")
    return x, y


def _array(a: Any) -> Any:
    if isinstance(a, jax.Array | np.ndarray):
        return a
    if isinstance(a, tuple | list | dict):
        return jax.tree_util.tree_map(_array, a)
    return np.asarray(a)


def count_examples(tree: Any, what: str) -> int:
    """The common leading (example) axis length of every leaf; ``ValueError`` naming ``what``
    if a leaf has none or the lengths differ."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves or any(np.ndim(a) == 0 for a in leaves):
        raise ValueError(f"{what} needs a leading example axis")
    ns = {int(np.shape(a)[0]) for a in leaves}
    if len(ns) != 1:
        raise ValueError(f"{what}: leaves have different numbers of examples {sorted(ns)}")
    return ns.pop()


def data_nbytes(*datasets: Any) -> int:
    """Total bytes of the arrays in ``(x, y)`` pairs (``None`` skipped)."""
    leaves = jax.tree_util.tree_leaves([d for d in datasets if d is not None])
    return int(sum(np.dtype(a.dtype).itemsize * int(np.prod(np.shape(a))) for a in leaves))


def _example_shape(x: Any) -> Any:
    if isinstance(x, jax.Array | np.ndarray):
        return tuple(x.shape[1:])
    return jax.tree_util.tree_map(lambda a: tuple(np.shape(a)[1:]), x)


def check_finite(data: Any, what: str) -> None:
    """``ValueError`` counting the NaN/inf values of the float arrays in ``data`` and naming
    the first one's index. Device arrays are checked on the device (one reduction, two
    scalars read back); tracers and arrays split over several processes are left alone."""
    for a in jax.tree_util.tree_leaves(data):
        if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating):
            bad = ~np.isfinite(a)
            count = int(bad.sum())
            first = tuple(int(i) for i in np.argwhere(bad)[0]) if count else ()
        elif (isinstance(a, jax.Array) and not isinstance(a, jax.core.Tracer)
              and jnp.issubdtype(a.dtype, jnp.floating) and a.is_fully_addressable
              and a.size):
            count, flat = (int(v) for v in _nonfinite(a))
            first = tuple(int(i) for i in np.unravel_index(flat, a.shape)) if count else ()
        else:
            continue
        if count:
            raise ValueError(f"{what} has {count} NaN/inf value(s), the first at "
                             f"index {first}")


@jax.jit
def _min_max(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.min(a), jnp.max(a)


@jax.jit
def _nonfinite(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The number of NaN/inf values of ``a`` and the flat index of the first."""
    bad = ~jnp.isfinite(a).ravel()
    return jnp.sum(bad, dtype=jnp.int32), jnp.argmax(bad)


def _end_leaf(model: Layer, end: int) -> tuple[str, Layer]:
    """The first (``end=0``) or last (``end=-1``) leaf of nested ``serial`` chains, and its
    path (``"serial_0/embedding"``-style names as the containers give them)."""
    path = []
    while model.kind == "serial" and model.children:
        name, model = model.children[end]
        path.append(name)
    return "/".join(path) or (model.name or model.kind), model


def check_token_ids(model: Layer, x: Any, what: str) -> None:
    """``ValueError`` if the model starts with an ``Embedding`` and the integer (NumPy) ids
    in ``x`` fall outside ``[0, vocab_size)`` (they would give NaN rows, so a NaN loss at
    the first step instead of this message)."""
    path, first = _end_leaf(model, 0)
    vocab = dict(first.meta).get("vocab_size") if first.kind == "embedding" else None
    if (vocab is None or not isinstance(x, np.ndarray) or x.size == 0
            or not np.issubdtype(x.dtype, np.integer)):
        return
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi >= vocab:
        bad = hi if hi >= vocab else lo
        first_at = tuple(int(i) for i in np.argwhere(x == bad)[0])
        raise ValueError(f"{path}: vocab_size is {vocab}, but {what} holds token id {bad} "
                         f"(at index {first_at}; ids must be in [0, {vocab}))")


def warn_softmax_before_cross_entropy(model: Layer, loss: Callable) -> None:
    """``UserWarning`` when the model ends in a softmax and ``loss`` is the softmax
    cross-entropy, which takes logits: the softmax would be applied twice (training still
    runs, but the gradients shrink as the probabilities saturate)."""
    from nnkit import losses

    path, last = _end_leaf(model, -1)
    if last.kind == "softmax" and loss is losses.softmax_cross_entropy:
        import warnings

        warnings.warn(f"the model ends in a softmax ({path}) and the loss is cross_entropy, "
                      "which applies its own softmax to logits: drop the softmax layer, or "
                      "use loss 'nll' on a log_softmax output", UserWarning, stacklevel=3)


def warn_nll_without_log_softmax(model: Layer, loss: Callable) -> None:
    """``UserWarning`` when ``loss`` is :func:`nnkit.losses.nll`, which takes
    log-probabilities, and the model does not end in a log_softmax: on raw logits the loss
    has no lower bound (training drives it negative without end), on a softmax's
    probabilities it is not the log-likelihood."""
    from nnkit import losses

    path, last = _end_leaf(model, -1)
    if loss is losses.nll and last.kind != "log_softmax":
        import warnings

        ends = f"ends in {last.kind} ({path})"
        warnings.warn(f"the loss is nll, which takes log-probabilities, but the model {ends}, "
                      "not a log_softmax: on logits the loss falls without bound; add a "
                      "log_softmax layer, or use loss 'cross_entropy' on logits", UserWarning,
                      stacklevel=3)


BINARY_LOSSES = ("binary_cross_entropy_with_logits", "binary_cross_entropy")
"""Functions of :mod:`nnkit.losses` (any config name of theirs) whose targets must lie in
``[0, 1]``."""


def check_binary_targets(loss: Callable, y: Any, what: str, name: str | None = None) -> None:
    """``ValueError`` when ``loss`` is a binary cross-entropy (:data:`BINARY_LOSSES`) and
    host (NumPy) targets ``y`` hold values outside ``[0, 1]``: the loss then goes negative
    and training runs on, e.g. on the class ids 0..2 of a 3-class set. The message names
    the loss (``name``, default its function's), the offending values and, for integer
    targets, the number of classes found. Device arrays are checked on the device (their
    minimum and maximum; copied to the host only to word the error); tracers and arrays
    split over several processes are left alone."""
    from nnkit import losses

    fns = [getattr(losses, n) for n in BINARY_LOSSES]
    if not any(loss is f for f in fns):
        return
    if (isinstance(y, jax.Array) and not isinstance(y, jax.core.Tracer)
            and y.is_fully_addressable and y.size and jnp.issubdtype(y.dtype, jnp.number)):
        lo, hi = (float(v) for v in _min_max(y))
        if 0 <= lo and hi <= 1:
            return
        y = np.asarray(y)
    if not isinstance(y, np.ndarray) or y.size == 0 or not np.issubdtype(y.dtype, np.number):
        return
    bad = (y < 0) | (y > 1)
    if not bad.any():
        return
    values = np.unique(y[bad])
    shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if len(values) > 5 else "")
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    if np.issubdtype(y.dtype, np.integer):
        classes = np.unique(y)
        found = (f"{len(classes)} classes found ({', '.join(map(str, classes[:10]))}"
                 f"{', ...' if len(classes) > 10 else ''}): for more than 2 classes use "
                 "cross_entropy with one output unit per class")
    else:
        found = f"the targets range over [{float(y.min()):g}, {float(y.max()):g}]"
    name = name or f"loss {getattr(loss, '__name__', 'loss')!r}"
    raise ValueError(f"{name} takes targets in [0, 1], but {what} holds {shown} "
                     f"({int(bad.sum())} of {y.size} values, the first at index "
                     f"{first[0] if len(first) == 1 else first}); {found}")


def _check_apply(model: Layer, params: Any, state: Any, x: Any, out_shape: Any) -> None:
    """Traces ``model.apply`` (``train=False``) on two examples shaped and typed like ``x``;
    nothing runs. Errors that only applying shows -> ``ValueError`` naming the data's
    per-example shape and dtype; an output unlike ``out_shape`` -> ``ShapeError``."""
    def spec(a: Any) -> jax.ShapeDtypeStruct:
        dtype = a.dtype if hasattr(a, "dtype") else np.asarray(a).dtype
        return jax.ShapeDtypeStruct((2, *np.shape(a)[1:]), jax.dtypes.canonicalize_dtype(dtype))

    xb = jax.tree_util.tree_map(spec, x)
    what = jax.tree_util.tree_map(lambda s: f"{tuple(s.shape[1:])} {s.dtype}", xb)
    try:
        out = jax.eval_shape(lambda p, s, v: model.apply(p, s, v, train=False)[0],
                             params, state, xb)
    except ShapeError as e:
        raise ShapeError(f"the model cannot be applied to inputs {what}: {e}") from None
    except (TypeError, ValueError, IndexError, KeyError, NotImplementedError) as e:
        raise ValueError(f"the model cannot be applied to inputs {what}: "
                         f"{type(e).__name__}: {e}") from None
    got = getattr(out, "shape", None)
    if _is_shape(out_shape) and got is not None and tuple(got[1:]) != tuple(out_shape):
        raise ShapeError(f"the model's init declares per-example outputs {tuple(out_shape)} "
                         f"but its apply gives {tuple(got[1:])} (inputs {what})")


def check_data(
    model: Layer,
    loss: Callable | None,
    train: tuple[Any, Any],
    others: dict[str, tuple[Any, Any] | None],
    input_shape: Any,
    *,
    metrics: Sequence[tuple[str, Callable]] = (),
    train_name: str = "train_data",
) -> tuple[Any, Any]:
    """Validates data against the model before compiling; returns ``(input_shape, out_shape)``.

    Raises ``ValueError`` naming the shapes for: NaN/inf in NumPy data (with the first one's
    index), x not matching ``input_shape``, a model that
    cannot take the data's shape or dtype (``apply`` is traced abstractly on two examples
    like x: float data into an ``Embedding``, an activation option that fails when applied),
    a model whose ``apply`` output differs from the shape its ``init`` declared, val/test x
    or y shapes differing from train, integer labels outside ``[0, num_classes)``,
    predictions the loss cannot compare with ``y`` (:func:`check_targets`; skipped when
    ``loss`` is ``None``), binary cross-entropy targets outside ``[0, 1]``
    (:func:`check_binary_targets`), and the same for each ``(name, fn)`` of ``metrics``.
    Messages call ``train`` ``train_name``.
    """
    x, y = train
    for name, d in {train_name: train, **others}.items():
        if d is not None:
            check_finite(d[0], f"{name} x")
            check_finite(d[1], f"{name} y")
    data_shape = _example_shape(x)
    if input_shape is None:
        input_shape = data_shape
    else:
        if isinstance(data_shape, tuple) and all(isinstance(d, int) for d in data_shape):
            input_shape = normalize_shape(input_shape)
        if tuple(input_shape) != tuple(data_shape):
            raise ValueError(
                f"{train_name} x has per-example shape {data_shape} but the model's input_shape "
                f"is {tuple(input_shape)}"
            )
    for name, d in others.items():
        if d is None:
            continue
        if _example_shape(d[0]) != data_shape:
            raise ValueError(f"{name} x has per-example shape {_example_shape(d[0])}, "
                             f"{train_name} x has {data_shape}")
        if _example_shape(d[1]) != _example_shape(y):
            raise ValueError(f"{name} y has per-example shape {_example_shape(d[1])}, "
                             f"{train_name} y has {_example_shape(y)}")
    try:
        out_shape, params, state = abstract_init(model, input_shape)
    except ShapeError as e:
        raise ShapeError(
            f"the model cannot take inputs of per-example shape {tuple(input_shape)}: {e}"
        ) from None
    _check_apply(model, params, state, x, out_shape)
    for name, d in {train_name: train, **others}.items():
        if d is not None:
            check_token_ids(model, d[0], f"{name} x")
    if loss is not None:
        warn_softmax_before_cross_entropy(model, loss)
        warn_nll_without_log_softmax(model, loss)
    for name, d in {train_name: train, **others}.items():
        if d is not None:
            _check_labels(out_shape, d[1], name)
    if loss is not None:
        check_task_order(model, loss)
        check_targets(loss, out_shape, y)
        for name, d in {train_name: train, **others}.items():
            if d is not None:
                check_binary_targets(loss, d[1], f"{name} y")
    for name, fn in metrics:
        check_targets(fn, out_shape, y, f"metric {name!r}")
    return input_shape, out_shape


def _check_labels(out_shape: Any, y: Any, name: str) -> None:
    """Integer class ids ``y`` (NumPy or device) within the model's ``out_shape[-1]``
    outputs, where ``y`` has the outputs' shape less their class axis."""
    if (isinstance(y, jax.Array | np.ndarray) and np.issubdtype(y.dtype, np.integer)
            and isinstance(out_shape, tuple) and len(out_shape) >= 1
            and y.shape[1:] == tuple(out_shape[:-1]) and out_shape[-1] > 1):
        from nnkit.losses import check_labels

        try:
            check_labels(np.asarray(y), out_shape[-1])
        except ValueError as e:
            raise ValueError(f"{name} y: {e} (the model has {out_shape[-1]} outputs)") from None


def check_values(loss: Callable | None, out_shape: Any, x: Any, y: Any, name: str) -> None:
    """The checks of :func:`check_data` that read the values of ``(x, y)`` (NaN/inf, labels
    in range, binary targets in ``[0, 1]``), for data whose shapes passed it."""
    check_finite(x, f"{name} x")
    check_finite(y, f"{name} y")
    _check_labels(out_shape, y, name)
    if loss is not None:
        check_binary_targets(loss, y, f"{name} y")


def check_task_order(model: Layer, loss: Callable) -> None:
    """``ValueError`` when a multi-task loss meets a model ending in a tuple
    :func:`nnkit.fanout` whose heads are named as the tasks but in another order: tuple
    outputs are paired with tasks by position, so each head would train on another task."""
    tasks = getattr(loss, "tasks", None)
    head = model
    while head.kind == "serial" and head.children:
        head = head.children[-1][1]
    if not tasks or head.kind != "fanout" or dict(head.meta).get("as_dict"):
        return
    heads = [n for n, _ in head.children]
    if set(heads) == set(tasks) and list(heads) != list(tasks):
        raise ValueError(
            f"the model's heads {heads} and the loss's tasks {list(tasks)} have the same names "
            "in another order, but a tuple fanout's outputs are paired with the tasks by "
            "position: build the heads with fanout(..., as_dict=True) to pair them by name, "
            "or list the tasks in the heads' order")


def _is_shape(s: Any) -> bool:
    return isinstance(s, tuple) and all(isinstance(d, int) for d in s)


def check_targets(fn: Callable, out_shape: Any, y: Any, what: str = "the loss") -> None:
    """Raises ``ValueError`` naming the shapes if ``fn(pred, y)`` (a loss or metric) cannot
    take model outputs of per-example shape ``out_shape`` and targets like ``y`` (traced
    abstractly, on a batch size that no other dimension has, so nothing broadcasts by chance).
    """
    dims = {d for s in jax.tree_util.tree_leaves(out_shape, is_leaf=_is_shape) for d in s}
    dims |= {d for a in jax.tree_util.tree_leaves(y) for d in np.shape(a)[1:]}
    b = next(n for n in range(2, len(dims) + 3) if n not in dims)
    pred = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct((b, *s), jnp.float32),
                                  out_shape, is_leaf=_is_shape)
    ys = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct((b, *np.shape(a)[1:]), a.dtype), y)
    try:
        jax.eval_shape(fn, pred, ys)
    except Exception as e:  # noqa: BLE001 - re-raised with the shapes
        raise ValueError(
            f"{what} cannot compare model outputs of shape (batch, *{tuple(out_shape)}) with "
            f"targets y of shape (batch, *{_example_shape(y)}): {e}"
        ) from None


def check_params(model: Layer, input_shape: Any, params: Any) -> None:
    """Raises ``ValueError`` if ``params`` (e.g. of a resumed train state) do not have the
    shapes ``model.init`` gives for ``input_shape``."""
    _, want, _ = abstract_init(model, input_shape)
    got_shapes = jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), params)
    want_shapes = jax.tree_util.tree_map(lambda a: tuple(a.shape), want)
    if got_shapes != want_shapes:
        raise ValueError(
            f"train_state params do not fit the model for input shape {tuple(input_shape)}: "
            f"expected {want_shapes}, got {got_shapes}"
        )
