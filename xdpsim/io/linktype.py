"""Link types, and how a record of each becomes an Ethernet frame (programs only see Ethernet).

A record of a link type other than Ethernet gets a synthesised 14-byte Ethernet header:

    dst 02:00:00:00:00:02  src 02:00:00:00:00:01  ethertype

- raw IP (101, and 12 / 14, the DLT_RAW values some BSDs wrote into files): ethertype 0x0800 when the
  first nibble is 4, 0x86dd when it is 6; any other version cannot be converted. A 12 / 14 record
  that starts with a big-endian AF_INET/AF_INET6 family word is OpenBSD's DLT_LOOP and read as LOOP.
- IPv4 (228): 0x0800; IPv6 (229): 0x86dd, whatever the payload.
- NULL (0: 4-byte address family in the capturing host's byte order, tried little- then big-endian) and
  LOOP (108: big-endian): AF_INET 2 -> 0x0800; AF_INET6 10 (Linux), 24 (NetBSD/OpenBSD),
  28 (FreeBSD), 30 (Darwin) -> 0x86dd; the 4-byte family header is removed.
- Linux cooked SLL (113, 16-byte header) and SLL2 (276, 20-byte header): the header is removed; the
  source is the SLL link-layer address when it is 6 bytes long (else 02:00:00:00:00:01); the
  ethertype is SLL's protocol when it is an ethertype (>= 0x0600); protocols 0x0001 (raw 802.3) and
  0x0004 (802.2 LLC) give an 802.3 frame whose type field is the payload length (<= 1500); netlink
  (ARPHRD 824) and other protocols cannot be converted.

A record that cannot be converted raises `Unconvertible(reason)`; readers report it as a warning and
skip that record. Link types not listed here are unsupported: readers refuse them with a CaptureError.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

ETHERNET = 1
NULL = 0
RAW_BSD12 = 12
RAW_OPENBSD14 = 14
RAW = 101
LOOP = 108
LINUX_SLL = 113
IPV4 = 228
IPV6 = 229
LINUX_SLL2 = 276

ETH_HLEN = 14
SYNTH_DST = bytes.fromhex("020000000002")
SYNTH_SRC = bytes.fromhex("020000000001")
_PREFIX_IPV4 = SYNTH_DST + SYNTH_SRC + b"\x08\x00"
_PREFIX_IPV6 = SYNTH_DST + SYNTH_SRC + b"\x86\xdd"

NAMES = {
    0: "NULL", 1: "ETHERNET", 6: "IEEE802_5", 8: "SLIP", 9: "PPP", 10: "FDDI", 12: "RAW (BSD DLT 12)",
    14: "RAW (OpenBSD DLT 14)", 50: "PPP_HDLC", 100: "ATM_RFC1483", 101: "RAW", 104: "C_HDLC",
    105: "IEEE802_11", 107: "FRELAY", 108: "LOOP", 113: "LINUX_SLL", 119: "PRISM_HEADER",
    127: "IEEE802_11_RADIOTAP", 129: "ARCNET_LINUX", 137: "JUNIPER_ATM1", 147: "USER0",
    195: "IEEE802_15_4_WITHFCS", 201: "BLUETOOTH_HCI_H4_WITH_PHDR", 220: "USB_LINUX_MMAPPED",
    228: "IPV4", 229: "IPV6", 239: "NFLOG", 276: "LINUX_SLL2",
}

_AF_INET = {2}
_AF_INET6 = {10, 24, 28, 30}
_ARPHRD_NETLINK = 824


class Unconvertible(ValueError):
    """A record of a supported link type that has no Ethernet equivalent (the message says why)."""


def name(linktype: int) -> str:
    """`LINUX_SLL (113)`, or just the number for the ones without a name here."""
    n = NAMES.get(linktype)
    return f"{n} ({linktype})" if n else str(linktype)


def _ethernet(data: bytes) -> bytes:
    return data


def _raw(data: bytes) -> bytes:
    if not data:
        raise Unconvertible("empty raw IP record")
    version = data[0] >> 4
    if version == 4:
        return _PREFIX_IPV4 + data
    if version == 6:
        return _PREFIX_IPV6 + data
    raise Unconvertible(f"raw IP record with IP version {version}")


def _raw_or_loop(data: bytes) -> bytes:
    """DLT 12 / 14: raw IP on most systems; OpenBSD wrote DLT_LOOP as 12, so a record starting with a
    big-endian IPv4/IPv6 family header is read as LOOP."""
    if len(data) >= 4 and data[0] >> 4 not in (4, 6):
        family = struct.unpack_from(">I", data)[0]
        if family in _AF_INET or family in _AF_INET6:
            return _loop(data)
    return _raw(data)


def _ipv4(data: bytes) -> bytes:
    return _PREFIX_IPV4 + data


def _ipv6(data: bytes) -> bytes:
    return _PREFIX_IPV6 + data


def _by_family(family_le: int, family_be: int, payload: bytes) -> bytes:
    for fam in (family_le, family_be):
        if fam in _AF_INET:
            return _PREFIX_IPV4 + payload
        if fam in _AF_INET6:
            return _PREFIX_IPV6 + payload
    raise Unconvertible(f"loopback address family {family_le} is neither IPv4 nor IPv6")


def _null(data: bytes) -> bytes:
    if len(data) < 4:
        raise Unconvertible(f"NULL record of {len(data)} bytes, shorter than its 4-byte family header")
    le, be = struct.unpack_from("<I", data)[0], struct.unpack_from(">I", data)[0]
    return _by_family(le, be, data[4:])


def _loop(data: bytes) -> bytes:
    if len(data) < 4:
        raise Unconvertible(f"LOOP record of {len(data)} bytes, shorter than its 4-byte family header")
    be = struct.unpack_from(">I", data)[0]
    return _by_family(be, be, data[4:])


def _cooked(hatype: int, halen: int, addr: bytes, proto: int, payload: bytes, what: str) -> bytes:
    if hatype == _ARPHRD_NETLINK:
        raise Unconvertible(f"{what} netlink record (ARPHRD 824) has no Ethernet form")
    src = addr[:6] if halen == 6 else SYNTH_SRC
    if proto >= 0x0600:
        return SYNTH_DST + src + struct.pack(">H", proto) + payload
    if proto in (0x0001, 0x0004) and len(payload) <= 1500:
        return SYNTH_DST + src + struct.pack(">H", len(payload)) + payload
    raise Unconvertible(f"{what} protocol 0x{proto:04x} is not an ethertype")


def _sll(data: bytes) -> bytes:
    if len(data) < 16:
        raise Unconvertible(f"SLL record of {len(data)} bytes, shorter than its 16-byte header")
    _pkttype, hatype, halen = struct.unpack_from(">HHH", data)
    proto = struct.unpack_from(">H", data, 14)[0]
    return _cooked(hatype, halen, data[6:14], proto, data[16:], "SLL")


def _sll2(data: bytes) -> bytes:
    if len(data) < 20:
        raise Unconvertible(f"SLL2 record of {len(data)} bytes, shorter than its 20-byte header")
    proto, _reserved, _ifindex, hatype, _pkttype, halen = struct.unpack_from(">HHIHBB", data)
    return _cooked(hatype, halen, data[12:20], proto, data[20:], "SLL2")


_CONVERTERS: dict[int, Callable[[bytes], bytes]] = {
    ETHERNET: _ethernet,
    RAW: _raw,
    RAW_BSD12: _raw_or_loop,
    RAW_OPENBSD14: _raw_or_loop,
    IPV4: _ipv4,
    IPV6: _ipv6,
    NULL: _null,
    LOOP: _loop,
    LINUX_SLL: _sll,
    LINUX_SLL2: _sll2,
}

SUPPORTED = frozenset(_CONVERTERS)


def converter(linktype: int) -> Callable[[bytes], bytes] | None:
    """The function turning a record of this link type into an Ethernet frame, None if unsupported."""
    return _CONVERTERS.get(linktype)

