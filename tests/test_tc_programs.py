"""Every TC program in programs/ against the kernel (BPF_PROG_TEST_RUN, SCHED_CLS) on the sample captures.

Compared, per frame: the verdict (r0), the output bytes (checksums included) and what ctx_out reports
(mark, priority, cb, wire_len, tstamp, ifindexes); after the capture: every hash and array map.
Not comparable, because the oracle does not show them: tc_classid, tc_index, the VLAN offload tag,
the hash and the redirect target (ctx_out lacks them; tc_vlan and tc_probe copy what they read of
them into maps and cb, which are compared).
The kernel refuses frames under 14 bytes, IPv4 frames under 34, IPv6 frames under 54 and frames over
3712: those are left out of the comparison (the simulator runs them; test_tc_helpers covers short
frames).
"""

from __future__ import annotations

import struct
from pathlib import Path

import kernel_fixtures
import pytest

import xdpsim
from xdpsim.hooks.tc import TcAction, run_tc

kernel = kernel_fixtures.kernel
PROGRAMS = Path(__file__).resolve().parent.parent / "programs"
CORPUS = PROGRAMS.parent.parent / "shared" / "pcaps" / "tcpdump"
TC_PROGRAMS = [("parser_tc.o", "packet_parser"), ("tc_nat.o", "tc_nat"), ("tc_vlan.o", "tc_vlan"),
               ("tc_encap.o", "tc_encap"), ("tc_encap.o", "tc_decap"), ("tc_classify.o", "tc_classify"),
               ("tc_classify.o", "tc_police"), ("tc_classify.o", "tcx_guard"),
               ("tc_redirect.o", "tc_redirect"), ("tc_redirect.o", "tc_mark_egress")]
REPORTED = ("mark", "priority", "cb", "wire_len", "tstamp", "ifindex", "ingress_ifindex", "gso_segs",
            "gso_size", "hwtstamp")


def oracle_accepts(frame: bytes) -> bool:
    if not 14 <= len(frame) <= 3712:
        return False
    if frame[12:14] == b"\x86\xdd" and len(frame) < 54:
        return False
    return not (frame[12:14] == b"\x08\x00" and len(frame) < 34)


def corpus_frames(limit: int = 240, per_file: int = 2) -> list[bytes]:
    from xdpsim.errors import CaptureError
    from xdpsim.io import open_capture

    frames: list[bytes] = []
    for path in sorted(CORPUS.glob("*.pcap")):
        try:
            for i, pkt in enumerate(open_capture(path, ethernet=True)):
                if i >= per_file:
                    break
                if oracle_accepts(bytes(pkt.data)):
                    frames.append(bytes(pkt.data))
        except CaptureError:
            continue
        if len(frames) >= limit:
            break
    return frames


def reported(st) -> dict:
    out = {k: getattr(st, k) for k in REPORTED}
    out["cb"] = list(struct.unpack("<5I", bytes(st.cb)))
    return out


def entries(m) -> dict[bytes, bytes]:
    return {bytes(k): (b"".join(v) if isinstance(v, list) else bytes(v)) for k, v in m.items()}


