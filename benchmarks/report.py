"""Markdown tables for ``benchmarks/RESULTS.md`` from the results dict of :mod:`benchmarks.run`.

Every speed is a median over interleaved windows; every ratio is over the hand-written
``jax`` entry of the same table (measured in the same interleaved rounds).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["fmt_ratio", "ratio_of", "targets", "render"]

MAIN_COLUMNS = ("jax-scan", "nnkit-step", "nnkit-epoch", "nnx", "nnx-split", "linen",
                "equinox", "haiku", "torch", "torch-fused", "torch-1t")
PEERS = ("nnx", "nnx-split", "linen", "equinox", "haiku", "torch", "torch-fused", "torch-1t")
"""Keys of the peer-library entries, which the "ahead of every peer" targets read."""


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def fmt_ratio(r: float) -> str:
    """``1.23`` style, ``-`` for NaN."""
    return "-" if not math.isfinite(r) else f"{r:.2f}"


def _rate(v: float) -> str:
    if not math.isfinite(v):
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def ratio_of(entries: dict[str, dict], key: str, ref: str = "jax") -> float:
    """``median(key) / median(ref)`` from measurement dicts (NaN if either is missing)."""
    a, b = entries.get(key, {}), entries.get(ref, {})
    return _num(a.get("median")) / _num(b.get("median"))


def _cell(entries: dict[str, dict], key: str) -> str:
    m = entries.get(key)
    if m is None:
        return "n/a"
    if m.get("skipped"):
        return "skip"
    return fmt_ratio(ratio_of(entries, key))


def _status(value: float, goal: float, higher_is_better: bool = True) -> str:
    if not math.isfinite(value):
        return "not measured"
    ok = value >= goal if higher_is_better else value <= goal
    if ok:
        return "**met**"
    short = (goal - value) / goal if higher_is_better else (value - goal) / goal
    pct = 100 * short
    return f"**missed** by {pct:.0f}%" if pct >= 1 else f"**missed** by {pct:.1f}%"


def targets(res: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``[(target, measured, status)]`` for the issue's targets that were measured.

    Speed targets use the focused re-measurement (``res["targets"]``) where there is one,
    else the main tables; "ahead of every peer" compares with the fastest peer measured in
    either (a peer missing from the focused set is taken from the main table, as a ratio to
    the main table's reference).
    """
    rows: list[tuple[str, str, str]] = []
    focus = res.get("targets", {})
    main = res.get("workloads", {})

    def ratio(w: str, key: str) -> float:
        for src in (focus, main):
            ent = src.get(w, {}).get("entries", {})
            if key in ent and not ent[key].get("skipped"):
                return ratio_of(ent, key)
        return math.nan

    names = [w for w in ("W1", "W2", "W3", "W5") if w in focus or w in main]
    for w in names:
        if w != "W3":
            r = ratio(w, "nnkit-fit-step")
            if math.isfinite(r):
                rows.append((f"{w}: nnkit per-step path (fit mode='step') >= 0.97x "
                             "hand-written", fmt_ratio(r), _status(r, 0.97)))
            r = ratio(w, "nnkit-step")
            rows.append((f"{w}: make_train_step with its defaults >= 0.97x "
                         "hand-written", fmt_ratio(r), _status(r, 0.97)))
    if "W3" in names:
        r = ratio("W3", "nnkit-epoch")
        rows.append(("W3: nnkit epoch-in-scan >= 3x hand-written per-step", fmt_ratio(r),
                     _status(r, 3.0)))
    for w in names:
        peers = {k: ratio(w, k) for k in PEERS}
        peers = {k: v for k, v in peers.items() if math.isfinite(v)}
        ours = ratio(w, "nnkit-epoch")
        if not peers or not math.isfinite(ours):
            continue
        best_key = max(peers, key=lambda k: peers[k])
        r = ours / peers[best_key]
        rows.append((f"{w}: nnkit epoch-in-scan ahead of every peer",
                     f"{fmt_ratio(r)}x the best peer ({best_key})", _status(r, 1.0)))
    sw = res.get("sweeps", {}).get("W3")
    if sw:
        t = sweep_time_ratio(sw["entries"])
        rows.append(("W4: 8-model sweep of W3 in <= 2x the time of one model (one nnkit "
                     "scanned model)", f"{fmt_ratio(t)}x",
                     _status(t, 2.0, higher_is_better=False)))
        ent = sw["entries"]
        if _num(ent.get("nnkit-sweep8-1dev", {}).get("median")) > 0:
            t = sweep_time_ratio(ent, eight="nnkit-sweep8-1dev")
            rows.append(("W4: the same, the 8 models on one device", f"{fmt_ratio(t)}x",
                         _status(t, 2.0, higher_is_better=False)))
        if _num(ent.get("jax", {}).get("median")) > 0:
            t = sweep_time_ratio(ent, one="jax")
            rows.append(("W4: the same, one model = the hand-written per-step reference",
                         f"{fmt_ratio(t)}x", _status(t, 2.0, higher_is_better=False)))
    for w, c in res.get("compile", {}).items():
        if "jax" in c and "nnkit-step" in c:
            r = c["nnkit-step"]["total"] / c["jax"]["total"]
            rows.append((f"{w}: compile of nnkit's step <= 1.2x hand-written", f"{r:.2f}x",
                         _status(r, 1.2, higher_is_better=False)))
    return rows


