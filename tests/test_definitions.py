"""Definitions pinned against their formulas: defaults, boundaries, signs and ranges.

Each test compares nnkit with an independent truth (Optax's own transformation, a written-out
formula, the full range a sampler must reach) at a point where a plausible slip (an
off-by-one, a flipped sign, a wrong default) would change the answer.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nnkit
from nnkit import optim
from nnkit.data import augment, splits
from nnkit.layers import Dense, Dropout, Embedding, LayerNorm
from nnkit.layers.attention import MultiHeadAttention, TransformerEncoderBlock
from nnkit.losses import weights_only
from nnkit.metrics import accuracy
from nnkit.train import EarlyStopping, create_train_state, make_train_step
from nnkit.train.early_stopping import early_stopping_init, early_stopping_update

# ----------------------------------------------------------------------------- data


def test_stratified_split_draws_each_class_at_random():
    """Which examples of a class go to each part depends on the seed (not the first ones)."""
    y = np.repeat(np.arange(2), 50)
    tests = [set(splits.split_indices(y, (0.8, 0.2), seed=s, stratify=True)[1].tolist())
             for s in range(3)]
    assert all(len(t) == 20 for t in tests)
    assert tests[0] != tests[1] and tests[1] != tests[2]
    assert tests[0] != set(range(40, 50)) | set(range(90, 100))


def test_translate_and_crop_reach_every_offset_in_range():
    """``random_translate`` draws dy, dx from -m..m and ``random_crop`` offsets from 0..2p,
    both ends included (a hot pixel's position tells the shift)."""
    m = 2
    img = jnp.zeros((9, 9, 1)).at[4, 4, 0].set(1.0)
    keys = jax.random.split(jax.random.key(0), 300)

    def shift(out):
        r, c = np.unravel_index(int(np.argmax(out[..., 0])), (9, 9))
        return r - 4, c - 4

    moved = jax.vmap(lambda k: augment.random_translate(k, img, m))(keys)
    dys = {shift(np.asarray(o))[0] for o in moved}
    assert dys == set(range(-m, m + 1))
    cropped = jax.vmap(lambda k: augment.random_crop(k, img, m))(keys)
    dys = {shift(np.asarray(o))[0] for o in cropped}
    assert dys == set(range(-m, m + 1))  # offset o in 0..2p moves the pixel by p - o


# ----------------------------------------------------------------------------- init


def test_embedding_table_is_standard_normal_and_dense_bias_uses_fan_in():
    _, p, _ = Embedding(1000, 64).init(jax.random.key(0), (5,))
    table = np.asarray(jax.tree_util.tree_leaves(p)[0])
    assert abs(table.std() - 1.0) < 0.02 and abs(table.mean()) < 0.02
    # bias U[-1, 1] / sqrt(n_in): n_in = 4 -> bound 0.5 (1 / sqrt(features) would be 0.045)
    _, p, _ = Dense(500).init(jax.random.key(1), (4,))
    b = np.abs(np.asarray(p["b"]))
    assert b.max() <= 0.5 and b.max() > 0.45


def test_penalties_leave_out_biases_of_every_naming():
    assert weights_only("dense_0/w") and weights_only("lstm_0/w_ih")
    for path in ("dense_0/b", "lstm_0/b_ih", "lstm_0/b_hh", "layer_norm_0/scale",
                 "batch_norm_0/bias"):
        assert not weights_only(path), path


# ----------------------------------------------------------------------------- metrics


def test_a_logit_of_exactly_zero_predicts_class_zero():
    """Binary outputs ``(B, 1)``: class 1 when the logit is > 0 (probability > 0.5), so a
    tie goes to class 0, as ``(p > threshold)`` in common libraries."""
    assert float(accuracy(jnp.array([[0.0], [0.1]]), jnp.array([0, 1]))) == 1.0
    assert float(accuracy(jnp.array([[0.5]]), jnp.array([0]), threshold=0.5)) == 1.0


# ----------------------------------------------------------------------------- optimizers


def _updates(opt, steps=3):
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    state = opt.init(params)
    out = []
    for t in range(steps):
        g = {"w": jnp.array([0.3, -0.1, 0.2]) * (t + 1)}
        u, state = opt.update(g, state, params)
        params = optax.apply_updates(params, u)
        out.append(np.asarray(params["w"]))
    return np.stack(out)


@pytest.mark.parametrize("name,reference", [
    ("momentum", lambda: optax.sgd(0.1, momentum=0.9)),
    ("nesterov", lambda: optax.sgd(0.1, momentum=0.9, nesterov=True)),
    ("nadamw", lambda: optax.nadamw(0.1, weight_decay=0.05)),
    ("adamw", lambda: optax.adamw(0.1, weight_decay=0.05)),
])
def test_named_optimizers_equal_optax_with_the_documented_defaults(name, reference):
    kw = {"weight_decay": 0.05} if name in ("nadamw", "adamw") else {}
    np.testing.assert_allclose(_updates(optim.make(name, 0.1, **kw)), _updates(reference()),
                               rtol=1e-6)
    if name == "nesterov":  # and it is not plain momentum
        assert not np.allclose(_updates(optim.make("nesterov", 0.1)),
                               _updates(optim.make("momentum", 0.1)))


def test_sgdr_restarts_at_the_peak_exactly_at_each_cycle_start():
    s = optim.schedule("sgdr", learning_rate=0.1, period=10, t_mult=2.0)
    for start in (0, 10, 30, 70):  # cycles of 10, 20, 40
        np.testing.assert_allclose(float(s(start)), 0.1, rtol=1e-6)
        assert float(s(start - 1 if start else 1)) < 0.1 * 0.99
    c = optim.schedule("sgdr", learning_rate=0.1, period=10)
    np.testing.assert_allclose(float(c(5)), 0.05, rtol=1e-5)  # half way: (1 + cos(pi/2)) / 2


# ----------------------------------------------------------------------------- early stopping


@pytest.mark.parametrize("mode,values,improved", [
    ("min", [1.0, 0.95, 0.85, 0.9], [True, False, True, False]),   # min_delta 0.1 from best
    ("max", [0.5, 0.55, 0.65, 0.6], [True, False, True, False]),
])
def test_early_stopping_counts_only_improvements_beyond_min_delta(mode, values, improved):
    monitor = "val_loss" if mode == "min" else "val_accuracy"
    cfg = EarlyStopping(monitor=monitor, patience=5, min_delta=0.1, restore_best=False)
    model = nnkit.serial(Dense(2))
    ts = early_stopping_init(cfg, create_train_state(model, (2,), optax.sgd(0.1), 0))
    best, bad = None, 0
    for e, (v, up) in enumerate(zip(values, improved, strict=True)):
        ts = early_stopping_update(cfg, ts, v, e)
        if up:
            best, bad = v, 0
        else:
            bad += 1
        assert float(ts.best_metric) == pytest.approx(best) and int(ts.bad_epochs) == bad
    assert cfg.mode == "auto" and cfg.direction == mode
    # replace() with another monitor re-resolves the direction
    import dataclasses

    flipped = dataclasses.replace(cfg, monitor="val_loss" if mode == "max" else "val_accuracy")
    assert flipped.direction == ("min" if mode == "max" else "max")


# ----------------------------------------------------------------------------- steps


def test_accumulated_steps_report_the_batch_penalty_and_loss():
    model = nnkit.serial(Dense(4), Dense(3))
    opt = optax.sgd(0.1)
    ts = create_train_state(model, (2,), opt, 0)
    x = jax.random.normal(jax.random.key(1), (8, 2))
    y = jnp.arange(8) % 3
    _, whole = make_train_step(model, "cross_entropy", opt, l2=0.1, jit=False)(ts, (x, y))
    _, acc = make_train_step(model, "cross_entropy", opt, l2=0.1, grad_mode="accumulate",
                             microbatches=4, jit=False)(ts, (x, y))
    np.testing.assert_allclose(acc["penalty"], whole["penalty"], rtol=1e-6)
    np.testing.assert_allclose(acc["loss"], whole["loss"], rtol=1e-5)


def test_each_step_draws_new_dropout_masks():
    """Step t's randomness is fold_in(step key, t): with the learning rate 0 the params do
    not move, so equal losses on the same batch would mean equal masks."""
    model = nnkit.serial(Dense(16), Dropout(0.5), Dense(2))
    opt = optax.sgd(0.0)
    step = make_train_step(model, "cross_entropy", opt)
    ts = create_train_state(model, (3,), opt, 0)
    batch = (jnp.ones((4, 3)), jnp.array([0, 1, 0, 1]))
    losses = []
    for _ in range(3):
        ts, m = step(ts, batch)
        losses.append(float(m["loss"]))
    assert len(set(losses)) == 3


# ----------------------------------------------------------------------------- attention


def test_transformer_block_is_the_written_pre_layernorm_composition():
    """x + Attn(LN(x)), then + MLP(LN(.)), written out with the block's own sublayers."""
    block = TransformerEncoderBlock(num_heads=2, key_size=4, mlp_dim=16)
    x = jax.random.normal(jax.random.key(2), (3, 5, 8))
    _, p, _ = block.init(jax.random.key(0), (5, 8))
    got, _ = block.apply(p, {}, x)
    h, _ = LayerNorm().apply(p["ln_1"], {}, x)
    a, _ = MultiHeadAttention(2, 4).apply(p["attention"], {}, h)
    x1 = x + a
    m = p["mlp"]["block"]
    z, _ = LayerNorm().apply(m["layer_norm_0"], {}, x1)
    z = nnkit.activations.gelu(z @ m["dense_0"]["w"] + m["dense_0"]["b"])
    want = x1 + z @ m["dense_1"]["w"] + m["dense_1"]["b"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # its dropout acts on the attention branch in train mode: with the MLP branch zeroed
    # (its last Dense all 0) only that dropout can change the output
    drop = TransformerEncoderBlock(num_heads=2, key_size=4, mlp_dim=16, dropout=0.5)
    zero = {**p, "mlp": {"block": {**m, "dense_1": jax.tree_util.tree_map(jnp.zeros_like,
                                                                           m["dense_1"])}}}
    y_train, _ = drop.apply(zero, {}, x, key=jax.random.key(3), train=True)
    y_eval, _ = drop.apply(zero, {}, x)
    np.testing.assert_allclose(y_eval, x1, rtol=1e-6, atol=1e-6)
    assert not np.allclose(y_train, y_eval)


@pytest.mark.parametrize("period,t_mult", [(10, 10.0), (10, 2.0), (7, 3.0), (5, 1.5), (10, 1.0)])
def test_sgdr_under_jit_equals_a_float64_walk_through_the_cycles(period, t_mult):
    """Training evaluates the schedule jitted, in float32: every restart must still land on
    its step (t_mult=10 once skipped the one at step 110)."""
    s = jax.jit(optim.schedule("sgdr", learning_rate=1.0, period=period, t_mult=t_mult))
    t = np.arange(20000)
    got = np.asarray(jax.vmap(s)(jnp.asarray(t)))
    want, start, length = np.empty(t.size), 0.0, float(period)
    for k in t:
        while k >= start + length - 1e-9:
            start, length = start + length, length * t_mult
        want[k] = 0.5 * (1 + np.cos(np.pi * (k - start) / length))
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_leaky_relu_default_slope_and_lr_find_smoothing():
    from nnkit.layers import LeakyRelu
    from nnkit.train.lr_find import smooth_losses

    y, _ = LeakyRelu().apply({}, {}, jnp.array([-10.0, 3.0]))
    np.testing.assert_allclose(y, [-0.1, 3.0], rtol=1e-6)
    raw = np.array([1.0, 2.0, 3.0, 0.5])
    for beta in (0.5, 0.9):  # bias-corrected EMA, written out
        ema, want = 0.0, []
        for i, v in enumerate(raw):
            ema = beta * ema + (1 - beta) * v
            want.append(ema / (1 - beta ** (i + 1)))
        np.testing.assert_allclose(smooth_losses(raw, beta), want, rtol=1e-12)


def test_the_first_non_finite_step_is_named():
    """4 steps per epoch; the rate jumps to 3e38 for the update of step 9 (epoch 2, step 1),
    so step 10's loss (epoch 2, step 2) is the first non-finite one."""
    from nnkit import initializers
    from nnkit.train import fit

    x = np.linspace(-1, 1, 32, dtype=np.float32)[:, None]
    model = Dense(1, use_bias=False, w_init=initializers.zeros)
    lr = optim.schedule("step", learning_rate=0.02, boundaries=[9], values=[0.02, 3e38])
    r = fit(model, optim.make("sgd", lr), (x, 100 * x), loss="mse", epochs=6, batch_size=8,
            progress=False)
    assert r.stop_reason.startswith("non-finite loss at epoch 2, step 2 "), r.stop_reason


def test_directions_default_from_the_monitor_everywhere():
    from nnkit.train import stop_when
    from nnkit.train.sweep import SweepResult

    res = SweepResult(configs=[{}, {}], histories=[{"val_accuracy": [0.9], "val_loss": [0.3]},
                                                   {"val_accuracy": [0.7], "val_loss": [0.2]}],
                      train_states=None)
    assert res.best("val_accuracy") == 0 and res.best("val_loss") == 1
    assert stop_when("val_accuracy", 0.8)(0, None, {"val_accuracy": 0.85})
    assert not stop_when("val_loss", 0.1)(0, None, {"val_loss": 0.2})


def test_an_unhashable_loss_object_trains():
    import dataclasses

    @dataclasses.dataclass
    class Scaled:  # eq=True makes it unhashable
        w: float = 1.0

        def __call__(self, pred, y, reduction="mean"):
            return self.w * nnkit.losses.cross_entropy(pred, y, reduction=reduction)

    from nnkit.train import fit

    x = np.random.default_rng(0).normal(size=(32, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    r = fit(nnkit.serial(Dense(2)), "sgd", (x, y), loss=Scaled(), epochs=1, batch_size=8,
            progress=False)
    assert np.isfinite(r.history["train_loss"][-1]) and "train_accuracy" in r.history
