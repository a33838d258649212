"""Assembler and disassembler for eBPF: llvm-objdump-19 syntax and the bpf_conformance syntax.

    assemble(text) -> list[Instruction]            either syntax, labels, comments; AsmError(lineno)
    disassemble(insns, *, alu32=False, names=None) -> list[str]   one line per slot ("" for lddw's 2nd)
    disassemble_insn(ins, pc=None, next_ins=None, *, alu32=False, names=None) -> str
    disassemble_one(ins) -> str                     what str(Instruction) prints

`assemble(disassemble(p))` reproduces `p` exactly (see disasm.py for where we print more than llvm).
"""

from .assembler import assemble, parse_statement
from .disasm import FILLER_TEXT, disassemble, disassemble_insn, disassemble_one

__all__ = ["FILLER_TEXT", "assemble", "disassemble", "disassemble_insn", "disassemble_one", "parse_statement"]
