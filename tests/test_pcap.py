"""Capture files: pcap/pcapng readers and writers, link-type synthesis, damage, batches, samples."""

from __future__ import annotations

import struct
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.dns import DNS
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import PcapNgWriter, rdpcap, wrpcap

from xdpsim.errors import CaptureError
from xdpsim.io import (
    PcapngReader,
    PcapngWriter,
    PcapReader,
    PcapWriter,
    open_capture,
    read_batches,
)
from xdpsim.io import linktype as lt
from xdpsim.io.native import index_records, interleave
from xdpsim.io.workload import generate_reference

ROOT = Path(__file__).resolve().parent.parent
PCAPS = ROOT / "pcaps"
SYN_DST, SYN_SRC = bytes.fromhex("020000000002"), bytes.fromhex("020000000001")
T0 = 1_700_000_000_123_456_789

FRAMES = [bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.0.0.1", dst="10.0.0.2")
                / UDP(sport=1000 + i, dport=53) / (b"x" * i)) for i in range(12)]


def pcap_bytes(records: list[bytes], linktype: int = 1, endian: str = "<", nano: bool = False,
               snaplen: int = 65535, ts: list[tuple[int, int]] | None = None) -> bytes:
    out = struct.pack(endian + "IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)
    for i, r in enumerate(records):
        sec, frac = ts[i] if ts else (1_700_000_000 + i, i * 10)
        out += struct.pack(endian + "IIII", sec, frac, len(r), len(r)) + r
    return out


def read_all(path: Path, **kw) -> list:
    return list(open_capture(path, **kw))


# -- writers against scapy ------------------------------------------------------------------------

@pytest.mark.parametrize("nano", [True, False])
def test_writer_read_by_scapy(tmp_path: Path, nano: bool) -> None:
    p = tmp_path / "w.pcap"
    with PcapWriter(p, nanosecond=nano) as w:
        for i, f in enumerate(FRAMES):
            w.write(f, T0 + i * 1_000_001, orig_len=len(f) + (5 if i == 3 else 0))
    pkts = rdpcap(str(p))
    assert [bytes(x) for x in pkts] == FRAMES
    for i, x in enumerate(pkts):
        expect = T0 + i * 1_000_001
        if not nano:
            expect -= expect % 1000
        assert int(x.time * 10**9) // 1000 == expect // 1000  # scapy's float time: compare microseconds
        assert x.wirelen == len(FRAMES[i]) + (5 if i == 3 else 0)
    ours = list(PcapReader(p))
    assert [q.ts_ns for q in ours] == [T0 + i * 1_000_001 - (0 if nano else (T0 + i * 1_000_001) % 1000)
                                       for i in range(len(FRAMES))]
    assert ours[3].orig_len == len(FRAMES[3]) + 5


@pytest.mark.parametrize("nano", [True, False])
def test_scapy_pcap_read_by_us(tmp_path: Path, nano: bool) -> None:
    p = tmp_path / "s.pcap"
    pkts = [Ether(x) for x in FRAMES]
    for i, x in enumerate(pkts):
        x.time = Decimal(1_700_000_000 + i) + Decimal(i * 1000 + 7) / (10**9 if nano else 10**6)
    wrpcap(str(p), pkts, nano=nano)
    got = list(PcapReader(p))
    assert [g.data for g in got] == FRAMES
    assert [g.index for g in got] == list(range(len(FRAMES)))
    assert all(g.linktype == 1 and g.interface == 0 and g.orig_len == len(g.data) for g in got)
    assert got[2].ts_ns == (1_700_000_000 + 2) * 10**9 + (2007 if nano else 2_007_000)


def test_scapy_pcapng_read_by_us(tmp_path: Path) -> None:
    p = tmp_path / "s.pcapng"
    w = PcapNgWriter(str(p))
    for i, f in enumerate(FRAMES):
        x = Ether(f)
        x.time = 1_700_000_000 + i / 4
        w.write(x)
    w.close()
    got = list(PcapngReader(p))
    assert [g.data for g in got] == FRAMES
    assert [g.ts_ns for g in got] == [1_700_000_000 * 10**9 + i * 250_000_000 for i in range(len(FRAMES))]


def test_pcapng_writer_read_by_scapy_and_us(tmp_path: Path) -> None:
    p = tmp_path / "w.pcapng"
    with PcapngWriter(p) as w:
        assert w.add_interface(lt.ETHERNET, name="a") == 0
        assert w.add_interface(lt.ETHERNET, name="b") == 1
        for i, f in enumerate(FRAMES):
            w.write(f, T0 + i, interface=i % 2)
    assert [bytes(x) for x in rdpcap(str(p))] == FRAMES
    r = PcapngReader(p)
    got = list(r)
    assert [g.data for g in got] == FRAMES
    assert [g.interface for g in got] == [i % 2 for i in range(len(FRAMES))]
    assert [g.ts_ns for g in got] == [T0 + i for i in range(len(FRAMES))]
    assert [i.name for i in r.interfaces] == ["a", "b"]


def test_write_batch_matches_single_writes(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 200, 500).astype(np.int32)
    data = rng.integers(0, 256, int(lengths.sum()) + 100, dtype=np.uint8)
    offsets = rng.integers(0, 100, 500) + np.concatenate(([0], np.cumsum(lengths)[:-1]))
    offsets = np.minimum(offsets, len(data) - lengths)
    ts = T0 + np.cumsum(rng.integers(0, 10**9, 500))
    for nano in (True, False):
        a, b = tmp_path / f"a{nano}.pcap", tmp_path / f"b{nano}.pcap"
        with PcapWriter(a, nanosecond=nano) as w:
            w.write_batch(data, offsets, lengths, ts, orig_lens=lengths + 4)
        with PcapWriter(b, nanosecond=nano) as w:
            for o, n, t in zip(offsets, lengths, ts, strict=True):
                w.write(data[o : o + n].tobytes(), int(t), orig_len=int(n) + 4)
        assert a.read_bytes() == b.read_bytes()


def test_writer_refuses_bad_input(tmp_path: Path) -> None:
    with PcapWriter(tmp_path / "x.pcap") as w:
        with pytest.raises(ValueError, match="negative"):
            w.write(b"abc", -1)
        with pytest.raises(ValueError, match="outside"):
            w.write_batch(np.zeros(10, np.uint8), np.array([5]), np.array([6]), np.array([0]))
        w.write(b"y" * 300_000, 0)  # cut to the snap length, orig_len kept
    (p,) = list(PcapReader(tmp_path / "x.pcap"))
    assert len(p.data) == 262144 and p.orig_len == 300_000


# -- pcap reading ---------------------------------------------------------------------------------

@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [True, False])
def test_byte_orders_and_resolutions(tmp_path: Path, endian: str, nano: bool) -> None:
    p = tmp_path / "x.pcap"
    p.write_bytes(pcap_bytes(FRAMES, endian=endian, nano=nano, ts=[(5, 999_999)] * len(FRAMES)))
    got = list(PcapReader(p))
    assert [g.data for g in got] == FRAMES
    assert got[0].ts_ns == 5 * 10**9 + (999_999 if nano else 999_999_000)


