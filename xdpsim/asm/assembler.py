"""The assembler: lines -> statements (either syntax) -> label fixups -> one Instruction per slot.

Accepted on any line: comments after `#`, `;` or `//`; `label:` (alone or before a statement);
a trailing `<...>` note (llvm-objdump target notes); whole llvm-objdump lines (`  66:\t25 01 ...\tif ...`),
whose headers (`0000000000000000 <f>:` becomes label `f`), section titles and relocation lines are skipped.
"""

from __future__ import annotations

import re
from dataclasses import replace

from ..errors import AsmError
from ..isa import EXIT, Instruction
from .conf_syntax import is_conf_statement, parse_call, parse_conf
from .llvm_syntax import parse_llvm
from .text import S16, S32, Stmt

_COMMENT_RE = re.compile(r"(#|;|//).*$")
_OBJDUMP_INSN_RE = re.compile(r"^\s*\d+:\s+(?:(?:[0-9a-fA-F]{2} ){7,15}[0-9a-fA-F]{2}\s+)?")
_OBJDUMP_SYMBOL_RE = re.compile(r"^[0-9a-fA-F]{8,16} <([^<>]+)>:$")
_OBJDUMP_SKIP_RE = re.compile(
    r"^(Disassembly of section .*:|\S+:\s+file format .*|[0-9a-fA-F]+:\s+R_BPF_\w+.*|\.text)$"
)
_NOTE_RE = re.compile(r"\s*<[^<>]*>$")
_LABEL_RE = re.compile(r"^([A-Za-z_.$][\w.$]*)\s*:(?!\S)\s*(.*)$")


def _clean(line: str) -> tuple[str | None, str]:
    """(label or None, statement text) of one source line, comments and objdump decoration removed."""
    line = line.strip()
    sym = _OBJDUMP_SYMBOL_RE.match(line)
    if sym:
        return sym.group(1), ""
    if _OBJDUMP_SKIP_RE.match(line):
        return None, ""
    line = _OBJDUMP_INSN_RE.sub("", line)
    line = _COMMENT_RE.sub("", line).strip()
    if line and not line.startswith("<"):
        line = _NOTE_RE.sub("", line)
    m = _LABEL_RE.match(line)
    if m:
        return m.group(1), m.group(2).strip()
    return None, line


def parse_statement(stmt: str, lineno: int) -> Stmt:
    """One statement in either syntax."""
    stmt = " ".join(stmt.split())  # tabs (llvm-mc output) and runs of blanks are one separator
    if stmt.startswith("--"):
        raise AsmError(f"unknown directive {stmt!r}", lineno)
    if stmt.startswith("<"):
        raise AsmError(f"cannot assemble {stmt!r}", lineno)
    word, _, rest = stmt.partition(" ")
    if word in ("call", "callx"):
        return parse_call(word, rest.split(), lineno)
    if word.startswith("."):
        raise AsmError(f"unknown directive {word!r}", lineno)
    if "=" not in stmt and is_conf_statement(stmt):
        return parse_conf(stmt, lineno)
    if "=" not in stmt and word not in ("if", "goto", "gotol", "exit", "ld_pseudo"):
        if re.fullmatch(r"[a-z][a-z0-9]*", word):
            raise AsmError(f"unknown mnemonic {word!r}", lineno)
    return parse_llvm(stmt, lineno)


def assemble(text: str) -> list[Instruction]:
    """Assemble a program written in llvm-objdump or bpf_conformance syntax (mixing is allowed).

    Returns one Instruction per slot (lddw gives two). Raises AsmError with the line number for
    anything it cannot assemble: unknown mnemonics, bad registers, immediates or offsets out of range,
    wrong operand counts, undefined or duplicate labels, jumps whose distance does not fit.
    A jump to the label `exit` that is not defined goes to the first `exit` (as bpf_conformance does).
    """
    stmts: list[Stmt] = []
    labels: dict[str, int] = {}
    slot = 0
    first_exit: int | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        label, stmt = _clean(raw)
        if label is not None:
            if label in labels:
                raise AsmError(f"label {label!r} defined twice", lineno)
            labels[label] = slot
        if stmt:
            parsed = parse_statement(stmt, lineno)
            if first_exit is None and parsed.insns[0].opcode == EXIT:
                first_exit = slot
            stmts.append(parsed)
            slot += len(parsed.insns)
    if first_exit is not None:
        # conformance convention: `exit` names the first exit instruction unless defined explicitly
        labels.setdefault("exit", first_exit)
    return _resolve(stmts, labels)


def _resolve(stmts: list[Stmt], labels: dict[str, int]) -> list[Instruction]:
    out: list[Instruction] = []
    for st in stmts:
        insns = st.insns
        if st.label is not None:
            if st.label not in labels:
                raise AsmError(f"undefined label {st.label!r}", st.lineno)
            distance = labels[st.label] - (len(out) + 1)
            lo, hi = S16 if st.field == "off" else S32
            if not lo <= distance <= hi:
                raise AsmError(f"label {st.label!r} is {distance} slots away: too far to jump", st.lineno)
            insns = [replace(insns[0], **{st.field: distance}), *insns[1:]]
        out.extend(insns)
    return out
