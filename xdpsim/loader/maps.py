"""Map definitions of an object: BTF-defined maps (`.maps`), legacy `struct bpf_map_def` maps (`maps`),
global data sections (.data, .rodata, .bss and their `.name` variants), and `.xdp_run_config`.

As libbpf: a BTF map is a struct whose members encode integers as `int (*name)[N]` (`__uint`) and
types as `T *name` (`__type`); `__array(values, ...)` is a trailing flexible array whose initial
elements are relocations in `.rel.maps` (programs for prog arrays, maps for maps of maps); global data
becomes an ARRAY of one entry, value = the whole section, keyed by nothing in BTF (value type = the
section's DATASEC).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..btf import BTF, BtfError, Kind
from ..errors import LoadError
from ..spec import MapSpec, MapType
from .elf import SHF_ALLOC, SHF_EXECINSTR, SHT_NOBITS, SHT_PROGBITS, STT_FUNC, ElfObject, Section

XDP_ACTIONS = ("XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX", "XDP_REDIRECT")


@dataclass
class _Def:
    spec: MapSpec
    offset: int  # of the definition in its section
    size: int
    values_off: int | None = None  # byte offset of `values` inside the definition


def is_data_section(sec: Section) -> bool:
    if not sec.flags & SHF_ALLOC or sec.flags & SHF_EXECINSTR or sec.size == 0:
        return False
    if sec.type not in (SHT_PROGBITS, SHT_NOBITS):
        return False
    return any(sec.name == p or sec.name.startswith(p + ".") for p in (".data", ".rodata", ".bss"))


def _uint(btf: BTF, type_id: int, what: str) -> int:
    """The N of `int (*name)[N]`."""
    ptr = btf[btf.skip_mods(type_id)]
    if ptr.kind != Kind.PTR:
        raise BtfError(f"{what}: expected __uint() (a pointer to an array), found {btf.name_of(ptr.id)}")
    arr = btf[btf.resolve(ptr.type)]
    if arr.kind != Kind.ARRAY:
        raise BtfError(f"{what}: expected __uint() (a pointer to an array), found {btf.name_of(ptr.id)}")
    return arr.nelems


def _pointee(btf: BTF, type_id: int, what: str) -> int:
    ptr = btf[btf.skip_mods(type_id)]
    if ptr.kind != Kind.PTR:
        raise BtfError(f"{what}: expected __type() (a pointer), found {btf.name_of(ptr.id)}")
    return ptr.type


def parse_btf_map(
    btf: BTF, type_id: int, name: str, *, inner: bool = False
) -> tuple[MapSpec, int | None, int]:
    """A map definition struct -> (spec, byte offset of `values` or None, struct size)."""
    t = btf[btf.resolve(type_id)]
    if t.kind != Kind.STRUCT:
        raise BtfError(f"map {name}: its definition is {btf.name_of(t.id)}, not a struct")
    spec = MapSpec(name, MapType.UNSPEC, 0, 0, 0)
    mtype = -1
    key_size = value_size = None
    values_off = None
    for i, m in enumerate(t.members):
        what = f"map {name}, field {m.name or '(anon)'}"
        if m.name == "type":
            mtype = _uint(btf, m.type, what)
        elif m.name == "max_entries":
            spec.max_entries = _uint(btf, m.type, what)
        elif m.name == "map_flags":
            spec.flags = _uint(btf, m.type, what)
        elif m.name == "numa_node":
            spec.numa_node = _uint(btf, m.type, what)
        elif m.name == "pinning":
            spec.pinning = _uint(btf, m.type, what)
        elif m.name == "map_extra":
            spec.map_extra = _uint(btf, m.type, what)
        elif m.name == "key_size":
            key_size = _check_size(key_size, _uint(btf, m.type, what), what)
        elif m.name == "value_size":
            value_size = _check_size(value_size, _uint(btf, m.type, what), what)
        elif m.name == "key":
            tid = _pointee(btf, m.type, what)
            key_size = _check_size(key_size, btf.size_of(tid), what)
            spec.btf_key_type_id = tid
        elif m.name == "value":
            tid = _pointee(btf, m.type, what)
            value_size = _check_size(value_size, btf.size_of(tid), what)
            spec.btf_value_type_id = tid
        elif m.name == "values":
            if i != len(t.members) - 1:
                raise BtfError(f"{what}: `values` must be the last field")
            arr = btf[btf.resolve(m.type)]
            if arr.kind != Kind.ARRAY or arr.nelems != 0:
                raise BtfError(f"{what}: expected __array(values, ...) (a flexible array of pointers)")
            ptr = btf[btf.skip_mods(arr.elem_type)]
            if ptr.kind != Kind.PTR:
                raise BtfError(f"{what}: __array elements must be pointers")
            target = btf[btf.resolve(ptr.type)]
            if target.kind == Kind.STRUCT:
                if inner:
                    raise BtfError(f"{what}: inner maps cannot have inner maps of their own")
                spec.inner, _, _ = parse_btf_map(btf, target.id, f"{name}.inner", inner=True)
            elif target.kind != Kind.FUNC_PROTO:
                raise BtfError(
                    f"{what}: __array of {btf.name_of(target.id)}: programs or map definitions only"
                )
            value_size = _check_size(value_size, 4, what)
            values_off = m.offset // 8
        else:
            raise BtfError(f"map {name}: unknown field {m.name!r}")
    if mtype < 0:
        raise BtfError(f"map {name}: no `type` field")
    try:
        spec.type = MapType(mtype)
    except ValueError:
        raise BtfError(f"map {name}: unknown map type {mtype}") from None
    spec.key_size = key_size or 0
    spec.value_size = value_size or 0
    if values_off is not None:  # values are fds/ids: no value BTF (libbpf creates these maps without it)
        spec.btf_key_type_id = spec.btf_value_type_id = 0
    if spec.type in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS) and spec.inner is None:
        raise BtfError(f"map {name}: a map of maps needs `__array(values, ...)` naming its inner map type")
    return spec, values_off, t.size


def _check_size(old: int | None, new: int, what: str) -> int:
    if old is not None and old != new:
        raise BtfError(f"{what}: conflicting sizes {old} and {new}")
    return new


def btf_maps(obj: ElfObject, btf: BTF | None) -> list[_Def]:
    sec = obj.section(".maps")
    if sec is None:
        return []
    if btf is None:
        raise LoadError(
            f"{obj.path}: .maps section without .BTF: BTF-defined maps need the object's BTF (-g)"
        )
    ds = btf.find(".maps", Kind.DATASEC)
    if ds is None:
        raise LoadError(f"{obj.path}: .maps section but no .maps DATASEC in .BTF")
    syms = {s.name: s for s in obj.symbols_in(sec.index)}
    out = []
    for vsi in ds.members:
        var = btf[vsi.type]
        if var.kind != Kind.VAR:
            raise LoadError(f"{obj.path}: .maps DATASEC entry {vsi.type} is {var.kind.name}, not a VAR")
        if var.name not in syms:
            raise LoadError(f"{obj.path}: map {var.name} has no symbol in .maps")
        try:
            spec, values_off, size = parse_btf_map(btf, var.type, var.name)
        except BtfError as e:
            raise LoadError(f"{obj.path}: {e}") from e
        spec.section = ".maps"
        # a definition with initial `values` is longer than its struct: the symbol has the real size
        out.append(_Def(spec, syms[var.name].value, max(size, syms[var.name].size), values_off))
    return out


def legacy_maps(obj: ElfObject) -> list[_Def]:
    """`struct bpf_map_def { u32 type, key_size, value_size, max_entries, map_flags; ... }` in SEC("maps")."""
    sec = obj.section("maps")
    if sec is None:
        return []
    syms = [s for s in obj.symbols_in(sec.index) if s.name and s.type != 3]
    if not syms:
        return []
    size = sec.size // len(syms)
    if size < 20 or sec.size % len(syms):
        raise LoadError(
            f"{obj.path}: legacy maps section of {sec.size} bytes for {len(syms)} maps: "
            "not whole struct bpf_map_def records"
        )
    out = []
    for s in syms:
        if s.value + 20 > sec.size:
            raise LoadError(f"{obj.path}: legacy map {s.name} at {s.value} runs past the maps section")
        mtype, ksz, vsz, maxe, flags = struct.unpack_from("<5I", sec.data, s.value)
        try:
            t = MapType(mtype)
        except ValueError:
            raise LoadError(f"{obj.path}: legacy map {s.name}: unknown map type {mtype}") from None
        spec = MapSpec(s.name, t, ksz, vsz, maxe, flags=flags, section="maps")
        if size >= 28:
            spec.numa_node = struct.unpack_from("<I", sec.data, s.value + 24)[0]
        out.append(_Def(spec, s.value, size))
    return out


def data_maps(obj: ElfObject, btf: BTF | None) -> list[MapSpec]:
    out = []
    dsecs = btf.datasecs() if btf is not None else {}
    for sec in obj.sections:
        if not is_data_section(sec):
            continue
        ds = dsecs.get(sec.name)
        spec = MapSpec(
            sec.name,
            MapType.ARRAY,
            4,
            sec.size,
            1,
            initial=bytes(sec.data),
            frozen=sec.name.startswith(".rodata"),
            section=sec.name,
            btf_value_type_id=ds.id if ds is not None else 0,
        )
        out.append(spec)
    return out


def init_slots(obj: ElfObject, defs: list[_Def], programs: set[str]) -> None:
    """Fill `init_slots` of prog arrays and maps of maps from the `.rel.maps` relocations."""
    sec = obj.section(".maps")
    if sec is None:
        return
    names = {d.spec.name for d in defs}
    for r in obj.relocs.get(sec.index, []):
        d = next((d for d in defs if d.offset <= r.offset < d.offset + d.size), None)
        if d is None or d.values_off is None:
            raise LoadError(
                f"{obj.path}: .rel.maps relocation at {r.offset:#x} ({r.sym.name}) is not inside "
                "a map's __array(values, ...)"
            )
        rel = r.offset - d.offset - d.values_off
        if rel < 0 or rel % 8:
            raise LoadError(
                f"{obj.path}: map {d.spec.name}: relocation at {r.offset:#x} is not on a `values` slot"
            )
        slot = rel // 8
        if slot >= d.spec.max_entries:
            raise LoadError(
                f"{obj.path}: map {d.spec.name}: initial value for slot {slot}, beyond max_entries "
                f"{d.spec.max_entries}"
            )
        if d.spec.type == MapType.PROG_ARRAY:
            if r.sym.type != STT_FUNC or r.sym.name not in programs:
                raise LoadError(
                    f"{obj.path}: map {d.spec.name}[{slot}]: {r.sym.name!r} is not a program of this object"
                )
        elif d.spec.type in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
            if r.sym.name not in names:
                raise LoadError(
                    f"{obj.path}: map {d.spec.name}[{slot}]: {r.sym.name!r} is not a map of this object"
                )
        else:
            raise LoadError(f"{obj.path}: map {d.spec.name}: initial values for a {d.spec.type.name} map")
        d.spec.init_slots[slot] = r.sym.name


def run_configs(btf: BTF | None) -> dict[str, tuple[int | None, list[str] | None]]:
    """libxdp's XDP_RUN_CONFIG: program name -> (priority, chain call actions), from `.xdp_run_config`."""
    if btf is None:
        return {}
    ds = btf.find(".xdp_run_config", Kind.DATASEC)
    if ds is None:
        return {}
    out: dict[str, tuple[int | None, list[str] | None]] = {}
    for vsi in ds.members:
        var = btf[vsi.type]
        if var.kind != Kind.VAR or not var.name.startswith("_"):
            continue
        t = btf[btf.resolve(var.type)]
        if t.kind != Kind.STRUCT:
            raise BtfError(f"XDP_RUN_CONFIG {var.name}: not a struct")
        prio: int | None = None
        actions: list[str] = []
        seen_action = False
        for m in t.members:
            val = _uint(btf, m.type, f"XDP_RUN_CONFIG {var.name}.{m.name}")
            if m.name == "priority":
                prio = val
            elif m.name in XDP_ACTIONS:
                if val > 1:
                    raise BtfError(
                        f"XDP_RUN_CONFIG {var.name}.{m.name} = {val}: chain call actions are 0 or 1"
                    )
                seen_action = True
                if val:
                    actions.append(m.name)
            else:
                raise BtfError(f"XDP_RUN_CONFIG {var.name}: unknown field {m.name!r}")
        actions.sort(key=XDP_ACTIONS.index)
        out[var.name[1:]] = (prio, actions if seen_action else None)
    return out
