"""The core contract: naming, child keys, shape errors, golden trees, summary, perceptron."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnkit
from nnkit.core import abstract_init, child_key, normalize_shape, parallel
from nnkit.layers import (
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    Relu,
    Sigmoid,
    Tanh,
)


def lenet5() -> nnkit.Layer:
    """LeNet-5 for 28x28x1 inputs (the course's version: SAME first conv, max pooling)."""
    return nnkit.serial(
        Conv2D(6, 5, padding="SAME"), Relu(), MaxPool2D(2),
        Conv2D(16, 5, padding="VALID"), Relu(), MaxPool2D(2),
        Flatten(), Dense(120), Relu(), Dense(84), Relu(), Dense(10),
    )


def mlp() -> nnkit.Layer:
    return nnkit.serial(Dense(32, name="hidden"), Tanh(), Dense(16), Relu(), Dense(10))


def tree_shapes(params):
    return jax.tree_util.tree_map(lambda a: tuple(a.shape), params)


# ----------------------------------------------------------------------------- golden trees


def test_golden_mlp_tree():
    out, params, state = mlp().init(jax.random.key(0), (8,))
    assert out == (10,) and state == {}
    assert tree_shapes(params) == {
        "hidden": {"w": (8, 32), "b": (32,)},
        "dense_0": {"w": (32, 16), "b": (16,)},
        "dense_1": {"w": (16, 10), "b": (10,)},
    }


def test_golden_lenet5_tree():
    out, params, state = abstract_init(lenet5(), (28, 28, 1))
    assert out == (10,) and state == {}
    assert tree_shapes(params) == {
        "conv2d_0": {"w": (5, 5, 1, 6), "b": (6,)},
        "conv2d_1": {"w": (5, 5, 6, 16), "b": (16,)},
        "dense_0": {"w": (400, 120), "b": (120,)},
        "dense_1": {"w": (120, 84), "b": (84,)},
        "dense_2": {"w": (84, 10), "b": (10,)},
    }


def test_lenet5_summary():
    text = nnkit.summary(lenet5(), (28, 28, 1), print_fn=None)
    # By hand: conv1 5*5*1*6 + 6 = 156 (SAME: 28x28x6, pool -> 14x14x6);
    # conv2 5*5*6*16 + 16 = 2,416 (VALID: 10x10x16, pool -> 5x5x16 = 400);
    # dense 400*120 + 120 = 48,120; 120*84 + 84 = 10,164; 84*10 + 10 = 850.
    # Total 156 + 2,416 + 48,120 + 10,164 + 850 = 61,706.
    assert 156 + 2_416 + 48_120 + 10_164 + 850 == 61_706
    assert "total params 61,706" in text
    rows = [line.split() for line in text.splitlines()[3:15]]
    assert [r[0] for r in rows] == [
        "conv2d_0", "relu_0", "max_pool2d_0", "conv2d_1", "relu_1", "max_pool2d_1",
        "flatten_0", "dense_0", "relu_2", "dense_1", "relu_3", "dense_2",
    ]
    shapes = {r[0]: "".join(r[2:-2]) for r in rows}
    assert shapes["conv2d_0"] == "(28,28,6)" and shapes["max_pool2d_0"] == "(14,14,6)"
    assert shapes["conv2d_1"] == "(10,10,16)" and shapes["flatten_0"] == "(400,)"
    counts = {r[0]: r[-2] for r in rows}
    assert counts["conv2d_0"] == "156" and counts["conv2d_1"] == "2,416"
    assert counts["dense_0"] == "48,120" and counts["relu_0"] == "0"
    assert nnkit.param_count(abstract_init(lenet5(), (28, 28, 1))[1]) == 61_706


def test_lenet5_forward_shapes_under_jit():
    model = lenet5()
    _, params, state = model.init(jax.random.key(0), (28, 28, 1))
    y, _ = jax.jit(model.apply)(params, state, jnp.ones((3, 28, 28, 1)))
    assert y.shape == (3, 10) and np.isfinite(y).all()


# ----------------------------------------------------------------------------- perceptron


def test_course_perceptron():
    """Dense(1) with w = [[4], [-2]], b = [1], then sigmoid: sigmoid(4 x1 - 2 x2 + 1)."""
    model = nnkit.serial(Dense(1), Sigmoid())
    _, params, state = model.init(jax.random.key(0), (2,))
    params = {"dense_0": {"w": jnp.array([[4.0], [-2.0]]), "b": jnp.array([1.0])}}
    y, _ = model.apply(params, state, jnp.array([[-1.0, 2.0], [0.0, -1.0]]))
    # (-1, 2): 4*(-1) - 2*2 + 1 = -7 -> sigmoid(-7) = 1 / (1 + e^7) = 0.000911
    # (0, -1): 0 + 2 + 1 = 3 -> sigmoid(3) = 1 / (1 + e^-3) = 0.952574
    np.testing.assert_allclose(y[:, 0], [1 / (1 + np.exp(7)), 1 / (1 + np.exp(-3))], rtol=1e-6)
    assert float(y[0, 0]) == pytest.approx(0.00091, abs=5e-6)
    assert float(y[1, 0]) == pytest.approx(0.95257, abs=5e-6)


# ----------------------------------------------------------------------------- naming


def test_default_and_explicit_names():
    model = nnkit.serial(Dense(3), Relu(), Dense(2), Dense(2, name="head"), Relu())
    assert [n for n, _ in model.children] == ["dense_0", "relu_0", "dense_1", "head", "relu_1"]
    _, params, _ = model.init(jax.random.key(0), (4,))
    assert set(params) == {"dense_0", "dense_1", "head"}  # parameter-free layers left out
    assert nnkit.named(Dense(3), "x").name == "x"


def test_duplicate_names_error():
    with pytest.raises(ValueError, match=r"duplicate layer names.*\['a'\]"):
        nnkit.serial(Dense(3, name="a"), Dense(3, name="a"))
    with pytest.raises(ValueError, match="dense_0"):
        nnkit.serial(Dense(3), Dense(3, name="dense_0"))
    with pytest.raises(TypeError, match="expected an nnkit Layer"):
        nnkit.serial(Dense(3), jnp.tanh)


def test_inserting_another_kind_keeps_names_and_init():
    base = nnkit.serial(Dense(4), Dense(3))
    more = nnkit.serial(Dense(4), BatchNorm(), Dropout(0.1), Dense(3))
    _, p1, _ = base.init(jax.random.key(0), (5,))
    _, p2, s2 = more.init(jax.random.key(0), (5,))
    assert set(p2) == {"dense_0", "dense_1", "batch_norm_0"} and set(s2) == {"batch_norm_0"}
    # child keys derive from names, not positions: the dense layers are unchanged
    for n in ("dense_0", "dense_1"):
        for k in ("w", "b"):
            np.testing.assert_array_equal(p1[n][k], p2[n][k])


def test_child_key_by_name_unrelated_insert():
    a = nnkit.serial(Dense(4, name="enc"), Dense(2, name="out"))
    b = nnkit.serial(Dense(4, name="enc"), Dense(6, name="extra"), Dense(4, name="proj"),
                     Dense(2, name="out"))
    _, pa, _ = a.init(jax.random.key(1), (3,))
    _, pb, _ = b.init(jax.random.key(1), (3,))
    for n in ("enc", "out"):  # same names and input dims -> identical params
        jax.tree_util.tree_map(np.testing.assert_array_equal, pa[n], pb[n])
    assert not np.array_equal(pb["proj"]["w"][:, :2], pb["out"]["w"])
    # child_key is fold_in(key, crc32(name)); None stays None; legacy keys work
    k = jax.random.key(5)
    assert child_key(None, "x") is None
    assert not np.array_equal(
        jax.random.key_data(child_key(k, "a")), jax.random.key_data(child_key(k, "b"))
    )
    np.testing.assert_array_equal(
        jax.random.key_data(child_key(k, "a")),
        child_key(jax.random.key_data(k), "a"),
    )


def test_same_model_built_twice_same_tree():
    _, p1, _ = mlp().init(jax.random.key(3), (8,))
    _, p2, _ = mlp().init(jax.random.key(3), (8,))
    jax.tree_util.tree_map(np.testing.assert_array_equal, p1, p2)


def test_legacy_prngkey_gives_same_params():
    model = nnkit.serial(Conv2D(2, 3), BatchNorm(), Flatten(), Dense(3))
    _, p_new, s_new = model.init(jax.random.key(7), (4, 4, 1))
    _, p_old, s_old = model.init(jax.random.PRNGKey(7), (4, 4, 1))
    jax.tree_util.tree_map(np.testing.assert_array_equal, (p_new, s_new), (p_old, s_old))


# ----------------------------------------------------------------------------- shape errors


def test_flatten_dense_chain_shapes_and_errors():
    model = nnkit.serial(Conv2D(4, 3, padding="VALID"), Flatten(), Dense(10))
    out, params, _ = model.init(jax.random.key(0), (6, 6, 2))
    assert out == (10,) and params["dense_0"]["w"].shape == (4 * 4 * 4, 10)
    with pytest.raises(nnkit.ShapeError, match=r"conv2d_0: .*\(H, W, C\).*got \(72,\)"):
        nnkit.serial(Flatten(), Conv2D(4, 3), Dense(10)).init(jax.random.key(0), (6, 6, 2))
    # nested containers give the whole path
    inner = nnkit.serial(Dense(3), Conv2D(2, 3), name="block")
    with pytest.raises(nnkit.ShapeError, match=r"^block/conv2d_0: expected input shape"):
        nnkit.serial(inner).init(jax.random.key(0), (5,))


def test_dense_apply_names_itself_and_both_shapes():
    model = nnkit.serial(Dense(3))
    _, params, state = model.init(jax.random.key(0), (4,))
    with pytest.raises(nnkit.ShapeError, match=r"dense_0: x of shape \(2, 5\) has 5 features "
                                               r".* w \(4, 3\) expect 4"):
        model.apply(params, state, jnp.ones((2, 5)))


def test_residual_mismatch_error():
    with pytest.raises(nnkit.ShapeError, match=r"residual: block output \(5,\) != .*\(3,\)"):
        nnkit.residual(Dense(5)).init(jax.random.key(0), (3,))
    with pytest.raises(nnkit.ShapeError, match=r"^serial_0/residual_0: block output"):
        nnkit.serial(nnkit.serial(Dense(3), nnkit.residual(Dense(5)))).init(
            jax.random.key(0), (4,)
        )
    # a projection shortcut fixes it
    out, params, _ = nnkit.residual(Dense(5), Dense(5)).init(jax.random.key(0), (3,))
    assert out == (5,) and set(params) == {"block", "shortcut"}


def test_residual_values():
    model = nnkit.residual(Dense(3, name="f"))
    _, params, state = model.init(jax.random.key(0), (3,))
    x = jnp.arange(6.0).reshape(2, 3)
    y, _ = model.apply(params, state, x)
    f = params["block"]
    np.testing.assert_allclose(y, x @ f["w"] + f["b"] + x, rtol=1e-6)


def test_parallel_fanout_concat():
    model = nnkit.serial(
        nnkit.fanout(Dense(2, name="a"), Relu(name="r")), parallel(Dense(4), Tanh()),
        nnkit.concat(),
    )
    out, params, _ = model.init(jax.random.key(0), (3,))
    assert out == (7,)
    x = jnp.array([[1.0, -2.0, 3.0]])
    y, _ = model.apply(params, {}, x)
    a = x @ params["fanout_0"]["a"]["w"] + params["fanout_0"]["a"]["b"]
    d = params["parallel_0"]["dense_0"]
    np.testing.assert_allclose(y, np.concatenate([a @ d["w"] + d["b"], np.tanh(np.maximum(
        x, 0))], axis=-1), rtol=1e-6)
    # parallel over a tuple input (shapes normalised element-wise)
    out, _, _ = nnkit.serial(parallel(Dense(2), Dense(3)), nnkit.concat()).init(
        jax.random.key(0), ((4,), (5,))
    )
    assert out == (5,)
    with pytest.raises(nnkit.ShapeError, match="expected a tuple of 2 input shapes"):
        parallel(Dense(2), Dense(3)).init(jax.random.key(0), ((4,),))
    with pytest.raises(nnkit.ShapeError, match="concat_0: expected a tuple of input shapes"):
        nnkit.serial(Dense(3), nnkit.concat()).init(jax.random.key(0), (3,))
    with pytest.raises(nnkit.ShapeError, match="differ off the concat axis"):
        nnkit.concat(axis=0).init(None, ((2, 3), (2, 4)))


def test_lambda_and_normalize_shape():
    out, _, _ = nnkit.Lambda(lambda x: x[..., ::2], kind="evens").init(None, (6,))
    assert out == (3,)
    with pytest.raises(nnkit.ShapeError, match="evens"):
        nnkit.Lambda(lambda x: x @ jnp.ones((4, 2)), kind="evens").init(None, (6,))
    assert normalize_shape((-1, 3, 4)) == (3, 4)
    assert normalize_shape(5) == (5,)
    assert normalize_shape(((-1, 2), [3])) == ((2,), (3,))
    with pytest.raises(nnkit.ShapeError, match="non-positive"):
        normalize_shape((3, 0))
    with pytest.raises(nnkit.ShapeError, match="tuple of ints"):
        normalize_shape(("a", 3))


def test_serial_accepts_list_and_single_layer():
    assert nnkit.serial([Dense(2), Relu()]).init(jax.random.key(0), (3,))[0] == (2,)
    assert nnkit.serial(Dense(2)).init(jax.random.key(0), (3,))[0] == (2,)
    assert nnkit.Sequential is nnkit.serial


def test_abstract_init_allocates_nothing_and_matches():
    out, p_abs, _ = abstract_init(mlp(), (8,))
    _, p, _ = mlp().init(jax.random.key(0), (8,))
    assert out == (10,)
    assert jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), p_abs) == jax.tree_util.tree_map(
        lambda a: (a.shape, a.dtype), p
    )
    assert all(isinstance(a, jax.ShapeDtypeStruct) for a in jax.tree_util.tree_leaves(p_abs))


