"""nnkit.models: the architecture registry and config-spec model building."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnkit
from nnkit import layers as L
from nnkit import models
from nnkit.config import ConfigError

KEY = jax.random.key(0)


def init(model, shape, key=KEY):
    """Concrete ``model.init`` as one compiled call (cheaper than op-by-op dispatch)."""
    return jax.jit(model.init, static_argnums=1)(key, tuple(shape))


def abstract(model, shape):
    """``(out_shape, params, state)`` with ShapeDtypeStruct leaves: nothing is computed."""
    return nnkit.core.abstract_init(model, shape)


def apply(model, p, s, x, **kw):
    return jax.jit(lambda p, s, x: model.apply(p, s, x, **kw)[0])(p, s, x)


def test_available_lists_every_architecture():
    names = models.available()
    assert set(names) == {"mlp", "lenet5", "lstm_classifier", "lstm_regressor", "perceptron"}
    assert all(isinstance(v, str) and v for v in names.values())
    assert set(models.OUTPUT_ARG) == set(models.ARCHS)


def test_lenet5_shapes_and_param_count():
    model = models.lenet5()
    out, params, state = abstract(model, (28, 28, 1))
    assert out == (10,) and state == {}
    assert nnkit.param_count(params) == 61_706
    # layer by layer: 6*25+6, 16*6*25+16, 400*120+120, 120*84+84, 84*10+10
    counts = {k: nnkit.param_count(v) for k, v in params.items()}
    assert counts == {"conv1": 156, "conv2": 2416, "fc1": 48120, "fc2": 10164, "out": 850}
    x = jax.ShapeDtypeStruct((3, 28, 28, 1), jnp.float32)
    y, _ = jax.eval_shape(model.apply, params, state, x)
    chex.assert_shape(y, (3, 10))
    assert nnkit.param_count(abstract(models.lenet5(num_classes=3), (28, 28, 1))[1]) == (
        61_706 - 7 * 85)


@pytest.mark.parametrize("hidden", [(128,), (32, 16), ()])
def test_mlp_shapes_and_count(hidden):
    model = models.mlp(hidden=hidden, out=10)
    out, params, _ = abstract(model, (8, 8, 1))
    assert out == (10,)
    sizes = [64, *hidden, 10]
    expect = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    assert nnkit.param_count(params) == expect
    assert list(params) == [f"dense_{i}" for i in range(len(hidden))] + ["out"]


def test_mlp_forward_matches_numpy():
    model = models.mlp(hidden=(5,), out=3, activation="tanh")
    _, p, s = init(model, (2, 3))
    x = np.random.default_rng(0).normal(size=(4, 2, 3)).astype(np.float32)
    y = apply(model, p, s, jnp.asarray(x))
    h = np.tanh(x.reshape(4, 6) @ np.asarray(p["dense_0"]["w"]) + np.asarray(p["dense_0"]["b"]))
    want = h @ np.asarray(p["out"]["w"]) + np.asarray(p["out"]["b"])
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=1e-5)


def test_mlp_dropout_and_batchnorm_layers():
    model = models.mlp(hidden=(6,), out=2, dropout=0.5, batchnorm=True)
    names = [n for n, _ in model.children]
    assert names == ["flatten", "dense_0", "batchnorm_0", "relu_0", "dropout_0", "out"]
    _, p, s = abstract(model, (4,))
    assert "batchnorm_0" in s  # running statistics live in the state
    x = jax.ShapeDtypeStruct((8, 4), jnp.float32)
    y_eval, _ = jax.eval_shape(model.apply, p, s, x)
    y_train, _ = jax.eval_shape(lambda p, s, x: model.apply(p, s, x, key=KEY, train=True),
                                p, s, x)
    chex.assert_shape([y_eval, y_train], (8, 2))
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        models.mlp(dropout=1.0)


@pytest.mark.parametrize("activation", ["step", "sigmoid"])
def test_perceptron_matches_closed_form(activation):
    model = models.perceptron(out=1, activation=activation)
    _, p, s = init(model, (2,))
    x = jnp.array([[0.0, 0.0], [1.0, -2.0], [3.0, 1.0]])
    z = np.asarray(x) @ np.asarray(p["dense"]["w"]) + np.asarray(p["dense"]["b"])
    want = (z > 0).astype(np.float32) if activation == "step" else 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(np.asarray(apply(model, p, s, x)), want, rtol=1e-6)
    with pytest.raises(ValueError, match="'step' or 'sigmoid'"):
        models.perceptron(activation="relu")


@pytest.mark.skipif(not hasattr(L, "LSTM"), reason="nnkit.layers.LSTM not available yet")
@pytest.mark.parametrize("arch", ["lstm_classifier", "lstm_regressor"])
def test_lstm_models_shapes(arch):
    model = models.build({"arch": arch, "hidden": 8, "out": 3})
    out, p, s = abstract(model, (7, 2))
    assert out == (3,)
    y, _ = jax.eval_shape(model.apply, p, s, jax.ShapeDtypeStruct((5, 7, 2), jnp.float32))
    chex.assert_shape(y, (5, 3))


@pytest.mark.parametrize("arch", ["lstm_classifier", "lstm_regressor"])
def test_lstm_models_unroll_same_function_more_steps_per_iteration(arch):
    """``unroll`` from a config reaches the LSTM: its loops (forward and, above 2, the
    gradient's backward one) run that many steps per iteration, with the same values and
    gradients; a bad value is refused naming the arch and key."""
    x = jax.random.normal(jax.random.key(1), (4, 6, 2))

    def run(unroll):
        model = models.build({"arch": arch, "hidden": 8, "out": 3, "unroll": unroll})
        _, p, s = model.init(KEY, (6, 2))

        def loss(q):
            return jnp.sum(jnp.sin(model.apply(q, s, x)[0]))
        jaxpr = jax.make_jaxpr(jax.grad(loss))(p).jaxpr
        scans = [e.params["unroll"] for e in jaxpr.eqns if e.primitive.name == "scan"]
        return loss(p), jax.grad(loss)(p), scans

    v1, g1, s1 = run(1)
    v4, g4, s4 = run(4)
    assert s1 == [1, 2] and s4 == [4, 4]  # forward loop, backward loop
    np.testing.assert_allclose(v4, v1, rtol=1e-5)
    chex.assert_trees_all_close(g4, g1, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match=f"{arch}: unroll must be a positive int, got 0"):
        models.build({"arch": arch, "hidden": 8, "unroll": 0})


def test_build_arch_equals_direct_call():
    a = models.build({"arch": "mlp", "hidden": [16, 8], "out": 4, "activation": "gelu"})
    b = models.mlp(hidden=(16, 8), out=4, activation="gelu")
    pa, pb = jax.jit(lambda k: (a.init(k, (5,))[1], b.init(k, (5,))[1]))(KEY)
    chex.assert_trees_all_equal(pa, pb)


def test_build_layer_list_names_and_shapes():
    spec = {"layers": [
        {"type": "conv2d", "features": 4, "kernel_size": 3, "padding": "VALID"},
        {"type": "ReLU"},
        {"type": "maxpool2d", "window": 2},
        {"type": "flatten"},
        {"type": "dense", "features": 8, "name": "hidden"},
        {"type": "leaky_relu", "alpha": 0.1},
        {"type": "residual", "layers": [{"type": "dense", "features": 8}, {"type": "tanh"}]},
        {"type": "dropout", "rate": 0.25},
        {"type": "dense", "features": 3, "name": "logits"},
    ]}
    model = models.build(spec)
    out, params, state = abstract(model, (10, 10, 1))
    assert out == (3,)
    assert set(params) == {"conv2d_0", "hidden", "residual_0", "logits"}
    chex.assert_shape(params["conv2d_0"]["w"], (3, 3, 1, 4))
    chex.assert_shape(params["hidden"]["w"], (4 * 4 * 4, 8))
    y, _ = jax.eval_shape(model.apply, params, state,
                          jax.ShapeDtypeStruct((2, 10, 10, 1), jnp.float32))
    chex.assert_shape(y, (2, 3))


def test_build_layer_list_matches_mlp_forward():
    spec = {"layers": [{"type": "flatten"}, {"type": "dense", "features": 6, "name": "dense_0"},
                       {"type": "relu"}, {"type": "dense", "features": 2, "name": "out"}]}
    m = models.build(spec)
    _, p, s = init(m, (3,))
    x = jnp.array([[1.0, -2.0, 0.5]])
    p = jax.tree_util.tree_map(np.asarray, p)
    h = np.maximum(np.asarray(x) @ p["dense_0"]["w"] + p["dense_0"]["b"], 0)
    np.testing.assert_allclose(apply(m, p, s, x), h @ p["out"]["w"] + p["out"]["b"],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "spec, key, fragment",
    [
        ({"arch": "mpl"}, "model.arch", "did you mean 'mlp'?"),
        ({"arch": "mlp", "hiden": [3]}, "model.hiden", "did you mean 'hidden'?"),
        ({"arch": "mlp", "activation": "rleu"}, "model.activation", "did you mean 'relu'?"),
        ({"arch": "mlp", "hidden": [0]}, "model.hidden", "positive int"),
        ({"arch": "lenet5", "num_classes": -1}, "model.num_classes", "positive int"),
        ({"layers": [{"type": "dence", "features": 3}]}, "model.layers[0].type",
         "did you mean 'dense'?"),
        ({"layers": [{"type": "dense", "feature": 3}]}, "model.layers[0].feature",
         "did you mean 'features'?"),
        ({"layers": [{"type": "dense"}]}, "model.layers[0]", "missing a required argument"),
        ({"layers": [{"features": 3}]}, "model.layers[0]", "missing 'type'"),
        ({"layers": []}, "model.layers", "non-empty list"),
        ({"layers": [{"type": "relu"}], "nme": "x"}, "model.nme", "did you mean 'name'?"),
        ({"arch": "mlp", "layers": []}, "model", "exactly one of"),
        ({}, "model", "exactly one of"),
        ({"layers": [{"type": "residual", "layers": [{"type": "relu"}], "n": 1}]},
         "model.layers[0].n", "takes only"),
    ],
)
def test_build_errors_name_key_and_suggest(spec, key, fragment):
    with pytest.raises(ConfigError) as e:
        models.build(spec)
    assert e.value.key == key, str(e.value)
    assert fragment in str(e.value)


def test_with_output_size():
    assert models.with_output_size({"arch": "mlp"}, 3) == {"arch": "mlp", "out": 3}
    assert models.with_output_size({"arch": "lenet5"}, 4) == {"arch": "lenet5", "num_classes": 4}
    assert models.with_output_size({"arch": "mlp", "out": 7}, 3)["out"] == 7
    spec = {"layers": [{"type": "dense", "features": 2}]}
    assert models.with_output_size(spec, 3) == spec
