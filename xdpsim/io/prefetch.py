"""Reading ahead: a generator run by a thread of its own, a set number of items ahead of its consumer.

`Prefetch(gen, snapshot, ahead=1)` iterates like `gen`, but `gen` runs in a thread (the capture reader's
preads, mappings and native record walks release the GIL, so the next batch is read while the consumer
runs the current one). The thread makes an item only while fewer than `ahead` of its items wait to be
taken: with `ahead=1` it makes item k+1 once the consumer took item k (one item ahead of the consumer's);
with 2 it may make k+2 meanwhile. With each item the thread takes `snapshot()` (the reader's counters as
they were when it yielded that item): `seen` is the snapshot of the last item the consumer took, so
counters read part way are the consumer's, not the thread's. An exception of `gen` reaches the consumer
after the items before it, as it would without the thread. A consumer that stops early (closes the
iterator) stops the thread; `gen` is closed in the thread that ran it, and the consumer waits for that
(its files and mappings are closed when iteration ends). Nothing here polls: every wait is woken by the
other side (a poll's timeout at the end of each replay cost it 50 ms).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_END = object()


class Prefetch(Generic[T]):
    def __init__(self, gen: Iterator[T], snapshot: Callable[[], Any], ahead: int = 1) -> None:
        if ahead < 1:
            raise ValueError("ahead must be at least 1")
        self.gen = gen
        self.snapshot = snapshot
        self.ahead = ahead
        self.seen: Any = None  # snapshot of the last item taken (None: none taken, or the end reached)
        self.finished = False  # the generator ended (normally or with an exception)
        self._items: deque[tuple[Any, Any]] = deque()  # made, not yet taken
        self._cv = threading.Condition(threading.Lock())
        self._stop = False  # the consumer stopped: make nothing more
        self._thread = threading.Thread(target=self._produce, name="xdpsim-reader", daemon=True)
        self._thread.start()

    def _put(self, item: Any, extra: Any) -> bool:
        """Hand (item, extra) over, then wait until fewer than `ahead` items wait to be taken (the next
        one may be made); False when the consumer stopped."""
        with self._cv:
            if self._stop:
                return False
            self._items.append((item, extra))
            self._cv.notify_all()
            while len(self._items) >= self.ahead and not self._stop:
                self._cv.wait()
            return not self._stop

    def _produce(self) -> None:
        try:
            for item in self.gen:
                ok = self._put(item, self.snapshot())
                del item  # (the consumer's reference only: buffers are reused once it drops it)
                if not ok:
                    return
            self._put(_END, None)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, in order
            self._put(_END, e)
        finally:
            close = getattr(self.gen, "close", None)
            if close is not None:
                close()

    def _take(self) -> tuple[Any, Any]:
        with self._cv:
            while not self._items:
                self._cv.wait()
            got = self._items.popleft()
            self._cv.notify_all()
            return got

    def __iter__(self) -> Iterator[T]:
        try:
            while True:
                item, extra = self._take()
                if item is _END:
                    self.finished = True
                    self.seen = None
                    if extra is not None:
                        raise extra
                    return
                self.seen = extra
                yield item
                del item
        finally:
            with self._cv:
                self._stop = True
                self._items.clear()  # (items made ahead and never taken: their buffers go back)
                self._cv.notify_all()
            self._thread.join()
