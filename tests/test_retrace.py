"""Repeated calls compile nothing new: fit, sweep and the optimizers they are keyed on.

Each test checks first that the counter sees the first call's programs (a fresh model is a
new cache key), so a test cannot pass by counting nothing."""

import jax
import numpy as np
import pytest
from _compiles import lowerings

import nnkit
from nnkit import optim
from nnkit.layers import Dense, Relu
from nnkit.train import fit, sweep

N, D, C = 64, 2, 3


def mlp():
    return nnkit.serial(Dense(8), Relu(), Dense(C))


def blobs(seed=0, n=N):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, size=n).astype(np.int32)
    x = np.eye(C, D, dtype=np.float32)[y] * 2 + 0.5 * rng.normal(size=(n, D)).astype(np.float32)
    return x, y


def compiles_once(call):
    """``call()`` twice: the first lowers programs, the second none and gives equal values."""
    with lowerings() as first:
        a = call()
    with lowerings() as again:
        b = call()
    assert len(first) > 0, "the first call compiled nothing: the counter sees nothing"
    assert len(again) == 0, f"{len(again)} programs lowered again"
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_make_and_schedule_return_one_object_per_argument_list():
    a = optim.make("adam", 1e-3, weight_decay=0.1, b1=0.8)
    assert optim.make("adam", 1e-3, weight_decay=0.1, b1=0.8) is a
    assert optim.make("adam", 2e-3, weight_decay=0.1, b1=0.8) is not a
    assert optim.make("adam", 1e-3, weight_decay=0.1, b1=0.9) is not a
    # an int rate is injected as an int: 1 and 1.0 are different optimizers
    assert optim.make("sgd", 1) is not optim.make("sgd", 1.0)
    s = optim.schedule("step", learning_rate=0.1, boundaries=[10, 20])
    assert optim.schedule("step", learning_rate=0.1, boundaries=[10, 20]) is s
    assert optim.schedule("step", learning_rate=0.1, boundaries=[10, 30]) is not s
    assert optim.make("adam", s) is optim.make("adam", s)
    # arrays cannot be hashed: no memo, but the same optimizer
    lr = jax.numpy.asarray(1e-3)
    assert optim.make("adam", lr) is not optim.make("adam", lr)
    # errors are raised on every call, not cached
    for _ in range(2):
        with pytest.raises(ValueError, match="learning_rate must be >= 0"):
            optim.make("adam", -1.0)


@pytest.mark.parametrize("optimizer", [
    "adam",
    lambda: optim.make("adam", 1e-2),
    lambda: optim.make("sgd", optim.schedule("cosine", learning_rate=0.1, decay_steps=40)),
])
def test_fit_again_with_an_optimizer_written_inline_compiles_nothing(optimizer):
    model, data = mlp(), blobs()
    build = optimizer if callable(optimizer) else (lambda: optimizer)
    kw = dict(epochs=2, batch_size=16, val_data=blobs(1, 32), test_data=blobs(2, 32))
    with lowerings() as first:
        r1 = fit(model, build(), data, **kw)
    with lowerings() as again:
        r2 = fit(model, build(), data, **kw)
    assert len(first) > 0
    assert len(again) == 0, f"{len(again)} programs lowered again"
    np.testing.assert_array_equal(r1.history["train_loss"], r2.history["train_loss"])
    assert r1.test_metrics == r2.test_metrics


@pytest.mark.parametrize("mode", ["scan", "step"])
def test_fit_compiles_do_not_grow_with_epochs(mode):
    model, data = mlp(), blobs()
    opt = optim.make("adam", 1e-2)
    with lowerings() as first:
        fit(model, opt, data, epochs=1, batch_size=16, mode=mode)
    with lowerings() as more:
        fit(model, opt, data, epochs=4, batch_size=16, mode=mode)
    assert len(first) > 0 and len(more) == 0


