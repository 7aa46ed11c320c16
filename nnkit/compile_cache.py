"""JAX's persistent compilation cache, as the ``nnkit`` command line uses it.

Every ``nnkit train`` is a new process, and JAX's in-memory cache of compiled programs dies
with it: a second run of a config, or a run that changes only values the compiled programs
take as arguments (the seed, a learning rate without a schedule, the number of epochs unless
a schedule's length is derived from it), compiles the same XLA programs again. With the
persistent cache on, it reads them back from disk: ``configs/digits_lenet5.yaml`` takes
about half the time end to end on a 2-core CPU (``benchmarks/RESULTS.md``, "Time to
result"; ``benchmarks/cli_runs.py``).

The commands that compile (``train``, ``eval``, ``lr-find``, ``sweep``, ``diagnose``) turn it
on; a script of one's own does the same with ``nnkit.enable_compile_cache()`` at its top
(the library never turns it on by itself: that is the application's choice). In this order
of precedence:

* a cache directory already configured for JAX (``JAX_COMPILATION_CACHE_DIR`` or
  ``jax.config``) is used as it is;
* ``NNKIT_COMPILE_CACHE=off`` (or ``0``, ``false``, ``no``) leaves it off;
* ``NNKIT_COMPILE_CACHE=DIR``, else ``$XDG_CACHE_HOME/nnkit/jax`` (``~/.cache/nnkit/jax``):
  entries go to a subdirectory named after the jaxlib version and this machine's CPU, so a
  home directory shared by different machines never hands one machine another's code.

Before the first use of a subdirectory, one tiny program is compiled, serialized and loaded
back (~0.1 s, once per backend): where XLA cannot load its own executables on this
machine, that is recorded in the subdirectory (``probe-cpu.json``, ``probe-cuda.json``, ...:
one per backend, since a CPU process and a GPU process share the subdirectory) and the cache
stays off for that backend, instead of failing to read every entry of every later run.
The cache holds at most 1 GiB (least recently used entries go first; JAX's eviction locks
the directory with ``filelock``); deleting the directory is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import warnings
from pathlib import Path

__all__ = ["ENV", "enable", "default_dir", "host_tag"]

ENV = "NNKIT_COMPILE_CACHE"
_OFF = {"off", "0", "false", "no"}
MAX_BYTES = 1 << 30
MIN_COMPILE_SECONDS = 0.05  # cheaper programs are compiled again rather than read back


def default_dir() -> Path | None:
    """``$XDG_CACHE_HOME/nnkit/jax``, or ``~/.cache/nnkit/jax``; ``None`` without a home."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no HOME and no password entry
            return None
    return Path(base) / "nnkit" / "jax"


def _cpu_description() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    keep = ("model name", "flags", "Features", "CPU part")  # x86 and ARM spellings
    first = {}
    for line in lines:
        k, _, v = line.partition(":")
        if k.strip() in keep:
            first.setdefault(k.strip(), v.strip())
    return repr(sorted(first.items()))


def host_tag() -> str:
    """``jaxlib-<version>-<machine>-<hash of the CPU's model and features>``."""
    import jaxlib

    cpu = hashlib.sha256(_cpu_description().encode()).hexdigest()[:12]
    return f"jaxlib-{jaxlib.__version__}-{platform.machine() or 'unknown'}-{cpu}"


def _loads_back() -> tuple[bool, str]:
    """Whether a compiled program survives serialization on this machine's backend."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.experimental.serialize_executable import deserialize_and_load, serialize

    try:
        compiled = jax.jit(lambda x: 2 * x + 1).lower(
            jax.ShapeDtypeStruct((3,), jnp.float32)).compile()
        loaded = deserialize_and_load(*serialize(compiled))
        ok = np.array_equal(np.asarray(loaded(jnp.ones(3, jnp.float32))), np.full(3, 3.0))
        return ok, "" if ok else "a program read back computed a wrong result"
    except Exception as e:  # noqa: BLE001 - any failure means: do not cache here
        return False, f"{type(e).__name__}: {e}".splitlines()[0][:300]


def _probe_file(path: Path) -> Path:
    """Where the probe of this process's default backend is recorded in ``path``."""
    import jax

    return path / f"probe-{jax.default_backend()}.json"


def _probe(path: Path) -> bool | None:
    """The recorded outcome of this backend's probe in ``path``, or ``None`` if none."""
    try:
        return bool(json.loads(_probe_file(path).read_text())["ok"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _configure(path: Path | None) -> None:
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    jax.config.update("jax_compilation_cache_dir", None if path is None else str(path))
    if path is None:
        compilation_cache.reset_cache()  # JAX decides once per process whether to use it
        return
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)


def enable(directory: str | os.PathLike | None = None) -> Path | None:
    """Turns JAX's persistent compilation cache on for this process.

    Args:
      directory: where to keep it; default ``NNKIT_COMPILE_CACHE`` (``off`` turns it off),
        else ``~/.cache/nnkit/jax``. Entries go to a subdirectory per jaxlib version and CPU.

    Returns:
      The directory in use, or ``None`` when the cache stays off (turned off, not writable,
      or this machine cannot load its executables back). A directory already set for JAX
      (``JAX_COMPILATION_CACHE_DIR``) is kept and returned. A directory named here or in
      ``NNKIT_COMPILE_CACHE`` that cannot be created or written gives a ``UserWarning``
      naming it and the reason (the default one, e.g. under a read-only home, is skipped
      quietly).

    Call it before the first compile (after choosing devices, e.g. ``jax_num_cpu_devices``:
    the probe of a new directory starts JAX's backend).
    """
    import jax

    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return Path(configured)
    setting = os.environ.get(ENV, "") if directory is None else str(directory)
    if setting.strip().lower() in _OFF:
        return None
    root = Path(setting).expanduser() if setting else default_dir()
    if root is None:
        return None
    path = root / host_tag()
    ok = _probe(path)
    if ok is None:
        ok, unwritable = _probe_now(path)
        if unwritable and setting:
            warnings.warn(f"nnkit compile cache stays off: {path} cannot be used "
                          f"({unwritable})", UserWarning, stacklevel=2)
    if not ok:
        return None
    _configure(path)
    return path


def _probe_now(path: Path) -> tuple[bool, str | None]:
    """Runs the probe in ``path`` (created) and records it: ``(ok, why_unwritable)``; on
    failure the cache is off."""
    import jax

    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return False, e.strerror or str(e)  # cannot be created: no cache
    _configure(path)  # before the probe's compile: JAX checks the setting only once
    ok, why = _loads_back()
    unwritable = None
    try:
        _probe_file(path).write_text(json.dumps(
            {"ok": ok, "reason": why, "backend": jax.default_backend()}))
    except OSError as e:
        ok, unwritable = False, e.strerror or str(e)  # not writable: no cache
    if not ok:
        _configure(None)
    return ok, unwritable
