"""Tier 1's lazy register stores and grouped fault tests (jit/live.py, lower.py compact mode): register
liveness, and programs whose blocks fault part-way (the first fault wins, nothing after it happens),
read registers across blocks, calls and loops, held to the interpreter."""

from __future__ import annotations

import pytest

from xdpsim.asm import assemble
from xdpsim.engines.interp import Interpreter
from xdpsim.engines.jit import JitEngine
from xdpsim.hooks.xdp import run_xdp
from xdpsim.jit.cfg import build
from xdpsim.jit.live import ALL, live_before
from xdpsim.runtime import Runtime
from xdpsim.spec import ObjectSpec, ProgramSpec, ProgType


def _live(text: str) -> dict[int, int]:
    insns = assemble(text)
    return live_before(insns, build(insns)[0])


def _regs(mask: int) -> set[int]:
    return {r for r in range(11) if (mask >> r) & 1}


def test_liveness_of_straight_line_code() -> None:
    live = _live("r2 = 1\nr3 = r1\nr3 += r2\nr0 = r3\nexit")
    assert _regs(live[0]) == _regs(ALL) - {0, 2, 3}  # exit reads everything; r0, r2, r3 written first
    assert 2 in _regs(live[2]) and 3 in _regs(live[2])
    assert 3 not in _regs(live[1]) and 1 in _regs(live[1])


def test_liveness_through_branches_and_loops() -> None:
    live = _live("r1 = 0\nr4 = 9\nr1 += 1\nif r1 < 10 goto -2\nr0 = r1\nexit")
    assert 1 in _regs(live[2]) and 1 in _regs(live[3])  # the loop reads r1 again
    assert 4 in _regs(live[2])  # (exit reads everything: r4 reaches it)
    assert 4 not in _regs(live[1])


def test_a_dead_write_is_not_live() -> None:
    live = _live("r5 = 1\nr5 = 2\nr0 = r5\nexit")
    assert 5 not in _regs(live[1])


PROGRAMS = {
    # a load faults in the middle of a block: the packet store after it must not happen, and the
    # second faulting access must not replace the first's record
    "fault_mid_block": """
        r2 = *(u32 *)(r1 + 0)
        *(u8 *)(r2 + 0) = 0x11
        r5 = 0
        r4 = *(u64 *)(r5 + 8)
        *(u8 *)(r2 + 1) = 0x22
        *(u64 *)(r5 + 16) = r4
        r0 = 2
        exit
    """,
    # a store faults: the later load (valid) and store do not happen either
    "store_fault": """
        r2 = *(u32 *)(r1 + 0)
        r3 = 0x7777
        *(u32 *)(r3 + 0) = 1
        r4 = *(u8 *)(r2 + 0)
        *(u8 *)(r2 + 2) = r4
        r0 = 2
        exit
    """,
    # registers written in one block, read in later ones, across a loop and the stack
    "across_blocks": """
        r6 = 3
        r7 = 0
        r8 = 100
        *(u64 *)(r10 - 8) = r8
        r7 += r6
        r6 += -1
        if r6 != 0 goto -3
        r8 = *(u64 *)(r10 - 8)
        r8 += r7
        r2 = *(u32 *)(r1 + 0)
        *(u8 *)(r2 + 3) = r8
        r0 = r8
        r0 &= 3
        exit
    """,
    # an atomic after a faulting load in the same block: it must not run (nor fault itself)
    "atomic_after_fault": """
        *(u64 *)(r10 - 8) = 5
        r5 = 0
        r4 = *(u64 *)(r5 + 0)
        r3 = 1
        lock *(u64 *)(r10 - 8) += r3
        r0 = *(u64 *)(r10 - 8)
        exit
    """,
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_tier_1_matches_the_interpreter(name: str) -> None:
    prog = ProgramSpec("p", "xdp", ProgType.XDP, "xdp", assemble(PROGRAMS[name]))
    spec = ObjectSpec("<t>", {"p": prog}, [])
    outs = []
    for eng in (Interpreter(), JitEngine(tier=1)):
        rt = Runtime()
        pid = rt.load(spec).programs["p"]
        r = run_xdp(rt, eng, pid, bytes(range(60)))
        # (instruction counts only without a fault: the JIT charges whole blocks, jit/__init__.py)
        outs.append((str(r.error), r.retval, bytes(r.data), r.insns if r.error is None else 0))
    assert outs[0] == outs[1]
    if name in ("fault_mid_block", "store_fault", "atomic_after_fault"):
        assert outs[0][0] != "None", "the program faults"
