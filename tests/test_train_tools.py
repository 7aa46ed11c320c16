"""lr_find, overfit_batch and sweep."""

import subprocess
import sys
from pathlib import Path

import chex
import jax
import numpy as np
import optax
import pytest
from _fresh_interpreter import cpu_env, result

import nnkit
from nnkit import optim
from nnkit.layers import Dense, Relu
from nnkit.train import fit, lr_find, overfit_batch, sweep

N, D, C = 64, 2, 3


def mlp():
    return nnkit.serial(Dense(8), Relu(), Dense(C))


def blobs(seed=0, n=N):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, size=n).astype(np.int32)
    centers = np.array([[0.0, 2.0], [2.0, -1.0], [-2.0, -1.0]], np.float32)
    return centers[y] + 0.5 * rng.normal(size=(n, D)).astype(np.float32), y


TRAIN, VAL = blobs(0), blobs(1, 32)


def test_lr_find_increasing_rates_suggestion_and_divergence():
    onehot = (TRAIN[0], np.eye(C, dtype=np.float32)[TRAIN[1]])  # mse diverges for sure
    r = lr_find(mlp(), "sgd", onehot, loss="mse", batch_size=16, min_lr=1e-4, max_lr=1e4,
                steps=100)
    assert r.diverged_at is not None and 10 < r.diverged_at < 100
    assert len(r.lrs) == len(r.losses) == r.diverged_at
    assert np.all(np.diff(r.lrs) > 0)
    np.testing.assert_allclose(r.lrs[0], 1e-4, rtol=1e-6)
    np.testing.assert_allclose(r.lrs[1] / r.lrs[0], (1e8) ** (1 / 99), rtol=1e-6)
    # the suggestion lies on the descending part, below the rate of the minimum loss
    assert np.isfinite(r.suggestion) and 1e-4 < r.suggestion < r.lr_at_min
    # the next smoothed loss (masked off) exceeded diverge_factor times the best
    assert r.raw_losses.shape == r.losses.shape
    # losses are the bias-corrected EMA of the raw ones
    b = 0.98
    ema = (1 - b) * r.raw_losses[0] + b * 0.0
    assert r.losses[0] == pytest.approx(ema / (1 - b))
    assert np.all(np.isfinite(r.losses))


def test_lr_suggestion_is_the_steepest_decade_not_the_start_noise():
    """A flat, noisy start (a bump of 0.4 between neighbours at 1e-6) then a steady fall
    of 1 per decade from 1e-3 to the minimum at 1e-1: the slope between neighbours would
    pick the bump; across a decade the fall wins, and the pick lies inside it."""
    from nnkit.train.lr_find import suggest_lr

    lrs = np.logspace(-7, 0, 141)
    logs = np.log10(lrs)
    loss = 3.0 - np.clip(logs + 3, 0, 2)  # 3 until 1e-3, 1 at 1e-1
    loss = np.where(logs > -1, 1 + 4 * (logs + 1), loss)  # then up: diverging
    loss[20], loss[21] = 3.4, 3.0  # the bump at 1e-6
    np.testing.assert_allclose(np.gradient(loss, logs)[19:22].min(),
                               np.gradient(loss, logs).min())  # neighbours: the bump
    got = suggest_lr(lrs, loss)
    assert 10 ** -2.6 <= got <= 10 ** -1.4, got
    # a minimum less than a window above the first rate: a tenth of its rate, not below
    # the first rate (0.7 decades; 1.2 decades against a window of 2)
    assert suggest_lr(lrs[:15], -logs[:15]) == lrs[0]
    assert suggest_lr(lrs[:25], -logs[:25], decades=2) == pytest.approx(lrs[24] / 10)


