"""Assembler and disassembler: both syntaxes, llvm-objdump-19 agreement, conformance files, round trips."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from xdpsim import isa
from xdpsim.asm import FILLER_TEXT, assemble, disassemble, disassemble_insn
from xdpsim.errors import AsmError, EncodingError
from xdpsim.isa import Instruction

REPO = Path(__file__).resolve().parent.parent
CONFORMANCE = REPO.parent / "shared" / "conformance"
CLANG = shutil.which("clang-19")
OBJDUMP = shutil.which("llvm-objdump-19")


def roundtrip(insns: list[Instruction], **style) -> list[Instruction]:
    return assemble("\n".join(disassemble(insns, **style)))


# ---------------------------------------------------------------------------------------------------
# One row per instruction form: llvm text (as llvm-objdump-19 prints it), conformance text, encoding.

I = Instruction
FORMS = [
    ("r0 = 0x1", "mov %r0, 1", I(0xB7, 0, 0, 0, 1)),
    ("r0 = -0x1", "mov %r0, -1", I(0xB7, 0, 0, 0, -1)),
    ("w0 = -0x1", "mov32 %r0, 0xffffffff", I(0xB4, 0, 0, 0, -1)),
    ("w1 = w2", "mov32 %r1, %r2", I(0xBC, 1, 2)),
    ("r0 += r1", "add %r0, %r1", I(0x0F, 0, 1)),
    ("w0 += -0x3", "add32 %r0, -3", I(0x04, 0, 0, 0, -3)),
    ("r0 s/= r1", "sdiv %r0, %r1", I(0x3F, 0, 1, 1)),
    ("w0 s/= 0x3", "sdiv32 %r0, 3", I(0x34, 0, 0, 1, 3)),
    ("r0 s%= 0x3", "smod %r0, 3", I(0x97, 0, 0, 1, 3)),
    ("w0 %= w1", "mod32 %r0, %r1", I(0x9C, 0, 1)),
    ("r0 s>>= 0x2", "arsh %r0, 2", I(0xC7, 0, 0, 0, 2)),
    ("r0 <<= 0x3", "lsh %r0, 3", I(0x67, 0, 0, 0, 3)),
    ("w0 >>= w1", "rsh32 %r0, %r1", I(0x7C, 0, 1)),
    ("r0 ^= r1", "xor %r0, %r1", I(0xAF, 0, 1)),
    ("r0 = -r0", "neg %r0", I(0x87)),
    ("w3 = -w3", "neg32 %r3", I(0x84, 3)),
    ("r0 = (s8)r1", "movsx864 %r0, %r1", I(0xBF, 0, 1, 8)),
    ("r0 = (s32)r1", "movsx3264 %r0, %r1", I(0xBF, 0, 1, 32)),
    ("w0 = (s16)w1", "movsx1632 %r0, %r1", I(0xBC, 0, 1, 16)),
    ("r1 = be16 r1", "be16 %r1", I(0xDC, 1, 0, 0, 16)),
    ("r1 = le32 r1", "le32 %r1", I(0xD4, 1, 0, 0, 32)),
    ("r1 = bswap64 r1", "bswap64 %r1", I(0xD7, 1, 0, 0, 64)),
    ("r0 = *(u32 *)(r1 + 0x4)", "ldxw %r0, [%r1+4]", I(0x61, 0, 1, 4)),
    ("r0 = *(u64 *)(r10 - 0x8)", "ldxdw %r0, [%r10-8]", I(0x79, 0, 10, -8)),
    ("r0 = *(u8 *)(r1 + 0x0)", "ldxb %r0, [%r1]", I(0x71, 0, 1)),
    ("r0 = *(s16 *)(r1 + 0x2)", "ldxsh %r0, [%r1+2]", I(0x89, 0, 1, 2)),
    ("r0 = *(s8 *)(r10 - 0x1)", "ldxsb %r0, [%r10-1]", I(0x91, 0, 10, -1)),
    ("*(u64 *)(r10 - 0x8) = r1", "stxdw [%r10-8], %r1", I(0x7B, 10, 1, -8)),
    ("*(u16 *)(r1 + 0x2) = r3", "stxh [%r1+2], %r3", I(0x6B, 1, 3, 2)),
    ("*(u32 *)(r10 - 0x4) = -0x2", "stw [%r10-4], -2", I(0x62, 10, 0, -4, -2)),
    ("*(u8 *)(r1 + 0x0) = 0x5", "stb [%r1], 5", I(0x72, 1, 0, 0, 5)),
    ("lock *(u64 *)(r10 - 0x8) += r1", "lock add [%r10-8], %r1", I(0xDB, 10, 1, -8, 0)),
    ("lock *(u32 *)(r10 - 0x4) += r1", "lock add32 [%r10-4], %r1", I(0xC3, 10, 1, -4, 0)),
    ("lock *(u64 *)(r10 - 0x8) |= r1", "lock or [%r10-8], %r1", I(0xDB, 10, 1, -8, 0x40)),
    ("lock *(u32 *)(r10 - 0x4) ^= w1", "lock xor32 [%r10-4], %r1", I(0xC3, 10, 1, -4, 0xA0)),
    ("r1 = atomic_fetch_add((u64 *)(r10 - 0x8), r1)", "lock fetch add [%r10-8], %r1",
     I(0xDB, 10, 1, -8, 0x01)),
    ("w3 = atomic_fetch_and((u32 *)(r10 - 0x4), w3)", "lock fetch and32 [%r10-4], %r3",
     I(0xC3, 10, 3, -4, 0x51)),
    ("r1 = xchg_64(r10 - 0x8, r1)", "lock xchg [%r10-8], %r1", I(0xDB, 10, 1, -8, 0xE1)),
    ("w1 = xchg32_32(r10 - 0x8, w1)", "lock xchg32 [%r10-8], %r1", I(0xC3, 10, 1, -8, 0xE1)),
    ("r0 = cmpxchg_64(r10 - 0x8, r0, r1)", "lock cmpxchg [%r10-8], %r1", I(0xDB, 10, 1, -8, 0xF1)),
    ("w0 = cmpxchg32_32(r10 - 0x8, w0, w1)", "lock cmpxchg32 [%r10-8], %r1", I(0xC3, 10, 1, -8, 0xF1)),
    ("if r1 > 0x5 goto +0x3", "jgt %r1, 5, +3", I(0x25, 1, 0, 3, 5)),
    ("if r1 == r2 goto -0x2", "jeq %r1, %r2, -2", I(0x1D, 1, 2, -2)),
    ("if w1 s< w2 goto +0x0", "jslt32 %r1, %r2, +0", I(0xCE, 1, 2, 0)),
    ("if w1 & 0x3 goto +0x1", "jset32 %r1, 3, +1", I(0x46, 1, 0, 1, 3)),
    ("if r1 s>= -0x1 goto +0x1", "jsge %r1, -1, +1", I(0x75, 1, 0, 1, -1)),
    ("goto +0x2", "ja +2", I(0x05, 0, 0, 2)),
    ("gotol -0x2", "ja32 -2", I(0x06, 0, 0, 0, -2)),
    ("call 0x5", "call 5", I(0x85, 0, 0, 0, 5)),
    ("call pc+0x3", "call local +3", I(0x85, 0, 1, 0, 3)),
    ("call kfunc 0x7", "call runtime 7", I(0x85, 0, 2, 0, 7)),
    ("callx r1", "call %r1", I(0x8D, 1)),
    ("exit", "exit", I(0x95)),
    ("r0 = *(u16 *)skb[0xc]", "ldabsh 12", I(0x28, 0, 0, 0, 12)),
    ("r0 = *(u8 *)skb[r2]", "ldindb %r2, 0", I(0x50, 0, 2)),
]


@pytest.mark.parametrize("llvm, conf, ins", FORMS, ids=[f[1] for f in FORMS])
def test_forms(llvm: str, conf: str, ins: Instruction) -> None:
    assert isa.check(ins) is None
    assert disassemble_insn(ins) == llvm
    assert assemble(llvm) == [ins]
    assert assemble(conf) == [ins]


def test_lddw_both_syntaxes() -> None:
    want = list(isa.lddw(0, 0x1122334455667788))
    assert assemble("lddw %r0, 0x1122334455667788") == want
    assert assemble("r0 = 0x1122334455667788 ll") == want
    assert disassemble(want) == ["r0 = 0x1122334455667788 ll", FILLER_TEXT]
    assert disassemble(list(isa.lddw(1, -1))) == ["r1 = -0x1 ll", ""]
    assert disassemble(list(isa.lddw(1, 0x80000000))) == ["r1 = 0x80000000 ll", ""]
    pseudo = list(isa.lddw(1, 5, isa.PSEUDO_MAP_FD))
    assert disassemble(pseudo) == ["ld_pseudo r1, 0x1, 0x5", ""]
    assert roundtrip(pseudo) == pseudo
    # next_ins supplies the high half when the lddw itself does not carry it
    lone = Instruction(isa.LDDW, 2, 0, 0, 1)
    assert disassemble_insn(lone, 0, Instruction(0, imm=2)) == "r2 = 0x200000001 ll"


def test_map_names_note_is_ignored_by_the_assembler() -> None:
    # ObjectSpec convention (spec.py): src PSEUDO_MAP_FD / PSEUDO_MAP_VALUE, imm = map index
    prog = [*isa.lddw(1, 0, isa.PSEUDO_MAP_FD), *isa.lddw(2, 1 | 0x10 << 32, isa.PSEUDO_MAP_VALUE),
            Instruction(isa.EXIT)]
    lines = disassemble(prog, names={0: "counters", 1: ".rodata"})
    assert lines[0] == "ld_pseudo r1, 0x1, 0x0 <map counters>"
    assert lines[2] == "ld_pseudo r2, 0x2, 0x1000000001 <map .rodata+0x10>"
    assert assemble("\n".join(lines)) == prog


def test_alu32_style() -> None:
    prog = [I(0x61, 0, 1, 4), I(0x73, 10, 1, -1), I(0xC3, 10, 1, -4, 0), I(0x79, 0, 1)]
    assert disassemble(prog, alu32=True) == [
        "w0 = *(u32 *)(r1 + 0x4)", "*(u8 *)(r10 - 0x1) = w1", "lock *(u32 *)(r10 - 0x4) += w1",
        "r0 = *(u64 *)(r1 + 0x0)"]
    assert roundtrip(prog, alu32=True) == prog


def test_labels_comments_and_mixed_syntax() -> None:
    text = """
        # conformance syntax with labels
        mov %r0, 0          ; trailing comment
        jeq %r1, 0, done
    loop: add %r0, 1        // another comment
        r1 += -1
        if r1 != 0 goto loop
    done:
        call local f
        exit
    f:  r0 = 7
        exit
    """
    prog = assemble(text)
    assert prog[1] == I(0x15, 1, 0, 3, 0)  # jeq to `done` (slot 5)
    assert prog[4] == I(0x55, 1, 0, -3, 0)  # back to `loop` (slot 2)
    assert prog[5] == I(0x85, 0, 1, 0, 1)  # call local f (slot 7)
    isa.validate(prog)


def test_exit_is_an_implicit_label() -> None:
    prog = assemble("jeq %r1, 0, exit\nmov %r0, 1\nexit\nmov %r0, 2\nexit")
    assert prog[0].off == 1


def test_accepts_llvm_objdump_output_verbatim() -> None:
    text = """