def sweep_time_ratio(entries: dict[str, dict], one: str = "nnkit-epoch",
                     eight: str = "nnkit-sweep8") -> float:
    """Time of one epoch of the 8-model sweep (``eight``: by default over all devices) over
    one epoch of one model (by default nnkit's scanned epoch; ``one="jax"``: the
    hand-written per-step reference).

    Rates are model-steps/s, so ``t8 / t1 = 8 * rate1 / rate8``.
    """
    one = _num(entries.get(one, {}).get("median"))
    eight = entries.get(eight, {})
    return _num(eight.get("models", 8)) * one / _num(eight.get("median"))


def _detail_table(entries: dict[str, dict], labels: dict[str, str], unit: str = "steps/s",
                  flops: float | None = None, peak: float | None = None) -> list[str]:
    head = (f"| entry | {unit} (median) | min - max | ratio | best-window ratio | "
            f"first call s | compile s | other procs |")
    sep = "|---|---|---|---|---|---|---|---|"
    if flops:
        head += " GFLOP/s | % of peak |"
        sep += "---|---|"
    lines = [head, sep]
    for k, m in entries.items():
        label = labels.get(k, k)
        if m.get("skipped"):
            lines.append(f"| {label} (`{k}`) | skipped: {m['skipped']} |||||||" +
                         ("||" if flops else ""))
            continue
        row = (f"| {label} (`{k}`) | {_rate(_num(m['median']))} | {_rate(_num(m['lo']))} - "
               f"{_rate(_num(m['hi']))} | {fmt_ratio(ratio_of(entries, k))} | "
               f"{fmt_ratio(_best_ratio(entries, k))} | "
               f"{_num(m['first_call_s']):.2f} | {max(0.0, _num(m['compile_s'])):.2f} | "
               f"{_median([_num(v) for v in m.get('foreign', [])]):.2f} |")
        if flops:
            g = flops * _num(m["median"]) / 1e9
            pct = 100 * g * 1e9 / peak if peak else math.nan
            row += f" {g:.1f} | {pct:.0f}% |"
        lines.append(row)
    return lines


def _best_ratio(entries: dict[str, dict], key: str, ref: str = "jax") -> float:
    """Fastest window over the reference's fastest window (the least disturbed windows)."""
    return _num(entries.get(key, {}).get("hi")) / _num(entries.get(ref, {}).get("hi"))


def _median(xs: list[float]) -> float:
    xs = sorted(v for v in xs if math.isfinite(v))
    if not xs:
        return math.nan
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def _foreign(entries: dict[str, dict]) -> float:
    return _median([_num(v) for m in entries.values() for v in m.get("foreign", [])])


