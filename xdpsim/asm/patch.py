"""Inserting instructions into a linked program, with every pc-relative reference fixed up.

    p = patch(insns, before={12: [...]}, replace={30: [...]})
    p.insns, p.new_pc(old), p.old_pc(new), p.shift_func_info(...), p.shift_line_info(...), remap_log(text, p)

`before[pc]` puts instructions in front of old instruction `pc`; `replace[pc]` puts instructions in its
place (a one-slot instruction: not an lddw, not a jump). A jump, a bpf-to-bpf call or a PSEUDO_FUNC
`lddw` aimed at old `pc` then lands on the first inserted instruction, so code inserted before an
instruction runs whichever way control reaches it. Offsets inside inserted code are the caller's
business (they are relative to the inserted instructions and never leave them). BTF func_info and
line_info move with their instructions: inserted code belongs to the source line of the instruction it
was put in front of, which keeps verifier messages and faults naming the original C line; `old_pc`
maps a patched index (as a verifier log prints it) back to the original numbering.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import replace as dc_replace
from typing import TypeVar

from ..errors import EncodingError
from ..isa import BPF_CALL, BPF_JA, BPF_JMP, BPF_JMP32, LDDW, PSEUDO_CALL, PSEUDO_FUNC, Instruction

S16 = (-(1 << 15), (1 << 15) - 1)
S32 = (-(1 << 31), (1 << 31) - 1)

T = TypeVar("T")


@dataclass(frozen=True)
class Patched:
    """A patched program. `starts[pc]`: new index of the first instruction standing for old `pc` (its
    inserted code, else itself); `starts[len(old)]` is the new length. `at[pc]`: new index of old
    instruction `pc` itself (None when replaced)."""

    insns: list[Instruction]
    starts: list[int]
    at: list[int | None]

    def new_pc(self, old: int) -> int:
        """Where control that reached old instruction `old` now arrives (its inserted code first)."""
        return self.starts[old]

    def old_pc(self, new: int) -> int:
        """The old instruction a patched index belongs to (inserted code: the instruction it precedes
        or replaces)."""
        if not 0 <= new < self.starts[-1]:
            raise IndexError(f"instruction {new} is outside the patched program ({self.starts[-1]} slots)")
        return bisect_right(self.starts, new) - 1

    def shift(self, items: Sequence[T]) -> list[T]:
        """func_info / line_info records (anything with `insn_off`) at their instructions' new starts."""
        return [dc_replace(x, insn_off=self.starts[x.insn_off]) for x in items]  # type: ignore[type-var]

    def shift_functions(self, functions: Mapping[int, str]) -> dict[int, str]:
        return {self.starts[off]: name for off, name in functions.items()}


def _is_ref(ins: Instruction) -> str | None:
    """Which pc-relative field an instruction carries: "off", "imm" or None."""
    if ins.opcode == LDDW:
        return "imm" if ins.src == PSEUDO_FUNC else None
    if ins.cls not in (BPF_JMP, BPF_JMP32):
        return None
    if ins.code == BPF_CALL:
        return "imm" if ins.src == PSEUDO_CALL else None
    if not ins.is_jump:
        return None
    return "imm" if ins.cls == BPF_JMP32 and ins.code == BPF_JA else "off"


def patch(insns: Sequence[Instruction], before: Mapping[int, Sequence[Instruction]] | None = None,
          replace: Mapping[int, Sequence[Instruction]] | None = None) -> Patched:
    """The program with `before` code put in front of, and `replace` code in place of, old instructions
    (see the module doc). Raises EncodingError naming the instruction when a fixed-up offset no longer
    fits its field, or an edit points at an lddw's second slot or a jump it would have to replace."""
    before = dict(before or {})
    replace = dict(replace or {})
    n = len(insns)
    fillers = {pc + 1 for pc, ins in enumerate(insns) if ins.opcode == LDDW}
    for pc in [*before, *replace]:
        if not 0 <= pc < n:
            raise EncodingError(f"patch at instruction {pc}: outside the program ({n} slots)", pc)
        if pc in fillers:
            raise EncodingError(f"patch at instruction {pc}: the second slot of an lddw", pc)
    for pc in replace:
        if not replace[pc]:
            raise EncodingError(f"patch at instruction {pc}: an empty replacement (no deletes)", pc)
        if insns[pc].opcode == LDDW or _is_ref(insns[pc]):
            raise EncodingError(f"patch at instruction {pc}: cannot replace `{insns[pc]}` (an lddw or an "
                                "instruction with a pc-relative offset)", pc)
    starts: list[int] = []
    at: list[int | None] = []
    pos = 0
    for pc in range(n):
        starts.append(pos)
        pos += len(before.get(pc, ()))
        if pc in replace:
            at.append(None)
            pos += len(replace[pc])
        else:
            at.append(pos)
            pos += 1
    starts.append(pos)
    out: list[Instruction] = []
    for pc, ins in enumerate(insns):
        out.extend(before.get(pc, ()))
        if pc in replace:
            out.extend(replace[pc])
            continue
        kind = _is_ref(ins) if pc not in fillers else None
        if kind is None:
            out.append(ins)
            continue
        rel = ins.off if kind == "off" else ins.imm
        target = pc + rel + 1
        if not 0 <= target < n:
            raise EncodingError(f"instruction {pc}: `{ins}` points outside the program (to {target})", pc)
        new_rel = starts[target] - at[pc] - 1  # type: ignore[operator]
        lo, hi = S16 if kind == "off" else S32
        if not lo <= new_rel <= hi:
            raise EncodingError(f"instruction {pc}: `{ins}`: offset {new_rel} after patching does not fit "
                                f"its {'16' if kind == 'off' else '32'}-bit field", pc)
        out.append(dc_replace(ins, off=new_rel) if kind == "off" else dc_replace(ins, imm=new_rel))
    return Patched(out, starts, at)


# Verifier log lines name instructions as `12: (85) call ...`, `from 12 to 15: ...`, `12: R0=...`,
# `; ... @ file:line` (no index), `insn 12` / `at insn 12` in some messages.
_LOG_INDEX = re.compile(r"^(\d+)(?=: )|(?<=from )(\d+)(?= to )|(?<= to )(\d+)(?=: )|(?<=insn )(\d+)|"
                        r"(?<=insn_idx )(\d+)|(?<=jump to )(\d+)")


def remap_log(text: str, p: Patched) -> str:
    """A verifier log of the patched program with instruction indexes in the original numbering."""

    def sub(m: re.Match[str]) -> str:
        idx = int(m.group(0))
        try:
            return str(p.old_pc(idx))
        except IndexError:
            return m.group(0)

    return "\n".join(_LOG_INDEX.sub(sub, line) for line in text.split("\n"))
