"""The TC helpers' edge cases against the kernel, through programs/tc_probe.o.

tc_probe calls the helper named by cb[0] with arguments cb[1..4]; BPF_PROG_TEST_RUN takes cb in
ctx_in and reports mark, priority and cb back, so for every case the kernel and the simulator are
compared on: the helper's return value, what the context reads afterwards (protocol, len, VLAN tag,
pkt_type, copied into cb), the packet bytes (checksums included) and the bytes the helper wrote
(`probe_buf`). Cases cover offsets past the end, bad flags, headroom and tailroom growth, checksum
flags, and each helper's refusals.
"""

from __future__ import annotations

import struct
from pathlib import Path

import kernel_fixtures
import pytest

import xdpsim
from xdpsim.engines.interp import Interpreter
from xdpsim.helpers.skb_csum import csum_fold, csum_replace2, csum_replace4
from xdpsim.hooks.tc import TcAction, run_tc

kernel = kernel_fixtures.kernel
PROBE = Path(__file__).resolve().parent.parent / "programs" / "tc_probe.o"


def frames() -> dict[str, bytes]:
    from scapy.all import ICMP, IP, TCP, UDP, Dot1Q, Ether, IPv6

    udp = bytearray(bytes(Ether(dst="02:00:00:00:00:01") / IP(src="10.0.0.1", dst="10.0.0.2")
                          / UDP(sport=1, dport=2) / (b"x" * 20)))
    udp0 = bytearray(udp)
    udp0[40:42] = b"\0\0"
    out = {
        "tcp": bytes(Ether(dst="02:00:00:00:00:01") / IP(src="10.0.0.1", dst="10.0.0.2", tos=1)
                     / TCP(sport=1234, dport=80) / b"hello"),
        "udp": bytes(udp), "udp0": bytes(udp0),
        "v6": bytes(Ether() / IPv6(tc=2) / UDP() / b"abc"),
        "qinq": bytes(Ether() / Dot1Q(vlan=5) / Dot1Q(vlan=7) / IP() / ICMP()),
        "q": bytes(Ether() / Dot1Q(vlan=3) / IP() / TCP()),
    }
    out["short_q"] = out["qinq"][:16]
    for tos in range(4):
        out[f"ecn4_{tos}"] = bytes(Ether() / IP(tos=tos) / UDP())
        out[f"ecn6_{tos}"] = bytes(Ether() / IPv6(tc=tos) / UDP())
    return out


SRC = int.from_bytes(bytes([10, 0, 0, 1]), "little")
NEW = int.from_bytes(bytes([192, 0, 2, 1]), "little")

