"""`Program.run` and `Program.run_many`: the per-packet user API (the pytest plugin and users' unit tests
call it per packet over captured traffic). `run` reuses per-runtime state between calls (frame, env
views, entry functions): results must not depend on what ran before. `run_many` must give what one
`run` per packet gives, field by field, on every engine; on the JIT's native batch path all but the
two counters it does not keep per packet (`insns`, `helper_counts`)."""

from __future__ import annotations

from pathlib import Path

import pytest

import xdpsim
from xdpsim.isa import Instruction as I  # noqa: N817 - the instruction builder reads best short
from xdpsim.spec import ObjectSpec, ProgramSpec, ProgType

ROOT = Path(__file__).resolve().parent.parent
FIELDS = ("action", "data", "meta", "redirect", "error", "trace", "program", "retval", "tail_calls", "notes")


def eth_ipv4(proto: int, l4: bytes) -> bytes:
    ip = bytes([0x45, 0]) + (20 + len(l4)).to_bytes(2, "big") + bytes(4) + bytes([64, proto, 0, 0]) + \
        bytes([10, 0, 0, 1, 10, 0, 0, 2])
    return bytes.fromhex("ffffffffffff020000000001") + b"\x08\x00" + ip + l4


TCP = eth_ipv4(6, (40000).to_bytes(2, "big") + (80).to_bytes(2, "big") + bytes(8) + b"\x50\x02" + bytes(6))
UDP = eth_ipv4(17, (40000).to_bytes(2, "big") + (53).to_bytes(2, "big") + (26).to_bytes(2, "big") + bytes(20))
ARP = bytes.fromhex("ffffffffffff020000000001") + b"\x08\x06" + bytes(28)
MIX = [TCP, UDP, ARP, TCP[:30], TCP, bytes(3), UDP, bytes(4000), TCP]  # short, runt and too-long frames


def _obj(insns: list[I], engine: str, ptype: ProgType = ProgType.XDP) -> xdpsim.Object:
    section = "xdp" if ptype == ProgType.XDP else "tc"
    prog = ProgramSpec("p", section, ptype, section, insns, license="GPL")
    return xdpsim.load(ObjectSpec("<run api>", {"p": prog}, []), engine=engine)


# r0 = the byte at data + 40 & 7: out of bounds (a fault) for frames of 40 bytes or less; 5..7 are not
# XDP actions (ABORTED with a note), 4 is REDIRECT without a target (a note)
BYTE40 = [I(0x61, 2, 1, 0), I(0x71, 0, 2, 40), I(0x57, 0, 0, 0, 7), I(0x95)]
# r0 = bpf_ktime_get_ns(): the action follows each packet's time
KTIME = [I(0x85, 0, 0, 0, 5), I(0x95)]


def _fields(r: xdpsim.api.RunResult, counters: bool) -> tuple:
    out = tuple(str(getattr(r, k)) if k == "error" else getattr(r, k) for k in FIELDS)
    return out + ((r.insns, r.helper_counts) if counters else ())


@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_run_many_equals_run_per_packet_parser(engine: str) -> None:
    pkts = MIX * 3
    one = xdpsim.load(ROOT / "programs" / "parser.o", engine=engine)
    many = xdpsim.load(ROOT / "programs" / "parser.o", engine=engine)
    a = [one.programs["packet_parser"].run(p, now_ns=i) for i, p in enumerate(pkts)]
    b = many.programs["packet_parser"].run_many(pkts, now_ns=range(len(pkts)))
    assert len(b) == len(pkts)
    counters = engine == "interp"  # the JIT's batch loop does not count per packet
    assert [_fields(r, counters) for r in a] == [_fields(r, counters) for r in b]
    assert {r.engine for r in b} == {engine}
    assert any(r.error is not None for r in b)  # the too-long frame: an outcome in the middle
    assert any(r.tail_calls for r in b)
    for name in one.maps:  # the same map updates, in the same order
        assert one.maps[name].to_json() == many.maps[name].to_json()


