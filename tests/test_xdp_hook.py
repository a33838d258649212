"""The XDP hook: xdp_md accesses, actions, frame limits, and the adjust helpers against the kernel."""

from __future__ import annotations

import errno

import kernel_fixtures
import pytest
from kernel_fixtures import (
    XDP_ADJUST_HEAD,
    XDP_ADJUST_META,
    XDP_ADJUST_TAIL,
    call,
    exit_,
    mov,
    obj,
    xdp_prog,
)

from xdpsim.asm import assemble
from xdpsim.engines.interp import Interpreter
from xdpsim.hooks.xdp import XdpAction, run_xdp
from xdpsim.isa import Instruction
from xdpsim.runtime import Runtime
from xdpsim.spec import ObjectSpec, ProgramSpec, ProgType

kernel = kernel_fixtures.kernel
PACKET = bytes(range(64))
U32 = 0xFFFF_FFFF


def xdp(insns: list[Instruction] | str, *, name: str = "p", frags: bool = False, attach: str = "xdp",
        section: str = "xdp") -> ObjectSpec:
    code = assemble(insns) if isinstance(insns, str) else insns
    return ObjectSpec("<t>", {name: ProgramSpec(name, section, ProgType.XDP, attach, code, license="GPL",
                                                frags=frags)}, [])


def run(spec: ObjectSpec, data: bytes = PACKET, **kw):
    rt = Runtime()
    coll = rt.load(spec)
    return run_xdp(rt, Interpreter(), next(iter(coll.programs.values())), data, **kw)


# ---------------------------------------------------------------------------- xdp_md


def test_ctx_fields() -> None:
    prog = """
        r2 = *(u32 *)(r1 + 0x0)
        r3 = *(u32 *)(r1 + 0x4)
        r4 = *(u32 *)(r1 + 0x8)
        r0 = r3
        r0 -= r2
        if r4 != r2 goto +4
        r5 = *(u32 *)(r1 + 0xc)
        r0 <<= 8
        r0 |= r5
        r5 = *(u32 *)(r1 + 0x10)
        r0 <<= 8
        r0 |= r5
        exit
    """
    res = run(xdp(prog), ifindex=7, queue=3)
    assert res.error is None
    assert res.retval == (64 << 16) | (7 << 8) | 3


def test_packet_pointers_are_region_addresses() -> None:
    res = run(xdp("r0 = *(u32 *)(r1 + 0x0)\nexit"))
    assert res.retval == (3 << 32) | 256  # PACKET region, data at the 256-byte headroom


@pytest.mark.parametrize("text, what", [
    ("r0 = *(u8 *)(r1 + 0x0)", "only aligned 4-byte loads"),
    ("r0 = *(u64 *)(r1 + 0x0)", "only aligned 4-byte loads"),
    ("r0 = *(u16 *)(r1 + 0x2)", "only aligned 4-byte loads"),
    ("r0 = *(u32 *)(r1 + 0x14)", "only devmap programs"),
    ("*(u32 *)(r1 + 0x0) = 0", "read-only"),
    ("r2 = 1\n*(u32 *)(r1 + 0x10) = r2", "read-only"),
])
def test_ctx_refusals(text: str, what: str) -> None:
    res = run(xdp(text + "\nr0 = 2\nexit"))
    assert res.error is not None and res.error.kind == "ctx", res.error
    assert what in str(res.error)
    assert res.action == XdpAction.XDP_ABORTED


def test_ctx_out_of_window() -> None:
    res = run(xdp("r0 = *(u32 *)(r1 + 0x18)\nexit"))
    assert res.error is not None and res.error.kind == "memory" and res.error.region == "ctx"


def test_devmap_program_reads_egress_ifindex() -> None:
    spec = xdp("r0 = *(u32 *)(r1 + 0x14)\nexit", attach="xdp/devmap", section="xdp/devmap")
    assert run(spec, egress_ifindex=9).retval == 9