CASES: dict[str, list[tuple[str, list[int]]]] = {
    "load_bytes": [("tcp", [1, off, 0, 0, 0]) for off in (0, 10, 43, 44, 59, 0x7FFFFFFF, 0x80000000)],
    "load_bytes_relative": [("tcp", [2, off, hdr, 0, 0])
                            for off, hdr in [(0, 0), (0, 1), (29, 1), (30, 1), (0, 2), (0x10000, 0)]],
    "store_bytes": [("tcp", [3, off, fl, 0, 0])
                    for off, fl in [(0, 0), (55, 0), (56, 0), (70, 0), (10, 1), (10, 2), (10, 4),
                                    (0x80000000, 0)]],
    "l3_csum_replace": [("tcp", [4, *a]) for a in [
        (24, SRC, NEW, 4), (24, 0, 5, 0), (24, 1, 5, 0), (24, 0x0A, 0x0B, 2), (25, SRC, NEW, 4),
        (24, SRC, NEW, 3), (24, SRC, NEW, 0x10), (58, SRC, NEW, 4), (200, SRC, NEW, 4), (0x10000, 0, 0, 0)]],
    "l4_csum_replace": [("tcp", [5, *a]) for a in [
        (50, SRC, NEW, 0x14), (50, 0x04D2, 0x0500, 2), (50, 0, 7, 0x10), (50, SRC, NEW, 0x100),
        (51, 0, 1, 0), (50, SRC, NEW, 0x94), (58, 0, 1, 0)]]
    + [(f, [5, 40, SRC, NEW, fl]) for f in ("udp", "udp0") for fl in (0x14, 0x34, 0x74)],
    "pull_data": [("tcp", [6, n, 0, 0, 0]) for n in (0, 10, 59, 60)],
    "change_tail": [("tcp", [7, n, f, 0, 0])
                    for n, f in [(100, 0), (30, 0), (14, 0), (13, 0), (60, 1), (16064, 0), (16065, 0)]],
    "change_head": [("tcp", [8, n, f, 0, 0]) for n, f in [(0, 0), (4, 0), (14, 0), (100, 1), (16005, 0),
                                                           (16006, 0)]],
    "adjust_room": [("tcp", [9, d & 0xFFFFFFFF, m, fl, fh]) for d, m, fl, fh in [
        (20, 1, 2, 0), (20, 0, 2, 0), (-20, 1, 0, 0), (8, 0, 0, 0), (-8, 0, 0, 0), (4096, 1, 0, 0),
        (4095, 1, 0, 0), (20, 2, 0, 0), (20, 1, 6, 0), (20, 1, 0x80, 0), (-20, 1, 0x80, 0),
        (14, 1, 0x42, 0x0E000000), (20, 1, 0x20, 0), (20, 1, 0x12, 0), (20, 1, 0x1A, 0), (-40, 1, 0, 0),
        (-41, 1, 0, 0), (-25, 1, 0, 0), (-26, 1, 0, 0)]]
    + [("v6", [9, d & 0xFFFFFFFF, m, fl, 0])
       for d, m, fl in [(40, 1, 4), (-8, 0, 0), (8, 0, 0), (-20, 1, 0x100)]]
    + [("qinq", [9, 20, 1, 0, 0])],
    "change_proto": [(f, [10, p, fl, 0, 0]) for f in ("tcp", "v6") for p in (0xDD86, 0x0008, 0x0608)
                     for fl in (0, 1)],
    "change_type": [("tcp", [11, t, 0, 0, 0]) for t in (0, 1, 3, 4, 7)],
    "vlan_push": [("tcp", [12, p, tci, 0, 0]) for p, tci in [(0x0081, 5), (0xA888, 7), (0x0008, 9)]]
    + [("tcp", [23, p, 5, 9, 0]) for p in (0x0081, 0xA888)] + [("q", [23, 0x0081, 5, 9, 0])],
    "vlan_pop": [(f, [13, 0, 0, 0, 0]) for f in ("qinq", "tcp", "q", "short_q")],
    "csum_level": [("tcp", [14, lv, 0, 0, 0]) for lv in range(5)],
    "csum_update": [("tcp", [15, 1234, 0, 0, 0])],
    "ecn_set_ce": [(f"ecn{v}_{t}", [16, 0, 0, 0, 0]) for v in (4, 6) for t in range(4)],
    "redirect": [("tcp", [17, i, f, 0, 0]) for i, f in [(1, 0), (5, 1), (5, 2), (3, 8)]],
    "redirect_peer_neigh": [("tcp", [op, 1, f, 0, 0]) for op in (21, 22) for f in (0, 1)],
    "route_realm": [("tcp", [18, 0, 0, 0, 0])],
    "tunnel_key": [("tcp", [op, sz, fl, 0x0A000001, 42]) for op in (19, 24)
                   for sz, fl in [(44, 0), (44, 1), (28, 0), (24, 0), (8, 0), (45, 0), (44, 0x40),
                                  (44, 0x20)]],
}


def run_both(sim, ker, frame: bytes, cb: list[int], engine=None) -> tuple[tuple, tuple]:
    a = run_tc(sim.runtime, engine or Interpreter(), sim.programs["tc_probe"].id, frame, cb=cb)
    assert a.error is None, a.error
    b = ker.run_skb("tc_probe", frame, cb=cb)
    ks = b.skb
    mine = (a.retval & 0xFFFF_FFFF, a.data.hex(), a.skb.mark, a.skb.priority,
            list(struct.unpack("<5I", bytes(a.skb.cb))), bytes(sim.maps["probe_buf"][0]).hex())
    theirs = (b.retval & 0xFFFF_FFFF, b.data_out.hex(), ks["mark"], ks["priority"], ks["cb"],
              bytes(ker.maps["probe_buf"][0]).hex())
    return mine, theirs


