"""The "Findings" section of RESULTS.md: what the numbers say, filled in from the results.

Each paragraph is written only when the entries it quotes were measured, so partial runs
(``--only``) get the paragraphs that apply.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from benchmarks.floors import (
    LSTM_MATMULS,
    LSTM_NNKIT,
    LSTM_PROBE,
    SWEEP_PROBE,
    step_seconds,
)
from benchmarks.report import fmt_ratio, ratio_of, sweep_time_ratio

__all__ = ["build"]


W5_PEER_LABELS = (
    ("Flax Linen (`nn.RNN(OptimizedLSTMCell)`)", "linen"),
    ("Flax NNX (`nnx.RNN(OptimizedLSTMCell)`, split/merge)", "nnx-split"),
    ("NNX with `nnx.jit`", "nnx"),
    ("Equinox (`LSTMCell` in `lax.scan`)", "equinox"),
    ("Haiku (`hk.LSTM`, `dynamic_unroll`)", "haiku"),
    ("PyTorch `nn.LSTM`", "torch"),
)
"""W5's peers as the findings name them, with their entry keys."""


def _med(entries: dict[str, dict], key: str) -> float:
    m = entries.get(key) or {}
    try:
        return float(m.get("median", math.nan))
    except (TypeError, ValueError):
        return math.nan


def _have(entries: dict[str, dict], *keys: str) -> bool:
    return all(math.isfinite(_med(entries, k)) for k in keys)


def _r(entries: dict[str, dict], a: str, b: str) -> str:
    return fmt_ratio(_med(entries, a) / _med(entries, b))


def _sweep_floor(res: dict[str, Any]) -> str:
    """The sentence on W4's floor: from this run's probe if measured, else the figure
    measured apart."""
    ent = res.get("probes", {}).get(SWEEP_PROBE, {}).get("entries", {})

    def time_of(key: str) -> float:
        return step_seconds(ent.get(key))

    if not _have(ent, "vmap-scan-1", "vmap-scan-4"):
        return ("Hand-written (vmap + scan, measured apart from this run), four models on "
                "one core take ~2.2x one model's time (15 us against 7 us per step), the "
                "floor for this layout.")
    base = time_of("vmap-scan-1")
    txt = (f"The floor, measured in this run (probes): hand-written vmap + scan, four models "
           f"on one device take {fmt_ratio(time_of('vmap-scan-4') / base)}x one model's time "
           f"({time_of('vmap-scan-4') * 1e6:.1f} us against {base * 1e6:.1f} us per step)")
    if _have(ent, "packed-4"):
        txt += (f"; packed into one network with block-diagonal weights (one dense matmul "
                f"per layer, as many library calls as one model) they take "
                f"{fmt_ratio(time_of('packed-4') / base)}x, so fewer, larger calls do not "
                f"lower this floor")
    if _have(ent, "laid-out-1", "laid-out-4"):
        one, four = time_of("laid-out-1"), time_of("laid-out-4")
        txt += (f". With each weight gradient computed from a laid-out `x^T`, the layout "
                f"`nnkit.matmul` gives small weights with and without vmap, one model takes "
                f"{one * 1e6:.1f} us per step and four {four * 1e6:.1f} us: "
                f"{fmt_ratio(four / one)}x, the floor for nnkit's ratio, since its one-model "
                f"epoch uses that layout too")
    return txt + "."


def _over_floor(res: dict[str, Any], ratio: float) -> str:
    """What W4's measured ``ratio`` (8 models over one nnkit epoch) has over the floor."""
    floor = _floor_ratio(res)
    if math.isfinite(floor) and ratio <= floor:
        w3 = res.get("workloads", {}).get("W3", {}).get("entries", {})
        epoch = (f"; in the main table it runs at {_r(w3, 'nnkit-epoch', 'jax-scan')}x the "
                 f"hand-written scan's speed" if _have(w3, "nnkit-epoch", "jax-scan") else "")
        return (f"The sweep's {fmt_ratio(ratio)}x is already under the hand-written "
                f"{fmt_ratio(floor)}x. Its one-model reference, nnkit's epoch, carries the "
                f"epoch's own costs: the order, the logs and the roll-back check{epoch}. The "
                f"eight models share those costs. So the miss is the floor's, not overhead "
                f"that nnkit adds on top of it: 2x needs four tiny models to cost less than "
                f"twice one model on a core.")
    ent = res.get("sweeps", {}).get("W3", {}).get("entries", {})
    probe = res.get("probes", {}).get(SWEEP_PROBE, {}).get("entries", {})
    if not (math.isfinite(floor) and _have(ent, "nnkit-sweep8", "nnkit-epoch")
            and _have(probe, "laid-out-1", "laid-out-4")):
        return ""
    t8, t1 = 8 / _med(ent, "nnkit-sweep8"), 1 / _med(ent, "nnkit-epoch")
    l4, l1 = step_seconds(probe["laid-out-4"]), step_seconds(probe["laid-out-1"])
    return (f"The sweep's {fmt_ratio(ratio)}x over the floor's {fmt_ratio(floor)}x: its step "
            f"of 8 models on 2 devices takes {t8 * 1e6:.1f} us against {l4 * 1e6:.1f} us for "
            f"the floor's 4 models on one device ({fmt_ratio(t8 / l4)}x: the epoch's own work "
            f"-- gather, logs, roll-back and `live` flags -- the host drawing each epoch's "
            f"order on a core the devices use, and two devices sharing one runtime), and "
            f"nnkit's one-model epoch {t1 * 1e6:.1f} us against the floor's {l1 * 1e6:.1f} us "
            f"({fmt_ratio(t1 / l1)}x)." + (
                " The floor itself is over 2x: 2x needs four tiny models to cost less than "
                "twice one model on a core." if floor > 2 else ""))


