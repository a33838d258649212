"""pcapng files: a streaming reader and a small writer (used for sample captures and tests).

Read: Section Header Blocks in either byte order, several sections per file (each resets the interface
list); Interface Description Blocks with their link type, snap length, `if_name`, `if_tsresol` (powers
of 10 and of 2) and `if_tsoffset`; Enhanced, Simple and the obsolete Packet blocks. Other blocks are
skipped (counted in `other_blocks`). Interfaces are numbered across the whole file in the order their
IDBs appear (`Packet.interface`, `reader.interfaces`); in a one-section file that is the pcapng
interface id. A Simple Packet Block has no timestamp: it gets the previous packet's (0 at first).

Damage (see reader.py for the accounting invariant):
- fatal, CaptureError at open: the file does not start with a Section Header Block;
- fatal, CaptureError at the block (after the packets before it were yielded): a byte-order magic
  other than 0x1a2b3c4d, a major version other than 1, a block length below 12, not a multiple of 4
  or above 16 MiB, a trailing block length that differs from the leading one (framing lost), a packet
  on an interface whose link type is unsupported;
- warning, reading stops: a block header or block cut short by the end of the file;
- warning, block skipped: a packet block whose contents do not fit its length, or naming an interface
  not described in its section, or not convertible to Ethernet; an IDB too short to describe anything
  (its packets are then skipped as well);
- warning, packet yielded: captured length above the interface's snap length, original length below
  the captured length (taken as the captured length), malformed options (the rest ignored), a
  timestamp outside 0..2**63-1 ns (if_tsresol / if_tsoffset gone wrong: clamped to that range).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import CaptureError
from . import linktype as lt
from .reader import CaptureReader
from .records import Packet

BT_SHB = 0x0A0D0D0A
BT_IDB = 1
BT_PB = 2
BT_SPB = 3
BT_EPB = 6
PACKET_BLOCKS = frozenset((BT_PB, BT_SPB, BT_EPB))
BYTE_ORDER_MAGIC = 0x1A2B3C4D
MAX_BLOCK = 16 * 1024 * 1024  # libpcap's limit: a longer block is damage
END = object()  # step(): the end of the file
TS_MAX = (1 << 63) - 1  # timestamps are int64 nanoseconds in batches
OPT_ENDOFOPT = 0
OPT_IF_NAME = 2
OPT_IF_TSRESOL = 9
OPT_IF_TSOFFSET = 14


@dataclass
class Interface:
    """An interface description: `index` within the file, `local_id` within its section."""

    index: int
    section: int
    local_id: int
    linktype: int
    snaplen: int
    name: str = ""
    tsresol: int = 6  # the if_tsresol byte
    tsoffset: int = 0  # seconds
    broken: str = ""  # why its description could not be read ("" when fine)

    def ts_ns(self, units: int) -> int:
        """A timestamp in this interface's units, as nanoseconds since the epoch."""
        v = self.tsresol & 0x7F
        if self.tsresol & 0x80:
            ns = (units * 1_000_000_000) >> v
        elif v <= 9:
            ns = units * 10 ** (9 - v)
        else:
            ns = units // 10 ** (v - 9)
        return ns + self.tsoffset * 1_000_000_000


def is_pcapng(head: bytes) -> bool:
    return len(head) >= 4 and struct.unpack_from("<I", head)[0] == BT_SHB