k.o:\tfile format elf64-bpf

Disassembly of section xdp:

0000000000000000 <f>:
       0:\t25 01 01 00 05 00 00 00\tif r1 > 0x5 goto +0x1 <f+0x10>
       1:\t18 01 00 00 f0 de bc 9a 00 00 00 00 78 56 34 12\tr1 = 0x123456789abcdef0 ll
       3:\t85 10 00 00 ff ff ff ff\tcall -0x1
\t\t0000000000000018:  R_BPF_64_32\t.text
       4:\t95 00 00 00 00 00 00 00\texit
"""
    want = [I(0x25, 1, 0, 1, 5), *isa.lddw(1, 0x123456789ABCDEF0), I(0x85, 0, 0, 0, -1), I(0x95)]
    assert assemble(text) == want
    # and with --no-show-raw-insn
    assert assemble(re.sub(r"\t[0-9a-f ]{23,47}\t", "\t", text)) == want


def test_llvm_mc_output_with_tabs_and_decimal() -> None:
    text = "\t.text\n\tld_pseudo\tr1, 2, 5\n\tr0 = *(u32 *)(r1 + 4)\n\tcallx\tr3\n\tif r1 s> -2 goto -1"
    assert assemble(text) == [*isa.lddw(1, 5, 2), I(0x61, 0, 1, 4), I(0x8D, 3), I(0x65, 1, 0, -1, -2)]


def test_jump_notes_with_pc() -> None:
    assert disassemble_insn(I(0x05, 0, 0, 2), pc=3) == "goto +0x2 <insn 6>"
    assert disassemble_insn(I(0x85, 0, 1, 0, -4), pc=9) == "call pc-0x4 <insn 6>"
    assert assemble("goto +0x2 <insn 6>") == [I(0x05, 0, 0, 2)]


def test_invalid_instruction_text() -> None:
    text = disassemble_insn(I(0x07, 0, 0, 1, 1))
    assert text.startswith("<invalid 0x07") and "offset 1" in text
    assert str(I(0, imm=5)) == "<lddw second half, imm 0x5>"
    assert str(I(0x95)) == "exit"
    with pytest.raises(AsmError, match="line 1"):
        assemble(text)


@pytest.mark.parametrize("text, lineno, message", [
    ("mov %r0, 1\nfoo %r0", 2, "unknown mnemonic 'foo'"),
    ("r0 = w1", 1, "mixes 32-bit"),
    ("w0 = *(u64 *)(r1 + 0)", 1, "writes a 64-bit register"),
    ("r11 = 1", 1, "invalid register"),
    ("mov %r0, %r11", 1, "invalid register"),
    ("exit\nja nowhere", 2, "undefined label 'nowhere'"),
    ("a:\nexit\na:\nexit", 3, "defined twice"),
    ("mov32 %r0, -2147483649", 1, "does not fit in 32 bits"),
    ("ldxb %r0, [%r1-0x8001]", 1, "does not fit in 16 bits"),
    ("ja +32768", 1, "does not fit in 16 bits"),
    ("lock swap [%r10-8], %r1", 1, "invalid lock operation"),
    ("lock fetch add [%r10-8]", 1, "operands for lock"),
    ("stxdw [%r10-8]", 1, "takes 2 operands, got 1"),
    (".data", 1, "unknown directive"),
    ("r1 = xchg_64(r10 - 8, r2)", 1, "returns into its source register"),
    ("r1 = cmpxchg_64(r10 - 8, r1, r2)", 1, "compares and returns r0"),
    ("r0 = be16 r1", 1, "same register"),
    ("*(s8 *)(r1 + 0) = r1", 1, "invalid access type"),
    ("r0 = 0x10000000000000000 ll", 1, "does not fit in 64 bits"),
])
def test_errors_say_where(text: str, lineno: int, message: str) -> None:
    with pytest.raises(AsmError, match=re.escape(message)) as exc:
        assemble(text)
    assert exc.value.lineno == lineno
    assert str(exc.value).startswith(f"line {lineno}:")


def test_jump_too_far_for_a_label() -> None:
    text = "ja far\n" + "mov %r0, 0\n" * 32768 + "far: exit"
    with pytest.raises(AsmError, match="too far"):
        assemble(text)
    assert assemble(text.replace("ja far", "ja32 far"))[0].imm == 32768


def test_empty_text_is_an_empty_program() -> None:
    assert assemble("  # nothing\n\n") == []


# ---------------------------------------------------------------------------------------------------
# bpf_conformance data files

def data_sections(path: Path) -> dict[str, list[str]]:
    """The sections of a conformance .data file. Only known section names start a section, so an
    unknown `-- directive` stays inside the asm text (where the assembler must reject it)."""
    known = {"asm", "raw", "mem", "result", "error", "no register offset", "c"}
    out: dict[str, list[str]] = {}
    current = None
    for line in path.read_text().splitlines():
        if line.startswith("--") and line[2:].strip() in known:
            current = line[2:].strip()
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return out


def _data_files(sub: str) -> list[Path]:
    return sorted((CONFORMANCE / sub).glob("*.data")) if (CONFORMANCE / sub).is_dir() else []


needs_conformance = pytest.mark.skipif(not (CONFORMANCE / "tests").is_dir(),
                                       reason=f"conformance data not found at {CONFORMANCE}")


@needs_conformance
def test_conformance_data_present() -> None:
    assert len(_data_files("tests")) > 300


@needs_conformance
@pytest.mark.parametrize("path", _data_files("tests"), ids=lambda p: p.stem)
def test_conformance_file_assembles(path: Path) -> None:
    sections = data_sections(path)
    prog = assemble("\n".join(sections["asm"]))
    assert prog
    isa.validate(prog)
    if "raw" in sections:
        raw = b"".join(int(w, 16).to_bytes(8, "little") for w in " ".join(sections["raw"]).split())
        assert isa.encode(prog) == raw
    assert roundtrip(prog) == prog
    assert roundtrip(prog, alu32=True) == prog


ASM_ERRORS = ["invalid_imm32_dec_range", "invalid_imm32_hex_range", "invalid_label", "invalid_lock",
              "invalid_lock2", "invalid_mnemonic", "invalid_offset", "invalid_offset_range",
              "invalid_operand_count", "invalid_register", "invalid_unknown_directive"]


@needs_conformance
@pytest.mark.parametrize("path", _data_files("negative"), ids=lambda p: p.stem)
def test_conformance_negative(path: Path) -> None:
    sections = data_sections(path)
    if path.stem in ASM_ERRORS:
        with pytest.raises(AsmError) as exc:
            assemble("\n".join(sections["asm"]))
        assert exc.value.lineno is not None
        return
    if "raw" in sections:  # unused-*: bad reserved fields; decodes, prints, and validate rejects it
        prog = isa.decode(bytes.fromhex(" ".join(sections["raw"])))
        assert disassemble(prog)[0].startswith("<invalid")
        with pytest.raises(EncodingError) as exc:
            isa.validate(prog)
        assert exc.value.index == 0
    elif "asm" in sections:  # execution-time negatives: they must assemble
        isa.validate(assemble("\n".join(sections["asm"])))
    else:  # empty files: nothing to assemble, and an empty program is invalid
        assert assemble("") == []
        with pytest.raises(EncodingError):
            isa.validate([])


@needs_conformance
def test_every_negative_file_is_classified() -> None:
    stems = {p.stem for p in _data_files("negative")}
    assert set(ASM_ERRORS) <= stems


# ---------------------------------------------------------------------------------------------------
# Round trip over every valid instruction kind

def _valid_opcodes() -> list[int]:
    fields = [(0, 0, 0, 0), (1, 2, 0, 0), (1, 0, 0, 16), (1, 0, 1, 0), (1, 2, 8, 0), (1, 2, 0, 0xE1),
              (0, 0, 0, 1), (1, 2, 1, 0), (0, 2, 0, 0), (1, 0, 0, 0)]
    return sorted({op for op in range(256) for d, s, o, i in fields if isa.check(I(op, d, s, o, i)) is None})


VALID_OPCODES = _valid_opcodes()
SPECIAL_IMMS = [0, 1, -1, 8, 16, 32, 64, 0x40, 0x41, 0x50, 0x51, 0xA0, 0xA1, 0xE1, 0xF1, 0x7FFFFFFF,
                -(1 << 31)]


def test_opcode_table_covers_the_isa() -> None:
    # ALU32 12 ops x K/X + neg + le/be = 27; ALU64 12 x 2 + neg + bswap = 26; JMP 11 x 2 + ja, call,
    # callx, exit = 26; JMP32 11 x 2 + gotol = 23; LD lddw + 3 abs + 3 ind = 7; LDX 4 + 3 sign = 7;
    # ST 4; STX 4 + 2 atomic widths = 6.
    assert len(VALID_OPCODES) == 27 + 26 + 26 + 23 + 7 + 7 + 4 + 6
    for op in (0x18, 0x95, 0x8D, 0x06, 0xD7, 0x91, 0xDB, 0xC3, 0x3C, 0xBF):
        assert op in VALID_OPCODES


@st.composite
def valid_program(draw) -> list[Instruction]:
    op = draw(st.sampled_from(VALID_OPCODES))
    small = st.one_of(st.just(0), st.integers(0, 10))
    dst, src = draw(small), draw(st.one_of(st.just(0), st.integers(0, 10)))
    off = draw(st.one_of(st.just(0), st.sampled_from([1, 8, 16, 32]), st.integers(-(1 << 15), (1 << 15) - 1)))
    imm = draw(st.one_of(st.just(0), st.sampled_from(SPECIAL_IMMS), st.integers(-(1 << 31), (1 << 31) - 1)))
    ins = I(op, dst, src, off, imm)
    if op == isa.LDDW:
        hi = draw(st.integers(-(1 << 31), (1 << 31) - 1))
        ins = I(op, dst, src, off, imm, hi)
        assume(isa.check(ins) is None)
        return [ins, I(0, imm=hi)]
    assume(isa.check(ins) is None)
    return [ins]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(valid_program())
def test_roundtrip_every_kind(prog: list[Instruction]) -> None:
    assert roundtrip(prog) == prog
    assert roundtrip(prog, alu32=True) == prog
    assert isa.encode(roundtrip(prog)) == isa.encode(prog)


def test_roundtrip_each_opcode_exhaustively() -> None:
    """Deterministic companion of the hypothesis test: every valid opcode with a few field sets."""
    seen = 0
    for op in VALID_OPCODES:
        for d, s, o, i in [(0, 0, 0, 0), (3, 4, -5, 0), (3, 0, 7, -9), (1, 2, 8, 16), (1, 2, 16, 32),
                           (9, 1, 32, 64), (2, 0, 1, 3), (10, 1, -8, 0xF1), (10, 1, -8, 0x41)]:
            ins = I(op, d, s, o, i, 0x1234 if op == isa.LDDW else 0)
            if isa.check(ins) is not None:
                continue
            prog = [ins, I(0, imm=0x1234)] if op == isa.LDDW else [ins]
            assert roundtrip(prog) == prog, disassemble(prog)
            seen += 1
    assert seen > len(VALID_OPCODES)


# ---------------------------------------------------------------------------------------------------
# Agreement with llvm-objdump-19 on compiled code

FIXTURE_C = r"""
typedef unsigned long long u64; typedef unsigned int u32; typedef long long s64; typedef int s32;
struct pair { s32 a; short b; signed char c; u64 d; };
#if __BPF_CPU_VERSION__ >= 4
static __attribute__((noinline)) s64 helper_fn(s64 x, s32 y) { return x / y + x % y; }
#else
static __attribute__((noinline)) s64 helper_fn(s64 x, s32 y) { return (u64)x / (u32)y + (u64)x % (u32)y; }
#endif
static __attribute__((noinline)) u32 sum(struct pair *p) { return p->a + p->b + p->c; }

