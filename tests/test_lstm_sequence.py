"""The LSTM's whole-sequence path (nnkit.layers.lstm_sequence): the same values and
derivatives as scanning the cell step, and the backward pass laid out as designed (one
matmul per step in the backward loop, the weight gradient one matmul after it)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import jaxprs_in_params
from jax.test_util import check_grads

from nnkit.layers import recurrent as R
from nnkit.layers.lstm_sequence import BACKWARD_UNROLL, lstm_sequence

T, F, H = 5, 3, 4
CELL = R.LSTMCell(H)
SCAN = CELL._replace(sequence=None)  # the same cell without its whole-sequence path


def _params(seed=0):
    p = CELL.init(jax.random.key(seed), F)
    keys = jax.random.split(jax.random.key(seed + 1), 3)
    return {k: 0.7 * jax.random.normal(kk, v.shape)
            for kk, (k, v) in zip(keys, p.items(), strict=True)}


def _xs(batch, seed=2):
    return jax.random.normal(jax.random.key(seed), (*batch, T, F))


def _carry(batch, seed=3):
    kh, kc = jax.random.split(jax.random.key(seed))
    return (jax.random.normal(kh, (*batch, H)), jax.random.normal(kc, (*batch, H)))


def _close(a, b, tol=1e-5):
    chex.assert_trees_all_equal_shapes(a, b)
    chex.assert_trees_all_close(a, b, rtol=tol, atol=tol)


def _loss(cell, params, xs, carry, reverse, outputs):
    (h, c), hs = R.run_cell(cell, params, xs, carry, reverse=reverse, outputs=outputs)
    out = jnp.sum(jnp.sin(3.0 * h)) + jnp.sum(c * c)
    return out + (jnp.sum(jnp.cos(hs) * jnp.arange(hs.size).reshape(hs.shape) / hs.size)
                  if outputs else 0.0)


@pytest.mark.parametrize("batch, reverse, outputs, given_carry", [
    ((), False, True, False),
    ((2,), True, True, True),
    ((2,), False, False, True),
    ((2, 3), True, False, False),
    ((2, 3), False, True, True),
])
def test_values_and_gradients_equal_the_scanned_cell(batch, reverse, outputs, given_carry):
    p, xs = _params(), _xs(batch)
    carry = _carry(batch) if given_carry else None
    got = R.run_cell(CELL, p, xs, carry, reverse=reverse, outputs=outputs)
    want = R.run_cell(SCAN, p, xs, carry, reverse=reverse, outputs=outputs)
    _close(got, want, 1e-6)
    if carry is None:
        carry = CELL.initial_state(batch)
    args = (1, 2, 3)
    g = jax.grad(_loss, argnums=args)(CELL, p, xs, carry, reverse, outputs)
    w = jax.grad(_loss, argnums=args)(SCAN, p, xs, carry, reverse, outputs)
    _close(g, w)


def test_second_order_forward_and_reverse_against_finite_differences():
    p, xs, (h0, c0) = _params(), _xs((2,)), _carry((2,))
    w = jnp.concatenate([p["w_ih"], p["w_hh"]])
    xs_t = jnp.moveaxis(xs, 1, 0)
    for outputs in (True, False):
        def f(w, b, xs_t, h0, c0, outputs=outputs):
            hs, c = lstm_sequence(w, b, xs_t, h0, c0, 1, outputs)
            return jnp.sum(jnp.tanh(hs)) + jnp.sum(c * c)

        check_grads(jax.jit(f), (w, p["b"], xs_t, h0, c0), order=2, modes=("fwd", "rev"),
                    atol=2e-2, rtol=2e-2)


def test_jvp_hessian_vector_and_vmap_equal_the_scanned_cell():
    p, xs = _params(), _xs((2,))
    tangent = jax.tree.map(lambda a: jnp.cos(a), p)

    def f(cell, p):
        return _loss(cell, p, xs, None, False, True)

    _close(jax.jvp(lambda q: f(CELL, q), (p,), (tangent,)),
           jax.jvp(lambda q: f(SCAN, q), (p,), (tangent,)))

    def hvp(cell):
        return jax.jvp(jax.grad(lambda q: f(cell, q)), (p,), (tangent,))[1]

    _close(hvp(CELL), hvp(SCAN), 1e-4)

    stacked = jax.tree.map(lambda *a: jnp.stack(a), _params(0), _params(5), _params(9))
    g = jax.vmap(jax.grad(lambda q: f(CELL, q)))(stacked)
    w = jax.vmap(jax.grad(lambda q: f(SCAN, q)))(stacked)
    _close(g, w)


def test_zero_length_sequence_falls_back_to_the_scan():
    p, xs = _params(), jnp.zeros((2, 0, F))
    (h, c), hs = R.run_cell(CELL, p, xs)
    chex.assert_shape((h, c, hs), ((2, H), (2, H), (2, 0, H)))
    np.testing.assert_array_equal(h, 0.0)


def _scan_bodies(jaxpr):
    """Every scan in ``jaxpr`` (nested too) as ``(unroll, body jaxpr)``."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            out.append((eqn.params["unroll"], eqn.params["jaxpr"].jaxpr))
        for sub in jaxprs_in_params(eqn.params):
            out.extend(_scan_bodies(sub))
    return out