def test_modified_pcap_format(tmp_path: Path) -> None:
    head = struct.pack("<IHHiIII", 0xA1B2CD34, 2, 4, 0, 0, 65535, 1)
    recs = b"".join(struct.pack("<IIII", 1, 2, len(f), len(f)) + b"\0" * 8 + f for f in FRAMES[:3])
    p = tmp_path / "m.pcap"
    p.write_bytes(head + recs)
    assert [g.data for g in PcapReader(p)] == FRAMES[:3]


def test_fcs_stripped_when_announced(tmp_path: Path) -> None:
    p = tmp_path / "fcs.pcap"
    data = pcap_bytes([FRAMES[0] + b"\xde\xad\xbe\xef"], linktype=1 | 0x04000000 | (2 << 28))
    p.write_bytes(data)
    (g,) = list(PcapReader(p))
    assert g.data == FRAMES[0] and g.orig_len == len(FRAMES[0])


IP4 = bytes(IP(src="1.2.3.4", dst="5.6.7.8") / UDP())
IP6 = bytes.fromhex("6000000000003b40") + bytes(32)


@pytest.mark.parametrize("linktype", [101, 12, 14])
def test_raw_ip_synthesis(tmp_path: Path, linktype: int) -> None:
    p = tmp_path / "raw.pcap"
    p.write_bytes(pcap_bytes([IP4, IP6, b"\x50abc", b""], linktype=linktype))
    r = PcapReader(p)
    got = list(r)
    assert [g.data for g in got] == [SYN_DST + SYN_SRC + b"\x08\x00" + IP4,
                                     SYN_DST + SYN_SRC + b"\x86\xdd" + IP6]
    assert [g.orig_len for g in got] == [len(IP4) + 14, len(IP6) + 14]
    assert all(g.linktype == linktype for g in got)
    assert [(w.kind, w.record) for w in r.warnings] == [("unconvertible", True)] * 2
    assert "IP version 5" in r.warnings[0].message
    assert r.warnings[0].offset == 24 + 2 * 16 + len(IP4) + len(IP6)
    assert r.records == 4 and r.packets == 2 and r.skipped == 2
    raw = list(PcapReader(p, ethernet=False))
    assert [g.data for g in raw] == [IP4, IP6, b"\x50abc", b""]