@pytest.mark.parametrize("kw,match", [
    ({"max_lr": float("inf")}, "finite rates .*max_lr=inf"),
    ({"min_lr": 1.0, "max_lr": 0.1}, "min_lr=1.0, max_lr=0.1"),
    ({"steps": 0}, "steps must be an int >= 2, got 0"),
    ({"smoothing": 1.0}, r"smoothing must be in \[0, 1\), got 1.0"),
    ({"diverge_factor": 1.0}, "diverge_factor must be > 1, got 1.0"),
])
def test_lr_find_names_the_bad_argument(kw, match):
    with pytest.raises(ValueError, match=match):
        lr_find(mlp(), "sgd", TRAIN, **kw)


def test_lr_find_without_divergence_and_with_a_factory():
    r = lr_find(mlp(), lambda lr: optim.make("adam", lr), TRAIN, batch_size=16,
                min_lr=1e-5, max_lr=1e-3, steps=20)
    assert r.diverged_at is None and len(r.lrs) == 20
    np.testing.assert_allclose(r.lrs[-1], 1e-3, rtol=1e-6)
    with pytest.raises(ValueError, match="injected learning_rate"):
        lr_find(mlp(), lambda lr: optax.sgd(lr), TRAIN, batch_size=16, steps=5)


def test_overfit_batch_passes_on_a_correct_setup_and_fails_on_broken_ones():
    batch = (TRAIN[0][:16], TRAIN[1][:16])
    ok = overfit_batch(mlp(), optim.make("adam", 3e-2), batch, steps=150, target=0.05)
    assert ok.passed and ok.final_loss <= 0.05
    assert ok.losses.shape == (150,) and ok.losses[-1] < ok.losses[0]
    frozen = overfit_batch(mlp(), optim.make("sgd", 0.0), batch, steps=20)
    assert not frozen.passed
    np.testing.assert_allclose(frozen.losses, frozen.losses[0], rtol=1e-6)
    # a model that ignores its input cannot fit random labels
    blind = nnkit.serial(nnkit.Lambda(lambda x: x * 0.0, kind="zero"), Dense(C))
    rng = np.random.default_rng(0)
    noise = (batch[0], rng.integers(0, C, 16).astype(np.int32))
    assert not overfit_batch(blind, "adam", noise, steps=100, learning_rate=0.1).passed


def test_sweep_equals_separate_fit_runs():
    lrs, seeds = [3e-3, 3e-2], [0, 1]
    kw = dict(epochs=2, batch_size=16, val_data=VAL)
    s = sweep(mlp(), "adam", TRAIN, learning_rates=lrs, seeds=seeds, **kw)
    assert [(c["learning_rate"], c["seed"]) for c in s.configs] == [
        (lr, sd) for lr in lrs for sd in seeds]
    chex.assert_shape(s.train_states.params["dense_0"]["w"], (4, D, 8))
    for i in (0, 3):  # two separate runs differing in both LR and seed
        c = s.configs[i]
        r = fit(mlp(), optim.make("adam", c["learning_rate"]), TRAIN, key=c["seed"], **kw)
        chex.assert_trees_all_close(s.train_state(i).params, r.train_state.params, rtol=1e-5,
                                    atol=1e-6)
        for k in ("train_loss", "val_loss", "val_accuracy", "lr"):
            np.testing.assert_allclose(s.histories[i][k], r.history[k], rtol=1e-5, atol=1e-6)
    assert s.best("val_loss") == int(np.argmin([h["val_loss"][-1] for h in s.histories]))


