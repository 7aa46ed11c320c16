"""Batches produced ahead on a background thread, so the host's work overlaps the device's.

In ``fit``'s step mode every batch is made on the host (rows cut from NumPy arrays, or a
streaming ``train_data`` that reads and augments) and placed on the device before its step
is dispatched. :func:`prefetch` moves that work to one background thread that keeps
``size`` batches ready: while the main thread dispatches step ``i``, the thread makes (and
places) batch ``i + 1``. Batches come out in the order the iterable gives them, so a run
with prefetching trains on exactly the batches of one without.

NumPy, file reads and JAX's transfers release the GIL, so their time overlaps; a generator
that is pure Python holds the GIL and gains little.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["prefetch"]

T = TypeVar("T")

_END = object()
_POLL_S = 0.05  # how often a blocked producer looks whether the consumer went away


def prefetch(items: Iterable[T], size: int = 2,
             place: Callable[[T], Any] | None = None) -> Generator[Any, None, None]:
    """``place(item)`` for each item of ``items``, made up to ``size`` items ahead on a
    background thread (``size=0``: on the caller's thread, as it asks for them). The
    iterator returned is a generator: ``close()`` stops it.

    An exception raised by ``items`` or ``place`` is raised by the iterator at the item where
    it happened, with its traceback. When the caller stops early (``break``, an exception,
    ``close()``), the thread stops within ~50 ms of finishing the item it is making, and
    ``items`` is closed if it has a ``close`` (a generator's ``finally`` runs); at most
    ``size + 1`` items are made that are never used.
    """
    if size <= 0:
        if place is None and isinstance(items, Generator):
            return items  # no extra layer per item
        return (item if place is None else place(item) for item in items)
    return _ahead(items, size, place if place is not None else (lambda item: item))


def _ahead(items: Iterable[T], size: int, place: Callable[[T], Any]) -> Iterator[Any]:
    """:func:`prefetch` with a thread: a generator, so ``close()`` stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def offer(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = iter(items)
        try:
            for item in it:
                if not offer((True, place(item))):
                    return
            offer((True, _END))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            offer((False, e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="nnkit-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        worker.join(timeout=1.0)  # one blocked in ``items`` is a daemon: left to finish
