"""BPF_ATOMIC on the context and on packet pointers, as the running kernel decides it.

The kernel (6.18, asked through BPF_PROG_LOAD with a verifier log) refuses every atomic operation --
add/or/and/xor with and without BPF_FETCH, xchg, cmpxchg; 32 and 64 bits -- on the context of XDP
(`xdp_md`) and TC (`__sk_buff`) programs ("BPF_ATOMIC stores into R1 ctx is not allowed") and on packet
pointers after a bounds check ("BPF_ATOMIC stores into R2 pkt is not allowed"), while the same
operation on the stack loads. Neither engine can refuse a program at load time (they run what the
verifier would reject), so both fault at the instruction, before any access, with the same message
(engines.base.atomic_fault): the kernel part of this file checks the premise, the engine part the
behaviour.
"""

from __future__ import annotations

import errno

import pytest
from kernel_fixtures import DW, W, add, exit_, kernel, ldx, mov, movr, raw  # noqa: F401 - fixture

from xdpsim import api, isa
from xdpsim.isa import Instruction as I  # noqa: N817 - the instruction builder reads best short
from xdpsim.spec import ObjectSpec, ProgramSpec, ProgType

OPS = {
    "add": isa.BPF_ADD, "or": isa.BPF_OR, "and": isa.BPF_AND, "xor": isa.BPF_XOR,
    "fetch_add": isa.BPF_ADD | isa.BPF_FETCH, "fetch_or": isa.BPF_OR | isa.BPF_FETCH,
    "fetch_and": isa.BPF_AND | isa.BPF_FETCH, "fetch_xor": isa.BPF_XOR | isa.BPF_FETCH,
    "xchg": isa.BPF_XCHG, "cmpxchg": isa.BPF_CMPXCHG,
}
HOOKS = {"xdp": ProgType.XDP, "tc": ProgType.SCHED_CLS}
# offsets of the packet pointers in the context: (data, data_end)
PKT_FIELDS = {"xdp": (0, 4), "tc": (76, 80)}
FRAME = bytes.fromhex("ffffffffffff020000000001080045000028000100004006000000000a0000010a000002") + bytes(20)


def atomic(size: int, dst: int, src: int, off: int, op: int) -> I:
    return I(isa.BPF_STX | isa.BPF_ATOMIC | size, dst, src, off, op)


def on_ctx(size: int, op: int, off: int) -> list[I]:
    """r2 = 1; r0 = 0; atomic (r1 + off) op= r2; r0 = 2; exit (r1: the context)."""
    return [mov(2, 1), mov(0, 0), atomic(size, 1, 2, off, op), mov(0, 2), exit_()]


def on_packet(hook: str, size: int, op: int) -> list[I]:
    """r2 = data; r3 = data_end; if r2 + 8 > r3 goto exit; r5 = 1; r0 = 0; atomic (r2) op= r5 (at pc 7)."""
    data, data_end = PKT_FIELDS[hook]
    return [ldx(W, 2, 1, data), ldx(W, 3, 1, data_end), movr(4, 2), add(4, 8), I(0x2D, 4, 3, 3, 0),
            mov(5, 1), mov(0, 0), atomic(size, 2, 5, 0, op), mov(0, 2), exit_()]


def on_stack(size: int, op: int) -> list[I]:
    """The control: the same operation on an initialised stack slot is accepted."""
    return [I(0x7A, 10, 0, -8, 0), mov(2, 1), mov(0, 0), atomic(size, 10, 2, -8, op), mov(0, 2), exit_()]


CASES = [(hook, size, name) for hook in HOOKS for size in (W, DW) for name in OPS]


def _ids(case: tuple[str, int, str]) -> str:
    hook, size, name = case
    return f"{hook}-{'dw' if size == DW else 'w'}-{name}"


# --- what the kernel says ------------------------------------------------------------------------------


def _load(hook: str, insns: list[I]) -> tuple[bool, int, str]:
    from xdpsim.kernel import bpf

    res = bpf.prog_load_raw(int(HOOKS[hook]), raw(insns), log_level=1, name="atomic_probe")
    if res.fd is not None:
        res.fd.close()
        return True, 0, res.log
    return False, res.errno, res.log


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_kernel_refuses_atomics_on_ctx_and_packet(kernel: str, case: tuple[str, int, str]) -> None:  # noqa: F811
    hook, size, name = case
    op = OPS[name]
    for off in (0, 8):
        ok, err, log = _load(hook, on_ctx(size, op, off))
        assert not ok and err == errno.EACCES, log
        assert "BPF_ATOMIC stores into R1 ctx is not allowed" in log
    ok, err, log = _load(hook, on_packet(hook, size, op))
    assert not ok and err == errno.EACCES, log
    assert "BPF_ATOMIC stores into R2 pkt is not allowed" in log
    ok, err, log = _load(hook, on_stack(size, op))
    assert ok, f"the control (the same atomic on the stack) was refused: {log}"


# --- what the engines do -------------------------------------------------------------------------------


def _run(hook: str, insns: list[I], engine: str) -> api.RunResult:
    prog = ProgramSpec("atomic_probe", hook, HOOKS[hook], hook, insns, license="GPL")
    obj = api.load(ObjectSpec("<atomics>", {"atomic_probe": prog}, []), engine=engine)
    return obj.programs["atomic_probe"].run(FRAME)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_engines_fault_alike_on_ctx_atomics(case: tuple[str, int, str]) -> None:
    hook, size, name = case
    nbytes = isa.SIZE_BYTES[size]
    for off in (0, 8):
        a, b = (_run(hook, on_ctx(size, OPS[name], off), e) for e in ("interp", "jit"))
        assert a.error is not None and b.error is not None
        assert str(a.error) == str(b.error)
        assert a.error.kind == "ctx" and a.error.pc == 2
        assert f"atomic operation of {nbytes} bytes on the context at {(2 << 32) + off:#x}" in str(a.error)
        assert a.data == b.data == FRAME
        if hook == "tc":  # nothing reached the skb either (mark at +8 stays 0)
            assert a.skb.mark == b.skb.mark == 0


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_engines_fault_alike_on_packet_atomics(case: tuple[str, int, str]) -> None:
    hook, size, name = case
    a, b = (_run(hook, on_packet(hook, size, OPS[name]), e) for e in ("interp", "jit"))
    assert a.error is not None and b.error is not None
    assert str(a.error) == str(b.error)
    assert a.error.pc == 7 and a.error.region == "packet"
    assert f"atomic operation of {isa.SIZE_BYTES[size]} bytes on the packet" in str(a.error)
    assert a.data == b.data == FRAME  # the packet is untouched


@pytest.mark.parametrize("engine", ["interp", "jit"])
@pytest.mark.parametrize("hook", list(HOOKS))
def test_stack_atomics_still_run(engine: str, hook: str) -> None:
    for name, op in OPS.items():
        r = _run(hook, on_stack(DW, op), engine)
        assert r.error is None, (name, r.error)
        assert r.retval == 2
