"""nnkit.checkpoint: pickle-free, atomic, verified checkpoints of train states."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _fresh_interpreter import cpu_env, result

import nnkit
from nnkit import checkpoint as C
from nnkit import optim
from nnkit.checkpoint import CheckpointError, CheckpointManager
from nnkit.train import EarlyStopping
from nnkit.train.early_stopping import early_stopping_init


def _state(seed: int = 0, accumulate: int = 2):
    """:func:`_build_state` as one compiled call."""
    return jax.jit(lambda: _build_state(seed, accumulate))()


def _build_state(seed: int, accumulate: int):
    """A TrainState with a nested optax state (MultiSteps > inject_hyperparams > chain),
    plateau and early-stopping fields, and non-trivial values everywhere."""
    model = nnkit.serial(nnkit.layers.Dense(5), nnkit.layers.Relu(), nnkit.layers.Dense(3))
    opt = optim.make("adamw", 1e-3, weight_decay=1e-2, clip_norm=1.0, accumulate=accumulate)
    ts = nnkit.create_train_state(model, (4,), opt, seed)
    ts = early_stopping_init(EarlyStopping(), ts)
    ts = ts._replace(plateau=optim.plateau_init(optim.Plateau()))
    # take a real optimizer step so moments are non-zero
    grads = jax.tree_util.tree_map(jnp.ones_like, ts.params)
    updates, os_ = opt.update(grads, ts.opt_state, ts.params)
    return ts._replace(params=optax.apply_updates(ts.params, updates), opt_state=os_,
                       step=ts.step + 7)


def _equal(a, b) -> bool:
    def raw(x):
        return jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x

    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    return ta == tb and all(
        x.dtype == y.dtype and np.array_equal(np.asarray(raw(x)), np.asarray(raw(y)))
        for x, y in zip(la, lb, strict=True)
    )


@pytest.fixture(scope="module")
def ts():
    return _state()


def test_round_trip_bit_exact_with_types(tmp_path, ts):
    path = C.save(tmp_path / "a.npz", ts, step=7, epoch=2, config={"lr": 1e-3},
                  metrics={"val_loss": float("nan"), "acc": np.float32(0.5)})
    target = jax.eval_shape(lambda: _build_state(1, 2))  # only structure/shapes/dtypes are used
    got, meta = C.restore(path, target)
    assert _equal(got, ts)
    assert type(got) is type(ts)
    assert type(got.opt_state) is optax.MultiStepsState
    assert type(got.opt_state.inner_opt_state) is type(ts.opt_state.inner_opt_state)
    assert type(got.plateau) is optim.PlateauState
    assert got.key.dtype == jnp.uint32 and got.key.shape == ts.key.shape
    assert meta["step"] == 7 and meta["epoch"] == 2 and meta["config"] == {"lr": 1e-3}
    assert meta["metrics"] == {"val_loss": None, "acc": 0.5}
    assert meta["nnkit_version"] == nnkit.__version__ and meta["jax_version"] == jax.__version__
    assert "params/dense_0/w" in meta["leaves"]


def test_file_is_a_plain_npz_without_pickles(tmp_path, ts):
    path = C.save(tmp_path / "a.npz", ts)
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    assert all(n.endswith(".npy") for n in names) and "__nnkit_meta__.npy" in names
    with np.load(path, allow_pickle=False) as z:  # loads with pickles forbidden
        assert np.array_equal(z["params/dense_0/w"], np.asarray(ts.params["dense_0"]["w"]))
        assert z["key"].dtype == np.uint32


def test_typed_keys_legacy_keys_and_bfloat16(tmp_path):
    tree = {"typed": jax.random.split(jax.random.key(3), 4),
            "legacy": jax.random.PRNGKey(5),
            "bf16": jnp.linspace(-2, 2, 7, dtype=jnp.bfloat16),
            "i8": jnp.arange(-3, 3, dtype=jnp.int8),
            "scalar": jnp.float32(3.5),
            "odd/name%": jnp.ones(2)}
    path = C.save(tmp_path / "k.npz", tree)
    got, meta = C.restore(path, jax.eval_shape(lambda: tree))
    assert _equal(got, tree)
    assert jnp.issubdtype(got["typed"].dtype, jax.dtypes.prng_key) and got["typed"].shape == (4,)
    assert meta["leaves"]["typed"]["key_impl"]
    assert "odd%2Fname%25" in meta["leaves"]  # '/' and '%' in dict keys are escaped
    # the restored key draws the same numbers
    np.testing.assert_array_equal(jax.random.uniform(got["typed"][2], (3,)),
                                  jax.random.uniform(tree["typed"][2], (3,)))


def test_mismatched_shape_names_leaf_and_both_shapes(tmp_path, ts):
    path = C.save(tmp_path / "a.npz", ts)
    model = nnkit.serial(nnkit.layers.Dense(6), nnkit.layers.Relu(), nnkit.layers.Dense(3))
    opt = optim.make("adamw", 1e-3, weight_decay=1e-2, clip_norm=1.0, accumulate=2)
    other = jax.eval_shape(lambda: early_stopping_init(
        EarlyStopping(), nnkit.create_train_state(model, (4,), opt, 0))._replace(
        plateau=optim.plateau_init(optim.Plateau())))
    with pytest.raises(CheckpointError) as e:
        C.restore(path, other)
    assert str(e.value) == (f"{path}: leaf 'params/dense_0/b': checkpoint has shape (5,) "
                            "float32, target expects shape (6,) float32")
    assert type(e.value) is C.CheckpointMismatchError  # an intact file for another target


def test_missing_and_extra_leaves(tmp_path, ts):
    path = C.save(tmp_path / "a.npz", ts)
    bigger = ts._replace(params={**ts.params, "extra": {"w": jnp.zeros(2)}})
    with pytest.raises(CheckpointError, match="'params/extra/w' of the target is missing"):
        C.restore(path, bigger)
    no_plateau = ts._replace(plateau=None)
    with pytest.raises(CheckpointError, match="leaves the target lacks.*plateau/scale"):
        C.restore(path, no_plateau)
    got, _ = C.restore(path, no_plateau, strict=False)
    assert _equal(got, no_plateau)


def test_dtype_mismatch(tmp_path):
    path = C.save(tmp_path / "a.npz", {"w": jnp.ones(3, jnp.float32)})
    with pytest.raises(CheckpointError, match="'w'.*float32.*int32"):
        C.restore(path, {"w": jnp.ones(3, jnp.int32)})


def test_truncated_file_raises_naming_it(tmp_path, ts):
    path = C.save(tmp_path / "a.npz", ts)
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 10, 0):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=str(path)) as e:
            C.restore(path, ts)
        assert type(e.value) is CheckpointError


def test_flipped_bytes_are_detected(tmp_path, ts):
    path = C.save(tmp_path / "a.npz", ts)
    data = path.read_bytes()
    # a byte inside the stored array data of params/dense_0/w
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("params/dense_0/w.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 128
    flipped = bytearray(data)
    flipped[start + 5] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=f"{path}: corrupt"):
        C.restore(path, ts)


def test_any_single_flipped_byte_errors_or_restores_exactly(tmp_path):
    """Never silently wrong data: flipping any byte gives a CheckpointError, or (in bytes
    nobody reads, such as zip version fields) exactly the saved tree."""
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "n": jnp.int32(4)}
    path = C.save(tmp_path / "a.npz", tree)
    data = path.read_bytes()
    errors = 0
    for i in range(0, len(data), 3):
        bad = bytearray(data)
        bad[i] ^= 0x5A
        path.write_bytes(bytes(bad))
        try:
            got, _ = C.restore(path, tree)
        except CheckpointError:
            errors += 1
            continue
        assert _equal(got, tree), f"byte {i} changed the data silently"
    assert errors > len(data) // 6


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "plain.npz"
    np.savez(p, a=np.ones(3))
    with pytest.raises(CheckpointError, match="not an nnkit checkpoint"):
        C.restore(p, {"a": jnp.ones(3)})
    q = tmp_path / "text.npz"
    q.write_text("hello")  # not a zip: NumPy would offer to unpickle it; nnkit never does
    with pytest.raises(CheckpointError, match=r"not an nnkit checkpoint \(not an \.npz archive\)"):
        C.load_meta(q)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        C.restore(tmp_path / "missing.npz", {})


def test_atomic_write_keeps_old_checkpoint_on_crash(tmp_path, ts, monkeypatch):
    path = C.save(tmp_path / "a.npz", ts, step=1)
    before = path.read_bytes()
    newer = ts._replace(step=ts.step + 1)

    def crash(*args, **kwargs):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        C.save(path, newer, step=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]  # no temp file left
    got, meta = C.restore(path, ts)
    assert meta["step"] == 1 and _equal(got, ts)


def test_atomic_write_interrupted_mid_write(tmp_path, ts, monkeypatch):
    path = C.save(tmp_path / "a.npz", ts, step=1)
    before = path.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        C.save(path, ts, step=2)
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_atomic_write_gives_the_permissions_a_plain_open_gives(tmp_path):
    """Checkpoints, config.yaml and summary.json (atomic writes) get the mode open() gives a
    file (0o666 less the umask; an existing file's own), not mkstemp's 0o600."""
    mode = lambda p: oct(os.stat(p).st_mode & 0o777)
    for umask in (0o022, 0o027):
        old = os.umask(umask)
        try:
            d = tmp_path / oct(umask)
            C.save(d / "a.npz", {"w": jnp.ones(2)})
            CheckpointManager(d / "ck").save({"w": jnp.ones(2)}, 0, is_best=True)
            C.atomic_write(d / "t.json", lambda f: f.write(b"{}"))
            with open(d / "plain", "w"):
                pass
        finally:
            os.umask(old)
        want = mode(d / "plain")
        assert want == oct(0o666 & ~umask)
        for name in ("a.npz", "ck/ckpt-000000000.npz", "ck/best.npz", "t.json"):
            assert mode(d / name) == want, name
    os.chmod(tmp_path / "0o22" / "t.json", 0o600)  # replacing a file keeps its mode
    C.atomic_write(tmp_path / "0o22" / "t.json", lambda f: f.write(b"[]"))
    assert mode(tmp_path / "0o22" / "t.json") == oct(0o600)
    assert (tmp_path / "0o22" / "t.json").read_bytes() == b"[]"
    assert not list(tmp_path.glob("*/.*.tmp"))


def test_host_copy_written_in_the_background_and_its_errors_raised_in_the_caller(tmp_path,
                                                                                ts):
    """to_host copies a tree to memory it owns (the device arrays may be donated next) and
    saves to the same file as the tree; a BackgroundWriter runs one job at a time (submit
    waits for the one in flight) and raises a job's error in the caller, once, at the next
    submit (which then starts nothing) or wait."""
    import signal
    import threading

    host = C.to_host(ts)
    assert all(a.flags.owndata for _, a, _ in host.leaves) and host.nbytes > 0
    w = C.BackgroundWriter()
    w.submit(lambda: C.save(tmp_path / "bg.npz", host, step=7), "bg.npz")
    C.save(tmp_path / "fg.npz", ts, step=7)
    w.wait()
    (bg, mbg), (fg, mfg) = C.load_arrays(tmp_path / "bg.npz"), C.load_arrays(tmp_path / "fg.npz")
    assert bg.keys() == fg.keys() and all(np.array_equal(bg[k], fg[k]) for k in bg)
    assert (mbg["tree"], mbg["leaves"]) == (mfg["tree"], mfg["leaves"])
    keyed = {"k": jax.random.key(3), "w": jnp.ones(2)}
    assert _equal(C.restore(C.save(tmp_path / "k.npz", C.to_host(keyed)), keyed)[0], keyed)

    gate, order = threading.Event(), []
    w.submit(lambda: (gate.wait(10), order.append(1)), "first")
    threading.Timer(0.2, gate.set).start()
    assert w.busy
    w.submit(lambda: order.append(2), "second")  # returns once the first has finished
    assert order[:1] == [1]
    w.wait()
    assert order == [1, 2] and not w.busy

    def full() -> None:
        raise OSError(28, "No space left on device", str(tmp_path / "x.npz"))

    w.submit(full, "x.npz")
    with pytest.raises(OSError, match="No space") as e:
        w.submit(lambda: order.append(3), "next")
    assert any("x.npz" in n for n in e.value.__notes__)
    w.wait()  # raised once
    assert order == [1, 2]
    w.submit(full, "y.npz")
    with pytest.raises(OSError, match="No space"):
        w.wait()

    # Ctrl-C during a wait: the job goes on, and a second wait still waits for it
    gate, main = threading.Event(), threading.main_thread().ident
    w.submit(lambda: (gate.wait(10), order.append(4)), "slow")
    threading.Timer(0.1, lambda: signal.pthread_kill(main, signal.SIGINT)).start()
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            w.wait()
    finally:
        signal.signal(signal.SIGINT, old)
    assert w.busy and order == [1, 2]
    threading.Timer(0.1, gate.set).start()
    w.wait()
    assert order == [1, 2, 4] and not w.busy


def test_manager_keeps_latest_and_best(tmp_path):
    mgr = CheckpointManager(tmp_path / "ck", keep=2)
    trees = [{"w": jnp.full((2,), float(i))} for i in range(5)]
    for i, t in enumerate(trees):
        mgr.save(t, i, epoch=i, is_best=(i == 1), metrics={"val_loss": 1.0 / (i + 1)})
    assert mgr.steps() == [3, 4]
    assert mgr.latest_path() == mgr.path(4)
    (tmp_path / "ck" / ".ckpt-000000009.npz.abc.tmp").write_bytes(b"junk")  # ignored
    assert mgr.steps() == [3, 4]
    latest, meta = mgr.restore({"w": jnp.zeros(2)})
    assert meta["epoch"] == 4 and _equal(latest, trees[4])
    best, meta = mgr.restore({"w": jnp.zeros(2)}, "best")
    assert meta["epoch"] == 1 and _equal(best, trees[1])
    again, _ = mgr.restore({"w": jnp.zeros(2)}, 3)
    assert _equal(again, trees[3])
    with pytest.raises(FileNotFoundError):
        CheckpointManager(tmp_path / "empty").restore({})
    with pytest.raises(ValueError, match="keep"):
        CheckpointManager(tmp_path, keep=0)


def test_manager_refuses_a_step_not_above_the_latest_and_keeps_the_files(tmp_path):
    """A second run in a directory holding steps 2 and 3 (keep=2): its save of step 0 would
    be pruned at once (the latest and best.npz would stay the other run's), and a negative
    step would write a file no manager recognises. Both are refused before anything is
    written or deleted."""
    d = tmp_path / "ck"
    first = CheckpointManager(d, keep=2)
    for s in range(4):
        first.save({"w": jnp.full((2,), float(s))}, s, epoch=s, is_best=(s == 2))
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    assert sorted(before) == ["best.npz", "ckpt-000000002.npz", "ckpt-000000003.npz"]
    again = CheckpointManager(d, keep=2)
    for step in (0, 3):
        with pytest.raises(CheckpointError, match=rf"^{d}: cannot save step {step}: the "
                           r"directory already holds checkpoints up to step 3 \(steps must "
                           "increase"):
            again.save({"w": jnp.zeros(2)}, step, epoch=step, is_best=True)
    for step in (-1, 2.0):
        with pytest.raises(ValueError, match=rf"step must be an int >= 0, got {step}"):
            CheckpointManager(tmp_path / "new").save({"w": jnp.zeros(2)}, step)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    assert not (tmp_path / "new").exists()
    again.save({"w": jnp.ones(2)}, 4, epoch=4)  # a later step is fine
    assert again.steps() == [3, 4]


def test_a_stop_between_best_and_numbered_checkpoint_leaves_the_earlier_latest(tmp_path,
                                                                                monkeypatch):
    """best.npz is written before the numbered checkpoint: a process stopped between the two
    leaves epoch 0 as the latest (a resume redoes epoch 1 and writes both), never a latest
    checkpoint without the best.npz it should have."""
    mgr = CheckpointManager(tmp_path / "ck", keep=3)
    mgr.save({"w": jnp.zeros(2)}, 0, epoch=0, is_best=True)
    real = C.atomic_write

    def stop_at_numbered(path, write):
        if C._CKPT.match(os.path.basename(path)):
            raise KeyboardInterrupt
        return real(path, write)

    monkeypatch.setattr(C, "atomic_write", stop_at_numbered)
    with pytest.raises(KeyboardInterrupt):
        mgr.save({"w": jnp.ones(2)}, 1, epoch=1, is_best=True)
    monkeypatch.undo()
    assert mgr.steps() == [0]
    assert C.load_meta(mgr.best_path)["epoch"] == 1
    mgr.save({"w": jnp.ones(2)}, 1, epoch=1, is_best=True)  # the resumed run's save
    assert mgr.steps() == [0, 1]
    assert mgr.path(1).read_bytes() == mgr.best_path.read_bytes()


def test_python_scalars_restore_into_their_eval_shape(tmp_path):
    """Python scalars are stored with the dtype JAX gives them (float32/int32 without x64),
    so eval_shape of the same tree is a valid target and values come back exactly; NumPy
    scalars keep their own dtype."""
    tree = {"f": 1.5, "i": 3, "b": True, "n": np.float64(0.1)}
    C.save(tmp_path / "s.npz", tree)
    got, _ = C.restore(tmp_path / "s.npz", jax.eval_shape(lambda: {k: v for k, v in tree.items()
                                                                   if k != "n"}), strict=False)
    assert got["f"].dtype == jnp.float32 and float(got["f"]) == 1.5
    assert got["i"].dtype == jnp.int32 and int(got["i"]) == 3 and bool(got["b"])
    arrays, _ = C.load_arrays(tmp_path / "s.npz")
    assert arrays["n"].dtype == np.float64 and arrays["n"] == np.float64(0.1)


def test_python_scalars_restore_into_the_tree_that_was_saved(tmp_path):
    """The concrete tree that was saved is a valid target: its Python float/int leaves
    expect the dtype they were stored with (JAX's), not NumPy's float64/int64."""
    tree = {"w": jnp.arange(3.0), "f": 1.5, "i": 3, "b": False}
    C.save(tmp_path / "s.npz", tree)
    got, _ = C.restore(tmp_path / "s.npz", tree)
    assert got["f"].dtype == jnp.float32 and float(got["f"]) == 1.5
    assert got["i"].dtype == jnp.int32 and int(got["i"]) == 3
    assert got["b"].dtype == jnp.bool_ and not bool(got["b"])
    with pytest.raises(CheckpointError, match=r"'f': checkpoint has shape \(\) float32, target "
                       r"expects shape \(\) int32"):
        C.restore(tmp_path / "s.npz", {**tree, "f": 2})


def test_manager_restore_names_the_accepted_values(tmp_path):
    mgr = CheckpointManager(tmp_path / "ck")
    mgr.save({"w": jnp.zeros(2)}, 1)
    for which in ("bestt", "3", -1, 1.0, None):
        with pytest.raises(ValueError, match=r"^CheckpointManager.restore: which must be "
                           rf"'latest', 'best' or a step \(an int >= 0\), got {which!r}$"):
            mgr.restore({"w": jnp.zeros(2)}, which)
    with pytest.raises(FileNotFoundError, match=rf"no checkpoint of step 7 in {mgr.directory} "
                       r"\(saved steps: \[1\]\)"):
        mgr.restore({"w": jnp.zeros(2)}, 7)
    assert _equal(mgr.restore({"w": jnp.ones(2)}, 1)[0], {"w": jnp.zeros(2)})


def test_npy_file_is_not_an_nnkit_checkpoint(tmp_path):
    mgr = CheckpointManager(tmp_path)
    with open(mgr.path(0), "wb") as f:  # an .npy array under a checkpoint's name
        np.save(f, np.ones(3))
    want = rf"^{mgr.path(0)}: not an nnkit checkpoint \(a single \.npy array, not an \.npz"
    with pytest.raises(CheckpointError, match=want):
        mgr.restore({"w": jnp.zeros(3)})
    with pytest.raises(CheckpointError, match=want):
        C.load_meta(mgr.path(0))


def test_restore_places_leaves_with_the_targets_sharding(tmp_path):
    """Restoring into a state split over 4 CPU devices (a fresh interpreter: the device count
    is fixed when JAX starts) gives arrays with the target's shardings, not whole arrays on
    one device; an uncommitted target leaf stays uncommitted."""
    here = Path(__file__).resolve().parent
    p = subprocess.run([sys.executable, str(here / "_checkpoint_worker.py"), str(tmp_path)],
                       env=cpu_env(4), capture_output=True, text=True, timeout=300,
                       cwd=here.parent)
    res = result(p.stdout, p.stderr, p.returncode)
    assert res["device_count"] == 4
    for name, devices, shapes in (("w", [0, 1, 2, 3], [[2, 3]]), ("abstract_w", [0, 1, 2, 3],
                                  [[2, 3]]), ("b", [0, 1, 2, 3], [[3]]), ("one", [2], [[2]])):
        assert res[name] == {"same_sharding": True, "devices": devices, "shard_shapes": shapes,
                             "equal": True}, name
    assert res["free"]["equal"] and res["free"]["devices"] == [0]
    assert res["free_committed"] is False


def test_64_bit_leaves_come_back_unnarrowed_without_x64(tmp_path):
    """Without jax_enable_x64 JAX narrows int64 to int32 (2**40 became 0): such leaves come
    back as the NumPy arrays they were saved as."""
    assert not jax.config.jax_enable_x64
    tree = {"big": np.array([2**40, -5], np.int64), "f64": np.array([0.1], np.float64),
            "count": 2**40, "w": np.ones(3, np.float32)}
    path = tmp_path / "big.npz"
    C.save(path, tree)
    got, _ = C.restore(path, tree)
    np.testing.assert_array_equal(got["big"], tree["big"])
    assert got["big"].dtype == np.int64 and got["f64"].dtype == np.float64
    assert got["f64"][0] == 0.1 and int(got["count"]) == 2**40
    assert isinstance(got["w"], jax.Array)


def test_saving_to_a_directory_names_it_and_leaves_nothing(tmp_path):
    with pytest.raises(IsADirectoryError, match=rf"{tmp_path} is a directory; give a file name"):
        C.save(tmp_path, {"w": np.ones(2, np.float32)})
    assert list(tmp_path.iterdir()) == []