__attribute__((section("xdp"))) int exercise(struct pair *p) {
  u64 counter = 0; u32 c32 = 0;
  __sync_fetch_and_add(&counter, 3);
  __sync_fetch_and_or(&counter, 4);
  u64 old = __sync_fetch_and_xor(&counter, p->d);
  u32 o32 = __sync_fetch_and_add(&c32, (u32)old);
  o32 += __sync_val_compare_and_swap(&c32, o32, 7);
  old += __atomic_exchange_n(&counter, (u64)p->a, __ATOMIC_SEQ_CST);
  s64 v = helper_fn((s64)p->c * old, p->b) + sum(p);
  if (v < -5) v = (s32)v >> 3;
  if ((u32)v > 1000u) v ^= 0x1234567890abcdefULL;
  for (int i = 0; i < (p->a & 7); i++) v = v * 31 + (u64)(v >> 7);
  switch (p->a) { case 1: v += 3; break; case 7: v -= (s64)p->b; break; default: v = -v; }
  return (int)(v + counter + c32 + o32);
}

#if __BPF_CPU_VERSION__ >= 4  /* the inline asm uses v4 instructions */
__attribute__((section("xdp"))) int inline_asm(void *ctx) {
  asm volatile(
    "r0 = 1\n r0 = -1\n w0 = 5\n r1 = r2\n w1 = w2\n r0 += r1\n w0 -= w1\n r0 *= 3\n r0 /= r1\n"
    "r0 s/= r1\n w0 s/= w1\n r0 s%%= 3\n w0 %%= 7\n r0 |= r1\n r0 &= 0xff\n r0 <<= 3\n r0 >>= r1\n"
    "r0 s>>= 2\n w0 s>>= w1\n r0 = -r0\n w0 = -w0\n r0 ^= r1\n"
    "r0 = (s8)r1\n r0 = (s16)r1\n r0 = (s32)r1\n w0 = (s8)w1\n w0 = (s16)w1\n"
    "r0 = be16 r0\n r0 = be32 r0\n r0 = be64 r0\n r0 = le16 r0\n r0 = le32 r0\n r0 = le64 r0\n"
    "r0 = bswap16 r0\n r0 = bswap32 r0\n r0 = bswap64 r0\n"
    "r0 = *(u8 *)(r1 + 0)\n r0 = *(u16 *)(r1 - 2)\n r0 = *(u32 *)(r1 + 4)\n r0 = *(u64 *)(r10 - 8)\n"
    "r0 = *(s8 *)(r1 + 1)\n r0 = *(s16 *)(r1 + 2)\n r0 = *(s32 *)(r1 + 4)\n"
    "*(u8 *)(r10 - 1) = r1\n *(u16 *)(r10 - 2) = w1\n *(u32 *)(r10 - 4) = w1\n *(u64 *)(r10 - 8) = r1\n"
    "*(u8 *)(r10 - 1) = 5\n *(u16 *)(r10 - 2) = -3\n *(u32 *)(r10 - 4) = 0x7fffffff\n"
    "*(u64 *)(r10 - 8) = -1\n"
    "lock *(u64 *)(r10 - 8) += r1\n lock *(u32 *)(r10 - 4) += w1\n lock *(u64 *)(r10 - 8) |= r1\n"
    "lock *(u64 *)(r10 - 8) &= r1\n lock *(u64 *)(r10 - 8) ^= r1\n lock *(u32 *)(r10 - 4) |= w1\n"
    "r1 = atomic_fetch_add((u64 *)(r10 - 8), r1)\n w1 = atomic_fetch_add((u32 *)(r10 - 4), w1)\n"
    "r1 = atomic_fetch_or((u64 *)(r10 - 8), r1)\n r1 = atomic_fetch_and((u64 *)(r10 - 8), r1)\n"
    "r1 = atomic_fetch_xor((u64 *)(r10 - 8), r1)\n w2 = atomic_fetch_xor((u32 *)(r10 - 4), w2)\n"
    "r1 = xchg_64(r10 - 8, r1)\n w1 = xchg32_32(r10 - 4, w1)\n"
    "r0 = cmpxchg_64(r10 - 8, r0, r1)\n w0 = cmpxchg32_32(r10 - 4, w0, w1)\n"
    "if r1 > 5 goto +1\n if r1 == r2 goto -2\n if w1 s< w2 goto +0\n if w1 & 3 goto +1\n"
    "if r1 s>= -1 goto +1\n if r1 != 0x7fffffff goto +1\n if w3 <= -7 goto +1\n if r4 s<= r5 goto +0\n"
    "goto +1\n gotol +2\n call 1\n r1 = 0x123456789abcdef0 ll\n r1 = -1 ll\n r1 = 5 ll\n callx r1\n"
    "r0 = 0x80000000 ll\n r0 = 0xffffffff\n w0 = 0xffffffff\n r0 = -0x80000000\n"
    "r0 = *(u16 *)skb[12]\n r0 = *(u8 *)skb[r2]\n"
    ::: "memory");
  return 0;
}
#endif
"""

_OBJDUMP_LINE = re.compile(r"^\s*(\d+):\t[0-9a-f ]+\t(.*?)(?: <[^<>]*>)?$")


def _objdump(obj: Path, *extra: str) -> dict[tuple[str, int], str]:
    """{(section, slot): text} from llvm-objdump-19 -d."""
    out = subprocess.run([OBJDUMP, "-d", *extra, str(obj)], check=True, capture_output=True, text=True).stdout
    lines: dict[tuple[str, int], str] = {}
    section = ""
    for line in out.splitlines():
        if line.startswith("Disassembly of section "):
            section = line[len("Disassembly of section "):-1]
        m = _OBJDUMP_LINE.match(line)
        if m:
            lines[(section, int(m.group(1)))] = m.group(2)
    return lines


def _code_sections(obj: Path) -> dict[str, list[Instruction]]:
    from elftools.elf.constants import SH_FLAGS
    from elftools.elf.elffile import ELFFile

    with obj.open("rb") as f:
        elf = ELFFile(f)
        return {s.name: isa.decode(s.data()) for s in elf.iter_sections()
                if s["sh_flags"] & SH_FLAGS.SHF_EXECINSTR and s["sh_size"]}


@pytest.fixture(scope="module", params=["v3", "v4"])
def compiled(request, tmp_path_factory) -> Path:
    if not (CLANG and OBJDUMP):
        pytest.skip("clang-19 and llvm-objdump-19 are needed to compare with llvm")
    d = tmp_path_factory.mktemp(f"asm-{request.param}")
    (d / "kinds.c").write_text(FIXTURE_C)
    subprocess.run([CLANG, "-O2", f"-mcpu={request.param}", "-target", "bpf", "-c", str(d / "kinds.c"),
                    "-o", str(d / "kinds.o")], check=True, capture_output=True)
    return d / "kinds.o"


def _llvm_expected(ins: Instruction, llvm: str, alu32: str) -> str:
    """What we print for an instruction llvm-objdump-19 printed as `llvm` (`alu32`: with --mattr=+alu32)
    where llvm's text loses information."""
    if ins.opcode == isa.CALL and ins.src == isa.PSEUDO_CALL:  # llvm: `call 0x3`, as for a helper
        assert llvm == f"call {'-' if ins.imm < 0 else ''}{abs(ins.imm):#x}"
        return f"call pc{'-' if ins.imm < 0 else '+'}{abs(ins.imm):#x}"
    if ins.cls == isa.BPF_STX and ins.mode == isa.BPF_ATOMIC and ins.size == 4 and ins.imm != isa.BPF_ADD:
        return alu32  # without alu32 llvm prints <unknown> or drops the fetch flag here
    return llvm