def test_dlt12_openbsd_loop(tmp_path: Path) -> None:
    p = tmp_path / "loop12.pcap"
    p.write_bytes(pcap_bytes([struct.pack(">I", 2) + IP4, struct.pack(">I", 24) + IP6, IP4], linktype=12))
    assert [g.data[12:] for g in PcapReader(p)] == [b"\x08\x00" + IP4, b"\x86\xdd" + IP6, b"\x08\x00" + IP4]


def test_warnings_kept_bounded_and_counted(tmp_path: Path) -> None:
    p = tmp_path / "many.pcap"
    p.write_bytes(pcap_bytes([FRAMES[5]] * 2500, snaplen=10))
    stream, batches = PcapReader(p), read_batches(p, 1000)
    assert sum(1 for _ in stream) == 2500 and sum(len(b) for b in batches) == 2500
    for r in (stream, batches):
        assert len(r.warnings) == 1000 and r.warnings.counts == {"snaplen": 2500}
        assert r.warnings.dropped == 1500
        assert [w.offset for w in r.warnings[:2]] == [24, 24 + 16 + len(FRAMES[5])]


def test_iterating_twice_continues(tmp_path: Path) -> None:
    p = tmp_path / "x.pcap"
    p.write_bytes(pcap_bytes(FRAMES))
    r = PcapReader(p)
    first = next(iter(r))
    rest = list(r)
    assert first.index == 0 and [x.index for x in rest] == list(range(1, len(FRAMES)))
    assert list(r) == []


def test_ipv4_ipv6_linktypes(tmp_path: Path) -> None:
    for linktype, etype in ((228, b"\x08\x00"), (229, b"\x86\xdd")):
        p = tmp_path / f"{linktype}.pcap"
        p.write_bytes(pcap_bytes([IP4, b""], linktype=linktype))
        assert [g.data for g in PcapReader(p)] == [SYN_DST + SYN_SRC + etype + IP4, SYN_DST + SYN_SRC + etype]


def test_null_and_loop(tmp_path: Path) -> None:
    recs = [struct.pack("<I", 2) + IP4, struct.pack(">I", 2) + IP4, struct.pack("<I", 30) + IP6,
            struct.pack("<I", 24) + IP6, struct.pack("<I", 28) + IP6, struct.pack("<I", 10) + IP6,
            struct.pack("<I", 7) + IP4, b"\0\0"]
    p = tmp_path / "null.pcap"
    p.write_bytes(pcap_bytes(recs, linktype=0))
    r = PcapReader(p)
    v4, v6 = SYN_DST + SYN_SRC + b"\x08\x00" + IP4, SYN_DST + SYN_SRC + b"\x86\xdd" + IP6
    assert [g.data for g in r] == [v4, v4, v6, v6, v6, v6]
    assert [w.kind for w in r.warnings] == ["unconvertible"] * 2
    p.write_bytes(pcap_bytes([struct.pack(">I", 2) + IP4, struct.pack(">I", 24) + IP6,
                              struct.pack("<I", 2) + IP4], linktype=108))
    r = PcapReader(p)
    assert [g.data for g in r] == [v4, v6]  # LOOP is big-endian only
    assert len(r.warnings) == 1 and "family 33554432" in r.warnings[0].message


