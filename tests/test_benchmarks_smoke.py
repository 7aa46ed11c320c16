"""Smoke tests of the benchmark harness (``benchmarks/``): one tiny window on W3 with the
hand-written and nnkit entries, peers skipped cleanly when missing, and the numbers the
report derives (FLOPs, ratios, targets, load) checked against hand-computed values."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax
from jax.test_util import check_grads

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is a top-level folder, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import (  # noqa: E402
    conv_probe,
    entries,
    findings,
    floors,
    handwritten,
    harness,
    merge,
    peers_torch,
    probes,
    report,
    run,
    workloads,
)

W3 = workloads.get("W3")


def test_harness_one_window_on_w3_handwritten_and_nnkit():
    data = workloads.synthetic(W3)
    res = harness.measure(entries.make_entries(W3, data, ["jax", "nnkit-step"]), W3,
                          windows=1, window_s=0.05, log=lambda s: None)
    assert list(res) == ["jax", "nnkit-step"]
    for m in res.values():
        assert m.skipped is None
        assert len(m.rates) == 1 and m.rates[0] > 0 and math.isfinite(m.rates[0])
        assert m.first_call_s > 0
        assert m.cache_size == 1  # compiled once: no retracing while timed
        assert m.loss_after < m.loss_before  # it really trained
        assert len(m.foreign) == 1
    r = harness.ratios(res, "jax")
    assert r["jax"] == 1.0
    assert r["nnkit-step"] == pytest.approx(res["nnkit-step"].median / res["jax"].median)


def test_data_parallel_epoch_entry_is_skipped_on_one_device():
    """``nnkit-epoch-dp`` needs several devices; here (one device) it is a clean skip. Its
    data-parallel epoch itself is fit's, tested on 8 devices in test_parallel.py."""
    assert jax.device_count() == 1
    res = harness.measure(entries.make_entries(W3, workloads.synthetic(W3), ["nnkit-epoch-dp"]),
                          W3, windows=1, window_s=0.05, log=lambda s: None)
    assert "one device" in res["nnkit-epoch-dp"].skipped


PEER_MODULES = ("flax", "flax.nnx", "flax.linen", "equinox", "haiku", "torch")


def test_peers_are_skipped_when_not_installed(monkeypatch):
    for name in PEER_MODULES:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    peers = ["nnx", "nnx-split", "linen", "equinox", "haiku", "torch", "torch-fused"]
    res = harness.measure(entries.make_entries(W3, workloads.synthetic(W3), peers), W3,
                          windows=1, window_s=0.01, log=lambda s: None)
    assert set(res) == set(peers)
    for k, m in res.items():
        assert m.skipped is not None and "not installed" in m.skipped, k
        assert m.rates == [] and math.isnan(m.median)
    text = report.render({"meta": _meta(), "workloads": {"W3": {
        "title": W3.title, "flops_per_step": 1.0,
        "entries": {k: m.as_dict() for k, m in res.items()}}}}, {}, [])
    assert "skipped: flax.nnx not installed" in text


JAX_PEER_MODULES = {"nnx": "flax.nnx", "nnx-split": "flax.nnx", "linen": "flax.linen",
                    "equinox": "equinox", "haiku": "haiku"}


@pytest.mark.parametrize("key", sorted(JAX_PEER_MODULES))
def test_w5_peers_train_their_own_lstm(key):
    """Every JAX peer has a W5 model (its library's LSTM): on a tiny W5 it compiles once and
    its loss goes down over one window of steps on the same batches."""
    pytest.importorskip(JAX_PEER_MODULES[key])
    import dataclasses
    wl = dataclasses.replace(workloads.get("W5"), batch=4, input_shape=(5, 3), hidden=(8,),
                             steps_per_epoch=2)
    res = harness.measure(entries.make_entries(wl, workloads.synthetic(wl), [key]), wl,
                          windows=1, window_s=0.05, log=lambda s: None)
    m = res[key]
    assert m.skipped is None, m.skipped
    assert len(m.rates) == 1 and m.rates[0] > 0
    assert m.cache_size in (None, 1)
    assert m.loss_after < m.loss_before


