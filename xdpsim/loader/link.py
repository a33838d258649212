"""Linking one program as libbpf does before BPF_PROG_LOAD.

The entry function's instructions come first; every function it reaches through a bpf-to-bpf call
(`call` with src 1) or takes the address of (`lddw` to code: a bpf_loop callback) is appended once,
depth first in the order first met (libbpf's order), and the call/lddw immediates are rewritten
relative to the new layout. Map and global-data references (`lddw` with an R_BPF_64_64
relocation) become PSEUDO_MAP_FD / PSEUDO_MAP_VALUE with the map's index in ObjectSpec.maps.
BTF.ext func and line info follow their functions into the linked layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..btf import BTF, BtfExt
from ..errors import LoadError
from ..isa import (
    CALL,
    PSEUDO_CALL,
    PSEUDO_FUNC,
    PSEUDO_KFUNC_CALL,
    PSEUDO_MAP_FD,
    PSEUDO_MAP_VALUE,
    Instruction,
)
from ..spec import FuncInfo, LineInfo
from .elf import R_BPF_64_32, R_BPF_64_64, R_BPF_NAMES, SHN_UNDEF, STT_SECTION, ElfObject, Reloc, Section


@dataclass(frozen=True)
class Func:
    name: str
    section: int  # ELF section index
    start: int  # slot in the section
    end: int


@dataclass
class Linked:
    insns: list[Instruction]
    functions: dict[int, str]
    func_info: list[FuncInfo] = field(default_factory=list)
    line_info: list[LineInfo] = field(default_factory=list)


@dataclass
class Linker:
    """What linking needs of the whole object: decoded code sections (CO-RE already applied), functions
    per section, relocations by slot, and where maps and data sections went in ObjectSpec.maps."""

    obj: ElfObject
    code: dict[int, list[Instruction]]  # section index -> instructions
    funcs: dict[int, list[Func]]  # section index -> functions, by start
    map_at: dict[tuple[int, int], int]  # (section index, offset of the definition) -> map index
    data_map: dict[int, int]  # data section index -> map index
    btf: BTF | None = None
    ext: BtfExt | None = None
    relocs: dict[int, dict[int, Reloc]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for shndx, rels in self.obj.relocs.items():
            if shndx not in self.code:
                continue
            n = len(self.code[shndx])
            by_slot: dict[int, Reloc] = {}
            for r in rels:
                if r.offset % 8 or not 0 <= r.offset // 8 < n:
                    raise LoadError(
                        f"{self._sec(shndx).name}: relocation at byte {r.offset} ({r.sym.name}) is "
                        f"not on an instruction of the section ({n} instructions)"
                    )
                by_slot[r.offset // 8] = r
            self.relocs[shndx] = by_slot

    def _sec(self, shndx: int) -> Section:
        return self.obj.sections[shndx]

    def _func_at(self, shndx: int, slot: int, what: str) -> Func:
        for f in self.funcs.get(shndx, []):
            if f.start <= slot < f.end:
                return f
        sec = self._sec(shndx).name if 0 <= shndx < len(self.obj.sections) else str(shndx)
        raise LoadError(f"{what}: target {sec}+{slot} (instruction slot) is not inside a function")

    def link(self, entry: Func) -> Linked:
        out: list[Instruction] = list(self.code[entry.section][entry.start : entry.end])
        placed: dict[Func, int] = {entry: 0}
        order = [entry]

        def place(f: Func) -> int:
            # libbpf appends a subprogram when it first meets a reference to it and relocates it
            # right away (depth first), so its own callees come before the caller's later ones
            if f not in placed:
                placed[f] = len(out)
                order.append(f)
                out.extend(self.code[f.section][f.start : f.end])
                walk(f)
            return placed[f]

        def walk(fn: Func) -> None:
            base = placed[fn]
            code = self.code[fn.section]
            rels = self.relocs.get(fn.section, {})
            k = fn.start
            while k < fn.end:
                ins = code[k]
                pc = base + k - fn.start
                where = f"program {entry.name}, {self._sec(fn.section).name}+{k} ({fn.name})"
                r = rels.get(k)
                if ins.opcode == CALL:
                    out[pc] = self._call(ins, r, fn, k, pc, place, where)
                elif ins.is_lddw:
                    if k + 1 >= fn.end:
                        raise LoadError(f"{where}: lddw is missing its second half")
                    new = self._lddw(ins, r, pc, place, where)
                    out[pc] = new
                    out[pc + 1] = Instruction(0, 0, 0, 0, new.next_imm)
                    k += 2
                    continue
                elif r is not None:
                    raise LoadError(
                        f"{where}: relocation {R_BPF_NAMES.get(r.type, r.type)} against {r.sym.name!r} "
                        f"on an instruction that is neither lddw nor call"
                    )
                k += 1

        walk(entry)
        linked = Linked(out, {placed[f]: f.name for f in order})
        self._ext_info(linked, order, placed)
        return linked

    def _call(
        self, ins: Instruction, r: Reloc | None, fn: Func, k: int, pc: int, place, where: str
    ) -> Instruction:
        if ins.src == PSEUDO_KFUNC_CALL:
            raise LoadError(f"{where}: kfunc call (BTF id {ins.imm}) is not supported")
        if r is not None:
            if r.type != R_BPF_64_32:
                raise LoadError(
                    f"{where}: unsupported relocation {R_BPF_NAMES.get(r.type, r.type)} on a call"
                )
            if r.sym.shndx == SHN_UNDEF:
                raise LoadError(
                    f"{where}: call to extern function {r.sym.name!r} (kfunc or unresolved symbol) "
                    "is not supported"
                )
            if not self._is_code(r.sym.shndx):
                raise LoadError(f"{where}: call relocation against {r.sym.name!r}, which is not code")
            shndx, slot = r.sym.shndx, r.sym.value // 8 + ins.imm + 1
        elif ins.src == PSEUDO_CALL:
            shndx, slot = fn.section, k + ins.imm + 1
        else:
            return ins  # a helper call
        target = self._func_at(shndx, slot, where)
        tpc = place(target) + slot - target.start
        return Instruction(ins.opcode, ins.dst, PSEUDO_CALL, ins.off, tpc - pc - 1)

    def _is_code(self, shndx: int) -> bool:
        return shndx in self.code

    def _lddw(self, ins: Instruction, r: Reloc | None, pc: int, place, where: str) -> Instruction:
        if r is None:
            if ins.src not in (0,):
                raise LoadError(f"{where}: lddw with pseudo source {ins.src} but no relocation")
            return ins
        if r.type != R_BPF_64_64:
            raise LoadError(
                f"{where}: unsupported relocation {R_BPF_NAMES.get(r.type, r.type)} on lddw ({r.sym.name!r})"
            )
        sym = r.sym
        if sym.shndx == SHN_UNDEF:
            raise LoadError(f"{where}: reference to extern {sym.name!r} (.kconfig/.ksyms) is not supported")
        if not 0 <= sym.shndx < len(self.obj.sections):
            raise LoadError(f"{where}: relocation against {sym.name!r} in special section {sym.shndx:#x}")
        sec = self._sec(sym.shndx)
        if sec.name in (".maps", "maps"):
            off = sym.value + (ins.imm if sym.type == STT_SECTION else 0)
            idx = self.map_at.get((sym.shndx, off))
            if idx is None:
                raise LoadError(f"{where}: {sym.name!r} at {sec.name}+{off} is not a map definition")
            return Instruction(ins.opcode, ins.dst, PSEUDO_MAP_FD, ins.off, idx, 0)
        if sym.shndx in self.data_map:
            off = sym.value + ins.imm
            if not 0 <= off <= sec.size:
                raise LoadError(f"{where}: {sym.name!r}+{ins.imm} is outside {sec.name} ({sec.size} bytes)")
            return Instruction(ins.opcode, ins.dst, PSEUDO_MAP_VALUE, ins.off, self.data_map[sym.shndx], off)
        if self._is_code(sym.shndx):
            if ins.imm % 8:
                raise LoadError(f"{where}: function address {sym.name!r}+{ins.imm} is not on an instruction")
            slot = sym.value // 8 + ins.imm // 8
            target = self._func_at(sym.shndx, slot, where)
            tpc = place(target) + slot - target.start
            return Instruction(ins.opcode, ins.dst, PSEUDO_FUNC, ins.off, tpc - pc - 1, 0)
        raise LoadError(
            f"{where}: lddw relocation against {sym.name!r} in section {sec.name!r}, which is "
            "neither a map, global data nor code"
        )

    def _ext_info(self, linked: Linked, order: list[Func], placed: dict[Func, int]) -> None:
        if self.ext is None or self.btf is None:
            return
        for f in order:
            base = placed[f]
            sname = self._sec(f.section).name
            for fi in self.ext.func_info.get(sname, []):
                slot = fi.insn_off // 8
                if f.start <= slot < f.end:
                    linked.func_info.append(
                        FuncInfo(base + slot - f.start, self.btf[fi.type_id].name, fi.type_id)
                    )
            for li in self.ext.line_info.get(sname, []):
                slot = li.insn_off // 8
                if f.start <= slot < f.end:
                    linked.line_info.append(
                        LineInfo(base + slot - f.start, li.file, li.line, li.col, li.text)
                    )
        linked.func_info.sort(key=lambda x: x.insn_off)
        linked.line_info.sort(key=lambda x: x.insn_off)