def test_a_one_model_sweep_runs_unbatched_and_equals_fit():
    kw = dict(epochs=2, batch_size=16, val_data=VAL)
    s = sweep(mlp(), "adam", TRAIN, learning_rates=[3e-2], **kw)
    chex.assert_shape(s.train_states.params["dense_0"]["w"], (1, D, 8))
    r = fit(mlp(), optim.make("adam", 3e-2), TRAIN, key=0, **kw)
    chex.assert_trees_all_close(s.train_state(0).params, r.train_state.params, rtol=1e-5,
                                atol=1e-6)
    np.testing.assert_allclose(s.histories[0]["val_loss"], r.history["val_loss"], rtol=1e-5)
    # the lone model is not vmapped: no dot in its program carries a batch dimension of 1
    from nnkit.train.sweep import sweep_program

    prog = sweep_program(mlp(), "adam", TRAIN, learning_rates=[3e-2], batch_size=16)
    x, y = prog.data
    hlo = prog.epoch.lower(prog.train_states, prog.live, np.int32(0), prog.order(0), x, y,
                           None, None).as_text()
    dots = [ln for ln in hlo.splitlines() if "dot_general" in ln]
    assert dots and not any("batching_dims" in ln for ln in dots)


def test_sweep_with_a_schedule_equals_separate_fit_runs():
    """A cosine schedule per peak rate: each swept model trains and logs as fit does with
    schedule(lr_m), from one compiled schedule scaled per model; a schedule that is not
    proportional to its peak (an absolute end value) is refused."""
    def sched(lr):
        return optim.schedule("cosine", learning_rate=lr, decay_steps=12, alpha=0.1)

    kw = dict(epochs=3, batch_size=16, val_data=VAL)
    s = sweep(mlp(), "adamw", TRAIN, learning_rates=[3e-3, 3e-2], weight_decays=[0.0, 0.1],
              schedule=sched, **kw)
    for i, c in enumerate(s.configs):
        r = fit(mlp(), optim.make("adamw", sched(c["learning_rate"]),
                                  weight_decay=c["weight_decay"]), TRAIN, key=0, **kw)
        chex.assert_trees_all_close(s.train_state(i).params, r.train_state.params, rtol=1e-5,
                                    atol=1e-6)
        for k in ("train_loss", "val_loss", "lr"):
            np.testing.assert_allclose(s.histories[i][k], r.history[k], rtol=1e-5, atol=1e-7)
    assert s.histories[3]["lr"][0] > s.histories[3]["lr"][-1] > 0  # it decays
    with pytest.raises(ValueError, match="not proportional to its peak learning rate"):
        sweep(mlp(), "adam", TRAIN, learning_rates=[1e-2], epochs=1, batch_size=16,
              schedule=lambda lr: optim.schedule("linear", learning_rate=lr, end_value=1e-4,
                                                 transition_steps=10))
    with pytest.raises(ValueError, match="'lars' cannot be shared as a scale"):
        sweep(mlp(), "lars", TRAIN, learning_rates=[1e-2], epochs=1, batch_size=16,
              schedule=sched)


def test_sweep_with_early_stopping_and_plateau_equals_separate_fit_runs():
    """Per model, inside the compiled epochs: the large rate runs out of patience after a few
    epochs while the small one trains on; each model's history ends where fit's does, with
    fit's stop reason, plateau-scaled rates and (restore_best) its best epoch's params."""
    from nnkit.optim import Plateau
    from nnkit.train import EarlyStopping

    es = EarlyStopping("val_loss", patience=2)
    kw = dict(epochs=12, batch_size=16, val_data=VAL, early_stopping=es,
              plateau=Plateau("val_loss", patience=1, factor=0.5))
    s = sweep(mlp(), "adam", TRAIN, learning_rates=[3e-3, 1.0], **kw)
    lengths = []
    for i, c in enumerate(s.configs):
        r = fit(mlp(), optim.make("adam", c["learning_rate"]), TRAIN, key=0, **kw)
        assert s.stop_reasons[i] == r.stop_reason
        assert s.histories[i]["epoch"] == r.history["epoch"]
        for k in ("train_loss", "val_loss", "lr", "lr_scale"):
            np.testing.assert_allclose(s.histories[i][k], r.history[k], rtol=1e-5, atol=1e-7)
        chex.assert_trees_all_close(s.train_state(i).params, r.train_state.params, rtol=1e-5,
                                    atol=1e-6)
        lengths.append(len(r.history["epoch"]))
    assert s.stop_reasons[1].startswith("early stopping") and lengths[1] < lengths[0]
    with pytest.raises(ValueError, match="needs val_data"):
        sweep(mlp(), "adam", TRAIN, learning_rates=[1e-2], epochs=1, batch_size=16,
              early_stopping=es)


