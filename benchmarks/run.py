"""Run the benchmark suite and write ``benchmarks/RESULTS.md``.

    python -m benchmarks.run                       # everything (~15-20 min on 2 cores)
    python -m benchmarks.run --quick               # short windows, fewer repeats
    python -m benchmarks.run --only W1,W3          # sections: W1 W2 W3 W4 W5 targets loader
                                                   #   compile probes cli
    python -m benchmarks.run --only W3 --entries jax,nnkit-step,nnkit-epoch
    python -m benchmarks.run --render benchmarks/results.json   # report text only
    python -m benchmarks.run --render a.json,b.json  # one report from partial runs' JSONs

A full run (no ``--only``/``--entries``/``--quick``) writes ``benchmarks/RESULTS.md`` and
``benchmarks/results.json``; other runs print the tables and write only where ``--out`` /
``--json`` point.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import entries as E
from benchmarks import findings, harness, merge, report, workloads
from benchmarks.harness import Measurement

__all__ = ["main", "parse_args", "SECTIONS"]

HERE = Path(__file__).resolve().parent
SECTIONS = ("W1", "W2", "W3", "W4", "W5", "targets", "loader", "compile", "probes", "cli")
_MAIN = ("W1", "W2", "W3", "W5")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 windows of 0.3 s, 1 compile repeat")
    p.add_argument("--render", metavar="JSON[,JSON...]", default=None,
                   help="measure nothing: write RESULTS.md (or --out) again from a "
                        "results.json, e.g. after editing the report text; several "
                        "comma-separated JSONs of partial runs (--only ... --json F) are "
                        "merged into one report (benchmarks/merge.py)")
    p.add_argument("--only", default="", help=f"comma-separated sections of {SECTIONS}")
    p.add_argument("--entries", default="",
                   help="comma-separated entries for W1/W2/W3/W5 (default: all, plus the "
                        "analysis entries in a full run); known: " + ", ".join(E.REGISTRY))
    p.add_argument("--windows", type=int, default=None, help="timed windows per entry")
    p.add_argument("--window-s", type=float, default=None, help="seconds per window")
    p.add_argument("--retries", type=int, default=0,
                   help="re-run a window disturbed by other processes (> 1 core) this often")
    p.add_argument("--compile-repeats", type=int, default=None)
    p.add_argument("--quiet-wait", type=float, default=None,
                   help="max seconds to wait for other processes to calm down per section")
    p.add_argument("--cpu-devices", type=int, default=None,
                   help="JAX CPU devices (default: one per core, so that nnkit.sweep can "
                        "spread its models over the cores; single-model entries run on the "
                        "first device as with one)")
    p.add_argument("--out", default=None, help="write the markdown report here")
    p.add_argument("--json", default=None, help="write the raw results here")
    return p.parse_args(argv)


def _versions() -> str:
    names = ["jax", "jaxlib", "optax", "numpy", "flax", "equinox", "dm-haiku", "torch", "nnkit"]
    out = [f"Python {platform.python_version()}"]
    for n in names:
        try:
            out.append(f"{n} {metadata.version(n)}")
        except metadata.PackageNotFoundError:
            out.append(f"{n} (not installed)")
    return ", ".join(out)


def _machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages * size / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        pass
    import jax

    return (f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.machine()}, "
            f"JAX backend {jax.default_backend()}")


def _dump(ms: dict[str, Measurement]) -> dict[str, dict]:
    return {k: m.as_dict() for k, m in ms.items()}


def _labels() -> dict[str, str]:
    from benchmarks import loader, probes, sweeps

    labels = {k: v[0] for k, v in E.REGISTRY.items()}
    labels.update({k: v[0] for k, v in sweeps.SWEEP_ENTRIES.items()})
    wl = workloads.get("W3")
    data = workloads.synthetic(workloads.get("W3"))
    for e in probes.overhead_entries(wl, data):
        labels.setdefault(e.key, e.label)
    for e in loader.make_loader_entries(wl, data):
        labels.setdefault(e.key, e.label)
    labels["jax"] = E.REGISTRY["jax"][0]
    return labels


def load_results(paths: list[str]) -> dict[str, Any]:
    """The results in ``paths``: one results JSON as it is, several merged into one
    (:func:`benchmarks.merge.merge`). Raises SystemExit naming a missing or unreadable file,
    or what differs between two parts."""
    if not paths:
        raise SystemExit("--render: no results JSON given")
    parts = []
    for name in paths:
        try:
            parts.append((name, json.loads(Path(name).read_text())))
        except OSError as e:
            raise SystemExit(f"--render: cannot read {name}: {e.strerror or e}") from None
        except json.JSONDecodeError as e:
            raise SystemExit(f"--render: {name} is not JSON ({e})") from None
        if not isinstance(parts[-1][1], dict) or "meta" not in parts[-1][1]:
            raise SystemExit(f"--render: {name} is not a results JSON of benchmarks.run "
                             f"(no 'meta')")
    if len(parts) == 1:
        return parts[0][1]
    try:
        res = merge.merge(parts)
    except ValueError as e:
        raise SystemExit(f"--render: {e}") from None
    res["meta"]["command"] = "python -m benchmarks.run --render " + ",".join(paths)
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the selected sections and returns the results dict (also written as JSON)."""
    args = parse_args(argv)
    if args.render:  # text only: RESULTS.md again from results JSON(s), no measurement
        res = load_results([s.strip() for s in args.render.split(",") if s.strip()])
        text = report.render(res, _labels(), findings.build(res))
        Path(args.out or HERE / "RESULTS.md").write_text(text)
        print(f"wrote {args.out or HERE / 'RESULTS.md'} from {args.render}")
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1, default=float))
            print(f"wrote {args.json}")
        return res
    only = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        raise SystemExit(f"unknown sections {bad}; known: {', '.join(SECTIONS)}")
    chosen = [e.strip() for e in args.entries.split(",") if e.strip()]
    full = not (args.quick or args.only or args.entries)
    windows = args.windows or (2 if args.quick else 7)
    window_s = args.window_s or (0.3 if args.quick else 0.5)
    repeats = args.compile_repeats or (1 if args.quick else 9)
    quiet_wait = args.quiet_wait if args.quiet_wait is not None else (0 if args.quick else 20)
    retries = args.retries
    timing = {"windows": windows, "window_s": window_s, "retries": retries, "log": print}
    log = print

    import jax

    cpu_devices = args.cpu_devices or int(os.environ.get("JAX_NUM_CPU_DEVICES", 0)) or (
        os.cpu_count() or 1)
    jax.config.update("jax_num_cpu_devices", cpu_devices)  # before any device is used

    from benchmarks import cli_runs, compile_times, conv_probe, floors, loader, probes, sweeps

    t_start = time.perf_counter()
    command = "python -m benchmarks.run" + ("" if argv is None and len(sys.argv) <= 1 else
                                            " " + " ".join(argv if argv is not None
                                                           else sys.argv[1:]))
    res: dict[str, Any] = {"meta": {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "command": command.strip(), "machine": _machine(), "versions": _versions(),
        "windows": windows, "window_s": window_s, "retries": retries,
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "devices": len(jax.devices()),
        "backend": jax.default_backend(),
        "matmul_precision": str(jax.config.jax_default_matmul_precision or "default"),
    }}

    def settle(name: str) -> None:
        log(f"\n== {name}")
        if quiet_wait:
            harness.wait_quiet(max_wait_s=quiet_wait, log=log)

    if any(w in only for w in ("W1", "W2")):
        settle("peak")
        res["peak"] = harness.peak_matmul_flops()
        log(f"  float32 matmul peak {res['peak']['best'] / 1e9:.1f} GFLOP/s")

    res["workloads"] = {}
    for w in _MAIN:
        if w not in only:
            continue
        wl = workloads.get(w)
        data = workloads.synthetic(wl)
        keys = chosen or [*E.DEFAULT, *(() if args.quick else E.EXTRA_BY_WORKLOAD.get(w, ()))]
        settle(f"{w}: {wl.title}")
        ms = harness.measure(E.make_entries(wl, data, keys), wl, **timing)
        res["workloads"][w] = {"title": wl.title, "flops_per_step": workloads.flops_per_step(wl),
                               "entries": _dump(ms)}

    if "targets" in only:
        res["targets"] = {}
        focus = {**timing, "windows": 3 if args.quick else 15,
                 "window_s": 0.3 if args.quick else 0.4}
        for w in _MAIN:
            if w not in only and any(x in only for x in _MAIN):
                continue
            wl = workloads.get(w)
            data = workloads.synthetic(wl)
            settle(f"targets {w}: focused re-measurement, {focus['windows']} windows")
            ms = harness.measure(E.make_entries(wl, data, E.TARGET_ENTRIES[w]), wl, **focus)
            res["targets"][w] = {"title": wl.title, "windows": focus["windows"],
                                 "window_s": focus["window_s"], "entries": _dump(ms)}

    if "W4" in only:
        res["sweeps"] = {}
        for w in ("W3", "W1"):
            wl = sweeps.sweep_workload(w)
            data = workloads.synthetic(wl)
            settle(f"W4 on {w}: 8 learning rates, {wl.steps_per_epoch} steps per epoch")
            ms = harness.measure(sweeps.make_sweep_entries(wl, data), wl, **timing)
            res["sweeps"][w] = {"title": wl.title, "steps_per_epoch": wl.steps_per_epoch,
                                "entries": _dump(ms)}

    if "loader" in only:
        wl = workloads.get("W1")
        data = workloads.synthetic(wl)
        settle("loader (W1 data)")
        ents = [E.make_entries(wl, data, ["jax"])[0], *loader.make_loader_entries(wl, data)]
        ms = harness.measure(ents, wl, **timing)
        res["loader"] = {"entries": _dump(ms)}

    if "compile" in only:
        res["compile"] = {}
        for w in _MAIN:
            if w not in only and any(x in only for x in _MAIN):
                continue
            wl = workloads.get(w)
            settle(f"compile {w}")
            sides = ("jax", "nnkit-step") + (("jax-scan", "nnkit-epoch")
                                             if w in ("W1", "W3") else ())
            res["compile"][w] = compile_times.measure_compile(wl, workloads.synthetic(wl),
                                                              repeats=repeats, sides=sides)
            log("  " + ", ".join(f"{k} {v['total']:.2f} s" for k, v in res["compile"][w].items()))

    if "probes" in only:
        res["probes"] = {}
        settle("probes")
        sh = probes.shuffle_probe()
        res["probes"]["Epoch shuffle: on the device (one jitted call) and on the host"] = sh
        wl2 = workloads.get("W2")
        hlo = conv_probe.hlo_conv_report(wl2, workloads.synthetic(wl2))
        lines = ["| program | convolutions' dim_labels | transposes | copies |",
                 "|---|---|---|---|"]
        for name, h in hlo.items():
            lines.append(f"| W2 step with XLA conv, {name} | "
                         f"{', '.join(f'`{d}`' for d in h['dim_labels'])} | "
                         f"{h['ops']['transpose']} | {h['ops']['copy']} |")
        res["probes"]["XLA convolutions alone vs inside lax.scan (nnkit impl='xla')"] = {
            "lines": lines, "report": hlo}
        wl3 = workloads.get("W3")
        settle("probe: per-call overhead on W3")
        ms = harness.measure(probes.overhead_entries(wl3, workloads.synthetic(wl3)), wl3,
                             **timing)
        ent = _dump(ms)
        lines = ["| variant | steps/s | ratio | us per call |", "|---|---|---|---|"]
        for k, m in ent.items():
            r = report.ratio_of(ent, k)
            us = 1e6 / m["median"] if m["median"] and math.isfinite(m["median"]) else math.nan
            lines.append(f"| {m['label']} (`{k}`) | {m['median']:,.0f} | {report.fmt_ratio(r)} "
                         f"| {us:.0f} |")
        res["probes"]["Per-call overhead of the W3 step, extras added one at a time"] = {
            "lines": lines, "entries": ent}
        settle("probe: W4's floor")
        ms = harness.measure(floors.sweep_floor_entries(wl3, workloads.synthetic(wl3)), wl3,
                             **timing)
        ent = _dump(ms)
        res["probes"][floors.SWEEP_PROBE] = {"lines": floors.sweep_floor_lines(ent),
                                             "entries": ent}
        settle("probe: W5's floor")
        res["probes"][floors.LSTM_PROBE] = floors.lstm_floor_probe(workloads.get("W5"))

    if "cli" in only:
        settle("nnkit train, end to end")
        res["cli"] = cli_runs.measure(repeats=1 if args.quick else 3, log=log)
        res["cli"].update(date=res["meta"]["date"], command=res["meta"]["command"])

    if "peak" in res:  # measured again at the end: the best of both (load only slows it)
        again = harness.peak_matmul_flops()
        res["peak"] = {k: max(v, again[k]) for k, v in res["peak"].items()}
        log(f"\n  float32 matmul peak (best of start and end) {res['peak']['best'] / 1e9:.1f} "
            f"GFLOP/s")
    res["meta"]["seconds"] = time.perf_counter() - t_start
    res["meta"]["jax_devices"] = str(jax.devices())
    text = report.render(res, _labels(), findings.build(res))
    print("\n" + text)
    out = args.out or (str(HERE / "RESULTS.md") if full else None)
    js = args.json or (str(HERE / "results.json") if full else None)
    if out:
        Path(out).write_text(text)
        log(f"wrote {out}")
    if js:
        Path(js).write_text(json.dumps(res, indent=1, default=float))
        log(f"wrote {js}")
    log(f"total {res['meta']['seconds']:.0f} s")
    return res


if __name__ == "__main__":
    main()
