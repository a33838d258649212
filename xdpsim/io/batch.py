"""Batches of packets as numpy arrays, for replays that run many packets per call (the JIT).

`read_batches(path, batch_size)` gives a `BatchReader`: iterate it for `Batch`es; it carries the same
`.warnings`, `.offset`, `.records`, `.packets` and `.skipped` as the streaming readers, and raises the
same CaptureErrors at the same points (after yielding the packets before the damage).

pcap files (16-byte record headers) of plain Ethernet records (no FCS) are memory-mapped, a window per
batch, where a read lease makes that safe (mapped.py: a file truncated under a mapping would make any
access to the lost pages a SIGBUS; the lease makes a truncater wait until the windows still in use are
replaced by copies of themselves, and the reader goes on with preads). Otherwise they are read in pieces
of 512 KiB into a buffer per batch, and a tight loop (native.py) walks the record headers of each piece
as soon as it is read, while it is in cache (and reads each record's lengths and timestamp on the way);
a read that comes back short (the file shrank) is a CaptureError naming the file and the offset. Plain
Ethernet records are not copied again: the data array is a read-only view of the window or buffer span
holding the batch's records (record headers included), so packets are not back to back: packet i is
always `data[offsets[i] : offsets[i] + lengths[i]]`. Buffers are reused once no batch holds them
(memory stays constant for a consumer that drops its batches). `prefetch=True` reads the next batch in a
thread of its own (prefetch.py) while the caller works on the current one. Records of other link types
(or with an FCS) are converted one by one into back-to-back batches. pcapng files do the same for runs of
plain Enhanced Packet Blocks on Ethernet interfaces (read in windows; batches are views of them) and hand
every other block (section and interface blocks, SPB, PB, anything the reader warns about) to
PcapngReader.step(), whose packets are batched separately (so such batches may hold fewer than
batch_size packets). The "modified" pcap format goes through PcapReader.
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import CaptureError
from . import linktype as lt
from .capture import open_capture
from .mapped import MappedFile
from .native import MAX_BLOCK, RecordWalk, RecordWalker, index_pcapng
from .pcap import (
    HEADER_SIZE,
    PcapHeader,
    effective_snaplen,
    finish_record,
    msg_orig_len,
    msg_over_snaplen,
    msg_too_long,
    msg_truncated,
    msg_truncated_header,
    parse_header,
)
from .pcapng import END, TS_MAX, PcapngReader
from .prefetch import Prefetch
from .reader import MAX_SNAPLEN, CaptureReader
from .records import CaptureWarning, Packet, WarningList


@dataclass
class Batch:
    """`len(batch)` packets; packet i is `data[offsets[i] : offsets[i] + lengths[i]]` (Ethernet frames).

    `index` is the index of the batch's first packet in the capture; `orig_lens` the lengths on the wire;
    `records`: the 16 bytes before each packet in `data` are its pcap record header as the file has it
    (a pcap file's records, in place). `ts_sorted`: the reader found `ts_ns` non-decreasing, and
    `one_interface`: every packet has the same `interface` (False: not known); the reader thread checks
    what the consumer would otherwise check on its own thread, between its native batches.
    """

    data: np.ndarray  # uint8
    offsets: np.ndarray  # int64
    lengths: np.ndarray  # int32
    ts_ns: np.ndarray  # int64
    interface: np.ndarray  # int32
    index: int
    orig_lens: np.ndarray  # int64
    records: bool = False
    ts_sorted: bool = False
    one_interface: bool = False

    def __len__(self) -> int:
        return len(self.lengths)

    def packet(self, i: int) -> bytes:
        o = int(self.offsets[i])
        return self.data[o : o + int(self.lengths[i])].tobytes()

    def packets(self, linktype: int = lt.ETHERNET) -> Iterator[Packet]:
        """The batch as Packet records."""
        for i in range(len(self)):
            yield Packet(self.index + i, int(self.ts_ns[i]), self.packet(i), int(self.orig_lens[i]),
                         int(self.interface[i]), linktype)


def pack(packets: list[Packet], index: int) -> Batch:
    """A back-to-back Batch of Packet records."""
    lengths = np.fromiter((len(p.data) for p in packets), dtype=np.int32, count=len(packets))
    offsets = np.zeros(len(packets), dtype=np.int64)
    if len(packets) > 1:
        np.cumsum(lengths[:-1], out=offsets[1:])
    data = np.frombuffer(b"".join(p.data for p in packets), dtype=np.uint8).copy()
    return Batch(data, offsets, lengths,
                 np.fromiter((p.ts_ns for p in packets), dtype=np.int64, count=len(packets)),
                 np.fromiter((p.interface for p in packets), dtype=np.int32, count=len(packets)),
                 index,
                 np.fromiter((p.orig_len for p in packets), dtype=np.int64, count=len(packets)))


class BatchReader:
    """Iterator of Batch over one capture file; see the module docstring."""

    def __init__(self, path: str | os.PathLike[str], batch_size: int = 65536, *, native: bool = True,
                 prefetch: bool = False, first: int | None = None):
        self.native = native  # False: walk records in Python (tests compare both walks)
        self.prefetch = prefetch  # pcap files: the next batch is read by a thread meanwhile (prefetch.py)
        self._ahead: Prefetch | None = None
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.path = os.fspath(path)
        self.batch_size = batch_size
        # pcap files: the first batch's size (then twice the last, up to batch_size): a consumer waiting
        # for its first batch waits for a small one
        self._want = batch_size if first is None else max(1, min(first, batch_size))
        self._last_n = 0  # records of the last batch of the pcap path (with _batch_bytes: its bytes)
        self._read_error: CaptureError | None = None  # a read came back short: raised after this batch
        self._reader: CaptureReader = open_capture(self.path)
        self.linktype: int = getattr(self._reader, "linktype", lt.ETHERNET)
        h: PcapHeader | None = getattr(self._reader, "header", None)
        self._fast = h is not None and h.record_header == 16 and self._reader.file_size > HEADER_SIZE
        # Plain Ethernet records are copied as they are; others are converted one by one.
        self._plain = h is not None and h.linktype == lt.ETHERNET and not h.fcs_bytes
        self._convert = lt.converter(self.linktype) or bytes
        self._own_warnings = WarningList()
        self._own = dict(offset=HEADER_SIZE, records=0, packets=0, skipped=0)
        self._pool: list[np.ndarray] = []  # read buffers of the pcap path (reused)
        self._col_pool: list[np.ndarray] = []  # the record walk's output columns (reused)
        self._batch_bytes = 0  # bytes the last batch of the pcap path took
        self._ng_window = 4 << 20  # pcapng: bytes read at a time (grows to what a batch needs)
        if self._fast:
            self._reader.close()

    # The streaming reader's bookkeeping, or the fast path's own.
    @property
    def warnings(self) -> WarningList:
        if not self._fast:
            return self._reader.warnings
        seen = self._ahead.seen if self._ahead is not None else None
        if seen is None or seen[1] == len(self._own_warnings):
            return self._own_warnings
        return _first(self._own_warnings, seen[1], seen[2])  # (the reader thread is a batch ahead)

    def _stat(self, name: str) -> int:
        if not self._fast:
            return getattr(self._reader, name)
        seen = self._ahead.seen if self._ahead is not None else None
        return (seen[0] if seen is not None else self._own)[name]

    def _snapshot(self) -> tuple[dict[str, int], int, dict[str, int], int]:
        w = self._own_warnings
        return dict(self._own), len(w), dict(w.counts), w.dropped

    offset = property(lambda self: self._stat("offset"))
    records = property(lambda self: self._stat("records"))
    packets = property(lambda self: self._stat("packets"))
    skipped = property(lambda self: self._stat("skipped"))

    def __iter__(self) -> Iterator[Batch]:
        if self._fast and self.prefetch:
            self._ahead = Prefetch(self._fast_batches(), self._snapshot)
            return iter(self._ahead)
        if self._fast:
            return self._fast_batches()
        if isinstance(self._reader, PcapngReader) and self._reader.file_size:
            return self._pcapng_batches()
        return self._slow_batches()

    def _slow_batches(self) -> Iterator[Batch]:
        chunk: list[Packet] = []
        first = 0
        try:
            for p in self._reader:
                if not chunk:
                    first = p.index
                chunk.append(p)
                if len(chunk) == self.batch_size:
                    yield pack(chunk, first)
                    chunk = []
        except CaptureError:
            if chunk:  # the packets before the damage first, as the streaming reader does
                yield pack(chunk, first)
            raise
        if chunk:
            yield pack(chunk, first)

    # -- pcapng: a native walk over plain EPBs, the streaming reader's step() for everything else ----
    def _pcapng_batches(self) -> Iterator[Batch]:
        r = self._reader
        assert isinstance(r, PcapngReader)
        f = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed below
        # read, not mapped (a file truncated meanwhile is a CaptureError, not a SIGBUS)
        win = _Window(f.fileno(), r.file_size, self.path, self._pool)
        pending: list[Packet] = []  # packets from step(), packed before anything after them
        try:
            while True:
                snaps = np.array([i.snaplen if i.linktype == lt.ETHERNET and not i.broken and r.ethernet
                                  else -1 for i in r._section], dtype=np.int64)
                starts, buf, base = self._ng_index(win, r.offset, r._endian, snaps)
                batch = self._gather_ng(buf, base, starts, r) if len(starts) else None
                del buf
                if batch is not None:
                    if pending:
                        yield pack(pending, pending[0].index)
                        pending = []
                    yield batch
                    continue
                try:
                    step = r.step()
                except CaptureError:
                    if pending:
                        yield pack(pending, pending[0].index)
                    raise
                if step is END:
                    break
                if step is not None:
                    pending.append(step)  # type: ignore[arg-type]
                    if len(pending) == self.batch_size:
                        yield pack(pending, pending[0].index)
                        pending = []
            if pending:
                yield pack(pending, pending[0].index)
        finally:
            r.close()
            f.close()

    def _ng_index(self, win: _Window, pos: int, endian: str,
                  snaps: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Up to batch_size plain EPBs from file offset `pos`: (their offsets in the buffer, the buffer,
        the file offset of its first byte); a window that cuts the run short is read again bigger."""
        want = self._ng_window  # (what the last batch needed: one read per batch, not one per doubling)
        while True:
            buf, base = win.view(pos, want)
            starts, end = index_pcapng(buf, pos - base, self.batch_size, endian, snaps, self.native)
            if len(starts) == self.batch_size or base + len(buf) >= win.size or len(buf) >= 2 * MAX_BLOCK:
                break
            if end + 8 <= len(buf):  # the block the walk stopped at: inside the window, or not a block
                length = int(buf[end + 4 : end + 8].view(endian + "u4")[0])
                if not 32 <= length <= MAX_BLOCK or end + length <= len(buf):
                    break
            want = 2 * len(buf)
        self._ng_window = max(self._ng_window, want)
        return starts, buf, base

    def _gather_ng(self, buf: np.ndarray, base: int, starts: np.ndarray, r: PcapngReader) -> Batch | None:
        """The batch of the plain EPBs at `starts` (in `buf`, whose first byte is the file's `base`), cut
        before the first whose timestamp is out of range (the streaming reader warns about that one);
        None when that is the first. Updates r's counters."""
        fields = buf[starts[:, None] + np.arange(8, 28)].view(r._endian + "u4").astype(np.int64)
        ifid, hi, lo, caplen, orig = (fields[:, i] for i in range(5))
        units = (hi.astype(np.uint64) << np.uint64(32)) | lo.astype(np.uint64)
        ts = np.zeros(len(starts), dtype=np.int64)
        ok = np.ones(len(starts), dtype=bool)
        for local in np.unique(ifid):
            iface = r._section[int(local)]
            sel = ifid == local
            v, off = iface.tsresol & 0x7F, iface.tsoffset * 1_000_000_000
            u = units[sel]
            if not iface.tsresol & 0x80 and v <= 9 and -TS_MAX <= off <= TS_MAX:
                mul = 10 ** (9 - v)
                good = u <= np.uint64((TS_MAX - max(off, 0)) // mul)
                t = np.where(good, u, 0).astype(np.int64) * mul + off
                good &= t >= 0
            else:  # unusual resolutions: exact integers per packet
                exact = [iface.ts_ns(int(x)) for x in u]
                good = np.array([0 <= x <= TS_MAX for x in exact], dtype=bool)
                t = np.array([x if 0 <= x <= TS_MAX else 0 for x in exact], dtype=np.int64)
            ts[sel] = t
            ok[sel] = good
        k = len(starts) if ok.all() else int(np.argmin(ok))
        if k == 0:
            return None
        first = int(starts[0]) + 28
        last = int(starts[k - 1]) + 28 + int(caplen[k - 1])
        index = np.array([i.index for i in r._section], dtype=np.int32)
        data = buf[first:last]  # (a view of the window: its buffer is read into again once no batch holds it)
        data.flags.writeable = False
        batch = Batch(data, starts[:k] + 28 - first, caplen[:k].astype(np.int32), ts[:k], index[ifid[:k]],
                      r.packets, orig[:k])
        end = int(starts[k - 1]) + struct.unpack_from(r._endian + "I", buf, int(starts[k - 1]) + 4)[0]
        r.offset = base + end
        r.records += k
        r.packets += k
        r._last_ts = int(ts[k - 1])
        return batch

    def _warn(self, offset: int, message: str, kind: str, record: bool = False) -> None:
        self._own_warnings.add(CaptureWarning(self.path, offset, message, kind, record))
        if record:
            self._own["skipped"] += 1

    def _fast_batches(self) -> Iterator[Batch]:
        f = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed below
        # plain records are mapped where a read lease makes that safe (mapped.py): taken before the size
        # is read, so that a truncation from then on waits for the windows to be detached
        big = self._reader.file_size >= _MAP_MIN  # (small files: not worth a lease and its watcher thread)
        mapped = MappedFile.open(f.fileno()) if self._plain and big else None
        try:
            header = parse_header(f.read(HEADER_SIZE), self.path)
            yield from self._scan(f.fileno(), os.fstat(f.fileno()).st_size, header, mapped)
        finally:
            if mapped is not None:
                mapped.finish()
            f.close()

    def _scan(self, fd: int, size: int, h: PcapHeader, mapped: MappedFile | None = None) -> Iterator[Batch]:
        """Batches of the records from HEADER_SIZE on: views of `mapped`'s windows while it gives them,
        else read (a file truncated meanwhile gives a CaptureError, not a SIGBUS) into buffers that are
        reused once no batch holds them."""
        limit = effective_snaplen(h.snaplen)
        win = _Window(fd, size, self.path, self._pool)
        pos = HEADER_SIZE
        while True:
            w, buf, base = self._walk(win, pos, h, mapped)
            if len(w.starts):
                pos = base + w.end
                batch = self._gather(buf, base, w, h, limit)
                self._own["offset"] = pos
                if len(batch):  # (every record of it may have been unconvertible)
                    yield batch
                del batch
            if self._read_error is not None:
                raise self._read_error
            if len(w.starts) < self._want or pos == size:
                break
            self._want = min(2 * self._want, self.batch_size)
        del buf
        # The walk stopped early: at the end, or at a damaged record (pos).
        if pos == size:
            return
        self._own["records"] += 1
        if pos + 16 > size:
            self._warn(pos, msg_truncated_header(size - pos, 16), "truncated", record=True)
            return
        caplen = struct.unpack(h.endian + "I", win.read_at(pos + 8, 4))[0]
        if caplen > MAX_SNAPLEN:
            self._own["skipped"] += 1
            raise CaptureError(msg_too_long(caplen, h.snaplen), self.path, pos)
        self._warn(pos, msg_truncated(caplen, size - pos - 16), "truncated", record=True)

    def _walk(self, win: _Window, pos: int, h: PcapHeader,
              mapped: MappedFile | None = None) -> tuple[RecordWalk, np.ndarray, int]:
        """Up to batch_size whole records from file offset `pos`: (walk, buffer, file offset of buffer[0]).
        The buffer is read piece by piece, each piece walked at once, until the batch is complete, the
        file ends or the walk meets damage; a batch bigger than the buffer gets a bigger one (up to
        _Window.MAX: then a shorter batch). `mapped`: the buffer is a mapped window while it gives one."""
        size = win.size
        cap = _Window.START
        want = self._want
        # about what this batch takes: the last one's bytes, scaled to this one's records
        guess = self._batch_bytes * want // self._last_n if self._last_n else self._batch_bytes
        # the first piece: about that, so that small batches read little
        piece = max(4096, min(_PIECE, guess + guess // 16 + 4096))
        if mapped is not None:  # (a window: about that; the first: 512 bytes a record, at most a buffer)
            cap = guess + guess // 16 + 4096 if guess else min(cap, max(1 << 16, 512 * want))
        while True:
            walker = RecordWalker(want, h.endian, h.frac_scale, self.native, self._columns(),
                                  limit=effective_snaplen(h.snaplen))
            mbuf = mapped.window(pos, min(cap, size - pos)) if mapped is not None else None
            if mbuf is not None:
                found = self._walk_window(walker, mbuf, pos, size, cap)
                if found is not None:
                    return found
                cap *= 2
                continue
            buf = win.buffer(min(cap, size - pos))
            view, total = memoryview(buf), len(buf)
            caplen_at = struct.Struct(h.endian + "I").unpack_from
            have = rel = 0
            while have < total:
                n = min(piece, total - have)
                try:
                    win.read_into(view[have : have + n], pos + have)
                except CaptureError as e:  # (the file shrank) its whole records before the end first
                    if e.offset is None or not pos + have <= e.offset < pos + have + n:
                        raise
                    rel = walker.step(buf, e.offset - pos, rel)
                    if not walker.n:
                        raise
                    self._read_error = e  # (raised by _scan after this batch)
                    self._batch_bytes, self._last_n = rel, walker.n
                    return walker.result(rel), buf, pos
                have += n
                piece = _PIECE
                rel = walker.step(buf, have, rel)
                if walker.n == want:
                    break
                if rel + 16 <= have and caplen_at(view, rel + 8)[0] > MAX_SNAPLEN:
                    break  # damage: nothing past it is read
            del view
            if walker.n == want or pos + have == size or have < len(buf) or cap >= _Window.MAX:
                self._batch_bytes, self._last_n = rel, walker.n
                return walker.result(rel), buf, pos
            cap *= 2  # the batch runs past the buffer: a bigger one

    def _walk_window(self, walker: RecordWalker, buf: np.ndarray, pos: int, size: int,
                     cap: int) -> tuple[RecordWalk, np.ndarray, int] | None:
        """_walk over a mapped window (file bytes from `pos`), walked in one step (no copy to walk while
        in cache); None when the batch runs past it (a bigger one is needed)."""
        have = len(buf)
        rel = walker.step(buf, have, 0)
        damaged = False
        if rel + 16 <= have:  # (the walk stopped at a whole record header: damage, or beyond the window)
            damaged = int(buf[rel + 8 : rel + 12].view(walker.endian + "u4")[0]) > MAX_SNAPLEN
        if walker.n == walker.count or pos + have == size or damaged or cap >= _Window.MAX:
            self._batch_bytes, self._last_n = rel, walker.n
            return walker.result(rel), buf, pos
        return None

    def _columns(self) -> np.ndarray:
        """The walk's four columns (int64, 4 x batch_size): one no batch holds any more (their pages are
        written again instead of fresh ones faulted in for every batch), else a new one."""
        pool = self._col_pool
        for i in range(len(pool)):  # (not enumerate: its recycled result tuple holds a reference)
            c = pool[i]
            # referenced by the pool, `c` and getrefcount's argument: no batch's arrays are views of it
            if sys.getrefcount(c) <= 3:
                del pool[i]
                pool.append(c)
                return c
        c = np.empty((4, self.batch_size), np.int64)
        pool.append(c)
        if len(pool) > 4:  # (a consumer keeping batches: the oldest are theirs alone)
            del pool[0]
        return c

    def _gather(self, buf: np.ndarray, base: int, w: RecordWalk, h: PcapHeader, limit: int) -> Batch:
        """The batch of the walked records; `buf[0]` is the file's byte `base` (warnings name offsets)."""
        starts, caplen, orig = w.starts, w.caplen, w.orig
        n = len(starts)
        if not self._plain:
            return self._convert_records(buf, base, w, h, limit)
        if w.odd:  # (the walk counted the records to warn about: usually none, and no pass over them)
            for i in np.flatnonzero((caplen > limit) | (orig < caplen)).tolist():
                at = base + int(starts[i])
                if caplen[i] > limit:
                    self._warn(at, msg_over_snaplen(int(caplen[i]), h.snaplen), "snaplen")
                if orig[i] < caplen[i]:
                    self._warn(at, msg_orig_len(int(orig[i]), int(caplen[i])), "orig_len")
            np.maximum(orig, caplen, out=orig)
        lo = int(starts[0])  # (from the first record's header: each packet's header is in `data`)
        hi = int(starts[-1]) + 16 + int(caplen[-1])
        data = buf[lo:hi]  # (a view: the native loop copies each packet into its frame anyway)
        data.flags.writeable = False  # (the buffer is the reader's: it is read into again later)
        starts += 16 - lo  # (the walk's own array: offsets into `data` now)
        ts = w.ts_ns
        batch = Batch(data, starts, caplen, ts, _interface_zero(n), self._own["packets"], orig,
                      records=h.record_header == 16, ts_sorted=bool((ts[1:] >= ts[:-1]).all()),
                      one_interface=True)
        self._own["records"] += n
        self._own["packets"] += n
        return batch

    def _convert_records(self, buf: np.ndarray, base: int, w: RecordWalk, h: PcapHeader, limit: int) -> Batch:
        """Records of other link types (or with an FCS): PcapReader's per-record path, batched."""
        out: list[Packet] = []
        first = self._own["packets"]
        view = memoryview(buf)
        fields = zip(w.starts.tolist(), w.caplen.tolist(), w.orig.tolist(), w.ts_ns.tolist(), strict=True)
        for start, cap, orig, ts in fields:
            data = bytes(view[start + 16 : start + 16 + cap])
            done = finish_record(h, limit, self._convert, self._warn, base + start, orig, data)
            if done is not None:
                out.append(Packet(first + len(out), ts, done[0], done[1], 0, h.linktype))
        self._own["records"] += len(w.starts)
        self._own["packets"] += len(out)
        return pack(out, first)


_PIECE = 512 << 10  # bytes read at a time (walked while in cache)
_MAP_MIN = 1 << 20  # files this big or bigger are mapped where that is safe (mapped.py)
_ZEROS: list[np.ndarray] = [np.zeros(0, np.int32)]


def _interface_zero(n: int) -> np.ndarray:
    """n capture-interface numbers 0 (pcap has one interface): a read-only view of one shared array,
    not a fresh one per batch (whose pages would be faulted in anew by every batch that reads them)."""
    z = _ZEROS[0]
    if len(z) < n:
        z = np.zeros(max(n, 2 * len(z)), np.int32)
        z.flags.writeable = False
        _ZEROS[0] = z
    return z[:n]


class _Window:
    """File bytes [base, base + n) in a buffer from `pool` (reused once nothing holds it: batches are
    views of their buffer). Reads never go past the size the file had when opened; a read that returns
    less (the file was truncated meanwhile) is a CaptureError naming the offset."""

    START = 16 << 20
    MAX = 256 << 20  # a batch's bytes at most (its records are cut there)

    def __init__(self, fd: int, size: int, path: str, pool: list[np.ndarray]) -> None:
        self.fd, self.size, self.path, self.pool = fd, size, path, pool
        self._last: tuple[np.ndarray, int] | None = None  # view(): the buffer read last, its offset

    def view(self, pos: int, want: int) -> tuple[np.ndarray, int]:
        """The file's bytes from `pos`, up to `want` of them: (buffer, file offset of its first byte); the
        buffer read last when it holds them all."""
        n = min(want, self.size - pos)
        last = self._last
        if last is not None and last[1] <= pos and pos + n <= last[1] + len(last[0]):
            return last
        self._last = None
        buf = self.buffer(n)
        self.read_into(buf, pos)
        self._last = (buf, pos)
        return buf, pos

    def read_at(self, pos: int, n: int) -> bytes:
        data = os.pread(self.fd, n, pos)
        if len(data) < n:
            raise self._shrunk(pos + len(data))
        return data

    def read_into(self, buf: np.ndarray | memoryview, pos: int) -> None:
        view = buf if isinstance(buf, memoryview) else memoryview(buf)
        done = 0
        while done < len(view):
            got = os.preadv(self.fd, [view[done:]], pos + done)
            if got <= 0:
                raise self._shrunk(pos + done)
            done += got

    def _shrunk(self, offset: int) -> CaptureError:
        now = os.fstat(self.fd).st_size
        return CaptureError(f"the capture shrank while being read: no data at offset {offset} (the file had "
                            f"{self.size} bytes when opened, {now} now)", self.path, offset)

    def buffer(self, n: int) -> np.ndarray:
        """A buffer of n bytes from the pool (one nothing else holds), else a new one."""
        for i in range(len(self.pool)):
            b = self.pool[i]
            # referenced by the pool, `b`, getrefcount's argument: nothing else (no batch) holds it
            if len(b) >= n and sys.getrefcount(b) <= 3:
                del self.pool[i]
                self.pool.append(b)  # most recently used last
                return b[:n]
        b = np.empty(max(n, min(self.START, self.size)), np.uint8)
        self.pool.append(b)
        if len(self.pool) > 4:  # (a consumer keeping batches: the oldest buffers are theirs alone)
            del self.pool[0]
        return b[:n]


def _first(w: WarningList, n: int, counts: dict[str, int], dropped: int) -> WarningList:
    """The first n warnings of `w`, with the counts as they were then."""
    out = WarningList()
    out.extend(w[:n])
    out.counts.update(counts)
    out.dropped = dropped
    return out


def load_code() -> None:
    """Loads the record walk's machine code (disk-cached) now, not at the first batch."""
    RecordWalker(1, "<", 1)


def read_batches(path: str | os.PathLike[str], batch_size: int = 65536, *, native: bool = True,
                 prefetch: bool = False, first: int | None = None) -> BatchReader:
    """Batches of up to `batch_size` packets from a pcap or pcapng file (CaptureError when refused);
    `prefetch`: a thread reads the next batch of a pcap file while the caller works on one; `first`: a pcap
    file's first batch holds at most that many packets, each next one twice as many as the one before, up
    to batch_size (a consumer waiting for its first batch waits less)."""
    return BatchReader(path, batch_size, native=native, prefetch=prefetch, first=first)