def test_linux_sll_and_sll2(tmp_path: Path) -> None:
    mac = bytes.fromhex("aabbccddeeff")
    sll = struct.pack(">HHH", 0, 1, 6) + mac + b"\0\0" + b"\x08\x00" + IP4
    sll_short_addr = struct.pack(">HHH", 4, 772, 0) + bytes(8) + b"\x86\xdd" + IP6
    sll_llc = struct.pack(">HHH", 0, 1, 6) + mac + b"\0\0" + b"\x00\x04" + b"\x42\x42\x03" + bytes(35)
    sll_netlink = struct.pack(">HHH", 4, 824, 0) + bytes(8) + b"\x00\x00" + bytes(20)
    p = tmp_path / "sll.pcap"
    p.write_bytes(pcap_bytes([sll, sll_short_addr, sll_llc, sll_netlink, sll[:10]], linktype=113))
    r = PcapReader(p)
    got = [g.data for g in r]
    assert got == [SYN_DST + mac + b"\x08\x00" + IP4, SYN_DST + SYN_SRC + b"\x86\xdd" + IP6,
                   SYN_DST + mac + struct.pack(">H", 38) + b"\x42\x42\x03" + bytes(35)]
    assert [w.kind for w in r.warnings] == ["unconvertible"] * 2
    assert "netlink" in r.warnings[0].message and "shorter" in r.warnings[1].message
    sll2 = b"\x08\x00" + b"\0\0" + struct.pack(">IHBB", 3, 1, 0, 6) + mac + b"\0\0" + IP4
    p.write_bytes(pcap_bytes([sll2, sll2[:19]], linktype=276))
    r = PcapReader(p)
    assert [g.data for g in r] == [SYN_DST + mac + b"\x08\x00" + IP4]
    assert len(r.warnings) == 1


def test_unsupported_linktype_refused(tmp_path: Path) -> None:
    p = tmp_path / "radiotap.pcap"
    p.write_bytes(pcap_bytes([b"\0" * 30], linktype=127))
    with pytest.raises(CaptureError, match=r"unsupported link type IEEE802_11_RADIOTAP \(127\)") as e:
        PcapReader(p)
    assert e.value.path == str(p) and e.value.offset == 20
    assert [g.data for g in PcapReader(p, ethernet=False)] == [b"\0" * 30]


def test_header_damage_refused(tmp_path: Path) -> None:
    p = tmp_path / "x.pcap"
    for content, match in ((b"", "too short"), (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated pcap header"),
                           (b"GIF89a" + bytes(30), "not a pcap file"),
                           (struct.pack("<IHHiIII", 0xA1B2C3D4, 3, 0, 0, 0, 100, 1), "version 3.0")):
        p.write_bytes(content)
        with pytest.raises(CaptureError, match=match):
            open_capture(p)
    with pytest.raises(CaptureError, match="cannot open"):
        open_capture(tmp_path / "missing.pcap")


def test_orig_len_below_caplen_warns(tmp_path: Path) -> None:
    data = bytearray(pcap_bytes(FRAMES[:2]))
    struct.pack_into("<I", data, 24 + 12, 3)
    p = tmp_path / "x.pcap"
    p.write_bytes(bytes(data))
    r = PcapReader(p)
    got = list(r)
    assert got[0].orig_len == len(FRAMES[0]) and len(got) == 2
    assert [(w.kind, w.offset) for w in r.warnings] == [("orig_len", 24)]


# -- the committed samples ------------------------------------------------------------------------

def test_samples_regenerate_byte_for_byte(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(PCAPS / "generate.py"), str(tmp_path)], check=True, cwd=ROOT)
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert made and all((PCAPS / m).read_bytes() == (tmp_path / m).read_bytes() for m in made)
    readme = (PCAPS / "README.md").read_text()
    assert all(f"`{m}`" in readme for m in made)


def test_mixed_sample_contents() -> None:
    pkts = read_all(PCAPS / "mixed.pcap")
    assert 300 <= len(pkts) <= 1000
    d = [Ether(p.data) for p in pkts if len(p.data) >= 14]
    assert any(len(p.data) < 14 for p in pkts)
    layers = ("TCP", "UDP", "ICMP", "IPv6", "ARP", "Dot1Q", DNS, "ICMPv6EchoRequest")
    has = {name: any(x.haslayer(name) for x in d) for name in layers}
    assert all(has.values()), has
    ports = {x["TCP"].dport for x in d if x.haslayer("TCP")}
    ports |= {x["UDP"].dport for x in d if x.haslayer("UDP")}
    assert {23, 80, 19, 53} <= ports
    assert any(x.haslayer("IP") and x["IP"].flags.MF for x in d)
    assert any(x.haslayer("IP") and x["IP"].options for x in d)
    ng = open_capture(PCAPS / "mixed.pcapng")
    assert {p.interface for p in ng} == {0, 1} and len(ng.interfaces) == 2
    sll = read_all(PCAPS / "sll.pcap")
    assert [p.data[6:] for p in sll] == [p.data[6:] for p in pkts[:80] if len(p.data) >= 14][: len(sll)]
    raw = read_all(PCAPS / "raw.pcap")
    assert len(raw) == 80 and all(p.data[:12] == SYN_DST + SYN_SRC for p in raw)
    assert len(read_all(PCAPS / "icmp.pcap")) == 20