def test_torch_peers_run_where_jax_runs(monkeypatch):
    class FakeTorch:
        class cuda:
            available = False

            @classmethod
            def is_available(cls):
                return cls.available

    assert peers_torch.torch_device(FakeTorch) == "cpu"  # this machine: JAX on the CPU
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with pytest.raises(harness.Skip, match="no peer for JAX on gpu"):
        peers_torch.torch_device(FakeTorch)
    FakeTorch.cuda.available = True
    assert peers_torch.torch_device(FakeTorch) == "cuda"
    with pytest.raises(harness.Skip, match="CPU-only"):
        peers_torch.torch_device(FakeTorch, cpu_only=True)
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    with pytest.raises(harness.Skip, match="no tpu here"):
        peers_torch.torch_device(FakeTorch)


def test_unknown_entry_and_section_are_rejected():
    with pytest.raises(ValueError, match="unknown entries"):
        entries.make_entries(W3, workloads.synthetic(W3), ["jax", "nope"])
    with pytest.raises(SystemExit, match="unknown sections"):
        run.main(["--only", "W9"])


def test_analytic_flops_closed_form_and_xla_count():
    # W1: fwd 2*128*(784*512 + 512*512 + 512*10); step = 3 fwd - first layer's input grad.
    assert workloads.flops_per_step(workloads.get("W1")) == 410_779_648
    # W3: 2*32*(2*16 + 16*16 + 16*2) = 20,480 fwd -> 3*20480 - 2*32*32
    assert workloads.flops_per_step(W3) == 59_392
    # XLA's own count of the compiled W1 step also counts element-wise ops and Adam: a few %
    wl = workloads.get("W1")
    x, y = workloads.synthetic(wl)
    opt = optax.adam(1e-3)
    p = handwritten.init_params(wl, jax.random.key(0))
    ca = handwritten.make_step(wl, opt).lower((p, opt.init(p)), x[:128], y[:128]).compile()
    ca = ca.cost_analysis()
    ca = ca[0] if isinstance(ca, list) else ca
    assert 1.0 <= ca["flops"] / workloads.flops_per_step(wl) < 1.05


def _meta():
    return {"command": "test", "date": "today", "machine": "m", "versions": "v",
            "windows": 1, "window_s": 0.1}


def _m(median, **kw):
    return {"median": median, "lo": median, "hi": median, "first_call_s": 1.0,
            "compile_s": 0.5, "foreign": [0.0], **kw}


