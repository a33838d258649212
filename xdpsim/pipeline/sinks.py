"""Where packets go after the programs: one pcap per outcome, in input order, plus the side files.

Files are created on first use, so an output directory lists only the outcomes that happened, and
with several interfaces each interface has its own subdirectory.
"""

from __future__ import annotations

import json
import os
import queue
import struct
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..io.pcap import PcapWriter

# pcap's seconds are 32 bits: timestamps outside [0, 2**32 s) are clamped when written
MAX_TS_NS = (1 << 32) * 1_000_000_000 - 1


def sink_name(outcome: str, target: str | None = None) -> str:
    """The pcap file name of an outcome: pass.pcap, redirect-eth1.pcap, redirect-cpu3.pcap, ..."""
    if outcome == "redirect" and target:
        if target.startswith("xsk-"):
            return f"{target}.pcap"
        return f"redirect-{target}.pcap"
    if outcome == "tx" and target:  # sent by the host out of `target` (TC egress passed)
        return f"wire-{target}.pcap"
    return f"{outcome}.pcap"


class Sinks:
    """`threaded`: record buffers (the JIT's batch path) are written by a thread of their own."""

    def __init__(self, out: Path, per_interface: bool = False, threaded: bool = True):
        self.threaded = threaded
        self._records: RecordBuffers | None = None
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.per_interface = per_interface
        self._writers: dict[Path, PcapWriter] = {}
        self._by_key: dict[tuple[str, str, str | None], PcapWriter] = {}
        self._log = None
        self._events = None
        self._trace = open(self.out / "trace.log", "w")  # noqa: SIM115 - closed in close()

    def _dir(self, interface: str) -> Path:
        d = self.out / interface if self.per_interface else self.out
        d.mkdir(parents=True, exist_ok=True)
        return d

    def path(self, interface: str, outcome: str, target: str | None) -> Path:
        """The file of an outcome (its directory is made; the file is not)."""
        return self._dir(interface) / sink_name(outcome, target)

    def writer(self, interface: str, outcome: str, target: str | None) -> PcapWriter:
        key = (interface if self.per_interface else "", outcome, target)
        w = self._by_key.get(key)  # a dict hit per packet: building paths costs more than the write
        if w is None:
            path = self.path(interface, outcome, target)
            w = self._writers.get(path)
            if w is None:
                w = self._writers[path] = PcapWriter(path)
            self._by_key[key] = w
        return w

    def records(self) -> RecordBuffers:
        """The record buffers native code writes to (created on first use)."""
        if self._records is None:
            self._records = RecordBuffers(self, threaded=self.threaded)
        return self._records

    def drain(self) -> None:
        """Every record buffered for native code's writes in its file."""
        if self._records is not None and self._records.pending:
            self._records.drain()

    def write(self, interface: str, outcome: str, target: str | None, data: bytes, ts_ns: int) -> None:
        if self._records is not None and self._records.pending:  # their records come first
            self._records.drain()
        self.writer(interface, outcome, target).write(data, min(max(ts_ns, 0), MAX_TS_NS))

    def trace(self, lines: list[str]) -> None:
        """bpf_trace_printk output, one line each, in packet order."""
        for line in lines:
            self._trace.write(line if line.endswith("\n") else line + "\n")

    def log_packet(self, record: dict[str, Any]) -> None:
        """--log: one JSON line per packet."""
        if self._log is None:
            self._log = open(self.out / "packets.jsonl", "w")  # noqa: SIM115 - closed in close()
        self._log.write(json.dumps(record, separators=(",", ":")) + "\n")

    def event(self, record: dict[str, Any]) -> None:
        """Ring buffer and perf event records, as JSON lines."""
        if self._events is None:
            self._events = open(self.out / "events.jsonl", "w")  # noqa: SIM115 - closed in close()
        self._events.write(json.dumps(record, separators=(",", ":")) + "\n")

    def write_json(self, name: str, obj: Any) -> None:
        (self.out / name).write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")

    def write_text(self, name: str, text: str) -> None:
        (self.out / name).write_text(text)

    def files(self) -> list[Path]:
        return sorted(self._writers)

    def close(self) -> None:
        if self._records is not None:
            self._records.close()
        for w in self._writers.values():
            w.close()
        for f in (self._log, self._events, self._trace):
            if f is not None:
                f.close()