@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_run_many_faults_notes_and_times(engine: str) -> None:
    pkts = [TCP[:40], TCP[:41], bytes(41 + 4) + b"\x04", bytes(40) + b"\x06", TCP, bytes(40) + b"\x02"]
    a = [_obj(BYTE40, engine).programs["p"].run(p) for p in pkts]
    b = _obj(BYTE40, engine).programs["p"].run_many(pkts)
    assert [_fields(r, False) for r in a] == [_fields(r, False) for r in b]
    assert b[0].error is not None and b[0].retval == 0 and "out-of-bounds read" in str(b[0].error)
    assert any("unknown XDP action 6" in n for n in b[3].notes)
    times = [2, 1, 3, 9]
    t = _obj(KTIME, engine).programs["p"].run_many([TCP] * 4, now_ns=times)
    assert [r.retval for r in t] == times
    assert [int(r.action) for r in t] == [2, 1, 3, 0]
    assert "unknown XDP action 9" in t[3].notes[0]


def test_run_many_falls_back_where_the_batch_loop_cannot_report() -> None:
    # metadata in, and a program that grows metadata: packet by packet, metadata kept
    grow = [I(0xBF, 6, 1), I(0xB7, 2, 0, 0, -8), I(0x85, 0, 0, 0, 54), I(0xB7, 0, 0, 0, 2), I(0x95)]
    prog = _obj(grow, "jit").programs["p"]
    rs = prog.run_many([TCP, UDP])
    assert [len(r.meta) for r in rs] == [8, 8] and all(r.insns for r in rs)
    rs = _obj(KTIME, "jit").programs["p"].run_many([TCP], meta=b"abcd")
    assert rs[0].meta == b"abcd"
    # TC programs: one run per packet, skb fields given to each
    tc = _obj([I(0x61, 0, 1, 8), I(0x95)], "jit", ProgType.SCHED_CLS).programs["p"]
    assert [r.retval for r in tc.run_many([TCP, UDP], mark=7)] == [7, 7]
    with pytest.raises(xdpsim.errors.XdpsimError, match="2 times for 1 packets"):
        tc.run_many([TCP], now_ns=[1, 2])


@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_run_results_do_not_depend_on_what_ran_before(engine: str) -> None:
    """run() keeps per-runtime buffers and views: the same packet gives the same result (counters
    included) after any other packet, after a batch, and after a TC program of the same object moved
    the packet region to its skb."""
    def load() -> xdpsim.Object:
        progs = {"x": ProgramSpec("x", "xdp", ProgType.XDP, "xdp", BYTE40, license="GPL"),
                 "t": ProgramSpec("t", "tc", ProgType.SCHED_CLS, "tc", [I(0x61, 0, 1, 0), I(0x95)],
                                  license="GPL")}
        return xdpsim.load(ObjectSpec("<run api>", progs, []), engine=engine)

    obj, fresh = load(), load()
    xdp, tc = obj.programs["x"], obj.programs["t"]
    pkts = (TCP, UDP, ARP, TCP[:40])
    want = {p: _fields(fresh.programs["x"].run(p), True) for p in pkts}
    for p in (bytes(4000), TCP, ARP, UDP, TCP[:30], bytes(3), TCP):
        xdp.run(p)
        for q in pkts:
            assert _fields(xdp.run(q), True) == want[q]
    xdp.run_many([UDP, TCP, bytes(3), bytes(4000)])
    assert _fields(xdp.run(ARP), True) == want[ARP]
    assert tc.run(UDP).retval == len(UDP)
    assert _fields(xdp.run(TCP), True) == want[TCP]
    assert tc.run(ARP).retval == len(ARP)
    assert [_fields(r, False) for r in xdp.run_many(pkts)] == [want[p][: len(FIELDS)] for p in pkts]