def _bn_model():
    return nnkit.serial(Dense(4), BatchNorm(), Relu(), nnkit.serial(Dense(3), name="head"))


@pytest.mark.parametrize("case,match", [
    ("swapped", r"dense_0: dense looks up 'w' .*its state \['b', 'w'\].*swapped"),
    ("state None", r"serial: state must be a dict .*NoneType"),
    ("state empty", r"batch_norm_0: batch_norm looks up 'mean' .*its state \[\]"),
    ("head missing", r"head/dense_0: dense looks up 'w'"),
])
def test_apply_with_a_tree_of_another_model_names_the_path_and_keys(case, match):
    model = _bn_model()
    _, p, s = model.init(jax.random.key(0), (2,))
    args = {"swapped": (s, p), "state None": (p, None), "state empty": (p, {}),
            "head missing": ({k: v for k, v in p.items() if k != "head"}, s)}[case]
    with pytest.raises(nnkit.TreeError, match=match):
        model.apply(*args, jnp.ones((5, 2)))
    y, _ = model.apply(p, s, jnp.ones((5, 2)))  # the matching trees still apply
    assert y.shape == (5, 3)
    # a prefix of the model applies to the whole model's trees (extra entries are unused)
    prefix = nnkit.serial(*[lyr for _, lyr in model.children[:2]])
    h, _ = prefix.apply(p, s, jnp.ones((5, 2)))
    assert h.shape == (5, 4)


