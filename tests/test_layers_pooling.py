"""Pooling layers against NumPy loops and hand values; fast path == reduce_window path."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _jaxpr import all_eqns

import nnkit
from nnkit.layers import (
    AvgPool1D,
    AvgPool2D,
    GlobalAvgPool,
    GlobalMaxPool,
    MaxPool1D,
    MaxPool2D,
)
from nnkit.layers import pooling as P


def naive_pool(x, window, stride, pads, op, count_include_pad=False):
    """Loop pooling in float64: the window's max/mean over real cells (or the full window)."""
    x = np.asarray(x, np.float64)
    nd = len(window)
    spatial = x.shape[1:-1]
    out = [(spatial[i] + sum(pads[i]) - window[i]) // stride[i] + 1 for i in range(nd)]
    y = np.zeros((x.shape[0], *out, x.shape[-1]))
    for o in itertools.product(*(range(m) for m in out)):
        lo = [o[i] * stride[i] - pads[i][0] for i in range(nd)]
        idx = tuple(
            slice(max(lo[i], 0), min(lo[i] + window[i], spatial[i])) for i in range(nd)
        )
        win = x[(slice(None), *idx, slice(None))]
        axes = tuple(range(1, nd + 1))
        if op == "max":
            y[(slice(None), *o, slice(None))] = win.max(axis=axes)
        else:
            denom = np.prod(window) if count_include_pad else np.prod(win.shape[1:-1])
            y[(slice(None), *o, slice(None))] = win.sum(axis=axes) / denom
    return y


CASES = [
    # (layer factory, input shape, window, stride, explicit pads)
    (lambda: MaxPool2D(2), (4, 6, 2), (2, 2), (2, 2), ((0, 0), (0, 0))),  # fast path
    (lambda: MaxPool2D(2), (5, 7, 1), (2, 2), (2, 2), ((0, 0), (0, 0))),  # fast path, crop
    (lambda: MaxPool2D(3, 2), (7, 6, 2), (3, 3), (2, 2), ((0, 0), (0, 0))),  # overlapping
    (lambda: MaxPool2D(3, 2, "SAME"), (5, 6, 2), (3, 3), (2, 2), ((1, 1), (0, 1))),
    (lambda: MaxPool2D((2, 3), (1, 2), 1), (4, 5, 1), (2, 3), (1, 2), ((1, 1), (1, 1))),
    (lambda: AvgPool2D(2), (4, 6, 2), (2, 2), (2, 2), ((0, 0), (0, 0))),
    (lambda: AvgPool2D(3, 2, "SAME"), (5, 6, 2), (3, 3), (2, 2), ((1, 1), (0, 1))),
    (lambda: AvgPool2D(3, 1, "SAME"), (4, 4, 1), (3, 3), (1, 1), ((1, 1), (1, 1))),
    (lambda: MaxPool1D(3), (10, 2), (3,), (3,), ((0, 0),)),
    (lambda: AvgPool1D(3, 2, "SAME"), (6, 2), (3,), (2,), ((0, 1),)),
]


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_pool_matches_numpy(case):
    factory, shape, window, stride, pads = case
    layer = factory()
    out_shape, _, _ = layer.init(jax.random.key(0), shape)
    x = jax.random.normal(jax.random.key(1), (2, *shape))
    y, _ = jax.jit(layer.apply)({}, {}, x)
    op = "max" if layer.kind.startswith("max") else "avg"
    want = naive_pool(x, window, stride, pads, op)
    assert y.shape == (2, *out_shape) == want.shape
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)


def test_fast_path_equals_reduce_window():
    x = jax.random.normal(jax.random.key(0), (2, 7, 9, 3))
    window = (2, 3)
    pads = ((0, 0), (0, 0))
    for reducer, generic in (
        (jnp.max, lambda x: jax.lax.reduce_window(
            x, -jnp.inf, jax.lax.max, (1, 2, 3, 1), (1, 2, 3, 1), "VALID")),
        (jnp.mean, lambda x: jax.lax.reduce_window(
            x, 0.0, jax.lax.add, (1, 2, 3, 1), (1, 2, 3, 1), "VALID") / 6),
    ):
        assert P._is_blocked(window, window, pads)
        np.testing.assert_allclose(P._blocked(x, window, reducer), generic(x), rtol=1e-6)


