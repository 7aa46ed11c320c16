"""nnkit.train.prefetch: items made ahead on a background thread, in order, errors and
early stops handed back to the caller."""

from __future__ import annotations

import threading

import pytest

from nnkit.train.prefetch import prefetch


@pytest.mark.parametrize("size", [0, 1, 3])
def test_items_come_in_order_placed_and_made_on_a_background_thread(size):
    makers = []

    def items():
        for i in range(10):
            makers.append(threading.current_thread().name)
            yield i

    assert list(prefetch(items(), size, place=lambda i: 10 * i)) == [10 * i for i in range(10)]
    for src in (range(3), items()):  # closable, whatever it is given (fit closes it)
        it = prefetch(src, size, place=None if size else abs)
        assert next(it) == 0
        it.close()
    main = threading.current_thread().name
    assert set(makers) == ({main} if size == 0 else {"nnkit-prefetch"})


def test_an_error_in_the_items_or_in_place_is_raised_at_its_item():
    def items():
        yield 1
        yield 2
        raise OSError("batch 3 unreadable")

    got = []
    with pytest.raises(OSError, match="batch 3 unreadable"):
        for v in prefetch(items(), 2):
            got.append(v)
    assert got == [1, 2]

    def place(i):
        if i == 4:
            raise ValueError("cannot place 4")
        return i

    got = []
    with pytest.raises(ValueError, match="cannot place 4"):
        for v in prefetch(iter(range(10)), 2, place):
            got.append(v)
    assert got == [0, 1, 2, 3]


def test_stopping_early_stops_the_thread_and_closes_the_items():
    made, closed = [], []

    def items():
        try:
            for i in range(1000):
                made.append(i)
                yield i
        finally:
            closed.append(True)

    it = prefetch(items(), 2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert closed == [True]
    assert len(made) <= 3 + 2 + 1  # taken, queued, and the one being offered
    assert not any(t.name == "nnkit-prefetch" for t in threading.enumerate())