@pytest.mark.parametrize("combine", [nnkit.serial, nnkit.fanout,
                                     lambda *ls: nnkit.residual(nnkit.serial(*ls))])
def test_a_child_apply_that_does_not_return_a_pair_is_named(combine):
    bad = nnkit.Layer(lambda k, sh: (sh, {}, {}), lambda p, s, x, **k: 2 * x, "mine")
    model = combine(Dense(3), bad)
    _, p, s = model.init(jax.random.key(0), (3,))
    for batch in (1, 2, 3):  # a batch of 2 once unpacked silently into (row, row)
        with pytest.raises(TypeError, match=r"mine_0: mine.apply must return the pair "
                                            r"\(y, new_state\).*got one ArrayImpl"):
            model.apply(p, s, jnp.ones((batch, 3)))


def test_batchnorm_paths_finds_nested_layers():
    model = nnkit.serial(Dense(2), nnkit.serial(BatchNorm(), name="block"), BatchNorm())
    assert nnkit.core.batchnorm_paths(model) == ["block/batch_norm_0", "batch_norm_0"]
    assert nnkit.core.batchnorm_paths(nnkit.serial(Dense(2))) == []


def test_one_example_without_its_batch_axis_gets_the_x_none_hint():
    model = nnkit.serial(Flatten(), Dense(16), Relu(), Dense(2))
    _, p, s = model.init(jax.random.key(0), (8, 8, 1))
    with pytest.raises(nnkit.ShapeError, match=r"dense_0: x of shape \(8, 8\) has 8 features.*"
                                               r"add the batch axis with x\[None\]"):
        model.apply(p, s, jnp.ones((8, 8, 1)))
    with pytest.raises(nnkit.ShapeError) as e:  # a wrong width is not one example: no hint
        model.apply(p, s, jnp.ones((2, 8, 9, 1)))
    assert "x[None]" not in str(e.value)
    assert model.apply(p, s, jnp.ones((1, 8, 8, 1)))[0].shape == (1, 2)