def test_packet_out_of_bounds_fault_message() -> None:
    prog = "r2 = *(u32 *)(r1 + 0x0)\nr0 = *(u32 *)(r2 + 0x40)\nexit"
    res = run(xdp(prog))
    e = res.error
    assert e is not None and e.kind == "memory" and e.pc == 1 and e.program == "p"
    assert str(e) == ("program p, insn 1, `r0 = *(u32 *)(r2 + 0x40)`: out-of-bounds read of 4 bytes at "
                      "0x300000140 in region packet [0x100, 0x140)")


# ---------------------------------------------------------------------------- actions and frames


@pytest.mark.parametrize("code", [0, 1, 2, 3, 4])
def test_actions(code: int) -> None:
    res = run(xdp(f"r0 = {code}\nexit"))
    assert res.action == XdpAction(code) and str(res.action) == XdpAction(code).name


def test_unknown_action_is_aborted_with_a_note() -> None:
    res = run(xdp("r0 = 9\nexit"))
    assert res.action == XdpAction.XDP_ABORTED and res.retval == 9 and res.error is None
    assert "unknown XDP action 9" in res.notes[0]


def test_redirect_without_target_is_noted() -> None:
    res = run(xdp("r0 = 4\nexit"))
    assert res.action == XdpAction.XDP_REDIRECT and res.redirect is None
    assert "without a target" in res.notes[0]


def test_frame_too_long_for_single_buffer() -> None:
    res = run(xdp("r0 = 2\nexit"), bytes(3521))
    assert res.error is not None and res.error.kind == "frame"
    assert "frame too long for single-buffer XDP" in str(res.error)
    assert run(xdp("r0 = 2\nexit"), bytes(3520)).error is None


def test_frags_program_sees_the_linear_part_and_the_whole_length() -> None:
    # r0 = data_end - data (linear) << 16 | bpf_xdp_get_buff_len(ctx)
    prog = """
        r6 = r1
        r2 = *(u32 *)(r6 + 0x0)
        r7 = *(u32 *)(r6 + 0x4)
        r7 -= r2
        r1 = r6
        call 188
        r7 <<= 16
        r0 |= r7
        exit
    """
    data = bytes(range(256)) * 20
    res = run(xdp(prog, frags=True), data)
    assert res.error is None
    assert res.retval == (3520 << 16) | 5120
    assert res.data == data


# ---------------------------------------------------------------------------- adjust helpers


def adjust(helper: int, delta: int) -> ObjectSpec:
    """return bpf_xdp_adjust_*(ctx, delta) (the raw return value as the program's r0)."""
    return obj([xdp_prog("adj", [mov(2, delta), call(helper), exit_()])], [])


HEAD_CASES = [-216, -217, -14, 0, 50, 51, -256]
TAIL_CASES = [3520 - 64, 3520 - 64 + 1, -50, -51, 8]
META_CASES = [-216, -220, -4, -3, -256, 4, 0]


def _cases():
    for d in HEAD_CASES:
        yield "head", XDP_ADJUST_HEAD, d
    for d in TAIL_CASES:
        yield "tail", XDP_ADJUST_TAIL, d
    for d in META_CASES:
        yield "meta", XDP_ADJUST_META, d


CASES = list(_cases())
IDS = [f"{w}{d:+d}" for w, _, d in CASES]


@pytest.mark.parametrize("what, helper, delta", CASES, ids=IDS)
def test_adjust_limits(what: str, helper: int, delta: int) -> None:
    res = run(adjust(helper, delta))
    expected_ok = {
        "head": -216 <= delta <= 50,
        "tail": -50 <= delta <= 3520 - 64,
        "meta": delta <= 0 and delta % 4 == 0 and -216 <= delta,
    }[what]
    assert (res.retval == 0) == expected_ok, res.retval
    if not expected_ok:
        err = (-res.retval) & U32 if res.retval >> 31 else res.retval
        assert err in (errno.EINVAL, errno.EACCES)
    if what == "head" and expected_ok:
        assert len(res.data) == 64 - delta
        assert res.data[-64 if delta < 0 else 0:] == PACKET[max(delta, 0):]
    if what == "tail" and expected_ok:
        assert res.data == (PACKET + bytes(max(delta, 0)))[: 64 + delta]
    if what == "meta" and expected_ok:
        assert res.meta == bytes(-delta) and res.data == PACKET


