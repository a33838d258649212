"""Disassembler: one line of llvm-objdump-19 text per instruction slot.

Output is what `llvm-objdump-19 -d` prints for BPF, without addresses, bytes and `<label>` notes.
`alu32=True` prints what `llvm-objdump-19 -d --mattr=+alu32` prints (w registers for sub-64-bit loads,
stores and 32-bit atomics). Where llvm's text would lose information we print a form our assembler
reads back instead (documented in FORMS below), so `assemble(disassemble(p)) == p` always holds:

- 32-bit atomics other than plain `lock +=`: llvm-19 without alu32 prints `<unknown>` or drops the
  fetch flag; we always print the alu32 form (`w1 = atomic_fetch_add((u32 *)(r10 - 0x4), w1)`).
- `call` with src 1 (bpf-to-bpf) prints `call pc+0x3`, src 2 (kfunc) `call kfunc 0x5`
  (llvm prints `call 0x3` for any src).
- lddw with a pseudo source prints llvm's `ld_pseudo r1, 0x1, 0x5` (src, 64-bit immediate).
- invalid encodings (isa.check fails) print `<invalid 0x07 dst=0 src=0 off=1 imm=0x1: reason>`.

The second slot of an lddw prints as FILLER_TEXT (the empty string), which the assembler skips.
"""

from __future__ import annotations

from collections.abc import Mapping

from .. import isa
from ..isa import Instruction
from .text import to_signed

FILLER_TEXT = ""

ALU_OPS = {
    isa.BPF_ADD: "+=", isa.BPF_SUB: "-=", isa.BPF_MUL: "*=", isa.BPF_DIV: "/=", isa.BPF_OR: "|=",
    isa.BPF_AND: "&=", isa.BPF_LSH: "<<=", isa.BPF_RSH: ">>=", isa.BPF_MOD: "%=", isa.BPF_XOR: "^=",
    isa.BPF_MOV: "=", isa.BPF_ARSH: "s>>=",
}
SIGNED_ALU_OPS = {isa.BPF_DIV: "s/=", isa.BPF_MOD: "s%="}  # off == 1
JMP_OPS = {
    isa.BPF_JEQ: "==", isa.BPF_JGT: ">", isa.BPF_JGE: ">=", isa.BPF_JSET: "&", isa.BPF_JNE: "!=",
    isa.BPF_JSGT: "s>", isa.BPF_JSGE: "s>=", isa.BPF_JLT: "<", isa.BPF_JLE: "<=", isa.BPF_JSLT: "s<",
    isa.BPF_JSLE: "s<=",
}
ATOMIC_OPS = {isa.BPF_ADD: "+=", isa.BPF_OR: "|=", isa.BPF_AND: "&=", isa.BPF_XOR: "^="}
ATOMIC_FETCH_NAMES = {isa.BPF_ADD: "add", isa.BPF_OR: "or", isa.BPF_AND: "and", isa.BPF_XOR: "xor"}
UNSIGNED_TYPES = {1: "u8", 2: "u16", 4: "u32", 8: "u64"}
SIGNED_TYPES = {1: "s8", 2: "s16", 4: "s32"}
# ld_pseudo sources whose imm is a map (an fd, or the map index in an ObjectSpec): src -> has value offset
MAP_PSEUDOS = {isa.PSEUDO_MAP_FD: False, isa.PSEUDO_MAP_IDX: False, isa.PSEUDO_MAP_VALUE: True,
               isa.PSEUDO_MAP_IDX_VALUE: True}


def hx(value: int) -> str:
    """llvm's immediate style: signed hex (`0x5`, `-0x1`)."""
    return f"-{-value:#x}" if value < 0 else f"{value:#x}"


def rel(value: int) -> str:
    """llvm's jump offset style: always signed (`+0x1`, `-0x2`, `+0x0`)."""
    return f"-{-value:#x}" if value < 0 else f"+{value:#x}"


