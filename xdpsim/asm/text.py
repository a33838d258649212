"""Lexical helpers shared by both assembler syntaxes: numbers, registers, ranges, statements.

Every parse error is an `AsmError` carrying the source line number, so callers only pass `lineno`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import AsmError
from ..isa import Instruction

# A label may be used before it is defined; the statement records which field the resolved
# pc-relative distance goes into ("off" for jumps, "imm" for gotol and local calls).
LABEL_RE = re.compile(r"[A-Za-z_.$][\w.$]*")
_INT_RE = re.compile(r"[+-]?(0[xX][0-9a-fA-F]+|[0-9]+)")
_REG_RE = re.compile(r"%?([rw])(\d+)")

S16 = (-(1 << 15), (1 << 15) - 1)
S32 = (-(1 << 31), (1 << 31) - 1)


@dataclass
class Stmt:
    """One source statement: its instruction slots and, if it names a label, the pending fixup."""

    insns: list[Instruction]
    lineno: int
    label: str | None = None
    field: str = "off"  # which field of insns[0] receives the label distance


def parse_int(text: str, lineno: int, what: str = "number") -> tuple[int, bool]:
    """An integer in decimal or hex, optionally signed; returns (value, written_in_hex)."""
    t = text.strip()
    if not _INT_RE.fullmatch(t):
        raise AsmError(f"invalid {what} {text.strip()!r}", lineno)
    body = t.lstrip("+-")
    is_hex = body[:2].lower() == "0x"
    value = int(body, 16 if is_hex else 10)
    return (-value if t.startswith("-") else value), is_hex


def imm32(text: str, lineno: int) -> int:
    """A 32-bit immediate as encoded (signed). Decimal must fit s32; hex may be written as u32."""
    value, is_hex = parse_int(text, lineno, "immediate")
    hi = 0xFFFFFFFF if is_hex else S32[1]
    if not S32[0] <= value <= hi:
        raise AsmError(f"immediate {text.strip()} does not fit in 32 bits", lineno)
    return to_signed(value, 32)


def imm64(text: str, lineno: int) -> int:
    value, _ = parse_int(text, lineno, "64-bit immediate")
    if not -(1 << 63) <= value < (1 << 64):
        raise AsmError(f"immediate {text.strip()} does not fit in 64 bits", lineno)
    return value & ((1 << 64) - 1)


def off16(text: str, lineno: int) -> int:
    """A 16-bit offset (signed; hex may be written as u16)."""
    value, is_hex = parse_int(text, lineno, "offset")
    hi = 0xFFFF if is_hex else S16[1]
    if not S16[0] <= value <= hi:
        raise AsmError(f"offset {text.strip()} does not fit in 16 bits", lineno)
    return to_signed(value, 16)


def to_signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def register(text: str, lineno: int, kinds: str = "rw") -> tuple[int, str]:
    """A register `r0`..`r10` (`%r0` in conformance syntax, `w0` for 32-bit): (number, 'r' or 'w')."""
    m = _REG_RE.fullmatch(text.strip())
    if not m or m.group(1) not in kinds:
        raise AsmError(f"invalid register {text.strip()!r}", lineno)
    n = int(m.group(2))
    if n > 10:
        raise AsmError(f"invalid register {text.strip()!r} (registers are r0..r10)", lineno)
    return n, m.group(1)


def is_register(text: str) -> bool:
    return _REG_RE.fullmatch(text.strip()) is not None


def jump_target(text: str, lineno: int, bits: int = 16) -> tuple[int, str | None]:
    """A jump target: a signed relative slot count (`+3`, `-0x2`, `5`) or a label name."""
    t = text.strip()
    if _INT_RE.fullmatch(t):
        value, _ = parse_int(t, lineno, "jump offset")
        lo, hi = (S16 if bits == 16 else S32)
        if not lo <= value <= hi:
            raise AsmError(f"jump offset {t} does not fit in {bits} bits", lineno)
        return value, None
    if not LABEL_RE.fullmatch(t):
        raise AsmError(f"invalid jump target {t!r}", lineno)
    return 0, t