class RecordBuffers:
    """One buffer of whole pcap records per sink file, appended to by native code (run_batch's sink mode:
    `files` rows are (base address, capacity, position)) and by `append`; full buffers go to the file
    in order, written by a thread of their own (os.write releases the GIL: the programs run on while
    the kernel copies) or at once (`threaded=False`). At most `len(slots) + SPARE` buffers exist, so
    memory stays constant; a file is created when its first records are written.
    """

    SIZE = 4 << 20
    MAX_SLOTS = 64
    SPARE = 1

    def __init__(self, sinks: Sinks, threaded: bool = True) -> None:
        self.sinks = sinks
        self.files = np.zeros((self.MAX_SLOTS, 3), np.uint64)  # never moves: native code reads it
        self.bufs: list[np.ndarray] = []
        self.keys: list[tuple[str, str, str | None]] = []
        self._by_path: dict[Path, int] = {}
        self._by_key: dict[tuple[str, str, str | None], int] = {}
        self._free: list[np.ndarray] = []
        self._made = 0
        self._cv = threading.Condition()
        self._queue: queue.SimpleQueue | None = None
        self._busy = 0  # buffers handed to the thread, not yet written
        self._error: BaseException | None = None
        self.pending = False  # records not yet in their files
        self._thread: threading.Thread | None = None
        if threaded:
            self._queue = queue.SimpleQueue()
            self._thread = threading.Thread(target=self._run, name="xdpsim-sink-writer", daemon=True)
            self._thread.start()

    @property
    def nfiles(self) -> int:
        return len(self.bufs)

    def slot(self, interface: str, outcome: str, target: str | None) -> int | None:
        """The slot of an outcome's file; None when there are too many files for the table."""
        key = (interface, outcome, target)
        s = self._by_key.get(key)
        if s is None:
            path = self.sinks.path(interface, outcome, target)
            s = self._by_path.get(path)
            if s is None:
                if len(self.bufs) == self.MAX_SLOTS:
                    return None
                s = self._by_path[path] = len(self.bufs)
                self.bufs.append(self._buffer())
                self.keys.append(key)
                self.files[s] = (self.bufs[s].ctypes.data, self.SIZE, 0)
            self._by_key[key] = s
        return s

    def append(self, slot: int, data: bytes, ts_ns: int) -> None:
        """One record from Python, after those native code wrote to the slot."""
        need = 16 + len(data)
        if int(self.files[slot, 1] - self.files[slot, 2]) < need:
            self._flush(slot)
            if need > self.SIZE:  # (bigger than a buffer: straight to the file, in order)
                self.drain()
                self.sinks.write(*self.keys[slot], data, ts_ns)
                return
        pos = int(self.files[slot, 2])
        ts = min(max(ts_ns, 0), MAX_TS_NS)
        buf = self.bufs[slot]
        struct.pack_into("<IIII", buf, pos, ts // 1_000_000_000, ts % 1_000_000_000, len(data), len(data))
        buf[pos + 16 : pos + need] = np.frombuffer(data, np.uint8)
        self.files[slot, 2] = pos + need
        self.pending = True

    def flush_full(self) -> None:
        """Native code stopped: every buffer without a record's room goes to its file."""
        room = self.files[: len(self.bufs), 1] - self.files[: len(self.bufs), 2]
        for s in np.flatnonzero(room < 4096 + 16).tolist():
            self._flush(s)

    def drain(self) -> None:
        """Every record written to its file."""
        for s in range(len(self.bufs)):
            self._flush(s)
        with self._cv:
            while self._busy:
                self._cv.wait()
        self.pending = False
        self._raise()

    def close(self) -> None:
        try:
            self.drain()
        finally:
            if self._queue is not None and self._thread is not None:
                self._queue.put(None)
                self._thread.join()
                self._queue = None

    # ---------------------------------------------------------------- internals

    def _flush(self, s: int) -> None:
        n = int(self.files[s, 2])
        if not n:
            return
        self.pending = True
        w = self.sinks.writer(*self.keys[s])  # opens the file on its first records
        f = w._f  # noqa: SLF001 - its buffered bytes (per-packet writes) go first
        assert f is not None
        f.flush()
        buf = self.bufs[s]
        if self._queue is None:
            _write_all(f.fileno(), buf, n)
            self.files[s, 2] = 0
            return
        self._raise()
        new = self._buffer()
        self.bufs[s] = new
        self.files[s] = (new.ctypes.data, self.SIZE, 0)
        with self._cv:
            self._busy += 1
        self._queue.put((f.fileno(), buf, n))

    def _buffer(self) -> np.ndarray:
        """A free buffer: a spare one, a new one while under the limit, else the next one written."""
        with self._cv:
            while True:
                if self._free:
                    return self._free.pop()
                if self._made < len(self.bufs) + 1 + self.SPARE:
                    self._made += 1
                    return np.empty(self.SIZE, np.uint8)  # (pages cost nothing until written)
                self._cv.wait()

    def _run(self) -> None:
        assert self._queue is not None
        while (item := self._queue.get()) is not None:
            fd, buf, n = item
            try:
                if self._error is None:
                    _write_all(fd, buf, n)
            except BaseException as e:  # noqa: BLE001 - reported on the replay's thread
                self._error = e
            with self._cv:
                self._free.append(buf)
                self._busy -= 1
                self._cv.notify_all()

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err


def _write_all(fd: int, buf: np.ndarray, n: int) -> None:
    view = memoryview(buf)[:n]
    while len(view):
        view = view[os.write(fd, view) :]