def test_matches_llvm_objdump(compiled: Path) -> None:
    plain, alu32 = _objdump(compiled), _objdump(compiled, "--mattr=+alu32")
    sections = _code_sections(compiled)
    compared = 0
    for name, insns in sections.items():
        ours, ours32 = disassemble(insns), disassemble(insns, alu32=True)
        for pc, ins in enumerate(insns):
            if not ours[pc]:
                assert (name, pc) not in plain  # lddw second slot: objdump prints nothing there
                continue
            assert ours32[pc] == _llvm_expected(ins, alu32[(name, pc)], alu32[(name, pc)]), (name, pc)
            assert ours[pc] == _llvm_expected(ins, plain[(name, pc)], alu32[(name, pc)]), (name, pc)
            compared += 1
        assert assemble("\n".join(ours)) == insns
    assert compared > 60


def test_assembles_llvm_objdump_output(compiled: Path) -> None:
    """Pasting a whole llvm-objdump listing of one section gives back that section's instructions."""
    # (the alu32 listing: without it llvm-19 prints <unknown> for 32-bit xchg/cmpxchg)
    cmd = [OBJDUMP, "-d", "--mattr=+alu32", "-j", "xdp", str(compiled)]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    prog = assemble(text)
    want = _code_sections(compiled)["xdp"]
    # llvm prints bpf-to-bpf calls as helper calls (`call 0x3`): the src field is the only difference
    assert [i if i.opcode != isa.CALL else I(isa.CALL, imm=i.imm) for i in want] == prog