def test_report_ratios_and_targets_hand_computed():
    res = {"meta": _meta(), "workloads": {
        "W1": {"title": "w1", "flops_per_step": 4e8, "entries": {
            "jax": _m(100.0), "nnkit-step": _m(92.0), "nnkit-fit-step": _m(98.0),
            "nnkit-epoch": _m(101.0), "torch": _m(80.0)}},
        "W3": {"title": "w3", "flops_per_step": 1.0, "entries": {
            "jax": _m(10_000.0), "nnkit-step": _m(5_000.0), "nnkit-epoch": _m(25_000.0),
            "linen": _m(30_000.0)}}},
        "sweeps": {"W3": {"title": "w3", "entries": {
            "jax": _m(10_000.0), "nnkit-epoch": _m(25_000.0),
            "nnkit-sweep8": _m(100_000.0, models=8)}}},
        "compile": {"W1": {"jax": {"total": 2.0}, "nnkit-step": {"total": 2.6}}}}
    rows = {t: (v, s) for t, v, s in report.targets(res)}
    assert rows["W1: nnkit per-step path (fit mode='step') >= 0.97x hand-written"] == (
        "0.98", "**met**")
    assert rows["W1: make_train_step with its defaults >= 0.97x hand-written"] == (
        "0.92", "**missed** by 5%")
    assert rows["W3: nnkit epoch-in-scan >= 3x hand-written per-step"] == (
        "2.50", "**missed** by 17%")
    assert rows["W3: nnkit epoch-in-scan ahead of every peer"] == (
        "0.83x the best peer (linen)", "**missed** by 17%")
    assert rows["W1: nnkit epoch-in-scan ahead of every peer"][1] == "**met**"
    # 8 models at 100k model-steps/s vs 1 model at 25k steps/s: an epoch takes 8*25/100 = 2x
    assert report.sweep_time_ratio(res["sweeps"]["W3"]["entries"]) == pytest.approx(2.0)
    assert rows["W4: 8-model sweep of W3 in <= 2x the time of one model (one nnkit scanned "
                "model)"][1] == "**met**"
    # against the hand-written per-step model: 8 * 10k / 100k = 0.8x
    assert rows["W4: the same, one model = the hand-written per-step reference"] == (
        "0.80x", "**met**")
    assert rows["W1: compile of nnkit's step <= 1.2x hand-written"] == (
        "1.30x", "**missed** by 8%")
    text = report.render(res, {}, ["- a finding"])
    assert "| W1 w1 | 100 /s (1.00) | n/a | 0.92 | 1.01 |" in text
    assert "- a finding" in text
    assert "Matmul precision" not in text  # a CPU run: nothing to say about TF32
    gpu = report.render({**res, "meta": {**_meta(), "backend": "gpu",
                                         "matmul_precision": "default"}}, {}, [])
    assert "Matmul precision of float32 inputs: JAX `default`" in gpu
    # W1 detail table: 4e8 FLOP/step * 100 steps/s = 40 GFLOP/s
    assert "| 40.0 |" in text


def test_foreign_load_hand_computed():
    # 400 jiffies passed on all CPUs, 200 busy, 50 of them ours -> 150/400 of the machine.
    load = harness.foreign_load((100, 1000, 10), (300, 1400, 60))
    assert load == pytest.approx(150 / 400 * (__import__("os").cpu_count() or 1))
    assert math.isnan(harness.foreign_load((1, 1, 1), (1, 1, 1)))
    busy, total, own = harness.cpu_snapshot()
    assert 0 <= busy <= total and own >= 0


@pytest.mark.parametrize("stride,pads,dilation", [
    ((1, 1), ((2, 2), (2, 2)), (1, 1)),
    ((2, 1), ((0, 1), (1, 0)), (1, 2)),
])
def test_cf_patch_conv_equals_xla_conv(stride, pads, dilation):
    kx, kw = jax.random.split(jax.random.key(3))
    x = jax.random.normal(kx, (2, 9, 8, 3))
    w = jax.random.normal(kw, (3, 2, 3, 4))
    want = lax.conv_general_dilated(x, w, stride, pads, rhs_dilation=dilation,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))
    got = conv_probe.conv_cf_patches(x, w, stride, pads, dilation)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_cf_patch_conv_gradients_finite_differences():
    kx, kw = jax.random.split(jax.random.key(4))
    x = jax.random.normal(kx, (1, 5, 4, 2))
    w = jax.random.normal(kw, (2, 2, 2, 3))
    check_grads(lambda a, b: conv_probe.conv_cf_patches(a, b, (1, 1), ((1, 0), (0, 1))),
                (x, w), order=1, modes=("rev",), atol=2e-2, rtol=2e-2)


def test_packed_permutation_is_a_uniform_permutation():
    for n in (7, 3200):
        p = np.asarray(probes.packed_permutation(jax.random.key(n), n))
        assert sorted(p.tolist()) == list(range(n))
    a = probes.packed_permutation(jax.random.key(0), 50)
    b = probes.packed_permutation(jax.random.key(1), 50)
    assert not jnp.array_equal(a, b)
    # where element 0 lands over 2000 keys, n = 4: each slot ~500 (std ~19)
    keys = jax.random.split(jax.random.key(5), 2000)
    perms = np.asarray(jax.vmap(lambda k: probes.packed_permutation(k, 4))(keys))
    counts = np.bincount(np.argmax(perms == 0, axis=1), minlength=4)
    assert np.all(np.abs(counts - 500) < 100), counts


