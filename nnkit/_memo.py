"""Memoising factories of immutable values (optimizers, schedules, jitted programs).

JAX caches compiled programs per Python function object; nnkit's factories build such
functions (closures over a model, a loss, an optimizer...). Memoising a factory on its
arguments returns the same function for an equal configuration, so a second ``fit`` or
``sweep`` with equal arguments finds the programs compiled by the first. Arguments that
cannot be hashed (arrays) skip the memo: the factory runs again, nothing is wrong, only
slower.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def frozen(v: Any) -> Any:
    """A hashable stand-in for an argument, typed (``1`` and ``1.0`` stay apart: an int
    learning rate is injected as an int). Plain lists, tuples and dicts are frozen element
    by element; anything else must hash (``TypeError`` otherwise). Named tuples (layers,
    optax transformations) hash as themselves."""
    if type(v) in (list, tuple):
        return type(v), tuple(frozen(x) for x in v)
    if type(v) is dict:
        return dict, tuple(sorted((k, frozen(x)) for k, x in v.items()))
    hash(v)
    return type(v), v


class _Call:
    """Positional and keyword arguments, compared by their :func:`frozen` form."""

    __slots__ = ("key", "args", "kwargs")

    def __init__(self, args: tuple, kwargs: dict) -> None:
        self.key = frozen((args, kwargs))
        self.args, self.kwargs = args, kwargs

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Call) and self.key == other.key


def memoised(maxsize: int) -> Callable[[F], F]:
    """Decorator: the factory returns one object per distinct argument list (the last
    ``maxsize`` kept); errors are not cached. Only for factories of immutable values."""

    def wrap(fn: F) -> F:
        cached = functools.lru_cache(maxsize=maxsize)(lambda c: fn(*c.args, **c.kwargs))

        @functools.wraps(fn)
        def memo(*args: Any, **kwargs: Any) -> Any:
            try:
                call = _Call(args, kwargs)
            except TypeError:  # an array among the arguments
                call = None
            return fn(*args, **kwargs) if call is None else cached(call)

        memo.cache_info = cached.cache_info  # type: ignore[attr-defined]
        return memo  # type: ignore[return-value]

    return wrap
