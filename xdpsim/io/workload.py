"""The reference workload of DESIGN.md ("Performance method"): a deterministic mixed capture.

`generate_reference(path, n=1_000_000, seed=0)` builds a few dozen template frames with scapy (IPv4 TCP
to ports 80, 443, 22 and 23 and their replies, UDP to 53, 19 and 123 and high ports, ICMP echo request
and reply, IPv4 with options, a first fragment, 802.1Q-tagged IPv4, IPv6 TCP/UDP/ICMPv6, ARP request and
reply, and malformed frames: runts, truncated IPv4 and TCP headers, IHL < 5, total length beyond the
frame), each in a few payload sizes, then picks templates and varies addresses, client ports and IPv4
ids with numpy (IPv4 header checksums recomputed; TCP/UDP checksums are left as the template's) and
writes everything with PcapWriter.write_batch. The same n and seed give the same bytes.

    python -m xdpsim.io.workload OUT.pcap [-n N] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from .native import interleave
from .pcap import PcapWriter

BASE_TS_NS = 1_700_000_000 * 1_000_000_000
CHUNK = 16384  # packets generated and written per step: bounded memory for any n


@dataclass(frozen=True)
class Template:
    frame: bytes
    weight: float
    ip4: int | None = None  # offset of an IPv4 header whose addresses and id may vary
    ip6: int | None = None  # offset of an IPv6 header whose addresses may vary
    l4: int | None = None  # offset of a TCP/UDP header
    client_port: str | None = None  # "sport" or "dport": the ephemeral side to vary


def templates() -> list[Template]:
    """The template frames (scapy builds them once; imported here so `import xdpsim.io` stays light)."""
    from scapy.layers.dns import DNS, DNSQR
    from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
    from scapy.layers.l2 import ARP, Dot1Q, Ether
    from scapy.packet import Raw

    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    back = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")
    c4 = {"src": "10.0.0.1", "dst": "192.168.1.10"}
    s4 = {"src": "192.168.1.10", "dst": "10.0.0.1"}
    c6 = {"src": "2001:db8::1", "dst": "2001:db8::10"}
    out: list[Template] = []

    def add(pkt, weight: float, ip4: int | None = None, ip6: int | None = None, l4: int | None = None,
            client: str | None = None, sizes: tuple[int, ...] = (0,)) -> None:
        for size in sizes:
            p = pkt / Raw(bytes(range(256)) * (size // 256) + bytes(range(size % 256))) if size else pkt
            out.append(Template(bytes(p), weight / len(sizes), ip4, ip6, l4, client))

    flags_sizes = (("S", (0,)), ("A", (0, 64, 512, 1400)), ("PA", (32, 200)))
    for dport, w in ((80, 20.0), (443, 10.0), (22, 3.0), (23, 2.0)):
        for flags, sizes in flags_sizes:
            tcp = TCP(sport=40000, dport=dport, flags=flags, seq=1000, ack=0 if flags == "S" else 1)
            add(eth / IP(**c4, id=1) / tcp, w / 3, 14, None, 34, "sport", sizes)
        add(back / IP(**s4, id=2) / TCP(sport=dport, dport=40000, flags="SA", seq=5000, ack=1001),
            w / 4, 14, None, 34, "dport")
    add(eth / IP(**c4) / UDP(sport=40001, dport=53) / DNS(id=7, rd=1, qd=DNSQR(qname="example.com")),
        6.0, 14, None, 34, "sport")
    add(back / IP(**s4) / UDP(sport=53, dport=40001) / DNS(id=7, qr=1, qd=DNSQR(qname="example.com")),
        4.0, 14, None, 34, "dport")
    add(eth / IP(**c4) / UDP(sport=40002, dport=19), 1.0, 14, None, 34, "sport")
    add(back / IP(**s4) / UDP(sport=19, dport=40002), 2.0, 14, None, 34, "dport", (72, 512))
    add(eth / IP(**c4) / UDP(sport=123, dport=123), 1.0, 14, None, 34, None, (48,))
    add(eth / IP(**c4) / UDP(sport=40003, dport=9999), 4.0, 14, None, 34, "sport", (16, 300, 1200))
    add(eth / IP(**c4) / ICMP(type=8, id=1, seq=1), 3.0, 14, None, None, None, (56,))
    add(back / IP(**s4) / ICMP(type=0, id=1, seq=1), 3.0, 14, None, None, None, (56,))
    add(eth / IP(**c4, options=[IPOption_RR(routers=["0.0.0.0"] * 2)]) / TCP(sport=40004, dport=80),
        0.5, 14, None, 46, "sport")
    add(eth / IP(**c4, flags="MF", frag=0, id=77) / UDP(sport=40005, dport=5000), 0.5, 14, None, 34, "sport",
        (400,))
    add(eth / IP(**c4, frag=50, id=77) / Raw(b"\x00" * 100), 0.5, 14)
    add(eth / Dot1Q(vlan=10) / IP(**c4) / UDP(sport=40006, dport=53), 2.0, 18, None, 38, "sport", (40,))
    add(eth / Dot1Q(vlan=20) / IP(**c4) / TCP(sport=40007, dport=80), 1.0, 18, None, 38, "sport")
    add(eth / IPv6(**c6) / TCP(sport=40008, dport=80, flags="S"), 4.0, None, 14, 54, "sport")
    add(eth / IPv6(**c6) / TCP(sport=40008, dport=443, flags="A"), 3.0, None, 14, 54, "sport", (0, 1000))
    add(eth / IPv6(**c6) / UDP(sport=40009, dport=53), 2.0, None, 14, 54, "sport", (40,))
    add(eth / IPv6(**c6) / ICMPv6EchoRequest(id=1, seq=1), 1.0, None, 14, None, None, (56,))
    add(Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, psrc="10.0.0.1", pdst="10.0.0.2"),
        1.5)
    add(back / ARP(op=2, psrc="10.0.0.2", pdst="10.0.0.1", hwsrc="02:00:00:00:00:02"), 1.0)
    # Malformed: the parsers' corner cases.
    tcp = bytes(eth / IP(**c4) / TCP(sport=40010, dport=80))
    add_raw = [
        tcp[:10],  # runt: shorter than an Ethernet header
        tcp[:14],  # Ethernet header only
        tcp[:24],  # IPv4 header cut at 10 bytes
        tcp[:40],  # TCP header cut at 6 bytes
        tcp[:14] + bytes([0x43]) + tcp[15:],  # IHL 3
        ipv4_checksum(tcp[:16] + (1400).to_bytes(2, "big") + tcp[18:]),  # total length beyond the frame
        tcp[:14] + bytes([0x65]) + tcp[15:],  # IP version 6 in an IPv4 ethertype
    ]
    for frame in add_raw:
        out.append(Template(frame, 0.3))
    return out


def ipv4_checksum(frame: bytes, at: int = 14) -> bytes:
    """`frame` with the checksum of its IPv4 header (at `at`, 20 bytes) recomputed."""
    hdr = bytearray(frame[at : at + 20])
    hdr[10:12] = b"\0\0"
    total = sum(int.from_bytes(hdr[i : i + 2], "big") for i in range(0, 20, 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return frame[: at + 10] + (~total & 0xFFFF).to_bytes(2, "big") + frame[at + 12 :]


def _ipv4_checksums(data: np.ndarray, hdr: np.ndarray, words: int) -> None:
    """Recompute the IPv4 header checksum of the headers starting at `hdr` (all `words` u16 long)."""
    data[hdr + 10] = 0
    data[hdr + 11] = 0
    idx = hdr[:, None] + np.arange(0, words * 2, 2)
    total = (data[idx].astype(np.uint32) << 8 | data[idx + 1]).sum(axis=1)
    while (total >> 16).any():
        total = (total & 0xFFFF) + (total >> 16)
    csum = ~total & 0xFFFF
    data[hdr + 10] = csum >> 8
    data[hdr + 11] = csum & 0xFF


def _chunk(tpls: list[Template], pool: np.ndarray, t_off: np.ndarray, t_len: np.ndarray,
           rng: np.random.Generator, n: int, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    choice = rng.choice(len(tpls), size=n, p=probs)
    lengths = t_len[choice]
    offsets = np.cumsum(lengths) - lengths
    data = interleave(np.empty((n, 0), dtype=np.uint8), pool, t_off[choice], lengths)  # gather the copies
    for t, tpl in enumerate(tpls):
        sel = offsets[choice == t]
        if not len(sel):
            continue
        m = len(sel)
        if tpl.ip4 is not None:
            hdr = sel + tpl.ip4
            data[hdr + 4] = rng.integers(0, 256, m, dtype=np.uint8)  # id
            data[hdr + 5] = rng.integers(0, 256, m, dtype=np.uint8)
            data[hdr + 14] = rng.integers(0, 256, m, dtype=np.uint8)  # client address: 10.0.x.y
            data[hdr + 15] = rng.integers(1, 255, m, dtype=np.uint8)
            data[hdr + 18] = rng.integers(0, 4, m, dtype=np.uint8)  # server: 192.168.0-3.y
            data[hdr + 19] = rng.integers(1, 255, m, dtype=np.uint8)
            if tpl.client_port == "dport":  # a reply: the client is the destination
                for a, b in ((12, 16), (13, 17), (14, 18), (15, 19)):
                    data[hdr + a], data[hdr + b] = data[hdr + b].copy(), data[hdr + a].copy()
            _ipv4_checksums(data, hdr, (pool[t_off[t] + tpl.ip4] & 0x0F) * 2)
        if tpl.ip6 is not None:
            hdr = sel + tpl.ip6
            data[hdr + 22] = rng.integers(0, 256, m, dtype=np.uint8)  # low bytes of the source
            data[hdr + 23] = rng.integers(1, 256, m, dtype=np.uint8)
            data[hdr + 39] = rng.integers(1, 256, m, dtype=np.uint8)
        if tpl.l4 is not None and tpl.client_port:
            at = sel + tpl.l4 + (0 if tpl.client_port == "sport" else 2)
            port = rng.integers(1024, 65536, m, dtype=np.int64)
            data[at] = port >> 8
            data[at + 1] = port & 0xFF
    return data, offsets, lengths


def generate_reference(path: str | os.PathLike[str], n: int = 1_000_000, seed: int = 0) -> int:
    """Write the reference workload (n packets) to `path`; returns n."""
    tpls = templates()
    frames = [np.frombuffer(t.frame, dtype=np.uint8) for t in tpls]
    t_len = np.array([len(f) for f in frames], dtype=np.int64)
    t_off = np.concatenate(([0], np.cumsum(t_len)[:-1])).astype(np.int64)
    pool = np.concatenate(frames)
    probs = np.array([t.weight for t in tpls])
    probs /= probs.sum()
    rng = np.random.default_rng(seed)
    ts = BASE_TS_NS
    with PcapWriter(path, nanosecond=True) as w:
        done = 0
        while done < n:
            m = min(CHUNK, n - done)
            data, offsets, lengths = _chunk(tpls, pool, t_off, t_len, rng, m, probs)
            stamps = ts + np.cumsum(rng.integers(200, 5000, m, dtype=np.int64))
            ts = int(stamps[-1])
            w.write_batch(data, offsets, lengths, stamps)
            done += m
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m xdpsim.io.workload", description=__doc__.split("\n")[0])
    ap.add_argument("out", help="output pcap file")
    ap.add_argument("-n", type=int, default=1_000_000, help="number of packets (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    generate_reference(args.out, args.n, args.seed)
    dt = time.perf_counter() - t0
    print(f"{args.out}: {args.n} packets, {os.path.getsize(args.out)} bytes in {dt:.2f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
