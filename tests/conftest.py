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
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

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

