"""programs/edge_fw.c, the compile-time workload (edge_fw ~1165 instructions, edge_fw_v4 ~609): it loads
and runs the same on the interpreter, JIT tier 1 and JIT tier 2, and the kernel where available
(every packet kind its C code handles, then its maps configured)."""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

import xdpsim
from xdpsim.difftest import PacketIn, diff_program
from xdpsim.engines.interp import Interpreter
from xdpsim.engines.jit import JitEngine
from xdpsim.hooks.xdp import run_xdp
from xdpsim.kernel.bpf import kernel_available
from xdpsim.loader import load_object

OBJ = Path(__file__).resolve().parent.parent / "programs" / "edge_fw.o"
REASONS = ["pass", "not_ip", "malformed", "bad_csum", "blocked", "tcp_flags", "tcp_opts", "port", "fragment",
           "echo", "arp"]  # enum reason in edge_fw.c
R = {n: i for i, n in enumerate(REASONS)}
E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
SYN_OPTS = [("MSS", 1400), ("NOP", None), ("WScale", 7), ("SAckOK", b""), ("Timestamp", (1, 2))]


def _bad_csum() -> bytes:
    b = bytearray(bytes(E / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(dport=53) / b"x"))
    b[24] ^= 0xFF  # the IPv4 header checksum
    return bytes(b)


def _bad_opt_len() -> bytes:
    b = bytearray(bytes(E / IP() / TCP(flags="S", options=[("MSS", 1400)])))
    b[14 + 20 + 21] = 1  # the MSS option's length byte: 1 (< 2)
    return bytes(b)


# (packet, the reason edge_fw counts, its XDP action)
CASES = [
    (E / IP(src="10.0.0.1") / TCP(flags="S", options=SYN_OPTS), "pass", 2),
    (E / Dot1Q(vlan=5) / IP() / UDP(dport=53) / b"abc", "pass", 2),
    (E / Dot1AD(vlan=7) / Dot1Q(vlan=5) / IP() / TCP(flags="A"), "pass", 2),
    (E / IP() / ICMP(type=8), "echo", 2),
    (E / IP() / TCP(flags=""), "tcp_flags", 1),
    (E / IP() / TCP(flags="SF"), "tcp_flags", 1),
    (E / IP() / TCP(flags="FPU"), "tcp_flags", 1),
    (_bad_opt_len(), "tcp_opts", 1),
    (_bad_csum(), "bad_csum", 1),
    (E / IP(frag=10) / UDP(), "fragment", 2),
    (E / IPv6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / TCP(flags="S", options=SYN_OPTS), "pass", 2),
    (E / IPv6() / IPv6ExtHdrRouting() / UDP(dport=4789) / b"vx", "pass", 2),
    (E / IPv6() / IPv6ExtHdrFragment(offset=3) / UDP(), "fragment", 2),
    (E / IPv6() / ICMPv6EchoRequest(), "echo", 2),
    (E / ARP(), "arp", 2),
    (Ether(type=0x88CC) / (b"lldp" * 10), "not_ip", 1),
    (bytes(E / IP() / TCP())[:40], "malformed", 1),
    (bytes(E / IPv6() / UDP())[:60], "malformed", 1),
]


def _reasons(obj: xdpsim.Object) -> dict[str, int]:
    out = {}
    for name, i in R.items():
        n = sum(int.from_bytes(v[:8], "little") for v in obj.maps["reasons"][i])
        if n:
            out[name] = n
    return out


@pytest.mark.parametrize("engine", ["interp", "jit-tier1", "jit-tier2"])
def test_each_kind_gets_its_reason(engine: str) -> None:
    eng = Interpreter() if engine == "interp" else JitEngine(tier=int(engine[-1]))
    obj = xdpsim.load(OBJ, engine="interp")
    pid = obj.programs["edge_fw"].id
    for pkt, why, action in CASES:
        before = _reasons(obj)
        r = run_xdp(obj.runtime, eng, pid, bytes(pkt))
        assert r.error is None and int(r.action) == action, (why, r.error, r.action)
        after = _reasons(obj)
        assert after.get(why, 0) == before.get(why, 0) + 1, (why, before, after)


def test_three_engines_agree_with_the_kernel() -> None:
    ok, why = kernel_available()
    engines = ("interp", "jit", "kernel") if ok else ("interp", "jit")
    pkts = [PacketIn(i, bytes(p), 1000 * i) for i, (p, _, _) in enumerate(CASES * 3)]
    spec = load_object(OBJ)
    for prog in ("edge_fw", "edge_fw_v4"):
        report = diff_program(spec, prog, pkts, engines=engines)
        assert report.ok and report.compared == len(pkts), report.disagreements[:3]
    if not ok:
        pytest.skip(f"interp and JIT agree; no kernel column: {why}")


@pytest.mark.parametrize("prog", ["edge_fw", "edge_fw_v4"])
def test_configured_maps_same_on_every_tier(prog: str) -> None:
    """Blocked sources, denied ports, the minimum MSS: the same verdicts and map contents."""
    results = []
    for eng in (Interpreter(), JitEngine(tier=1), JitEngine(tier=2)):
        obj = xdpsim.load(OBJ, engine="interp")
        obj.maps["blocked_v4"][bytes([10, 9, 9, 9])] = 1
        obj.maps["port_deny"][23] = 1  # TCP
        obj.maps["port_deny"][53] = 2  # UDP
        obj.maps["config"][0] = (1000).to_bytes(4, "little") + bytes(4)
        pid = obj.programs[prog].id
        pkts = [
            E / IP(src="10.9.9.9") / TCP(flags="S"),
            E / IP() / TCP(dport=23, flags="S"),
            E / IP() / UDP(dport=23),
            E / IP() / UDP(dport=53),
            E / IP() / TCP(dport=53, flags="A"),
            E / IP() / TCP(flags="S", options=[("MSS", 536)]),
            E / IP() / TCP(flags="S", options=[("MSS", 1460)]),
            E / IP(src="10.0.0.7") / TCP(sport=5, flags="S", options=[("MSS", 1460)]),
            E / IP(src="10.0.0.7") / TCP(sport=5, flags="A"),
        ]
        actions = [int(run_xdp(obj.runtime, eng, pid, bytes(p)).action) for p in pkts]
        results.append((actions, _reasons(obj), sorted(obj.maps["flows"].items())))
    assert results[0][0] == [1, 1, 2, 1, 2, 1, 2, 2, 2]
    assert results[0] == results[1] == results[2]