@pytest.mark.parametrize("engine", ["interp", "jit"])
@pytest.mark.parametrize("helper", sorted(CASES))
def test_helper_edge_cases_agree_with_kernel(kernel: str, helper: str, engine: str) -> None:
    from xdpsim.engines.jit import JitEngine
    from xdpsim.engines.kernel import KernelCollection

    sim = xdpsim.load(PROBE)
    pkts = frames()
    eng = Interpreter() if engine == "interp" else JitEngine()
    with KernelCollection(sim.spec) as ker:
        for name, cb in CASES[helper]:
            mine, theirs = run_both(sim, ker, pkts[name], cb, eng)
            assert mine == theirs, (helper, name, cb)


def test_checksum_arithmetic_matches_full_recomputation() -> None:
    """Incremental updates give what a full recomputation gives (scapy), on the NAT program's output."""
    from scapy.all import IP, TCP, UDP, Ether

    obj = xdpsim.load(PROBE.parent / "tc_nat.o")
    for pkt in (Ether() / IP(src="10.1.2.3", dst="10.9.9.9") / TCP(sport=4000, dport=80) / b"data",
                Ether() / IP(src="10.1.2.3", dst="10.9.9.9", options=b"\x01" * 4)
                / UDP(sport=53, dport=9) / b"q"):
        out = Ether(obj.programs["tc_nat"].run(pkt).data)
        again = out.copy()
        del again[IP].chksum
        l4 = TCP if TCP in again else UDP
        del again[l4].chksum
        again = Ether(bytes(again))
        assert out[IP].src == "192.0.2.1"
        assert (out[IP].chksum, out[l4].chksum) == (again[IP].chksum, again[l4].chksum)
    assert csum_fold(0) == 0xFFFF and csum_fold(0xFFFF_FFFF) == 0
    assert csum_replace2(0x1234, 0x0001, 0x0001) == 0x1234
    assert csum_replace4(0xABCD, 0x01020304, 0x01020304) == 0xABCD


def test_tunnel_key_is_carried_with_the_packet() -> None:
    """set_tunnel_key then get_tunnel_key in a later run on the same skb metadata gives the key back
    (the kernel's test run has no tunnel metadata to compare: get fails with -EINVAL there too)."""
    sim = xdpsim.load(PROBE)
    pid = sim.programs["tc_probe"].id
    pkt = frames()["tcp"]
    r = run_tc(sim.runtime, Interpreter(), pid, pkt, cb=[24, 44, 0, 0x0A000001, 42])
    assert r.skb.mark == 0 and r.skb.tunnel is not None and r.skb.tunnel.remote == bytes([10, 0, 0, 1])
    carried = r.skb
    carried.cb = bytearray(struct.pack("<5I", 19, 44, 0, 0, 0))
    r2 = run_tc(sim.runtime, Interpreter(), pid, pkt, skb=carried)
    assert r2.skb.mark == 0
    key = bytes(sim.maps["probe_buf"][0])
    assert struct.unpack_from("<II", key, 0) == (42, 0x0A000001) and key[20:22] == bytes([7, 9])
    carried.cb = bytearray(struct.pack("<5I", 19, 44, 1, 0, 0))  # asks for IPv6: -EPROTO
    r3 = run_tc(sim.runtime, Interpreter(), pid, pkt, skb=carried)
    assert r3.skb.mark == (-71) & 0xFFFF_FFFF


