"""Tests for nnkit.parallel.

The device count is fixed when JAX starts, so multi-device checks run in subprocesses
(tests/_multiprocess_worker.py) with ``--xla_force_host_platform_device_count`` and report
JSON; the parent asserts. The reference for every parallel run is the same training on one
device, so a sharding bug shows up as a different loss or different params.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnkit
import nnkit.parallel as par
from nnkit.layers import Dense

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_multiprocess_worker.py"
sys.path.insert(0, str(HERE))
import _multiprocess_worker as worker  # noqa: E402
from _fresh_interpreter import cpu_env, result  # noqa: E402

TIMEOUT_S = 120


# ----------------------------------------------------------------------------- 8 devices


@pytest.fixture(scope="module")
def eight():
    p = subprocess.run(
        [sys.executable, str(WORKER), "devices"], env=cpu_env(8), capture_output=True, text=True,
        timeout=TIMEOUT_S, cwd=HERE.parent,
    )
    return result(p.stdout, p.stderr, p.returncode)


@pytest.mark.slow
def test_eight_devices_batch_is_split_along_rows(eight):
    assert eight["device_count"] == 8
    assert eight["batch_spec"] == "P('data',)"
    # batch 16 over 8 devices: each holds a (2, 4) block
    assert eight["batch_num_shards"] == 8
    assert eight["batch_shard_shapes"] == [[2, 4]]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dp", "fsdp", "mesh2d", "scan"])
def test_eight_devices_train_like_one_device(eight, mode):
    np.testing.assert_allclose(eight[f"{mode}_losses"], eight["ref_losses"], rtol=1e-5, atol=1e-6)
    assert eight[f"{mode}_param_diff"] < 1e-5
    # the losses must actually change, else the comparison is vacuous
    assert eight["ref_losses"][-1] < 0.8 * eight["ref_losses"][0]


@pytest.mark.slow
def test_eight_devices_state_is_global_batch_statistic(eight):
    # a running mean over the batch: per-device means (pmap without psum) would differ
    assert eight["dp_state_diff"] < 1e-5


@pytest.mark.slow
def test_eight_devices_compile_once_and_stay_replicated(eight):
    assert eight["dp_compiles"] == 1
    assert eight["fsdp_compiles"] == 1
    assert eight["dp_out_replicated"] is True


@pytest.mark.slow
def test_eight_devices_fsdp_layouts(eight):
    # min_size=0: every leaf is split on its largest axis divisible by 8, first on ties
    assert eight["fsdp_param_specs"] == {
        "['dense_0']['b']": "P('data',)",        # (32,)
        "['dense_0']['w']": "P(None, 'data')",   # (4, 32): 4 % 8 != 0
        "['dense_1']['b']": "P()",               # (2,): not divisible
        "['dense_1']['w']": "P('data',)",        # (32, 2)
    }
    # Adam's moments follow the params; the step counter stays replicated
    specs = eight["fsdp_opt_specs"]
    assert specs["[0].count"] == "P()"
    for k, v in eight["fsdp_param_specs"].items():
        assert specs[f"[0].mu{k}"] == v and specs[f"[0].nu{k}"] == v


@pytest.mark.slow
def test_eight_devices_2d_mesh(eight):
    assert eight["mesh2d_shape"] == {"data": 4, "model": 2}
    assert eight["mesh2d_param_specs"]["['dense_0']['w']"] == "P(None, 'model')"
    assert eight["mesh2d_param_specs"]["['dense_1']['b']"] == "P('model',)"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dp", "fsdp"])
def test_eight_devices_fit_epoch_matches_one_device(eight, mode):
    """nnkit.train's scanned epoch with wrap_step / place_state / shard_dataset, compiled
    once ahead of time (epoch 2 reuses the executable, so the state kept its layout)."""
    fit = eight["fit"]
    np.testing.assert_allclose(fit[mode]["losses"], fit["ref_losses"], rtol=1e-5)
    assert fit[mode]["param_diff"] < 1e-5
    assert fit[mode]["step"] == 2 * (worker.N_ROWS // worker.BATCH)
    assert fit["ref_losses"][1] < 0.8 * fit["ref_losses"][0]


@pytest.mark.slow
def test_eight_devices_wrap_step_splits_the_work(eight):
    # per-device matmul shapes in the compiled epoch: without wrap_step the batch cut from the
    # replicated data set stays replicated and every device multiplies all 16 rows
    assert "16,32" in eight["fit"]["dots_unwrapped"]
    # replicated params: each device multiplies its 2 rows
    assert "2,32" in eight["fit"]["dp"]["dots"]
    assert not any(s.startswith("16,") for s in eight["fit"]["dp"]["dots"])
    # FSDP on this tiny model: XLA may gather the rows and split the 32 hidden units
    # instead; either way no device computes the whole (16, 32) activation
    assert "16,32" not in eight["fit"]["fsdp"]["dots"]


@pytest.mark.slow
def test_eight_devices_indivisible_batch_errors(eight):
    msg = eight["indivisible_error"]
    assert msg is not None and "12" in msg and "8 devices" in msg
    msg = eight["local_bs_error"]
    assert msg is not None and "10" in msg and "8 devices" in msg


# ----------------------------------------------------------------------------- 2 processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_on_localhost_train_identically():
    """Two OS processes x 2 CPU devices joined by jax.distributed on 127.0.0.1."""
    with tempfile.TemporaryDirectory() as d:
        port = _free_port()
        procs = [
            subprocess.Popen(
                [sys.executable, str(WORKER), "process", str(i), str(port), d],
                env=cpu_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                cwd=HERE.parent,
            )
            for i in range(2)
        ]
        results = []
        try:
            for p in procs:
                out, err = p.communicate(timeout=TIMEOUT_S)
                results.append(result(out, err, p.returncode))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        assert sorted(os.listdir(d)) == ["params.npz"]  # written once, by process 0

    x, _ = worker.make_data()
    half = worker.N_ROWS // 2
    for i, r in enumerate(results):
        assert r["started"] is True
        assert (r["process_index"], r["process_count"]) == (i, 2)
        assert (r["device_count"], r["local_device_count"]) == (4, 2)
        assert r["is_main"] is (i == 0)
        assert r["local_batch_size"] == worker.BATCH // 2
        for mode in ("dp", "fsdp"):
            # each process saw only its contiguous half of the rows
            assert r[f"{mode}_rows"] == half
            np.testing.assert_allclose(r[f"{mode}_first_row"], x[i * half], rtol=1e-6)
            # global arrays span both processes; training matches one device
            assert r[f"{mode}_fully_addressable"] is False
            np.testing.assert_allclose(r[f"{mode}_losses"], r["ref_losses"], rtol=1e-5)
            assert r[f"{mode}_param_diff"] < 1e-5
        assert r["ckpt_matches"] is True
        # nnkit.train's scanned epoch over a data set split by rows across the processes
        fit = r["fit"]
        np.testing.assert_allclose(fit["dp"]["losses"], fit["ref_losses"], rtol=1e-5)
        assert fit["dp"]["param_diff"] < 1e-5
        assert "4,32" in fit["dp"]["dots"]  # 16 rows over 4 devices
        assert not any(s.startswith("16,") for s in fit["dp"]["dots"])
    r0, r1 = results
    assert r0["dp_hash"] == r1["dp_hash"]
    assert r0["fsdp_hash"] == r1["fsdp_hash"]
    assert r0["ckpt_hash"] == r1["ckpt_hash"]
    assert r0["ref_losses"][-1] < 0.8 * r0["ref_losses"][0]


# ----------------------------------------------------------------------------- nnkit.fit

FIT_WORKER = HERE / "_fit_parallel_worker.py"
import _fit_parallel_worker as fit_worker  # noqa: E402


def _same_run(got: dict, ref: dict) -> None:
    """Histories, test metrics and final params/state agree to float rounding."""
    assert got["history"].keys() == ref["history"].keys()
    for k, v in ref["history"].items():
        np.testing.assert_allclose(got["history"][k], v, rtol=1e-5, atol=1e-6, err_msg=k)
    assert got["test"].keys() == ref["test"].keys() and ref["test"]
    for k, v in ref["test"].items():
        assert got["test"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
    for a, b in zip(got["leaves"], ref["leaves"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert got["step"] == ref["step"] == fit_worker.EPOCHS * (fit_worker.N // fit_worker.BATCH)
    # training moved, else the comparison is vacuous
    assert ref["history"]["train_loss"][-1] < 0.7 * ref["history"]["train_loss"][0]


@pytest.fixture(scope="module")
def fit8():
    p = subprocess.run(
        [sys.executable, str(FIT_WORKER), "devices"], env=cpu_env(8), capture_output=True,
        text=True, timeout=TIMEOUT_S, cwd=HERE.parent,
    )
    return result(p.stdout, p.stderr, p.returncode)


@pytest.mark.slow
@pytest.mark.parametrize("mode", fit_worker.MODES)
def test_fit_with_data_parallel_matches_one_device(fit8, mode):
    """``fit(parallel=DataParallel(make_mesh()))`` on 8 devices == ``fit`` on one."""
    assert fit8["device_count"] == fit8["mesh_devices"] == 8
    ref, dp = fit8[mode]["ref"], fit8[mode]["dp"]
    _same_run(dp, ref)
    assert (dp["param_devices"], dp["param_replicated"]) == (8, True)
    assert ref["param_devices"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("mode", fit_worker.MODES)
def test_fit_with_fsdp_keeps_the_train_key_whole(fit8, mode):
    """FSDP with ``fsdp_min_size=1`` on 2 devices: the 2-word train key and integer
    counters stay replicated (a split key would change the data order), big float leaves
    are split, and training equals one device."""
    r = fit8["fsdp_tiny_leaves"]
    assert r["key_spec"] == r["count_spec"] == "P()"
    assert "data" in r["w_spec"]
    got = r["runs"][mode]
    _same_run(got, fit8[mode]["ref"])
    assert got["key_replicated"] and not got["param_replicated"]
    assert r["split_key_words"] == [2, True]


@pytest.mark.slow
def test_lstm_step_on_a_split_batch_keeps_the_batch_split(fit8):
    """The LSTM's weight gradient contracts each device's own rows, then one all-reduce sums
    it: nothing of the (T, B, 4H) pre-activations is gathered onto every device."""
    r = fit8["lstm"]
    assert r["all_gathers"] == 0
    assert r["all_reduces"] >= 1
    assert r["param_diff"] < 1e-5 < r["param_moved"]


@pytest.mark.slow
def test_accumulated_microbatches_stay_split_over_the_devices(fit8):
    """grad_mode='accumulate' on 8 devices: each microbatch (16 of the batch's 32 rows) is
    spread over the devices, 2 rows each, not gathered whole onto every device (contiguous
    microbatches would each sit on one device and every device would compute them all)."""
    r = fit8["accumulate"]
    # products with 16 columns: the hidden layer's, forward and backward, over the rows a
    # device holds (and the (3, 16) weight gradient of the 3-class head, which has no rows)
    assert set(r["dot_rows"]) - {fit_worker.CLASSES} == {2}, r["dot_rows"]
    assert r["all_gathers"] == 0
    assert r["all_reduces"] >= 1
    assert r["param_diff"] < 1e-5


@pytest.mark.slow
def test_validation_and_test_sets_are_evaluated_split_over_the_devices(fit8):
    """fit's evaluator on 8 devices: each full batch of 32 is split, 4 rows per device,
    instead of every device evaluating the whole set; the remainder of 12 rows, which 8
    devices do not divide, runs whole. The metrics are the one-device ones."""
    r = fit8["evaluate"]
    assert set(r["dot_rows"]) == {4, 12}, r["dot_rows"]
    assert r["all_reduces"] >= 1
    assert r["got"].keys() == r["ref"].keys() == {"loss", "accuracy", "macro_f1"}
    for k, v in r["ref"].items():
        assert r["got"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["lstm", "lstm_last", "gru", "rnn", "bi_lstm"])
def test_recurrent_layers_run_inside_shard_map(fit8, layer):
    """Per-device code: a recurrent layer inside ``jax.shard_map`` over a split batch gives
    the one-device outputs, and the per-device gradients summed the full gradient."""
    r = fit8["shard_map"][layer]
    assert isinstance(r, dict), r  # else the error shard_map raised
    assert r["out_diff"] < 1e-5
    assert r["grad_diff"] < 1e-4 * max(1.0, r["grad_size"]) and r["grad_size"] > 1e-3


@pytest.mark.slow
def test_fit_with_data_parallel_indivisible_batch_errors_early(fit8):
    msg = fit8["indivisible_error"]
    assert msg is not None and "12" in msg and "8 devices" in msg


@pytest.mark.slow
def test_fit_with_data_parallel_two_processes():
    """Two processes x 2 devices: scan mode splits the data set's rows between processes,
    step mode has each process place its half of every global batch; both == one device."""
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(FIT_WORKER), "process", str(i), str(port)], env=cpu_env(2),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE.parent,
        )
        for i in range(2)
    ]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=TIMEOUT_S)
            results.append(result(out, err, p.returncode))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for mode in fit_worker.MODES:
        ref = fit_worker.run_fit(mode, None)  # this process: one device
        for i, r in enumerate(results):
            assert (r["process_index"], r["device_count"], r["local_device_count"]) == (i, 4, 2)
            _same_run(r[mode], ref)
            assert (r[mode]["param_devices"], r[mode]["param_replicated"]) == (4, True)


# ----------------------------------------------------------------------------- in process


def test_single_device_mesh_and_placement():
    mesh = par.make_mesh()
    assert mesh.axis_names == ("data",) and mesh.shape["data"] == jax.device_count()
    x = np.arange(12.0, dtype=np.float32).reshape(6, 2)
    xs = par.shard_batch({"x": x}, mesh)["x"]
    assert xs.sharding.spec == jax.sharding.PartitionSpec("data")
    np.testing.assert_array_equal(np.asarray(xs), x)
    np.testing.assert_array_equal(np.asarray(par.host_local_to_global(x, mesh)), x)
    r = par.replicate({"w": jnp.ones((3,)), "k": jax.random.key(1)}, mesh)
    assert r["w"].sharding.is_fully_replicated
    np.testing.assert_array_equal(par.gather(r["w"]), np.ones(3))


def test_make_mesh_errors_name_the_numbers():
    n = jax.device_count()
    with pytest.raises(ValueError, match=rf"num_devices={n + 1} but {n} cpu device"):
        par.make_mesh(n + 1)
    with pytest.raises(ValueError, match="model_parallel=3"):
        par.make_mesh(model_parallel=3)


def test_shard_batch_errors_name_the_leaf():
    mesh = par.make_mesh()
    with pytest.raises(ValueError, match=r"different batch sizes.*\['a'\].*4.*\['b'\].*5"):
        par.shard_batch({"a": np.zeros((4, 2)), "b": np.zeros((5,))}, mesh)
    with pytest.raises(ValueError, match=r"\['s'\] has shape \(\)"):
        par.shard_batch({"s": np.float32(1.0)}, mesh)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        par.local_batch_size(0, mesh)


def test_process_shard_contiguous_equal_slices():
    x = np.arange(11)
    y = {"t": np.arange(11) * 10}
    parts = [par.process_shard(x, y, process_index=p, process_count=3) for p in range(3)]
    # 11 rows, 3 processes: 3 rows each, the last 2 rows dropped
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), np.arange(9))
    np.testing.assert_array_equal(parts[1][1]["t"], [30, 40, 50])
    assert par.process_shard(x)[0] is not None  # one process: the whole array
    np.testing.assert_array_equal(par.process_shard(x)[0], x)
    with pytest.raises(ValueError, match="2 rows, fewer than 3"):
        par.process_shard(np.arange(2), process_index=0, process_count=3)
    with pytest.raises(ValueError, match="different leading sizes"):
        par.process_shard((np.arange(4), np.arange(5)), process_index=0, process_count=2)


@pytest.mark.parametrize(
    "shape,n,min_size,expected",
    [
        ((6, 16), 4, 0, (None, "data")),   # 6 % 4 != 0
        ((16, 6), 4, 0, ("data",)),
        ((8, 8), 4, 0, ("data",)),         # tie: first axis
        ((4, 12, 8), 4, 0, (None, "data")),  # largest divisible axis
        ((3, 5), 4, 0, ()),                # nothing divides
        ((16, 16), 4, 257, ()),            # 256 elements < min_size
        ((16, 16), 1, 0, ()),              # one device: nothing to split
        ((), 4, 0, ()),
    ],
)
def test_fsdp_spec_choice(shape, n, min_size, expected):
    assert par._fsdp_spec(shape, n, "data", min_size) == jax.sharding.PartitionSpec(*expected)


def test_fsdp_shardings_accept_abstract_params():
    _, params, _ = nnkit.core.abstract_init(nnkit.serial(Dense(8), Dense(2)), (4,))
    sh = par.fsdp_shardings(params, par.make_mesh(), min_size=0)
    assert jax.tree.structure(sh) == jax.tree.structure(params)
    with pytest.raises(ValueError, match="not 'model'"):
        par.fsdp_shardings(params, par.make_mesh(), axis="model")


def test_module_and_the_parallel_combinator_do_not_clash():
    # nnkit.parallel is this module; the per-input combinator is nnkit.Parallel
    assert nnkit.parallel is par
    out, params, _ = nnkit.Parallel(Dense(2), Dense(3)).init(jax.random.key(0), ((4,), (5,)))
    assert out == ((2,), (3,))
    assert params["dense_1"]["w"].shape == (5, 3)


# ----------------------------------------------------------------------------- distributed


@pytest.fixture
def calls(monkeypatch):
    got = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: got.append(kw))
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    return got


def test_initialize_single_process_is_noop(calls):
    assert par.initialize_distributed(env={}) is False
    assert par.initialize_distributed(env={"NNKIT_NUM_PROCESSES": "1"}) is False
    assert par.initialize_distributed(num_processes=1, env={}) is False
    # sbatch script without srun: one process whatever --ntasks says
    assert par.initialize_distributed(env={"SLURM_NTASKS": "4"}) is False
    assert calls == []


def test_initialize_from_env_and_args(calls):
    env = {"NNKIT_COORDINATOR": "10.0.0.1:1234", "NNKIT_NUM_PROCESSES": "4",
           "NNKIT_PROCESS_ID": "2"}
    assert par.initialize_distributed(env=env) is True
    assert calls[-1] == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4,
                         "process_id": 2}
    env = {"JAX_COORDINATOR_ADDRESS": "h:9", "NNKIT_NUM_PROCESSES": "2"}
    par.initialize_distributed(process_id=1, env=env, initialization_timeout=5)
    assert calls[-1] == {"coordinator_address": "h:9", "num_processes": 2, "process_id": 1,
                         "initialization_timeout": 5}
    assert len(calls) == 2


def test_initialize_auto_detects_clusters(calls):
    slurm = {"SLURM_NTASKS": "8", "SLURM_PROCID": "3", "SLURM_STEP_NODELIST": "n[1-2]"}
    assert par.initialize_distributed(env=slurm) is True
    assert calls[-1] == {}  # JAX reads the SLURM variables itself
    assert par.initialize_distributed(env={"NNKIT_DISTRIBUTED": "auto"}) is True
    assert par.initialize_distributed(auto=True, env={}) is True
    assert calls == [{}, {}, {}]


def test_initialize_errors(calls):
    with pytest.raises(ValueError, match=r"\['coordinator_address', 'process_id'\]"):
        par.initialize_distributed(num_processes=2, env={})
    with pytest.raises(ValueError, match="NNKIT_PROCESS_ID='x'"):
        par.initialize_distributed(env={"NNKIT_PROCESS_ID": "x"})
    with pytest.raises(ValueError, match=r"process_id 5 not in \[0, 2\)"):
        par.initialize_distributed("h:1", 2, 5, env={})
    assert calls == []


def test_is_main_and_sync_single_process():
    assert par.is_main_process() is True
    par.sync_global_devices("noop")  # must not block


# ----------------------------------------------------------------------------- config


def test_from_config_off():
    assert par.from_config(None) is None
    assert par.from_config({}) is None
    assert par.from_config({"data_parallel": False}) is None


def test_from_config_on(calls):
    dp = par.from_config({"data_parallel": True})
    assert isinstance(dp, par.DataParallel) and dp.num_devices == jax.device_count()
    assert dp.fsdp is False
    dp = par.from_config({"data_parallel": 1, "fsdp": True, "fsdp_min_size": 10})
    assert (dp.num_devices, dp.fsdp, dp.fsdp_min_size) == (1, True, 10)
    assert calls == []
    dp = par.from_config(
        {"distributed": {"coordinator_address": "h:1", "num_processes": 2, "process_id": 0}}
    )
    assert dp is not None  # distributed implies data_parallel
    assert calls == [{"coordinator_address": "h:1", "num_processes": 2, "process_id": 0}]
    par.from_config({"distributed": "auto"})
    assert calls[-1] == {}


@pytest.mark.parametrize(
    "cfg,match",
    [
        ([1], r"parallel: expected a mapping"),
        ({"fsdpp": True}, r"unknown key\(s\) \['fsdpp'\]"),
        ({"data_parallel": "yes"}, r"parallel.data_parallel must be a positive int"),
        ({"data_parallel": 0}, r"parallel.data_parallel"),
        ({"data_parallel": 99}, r"parallel: make_mesh: num_devices=99"),
        ({"fsdp": "on"}, r"parallel.fsdp: expected true or false"),
        ({"fsdp_min_size": -1}, r"parallel.fsdp_min_size"),
        ({"model_parallel": 0}, r"parallel.model_parallel"),
        ({"data_parallel": False, "fsdp": True}, r"parallel.data_parallel: false"),
        ({"distributed": 3}, r"parallel.distributed: expected a mapping"),
        ({"distributed": {"port": 1}}, r"parallel.distributed: unknown key\(s\) \['port'\]"),
        ({"distributed": {"coordinator_address": "host"}},
         r"parallel.distributed.coordinator_address: expected 'host:port'"),
        ({"distributed": {"num_processes": 0}}, r"parallel.distributed.num_processes"),
        ({"distributed": {"process_id": -1}}, r"parallel.distributed.process_id"),
    ],
)
def test_from_config_errors_name_the_key(cfg, match, calls):
    with pytest.raises(ValueError, match=match):
        par.from_config(cfg)
    assert calls == []