def test_avg_pool_same_padding_counted_vs_not():
    """3x3 window, stride 1, SAME on a 3x3 input of ones then a ramp; corner by hand."""
    ones = jnp.ones((1, 3, 3, 1))
    y_excl, _ = AvgPool2D(3, 1, "SAME").apply({}, {}, ones)
    y_incl, _ = AvgPool2D(3, 1, "SAME", count_include_pad=True).apply({}, {}, ones)
    # Not counted: every window holds only ones -> 1. Counted: corner 4/9, edge 6/9, centre 1.
    np.testing.assert_allclose(y_excl[0, :, :, 0], np.ones((3, 3)), rtol=1e-6)
    np.testing.assert_allclose(
        y_incl[0, :, :, 0],
        [[4 / 9, 6 / 9, 4 / 9], [6 / 9, 1.0, 6 / 9], [4 / 9, 6 / 9, 4 / 9]],
        rtol=1e-6,
    )
    x = jnp.arange(9.0).reshape(1, 3, 3, 1)  # [[0 1 2] [3 4 5] [6 7 8]]
    # top-left window covers real cells {0, 1, 3, 4}: sum 8 -> 8/4 = 2 (excl), 8/9 (incl).
    assert float(AvgPool2D(3, 1, "SAME").apply({}, {}, x)[0][0, 0, 0, 0]) == pytest.approx(2.0)
    y_incl = AvgPool2D(3, 1, "SAME", count_include_pad=True).apply({}, {}, x)[0]
    assert float(y_incl[0, 0, 0, 0]) == pytest.approx(8 / 9)


def test_valid_counts_closed_form():
    # n=5, window 3, stride 2, pads (1, 1): windows [-1, 2), [1, 4), [3, 6) -> 2, 3, 2 cells.
    np.testing.assert_array_equal(P._valid_counts((5,), (3,), (2,), ((1, 1),)), [2, 3, 2])
    np.testing.assert_array_equal(
        P._valid_counts((3, 3), (3, 3), (1, 1), ((1, 1), (1, 1))),
        [[4, 6, 4], [6, 9, 6], [4, 6, 4]],
    )


def test_max_pool_hand_values():
    x = jnp.array([[1.0, 5.0, 2.0, 0.0], [3.0, -1.0, 7.0, 4.0]]).reshape(1, 2, 4, 1)
    y, _ = MaxPool2D(2).apply({}, {}, x)
    np.testing.assert_array_equal(y[0, :, :, 0], [[5.0, 7.0]])
    g = jax.grad(lambda x: MaxPool2D(2).apply({}, {}, x)[0].sum())(x)
    np.testing.assert_array_equal(g[0, :, :, 0], [[0, 1, 0, 0], [0, 0, 1, 0]])


def test_global_pools():
    x = jax.random.normal(jax.random.key(0), (2, 3, 4, 5))
    out, _, _ = GlobalAvgPool().init(None, (3, 4, 5))
    assert out == (5,)
    np.testing.assert_allclose(GlobalAvgPool().apply({}, {}, x)[0], x.mean(axis=(1, 2)), 1e-6)
    np.testing.assert_allclose(GlobalMaxPool().apply({}, {}, x)[0], x.max(axis=(1, 2)))
    x1 = jax.random.normal(jax.random.key(1), (2, 7, 3))  # 1-D: over W
    np.testing.assert_allclose(GlobalAvgPool().apply({}, {}, x1)[0], x1.mean(axis=1), 1e-6)
    with pytest.raises(nnkit.ShapeError, match="global_avg_pool"):
        GlobalAvgPool().init(None, (5,))


def test_pool_errors():
    with pytest.raises(nnkit.ShapeError, match=r"mp: window \(3, 3\) is larger.*\(2, 5\)"):
        MaxPool2D(3, name="mp").init(None, (2, 5, 1))
    with pytest.raises(nnkit.ShapeError, match=r"max_pool2d: expected input shape \(H, W, C\)"):
        MaxPool2D(2).init(None, (4, 4))
    with pytest.raises(nnkit.ShapeError, match="padding"):
        AvgPool1D(2, padding=2).init(None, (6, 1))  # a window of padding only
    with pytest.raises(ValueError, match="window"):
        MaxPool2D(0)
    with pytest.raises(ValueError, match="padding"):
        AvgPool2D(2, padding="FULL")


def test_max_pool_ties_split_evenly_on_the_fast_path():
    # windows (row-major): [3 3; 1 3] -> 3 maxima share 2; [0 2; 2 2] -> 3 maxima share 5
    x = jnp.array([[3.0, 3.0, 0.0, 2.0], [1.0, 3.0, 2.0, 2.0]]).reshape(1, 2, 4, 1)
    g = jax.grad(lambda x: (MaxPool2D(2).apply({}, {}, x)[0] * jnp.array([2.0, 5.0]).reshape(
        1, 1, 2, 1)).sum())(x)
    np.testing.assert_allclose(g[0, :, :, 0], [[2 / 3, 2 / 3, 0, 5 / 3], [0, 2 / 3, 5 / 3, 5 / 3]],
                               rtol=1e-6)
    # the reduce_window path (overlapping windows) sends a tie's gradient to one cell
    g_rw = jax.grad(lambda x: MaxPool2D(2, 1).apply({}, {}, x)[0].sum())(x)
    assert float(g_rw.sum()) == 3.0 and set(np.unique(g_rw).tolist()) <= {0.0, 1.0, 2.0, 3.0}
    # crop: the last (unpooled) element gets 0
    x1 = jnp.array([1.0, 2.0, 1.0, 4.0]).reshape(1, 4, 1)
    g1 = jax.grad(lambda x: MaxPool1D(3).apply({}, {}, x)[0].sum())(x1)
    np.testing.assert_array_equal(g1[0, :, 0], [0, 1, 0, 0])


