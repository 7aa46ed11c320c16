"""The public API as the library promises it: every name a module exports exists, and every
exported function and class has a docstring and every exported function type hints on all
its parameters and its return."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import nnkit


def _exported():
    for info in pkgutil.walk_packages(nnkit.__path__, "nnkit."):
        if "._" in info.name or info.name.endswith("__main__"):
            continue
        mod = importlib.import_module(info.name)
        for name in getattr(mod, "__all__", ()):
            yield mod, name


def test_every_exported_name_exists_and_is_documented_and_typed():
    missing, undocumented, untyped = [], [], []
    for mod, name in _exported():
        if not hasattr(mod, name):
            missing.append(f"{mod.__name__}.{name}")
            continue
        obj = getattr(mod, name)
        if getattr(obj, "__module__", None) != mod.__name__:
            continue  # re-exported: checked where it is defined
        if inspect.isfunction(obj) or inspect.isclass(obj):
            if not (obj.__doc__ or "").strip():
                undocumented.append(f"{mod.__name__}.{name}")
        if inspect.isfunction(obj):
            sig = inspect.signature(obj)
            bare = [p for p, v in sig.parameters.items() if v.annotation is inspect.Parameter.empty]
            if bare or sig.return_annotation is inspect.Signature.empty:
                untyped.append(f"{mod.__name__}.{name}{bare or ''}")
    assert not missing, missing
    assert not undocumented, undocumented
    assert not untyped, untyped
    assert len(list(_exported())) > 300  # the walk found the package
