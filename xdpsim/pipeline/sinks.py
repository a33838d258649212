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
from . import writev

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
    `files` rows are jit.batch's F_* words. Full parts go to their files in order (`_write_all`: long
    pieces by reference, short ones copied together, in writevs), by a thread of their own (the copies
    and the writes release the GIL: the programs run on meanwhile) or at once (`threaded=False`). At
    most `len(slots) + 1 + SPARE` parts exist, so memory stays constant; a file is created when its
    first records are written. `direct` (default: environment XDPSIM_DIRECT_WRITES=1) writes the
    files' whole pages with O_DIRECT where the file system allows it (_write_direct: the same bytes,
    without the kernel's copy into page-cache pages -- most of the writer's CPU time, 3-4x more on
    pages the VM hands over fresh -- but each write waits for the device, so a replay can take longer
    on a slow disk: opt-in).
    """

    SIZE = 4 << 20
    IOV = 16384  # pieces per part
    MAX_SLOTS = 64
    SPARE = 1

    def __init__(self, sinks: Sinks, threaded: bool = True, direct: bool | None = None) -> None:
        # (jit.batch's layout of a file's words: imported here, with the JIT, not for other engines)
        from ..jit.batch import FILE_WORDS

        self.sinks = sinks
        # XDPSIM_DIRECT_WRITES=1: whole pages of the files written with O_DIRECT (_write_direct)
        self.direct = os.environ.get("XDPSIM_DIRECT_WRITES") == "1" if direct is None else direct
        self._dfds: dict[int, int] = {}  # a file's descriptor -> its O_DIRECT one (-1: none)
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
            for dfd in self._dfds.values():
                if dfd >= 0:
                    os.close(dfd)
            self._dfds.clear()

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
        fd = f.fileno()
        dfd = self._direct_fd(fd, w.path) if self.direct else -1
        if self._queue is None:
            _write(fd, dfd, part.iov, n)
            self._install(s)
            return
        self._raise()
        part.held = self._hold
        self.parts[s] = self._part()
        self._install(s)
        with self._cv:
            self._busy += 1
        self._queue.put((fd, dfd, part, n))

    def _direct_fd(self, fd: int, path: Path) -> int:
        """The file opened again with O_DIRECT (-1 where the file system refuses it)."""
        dfd = self._dfds.get(fd)
        if dfd is None:
            try:
                dfd = os.open(path, os.O_WRONLY | os.O_DIRECT)
            except (OSError, AttributeError):  # (tmpfs: EINVAL; no O_DIRECT on this platform)
                dfd = -1
            self._dfds[fd] = dfd
        return dfd

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
            fd, dfd, part, n = item
            try:
                if self._error is None:
                    _write(fd, dfd, part.iov, n)
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


def _write(fd: int, dfd: int, iov: np.ndarray, n: int) -> None:
    # (_write_all's three-argument call when there is no O_DIRECT descriptor: tests replace it so)
    if dfd < 0:
        _write_all(fd, iov, n)
    else:
        _write_all(fd, iov, n, dfd)


def _write_all(fd: int, iov: np.ndarray, n: int, dfd: int = -1) -> None:
    """The n pieces (address, length) of `iov` to fd, in order: pieces at least writev.MIN_REF long by
    reference, runs of shorter ones copied together into the thread's stage, in writevs of up to IOV_MAX
    iovecs and writev.MAX_BYTES bytes (writev.write_pieces: the user copy is only the short pieces'; the
    kernel's copy into the page cache is the same whatever the pieces; a longer piece is split, and its
    row in `iov` changed). With `dfd` (the file opened with O_DIRECT) see _write_direct; where llvmlite
    cannot compile writev's plan, _write_gathered."""
    if dfd >= 0:
        _write_direct(fd, dfd, iov, n, _stage("direct", _DIRECT_STAGE))
    elif writev.available():
        writev.write_pieces(fd, iov, n, _stage("buf", _STAGE))
    else:
        _write_gathered(fd, iov, n)


