"""Where packets go after the programs: one pcap per outcome, in input order, plus the side files.

Files are created on first use, so an output directory lists only the outcomes that happened, and
with several interfaces each interface has its own subdirectory.
"""

from __future__ import annotations

import ctypes
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
    """Each sink file's records for native code (run_batch's sink mode) and `append`: a part per file,
    a buffer of whole pcap records and the file's stream, the (address, length) pieces (struct iovecs)
    it gets, in order: pieces of the buffer, or, for a batch read from a pcap file (`hold(data)` first),
    records of the capture's own read buffer that are the very bytes to write (no copy; `release()`
    after the batch hands every stream that may refer to them over, keeping `data` until written).
    `files` rows are jit.batch's F_* words. Full parts go to their files in order (`_write_all`: gathered,
    then written), by a thread of their own (the gather and the write release the GIL: the programs run
    on meanwhile) or at once (`threaded=False`). At most `len(slots) + 1 + SPARE` parts exist, so memory
    stays constant; a file is created when its first records are written.
    """

    SIZE = 4 << 20
    IOV = 16384  # pieces per part
    MAX_SLOTS = 64
    SPARE = 1

    def __init__(self, sinks: Sinks, threaded: bool = True) -> None:
        # (jit.batch's layout of a file's words: imported here, with the JIT, not for other engines)
        from ..jit.batch import FILE_WORDS

        self.sinks = sinks
        self.files = np.zeros((self.MAX_SLOTS, FILE_WORDS), np.uint64)  # never moves: native code reads it
        self.parts: list[_Part] = []
        self.keys: list[tuple[str, str, str | None]] = []
        self._by_path: dict[Path, int] = {}
        self._by_key: dict[tuple[str, str, str | None], int] = {}
        self._free: list[_Part] = []
        self._made = 0
        self._hold: object = None  # what streams may refer to (the batch being run)
        self._cv = threading.Condition()
        self._queue: queue.SimpleQueue | None = None
        self._busy = 0  # parts handed to the thread, not yet written
        self._error: BaseException | None = None
        self.pending = False  # records not yet in their files
        self._thread: threading.Thread | None = None
        if threaded:
            self._queue = queue.SimpleQueue()
            self._thread = threading.Thread(target=self._run, name="xdpsim-sink-writer", daemon=True)
            self._thread.start()

    @property
    def nfiles(self) -> int:
        return len(self.parts)

    def slot(self, interface: str, outcome: str, target: str | None) -> int | None:
        """The slot of an outcome's file; None when there are too many files for the table."""
        key = (interface, outcome, target)
        s = self._by_key.get(key)
        if s is None:
            path = self.sinks.path(interface, outcome, target)
            s = self._by_path.get(path)
            if s is None:
                if len(self.parts) == self.MAX_SLOTS:
                    return None
                s = self._by_path[path] = len(self.parts)
                self.parts.append(self._part())
                self.keys.append(key)
                self._install(s)
            self._by_key[key] = s
        return s

    def hold(self, data: object) -> None:
        """Native code's streams may refer to `data` (F_RECORDS) until `release()`."""
        self._hold = data

    def release(self) -> None:
        """Every stream that may refer to the held data goes to its writer (which keeps the data)."""
        if self._hold is not None:
            for s in range(len(self.parts)):
                self._flush(s)
            self._hold = None

    def append(self, slot: int, data: bytes, ts_ns: int) -> None:
        """One record from Python, after those native code wrote to the slot."""
        from ..jit.batch import F_CAP, F_IOV_N, F_POS

        need = 16 + len(data)
        row = self.files[slot]
        if int(row[F_CAP] - row[F_POS]) < need or int(row[F_IOV_N]) == self.IOV:
            self._flush(slot)
            if need > self.SIZE:  # (bigger than a buffer: straight to the file, in order)
                self.drain()
                self.sinks.write(*self.keys[slot], data, ts_ns)
                return
        part = self.parts[slot]
        pos = int(row[F_POS])
        ts = min(max(ts_ns, 0), MAX_TS_NS)
        sec, nsec = divmod(ts, 1_000_000_000)
        struct.pack_into("<IIII", part.buf, pos, sec, nsec, len(data), len(data))
        part.buf[pos + 16 : pos + need] = np.frombuffer(data, np.uint8)
        row[F_POS] = pos + need
        k = int(row[F_IOV_N])
        at = part.addr + pos
        if k and int(part.iov[k - 1, 0]) + int(part.iov[k - 1, 1]) == at:  # (as native code does)
            part.iov[k - 1, 1] += need
        else:
            part.iov[k] = (at, need)
            row[F_IOV_N] = k + 1
        self.pending = True

    def flush_full(self) -> None:
        """Native code stopped: every part without a record's room goes to its file."""
        from ..jit.batch import F_CAP, F_IOV_CAP, F_IOV_N, F_POS, RECORD_ROOM

        rows = self.files[: len(self.parts)]
        full = ((rows[:, F_CAP] - rows[:, F_POS]) < RECORD_ROOM) | (rows[:, F_IOV_N] == rows[:, F_IOV_CAP])
        for s in np.flatnonzero(full).tolist():
            self._flush(s)

    def drain(self) -> None:
        """Every record written to its file."""
        for s in range(len(self.parts)):
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

    def _install(self, s: int) -> None:
        part = self.parts[s]
        self.files[s] = (part.addr, self.SIZE, 0, part.iov_addr, self.IOV, 0)

    def _flush(self, s: int) -> None:
        from ..jit.batch import F_IOV_N

        n = int(self.files[s, F_IOV_N])
        if not n:
            return
        self.pending = True
        w = self.sinks.writer(*self.keys[s])  # opens the file on its first records
        f = w._f  # noqa: SLF001 - its buffered bytes (per-packet writes) go first
        assert f is not None
        f.flush()
        part = self.parts[s]
        if self._queue is None:
            _write_all(f.fileno(), part.iov, n)
            self._install(s)
            return
        self._raise()
        part.held = self._hold
        self.parts[s] = self._part()
        self._install(s)
        with self._cv:
            self._busy += 1
        self._queue.put((f.fileno(), part, n))

    def _part(self) -> _Part:
        """A free part: a spare one, a new one while under the limit, else the next one written."""
        with self._cv:
            while True:
                if self._free:
                    return self._free.pop()
                if self._made < len(self.parts) + 1 + self.SPARE:
                    self._made += 1
                    return _Part(self.SIZE, self.IOV)
                self._cv.wait()

    def _run(self) -> None:
        assert self._queue is not None
        while (item := self._queue.get()) is not None:
            fd, part, n = item
            try:
                if self._error is None:
                    _write_all(fd, part.iov, n)
            except BaseException as e:  # noqa: BLE001 - reported on the replay's thread
                self._error = e
            part.held = None
            with self._cv:
                self._free.append(part)
                self._busy -= 1
                self._cv.notify_all()

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err


