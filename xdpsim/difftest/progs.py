"""Random XDP programs the kernel verifier accepts, for differential testing of the ISA.

`random_program(rng)` gives an ObjectSpec with one program, `gen`, and two maps: `out` (ARRAY of one
64-byte value) and `table` (HASH, u32 -> u64, 8 entries). Its shape keeps the verifier content while
leaving the arithmetic free:

0. (one program in three) bpf_xdp_adjust_head/meta/tail with random deltas, results kept on the stack.
1. `r6 = ctx->data`, `r7 = ctx->data_end`; frames shorter than MIN_LEN bytes return XDP_DROP.
2. Every register of the pool (r0-r5, r7-r9) is loaded from the packet (plain and sign-extending
   loads of 1, 2, 4, 8 bytes): all scalars, all initialised.
3. A random body: ALU and ALU64 (every op, immediate and register forms, signed div/mod, movsx,
   byte swaps) and forward conditional jumps (JMP and JMP32, every condition; a conditional jump keeps
   both successors reachable, so no instruction is dead).
4. Stores of pool registers back into the packet (output bytes); updates (every flag), deletes and
   lookups in `table` (16 keys for 8 entries: full-map errors too); then on `out`'s value plain stores,
   atomics (add/or/and/xor with and without fetch, xchg, cmpxchg) and a load back into r9; the bytes
   helpers, bpf_csum_diff, bpf_get_smp_processor_id. r7..r9 survive the calls; every helper result is
   folded into r9.
5. `r0 = r9 & 3` (ABORTED, DROP, PASS or TX) and exit.
"""

from __future__ import annotations

import random

from ..isa import Instruction, lddw
from ..spec import MapSpec, MapType, ObjectSpec, ProgramSpec, ProgType

MIN_LEN = 64
POOL = (0, 1, 2, 3, 4, 5, 7, 8, 9)
IMMS = (0, 1, -1, 2, 7, 31, 32, 63, 64, 0x7FFF_FFFF, -0x8000_0000, 0xFFFF, 0x8000, 255, -256)

BPF_LDX, BPF_STX, BPF_ST = 0x01, 0x03, 0x02
BPF_ALU, BPF_JMP, BPF_JMP32, BPF_ALU64 = 0x04, 0x05, 0x06, 0x07
SIZES = {1: 0x10, 2: 0x08, 4: 0x00, 8: 0x18}
ALU_OPS = (0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0)
JMP_OPS = (0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0xA0, 0xB0, 0xC0, 0xD0)
ATOMIC_OPS = (0x00, 0x01, 0x40, 0x41, 0x50, 0x51, 0xA0, 0xA1, 0xE1)  # add/or/and/xor (+fetch), xchg
CMPXCHG = 0xF1


def _imm(rng: random.Random) -> int:
    return rng.choice(IMMS) if rng.random() < 0.5 else rng.randint(-0x8000_0000, 0x7FFF_FFFF)


def _alu(rng: random.Random) -> Instruction:
    cls = rng.choice((BPF_ALU, BPF_ALU64))
    op = rng.choice(ALU_OPS)
    dst = rng.choice(POOL)
    bits = 64 if cls == BPF_ALU64 else 32
    if op == 0x80:  # neg: no source operand
        return Instruction(cls | op, dst, 0, 0, 0)
    if op == 0xD0:  # byte swaps: ALU to_le/to_be, ALU64 bswap (v4)
        src_bit = 0x08 if cls == BPF_ALU and rng.random() < 0.5 else 0x00
        return Instruction(cls | op | src_bit, dst, 0, 0, rng.choice((16, 32, 64)))
    off = 0
    if op in (0x30, 0x90) and rng.random() < 0.4:
        off = 1  # sdiv / smod
    if op == 0xB0 and rng.random() < 0.3:
        off = rng.choice((8, 16, 32) if cls == BPF_ALU64 else (8, 16))  # movsx
        return Instruction(cls | op | 0x08, dst, rng.choice(POOL), off, 0)
    if rng.random() < 0.5:
        return Instruction(cls | op | 0x08, dst, rng.choice(POOL), off, 0)
    imm = _imm(rng)
    if op in (0x60, 0x70, 0xC0):
        imm = rng.randrange(bits)  # the verifier refuses constant shifts out of range
    elif op in (0x30, 0x90) and imm == 0:
        imm = rng.choice((1, -1, 3))  # and constant division by zero
    return Instruction(cls | op, dst, 0, off, imm)


