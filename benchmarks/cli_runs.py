"""Time to result of ``nnkit train CONFIG``, end to end, with and without the compile cache.

Each run is a new process (``python -m nnkit train CONFIG --no-progress``), as a user starts
it: Python and JAX start, the data set loads, every program compiles (or is read back from
JAX's persistent compilation cache, :mod:`nnkit.compile_cache`), training runs, and the
run directory is written (checkpoints, plots, TensorBoard events). Per config and repeat, in
this order: a run with the cache off (``NNKIT_COMPILE_CACHE=off``), a first run into an
empty cache directory (``cold``: the cache's cost of writing), and a run reading that
directory back (``warm``: the second run of a config, or one that changes only what the
programs take as arguments, e.g. the seed or a constant learning rate). Also timed: ``import
nnkit`` alone (the floor under any command). Medians of the repeats, wall seconds.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["CONFIGS", "measure", "lines"]

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("xor_mlp", "digits_mlp", "digits_lenet5")


def _env(cache: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_COMPILATION_CACHE", "XLA_FLAGS", "JAX_NUM_CPU"))}
    env["NNKIT_COMPILE_CACHE"] = cache
    return env


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return dt


def measure(configs: tuple[str, ...] = CONFIGS, repeats: int = 3,
            log: Any = print) -> dict[str, Any]:
    """``{"import": s, "configs": {name: {"off": [s...], "cold": [...], "warm": [...]}}}``."""
    out: dict[str, Any] = {"repeats": repeats, "configs": {}}
    with tempfile.TemporaryDirectory(prefix="nnkit-cli-bench-") as tmp:
        imp = [_timed([sys.executable, "-c", "import nnkit"], _env("off"))
               for _ in range(repeats)]
        out["import"] = imp
        log(f"  import nnkit {statistics.median(imp):.2f} s")
        for name in configs:
            cfg = str(ROOT / "configs" / f"{name}.yaml")
            times: dict[str, list[float]] = {"off": [], "cold": [], "warm": []}
            for r in range(repeats):
                cache = str(Path(tmp) / f"cache-{name}-{r}")
                for kind, setting in (("off", "off"), ("cold", cache), ("warm", cache)):
                    run_dir = Path(tmp) / f"{name}-{kind}-{r}"
                    cmd = [sys.executable, "-m", "nnkit", "train", cfg, "--no-progress",
                           "--out", str(run_dir)]
                    times[kind].append(_timed(cmd, _env(setting)))
                    shutil.rmtree(run_dir, ignore_errors=True)
            out["configs"][name] = times
            log("  " + name + ": " + ", ".join(
                f"{k} {statistics.median(v):.2f} s" for k, v in times.items()))
    return out


def lines(res: dict[str, Any]) -> list[str]:
    """The report table."""
    med = statistics.median
    rows = ["| config | cache off s | first run, cache written s | second run, cache read s "
            "| second / off |", "|---|---|---|---|---|"]
    for name, t in res["configs"].items():
        rows.append(f"| `configs/{name}.yaml` | {med(t['off']):.2f} | {med(t['cold']):.2f} | "
                    f"{med(t['warm']):.2f} | {med(t['warm']) / med(t['off']):.2f} |")
    rows += ["", f"`import nnkit` alone: {med(res['import']):.2f} s. Medians of "
             f"{res['repeats']} repeats."]
    if res.get("command"):
        rows[-1] += f" Measured {res.get('date', '')} by `{res['command']}`."
    return rows
