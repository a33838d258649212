"""Random ALU/JMP programs: the interpreter and the running kernel give the same r0 (derandomized)."""

from __future__ import annotations

import kernel_fixtures
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xdpsim import isa
from xdpsim.engines.base import RunState
from xdpsim.engines.interp import Interpreter
from xdpsim.runtime import Runtime
from xdpsim.spec import ObjectSpec, ProgramSpec, ProgType

kernel = kernel_fixtures.kernel
REGS = range(6)
BINARY = [isa.BPF_ADD, isa.BPF_SUB, isa.BPF_MUL, isa.BPF_DIV, isa.BPF_OR, isa.BPF_AND, isa.BPF_LSH,
          isa.BPF_RSH, isa.BPF_MOD, isa.BPF_XOR, isa.BPF_MOV, isa.BPF_ARSH]
JUMPS = [isa.BPF_JEQ, isa.BPF_JGT, isa.BPF_JGE, isa.BPF_JSET, isa.BPF_JNE, isa.BPF_JSGT, isa.BPF_JSGE,
         isa.BPF_JLT, isa.BPF_JLE, isa.BPF_JSLT, isa.BPF_JSLE]
imm32 = st.one_of(st.integers(-(1 << 31), (1 << 31) - 1),
                  st.sampled_from([0, 1, -1, 31, 32, 63, 64, -(1 << 31)]))


@st.composite
def alu(draw: st.DrawFn) -> list[isa.Instruction]:
    cls = draw(st.sampled_from([isa.BPF_ALU, isa.BPF_ALU64]))
    dst, src = draw(st.sampled_from(REGS)), draw(st.sampled_from(REGS))
    kind = draw(st.sampled_from(["bin", "bin", "bin", "neg", "end", "movsx", "sdiv"]))
    if kind == "neg":
        return [isa.Instruction(cls | isa.BPF_NEG, dst)]
    if kind == "end":
        width = draw(st.sampled_from([16, 32, 64]))
        src_bit = isa.BPF_K if cls == isa.BPF_ALU64 else draw(st.sampled_from([isa.BPF_TO_LE, isa.BPF_TO_BE]))
        return [isa.Instruction(cls | isa.BPF_END | src_bit, dst, 0, 0, width)]
    if kind == "movsx":
        widths = [8, 16, 32] if cls == isa.BPF_ALU64 else [8, 16]
        return [isa.Instruction(cls | isa.BPF_MOV | isa.BPF_X, dst, src, draw(st.sampled_from(widths)))]
    op = draw(st.sampled_from(BINARY)) if kind == "bin" else draw(st.sampled_from([isa.BPF_DIV, isa.BPF_MOD]))
    off = 1 if kind == "sdiv" else 0
    if draw(st.booleans()):
        return [isa.Instruction(cls | op | isa.BPF_X, dst, src, off)]
    imm = draw(imm32)
    if op in (isa.BPF_DIV, isa.BPF_MOD) and imm == 0:
        imm = 3  # the verifier refuses a constant zero divisor
    if op in (isa.BPF_LSH, isa.BPF_RSH, isa.BPF_ARSH):
        imm &= 31 if cls == isa.BPF_ALU else 63  # the verifier refuses out-of-range constant shifts
    return [isa.Instruction(cls | op | isa.BPF_K, dst, 0, off, imm)]


@st.composite
def jump(draw: st.DrawFn) -> list[isa.Instruction]:
    """A conditional jump over one ALU instruction."""
    cls = draw(st.sampled_from([isa.BPF_JMP, isa.BPF_JMP32]))
    op = draw(st.sampled_from(JUMPS))
    dst, src = draw(st.sampled_from(REGS)), draw(st.sampled_from(REGS))
    body = draw(alu())
    if draw(st.booleans()):
        j = isa.Instruction(cls | op | isa.BPF_X, dst, src, len(body))
    else:
        j = isa.Instruction(cls | op | isa.BPF_K, dst, 0, len(body), draw(imm32))
    return [j, *body]


@st.composite
def programs(draw: st.DrawFn) -> list[isa.Instruction]:
    insns: list[isa.Instruction] = []
    for r in REGS:
        insns += isa.lddw(r, draw(st.integers(0, (1 << 64) - 1)))
    for _ in range(draw(st.integers(1, 12))):
        insns += draw(st.one_of(alu(), alu(), jump()))
    for r in range(1, 6):  # fold every register into r0
        insns.append(isa.Instruction(isa.BPF_ALU64 | isa.BPF_XOR | isa.BPF_X, 0, r))
    return insns


def spec(insns: list[isa.Instruction]) -> ObjectSpec:
    p = ProgramSpec("f", "xdp", ProgType.XDP, "xdp", insns, license="GPL")
    return ObjectSpec("<fuzz>", {"f": p}, [], license="GPL")


def interp_r0(insns: list[isa.Instruction], single_step: bool = False) -> int:
    """r0 from the interpreter; `single_step` forces one op per instruction (a tracer is set)."""
    rt = Runtime()
    pid = rt.load(spec([*insns, isa.Instruction(isa.EXIT)])).programs["f"]
    state = RunState(rt, tracer=(lambda p, pc, regs: None) if single_step else None)
    return Interpreter().run(rt, pid, state)


def kernel_r0(insns: list[isa.Instruction]) -> int:
    from xdpsim.engines.kernel import KernelCollection

    halves = []
    for tail in ([], [isa.Instruction(isa.BPF_ALU64 | isa.BPF_RSH | isa.BPF_K, 0, 0, 0, 32)]):
        with KernelCollection(spec([*insns, *tail, isa.Instruction(isa.EXIT)])) as kc:
            halves.append(kc.run_xdp("f", bytes(64)).retval & 0xFFFF_FFFF)
    return halves[0] | halves[1] << 32


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(programs())
def test_random_programs_agree_with_kernel(kernel: str, insns: list[isa.Instruction]) -> None:
    assert interp_r0(insns) == kernel_r0(insns), [str(i) for i in insns]


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(programs())
def test_straight_line_runs_agree_with_single_steps(insns: list[isa.Instruction]) -> None:
    assert interp_r0(insns) == interp_r0(insns, single_step=True)