DAMAGED = {
    # name: (packets, [(warning kind, record?)], error substring or None)
    "truncated_last_record.pcap": (9, [("truncated", True)], None),
    "truncated_header.pcap": (5, [("truncated", True)], None),
    "record_over_snaplen.pcap": (10, [("snaplen", False)] * 10, None),
    "record_beyond_file.pcap": (6, [("truncated", True)], None),
    "record_too_long.pcap": (4, [], "more than the maximum 262144"),
    "bad_block_length.pcapng": (2, [], "trailing length"),
    "truncated_block.pcapng": (5, [("truncated", True)], None),
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damaged_samples(name: str) -> None:
    packets, warns, error = DAMAGED[name]
    path = PCAPS / "damaged" / name
    r = open_capture(path)
    got = []
    if error:
        with pytest.raises(CaptureError, match=error) as e:
            for p in r:
                got.append(p)
        assert e.value.path == str(path) and e.value.offset is not None and e.value.offset >= 24
        assert f"at offset {e.value.offset}" in str(e.value)
    else:
        got = list(r)
    assert len(got) == packets == r.packets
    assert [(w.kind, w.record) for w in r.warnings] == warns
    assert all(str(w).startswith(f"{path} at offset {w.offset}: ") for w in r.warnings)
    assert r.records == r.packets + r.skipped
    # the batch reader: same packets, warnings, error
    br = read_batches(path, 3)
    bgot = []
    if error:
        with pytest.raises(CaptureError, match=error):
            for b in br:
                bgot.extend(b.packets())
    else:
        bgot = [p for b in br for p in b.packets()]
    assert [p.data for p in bgot] == [p.data for p in got]
    assert br.warnings == r.warnings
    assert (br.records, br.packets, br.skipped) == (r.records, r.packets, r.skipped)


def test_bad_magic_sample() -> None:
    with pytest.raises(CaptureError, match="not a pcap file") as e:
        open_capture(PCAPS / "damaged" / "bad_magic.pcap")
    assert e.value.offset == 0


# -- pcapng details -------------------------------------------------------------------------------

def block(btype: int, body: bytes, endian: str = "<") -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(endian + "II", btype, n) + body + struct.pack(endian + "I", n)


def shb(endian: str = "<") -> bytes:
    return block(0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1), endian)


def idb(linktype: int = 1, snaplen: int = 0, opts: bytes = b"", endian: str = "<") -> bytes:
    return block(1, struct.pack(endian + "HHI", linktype, 0, snaplen) + opts, endian)


def opt(code: int, value: bytes, endian: str = "<") -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def epb(ifid: int, ts: int, data: bytes, endian: str = "<", orig: int | None = None) -> bytes:
    return block(6, struct.pack(endian + "IIIII", ifid, ts >> 32, ts & 0xFFFFFFFF, len(data),
                                len(data) if orig is None else orig) + data, endian)


def sections_image() -> bytes:
    f0, f1, f2, f3, f4 = FRAMES[:5]
    return (shb() + idb(opts=opt(2, b"eth0") + opt(0, b""))  # default resolution: microseconds
            + idb(opts=opt(9, b"\x89") + opt(14, struct.pack("<q", 100)))  # 2^-9 s, offset 100 s
            + epb(0, 5, f0) + block(0x0BAD, b"custom") + block(5, bytes(8)) + epb(1, 512 * 3, f1)
            + block(3, struct.pack("<I", len(f2)) + f2)  # SPB: interface 0, previous timestamp
            + shb(">") + idb(101, opts=opt(9, b"\x03", ">"), endian=">")  # big-endian section, milliseconds
            + epb(0, 7, IP4, ">")
            + block(2, struct.pack(">HHIIII", 0, 0, 0, 9, len(IP4), len(IP4)) + IP4, ">")  # obsolete PB
            + shb() + idb(1, opts=opt(9, b"\x0c")) + epb(0, 5000, f3) + epb(1, 0, f4))  # picoseconds