def test_block_diagonal_packing_equals_models_one_at_a_time():
    w = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4)
    bd = floors._block_diagonal(w)
    assert bd.shape == (6, 8)
    np.testing.assert_array_equal(bd[:3, :4], w[0])
    np.testing.assert_array_equal(bd[3:, 4:], w[1])
    assert not bd[:3, 4:].any() and not bd[3:, :4].any()
    m = 3
    params = jax.vmap(lambda k: handwritten.init_params(W3, k))(jax.random.split(
        jax.random.key(1), m))
    x = jax.random.normal(jax.random.key(2), (5, 2))
    y = jnp.array([0, 1, 1, 0, 1])
    want = jax.vmap(lambda p: handwritten.forward(W3, p, x))(params)  # (m, B, classes)
    got = floors._packed_logits(params, x)  # (B, m, classes)
    np.testing.assert_allclose(got, jnp.moveaxis(want, 0, 1), rtol=1e-5, atol=1e-6)

    def packed_loss(p):  # the sum of each model's mean loss, as the packed runner trains
        logits = floors._packed_logits(p, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y[:, None]).mean(0).sum()

    g_packed = jax.grad(packed_loss)(params)
    g_each = jax.vmap(jax.grad(lambda p: handwritten.loss_fn(W3, p, x, y)))(params)
    for a, b in zip(jax.tree.leaves(g_packed), jax.tree.leaves(g_each), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_sweep_floor_lines_and_finding_hand_computed():
    ent = {"vmap-scan-1": {"label": "one", "median": 100_000.0, "models": 1},
           "vmap-scan-4": {"label": "four", "median": 200_000.0, "models": 4},
           "packed-4": {"label": "packed", "median": 160_000.0, "models": 4},
           "packed-8": {"label": "skipped", "skipped": "no", "models": 8}}
    lines = floors.sweep_floor_lines(ent)
    # 1 model at 100k steps/s: 10 us; 4 models at 200k model-steps/s: 20 us; packed: 25 us
    assert "| one (`vmap-scan-1`) | 1 | 10.0 | 1.00x |" in lines
    assert "| four (`vmap-scan-4`) | 4 | 20.0 | 2.00x |" in lines
    assert "| packed (`packed-4`) | 4 | 25.0 | 2.50x |" in lines
    assert not any("skipped" in line for line in lines)
    text = findings._sweep_floor({"probes": {floors.SWEEP_PROBE: {"entries": ent}}})
    assert "take 2.00x one model's time (20.0 us against 10.0 us per step)" in text
    assert "they take 2.50x" in text
    assert "measured apart" in findings._sweep_floor({})
    # the floor: 4 * 100k / 200k = 2.00x; a sweep under it is not blamed on host work
    res = {"probes": {floors.SWEEP_PROBE: {"entries": ent}}}
    assert findings._floor_ratio(res) == pytest.approx(2.0)
    assert "already under the hand-written 2.00x" in findings._over_floor(res, 1.9)
    assert findings._over_floor(res, 2.1) == ""  # over the floor: no laid-out floor to compare
    assert findings._over_floor({}, 1.9) == ""
    # nnkit's layout: 1 model at 125k steps/s (8 us), 4 at 250k model-steps/s (16 us): 2.00x
    ent |= {"laid-out-1": {"label": "lo1", "median": 125_000.0, "models": 1},
            "laid-out-4": {"label": "lo4", "median": 250_000.0, "models": 4}}
    lines = floors.sweep_floor_lines(ent)
    assert "| lo4 (`laid-out-4`) | 4 | 16.0 | 2.00x |" in lines  # over laid-out-1, not 10 us
    text = findings._sweep_floor({"probes": {floors.SWEEP_PROBE: {"entries": ent}}})
    assert "one model takes 8.0 us per step and four 16.0 us: 2.00x" in text
    # the sweep: 8 models at 400k model-steps/s (20 us a step), one model at 100k/s (10 us)
    res["sweeps"] = {"W3": {"entries": {"nnkit-sweep8": {"median": 400_000.0},
                                        "nnkit-epoch": {"median": 100_000.0}}}}
    assert findings._floor_ratio(res) == pytest.approx(2.0)  # laid-out-4 over laid-out-1
    over = findings._over_floor(res, 2.0 * 1.25)
    assert "takes 20.0 us against 16.0 us for the floor's 4 models on one device (1.25x" in over
    assert "one-model epoch 10.0 us against the floor's 8.0 us (1.25x)" in over
    assert "The floor itself is over 2x" not in over


def test_data_parallel_findings_hand_computed():
    def e(median):
        return {"label": "x", "median": median}

    w5 = {"jax": e(60.0), "nnkit-step": e(84.0), "nnkit-epoch": e(80.0),
          "nnkit-epoch-dp": e(100.0), "torch-fused": e(125.0)}
    w3 = {"jax": e(30_000.0), "nnkit-step": e(15_000.0), "nnkit-epoch": e(100_000.0),
          "nnkit-epoch-dp": e(4_000.0)}
    res = {"meta": {"devices": 2}, "workloads": {"W5": {"entries": w5}, "W3": {"entries": w3}}}
    text = "\n".join(findings.build(res))
    # W5: 100 / 80 = 1.25x one device, 100 / 125 = 0.80x PyTorch; W3: 4k / 100k = 0.04x
    assert "over the 2 CPU devices" in text
    assert "runs at 1.25x one device's epoch and 0.80x PyTorch's fused Adam" in text
    assert "(`nnkit-epoch-dp`) runs at 0.04x the one-device epoch" in text
    del w5["nnkit-epoch-dp"], w3["nnkit-epoch-dp"]  # not measured: no sentence
    assert "nnkit-epoch-dp" not in "\n".join(findings.build(res))


def test_lstm_floor_probe_runs_on_a_tiny_lstm():
    import dataclasses
    wl = dataclasses.replace(workloads.get("W5"), batch=2, input_shape=(3, 2), hidden=(4,))
    out = floors.lstm_floor_probe(wl, reps=1, block_s=0.001)
    for key in (floors.LSTM_NNKIT, floors.LSTM_MATMULS):
        assert out["rows"][key] > 0 and math.isfinite(out["rows"][key])
    assert len(out["lines"]) == 2 + len(out["rows"])


def test_cli_runs_order_cache_settings_and_table(monkeypatch):
    from benchmarks import cli_runs

    calls = []

    def fake(cmd, env):
        calls.append((cmd, env["NNKIT_COMPILE_CACHE"]))
        kind = cmd[-1].rsplit("-", 2)[-2] if "--out" in cmd else "import"
        return {"off": 4.0, "cold": 5.0, "warm": 2.0, "import": 1.0}[kind]

    monkeypatch.setattr(cli_runs, "_timed", fake)
    res = cli_runs.measure(("xor_mlp",), repeats=2, log=lambda *a: None)
    runs = [c for c in calls if "train" in c[0]]
    assert len(calls) == 2 + 6 and len(runs) == 6
    caches = [c[1] for c in runs]
    assert caches[0] == caches[3] == "off"
    assert caches[1] == caches[2] != caches[4] == caches[5]  # a fresh directory per repeat
    assert res["configs"]["xor_mlp"] == {"off": [4.0, 4.0], "cold": [5.0, 5.0],
                                         "warm": [2.0, 2.0]}
    table = "\n".join(cli_runs.lines(res))
    assert "| `configs/xor_mlp.yaml` | 4.00 | 5.00 | 2.00 | 0.50 |" in table
    assert "`import nnkit` alone: 1.00 s" in table


def test_cli_finding_hand_computed():
    from benchmarks import findings

    res = {"cli": {"import": [0.5, 0.7, 0.6], "configs": {
        "xor_mlp": {"off": [3.0, 2.0, 2.5], "cold": [2.6] * 3, "warm": [1.0, 1.2, 1.1]}}}}
    (txt,) = [f for f in findings.build(res) if "Time to result" in f]
    assert "`xor_mlp` 2.5 -> 1.1 s" in txt and "(0.60 s," in txt


def test_moved_reference_finding_hand_computed():
    from benchmarks import findings

    def res(focused: float) -> dict:
        return {"workloads": {"W3": {"entries": {"jax": {"median": 30000.0}}}},
                "targets": {"W3": {"entries": {"jax": {"median": focused,
                                                       "rates": [14000.0, focused, 36000.0]}}}}}

    (txt,) = [f for f in findings.build(res(15000.0)) if "reference moved" in f]
    assert "30,000 steps/s in the main table and 15,000" in txt and "14,000 - 36,000" in txt
    assert not [f for f in findings.build(res(25000.0)) if "reference moved" in f]  # < 1.5x


def _split_results(res):
    """The committed full run cut into the four partial runs the merge docstring shows."""
    def part(command, **sections):
        meta = {**res["meta"], "command": command, "seconds": 10.0}
        return {"meta": meta, "workloads": {}, **sections}

    w = res["workloads"]
    return [
        ("p1.json", part("run --only W1,W2", peak=res["peak"],
                         workloads={k: w[k] for k in ("W1", "W2")})),
        ("p2.json", part("run --only W3,W5", workloads={k: w[k] for k in ("W3", "W5")})),
        ("p3.json", part("run --only targets,W4", targets=res["targets"],
                         sweeps=res["sweeps"])),
        ("p4.json", part("run --only loader,compile,probes,cli", loader=res["loader"],
                         compile=res["compile"], probes=res["probes"], cli=res["cli"])),
    ]


def test_merged_partial_runs_render_the_same_report():
    import json
    res = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    parts = _split_results(res)
    merged = merge.merge(parts)
    labels = run._labels()

    def body(r):
        text = report.render(r, labels, findings.build(r))
        return text[text.index("## Targets"):]

    assert body(merged) == body(res)
    assert [p["file"] for p in merged["meta"]["parts"]] == [n for n, _ in parts]
    assert merged["meta"]["seconds"] == 40.0
    head = report.render(merged, labels, [])
    assert "Merged from 4 runs" in head and "`run --only targets,W4`" in head


def test_merge_refuses_mixed_machines_and_a_section_measured_twice(tmp_path):
    import json
    res = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    parts = _split_results(res)
    other = (parts[1][0], {**parts[1][1], "meta": {**parts[1][1]["meta"], "machine": "GPU"}})
    with pytest.raises(ValueError, match=r"'machine' differs.*p1\.json.*p2\.json"):
        merge.merge([parts[0], other])
    twice = ("again.json", parts[0][1])
    with pytest.raises(ValueError, match=r"workloads / W1 is in both p1\.json and again\.json"):
        merge.merge([parts[0], twice])
    with pytest.raises(ValueError, match="no results"):
        merge.merge([])
    # the command line names the file it cannot use
    good = tmp_path / "good.json"
    good.write_text(json.dumps(parts[0][1]))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit, match="bad.json is not JSON"):
        run.load_results([str(good), str(bad)])
    with pytest.raises(SystemExit, match="cannot read .*missing.json"):
        run.load_results([str(good), str(tmp_path / "missing.json")])
    (tmp_path / "other.json").write_text(json.dumps({"x": 1}))
    with pytest.raises(SystemExit, match="other.json is not a results JSON"):
        run.load_results([str(tmp_path / "other.json")])
    assert run.load_results([str(good)]) == parts[0][1]