def compare_on(frames: list[bytes], path: str, prog: str, engine: str) -> int:
    """Run `frames` through the simulator (`engine`) and the kernel; assert agreement; return how many
    frames the program changed (so that tests can check they exercised something)."""
    sim = xdpsim.load(PROGRAMS / path)
    changed = 0
    with xdpsim.load(PROGRAMS / path, engine="kernel") as ker:
        for i, frame in enumerate(frames):
            a = sim.programs[prog].run(frame, engine=engine)
            b = ker.programs[prog].run(frame)
            assert a.error is None, (i, a.error)
            assert (a.retval & 0xFFFF_FFFF) == (b.retval & 0xFFFF_FFFF), (i, frame.hex())
            assert a.data == b.data, (i, frame.hex(), a.data.hex(), b.data.hex())
            assert reported(a.skb) == reported(b.skb), (i, frame.hex())
            changed += a.data != frame
        for name, m in sim.maps.items():
            if m.type_name in ("hash", "array", "percpu_array") and not name.startswith("."):
                if m.type_name == "percpu_array":
                    got = {k: sum(int.from_bytes(x, "little") for x in v) for k, v in m.items()}
                    want = {k: sum(int.from_bytes(x, "little") for x in v) for k, v in ker.maps[name].items()}
                    assert got == want, name
                else:
                    assert entries(m) == entries(ker.maps[name]), name
    return changed


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"sample captures not found at {CORPUS}")
@pytest.mark.parametrize("engine", ["interp", "jit"])
@pytest.mark.parametrize("path, prog", TC_PROGRAMS, ids=[p for _, p in TC_PROGRAMS])
def test_tc_program_agrees_with_kernel_on_captures(kernel: str, path: str, prog: str, engine: str) -> None:
    frames = corpus_frames()
    assert len(frames) >= 150
    changed = compare_on(frames, path, prog, engine)
    if prog in ("tc_nat", "tc_encap"):
        assert changed > 100  # the rewrites really happened (and matched byte for byte)


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"sample captures not found at {CORPUS}")
def test_decap_of_encapsulated_captures_agrees_with_kernel(kernel: str) -> None:
    """tc_decap on tc_encap's output (IPv4-in-IPv4, IPv6-in-IPv6) and on IPv6-in-IPv4 made by hand."""
    sim = xdpsim.load(PROGRAMS / "tc_encap.o")
    frames = corpus_frames(limit=120)
    encapped = [sim.programs["tc_encap"].run(f).data for f in frames]
    v6_in_v4 = [f[:12] + b"\x08\x00" + bytes.fromhex("4500") + (len(f) + 6).to_bytes(2, "big")
                + bytes.fromhex("00000000402900000a0000010a000002") + f[14:]
                for f in frames if f[12:14] == b"\x86\xdd"]
    todo = [f for f in encapped + v6_in_v4 if oracle_accepts(f)]
    changed = compare_on(todo, "tc_encap.o", "tc_decap", "interp")
    assert changed > 60
    back = [sim.programs["tc_decap"].run(e).data for e in encapped]
    assert back == frames  # decap undoes encap exactly


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"sample captures not found at {CORPUS}")
def test_classifier_then_police_with_metadata_carried(kernel: str) -> None:
    """The second filter acts on the mark the first set: the kernel is run filter by filter with the
    first run's ctx_out (mark, priority, cb) as the second run's ctx_in."""
    frames = corpus_frames(limit=150)
    big_icmp = bytes.fromhex("ffffffffffff020000000001080045") + bytes.fromhex(
        "00007c0001000040010000c00002010a000001") + bytes(108)
    frames.append(big_icmp)
    sim = xdpsim.load(PROGRAMS / "tc_classify.o")
    shot = 0
    with xdpsim.load(PROGRAMS / "tc_classify.o", engine="kernel") as ker:
        for frame in frames:
            a1 = sim.programs["tc_classify"].run(frame)
            b1 = ker.programs["tc_classify"].run(frame)
            assert a1.action == b1.action == TcAction.TC_ACT_UNSPEC
            carried = {"mark": a1.skb.mark, "priority": a1.skb.priority,
                       "cb": list(struct.unpack("<5I", bytes(a1.skb.cb)))}
            assert reported(a1.skb) == reported(b1.skb)
            a2 = sim.programs["tc_police"].run(frame, **carried)
            b2 = ker.programs["tc_police"].run(frame, **carried)
            assert a2.action == b2.action
            shot += a2.action == TcAction.TC_ACT_SHOT
        assert entries(sim.maps["police_count"]) == entries(ker.maps["police_count"])
    assert shot >= 1


def test_seed_tc_parser_tail_calls_on_interp_and_jit() -> None:
    from scapy.all import IP, TCP, UDP, Ether

    obj = xdpsim.load(PROGRAMS / "parser_tc.o")
    for engine in ("interp", "jit"):
        r = obj.programs["packet_parser"].run(Ether() / IP() / TCP(dport=23), engine=engine)
        assert (r.action, r.program, r.tail_calls) == (TcAction.TC_ACT_SHOT, "parse_tcp", 1)
        r = obj.programs["packet_parser"].run(Ether() / IP() / UDP(dport=53), engine=engine)
        assert (r.action, r.program) == (TcAction.TC_ACT_OK, "parse_udp")


def test_run_tc_reports_faults_and_short_frames() -> None:
    from xdpsim.engines.interp import Interpreter

    obj = xdpsim.load(PROGRAMS / "tc_nat.o")
    r = run_tc(obj.runtime, Interpreter(), obj.programs["tc_nat"].id, b"\x00" * 10)
    assert r.error is not None and r.error.kind == "frame" and r.action == TcAction.TC_ACT_SHOT


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"sample captures not found at {CORPUS}")
@pytest.mark.parametrize("path, prog", [("tc_nat.o", "tc_nat"), ("tc_encap.o", "tc_encap"),
                                        ("tc_vlan.o", "tc_vlan")])
def test_checksum_complete_skbs_agree_with_kernel(kernel: str, path: str, prog: str) -> None:
    """With BPF_F_TEST_SKB_CHECKSUM_COMPLETE the kernel checks skb->csum after the run (EBADMSG when it
    no longer matches the packet): the simulator's csum_ok must say the same on every frame."""
    from xdpsim.engines.interp import Interpreter
    from xdpsim.engines.kernel import KernelCollection
    from xdpsim.errors import KernelError
    from xdpsim.kernel.bpf import BPF_F_TEST_SKB_CHECKSUM_COMPLETE

    sim = xdpsim.load(PROGRAMS / path)
    stale = 0
    with KernelCollection(sim.spec) as ker:
        for frame in corpus_frames(limit=200):
            a = run_tc(sim.runtime, Interpreter(), sim.programs[prog].id, frame, checksum_complete=True)
            try:
                b = ker.run_skb(prog, frame, flags=BPF_F_TEST_SKB_CHECKSUM_COMPLETE)
            except KernelError as e:
                assert "EBADMSG" in str(e) and a.csum_ok is False, frame.hex()
                stale += 1
                continue
            assert a.csum_ok is True and a.data == b.data_out, frame.hex()
    if prog != "tc_nat":
        assert stale > 0  # adjust_room / vlan_push really leave skb->csum stale, as in the kernel