def test_an_int_seed_is_a_key_for_init_and_apply():
    model = nnkit.serial(Dense(3), Dropout(0.5))
    _, p_int, s = model.init(0, (2,))
    _, p_key, _ = model.init(jax.random.key(0), (2,))
    jax.tree_util.tree_map(np.testing.assert_array_equal, p_int, p_key)
    x = jnp.ones((4, 2))
    y_int, _ = model.apply(p_int, s, x, key=3, train=True)
    y_key, _ = model.apply(p_int, s, x, key=jax.random.key(3), train=True)
    np.testing.assert_array_equal(y_int, y_key)
    assert Dense(2).init(1, (3,))[0] == (2,)
    with pytest.raises(ValueError, match="2\\*\\*32"):
        model.init(2**40, (2,))


def test_leaf_contract_accepts_lists_and_pytree_states_and_keeps_own_key_errors():
    import typing

    class St(typing.NamedTuple):
        n: jax.Array

    as_list = nnkit.Layer(lambda k, sh: (sh, {}, {}), lambda p, s, x, **k: [x + 1, {}], "lst")
    nt = nnkit.Layer(lambda k, sh: (sh, {}, St(jnp.zeros(()))),
                     lambda p, s, x, **k: (x, St(s.n + 1)), "nt")
    model = nnkit.serial(Dense(2), as_list, nt)
    _, p, s = model.init(jax.random.key(0), (3,))
    y, s2 = model.apply(p, s, jnp.ones((4, 3)))
    assert y.shape == (4, 2) and int(s2["nt_0"].n) == 1
    table = {"relu": jax.nn.relu}
    own = nnkit.core.layer("act", lambda k, sh: (sh, {"a": jnp.ones(())}, {}),
                           lambda p, s, x, **k: (table["gelu"](x), {}))
    _, p, s = nnkit.serial(own).init(0, (2,))
    with pytest.raises(KeyError) as e:  # the layer's own lookup, not a tree mismatch
        nnkit.serial(own).apply(p, s, jnp.ones((1, 2)))
    assert not isinstance(e.value, nnkit.TreeError)
    with pytest.raises(KeyError):  # a TreeError is still caught as the KeyError it was
        _bn_model().apply({}, {}, jnp.ones((2, 2)))


def test_summary_of_a_dict_fanout_and_int_keys_in_leaf_apply():
    two = nnkit.fanout(Dense(2, name="label"), Dense(1, name="reg"), as_dict=True)
    text = nnkit.summary(two, (3,), print_fn=lambda s: None)
    assert "{'label': (2,), 'reg': (1,)}" in text
    y_int, _ = Dropout(0.5).apply({}, {}, jnp.ones((2, 8)), key=7, train=True)
    y_key, _ = Dropout(0.5).apply({}, {}, jnp.ones((2, 8)), key=jax.random.key(7), train=True)
    np.testing.assert_array_equal(y_int, y_key)