def test_pcapng_sections_resolutions_blocks(tmp_path: Path) -> None:
    f0, f1, f2, f3 = FRAMES[:4]
    p = tmp_path / "x.pcapng"
    p.write_bytes(sections_image())
    r = PcapngReader(p)
    got = list(r)
    eth4 = SYN_DST + SYN_SRC + b"\x08\x00" + IP4
    assert [g.data for g in got] == [f0, f1, f2, eth4, eth4, f3]
    assert [g.interface for g in got] == [0, 1, 0, 2, 2, 3]
    assert [g.linktype for g in got] == [1, 1, 1, 101, 101, 1]
    assert [g.ts_ns for g in got] == [5000, 100 * 10**9 + 3 * 10**9 // 1, 100 * 10**9 + 3 * 10**9,
                                      7_000_000, 9_000_000, 5]
    assert r.sections == 3 and r.other_blocks == 2 and len(r.interfaces) == 4
    assert r.interfaces[0].name == "eth0" and r.interfaces[1].tsoffset == 100
    assert [(w.kind, w.record) for w in r.warnings] == [("bad_record", True)]
    assert "interface 1" in r.warnings[0].message
    assert r.records == 7 and r.packets == 6


def test_pcapng_damage_kinds(tmp_path: Path) -> None:
    p = tmp_path / "x.pcapng"
    base = shb() + idb(snaplen=20)

    def run(data: bytes):
        p.write_bytes(data)
        r = PcapngReader(p)
        out, err = [], None
        try:
            out.extend(r)
        except CaptureError as e:
            err = e
        assert r.records == r.packets + r.skipped
        return out, r.warnings, err

    bad_caplen = block(6, struct.pack("<IIIII", 0, 0, 0, 500, 500) + FRAMES[0])
    out, warns, err = run(base + bad_caplen + epb(0, 0, FRAMES[1]))
    assert len(out) == 1 and err is None
    assert [(w.kind, w.message.split(";")[0]) for w in warns] == [
        ("bad_record", f"captured length 500 exceeds the {len(FRAMES[0]) + (-len(FRAMES[0]) % 4)} bytes "
         "of its block"),
        ("snaplen", f"record of {len(FRAMES[1])} bytes is longer than the snap length 20")]
    out, warns, err = run(base + struct.pack("<II", 6, 10) + bytes(40))
    assert err is not None and "invalid length 10" in str(err) and err.offset == len(base)
    out, warns, err = run(base + struct.pack("<II", 6, 1 << 30) + bytes(40))
    assert "more than the maximum" in str(err)
    out, warns, err = run(base + epb(0, 0, FRAMES[0]) + b"\x06\x00")
    assert len(out) == 1 and [w.kind for w in warns] == ["snaplen", "truncated"] and err is None
    out, warns, err = run(base + block(0x0A0D0D0A, struct.pack("<IHHq", 0x11223344, 1, 0, -1)))
    assert "byte-order magic" in str(err)
    out, warns, err = run(base + block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 2, 0, -1)))
    assert "version 2.0" in str(err)
    out, warns, err = run(shb() + idb(127) + epb(0, 0, b"x" * 20))
    assert "unsupported link type IEEE802_11_RADIOTAP (127)" in str(err)
    out, warns, err = run(shb() + block(1, b"\1\0") + epb(0, 0, FRAMES[0]))
    assert [w.kind for w in warns] == ["bad_record", "bad_record"] and not out
    out, warns, err = run(shb() + idb(opts=struct.pack("<HH", 2, 200) + b"abcd") + epb(0, 0, FRAMES[0]))
    assert [w.kind for w in warns] == ["option"] and len(out) == 1
    with pytest.raises(CaptureError, match="not a pcapng file"):
        p.write_bytes(bytes(40))
        PcapngReader(p)
    p.write_bytes(shb()[:8] + b"\x01\x02\x03\x04" + shb()[12:])
    with pytest.raises(CaptureError, match="byte-order magic 0x01020304") as e:
        open_capture(p)
    assert e.value.offset == 8


# -- batches --------------------------------------------------------------------------------------

def same_as_stream(path: Path, batch_size: int, native: bool = True) -> None:
    stream = list(open_capture(path))
    batches = list(read_batches(path, batch_size, native=native))
    assert all(len(b) <= batch_size for b in batches)
    flat = [p for b in batches for p in b.packets(stream[0].linktype if stream else 1)]
    assert flat == stream
    assert [b.index for b in batches] == list(range(0, len(stream), batch_size))


