"""Control-flow structure of a program for the JIT: functions (entry + bpf-to-bpf subprograms),
basic-block leaders and back edges."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import isa
from ..isa import Instruction


class JitUnsupported(Exception):
    """The program uses something the JIT does not translate; the engine runs it in the interpreter."""


@dataclass
class Function:
    index: int
    start: int
    end: int  # one past the last slot
    leaders: list[int] = field(default_factory=list)
    # block start -> True when some jump reaches it from a later (or the same) instruction
    loop_heads: set[int] = field(default_factory=set)


def is_subcall(ins: Instruction) -> bool:
    return ins.opcode == isa.CALL and ins.src == isa.PSEUDO_CALL


def function_entries(insns: list[Instruction], extra: tuple[int, ...] = ()) -> list[int]:
    """Entry points: 0, bpf-to-bpf call targets, and `extra` (subprograms named by the loader,
    callbacks taken by address with lddw PSEUDO_FUNC)."""
    entries = {0, *extra}
    for pc, ins in enumerate(insns):
        if is_subcall(ins):
            entries.add(pc + ins.imm + 1)
    return sorted(e for e in entries if 0 <= e < len(insns))


def build(insns: list[Instruction], extra: tuple[int, ...] = ()) -> list[Function]:
    """Functions with their block leaders. Jumps must stay inside their function."""
    entries = function_entries(insns, extra)
    funcs: list[Function] = []
    for i, start in enumerate(entries):
        end = entries[i + 1] if i + 1 < len(entries) else len(insns)
        f = Function(i, start, end)
        leaders = {start}
        pc = start
        while pc < end:
            ins = insns[pc]
            if ins.is_lddw:
                pc += 2
                continue
            if ins.is_jump:
                t = ins.jump_target(pc)
                if not start <= t < end:
                    raise JitUnsupported(f"insn {pc}: jump to {t} leaves its function [{start}, {end})")
                leaders.add(t)
                if t <= pc:
                    f.loop_heads.add(t)
                if pc + 1 < end:
                    leaders.add(pc + 1)
            elif ins.opcode == isa.EXIT or ins.opcode == isa.CALL or ins.opcode == isa.CALLX:
                # a call ends a block so that a budget fault never lands after a call's side effects
                if pc + 1 < end:
                    leaders.add(pc + 1)
            pc += 1
        f.leaders = sorted(leaders)
        funcs.append(f)
    return funcs