class PcapngReader(CaptureReader):
    """Iterate over the packets of a pcapng file (`ethernet=False` yields records unconverted)."""

    format = "pcapng"

    def __init__(self, path: str | os.PathLike[str], *, ethernet: bool = True):
        super().__init__(path)
        self.ethernet = ethernet
        self.interfaces: list[Interface] = []
        self.sections = 0
        self.other_blocks = 0
        self._section: list[Interface] = []
        self._endian = "<"
        self._last_ts = 0
        head = self._read(12)
        if not is_pcapng(head):
            self.close()
            raise CaptureError(f"not a pcapng file (first block type 0x{head[:4].hex()})", self.path, 0)
        if len(head) == 12 and head[8:12] not in (b"\x1a\x2b\x3c\x4d", b"\x4d\x3c\x2b\x1a"):
            self.close()
            raise CaptureError(f"bad byte-order magic 0x{head[8:12].hex()} in section header block",
                               self.path, 8)
        assert self._f is not None
        self._f.seek(0)
        self._fpos = 0

    # -- framing ----------------------------------------------------------------------------------
    def _next_block(self) -> tuple[int, bytes, int] | None:
        """(block type, body, start offset) of the next block; None at the end (or after a warning)."""
        start = self.offset
        head = self._read(8)
        if not head:
            return None
        btype = struct.unpack_from(self._endian + "I", head)[0] if len(head) >= 4 else -1
        is_packet = btype in PACKET_BLOCKS
        if is_packet:
            self.records += 1
        if len(head) < 8:
            self._warn(start, f"truncated block header: {len(head)} of 8 bytes left in the file", "truncated",
                       record=is_packet)
            return None
        if btype == BT_SHB:
            bom = self._read(4)
            if len(bom) < 4:
                self._warn(start, "truncated section header block", "truncated")
                return None
            for endian in ("<", ">"):
                if struct.unpack(endian + "I", bom)[0] == BYTE_ORDER_MAGIC:
                    self._endian = endian
                    break
            else:
                raise self._fatal(start + 8, f"bad byte-order magic 0x{bom.hex()} in section header block")
        length = struct.unpack_from(self._endian + "I", head, 4)[0]
        if length < 12 or length % 4 or (btype == BT_SHB and length < 28):
            raise self._fatal(start, f"block of type 0x{btype:08x} has invalid length {length}",
                              record=is_packet)
        if length > MAX_BLOCK:
            raise self._fatal(start, f"block of type 0x{btype:08x} claims {length} bytes, more than the "
                              f"maximum {MAX_BLOCK}: damaged file", record=is_packet)
        done = 12 if btype == BT_SHB else 8
        rest = self._read(length - done)
        if len(rest) < length - done:
            self._warn(start, f"truncated block: block of type 0x{btype:08x} announces {length} bytes, "
                       f"{len(rest) + done} left in the file", "truncated", record=is_packet)
            return None
        trailer = struct.unpack_from(self._endian + "I", rest, len(rest) - 4)[0]
        if trailer != length:
            raise self._fatal(start, f"block of type 0x{btype:08x} length {length} and trailing length "
                              f"{trailer} differ", record=is_packet)
        self.offset = start + length
        body = (bom + rest[:-4]) if btype == BT_SHB else rest[:-4]
        return btype, body, start

    # -- blocks -----------------------------------------------------------------------------------
    def _packets(self) -> Iterator[Packet]:
        while (step := self.step()) is not END:
            if step is not None:
                yield step
        self.close()

    def step(self) -> Packet | None | object:
        """Read one block at `offset`: its packet, None (no packet in it), or END at the end of the file.

        The batch reader interleaves these steps with its own walk over plain Enhanced Packet Blocks.
        """
        assert self._f is not None
        if self._fpos != self.offset:  # the batch reader moved on without us
            self._f.seek(self.offset)
        block = self._next_block()
        if block is None:
            return END
        self._fpos = self.offset  # the file position: just after that block
        btype, body, start = block
        if btype == BT_SHB:
            self._on_section(body, start)
        elif btype == BT_IDB:
            self._on_interface(body, start)
        elif btype in PACKET_BLOCKS:
            pkt = self._on_packet(btype, body, start)
            if pkt is not None:
                self.packets += 1
            return pkt
        else:
            self.other_blocks += 1
        return None

    def _on_section(self, body: bytes, start: int) -> None:
        major, minor = struct.unpack_from(self._endian + "HH", body, 4)
        if major != 1:
            raise self._fatal(start + 12, f"unsupported pcapng version {major}.{minor}")
        self.sections += 1
        self._section = []

    def _on_interface(self, body: bytes, start: int) -> None:
        local = len(self._section)
        if len(body) < 8:
            iface = Interface(len(self.interfaces), self.sections - 1, local, -1, 0,
                              broken=f"its description block at offset {start} is {len(body)} bytes long")
            self._warn(start, f"interface description block too short ({len(body)} bytes)", "bad_record")
        else:
            linktype, _reserved, snaplen = struct.unpack_from(self._endian + "HHI", body)
            iface = Interface(len(self.interfaces), self.sections - 1, local, linktype, snaplen)
            for code, value in self._options(body, 8, start):
                if code == OPT_IF_NAME:
                    iface.name = value.rstrip(b"\0").decode("utf-8", "replace")
                elif code == OPT_IF_TSRESOL and len(value) >= 1:
                    iface.tsresol = value[0]
                elif code == OPT_IF_TSOFFSET and len(value) >= 8:
                    iface.tsoffset = struct.unpack_from(self._endian + "q", value)[0]
        self.interfaces.append(iface)
        self._section.append(iface)

    def _options(self, body: bytes, pos: int, start: int) -> Iterator[tuple[int, bytes]]:
        while pos + 4 <= len(body):
            code, size = struct.unpack_from(self._endian + "HH", body, pos)
            if code == OPT_ENDOFOPT:
                return
            if pos + 4 + size > len(body):
                self._warn(start + 8 + pos, f"option {code} of {size} bytes runs past its block; "
                           "the rest of the options are ignored", "option")
                return
            yield code, body[pos + 4 : pos + 4 + size]
            pos += 4 + ((size + 3) & ~3)

    def _on_packet(self, btype: int, body: bytes, start: int) -> Packet | None:
        e = self._endian
        if btype == BT_EPB:
            if len(body) < 20:
                return self._bad(start, f"enhanced packet block body of {len(body)} bytes is too short")
            ifid, hi, lo, caplen, orig = struct.unpack_from(e + "IIIII", body)
            hdr, units = 20, (hi << 32) | lo
        elif btype == BT_PB:
            if len(body) < 20:
                return self._bad(start, f"packet block body of {len(body)} bytes is too short")
            ifid, _drops, hi, lo, caplen, orig = struct.unpack_from(e + "HHIIII", body)
            hdr, units = 20, (hi << 32) | lo
        else:
            if len(body) < 4:
                return self._bad(start, f"simple packet block body of {len(body)} bytes is too short")
            ifid, hdr, units = 0, 4, None
            orig = struct.unpack_from(e + "I", body)[0]
            caplen = min(orig, len(body) - 4)
            if self._section and self._section[0].snaplen:
                caplen = min(caplen, self._section[0].snaplen)
        if ifid >= len(self._section):
            return self._bad(start, f"packet on interface {ifid}, but its section describes "
                             f"{len(self._section)} interface(s)")
        iface = self._section[ifid]
        if iface.broken:
            return self._bad(start, f"packet on interface {ifid}, whose description is damaged "
                             f"({iface.broken})")
        if caplen > len(body) - hdr:
            return self._bad(start, f"captured length {caplen} exceeds the {len(body) - hdr} bytes "
                             "of its block")
        if iface.snaplen and caplen > iface.snaplen:
            self._warn(start, f"record of {caplen} bytes is longer than the snap length {iface.snaplen}",
                       "snaplen")
        if orig < caplen:
            self._warn(start, f"original length {orig} is less than the captured length {caplen}; "
                       f"taken as {caplen}", "orig_len")
            orig = caplen
        data = body[hdr : hdr + caplen]
        convert = self._converter(iface, start)
        try:
            frame = convert(data)
        except lt.Unconvertible as exc:
            return self._bad(start, str(exc), "unconvertible")
        ts = self._last_ts if units is None else iface.ts_ns(units)
        if not 0 <= ts <= TS_MAX:
            clamped = min(max(ts, 0), TS_MAX)
            self._warn(start, f"timestamp of {ts} ns is outside 0..2**63-1; taken as {clamped}", "timestamp")
            ts = clamped
        self._last_ts = ts
        return Packet(self.packets, ts, frame, orig + len(frame) - len(data), iface.index, iface.linktype)

    def _converter(self, iface: Interface, start: int) -> Callable[[bytes], bytes]:
        if not self.ethernet:
            return bytes
        conv = lt.converter(iface.linktype)
        if conv is None:
            raise self._fatal(start, f"packet on interface {iface.index} of unsupported link type "
                              f"{lt.name(iface.linktype)}: xdpsim reads Ethernet, raw IP, IPv4, IPv6, "
                              "Linux SLL/SLL2 and NULL/LOOP", record=True)
        return conv

    def _bad(self, start: int, message: str, kind: str = "bad_record") -> None:
        self._warn(start, message + "; block skipped", kind, record=True)
        return None


