"""ELF BPF object -> ObjectSpec (the plain data every engine instantiates), as libbpf would prepare it.

`load_object(path_or_bytes, prog_type=None, core_btf=None) -> ObjectSpec`:

- programs: every function of every program section (`xdp`, `xdp.frags`, `xdp/devmap`, `tc`,
  `classifier`, `tcx/ingress`, ...; legacy `xdp_*` with a notice; other names refused unless
  `prog_type` is given), fully linked (see link.py), with func/line info in linked slots and
  `functions` (slot -> function name);
- maps (in libbpf's order): legacy `maps` definitions, BTF-defined maps of `.maps` in BTF order, one
  ARRAY map per global data section in ELF order, named after the section (".data", ".rodata",
  ".bss", ".rodata.str1.1", ...); `.rodata*` frozen. Prog arrays and maps of maps carry `init_slots`;
- CO-RE relocations resolved against `core_btf` (a path), else /sys/kernel/btf/vmlinux, else
  xdpsim's shipped BTF;
- `btf` (parsed) and `btf_raw` (fixed up for the kernel), `license`, `kernel_version`,
  XDP_RUN_CONFIG on the programs, and `notices` for what loaded but deserves a word.

Anything malformed raises `LoadError` naming the file and what.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from ..btf import BTF, BtfError, BtfExt, parse_ext
from ..btf import core as co_re
from ..errors import EncodingError, LoadError
from ..isa import decode, validate
from ..spec import ObjectSpec, ProgramSpec, ProgType
from .btffix import fixup_btf
from .elf import STB_LOCAL, STT_FUNC, ElfObject, read_elf
from .link import Func, Linker
from .maps import btf_maps, data_maps, init_slots, legacy_maps, run_configs
from .sections import classify

__all__ = ["load_object", "LoadError"]


def load_object(
    source: str | os.PathLike | bytes | bytearray | memoryview,
    *,
    prog_type: ProgType | int | None = None,
    core_btf: str | None = None,
    name: str | None = None,
) -> ObjectSpec:
    """Load an ELF BPF object from a path or from its bytes (`name` labels it in messages then)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, path = bytes(source), name or "<bytes>"
    else:
        path = os.fspath(source)
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise LoadError(f"{path}: cannot read: {e.strerror or e}") from e
    ptype = ProgType(prog_type) if prog_type is not None else None
    try:
        return _load(data, path, ptype, core_btf)
    except LoadError as e:
        if str(e).startswith(f"{path}: "):
            raise
        raise LoadError(f"{path}: {e}") from e
    except (BtfError, EncodingError) as e:
        raise LoadError(f"{path}: {e}") from e
    except Exception as e:  # a corrupt object must never escape as anything but LoadError
        raise LoadError(f"{path}: malformed object: {type(e).__name__}: {e}") from e


