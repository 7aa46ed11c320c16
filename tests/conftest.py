"""Shared pytest setup. Keep it small: fixtures and settings every test module can rely on.

JAX's persistent compilation cache lives under pytest's cache dir
(``.pytest_cache/d/jax-compilation-cache``), so a second run of the suite skips most XLA
compiles. Programs that compile in under 0.5 s are not cached (cheaper to recompile than to
read back). Set ``NNKIT_TEST_NO_JAX_CACHE=1`` to run without it. Running with
``-p no:cacheprovider`` also leaves it off.

``nnkit`` commands run in child processes use their own persistent cache
(``NNKIT_COMPILE_CACHE``) beside it, ``.pytest_cache/d/nnkit-compile-cache``, or none when the
one above is off: never the user's ``~/.cache``.

Matmuls and convolutions run at full float32 precision (``jax_default_matmul_precision``
``"highest"``, in this process and, by the environment, in child processes): GPUs default
to TF32 and TPUs to bfloat16 passes, ~1e-3 relative error, while the tests compare
implementations to ~1e-5. On a CPU this changes nothing.

XLA:CPU generates code at LLVM's optimisation level 0 (``XLA_FLAGS``
``--xla_backend_optimization_level=0``, passed on to child processes): most of a test is
compiling small programs that then run for milliseconds, and level 0 compiles them in
about two thirds of the time (the whole suite on 2 cores, no cache: 9.6 -> 7.2 min). XLA's own
graph passes (fusion, layout, algebraic simplification) run as always; only the machine
code differs, and a few functions round differently in the last bit (the tests compare
programs compiled alike). ``NNKIT_TEST_OPT_LEVEL=3`` (or any level) runs the suite at that
level instead, as users' programs run by default.
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    _level = os.environ.get("NNKIT_TEST_OPT_LEVEL", "0")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_backend_optimization_level={_level}").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision",
                  os.environ["JAX_DEFAULT_MATMUL_PRECISION"])


def pytest_configure(config: pytest.Config) -> None:
    cache = getattr(config, "cache", None)
    if cache is None or os.environ.get("NNKIT_TEST_NO_JAX_CACHE"):
        os.environ["NNKIT_COMPILE_CACHE"] = "off"
        return
    os.environ["NNKIT_COMPILE_CACHE"] = str(cache.mkdir("nnkit-compile-cache"))
    path = cache.mkdir("jax-compilation-cache")
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

