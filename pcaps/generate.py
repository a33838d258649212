"""Generate the sample captures in pcaps/ (python pcaps/generate.py [OUTDIR]).

Deterministic: a fixed seed, explicit addresses everywhere scapy would otherwise ask the host, fixed
timestamps; running it twice gives the same bytes. README.md says what each file holds.
"""

from __future__ import annotations

import random
import struct
import sys
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, CookedLinux, Dot1Q, Ether
from scapy.packet import Raw

from xdpsim.io import linktype as lt
from xdpsim.io.pcap import PcapWriter
from xdpsim.io.pcapng import PcapngWriter
from xdpsim.io.workload import ipv4_checksum

SEED = 1
T0 = 1_700_000_000 * 1_000_000_000
MAC_C, MAC_S = "02:00:00:00:00:01", "02:00:00:00:00:02"


def _payload(rng: random.Random, lo: int, hi: int) -> Raw:
    return Raw(bytes(rng.randrange(256) for _ in range(rng.randint(lo, hi))))


def _client(rng: random.Random) -> str:
    return f"10.0.{rng.randint(0, 3)}.{rng.randint(1, 254)}"


def _server(rng: random.Random) -> str:
    return f"192.168.1.{rng.randint(1, 254)}"


def malformed(rng: random.Random) -> list[bytes]:
    """Frames a parser must survive: runts, cut headers, impossible IPv4 fields."""
    tcp = bytes(
        Ether(src=MAC_C, dst=MAC_S) / IP(src=_client(rng), dst=_server(rng)) / TCP(sport=40000, dport=80)
    )
    return [
        tcp[:6],  # truncated Ethernet (<14 bytes)
        tcp[:13],
        tcp[:14],  # Ethernet header only
        tcp[:24],  # IPv4 header cut after 10 bytes
        tcp[:34],  # IPv4 header, no TCP
        tcp[:44],  # TCP header cut after 10 bytes
        tcp[:14] + b"\x44" + tcp[15:],  # IHL 4 (< 5)
        tcp[:14] + b"\x40" + tcp[15:],  # IHL 0
        ipv4_checksum(tcp[:16] + struct.pack(">H", 1500) + tcp[18:]),  # total length beyond the frame
        ipv4_checksum(tcp[:16] + struct.pack(">H", 12) + tcp[18:]),  # total length below the header
        tcp[:46] + b"\x10" + tcp[47:],  # TCP data offset 1 (< 5)
    ]


