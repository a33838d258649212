"""xdpsim.load on the bundled programs; the interpreter against the kernel on the same packets."""

from __future__ import annotations

from pathlib import Path

import kernel_fixtures
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

import xdpsim
from xdpsim.errors import ProgramFault, XdpsimError
from xdpsim.hooks.xdp import XdpAction

kernel = kernel_fixtures.kernel
PROGRAMS = Path(__file__).resolve().parents[1] / "programs"
PARSER = PROGRAMS / "parser.o"
needs_parser = pytest.mark.skipif(not PARSER.exists(), reason="programs/parser.o not built")

MAC = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
PACKETS = {
    "tcp80": Ether(**MAC) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=80) / b"hello",
    "tcp23": Ether(**MAC) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(dport=23),
    "udp53": Ether(**MAC) / IP(src="10.0.0.1", dst="10.0.0.3") / UDP(dport=53) / (b"q" * 30),
    "udp19": Ether(**MAC) / IP() / UDP(dport=19),
    "icmp": Ether(**MAC) / IP() / ICMP(),
    "tcp6": Ether(**MAC) / IPv6(src="fe80::1", dst="fe80::2") / TCP(dport=443),
    "vlan-udp": Ether(**MAC) / Dot1Q(vlan=5) / IP() / UDP(dport=4789),
    "arp": Ether(**MAC) / ARP(),
    "truncated-ip": bytes(Ether(**MAC) / IP() / TCP())[:20],
    "truncated-tcp": bytes(Ether(**MAC) / IP() / TCP())[:40],
}
EXPECTED = {
    "tcp80": (XdpAction.XDP_PASS, "parse_tcp"), "tcp23": (XdpAction.XDP_DROP, "parse_tcp"),
    "udp53": (XdpAction.XDP_PASS, "parse_udp"), "udp19": (XdpAction.XDP_DROP, "parse_udp"),
    "icmp": (XdpAction.XDP_PASS, "packet_parser"), "tcp6": (XdpAction.XDP_PASS, "parse_tcp"),
    "vlan-udp": (XdpAction.XDP_PASS, "parse_udp"), "arp": (XdpAction.XDP_PASS, "packet_parser"),
    "truncated-ip": (XdpAction.XDP_DROP, "packet_parser"), "truncated-tcp": (XdpAction.XDP_DROP, "parse_tcp"),
}


@needs_parser
def test_load_parser_and_run_packets() -> None:
    obj = xdpsim.load(PARSER)
    assert set(obj.programs) == {"packet_parser", "parse_tcp", "parse_udp"}
    assert set(obj.maps) >= {"proto_count", "ipproto_jmp_table", "port_stats"}
    parser = obj.programs["packet_parser"]
    for name, pkt in PACKETS.items():
        res = parser.run(pkt).raise_for_error()
        assert (res.action, res.program) == EXPECTED[name], name
        assert res.data == bytes(pkt)
    assert str(parser.run(PACKETS["tcp80"]).action) == "XDP_PASS"
    tcp = int.from_bytes(obj.maps["proto_count"][6][0], "little")
    assert tcp == 5  # tcp80 (twice), tcp23, tcp6, truncated-tcp
    assert obj.maps["ipproto_jmp_table"][6] == obj.programs["parse_tcp"].id


@needs_parser
def test_run_options_and_errors() -> None:
    obj = xdpsim.load(PARSER)
    res = obj.programs["packet_parser"].run(bytes(PACKETS["udp53"]), ifindex=3, queue=0, now_ns=5)
    assert res.ok and res.tail_calls == 1 and res.helper_counts["tail_call"] == 1
    with pytest.raises(XdpsimError, match="unknown engine"):
        obj.programs["packet_parser"].run(b"", engine="nope")
    with pytest.raises(TypeError):
        obj.programs["packet_parser"].run(12345)


def test_fault_is_an_outcome_with_the_c_line() -> None:
    obj = xdpsim.load(PROGRAMS / "bad_bounds.o")
    res = obj.programs["bad_bounds"].run(bytes(14))
    assert res.action == XdpAction.XDP_ABORTED and isinstance(res.error, ProgramFault)
    msg = str(res.error)
    assert "program bad_bounds" in msg and "out-of-bounds read of 1 bytes" in msg
    assert "bad_bounds.c:" in msg and "*next == 0x45" in msg
    with pytest.raises(ProgramFault):
        res.raise_for_error()
    assert obj.programs["bad_bounds"].run(bytes(14) + b"\x45").action == XdpAction.XDP_PASS


def test_jit_engine_when_present() -> None:
    pytest.importorskip("xdpsim.engines.jit")
    obj = xdpsim.load(PARSER)
    for name, pkt in PACKETS.items():
        a = obj.programs["packet_parser"].run(pkt)
        b = obj.programs["packet_parser"].run(pkt, engine="jit")
        assert (a.action, a.data, a.program) == (b.action, b.data, b.program), name


# ---------------------------------------------------------------------------- the kernel agrees


def _port_stats(m) -> dict[bytes, bytes]:
    return {bytes(k): bytes(v) for k, v in m.items()}