class PcapngWriter:
    """Write a little-endian pcapng file: one section, interfaces added on demand, nanosecond EPBs."""

    def __init__(self, path: str | os.PathLike[str] | BinaryIO):
        if hasattr(path, "write"):
            self._f: BinaryIO | None = path  # type: ignore[assignment]
            self._owned = False
        else:
            self._f = open(os.fspath(path), "wb", buffering=1 << 20)  # type: ignore[arg-type]  # noqa: SIM115
            self._owned = True
        self.interfaces = 0
        self.count = 0
        self._block(BT_SHB, struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1))

    def _block(self, btype: int, body: bytes) -> None:
        assert self._f is not None, "writer is closed"
        body += b"\0" * (-len(body) % 4)
        length = len(body) + 12
        self._f.write(struct.pack("<II", btype, length) + body + struct.pack("<I", length))

    @staticmethod
    def _option(code: int, value: bytes) -> bytes:
        return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)

    def add_interface(self, linktype: int = lt.ETHERNET, snaplen: int = 262144, name: str = "",
                      tsoffset: int = 0) -> int:
        """Describe an interface (timestamps in nanoseconds); returns its id."""
        opts = self._option(OPT_IF_TSRESOL, b"\x09")
        if name:
            opts += self._option(OPT_IF_NAME, name.encode())
        if tsoffset:
            opts += self._option(OPT_IF_TSOFFSET, struct.pack("<q", tsoffset))
        opts += struct.pack("<HH", OPT_ENDOFOPT, 0)
        self._block(BT_IDB, struct.pack("<HHI", linktype, 0, snaplen) + opts)
        self.interfaces += 1
        return self.interfaces - 1

    def write(self, data: bytes, ts_ns: int, interface: int = 0, orig_len: int | None = None) -> None:
        """An Enhanced Packet Block; `ts_ns` counts from the interface's tsoffset."""
        if not 0 <= interface < self.interfaces:
            raise ValueError(f"interface {interface} was not added")
        if ts_ns < 0:
            raise ValueError(f"negative timestamp {ts_ns}")
        data = bytes(data)
        orig = len(data) if orig_len is None else max(orig_len, len(data))
        ts = int(ts_ns)
        head = struct.pack("<IIIII", interface, ts >> 32, ts & 0xFFFFFFFF, len(data), orig)
        self._block(BT_EPB, head + data)
        self.count += 1

    def close(self) -> None:
        if self._f is not None:
            if self._owned:
                self._f.close()
            else:
                self._f.flush()
            self._f = None

    def __enter__(self) -> PcapngWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