def test_sweep_over_weight_decay_matches_fit():
    kw = dict(epochs=1, batch_size=32)
    s = sweep(mlp(), "sgd", TRAIN, learning_rate=0.1, weight_decays=[0.0, 0.5], **kw)
    assert [c["weight_decay"] for c in s.configs] == [0.0, 0.5]
    for i, wd in enumerate([0.0, 0.5]):
        r = fit(mlp(), optim.make("sgd", 0.1, weight_decay=wd), TRAIN, key=0, **kw)
        chex.assert_trees_all_close(s.train_state(i).params, r.train_state.params, rtol=1e-5,
                                    atol=1e-6)
    w0, w1 = (jax.tree_util.tree_leaves(s.train_state(i).params) for i in (0, 1))
    assert sum(float((a**2).sum()) for a in w1) < sum(float((a**2).sum()) for a in w0)


def test_sweep_rolls_back_an_epoch_whose_update_overflows():
    """One step per epoch: the step's loss (before its update) is finite, the update is
    not. That model's epochs are rolled back (NaN train losses, its initial state kept);
    the other model trains as a separate fit."""
    x = np.linspace(-1, 1, 32, dtype=np.float32)[:, None]
    model = Dense(1, use_bias=False, w_init=nnkit.initializers.zeros)
    kw = dict(epochs=3, batch_size=32, loss="mse", metrics=())
    s = sweep(model, "sgd", (x, 100 * x), learning_rates=[0.1, 3e38], **kw)
    assert np.isnan(s.histories[1]["train_loss"]).all()
    assert float(s.train_state(1).params["w"][0, 0]) == 0.0 and int(s.train_state(1).step) == 0
    # the good model: w <- w - lr * 2 mean(x^2) (w - 100), from w = 0
    w, m2 = 0.0, float(np.mean(x.astype(np.float64) ** 2))
    for _ in range(3):
        w -= 0.1 * 2 * m2 * (w - 100)
    np.testing.assert_allclose(float(s.train_state(0).params["w"][0, 0]), w, rtol=1e-5)
    assert np.isfinite(s.histories[0]["train_loss"]).all()
    assert s.stop_reasons[0] == "completed"
    assert s.stop_reasons[1].startswith("non-finite parameters at epoch 0, step 0 ")


def test_sweep_model_stops_at_its_first_non_finite_epoch_as_fit_does():
    """One target of 1e30 among 40 examples (finite, but its squared error overflows
    float32: an infinite loss), one step of 32 per epoch: epoch 0's batch holds it,
    epoch 1's does not. fit stops at epoch 0 with the initial state; each swept model must
    too (not train on in epoch 1 from the rolled-back state), and say why as fit does."""
    from nnkit.train.order import epoch_order
    from nnkit.train.state import create_train_state

    n, bs = 40, 32
    x = np.linspace(-1, 1, n, dtype=np.float32)[:, None]
    y = 3 * x
    words = create_train_state(Dense(1), (1,), optim.make("sgd", 0.1), 0).key
    used = [set(epoch_order(words, e, n, bs).ravel().tolist()) for e in (0, 1)]
    poison = sorted(used[0] - used[1])[0]
    y[poison] = 1e30  # data with a NaN is refused up front
    kw = dict(epochs=3, batch_size=bs, loss="mse", metrics=())
    s = sweep(Dense(1), "sgd", (x, y), learning_rates=[0.1, 0.2], **kw)
    init = create_train_state(Dense(1), (1,), optim.make("sgd", 0.1), 0)
    for i, lr in enumerate([0.1, 0.2]):
        r = fit(Dense(1), optim.make("sgd", lr), (x, y), key=0, **kw)
        assert r.epochs_run == 0 and r.stop_reason.startswith("non-finite loss at epoch 0")
        assert s.stop_reasons[i] == r.stop_reason
        chex.assert_trees_all_close(s.train_state(i).params, r.train_state.params)
        chex.assert_trees_all_close(s.train_state(i).params, init.params)
        assert int(s.train_state(i).step) == 0
        assert s.histories[i]["epoch"] == [0, 1, 2]
        for k in ("train_loss", "lr", "grad_norm"):
            assert np.isnan(s.histories[i][k]).all(), k


