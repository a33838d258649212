"""The bpf_conformance / uBPF syntax (`mov %r0, 1`, `ldxw %r0, [%r1+4]`, `jeq %r1, 0, lbl`, ...).

MNEMONICS maps every mnemonic to (builder, operand count, opcode); builders are small functions per
operand shape, and the table is generated from the isa constants so each family is one loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .. import isa
from ..errors import AsmError
from ..isa import Instruction
from .text import Stmt, imm32, imm64, is_register, jump_target, off16, register

Builder = Callable[[str, int, list[str], int], Stmt]  # (mnemonic, opcode, operands, lineno)
MNEMONICS: dict[str, tuple[Builder, int, int]] = {}

ALU_NAMES = {
    "add": isa.BPF_ADD, "sub": isa.BPF_SUB, "mul": isa.BPF_MUL, "div": isa.BPF_DIV, "or": isa.BPF_OR,
    "and": isa.BPF_AND, "lsh": isa.BPF_LSH, "rsh": isa.BPF_RSH, "mod": isa.BPF_MOD, "xor": isa.BPF_XOR,
    "mov": isa.BPF_MOV, "arsh": isa.BPF_ARSH,
}
SIGNED_ALU_NAMES = {"sdiv": isa.BPF_DIV, "smod": isa.BPF_MOD}
JMP_NAMES = {
    "jeq": isa.BPF_JEQ, "jgt": isa.BPF_JGT, "jge": isa.BPF_JGE, "jset": isa.BPF_JSET, "jne": isa.BPF_JNE,
    "jsgt": isa.BPF_JSGT, "jsge": isa.BPF_JSGE, "jlt": isa.BPF_JLT, "jle": isa.BPF_JLE,
    "jslt": isa.BPF_JSLT, "jsle": isa.BPF_JSLE,
}
SIZE_SUFFIX = {"b": isa.BPF_B, "h": isa.BPF_H, "w": isa.BPF_W, "dw": isa.BPF_DW}
LOCK_OPS = {"add": isa.BPF_ADD, "or": isa.BPF_OR, "and": isa.BPF_AND, "xor": isa.BPF_XOR}
_MEM_RE = re.compile(r"\[\s*(%?\w+)\s*(?:([+-])\s*(\w+))?\s*\]")


def _mem(text: str, lineno: int) -> tuple[int, int]:
    """`[%r1+4]`, `[%r10-8]`, `[%r1]` -> (register, offset)."""
    m = _MEM_RE.fullmatch(text.strip())
    if not m:
        raise AsmError(f"invalid memory operand {text.strip()!r} (expected [%rN+offset])", lineno)
    reg, _ = register(m.group(1), lineno, "r")
    off = off16(f"{m.group(2)}{m.group(3)}", lineno) if m.group(3) is not None else 0
    return reg, off


def _reg(text: str, lineno: int) -> int:
    return register(text, lineno, "r")[0]


def _alu(mnemonic: str, opcode: int, ops: list[str], lineno: int) -> Stmt:
    off = 1 if mnemonic.startswith(("sdiv", "smod")) else 0
    dst = _reg(ops[0], lineno)
    if is_register(ops[1]):
        return Stmt([Instruction(opcode | isa.BPF_X, dst, _reg(ops[1], lineno), off)], lineno)
    return Stmt([Instruction(opcode, dst, 0, off, imm32(ops[1], lineno))], lineno)


def _one_reg(mnemonic: str, opcode: int, ops: list[str], lineno: int) -> Stmt:
    """neg (imm 0) and byte swaps (width in imm, taken from the mnemonic)."""
    width = int(mnemonic[-2:]) if opcode & 0xF0 == isa.BPF_END else 0
    return Stmt([Instruction(opcode, _reg(ops[0], lineno), imm=width)], lineno)


def _movsx(mnemonic: str, opcode: int, ops: list[str], lineno: int) -> Stmt:
    bits = int(mnemonic[5:-2])
    return Stmt([Instruction(opcode, _reg(ops[0], lineno), _reg(ops[1], lineno), bits)], lineno)


def _ldx(mnemonic: str, opcode: int, ops: list[str], lineno: int) -> Stmt:
    src, off = _mem(ops[1], lineno)
    return Stmt([Instruction(opcode, _reg(ops[0], lineno), src, off)], lineno)


def _st(mnemonic: str, opcode: int, ops: list[str], lineno: int) -> Stmt:
    dst, off = _mem(ops[0], lineno)
    return Stmt([Instruction(opcode, dst, 0, off, imm32(ops[1], lineno))], lineno)


def _stx(mnemonic: str, opcode: int, ops: list[str], lineno: int) -> Stmt:
    dst, off = _mem(ops[0], lineno)
    return Stmt([Instruction(opcode, dst, _reg(ops[1], lineno), off)], lineno)


def _lddw(mnemonic: str, opcode: int, ops: list[str], lineno: int) -> Stmt:
    return Stmt(list(isa.lddw(_reg(ops[0], lineno), imm64(ops[1], lineno))), lineno)


def _ldabs(mnemonic: str, opcode: int, ops: list[str], lineno: int) -> Stmt:
    return Stmt([Instruction(opcode, imm=imm32(ops[0], lineno))], lineno)


def _ldind(mnemonic: str, opcode: int, ops: list[str], lineno: int) -> Stmt:
    return Stmt([Instruction(opcode, 0, _reg(ops[0], lineno), 0, imm32(ops[1], lineno))], lineno)


def _ja(mnemonic: str, opcode: int, ops: list[str], lineno: int) -> Stmt:
    if opcode == isa.BPF_JMP32 | isa.BPF_JA:  # ja32 = gotol: 32-bit offset in imm
        imm, label = jump_target(ops[0], lineno, 32)
        return Stmt([Instruction(opcode, imm=imm)], lineno, label, "imm")
    off, label = jump_target(ops[0], lineno)
    return Stmt([Instruction(opcode, off=off)], lineno, label)


def _jcond(mnemonic: str, opcode: int, ops: list[str], lineno: int) -> Stmt:
    dst = _reg(ops[0], lineno)
    src = imm = 0
    if is_register(ops[1]):
        src, opcode = _reg(ops[1], lineno), opcode | isa.BPF_X
    else:
        imm = imm32(ops[1], lineno)
    off, label = jump_target(ops[2], lineno)
    return Stmt([Instruction(opcode, dst, src, off, imm)], lineno, label)


def _exit(mnemonic: str, opcode: int, ops: list[str], lineno: int) -> Stmt:
    return Stmt([Instruction(opcode)], lineno)


def parse_call(mnemonic: str, words: list[str], lineno: int) -> Stmt:
    """Every call form of both syntaxes: `call 5`, `call helper 5`, `call local f`, `call local +3`,
    `call runtime 7` / `call kfunc 7` (src 2), `call pc+0x3`, `call f` (a label: local), `call %r1`,
    `callx r1`."""
    text = " ".join(words)
    if mnemonic == "callx" or (len(words) == 1 and is_register(words[0])):
        if len(words) != 1:
            raise AsmError(f"{mnemonic} takes one register operand", lineno)
        return Stmt([Instruction(isa.CALLX, _reg(words[0], lineno))], lineno)
    pc = re.fullmatch(r"pc\s*([+-].*)", text)
    if pc:
        imm, _ = jump_target(pc.group(1).replace(" ", ""), lineno, 32)
        return Stmt([Instruction(isa.CALL, src=isa.PSEUDO_CALL, imm=imm)], lineno)
    if len(words) == 2 and words[0] in ("local", "helper", "runtime", "kfunc"):
        kind, target = words
    elif len(words) == 1:
        numeric = re.fullmatch(r"[+-]?(0[xX][0-9a-fA-F]+|\d+)", words[0])
        kind, target = ("helper" if numeric else "local"), words[0]
    else:
        raise AsmError(f"invalid call {text!r} (call N, call local LABEL, call %rN)", lineno)
    if kind == "local":
        imm, label = jump_target(target, lineno, 32)
        return Stmt([Instruction(isa.CALL, src=isa.PSEUDO_CALL, imm=imm)], lineno, label, "imm")
    src = isa.CALL_HELPER if kind == "helper" else isa.PSEUDO_KFUNC_CALL
    return Stmt([Instruction(isa.CALL, src=src, imm=imm32(target, lineno))], lineno)


def _lock(words: list[str], lineno: int) -> Stmt:
    """`lock [fetch] OP[32] [%rD+off], %rS` with OP in add/or/and/xor/xchg/cmpxchg."""
    head, _, rest = " ".join(words).partition("[")
    names = head.split()
    operands = split_operands("[" + rest) if rest else []
    fetch = bool(names) and names[0] == "fetch"
    names = names[1:] if fetch else names
    if len(names) != 1 or len(operands) != 2:
        raise AsmError("invalid number of operands for lock (lock [fetch] OP [%rD+off], %rS)", lineno)
    op_name = names[0]
    width = isa.BPF_W if op_name.endswith("32") else isa.BPF_DW
    op_name = op_name.removesuffix("32")
    if op_name in LOCK_OPS:
        imm = LOCK_OPS[op_name] | (isa.BPF_FETCH if fetch else 0)
    elif op_name in ("xchg", "cmpxchg"):  # these always fetch; `fetch` is allowed but redundant
        imm = isa.BPF_XCHG if op_name == "xchg" else isa.BPF_CMPXCHG
    else:
        raise AsmError(f"invalid lock operation {names[0]!r}", lineno)
    dst, off = _mem(operands[0], lineno)
    return Stmt([Instruction(isa.BPF_STX | isa.BPF_ATOMIC | width, dst, _reg(operands[1], lineno), off, imm)],
                lineno)


def _build_table() -> None:
    for name, code in {**ALU_NAMES, **SIGNED_ALU_NAMES}.items():
        for suffix, cls in (("", isa.BPF_ALU64), ("64", isa.BPF_ALU64), ("32", isa.BPF_ALU)):
            MNEMONICS[name + suffix] = (_alu, 2, cls | code)
    for suffix, cls in (("", isa.BPF_ALU64), ("64", isa.BPF_ALU64), ("32", isa.BPF_ALU)):
        MNEMONICS["neg" + suffix] = (_one_reg, 1, cls | isa.BPF_NEG)
    for width in (16, 32, 64):
        MNEMONICS[f"be{width}"] = (_one_reg, 1, isa.BPF_ALU | isa.BPF_END | isa.BPF_TO_BE)
        MNEMONICS[f"le{width}"] = (_one_reg, 1, isa.BPF_ALU | isa.BPF_END | isa.BPF_TO_LE)
        MNEMONICS[f"swap{width}"] = MNEMONICS[f"bswap{width}"] = (_one_reg, 1, isa.BPF_ALU64 | isa.BPF_END)
    for bits, cls, suffix in ((8, isa.BPF_ALU, 32), (16, isa.BPF_ALU, 32), (8, isa.BPF_ALU64, 64),
                              (16, isa.BPF_ALU64, 64), (32, isa.BPF_ALU64, 64)):
        MNEMONICS[f"movsx{bits}{suffix}"] = (_movsx, 2, cls | isa.BPF_MOV | isa.BPF_X)
    for suffix, size in SIZE_SUFFIX.items():
        MNEMONICS["ldx" + suffix] = (_ldx, 2, isa.BPF_LDX | isa.BPF_MEM | size)
        MNEMONICS["st" + suffix] = (_st, 2, isa.BPF_ST | isa.BPF_MEM | size)
        MNEMONICS["stx" + suffix] = (_stx, 2, isa.BPF_STX | isa.BPF_MEM | size)
        MNEMONICS["ldabs" + suffix] = (_ldabs, 1, isa.BPF_LD | isa.BPF_ABS | size)
        MNEMONICS["ldind" + suffix] = (_ldind, 2, isa.BPF_LD | isa.BPF_IND | size)
        if size != isa.BPF_DW:
            MNEMONICS["ldxs" + suffix] = (_ldx, 2, isa.BPF_LDX | isa.BPF_MEMSX | size)
    for name, code in JMP_NAMES.items():
        MNEMONICS[name] = (_jcond, 3, isa.BPF_JMP | code)
        MNEMONICS[name + "32"] = (_jcond, 3, isa.BPF_JMP32 | code)
    MNEMONICS["lddw"] = (_lddw, 2, isa.LDDW)
    MNEMONICS["ja"] = (_ja, 1, isa.BPF_JMP | isa.BPF_JA)
    MNEMONICS["ja32"] = (_ja, 1, isa.BPF_JMP32 | isa.BPF_JA)
    MNEMONICS["exit"] = (_exit, 0, isa.EXIT)


_build_table()


def split_operands(text: str) -> list[str]:
    """Split on commas outside brackets; an empty string gives no operands."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip() or out:
        out.append(cur.strip())
    return out


def is_conf_statement(stmt: str) -> bool:
    word = stmt.split(None, 1)[0].lower()
    return word in MNEMONICS or (word == "lock" and "*" not in stmt)


def parse_conf(stmt: str, lineno: int) -> Stmt:
    mnemonic, _, rest = stmt.partition(" ")
    mnemonic = mnemonic.lower()
    if mnemonic == "lock":
        return _lock(rest.split(), lineno)
    if mnemonic not in MNEMONICS:
        raise AsmError(f"unknown mnemonic {mnemonic!r}", lineno)
    build, count, opcode = MNEMONICS[mnemonic]
    ops = split_operands(rest)
    if len(ops) != count:
        raise AsmError(f"{mnemonic} takes {count} operand{'s' if count != 1 else ''}, got {len(ops)}", lineno)
    if any(not o for o in ops):
        raise AsmError(f"empty operand in {stmt!r}", lineno)
    return build(mnemonic, opcode, ops, lineno)