class _Part:
    """A file's record buffer and stream; `held`: what the stream may refer to besides the buffer."""

    def __init__(self, size: int, pieces: int) -> None:
        self.buf = np.empty(size, np.uint8)  # (pages cost nothing until written)
        self.iov = np.empty((pieces, 2), np.uint64)
        self.addr = self.buf.ctypes.data
        self.iov_addr = self.iov.ctypes.data
        self.held: object = None


def _write_all(fd: int, iov: np.ndarray, n: int) -> None:
    """The n pieces (address, length) of `iov` to fd, in order: small ones gathered into the thread's
    stage (one copy, then one write per stage-full: the kernel's cost per piece of a writev is ~1 us, a
    record's copy ~30 ns), pieces as big as the stage written as they are."""
    from ..io.native import gather

    stage = getattr(_stages, "buf", None)
    if stage is None:
        stage = _stages.buf = np.empty(_STAGE, np.uint8)  # (one per writing thread, reused: warm)
    lens = iov[:n, 1]
    i = 0
    while i < n:
        if int(lens[i]) >= len(stage):
            piece = (ctypes.c_char * int(lens[i])).from_address(int(iov[i, 0]))
            _write_bytes(fd, memoryview(piece).cast("B"))
            i += 1
            continue
        ends = np.cumsum(lens[i : i + 4096])
        k = max(int(np.searchsorted(ends, len(stage), side="right")), 1)
        _write_bytes(fd, memoryview(stage)[: gather(stage, iov[i : i + k])])
        i += k


_STAGE = 1 << 20  # bytes gathered per write
_stages = threading.local()


def _write_bytes(fd: int, view: memoryview) -> None:
    while len(view):
        view = view[os.write(fd, view) :]
