"""fit(): scan vs step paths, exact resume, early stopping, non-finite rollback, plateau,
callbacks, bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _jaxpr import all_eqns

import nnkit
from nnkit import initializers, optim
from nnkit.layers import Dense, Relu
from nnkit.train import (
    INTERRUPT,
    EarlyStopping,
    Plateau,
    TrainState,
    create_train_state,
    epoch_order,
    fit,
    stop_when,
)
from nnkit.train.early_stopping import early_stopping_init
from nnkit.train.state import as_key, key_data

N, D, C = 96, 2, 3


def mlp():
    return nnkit.serial(Dense(8), Relu(), Dense(C))


def blobs(seed=0, n=N):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, size=n).astype(np.int32)
    centers = np.array([[0.0, 2.0], [2.0, -1.0], [-2.0, -1.0]], np.float32)
    x = centers[y] + 0.7 * rng.normal(size=(n, D)).astype(np.float32)
    return x, y


TRAIN, VAL = blobs(0), blobs(1, 40)
KEYS = {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "grad_norm",
        "seconds"}


def no_seconds(h):
    return {k: v for k, v in h.items() if k != "seconds"}


def test_scan_and_step_paths_agree_and_history_keys():
    kw = dict(val_data=VAL, epochs=3, batch_size=16, key=3)
    per_step = []
    a = fit(mlp(), optim.make("adam", 1e-2), TRAIN, mode="scan", **kw)
    b = fit(mlp(), optim.make("adam", 1e-2), TRAIN, mode="step",
            step_callbacks=[lambda t, ts, m: per_step.append(float(m["grad_norm"]))], **kw)
    assert set(a.history) == KEYS == set(b.history)
    assert a.history["epoch"] == [0, 1, 2] and a.epochs_run == 3
    assert a.stop_reason == "completed"
    chex.assert_trees_all_close(a.train_state.params, b.train_state.params, rtol=1e-5,
                                atol=1e-6)
    for k in KEYS - {"seconds", "epoch"}:
        np.testing.assert_allclose(a.history[k], b.history[k], rtol=1e-5, atol=1e-6)
    assert a.history["train_loss"][-1] < a.history["train_loss"][0]
    assert int(a.train_state.step) == 3 * (N // 16)
    assert a.best_epoch == int(np.argmin(a.history["val_loss"]))
    # grad_norm is the norm at each epoch's last step (the scanned epoch computes it there
    # only); step mode computes every step's, and the epoch's last one is logged
    steps = N // 16
    last = [per_step[(e + 1) * steps - 1] for e in range(3)]
    mean = [np.mean(per_step[e * steps:(e + 1) * steps]) for e in range(3)]
    np.testing.assert_allclose(a.history["grad_norm"], last, rtol=1e-5)
    assert not np.allclose(a.history["grad_norm"], mean, rtol=1e-3)
    # without step callbacks, step mode computes the norm on each epoch's last step only
    # (a device flag into one compiled step: no retrace); same logged values
    c = fit(mlp(), optim.make("adam", 1e-2), TRAIN, mode="step", **kw)
    np.testing.assert_allclose(c.history["grad_norm"], last, rtol=1e-5)
    chex.assert_trees_all_close(c.train_state.params, b.train_state.params, rtol=1e-6)


def test_scan_path_visits_the_epoch_order():
    """The scan path visits exactly the batches epoch_order gives (checked via a
    streaming run that feeds those batches by hand)."""
    opt = optim.make("sgd", 0.1)
    ts = create_train_state(mlp(), (D,), opt, 5)

    def stream(epoch):
        idx = epoch_order(ts.key, epoch, N, 32)
        for row in idx:
            yield TRAIN[0][row], TRAIN[1][row]

    a = fit(mlp(), opt, TRAIN, epochs=2, batch_size=32, key=5, mode="scan")
    b = fit(mlp(), opt, stream, epochs=2, key=5, mode="step", input_shape=(D,))
    chex.assert_trees_all_close(a.train_state.params, b.train_state.params, rtol=1e-5,
                                atol=1e-6)
    # made ahead on a background thread: the same batches in the same order
    for data in (stream, TRAIN):
        c = fit(mlp(), opt, data, epochs=2, batch_size=32, key=5, mode="step",
                input_shape=(D,), prefetch_batches=2)
        chex.assert_trees_all_close(c.train_state.params, b.train_state.params, rtol=1e-6,
                                    atol=1e-7)


def test_resume_reproduces_an_uninterrupted_run_exactly():
    es = EarlyStopping(patience=10)
    pl = Plateau(patience=1, factor=0.5)
    model, opt = mlp(), optim.make("adam", 1e-2)  # same objects: the compiled epoch is reused
    kw = dict(val_data=VAL, batch_size=16, key=7, early_stopping=es, plateau=pl)
    full = fit(model, opt, TRAIN, epochs=4, **kw)
    first = fit(model, opt, TRAIN, epochs=2, **kw)
    saved = first.train_state
    second = fit(model, opt, TRAIN, epochs=4, start_epoch=2, train_state=saved, **kw)
    assert second.history["seconds"][0] < full.history["seconds"][0]  # no recompilation
    assert not saved.params["dense_0"]["w"].is_deleted()  # resume copies, not consumes
    chex.assert_trees_all_equal(full.train_state, second.train_state)
    for k in KEYS - {"seconds"}:
        assert full.history[k] == first.history[k] + second.history[k], k


def test_early_stopping_restores_the_best_params():
    # w starts at 0 and moves towards the train target 2; val target 1 is passed on the
    # way, so val loss falls, then rises: best epoch is when w is nearest 1.
    x = np.linspace(-1, 1, 32, dtype=np.float32)[:, None]
    model = Dense(1, use_bias=False, w_init=initializers.zeros)
    seen = {}

    def remember(epoch, ts, logs):
        seen[epoch] = np.asarray(ts.params["w"]).copy()

    r = fit(model, optim.make("sgd", 0.02), (x, 2 * x), val_data=(x, 1 * x), loss="mse",
            metrics=(), epochs=50, batch_size=8, early_stopping=EarlyStopping(patience=3),
            callbacks=[remember])
    best = int(np.argmin(r.history["val_loss"]))
    assert 0 < best < len(r.history["val_loss"]) - 1
    assert r.best_epoch == best
    assert r.epochs_run == best + 4
    assert "early stopping" in r.stop_reason and f"best epoch {best}" in r.stop_reason
    np.testing.assert_array_equal(r.train_state.params["w"], seen[best])
    assert abs(float(r.train_state.params["w"][0, 0]) - 1.0) < abs(seen[best + 3][0, 0] - 1.0)


def test_restore_best_also_when_early_stopping_never_fires_and_last_state_resumes():
    """restore_best returns the best epoch's params however the run ends (as Keras); the
    state before restoring, ``last_state``, passed back resumes exactly."""
    x = np.linspace(-1, 1, 32, dtype=np.float32)[:, None]
    model, opt = Dense(1, use_bias=False, w_init=initializers.zeros), optim.make("sgd", 0.02)
    kw = dict(val_data=(x, 1 * x), loss="mse", metrics=(), batch_size=8, key=0)
    es = EarlyStopping(patience=100)
    seen = {}
    full = fit(model, opt, (x, 2 * x), epochs=30, early_stopping=es,
               callbacks=[lambda e, ts, logs: seen.update({e: np.asarray(ts.params["w"])})],
               **kw)
    assert full.stop_reason == "completed"
    # val loss falls, then rises: the best epoch is neither the first nor the last
    best = full.best_epoch
    assert 0 < best == int(np.argmin(full.history["val_loss"])) < 29
    np.testing.assert_array_equal(full.train_state.params["w"], seen[best])
    np.testing.assert_array_equal(full.last_state.params["w"], seen[29])
    plain = fit(model, opt, (x, 2 * x), epochs=30, **kw)  # nothing restored: the same state
    np.testing.assert_array_equal(full.last_state.params["w"], plain.train_state.params["w"])
    assert plain.last_state is plain.train_state
    first = fit(model, opt, (x, 2 * x), epochs=20, early_stopping=es, **kw)
    second = fit(model, opt, (x, 2 * x), epochs=30, start_epoch=20,
                 train_state=first.last_state, early_stopping=es, **kw)
    chex.assert_trees_all_equal(full.last_state, second.last_state)
    chex.assert_trees_all_equal(full.train_state, second.train_state)
    for k in ("train_loss", "val_loss", "lr", "grad_norm"):
        assert full.history[k] == first.history[k] + second.history[k], k
    assert second.best_epoch == full.best_epoch


def test_resuming_a_state_whose_patience_is_used_up_stops_without_training():
    """An interrupt in the epoch where early stopping fires leaves fit before its
    early-stopping check; resuming that state must finish as the uninterrupted run did."""
    x = np.linspace(-1, 1, 32, dtype=np.float32)[:, None]
    model, opt = Dense(1, use_bias=False, w_init=initializers.zeros), optim.make("sgd", 0.02)
    kw = dict(val_data=(x, 1 * x), test_data=(x, 1.5 * x), loss="mse", metrics=(),
              batch_size=8, key=0, epochs=50, early_stopping=EarlyStopping(patience=3))
    full = fit(model, opt, (x, 2 * x), **kw)
    assert full.stop_reason.startswith("early stopping")
    last = full.epochs_run - 1
    cut = fit(model, opt, (x, 2 * x),
              callbacks=[lambda e, ts, logs: INTERRUPT if e == last else None], **kw)
    assert cut.stop_reason.startswith("interrupted") and cut.epochs_run == full.epochs_run
    assert int(cut.train_state.bad_epochs) == 3
    rest = fit(model, opt, (x, 2 * x), train_state=cut.train_state, start_epoch=last + 1, **kw)
    assert rest.stop_reason == full.stop_reason
    assert rest.epochs_run == 0 and rest.history == {}
    assert int(rest.train_state.step) == int(full.train_state.step) == full.epochs_run * 4
    chex.assert_trees_all_equal(rest.train_state, full.train_state)
    assert rest.best_epoch == full.best_epoch == last - 3
    # the best params are restored: test loss mean((w - 1.5)^2 x^2) at the best epoch's w
    w = float(full.train_state.params["w"][0, 0])
    assert rest.test_metrics["test_loss"] == pytest.approx(
        float(np.mean((w - 1.5) ** 2 * x.astype(np.float64) ** 2)), rel=1e-5)
    assert rest.test_metrics == full.test_metrics


@pytest.mark.parametrize("stop", ["early_stopping", "non_finite"])
def test_a_queued_epoch_never_trains_past_a_stop(stop):
    """Without epoch callbacks the scan path queues epoch e + 1 before reading epoch e's
    logs; when epoch e ends training, the queued epoch must leave the state untouched. The
    same run with a (do-nothing) callback is not queued: both must agree exactly."""
    x = np.linspace(-1, 1, 32, dtype=np.float32)[:, None]
    model = Dense(1, use_bias=False, w_init=initializers.zeros)
    if stop == "early_stopping":
        opt, kw = optim.make("sgd", 0.02), dict(early_stopping=EarlyStopping(patience=3))
    else:  # the 4th epoch's learning rate makes the loss overflow
        opt, kw = optim.make("sgd", optim.schedule(
            "step", learning_rate=0.02, boundaries=[12], values=[0.02, 1e38])), {}
    run = dict(val_data=(x, 1 * x), loss="mse", metrics=(), epochs=40, batch_size=8,
               mode="scan", **kw)
    queued = fit(model, opt, (x, 2 * x), **run)
    seen = []
    plain = fit(model, opt, (x, 2 * x), callbacks=[lambda e, ts, logs: seen.append(e)], **run)
    assert queued.stop_reason == plain.stop_reason and queued.stop_reason != "completed"
    assert queued.epochs_run == plain.epochs_run < 40
    assert seen == list(range(plain.epochs_run))
    steps = plain.epochs_run * 4  # 32 examples, batch 8; a rolled-back epoch takes none
    assert int(queued.train_state.step) == int(plain.train_state.step) == steps
    chex.assert_trees_all_equal(queued.train_state, plain.train_state)
    assert {k: v for k, v in queued.history.items() if k != "seconds"} == {
        k: v for k, v in plain.history.items() if k != "seconds"}


def test_non_finite_loss_stops_and_returns_the_last_good_state():
    steps_per_epoch = N // 16
    # lr 1e-2 for two epochs, then absurd: the third epoch blows up
    sched = optim.schedule("step", learning_rate=1e-2, boundaries=[2 * steps_per_epoch],
                           values=[1e-2, 1e30])
    kw = dict(batch_size=16, key=1)
    model, opt = mlp(), optim.make("sgd", sched)
    r = fit(model, opt, TRAIN, epochs=5, **kw)
    assert r.stop_reason.startswith("non-finite loss at epoch 2, step ")
    assert r.epochs_run == 2 and len(r.history["train_loss"]) == 2
    two = fit(model, opt, TRAIN, epochs=2, **kw)
    chex.assert_trees_all_equal(r.train_state.params, two.train_state.params)
    assert np.all(np.isfinite(np.asarray(r.train_state.params["dense_0"]["w"])))

    huge = fit(mlp(), optim.make("sgd", 1e30), TRAIN, epochs=3, batch_size=16, key=1,
               mode="step")
    assert "non-finite loss at epoch 0" in huge.stop_reason
    init = create_train_state(mlp(), (D,), optim.make("sgd", 1e30), 1)
    chex.assert_trees_all_equal(huge.train_state.params, init.params)


@pytest.mark.parametrize("mode", ["scan", "step"])
def test_an_update_that_overflows_on_the_epochs_last_step_is_rolled_back(mode):
    """Each step's loss is computed before its update, so an overflow in the epoch's last
    update shows in no loss of that epoch: the end-of-epoch parameters are checked too."""
    x = np.linspace(-1, 1, 32, dtype=np.float32)[:, None]
    model = Dense(1, use_bias=False, w_init=initializers.zeros)
    # batch 8: 4 steps per epoch; the rate jumps at step 11, the last step of epoch 2
    lr = optim.schedule("step", learning_rate=0.02, boundaries=[11], values=[0.02, 3e38])
    opt = optim.make("sgd", lr)
    r = fit(model, opt, (x, 100 * x), loss="mse", metrics=(), epochs=6, batch_size=8,
            mode=mode)
    assert r.stop_reason.startswith("non-finite parameters at epoch 2, step 3 of the epoch")
    assert r.epochs_run == 2 and int(r.train_state.step) == 8
    # independent: plain SGD on mean((w x - 100 x)^2) over the same batches, 8 steps
    key = create_train_state(model, (1,), opt, 0).key
    w = np.float32(0.0)
    for e in range(2):
        for rows in epoch_order(key, e, 32, 8):
            xb = x[rows, 0]
            w = w - np.float32(0.02) * np.mean(2 * xb * (w * xb - 100 * xb))
    assert np.isfinite(w) and 10 < w < 100
    np.testing.assert_allclose(np.asarray(r.train_state.params["w"])[0, 0], w, rtol=1e-5)
    assert all(np.all(np.isfinite(a)) for a in jax.tree_util.tree_leaves(r.train_state))


def test_plateau_scale_drops_after_patience_epochs():
    # a tiny LR: val loss barely moves, so with min_delta nothing counts as improvement
    r = fit(mlp(), optim.make("sgd", 1e-9), TRAIN, val_data=VAL, epochs=5, batch_size=32,
            plateau=Plateau(patience=2, factor=0.5, min_delta=1e-3))
    # epoch 0 sets best; 1, 2 bad -> halve after epoch 2; 3, 4 bad -> halve after epoch 4
    assert r.history["lr_scale"] == [1.0, 1.0, 0.5, 0.5, 0.25]
    np.testing.assert_allclose(r.history["lr"], [1e-9, 1e-9, 1e-9, 5e-10, 5e-10], rtol=1e-5)


def test_callbacks_see_every_epoch_and_can_stop():
    calls = []
    r = fit(mlp(), optim.make("adam", 5e-2), TRAIN, epochs=30, batch_size=16,
            callbacks=[lambda e, ts, logs: calls.append((e, int(ts.step))),
                       stop_when("train_accuracy", 0.8, mode="max")])
    assert "stop_when(train_accuracy >= 0.8)" in r.stop_reason
    assert r.history["train_accuracy"][-1] >= 0.8
    assert calls == [(e, (e + 1) * (N // 16)) for e in range(len(calls))]
    assert len(calls) == r.epochs_run < 30


def test_interrupt_from_a_callback_skips_the_test_set():
    """A callback returning INTERRUPT stops like True but fit does not evaluate test_data
    (the user asked to stop now); True still evaluates it."""
    model, opt = mlp(), optim.make("adam", 1e-2)
    kw = dict(test_data=VAL, epochs=5, batch_size=32, progress=False)
    r = fit(model, opt, TRAIN, callbacks=[lambda e, ts, logs: INTERRUPT if e == 1 else None],
            **kw)
    assert r.epochs_run == 2 and r.history["epoch"] == [0, 1]
    assert r.stop_reason.startswith("interrupted") and "after epoch 1" in r.stop_reason
    assert r.test_metrics == {}
    r = fit(model, opt, TRAIN, callbacks=[lambda e, ts, logs: e == 1], **kw)
    assert r.epochs_run == 2 and set(r.test_metrics) == {"test_loss", "test_accuracy"}
    with pytest.raises(ValueError, match="returned 'stop'"):
        fit(model, opt, TRAIN, callbacks=[lambda e, ts, logs: "stop"], **kw)


def _create_op_by_op(model, input_shape, optimizer, key, es):
    """The previous create_train_state (eager, op by op) + early_stopping_init: the truth."""
    k_init, k_train = jax.random.split(as_key(key_data(key)))
    _, params, state = model.init(k_init, input_shape)
    ts = TrainState(step=jnp.zeros((), jnp.int32), params=params, state=state,
                    opt_state=optimizer.init(params), key=jax.random.key_data(k_train))
    return ts if es is None else early_stopping_init(es, ts)


def test_create_train_state_compiles_the_model_init_once_for_any_optimizer():
    traces = []
    base = mlp()

    def init(key, shape):
        traces.append(shape)  # runs once per trace, not per call
        return base.init(key, shape)

    model = base._replace(init=init)
    opt, es, pl = optim.make("adam", 1e-2), EarlyStopping(), Plateau()
    for key in (3, 4, 2**31 + 5, jax.random.key(5), jax.random.PRNGKey(6)):
        got = create_train_state(model, (D,), opt, key, early_stopping=es, plateau=pl)
        want = _create_op_by_op(base, (D,), opt, key, es)._replace(
            plateau=optim.plateau_init(pl))
        chex.assert_trees_all_equal(got, want)
    # one trace for the int seeds in int32 range, one for key data (2**31 + 5 and keys)
    assert len(traces) == 2
    # another learning rate (a constant in the optimizer's program) reuses the model's
    # init program, the expensive one to compile (random-number kernels)
    opt2 = optim.make("adam", 3e-2)
    got = create_train_state(model, (D,), opt2, 3)
    chex.assert_trees_all_equal(got.params, create_train_state(base, (D,), opt, 3).params)
    assert float(got.opt_state.hyperparams["learning_rate"]) == pytest.approx(3e-2)
    assert len(traces) == 2


@pytest.mark.parametrize("name, shape", [
    ("lenet5", (28, 28, 1)), ("lstm_classifier", (7, 3)),
    ("mlp_bn", (5,)), ("gru_embed", (6,)),
])
def test_create_train_state_values_equal_op_by_op_for_each_layer_kind(name, shape):
    """The init programs compile without LLVM optimisation on a CPU (they run once): the
    values must still be the op-by-op ones, bit for bit, for every kind of initializer."""
    from nnkit import models
    from nnkit.layers import GRU, BatchNorm, Embedding

    model = {
        "lenet5": lambda: models.lenet5(),
        "lstm_classifier": lambda: models.lstm_classifier(8, 3),
        "mlp_bn": lambda: nnkit.serial(Dense(9), BatchNorm(), Relu(), Dense(2)),
        "gru_embed": lambda: nnkit.serial(Embedding(11, 4), GRU(5), Dense(2)),
    }[name]()
    opt = optim.make("adamw", 1e-3, weight_decay=1e-2)
    got = create_train_state(model, shape, opt, 7)
    want = _create_op_by_op(model, shape, opt, 7, None)
    chex.assert_trees_all_equal(got, want)


def test_create_train_state_inside_jit_and_eval_shape():
    """Inside another trace the init programs take that trace's compile options (options
    can only be given at the top level): same values, same shapes."""
    opt = optim.make("adam", 1e-2)
    top = create_train_state(mlp(), (D,), opt, 3)
    chex.assert_trees_all_equal(jax.jit(lambda: create_train_state(mlp(), (D,), opt, 3))(), top)
    shapes = jax.eval_shape(lambda: create_train_state(mlp(), (D,), opt, 3))
    chex.assert_trees_all_equal_shapes_and_dtypes(shapes, top)


def test_test_data_and_progress_bar(capsys):
    r = fit(mlp(), optim.make("adam", 1e-2), TRAIN, test_data=VAL, epochs=1, batch_size=32,
            progress=True)
    assert set(r.test_metrics) == {"test_loss", "test_accuracy"}
    logits, _ = mlp().apply(r.train_state.params, {}, jnp.asarray(VAL[0]))
    ref = -np.mean(np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)),
                                      VAL[1][:, None], 1))
    assert r.test_metrics["test_loss"] == pytest.approx(float(ref), rel=1e-5)
    assert "epoch" in capsys.readouterr().err


def test_bad_inputs_give_clear_errors():
    opt = optim.make("sgd", 0.1)
    with pytest.raises(ValueError, match=r"\(2,\).*input_shape is \(3,\)"):
        fit(mlp(), opt, TRAIN, input_shape=(3,), epochs=1)
    y_bad = TRAIN[1].copy()
    y_bad[5] = 7
    with pytest.raises(ValueError, match="train_data y: label 7 at index 5.*3 outputs"):
        fit(mlp(), opt, (TRAIN[0], y_bad), epochs=1)
    with pytest.raises(ValueError, match="batch_size 200 is larger than the training set"):
        fit(mlp(), opt, TRAIN, batch_size=200)
    with pytest.raises(ValueError, match="val_data x has per-example shape \\(3,\\)"):
        fit(mlp(), opt, TRAIN, val_data=(np.zeros((4, 3), np.float32), VAL[1][:4]))
    with pytest.raises(ValueError, match="x has 96 examples but y has 95"):
        fit(mlp(), opt, (TRAIN[0], TRAIN[1][:-1]))
    with pytest.raises(ValueError, match="monitors 'val_loss'.*give val_data"):
        fit(mlp(), opt, TRAIN, early_stopping=EarlyStopping())
    with pytest.raises(ValueError, match="unknown mode"):
        fit(mlp(), opt, TRAIN, mode="fast")
    ts = create_train_state(mlp(), (5,), opt, 0)
    with pytest.raises(ValueError, match="train_state params do not fit the model"):
        fit(mlp(), opt, TRAIN, train_state=ts)
    with pytest.raises(ValueError, match="loss cannot compare model outputs"):
        fit(mlp(), opt, (TRAIN[0], np.zeros((N, 5), np.float32)), loss="mse", metrics=())
    for kw, name in ((dict(epochs=-1), "epochs"), (dict(epochs=2.0), "epochs"),
                     (dict(start_epoch=-2), "start_epoch"),
                     (dict(eval_batch_size=0), "eval_batch_size")):
        val = next(iter(kw.values()))
        with pytest.raises(ValueError, match=rf"{name} must be .*got {val!r}"):
            fit(mlp(), opt, TRAIN, val_data=VAL, **kw)


def test_step_callbacks_run_every_step_in_step_mode_only():
    seen = []

    def cb(step, ts, metrics):
        seen.append((step, float(metrics["loss"])))
        return step == 8  # stop in the middle of epoch 1 (6 steps per epoch)

    closed = []

    def stream(epoch):  # 6 batches an epoch, as TRAIN in batches of 16
        try:
            for i in range(0, 96, 16):
                yield TRAIN[0][i:i + 16], TRAIN[1][i:i + 16]
        finally:
            closed.append(epoch)

    for data, pf in ((TRAIN, None), (stream, 2)):
        seen.clear()
        r = fit(mlp(), optim.make("sgd", 0.1), data, epochs=3, batch_size=16,
                step_callbacks=[cb], prefetch_batches=pf, input_shape=(D,))
        assert [s for s, _ in seen] == list(range(1, 9))
        assert r.stop_reason == "step callback stopped training at step 8"
        assert int(r.train_state.step) == 8 and r.history["epoch"] == [0, 1]
    assert closed == [0, 1]  # the prefetching thread closed the stream it stopped in
    with pytest.raises(ValueError, match="step_callbacks need mode='step'"):
        fit(mlp(), optim.make("sgd", 0.1), TRAIN, mode="scan", step_callbacks=[cb])


def test_fit_trains_a_multi_task_loss_and_logs_each_part():
    """A fanout model with two heads and ``losses.multi_task`` as fit's loss: the logged
    train_loss is the weighted sum of the logged per-task parts, computed independently."""
    from nnkit import losses

    x, y = blobs(0)
    r = np.linalg.norm(x, axis=1, keepdims=True).astype(np.float32)
    targets = {"cls": y, "reg": r}
    model = nnkit.serial(Dense(16), Relu(),
                         nnkit.fanout(Dense(C, name="cls"), Dense(1, name="reg")))
    mt = losses.multi_task(cls=("cross_entropy", 2.0), reg=("mse", 0.5))
    res = fit(model, optim.make("adam", 1e-2), (x, targets), epochs=3, batch_size=32, key=0,
              loss=mt, metrics={"acc": lambda p, t: nnkit.metrics.accuracy(p[0], t["cls"])},
              val_data=(x, targets))
    h = res.history
    assert {"train_loss_cls", "train_loss_reg", "val_loss_cls", "val_loss_reg"} <= set(h)
    np.testing.assert_allclose(h["val_loss"], 2.0 * np.array(h["val_loss_cls"])
                               + 0.5 * np.array(h["val_loss_reg"]), rtol=1e-5)
    pred, _ = model.apply(res.train_state.params, res.train_state.state, jnp.asarray(x))
    ce = float(losses.softmax_cross_entropy(pred[0], jnp.asarray(y)))
    np.testing.assert_allclose(h["val_loss_cls"][-1], ce, rtol=1e-5)
    assert h["train_loss"][-1] < h["train_loss"][0]
    with pytest.raises(ValueError, match="sequence of 3 but there are 2 tasks"):
        mt((pred[0], pred[1], pred[1]), targets)


def _gather_shapes(jaxpr) -> list[tuple[int, ...]]:
    """Output shapes of every gather in ``jaxpr`` and the jaxprs nested in it."""
    return [tuple(e.outvars[0].aval.shape) for e in all_eqns(jaxpr)
            if e.primitive.name == "gather"]


def test_scanned_epoch_gathers_each_batch_inside_the_loop():
    """The epoch gathers each step's rows in the loop: it never builds a (num_batches,
    batch, ...) copy of the data before the first step."""
    from nnkit.train.epoch import make_epoch_fns

    opt = optim.make("sgd", 0.1)
    step = nnkit.make_train_step(mlp(), "cross_entropy", opt, jit=False)
    fns = make_epoch_fns(step, n=N, batch_size=16)
    ts = create_train_state(mlp(), (D,), opt, 0)
    idx = jnp.asarray(epoch_order(ts.key, 0, N, 16))
    x, y = map(jnp.asarray, TRAIN)
    jaxpr = jax.make_jaxpr(lambda ts, idx: fns.epoch(ts, 0, idx, x, y, None, None))(ts, idx)
    shapes = _gather_shapes(jaxpr.jaxpr)
    assert (16, D) in shapes and (16,) in shapes  # one batch of x and of y per step
    assert not [s for s in shapes if s[:2] == (N // 16, 16)], shapes


# ------------------------------------------------ checks that run before anything compiles


def _tiny_data(n=16):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, 2, n).astype(np.int32)


def test_fit_names_nan_in_numpy_data_and_its_index():
    x, y = _tiny_data()
    x[5, 2] = np.inf
    with pytest.raises(ValueError, match=r"train_data x has 1 NaN/inf value\(s\), the first at "
                                         r"index \(5, 2\)"):
        nnkit.fit(Dense(2), "sgd", (x, y), epochs=1, batch_size=8, progress=False)
    xv, yv = _tiny_data(4)
    xv[:] = np.nan
    with pytest.raises(ValueError, match=r"val_data x has 12 NaN/inf"):
        nnkit.fit(Dense(2), "sgd", _tiny_data(), val_data=(xv, yv), epochs=1, batch_size=8,
                  progress=False)
    # the same on the device: val data with a NaN made every val_loss NaN, silently
    xv = np.ones((4, 3), np.float32)
    xv[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"val_data x has 1 NaN/inf value\(s\), the first at "
                                         r"index \(3, 1\)"):
        nnkit.fit(Dense(2), "sgd", _tiny_data(), val_data=(jnp.asarray(xv), jnp.asarray(yv)),
                  epochs=1, batch_size=8, progress=False)


def test_fit_traces_apply_on_the_data_dtype_before_compiling():
    """Float data into an Embedding fails at the abstract check, naming the inputs' shape and
    dtype; a layer whose apply disagrees with the output shape its init declares is named."""
    x, y = _tiny_data()
    emb = nnkit.serial(nnkit.layers.Embedding(10, 4), nnkit.layers.Flatten(), Dense(2))
    with pytest.raises(ValueError, match=r"cannot be applied to inputs \(3,\) float32: "
                                         r"TypeError: embedding: expected integer token ids"):
        nnkit.fit(emb, "sgd", (x, y), epochs=1, batch_size=8, progress=False)
    liar = nnkit.core.layer("liar", lambda key, s: ((5,), {}, {}),
                            lambda p, s, v, **kw: (v[:, :2], s))
    with pytest.raises(nnkit.ShapeError, match=r"init declares per-example outputs \(5,\) but "
                                               r"its apply gives \(2,\)"):
        nnkit.fit(liar, "sgd", (x, y), epochs=1, batch_size=8, progress=False)


def test_token_ids_outside_the_embedding_vocabulary_are_named():
    ids = np.tile(np.arange(6, dtype=np.int32), (4, 1))  # ids 0..5
    y = np.zeros(4, np.int32)
    model = nnkit.serial(nnkit.layers.Embedding(5, 3), nnkit.layers.Flatten(), Dense(2))
    with pytest.raises(ValueError, match=r"embedding_0: vocab_size is 5, but train_data x holds "
                                         r"token id 5 \(at index \(0, 5\)"):
        nnkit.fit(model, "sgd", (ids, y), epochs=1, batch_size=2, progress=False)
    ok = nnkit.serial(nnkit.layers.Embedding(6, 3), nnkit.layers.Flatten(), Dense(2))
    assert nnkit.fit(ok, "sgd", (ids, y), epochs=1, batch_size=2, progress=False).epochs_run == 1


def test_a_softmax_before_cross_entropy_warns_naming_it():
    x, y = _tiny_data()
    model = nnkit.serial(Dense(2), nnkit.layers.Softmax())
    with pytest.warns(UserWarning, match=r"ends in a softmax \(softmax_0\) and the loss is "
                                         r"cross_entropy"):
        nnkit.fit(model, "sgd", (x, y), epochs=1, batch_size=8, progress=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # logits with cross-entropy, or softmax with nll: quiet
        nnkit.fit(Dense(2), "sgd", (x, y), epochs=1, batch_size=8, progress=False)
        nnkit.fit(model, "sgd", (x, y), loss=lambda p, t: jnp.mean(p), epochs=1,
                  batch_size=8, progress=False)


def test_nll_on_a_model_without_log_softmax_warns_naming_its_last_layer():
    x, y = _tiny_data()
    for model, last in [(nnkit.models.build({"arch": "mlp", "hidden": [4], "out": 2}),
                         r"dense \(out\)"),
                        (nnkit.serial(Dense(2), nnkit.layers.Softmax()),
                         r"softmax \(softmax_0\)")]:
        with pytest.warns(UserWarning, match=rf"the loss is nll, which takes log-probabilities, "
                                             rf"but the model ends in {last}, not a log_softmax"):
            nnkit.fit(model, "sgd", (x, y), loss="nll", epochs=1, batch_size=8,
                      progress=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # log_softmax with nll: quiet
        nnkit.fit(nnkit.serial(Dense(2), nnkit.layers.LogSoftmax()), "sgd", (x, y),
                  loss=nnkit.losses.nll, epochs=1, batch_size=8, progress=False)


def test_binary_cross_entropy_targets_outside_0_1_are_refused_before_training():
    x, _ = _tiny_data(18)
    y = np.arange(18, dtype=np.int32) % 3  # class ids of 3 classes into a 1-output model
    for loss in ("binary_cross_entropy", nnkit.losses.binary_cross_entropy):
        with pytest.raises(ValueError, match=r"takes targets in \[0, 1\], but train_data y "
                                             r"holds 2 \(6 of 18 values.*3 classes found"):
            nnkit.fit(Dense(1), "sgd", (x, y), loss=loss, epochs=1, batch_size=6,
                      progress=False)
    # the same targets on the device
    with pytest.raises(ValueError, match=r"but train_data y holds 2 \(6 of 18 values"):
        nnkit.fit(Dense(1), "sgd", (x, jnp.asarray(y)), loss="binary_cross_entropy",
                  epochs=1, batch_size=6, progress=False)
    soft = np.linspace(0, 1, 18, dtype=np.float32)  # probabilities: fine
    nnkit.fit(Dense(1), "sgd", (x, soft), loss="binary_cross_entropy", metrics=[], epochs=1,
              batch_size=6, progress=False)
    nnkit.fit(Dense(1), "sgd", (x, jnp.asarray(soft)), loss="binary_cross_entropy",
              metrics=[], epochs=1, batch_size=6, progress=False)


def test_default_metrics_follow_the_loss_and_metrics_are_checked_before_compiling():
    from nnkit.train.gradients import default_metrics

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype(np.float32)
    y = x.sum(1, keepdims=True)
    assert default_metrics("cross_entropy") == ("accuracy",)
    assert default_metrics(nnkit.losses.mse) == default_metrics("huber") == ()
    # regression: no meaningless accuracy logged by default
    r = fit(nnkit.serial(Dense(1)), "adam", (x, y), loss="mse", epochs=1, batch_size=8)
    assert not any("accuracy" in k for k in r.history)
    # classification keeps accuracy by default
    r = fit(mlp(), "adam", blobs(), epochs=1, batch_size=16)
    assert "train_accuracy" in r.history
    # two heads: each task's loss, no accuracy; an accuracy asked for fails early, named
    two = nnkit.fanout(Dense(2, name="a"), Dense(1, name="b"))
    ys = (np.zeros(32, np.int32), y)
    loss = nnkit.losses.multi_task(a=("cross_entropy", 1.0), b=("mse", 1.0))
    r = fit(two, "adam", (x, ys), loss=loss, epochs=1, batch_size=8)
    assert {"train_loss_a", "train_loss_b"} <= set(r.history)
    assert not any("accuracy" in k for k in r.history)
    with pytest.raises(ValueError, match=r"metric 'accuracy' cannot compare model outputs"):
        fit(two, "adam", (x, ys), loss=loss, metrics=["accuracy"], epochs=1, batch_size=8)


def test_multi_task_heads_pair_with_tasks_by_name_or_the_order_is_refused():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype(np.float32)
    ys = {"price": 10 * x[:, :1], "volume": x[:, 1:2]}
    heads = (Dense(1, name="price"), Dense(1, name="volume"))
    by_name = nnkit.fanout(*heads, as_dict=True)
    out, p, s = by_name.init(jax.random.key(0), (3,))
    assert out == {"price": (1,), "volume": (1,)}
    y, _ = by_name.apply(p, s, x)
    np.testing.assert_array_equal(y["price"], x @ p["price"]["w"] + p["price"]["b"])
    # weight 0 on volume: only the price head may change, whatever the tasks' order
    model, opt = nnkit.serial(by_name), optim.make("sgd", 1e-2)
    start = create_train_state(model, (3,), opt, 0).params["fanout_0"]
    for order in (("price", "volume"), ("volume", "price")):
        loss = nnkit.losses.multi_task(**{k: ("mse", float(k == "price")) for k in order})
        r = fit(model, opt, (x, ys), loss=loss, epochs=2, batch_size=8)
        got = r.train_state.params["fanout_0"]
        np.testing.assert_array_equal(got["volume"]["w"], start["volume"]["w"])
        assert not np.array_equal(got["price"]["w"], start["price"]["w"])
    loss = nnkit.losses.multi_task(volume="mse", price="mse")
    with pytest.raises(ValueError, match=r"heads \['price', 'volume'\] and the loss's tasks "
                                         r"\['volume', 'price'\].*as_dict=True"):
        fit(nnkit.fanout(*heads), "adam", (x, ys), loss=loss, epochs=1, batch_size=8)
    # a task whose prediction does not fit its target is named
    with pytest.raises(ValueError, match="multi_task: task 'volume'"):
        nnkit.losses.multi_task(price="mse", volume="cross_entropy")(
            (x[:, :1], x[:, :1]), {"price": x[:, :1], "volume": x[:, :2]})


def test_unnamed_metric_callables_are_named_by_position():
    from nnkit.train.gradients import resolve_metrics

    def top(pred, y):
        return jnp.mean(pred[:, 0])

    names = [n for n, _ in resolve_metrics(["accuracy", lambda p, y: 0.0, top])]
    assert names == ["accuracy", "metric_1", "top"]


def test_long_step_mode_epochs_stack_their_metrics_in_chunks(monkeypatch):
    """150 steps per epoch (chunks of 64, 64 and 22): the logged loss is the mean of the 150
    step losses, no stacking program takes more than STACK_CHUNK steps, and the first
    non-finite step (epoch 1, step 100: in the second chunk) is named."""
    from nnkit.train import compiled

    sizes = []
    real = compiled.compiled_fit_fns

    def spy(*args, **kw):
        cf = real(*args, **kw)

        def stack(ms):
            sizes.append(len(ms))
            return cf.stack(ms)

        return compiled.Compiled(cf.epoch, cf.step, cf.finish, stack, cf.names)

    monkeypatch.setattr("nnkit.train.loop.compiled_fit_fns", spy)
    x = np.linspace(-1, 1, 1200, dtype=np.float32)[:, None]
    model = Dense(1, use_bias=False, w_init=initializers.zeros)
    lr = optim.schedule("step", learning_rate=0.02, boundaries=[249], values=[0.02, 3e38])
    losses = []
    r = fit(model, optim.make("sgd", lr), (x, 100 * x), loss="mse", epochs=3, batch_size=8,
            mode="step", progress=False,
            step_callbacks=[lambda t, ts, m: losses.append(float(m["loss"]))])
    assert r.stop_reason.startswith("non-finite loss at epoch 1, step 100 "), r.stop_reason
    assert sizes[:3] == [compiled.STACK_CHUNK, compiled.STACK_CHUNK, 150 - 2 * 64]
    assert max(sizes) <= compiled.STACK_CHUNK
    np.testing.assert_allclose(r.history["train_loss"], [np.mean(losses[:150])], rtol=1e-5)


def test_a_resumed_state_trains_with_the_optimizer_given():
    """fit(train_state=...) with the same optimizer at another rate: the new rate trains
    (the injected rate lives in the optimizer state, which used to win silently) and the
    moments carry on; the state of another optimizer is refused, naming the difference."""
    from nnkit.optim import get_lr

    first = fit(mlp(), optim.make("adam", 1e-2), TRAIN, epochs=1, batch_size=16,
                progress=False)
    ts = first.train_state
    again = fit(mlp(), optim.make("adam", 0.5), TRAIN, epochs=1, batch_size=16,
                progress=False, train_state=ts)
    assert again.history["lr"] == [pytest.approx(0.5)]
    assert float(get_lr(again.train_state.opt_state)) == pytest.approx(0.5)
    # the step and Adam's count went on from the first run's
    n_steps = int(ts.step)
    assert int(again.train_state.step) == 2 * n_steps
    count = [a for p, a in jax.tree_util.tree_flatten_with_path(again.train_state.opt_state)[0]
             if "count" in jax.tree_util.keystr(p)]
    assert count and all(int(c) == 2 * n_steps for c in count)
    with pytest.raises(ValueError, match=r"opt_state does not fit the optimizer given: it "
                                         r"(lacks|has) opt_state"):
        fit(mlp(), optim.make("sgd", 0.1, momentum=0.9), TRAIN, epochs=1, batch_size=16,
            progress=False, train_state=ts)
    with pytest.raises(ValueError, match="opt_state does not fit"):
        fit(mlp(), optax.adam(1e-3), TRAIN, epochs=1, batch_size=16, progress=False,
            train_state=ts)


def test_predict_and_evaluate_check_their_data_before_compiling():
    from nnkit.core import ShapeError

    model = mlp()
    _, params, state = model.init(jax.random.key(0), TRAIN[0].shape[1:])
    x, y = TRAIN
    with pytest.raises(ValueError, match=r"x of shape \(2,\) is one example without its batch "
                                         r"axis: pass x\[None\]"):
        nnkit.predict(model, params, state, x[0])
    with pytest.raises(ShapeError, match="has 1 features on its last axis"):
        nnkit.predict(model, params, state, x[:, :1])
    with pytest.raises(ValueError, match=r"^data y: label 7 at index 0 is outside \[0, 3\)"):
        nnkit.evaluate(model, params, state, (x, np.full(len(x), 7, np.int32)))
    bad = x.copy()
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        nnkit.evaluate(model, params, state, (bad, y))
    assert nnkit.predict(model, params, state, x[:1]).shape == (1, 3)