@pytest.mark.parametrize("name", ["mixed.pcap", "icmp.pcap", "mixed.pcapng", "raw.pcap", "sll.pcap"])
@pytest.mark.parametrize("batch_size", [1, 7, 4096])
def test_batches_match_stream(name: str, batch_size: int) -> None:
    same_as_stream(PCAPS / name, batch_size)


def test_batches_big_endian_and_python_walk(tmp_path: Path) -> None:
    p = tmp_path / "be.pcap"
    p.write_bytes(pcap_bytes(FRAMES, endian=">", nano=True))
    for native in (True, False):
        same_as_stream(p, 5, native)
    b = next(iter(read_batches(p, 100)))
    assert b.data.dtype == np.uint8 and b.offsets.dtype == np.int64 and b.lengths.dtype == np.int32
    assert b.ts_ns.dtype == np.int64 and b.interface.dtype == np.int32
    assert [b.packet(i) for i in range(len(b))] == FRAMES


def test_batches_edge_files(tmp_path: Path) -> None:
    p = tmp_path / "empty.pcap"
    p.write_bytes(pcap_bytes([]))
    assert list(read_batches(p)) == [] and list(PcapReader(p)) == []
    p.write_bytes(b"\x0a\x0d\x0d\x0a" + bytes(20))
    with pytest.raises(CaptureError, match="byte-order magic"):
        read_batches(p)
    p.write_bytes(bytes(100))
    with pytest.raises(CaptureError, match="not a pcap file") as e:
        read_batches(p)
    assert e.value.offset == 0
    p = tmp_path / "ng.pcapng"
    with PcapngWriter(p) as w:
        w.add_interface(lt.RAW)
        w.add_interface(lt.ETHERNET)
        w.write(IP4, 10, interface=0)
        w.write(FRAMES[0], 20, interface=1)
    slow, fast = list(read_batches(p))  # the raw-IP packet goes through the reader, the Ethernet one not
    assert (slow.index, fast.index) == (0, 1)
    assert slow.interface.tolist() + fast.interface.tolist() == [0, 1]
    assert slow.ts_ns.tolist() + fast.ts_ns.tolist() == [10, 20]
    assert slow.lengths.dtype == fast.lengths.dtype == np.int32
    assert slow.packet(0) == SYN_DST + SYN_SRC + b"\x08\x00" + IP4 and fast.packet(0) == FRAMES[0]


@pytest.mark.parametrize("native", [True, False])
def test_pcapng_batches_mix_walk_and_reader(tmp_path: Path, native: bool) -> None:
    p = tmp_path / "x.pcapng"
    many = b"".join(epb(i % 2, 1000 * i, FRAMES[i % 12]) for i in range(40))
    lying = epb(0, 7, FRAMES[3], orig=5)  # orig_len below caplen: a warning, via the reader
    huge_ts = epb(1, (1 << 64) - 1, FRAMES[4])  # 2^64-1 seconds (if_tsresol 0): clamped, via the reader
    p.write_bytes(sections_image() + shb() + idb(snaplen=50) + idb(opts=opt(9, b"\x00"))
                  + many + lying + block(5, bytes(12)) + many + huge_ts + epb(0, 1, FRAMES[0]))
    stream = open_capture(p)
    expect = list(stream)
    for size in (1, 3, 16, 1000):
        br = read_batches(p, size, native=native)
        batches = list(br)
        got = [q for b in batches for q in b.packets()]
        assert [(q.index, q.ts_ns, q.data, q.orig_len, q.interface) for q in got] == \
            [(q.index, q.ts_ns, q.data, q.orig_len, q.interface) for q in expect]
        assert [b.index for b in batches] == [sum(len(x) for x in batches[:i]) for i in range(len(batches))]
        assert all(len(b) <= size for b in batches)
        assert br.warnings == stream.warnings and len(br.warnings) > 3
        assert (br.records, br.packets, br.skipped) == (stream.records, stream.packets, stream.skipped)
    assert {w.kind for w in stream.warnings} == {"bad_record", "snaplen", "orig_len", "timestamp"}


