"""Recurrent cells and sequence layers: numpy reference equations, finite differences,
scan invariants (chunking, reversal, bidirectional), shapes, jit/vmap."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import nnkit
from nnkit.layers import recurrent as R

B, T, F, H = 2, 4, 3, 5
KEY = jax.random.key(0)


def _x(shape=(B, T, F), seed=1):
    return jax.random.normal(jax.random.key(seed), shape)


def _f64(tree):
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64)), tree)


@jax.jit
def _randomise(tree, seed=7, scale=0.5):
    """Non-trivial params (random biases too) so every term of the equations matters."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        treedef, [scale * jax.random.normal(k, a.shape) for k, a in zip(keys, leaves, strict=True)]
    )


# ----------------------------------------------------------------------------- numpy truth


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_rnn(p, xs, h):
    hs = []
    for t in range(xs.shape[1]):
        h = np.tanh(xs[:, t] @ p["w_ih"] + h @ p["w_hh"] + p["b"])
        hs.append(h)
    return h, np.stack(hs, 1)


def np_lstm(p, xs, h, c):
    n = h.shape[-1]
    w_ih, w_hh, b = p["w_ih"], p["w_hh"], p["b"]
    hs = []
    for t in range(xs.shape[1]):
        x = xs[:, t]
        # gate k uses columns [k*H, (k+1)*H): i, f, g, o
        i = _sig(x @ w_ih[:, :n] + h @ w_hh[:, :n] + b[:n])
        f = _sig(x @ w_ih[:, n:2 * n] + h @ w_hh[:, n:2 * n] + b[n:2 * n])
        g = np.tanh(x @ w_ih[:, 2 * n:3 * n] + h @ w_hh[:, 2 * n:3 * n] + b[2 * n:3 * n])
        o = _sig(x @ w_ih[:, 3 * n:] + h @ w_hh[:, 3 * n:] + b[3 * n:])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs.append(h)
    return (h, c), np.stack(hs, 1)


def np_gru(p, xs, h):
    n = h.shape[-1]
    wi, wh, bi, bh = p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"]
    hs = []
    for t in range(xs.shape[1]):
        x = xs[:, t]
        r = _sig(x @ wi[:, :n] + bi[:n] + h @ wh[:, :n] + bh[:n])
        z = _sig(x @ wi[:, n:2 * n] + bi[n:2 * n] + h @ wh[:, n:2 * n] + bh[n:2 * n])
        nn = np.tanh(x @ wi[:, 2 * n:] + bi[2 * n:] + r * (h @ wh[:, 2 * n:] + bh[2 * n:]))
        h = (1 - z) * nn + z * h
        hs.append(h)
    return h, np.stack(hs, 1)