def mixed_packets(rng: random.Random) -> list[bytes]:
    """A few hundred frames of every kind the example programs parse."""
    eth_c = Ether(src=MAC_C, dst=MAC_S)
    eth_s = Ether(src=MAC_S, dst=MAC_C)
    out: list[bytes] = []
    for _ in range(300):
        kind = rng.randrange(16)
        c, s = _client(rng), _server(rng)
        sport = rng.randint(1024, 65535)
        if kind == 0:
            out.append(
                bytes(
                    eth_c / IP(src=c, dst=s) / TCP(sport=sport, dport=80, flags="S", seq=rng.getrandbits(32))
                )
            )
        elif kind == 1:
            out.append(
                bytes(
                    eth_c
                    / IP(src=c, dst=s)
                    / TCP(sport=sport, dport=80, flags="PA", seq=1, ack=1)
                    / Raw(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
                )
            )
        elif kind == 2:
            out.append(
                bytes(
                    eth_c / IP(src=c, dst=s) / TCP(sport=sport, dport=23, flags="PA") / _payload(rng, 1, 40)
                )
            )
        elif kind == 3:
            out.append(bytes(eth_s / IP(src=s, dst=c) / TCP(sport=80, dport=sport, flags="SA", ack=1)))
        elif kind == 4:
            out.append(bytes(eth_c / IP(src=c, dst=s) / UDP(sport=sport, dport=19) / _payload(rng, 0, 8)))
        elif kind == 5:
            out.append(bytes(eth_s / IP(src=s, dst=c) / UDP(sport=19, dport=sport) / _payload(rng, 72, 512)))
        elif kind == 6:
            qid = rng.getrandbits(16)
            out.append(
                bytes(
                    eth_c
                    / IP(src=c, dst=s)
                    / UDP(sport=sport, dport=53)
                    / DNS(id=qid, rd=1, qd=DNSQR(qname="example.com"))
                )
            )
            out.append(
                bytes(
                    eth_s
                    / IP(src=s, dst=c)
                    / UDP(sport=53, dport=sport)
                    / DNS(
                        id=qid,
                        qr=1,
                        qd=DNSQR(qname="example.com"),
                        an=DNSRR(rrname="example.com", rdata="93.184.216.34"),
                    )
                )
            )
        elif kind == 7:
            ident, seq = rng.getrandbits(16), rng.getrandbits(8)
            out.append(
                bytes(eth_c / IP(src=c, dst=s) / ICMP(type=8, id=ident, seq=seq) / _payload(rng, 0, 56))
            )
            out.append(
                bytes(eth_s / IP(src=s, dst=c) / ICMP(type=0, id=ident, seq=seq) / _payload(rng, 0, 56))
            )
        elif kind == 8:
            c6, s6 = f"2001:db8::{rng.randint(1, 0xFFFF):x}", f"2001:db8:1::{rng.randint(1, 0xFFFF):x}"
            out.append(
                bytes(eth_c / IPv6(src=c6, dst=s6) / TCP(sport=sport, dport=rng.choice([80, 443, 23])))
            )
            out.append(
                bytes(eth_c / IPv6(src=c6, dst=s6) / UDP(sport=sport, dport=53) / _payload(rng, 0, 40))
            )
        elif kind == 9:
            c6, s6 = f"2001:db8::{rng.randint(1, 0xFFFF):x}", f"2001:db8:1::{rng.randint(1, 0xFFFF):x}"
            out.append(bytes(eth_c / IPv6(src=c6, dst=s6) / ICMPv6EchoRequest(id=1, seq=rng.getrandbits(8))))
            out.append(bytes(eth_s / IPv6(src=s6, dst=c6) / ICMPv6EchoReply(id=1, seq=rng.getrandbits(8))))
        elif kind == 10:
            out.append(
                bytes(
                    Ether(src=MAC_C, dst="ff:ff:ff:ff:ff:ff")
                    / ARP(op=1, hwsrc=MAC_C, psrc=c, hwdst="00:00:00:00:00:00", pdst=s)
                )
            )
            out.append(bytes(eth_s / ARP(op=2, hwsrc=MAC_S, psrc=s, hwdst=MAC_C, pdst=c)))
        elif kind == 11:
            out.append(
                bytes(
                    eth_c
                    / Dot1Q(vlan=rng.choice([10, 20, 100]))
                    / IP(src=c, dst=s)
                    / UDP(sport=sport, dport=53)
                    / _payload(rng, 0, 30)
                )
            )
        elif kind == 12:
            out.append(
                bytes(
                    eth_c
                    / IP(src=c, dst=s, options=[IPOption_RR(routers=["0.0.0.0"] * 3)])
                    / TCP(sport=sport, dport=80)
                )
            )
        elif kind == 13:
            frags = (
                IP(src=c, dst=s, id=rng.getrandbits(16))
                / UDP(sport=sport, dport=19)
                / _payload(rng, 200, 400)
            ).fragment(96)
            out.extend(bytes(eth_c / f) for f in frags)
        elif kind == 14:
            out.append(rng.choice(malformed(rng)))
        else:
            out.append(
                bytes(
                    eth_c
                    / IP(src=c, dst=s)
                    / UDP(sport=sport, dport=rng.randint(1024, 65535))
                    / _payload(rng, 0, 100)
                )
            )
    out.extend(malformed(rng))  # every malformed kind at least once
    return out


def _times(rng: random.Random, n: int) -> list[int]:
    ts, out = T0, []
    for _ in range(n):
        ts += rng.randint(1_000, 2_000_000)
        out.append(ts)
    return out


def write_samples(d: Path) -> None:
    rng = random.Random(SEED)
    d.mkdir(parents=True, exist_ok=True)
    frames = mixed_packets(rng)
    with PcapWriter(d / "mixed.pcap", nanosecond=False) as w:
        for f, t in zip(frames, _times(rng, len(frames)), strict=True):
            w.write(f, t - t % 1000)

    with PcapWriter(d / "icmp.pcap", nanosecond=False) as w:
        for i, t in enumerate(_times(rng, 20)):
            w.write(
                bytes(
                    Ether(src=MAC_C, dst=MAC_S)
                    / IP(src="10.0.0.1", dst="10.0.0.2")
                    / ICMP(type=8, id=0x1234, seq=i)
                    / Raw(bytes(range(56)))
                ),
                t - t % 1000,
            )

    with PcapngWriter(d / "mixed.pcapng") as w:
        w.add_interface(lt.ETHERNET, name="eth0")
        w.add_interface(lt.ETHERNET, name="eth1")
        sub = frames[:120]
        for f, t in zip(sub, _times(rng, len(sub)), strict=True):
            w.write(f, t, interface=rng.randrange(2))

    ip_only = [f[14:] for f in frames if f[12:14] in (b"\x08\x00", b"\x86\xdd") and len(f) > 14][:80]
    with PcapWriter(d / "raw.pcap", linktype=lt.RAW) as w:
        for p, t in zip(ip_only, _times(rng, len(ip_only)), strict=True):
            w.write(p, t)

    with PcapWriter(d / "sll.pcap", linktype=lt.LINUX_SLL) as w:
        for i, (f, t) in enumerate(zip(frames[:80], _times(rng, 80), strict=True)):
            if len(f) < 14:
                continue
            sll = CookedLinux(
                pkttype=i % 5 if i % 5 != 3 else 0,
                lladdrtype=1,
                lladdrlen=6,
                src=bytes.fromhex(f[6:12].hex()) + b"\0\0",
                proto=struct.unpack(">H", f[12:14])[0],
            )
            w.write(bytes(sll) + f[14:], t)

    write_damaged(d / "damaged", frames[:10])


def write_damaged(d: Path, frames: list[bytes]) -> None:
    d.mkdir(parents=True, exist_ok=True)

    def pcap(records: list[bytes], snaplen: int = 65535) -> bytes:
        out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1)
        for i, r in enumerate(records):
            out += struct.pack("<IIII", 1_700_000_000, i, len(r), len(r)) + r
        return out

    good = pcap(frames)
    (d / "bad_magic.pcap").write_bytes(b"\x00\x11\x22\x33" + good[4:])
    (d / "truncated_last_record.pcap").write_bytes(good[:-7])
    (d / "truncated_header.pcap").write_bytes(pcap(frames[:5]) + b"\x00" * 9)
    (d / "record_over_snaplen.pcap").write_bytes(pcap(frames, snaplen=40))
    # Record 6 claims 5000 bytes: more than remain in the file.
    rec = pcap(frames[:6]) + struct.pack("<IIII", 1_700_000_000, 6, 5000, 5000) + frames[6]
    (d / "record_beyond_file.pcap").write_bytes(rec)
    # Record 4 claims 0x7fffffff bytes: beyond any snap length, the framing is lost.
    (d / "record_too_long.pcap").write_bytes(
        pcap(frames[:4]) + struct.pack("<IIII", 1_700_000_000, 4, 0x7FFFFFFF, 60) + frames[4]
    )
    # pcapng: the third packet block's trailing length differs from its leading one.
    from io import BytesIO

    buf = BytesIO()
    w = PcapngWriter(buf)
    w.add_interface(lt.ETHERNET)
    offsets = []
    for i, f in enumerate(frames[:6]):
        offsets.append(buf.tell())
        w.write(f, T0 + i)
    data = bytearray(buf.getvalue())
    start = offsets[2]
    length = struct.unpack_from("<I", data, start + 4)[0]
    struct.pack_into("<I", data, start + length - 4, length + 4)
    (d / "bad_block_length.pcapng").write_bytes(bytes(data))
    (d / "truncated_block.pcapng").write_bytes(bytes(buf.getvalue())[:-10])


if __name__ == "__main__":
    write_samples(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
