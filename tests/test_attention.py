"""Attention and positional layers: numpy reference maths, finite differences, padding and
causal masks via perturbation/Jacobians, equivariance, shapes, jit/vmap."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import nnkit
from nnkit.layers import attention as A
from nnkit.layers import positional as P

B, T, D = 2, 5, 6
KEY = jax.random.key(0)


def _x(shape=(B, T, D), seed=1):
    return jax.random.normal(jax.random.key(seed), shape)


def _f64(tree):
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64)), tree)


@jax.jit
def _randomise(tree, seed=7, scale=0.5):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        treedef, [scale * jax.random.normal(k, a.shape) for k, a in zip(keys, leaves, strict=True)]
    )


def np_attention(q, k, v, mask=None):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    return w @ v


# padding in the middle and at the end, so even a causal layer would see position 1
PAD = jnp.array([[True, False, True, True, False], [True] * T])


# ----------------------------------------------------------------------------- functional


def test_attention_matches_numpy_with_and_without_mask():
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=s).astype(np.float32) for s in [(2, 3, 4), (2, 5, 4), (2, 5, 2)])
    np.testing.assert_allclose(A.attention(q, k, v), np_attention(q, k, v), rtol=1e-5,
                               atol=1e-6)
    mask = rng.random((2, 3, 5)) < 0.6
    mask[..., 0] = True  # every query has a key
    np.testing.assert_allclose(A.attention(q, k, v, mask), np_attention(q, k, v, mask),
                               rtol=1e-5, atol=1e-6)


def test_attention_hand_value_and_fully_masked_row():
    # equal logits -> uniform weights -> mean of the values
    q = jnp.zeros((1, 1, 2))
    k = jnp.ones((1, 3, 2))
    v = jnp.array([[[1.0], [2.0], [6.0]]])
    np.testing.assert_allclose(A.attention(q, k, v), [[[3.0]]], rtol=1e-6)
    np.testing.assert_allclose(A.attention(q, k, v, jnp.array([True, True, False])), [[[1.5]]],
                               rtol=1e-6)
    out = A.attention(q, k, v, jnp.zeros((3,), bool))
    np.testing.assert_array_equal(out, [[[0.0]]])  # no valid key: zero, not NaN


def test_causal_mask_values():
    np.testing.assert_array_equal(A.causal_mask(3), [[1, 0, 0], [1, 1, 0], [1, 1, 1]])


def test_attention_finite_differences():
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        q, k, v = (jnp.asarray(rng.normal(size=s)) for s in [(2, 3, 4), (2, 4, 4), (2, 4, 2)])
        mask = jnp.asarray(A.causal_mask(3, 4))
        check_grads(jax.jit(lambda q, k, v: A.attention(q, k, v, mask)), (q, k, v), order=1,
                    modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------------------------- layers


def test_single_head_layer_matches_numpy():
    mha = A.MultiHeadAttention(1, 4)
    _, p, s = mha.init(KEY, (T, D))
    p = _randomise(p)
    x = _x()
    y, _ = jax.jit(mha.apply)(p, s, x)
    pn = jax.tree.map(np.asarray, p)
    xn = np.asarray(x, np.float64)

    def proj(name, z):
        return z @ pn[name]["w"] + pn[name]["b"]

    ref = proj("out", np_attention(proj("query", xn), proj("key", xn), proj("value", xn)))
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


def test_multi_head_is_heads_concatenated():
    heads, ks = 3, 2
    mha = A.MultiHeadAttention(heads, ks, value_size=4, out_features=7)
    out, p, s = mha.init(KEY, (T, D))
    assert out == (T, 7)
    chex.assert_shape([p["query"]["w"], p["key"]["w"], p["value"]["w"], p["out"]["w"]],
                      [(D, heads * ks), (D, heads * ks), (D, heads * 4), (heads * 4, 7)])
    p = _randomise(p)
    x = np.asarray(_x(), np.float64)
    pn = jax.tree.map(np.asarray, p)
    heads_out = []
    for i in range(heads):
        q = x @ pn["query"]["w"][:, i * ks:(i + 1) * ks] + pn["query"]["b"][i * ks:(i + 1) * ks]
        k = x @ pn["key"]["w"][:, i * ks:(i + 1) * ks] + pn["key"]["b"][i * ks:(i + 1) * ks]
        v = x @ pn["value"]["w"][:, i * 4:(i + 1) * 4] + pn["value"]["b"][i * 4:(i + 1) * 4]
        heads_out.append(np_attention(q, k, v))
    ref = np.concatenate(heads_out, -1) @ pn["out"]["w"] + pn["out"]["b"]
    np.testing.assert_allclose(jax.jit(mha.apply)(p, s, _x())[0], ref, rtol=1e-4, atol=1e-5)


def test_mha_finite_differences():
    mha = A.MultiHeadAttention(2, 2, causal=True)
    _, p, s = mha.init(KEY, (3, 4))
    with jax.enable_x64(True):
        p, x = _f64(_randomise(p)), _f64(_x((2, 3, 4)))
        check_grads(jax.jit(lambda p, x: mha.apply(p, s, (x, PAD[:, :3]))[0]), (p, x), order=1,
                    modes=("rev",), atol=1e-6, rtol=1e-6)


def test_permutation_equivariance_without_positions():
    mha = A.MultiHeadAttention(2, 3)
    _, p, s = mha.init(KEY, (T, D))
    x = _x()
    perm = np.array([3, 0, 4, 1, 2])
    y, _ = mha.apply(p, s, x)
    yp, _ = mha.apply(p, s, x[:, perm])
    np.testing.assert_allclose(yp, y[:, perm], rtol=1e-5, atol=1e-6)


def _perturb_padding(x, pad, scale=10.0):
    noise = jax.random.normal(jax.random.key(9), x.shape) * scale
    return jnp.where(pad[:, :, None], x, x + noise)


def _masked_layers():
    return [
        A.MultiHeadAttention(2, 3),
        A.MultiHeadAttention(2, 3, causal=True),
        A.TransformerEncoderBlock(2, 3, 8),
        A.TransformerEncoder(2, 2, 3, 8, positional=P.SinusoidalPositionalEncoding()),
    ]


@pytest.mark.parametrize("lyr", _masked_layers(), ids=lambda lyr: lyr.kind)
def test_padding_cannot_influence_valid_positions(lyr):
    out, p, s = lyr.init(KEY, ((T, D), (T,)))
    x = _x()
    apply = jax.jit(lambda x: jax.tree.leaves(lyr.apply(p, s, (x, PAD))[0])[0])
    y0, y1 = apply(x), apply(_perturb_padding(x, PAD))
    valid = np.asarray(PAD)
    np.testing.assert_allclose(np.asarray(y1)[valid], np.asarray(y0)[valid], rtol=1e-5,
                               atol=1e-5)
    # the same perturbation without the mask does change valid outputs (the check can fail)
    _, p2, s2 = lyr.init(KEY, (T, D))
    plain = jax.jit(lambda x: lyr.apply(p2, s2, x)[0])
    changed = np.asarray(plain(_perturb_padding(x, PAD)))[0, 2:4] - np.asarray(plain(x))[0, 2:4]
    assert np.abs(changed).max() > 1e-3


@pytest.mark.parametrize(
    "lyr",
    [A.MultiHeadAttention(2, 3, causal=True), A.TransformerEncoder(2, 2, 3, 8, causal=True)],
    ids=lambda lyr: lyr.kind,
)
def test_causal_output_ignores_future_inputs(lyr):
    _, p, s = lyr.init(KEY, (T, D))
    x = _x((1, T, D))
    jac = jax.jit(jax.jacrev(lambda x: lyr.apply(p, s, x)[0]))(x)[0, :, :, 0]  # (T, D, T, D)
    dep = np.abs(np.asarray(jac)).sum(axis=(1, 3))  # dep[t, s] = |d y_t / d x_s|
    assert np.all(dep[np.triu_indices(T, 1)] == 0.0)
    assert np.all(dep[np.tril_indices(T)] > 0.0)


def test_cross_attention_shapes_and_context_mask():
    ca = A.MultiHeadCrossAttention(2, 3)
    out, p, s = ca.init(KEY, ((T, D), (4, 3), (4,)))
    assert out == (T, D)
    chex.assert_shape([p["query"]["w"], p["key"]["w"], p["value"]["w"]],
                      [(D, 6), (3, 6), (3, 6)])
    x, ctx = _x(), _x((B, 4, 3), seed=2)
    cmask = jnp.array([[True, True, False, False], [True, True, True, False]])
    apply = jax.jit(lambda x, c, m: ca.apply(p, s, (x, c, m))[0])
    y0 = apply(x, ctx, cmask)
    ctx2 = jnp.where(cmask[:, :, None], ctx, ctx + 5.0)
    np.testing.assert_allclose(apply(x, ctx2, cmask), y0, rtol=1e-5, atol=1e-6)
    assert not np.allclose(apply(x, ctx2, jnp.ones_like(cmask)), apply(x, ctx, jnp.ones_like(
        cmask)))
    # cross attention of x over itself = self-attention with the same params
    _, p_self, _ = A.MultiHeadAttention(2, 3).init(KEY, (T, D))
    y_cross, _ = A.MultiHeadCrossAttention(2, 3).apply(p_self, {}, (x, x))
    y_self, _ = A.MultiHeadAttention(2, 3).apply(p_self, {}, x)
    np.testing.assert_allclose(y_cross, y_self, rtol=1e-6)


def test_encoder_block_structure_and_dropout():
    blk = A.TransformerEncoderBlock(2, 3, 8, dropout=0.5)
    _, p, s = blk.init(KEY, (T, D))
    assert set(p) == {"ln_1", "attention", "mlp"}
    chex.assert_shape(p["mlp"]["block"]["dense_0"]["w"], (D, 8))
    x = _x()
    y_eval, _ = blk.apply(p, s, x)
    y_tr1, _ = blk.apply(p, s, x, key=jax.random.key(1), train=True)
    y_tr2, _ = blk.apply(p, s, x, key=jax.random.key(1), train=True)
    np.testing.assert_array_equal(y_tr1, y_tr2)
    assert not np.allclose(y_tr1, y_eval)
    with pytest.raises(ValueError, match="key"):
        blk.apply(p, s, x, train=True)
    # with zero attention/MLP output weights the block is the identity (pre-LN residuals)
    p0 = jax.tree.map(lambda a: a, p)
    p0["attention"]["out"] = jax.tree.map(jnp.zeros_like, p["attention"]["out"])
    p0["mlp"]["block"]["dense_1"] = jax.tree.map(jnp.zeros_like, p["mlp"]["block"]["dense_1"])
    np.testing.assert_allclose(blk.apply(p0, s, x)[0], x, rtol=1e-6)


# ----------------------------------------------------------------------------- positional


def test_sinusoidal_hand_values():
    pe = np.asarray(P.sinusoidal_encoding(4, 6))
    t = np.arange(4.0)
    np.testing.assert_allclose(pe[0], [0, 1, 0, 1, 0, 1], atol=1e-7)
    np.testing.assert_allclose(pe[:, 0], np.sin(t), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(pe[:, 1], np.cos(t), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(pe[:, 4], np.sin(t / 10000 ** (4 / 6)), rtol=1e-5, atol=1e-7)
    assert P.sinusoidal_encoding(3, 5).shape == (3, 5)
    # relative positions: <pe[t], pe[t + k]> = sum_i cos(k w_i), independent of t
    pe = np.asarray(P.sinusoidal_encoding(12, 8), np.float64)
    dots = [pe[t] @ pe[t + 3] for t in range(9)]
    np.testing.assert_allclose(dots, dots[0], rtol=1e-5)


def test_positional_layers_add_codes_and_pass_mask():
    x = _x()
    sin = P.SinusoidalPositionalEncoding()
    out, p, s = sin.init(KEY, (T, D))
    assert out == (T, D) and p == {}
    np.testing.assert_allclose(sin.apply(p, s, x)[0], x + P.sinusoidal_encoding(T, D),
                               rtol=1e-6)
    lrn = P.LearnedPositionalEmbedding(8)
    out, p, s = lrn.init(KEY, ((T, D), (T,)))
    chex.assert_shape(p["table"], (8, D))
    (y, m), _ = lrn.apply(p, s, (x, PAD))
    np.testing.assert_allclose(y, x + p["table"][:T], rtol=1e-6)
    np.testing.assert_array_equal(m, PAD)
    with pytest.raises(nnkit.ShapeError, match="learned_positional_embedding.*max_len"):
        P.LearnedPositionalEmbedding(4).init(KEY, (T, D))
    with pytest.raises(nnkit.ShapeError, match="max_len"):
        lrn.apply(p, s, _x((1, 9, D)))
    with pytest.raises(nnkit.ShapeError, match=rf"has 1 features, the table \(8, {D}\)"):
        lrn.apply(p, s, _x((1, T, 1)))  # would broadcast silently


def test_attention_and_dropconnect_name_a_wrong_feature_size():
    from nnkit.layers import DropConnect

    mha = nnkit.serial(A.MultiHeadAttention(2, 3))
    _, p, s = mha.init(KEY, (T, D))
    with pytest.raises(nnkit.ShapeError, match=rf"multi_head_attention_0: x of shape "
                                               rf"\(1, {T}, {D + 1}\) .* query projection"):
        mha.apply(p, s, _x((1, T, D + 1)))
    cross = A.MultiHeadCrossAttention(2, 3, name="cross")
    _, p, s = cross.init(KEY, ((T, D), (5, 6)))
    with pytest.raises(nnkit.ShapeError, match=r"cross: keys/values of shape \(1, 5, 7\) has "
                                               r"7 features, the key projection"):
        cross.apply(p, s, (_x((1, T, D)), _x((1, 5, 7))))
    dc = DropConnect(3, name="dc")
    _, p, s = dc.init(KEY, (4,))
    with pytest.raises(nnkit.ShapeError, match=r"dc: x of shape \(2, 5\) .* w \(4, 3\)"):
        dc.apply(p, s, jnp.ones((2, 5)))


ALL = [
    A.MultiHeadAttention(2, 3),
    A.MultiHeadAttention(2, 3, out_features=4, causal=True),
    A.TransformerEncoderBlock(2, 3, 8),
    A.TransformerEncoder(1, 2, 3, 8, positional=P.LearnedPositionalEmbedding(T)),
    P.SinusoidalPositionalEncoding(),
    nnkit.serial(P.SinusoidalPositionalEncoding(), A.TransformerEncoderBlock(2, 3, 8),
                 A.TransformerEncoderBlock(2, 3, 8)),
]


@pytest.mark.parametrize("lyr", ALL, ids=lambda lyr: lyr.kind)
def test_init_shape_matches_eval_shape_jit_and_vmap(lyr):
    out, p, s = lyr.init(KEY, (T, D))
    x = _x()
    y = jax.eval_shape(lambda p, x: lyr.apply(p, s, x)[0], p, x)
    assert y.shape[1:] == out
    batched, _ = jax.jit(lambda x: lyr.apply(p, s, x))(x)
    per_ex = jax.jit(jax.vmap(lambda xi: lyr.apply(p, s, xi[None])[0][0]))(x)
    np.testing.assert_allclose(per_ex, batched, rtol=1e-5, atol=1e-5)


def test_bad_inputs_name_the_layer():
    with pytest.raises(nnkit.ShapeError, match="attn.*\\(T, D\\)"):
        A.MultiHeadAttention(2, 3, name="attn").init(KEY, (D,))
    with pytest.raises(nnkit.ShapeError, match="multi_head_attention.*padding_mask"):
        A.MultiHeadAttention(2, 3).init(KEY, ((T, D), (T + 1,)))
    with pytest.raises(nnkit.ShapeError, match="num_heads"):
        A.MultiHeadAttention(0, 3)
    with pytest.raises(nnkit.ShapeError, match="cross.*\\(Tk, C\\)"):
        A.MultiHeadCrossAttention(2, 3).init(KEY, (T, D))
    mha = A.MultiHeadAttention(2, 3)
    _, p, s = mha.init(KEY, (T, D))
    with pytest.raises(nnkit.ShapeError, match="padding mask shape"):
        mha.apply(p, s, (_x(), jnp.ones((B, T + 1), bool)))
