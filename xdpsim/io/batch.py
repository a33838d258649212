"""Batches of packets as numpy arrays, for replays that run many packets per call (the JIT).

`read_batches(path, batch_size)` gives a `BatchReader`: iterate it for `Batch`es; it carries the same
`.warnings`, `.offset`, `.records`, `.packets` and `.skipped` as the streaming readers, and raises the
same CaptureErrors at the same points (after yielding the packets before the damage).

pcap files (16-byte record headers) are memory-mapped and a tight loop (native.py) finds the record
boundaries (and reads each record's lengths and timestamp on the way). Plain Ethernet records (no FCS)
are not copied: the data array is a read-only view of the span of the mapped file holding the batch's
records (record headers included; the mapping lives as long as any batch does), so packets are not
back to back: packet i is always `data[offsets[i] : offsets[i] + lengths[i]]`. Records of other link types
(or with an FCS) are converted one by one into back-to-back batches. pcapng files do the same for runs
of plain Enhanced Packet Blocks on Ethernet interfaces and hand every other block (section and
interface blocks, SPB, PB, anything the reader warns about) to PcapngReader.step(), whose packets are
batched separately (so such batches may hold fewer than batch_size packets). The "modified" pcap
format goes through PcapReader.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import CaptureError
from . import linktype as lt
from .capture import open_capture
from .native import RecordWalk, index_pcapng, walk_records
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
from .reader import MAX_SNAPLEN, CaptureReader
from .records import CaptureWarning, Packet, WarningList


@dataclass
class Batch:
    """`len(batch)` packets; packet i is `data[offsets[i] : offsets[i] + lengths[i]]` (Ethernet frames).

    `index` is the index of the batch's first packet in the capture; `orig_lens` the lengths on the wire.
    """

    data: np.ndarray  # uint8
    offsets: np.ndarray  # int64
    lengths: np.ndarray  # int32
    ts_ns: np.ndarray  # int64
    interface: np.ndarray  # int32
    index: int
    orig_lens: np.ndarray  # int64

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

    def __init__(self, path: str | os.PathLike[str], batch_size: int = 65536, *, native: bool = True):
        self.native = native  # False: walk records in Python (tests compare both walks)
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.path = os.fspath(path)
        self.batch_size = batch_size
        self._reader: CaptureReader = open_capture(self.path)
        self.linktype: int = getattr(self._reader, "linktype", lt.ETHERNET)
        h: PcapHeader | None = getattr(self._reader, "header", None)
        self._fast = h is not None and h.record_header == 16 and self._reader.file_size > HEADER_SIZE
        # Plain Ethernet records are copied as they are; others are converted one by one.
        self._plain = h is not None and h.linktype == lt.ETHERNET and not h.fcs_bytes
        self._convert = lt.converter(self.linktype) or bytes
        self._own_warnings = WarningList()
        self._own = dict(offset=HEADER_SIZE, records=0, packets=0, skipped=0)
        if self._fast:
            self._reader.close()

    # The streaming reader's bookkeeping, or the fast path's own.
    @property
    def warnings(self) -> WarningList:
        return self._own_warnings if self._fast else self._reader.warnings

    def _stat(self, name: str) -> int:
        return self._own[name] if self._fast else getattr(self._reader, name)

    offset = property(lambda self: self._stat("offset"))
    records = property(lambda self: self._stat("records"))
    packets = property(lambda self: self._stat("packets"))
    skipped = property(lambda self: self._stat("skipped"))

    def __iter__(self) -> Iterator[Batch]:
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
        with open(self.path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        buf = np.frombuffer(mm, dtype=np.uint8)
        pending: list[Packet] = []  # packets from step(), packed before anything after them
        try:
            while True:
                snaps = np.array([i.snaplen if i.linktype == lt.ETHERNET and not i.broken and r.ethernet
                                  else -1 for i in r._section], dtype=np.int64)
                starts, _end = index_pcapng(buf, r.offset, self.batch_size, r._endian, snaps, self.native)
                batch = self._gather_ng(buf, starts, r) if len(starts) else None
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
            del buf
            mm.close()

    def _gather_ng(self, buf: np.ndarray, starts: np.ndarray, r: PcapngReader) -> Batch | None:
        """The batch of the plain EPBs at `starts`, cut before the first whose timestamp is out of range
        (the streaming reader warns about that one); None when that is the first. Updates r's counters."""
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
        batch = Batch(buf[first:last].copy(), starts[:k] + 28 - first, caplen[:k].astype(np.int32), ts[:k],
                      index[ifid[:k]], r.packets, orig[:k])
        end = int(starts[k - 1]) + struct.unpack_from(r._endian + "I", buf, int(starts[k - 1]) + 4)[0]
        r.offset = end
        r.records += k
        r.packets += k
        r._last_ts = int(ts[k - 1])
        return batch

    def _warn(self, offset: int, message: str, kind: str, record: bool = False) -> None:
        self._own_warnings.add(CaptureWarning(self.path, offset, message, kind, record))
        if record:
            self._own["skipped"] += 1

    def _fast_batches(self) -> Iterator[Batch]:
        with open(self.path, "rb") as f:
            header = parse_header(f.read(HEADER_SIZE), self.path)
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            yield from self._scan(mm, header)
        finally:
            try:
                mm.close()
            except BufferError:  # batches still in use hold views of it: unmapped when they are gone
                pass

    def _scan(self, mm: mmap.mmap, h: PcapHeader) -> Iterator[Batch]:
        size = len(mm)
        buf = np.frombuffer(mm, dtype=np.uint8)
        limit = effective_snaplen(h.snaplen)
        pos = HEADER_SIZE
        try:
            while True:
                w = walk_records(buf, pos, self.batch_size, h.endian, h.frac_scale, self.native)
                pos = w.end
                if len(w.starts):
                    batch = self._gather(buf, w, h, limit)
                    self._own["offset"] = pos
                    if len(batch):  # (every record of it may have been unconvertible)
                        yield batch
                    del batch
                if len(w.starts) < self.batch_size:
                    break
            # The walk stopped early: at the end, or at a damaged record (pos).
            if pos == size:
                return
            self._own["records"] += 1
            if pos + 16 > size:
                self._warn(pos, msg_truncated_header(size - pos, 16), "truncated", record=True)
                return
            caplen = struct.unpack_from(h.endian + "I", mm, pos + 8)[0]
            if caplen > MAX_SNAPLEN:
                self._own["skipped"] += 1
                raise CaptureError(msg_too_long(caplen, h.snaplen), self.path, pos)
            self._warn(pos, msg_truncated(caplen, size - pos - 16), "truncated", record=True)
        finally:
            del buf

    def _gather(self, buf: np.ndarray, w: RecordWalk, h: PcapHeader, limit: int) -> Batch:
        starts, caplen, orig = w.starts, w.caplen, w.orig
        n = len(starts)
        if not self._plain:
            return self._convert_records(buf, w, h, limit)
        for i in np.flatnonzero((caplen > limit) | (orig < caplen)).tolist():
            if caplen[i] > limit:
                self._warn(int(starts[i]), msg_over_snaplen(int(caplen[i]), h.snaplen), "snaplen")
            if orig[i] < caplen[i]:
                self._warn(int(starts[i]), msg_orig_len(int(orig[i]), int(caplen[i])), "orig_len")
        np.maximum(orig, caplen, out=orig)
        lo = int(starts[0]) + 16
        hi = int(starts[-1]) + 16 + int(caplen[-1])
        data = buf[lo:hi]  # (a view: the native loop copies each packet into its frame anyway)
        starts += 16 - lo  # (the walk's own array: offsets into `data` now)
        batch = Batch(data, starts, caplen, w.ts_ns, np.zeros(n, dtype=np.int32), self._own["packets"], orig)
        self._own["records"] += n
        self._own["packets"] += n
        return batch

    def _convert_records(self, buf: np.ndarray, w: RecordWalk, h: PcapHeader, limit: int) -> Batch:
        """Records of other link types (or with an FCS): PcapReader's per-record path, batched."""
        out: list[Packet] = []
        first = self._own["packets"]
        view = memoryview(buf)
        fields = zip(w.starts.tolist(), w.caplen.tolist(), w.orig.tolist(), w.ts_ns.tolist(), strict=True)
        for start, cap, orig, ts in fields:
            data = bytes(view[start + 16 : start + 16 + cap])
            done = finish_record(h, limit, self._convert, self._warn, start, orig, data)
            if done is not None:
                out.append(Packet(first + len(out), ts, done[0], done[1], 0, h.linktype))
        self._own["records"] += len(w.starts)
        self._own["packets"] += len(out)
        return pack(out, first)


def read_batches(path: str | os.PathLike[str], batch_size: int = 65536, *,
                 native: bool = True) -> BatchReader:
    """Batches of up to `batch_size` packets from a pcap or pcapng file (CaptureError when refused)."""
    return BatchReader(path, batch_size, native=native)