def _jump(rng: random.Random, reach: int) -> Instruction:
    cls = rng.choice((BPF_JMP, BPF_JMP32))
    op = rng.choice(JMP_OPS)
    off = rng.randint(0, reach)
    if rng.random() < 0.5:
        return Instruction(cls | op | 0x08, rng.choice(POOL), rng.choice(POOL), off, 0)
    return Instruction(cls | op, rng.choice(POOL), 0, off, _imm(rng))


def _ldx(size: int, dst: int, src: int, off: int, signed: bool = False) -> Instruction:
    return Instruction((0x80 if signed else 0x60) | SIZES[size] | BPF_LDX, dst, src, off, 0)


def _stx(size: int, dst: int, src: int, off: int) -> Instruction:
    return Instruction(0x60 | SIZES[size] | BPF_STX, dst, src, off, 0)


# helper ids: bpf_xdp_adjust_head, bpf_xdp_adjust_meta, bpf_xdp_adjust_tail
ADJUST_HELPERS = (44, 54, 65)
DELTAS = (0, 1, 2, 4, -4, -8, 14, -14, 32, -32, 64, -64, 100, -100, 216, -216, 220, -220, 256, -256, 300,
          -300, 3000, -3000, 0x7FFF_FFFF, -0x8000_0000)


def _geometry(rng: random.Random) -> list[Instruction]:
    """Calls of the adjust helpers with random deltas before anything reads the packet; each return
    value is kept on the stack (r10-8, -16, -24: zero when not called) for the pool to fold in."""
    out = [Instruction(0xBF, 6, 1, 0, 0)]  # r6 = ctx
    for slot in range(3):
        out.append(Instruction(0x7A, 10, 0, -8 * (slot + 1), 0))  # *(u64 *)(r10 - 8k) = 0
    for _ in range(rng.randint(1, 3)):
        slot = rng.randrange(3)
        delta = rng.choice(DELTAS) if rng.random() < 0.8 else rng.randint(-400, 400)
        out += [
            Instruction(0xBF, 1, 6, 0, 0),  # r1 = ctx
            Instruction(0xB7, 2, 0, 0, delta),  # r2 = delta
            Instruction(0x85, 0, 0, 0, rng.choice(ADJUST_HELPERS)),
            _stx(8, 10, 0, -8 * (slot + 1)),  # *(u64 *)(r10 - 8k) = r0
        ]
    return out + [Instruction(0xBF, 1, 6, 0, 0)]  # r1 = ctx for what follows