def _cstring(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode("utf-8", "replace")


def _functions(obj: ElfObject, shndx: int, n: int) -> list[Func]:
    """The functions of a code section, from its STT_FUNC symbols (sizes, or up to the next one)."""
    syms = [s for s in obj.symbols_in(shndx, STT_FUNC)]
    out: list[Func] = []
    for i, s in enumerate(syms):
        if s.value % 8:
            raise LoadError(
                f"{obj.path}: function {s.name} at byte {s.value} of {obj.sections[shndx].name} "
                "is not on an instruction"
            )
        start = s.value // 8
        end = (s.value + s.size) // 8 if s.size else (syms[i + 1].value // 8 if i + 1 < len(syms) else n)
        if not 0 <= start < end <= n:
            raise LoadError(
                f"{obj.path}: function {s.name} [{start}, {end}) lies outside "
                f"{obj.sections[shndx].name} ({n} instructions)"
            )
        out.append(Func(s.name, shndx, start, end))
    return out


def _load(data: bytes, path: str, prog_type: ProgType | None, core_btf: str | None) -> ObjectSpec:
    obj = read_elf(data, path)
    notices: list[str] = []
    btf: BTF | None = None
    ext: BtfExt | None = None
    sec = obj.section(".BTF")
    if sec is not None:
        try:
            btf = BTF(sec.data)
        except BtfError as e:
            raise LoadError(f"{path}: .BTF: {e}") from e
        sec = obj.section(".BTF.ext")
        if sec is not None:
            try:
                ext = parse_ext(sec.data, btf)
            except BtfError as e:
                raise LoadError(f"{path}: .BTF.ext: {e}") from e
    lic = obj.section("license")
    license_ = _cstring(lic.data) if lic is not None else ""
    ver = obj.section("version")
    kernel_version = struct.unpack_from("<I", ver.data)[0] if ver is not None and ver.size >= 4 else 0

    # code sections, decoded (one Instruction per slot), and their functions
    code: dict[int, list] = {}
    funcs: dict[int, list[Func]] = {}
    for s in obj.sections:
        if not s.executable or s.size == 0:
            continue
        if s.size % 8:
            raise LoadError(
                f"{path}: code section {s.name} is {s.size} bytes, not a whole number of instructions"
            )
        try:
            code[s.index] = decode(s.data)
        except EncodingError as e:
            raise LoadError(f"{path}: section {s.name}: {e}") from e
        funcs[s.index] = _functions(obj, s.index, len(code[s.index]))
        if not funcs[s.index] and s.name != ".text":
            funcs[s.index] = [
                Func(s.name.replace("/", "_").replace(".", "_"), s.index, 0, len(code[s.index]))
            ]
            notices.append(
                f"section {s.name}: no function symbol, loaded whole as program {funcs[s.index][0].name}"
            )

    if ext is not None and any(ext.core_relos.values()):
        _apply_core(obj, code, btf, ext, core_btf, notices)  # type: ignore[arg-type]

    # programs: every function of every program section
    kinds = {}
    for shndx in code:
        sname = obj.sections[shndx].name
        if sname == ".text":
            continue
        try:
            kinds[shndx] = classify(sname, prog_type)
        except LoadError as e:
            raise LoadError(f"{path}: {e}") from e
        if kinds[shndx].notice:
            notices.append(kinds[shndx].notice)  # type: ignore[arg-type]
    entries = [(shndx, f) for shndx in kinds for f in funcs[shndx]]
    text = obj.section(".text")
    if not entries and prog_type is not None and text is not None and text.index in code:
        # no SEC() at all (plain C compiled for BPF): with a type given, .text's global functions run
        kinds[text.index] = classify(".text", prog_type)
        globs = {s.name for s in obj.symbols_in(text.index, STT_FUNC) if s.bind != STB_LOCAL}
        entries = [(text.index, f) for f in funcs[text.index] if f.name in globs]

    names = [f.name for _, f in entries]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise LoadError(f"{path}: several programs named {', '.join(sorted(dup))}")

    # maps
    defs = legacy_maps(obj) + btf_maps(obj, btf)  # libbpf's order: legacy, BTF-defined, then global data
    maps = [d.spec for d in defs] + data_maps(obj, btf)
    seen: set[str] = set()
    for m in maps:
        if m.name in seen:
            raise LoadError(f"{path}: two maps named {m.name!r}")
        seen.add(m.name)
    map_at = {}
    for i, d in enumerate(defs):
        sec_ = obj.section(d.spec.section)
        map_at[(sec_.index, d.offset)] = i  # type: ignore[union-attr]
    data_map = {
        obj.section(m.section).index: i
        for i, m in enumerate(maps)  # type: ignore[union-attr]
        if m.initial is not None
    }
    init_slots(obj, defs, set(names))

    linker = Linker(obj, code, funcs, map_at, data_map, btf, ext)
    runcfg = run_configs(btf)
    programs: dict[str, ProgramSpec] = {}
    for shndx, f in entries:
        kind = kinds[shndx]
        linked = linker.link(f)
        try:
            validate(linked.insns)
        except EncodingError as e:
            raise LoadError(f"{path}: program {f.name}: {e}") from e
        prio, actions = runcfg.get(f.name, (None, None))
        programs[f.name] = ProgramSpec(
            name=f.name,
            section=obj.sections[shndx].name,
            type=kind.type,
            attach=kind.attach,
            insns=linked.insns,
            license=license_,
            frags=kind.frags,
            func_info=linked.func_info,
            line_info=linked.line_info,
            run_priority=prio,
            chain_call_actions=actions,
            functions=linked.functions,
        )
    for prog in runcfg:
        if prog not in programs:
            notices.append(f"XDP_RUN_CONFIG for {prog}, which is not a program of this object")
    if not programs:
        raise LoadError(f"{path}: no programs (no code in a program section)")
    btf_raw = fixup_btf(btf, obj) if btf is not None else None
    return ObjectSpec(
        path=path,
        programs=programs,
        maps=maps,
        license=license_,
        btf=btf,
        btf_raw=btf_raw,
        kernel_version=kernel_version,
        notices=notices,
    )


def _apply_core(
    obj: ElfObject, code: dict[int, list], btf: BTF, ext: BtfExt, core_btf: str | None, notices: list[str]
) -> None:
    try:
        target, where = co_re.target_btf(core_btf)
    except (OSError, BtfError) as e:
        raise LoadError(f"{obj.path}: cannot read the BTF to resolve CO-RE relocations against: {e}") from e
    by_name = {obj.sections[i].name: i for i in code}
    for sname, relos in ext.core_relos.items():
        if sname not in by_name:
            raise LoadError(f"{obj.path}: CO-RE relocations for section {sname!r}, which holds no code")
        insns = code[by_name[sname]]
        for r in relos:
            pc = r.insn_off // 8
            try:
                res = co_re.resolve(r, btf, target)
                co_re.patch(insns, pc, r, res)
            except BtfError as e:
                raise LoadError(f"{obj.path}: {sname}+{pc}: CO-RE {r.kind.name} ({r.access}): {e}") from e
            if res.poison:
                notices.append(
                    f"{sname}+{pc}: CO-RE {r.kind.name} relocation not satisfied by {where} "
                    f"({res.why}); the instruction now calls helper {co_re.POISON_HELPER:#x}"
                )
