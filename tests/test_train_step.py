"""The train step: one trace, metrics, equality with a hand-written step, gradient modes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import nnkit
from nnkit import optim
from nnkit.layers import Dense, Tanh
from nnkit.train import (
    TrainState,
    clip_per_example,
    create_train_state,
    make_eval_step,
    make_train_step,
    per_example_grads,
)

B, D, C = 8, 3, 4


def mlp():
    return nnkit.serial(Dense(5), Tanh(), Dense(C))


def data(seed=0, n=B):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)).astype(np.float32)
    y = rng.integers(0, C, size=n).astype(np.int32)
    return jnp.asarray(x), jnp.asarray(y)


def xent(logits, y):
    """Independent cross entropy (not nnkit.losses)."""
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))


def acc(logits, y):
    return jnp.mean(jnp.argmax(logits, -1) == y)


def test_traced_once_for_a_fixed_shape_and_retraced_for_a_new_one():
    traces = []

    def counting_loss(pred, y):
        traces.append(1)
        return xent(pred, y)

    opt = optim.make("adam", 1e-2)
    step = make_train_step(mlp(), counting_loss, opt, metrics=())
    ts = create_train_state(mlp(), (D,), opt, 0)
    for i in range(4):
        ts, m = step(ts, data(i))
    assert len(traces) == 1
    ts, m = step(ts, data(9, n=2 * B))
    assert len(traces) == 2
    assert int(ts.step) == 5


def test_metrics_keys_and_values():
    opt = optim.make("sgd", 0.1)
    model = mlp()
    ts = create_train_state(model, (D,), opt, 1)
    p0 = ts.params
    x, y = data()
    step = make_train_step(model, xent, opt, metrics={"acc": acc}, l2=0.01,
                           log_grad_norm=True)
    logits, _ = model.apply(p0, {}, x)
    ref_loss = xent(logits, y)
    ref_pen = 0.01 * (jnp.sum(p0["dense_0"]["w"] ** 2) + jnp.sum(p0["dense_1"]["w"] ** 2))
    ts, m = step(ts, (x, y))
    assert set(m) == {"loss", "acc", "penalty", "grad_norm", "lr"}
    chex.assert_shape(list(m.values()), ())
    np.testing.assert_allclose(m["loss"], ref_loss, rtol=1e-6)
    np.testing.assert_allclose(m["acc"], acc(logits, y), rtol=1e-6)
    np.testing.assert_allclose(m["penalty"], ref_pen, rtol=1e-5)
    np.testing.assert_allclose(m["lr"], 0.1, rtol=1e-6)
    lean = make_train_step(model, xent, opt, metrics=())  # default: no grad_norm
    _, m2 = lean(ts, (x, y))
    assert set(m2) == {"loss", "lr"}


def test_step_equals_hand_written_jax_optax_step():
    model = mlp()
    opt_n = optim.make("adam", 3e-2)
    ts = create_train_state(model, (D,), opt_n, 2)
    params = jax.tree_util.tree_map(jnp.copy, ts.params)

    # hand-written: plain jax.grad + optax.adam, cross entropy written out
    def loss_fn(p, x, y):
        h = jnp.tanh(x @ p["dense_0"]["w"] + p["dense_0"]["b"])
        return xent(h @ p["dense_1"]["w"] + p["dense_1"]["b"], y)

    opt = optax.adam(3e-2)
    o = opt.init(params)

    @jax.jit
    def hand_step(params, o, x, y):
        loss, g = jax.value_and_grad(loss_fn)(params, x, y)
        u, o = opt.update(g, o, params)
        return optax.apply_updates(params, u), o, loss, g

    step = make_train_step(model, "cross_entropy", opt_n, metrics=("accuracy",),
                           log_grad_norm=True)
    for i in range(3):
        x, y = data(i)
        params, o, loss, g = hand_step(params, o, x, y)
        ts, m = step(ts, (x, y))
        np.testing.assert_allclose(m["loss"], loss, rtol=1e-5)
        np.testing.assert_allclose(m["grad_norm"], optax.tree.norm(g), rtol=1e-5)
    chex.assert_trees_all_close(ts.params, params, rtol=1e-5, atol=1e-6)


def test_donated_state_is_consumed_and_keys_of_both_kinds_work():
    opt = optim.make("sgd", 0.1)
    model = mlp()
    ts_typed = create_train_state(model, (D,), opt, jax.random.key(3))
    ts_legacy = create_train_state(model, (D,), opt, jax.random.PRNGKey(3))
    ts_int = create_train_state(model, (D,), opt, 3)
    chex.assert_trees_all_equal(ts_typed, ts_legacy, ts_int)
    assert ts_typed.key.dtype == jnp.uint32
    step = make_train_step(model, xent, opt, metrics=())
    old = ts_typed.params["dense_0"]["w"]
    ts2, _ = step(ts_typed, data())
    assert old.is_deleted()
    assert isinstance(ts2, TrainState)


def test_lr_metric_follows_the_schedule():
    sched = optim.schedule("cyclic", base_lr=0.0, max_lr=0.4, step_size=2)
    opt = optim.make("sgd", sched)
    model = mlp()
    ts = create_train_state(model, (D,), opt, 0)
    step = make_train_step(model, xent, opt, metrics=())
    lrs = []
    for i in range(5):
        ts, m = step(ts, data(i))
        lrs.append(float(m["lr"]))
    np.testing.assert_allclose(lrs, [float(sched(t)) for t in range(5)], rtol=1e-6)
    np.testing.assert_allclose(lrs, [0.0, 0.2, 0.4, 0.2, 0.0], atol=1e-7)


def test_plateau_scale_multiplies_the_update():
    opt = optim.make("sgd", 0.5)
    model = mlp()
    ts = create_train_state(model, (D,), opt, 0)
    step = make_train_step(model, xent, opt, metrics=(), donate=False)
    ts_half = ts._replace(plateau=optim.plateau_init()._replace(scale=jnp.float32(0.25)))
    full, m_full = step(ts, data())
    quarter, m_q = step(ts_half, data())
    d_full = jax.tree_util.tree_map(jnp.subtract, full.params, ts.params)
    d_q = jax.tree_util.tree_map(jnp.subtract, quarter.params, ts.params)
    chex.assert_trees_all_close(d_q, jax.tree_util.tree_map(lambda a: 0.25 * a, d_full),
                                rtol=1e-5, atol=1e-7)
    assert float(m_q["lr"]) == pytest.approx(0.125)


@pytest.mark.parametrize("mode,micro", [("accumulate", 4), ("per_example", 1)])
def test_gradient_modes_match_the_batch_gradient(mode, micro):
    model = mlp()
    opt = optim.make("sgd", 1.0)  # new params = params - grad
    ts = create_train_state(model, (D,), opt, 4)
    batch = data(5)
    ref = make_train_step(model, xent, opt, metrics={"acc": acc}, donate=False,
                          log_grad_norm=True)(ts, batch)
    got = make_train_step(model, xent, opt, metrics={"acc": acc}, grad_mode=mode,
                          microbatches=micro, donate=False, log_grad_norm=True)(ts, batch)
    chex.assert_trees_all_close(got[0].params, ref[0].params, rtol=1e-6, atol=1e-6)
    for k in ("loss", "acc", "grad_norm"):
        np.testing.assert_allclose(got[1][k], ref[1][k], rtol=1e-6)


def test_per_example_grads_mean_and_sum_equal_batch_gradients():
    model = mlp()
    _, params, state = model.init(jax.random.key(0), (D,))
    x, y = data(6)
    pe = jax.jit(lambda p: per_example_grads(model, xent, p, state, (x, y)))(params)
    chex.assert_shape(pe["dense_0"]["w"], (B, D, 5))

    def batch_loss(p, reduce):
        logits, _ = model.apply(p, state, x)
        lp = jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)
        return -reduce(lp)

    mean_g = jax.jit(jax.grad(batch_loss), static_argnums=1)(params, jnp.mean)
    sum_g = jax.jit(jax.grad(batch_loss), static_argnums=1)(params, jnp.sum)
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda a: a.mean(0), pe), mean_g,
                                rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda a: a.sum(0), pe), sum_g,
                                rtol=1e-5, atol=1e-6)
    # and the gradient of one example agrees with finite differences
    @jax.jit
    def one(p):
        logits, _ = model.apply(p, state, x[:1])
        return xent(logits, y[:1])

    check_grads(one, (params,), order=1, modes=("rev",), atol=1e-2, rtol=1e-2)
    g0 = jax.grad(one)(params)
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda a: a[0], pe), g0, rtol=1e-5,
                                atol=1e-7)


def test_clip_per_example_bounds_each_norm_and_keeps_small_ones():
    g = {"a": jnp.array([[3.0, 4.0], [0.3, 0.4]]), "b": jnp.array([[0.0], [0.0]])}
    c = clip_per_example(g, 1.0)
    np.testing.assert_allclose(c["a"], [[0.6, 0.8], [0.3, 0.4]], rtol=1e-6)
    # per_example_clip in the step: the update uses the clipped mean (each example's norm
    # <= 1e-3, so the SGD step with lr 1 moves the params by <= 1e-3) ...
    model = mlp()
    opt = optim.make("sgd", 1.0)
    ts = create_train_state(model, (D,), opt, 0)
    s = make_train_step(model, xent, opt, metrics=(), grad_mode="per_example",
                        per_example_clip=1e-3, donate=False, log_grad_norm=True)
    x, y = data()
    new, m = s(ts, (x, y))
    moved = jax.tree_util.tree_map(lambda a, b: a - b, new.params, ts.params)
    assert 0 < float(optax.tree.norm(moved)) <= 1e-3 * (1 + 1e-5)
    # ... while the logged grad_norm is the norm of the unclipped mean gradient: the
    # gradient of the batch's mean loss
    g = jax.grad(lambda p: xent(model.apply(p, ts.state, x)[0], y))(ts.params)
    want = float(np.sqrt(sum(np.sum(np.asarray(a, np.float64) ** 2)
                             for a in jax.tree_util.tree_leaves(g))))
    assert want > 1e-2
    assert float(m["grad_norm"]) == pytest.approx(want, rel=1e-5)
    # the same under lax.cond (a traced flag, as in a scanned epoch); 0.0 where it is off
    on, off = (s(ts, (x, y), grad_norm=jnp.asarray(f))[1]["grad_norm"] for f in (True, False))
    assert float(on) == pytest.approx(want, rel=1e-5) and float(off) == 0.0


def test_augment_is_applied_inside_the_step():
    model = mlp()
    opt = optim.make("sgd", 1.0)
    ts = create_train_state(model, (D,), opt, 0)
    zero = make_train_step(model, xent, opt, metrics=(), augment=lambda k, x: x * 0.0,
                           donate=False)
    new, _ = zero(ts, data())
    # with zero inputs the first kernel gets no gradient
    np.testing.assert_array_equal(new.params["dense_0"]["w"], ts.params["dense_0"]["w"])


def test_eval_step_uses_train_false_and_hand_computed_values():
    model = mlp()
    _, params, state = model.init(jax.random.key(1), (D,))
    x, y = data(2)
    ev = make_eval_step(model, xent, {"acc": acc})
    out = ev(params, state, (x, y))
    logits, _ = model.apply(params, state, x)
    np.testing.assert_allclose(out["loss"], xent(logits, y), rtol=1e-6)
    np.testing.assert_allclose(out["acc"], acc(logits, y), rtol=1e-6)


def test_bad_step_arguments():
    opt = optim.make("sgd", 1.0)
    with pytest.raises(ValueError, match="unknown grad_mode 'batches'.*per_example"):
        make_train_step(mlp(), xent, opt, grad_mode="batches")
    with pytest.raises(ValueError, match="grad_mode='accumulate'"):
        make_train_step(mlp(), xent, opt, microbatches=2)
    s = make_train_step(mlp(), xent, opt, metrics=(), grad_mode="accumulate", microbatches=3)
    ts = create_train_state(mlp(), (D,), opt, 0)
    with pytest.raises(ValueError, match="8 is not divisible by microbatches=3"):
        s(ts, data())
    with pytest.raises(ValueError, match="unknown loss"):
        make_train_step(mlp(), "cross_entropyy", opt)


def test_per_example_gradients_refuse_batchnorm_in_train_mode():
    from nnkit.layers import BatchNorm

    model = nnkit.serial(Dense(4), BatchNorm(), Tanh(), Dense(2))
    _, p, s = model.init(jax.random.key(0), (3,))
    x, y = jnp.ones((4, 3)), jnp.zeros((4,), jnp.int32)
    with pytest.raises(ValueError, match="batch_norm_0: each example runs as a batch of one"):
        make_train_step(model, "cross_entropy", optax.sgd(0.1), grad_mode="per_example")
    with pytest.raises(ValueError, match="batch_norm_0"):
        per_example_grads(model, "cross_entropy", p, s, (x, y))
    # eval mode uses the running statistics: per-example gradients are well defined there
    g = per_example_grads(model, "cross_entropy", p, s, (x, y), train=False)
    assert jax.tree_util.tree_leaves(g)[0].shape[0] == 4
    make_train_step(model, "cross_entropy", optax.sgd(0.1), grad_mode="accumulate",
                    microbatches=2)  # accepted