CELLS = {"rnn": R.RNNCell, "lstm": R.LSTMCell, "gru": R.GRUCell}
LAYERS = {"rnn": R.RNN, "lstm": R.LSTM, "gru": R.GRU}


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_cells_match_numpy_equations(kind):
    cell = CELLS[kind](H)
    p = _randomise(cell.init(KEY, F))
    x = _x()
    rng = np.random.default_rng(0)
    h0 = rng.normal(size=(B, H)).astype(np.float32)
    c0 = rng.normal(size=(B, H)).astype(np.float32)
    pn = jax.tree.map(np.asarray, p)
    xn = np.asarray(x, np.float64)
    if kind == "lstm":
        carry, hs = R.run_cell(cell, p, x, (jnp.asarray(h0), jnp.asarray(c0)))
        (h_ref, c_ref), hs_ref = np_lstm(pn, xn, h0, c0)
        np.testing.assert_allclose(carry[1], c_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(carry[0], h_ref, rtol=1e-5, atol=1e-5)
    else:
        carry, hs = R.run_cell(cell, p, x, jnp.asarray(h0))
        h_ref, hs_ref = (np_rnn if kind == "rnn" else np_gru)(pn, xn, h0)
        np.testing.assert_allclose(carry, h_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hs, hs_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_stacked_weight_step_equals_apply_and_broadcasts_a_carry(kind):
    """RNN/LSTM cells run one matmul ``[x, h] @ [W_ih; W_hh]`` per step (``prepare`` once,
    ``step`` per time step); it must equal ``apply`` and the equations, also for a carry
    without the batch axis (broadcast: the two-matmul branch)."""
    cell = CELLS[kind](H)
    p = _randomise(cell.init(KEY, F))
    x = _x()[:, 0]  # (B, F)
    rng = np.random.default_rng(1)
    h1 = jnp.asarray(rng.normal(size=(H,)).astype(np.float32))  # one carry for all rows
    carry = (h1, h1) if kind == "lstm" else h1
    stacked = cell.prepare(p)
    chex.assert_shape(stacked["w"], (F + H, (4 if kind == "lstm" else 1) * H))
    got = cell.step(stacked, carry, x)
    chex.assert_trees_all_close(got, cell.apply(p, carry, x), rtol=1e-6, atol=1e-6)
    full = jnp.broadcast_to(h1, (B, H))
    want = cell.apply(p, (full, full) if kind == "lstm" else full, x)
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)
    pn = jax.tree.map(np.asarray, p)
    xn = np.asarray(x, np.float64)[:, None]
    if kind == "lstm":
        _, hs_ref = np_lstm(pn, xn, np.asarray(full), np.asarray(full))
    else:
        _, hs_ref = np_rnn(pn, xn, np.asarray(full))
    np.testing.assert_allclose(got[1], hs_ref[:, 0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_cell_step_finite_differences(kind):
    cell = CELLS[kind](3)
    with jax.enable_x64(True):
        p = _f64(_randomise(cell.init(KEY, 2)))
        carry = _f64(jax.tree.map(lambda a: a + 0.3, cell.initial_state((2,))))
        x = _f64(_x((2, 2)))
        check_grads(jax.jit(cell.apply), (p, carry, x), order=1, modes=("rev",),
                    atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_sequence_layer_finite_differences(kind, return_sequences):
    lyr = LAYERS[kind](3, return_sequences=return_sequences)
    _, p, s = lyr.init(KEY, (3, 2))
    with jax.enable_x64(True):
        p = _f64(_randomise(p))
        x = _f64(_x((2, 3, 2)))

        def f(p, x):
            return lyr.apply(p, s, x)[0]

        check_grads(jax.jit(f), (p, x), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def test_parameter_layout_and_default_init():
    lstm = R.LSTMCell(H).init(KEY, F)
    chex.assert_shape([lstm["w_ih"], lstm["w_hh"], lstm["b"]], [(F, 4 * H), (H, 4 * H), (4 * H,)])
    expect_b = np.zeros(4 * H)
    expect_b[H:2 * H] = 1.0  # forget gate (chunk 1 of i, f, g, o)
    np.testing.assert_array_equal(lstm["b"], expect_b)
    gru = R.GRUCell(H).init(KEY, F)
    chex.assert_shape([gru["w_ih"], gru["w_hh"], gru["b_ih"], gru["b_hh"]],
                      [(F, 3 * H), (H, 3 * H), (3 * H,), (3 * H,)])
    rnn = R.RNNCell(H).init(KEY, F)
    chex.assert_shape([rnn["w_ih"], rnn["w_hh"], rnn["b"]], [(F, H), (H, H), (H,)])
    # hidden-to-hidden: every gate's (H, H) block is orthogonal
    for w, gates in ((rnn["w_hh"], 1), (lstm["w_hh"], 4), (gru["w_hh"], 3)):
        for k in range(gates):
            blk = np.asarray(w[:, k * H:(k + 1) * H])
            np.testing.assert_allclose(blk.T @ blk, np.eye(H), atol=1e-5)
    # Glorot uniform input weights: |w| <= sqrt(6 / (F + H)) per gate block
    assert np.abs(np.asarray(lstm["w_ih"])).max() <= np.sqrt(6 / (F + H)) + 1e-6
    assert R.LSTMCell(H, forget_bias=0.0).init(KEY, F)["b"].sum() == 0


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_chunked_scan_with_initial_carry_equals_whole_sequence(kind):
    cell = CELLS[kind](H)
    p = _randomise(cell.init(KEY, F))
    x = _x((B, 6, F))
    carry, hs = R.run_cell(cell, p, x)
    c1, h1 = R.run_cell(cell, p, x[:, :2])
    c2, h2 = R.run_cell(cell, p, x[:, 2:], initial_carry=c1)
    np.testing.assert_allclose(jnp.concatenate([h1, h2], 1), hs, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(c2, carry, rtol=1e-5, atol=1e-6)
    # a non-zero initial carry does change the outputs (the test above could fail)
    c0 = jax.tree.map(jnp.ones_like, cell.initial_state((B,)))
    assert not np.allclose(R.run_cell(cell, p, x, c0)[1], hs)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_return_options_and_reverse(kind):
    ctor = LAYERS[kind]
    x = _x()
    _, p, s = ctor(H).init(KEY, (T, F))
    p = _randomise(p)
    seq, _ = ctor(H).apply(p, s, x)
    last, _ = ctor(H, return_sequences=False).apply(p, s, x)
    np.testing.assert_allclose(last, seq[:, -1], rtol=1e-6)
    for unroll in (1, 2, 3):  # 3 leaves a remainder step for most T
        np.testing.assert_allclose(ctor(H, unroll=unroll).apply(p, s, x)[0], seq, rtol=1e-5,
                                   atol=1e-6)
    (y, carry), _ = ctor(H, return_state=True).apply(p, s, x)
    np.testing.assert_allclose(y, seq, rtol=1e-6)
    h_final = carry[0] if kind == "lstm" else carry
    np.testing.assert_allclose(h_final, seq[:, -1], rtol=1e-6)
    # reverse=True is the forward layer on the flipped sequence, outputs flipped back
    rev, _ = ctor(H, reverse=True).apply(p, s, x)
    np.testing.assert_allclose(rev, jnp.flip(ctor(H).apply(p, s, jnp.flip(x, 1))[0], 1),
                               rtol=1e-5, atol=1e-6)
    rev_last, _ = ctor(H, reverse=True, return_sequences=False).apply(p, s, x)
    np.testing.assert_allclose(rev_last, rev[:, 0], rtol=1e-6)


@pytest.mark.parametrize("return_sequences", [True, False])
def test_bidirectional_is_concat_of_forward_and_reversed_backward(return_sequences):
    inner = R.GRU(H, return_sequences=return_sequences)
    bi = R.Bidirectional(inner)
    out, p, s = bi.init(KEY, (T, F))
    assert set(p) == {"forward", "backward"}
    assert not np.allclose(p["forward"]["w_ih"], p["backward"]["w_ih"])
    x = _x()
    y, _ = bi.apply(p, s, x)
    f, _ = inner.apply(p["forward"], {}, x)
    b, _ = inner.apply(p["backward"], {}, jnp.flip(x, 1))
    if return_sequences:
        b = jnp.flip(b, 1)
    np.testing.assert_allclose(y, jnp.concatenate([f, b], -1), rtol=1e-6)
    assert y.shape[1:] == out == ((T, 2 * H) if return_sequences else (2 * H,))


def test_bidirectional_return_state_and_time_dependence():
    bi = R.Bidirectional(R.LSTM(H, return_state=True))
    out, p, s = bi.init(KEY, (T, F))
    apply = jax.jit(lambda x: bi.apply(p, s, x)[0])
    x = _x()
    y, (cf, cb) = apply(x)
    assert out == ((T, 2 * H), (((H,), (H,)), ((H,), (H,))))
    np.testing.assert_allclose(y[:, -1, :H], cf[0], rtol=1e-6)  # forward ends at T-1
    np.testing.assert_allclose(y[:, 0, H:], cb[0], rtol=1e-6)  # backward ends at 0
    # y[:, 0] depends on the last input only through the backward half
    y0 = apply(x)
    y1 = apply(x.at[:, -1].add(1.0))
    np.testing.assert_allclose(y0[0][:, 0, :H], y1[0][:, 0, :H], rtol=1e-6)
    assert not np.allclose(y0[0][:, 0, H:], y1[0][:, 0, H:])


LAYER_CASES = [
    R.RNN(H),
    R.LSTM(H, return_sequences=False),
    R.GRU(H, return_state=True),
    R.LSTM(H, return_state=True, return_sequences=False),
    R.Bidirectional(R.RNN(H)),
    R.Bidirectional(R.LSTM(H, return_sequences=False, return_state=True)),
    nnkit.serial(R.LSTM(4), R.GRU(H, return_sequences=False)),
    R.Bidirectional(nnkit.serial(R.LSTM(4), R.GRU(H))),
]


@pytest.mark.parametrize("lyr", LAYER_CASES, ids=lambda lyr: lyr.kind)
def test_init_shape_matches_eval_shape_and_jit(lyr):
    out, p, s = lyr.init(KEY, (T, F))
    x = _x()
    y = jax.eval_shape(lambda p, x: lyr.apply(p, s, x)[0], p, x)
    got = jax.tree.map(lambda a: a.shape[1:], y)
    assert got == out
    eager, _ = lyr.apply(p, s, x)
    jitted, _ = jax.jit(lambda p, x: lyr.apply(p, s, x))(p, x)
    chex.assert_trees_all_close(eager, jitted, rtol=1e-5, atol=1e-6)


def test_vmap_per_example_equals_batched():
    lyr = R.Bidirectional(R.LSTM(H))
    _, p, s = lyr.init(KEY, (T, F))
    x = _x((3, T, F))
    batched, _ = jax.jit(lambda x: lyr.apply(p, s, x))(x)
    per_example = jax.jit(jax.vmap(lambda xi: lyr.apply(p, s, xi[None])[0][0]))(x)
    np.testing.assert_allclose(per_example, batched, rtol=1e-5, atol=1e-6)
    # run_cell takes any number of leading batch dims
    cell = R.GRUCell(H)
    pc = cell.init(KEY, F)
    _, hs = R.run_cell(cell, pc, x.reshape(1, 3, T, F))
    np.testing.assert_allclose(hs[0], R.run_cell(cell, pc, x)[1], rtol=1e-6)


def test_serial_stack_param_paths():
    model = nnkit.serial(R.LSTM(8), R.LSTM(H, return_sequences=False), nnkit.layers.Dense(1))
    out, p, s = nnkit.core.abstract_init(model, (T, F))
    assert out == (1,) and set(p) == {"lstm_0", "lstm_1", "dense_0"}
    chex.assert_shape(p["lstm_1"]["w_ih"], (8, 4 * H))


def test_grad_norm_per_timestep_hand_values_and_causality():
    c = jnp.array([0.5, -2.0, 0.0, 3.0])
    lam = nnkit.Lambda(lambda x: x * c[None, :, None])
    x = _x()
    g = R.grad_norm_per_timestep(lam, {}, {}, x, jnp.sum)
    # d sum(c_t x_btf) / d x_btf = c_t  ->  ||.|| over (B, F) = |c_t| sqrt(B F)
    np.testing.assert_allclose(g, np.abs(c) * np.sqrt(B * F), rtol=1e-6)
    # causality of a recurrent layer: a loss on step k has zero gradient wrt later inputs
    lyr = R.LSTM(H)
    _, p, s = lyr.init(KEY, (T, F))
    g = R.grad_norm_per_timestep(lyr, p, s, x, lambda y: jnp.sum(y[:, 1]))
    assert g.shape == (T,)
    assert np.all(np.asarray(g[:2]) > 0) and np.all(np.asarray(g[2:]) == 0)


def test_bad_input_errors_name_the_layer():
    with pytest.raises(nnkit.ShapeError, match="my_lstm.*\\(T, F\\)"):
        R.LSTM(H, name="my_lstm").init(KEY, (F,))
    with pytest.raises(nnkit.ShapeError, match="gru.*hidden"):
        R.GRU(0)
    with pytest.raises(nnkit.ShapeError, match="lstm.*\\(B, T, F\\)"):
        lyr = R.LSTM(H)
        _, p, s = lyr.init(KEY, (T, F))
        lyr.apply(p, s, jnp.ones((T, F)))
    with pytest.raises(nnkit.ShapeError, match="bidirectional"):
        R.Bidirectional(R.RNN(H)).init(KEY, (F,))
    # a feature size the weights were not made for: the layer, both shapes (not XLA's error)
    for lyr in (R.RNN(H), R.LSTM(H), R.GRU(H), R.LSTM(H, return_sequences=False)):
        model = nnkit.serial(lyr)
        _, p, s = model.init(KEY, (T, F))
        with pytest.raises(nnkit.ShapeError, match=rf"_0: xs of shape \(2, {T}, {F + 1}\) has "
                                                   rf"{F + 1} features .* w_ih \({F}, \d+\)"):
            model.apply(p, s, jnp.ones((2, T, F + 1)))


def test_legacy_prngkey_init_matches_shapes():
    lyr = R.GRU(H)
    _, p_new, _ = lyr.init(jax.random.key(3), (T, F))
    _, p_old, _ = lyr.init(jax.random.PRNGKey(3), (T, F))
    chex.assert_trees_all_equal_shapes_and_dtypes(p_new, p_old)
