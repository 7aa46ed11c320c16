"""Code run in a fresh Python interpreter, for tests that need JAX started another way: the
number of CPU devices is fixed when JAX starts, so multi-device checks cannot run in the
test process itself."""

from __future__ import annotations

import json
import os

_DROPPED_PREFIXES = ("NNKIT_", "SLURM_")
_DROPPED = ("JAX_COORDINATOR_ADDRESS", "XLA_FLAGS", "JAX_NUM_CPU_DEVICES")


def cpu_env(cpu_devices: int | None = None) -> dict[str, str]:
    """This process's environment for a child on the CPU backend: no cluster or nnkit
    settings but the test run's ``NNKIT_COMPILE_CACHE`` and LLVM level, no inherited
    device-count flags; ``cpu_devices`` CPU devices if given (``JAX_NUM_CPU_DEVICES``), else
    JAX's default of one."""
    env = {k: v for k, v in os.environ.items()
           if k == "NNKIT_COMPILE_CACHE"  # kept: the test run's, not the user's
           or not k.startswith(_DROPPED_PREFIXES) and k not in _DROPPED}
    env["JAX_PLATFORMS"] = "cpu"
    level = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if f.startswith("--xla_backend_optimization_level=")]
    if level:
        env["XLA_FLAGS"] = level[-1]  # the test run's LLVM level (tests/conftest.py)
    if cpu_devices is not None:
        env["JAX_NUM_CPU_DEVICES"] = str(cpu_devices)
    return env


def result(out: str, err: str, rc: int) -> dict:
    """The JSON after the last ``RESULT `` line a worker printed; fails with the worker's
    output if it exited non-zero or printed none."""
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert rc == 0 and lines, f"worker failed (rc={rc}):\n{out[-2000:]}\n{err[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])
