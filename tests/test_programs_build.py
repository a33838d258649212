"""programs/ rebuilds from its sources with the committed Makefile, what it builds loads, and the
programs do in the kernel what programs/README.md says."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from kernel_fixtures import kernel  # noqa: F401

from xdpsim.loader import load_object

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"
CLANG = shutil.which("clang-19")
MAKE = shutil.which("make")


@pytest.mark.skipif(CLANG is None or MAKE is None, reason="clang-19 or make not installed")
def test_rebuild_and_load(tmp_path: Path) -> None:
    res = subprocess.run([MAKE, "-s", "-C", str(PROGRAMS), f"OUT={tmp_path}"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    sources = sorted(p.stem for p in PROGRAMS.glob("*.c"))
    built = sorted(p.stem for p in tmp_path.glob("*.o"))
    assert built == sources
    for stem in built:
        fresh = load_object(tmp_path / f"{stem}.o")
        committed = load_object(PROGRAMS / f"{stem}.o")
        # the committed objects are up to date with their sources
        assert {n: p.insns for n, p in fresh.programs.items()} == {
            n: p.insns for n, p in committed.programs.items()
        }, f"programs/{stem}.o is stale: run make -C programs"
        assert [m.name for m in fresh.maps] == [m.name for m in committed.maps]


def test_every_source_has_a_readme_comment_and_an_object() -> None:
    readme = (PROGRAMS / "README.md").read_text()
    for c in PROGRAMS.glob("*.c"):
        text = c.read_text()
        assert text.startswith("/*\n * " + c.name + ":"), f"{c.name} lacks its header comment"
        assert (PROGRAMS / f"{c.stem}.o").exists(), f"{c.stem}.o not committed"
        assert f"`{c.name}`" in readme, f"{c.name} missing from programs/README.md"


# --- what the programs do, asked of the kernel ---------------------------------------------------------
# These pin the behaviour the README promises, so the other engines have a reference to agree with.


def _coll(stem: str):
    from xdpsim.engines.kernel import KernelCollection

    return KernelCollection(load_object(PROGRAMS / f"{stem}.o"))


def _ip(pkt) -> bytes:
    from scapy.layers.l2 import Ether

    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / pkt)


def test_rewrite_programs(kernel: str) -> None:  # noqa: F811
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    pkt = _ip(IP(src="192.0.2.1", dst="198.51.100.7", ttl=9) / UDP(sport=1, dport=2) / (b"x" * 30))
    with _coll("rewrite") as c:
        r = c.run_xdp("swap_tx", pkt)
        assert r.retval == 3  # XDP_TX
        out = Ether(r.data_out)
        assert (out.src, out.dst, out[IP].src, out[IP].dst, out[IP].ttl) == (
            "02:00:00:00:00:02",
            "02:00:00:00:00:01",
            "198.51.100.7",
            "192.0.2.1",
            8,
        )
        fixed = out[IP].copy()
        del fixed.chksum
        assert IP(bytes(fixed)).chksum == out[IP].chksum  # bpf_csum_diff kept the checksum right

        enc = c.run_xdp("encap_ipip", pkt)
        assert enc.retval == 3 and len(enc.data_out) == len(pkt) + 20
        outer = Ether(enc.data_out)[IP]
        assert (outer.proto, outer.src, outer.dst, outer.len) == (
            4,
            "10.0.0.1",
            "10.0.0.2",
            len(pkt) - 14 + 20,
        )
        check = outer.copy()
        del check.chksum
        assert IP(bytes(check)).chksum == outer.chksum
        dec = c.run_xdp("decap_ipip", enc.data_out)
        assert dec.retval == 2 and dec.data_out == pkt

        assert len(c.run_xdp("trim_tail", pkt + bytes(200)).data_out) == 128
        assert c.run_xdp("trim_tail", pkt[:40]).data_out == pkt[:40] + bytes(24)
        m = c.run_xdp("add_meta", pkt)
        assert m.retval == 2 and m.meta == struct.pack("<II", 0x4D455441, len(pkt))


def test_icmp_echo_replies(kernel: str) -> None:  # noqa: F811
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.l2 import Ether

    req = _ip(IP(src="192.0.2.1", dst="192.0.2.2") / ICMP(type=8, id=7, seq=1) / b"ping")
    with _coll("icmp_echo") as c:
        r = c.run_xdp("icmp_echo", req)
        assert r.retval == 3
        rep = Ether(r.data_out)
        assert (rep[IP].src, rep[IP].dst, rep[ICMP].type, rep[ICMP].id, rep[ICMP].seq) == (
            "192.0.2.2",
            "192.0.2.1",
            0,
            7,
            1,
        )
        for layer in (IP, ICMP):
            fresh = rep[layer].copy()
            del fresh.chksum
            assert layer(bytes(fresh)).chksum == rep[layer].chksum, layer.__name__
        assert c.run_xdp("icmp_echo", _ip(IP() / UDP())).retval == 2


def test_firewall(kernel: str) -> None:  # noqa: F811
    from scapy.layers.inet import ICMP, IP, TCP, UDP

    with _coll("firewall") as c:
        c.set_map_entry("blocklist", struct.pack("<I", 24) + bytes([203, 0, 113, 0]), 1)
        c.set_map_entry("allowed_ports", 443, 1)
        run = lambda p: c.run_xdp("firewall", _ip(p)).retval  # noqa: E731
        assert run(IP(src="203.0.113.9") / TCP(dport=443)) == 1  # blocked source
        assert run(IP(src="192.0.2.1") / TCP(dport=443)) == 2
        assert run(IP(src="192.0.2.1") / UDP(dport=53)) == 1  # port not allowed
        assert run(IP(src="192.0.2.1") / ICMP()) == 2
        passed, blocked, port = struct.unpack("<3Q", c.read_map("counters")[bytes(4)])
        assert (passed, blocked, port) == (2, 1, 1)


def test_chain_programs(kernel: str) -> None:  # noqa: F811
    from scapy.layers.inet import IP
    from scapy.layers.l2 import ARP

    with _coll("chain") as c:
        assert c.run_xdp("chain_count", bytes(20)).retval == 2
        assert c.run_xdp("chain_filter", bytes(20)).retval == 1
        assert c.run_xdp("chain_filter", bytes(60)).retval == 2
        assert c.run_xdp("chain_last", _ip(IP())).retval == 2
        assert c.run_xdp("chain_last", _ip(ARP())).retval == 1
        frames, short = struct.unpack("<2Q", c.read_map(".bss")[bytes(4)])
        assert (frames, short) == (1, 1)


def test_redirect_programs(kernel: str) -> None:  # noqa: F811
    with _coll("redirect") as c:
        assert c.run_xdp("redirect_map", bytes(64)).retval == 2  # empty devmap slot: the fallback action
        assert c.run_xdp("redirect_ifindex", bytes(64)).retval == 4  # XDP_REDIRECT
        assert struct.unpack("<Q", c.read_map(".bss")[bytes(4)])[0] == 1


def test_parser_tc(kernel: str) -> None:  # noqa: F811
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1Q, Ether

    with _coll("parser_tc") as c:
        run = lambda p: c.run_skb("packet_parser", _ip(p)).retval  # noqa: E731
        assert run(IP() / TCP(dport=23)) == 2  # TC_ACT_SHOT
        assert run(IP() / TCP(dport=22)) == 0  # TC_ACT_OK
        assert run(IPv6() / UDP(dport=19)) == 2
        vlan = bytes(Ether() / Dot1Q(vlan=5) / IP() / UDP(dport=19))
        assert c.run_skb("packet_parser", vlan).retval == 2
        assert (
            sum(int.from_bytes(v, "little") for v in c.read_map("proto_count")[(17).to_bytes(4, "little")])
            == 2
        )