def _write_gathered(fd: int, iov: np.ndarray, n: int) -> None:
    """_write_all's pieces gathered into the thread's stage (one copy, then one write per stage-full),
    pieces as big as the stage written as they are."""
    from ..io.native import gather

    stage = _stage("buf", _STAGE)
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


def _write_direct(fd: int, dfd: int, iov: np.ndarray, n: int, stage: np.ndarray) -> None:
    """_write_all's pieces gathered into the stage placed so that the file's pages line up with its
    pages; whole pages are written through `dfd` (O_DIRECT: from this memory to the device, no copy
    into the page cache -- that copy, into pages the VM must first hand over, is most of the writer's
    CPU time), the partial first and last pages through fd (the page cache), at the file's offset,
    which is moved past them at the end (the buffered writer appends after them)."""
    from ..io.native import gather

    pos = os.lseek(fd, 0, os.SEEK_CUR)
    lens = iov[:n, 1]
    i = 0
    while i < n:
        lead = pos % _ALIGN
        room = len(stage) - lead
        ends = np.cumsum(lens[i : i + 4096])
        k = int(np.searchsorted(ends, room, side="right"))
        if k == 0:  # a piece longer than the room: its first `room` bytes now, the rest next
            at, length = int(iov[i, 0]), int(iov[i, 1])
            got = gather(stage[lead:], np.array([[at, room]], np.uint64))
            iov[i] = (at + room, length - room)
        else:
            got = gather(stage[lead:], iov[i : i + k])
            i += k
        _put_direct(fd, dfd, stage, lead, got, pos)
        pos += got
    os.lseek(fd, pos, os.SEEK_SET)


def _put_direct(fd: int, dfd: int, stage: np.ndarray, lead: int, got: int, pos: int) -> None:
    """stage[lead : lead + got] to the file at `pos` (pos % _ALIGN == lead): whole pages through dfd."""
    view = memoryview(stage)
    a = _ALIGN if lead else 0
    b = (lead + got) // _ALIGN * _ALIGN
    base = pos - lead
    if b <= a:
        _pwrite(fd, view[lead : lead + got], pos)
        return
    if lead:
        _pwrite(fd, view[lead:a], pos)
    try:
        _pwrite(dfd, view[a:b], base + a)
    except OSError:  # (a device wanting other alignment: these bytes through the page cache)
        _pwrite(fd, view[a:b], base + a)
    if lead + got > b:
        _pwrite(fd, view[b : lead + got], base + b)


def _pwrite(fd: int, view: memoryview, pos: int) -> None:
    while len(view):
        done = os.pwrite(fd, view, pos)
        view, pos = view[done:], pos + done


def _stage(name: str, size: int) -> np.ndarray:
    """The writing thread's stage (one per thread, reused: warm), page-aligned (for O_DIRECT)."""
    stage = getattr(_stages, name, None)
    if stage is None or len(stage) != size:
        raw = np.empty(size + _ALIGN, np.uint8)
        stage = raw[-raw.ctypes.data % _ALIGN :][:size]
        setattr(_stages, name, stage)
    return stage


_STAGE = 1 << 20  # bytes of short pieces copied per writev (gathered per write without llvmlite)
# O_DIRECT: each write waits for the device and pins its pages; 4 MiB writes cost ~0.07 CPU s per 210 MB
# here, 1 MiB ~0.09, 256 KiB ~0.15 (the stage's size does not matter to caches: the device reads it)
_DIRECT_STAGE = 4 << 20
_ALIGN = 4096  # O_DIRECT: addresses, lengths and file offsets in whole pages
_stages = threading.local()


def _write_bytes(fd: int, view: memoryview) -> None:
    # (at most _STAGE bytes a write: see writev.MAX_BYTES)
    while len(view):
        view = view[os.write(fd, view[:_STAGE]) :]