LLVM_MC = shutil.which("llvm-mc-19")


def _llvm_expressible(ins: Instruction) -> bool:
    """Forms llvm's assembler has no syntax for (or encodes lossily): we print our own there."""
    if ins.opcode == isa.CALL and ins.src != isa.CALL_HELPER:
        return False
    if ins.is_lddw and ins.src != 0:  # llvm-mc keeps only the low 32 bits of an ld_pseudo value
        return False
    if ins.opcode == isa.BPF_JMP32 | isa.BPF_JA and not -(1 << 15) <= ins.imm < (1 << 15):
        return False  # llvm-mc-19 parses gotol's numeric target as 16 bits (objdump prints all 32)
    return not (ins.cls == isa.BPF_LD and ins.mode == isa.BPF_IND and ins.imm != 0)


@pytest.mark.skipif(not LLVM_MC, reason="llvm-mc-19 is needed to reassemble our text with llvm")
@pytest.mark.parametrize("alu32", [False, True])
def test_llvm_mc_reassembles_our_text(alu32: bool) -> None:
    """llvm-mc-19 turns what we print back into the same bytes, for random valid instructions."""
    import random

    rng = random.Random(9669)
    progs: list[list[Instruction]] = []
    while len(progs) < 3000:
        op = rng.choice(VALID_OPCODES)
        pick = [0, 0, rng.randint(0, 10)]
        ins = I(op, rng.choice(pick), rng.choice(pick),
                rng.choice([0, 0, 1, 8, 16, 32, rng.randint(-(1 << 15), (1 << 15) - 1)]),
                rng.choice([0, rng.choice(SPECIAL_IMMS), rng.randint(-(1 << 31), (1 << 31) - 1)]),
                rng.randint(-(1 << 31), (1 << 31) - 1) if op == isa.LDDW else 0)
        if isa.check(ins) is None and _llvm_expressible(ins):
            progs.append([ins, I(0, imm=ins.next_imm)] if ins.is_lddw else [ins])
    text = "\n".join(disassemble(p, alu32=alu32)[0] for p in progs)
    mattr = ["-mattr=+alu32"] if alu32 else []
    out = subprocess.run([LLVM_MC, "-triple=bpfel", *mattr, "-show-encoding"], input=text,
                         capture_output=True, text=True)
    assert not out.stderr, out.stderr[:2000]
    encodings = re.findall(r"encoding: \[([^\]]*)\]", out.stdout)
    assert len(encodings) == len(progs)
    for prog, enc in zip(progs, encodings, strict=True):
        got = bytes(int(b, 16) for b in enc.split(","))
        assert got == isa.encode(prog), disassemble(prog)[0]


