"""The llvm-objdump / llvm-mc syntax (`r0 = *(u32 *)(r1 + 0x4)`, `if r1 > 0x5 goto +0x3`, ...).

A table of (pattern, builder): the first pattern that matches the whole statement builds it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .. import isa
from ..errors import AsmError
from ..isa import Instruction
from .conf_syntax import parse_call
from .disasm import ALU_OPS, ATOMIC_FETCH_NAMES, ATOMIC_OPS, JMP_OPS, SIGNED_ALU_OPS
from .text import Stmt, imm32, imm64, jump_target, off16, register

SIZES = {1: isa.BPF_B, 2: isa.BPF_H, 4: isa.BPF_W, 8: isa.BPF_DW}
TYPE_BYTES = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "s8": 1, "s16": 2, "s32": 4}
ALU_BY_SYMBOL = {sym: code for code, sym in ALU_OPS.items()}
SIGNED_ALU_BY_SYMBOL = {sym: code for code, sym in SIGNED_ALU_OPS.items()}
JMP_BY_SYMBOL = {sym: code for code, sym in JMP_OPS.items()}
ATOMIC_BY_SYMBOL = {sym: op for op, sym in ATOMIC_OPS.items()}
FETCH_BY_NAME = {name: op | isa.BPF_FETCH for op, name in ATOMIC_FETCH_NAMES.items()}

REG = r"(%?[rw]\d+)"
TY = r"\*\(\s*([us]\d+)\s*\*\s*\)"
PTR = r"\(\s*([us]\d+)\s*\*\s*\)"
ADDR = r"(%?[rw]\d+)\s*(?:([+-])\s*(\w+))?"
VAL = r"(\S+)"

Builder = Callable[[re.Match[str], int], Stmt]
FORMS: list[tuple[re.Pattern[str], Builder]] = []


def form(pattern: str) -> Callable[[Builder], Builder]:
    def register_form(fn: Builder) -> Builder:
        FORMS.append((re.compile(pattern), fn))
        return fn

    return register_form


def _size(type_name: str, lineno: int, allowed: tuple[int, ...] = (1, 2, 4, 8), unsigned: bool = False
          ) -> int:
    n = TYPE_BYTES.get(type_name)
    if n is None or n not in allowed or (unsigned and type_name.startswith("s")):
        raise AsmError(f"invalid access type {type_name!r} here", lineno)
    return n


def _addr(m: re.Match[str], first: int, lineno: int) -> tuple[int, int]:
    """(base register, offset) from the ADDR groups starting at group `first`."""
    base, _ = register(m.group(first), lineno, "r")
    sign, amount = m.group(first + 1), m.group(first + 2)
    off = off16(f"{sign}{amount}", lineno) if amount is not None else 0
    return base, off


def _reg(text: str, lineno: int, kind: str | None = None) -> int:
    n, k = register(text, lineno)
    if kind is not None and k != kind:
        raise AsmError(f"register {text} mixes 32-bit (w) and 64-bit (r) operands", lineno)
    return n


def _same_reg(a: str, b: str, lineno: int) -> bool:
    return register(a, lineno)[0] == register(b, lineno)[0]


@form(r"exit")
def _exit(m: re.Match[str], lineno: int) -> Stmt:
    return Stmt([Instruction(isa.EXIT)], lineno)


@form(r"goto\s+(\S+)")
def _goto(m: re.Match[str], lineno: int) -> Stmt:
    off, label = jump_target(m.group(1), lineno)
    return Stmt([Instruction(isa.BPF_JMP | isa.BPF_JA, off=off)], lineno, label)


@form(r"gotol\s+(\S+)")
def _gotol(m: re.Match[str], lineno: int) -> Stmt:
    imm, label = jump_target(m.group(1), lineno, 32)
    return Stmt([Instruction(isa.BPF_JMP32 | isa.BPF_JA, imm=imm)], lineno, label, "imm")


@form(r"(callx?)\s+(.+)")
def _call(m: re.Match[str], lineno: int) -> Stmt:
    return parse_call(m.group(1), m.group(2).split(), lineno)


@form(rf"if\s+{REG}\s*(s>=|s<=|s>|s<|==|!=|>=|<=|>|<|&)\s*{VAL}\s+goto\s+{VAL}")
def _cond_jump(m: re.Match[str], lineno: int) -> Stmt:
    dst, kind = register(m.group(1), lineno)
    cls = isa.BPF_JMP32 if kind == "w" else isa.BPF_JMP
    opcode = cls | JMP_BY_SYMBOL[m.group(2)]
    src = imm = 0
    if m.group(3).lstrip("%")[:1] in ("r", "w"):
        src = _reg(m.group(3), lineno, kind)
        opcode |= isa.BPF_X
    else:
        imm = imm32(m.group(3), lineno)
    off, label = jump_target(m.group(4), lineno)
    return Stmt([Instruction(opcode, dst, src, off, imm)], lineno, label)


@form(rf"ld_pseudo\s+{REG}\s*,\s*{VAL}\s*,\s*{VAL}")
def _ld_pseudo(m: re.Match[str], lineno: int) -> Stmt:
    dst = _reg(m.group(1), lineno, "r")
    src = imm32(m.group(2), lineno)
    if src not in isa.LDDW_PSEUDOS:
        raise AsmError(f"unknown ld_pseudo source {m.group(2)}", lineno)
    return Stmt(list(isa.lddw(dst, imm64(m.group(3), lineno), src)), lineno)


@form(rf"{REG}\s*=\s*{VAL}\s+ll")
def _lddw(m: re.Match[str], lineno: int) -> Stmt:
    dst = _reg(m.group(1), lineno, "r")
    return Stmt(list(isa.lddw(dst, imm64(m.group(2), lineno))), lineno)


@form(rf"{REG}\s*=\s*{TY}\s*skb\[\s*([^\]]+?)\s*\]")
def _ld_packet(m: re.Match[str], lineno: int) -> Stmt:
    if _reg(m.group(1), lineno, "r") != 0:
        raise AsmError("legacy packet loads always write r0", lineno)
    size = SIZES[_size(m.group(2), lineno)]
    inner = m.group(3)
    im = re.fullmatch(rf"{REG}\s*(?:\+\s*(\S+))?", inner)
    if im:
        imm = imm32(im.group(2), lineno) if im.group(2) else 0
        src = _reg(im.group(1), lineno, "r")
        return Stmt([Instruction(isa.BPF_LD | isa.BPF_IND | size, 0, src, 0, imm)], lineno)
    return Stmt([Instruction(isa.BPF_LD | isa.BPF_ABS | size, imm=imm32(inner, lineno))], lineno)


@form(rf"{REG}\s*=\s*{TY}\s*\(\s*{ADDR}\s*\)")
def _load(m: re.Match[str], lineno: int) -> Stmt:
    dst, kind = register(m.group(1), lineno)
    signed = m.group(2).startswith("s")
    n = _size(m.group(2), lineno)
    if kind == "w" and (signed or n == 8):
        raise AsmError(f"a {m.group(2)} load writes a 64-bit register", lineno)
    src, off = _addr(m, 3, lineno)
    mode = isa.BPF_MEMSX if signed else isa.BPF_MEM
    return Stmt([Instruction(isa.BPF_LDX | mode | SIZES[n], dst, src, off)], lineno)


@form(rf"{TY}\s*\(\s*{ADDR}\s*\)\s*=\s*{VAL}")
def _store(m: re.Match[str], lineno: int) -> Stmt:
    n = _size(m.group(1), lineno, unsigned=True)
    dst, off = _addr(m, 2, lineno)
    value = m.group(5)
    if value.lstrip("%")[:1] in ("r", "w"):
        src, kind = register(value, lineno)
        if kind == "w" and n == 8:
            raise AsmError("a u64 store needs a 64-bit register", lineno)
        return Stmt([Instruction(isa.BPF_STX | isa.BPF_MEM | SIZES[n], dst, src, off)], lineno)
    return Stmt([Instruction(isa.BPF_ST | isa.BPF_MEM | SIZES[n], dst, 0, off, imm32(value, lineno))], lineno)


def _atomic(type_name: str, dst: int, off: int, src_text: str, op: int, lineno: int) -> Instruction:
    n = _size(type_name, lineno, (4, 8), unsigned=True)
    src, kind = register(src_text, lineno)
    if kind == "w" and n == 8:
        raise AsmError("a 64-bit atomic needs a 64-bit register", lineno)
    return Instruction(isa.BPF_STX | isa.BPF_ATOMIC | SIZES[n], dst, src, off, op)


@form(rf"lock\s+{TY}\s*\(\s*{ADDR}\s*\)\s*([+|&^])=\s*{REG}")
def _lock(m: re.Match[str], lineno: int) -> Stmt:
    dst, off = _addr(m, 2, lineno)
    op = ATOMIC_BY_SYMBOL[m.group(5) + "="]
    return Stmt([_atomic(m.group(1), dst, off, m.group(6), op, lineno)], lineno)


@form(rf"{REG}\s*=\s*atomic_fetch_(add|or|and|xor)\s*\(\s*{PTR}\s*\(\s*{ADDR}\s*\)\s*,\s*{REG}\s*\)")
def _fetch(m: re.Match[str], lineno: int) -> Stmt:
    if not _same_reg(m.group(1), m.group(7), lineno):
        raise AsmError("atomic_fetch_* returns into its source register", lineno)
    dst, off = _addr(m, 4, lineno)
    return Stmt([_atomic(m.group(3), dst, off, m.group(7), FETCH_BY_NAME[m.group(2)], lineno)], lineno)


@form(rf"{REG}\s*=\s*(xchg_64|xchg32_32)\s*\(\s*{ADDR}\s*,\s*{REG}\s*\)")
def _xchg(m: re.Match[str], lineno: int) -> Stmt:
    name = m.group(2)
    if not _same_reg(m.group(1), m.group(6), lineno):
        raise AsmError(f"{name} returns into its source register: `r1 = {name}(addr, r1)`", lineno)
    dst, off = _addr(m, 3, lineno)
    type_name = "u64" if name == "xchg_64" else "u32"
    return Stmt([_atomic(type_name, dst, off, m.group(6), isa.BPF_XCHG, lineno)], lineno)


@form(rf"{REG}\s*=\s*(cmpxchg_64|cmpxchg32_32)\s*\(\s*{ADDR}\s*,\s*{REG}\s*,\s*{REG}\s*\)")
def _cmpxchg(m: re.Match[str], lineno: int) -> Stmt:
    name = m.group(2)
    if register(m.group(1), lineno)[0] != 0 or register(m.group(6), lineno)[0] != 0:
        raise AsmError(f"{name} compares and returns r0: `r0 = {name}(addr, r0, reg)`", lineno)
    dst, off = _addr(m, 3, lineno)
    type_name = "u64" if name == "cmpxchg_64" else "u32"
    return Stmt([_atomic(type_name, dst, off, m.group(7), isa.BPF_CMPXCHG, lineno)], lineno)


@form(rf"{REG}\s*=\s*-\s*{REG}")
def _neg(m: re.Match[str], lineno: int) -> Stmt:
    dst, kind = register(m.group(1), lineno)
    if _reg(m.group(2), lineno, kind) != dst:
        raise AsmError("neg needs the same register on both sides", lineno)
    cls = isa.BPF_ALU if kind == "w" else isa.BPF_ALU64
    return Stmt([Instruction(cls | isa.BPF_NEG, dst)], lineno)


@form(rf"{REG}\s*=\s*\(\s*s(8|16|32)\s*\)\s*{REG}")
def _movsx(m: re.Match[str], lineno: int) -> Stmt:
    dst, kind = register(m.group(1), lineno)
    src = _reg(m.group(3), lineno, kind)
    bits = int(m.group(2))
    if kind == "w" and bits == 32:
        raise AsmError("w = (s32)w is not an instruction", lineno)
    cls = isa.BPF_ALU if kind == "w" else isa.BPF_ALU64
    return Stmt([Instruction(cls | isa.BPF_MOV | isa.BPF_X, dst, src, bits)], lineno)


@form(rf"{REG}\s*=\s*(be|le|bswap)(16|32|64)\s+{REG}")
def _endian(m: re.Match[str], lineno: int) -> Stmt:
    dst = _reg(m.group(1), lineno, "r")
    if _reg(m.group(4), lineno, "r") != dst:
        raise AsmError("byte swap needs the same register on both sides", lineno)
    opcode = {"be": isa.BPF_ALU | isa.BPF_TO_BE, "le": isa.BPF_ALU | isa.BPF_TO_LE,
              "bswap": isa.BPF_ALU64}[m.group(2)] | isa.BPF_END
    return Stmt([Instruction(opcode, dst, imm=int(m.group(3)))], lineno)


@form(rf"{REG}\s*(s>>|<<|>>|s/|s%|[-+*/|&%^])?=\s*{VAL}")
def _alu(m: re.Match[str], lineno: int) -> Stmt:
    dst, kind = register(m.group(1), lineno)
    sym = (m.group(2) or "") + "="
    cls = isa.BPF_ALU if kind == "w" else isa.BPF_ALU64
    off = 0
    if sym in SIGNED_ALU_BY_SYMBOL:
        code, off = SIGNED_ALU_BY_SYMBOL[sym], 1
    else:
        code = ALU_BY_SYMBOL[sym]
    value = m.group(3)
    if value.lstrip("%")[:1] in ("r", "w"):
        src = _reg(value, lineno, kind)
        return Stmt([Instruction(cls | code | isa.BPF_X, dst, src, off)], lineno)
    return Stmt([Instruction(cls | code, dst, 0, off, imm32(value, lineno))], lineno)


def parse_llvm(stmt: str, lineno: int) -> Stmt:
    for pattern, build in FORMS:
        m = pattern.fullmatch(stmt)
        if m:
            return build(m, lineno)
    raise AsmError(f"cannot parse {stmt!r}", lineno)
