"""TC chains: clsact filter order and automatic priorities, direct-action result handling, tcx before
clsact, metadata carried between stages, redirect loops (xdpsim/pipeline/tc_chain.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

import xdpsim
from xdpsim.engines.interp import Interpreter
from xdpsim.helpers.skbuff import SkbState
from xdpsim.hooks.tc import TcResult, run_tc
from xdpsim.maps import RedirectTarget
from xdpsim.pipeline.tc_chain import (
    RECURSION_OUTCOME,
    XMIT_RECURSION_LIMIT,
    ChainError,
    FilterList,
    StageResult,
    follow_redirects,
    run_stage,
)

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"
IPV4 = SkbState(protocol=0x0008)


class Scripted:
    """A runner whose programs are codes (int), or (code, tc_classid) / (code, redirect target)."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def __call__(self, prog, data: bytes, meta: bytes, skb: SkbState) -> TcResult:
        name, spec = prog
        self.ran.append(name)
        st = skb.copy()
        redirect = None
        code = spec
        if isinstance(spec, tuple):
            code, extra = spec
            if isinstance(extra, RedirectTarget):
                redirect = extra
            else:
                st.tc_classid = extra
        return TcResult(code, data, meta, st, redirect)


def stage(codes: list, tcx: list | None = None, skb: SkbState = IPV4) -> tuple[StageResult, list[str]]:
    fl = FilterList()
    for i, c in enumerate(codes):
        fl.add((f"f{i}", c), priority=i + 1)
    run = Scripted()
    res = run_stage(run, b"x" * 60, b"", skb, tcx=[(f"x{i}", c) for i, c in enumerate(tcx or [])], filters=fl)
    return res, run.ran


def test_automatic_priorities_handles_and_order() -> None:
    fl = FilterList()
    auto = [fl.add(f"p{i}").priority for i in range(3)]
    assert auto == [49152, 49151, 49150]  # as `tc filter add` without prio on 6.18
    fl.add("low", priority=5)
    assert fl.add("p3").priority == 49149  # the lowest automatic one minus one, ignoring prio 5
    a, b = fl.add("a", priority=7), fl.add("b", priority=7)
    assert (a.handle, b.handle) == (1, 2)
    assert [f.prog for f in fl.order()][:3] == ["low", "b", "a"]  # newest first within a priority
    with pytest.raises(ChainError, match="Protocol mismatch"):
        fl.add("v6", priority=7, protocol=0x86DD)
    with pytest.raises(ChainError, match="exists"):
        fl.add("dup", priority=7, handle=2)
    fl.delete(7, 1)
    assert [f.prog for f in fl.order() if f.priority == 7] == ["b"]
    with pytest.raises(ChainError):
        fl.delete(7, 9)


@pytest.mark.parametrize("code, verdict", [(0, "pass"), (2, "drop"), (4, "stolen"), (8, "stolen")])
def test_direct_action_codes_that_end_the_chain(code: int, verdict: str) -> None:
    res, ran = stage([-1, code, 0])
    assert ran == ["f0", "f1"] and res.code == code and res.verdict == verdict and res.by == "clsact"


@pytest.mark.parametrize("code", [-1, 1, 3, 5, 6, 99, -7])
def test_codes_that_go_on_to_the_next_filter(code: int) -> None:
    res, ran = stage([code, 2])
    assert ran == ["f0", "f1"] and res.verdict == "drop"
    res, ran = stage([code])
    assert res.code == -1 and res.verdict == "pass"  # off the end: TC_ACT_UNSPEC, the packet goes on


def test_redirect_needs_a_target() -> None:
    res, _ = stage([(7, RedirectTarget("dev", 3))])
    assert res.verdict == "redirect" and res.redirect.index == 3
    res, _ = stage([7])
    assert res.verdict == "drop"


def test_protocol_and_tc_index_after_ok() -> None:
    fl = FilterList()
    fl.add(("v6only", 2), priority=1, protocol=0x86DD)
    fl.add(("classify", (0, 0x42)), priority=2, classid=0x10000)
    run = Scripted()
    res = run_stage(run, b"x" * 60, b"", IPV4, filters=fl)
    assert run.ran == ["classify"] and res.verdict == "pass" and res.skb.tc_index == 0x42
    res, _ = stage([(-1, 0x42)])
    assert res.skb.tc_index == 0  # only a final OK sets tc_index
    res, _ = stage([(-1, 0x42), 0])
    assert res.skb.tc_index == 0  # tc_classid is reset before each filter (to the filter's classid)


