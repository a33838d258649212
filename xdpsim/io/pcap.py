"""Classic pcap files: a streaming reader (constant memory) and a buffered writer.

Formats read: magic 0xa1b2c3d4 (microseconds) and 0xa1b23c4d (nanoseconds) in either byte order, and
the "modified" pcap of old Linux patches (0xa1b2cd34, 24-byte record headers). The link type is the
low 16 bits of the header's field; when the FCS-present bit (0x04000000) is set the FCS bytes it
announces are cut off each record.

Damage (see reader.py for the accounting invariant):
- fatal, CaptureError at open: file shorter than its 24-byte header, unknown magic, major version
  other than 2, unsupported link type (when converting to Ethernet);
- fatal, CaptureError at the record (after the packets before it were yielded): a record claiming
  more than 262144 captured bytes (libpcap's maximum) — the framing can no longer be trusted;
- warning, reading stops: a truncated record header or record data at the end of the file;
- warning, record yielded whole: captured length above the file's snap length;
- warning, record yielded: original length below the captured length (taken as the captured length);
- warning, record skipped: a record that cannot be converted to Ethernet (linktype.py says which).
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from ..errors import CaptureError
from . import linktype as lt
from .native import interleave, put_headers
from .reader import MAX_SNAPLEN, CaptureReader
from .records import Packet

MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D
MAGIC_MODIFIED = 0xA1B2CD34
HEADER_SIZE = 24
_FCS_PRESENT = 0x04000000


@dataclass(frozen=True)
class PcapHeader:
    endian: str  # "<" or ">"
    nanosecond: bool
    version: tuple[int, int]
    snaplen: int
    linktype: int
    fcs_bytes: int
    record_header: int  # 16, or 24 for the modified format

    @property
    def frac_scale(self) -> int:
        return 1 if self.nanosecond else 1000


def parse_header(head: bytes, path: str) -> PcapHeader:
    """The global header, or CaptureError (offset 0) for anything not a pcap file xdpsim reads."""
    if len(head) < 4:
        raise CaptureError(f"file of {len(head)} bytes is too short to be a capture", path, 0)
    for endian in ("<", ">"):
        magic = struct.unpack_from(endian + "I", head)[0]
        if magic in (MAGIC_US, MAGIC_NS, MAGIC_MODIFIED):
            break
    else:
        raise CaptureError(f"not a pcap file (magic 0x{head[:4].hex()})", path, 0)
    if len(head) < HEADER_SIZE:
        raise CaptureError(f"truncated pcap header ({len(head)} of {HEADER_SIZE} bytes)", path, len(head))
    major, minor, _zone, _sigfigs, snaplen, field = struct.unpack_from(endian + "HHiIII", head, 4)
    if major != 2:
        raise CaptureError(f"unsupported pcap version {major}.{minor}", path, 4)
    fcs = 2 * (field >> 28) if field & _FCS_PRESENT else 0
    return PcapHeader(endian, magic == MAGIC_NS, (major, minor), snaplen, field & 0xFFFF, fcs,
                      24 if magic == MAGIC_MODIFIED else 16)


def effective_snaplen(snaplen: int) -> int:
    """libpcap treats 0 and anything above its maximum as the maximum."""
    return MAX_SNAPLEN if snaplen == 0 or snaplen > MAX_SNAPLEN else snaplen


def msg_too_long(caplen: int, snaplen: int) -> str:
    return (f"record claims {caplen} captured bytes, more than the maximum {MAX_SNAPLEN} "
            f"(snap length {snaplen}): damaged file")


def msg_over_snaplen(caplen: int, snaplen: int) -> str:
    return f"record of {caplen} bytes is longer than the snap length {snaplen}"


def msg_orig_len(orig: int, caplen: int) -> str:
    return f"original length {orig} is less than the captured length {caplen}; taken as {caplen}"


def msg_truncated(caplen: int, available: int) -> str:
    return f"truncated record: {caplen} bytes announced, {available} left in the file"


def msg_truncated_header(available: int, size: int) -> str:
    return f"truncated record header: {available} of {size} bytes left in the file"


def finish_record(h: PcapHeader, limit: int, convert: Callable[[bytes], bytes], warn: Callable[..., None],
                  start: int, orig: int, data: bytes) -> tuple[bytes, int] | None:
    """A complete record's checks and conversion: (frame, orig_len), or None when it is skipped.

    Warnings go through `warn(offset, message, kind, record=False)`, in the order the readers report them.
    """
    caplen = len(data)
    if caplen > limit:
        warn(start, msg_over_snaplen(caplen, h.snaplen), "snaplen")
    if orig < caplen:
        warn(start, msg_orig_len(orig, caplen), "orig_len")
        orig = caplen
    if h.fcs_bytes and len(data) >= h.fcs_bytes:
        data = data[: len(data) - h.fcs_bytes]
        orig = max(orig - h.fcs_bytes, len(data))
    try:
        frame = convert(data)
    except lt.Unconvertible as e:
        warn(start, str(e), "unconvertible", record=True)
        return None
    return frame, orig + len(frame) - len(data)


class PcapReader(CaptureReader):
    """Iterate over the packets of a classic pcap file (`ethernet=False` yields records unconverted)."""

    format = "pcap"

    def __init__(self, path: str | os.PathLike[str], *, ethernet: bool = True):
        super().__init__(path)
        try:
            self.header = parse_header(self._read(HEADER_SIZE), self.path)
        except CaptureError:
            self.close()
            raise
        self.linktype = self.header.linktype
        self.snaplen = self.header.snaplen
        self.nanosecond = self.header.nanosecond
        self._convert = lt.converter(self.linktype) if ethernet else (lambda b: b)
        if self._convert is None:
            self.close()
            raise CaptureError(f"unsupported link type {lt.name(self.linktype)}: xdpsim reads Ethernet, "
                               f"raw IP, IPv4, IPv6, Linux SLL/SLL2 and NULL/LOOP", self.path, 20)
        self.offset = HEADER_SIZE

    def _packets(self) -> Iterator[Packet]:
        h = self.header
        hsize = h.record_header
        rec = struct.Struct(h.endian + "IIII")
        limit = effective_snaplen(h.snaplen)
        scale = h.frac_scale
        convert = self._convert
        linktype = self.linktype
        while True:
            start = self.offset
            head = self._read(hsize)
            if not head:
                break
            self.records += 1
            if len(head) < hsize:
                self._warn(start, msg_truncated_header(len(head), hsize), "truncated", record=True)
                break
            sec, frac, caplen, orig = rec.unpack_from(head)
            if caplen > MAX_SNAPLEN:
                raise self._fatal(start, msg_too_long(caplen, h.snaplen), record=True)
            data = self._read(caplen)
            if len(data) < caplen:
                self._warn(start, msg_truncated(caplen, len(data)), "truncated", record=True)
                break
            self.offset = start + hsize + caplen
            done = finish_record(h, limit, convert, self._warn, start, orig, data)
            if done is None:
                continue
            self.packets += 1
            yield Packet(self.packets - 1, sec * 1_000_000_000 + frac * scale, done[0], done[1], 0, linktype)
        self.close()


def _writev_all(fd: int, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
    """The byte ranges [starts[i], ends[i]) of `buf`, in order, with as few writev calls as the iovec
    limit allows; the iovec arrays are built by numpy (no Python object per range). A short write
    resumes where it stopped."""
    sizes = (ends - starts).astype(np.uint64)
    iov = np.empty((len(starts), 2), np.uint64)  # struct iovec {void *base; size_t len}
    iov[:, 0] = np.uint64(buf.ctypes.data) + starts.astype(np.uint64)
    iov[:, 1] = sizes
    i = 0
    while i < len(iov):
        group = iov[i : i + _IOV_MAX]
        done = _writev(fd, group)
        total = int(group[:, 1].sum())
        if done < total:  # short write: skip what went out, resume inside the group
            group = group.copy()
            while done < total:
                cum = np.cumsum(group[:, 1])
                k = int(np.searchsorted(cum, done, side="right"))  # first range not entirely written
                before = int(cum[k - 1]) if k else 0
                group = group[k:]
                group[0, 0] += np.uint64(done - before)
                group[0, 1] -= np.uint64(done - before)
                total -= done
                done = _writev(fd, group)
        i += _IOV_MAX


def _writev(fd: int, iov: np.ndarray) -> int:
    """writev(2) over rows (address, length) of `iov`: bytes written; OSError on failure."""
    if _libc_writev is None:  # (no libc through ctypes: one memoryview per range)
        views = [(ctypes.c_char * int(n)).from_address(int(a)) for a, n in iov.tolist()]
        return os.writev(fd, views)
    n = _libc_writev(fd, iov.ctypes.data, len(iov))
    if n < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(n)


def _find_writev():  # noqa: ANN202 - a ctypes function or None
    try:
        f = ctypes.CDLL(None, use_errno=True).writev
    except (OSError, AttributeError):
        return None
    f.restype = ctypes.c_ssize_t
    f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
    return f


_libc_writev = _find_writev()
try:
    _IOV_MAX = max(16, min(1024, os.sysconf("SC_IOV_MAX")))
except (ValueError, OSError, AttributeError):
    _IOV_MAX = 16


class PcapWriter:
    """Write a little-endian pcap file (nanosecond magic by default), buffered.

    Records longer than `snaplen` are cut to it (orig_len keeps the full length).
    """

    def __init__(self, path: str | os.PathLike[str] | BinaryIO, linktype: int = lt.ETHERNET,
                 nanosecond: bool = True, snaplen: int = MAX_SNAPLEN):
        if hasattr(path, "write"):
            self._f: BinaryIO | None = path  # type: ignore[assignment]
            self._owned = False
            self.path = getattr(path, "name", "<stream>")
        else:
            self.path = os.fspath(path)  # type: ignore[arg-type]
            self._f = open(self.path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed by close()
            self._owned = True
        self.linktype = linktype
        self.nanosecond = nanosecond
        self.snaplen = snaplen
        self._div = 1 if nanosecond else 1000
        self.count = 0
        self._f.write(struct.pack("<IHHiIII", MAGIC_NS if nanosecond else MAGIC_US, 2, 4, 0, 0,
                                  snaplen, linktype))

    def _split(self, ts_ns: int) -> tuple[int, int]:
        if ts_ns < 0:
            raise ValueError(f"negative timestamp {ts_ns}")
        sec, ns = divmod(int(ts_ns), 1_000_000_000)
        if sec > 0xFFFFFFFF:
            raise ValueError(f"timestamp {ts_ns} ns is beyond what pcap's 32-bit seconds can hold")
        return sec, ns // self._div

    def write(self, data: bytes | bytearray | memoryview, ts_ns: int, orig_len: int | None = None) -> None:
        assert self._f is not None, "writer is closed"
        data = bytes(data)
        orig = len(data) if orig_len is None else max(orig_len, len(data))
        if len(data) > self.snaplen:
            data = data[: self.snaplen]
        sec, frac = self._split(ts_ns)
        self._f.write(struct.pack("<IIII", sec, frac, len(data), orig))
        self._f.write(data)
        self.count += 1

    def write_batch(self, data: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, ts_ns: np.ndarray,
                    orig_lens: np.ndarray | None = None, *, gaps: bool = False) -> None:
        """Write n packets at once: packet i is `data[offsets[i]:offsets[i]+lengths[i]]`.

        `gaps=True` says the 16 bytes before each packet in `data` are free for the writer to use (as
        run_batch(out_gap=16) leaves them): record headers are put there and runs of records go to the
        file straight from `data` (no copy into a pcap image first).
        """
        assert self._f is not None, "writer is closed"
        offsets = np.asarray(offsets, dtype=np.int64)
        lengths = np.asarray(lengths, dtype=np.int64)
        ts = np.asarray(ts_ns, dtype=np.int64)
        n = len(lengths)
        if not (len(offsets) == n == len(ts)):
            raise ValueError("offsets, lengths and ts_ns must have the same length")
        if n == 0:
            return
        if (ts < 0).any():
            raise ValueError("negative timestamp in batch")
        buf = np.asarray(data, dtype=np.uint8).reshape(-1)
        if int(lengths.min()) < 0 or int(offsets.min()) < 0 or int((offsets + lengths).max()) > len(buf):
            raise ValueError("a packet lies outside the data array")
        orig = lengths if orig_lens is None else np.maximum(np.asarray(orig_lens, dtype=np.int64), lengths)
        caplen = np.minimum(lengths, self.snaplen)
        sec, frac = np.divmod(ts, 1_000_000_000)  # one pass for both
        if int(sec.max()) > 0xFFFFFFFF:
            raise ValueError("timestamp beyond pcap's 32-bit seconds in batch")
        headers = np.empty((n, 4), dtype="<u4")
        headers[:, 0] = sec
        headers[:, 1] = frac if self._div == 1 else frac // self._div
        headers[:, 2] = caplen
        headers[:, 3] = orig
        heads = headers.view(np.uint8).reshape(n, 16)
        if not (gaps and self._write_in_place(buf, heads, offsets, lengths, caplen)):
            self._f.write(memoryview(interleave(heads, buf, offsets, caplen)))
        self.count += n

    def _write_in_place(self, buf: np.ndarray, heads: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
                        caplen: np.ndarray) -> bool:
        """write_batch(gaps=True): False (nothing written) where the records cannot be written from `buf`."""
        if not (buf.flags.writeable and buf.flags.c_contiguous) or int(offsets.min()) < 16:
            return False
        if (caplen != lengths).any():  # records cut to the snap length: not contiguous in `buf`
            return False
        fileno = getattr(self._f, "fileno", None)
        if self._owned is False or fileno is None:
            return False
        ends = offsets + lengths
        gaps = offsets[1:] - ends[:-1]
        if (gaps < 16).any():  # packets out of order in `buf` (fine: the arrays give the file's order),
            order = np.argsort(offsets, kind="stable")  # but no record may overlap another
            if (offsets[order][1:] - ends[order][:-1] < 16).any():
                return False
        put_headers(buf, heads, offsets)
        # runs of back-to-back records: a break wherever something lies between two packets' records
        breaks = np.flatnonzero(gaps != 16) + 1
        firsts = np.concatenate(([0], breaks))
        lasts = np.concatenate((breaks, [len(offsets)])) - 1
        assert self._f is not None
        self._f.flush()  # the buffered writer's bytes go first
        _writev_all(fileno(), buf, offsets[firsts] - 16, ends[lasts])
        return True

    def close(self) -> None:
        if self._f is not None:
            if self._owned:
                self._f.close()
            else:
                self._f.flush()
            self._f = None

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