def random_program(rng: random.Random, body: int = 24, name: str = "gen", geometry: bool | None = None
                   ) -> ObjectSpec:
    """`geometry` (default: at random, one program in three) starts with bpf_xdp_adjust_head/meta/tail
    calls of random deltas, so the packet's start, end and metadata move before the arithmetic."""
    if geometry is None:
        geometry = rng.random() < 0.35
    # the context (for the bytes helpers) and a zeroed 32-byte buffer on the stack (their argument)
    insns: list[Instruction] = [_stx(8, 10, 1, CTX_SLOT)]
    insns += [Instruction(0x7A, 10, 0, BUF_SLOT + 8 * i, 0) for i in range(4)]
    insns += _geometry(rng) if geometry else []
    insns += [
        _ldx(4, 6, 1, 0),  # r6 = ctx->data
        _ldx(4, 7, 1, 4),  # r7 = ctx->data_end
        Instruction(0xBF, 8, 6, 0, 0),  # r8 = r6
        Instruction(0x07, 8, 0, 0, MIN_LEN),  # r8 += MIN_LEN
        Instruction(0x2D, 8, 7, 1, 0),  # if r8 > r7 goto drop
        Instruction(0x05, 0, 0, 2, 0),  # goto loads
        Instruction(0xB7, 0, 0, 0, 1),  # drop: r0 = XDP_DROP
        Instruction(0x95, 0, 0, 0, 0),  # exit
    ]
    for reg in POOL:
        size = rng.choice((1, 2, 4, 8))
        signed = size != 8 and rng.random() < 0.3
        insns.append(_ldx(size, reg, 6, rng.randrange(0, MIN_LEN - size + 1), signed))
    if geometry:
        for slot, reg in enumerate(rng.sample(POOL, 3)):  # fold in the adjust helpers' results
            insns += [_ldx(8, 2 if reg != 2 else 3, 10, -8 * (slot + 1)),
                      Instruction(0xAF, reg, 2 if reg != 2 else 3, 0, 0)]
    n = rng.randint(body // 2, body)
    for i in range(n):
        if rng.random() < 0.2:
            insns.append(_jump(rng, n - i - 1))
        else:
            insns.append(_alu(rng))
    for _ in range(rng.randint(1, 4)):
        size = rng.choice((1, 2, 4, 8))
        insns.append(_stx(size, 6, rng.choice(POOL), rng.randrange(0, MIN_LEN - size + 1)))
    insns += _hash_part(rng)
    insns += _helper_part(rng)
    insns += _map_part(rng)
    insns += [Instruction(0xBF, 0, 9, 0, 0), Instruction(0x57, 0, 0, 0, 3), Instruction(0x95, 0, 0, 0, 0)]
    prog = ProgramSpec(name=name, section="xdp", type=ProgType.XDP, attach="xdp", insns=insns, license="GPL")
    out = MapSpec("out", MapType.ARRAY, 4, 64, 1)
    # small on purpose: 16 possible keys for 8 entries, so updates meet a full map (E2BIG)
    table = MapSpec("table", MapType.HASH, 4, 8, HASH_ENTRIES)
    return ObjectSpec(path=f"<generated {name}>", programs={name: prog}, maps=[out, table], license="GPL")


HASH_ENTRIES = 8
CTX_SLOT, BUF_SLOT = -48, -96  # r10-48: the saved context; r10-96..-64: a 32-byte buffer
H_CSUM_DIFF, H_SMP_ID, H_LOAD_BYTES, H_STORE_BYTES = 28, 8, 189, 190


def _helper_part(rng: random.Random) -> list[Instruction]:
    """bpf_xdp_load_bytes / bpf_xdp_store_bytes at offsets from r7/r8 (& 127: some past the end, -EFAULT),
    bpf_csum_diff over the stack buffer, bpf_get_smp_processor_id; each result folded into r9."""
    out: list[Instruction] = []
    buf = [Instruction(0xBF, 3, 10, 0, 0), Instruction(0x07, 3, 0, 0, BUF_SLOT)]  # r3 = buffer
    for _ in range(rng.randint(0, 3)):
        op = rng.choice(("load", "store", "csum", "cpu"))
        if op in ("load", "store"):
            out += [_ldx(8, 1, 10, CTX_SLOT), Instruction(0xBF, 2, 7 if op == "load" else 8, 0, 0),
                    Instruction(0x57, 2, 0, 0, 127), *buf, Instruction(0xB7, 4, 0, 0, rng.randint(1, 32)),
                    Instruction(0x85, 0, 0, 0, H_LOAD_BYTES if op == "load" else H_STORE_BYTES)]
        elif op == "csum":
            out += [Instruction(0xBF, 1, 10, 0, 0), Instruction(0x07, 1, 0, 0, BUF_SLOT),
                    Instruction(0xB7, 2, 0, 0, 4 * rng.randint(0, 4)),
                    *buf, Instruction(0x07, 3, 0, 0, 16), Instruction(0xB7, 4, 0, 0, 4 * rng.randint(0, 4)),
                    Instruction(0xBF, 5, 9, 0, 0), Instruction(0x85, 0, 0, 0, H_CSUM_DIFF)]
        else:
            out.append(Instruction(0x85, 0, 0, 0, H_SMP_ID))
        out.append(Instruction(0xAF, 9, 0, 0, 0))  # r9 ^= r0
    return out


def _hash_part(rng: random.Random) -> list[Instruction]:
    """Updates (BPF_ANY, BPF_NOEXIST, BPF_EXIST), deletes and lookups in the hash map `table`, keys
    r7 & 15 and values r8; each helper's result (0 or -errno; a lookup: found or not) goes into r9."""
    out: list[Instruction] = []
    for _ in range(rng.randint(0, 3)):
        op = rng.choice(("update", "update", "delete", "lookup"))
        out += [
            Instruction(0xBF, 2, 7, 0, 0),  # r2 = r7
            Instruction(0x57, 2, 0, 0, 15),  # r2 &= 15
            _stx(4, 10, 2, -32),  # key at r10 - 32
            _stx(8, 10, 8, -40),  # value at r10 - 40
            *lddw(1, 1, src=1),  # r1 = map table (index 1)
            Instruction(0xBF, 2, 10, 0, 0),
            Instruction(0x07, 2, 0, 0, -32),
        ]
        if op == "update":
            out += [Instruction(0xBF, 3, 10, 0, 0), Instruction(0x07, 3, 0, 0, -40),
                    Instruction(0xB7, 4, 0, 0, rng.choice((0, 1, 2))), Instruction(0x85, 0, 0, 0, 2)]
        elif op == "delete":
            out.append(Instruction(0x85, 0, 0, 0, 3))
        else:
            out += [Instruction(0x85, 0, 0, 0, 1),
                    Instruction(0x15, 0, 0, 1, 0),  # if r0 == 0 skip the read
                    _ldx(8, 0, 0, 0)]  # r0 = the value found
        out += [Instruction(0xAF, 9, 0, 0, 0), Instruction(0x07, 8, 0, 0, 1)]  # r9 ^= r0; r8 += 1
    return out


def _map_part(rng: random.Random) -> list[Instruction]:
    """Lookup of out[0]; stores and atomics from r7, r8, r9 on the value; r9 ^= a word of it."""
    ops: list[Instruction] = []
    for _ in range(rng.randint(1, 4)):
        width = rng.choice((4, 8))
        code = 0xDB if width == 8 else 0xC3
        slot = rng.randrange(0, 64 // width) * width
        if rng.random() < 0.2:  # cmpxchg compares with r0: r0 = r7 first
            ops += [Instruction(0xBF, 0, 7, 0, 0), Instruction(code, 1, rng.choice((8, 9)), slot, CMPXCHG)]
        else:
            ops.append(Instruction(code, 1, rng.choice((7, 8, 9)), slot, rng.choice(ATOMIC_OPS)))
    if rng.random() < 0.5:
        ops.append(_stx(8, 1, 7, rng.randrange(0, 8) * 8))
    ops.append(_ldx(8, 2, 1, rng.randrange(0, 8) * 8))
    ops.append(Instruction(0xAF, 9, 2, 0, 0))  # r9 ^= r2
    return [
        Instruction(0x62, 10, 0, -4, 0),  # *(u32 *)(r10 - 4) = 0
        Instruction(0xBF, 2, 10, 0, 0),
        Instruction(0x07, 2, 0, 0, -4),
        *lddw(1, 0, src=1),  # r1 = map out (PSEUDO_MAP_FD, map index 0)
        Instruction(0x85, 0, 0, 0, 1),  # bpf_map_lookup_elem
        Instruction(0x15, 0, 0, len(ops) + 1, 0),  # if r0 == 0 skip the map part
        Instruction(0xBF, 1, 0, 0, 0),  # r1 = value pointer
        *ops,
    ]