@pytest.mark.parametrize("window,shape", [((2, 2), (2, 5, 7, 3)), ((2, 3), (1, 4, 6, 2)),
                                          ((2,), (2, 9, 2))])
def test_max_pool_fast_path_derivatives(window, shape):
    from jax.test_util import check_grads

    layer = (MaxPool2D if len(window) == 2 else MaxPool1D)(window)
    x = jax.random.normal(jax.random.key(3), shape)  # no ties: the derivative is unique
    f = lambda x: layer.apply({}, {}, x)[0]  # noqa: E731
    check_grads(f, (x,), order=2, modes=("fwd", "rev"), eps=1e-3)
    # the same derivative as the generic reduce_window path
    generic = lambda x: jax.lax.reduce_window(  # noqa: E731
        x, -jnp.inf, jax.lax.max, (1, *window, 1), (1, *window, 1), "VALID")
    ct = jax.random.normal(jax.random.key(4), f(x).shape)
    np.testing.assert_array_equal(jax.vjp(f, x)[1](ct)[0], jax.vjp(generic, x)[1](ct)[0])
    t = jax.random.normal(jax.random.key(5), shape)
    np.testing.assert_array_equal(jax.jvp(f, (x,), (t,))[1], jax.jvp(generic, (x,), (t,))[1])


def test_max_pool_integer_input():
    x = jnp.arange(16, dtype=jnp.int32).reshape(1, 4, 4, 1)
    y, _ = MaxPool2D(2).apply({}, {}, x)
    assert y.dtype == jnp.int32
    np.testing.assert_array_equal(y[0, :, :, 0], [[5, 7], [13, 15]])


def _blocked_max_reference(x, out_shape):
    """The fast path's windows reduced by ``jnp.max`` (JAX's rule: ties split evenly)."""
    out = out_shape[1:-1]
    if len(out) == 0:  # global pooling
        return jnp.max(x, axis=tuple(range(1, x.ndim - 1)))
    w = x.shape[1] // out[0]
    x = x[(slice(None), *(slice(0, o * w) for o in out))]
    split = [x.shape[0], *(d for o in out for d in (o, w)), x.shape[-1]]
    return jnp.max(x.reshape(split), axis=tuple(2 + 2 * i for i in range(len(out))))


@pytest.mark.parametrize("make,shape", [(lambda: MaxPool2D(2), (3, 4, 6, 2)),
                                        (lambda: MaxPool1D(3), (2, 7, 3)),
                                        (lambda: GlobalMaxPool(), (2, 3, 4, 2))])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_max_pool_derivative_is_jnp_max_rule_with_integer_tie_counts(make, shape, dtype):
    layer = make()
    x = jax.random.randint(jax.random.key(0), shape, 0, 3).astype(dtype)  # many ties
    f = lambda x: layer.apply({}, {}, x)[0]  # noqa: E731
    y = f(x)
    ref = lambda x: _blocked_max_reference(x, y.shape)  # noqa: E731
    np.testing.assert_array_equal(y, ref(x))
    ct = jax.random.normal(jax.random.key(1), y.shape).astype(dtype)
    np.testing.assert_array_equal(jax.vjp(f, x)[1](ct)[0], jax.vjp(ref, x)[1](ct)[0])
    t = jax.random.normal(jax.random.key(2), shape).astype(dtype)
    # the JVP sums tied tangents: summation order may differ by a rounding
    tol = 1e-6 if dtype == jnp.float32 else 1e-2
    np.testing.assert_allclose(jax.jvp(f, (x,), (t,))[1].astype(np.float32),
                               jax.jvp(ref, (x,), (t,))[1].astype(np.float32), rtol=tol, atol=tol)
    per_example = lambda g: jax.vmap(jax.grad(lambda x: (g(x[None]) * ct[:1]).sum()))(x)  # noqa: E731
    np.testing.assert_array_equal(per_example(f), per_example(ref))
    # the ties are counted by an integer sum (a float one goes to YNNPACK on CPU: slow)
    jaxpr = jax.make_jaxpr(lambda x, ct: jax.vjp(f, x)[1](ct))(x, ct).jaxpr
    sums = [e.outvars[0].aval.dtype for e in all_eqns(jaxpr) if e.primitive.name == "reduce_sum"]
    assert sums and all(jnp.issubdtype(d, jnp.integer) for d in sums), sums
