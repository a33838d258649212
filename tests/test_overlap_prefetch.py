"""io/prefetch.Prefetch: items in order, at most `ahead` made before they are taken, exceptions after the
items before them, the generator closed in its own thread, a consumer stopping early stops the thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from xdpsim.io.prefetch import Prefetch


class _Source:
    """A generator of 0..n-1 that records how many items it made and which thread closed it."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at = n, fail_at
        self.made = 0
        self.closed_in: str | None = None
        self.lock = threading.Lock()

    def gen(self) -> Iterator[int]:
        try:
            for i in range(self.n):
                if i == self.fail_at:
                    raise ValueError(f"damage at {i}")
                with self.lock:
                    self.made += 1
                yield i
        finally:
            self.closed_in = threading.current_thread().name


@pytest.mark.parametrize("ahead", [1, 2, 3])
def test_items_in_order_and_thread_done_at_the_end(ahead: int) -> None:
    src = _Source(50)
    p = Prefetch(src.gen(), lambda: src.made, ahead=ahead)
    got = []
    for i in p:
        got.append(i)
        assert p.seen == i + 1  # the snapshot taken with the item, not the thread's later ones
    assert got == list(range(50))
    assert p.finished and not p._thread.is_alive()
    assert src.closed_in == "xdpsim-reader"


@pytest.mark.parametrize("ahead", [1, 2])
def test_never_more_than_ahead_items_made_before_taken(ahead: int) -> None:
    src = _Source(20)
    p = Prefetch(src.gen(), lambda: None, ahead=ahead)
    it = iter(p)
    taken = 0
    for _ in range(5):
        next(it)
        taken += 1
        # let the thread run as far as it may: it blocks once `ahead` items wait
        with p._cv:
            p._cv.wait_for(lambda: len(p._items) >= ahead or p._stop, timeout=5)
        with src.lock:
            # taken items, `ahead` waiting, and at most the one being handed over
            assert taken + ahead <= src.made <= taken + ahead + 1
    it.close()  # type: ignore[attr-defined]
    assert not p._thread.is_alive() and src.closed_in == "xdpsim-reader"
    assert not p._items  # (items made ahead and never taken were dropped)


def test_exception_after_the_items_before_it() -> None:
    src = _Source(10, fail_at=6)
    got = []
    with pytest.raises(ValueError, match="damage at 6"):
        for i in Prefetch(src.gen(), lambda: None, ahead=2):
            got.append(i)
    assert got == list(range(6))
    assert src.closed_in == "xdpsim-reader"


def test_stopping_early_stops_the_thread() -> None:
    src = _Source(10**9)
    p = Prefetch(src.gen(), lambda: None, ahead=2)
    for i in p:
        if i == 3:
            break
    assert not p._thread.is_alive()
    assert src.made <= 4 + 2 + 1


def test_ahead_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Prefetch(iter([]), lambda: None, ahead=0)
