"""nnkit.compile_cache (``nnkit.enable_compile_cache``): JAX's persistent compilation cache
as the command line turns it on.

Each check runs in a fresh interpreter (JAX decides once per process whether to use the
cache), with the cache in a temporary directory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests._fresh_interpreter import cpu_env, result

ROOT = Path(__file__).resolve().parents[1]

_SETUP = """
import json, os, sys
from pathlib import Path
import jax
from jax import monitoring
from nnkit import compile_cache as cc

root = Path(sys.argv[1])
hits = []
monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event.endswith("/cache_hits") else None)
res = {}

def compile_something():  # a random-number program: compiles in well over 0.05 s
    f = jax.jit(lambda k: jax.random.normal(jax.random.key(k), (17, 33)))
    return float(f(0).sum())
"""


def _run(code: str, root: Path, **env: str) -> dict:
    script = _SETUP + textwrap.dedent(code) + '\nprint("RESULT " + json.dumps(res))\n'
    p = subprocess.run([sys.executable, "-c", script, str(root)], capture_output=True,
                       text=True, timeout=120, cwd=ROOT, env={**cpu_env(), **env})
    return result(p.stdout, p.stderr, p.returncode)


def test_a_second_process_reads_the_programs_back(tmp_path):
    first = _run("""
        import warnings
        path = cc.enable()
        res["path"] = str(path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res["value"] = compile_something()
        res["warnings"] = [str(w.message) for w in caught]
        res["hits"] = len(hits)
        res["probe"] = json.loads((path / "probe-cpu.json").read_text())
        res["files"] = sorted(p.name for p in path.iterdir())
    """, tmp_path, NNKIT_COMPILE_CACHE=str(tmp_path / "c"))
    path = Path(first["path"])
    assert path.parent == tmp_path / "c" and path.name.startswith("jaxlib-")
    assert first["probe"]["ok"] is True and first["hits"] == 0
    # e.g. without `filelock` (a dependency: JAX needs it for the size cap) every compile
    # warns that the cache cannot be read
    assert not [w for w in first["warnings"] if "cache" in w], first["warnings"]
    assert any(n.startswith("jit_") for n in first["files"])
    second = _run("""
        res["path"] = str(cc.enable())
        res["value"] = compile_something()
        res["hits"] = len(hits)
    """, tmp_path, NNKIT_COMPILE_CACHE=str(tmp_path / "c"))
    assert second["path"] == first["path"] and second["hits"] >= 1
    assert second["value"] == first["value"]


def test_off_unwritable_configured_and_default_directories(tmp_path):
    (tmp_path / "file").write_text("x")
    res = _run("""
        os.environ["NNKIT_COMPILE_CACHE"] = "off"
        res["off"] = cc.enable()
        import warnings
        os.environ["NNKIT_COMPILE_CACHE"] = str(root / "file" / "below-a-file")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res["unwritable"] = cc.enable()
            del os.environ["NNKIT_COMPILE_CACHE"]
            os.environ["XDG_CACHE_HOME"] = str(root / "file" / "xdg")  # the default: quiet
            res["default_unwritable"] = cc.enable()
        res["warnings"] = [str(w.message) for w in caught]
        res["dir_after"] = jax.config.jax_compilation_cache_dir
        os.environ["XDG_CACHE_HOME"] = str(root / "xdg")
        res["default"] = str(cc.default_dir())
        import nnkit
        res["explicit"] = str(nnkit.enable_compile_cache(root / "explicit"))
        res["again"] = str(cc.enable(root / "elsewhere"))  # already configured: kept
    """, tmp_path)
    assert res["off"] is None and res["unwritable"] is None and res["dir_after"] is None
    assert res["default_unwritable"] is None
    # the directory the user named, and why it cannot be used; nothing for the default one
    assert len(res["warnings"]) == 1, res["warnings"]
    assert str(tmp_path / "file" / "below-a-file") in res["warnings"][0]
    assert "Not a directory" in res["warnings"][0]
    assert res["default"] == str(tmp_path / "xdg" / "nnkit" / "jax")
    assert Path(res["explicit"]).parent == tmp_path / "explicit"
    assert res["again"] == res["explicit"]
    jax_dir = _run("""res["path"] = str(cc.enable())""", tmp_path,
                   JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax-own"),
                   NNKIT_COMPILE_CACHE=str(tmp_path / "ignored"))
    assert jax_dir["path"] == str(tmp_path / "jax-own")


def test_a_machine_that_cannot_load_executables_back_is_probed_once(tmp_path):
    res = _run("""
        cc._loads_back = lambda: (False, "simulated: cannot load")
        res["first"] = cc.enable()
        res["dir"] = jax.config.jax_compilation_cache_dir
        probes = list((root / "c").glob("*/probe-*.json"))
        res["probe"] = json.loads(probes[0].read_text())
        def fail():
            raise AssertionError("probed twice")
        cc._loads_back = fail
        res["second"] = cc.enable()
        compile_something()
        res["files"] = sorted(p.name for p in probes[0].parent.iterdir())
        res["hits"] = len(hits)
        # another backend's failed probe (a GPU process on this machine) is its own
        (probes[0].parent / "probe-cpu.json").unlink()
        (probes[0].parent / "probe-cuda.json").write_text('{"ok": false, "reason": "x"}')
        cc._loads_back = lambda: (True, "")
        res["other_backend"] = str(cc.enable())
    """, tmp_path, NNKIT_COMPILE_CACHE=str(tmp_path / "c"))
    assert res["first"] is None and res["second"] is None and res["dir"] is None
    assert res["probe"] == {"ok": False, "reason": "simulated: cannot load", "backend": "cpu"}
    assert res["files"] == ["probe-cpu.json"] and res["hits"] == 0  # nothing cached
    assert Path(res["other_backend"]).parent == tmp_path / "c"


def test_host_tag_names_the_jaxlib_version_and_the_cpu(monkeypatch):
    import jaxlib

    from nnkit import compile_cache as cc

    monkeypatch.setattr(cc, "_cpu_description", lambda: "model A")
    a = cc.host_tag()
    monkeypatch.setattr(cc, "_cpu_description", lambda: "model B")
    b = cc.host_tag()
    assert a != b and a.startswith(f"jaxlib-{jaxlib.__version__}-")


@pytest.mark.slow
def test_nnkit_train_twice_reads_its_programs_back(tmp_path):
    cfg = ROOT / "configs" / "xor_mlp.yaml"

    def train(out):
        return subprocess.run(
            [sys.executable, "-m", "nnkit", "train", str(cfg), "--out", str(out), "--set",
             "logging.plots=false", "--set", "logging.tensorboard=false"],
            capture_output=True, text=True, timeout=300, cwd=ROOT,
            env={**cpu_env(), "NNKIT_COMPILE_CACHE": str(tmp_path / "c"),
                 "JAX_LOG_COMPILES": "1"})

    a, b = train(tmp_path / "a"), train(tmp_path / "b")
    assert a.returncode == 0 and b.returncode == 0, a.stderr[-3000:] + b.stderr[-3000:]
    assert "Persistent compilation cache hit for 'jit_epoch'" not in a.stderr
    assert "Persistent compilation cache hit for 'jit_epoch'" in b.stderr
    sa, sb = (json.loads((tmp_path / d / "summary.json").read_text()) for d in "ab")
    assert sa["last_epoch"]["train_loss"] == sb["last_epoch"]["train_loss"]  # same program
    assert sa["best_epoch"] == sb["best_epoch"]


def test_default_dir_follows_xdg_and_is_none_without_a_home(monkeypatch, tmp_path):
    from nnkit import compile_cache as cc

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cc.default_dir() == tmp_path / "nnkit" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cc.default_dir() == tmp_path / "home" / ".cache" / "nnkit" / "jax"

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    assert cc.default_dir() is None