def test_sweep_in_chunks_of_epochs_equals_one_call_per_epoch(monkeypatch):
    """sweep runs its epochs k per call (the last chunk padded with skipped epochs): the
    same states and histories as one call of the program's epoch per epoch."""
    sweep_mod = sys.modules["nnkit.train.sweep"]  # the module (nnkit.train.sweep is the function)

    kw = dict(learning_rates=[1e-2, 5e-2], seeds=[0, 1], batch_size=16, val_data=VAL)
    prog = sweep_mod.sweep_program(mlp(), "adam", TRAIN, **kw)
    ts, live, x, y = prog.train_states, prog.live, *prog.data
    per_epoch = []
    for e in range(5):
        ts, live, logs = prog.epoch(ts, live, np.int32(e), prog.order(e), x, y, *prog.val_data)
        per_epoch.append(np.asarray(logs))
    rows = np.size(prog.order(0))  # data-order entries of one epoch (4 models x 64 rows)
    monkeypatch.setattr(sweep_mod, "EPOCHS_PER_CALL_MAX_ROWS", 2 * rows)
    assert sweep_mod.epochs_per_call(5, rows) == 2  # chunks of 2, 2 and 1 (+ 1 skipped)
    calls = []
    fresh = sweep_mod.sweep_program(mlp(), "adam", TRAIN, **kw)  # prog's states were donated
    monkeypatch.setattr(sweep_mod, "sweep_program", lambda *a, **k: fresh._replace(
        epochs=lambda *args: calls.append(args[3]) or fresh.epochs(*args)))
    s = sweep(mlp(), "adam", TRAIN, epochs=5, **kw)
    assert [int(c) for c in calls] == [2, 2, 1]
    chex.assert_trees_all_close(s.train_states, ts, rtol=1e-6, atol=1e-7)
    assert int(s.train_state(0).step) == 5 * (N // 16)  # the skipped epoch did not step
    for m, h in enumerate(s.histories):
        assert h["epoch"] == [0, 1, 2, 3, 4]
        for k in ("train_loss", "val_loss", "lr"):
            np.testing.assert_allclose(h[k], [t[m, prog.names.index(k)] for t in per_epoch],
                                       rtol=1e-6, atol=1e-7)


def test_epochs_per_call_all_epochs_unless_the_orders_are_large():
    from nnkit.train.sweep import EPOCHS_PER_CALL_MAX_ROWS, epochs_per_call

    assert epochs_per_call(100, 3200) == 100
    assert epochs_per_call(0, 3200) == 1
    assert epochs_per_call(100, EPOCHS_PER_CALL_MAX_ROWS // 3) == 3
    assert epochs_per_call(100, 2 * EPOCHS_PER_CALL_MAX_ROWS) == 1


@pytest.mark.parametrize("vectorize,params,platform,picked", [
    ("auto", 354, "cpu", "vmap"), ("auto", 669_706, "cpu", "map"),
    ("auto", 669_706, "gpu", "vmap"), ("auto", 669_706, "tpu", "vmap"),
    ("map", 354, "gpu", "map"), ("vmap", 669_706, "cpu", "vmap")])
def test_vectorize_auto_maps_only_large_models_on_a_cpu(vectorize, params, platform, picked):
    """The size rule is XLA:CPU's (batched matmuls of large models lose to one model at a
    time there); on GPUs and TPUs auto always vmaps; an explicit choice is kept."""
    from nnkit.train.sweep import VMAP_MAX_PARAMS, _vectorize

    assert 354 <= VMAP_MAX_PARAMS < 669_706
    assert _vectorize(vectorize, params, platform) == picked


def test_sweep_program_resolves_auto_for_its_devices():
    from nnkit.train.sweep import sweep_program

    for model, large in ((mlp(), False), (nnkit.serial(Dense(60_000), Relu(), Dense(C)), True)):
        prog = sweep_program(model, "adam", TRAIN, batch_size=16)
        on_cpu = prog.devices[0].platform == "cpu"
        assert prog.vectorize == ("map" if large and on_cpu else "vmap")


@pytest.mark.parametrize("seeds", [[0], [0, 1]])  # one shared data order; one per model
def test_sweep_map_and_vmap_agree(seeds):
    kw = dict(learning_rates=[1e-2, 5e-2], seeds=seeds, epochs=2, batch_size=16, val_data=VAL)
    a = sweep(mlp(), "adam", TRAIN, vectorize="vmap", **kw)
    b = sweep(mlp(), "adam", TRAIN, vectorize="map", **kw)
    chex.assert_trees_all_close(a.train_states.params, b.train_states.params, rtol=1e-5,
                                atol=1e-6)
    for ha, hb in zip(a.histories, b.histories, strict=True):
        np.testing.assert_allclose(ha["val_loss"], hb["val_loss"], rtol=1e-5)
    with pytest.raises(ValueError, match="unknown vectorize 'loop'; known: auto, vmap, map"):
        sweep(mlp(), "adam", TRAIN, vectorize="loop", **kw)


def test_sweep_over_two_devices_equals_one_device():
    """Models spread over 2 CPU devices (a fresh interpreter: the device count is fixed when
    JAX starts) train exactly as on one device, each device holding its share."""
    p = subprocess.run([sys.executable, str(Path(__file__).with_name("_sweep_devices_worker.py"))],
                       env=cpu_env(2), capture_output=True, text=True, timeout=300,
                       cwd=Path(__file__).resolve().parents[1])
    res = result(p.stdout, p.stderr, p.returncode)
    assert res["device_count"] == 2
    for case in ("vmap-1", "map-1", "vmap-2", "map-2"):
        r = res[case]
        assert r["devices"] == [0, 1] and r["ref_devices"] == [0], case
        assert r["shard_rows"] == [2], case  # 4 models: 2 on each device
        assert r["param_diff"] < 1e-5, case
        np.testing.assert_allclose(r["val_loss"], r["ref_val_loss"], rtol=1e-5, atol=1e-6)
    for vec in ("vmap", "map"):
        assert res[f"program-devices-{vec}"] == 2
        assert res[f"collectives-{vec}"] == [], vec
    assert res["three_auto_devices"] == 1
    assert res["three_explicit_error"] == (
        "sweep: 3 models cannot be shared evenly by 2 devices; give a number of devices that "
        "divides the number of models")


def test_bad_arguments_name_the_argument_and_value():
    for bs in (0, -4, 2.5):
        with pytest.raises(ValueError, match=rf"batch_size must be a positive int, got {bs}"):
            lr_find(mlp(), "sgd", TRAIN, batch_size=bs)
        with pytest.raises(ValueError, match=rf"batch_size must be a positive int, got {bs}"):
            sweep(mlp(), "sgd", TRAIN, epochs=1, batch_size=bs)
    with pytest.raises(ValueError, match=r"epochs must be an int >= 0, got -1"):
        sweep(mlp(), "sgd", TRAIN, epochs=-1, batch_size=16)
    with pytest.raises(ValueError, match=r"weight_decays must be finite numbers >= 0, got -0.1"):
        sweep(mlp(), "sgd", TRAIN, epochs=1, batch_size=16, weight_decays=[0.0, -0.1])
    for lr in (-1e-3, float("nan"), float("inf"), "0.1", True):
        with pytest.raises(ValueError, match=rf"learning_rates must be finite numbers >= 0, "
                                             rf"got {lr!r}"):
            sweep(mlp(), "sgd", TRAIN, epochs=1, batch_size=16, learning_rates=[1e-2, lr])
    with pytest.raises(ValueError, match=r"seed must be an int >= -2147483648, got 1.5"):
        sweep(mlp(), "sgd", TRAIN, epochs=1, batch_size=16, seeds=[0, 1.5])
    # NumPy and JAX rates are numbers too
    r = sweep(mlp(), "sgd", TRAIN, epochs=1, batch_size=16,
              learning_rates=jax.numpy.array([0.1, 0.01]), weight_decays=np.array([0.0]))
    assert [c["learning_rate"] for c in r.configs] == [pytest.approx(0.1), pytest.approx(0.01)]
    for one, many in (("learning_rate", "learning_rates"), ("weight_decay", "weight_decays")):
        with pytest.raises(ValueError, match=f"give {one}= .* or {many}= .*not both"):
            sweep(mlp(), "adamw", TRAIN, epochs=1, batch_size=16, **{one: 0.1, many: [0.1]})
    with pytest.raises(ValueError, match=r"eval_batch_size must be a positive int, got 0"):
        sweep(mlp(), "sgd", TRAIN, epochs=1, batch_size=16, eval_batch_size=0)


@pytest.mark.parametrize("n_models,used", [(8, 4), (6, 3), (3, 3), (2, 2), (5, 1), (7, 1)])
def test_sweep_auto_devices_take_the_most_that_divide_the_models(monkeypatch, n_models, used):
    from nnkit.train.sweep import _model_devices

    class Dev:
        def __init__(self, i, platform):
            self.id, self.platform = i, platform

    for platform in ("gpu", "cpu"):
        four = [Dev(i, platform) for i in range(4)]
        monkeypatch.setattr(jax, "local_devices", lambda four=four: four)
        assert _model_devices("auto", n_models, small=True) == tuple(four[:used])
        # a large model keeps a CPU's cores busy alone: one device; not so on accelerators
        big = _model_devices("auto", n_models, small=False)
        assert big == ((four[0],) if platform == "cpu" else tuple(four[:used]))


def test_sweep_devices_argument_is_checked_before_any_work():
    kw = dict(learning_rates=[1e-2, 5e-2], epochs=1, batch_size=16)
    with pytest.raises(ValueError, match="unknown devices 'gpu'; give 'auto' or a list"):
        sweep(mlp(), "adam", TRAIN, devices="gpu", **kw)
    with pytest.raises(ValueError, match="2 models cannot be shared evenly by 0 devices"):
        sweep(mlp(), "adam", TRAIN, devices=[], **kw)
    one = sweep(mlp(), "adam", TRAIN, devices=jax.devices()[:1], **kw)
    assert one.train_states.params["dense_0"]["w"].sharding.device_set == {jax.devices()[0]}


def test_a_sweep_over_seeds_holds_no_copy_of_the_data_per_model():
    """Models with their own data orders gather each batch inside the step: the compiled
    program's scratch memory stays under one copy of the data set (gathering each model's
    whole epoch up front took a copy per model: 8 models, 8 copies)."""
    from nnkit.train.sweep import sweep_program

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2048, 64)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    prog = sweep_program(nnkit.serial(Dense(4), Relu(), Dense(2)), "adam", (x, y),
                         learning_rates=[1e-2], seeds=list(range(8)), batch_size=64,
                         devices=jax.devices()[:1])
    compiled = prog.epoch.lower(prog.train_states, prog.live, np.int32(0), prog.order(0),
                                *prog.data, None, None).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp < x.nbytes, (temp, x.nbytes)