@pytest.mark.parametrize("what, helper, delta", CASES, ids=IDS)
def test_adjust_agrees_with_kernel(kernel: str, what: str, helper: int, delta: int) -> None:
    from xdpsim.engines.kernel import KernelCollection

    spec = adjust(helper, delta)
    res = run(spec)
    with KernelCollection(spec) as kc:
        kr = kc.run_xdp("adj", PACKET)
    assert res.retval & U32 == kr.retval & U32
    assert res.data == kr.data_out
    assert res.meta == kr.meta


# ---------------------------------------------------------------------------- multi-buffer frames

BIG = bytes(range(256)) * 20  # 5120 bytes: 3520 linear + one 1600-byte fragment
BIGGER = bytes(range(251)) * 31  # 7781 bytes: 3520 + 4096 + 165


def frags_tail(delta: int) -> ObjectSpec:
    """r0 = (adjust_tail(ctx, delta) & 0xff) << 24 | bpf_xdp_get_buff_len(ctx); then a load_bytes probe."""
    return xdp(f"""
        r6 = r1
        r2 = {delta}
        call 65
        r7 = r0
        r7 &= 0xff
        r7 <<= 24
        r1 = r6
        call 188
        r0 |= r7
        exit
    """, frags=True)


FRAG_CASES = [(BIG, d) for d in (100, 4096 - 1600, 4096 - 1600 + 1, -100, -1600, -1700, -(5120 - 14),
                                 -(5120 - 13), 0)]
FRAG_CASES += [(BIGGER, d) for d in (4096 - 165, 4096 - 164, -165, -4261)]


@pytest.mark.parametrize("data, delta", FRAG_CASES, ids=[f"{len(d)}{x:+d}" for d, x in FRAG_CASES])
def test_frags_adjust_tail(data: bytes, delta: int) -> None:
    res = run(frags_tail(delta), data)
    assert res.error is None
    ok = (res.retval >> 24) == 0
    room = 4096 - ((len(data) - 3520 - 1) % 4096 + 1)
    assert ok == (delta <= room and -delta <= len(data) - 14)
    new_len = len(data) + (delta if ok else 0)
    assert res.retval & 0xFFFFFF == new_len
    assert res.data == (data + bytes(max(delta, 0)))[:new_len]


@pytest.mark.parametrize("data, delta", FRAG_CASES, ids=[f"{len(d)}{x:+d}" for d, x in FRAG_CASES])
def test_frags_adjust_tail_agrees_with_kernel(kernel: str, data: bytes, delta: int) -> None:
    from xdpsim.engines.kernel import KernelCollection

    spec = frags_tail(delta)
    res = run(spec, data)
    with KernelCollection(spec) as kc:
        kr = kc.run_xdp("p", data)
    assert (res.retval & U32, res.data) == (kr.retval & U32, kr.data_out)


def test_frags_limit() -> None:
    res = run(xdp("r0 = 2\nexit", frags=True), bytes(3520 + 17 * 4096 + 1))
    assert res.error is not None and res.error.kind == "frame" and "multi-buffer" in str(res.error)


def test_frame_is_reattached_after_another_hook_moved_the_packet_region() -> None:
    import numpy as np

    from xdpsim.memory import PACKET as PACKET_REGION

    rt = Runtime()
    pid = rt.load(xdp("r2 = *(u32 *)(r1 + 0x0)\nr0 = *(u8 *)(r2 + 0x3)\nexit")).programs["p"]
    eng = Interpreter()
    assert run_xdp(rt, eng, pid, PACKET).retval == 3
    other = np.full(4096, 0xEE, dtype=np.uint8)  # what a TC hook would do with its skb buffer
    rt.mem.set(PACKET_REGION, buffer=other, lo=0, hi=100)
    assert run_xdp(rt, eng, pid, bytes([9]) * 64).retval == 9