def _same_program(ent: dict[str, dict], t: float) -> str:
    """On W3 ``vectorize='auto'`` picks vmap, so ``nnkit-sweep8-vmap`` times the program of
    ``nnkit-sweep8`` again: the spread between the two is this run's noise on the ratio."""
    if not _have(ent, "nnkit-sweep8-vmap", "nnkit-epoch"):
        return ""
    tv = sweep_time_ratio(ent, eight="nnkit-sweep8-vmap")
    return (f" On W3 `vectorize='auto'` picks vmap, so `nnkit-sweep8-vmap` times the same "
            f"program again in the same run: {fmt_ratio(tv)}x one model's time against "
            f"{fmt_ratio(t)}x: how far this ratio moves between two timings of one program "
            f"in one run on this machine.")


def _floor_ratio(res: dict[str, Any]) -> float:
    """Four hand-written models' epoch over one model's (the W4 floor probe), in nnkit's
    layout (``laid-out-<m>``) where measured, or NaN."""
    ent = res.get("probes", {}).get(SWEEP_PROBE, {}).get("entries", {})
    for one, four in (("laid-out-1", "laid-out-4"), ("vmap-scan-1", "vmap-scan-4")):
        if _have(ent, one, four):
            return step_seconds(ent[four]) / step_seconds(ent[one])
    return math.nan