def test_clone_redirect_records_the_copy_and_agrees_with_kernel(kernel: str) -> None:
    """The original goes on, a copy goes to the target; a device that does not exist is -EINVAL. The
    kernel really transmits, so it runs in a private namespace (ifindex 2 there)."""
    from scapy.all import IP, TCP, Ether

    path = PROBE.parent / "tc_redirect.o"
    sim = xdpsim.load(path)
    sim.runtime.ifindexes = {1, 2}
    pkt = bytes(Ether() / IP() / TCP())
    with xdpsim.load(path, engine="kernel") as ker:
        for ifindex, flags in [(2, 0), (2, 1), (77, 0), (2, 2)]:
            sim.maps["redirect_cfg"][0] = struct.pack("<II", ifindex, flags)
            ker.maps["redirect_cfg"][0] = struct.pack("<II", ifindex, flags)
            a = sim.programs["tc_clone"].run(pkt, ifindex=2)
            b = ker.programs["tc_clone"].run(pkt, ifindex=2)
            assert (a.action, a.data) == (b.action, b.data) == (TcAction.TC_ACT_OK, pkt)
        sim_ret = {k: v for k, v in sim.maps["clone_ret"].items()}
        assert sim_ret == {k: v for k, v in ker.maps["clone_ret"].items()}
    assert sorted(struct.unpack("<i", k)[0] for k in sim_ret) == [-22, 0]
    from xdpsim.engines.interp import Interpreter as Interp

    sim.maps["redirect_cfg"][0] = struct.pack("<II", 2, 1)
    r = run_tc(sim.runtime, Interp(), sim.programs["tc_clone"].id, pkt)
    assert [(c.ifindex, c.ingress, c.data) for c in r.clones] == [(2, True, pkt)]


def test_redirect_targets_and_xdp_redirect_unchanged() -> None:
    """TC redirect records (kind, ifindex); the same helper id in an XDP program keeps XDP's meaning."""
    sim = xdpsim.load(PROBE)
    pid = sim.programs["tc_probe"].id
    pkt = frames()["tcp"]
    r = run_tc(sim.runtime, Interpreter(), pid, pkt, cb=[17, 5, 1, 0, 0])
    assert r.action == TcAction.TC_ACT_REDIRECT and (r.redirect.kind, r.redirect.index) == ("dev-ingress", 5)
    r = run_tc(sim.runtime, Interpreter(), pid, pkt, cb=[21, 4, 0, 0, 0])
    assert (r.redirect.kind, r.redirect.index) == ("peer", 4)
    xdp = xdpsim.load(PROBE.parent / "redirect.o")
    res = xdp.programs["redirect_ifindex"].run(pkt)
    assert str(res.action) == "XDP_REDIRECT"


@pytest.mark.parametrize("helper", sorted(CASES))
def test_checksum_complete_bookkeeping_agrees_with_kernel(kernel: str, helper: str) -> None:
    """With BPF_F_TEST_SKB_CHECKSUM_COMPLETE the skb starts CHECKSUM_COMPLETE and the kernel checks,
    after the run, that skb->csum still matches the packet (EBADMSG otherwise): the same cases then
    tell whether each helper keeps skb->csum as the kernel does (BPF_F_RECOMPUTE_CSUM, pushes and
    pulls, trims that drop to CHECKSUM_NONE...); csum_update/csum_level return values are compared."""
    from xdpsim.engines.kernel import KernelCollection
    from xdpsim.errors import KernelError
    from xdpsim.kernel.bpf import BPF_F_TEST_SKB_CHECKSUM_COMPLETE

    sim = xdpsim.load(PROBE)
    pkts = frames()
    with KernelCollection(sim.spec) as ker:
        for name, cb in CASES[helper]:
            a = run_tc(sim.runtime, Interpreter(), sim.programs["tc_probe"].id, pkts[name], cb=cb,
                       checksum_complete=True)
            try:
                b = ker.run_skb("tc_probe", pkts[name], cb=cb, flags=BPF_F_TEST_SKB_CHECKSUM_COMPLETE)
            except KernelError as e:
                assert "EBADMSG" in str(e), e
                assert a.csum_ok is False, (helper, name, cb)
                continue
            assert a.csum_ok is True, (helper, name, cb)
            assert (a.retval & 0xFFFF_FFFF, a.skb.mark, a.skb.priority) == \
                (b.retval & 0xFFFF_FFFF, b.skb["mark"], b.skb["priority"]), (helper, name, cb)