def mem(reg: int, off: int) -> str:
    return f"r{reg} - {-off:#x}" if off < 0 else f"r{reg} + {off:#x}"


def _alu(ins: Instruction, alu32: bool) -> str:
    r = "w" if ins.cls == isa.BPF_ALU else "r"
    dst, code = f"{r}{ins.dst}", ins.code
    if code == isa.BPF_NEG:
        return f"{dst} = -{dst}"
    if code == isa.BPF_END:
        name = {isa.BPF_ALU64: "bswap", isa.BPF_ALU: "be" if ins.source == isa.BPF_TO_BE else "le"}[ins.cls]
        return f"r{ins.dst} = {name}{ins.imm} r{ins.dst}"
    src = f"{r}{ins.src}" if ins.source == isa.BPF_X else hx(ins.imm)
    if code == isa.BPF_MOV and ins.off:  # movsx
        return f"{dst} = (s{ins.off}){src}"
    op = SIGNED_ALU_OPS[code] if ins.off == 1 else ALU_OPS[code]
    return f"{dst} {op} {src}"


def _jmp(ins: Instruction, alu32: bool) -> str:
    code = ins.code
    if code == isa.BPF_EXIT:
        return "exit"
    if code == isa.BPF_CALL:
        if ins.source == isa.BPF_X:
            return f"callx r{ins.dst}"
        if ins.src == isa.PSEUDO_CALL:
            return f"call pc{rel(ins.imm)}"
        if ins.src == isa.PSEUDO_KFUNC_CALL:
            return f"call kfunc {hx(ins.imm)}"
        return f"call {hx(ins.imm)}"
    if code == isa.BPF_JA:
        return f"gotol {rel(ins.imm)}" if ins.cls == isa.BPF_JMP32 else f"goto {rel(ins.off)}"
    r = "w" if ins.cls == isa.BPF_JMP32 else "r"
    src = f"{r}{ins.src}" if ins.source == isa.BPF_X else hx(ins.imm)
    return f"if {r}{ins.dst} {JMP_OPS[code]} {src} goto {rel(ins.off)}"


def _ld(ins: Instruction, hi: int, names: Mapping[int, str] | None) -> str:
    ty = UNSIGNED_TYPES[ins.size]
    if ins.mode == isa.BPF_ABS:
        return f"r0 = *({ty} *)skb[{hx(ins.imm)}]"
    if ins.mode == isa.BPF_IND:
        extra = f" + {hx(ins.imm)}" if ins.imm else ""
        return f"r0 = *({ty} *)skb[r{ins.src}{extra}]"
    value = (ins.imm & 0xFFFFFFFF) | ((hi & 0xFFFFFFFF) << 32)
    if ins.src == 0:
        return f"r{ins.dst} = {hx(to_signed(value, 64))} ll"
    text = f"ld_pseudo r{ins.dst}, {hx(ins.src)}, {hx(value)}"
    if names and ins.src in MAP_PSEUDOS and ins.imm in names:
        where = f"+{hi & 0xFFFFFFFF:#x}" if MAP_PSEUDOS[ins.src] else ""
        text += f" <map {names[ins.imm]}{where}>"
    return text


def _ldx(ins: Instruction, alu32: bool) -> str:
    signed = ins.mode == isa.BPF_MEMSX
    ty = (SIGNED_TYPES if signed else UNSIGNED_TYPES)[ins.size]
    r = "w" if alu32 and not signed and ins.size < 8 else "r"
    return f"{r}{ins.dst} = *({ty} *)({mem(ins.src, ins.off)})"


def _st(ins: Instruction, alu32: bool) -> str:
    return f"*({UNSIGNED_TYPES[ins.size]} *)({mem(ins.dst, ins.off)}) = {hx(ins.imm)}"


