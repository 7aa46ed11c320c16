"""Conv1D / Conv2D: values against a naive NumPy loop, im2col == xla, shapes, errors, init."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnkit
from nnkit.layers import Conv1D, Conv2D, Flatten
from nnkit.layers import conv as conv_mod


def naive_conv(x, w, stride, pads, dilation, groups):
    """Loop-by-loop cross-correlation in float64 (the hand truth).

    ``x (N, *spatial, C)``, ``w (*k, C // groups, F)``:
    ``y[n, o, f] = sum_{t, c} x_pad[n, o * stride + t * dilation, g(f) * Cg + c] * w[t, c, f]``.
    """
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    nd = w.ndim - 2
    x = np.pad(x, ((0, 0), *pads, (0, 0)))
    kernel, cg, f = w.shape[:nd], w.shape[-2], w.shape[-1]
    fg = f // groups
    out = [
        (x.shape[1 + i] - (kernel[i] - 1) * dilation[i] - 1) // stride[i] + 1 for i in range(nd)
    ]
    y = np.zeros((x.shape[0], *out, f))
    for n in range(x.shape[0]):
        for o in itertools.product(*(range(m) for m in out)):
            for fo in range(f):
                g = fo // fg
                acc = 0.0
                for t in itertools.product(*(range(k) for k in kernel)):
                    pos = tuple(o[i] * stride[i] + t[i] * dilation[i] for i in range(nd))
                    for c in range(cg):
                        acc += x[(n, *pos, g * cg + c)] * w[(*t, c, fo)]
                y[(n, *o, fo)] = acc
    return y


CONFIGS_2D = [
    # (input (H, W, C), features, kernel, stride, padding, dilation, groups, expected pads)
    ((5, 5, 2), 3, 3, 1, "SAME", 1, 1, ((1, 1), (1, 1))),
    # SAME, stride 2: out = ceil(n / 2) = 3; total pad = (3 - 1) * 2 + k - n, extra on the high side
    ((6, 5, 2), 2, (3, 2), 2, "SAME", 1, 1, ((0, 1), (0, 1))),
    ((6, 6, 1), 2, 2, 1, "VALID", 2, 1, ((0, 0), (0, 0))),
    ((5, 4, 2), 2, 3, (2, 1), ((1, 0), (2, 1)), 1, 1, ((1, 0), (2, 1))),
    ((4, 4, 4), 4, 2, 1, 1, 1, 2, ((1, 1), (1, 1))),
    ((4, 5, 3), 6, 3, 2, "SAME", 1, 3, ((0, 1), (1, 1))),  # depthwise, multiplier 2
]


# im2col and toeplitz on every config, xla on two (test_impls_equal_xla_* ties the impls
# together, gradients included).
NAIVE_PARAMS = [
    pytest.param(cfg, impl, id=f"cfg{i}-{impl}")
    for i, cfg in enumerate(CONFIGS_2D)
    for impl in ("im2col", "toeplitz", "xla")
    if impl != "xla" or i in (1, 5)
]


@pytest.mark.parametrize("cfg,impl", NAIVE_PARAMS)
def test_conv2d_matches_naive_loop(cfg, impl):
    shape, feats, k, s, pad, d, g, pads = cfg
    layer = Conv2D(feats, k, stride=s, padding=pad, dilation=d, groups=g, impl=impl)
    out_shape, params, _ = layer.init(jax.random.key(1), shape)
    x = jax.random.normal(jax.random.key(2), (2, *shape))
    y, _ = jax.jit(layer.apply)(params, {}, x)
    kk = (k, k) if isinstance(k, int) else k
    ss = (s, s) if isinstance(s, int) else s
    want = naive_conv(x, params["w"], ss, pads, (d, d), g) + np.asarray(params["b"])
    assert y.shape == (2, *out_shape) == want.shape
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    assert params["w"].shape == (*kk, shape[-1] // g, feats)


@pytest.mark.parametrize("impl", ["xla", "im2col", "toeplitz"])
def test_conv1d_matches_naive_loop(impl):
    layer = Conv1D(3, 3, stride=2, dilation=2, padding=((2, 1),), impl=impl)
    out_shape, params, _ = layer.init(jax.random.key(1), (9, 2))
    x = jax.random.normal(jax.random.key(2), (2, 9, 2))
    y, _ = jax.jit(layer.apply)(params, {}, x)
    want = naive_conv(x, params["w"], (2,), ((2, 1),), (2,), 1) + np.asarray(params["b"])
    # out = (9 + 3 - ((3 - 1) * 2 + 1)) // 2 + 1 = 4
    assert out_shape == (4, 3) and y.shape == (2, 4, 3)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_conv_hand_value():
    """A 2x2 all-ones kernel on a 3x3 ramp, VALID: each output is a 2x2 window sum."""
    layer = Conv2D(1, 2, padding="VALID", use_bias=False, w_init="ones")
    _, params, _ = layer.init(jax.random.key(0), (3, 3, 1))
    x = jnp.arange(9.0).reshape(1, 3, 3, 1)  # [[0 1 2] [3 4 5] [6 7 8]]
    y, _ = layer.apply(params, {}, x)
    np.testing.assert_array_equal(y[0, :, :, 0], [[8.0, 12.0], [20.0, 24.0]])


IMPL_CONFIGS = [
    dict(kernel_size=3),
    dict(kernel_size=(2, 3), stride=(2, 1), padding="VALID"),
    dict(kernel_size=3, dilation=2, padding=((2, 0), (1, 1))),
    dict(kernel_size=3, stride=2, groups=2),
    dict(kernel_size=2, groups=4),
    dict(kernel_size=1),
]


@pytest.mark.parametrize("kw", IMPL_CONFIGS, ids=[str(i) for i in range(len(IMPL_CONFIGS))])
def test_impls_equal_xla_outputs_and_grads(kw):
    shape = (6, 5, 4)
    x = jax.random.normal(jax.random.key(3), (2, *shape))
    results = {}
    for impl in ("xla", "im2col", "toeplitz"):
        layer = Conv2D(4, impl=impl, **kw)
        _, params, _ = layer.init(jax.random.key(4), shape)

        def run(p, x, layer=layer):
            def loss(p, x):
                y, _ = layer.apply(p, {}, x)
                return jnp.sum(jnp.sin(y)), y  # non-linear loss: a non-constant cotangent

            (_, y), grads = jax.value_and_grad(loss, (0, 1), has_aux=True)(p, x)
            return y, grads

        results[impl] = jax.jit(run)(params, x)
    for impl in ("im2col", "toeplitz"):
        for a, b in zip(
            jax.tree_util.tree_leaves(results["xla"]),
            jax.tree_util.tree_leaves(results[impl]),
            strict=True,
        ):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=impl)


@pytest.mark.parametrize("platform", ["cpu", "cuda", "rocm", "tpu"])
def test_auto_impl_follows_the_platform_lowered_for(platform):
    """'auto' is decided when lowering, for the platform compiled for: a CPU gets the
    matmul forms (no convolution op), a GPU or TPU XLA's convolution (cuDNN's there), even
    from a CPU process; the compiled CPU program keeps no conditional."""
    from nnkit.models import lenet5

    m = lenet5()
    _, p, s = m.init(jax.random.key(0), (28, 28, 1))
    x = jnp.ones((128, 28, 28, 1))
    f = jax.jit(jax.grad(lambda p: jnp.sum(m.apply(p, s, x)[0] ** 2)))
    text = f.trace(p).lower(lowering_platforms=(platform,)).as_text()
    convs = text.count("stablehlo.convolution")
    if platform == "cpu":
        assert convs == 0
        assert "conditional" not in f.lower(p).compile().as_text()
    else:  # both convolutions' forward and kernel gradient, the second's input gradient
        assert convs == 5, convs


def test_auto_impl_choice():
    pick = conv_mod._pick_impl  # the choice when lowered for a CPU
    assert pick("auto", (5, 5), 1) == "im2col"  # no shapes given: by the window alone
    assert pick("auto", (3, 3), 8) == "im2col"  # grouped too (XLA's collapses inside scan)
    assert pick("auto", (7, 7), 1) == "im2col"
    assert pick("auto", (11, 11), 1) == "xla"  # big kernels, no shapes: patches too large
    assert pick("xla", (3, 3), 1) == "xla" and pick("im2col", (3, 3), 4) == "im2col"

    def auto(x_shape, w_shape, pads, groups=1, stride=(1, 1)):
        return pick("auto", w_shape[:2], groups, x_shape, w_shape, stride, pads, (1, 1))

    # LeNet-5 with blocks of 4 and 5 output columns (spans 8 and 9): T is (5 * 8 * 1, 4 * 6)
    # and (5 * 9 * 6, 5 * 16), at 7 * 4 * 8 / (28 * 5) = 1.6 and 2 * 5 * 9 / (10 * 5) = 1.8
    # times im2col's multiply-adds; patch matrices 2.5 M and 1.9 M elements
    assert auto((128, 28, 28, 1), (5, 5, 1, 6), ((2, 2), (2, 2))) == "toeplitz"
    assert auto((128, 14, 14, 6), (5, 5, 6, 16), ((0, 0), (0, 0))) == "toeplitz"
    assert conv_mod.toeplitz_size((1, 28, 28, 1), (5, 5, 1, 6), (1, 1), ((2, 2),) * 2,
                                  (1, 1)) == (5 * 8 * 1 * 4 * 6, pytest.approx(1.6))
    assert conv_mod.toeplitz_size((1, 14, 14, 6), (5, 5, 6, 16), (1, 1), ((0, 0),) * 2,
                                  (1, 1)) == (5 * 9 * 6 * 5 * 16, pytest.approx(1.8))
    # wider layers, bigger kernels and groups too while T is small: 3 * 6 * 64 * 4 * 64 = 295 k
    assert auto((8, 32, 32, 64), (3, 3, 64, 64), ((1, 1), (1, 1))) == "toeplitz"
    assert auto((8, 64, 64, 3), (11, 11, 3, 8), ((5, 5), (5, 5))) == "toeplitz"
    assert auto((64, 28, 28, 4), (3, 3, 2, 4), ((1, 1), (1, 1)), groups=2) == "toeplitz"
    # T over TOEPLITZ_MAX_ELEMENTS: 3 * 6 * 256 * 4 * 256 = 4.7 M
    assert auto((8, 16, 16, 256), (3, 3, 256, 256), ((1, 1), (1, 1))) == "im2col"
    # 1x1: a plain matmul, im2col
    assert auto((64, 16, 16, 32), (1, 1, 32, 32), ((0, 0), (0, 0))) == "im2col"
    # small batches (and vmap's batch of one, per-example gradients): im2col's patch matrix
    # is under TOEPLITZ_MIN_PATCHES (200 000), so the banded matrix does not pay:
    # 25 * 8 * 784 = 157 k at batch 8, 25 * 784 = 19.6 k per example
    assert auto((8, 28, 28, 1), (5, 5, 1, 6), ((2, 2), (2, 2))) == "im2col"
    assert auto((1, 28, 28, 1), (5, 5, 1, 6), ((2, 2), (2, 2))) == "im2col"
    assert auto((1, 32, 32, 3), (3, 3, 3, 16), ((1, 1), (1, 1))) == "im2col"
    assert conv_mod.im2col_size((8, 28, 28, 1), (5, 5, 1, 6), (1, 1), ((2, 2),) * 2,
                                (1, 1)) == 25 * 8 * 28 * 28
    assert auto((16, 28, 28, 1), (5, 5, 1, 6), ((2, 2), (2, 2))) == "toeplitz"  # 314 k
    assert auto((8, 28, 28, 4), (3, 3, 2, 4), ((1, 1), (1, 1)), groups=2) == "im2col"


def test_functional_conv_same_as_layer():
    layer = Conv2D(3, 3, stride=2)
    _, params, _ = layer.init(jax.random.key(0), (5, 5, 2))
    x = jax.random.normal(jax.random.key(1), (2, 5, 5, 2))
    y = conv_mod.conv(x, params["w"], stride=2, padding="SAME") + params["b"]
    np.testing.assert_allclose(y, layer.apply(params, {}, x)[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "n,k,s,d,pad,want",
    [
        (28, 5, 1, 1, "SAME", 28),
        (28, 5, 1, 1, "VALID", 24),
        (7, 3, 2, 1, "SAME", 4),  # ceil(7 / 2)
        (7, 3, 2, 2, "VALID", 2),  # (7 - 5) // 2 + 1
        (7, 3, 3, 1, 2, 3),  # (7 + 4 - 3) // 3 + 1
    ],
)
def test_output_sizes(n, k, s, d, pad, want):
    out, params, _ = Conv1D(2, k, stride=s, dilation=d, padding=pad).init(
        jax.random.key(0), (n, 1)
    )
    assert out == (want, 2)


def test_default_init_bounds():
    """w = sqrt(6 / fan_in) U[-1, 1], b = U[-1, 1] / sqrt(fan_in), fan_in = kh * kw * C_in."""
    _, params, _ = Conv2D(64, (3, 5), groups=2).init(jax.random.key(0), (8, 8, 6))
    fan_in = 3 * 5 * 3  # groups=2: each output sees C_in / 2 = 3 channels
    w, b = np.asarray(params["w"]), np.asarray(params["b"])
    assert w.shape == (3, 5, 3, 64) and b.shape == (64,)
    bound = math.sqrt(6 / fan_in)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound  # std of U[-a, a] is a / sqrt(3)
    assert np.abs(b).max() <= 1 / math.sqrt(fan_in)


def test_wrong_rank_error_names_layer_and_shapes():
    with pytest.raises(nnkit.ShapeError) as e:
        nnkit.serial(Conv2D(4, 3, name="conv_a")).init(jax.random.key(0), (28, 28))
    msg = str(e.value)
    assert "conv_a" in msg and "(28, 28)" in msg and "(H, W, C)" in msg
    with pytest.raises(nnkit.ShapeError, match=r"conv2d_0: .*\(H, W, C\).*got \(32,\)"):
        nnkit.serial(Flatten(), Conv2D(4, 3)).init(jax.random.key(0), (4, 4, 2))
    with pytest.raises(nnkit.ShapeError, match=r"conv1d: .*\(W, C\).*\(5, 5, 1\)"):
        Conv1D(2, 3).init(jax.random.key(0), (5, 5, 1))


def test_kernel_larger_than_padded_input():
    with pytest.raises(nnkit.ShapeError) as e:
        Conv2D(2, 5, padding="VALID", name="big").init(jax.random.key(0), (3, 4, 1))
    msg = str(e.value)
    assert msg.startswith("big:") and "(5, 5)" in msg and "(3, 4)" in msg
    with pytest.raises(nnkit.ShapeError, match=r"dilated to \(5,\)"):
        Conv1D(2, 3, dilation=2, padding=0).init(jax.random.key(0), (4, 1))
    Conv1D(2, 3, dilation=2, padding=1).init(jax.random.key(0), (4, 1))  # 4 + 2 >= 5: fine


def test_group_and_argument_errors():
    with pytest.raises(nnkit.ShapeError, match=r"dw: input channels 3 .* groups=2"):
        Conv2D(4, 3, groups=2, name="dw").init(jax.random.key(0), (5, 5, 3))
    with pytest.raises(nnkit.ShapeError, match="features=3 is not divisible by groups=2"):
        Conv2D(3, 3, groups=2)
    with pytest.raises(ValueError, match="impl"):
        Conv2D(3, 3, impl="fft")
    with pytest.raises(ValueError, match="padding"):
        Conv2D(3, 3, padding="FULL")
    with pytest.raises(ValueError, match="kernel_size"):
        Conv2D(3, (3, 3, 3))
    with pytest.raises(ValueError, match="stride"):
        Conv2D(3, 3, stride=0)


def test_apply_rank_and_channel_errors():
    layer = Conv2D(2, 3, name="c")
    _, params, _ = layer.init(jax.random.key(0), (5, 5, 2))
    with pytest.raises(nnkit.ShapeError, match=r"c: expected x of shape \(batch, H, W, C\)"):
        layer.apply(params, {}, jnp.ones((5, 5, 2)))  # forgot the batch axis
    with pytest.raises(nnkit.ShapeError, match="3 channels"):
        layer.apply(params, {}, jnp.ones((1, 5, 5, 3)))


def test_toeplitz_block_hand_values():
    """``blocks * span * (wb + 5)`` by hand: LeNet-5's layers, a width of one, a stride."""
    tb = conv_mod.toeplitz_block
    assert conv_mod.TOEPLITZ_COPY_COST == 5
    # out 28, kernel 5: wb 2 -> 14 * 6 * 7 = 588, 3 -> 10 * 7 * 8 = 560, 4 -> 7 * 8 * 9 = 504,
    # 5 -> 6 * 9 * 10 = 540, 7 -> 4 * 11 * 12 = 528, 28 -> 1 * 32 * 33 = 1056
    assert tb(28, 5) == 4
    # out 10, kernel 5: wb 2 -> 210, 3 -> 224, 4 -> 216, 5 -> 2 * 9 * 10 = 180, 10 -> 210
    assert tb(10, 5) == 5
    assert tb(1, 5) == 1 and tb(2, 3) == 2
    # out 7, kernel 3, stride 2: span 2 * wb + 1; wb 2 -> 4 * 5 * 7 = 140,
    # 3 -> 3 * 7 * 8 = 168, 4 -> 2 * 9 * 9 = 162, 7 -> 1 * 15 * 12 = 180
    assert tb(7, 3, 2) == 2


