"""Tail calls in the interpreter, checked against the running kernel where it can run BPF.

MAX_TAIL_CALL_CNT = 33: a program tail-calling itself runs 34 times; an empty slot or an index out of
range falls through; prog array updates take effect on the next packet; a tail call from a subprogram
replaces that subprogram's frame (the target's r0 goes back to the subprogram's caller).
"""

from __future__ import annotations

import kernel_fixtures
import pytest
from kernel_fixtures import (
    TAIL_CALL,
    add,
    array,
    atomic_add64,
    call,
    exit_,
    ld_map,
    lookup0,
    mov,
    movr,
    obj,
    tiny_btf,
    xdp_prog,
)

from xdpsim.engines.interp import Interpreter
from xdpsim.hooks.xdp import XdpAction, run_xdp
from xdpsim.isa import CALL, PSEUDO_CALL, Instruction
from xdpsim.runtime import Runtime
from xdpsim.spec import FuncInfo, MapSpec, MapType, ObjectSpec

PACKET = bytes(range(64))
kernel = kernel_fixtures.kernel  # the fixture: skips with the reason where BPF cannot run


def prog_array(name: str = "jmp", slots: dict[int, str] | None = None, size: int = 4) -> MapSpec:
    return MapSpec(name, MapType.PROG_ARRAY, 4, 4, size, init_slots=dict(slots or {}))


def counting_tail_caller(name: str, index: int) -> list[Instruction]:
    """cnt[0] += 1; bpf_tail_call(ctx, jmp, index); return XDP_PASS."""
    return [
        movr(6, 1),
        *lookup0(0, 2),
        mov(1, 1),
        atomic_add64(0, 1, 0),
        movr(1, 6),
        *ld_map(2, 1),
        mov(3, index),
        call(TAIL_CALL),
        mov(0, XdpAction.XDP_PASS),
        exit_(),
    ]


def self_calling(index: int = 0, slot: int = 0) -> ObjectSpec:
    return obj([xdp_prog("self", counting_tail_caller("self", index))],
               [array("cnt"), prog_array(slots={slot: "self"})])


def run_interp(spec: ObjectSpec, entry: str, data: bytes = PACKET):
    rt = Runtime()
    coll = rt.load(spec)
    res = run_xdp(rt, Interpreter(), coll.programs[entry], data)
    return res, coll


def count(coll) -> int:
    return int.from_bytes(coll.maps["cnt"][0], "little")


def test_33_tail_calls_succeed_the_34th_falls_through() -> None:
    res, coll = run_interp(self_calling(), "self")
    assert res.error is None
    assert res.action == XdpAction.XDP_PASS
    assert res.tail_calls == 33
    assert count(coll) == 34
    assert res.helper_counts["tail_call"] == 34


@pytest.mark.parametrize("index, slot", [(1, 0), (100, 0)], ids=["empty-slot", "out-of-range"])
def test_failed_tail_call_falls_through(index: int, slot: int) -> None:
    res, coll = run_interp(self_calling(index, slot), "self")
    assert res.error is None and res.action == XdpAction.XDP_PASS
    assert res.tail_calls == 0 and count(coll) == 1 and res.program == "self"


def two_targets() -> ObjectSpec:
    entry = [*ld_map(2, 0), mov(3, 0), call(TAIL_CALL), mov(0, XdpAction.XDP_PASS), exit_()]
    return obj([
        xdp_prog("entry", entry),
        xdp_prog("drop", [mov(0, XdpAction.XDP_DROP), exit_()]),
        xdp_prog("tx", [mov(0, XdpAction.XDP_TX), exit_()]),
    ], [prog_array(slots={0: "drop"})])


def test_prog_array_changed_between_packets() -> None:
    rt = Runtime()
    coll = rt.load(two_targets())
    eng = Interpreter()
    entry = coll.programs["entry"]
    first = run_xdp(rt, eng, entry, PACKET)
    assert (first.action, first.program) == (XdpAction.XDP_DROP, "drop")
    coll.maps["jmp"][0] = "tx"  # by name
    second = run_xdp(rt, eng, entry, PACKET)
    assert (second.action, second.program) == (XdpAction.XDP_TX, "tx")
    del coll.maps["jmp"][0]
    third = run_xdp(rt, eng, entry, PACKET)
    assert (third.action, third.program, third.tail_calls) == (XdpAction.XDP_PASS, "entry", 0)
    coll.maps["jmp"][0] = coll.programs["drop"]  # by id
    assert run_xdp(rt, eng, entry, PACKET).action == XdpAction.XDP_DROP


def subprog_tail_call(slot: int) -> ObjectSpec:
    """entry: r0 = sub(ctx) + 100; sub: tail_call(ctx, jmp, slot); return 1. Target returns 3."""
    entry = [Instruction(CALL, 0, PSEUDO_CALL, 0, 2), add(0, 100), exit_()]
    sub = [*ld_map(2, 0), mov(3, slot), call(TAIL_CALL), mov(0, 1), exit_()]
    # the kernel allows tail calls in subprograms only with BTF func info
    blob, ids, _ = tiny_btf(["entry", "sub", "target"], [])
    return obj([
        xdp_prog("entry", entry + sub, functions={0: "entry", 3: "sub"},
                 func_info=[FuncInfo(0, "entry", ids["entry"]), FuncInfo(3, "sub", ids["sub"])]),
        xdp_prog("target", [mov(0, 3), exit_()], func_info=[FuncInfo(0, "target", ids["target"])]),
    ], [prog_array(slots={0: "target"})], btf_raw=blob)


def test_tail_call_from_subprogram_returns_to_its_caller() -> None:
    res, _ = run_interp(subprog_tail_call(0), "entry")
    assert res.error is None and res.retval == 103 and res.tail_calls == 1
    res, _ = run_interp(subprog_tail_call(1), "entry")
    assert res.retval == 101 and res.tail_calls == 0


def test_tail_call_with_a_bad_map_faults() -> None:
    spec = obj([xdp_prog("p", [*ld_map(2, 0), mov(3, 0), call(TAIL_CALL), mov(0, 2), exit_()])], [array("a")])
    res, _ = run_interp(spec, "p")
    assert res.error is not None and res.error.kind == "helper"
    assert "bpf_tail_call: argument 2" in str(res.error) and res.error.pc == 3


# ---------------------------------------------------------------------------- the kernel agrees


def _kernel_collection(spec: ObjectSpec):
    from xdpsim.engines.kernel import KernelCollection

    return KernelCollection(spec)


def test_kernel_agrees_on_tail_call_limit(kernel: str) -> None:
    spec = self_calling()
    res, coll = run_interp(spec, "self")
    with _kernel_collection(spec) as kc:
        kr = kc.run_xdp("self", PACKET)
        kcount = int.from_bytes(kc.read_map("cnt")[b"\0\0\0\0"][:8], "little")
    assert kr.retval == res.retval and kr.data_out == res.data
    assert kcount == count(coll) == 34


@pytest.mark.parametrize("slot", [0, 1])
def test_kernel_agrees_on_subprogram_tail_call(kernel: str, slot: int) -> None:
    spec = subprog_tail_call(slot)
    res, _ = run_interp(spec, "entry")
    with _kernel_collection(spec) as kc:
        kr = kc.run_xdp("entry", PACKET)
    assert kr.retval == res.retval