def test_step_mode_on_device_data_equals_numpy_data_and_gathers_in_one_program():
    model, data = mlp(), blobs()
    opt = optim.make("adam", 1e-2)
    host = fit(model, opt, data, epochs=2, batch_size=16, mode="step")
    on_device = jax.device_put(data)
    fit(model, opt, on_device, epochs=1, batch_size=16, mode="step")
    with lowerings() as again:
        dev = fit(model, opt, on_device, epochs=2, batch_size=16, mode="step")
    assert len(again) == 0
    np.testing.assert_allclose(dev.history["train_loss"], host.history["train_loss"],
                               rtol=1e-6)
    jax.tree_util.tree_map(np.testing.assert_array_equal, dev.train_state.params,
                           host.train_state.params)


def test_step_callbacks_see_the_step_count_without_reading_it_each_step():
    model, data = mlp(), blobs()
    seen = []

    def cb(step, ts, metrics):
        seen.append((step, int(ts.step)))

    fit(model, optim.make("adam", 1e-2), data, epochs=2, batch_size=16, mode="step",
        step_callbacks=[cb])
    assert [s for s, _ in seen] == list(range(1, 2 * N // 16 + 1))
    assert all(s == t for s, t in seen)


def test_sweep_again_over_other_values_compiles_nothing():
    model, data = mlp(), blobs()
    kw = dict(epochs=2, batch_size=16, val_data=blobs(1, 32), devices="auto")
    with lowerings() as first:
        r1 = sweep(model, "adam", data, learning_rates=[1e-3, 1e-2], **kw)
    with lowerings() as again:
        r2 = sweep(model, "adam", data, learning_rates=[3e-3, 3e-2], **kw)
    assert len(first) > 0
    assert len(again) == 0, f"{len(again)} programs lowered again"
    assert [c["learning_rate"] for c in r2.configs] == [3e-3, 3e-2]
    # the values are the new ones: the second sweep's runs differ from the first's
    assert not np.allclose(r1.histories[0]["train_loss"], r2.histories[0]["train_loss"])


def test_helpers_called_again_compile_nothing_and_equal_the_op_by_op_values():
    from nnkit import gan
    from nnkit.layers import Dropout
    from nnkit.mc_dropout import mc_predict
    from nnkit.train.gradients import make_objective, per_example_grads, per_example_value_and_grads

    model = nnkit.serial(Dense(8), Relu(), Dropout(0.3), Dense(C))
    x, y = blobs(n=8)
    _, p, s = model.init(jax.random.key(0), (D,))
    key = jax.random.key(1)
    calls = [
        lambda: per_example_grads(model, "cross_entropy", p, s, (x, y), key),
        lambda: mc_predict(model, p, s, x, key=key, num_samples=5),
    ]
    gen = nnkit.serial(Dense(D))
    gs = gan.init_gan(0, gen, nnkit.serial(Dense(1)), optim.make("adam", 1e-3),
                      optim.make("adam", 1e-3), latent_dim=3, data_shape=(D,))
    calls.append(lambda: gan.generate(gen, gs, 4, 6, latent_dim=3))
    for call in calls:
        compiles_once(call)
    # the compiled per-example gradients are those of the unjitted definition
    obj = make_objective(model, nnkit.losses.cross_entropy, train=True)
    want, _ = per_example_value_and_grads(obj, p, s, x, y, key)
    jax.tree_util.tree_map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7),
                           calls[0](), want)


def test_lr_find_and_overfit_batch_again_compile_nothing():
    from nnkit.train import lr_find, overfit_batch

    model, data = mlp(), blobs()
    calls = [lambda: lr_find(model, "sgd", data, batch_size=16, steps=20).losses,
             lambda: overfit_batch(model, "adam", (data[0][:16], data[1][:16]), steps=10).losses]
    for call in calls:
        compiles_once(call)


def test_diagnose_again_compiles_nothing_and_reports_the_same_numbers():
    from nnkit.diagnose import diagnose

    model, (x, y) = mlp(), blobs()

    def call():
        report = diagnose(model, x, y, batch_size=16, overfit_steps=5, key=3)
        return {check: {k: v for k, v in nums.items() if not isinstance(v, dict)}
                for check, nums in report.numbers.items()}

    compiles_once(call)
    # another key and other data of the same shapes: other numbers, no new program
    with lowerings() as again:
        other = diagnose(model, x[::-1].copy(), y[::-1].copy(), batch_size=16,
                         overfit_steps=5, key=4)
    assert len(again) == 0, f"{len(again)} programs lowered again"
    assert other.numbers["initial_loss"]["loss"] != call()["initial_loss"]["loss"]