def test_tcx_runs_before_clsact() -> None:
    res, ran = stage([0], tcx=[-1, 0, 2])
    assert ran == ["x0", "x1"] and res.by == "tcx" and res.verdict == "pass"
    res, ran = stage([2], tcx=[-1, -1])
    assert ran == ["x0", "x1", "f0"] and res.verdict == "drop" and res.by == "clsact"
    res, ran = stage([2], tcx=[4, 0])  # an unknown tcx code ends tcx and counts as TCX_NEXT
    assert ran == ["x0", "f0"] and res.verdict == "drop"
    res, ran = stage([0], tcx=[2])
    assert ran == ["x0"] and res.verdict == "drop"
    res, ran = stage([0], tcx=[(0, 0x33)])
    assert res.skb.tc_index == 0x33  # TCX_PASS: tc_index = tc_classid
    res, _ = stage([0], tcx=[(7, RedirectTarget("dev-ingress", 4))])
    assert res.verdict == "redirect" and res.by == "tcx"
    with pytest.raises(ChainError):
        stage([], tcx=[-1] * 65)


def real_runner(*paths: str):
    objs = [xdpsim.load(PROGRAMS / p) for p in paths]  # each object has its own runtime and maps
    eng = Interpreter()

    def runner(prog, data, meta, skb):
        obj, name = prog
        return run_tc(obj.runtime, eng, obj.programs[name].id, data, meta=meta, skb=skb)
    return objs, runner


def test_real_programs_tcx_guard_then_classifier_then_police() -> None:
    (obj,), runner = real_runner("tc_classify.o")
    fl = FilterList()
    fl.add((obj, "tc_police"), priority=20)
    fl.add((obj, "tc_classify"), priority=10)
    tcx = [(obj, "tcx_guard")]
    small = bytes.fromhex("ffffffffffff020000000001080045000028000100004001f97d0a0000010a000002") + bytes(6)
    res = run_stage(runner, small, b"", SkbState(protocol=0x0008), tcx=tcx, filters=fl)
    assert res.verdict == "drop" and res.by == "tcx" and [p[1] for p, _ in res.runs] == ["tcx_guard"]
    icmp = bytes.fromhex("ffffffffffff02000000000108004500007c0001000040010000c00002010a000001") + bytes(108)
    res = run_stage(runner, icmp, b"", SkbState(protocol=0x0008), tcx=tcx, filters=fl)
    assert [p[1] for p, _ in res.runs] == ["tcx_guard", "tc_classify", "tc_police"]
    assert res.verdict == "drop" and res.skb.mark == 0x101 and res.skb.cb[4:8] == (0x7C).to_bytes(4, "little")
    one = (1).to_bytes(8, "little")
    assert dict(obj.maps["police_count"].items()) == {(0x101).to_bytes(4, "little"): one}


def test_mark_set_at_ingress_is_seen_at_egress() -> None:
    (cls, red), runner = real_runner("tc_classify.o", "tc_redirect.o")
    ingress, egress = FilterList(), FilterList()
    ingress.add((cls, "tc_classify"))
    egress.add((red, "tc_mark_egress"))
    udp = bytes.fromhex("02000000000102000000000208004500001c000100004011f9790a0000010a00000200010002000800")
    udp += bytes(60 - len(udp))
    first = run_stage(runner, udp, b"", SkbState(protocol=0x0008), filters=ingress)
    assert first.verdict == "pass" and first.skb.mark == 0x111
    run_stage(runner, first.data, first.meta, first.skb, filters=egress)
    one = (1).to_bytes(8, "little")
    assert dict(red.maps["egress_marks"].items()) == {(0x111).to_bytes(4, "little"): one}


def test_redirect_loop_stops_at_the_hop_limit() -> None:
    (red,), runner = real_runner("tc_redirect.o")
    red.maps["redirect_cfg"][0] = (2).to_bytes(4, "little") + bytes(4)  # every hop: egress of ifindex 2
    fl = FilterList()
    fl.add((red, "tc_redirect"))
    pkt = bytes(60)
    first = run_stage(runner, pkt, b"", SkbState(protocol=0x0008), filters=fl)

    def run_at(ifindex: int, where: str, prev: StageResult) -> StageResult:
        return run_stage(runner, prev.data, prev.meta, prev.skb, filters=fl)

    walk = follow_redirects(first, run_at)
    assert walk.outcome == RECURSION_OUTCOME and walk.hops == XMIT_RECURSION_LIMIT
    assert walk.path == [(2, "egress")] * XMIT_RECURSION_LIMIT
    red.maps["redirect_cfg"][0] = (3).to_bytes(4, "little") + (1).to_bytes(4, "little")
    stop = FilterList()
    stop.add((red, "tc_mark_egress"))
    first = run_stage(runner, pkt, b"", SkbState(protocol=0x0008), filters=fl)
    walk = follow_redirects(first, lambda i, w, prev: run_stage(runner, prev.data, prev.meta, prev.skb,
                                                                filters=stop))
    assert (walk.outcome, walk.hops, walk.path) == ("pass", 1, [(3, "ingress")])
