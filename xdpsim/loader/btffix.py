"""libbpf's fix-ups of an object's `.BTF` before the kernel sees it (btf_fixup_datasec).

clang leaves every DATASEC with size 0 and its variables at offset 0: only the linker knows where
they end up. libbpf fills in the section's size from the ELF section header and each variable's
offset from its ELF symbol, turns hidden globals into static ones, and sorts the entries by offset
(the kernel refuses overlapping or unsorted DATASEC entries). The string section is not touched, so
string offsets (line info!) stay valid.
"""

from __future__ import annotations

import struct

from ..btf import BTF, Kind
from ..errors import LoadError
from .elf import STT_OBJECT, ElfObject

_VSI = struct.Struct("<III")
STV_INTERNAL, STV_HIDDEN = 1, 2
_EXTERN_SECTIONS = (".kconfig", ".ksyms", ".extern")


def fixup_btf(btf: BTF, obj: ElfObject) -> bytes:
    buf = bytearray(btf.raw)
    base = btf.type_start
    for t in btf.types:
        if t.kind != Kind.DATASEC:
            continue
        sec = obj.section(t.name)
        if sec is None:
            if t.name in _EXTERN_SECTIONS:
                raise LoadError(f"{obj.path}: extern variables ({t.name}) are not supported")
            raise LoadError(f"{obj.path}: BTF DATASEC {t.name!r} has no ELF section")
        rec = base + t.offset
        struct.pack_into("<I", buf, rec + 8, sec.size)
        syms = {s.name: s for s in obj.symbols_in(sec.index, STT_OBJECT)}
        entries = []
        for vsi in t.members:
            var = btf[vsi.type]
            if var.kind != Kind.VAR:
                raise LoadError(
                    f"{obj.path}: DATASEC {t.name}: entry type {vsi.type} is {var.kind.name}, not a VAR"
                )
            sym = syms.get(var.name)
            if sym is None:
                raise LoadError(f"{obj.path}: DATASEC {t.name}: variable {var.name} has no ELF symbol")
            if sym.value + vsi.size > sec.size:
                raise LoadError(
                    f"{obj.path}: variable {var.name} [{sym.value}, {sym.value + vsi.size}) lies "
                    f"outside {t.name} ({sec.size} bytes)"
                )
            if sym.visibility in (STV_HIDDEN, STV_INTERNAL) and var.linkage == 1:
                struct.pack_into("<I", buf, base + var.offset + 12, 0)
            entries.append((sym.value, vsi.type, vsi.size))
        entries.sort()
        for i, (off, tid, size) in enumerate(entries):
            _VSI.pack_into(buf, rec + 12 + 12 * i, tid, off, size)
    return bytes(buf)
