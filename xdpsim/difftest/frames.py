"""Ethernet frames for differential testing, built with scapy: valid, truncated and malformed.

`build(kind, seed)` gives one valid frame of a kind (addresses, ports, flags and payload from a
seeded generator: the same arguments give the same bytes); `damage(frame, flips, cut)` overwrites
bytes and cuts the frame short. The kinds cover what the bundled programs parse: TCP/UDP/ICMP over
IPv4 and IPv6, VLAN and QinQ tags, IPv4 options and fragments, IPIP, ARP and an unknown ethertype;
the ports include the ones the parser drops (23, 19) and the firewall allows.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

KINDS = ("tcp", "udp", "icmp", "tcp6", "udp6", "icmp6", "arp", "vlan", "qinq", "ipopts", "frag", "ipip",
         "other")
PORTS = (19, 23, 53, 80, 443, 8080, 0, 65535)


def _addr4(rng: random.Random) -> str:
    return rng.choice(("10.0.0.1", "10.0.0.2", "192.168.1.7", "172.16.0.1")) if rng.random() < 0.6 else \
        ".".join(str(rng.randrange(256)) for _ in range(4))


def _addr6(rng: random.Random) -> str:
    return "fd00::" + ":".join(f"{rng.randrange(65536):x}" for _ in range(2))


def _port(rng: random.Random) -> int:
    return rng.choice(PORTS) if rng.random() < 0.6 else rng.randrange(65536)


def _payload(rng: random.Random) -> Raw:
    return Raw(rng.randbytes(rng.choice((0, 0, 1, 6, 20, 64, 300, 1400))))


def _l4(rng: random.Random, kind: str):  # noqa: ANN202 - a scapy layer
    if kind == "tcp":
        return TCP(sport=_port(rng), dport=_port(rng), flags=rng.choice(("S", "SA", "A", "PA", "F", "R", "")),
                   seq=rng.randrange(1 << 32)) / _payload(rng)
    if kind == "udp":
        return UDP(sport=_port(rng), dport=_port(rng)) / _payload(rng)
    icmp = ICMP(type=rng.choice((8, 0, 3, 11)), id=rng.randrange(65536), seq=rng.randrange(65536))
    return icmp / _payload(rng)


@functools.lru_cache(maxsize=8192)
def build(kind: str, seed: int) -> bytes:
    """One valid frame of `kind` (one of KINDS). Cached: scapy takes milliseconds per frame."""
    rng = random.Random(seed)
    eth = Ether(src="02:00:00:00:00:01", dst=rng.choice(("02:00:00:00:00:02", "ff:ff:ff:ff:ff:ff")))
    l4 = rng.choice(("tcp", "udp", "icmp"))
    ip = IP(src=_addr4(rng), dst=_addr4(rng), ttl=rng.choice((1, 64, 255)))
    if kind in ("tcp", "udp", "icmp"):
        pkt = eth / ip / _l4(rng, kind)
    elif kind in ("tcp6", "udp6"):
        pkt = eth / IPv6(src=_addr6(rng), dst=_addr6(rng)) / _l4(rng, kind[:3])
    elif kind == "icmp6":
        pkt = eth / IPv6(src=_addr6(rng), dst=_addr6(rng)) / ICMPv6EchoRequest(id=rng.randrange(65536))
    elif kind == "arp":
        pkt = eth / ARP(op=rng.choice((1, 2)), psrc=_addr4(rng), pdst=_addr4(rng))
    elif kind == "vlan":
        pkt = eth / Dot1Q(vlan=rng.randrange(4096)) / ip / _l4(rng, l4)
    elif kind == "qinq":
        pkt = eth / Dot1AD(vlan=rng.randrange(4096)) / Dot1Q(vlan=rng.randrange(4096)) / ip / _l4(rng, l4)
    elif kind == "ipopts":
        opts = [IPOption_RR(routers=["1.2.3.4"])]
        pkt = eth / IP(src=_addr4(rng), dst=_addr4(rng), options=opts) / _l4(rng, l4)
    elif kind == "frag":
        pkt = eth / IP(src=_addr4(rng), dst=_addr4(rng), flags=rng.choice(("MF", 0)),
                       frag=rng.choice((0, 1, 185))) / _l4(rng, l4)
    elif kind == "ipip":
        pkt = eth / IP(src=_addr4(rng), dst=_addr4(rng), proto=4) / ip / _l4(rng, l4)
    else:
        head = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02",
                           type=rng.choice((0x88CC, 0x1234, 0x0600, 0x05FF))))
        return head + rng.randbytes(rng.randrange(64))
    return bytes(pkt)


def damage(frame: bytes, flips: Sequence[tuple[int, int]] = (), cut: int | None = None) -> bytes:
    """`frame` with byte `off % len` set to `value` for each (off, value) in `flips`, then cut to `cut`."""
    b = bytearray(frame)
    for off, value in flips:
        if b:
            b[off % len(b)] = value & 0xFF
    return bytes(b if cut is None else b[:cut])