def build(res: dict[str, Any]) -> list[str]:
    """Markdown paragraphs (bullets) for the measured sections of ``res``."""
    out: list[str] = []
    wls = res.get("workloads", {})
    peak = res.get("peak", {}).get("best", math.nan)
    focus = res.get("targets", {})

    def rat(w: str, key: str) -> float:
        """``key``'s ratio from the focused re-measurement when it has it, else the main."""
        for src in (focus, wls):
            ent = src.get(w, {}).get("entries", {})
            if _have(ent, key, "jax"):
                return ratio_of(ent, key)
        return math.nan

    for w, f in focus.items():  # the reference itself moved between the two measurements
        fe, me = f.get("entries", {}), wls.get(w, {}).get("entries", {})
        if not (_have(fe, "jax") and _have(me, "jax")):
            continue
        a, b = _med(fe, "jax"), _med(me, "jax")
        if max(a, b) > 1.5 * min(a, b):
            rates = fe["jax"].get("rates") or [a]
            out.append(
                f"- **{w}'s reference moved between the two measurements.** The hand-written "
                f"step ran at {b:,.0f} steps/s in the main table and {a:,.0f} in the focused "
                f"re-measurement (windows {min(rates):,.0f} - {max(rates):,.0f}), with every "
                f"per-call entry (peers included) moving alike: per-call overhead on this "
                f"machine, not arithmetic. Ratios against it there are inflated or deflated "
                f"by that factor; the best-window ratios, and the main table's, are the robust "
                f"figures for {w}.")

    w1 = wls.get("W1", {}).get("entries", {})
    if _have(w1, "jax", "nnkit-step"):
        f = wls["W1"]["flops_per_step"]
        r = rat("W1", "nnkit-step")
        txt = (f"- **W1 is compute-bound.** The hand-written step reaches "
               f"{f * _med(w1, 'jax') / 1e9:.0f} GFLOP/s "
               f"({100 * f * _med(w1, 'jax') / peak:.0f}% of the `jnp.dot` 2048^3 figure, which "
               f"is not a ceiling for its cache-sized matmuls); nnkit's step runs at "
               f"{fmt_ratio(r)}x of it and its epoch at "
               f"{fmt_ratio(rat('W1', 'nnkit-epoch'))}x.")
        if _have(w1, "nnkit-step-norm", "nnkit-fit-step", "nnkit-step-lean"):
            txt += (f" The gradient-norm metric is the one extra a step can pay for: computing "
                    f"the global norm on every step costs a full extra read of the 0.67 M "
                    f"gradients and keeps them live for the reduction "
                    f"(`make_train_step(log_grad_norm=True)`: "
                    f"{fmt_ratio(rat('W1', 'nnkit-step-norm'))}x), so it is off by default; "
                    f"`fit` turns it on and computes it only on the last step of each epoch, "
                    f"the value it logs, through a device flag into the same compiled step "
                    f"(`fit(mode='step')`: {fmt_ratio(rat('W1', 'nnkit-fit-step'))}x); "
                    f"with no metrics at all: {fmt_ratio(rat('W1', 'nnkit-step-lean'))}x.")
        out.append(txt)

    w2 = wls.get("W2", {}).get("entries", {})
    if _have(w2, "jax", "nnkit-step"):
        txt = (f"- **W2 (LeNet) -- convolutions on CPU.** nnkit's default `Conv2D(impl='auto')` "
               f"lowers LeNet's two convolutions to `impl='toeplitz'` on CPU: "
               f"{fmt_ratio(ratio_of(w2, 'nnkit-step'))}x the hand-written XLA-conv step per "
               f"step")
        extra = [f"`impl='{i}'`: {fmt_ratio(ratio_of(w2, f'nnkit-step-{i}'))}x"
                 for i in ("im2col", "xla") if _have(w2, f"nnkit-step-{i}")]
        if extra:
            txt += " (nnkit with " + ", ".join(extra) + ")"
        txt += (". The Toeplitz form cuts each output row into blocks of `wb` columns "
                "(LeNet: 4 and 5), slices the padded input into `kh` row bands per block, "
                "`(N*H_out*blocks, kh*span*C)` with `span = wb+kw-1`, and folds the kernel's "
                "width into one banded `(kh*span*C, wb*F)` weight matrix built from the kernel "
                "each step, the same for every block, so a convolution is ONE matmul with its "
                "output already channels-last. It spends `span/kw` times im2col's flops on "
                "zeros and copies the input about `kh*span/wb` times (LeNet: 1.6-1.8x the "
                "flops, 9-10 copies) where im2col copies it 25 times: a per-op profile of the "
                "im2col step had the 25-slice patch stacking of the first layer (10 MB) as its "
                "most expensive op. One band over the whole row (`wb = W_out`, `W_pad/kw` = "
                "6.4x and 2.8x the flops) trained ~23% slower. `impl='auto'` picks Toeplitz for "
                "kernels of more than one tap while its band has at most 1 M elements and "
                "im2col's patch matrix would hold at least 200 k (below that, and for "
                "per-example gradients under `vmap`, im2col is as fast or faster; "
                "`benchmarks/bench_conv_impl.py --sweep`).")
        if _have(w2, "nnkit-epoch-xla", "nnkit-step-xla", "jax-scan"):
            txt += (f" Inside `lax.scan` XLA's own convolution collapses: the hand-written "
                    f"scan runs at {fmt_ratio(ratio_of(w2, 'jax-scan'))}x and nnkit's epoch "
                    f"with `impl='xla'` at {fmt_ratio(ratio_of(w2, 'nnkit-epoch-xla'))}x "
                    f"({_r(w2, 'nnkit-epoch-xla', 'nnkit-step-xla')}x its per-step speed). "
                    f"The HLO (Probes) shows why: in the loop body the two weight-gradient "
                    f"convolutions keep the non-canonical `f01b_i01o->01bf` dimension labels, "
                    f"which XLA:CPU runs through a slow generic path (a per-op XLA profile put "
                    f"the loop's three backward convolutions at ~3x the whole per-step "
                    f"program), while in the single step "
                    f"the compiler rewrites them to `b01f_01io->b01f` with explicit "
                    f"transposes (the same loss shows with XLA pinned to one core: it is not "
                    f"threading). nnkit's matmul convolutions have no convolution op, so "
                    f"its default epoch is not hit: "
                    f"{fmt_ratio(ratio_of(w2, 'nnkit-epoch'))}x.")
        if _have(w2, "jax-cfpatch"):
            txt += (f" nnkit's im2col (for layers the band does not suit) lays the patches "
                    f"out **channels-first, "
                    f"taps-major** (one transpose to `(C, N, H, W)`, contiguous shifted slices, "
                    f"one wide `(F, k*k*C) @ (k*k*C, N*oh*ow)` matmul), the layout of "
                    f"`benchmarks/conv_probe.py`; the hand-written LeNet with that probe "
                    f"convolution runs at {fmt_ratio(ratio_of(w2, 'jax-cfpatch'))}x"
                    + (f" ({fmt_ratio(ratio_of(w2, 'jax-cfpatch-scan'))}x in a scan)"
                       if _have(w2, "jax-cfpatch-scan") else "")
                    + ". Concatenating the taps on the channel axis instead (nnkit's first "
                    "im2col) made LeNet's first layer (C = 1) a 25-way interleaving copy "
                    "plus a skinny `(100352, 25) @ (25, 6)` matmul, the two most expensive "
                    "ops of its profile, and measured ~1.5-2x slower.")
        torch_best = max((ratio_of(w2, k) for k in ("torch", "torch-fused", "torch-1t")
                          if _have(w2, k)), default=math.nan)
        if math.isfinite(torch_best):
            ours = ratio_of(w2, "nnkit-epoch")
            txt += (f" PyTorch (oneDNN convolutions): best {fmt_ratio(torch_best)}x"
                    + (f", {fmt_ratio(torch_best / ours)}x nnkit's epoch: CPU convolutions "
                       f"are where PyTorch still trains LeNet faster than nnkit; nnkit's "
                       f"matmul convolutions have closed most of the gap XLA's convolution "
                       f"leaves (PyTorch measured 2.4x the hand-written JAX step on this "
                       f"machine before nnkit had them)."
                       if torch_best > ours else
                       f", behind nnkit's epoch ({fmt_ratio(ours)}x)."))
        out.append(txt)

    w3 = wls.get("W3", {}).get("entries", {})
    if _have(w3, "jax", "nnkit-step", "nnkit-epoch"):
        txt = (f"- **W3 (tiny MLP) is all per-call overhead.** The hand-written step takes "
               f"{1e6 / _med(w3, 'jax'):.0f} us per call; nnkit's per-step path runs at "
               f"{fmt_ratio(ratio_of(w3, 'nnkit-step'))}x")
        if _have(w3, "nnkit-step-lean"):
            txt += (f" (without metrics and with plain `optax.adam`: "
                    f"{fmt_ratio(ratio_of(w3, 'nnkit-step-lean'))}x)")
        ov = res.get("probes", {}).get(
            "Per-call overhead of the W3 step, extras added one at a time", {}).get("entries", {})
        txt += (". The Probes table adds nnkit's extras to the hand-written step one at a "
                "time (injected learning rate, step counter + key in the carry, metrics): "
                "none is expensive arithmetic, and one alone costs little, but together they "
                "cost ~20 us per call. The jump is XLA:CPU's thunk executor: when more than "
                "8 kernels of a program are ready to run at once, it hands half of them to a "
                "worker thread, and that handover and the join cost ~20 us on this machine. "
                "The hand-written W3 step starts with 8 independent kernels (counted in a "
                "log of XLA's executor); nnkit's with 12 (three step counters -- its own, "
                "`inject_hyperparams`' and Adam's --, the injected learning rate, copies of "
                "donated parameters, the input's laid-out transpose and the labels' one-hot mask). "
                "Holding the optimizer's counters and learning rate back until the loss is "
                "known (an optimization barrier), which left 8 independent kernels at the "
                "start of nnkit's step, did not change its time per call: the executor also "
                "splits further into the step. What does change it is the order XLA "
                "schedules the kernels in: with its memory-ordered scheduler instead of the "
                "concurrency-optimized default (`XLA_FLAGS="
                "--xla_cpu_enable_concurrency_optimized_scheduler=false`, measured apart in "
                "alternating processes) nnkit's W3 step ran at 24.8-25.7k steps/s against "
                "15.7-16.5k, with the hand-written step unchanged and the epochs within noise. "
                "That flag is "
                "read for the whole process only (passed as a per-program compiler option, "
                "the schedule stays the same), so nnkit leaves it to the user and its docs "
                "name it for per-step loops of tiny models")
        extra = {k: 1e6 / _med(ov, k) - 1e6 / _med(ov, "jax")
                 for k in ("jax+1op", "jax+2ops", "jax+4ops", "jax+4packed")
                 if _have(ov, "jax", k)}
        if len(extra) == 4:
            us = {k: f"{v:.0f} us" if v >= 0.5 else "~0 us" for k, v in extra.items()}
            txt += (f". Independent `int32 + 1` counters added to the hand-written step: one "
                    f"{us['jax+1op']} per call, two {us['jax+2ops']}, four {us['jax+4ops']}; "
                    f"the same four as one `int32[4]` array {us['jax+4packed']}")
        txt += (". That is a fixed cost per call, invisible on W1/W2/W5 and large next to "
                "W3's 10 us of real work per step. In a loop it disappears")
        if _have(w3, "nnkit-stepscan", "jax-scan"):
            txt += (f": nnkit's step in a bare `lax.scan` runs at "
                    f"{fmt_ratio(ratio_of(w3, 'nnkit-stepscan'))}x vs the hand-written "
                    f"scan's {fmt_ratio(ratio_of(w3, 'jax-scan'))}x")
        txt += "."
        if _have(w3, "nnkit-stepscan", "nnkit-epoch"):
            txt += (f" nnkit's whole epoch runs at {fmt_ratio(ratio_of(w3, 'nnkit-epoch'))}x, "
                    f"{_r(w3, 'nnkit-epoch', 'nnkit-stepscan')}x the bare scan: the rest is "
                    f"the gather of the epoch's batches, the epoch logs and the roll-back "
                    f"check. Two per-epoch costs are off the device's path: the shuffle "
                    f"(`jax.random.permutation`, a key-value sort, took 1-2 ms for 3,200 "
                    f"rows, more than a 1 ms epoch, and even a packed single-operand sort "
                    f"0.1-0.3 ms; Probes) is drawn with NumPy on the host "
                    f"(`nnkit.train.order`) while the device runs the previous epoch, and "
                    f"`fit` queues epoch e+1 before it reads epoch e's logs, so the device "
                    f"does not idle while the host waits for them and dispatches (worth "
                    f"~10% here); a flag computed on the device turns the queued epoch into "
                    f"a no-op when epoch e ends training.")
        if _have(w3, "nnkit-epoch-dp", "nnkit-epoch"):
            txt += (f" Data parallelism over the CPU devices (`nnkit-epoch-dp`) runs at "
                    f"{_r(w3, 'nnkit-epoch-dp', 'nnkit-epoch')}x the one-device epoch: "
                    f"XLA:CPU's all-reduce of the step's gradients, loss and metric meets "
                    f"the device threads once per array (benchmarks/README.md), which costs "
                    f"far more than this model's step; it is for models whose step dwarfs "
                    f"that, and for GPUs.")
        out.append(txt)

    w5 = wls.get("W5", {}).get("entries", {})
    if _have(w5, "jax", "nnkit-step"):
        txt = (f"- **W5 (LSTM).** nnkit's step: {fmt_ratio(rat('W5', 'nnkit-step'))}x, "
               f"epoch: {fmt_ratio(rat('W5', 'nnkit-epoch'))}x")
        peers = [(label, key) for label, key in W5_PEER_LABELS if _have(w5, key)]
        if peers:
            txt += "; " + ", ".join(f"{label} {fmt_ratio(ratio_of(w5, key))}x"
                                    for label, key in peers)
        lf = res.get("probes", {}).get(LSTM_PROBE, {})
        rows, threads = lf.get("rows", {}), lf.get("threads", 1)
        torch_all = rows.get(f"PyTorch nn.LSTM, forward + backward, {threads} threads")
        if rows.get(LSTM_MATMULS) and torch_all:
            one = rows.get("PyTorch nn.LSTM, forward + backward, 1 thread")
            txt += (f". The floor, measured in this run (probes): per time step of one forward "
                    f"+ backward pass, XLA spends {rows[LSTM_MATMULS]:.0f} us on the LSTM's "
                    f"matmuls alone, with no gate arithmetic, while PyTorch's whole `nn.LSTM` "
                    f"takes {torch_all:.0f} us on {threads} threads"
                    + (f" ({one:.0f} us on one)" if one else "")
                    + (f"; nnkit's `lstm_sequence` takes {rows[LSTM_NNKIT]:.0f} us"
                       if rows.get(LSTM_NNKIT) else "")
                    + ". Without any of its gate arithmetic nnkit would at best tie PyTorch "
                    "here; to be ahead it needs faster matmuls inside XLA:CPU's loops")
        txt += (". nnkit's LSTM stacks `W_ih` over `W_hh` once, outside the time loop, so "
                "each step is one matmul `[x_t, h] W` instead of two and an add, and a "
                "last-step layer does not collect the per-step outputs. Its backward pass "
                "comes from a JVP written for the whole sequence "
                "(`nnkit/layers/lstm_sequence.py`): the tangent `a_t dW + db + dx_t W_ih` of "
                "all steps is one matmul before the tangent loop, so the backward loop JAX "
                "derives runs one `(64, 512) @ (512, 128)` matmul per time step and the "
                "weight gradient is one `(512, 4096) @ (4096, 160)` matmul after it, `dZ^T A` "
                "contracting time and batch (~1.8-2.4 ms, 280-370 GFLOP/s), where autodiff of "
                "the scanned cell does a weight-gradient matmul and a `(160, 512)` "
                "accumulation inside the loop at every step. That made the step ~20% faster "
                "than the scanned cell (1.18x -> 1.35-1.43x the hand-written step over several "
                "full runs). PyTorch's lead is oneDNN's fused LSTM, which uses both cores "
                "(measured apart: ~1.7-1.8x faster on two threads than on one), while "
                "XLA:CPU runs the loop's mid-size matmuls on one core (measured apart: the "
                "forward `(64, 160) @ (160, 512)` takes ~40 us in a loop, ~265 GFLOP/s, "
                "about one core's peak, and its time grows linearly with the batch). That is "
                "the size policy of the matmul library XLA:CPU calls for its dots, not the "
                "loop: it splits a product over the cores only from a few tens of MFLOP "
                "(measured apart, outside any loop: `(512, 160) @ (160, 512)`, 84 MFLOP, "
                "240 us on two cores and 337 us on one; the loop's 10.5 MFLOP product 45 and "
                "53 us). A per-op profile of a training step (~11.5 ms) puts ~8 ms in "
                "matmuls (the loops' 64 forward and 64 backward products ~6 ms, the weight "
                "gradient ~1.9 ms), ~1 ms in zero-filling the residual and cotangent buffers "
                "(8 MB and 2 MB; 0.1-0.4 ms each) that the loops then write step by step, "
                "and the rest in the gates' arithmetic (~3 us per `(64, 128)` array and "
                "operation)")
        if _have(w5, "nnkit-epoch-dp", "nnkit-epoch"):
            ndev = res.get("meta", {}).get("devices", 1)
            txt += (f". Splitting the batch over the {ndev} CPU devices, one per core "
                    f"(`nnkit-epoch-dp`: `fit`'s data parallelism, one gradient all-reduce "
                    f"per step), runs at {_r(w5, 'nnkit-epoch-dp', 'nnkit-epoch')}x one "
                    f"device's epoch")
            if _have(w5, "torch-fused"):
                txt += f" and {_r(w5, 'nnkit-epoch-dp', 'torch-fused')}x PyTorch's fused Adam"
            txt += (". Per device, on half the batch, the loops' products take about half "
                    "as long (a forward product ~23 us, a backward one ~26 us, against ~47 and "
                    "~39 us for the whole batch on one device). The weight gradient is written "
                    "`dZ^T A` with `dW` entering the JVP as `(dW^T)^T` behind an optimization "
                    "barrier, so each device's partial `(512, 160)` gradient is a plain matmul "
                    "in XLA:CPU's library, then one all-reduce sums it and a small transpose "
                    "follows. Written `A^T dZ`, as before, XLA's partitioner put the all-reduce "
                    "between the dot and the transpose it otherwise folds into it, which left a "
                    "dot with both operands transposed outside the library (half the batch: "
                    "~2.1 ms against ~0.8 ms; the data-parallel gradient went from ~10.5 to "
                    "~7.5-8.8 ms, with the one-device gradient unchanged). Copying `A` rather than "
                    "`dZ` (`A^T` laid out batch-major behind a barrier, so that the weight "
                    "gradient `A^T dZ` is a plain matmul and a split batch stays split: a "
                    "`(F+H, B*T)` copy where `dZ^T` is `(4H, T*B)`) made the one-device step "
                    "3-6% faster, but under data parallelism XLA still computed that gradient "
                    "transposed, as a dot outside the library, and the data-parallel gradient "
                    "took ~1.2x as long, so nnkit keeps `dZ^T A`. Two devices in one "
                    "process still fall short of two processes. Measured in one run, the "
                    "one-device gradient on half the batch took ~5.6-5.9 ms alone, ~5.8-6.9 "
                    "ms per process in two processes pinned to one core each, and ~6.6-7.4 ms "
                    "when each of one process's two devices ran it from its own thread, with "
                    "no collective between them; the data-parallel gradient of the whole batch "
                    "took ~8.1-9.2 ms. The first gap is the intra-op thread pool the two "
                    "devices share: XLA:CPU splits its large loop fusions over that pool "
                    "(`outer_dimension_partitions` in the compiled HLO), the `dZ^T` copy among "
                    "them, which a profile put at ~0.17 ms alone and ~0.66 ms per device under "
                    "data parallelism. The last ~1-2 ms are the all-reduce and the two devices "
                    "waiting for each other at it. XLA combines the step's six all-reduces "
                    "(four gradients, the loss, the metric) into one over a tuple, whose "
                    "cost on XLA:CPU still grows with its number of arrays; measured apart, "
                    "that tuple took ~120-260 us against ~90-130 us for the same values "
                    "packed in one array: under 2% of this step, so nnkit keeps the "
                    "partitioner's exact "
                    "global-batch maths rather than per-device code that would pack them")
        if _have(w5, "jax-hoisted"):
            txt += (f". Hoisting the input projection `x_t W_ih` out of the forward loop (one "
                    f"`(B*T, F) @ (F, 4H)` matmul) runs at "
                    f"{fmt_ratio(ratio_of(w5, 'jax-hoisted'))}x on XLA:CPU -- the `(T, B, 4H)` "
                    f"projection and its cotangent get a transposed layout and are copied in "
                    f"full around the loops -- and a `(64, 128) @ (128, 512)` matmul in the "
                    f"loop measured no faster than the stacked `(64, 160)` one, so nnkit keeps "
                    f"it inside")
        txt += (". Unrolling the loops trades compile time for speed: `LSTM(unroll=8)`, "
                "which unrolls the backward loop too, made this step 6-10% faster and its "
                "compile 0.3-0.4 s longer (measured apart, interleaved), which would put the "
                "compile ratio near 1.5x; the default keeps the backward loop at 2 time "
                "steps per iteration, the forward loop at 1. The XLA flags tried on the "
                "loops (XNNPACK, oneDNN, no Eigen threading, no thunk runtime, the "
                "memory-ordered scheduler), splitting the batch into independent chains "
                "inside one loop body so that XLA could run them on both cores: none "
                "measured faster (the forward loop took 4.0 ms on both cores and 4.1 ms on "
                "one); one residual array in place of three made the gradient twice as "
                "slow. Nor did fewer kernels in the loop bodies pay: one sigmoid for all "
                "four gates (`tanh z = 2 sigmoid(2z) - 1`; 22 -> 17 kernels per forward "
                "step) ran at 1.01x, summing the gates' tangents with masks or slices "
                "instead of a split (no `(64, 512)` concatenation in the backward loop) at "
                "0.91-0.93x, and storing the activations, `c_{t-1}` and `tanh c_t` in place "
                "of `K`, `f` and `q`, to rebuild those in the backward loop, at 0.5x: JAX's "
                "partial evaluation moves the part of the tangent loop that needs no tangent "
                "into a loop of its own, which stacks `K`, `f` and `q` all the same (the "
                "first two measured interleaved with the shipped step in one process, 15 "
                "rounds; the last in alternating processes).")
        out.append(txt)

    sw = res.get("sweeps", {})
    for w, d in sw.items():
        ent = d["entries"]
        if _have(ent, "nnkit-sweep8", "nnkit-epoch"):
            t = sweep_time_ratio(ent)
            per = ratio_of(ent, "nnkit-sweep8")
            vs8 = (f"{fmt_ratio(8 / t)}x faster than eight runs" if t <= 8 else
                   f"{fmt_ratio(t / 8)}x the time of eight runs")
            txt = (f"- **W4 on {w}.** Eight models in one compiled program take "
                   f"{fmt_ratio(t)}x "
                   f"the time of one nnkit epoch ({vs8}) and {fmt_ratio(8 / per)}x the time "
                   f"of one hand-written per-step "
                   f"model (hand-written vmap per step: "
                   f"{fmt_ratio(8 / ratio_of(ent, 'jax-vmap8'))}x, vmap + scan: "
                   f"{fmt_ratio(8 / ratio_of(ent, 'jax-vmap8-scan'))}x).")
            if _have(ent, "nnkit-sweep8-vmap", "nnkit-sweep8-map"):
                txt += (f" `vectorize='vmap'`: {_r(ent, 'nnkit-sweep8-vmap', 'nnkit-epoch')}x "
                        f"one model's per-model speed, `'map'` (one model after another "
                        f"inside the program): {_r(ent, 'nnkit-sweep8-map', 'nnkit-epoch')}x.")
            if w == "W3":
                one_dev = (f" On one device the eight take "
                           f"{fmt_ratio(sweep_time_ratio(ent, eight='nnkit-sweep8-1dev'))}x "
                           f"one model's time." if _have(ent, "nnkit-sweep8-1dev") else "")
                hand = (f" Hand-written vmap + scan with the models over all devices: "
                        f"{fmt_ratio(8 / ratio_of(ent, 'jax-vmap8-scan-devices'))}x the "
                        f"reference's time." if _have(ent, "jax-vmap8-scan-devices") else "")
                ndev = res.get("meta", {}).get("devices", 1)
                txt += (f"{one_dev}{hand} `nnkit.sweep` spreads the models over the "
                        f"process's devices (this run: {ndev} JAX CPU devices, one per core), "
                        f"{8 // max(ndev, 1)} per device. Eight tiny models still do not "
                        "fit in the time of two: "
                        "each added model brings its own 16x16 products, activations and "
                        "Adam state, and products this small run far below the machine's "
                        "matmul peak. "
                        + _sweep_floor(res) +
                        " `Dense`'s weight gradient goes through "
                        "`nnkit.matmul`, so that its batched form is a plain matmul (the "
                        "generic batched dot XLA:CPU ran before was ~3x slower); the sweep "
                        "gathers the batches once for all models when they share a seed, "
                        "runs many epochs per call (all of a sweep's, here 20 per call: one "
                        "call per epoch cost ~0.1-0.3 ms of host CPU each to hand the 2 "
                        "devices their buffers, ~10% of this epoch) without waiting for the "
                        "previous call, and reads all epochs' logs in one transfer at the "
                        "end. " + _over_floor(res, t) + _same_program(ent, t))
            else:
                txt += (" For a model this size vmap's batched `(8, 128, 512) @ (8, 512, "
                        "512)` matmuls run slower on XLA:CPU than the same matmuls one model "
                        "at a time, so `nnkit.sweep` maps over the models (on a CPU, "
                        "`vectorize='auto'` picks `map` above 100k parameters per model): "
                        "a sweep then costs about what eight runs cost, in one program and "
                        "one host sync. "
                        "(`map` slices each model's state out of the stacked state and "
                        "writes it back once per epoch; with this benchmark's 10-step epochs "
                        "that copy is still visible, with real epochs of hundreds of steps it "
                        "is not.)")
            out.append(txt)

    ld = res.get("loader", {}).get("entries", {})
    if _have(ld, "jax", "device-epoch", "host-iterator"):
        txt = (f"- **Loaders are not the bottleneck.** Against the hand-written W1 step "
               f"({_med(ld, 'jax'):.0f} steps/s), the device epoch batcher delivers "
               f"{fmt_ratio(ratio_of(ld, 'device-epoch'))}x as many batches per second and "
               f"the host `BatchIterator` {fmt_ratio(ratio_of(ld, 'host-iterator'))}x")
        if _have(ld, "nnkit-step+iterator", "nnkit-step"):
            txt += (f"; nnkit's step fed by the iterator runs at "
                    f"{_r(ld, 'nnkit-step+iterator', 'nnkit-step')}x its speed on batches "
                    f"already on the device")
        out.append(txt + ".")

    comp = res.get("compile", {})
    if comp:
        parts = []
        for w, c in comp.items():
            if "jax" in c and "nnkit-step" in c:
                parts.append(f"{w} {c['nnkit-step']['total'] / c['jax']['total']:.2f}x")
        out.append("- **Compile time** of nnkit's step over the hand-written one: "
                   + ", ".join(parts)
                   + ". nnkit's cross-entropy picks each example's log-probability with a "
                   "one-hot mask, `sum_c [c == y] log p_c`, where the hand-written step "
                   "(optax's `softmax_cross_entropy_with_integer_labels`) gathers it: the same "
                   "value, and a gradient `softmax - onehot` that is element-wise and fuses "
                   "with the softmax's kernel, where the gather's is a scatter with its own "
                   "index preparation. That is 5 kernels fewer to compile on W3 (its step "
                   "0.41 -> 0.36 s measured side by side; from the run before this change to a "
                   "compile-only run after it, W1 1.12x -> 0.98x, W3 1.23x -> 1.13x, W5 1.19x "
                   "-> 0.99x) and the same epoch speed or better (W3's ~5% faster). W2's Toeplitz "
                   "convolutions (5 row slices, reshaped into blocks, and "
                   "one matmul per layer) compile faster than XLA's convolutions; the im2col "
                   "form they replace (25 slices and a concatenation per layer) compiled at "
                   "~1.6x. On W3 (and W1's 512x10 and W5's 128x10 output layers) `nnkit.matmul` "
                   "lays `x^T` out for each small weight's gradient: one more kernel to compile "
                   "per layer (measured side by side on W3's step: 0.24 s -> 0.27 s), for an epoch"
                   " ~15% faster. Transposes are XLA:CPU's dearest kernels to compile: measured "
                   "apart, each distinct transpose added ~15-20 ms, an element-wise kernel ~6 ms, "
                   "and a dot XLA runs itself (the unlaid-out weight gradient) needs no generated "
                   "code at all. W3's step has two distinct transposes (the input batch's and a "
                   "hidden layer's, fused with its ReLU) and its metrics (~10 ms) over the "
                   "hand-written step. The epoch compiles more than the step "
                   "(gather, logs, roll-back) "
                   "and is compiled once per fit (and cached on disk by JAX's persistent "
                   "compilation cache when that is on).")

    cli = res.get("cli")
    if cli and cli.get("configs"):
        med = statistics.median
        parts = [f"`{n}` {med(t['off']):.1f} -> {med(t['warm']):.1f} s"
                 for n, t in cli["configs"].items()]
        out.append("- **Time to result.** `nnkit train CONFIG` end to end, cache off -> "
                   "second run reading JAX's persistent compilation cache: " + ", ".join(parts)
                   + f". What is left of a second run: `import nnkit` "
                   f"({med(cli['import']):.2f} s, half of it JAX's own import), tracing the "
                   "programs (JAX traces before it can look up the cache), training, and the "
                   "figures (~0.8 s of `digits_mlp`'s ~2.1 s in a profile: matplotlib's import "
                   "and two PNGs). Writing the cache on a first run costs at most a few tenths "
                   "of a second, within this machine's run-to-run noise (repeated runs moved "
                   "by ~10%). "
                   "Three changes made these figures: the cache itself "
                   "(`nnkit/compile_cache.py`); TensorBoard events written by nnkit "
                   "(`nnkit/tensorboard.py`) instead of a summary-writer package that imported "
                   "PyTorch, when installed, at every run (~1 s); and figures drawn without "
                   "pyplot, so `import nnkit` no longer imports matplotlib (~0.2 s). "
                   "`create_train_state` also compiles its run-once programs at LLVM level 1 "
                   "(LeNet-5's initialisers ~1.3 -> ~0.6 s to compile). Before "
                   "them, in this environment (PyTorch installed), `digits_mlp` took ~5.8 s and "
                   "`digits_lenet5` ~7.0 s per run.")

    loads = [v for d in wls.values() for m in d.get("entries", {}).values()
             for v in (m.get("foreign") or []) if isinstance(v, int | float)]
    busy = bool(loads) and sorted(loads)[len(loads) // 2] > 0.3
    if busy and any(_have(d.get("entries", {}), "torch") for d in wls.values()):
        out.append("- **PyTorch on a shared machine.** PyTorch's CPU kernels use OpenMP "
                   "with one thread per core; when other processes take a core, its "
                   "barriers stall and its speed drops far more than XLA's (up to 10x on "
                   "W2/W3 in our runs). Its windows are interleaved like all others, but "
                   "read its ratios together with the 'other processes' load of each "
                   "table.")
    return out
