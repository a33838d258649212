"""The eBPF instruction set (RFC 9669, ISA v4): opcodes, `Instruction`, decode, encode, validation.

Just the instruction set: nothing here knows about ELF, maps or packets. A program is a list with one
`Instruction` per 8-byte slot, so indices match what the kernel and llvm-objdump print; the second
slot of a 16-byte `lddw` holds a filler instruction that carries the high half of the immediate.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import EncodingError

# Instruction classes (opcode & 0x07)
BPF_LD = 0x00
BPF_LDX = 0x01
BPF_ST = 0x02
BPF_STX = 0x03
BPF_ALU = 0x04
BPF_JMP = 0x05
BPF_JMP32 = 0x06
BPF_ALU64 = 0x07

# Source operand (opcode & 0x08) for ALU and JMP classes
BPF_K = 0x00
BPF_X = 0x08
# Byte swap direction (END only) shares the source bit
BPF_TO_LE = 0x00
BPF_TO_BE = 0x08

# ALU operations (opcode & 0xf0)
BPF_ADD = 0x00
BPF_SUB = 0x10
BPF_MUL = 0x20
BPF_DIV = 0x30
BPF_OR = 0x40
BPF_AND = 0x50
BPF_LSH = 0x60
BPF_RSH = 0x70
BPF_NEG = 0x80
BPF_MOD = 0x90
BPF_XOR = 0xA0
BPF_MOV = 0xB0
BPF_ARSH = 0xC0
BPF_END = 0xD0

# Jump operations (opcode & 0xf0)
BPF_JA = 0x00
BPF_JEQ = 0x10
BPF_JGT = 0x20
BPF_JGE = 0x30
BPF_JSET = 0x40
BPF_JNE = 0x50
BPF_JSGT = 0x60
BPF_JSGE = 0x70
BPF_CALL = 0x80
BPF_EXIT = 0x90
BPF_JLT = 0xA0
BPF_JLE = 0xB0
BPF_JSLT = 0xC0
BPF_JSLE = 0xD0

# Load/store sizes (opcode & 0x18) and modes (opcode & 0xe0)
BPF_W = 0x00
BPF_H = 0x08
BPF_B = 0x10
BPF_DW = 0x18
BPF_IMM = 0x00
BPF_ABS = 0x20
BPF_IND = 0x40
BPF_MEM = 0x60
BPF_MEMSX = 0x80
BPF_ATOMIC = 0xC0

SIZE_BYTES = {BPF_W: 4, BPF_H: 2, BPF_B: 1, BPF_DW: 8}

# Atomic operations (imm of BPF_STX | BPF_ATOMIC)
BPF_FETCH = 0x01
BPF_XCHG = 0xE0 | BPF_FETCH
BPF_CMPXCHG = 0xF0 | BPF_FETCH
ATOMIC_OPS = {
    BPF_ADD,
    BPF_OR,
    BPF_AND,
    BPF_XOR,
    BPF_ADD | BPF_FETCH,
    BPF_OR | BPF_FETCH,
    BPF_AND | BPF_FETCH,
    BPF_XOR | BPF_FETCH,
    BPF_XCHG,
    BPF_CMPXCHG,
}

# lddw source pseudo values
PSEUDO_MAP_FD = 1
PSEUDO_MAP_VALUE = 2
PSEUDO_BTF_ID = 3
PSEUDO_FUNC = 4
PSEUDO_MAP_IDX = 5
PSEUDO_MAP_IDX_VALUE = 6
LDDW_PSEUDOS = {0, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE, PSEUDO_BTF_ID, PSEUDO_FUNC, PSEUDO_MAP_IDX,
                PSEUDO_MAP_IDX_VALUE}

# call source values
CALL_HELPER = 0
PSEUDO_CALL = 1
PSEUDO_KFUNC_CALL = 2

LDDW = BPF_LD | BPF_IMM | BPF_DW  # 0x18
CALL = BPF_JMP | BPF_CALL  # 0x85
CALLX = BPF_JMP | BPF_CALL | BPF_X  # 0x8d
EXIT = BPF_JMP | BPF_EXIT  # 0x95

_STRUCT = struct.Struct("<BBhi")
_U64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Instruction:
    opcode: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    # lddw only: the high 32 bits, kept as encoded (signed, like imm)
    next_imm: int = 0

    @property
    def cls(self) -> int:
        return self.opcode & 0x07

    @property
    def code(self) -> int:
        """The operation bits (opcode & 0xf0) for ALU and JMP classes."""
        return self.opcode & 0xF0

    @property
    def source(self) -> int:
        return self.opcode & 0x08

    @property
    def size(self) -> int:
        """Access size in bytes for load/store classes."""
        return SIZE_BYTES[self.opcode & 0x18]

    @property
    def mode(self) -> int:
        return self.opcode & 0xE0

    @property
    def is_lddw(self) -> bool:
        return self.opcode == LDDW

    @property
    def is_filler(self) -> bool:
        """The second slot of an lddw (opcode 0)."""
        return self.opcode == 0 and self.dst == 0 and self.src == 0 and self.off == 0

    @property
    def imm64(self) -> int:
        """The full 64-bit immediate of an lddw, unsigned."""
        return ((self.imm & 0xFFFFFFFF) | ((self.next_imm & 0xFFFFFFFF) << 32)) & _U64

    @property
    def is_jump(self) -> bool:
        """A jump with a pc-relative target (not call/exit)."""
        if self.cls not in (BPF_JMP, BPF_JMP32):
            return False
        return self.code not in (BPF_CALL, BPF_EXIT)

    def jump_target(self, pc: int) -> int:
        """Target slot of a jump at `pc` (gotol, JMP32|JA, takes its offset from imm)."""
        if self.cls == BPF_JMP32 and self.code == BPF_JA:
            return pc + self.imm + 1
        return pc + self.off + 1

    def __str__(self) -> str:
        from .asm import disassemble_one  # late import: asm builds on isa

        return disassemble_one(self)


def lddw(dst: int, value: int, src: int = 0) -> tuple[Instruction, Instruction]:
    """Both slots of `lddw dst, value`."""
    value &= _U64
    lo = _s32(value & 0xFFFFFFFF)
    hi = _s32(value >> 32)
    return Instruction(LDDW, dst, src, 0, lo, hi), Instruction(0, 0, 0, 0, hi)


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def decode(data: bytes) -> list[Instruction]:
    """Decode raw instruction bytes (little-endian). Validation is separate: see `validate`."""
    if len(data) % 8:
        raise EncodingError(f"program length {len(data)} is not a multiple of 8 bytes", len(data) // 8)
    out: list[Instruction] = []
    n = len(data) // 8
    i = 0
    while i < n:
        op, regs, off, imm = _STRUCT.unpack_from(data, i * 8)
        dst, src = regs & 0x0F, regs >> 4
        if op == LDDW:
            if i + 1 >= n:
                raise EncodingError("lddw is missing its second half", i)
            op2, regs2, off2, imm2 = _STRUCT.unpack_from(data, (i + 1) * 8)
            if op2 != 0 or regs2 != 0 or off2 != 0:
                raise EncodingError("lddw's second half must have opcode, registers and offset 0", i + 1)
            out.append(Instruction(op, dst, src, off, imm, imm2))
            out.append(Instruction(0, 0, 0, 0, imm2))
            i += 2
            continue
        out.append(Instruction(op, dst, src, off, imm))
        i += 1
    return out


def encode(insns: list[Instruction]) -> bytes:
    """Encode a program (one Instruction per slot, lddw followed by its filler) to bytes."""
    buf = bytearray()
    for ins in insns:
        buf += _STRUCT.pack(ins.opcode & 0xFF, ((ins.src & 0xF) << 4) | (ins.dst & 0xF), ins.off, ins.imm)
    return bytes(buf)


def _alu_ok(ins: Instruction) -> str | None:
    """Reason the ALU/ALU64 instruction is invalid, or None."""
    code, is64 = ins.code, ins.cls == BPF_ALU64
    reg_src = ins.source == BPF_X
    if code == BPF_END:
        if ins.imm not in (16, 32, 64):
            return f"byte swap width {ins.imm} (must be 16, 32 or 64)"
        if is64 and ins.source != BPF_K:
            return "bswap with the source bit set"
        if ins.src != 0 or ins.off != 0:
            return "byte swap with non-zero src register or offset"
        return None
    if code == BPF_NEG:
        if reg_src or ins.src != 0 or ins.off != 0 or ins.imm != 0:
            return "neg with non-zero src, offset or immediate"
        return None
    if code > BPF_END:
        return f"unknown ALU operation {code:#x}"
    allowed_off = {0}
    if code in (BPF_DIV, BPF_MOD):
        allowed_off = {0, 1}
    elif code == BPF_MOV and reg_src:
        allowed_off = {0, 8, 16, 32} if is64 else {0, 8, 16}
    if ins.off not in allowed_off:
        return f"offset {ins.off} is not allowed for this ALU operation"
    if reg_src:
        if ins.imm != 0:
            return "register-source ALU operation with non-zero immediate"
    elif ins.src != 0:
        return "immediate-source ALU operation with non-zero src register"
    return None


def _jmp_ok(ins: Instruction) -> str | None:
    code, reg_src = ins.code, ins.source == BPF_X
    if code == BPF_EXIT:
        if ins.cls != BPF_JMP or reg_src or ins.dst or ins.src or ins.off or ins.imm:
            return "exit with non-zero fields"
        return None
    if code == BPF_CALL:
        if ins.cls != BPF_JMP:
            return "call in the JMP32 class"
        if reg_src:  # callx: target in dst
            if ins.src or ins.off or ins.imm:
                return "callx with non-zero src, offset or immediate"
            return None
        if ins.dst or ins.off:
            return "call with non-zero dst register or offset"
        if ins.src not in (CALL_HELPER, PSEUDO_CALL, PSEUDO_KFUNC_CALL):
            return f"call with unknown source {ins.src}"
        return None
    if code == BPF_JA:
        if reg_src or ins.dst or ins.src:
            return "ja with non-zero registers"
        if ins.cls == BPF_JMP and ins.imm != 0:
            return "ja with non-zero immediate"
        if ins.cls == BPF_JMP32 and ins.off != 0:
            return "gotol with non-zero offset"
        return None
    if code > BPF_JSLE:
        return f"unknown jump operation {code:#x}"
    if reg_src and ins.imm != 0:
        return "register-source jump with non-zero immediate"
    if not reg_src and ins.src != 0:
        return "immediate-source jump with non-zero src register"
    return None


def _mem_ok(ins: Instruction) -> str | None:
    cls, mode = ins.cls, ins.mode
    if cls == BPF_LD:
        if mode in (BPF_ABS, BPF_IND):
            # legacy packet access: decoded so it can be named; engines refuse it for XDP.
            # The kernel rejects the reserved fields ("BPF_LD_[ABS|IND] uses reserved fields").
            if ins.dst != 0 or ins.off != 0 or ins.size == 8 or (mode == BPF_ABS and ins.src != 0):
                return "legacy packet load with reserved fields set (dst, offset, size 8 or ABS src)"
            return None
        return f"unknown LD mode {mode:#x}"
    if cls == BPF_LDX:
        if mode not in (BPF_MEM, BPF_MEMSX):
            return f"unknown LDX mode {mode:#x}"
        if mode == BPF_MEMSX and ins.size == 8:
            return "sign-extending load of 8 bytes"
        if ins.imm != 0:
            return "load with non-zero immediate"
        return None
    if cls == BPF_ST:
        if mode != BPF_MEM:
            return f"unknown ST mode {mode:#x}"
        if ins.src != 0:
            return "store-immediate with non-zero src register"
        return None
    # BPF_STX
    if mode == BPF_MEM:
        if ins.imm != 0:
            return "store with non-zero immediate"
        return None
    if mode == BPF_ATOMIC:
        if ins.size not in (4, 8):
            return "atomic operation on 1 or 2 bytes"
        if ins.imm not in ATOMIC_OPS:
            return f"unknown atomic operation {ins.imm:#x}"
        return None
    return f"unknown STX mode {mode:#x}"


def check(ins: Instruction) -> str | None:
    """Why a single (non-filler) instruction is invalid, or None when it is valid."""
    if ins.dst > 10 or ins.src > 10:
        return f"bad register r{max(ins.dst, ins.src)}"
    cls = ins.cls
    if ins.opcode == LDDW:
        if ins.src not in LDDW_PSEUDOS:
            return f"lddw with unknown source {ins.src}"
        if ins.off != 0:
            return "lddw with non-zero offset"
        return None
    if cls in (BPF_ALU, BPF_ALU64):
        return _alu_ok(ins)
    if cls in (BPF_JMP, BPF_JMP32):
        return _jmp_ok(ins)
    return _mem_ok(ins)


def validate(insns: list[Instruction]) -> None:
    """Reject what no engine may run, with the instruction index: unknown opcodes, bad registers,
    a lddw without its second half, jumps and calls out of the program (or into an lddw's second
    half), writes to r10, and a program that can fall off its end."""
    n = len(insns)
    if n == 0:
        raise EncodingError("empty program")
    i = 0
    while i < n:
        ins = insns[i]
        why = check(ins)
        if why:
            raise EncodingError(f"invalid instruction {ins.opcode:#04x}: {why}", i)
        if ins.opcode == LDDW:
            if i + 1 >= n or not insns[i + 1].is_filler:
                raise EncodingError("lddw is missing its second half", i)
            i += 2
            continue
        cls = ins.cls
        writes_dst = cls in (BPF_ALU, BPF_ALU64, BPF_LDX) or ins.opcode == LDDW
        if writes_dst and ins.dst == 10:
            raise EncodingError("r10 is read-only", i)
        if ins.is_jump or (ins.opcode == CALL and ins.src == PSEUDO_CALL):
            target = ins.jump_target(i) if ins.is_jump else i + ins.imm + 1
            if not 0 <= target < n:
                raise EncodingError(f"jump to {target} is outside the program (0..{n - 1})", i)
            if target > 0 and insns[target - 1].opcode == LDDW:
                raise EncodingError(f"jump to {target}, the second half of an lddw", i)
        i += 1
    last = insns[-1]
    if not (last.opcode == EXIT or (last.cls in (BPF_JMP, BPF_JMP32) and last.code == BPF_JA)):
        raise EncodingError("the program can fall off its end (last instruction is not exit or ja)", n - 1)
