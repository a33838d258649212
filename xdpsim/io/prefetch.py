"""Reading ahead: a generator run by a thread of its own, one item ahead of its consumer.

`Prefetch(gen, snapshot)` iterates like `gen`, but `gen` runs in a thread (the capture reader's preads
and native record walks release the GIL, so the next batch is read while the consumer runs the current
one; never more than one item ahead). With each item the thread takes `snapshot()` (the reader's
counters as they were when it yielded that item): `seen` is the snapshot of the last item the consumer
took, so counters read part way are the consumer's, not the thread's one batch ahead. An exception of
`gen` reaches the consumer after the items before it, as it would without the thread. A consumer that
stops early (closes the iterator) stops the thread; `gen` is closed in the thread that ran it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_END = object()


class Prefetch(Generic[T]):
    def __init__(self, gen: Iterator[T], snapshot: Callable[[], Any]) -> None:
        self.gen = gen
        self.snapshot = snapshot
        self.seen: Any = None  # snapshot of the last item taken (None: none taken, or the end reached)
        self.finished = False  # the generator ended (normally or with an exception)
        self._q: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._taken = threading.Semaphore(0)  # the consumer took an item: the next one may be made
        self._thread = threading.Thread(target=self._produce, name="xdpsim-reader", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        """Hand `item` over and wait until the consumer takes it (so the thread is one item ahead, not
        two: the capture read ahead stays one batch)."""
        self._q.put(item)  # (empty: the last item was taken)
        while not self._stop.is_set():
            if self._taken.acquire(timeout=0.05):
                return True
        return False

    def _produce(self) -> None:
        try:
            for item in self.gen:
                ok = self._put((item, self.snapshot()))
                del item  # (the consumer's reference only: buffers are reused once it drops it)
                if not ok:
                    return
            self._put((_END, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, in order
            self._put((_END, e))
        finally:
            close = getattr(self.gen, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[T]:
        try:
            while True:
                item, extra = self._q.get()
                self._taken.release()
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
            self._stop.set()
            while self._thread.is_alive():
                try:
                    self._q.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._thread.join()
