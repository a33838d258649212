"""The runtime: one AddressSpace, the maps and the programs instantiated from ObjectSpecs.

`Runtime(cpus, seed, conformance)` is what every engine (interpreter, JIT) runs programs in. Maps get
ids in creation order (map id = index in `Runtime.maps`), programs likewise (prog id = index in
`Runtime.programs`); several objects may be loaded into one runtime (a pipeline loads several), each
`load` returning a `Collection` with its own names.

Relocation (done once at load, so engines see only plain instructions): in `LoadedProgram.insns`

- `lddw PSEUDO_MAP_FD / PSEUDO_MAP_IDX` becomes a plain `lddw` (src 0) of the map's handle
  `(4 << 32) | map_id` (`Map.handle`);
- `lddw PSEUDO_MAP_VALUE / PSEUDO_MAP_IDX_VALUE` becomes a plain `lddw` of the value's address
  (`(values_region << 32) | offset`);
- `lddw PSEUDO_FUNC` becomes a plain `lddw` of a *code address* `code_address(prog_id, insn)` =
  `(CODE_REGION << 32) | (prog_id << 20) | insn` where CODE_REGION is the runtime's code region (the
  first dynamic region, 5, created before any map). The region is never readable or writable
  (window [0, 0)), so dereferencing a function pointer faults; bpf_loop, for_each_map_elem and callx
  decode it with `split_code_address`.

Helper calls stay `call imm` (the id is checked against the runtime's helper table: unknown ids and
kfunc calls are refused with LoadError naming instruction, number and name); bpf-to-bpf calls stay
`call pc+imm+1` (src 1). `LoadedProgram.spec.insns` keeps the original instructions (disassembly in
fault messages shows `r1 = map[...]`-style text from them).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import isa
from .errors import EncodingError, LoadError
from .helpers import HELPERS, HelperDef, conformance_helpers, helper_name
from .maps import Map, create_map
from .memory import MAP_HANDLES, REGION_SHIFT, AddressSpace
from .spec import MapType, ObjectSpec, ProgramSpec

if TYPE_CHECKING:
    from .helpers.fib import FibTable

CODE_PROG_SHIFT = 20  # code address offset = (prog_id << 20) | insn index (1M insns per program)
CODE_INSN_MASK = (1 << CODE_PROG_SHIFT) - 1
MAX_PROGRAMS = 1 << (REGION_SHIFT - CODE_PROG_SHIFT)

_MAP_FD_PSEUDOS = (isa.PSEUDO_MAP_FD, isa.PSEUDO_MAP_IDX)
_MAP_VALUE_PSEUDOS = (isa.PSEUDO_MAP_VALUE, isa.PSEUDO_MAP_IDX_VALUE)


@dataclass
class LoadedProgram:
    """A program registered in a runtime: `id`, `name`, the `spec` (original instructions, line info)
    and `insns`, the relocated instructions engines execute (same indices as spec.insns)."""

    id: int
    name: str
    spec: ProgramSpec
    insns: list[isa.Instruction]
    object_path: str = ""
    #: engines cache their compiled form here, keyed by engine kind ("interp", "jit")
    cache: dict[str, Any] = field(default_factory=dict)


@dataclass
class Collection:
    """What `Runtime.load` returns: the object's maps by name and its programs' ids by C name."""

    spec: ObjectSpec
    maps: dict[str, Map]
    programs: dict[str, int]


class Runtime:
    """One simulated machine: `mem`, `maps` (id = index), `programs` (id = index), `helpers`.

    `cpus`: simulated CPUs (per-CPU map copies); `seed`: bpf_get_prandom_u32's generator seed;
    `conformance`: the bpf_conformance suite's conventions (helper 5 returns r1, callx takes a helper
    id). `fib` (a `helpers.fib.FibTable` or None) answers bpf_fib_lookup; `mtu` maps ifindex -> MTU
    for bpf_check_mtu (default 1500); `ifindexes` (None = any) lists interfaces that exist.
    """

    def __init__(self, cpus: int = 1, seed: int = 0, conformance: bool = False):
        if cpus < 1:
            raise ValueError("cpus must be at least 1")
        self.cpus = cpus
        self.seed = seed
        self.conformance = conformance
        self.mem = AddressSpace()
        self.maps: list[Map] = []
        self.programs: list[LoadedProgram] = []
        self.collections: list[Collection] = []
        self.helpers: dict[int, HelperDef] = dict(HELPERS)
        if conformance:
            self.helpers.update(conformance_helpers())
        self.rng = random.Random(seed)
        self.fib: FibTable | None = None
        self.mtu: dict[int, int] = {}
        self.ifindexes: set[int] | None = None
        self._region_maps: dict[int, Map] = {}
        #: per-runtime state hooks and helpers keep between runs (the XDP frame, helper scratch...)
        self.hook_state: dict[str, Any] = {}
        # The code region: function pointers (lddw PSEUDO_FUNC) point here; never dereferenceable.
        self._code_buf = np.zeros(8, dtype=np.uint8)
        self.code_region = self.mem.add("code", self._code_buf, 0, lo=0, hi=0)

    # ------------------------------------------------------------------ code addresses

    def code_address(self, prog_id: int, insn: int) -> int:
        return (self.code_region << REGION_SHIFT) | (prog_id << CODE_PROG_SHIFT) | insn

    def split_code_address(self, addr: int) -> tuple[int, int] | None:
        """(prog_id, insn) of a code address, or None when `addr` is not one of this runtime's."""
        if addr >> REGION_SHIFT != self.code_region:
            return None
        off = addr & ((1 << REGION_SHIFT) - 1)
        prog_id, insn = off >> CODE_PROG_SHIFT, off & CODE_INSN_MASK
        if prog_id >= len(self.programs) or insn >= len(self.programs[prog_id].insns):
            return None
        return prog_id, insn

    # ------------------------------------------------------------------ maps

    def add_map(self, spec: Any) -> Map:
        """Create one map from a MapSpec (id = next index) and wire the runtime's resolvers into it."""
        m = create_map(spec, self.mem, self.cpus, len(self.maps))
        self.maps.append(m)
        m.prog_resolver = self._prog_exists
        m.map_resolver = self._map_of_id
        if hasattr(m, "ifindex_resolver"):
            m.ifindex_resolver = self._ifindex_exists
        if m.values_region is not None:
            copies = self.cpus if m.percpu else 1
            for c in range(copies):
                self._region_maps[m.values_region + c] = m
        return m

    def map_from_handle(self, handle: int) -> Map | None:
        """The map whose program-visible handle is `handle`, or None."""
        if handle >> REGION_SHIFT != MAP_HANDLES:
            return None
        i = handle & ((1 << REGION_SHIFT) - 1)
        return self.maps[i] if i < len(self.maps) else None

    def map_of_region(self, rid: int) -> Map | None:
        """The map whose value storage (or ring buffer) is region `rid`."""
        return self._region_maps.get(rid)

    def _map_of_id(self, ident: int) -> Map | None:
        return self.maps[ident] if 0 <= ident < len(self.maps) else None

    def _prog_exists(self, ident: int) -> bool:
        return 0 <= ident < len(self.programs)

    def _ifindex_exists(self, ifindex: int) -> bool:
        return self.ifindexes is None or ifindex in self.ifindexes

    # ------------------------------------------------------------------ programs

    def program(self, prog_id: int) -> LoadedProgram:
        return self.programs[prog_id]

    def prog_id(self, name: str) -> int:
        """The id of the most recently loaded program called `name`."""
        for p in reversed(self.programs):
            if p.name == name:
                return p.id
        raise KeyError(f"no program named {name!r} (programs: {', '.join(p.name for p in self.programs)})")

    def add_program(self, spec: ProgramSpec, map_ids: list[int], object_path: str = "",
                    btf: Any = None) -> int:
        """Validate, relocate and register one program; `map_ids[i]` is the runtime id of the object's
        map i. Returns the program id."""
        prog_id = len(self.programs)
        if prog_id >= MAX_PROGRAMS:
            raise LoadError(f"program {spec.name}: more than {MAX_PROGRAMS} programs in one runtime")
        try:
            isa.validate(spec.insns)
        except EncodingError as e:
            raise LoadError(f"program {spec.name}: {e}") from e
        insns = [self._relocate(spec, pc, ins, map_ids, prog_id, btf) for pc, ins in enumerate(spec.insns)]
        for pc, ins in enumerate(insns):
            # A relocated lddw carries its new high half in next_imm; its filler slot must carry the same
            # value so that isa.encode(insns) is the program the engines run.
            if ins.opcode == isa.LDDW and insns[pc + 1].imm != ins.next_imm:
                insns[pc + 1] = isa.Instruction(0, 0, 0, 0, ins.next_imm)
        self.programs.append(LoadedProgram(prog_id, spec.name, spec, insns, object_path))
        return prog_id

    def _relocate(self, spec: ProgramSpec, pc: int, ins: isa.Instruction, map_ids: list[int], prog_id: int,
                  btf: Any) -> isa.Instruction:
        where = f"program {spec.name}, instruction {pc}"
        if ins.opcode == isa.LDDW and ins.src:
            if ins.src in _MAP_FD_PSEUDOS or ins.src in _MAP_VALUE_PSEUDOS:
                idx = ins.imm
                if not 0 <= idx < len(map_ids):
                    raise LoadError(f"{where}: lddw refers to map index {idx}, the object has {len(map_ids)}")
                m = self.maps[map_ids[idx]]
                if ins.src in _MAP_FD_PSEUDOS:
                    value = m.handle
                else:
                    if m.values_region is None:
                        raise LoadError(f"{where}: lddw of a value address in map {m.name} "
                                        f"({m.type_name}), which has no directly addressable values")
                    off = ins.next_imm & 0xFFFFFFFF
                    value = (m.values_region << REGION_SHIFT) | off
            elif ins.src == isa.PSEUDO_FUNC:
                value = self.code_address(prog_id, pc + ins.imm + 1)
            else:
                raise LoadError(f"{where}: lddw with source {ins.src} (BTF id / ksym) is not supported "
                                "by xdpsim")
            lo, _ = isa.lddw(ins.dst, value)
            return lo
        if ins.opcode == isa.CALL:
            if ins.src == isa.CALL_HELPER and ins.imm not in self.helpers:
                raise LoadError(f"{where}: unknown helper {ins.imm} ({helper_name(ins.imm)}): not "
                                "implemented by xdpsim")
            if ins.src == isa.PSEUDO_KFUNC_CALL:
                raise LoadError(f"{where}: kfunc call (BTF id {ins.imm}{_btf_name(btf, ins.imm)}) is not "
                                "supported by xdpsim")
        if ins.cls == isa.BPF_LD and ins.mode in (isa.BPF_ABS, isa.BPF_IND) and ins.opcode != isa.LDDW:
            raise LoadError(f"{where}: legacy packet access (BPF_ABS/BPF_IND) is not supported")
        return ins

    # ------------------------------------------------------------------ objects

    def load(self, objspec: ObjectSpec) -> Collection:
        """Instantiate an object: its maps (global data with its bytes, .rodata frozen), then its programs,
        then the declarative prog-array / map-in-map slots. Returns the Collection."""
        map_ids: list[int] = []
        maps: dict[str, Map] = {}
        for ms in objspec.maps:
            m = self.add_map(ms)
            map_ids.append(m.id)
            maps[ms.name] = m
        programs: dict[str, int] = {}
        for name, ps in objspec.programs.items():
            programs[name] = self.add_program(ps, map_ids, objspec.path, objspec.btf)
        coll = Collection(objspec, maps, programs)
        for m in maps.values():
            self._wire_names(m, coll)
        for ms in objspec.maps:
            if ms.init_slots:
                self._fill_slots(maps[ms.name], ms.init_slots, coll)
        self.collections.append(coll)
        return coll

    def _wire_names(self, m: Map, coll: Collection) -> None:
        t = m.type
        if t == MapType.PROG_ARRAY:
            m.name_resolver = self._name_lookup(coll.programs, self.prog_id, "program")  # type: ignore[attr-defined]
        elif t in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
            ids = {n: mm.id for n, mm in coll.maps.items()}
            m.name_resolver = self._name_lookup(ids, self._map_id_by_name, "map")  # type: ignore[attr-defined]

    @staticmethod
    def _name_lookup(local: dict[str, int], fallback: Callable[[str], int],
                     what: str) -> Callable[[str], int]:
        def resolve(name: str) -> int:
            if name in local:
                return local[name]
            try:
                return fallback(name)
            except KeyError:
                raise KeyError(f"no {what} named {name!r}") from None

        return resolve

    def _map_id_by_name(self, name: str) -> int:
        for m in reversed(self.maps):
            if m.name == name:
                return m.id
        raise KeyError(name)

    def _fill_slots(self, m: Map, slots: dict[int, str], coll: Collection) -> None:
        for index, target in sorted(slots.items()):
            try:
                m.update(index, target)
            except (KeyError, TypeError) as e:
                raise LoadError(f"{coll.spec.path}: map {m.name} slot {index}: {e}") from e
            except Exception as e:  # MapError: the kernel's refusal, with its errno
                raise LoadError(f"{coll.spec.path}: map {m.name} slot {index} = {target!r}: {e}") from e


def _btf_name(btf: Any, type_id: int) -> str:
    """`, name` of a BTF type when the object's BTF can say it."""
    if btf is None:
        return ""
    for attr in ("name_of", "type_name"):
        fn = getattr(btf, attr, None)
        if callable(fn):
            try:
                name = fn(type_id)
            except Exception:  # a partial BTF: the id alone still says which
                return ""
            return f", {name}" if name else ""
    return ""
