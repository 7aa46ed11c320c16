"""Name -> loader registry behind :func:`nnkit.data.load`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from nnkit.data.dataset import Dataset

__all__ = ["register", "available", "load", "loader", "normalize_name"]

Loader = Callable[..., Dataset]

_REGISTRY: dict[str, tuple[Loader, str]] = {}


def normalize_name(name: str) -> str:
    """Registry key for ``name``: case-insensitive, ``-`` and spaces read as ``_``."""
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def register(name: str, fn: Loader, description: str, *, overwrite: bool = False) -> Loader:
    """Register ``fn(**options) -> Dataset`` under ``name`` with a one-line ``description``.

    Raises ``ValueError`` if the name is taken (unless ``overwrite``). Returns ``fn``.
    """
    key = normalize_name(name)
    if not key:
        raise ValueError("dataset name must be non-empty")
    if not callable(fn):
        raise TypeError(f"loader for {name!r} is not callable")
    if key in _REGISTRY and not overwrite:
        raise ValueError(f"dataset {key!r} is already registered (pass overwrite=True)")
    _REGISTRY[key] = (fn, " ".join(description.split()))
    return fn


def available() -> dict[str, str]:
    """All registered names (sorted) mapped to their one-line descriptions."""
    return {k: _REGISTRY[k][1] for k in sorted(_REGISTRY)}


def loader(name: str) -> Loader:
    """The loader function registered as ``name`` (``ValueError`` naming the known ones)."""
    key = normalize_name(name)
    if key not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown dataset {name!r}; known datasets: {known}")
    return _REGISTRY[key][0]


def load(name: str, **options: Any) -> Dataset:
    """Load the data set registered as ``name``, passing ``options`` to its loader.

    Raises ``ValueError`` for an unknown name (listing the known ones) and ``TypeError`` for an
    option the loader does not take (listing the ones it does).
    """
    key = normalize_name(name)
    fn = loader(name)
    try:
        inspect.signature(fn).bind(**options)
    except TypeError as e:
        try:
            params = [p for p in inspect.signature(fn).parameters if p != "self"]
        except (TypeError, ValueError):  # pragma: no cover - builtins without signature
            params = []
        raise TypeError(f"{key}: {e}; options accepted: {', '.join(params) or 'none'}") from None
    except ValueError:  # pragma: no cover - no signature available
        pass
    ds = fn(**options)
    if not isinstance(ds, Dataset):
        raise TypeError(f"loader for {key!r} returned {type(ds).__name__}, not Dataset")
    return ds
