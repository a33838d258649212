"""Receive-side scaling: the Toeplitz hash NICs use to spread flows over rx queues.

Hashes the IPv4/IPv6 source and destination addresses, and the TCP/UDP ports when the packet has
them (not for fragments), with the common 40-byte default key (the one in the Microsoft RSS
specification, which most NIC drivers ship), then picks the queue from a 128-entry indirection
table filled round-robin, as `ethtool -X equal N` does.
"""

from __future__ import annotations

import struct

DEFAULT_KEY = bytes.fromhex(
    "6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa"
)
INDIRECTION_ENTRIES = 128


_TABLES: dict[bytes, list[list[int]]] = {}


def _byte_tables(key: bytes) -> list[list[int]]:
    """Per input byte position, the hash contribution of each byte value (XOR is linear)."""
    tables = _TABLES.get(key)
    if tables is None:
        k = int.from_bytes(key, "big")
        klen = len(key) * 8
        tables = []
        for i in range(len(key) - 4):
            bits = [(k >> (klen - 32 - (i * 8 + b))) & 0xFFFFFFFF for b in range(8)]
            row = []
            for value in range(256):
                h = 0
                for b in range(8):
                    if value & (0x80 >> b):
                        h ^= bits[b]
                row.append(h)
            tables.append(row)
        _TABLES[key] = tables
    return tables


def toeplitz(data: bytes, key: bytes = DEFAULT_KEY) -> int:
    """The 32-bit Toeplitz hash of `data` under `key` (key must be >= len(data) + 4 bytes)."""
    tables = _byte_tables(key)
    if len(data) > len(tables):
        raise ValueError(f"RSS key of {len(key)} bytes is too short for {len(data)} bytes of input")
    result = 0
    for i, byte in enumerate(data):
        result ^= tables[i][byte]
    return result


def flow_tuple(frame: bytes) -> bytes | None:
    """The RSS input of an Ethernet frame (addresses, then ports for TCP/UDP), None for non-IP."""
    off = 12
    if len(frame) < 14:
        return None
    ethertype = struct.unpack_from("!H", frame, off)[0]
    off = 14
    for _ in range(2):  # one or two VLAN tags
        if ethertype in (0x8100, 0x88A8) and len(frame) >= off + 4:
            ethertype = struct.unpack_from("!H", frame, off + 2)[0]
            off += 4
    if ethertype == 0x0800 and len(frame) >= off + 20:
        ihl = (frame[off] & 0x0F) * 4
        proto = frame[off + 9]
        frag = struct.unpack_from("!H", frame, off + 6)[0] & 0x3FFF
        addrs = frame[off + 12 : off + 20]
        l4 = off + ihl
        if ihl >= 20 and not frag and proto in (6, 17) and len(frame) >= l4 + 4:
            return addrs + frame[l4 : l4 + 4]
        return addrs
    if ethertype == 0x86DD and len(frame) >= off + 40:
        proto = frame[off + 6]
        addrs = frame[off + 8 : off + 40]
        l4 = off + 40
        if proto in (6, 17) and len(frame) >= l4 + 4:
            return addrs + frame[l4 : l4 + 4]
        return addrs
    return None


class RssSpreader:
    """Maps frames to rx queues: Toeplitz hash, then the indirection table."""

    def __init__(self, queues: int, key: bytes = DEFAULT_KEY):
        if queues < 1:
            raise ValueError("queues must be >= 1")
        self.queues = queues
        self.key = key
        self.table = [i % queues for i in range(INDIRECTION_ENTRIES)]

    def hash(self, frame: bytes) -> int:
        t = flow_tuple(frame)
        return 0 if t is None else toeplitz(t, self.key)

    def queue(self, frame: bytes) -> int:
        if self.queues == 1:
            return 0
        return self.table[self.hash(frame) % INDIRECTION_ENTRIES]
