"""Every layer in nnkit.layers, and the combinators, pass the conformance harness."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from conformance import check_layer

import nnkit
from nnkit import layers as L
from nnkit.core import parallel

# (id, factory, input_shape, check_layer kwargs). Factories so each test builds a fresh model.
# Layers whose apply ignores `train` are checked with train=False only (the same code path);
# those that use it (dropout, batch norm, models holding them) in both modes.
BOTH = {"train_modes": (False, True)}
ACTIVATIONS = [
    "Step", "Sigmoid", "Tanh", "Relu", "LeakyRelu", "Elu", "Gelu", "Softplus", "Silu",
    "Softmax", "LogSoftmax",
]

CASES = [
    ("dense", lambda: L.Dense(3), (4,), {}),
    ("dense_leading_dims", lambda: L.Dense(3, use_bias=False), (2, 4), {}),
    *[(f"act_{a}", getattr(L, a), (2, 3), {}) for a in ACTIVATIONS],
    ("activation_kwargs", lambda: L.Activation("leaky_relu", alpha=0.2), (3,), {}),
    # pooling
    ("max_pool2d", lambda: L.MaxPool2D(2), (4, 4, 2), {}),
    ("max_pool2d_crop", lambda: L.MaxPool2D(2), (5, 4, 2), {}),
    ("max_pool2d_s2_same", lambda: L.MaxPool2D(3, 2, "SAME"), (5, 5, 2), {}),
    ("avg_pool2d", lambda: L.AvgPool2D(2), (4, 4, 2), {}),
    ("avg_pool2d_s1_same", lambda: L.AvgPool2D(3, 1, "SAME"), (4, 4, 2), {}),
    (
        "avg_pool2d_same_count_pad",
        lambda: L.AvgPool2D((2, 3), (2, 1), "SAME", count_include_pad=True),
        (5, 4, 1),
        {},
    ),
    ("max_pool1d", lambda: L.MaxPool1D(2), (6, 2), {}),
    ("avg_pool1d_same", lambda: L.AvgPool1D(3, 2, "SAME"), (7, 2), {}),
    ("global_avg_pool", lambda: L.GlobalAvgPool(), (3, 3, 2), {}),
    ("global_max_pool", lambda: L.GlobalMaxPool(), (4, 2), {}),
    # reshaping
    ("flatten", lambda: L.Flatten(), (2, 3, 2), {}),
    ("reshape", lambda: L.Reshape((-1, 2)), (3, 4), {}),
    # randomness and normalisation
    ("dropout", lambda: L.Dropout(0.5), (4, 5), {"stochastic": True, **BOTH}),
    ("batch_norm", lambda: L.BatchNorm(), (3,), BOTH),
    ("batch_norm_nhwc", lambda: L.BatchNorm(momentum=0.5), (3, 3, 2), BOTH),
    ("batch_norm_axis0", lambda: L.BatchNorm(axis=0, use_scale=False), (2, 3), BOTH),
    ("layer_norm", lambda: L.LayerNorm(), (2, 5), {}),
    ("embedding", lambda: L.Embedding(5, 3), (4,), {"dtype": jnp.int32, "int_maxval": 5}),
    # combinators
    (
        "serial_mlp",
        lambda: nnkit.serial(L.Dense(5), L.Tanh(), L.Dense(2)),
        (3,),
        {},
    ),
    (
        "serial_lenet_mini",
        lambda: nnkit.serial(
            L.Conv2D(2, 3), L.Relu(), L.MaxPool2D(2), L.Conv2D(3, 2, padding="VALID"),
            L.Flatten(), L.Dense(2),
        ),
        (6, 6, 1),
        {},
    ),
    (
        "fanout_concat",
        lambda: nnkit.serial(nnkit.fanout(L.Dense(2), L.Tanh()), nnkit.concat()),
        (3,),
        {},
    ),
    (
        "fanout_parallel_concat",
        lambda: nnkit.serial(
            nnkit.fanout(L.Dense(2), L.Dense(3)),
            parallel(L.Relu(), L.Dense(2)),
            nnkit.concat(),
        ),
        (3,),
        {},
    ),
    (
        "parallel_tuple_input",
        lambda: nnkit.serial(parallel(L.Dense(2), L.Sigmoid()), nnkit.concat()),
        ((3,), (4,)),
        {},
    ),
    ("residual", lambda: nnkit.residual(nnkit.serial(L.Dense(3), L.Tanh())), (3,), {}),
    (
        "residual_projection_bn_dropout",
        lambda: nnkit.residual(
            nnkit.serial(L.Dense(4), L.BatchNorm(), L.Dropout(0.3)), shortcut=L.Dense(4)
        ),
        (3,),
        {"stochastic": True, **BOTH},
    ),
    ("lambda", lambda: nnkit.Lambda(lambda x: x * x[..., :1], kind="scale"), (3,), {}),
]

CONV_CASES = [
    ("same", lambda impl: L.Conv2D(3, 3, impl=impl), (5, 5, 2)),
    ("valid_rect", lambda impl: L.Conv2D(2, (3, 2), padding="VALID", impl=impl), (5, 4, 2)),
    ("stride2", lambda impl: L.Conv2D(2, 3, stride=2, impl=impl), (6, 5, 2)),
    ("dilation2", lambda impl: L.Conv2D(2, 2, dilation=2, impl=impl), (5, 5, 1)),
    (
        "explicit_pad",
        lambda impl: L.Conv2D(2, 3, stride=(2, 1), padding=((1, 0), (2, 1)), impl=impl),
        (5, 4, 2),
    ),
    ("groups2", lambda impl: L.Conv2D(4, 2, groups=2, impl=impl), (4, 4, 4)),
    ("depthwise", lambda impl: L.Conv2D(6, 3, groups=3, use_bias=False, impl=impl), (4, 4, 3)),
    ("conv1d", lambda impl: L.Conv1D(3, 3, impl=impl), (6, 2)),
    (
        "conv1d_stride_dil_valid",
        lambda impl: L.Conv1D(2, 2, stride=2, dilation=2, padding="VALID", impl=impl),
        (9, 2),
    ),
    ("conv1d_depthwise", lambda impl: L.Conv1D(2, 3, groups=2, impl=impl), (5, 2)),
]


@pytest.mark.parametrize(
    "factory,input_shape,kwargs", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_layer_conformance(factory, input_shape, kwargs):
    kwargs = {"train_modes": (False,), **kwargs}
    check_layer(factory(), input_shape, key=jax.random.key(42), **kwargs)


# im2col (the CPU default) on every config; xla on a few (test_layers_conv.py checks that both
# impls give the same outputs and gradients on more configs, and both against a NumPy loop).
XLA_CONV_CASES = ("same", "stride2", "explicit_pad", "depthwise", "conv1d_stride_dil_valid")
CONV_PARAMS = [
    pytest.param(c[1], c[2], impl, id=f"{c[0]}-{impl}")
    for c in CONV_CASES
    for impl in ("im2col", "xla")
    if impl == "im2col" or c[0] in XLA_CONV_CASES
]


@pytest.mark.parametrize("factory,input_shape,impl", CONV_PARAMS)
def test_conv_conformance(factory, input_shape, impl):
    check_layer(factory(impl), input_shape, key=jax.random.key(7), train_modes=(False,))


# The core layers this file must cover. Layers from other modules (recurrent, attention,
# dropconnect, ...) are covered by their owners' tests; add them here when they are ready.
CORE_LAYERS = {
    "Dense", "Activation", "Conv1D", "Conv2D", "MaxPool1D", "MaxPool2D", "AvgPool1D",
    "AvgPool2D", "GlobalAvgPool", "GlobalMaxPool", "Flatten", "Reshape", "Dropout",
    "BatchNorm", "LayerNorm", "Embedding", *ACTIVATIONS,
}


def test_every_core_layer_is_covered():
    """Each core layer is exported and built by at least one conformance case."""
    assert CORE_LAYERS <= set(L.__all__)
    built = {c[1]().kind for c in CASES} | {c[1]("xla").kind for c in CONV_CASES}
    kinds = {
        "dense", "conv2d", "conv1d", "max_pool2d", "avg_pool2d", "max_pool1d", "avg_pool1d",
        "global_avg_pool", "global_max_pool", "flatten", "reshape", "dropout", "batch_norm",
        "layer_norm", "embedding", "step", "sigmoid", "tanh", "relu", "leaky_relu", "elu",
        "gelu", "softplus", "silu", "softmax", "log_softmax",
    }
    assert kinds <= built, sorted(kinds - built)