@pytest.mark.parametrize("shape,k,stride,dil,pads", [
    ((2, 6, 11, 3), (3, 3), (1, 1), (1, 1), ((1, 1), (1, 1))),
    ((2, 7, 13, 2), (2, 3), (2, 2), (1, 1), ((0, 0), (0, 1))),
    ((1, 6, 12, 2), (3, 2), (1, 1), (2, 3), ((1, 0), (2, 1))),
    ((2, 9, 2), (3,), (1,), (1,), ((1, 1),)),
])
def test_conv_toeplitz_block_widths_match_naive(shape, k, stride, dil, pads):
    """Block widths from one column to the whole row, dividing the output width or not
    (the last block cropped): the naive loop's values and XLA's gradients."""
    w = jax.random.normal(jax.random.key(3), (*k, shape[-1], 4))
    x = jax.random.normal(jax.random.key(4), shape)
    want = naive_conv(x, w, stride, pads, dil, 1)
    out_w = want.shape[-2]

    def loss(x, w, fn):
        return (fn(x, w) ** 2).sum()

    ref = jax.grad(loss, (0, 1))(x, w, lambda x, w: conv_mod.conv_xla(x, w, stride, pads, dil))
    for wb in sorted({1, 2, 3, out_w - 1, out_w} - {0}):
        fn = lambda x, w, wb=wb: conv_mod.conv_toeplitz(x, w, stride, pads, dil, block=wb)  # noqa: E731
        y, grads = jax.jit(lambda x, w, fn=fn: (fn(x, w), jax.grad(loss, (0, 1))(x, w, fn)))(x, w)
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5, err_msg=f"block {wb}")
        for g, r in zip(grads, ref, strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4, err_msg=f"block {wb}")


@pytest.mark.parametrize("block", [0, -1, 12, 2.0, True])
def test_conv_toeplitz_rejects_a_block_width_outside_the_output_row(block):
    """The output row of this input is 11 columns wide: a block of 0, 12 or a non-integer
    width is an error naming the range, not silently clamped."""
    x, w = jnp.zeros((1, 5, 13, 2)), jnp.zeros((3, 3, 2, 4))
    with pytest.raises(ValueError, match=r"block must be an int in 1\.\.11"):
        conv_mod.conv_toeplitz(x, w, (1, 1), ((0, 0), (0, 0)), (1, 1), block=block)