@pytest.mark.parametrize("batch_size", [1, 5, 64, 1000])
def test_predict_and_evaluate_equal_the_whole_set_at_once(batch_size):
    from nnkit.layers import BatchNorm, Dropout
    from nnkit.metrics import accuracy

    model = nnkit.serial(Dense(8), BatchNorm(), Relu(), Dropout(0.5), Dense(C))
    x, y = blobs(n=23)
    _, p, s = model.init(jax.random.key(0), (D,))
    whole, _ = model.apply(p, s, x)  # eval mode: no dropout, running statistics
    with lowerings() as first:
        got = nnkit.predict(model, p, s, x, batch_size=batch_size)
        ev = nnkit.evaluate(model, p, s, (x, y), batch_size=batch_size)
    np.testing.assert_allclose(got, whole, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ev["loss"], nnkit.losses.cross_entropy(whole, y), rtol=1e-5)
    np.testing.assert_allclose(ev["accuracy"], accuracy(whole, y), rtol=1e-6)
    with lowerings() as again:
        nnkit.predict(model, p, s, x, batch_size=batch_size)
        nnkit.evaluate(model, p, s, (x, y), batch_size=batch_size)
    assert len(first) > 0 and len(again) == 0


def test_predict_on_two_heads_and_evaluate_like_fit():
    model, (x, y) = mlp(), blobs()
    r = fit(model, optim.make("adam", 1e-2), (x, y), epochs=2, batch_size=16,
            test_data=blobs(3, 40))
    ts = r.train_state
    ev = nnkit.evaluate(model, ts.params, ts.state, blobs(3, 40), batch_size=7)
    assert ev == pytest.approx({k[len("test_"):]: v for k, v in r.test_metrics.items()},
                               rel=1e-6)
    two = nnkit.fanout(Dense(2, name="a"), Dense(1, name="b"), as_dict=True)
    _, p, s = two.init(0, (D,))
    out = nnkit.predict(two, p, s, x, batch_size=10)
    assert out["a"].shape == (N, 2) and out["b"].shape == (N, 1)
    with pytest.raises(ValueError, match="leading example axis"):
        nnkit.predict(model, ts.params, ts.state, np.float32(1.0))


def test_fit_again_with_derived_metrics_and_a_multi_task_loss_compiles_nothing():
    model, data = mlp(), blobs()
    compiles_once(lambda: fit(model, "adam", data, epochs=1, batch_size=16,
                              metrics=["top_2_accuracy", "macro_f1"]).history["train_loss"])
    x, y = data
    two = nnkit.fanout(Dense(C, name="a"), Dense(1, name="b"), as_dict=True)
    ys = {"a": y, "b": x[:, :1]}
    compiles_once(lambda: fit(two, "adam", (x, ys), epochs=1, batch_size=16,
                              loss=nnkit.losses.multi_task(a="cross_entropy", b="mse"))
                  .history["train_loss"])


def test_predict_and_evaluate_check_shapes_once_and_values_every_call():
    """The abstract checks (traces of the model and the loss) run once per model and
    shapes: a second call hits the memo and lowers nothing; values are still checked."""
    import importlib

    P = importlib.import_module("nnkit.train.predict")  # the module, not the function

    model, (x, y) = mlp(), blobs()
    _, params, state = model.init(jax.random.key(0), (D,))
    nnkit.predict(model, params, state, x)
    nnkit.evaluate(model, params, state, (x, y))
    hits = (P._per_example_checked.cache_info().hits, P._data_checked.cache_info().hits)
    with lowerings() as again:
        nnkit.predict(model, params, state, x)
        nnkit.evaluate(model, params, state, (x, y))
    assert len(again) == 0
    assert P._per_example_checked.cache_info().hits == hits[0] + 1
    assert P._data_checked.cache_info().hits == hits[1] + 1
    with pytest.raises(ValueError, match=r"data y: label 9 at index 0 is outside"):
        nnkit.evaluate(model, params, state, (x, np.full_like(y, 9)))