def _dots(jaxpr, nested=False):
    n = 0
    for eqn in jaxpr.eqns:
        n += eqn.primitive.name == "dot_general"
        if nested:
            n += sum(_dots(sub, True) for sub in jaxprs_in_params(eqn.params))
    return n


def test_backward_pass_has_one_matmul_per_step_and_the_weight_gradient_after_the_loop():
    p, xs = _params(), _xs((8,))

    def loss(p):
        return _loss(CELL, p, xs, None, False, False)

    jaxpr = jax.make_jaxpr(jax.grad(loss))(p).jaxpr
    scans = _scan_bodies(jaxpr)
    assert len(scans) == 2, scans  # the forward loop and the backward loop
    (_, fwd_body), (bwd_unroll, bwd_body) = scans
    assert bwd_unroll == BACKWARD_UNROLL
    assert _dots(fwd_body, nested=True) == 1  # [x_t, h] @ W
    assert _dots(bwd_body, nested=True) == 1  # dz_t @ W_hh^T
    # outside the loops: the weight gradient dZ^T A, one matmul contracting time and batch
    # of both (T, B, .) operands
    top = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
    wgrad = [e for e in top
             if e.params["dimension_numbers"][0] == ((0, 1), (0, 1))
             and all(v.aval.shape[:2] == (T, 8) for v in e.invars)]
    assert len(wgrad) == 1, [(e.params["dimension_numbers"], [v.aval.shape for v in e.invars])
                             for e in top]

    # the scanned cell, for contrast, keeps the weight gradient inside its backward loop
    jaxpr_scan = jax.make_jaxpr(jax.grad(lambda q: _loss(SCAN, q, xs, None, False, False)))(p)
    (_, _), (_, bwd_scan) = _scan_bodies(jaxpr_scan.jaxpr)
    assert _dots(bwd_scan, nested=True) >= 2


def test_a_larger_unroll_unrolls_the_backward_loop_too_with_the_same_gradient():
    p, xs = _params(), _xs((2,))

    def grad(unroll):
        def loss(q):
            (h, c), _ = R.run_cell(CELL, q, xs, None, unroll=unroll, outputs=False)
            return jnp.sum(jnp.sin(3.0 * h)) + jnp.sum(c * c)
        return jax.grad(loss)(p), jax.make_jaxpr(jax.grad(loss))(p).jaxpr

    g1, j1 = grad(1)
    g4, j4 = grad(4)
    assert [u for u, _ in _scan_bodies(j1)] == [1, BACKWARD_UNROLL]
    assert [u for u, _ in _scan_bodies(j4)] == [4, 4]  # forward, backward
    _close(g1, g4)
