"""The parts of a BPF ELF relocatable object the loader reads: sections, symbols, relocations.

pyelftools does the parsing; this module checks what a BPF object must be (64-bit little-endian
relocatable, machine EM_BPF) and turns every pyelftools failure into a `LoadError` that names the file
and what was being read, so a truncated or corrupt object never escapes as another exception.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field

from elftools.elf.elffile import ELFFile

from ..errors import LoadError

EM_BPF = 247
SHT_PROGBITS, SHT_SYMTAB, SHT_NOBITS, SHT_REL, SHT_RELA = 1, 2, 8, 9, 4
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION = 0, 1, 2, 3
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
SHN_UNDEF = 0
MAX_SECTION = 1 << 28  # 256 MiB: more is a corrupt header, not a BPF object

R_BPF_NAMES = {
    0: "R_BPF_NONE",
    1: "R_BPF_64_64",
    2: "R_BPF_64_ABS64",
    3: "R_BPF_64_ABS32",
    4: "R_BPF_64_NODYLD32",
    10: "R_BPF_64_32",
}
R_BPF_64_64, R_BPF_64_ABS64, R_BPF_64_ABS32, R_BPF_64_32 = 1, 2, 3, 10


@dataclass
class Section:
    index: int
    name: str
    type: int
    flags: int
    size: int
    data: bytes  # NOBITS sections: zeros of their size

    @property
    def executable(self) -> bool:
        return bool(self.flags & SHF_EXECINSTR)


@dataclass
class Symbol:
    index: int
    name: str
    value: int
    size: int
    type: int
    bind: int
    shndx: int  # SHN_UNDEF (0) for externs; special indices (ABS, COMMON) are >= 0xff00
    visibility: int = 0


@dataclass
class Reloc:
    offset: int
    type: int
    sym: Symbol


@dataclass
class ElfObject:
    path: str
    sections: list[Section]
    symbols: list[Symbol]
    relocs: dict[int, list[Reloc]] = field(default_factory=dict)  # target section index -> relocations

    def section(self, name: str) -> Section | None:
        for s in self.sections:
            if s.name == name:
                return s
        return None

    def symbols_in(self, shndx: int, *types: int) -> list[Symbol]:
        return sorted(
            (s for s in self.symbols if s.shndx == shndx and (not types or s.type in types)),
            key=lambda s: (s.value, s.index),
        )


def _num(v: object) -> int:
    """pyelftools gives special section indices as strings ('SHN_UNDEF', 'SHN_ABS', ...)."""
    if isinstance(v, int):
        return v
    return {"SHN_UNDEF": 0, "SHN_ABS": 0xFFF1, "SHN_COMMON": 0xFFF2}.get(str(v), 0xFF00)


def read_elf(data: bytes, path: str) -> ElfObject:
    if len(data) < 64:
        raise LoadError(f"{path}: not an ELF object ({len(data)} bytes, shorter than an ELF header)")
    if data[:4] != b"\x7fELF":
        raise LoadError(f"{path}: not an ELF object (magic {data[:4]!r})")
    if data[4] != 2:
        raise LoadError(f"{path}: 32-bit ELF; BPF objects are ELF64")
    if data[5] != 1:
        raise LoadError(f"{path}: big-endian ELF; xdpsim loads little-endian BPF objects only")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    if shentsize != 64:
        raise LoadError(f"{path}: section header entry size {shentsize}, expected 64")
    if shoff + shnum * shentsize > len(data):
        raise LoadError(
            f"{path}: the section header table [{shoff:#x}, {shoff + shnum * shentsize:#x}) runs past "
            f"the end of the file ({len(data)} bytes): truncated?"
        )
    try:
        elf = ELFFile(io.BytesIO(data))
        machine = elf.header["e_machine"]
        if machine != "EM_BPF" and machine != EM_BPF:
            raise LoadError(f"{path}: ELF machine {machine}, not BPF (EM_BPF, 247)")
        if elf.header["e_type"] != "ET_REL":
            raise LoadError(f"{path}: ELF type {elf.header['e_type']}, a BPF object is relocatable (ET_REL)")
        return _read(elf, data, path)
    except LoadError:
        raise
    except Exception as e:  # pyelftools raises ELFError, struct/construct errors, ValueError, ...
        raise LoadError(f"{path}: malformed ELF: {type(e).__name__}: {e}") from e


def _read(elf: ELFFile, data: bytes, path: str) -> ElfObject:
    sections: list[Section] = []
    symtab = None
    rels = []
    for i, s in enumerate(elf.iter_sections()):
        sh = s.header
        size = int(sh["sh_size"])
        stype = sh["sh_type"]
        stype_n = {
            "SHT_PROGBITS": SHT_PROGBITS,
            "SHT_SYMTAB": SHT_SYMTAB,
            "SHT_NOBITS": SHT_NOBITS,
            "SHT_REL": SHT_REL,
            "SHT_RELA": SHT_RELA,
        }.get(stype, stype if isinstance(stype, int) else -1)
        if size > MAX_SECTION:
            raise LoadError(f"{path}: section {i} ({s.name}) claims {size} bytes")
        if stype_n == SHT_NOBITS:
            body = bytes(size)
        elif stype_n == 0 or i == 0:  # SHT_NULL
            body = b""
        else:
            off = int(sh["sh_offset"])
            if off + size > len(data):
                raise LoadError(
                    f"{path}: section {s.name or i} [{off:#x}, {off + size:#x}) runs past the end "
                    f"of the file ({len(data)} bytes)"
                )
            body = data[off : off + size]
        sections.append(Section(i, s.name, stype_n, int(sh["sh_flags"]), size, body))
        if stype_n == SHT_SYMTAB:
            symtab = s
        elif stype_n in (SHT_REL, SHT_RELA):
            rels.append((s, stype_n))
    symbols: list[Symbol] = []
    if symtab is not None:
        if symtab.header["sh_entsize"] != 24:
            raise LoadError(f"{path}: symbol table entry size {symtab.header['sh_entsize']}, expected 24")
        for j, sym in enumerate(symtab.iter_symbols()):
            info = sym["st_info"]
            stype = {"STT_NOTYPE": 0, "STT_OBJECT": 1, "STT_FUNC": 2, "STT_SECTION": 3, "STT_FILE": 4}.get(
                info["type"], 99
            )
            bind = {"STB_LOCAL": 0, "STB_GLOBAL": 1, "STB_WEAK": 2}.get(info["bind"], 99)
            vis = sym["st_other"]["visibility"]
            vis_n = {"STV_DEFAULT": 0, "STV_INTERNAL": 1, "STV_HIDDEN": 2, "STV_PROTECTED": 3}.get(vis, 0)
            shndx = _num(sym["st_shndx"])
            name = sym.name
            if stype == STT_SECTION and 0 < shndx < len(sections):
                name = name or sections[shndx].name
            symbols.append(
                Symbol(j, name, int(sym["st_value"]), int(sym["st_size"]), stype, bind, shndx, vis_n)
            )
    relocs: dict[int, list[Reloc]] = {}
    for s, stype_n in rels:
        target = int(s.header["sh_info"])
        if not 0 < target < len(sections):
            raise LoadError(
                f"{path}: relocation section {s.name} targets section {target}, which does not exist"
            )
        tname = sections[target].name
        if not (sections[target].executable or tname in (".maps", "maps")):
            continue  # debug info, BTF: nothing the loader applies
        if stype_n == SHT_RELA:
            raise LoadError(f"{path}: {s.name}: RELA relocations are not used by BPF objects")
        if s.header["sh_entsize"] not in (16, 0):
            raise LoadError(f"{path}: {s.name}: relocation entry size {s.header['sh_entsize']}, expected 16")
        out = relocs.setdefault(target, [])
        for r in s.iter_relocations():
            si = int(r["r_info_sym"])
            if not 0 <= si < len(symbols):
                raise LoadError(
                    f"{path}: {s.name}: relocation at {int(r['r_offset']):#x} names symbol {si}, "
                    f"beyond the symbol table ({len(symbols)} symbols)"
                )
            out.append(Reloc(int(r["r_offset"]), int(r["r_info_type"]), symbols[si]))
    return ElfObject(path, sections, symbols, relocs)