@needs_parser
def test_parser_agrees_with_kernel(kernel: str) -> None:
    sim = xdpsim.load(PARSER)
    with xdpsim.load(PARSER, engine="kernel") as ker:
        for name, pkt in PACKETS.items():
            a = sim.programs["packet_parser"].run(pkt)
            b = ker.programs["packet_parser"].run(pkt)
            assert a.error is None, name
            assert (a.action, a.data) == (b.action, b.data), name
        assert _port_stats(sim.maps["port_stats"]) == _port_stats(ker.maps["port_stats"])
        for proto in (6, 17, 1, 58):
            ours = sum(int.from_bytes(v, "little") for v in sim.maps["proto_count"][proto])
            theirs = sum(int.from_bytes(v, "little") for v in ker.maps["proto_count"][proto])
            assert ours == theirs, proto


def _tcp_frames() -> list[bytes]:
    base = Ether(**MAC) / IP(src="192.168.1.1", dst="10.1.2.3", ttl=9) / TCP(sport=5, dport=80)
    return [bytes(base), bytes(base / (b"x" * 101)), bytes(Ether(**MAC) / IP(proto=4) / IP() / UDP())]


@pytest.mark.parametrize("prog", ["swap_tx", "encap_ipip", "decap_ipip", "trim_tail", "add_meta"])
def test_rewrite_programs_agree_with_kernel(kernel: str, prog: str) -> None:
    path = PROGRAMS / "rewrite.o"
    sim = xdpsim.load(path)
    with xdpsim.load(path, engine="kernel") as ker:
        for frame in _tcp_frames():
            a = sim.programs[prog].run(frame).raise_for_error()
            b = ker.programs[prog].run(frame)
            assert (a.action, a.data, a.meta) == (b.action, b.data, b.meta)


def test_calls_program_agrees_with_kernel(kernel: str) -> None:
    path = PROGRAMS / "calls.o"
    sim = xdpsim.load(path)
    with xdpsim.load(path, engine="kernel") as ker:
        for frame in [bytes(60), bytes(range(100)), bytes(20)]:
            a = sim.programs["calls_main"].run(frame).raise_for_error()
            b = ker.programs["calls_main"].run(frame)
            assert (a.action, a.data) == (b.action, b.data)
        for name in sim.maps:
            if name.startswith(".") and "rodata" not in name:
                assert sim.maps[name][0] == ker.maps[name][0], name


def test_firewall_agrees_with_kernel(kernel: str) -> None:
    path = PROGRAMS / "firewall.o"
    sim = xdpsim.load(path)
    frames = [bytes(p) for p in PACKETS.values()]
    with xdpsim.load(path, engine="kernel") as ker:
        for frame in frames:
            a = sim.programs["firewall"].run(frame).raise_for_error()
            b = ker.programs["firewall"].run(frame)
            assert (a.action, a.data) == (b.action, b.data)


@needs_parser
def test_tracer_sees_the_tail_call_target() -> None:
    obj = xdpsim.load(PARSER)
    seen: list[tuple[int, int]] = []
    res = obj.programs["packet_parser"].run(PACKETS["udp53"], tracer=lambda p, pc, regs: seen.append((p, pc)))
    ids = {p for p, _ in seen}
    assert ids == {obj.programs["packet_parser"].id, obj.programs["parse_udp"].id}
    assert len(seen) == res.insns and seen[0] == (obj.programs["packet_parser"].id, 0)


# ---------------------------------------------------------------------------- real traffic

CORPUS = PROGRAMS.parent.parent / "shared" / "pcaps" / "tcpdump"


def _corpus_frames(limit: int = 300, per_file: int = 3) -> list[bytes]:
    """Up to `per_file` Ethernet frames from each of tcpdump's captures (deterministic order)."""
    from xdpsim.errors import CaptureError
    from xdpsim.io import open_capture

    frames: list[bytes] = []
    for path in sorted(CORPUS.glob("*.pcap")):
        try:
            reader = open_capture(path, ethernet=True)
            for i, pkt in enumerate(reader):
                if i >= per_file:
                    break
                if 14 <= len(pkt.data) <= 3520:
                    frames.append(bytes(pkt.data))
        except CaptureError:
            continue
        if len(frames) >= limit:
            break
    return frames


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"tcpdump captures not found at {CORPUS}")
@pytest.mark.parametrize("path, prog", [("parser.o", "packet_parser"), ("firewall.o", "firewall"),
                                        ("rewrite.o", "swap_tx"), ("rewrite.o", "decap_ipip"),
                                        ("icmp_echo.o", "icmp_echo")])
def test_real_traffic_agrees_with_kernel(kernel: str, path: str, prog: str) -> None:
    frames = _corpus_frames()
    assert len(frames) >= 100
    sim = xdpsim.load(PROGRAMS / path)
    with xdpsim.load(PROGRAMS / path, engine="kernel") as ker:
        for i, frame in enumerate(frames):
            a = sim.programs[prog].run(frame)
            b = ker.programs[prog].run(frame)
            assert a.error is None, (i, a.error)
            assert (a.action, a.data) == (b.action, b.data), (i, frame.hex())
        compared = ("hash", "lru_hash", "percpu_array", "array")
        for name, m in sim.maps.items():
            if m.type_name in compared and not name.startswith(".rodata"):
                assert _entries(m) == _entries(ker.maps[name]), name


def _entries(m) -> dict[bytes, bytes | int]:
    """A map's entries; per-CPU counters summed over CPUs (the kernel has as many as the machine)."""
    out: dict[bytes, bytes | int] = {}
    for k, v in m.items():
        out[bytes(k)] = sum(int.from_bytes(x, "little") for x in v) if isinstance(v, list) else bytes(v)
    return out