def test_batches_convert_other_linktypes(tmp_path: Path) -> None:
    p = tmp_path / "raw.pcap"
    recs = [IP4, b"\x50abc", b"", IP6, IP4 * 3, b"\x10"]
    p.write_bytes(pcap_bytes(recs, linktype=101, snaplen=30))
    stream = PcapReader(p)
    expect = list(stream)
    assert len(expect) == 3
    for size in (1, 2, 4, 100):
        br = read_batches(p, size)
        got = [q for b in br for q in b.packets(101)]
        assert got == expect
        assert br.warnings == stream.warnings and [w.kind for w in br.warnings] == [
            "unconvertible", "unconvertible", "snaplen", "snaplen", "unconvertible"]
        assert (br.records, br.packets, br.skipped) == (6, 3, 3)


def test_native_code_compiled() -> None:
    from xdpsim.io import native

    assert native._native() is not None, "llvmlite failed to compile the capture loops"


def test_pcapng_index_native_equals_python() -> None:
    from xdpsim.io.native import index_pcapng

    image = sections_image()
    buf = np.frombuffer(image, dtype=np.uint8)
    for pos in range(0, len(image), 4):
        for snaps in ([0, 0], [0, -1], [60, 0], []):
            a = index_pcapng(buf, pos, 10, "<", np.array(snaps), use_native=True)
            b = index_pcapng(buf, pos, 10, "<", np.array(snaps), use_native=False)
            assert a[0].tolist() == b[0].tolist() and a[1] == b[1]


def test_indexer_native_equals_python() -> None:
    buf = np.frombuffer(pcap_bytes(FRAMES) + b"\x01\x02\x03", dtype=np.uint8)
    for count in (1, 5, 100):
        a = index_records(buf, 24, count, "<", use_native=True)
        b = index_records(buf, 24, count, "<", use_native=False)
        assert a[0].tolist() == b[0].tolist() and a[1] == b[1]
    starts, end = index_records(buf, 24, 100, "<")
    assert len(starts) == len(FRAMES) and end == len(buf) - 3


def test_interleave_native_equals_numpy() -> None:
    rng = np.random.default_rng(9)
    data = rng.integers(0, 256, 5000, dtype=np.uint8)
    lengths = rng.integers(0, 300, 40)
    offsets = rng.integers(0, 5000 - 300, 40)
    for hsize in (0, 16):
        heads = rng.integers(0, 256, (40, hsize), dtype=np.uint8)
        a = interleave(heads, data, offsets, lengths, use_native=True)
        b = interleave(heads, data, offsets, lengths, use_native=False)
        expect = b"".join(heads[i].tobytes() + data[o : o + n].tobytes()
                          for i, (o, n) in enumerate(zip(offsets, lengths, strict=True)))
        assert a.tobytes() == b.tobytes() == expect


def test_reference_workload(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    generate_reference(a, 20_000, seed=5)
    generate_reference(b, 20_000, seed=5)
    assert a.read_bytes() == b.read_bytes()
    pkts = list(PcapReader(a))
    assert len(pkts) == 20_000 and all(x.ts_ns < y.ts_ns for x, y in zip(pkts, pkts[1:], strict=False))
    ethertypes = {p.data[12:14] for p in pkts if len(p.data) >= 14}
    assert {b"\x08\x00", b"\x86\xdd", b"\x08\x06", b"\x81\x00"} <= ethertypes
    assert any(len(p.data) < 14 for p in pkts)
    protos = {p.data[23] for p in pkts if len(p.data) > 34 and p.data[12:14] == b"\x08\x00"}
    assert {1, 6, 17} <= protos
    srcs = {p.data[26:30] for p in pkts if len(p.data) > 34 and p.data[12:14] == b"\x08\x00"}
    assert len(srcs) > 1000  # addresses vary
    for p in pkts[:2000]:  # IPv4 header checksums of well-formed headers are valid
        if len(p.data) >= 34 and p.data[12:14] == b"\x08\x00" and p.data[14] == 0x45:
            words = struct.unpack(">10H", p.data[14:34])
            s = sum(words)
            while s >> 16:
                s = (s & 0xFFFF) + (s >> 16)
            assert s == 0xFFFF
    same_as_stream(a, 4096)


def test_workload_command(tmp_path: Path) -> None:
    out = tmp_path / "w.pcap"
    subprocess.run([sys.executable, "-m", "xdpsim.io.workload", str(out), "-n", "1000"], check=True, cwd=ROOT,
                   capture_output=True)
    assert len(list(PcapReader(out))) == 1000
