"""nnkit.matmul: same values and derivatives as jnp.matmul; the weight gradient is laid out
as a plain (batched) matmul under vmap and for small weights."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _jaxpr import all_eqns
from jax.test_util import check_grads

from nnkit.matmul import matmul


def _xw(x_shape, w_shape, dtype=jnp.float32):
    kx, kw = jax.random.split(jax.random.key(0))
    return (jax.random.normal(kx, x_shape, dtype), jax.random.normal(kw, w_shape, dtype))


@pytest.mark.parametrize("x_shape", [(3,), (5, 3), (2, 4, 3)])
def test_value_matches_numpy(x_shape):
    x, w = _xw(x_shape, (3, 4))
    y = matmul(x, w)
    chex.assert_shape(y, (*x_shape[:-1], 4))
    np.testing.assert_allclose(y, np.asarray(x) @ np.asarray(w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("x_shape", [(3,), (5, 3), (2, 4, 3)])
def test_derivatives_to_second_order_against_finite_differences(x_shape):
    x, w = _xw(x_shape, (3, 4), jnp.float64) if jax.config.x64_enabled else _xw(x_shape, (3, 4))

    def f(x, w):
        return jnp.sum(jnp.tanh(matmul(x, w)) ** 2)

    check_grads(f, (x, w), order=2, modes=("fwd", "rev"), atol=5e-2, rtol=5e-2)


def test_gradients_equal_jnp_matmul_under_vmap_over_models_and_examples():
    x, w = _xw((6, 3), (3, 4))
    ws = jnp.stack([w, 2 * w, -w])

    def loss(mm):
        return lambda w, x: jnp.sum(jnp.sin(mm(x, w)))

    # vmap over models (shared x), over examples (per-example gradients), and a Hessian
    for args, axes in (((ws, x), (0, None)), ((w, x), (None, 0))):
        got = jax.vmap(jax.grad(loss(matmul)), in_axes=axes)(*args)
        want = jax.vmap(jax.grad(loss(jnp.matmul)), in_axes=axes)(*args)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    h = jax.hessian(loss(matmul))(w, x)
    np.testing.assert_allclose(h, jax.hessian(loss(jnp.matmul))(w, x), rtol=1e-4, atol=1e-4)


def test_input_gradient_only_when_weights_are_constant():
    x, w = _xw((5, 3), (3, 4))
    gx = jax.grad(lambda x: jnp.sum(matmul(x, w) ** 2))(x)
    np.testing.assert_allclose(gx, 2 * (np.asarray(x) @ np.asarray(w)) @ np.asarray(w).T,
                               rtol=1e-5, atol=1e-4)


def test_weight_gradient_is_a_plain_batched_matmul_under_vmap():
    """The point of the module: under vmap over models, XLA (compiled for this backend) gets
    the weight gradient with x^T laid out, not as a dot contracting the rows of both x and
    g (the form jnp.matmul's gradient compiles to, the control here)."""
    x = jnp.ones((8, 32, 16))
    ws = jnp.ones((8, 16, 16))
    rows_of_both = "lhs_contracting_dims={1}, rhs_batch_dims={0}, rhs_contracting_dims={1}"

    def compiled(mm):
        f = jax.vmap(jax.grad(lambda w, x: jnp.sum(mm(x, w) ** 2)))
        return jax.jit(f).lower(ws, x).compile().as_text()

    if jax.default_backend() == "cpu":
        assert rows_of_both in compiled(jnp.matmul)
    assert rows_of_both not in compiled(matmul)
    np.testing.assert_allclose(
        jax.vmap(jax.grad(lambda w, x: jnp.sum(matmul(x, w) ** 2)))(ws, x),
        jax.vmap(jax.grad(lambda w, x: jnp.sum(jnp.matmul(x, w) ** 2)))(ws, x), rtol=1e-5)


@pytest.mark.parametrize("w_shape", [(2, 3, 4), (4, 4), (3,)])
def test_bad_shapes_name_both(w_shape):
    x, _ = _xw((5, 3), (3, 4))
    with pytest.raises(ValueError, match=re.escape(f"x (5, 3) and w {w_shape}")):
        matmul(x, jnp.ones(w_shape))


def _barriers(f, *args):
    """How many optimization barriers the jaxpr of ``f`` holds (nested ones too)."""
    return sum(e.primitive.name == "optimization_barrier"
               for e in all_eqns(jax.make_jaxpr(f)(*args).jaxpr))


@pytest.mark.parametrize("rows,w_shape,laid_out", [
    (32, (16, 16), True), (128, (512, 10), True), (32, (2, 300), True), (64, (128, 128), True),
    (256, (784, 10), True), (32, (256, 128), False), (128, (512, 512), False),
    (512, (16, 16), False), (2048, (784, 16), False)])
def test_x_transpose_laid_out_under_vmap_and_for_small_weights(rows, w_shape, laid_out):
    """The barrier only where it pays: always under vmap; without vmap for small weights
    and batches (their weight gradient then runs in XLA:CPU's matmul library instead of its
    generic dot), not for large weights or many rows (there the copy of x^T costs more
    than it saves)."""
    from nnkit.matmul import lays_out_transpose

    def grad_w(w, x):
        return jax.grad(lambda w: jnp.sum(matmul(x, w) ** 2))(w)

    x, w = _xw((rows, w_shape[0]), w_shape)
    assert lays_out_transpose(rows, *w_shape) is laid_out
    assert _barriers(grad_w, w, x) == int(laid_out)
    # rows are counted over every leading axis of x
    assert _barriers(grad_w, w, x.reshape(2, rows // 2, -1)) == int(laid_out)
    assert _barriers(jax.vmap(grad_w), jnp.stack([w, -w]), jnp.stack([x, x])) == 1
    assert _barriers(jax.vmap(grad_w, in_axes=(None, 0)), w, jnp.stack([x, x])) == 1
    np.testing.assert_allclose(grad_w(w, x), jax.grad(lambda w: jnp.sum((x @ w) ** 2))(w),
                               rtol=1e-4, atol=1e-2)


def test_small_weight_gradient_compiles_to_a_plain_matmul():
    """Without vmap, a small weight's gradient reaches XLA with x^T laid out: no dot
    contracting the rows of both x and g (what jnp.matmul's gradient compiles to on CPU)."""
    x, w = _xw((32, 16), (16, 16))
    rows_of_both = "lhs_contracting_dims={0}, rhs_contracting_dims={0}"

    def compiled(mm):
        f = jax.grad(lambda w, x: jnp.sum(mm(x, w) ** 2))
        return jax.jit(f).lower(w, x).compile().as_text()

    if jax.default_backend() == "cpu":
        assert rows_of_both in compiled(jnp.matmul)
    assert rows_of_both not in compiled(matmul)


@pytest.mark.parametrize("platform,barriers", [("cpu", 1), ("cuda", 0), ("rocm", 0), ("tpu", 0)])
def test_x_transpose_laid_out_only_when_lowered_for_cpu(platform, barriers):
    """The laid-out x^T answers XLA:CPU's dot emitter; lowered for a GPU or TPU (possible
    on any machine) the gradient keeps a plain transpose that XLA may fold into its dot."""
    x, w = _xw((32, 16), (16, 16))

    def grad_w(w, x):
        return jax.grad(lambda w: jnp.sum(matmul(x, w) ** 2))(w)

    for f, args in ((grad_w, (w, x)), (jax.vmap(grad_w), (jnp.stack([w, -w]),
                                                           jnp.stack([x, x])))):
        text = jax.jit(f).trace(*args).lower(lowering_platforms=(platform,)).as_text()
        assert text.count("stablehlo.optimization_barrier") == barriers, platform