# ---------------------------------------------------------------------------------------------------
# Every program in programs/

PROGRAM_OBJECTS = sorted((REPO / "programs").glob("*.o"))


@pytest.mark.skipif(not PROGRAM_OBJECTS, reason="no programs/*.o built yet")
@pytest.mark.parametrize("obj", PROGRAM_OBJECTS, ids=lambda p: p.stem)
def test_roundtrip_programs(obj: Path) -> None:
    sections = _code_sections(obj)
    assert sections
    for name, insns in sections.items():
        assert roundtrip(insns) == insns, name
        assert roundtrip(insns, alu32=True) == insns, name


def test_isa_rejects_legacy_packet_load_reserved_fields() -> None:
    """isa.check fix made with the assembler: the kernel refuses LD_ABS/LD_IND with dst != r0, an offset,
    size 8, or (ABS) a src register ("BPF_LD_[ABS|IND] uses reserved fields")."""
    assert isa.check(I(0x20, 0, 0, 0, 12)) is None  # ldabsw 12
    assert isa.check(I(0x40, 0, 3, 0, 2)) is None  # ldindw %r3, 2
    for bad in (I(0x20, 1, 0, 0, 12), I(0x20, 0, 2, 0, 12), I(0x20, 0, 0, 4, 12), I(0x38, 0, 0, 0, 12),
                I(0x58, 0, 3, 0, 0), I(0x40, 0, 3, 1, 0)):
        assert "reserved fields" in (isa.check(bad) or ""), bad
        with pytest.raises(EncodingError, match="reserved fields"):
            isa.validate([bad, I(isa.EXIT)])


TOKENS = ("r1 w2 %r3 %r11 = += s>>= *(u32 *) *(s8 *) (r10 - 0x8) [%r1+4] [%r1 0x10 -1 99999999999 ll goto "
          "gotol if > s<= +3 lbl lbl: call local callx lock fetch add32 xchg mov mov32 ldxw stxdw lddw , "
          "exit be16 movsx1632 atomic_fetch_or( ) skb[ ] # <f+0x8> -- \t").split(" ")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(st.sampled_from(TOKENS), max_size=7).map(" ".join), max_size=6).map("\n".join))
def test_garbage_text_gives_asm_error_or_a_program(text: str) -> None:
    try:
        prog = assemble(text)
    except AsmError as exc:
        assert exc.lineno is not None and 1 <= exc.lineno <= text.count("\n") + 1
        return
    assert all(isinstance(i, Instruction) for i in prog)


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=8, max_size=8).filter(lambda b: b[0] != isa.LDDW))
def test_any_encoding_disassembles(raw: bytes) -> None:
    (ins,) = isa.decode(raw)
    text = disassemble_insn(ins)
    assert text
    if isa.check(ins) is None:
        assert assemble(text) == [ins]
    else:
        assert text.startswith("<invalid")
