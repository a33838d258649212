"""What the kernel engine needs of raw BTF: the string table, and BTF.ext records in the kernel's layout.

The loader keeps line info as text (`LineInfo(file, text, ...)`), while BPF_PROG_LOAD wants string
offsets into the BTF the program is loaded with. The strings are still in `.BTF` (BTF.ext records only
point into it), so looking them up in the string section gives the offsets back.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

BTF_MAGIC = 0xEB9F
_HDR = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type_off, type_len, str_off, str_len


def btf_strings(raw: bytes) -> dict[str, int]:
    """Every NUL-terminated string of the BTF string section -> its (first) offset."""
    if len(raw) < _HDR.size:
        raise ValueError(f"BTF of {len(raw)} bytes is shorter than its header")
    magic, version, _flags, hdr_len, _toff, _tlen, str_off, str_len = _HDR.unpack_from(raw, 0)
    if magic != BTF_MAGIC:
        raise ValueError(f"not BTF (magic {magic:#x}; big-endian BTF is not supported)")
    base = hdr_len + str_off
    sec = raw[base : base + str_len]
    out: dict[str, int] = {}
    pos = 0
    while pos < len(sec):
        end = sec.find(b"\0", pos)
        if end < 0:
            end = len(sec)
        s = sec[pos:end].decode("utf-8", "replace")
        out.setdefault(s, pos)
        pos = end + 1
    return out


def func_info_records(funcs: Iterable[tuple[int, int]]) -> bytes:
    """struct bpf_func_info {u32 insn_off; u32 type_id;} records."""
    return b"".join(struct.pack("<II", off, tid) for off, tid in funcs)


def line_col(line: int, col: int) -> int:
    """BPF_LINE_INFO_LINE_NUM / _LINE_COL packing: line in the high 22 bits, column in the low 10."""
    return ((line & 0x3FFFFF) << 10) | (col & 0x3FF)


def line_info_records(lines: Iterable[tuple[int, int, int, int]]) -> bytes:
    """struct bpf_line_info {u32 insn_off; u32 file_name_off; u32 line_off; u32 line_col;} records."""
    return b"".join(struct.pack("<IIII", *rec) for rec in lines)
