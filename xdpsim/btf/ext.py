"""BTF.ext (the `.BTF.ext` ELF section): func info, line info and CO-RE relocation records per ELF section.

Offsets in the records are in bytes from the start of their ELF section (the loader turns them into
instruction slots of the linked program). Strings (section, file and source-line names, CO-RE access
strings) live in the string section of the matching `.BTF`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from .types import BTF, BTF_MAGIC, BtfError

_HDR = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, func_off, func_len, line_off, line_len
_CORE = struct.Struct("<II")  # core_relo_off, core_relo_len (hdr_len >= 32)


class CoreKind(IntEnum):
    """enum bpf_core_relo_kind."""

    FIELD_BYTE_OFFSET = 0
    FIELD_BYTE_SIZE = 1
    FIELD_EXISTS = 2
    FIELD_SIGNED = 3
    FIELD_LSHIFT_U64 = 4
    FIELD_RSHIFT_U64 = 5
    TYPE_ID_LOCAL = 6
    TYPE_ID_TARGET = 7
    TYPE_EXISTS = 8
    TYPE_SIZE = 9
    ENUMVAL_EXISTS = 10
    ENUMVAL_VALUE = 11
    TYPE_MATCHES = 12


@dataclass
class ExtFuncInfo:
    insn_off: int  # bytes in the section
    type_id: int


@dataclass
class ExtLineInfo:
    insn_off: int
    file: str
    text: str
    line: int
    col: int


@dataclass
class CoreRelo:
    insn_off: int
    type_id: int
    access: str
    kind: CoreKind


@dataclass
class BtfExt:
    func_info: dict[str, list[ExtFuncInfo]] = field(default_factory=dict)
    line_info: dict[str, list[ExtLineInfo]] = field(default_factory=dict)
    core_relos: dict[str, list[CoreRelo]] = field(default_factory=dict)


def _records(raw: bytes, start: int, length: int, min_size: int, what: str):
    """Yield (section name offset, record bytes) of one info block: rec_size, then per section
    {sec_name_off, num_info, records}."""
    if length == 0:
        return
    end = start + length
    if end > len(raw) or length < 4:
        raise BtfError(f".BTF.ext {what} block [{start}, {end}) runs past the end ({len(raw)} bytes)")
    (rec_size,) = struct.unpack_from("<I", raw, start)
    if rec_size < min_size or rec_size % 4:
        raise BtfError(f".BTF.ext {what}: bad record size {rec_size}")
    pos = start + 4
    while pos < end:
        if pos + 8 > end:
            raise BtfError(f".BTF.ext {what}: section header truncated at offset {pos}")
        name_off, num = struct.unpack_from("<II", raw, pos)
        pos += 8
        if pos + num * rec_size > end:
            raise BtfError(f".BTF.ext {what}: {num} records at offset {pos} run past the block")
        for i in range(num):
            yield name_off, raw[pos + i * rec_size : pos + (i + 1) * rec_size]
        pos += num * rec_size


def parse_ext(raw: bytes, btf: BTF) -> BtfExt:
    if len(raw) < _HDR.size:
        raise BtfError(f".BTF.ext of {len(raw)} bytes is shorter than its header")
    magic, _version, _flags, hdr_len, func_off, func_len, line_off, line_len = _HDR.unpack_from(raw)
    if magic != BTF_MAGIC:
        raise BtfError(f"bad .BTF.ext magic {magic:#06x}")
    if hdr_len < _HDR.size or hdr_len > len(raw):
        raise BtfError(f"bad .BTF.ext header length {hdr_len}")
    core_off = core_len = 0
    if hdr_len >= _HDR.size + _CORE.size:
        core_off, core_len = _CORE.unpack_from(raw, _HDR.size)
    ext = BtfExt()
    for name_off, rec in _records(raw, hdr_len + func_off, func_len, 8, "func info"):
        off, tid = struct.unpack_from("<II", rec)
        ext.func_info.setdefault(btf.string(name_off), []).append(ExtFuncInfo(off, tid))
    for name_off, rec in _records(raw, hdr_len + line_off, line_len, 16, "line info"):
        off, file_off, line_off_, line_col = struct.unpack_from("<IIII", rec)
        ext.line_info.setdefault(btf.string(name_off), []).append(
            ExtLineInfo(off, btf.string(file_off), btf.string(line_off_), line_col >> 10, line_col & 0x3FF)
        )
    for name_off, rec in _records(raw, hdr_len + core_off, core_len, 16, "CO-RE relocations"):
        off, tid, acc_off, kind = struct.unpack_from("<IIII", rec)
        try:
            ck = CoreKind(kind)
        except ValueError:
            raise BtfError(f".BTF.ext: unknown CO-RE relocation kind {kind} at insn offset {off}") from None
        ext.core_relos.setdefault(btf.string(name_off), []).append(
            CoreRelo(off, tid, btf.string(acc_off), ck)
        )
    return ext