def _stx(ins: Instruction, alu32: bool) -> str:
    ty, where = UNSIGNED_TYPES[ins.size], mem(ins.dst, ins.off)
    if ins.mode == isa.BPF_MEM:
        r = "w" if alu32 and ins.size < 8 else "r"
        return f"*({ty} *)({where}) = {r}{ins.src}"
    op = ins.imm
    # 32-bit atomics use w registers; llvm-19 without alu32 only knows the plain `lock +=` form
    r = "r" if ins.size == 8 or (op == isa.BPF_ADD and not alu32) else "w"
    if op in ATOMIC_OPS:
        return f"lock *({ty} *)({where}) {ATOMIC_OPS[op]} {r}{ins.src}"
    if op & isa.BPF_FETCH and op & ~isa.BPF_FETCH in ATOMIC_FETCH_NAMES:
        name = ATOMIC_FETCH_NAMES[op & ~isa.BPF_FETCH]
        return f"{r}{ins.src} = atomic_fetch_{name}(({ty} *)({where}), {r}{ins.src})"
    suffix = "_64" if ins.size == 8 else "32_32"
    if op == isa.BPF_XCHG:
        return f"{r}{ins.src} = xchg{suffix}({where}, {r}{ins.src})"
    return f"{r}0 = cmpxchg{suffix}({where}, {r}0, {r}{ins.src})"  # BPF_CMPXCHG


# Printers per class, each taking (ins, alu32); BPF_LD (lddw, legacy packet loads) is handled apart.
PRINTERS = {isa.BPF_ALU: _alu, isa.BPF_ALU64: _alu, isa.BPF_JMP: _jmp, isa.BPF_JMP32: _jmp,
            isa.BPF_LDX: _ldx, isa.BPF_ST: _st, isa.BPF_STX: _stx}


def disassemble_insn(
    ins: Instruction,
    pc: int | None = None,
    next_ins: Instruction | None = None,
    *,
    alu32: bool = False,
    names: Mapping[int, str] | None = None,
) -> str:
    """One instruction as llvm-objdump-19 prints it. With `pc`, jumps and local calls get a
    `<insn N>` note naming the target slot (the assembler ignores `<...>` notes). `next_ins` is the
    lddw's second slot when `ins.next_imm` was not filled in. `names` maps map indices to names for
    `ld_pseudo` notes."""
    why = isa.check(ins)
    if why:
        return (f"<invalid {ins.opcode:#04x} dst={ins.dst} src={ins.src} off={ins.off} "
                f"imm={hx(ins.imm)}: {why}>")
    if ins.cls == isa.BPF_LD:
        hi = next_ins.imm if next_ins is not None and ins.next_imm == 0 else ins.next_imm
        return _ld(ins, hi, names)
    text = PRINTERS[ins.cls](ins, alu32)
    if pc is not None and (ins.is_jump or (ins.opcode == isa.CALL and ins.src == isa.PSEUDO_CALL)):
        target = ins.jump_target(pc) if ins.is_jump else pc + ins.imm + 1
        text += f" <insn {target}>"
    return text


def disassemble_one(ins: Instruction) -> str:
    """`str(Instruction)`: the instruction alone, default style; an lddw second half says so."""
    if ins.is_filler:
        return f"<lddw second half, imm {hx(ins.imm)}>"
    return disassemble_insn(ins)


def disassemble(
    insns: list[Instruction], *, alu32: bool = False, names: Mapping[int, str] | None = None
) -> list[str]:
    """One line per slot; an lddw's second slot gives FILLER_TEXT (the empty string)."""
    out: list[str] = []
    prev_lddw = False
    for pc, ins in enumerate(insns):
        if prev_lddw:
            out.append(FILLER_TEXT)
            prev_lddw = False
            continue
        nxt = insns[pc + 1] if ins.is_lddw and pc + 1 < len(insns) else None
        out.append(disassemble_insn(ins, None, nxt, alu32=alu32, names=names))
        prev_lddw = ins.is_lddw
    return out
