"""Tier 1's budget regions (jit/lower.py `FuncLowering.budget_regions`): the budget is tested only at
region heads (function entries, loop heads, blocks after calls that may run program code) against
the region's longest path; when it might not last, the function resumes in its exact copy (built
then, through env PY_EXACT), which tests every block. Whatever the budget, a run must end exactly as
with a test at every block -- same verdict, fault, instruction, packet bytes, instruction count --
and so as the interpreter, up to the one documented difference pinned at the end of this file."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_jit_speed_budget import CHAIN_A, CHAIN_B, PROGRAM, _link

from xdpsim.engines.base import RunState
from xdpsim.engines.interp import Interpreter
from xdpsim.engines.jit import JitEngine
from xdpsim.errors import ProgramFault
from xdpsim.hooks.xdp import run_xdp
from xdpsim.isa import Instruction as I  # noqa: N817
from xdpsim.isa import lddw
from xdpsim.jit.cfg import build
from xdpsim.jit.compiler import compiler
from xdpsim.jit.lower import FuncLowering
from xdpsim.runtime import Runtime
from xdpsim.spec import MapSpec, MapType, ObjectSpec, ProgramSpec, ProgType

_DATA = [I(0x61, 2, 1, 0), I(0x61, 3, 1, 4), I(0xBF, 4, 2), I(0x07, 4, 0, 0, 16)]  # r2 data, r3 end
# a loop calling a subprogram (which stores into the packet and calls a helper) and a helper
# (map lookup: native, or Python with native_helpers=False); a load through the looked-up value
# faults when the lookup misses (key 3 of a 2-slot array: the fourth round)
CALLS = _link(
    [
        *_DATA,
        ("jmp", 0x2D, 4, 3, 0, "drop"),
        I(0xBF, 6, 2),
        I(0xB7, 7, 0, 0, 0),
        ("label", "loop"),
        I(0xBF, 1, 6),
        I(0xBF, 2, 7),
        I(0x85, 0, 1, 0, 0),  # call sub (patched below)
        I(0x63, 10, 7, -4),  # *(u32 *)(fp - 4) = r7
        I(0xBF, 2, 10),
        I(0x07, 2, 0, 0, -4),
        *lddw(1, 4 << 32),  # r1 = map 0's handle
        I(0x85, 0, 0, 0, 1),  # map_lookup_elem
        I(0xB7, 8, 0, 0, 5),
        ("jmp", 0x55, 7, 0, 3, "deref"),  # round 3: a NULL value pointer is read
        ("jmp", 0x55, 0, 0, 0, "deref"),
        ("jmp", 0x05, 0, 0, 0, "next"),
        ("label", "deref"),
        I(0x79, 8, 0, 0),  # r8 = *(u64 *)(r0 + 0)
        ("label", "next"),
        I(0x07, 7, 0, 0, 1),
        I(0x07, 8, 0, 0, 1),
        ("jmp", 0xA5, 7, 0, 5, "loop"),
        I(0xB7, 0, 0, 0, 2),
        I(0x95),
        ("label", "drop"),
        I(0xB7, 0, 0, 0, 1),
        I(0x95),
        ("label", "sub"),  # sub(p, i): p[i] = i; p[i + 4] += 1; return i
        I(0xBF, 3, 1),
        I(0x0F, 3, 2),
        I(0x73, 3, 2, 0),
        I(0x71, 4, 3, 4),
        I(0x07, 4, 0, 0, 1),
        I(0x73, 3, 4, 4),
        I(0xBF, 0, 2),
        I(0x95),
    ]
)
_SUB = next(pc for pc, ins in enumerate(CALLS) if ins.opcode == 0xBF and ins.dst == 3 and ins.src == 1)
_CALL = next(pc for pc, ins in enumerate(CALLS) if ins.opcode == 0x85 and ins.src == 1)
CALLS[_CALL] = I(0x85, 0, 1, 0, _SUB - _CALL - 1)


@pytest.fixture
def region_mode() -> Iterator[None]:
    """Every function of every tier-1 program uses regions (however small the saving)."""
    saved = FuncLowering.REGION_HEAD_COST
    yield
    FuncLowering.REGION_HEAD_COST = saved
    compiler().t1.clear()


def _set_mode(regions: bool) -> None:
    FuncLowering.REGION_HEAD_COST = -(10**9) if regions else 10**9
    compiler().t1.clear()  # (tier-1 code is kept per cache key: build it again in this mode)


def _load(progs: dict[str, list[I]], maps: list[MapSpec]) -> tuple[Runtime, object]:
    rt = Runtime()
    specs = {n: ProgramSpec(n, "xdp", ProgType.XDP, "xdp", list(b)) for n, b in progs.items()}
    return rt, rt.load(ObjectSpec("<t>", specs, maps))


def _outcome(engine, progs: dict[str, list[I]], maps: list[MapSpec], budget: int) -> tuple:
    rt, coll = _load(progs, maps)
    r = run_xdp(rt, engine, coll.programs[next(iter(progs))], bytes(range(40)), budget=budget)
    err = r.error
    return r.retval, r.data, str(err), err.pc if err is not None else None, r.insns, r.tail_calls


_CASES = {
    "loops": ({"p": PROGRAM}, []),
    "tail_calls": (
        {"a": CHAIN_A, "b": CHAIN_B},
        [MapSpec("arr", MapType.ARRAY, 4, 8, 1),
         MapSpec("jmp", MapType.PROG_ARRAY, 4, 4, 2, init_slots={0: "b"})],
    ),
    "calls": ({"c": CALLS}, [MapSpec("arr", MapType.ARRAY, 4, 8, 2)]),
}


def _sweep(case: str, native: bool, regions: bool) -> list[tuple]:
    progs, maps = _CASES[case]
    _set_mode(regions)
    eng = JitEngine(tier=1, native_helpers=native)
    full = _outcome(Interpreter(), progs, maps, 1 << 20)[4]
    return [_outcome(eng, progs, maps, b) for b in [*range(1, full + 3), 1 << 20]]  # (regions whole last)


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("case", sorted(_CASES))
def test_regions_end_every_budget_as_block_tests_do(region_mode: None, case: str, native: bool) -> None:
    blocks = _sweep(case, native, regions=False)
    before = len(compiler()._exact)  # noqa: SLF001
    regions = _sweep(case, native, regions=True)
    assert regions == blocks
    assert len(compiler()._exact) > before  # noqa: SLF001 - low budgets resumed in exact copies
    progs, maps = _CASES[case]
    assert regions[-1][:4] == _outcome(Interpreter(), progs, maps, 1 << 20)[:4]  # (enough budget)


@pytest.mark.parametrize("native", [True, False])
def test_calls_agree_with_the_interpreter(region_mode: None, native: bool) -> None:
    """The subprogram's stores, the helper calls and the NULL read: same outcome as the interpreter
    for every budget (the packet too, unless a store precedes the budget fault in its block: the
    documented difference)."""
    progs, maps = _CASES["calls"]
    interp = [_outcome(Interpreter(), progs, maps, b) for b in range(1, 200)]
    _set_mode(True)
    jit = [_outcome(JitEngine(tier=1, native_helpers=native), progs, maps, b) for b in range(1, 200)]
    leaders = [p for f in build(CALLS) for p in f.leaders]
    for a, b in zip(interp, jit, strict=True):
        assert (a[0], a[2], a[3], a[5]) == (b[0], b[2], b[3], b[5])
        if a[2] == "None":
            assert a[4] == b[4]
        start = max(p for p in leaders if p <= a[3]) if a[3] is not None else 0
        if a[3] is None or not any(CALLS[p].cls in (0x02, 0x03) for p in range(start, a[3])):
            assert a[1] == b[1]
    assert any("budget" in a[2] for a in interp) and any("NULL" in a[2] or "0x0" in a[2] for a in interp), (
        {a[2] for a in interp})


def test_bundled_programs_use_regions() -> None:
    """The large bundled programs' tier-1 IR tests far fewer blocks than it has."""
    from xdpsim import api

    eng = JitEngine(tier=1)
    rt = api.load("programs/edge_fw.o", engine="interp").runtime
    prog = next(p for p in rt.programs if p.name == "edge_fw_v4")
    pin = eng.program_input(rt, prog)
    text = str(compiler().tier1_lowering(pin, "t", eng._natives).lower())  # noqa: SLF001
    blocks = text.count("\npc")
    runs = text.count(".run:")
    assert "resume:" in text and 0 < runs < blocks // 4, (runs, blocks)


def test_memory_fault_before_the_exhausting_instruction_is_the_documented_difference() -> None:
    """xdpsim/jit/__init__.py: a block that would exhaust the budget faults at its start, naming the
    exhausting instruction, even when an earlier instruction of the block faults on memory (the
    interpreter reports that memory fault). Both tiers."""
    prog = [I(0xB7, 1, 0, 0, 0), I(0x79, 2, 1, 0), I(0xB7, 0, 0, 0, 2), I(0xB7, 0, 0, 0, 3), I(0x95)]
    out = {}
    for name, eng in (("interp", Interpreter()), ("t1", JitEngine(tier=1)), ("t2", JitEngine(tier=2))):
        rt, coll = _load({"p": prog}, [])
        st = RunState(rt, args=(0,))
        st.budget = 3
        with pytest.raises(ProgramFault) as e:
            eng.run(rt, coll.programs["p"], st)
        out[name] = (e.value.kind, e.value.pc)
    assert out["interp"][1] == 1 and out["interp"][0] != "budget"
    assert out["t1"] == out["t2"] == ("budget", 3)
