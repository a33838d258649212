"""Plain data that the loader produces and every engine instantiates (cilium/ebpf's CollectionSpec).

Nothing here runs anything. A `ProgramSpec` is fully linked, as libbpf links it before BPF_PROG_LOAD:
the entry function first, then every subprogram it reaches (transitively) appended, with the
bpf-to-bpf call offsets fixed up. Map references stay symbolic in the kernel's own encoding, with the
file descriptor replaced by the index of the map in `ObjectSpec.maps`:

- `lddw rX, map`            -> src = PSEUDO_MAP_FD (1),    imm = map index
- `lddw rX, map_value + k`  -> src = PSEUDO_MAP_VALUE (2), imm = map index, next_imm = k
- `lddw rX, func`           -> src = PSEUDO_FUNC (4),      imm = relative insn offset (as the kernel)
- `call helper`             -> src = 0, imm = helper id
- `call subprog`            -> src = PSEUDO_CALL (1),      imm = relative insn offset (target = pc + imm + 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .isa import Instruction


class MapType(IntEnum):
    """BPF_MAP_TYPE_* as in include/uapi/linux/bpf.h."""

    UNSPEC = 0
    HASH = 1
    ARRAY = 2
    PROG_ARRAY = 3
    PERF_EVENT_ARRAY = 4
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    STACK_TRACE = 7
    CGROUP_ARRAY = 8
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    LPM_TRIE = 11
    ARRAY_OF_MAPS = 12
    HASH_OF_MAPS = 13
    DEVMAP = 14
    SOCKMAP = 15
    CPUMAP = 16
    XSKMAP = 17
    SOCKHASH = 18
    CGROUP_STORAGE = 19
    REUSEPORT_SOCKARRAY = 20
    PERCPU_CGROUP_STORAGE = 21
    QUEUE = 22
    STACK = 23
    SK_STORAGE = 24
    DEVMAP_HASH = 25
    STRUCT_OPS = 26
    RINGBUF = 27
    INODE_STORAGE = 28
    TASK_STORAGE = 29
    BLOOM_FILTER = 30
    USER_RINGBUF = 31
    CGRP_STORAGE = 32
    ARENA = 33


class ProgType(IntEnum):
    """BPF_PROG_TYPE_* for the program types xdpsim runs (and a few it names when refusing)."""

    UNSPEC = 0
    SOCKET_FILTER = 1
    KPROBE = 2
    SCHED_CLS = 3
    SCHED_ACT = 4
    TRACEPOINT = 5
    XDP = 6


@dataclass
class LineInfo:
    """One BTF.ext line-info record, insn_off in instructions (slots) of the linked program."""

    insn_off: int
    file: str
    line: int
    col: int
    text: str


@dataclass
class FuncInfo:
    insn_off: int
    name: str
    type_id: int = 0


@dataclass
class MapSpec:
    name: str
    type: MapType
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0
    # BTF type ids in ObjectSpec.btf (0 = none); used to decode keys/values and by the kernel engine.
    btf_key_type_id: int = 0
    btf_value_type_id: int = 0
    # map-in-map: the template of the inner maps.
    inner: MapSpec | None = None
    # global data sections (.data, .rodata, .bss, .rodata.*): the section's initial bytes.
    initial: bytes | None = None
    frozen: bool = False  # .rodata: read-only for programs once loaded
    # Declarative initial values (`__array(values, ...)` or the pipeline file):
    # index -> program name (prog arrays) or map name (maps of maps).
    init_slots: dict[int, str] = field(default_factory=dict)
    section: str = ".maps"
    pinning: int = 0
    numa_node: int = 0
    map_extra: int = 0


@dataclass
class ProgramSpec:
    name: str  # the C function name
    section: str  # the ELF section it came from ("xdp", "tc", "tcx/ingress", ...)
    type: ProgType
    attach: str | None  # "xdp", "xdp.frags", "tc", "tcx/ingress", "tcx/egress", ...
    insns: list[Instruction]  # one entry per 8-byte slot; lddw's second slot is a filler (see isa)
    license: str = ""
    frags: bool = False  # xdp.frags: multi-buffer aware
    func_info: list[FuncInfo] = field(default_factory=list)
    line_info: list[LineInfo] = field(default_factory=list)
    # libxdp's XDP_RUN_CONFIG (from the .xdp_run_config BTF section), None when absent.
    run_priority: int | None = None
    chain_call_actions: list[str] | None = None
    # Subprogram entry points inside insns: insn offset -> function name (entry function at 0).
    functions: dict[int, str] = field(default_factory=dict)

    def source_line(self, pc: int) -> LineInfo | None:
        """The line-info record covering instruction `pc` (the last one at or before it)."""
        best = None
        for li in self.line_info:
            if li.insn_off <= pc and (best is None or li.insn_off >= best.insn_off):
                best = li
        return best

    def function_at(self, pc: int) -> str:
        """Name of the function (entry or subprogram) containing instruction `pc`."""
        best_off, best = -1, self.name
        for off, name in self.functions.items():
            if best_off < off <= pc:
                best_off, best = off, name
        return best


@dataclass
class ObjectSpec:
    path: str
    programs: dict[str, ProgramSpec]
    maps: list[MapSpec]
    license: str = ""
    btf: Any = None  # xdpsim.btf.BTF, or None when the object has no .BTF
    btf_raw: bytes | None = None  # the .BTF section bytes after libbpf-style fix-ups (kernel engine)
    kernel_version: int = 0
    notices: list[str] = field(default_factory=list)  # non-fatal loader remarks (legacy sections, ...)

    def map_index(self, name: str) -> int:
        for i, m in enumerate(self.maps):
            if m.name == name:
                return i
        raise KeyError(f"{self.path}: no map named {name!r} (maps: {', '.join(m.name for m in self.maps)})")

    def map_by_name(self, name: str) -> MapSpec:
        return self.maps[self.map_index(name)]
