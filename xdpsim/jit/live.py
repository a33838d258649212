"""Register liveness of one eBPF function, for tier 1's lazy register stores (lower.py, compact mode).

Tier 1 keeps a register's latest value as an SSA value inside a block and writes it to its alloca only
where a later read may load it from there; a register no path reads again before writing it is not
written back at all. The analysis is conservative: anything but plain ALU, loads, stores, lddw and
conditional jumps (calls, exits, atomics, instructions left to Python) reads every register, and only
ALU, LDX and lddw kill their destination.
"""

from __future__ import annotations

from .. import isa
from ..isa import Instruction
from .cfg import Function

ALL = (1 << 11) - 1  # r0..r10


def uses_defs(ins: Instruction) -> tuple[int, int]:
    """(registers read, registers certainly written) as bit masks."""
    cls = ins.cls
    dst, src = 1 << ins.dst, 1 << ins.src
    if ins.is_lddw:
        return 0, dst
    if cls in (isa.BPF_ALU, isa.BPF_ALU64):
        code = ins.code
        x = src if ins.source == isa.BPF_X and code not in (isa.BPF_END, isa.BPF_NEG) else 0
        return (x if code == isa.BPF_MOV else dst | x), dst
    if cls == isa.BPF_LDX:
        return src, dst
    if cls == isa.BPF_ST:
        return dst, 0
    if cls == isa.BPF_STX and ins.mode != isa.BPF_ATOMIC:
        return dst | src, 0
    if cls in (isa.BPF_JMP, isa.BPF_JMP32) and ins.code not in (isa.BPF_CALL, isa.BPF_EXIT):
        if ins.code == isa.BPF_JA:
            return 0, 0
        return dst | (src if ins.source == isa.BPF_X else 0), 0
    return ALL, 0


def successors(ins: Instruction, pc: int) -> list[int]:
    if ins.cls in (isa.BPF_JMP, isa.BPF_JMP32):
        if ins.code == isa.BPF_EXIT:
            return []
        if ins.code == isa.BPF_JA:
            return [ins.jump_target(pc)]
        if ins.code != isa.BPF_CALL:
            return [ins.jump_target(pc), pc + 1]
    return [pc + (2 if ins.is_lddw else 1)]


def live_before(insns: list[Instruction], func: Function) -> dict[int, int]:
    """pc -> registers (bit mask) some path from pc reads before writing, for every slot of `func`
    that starts an instruction (a path leaving the function counts as reading everything)."""
    pcs: list[int] = []
    pc = func.start
    while pc < func.end:
        pcs.append(pc)
        pc += 2 if insns[pc].is_lddw else 1
    info = [(pc, *uses_defs(insns[pc]), successors(insns[pc], pc)) for pc in reversed(pcs)]
    live = dict.fromkeys(pcs, 0)
    changed = True
    while changed:  # backwards to a fixed point (bounded loops: a few passes)
        changed = False
        for pc, uses, defs, succ in info:
            after = 0
            for s in succ:
                after |= live.get(s, ALL)
            v = uses | (after & ~defs)
            if v != live[pc]:
                live[pc] = v
                changed = True
    return live


def live_after(insns: list[Instruction], live: dict[int, int], pc: int) -> int:
    after = 0
    for s in successors(insns[pc], pc):
        after |= live.get(s, ALL)
    return after