def render(res: dict[str, Any], labels: dict[str, str], findings: list[str]) -> str:
    """The whole RESULTS.md text."""
    meta = res["meta"]
    out = ["# nnkit benchmarks: results", ""]
    out += [f"Generated by `{meta['command']}` on {meta['date']}.", ""]
    if meta.get("parts"):
        out += [f"Merged from {len(meta['parts'])} runs on this machine, each section "
                f"measured whole in one of them: " + "; ".join(
                    f"`{p['command']}` ({p['date']}" + (f", {p['seconds']:.0f} s"
                                                         if p.get("seconds") else "") + ")"
                    for p in meta["parts"]) + ".", ""]
    out += [f"Machine: {meta['machine']}"
            + (f", {meta['devices']} JAX devices (one per core: only `nnkit.sweep` uses "
               f"more than the first)" if meta.get("devices", 1) > 1 else "")
            + f". Versions: {meta['versions']}.", "",
            f"Method: synthetic data (MNIST shapes for W1/W2), float32, Adam (lr 1e-3), mean "
            f"softmax cross-entropy. Each entry is compiled first (its first call is reported "
            f"separately), then timed in {meta['windows']} windows of about "
            f"{meta['window_s']} s with `block_until_ready`, the entries **interleaved** "
            f"round-robin (the order rotated each round) so machine drift hits all of them. "
            f"Figures are **medians of interleaved windows** (min - max shown); ratios are "
            f"over the hand-written `jax.jit` + optax step with donated buffers (`jax` = 1.00) "
            f"timed in the same rounds. The CPU share taken by other processes during each "
            f"entry's windows is given (\"other procs\", in cores); when the machine is "
            f"shared, interleaving spreads that load over all entries, but single figures "
            f"move from run to run (ratios much less). The \"best-window ratio\" (fastest "
            f"window over the reference's fastest) is the estimate least affected by load.",
            ""]
    if meta.get("backend", "cpu") != "cpu":
        out += [f"Matmul precision of float32 inputs: JAX `{meta.get('matmul_precision')}`. "
                f"JAX's default computes them in TF32 on recent NVIDIA GPUs, PyTorch's does "
                f"not: to compare like with like, run with "
                f"`JAX_DEFAULT_MATMUL_PRECISION=float32` (or set PyTorch's "
                f"`torch.set_float32_matmul_precision('high')`). PyTorch entries run on CUDA "
                f"here, or are skipped if PyTorch sees no GPU; `torch-1t` is CPU-only.", ""]
    peak = res.get("peak", {})
    if peak:
        out += [f"float32 matmul peak (`jnp.dot` {peak['n']}^3, best of 5 calls at the start "
                f"and 5 at the end of the run): **{peak['best'] / 1e9:.1f} GFLOP/s**. Smaller "
                f"matmuls that stay in cache run faster than this (W1's `(128, 784) @ (784, "
                f"512)` measured up to ~2.7x on a quiet machine), so a step can exceed 100%.",
                ""]

    out += ["## Targets", "", "| target | measured | status |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in targets(res)]
    focus = res.get("targets", {})
    if focus:
        any_w = next(iter(focus.values()))
        out += ["", f"Speed targets are read from a focused re-measurement: only the nnkit "
                f"entries, the reference and the closest peers, {any_w['windows']} interleaved "
                f"windows of {any_w['window_s']} s each (tables at the end); \"ahead of every "
                f"peer\" takes each peer from there or, if absent, from the main table."]
    out += [""]

    wls = res.get("workloads", {})
    if wls:
        out += ["## Speed relative to hand-written JAX (median steps/s ratio)", "",
                "| workload | hand-written JAX | " + " | ".join(MAIN_COLUMNS) + " |",
                "|---|---|" + "---|" * len(MAIN_COLUMNS)]
        for w, d in wls.items():
            ent = d["entries"]
            base = _rate(_num(ent.get("jax", {}).get("median")))
            cells = " | ".join(_cell(ent, k) for k in MAIN_COLUMNS)
            out.append(f"| {w} {d['title']} | {base} /s (1.00) | {cells} |")
        out += ["", "`n/a`: not run in this measurement; `skip`: the library is not "
                "installed. W5's peers run each library's own LSTM (Flax "
                "`RNN(OptimizedLSTMCell)`, Equinox `LSTMCell` under `lax.scan`, Haiku "
                "`LSTM` under `dynamic_unroll`, PyTorch `nn.LSTM`). `jax-scan` and "
                "`nnkit-epoch` run K steps per call (W1, W3: 100; W2: 25; W5: 10). "
                "`torch-1t`: PyTorch on one thread (fused Adam), which a busy machine "
                "hurts less than PyTorch's default of one OpenMP thread per core.", ""]
        for w, d in wls.items():
            ent = d["entries"]
            flops = d.get("flops_per_step") if w in ("W1", "W2") else None
            out += [f"### {w}: {d['title']}", "",
                    f"Other processes used a median {_foreign(ent):.2f} cores during the "
                    f"windows. Analytic FLOPs per step: {d['flops_per_step'] / 1e6:.1f} M.", ""]
            out += _detail_table(ent, labels, flops=flops, peak=peak.get("best"))
            out += [""]

    if focus:
        out += ["## Focused re-measurement for the targets", ""]
        for w, d in focus.items():
            ent = d["entries"]
            out += [f"### {w}: {d['title']} ({d['windows']} windows)", "",
                    f"Other processes: {_foreign(ent):.2f} cores.", ""]
            out += _detail_table(ent, labels)
            out += [""]

    sweeps = res.get("sweeps", {})
    if sweeps:
        out += ["## W4: 8-model learning-rate sweep", "",
                "Rates are **model**-steps/s (8 models x steps); ratios over one hand-written "
                "per-step model, so 1.00 = each of the 8 models trains as fast as one model "
                "alone.", ""]
        for w, d in sweeps.items():
            ent = d["entries"]
            t = sweep_time_ratio(ent)
            vs8 = (f"{fmt_ratio(8 / t if t else math.nan)}x faster than 8 sequential runs"
                   if not t or t <= 8 else f"{fmt_ratio(t / 8)}x the time of 8 sequential runs")
            out += [f"### W4 on {w}", "",
                    f"One epoch of the 8-model nnkit sweep takes **{fmt_ratio(t)}x** the time "
                    f"of one epoch of one model (8 sequential runs: 8x), i.e. {vs8}. "
                    f"Other processes: {_foreign(ent):.2f} cores.", ""]
            out += _detail_table(ent, labels, unit="model-steps/s")
            out += [""]

    loader = res.get("loader")
    if loader:
        ent = loader["entries"]
        out += ["## Loader throughput (W1 data, batch 128)", "",
                "Rates in batches/s (the training entries: steps/s); ratio over the "
                "hand-written W1 step measured in the same rounds.", ""]
        out += _detail_table(ent, labels, unit="batches/s")
        out += [""]

    comp = res.get("compile", {})
    if comp:
        out += ["## Compile time (fresh jit, `lower` + `compile`, median of repeats)", "",
                "| workload | hand-written step s | nnkit step s | ratio | hand-written scan "
                "(K steps) s | nnkit epoch s | ratio |", "|---|---|---|---|---|---|---|"]
        for w, c in comp.items():
            def tot(s, c=c):
                return _num(c.get(s, {}).get("total"))
            def f2(v: float) -> str:
                return f"{v:.2f}" if math.isfinite(v) else "-"

            out.append(f"| {w} | {f2(tot('jax'))} | {f2(tot('nnkit-step'))} | "
                       f"{f2(tot('nnkit-step') / tot('jax'))} | {f2(tot('jax-scan'))} | "
                       f"{f2(tot('nnkit-epoch'))} | {f2(tot('nnkit-epoch') / tot('jax-scan'))} |")
        out += ["", "(trace + lower / XLA compile split for each side is in "
                "`benchmarks/results.json`.)", ""]

    cli = res.get("cli")
    if cli:
        from benchmarks.cli_runs import lines as cli_lines

        out += ["## Time to result: `nnkit train CONFIG` end to end", "",
                "A new process per run, as a user starts it (`benchmarks/cli_runs.py`): "
                "start-up, data, compiles (or JAX's persistent compilation cache, which the "
                "command line turns on), training and the run directory's files.", "",
                *cli_lines(cli), ""]

    probes = res.get("probes", {})
    if probes:
        out += ["## Probes", ""]
        for name, p in probes.items():
            out += [f"**{name}**", "", *p.get("lines", []), ""]

    if findings:
        out += ["## Findings", "", *findings, ""]
    return "\n".join(out) + "\n"
