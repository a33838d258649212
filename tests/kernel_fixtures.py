"""Fixtures and helpers for the kernel tests: skip reasons, a few hand-encoded instructions, hand-made specs.

conftest.py can pull the fixtures in with `from kernel_fixtures import kernel, netns_ok  # noqa: F401`;
the test_kernel*.py files import them directly.
"""

from __future__ import annotations

import struct

import pytest

from xdpsim.isa import Instruction, lddw
from xdpsim.kernel.bpf import kernel_available
from xdpsim.kernel.netns import netns_available
from xdpsim.spec import MapSpec, MapType, ObjectSpec, ProgramSpec, ProgType

# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kernel() -> str:
    """Skips the test, with the reason, where this process cannot load and test-run BPF programs."""
    ok, why = kernel_available()
    if not ok:
        pytest.skip(f"kernel engine unavailable: {why}")
    return why


@pytest.fixture(scope="session")
def netns_ok(kernel: str) -> None:
    """Skips where network namespaces with veth devices cannot be made (no `ip`, no CAP_SYS_ADMIN)."""
    ok, why = netns_available()
    if not ok:
        pytest.skip(why)


# --- helper ids (include/uapi/linux/bpf.h) -----------------------------------------------------------

MAP_LOOKUP_ELEM = 1
MAP_UPDATE_ELEM = 2
GET_SMP_PROCESSOR_ID = 8
TAIL_CALL = 12
XDP_ADJUST_HEAD = 44
XDP_ADJUST_META = 54
XDP_ADJUST_TAIL = 65

# --- a handful of instructions, enough for the probes ------------------------------------------------

W, H, B, DW = 0x00, 0x08, 0x10, 0x18


def mov(dst: int, imm: int) -> Instruction:
    return Instruction(0xB7, dst, 0, 0, imm)


def movr(dst: int, src: int) -> Instruction:
    return Instruction(0xBF, dst, src, 0, 0)


def add(dst: int, imm: int) -> Instruction:
    return Instruction(0x07, dst, 0, 0, imm)


def addr(dst: int, src: int) -> Instruction:
    return Instruction(0x0F, dst, src, 0, 0)


def mul(dst: int, imm: int) -> Instruction:
    return Instruction(0x27, dst, 0, 0, imm)


def subr(dst: int, src: int) -> Instruction:
    return Instruction(0x1F, dst, src, 0, 0)


def ldx(size: int, dst: int, src: int, off: int) -> Instruction:
    return Instruction(0x61 | size, dst, src, off, 0)


def ldxsw(dst: int, src: int, off: int) -> Instruction:
    """Sign-extending 32-bit load (ldsx, ISA v4)."""
    return Instruction(0x81, dst, src, off, 0)


def st(size: int, dst: int, off: int, imm: int) -> Instruction:
    return Instruction(0x62 | size, dst, 0, off, imm)


def stx(size: int, dst: int, src: int, off: int) -> Instruction:
    return Instruction(0x63 | size, dst, src, off, 0)


def atomic_add64(dst: int, src: int, off: int) -> Instruction:
    return Instruction(0xDB, dst, src, off, 0)


def jeq(dst: int, imm: int, off: int) -> Instruction:
    return Instruction(0x15, dst, 0, off, imm)


def call(helper: int) -> Instruction:
    return Instruction(0x85, 0, 0, 0, helper)


def exit_() -> Instruction:
    return Instruction(0x95, 0, 0, 0, 0)


def ld_map(dst: int, map_index: int) -> list[Instruction]:
    """lddw dst, map (PSEUDO_MAP_FD with the map's index, as the loader leaves it)."""
    return list(lddw(dst, map_index, src=1))


def ld_map_value(dst: int, map_index: int, off: int) -> list[Instruction]:
    """lddw dst, map_value + off (PSEUDO_MAP_VALUE)."""
    return list(lddw(dst, (off << 32) | map_index, src=2))


def lookup0(map_index: int, on_missing_skip: int) -> list[Instruction]:
    """r0 = bpf_map_lookup_elem(map, &(u32)0); if r0 == 0 skip `on_missing_skip` instructions."""
    return [
        st(W, 10, -4, 0),
        movr(2, 10),
        add(2, -4),
        *ld_map(1, map_index),
        call(MAP_LOOKUP_ELEM),
        jeq(0, 0, on_missing_skip),
    ]


def raw(insns: list[Instruction]) -> bytes:
    return b"".join(
        struct.pack("<BBhi", i.opcode, (i.src << 4) | i.dst, i.off, i.imm) for i in insns
    )


# --- hand-made specs ---------------------------------------------------------------------------------


def xdp_prog(name: str, insns: list[Instruction], **kw) -> ProgramSpec:
    return ProgramSpec(name=name, section="xdp", type=ProgType.XDP, attach="xdp", insns=insns,
                       license="GPL", **kw)


def tc_prog(name: str, insns: list[Instruction], **kw) -> ProgramSpec:
    return ProgramSpec(name=name, section="tc", type=ProgType.SCHED_CLS, attach="tc", insns=insns,
                       license="GPL", **kw)


def array(name: str, value_size: int = 8, max_entries: int = 1, **kw) -> MapSpec:
    return MapSpec(name, MapType.ARRAY, 4, value_size, max_entries, **kw)


def obj(progs: list[ProgramSpec], maps: list[MapSpec], **kw) -> ObjectSpec:
    return ObjectSpec(path="<hand-made>", programs={p.name: p for p in progs}, maps=maps, license="GPL", **kw)


# --- a minimal BTF blob: int, a FUNC_PROTO returning it, one FUNC per name --------------------------


def tiny_btf(func_names: list[str], extra_strings: list[str]) -> tuple[bytes, dict[str, int], dict[str, int]]:
    """BTF with `int` (id 1), `int (void)` (id 2) and a static FUNC per name (ids 3...).

    Returns the blob, the FUNC type ids by name, and the string offsets (for line info records).
    """
    strings = b"\0"
    offs: dict[str, int] = {"": 0}

    def s(text: str) -> int:
        nonlocal strings
        if text not in offs:
            offs[text] = len(strings)
            strings += text.encode() + b"\0"
        return offs[text]

    types = b""
    types += struct.pack("<III", s("int"), 1 << 24, 4) + struct.pack("<I", (1 << 24) | 32)  # INT, signed
    types += struct.pack("<III", 0, 13 << 24, 1)  # FUNC_PROTO, no params, returns int
    ids = {}
    for i, name in enumerate(func_names):
        types += struct.pack("<III", s(name), 12 << 24, 2)  # FUNC, static linkage
        ids[name] = 3 + i
    for t in extra_strings:
        s(t)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings, ids, offs
