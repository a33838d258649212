"""Instruction-level recording of one run on the interpreter: `Recorder` is a `RunState.tracer`.

The interpreter calls `tracer(prog_id, pc, regs)` *before* each instruction. The effects of an
instruction are therefore known at the next call (or at `finish()` for the last one): registers
written are the difference between two snapshots, bytes stored are read back after the store, a
helper's result is r0 afterwards, a tail call succeeded when the next instruction belongs to another
program. Inputs that the instruction may destroy (a helper's key and value arguments) are read before.
Nothing here changes program state: reads go through `AddressSpace.read`, which only checks bounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import isa
from ..errors import ProgramFault
from ..memory import CTX, PACKET, REGION_SHIFT

if TYPE_CHECKING:
    from ..runtime import Runtime

OFFSET_MASK = (1 << REGION_SHIFT) - 1
U64 = (1 << 64) - 1
TAIL_CALL = "tail_call"
# helpers whose arguments name a map and point at a key (r2) and maybe a value (r3)
KEY_HELPERS = {"map_lookup_elem", "map_update_elem", "map_delete_elem", "map_lookup_percpu_elem"}
VALUE_ARG_HELPERS = {"map_push_elem": 2, "map_update_elem": 3}


@dataclass
class MemAccess:
    """One load or store: `kind` "read" or "write", the region, its offset in the region, the bytes
    (for the context, whose fields are converted, the value the program got, little-endian), and for
    the packet the offset from the packet's first byte (`data`)."""

    kind: str
    address: int
    region: str
    offset: int
    size: int
    data: bytes = b""
    packet_offset: int | None = None

    def where(self) -> str:
        if self.packet_offset is not None:
            return f"packet[{self.packet_offset}]"
        return f"{self.region}+{self.offset:#x}"


@dataclass
class MapAccess:
    """A map touched by a helper: `op` is the helper's name without bpf_, key and value raw bytes
    (value None when the lookup missed or the helper takes none)."""

    map: str
    op: str
    key: bytes | None
    value: bytes | None = None


@dataclass
class HelperCall:
    name: str
    args: tuple[int, ...]
    result: int | None = None  # None when the helper faulted or the call was a successful tail call


@dataclass
class TailCall:
    map: str
    index: int
    target: str | None  # program jumped to; None: fell through (empty slot, out of range, limit)


@dataclass
class Step:
    """One executed instruction."""

    n: int  # position in the run, from 0
    prog: str
    prog_id: int
    pc: int
    insn: str
    file: str | None = None
    line: int | None = None
    source: str = ""
    regs: dict[int, int] = field(default_factory=dict)  # registers written -> new value
    mem: list[MemAccess] = field(default_factory=list)
    helper: HelperCall | None = None
    maps: list[MapAccess] = field(default_factory=list)
    tail_call: TailCall | None = None
    fault: str | None = None

    @property
    def location(self) -> str | None:
        if self.file is None:
            return None
        return f"{self.file.rsplit('/', 1)[-1]}:{self.line}"


class Recorder:
    """A tracer recording every step of one run (`keep`: only the last `keep` steps, for cheap tails)."""

    def __init__(self, runtime: Runtime, keep: int | None = None):
        self.rt = runtime
        self.keep = keep
        self.steps: list[Step] = []
        self.count = 0
        self._pending: tuple[Step, isa.Instruction, list[int], Any] | None = None
        self._sources: dict[int, list[Any]] = {}
        self._disasm: dict[int, list[str]] = {}

    # -------------------------------------------------------------- per program tables (cached)

    def _tables(self, prog_id: int) -> tuple[list[Any], list[str]]:
        src = self._sources.get(prog_id)
        if src is None:
            from ..asm import disassemble

            prog = self.rt.programs[prog_id]
            src = self._sources[prog_id] = line_table(prog.spec)
            self._disasm[prog_id] = disassemble(prog.spec.insns, names=map_names(self.rt, prog))
        return src, self._disasm[prog_id]

    # -------------------------------------------------------------- the tracer protocol

    def __call__(self, prog_id: int, pc: int, regs: list[int]) -> None:
        if self._pending is not None:
            self._complete(prog_id, regs)
        prog = self.rt.programs[prog_id]
        ins = prog.insns[pc]
        src, text = self._tables(prog_id)
        li = src[pc] if pc < len(src) else None
        step = Step(self.count, prog.name, prog_id, pc, text[pc] if pc < len(text) else str(ins))
        if li is not None:
            step.file, step.line, step.source = li.file, li.line, li.text.strip()
        self.count += 1
        extra = self._before(step, ins, regs)
        self._pending = (step, ins, list(regs), extra)
        self.steps.append(step)
        if self.keep is not None and len(self.steps) > 2 * self.keep:
            del self.steps[: len(self.steps) - self.keep]

    def finish(self, fault: ProgramFault | None = None, regs: list[int] | None = None) -> list[Step]:
        """Close the last step (`fault`: the run's fault, attached to it when it names its pc)."""
        if self._pending is not None:
            step, _ins, _before, _extra = self._pending
            if fault is not None and (fault.pc is None or fault.pc == step.pc):
                step.fault = fault.reason
            elif regs is not None:
                self._complete(step.prog_id, regs)
            self._pending = None
        if self.keep is not None:
            del self.steps[: max(0, len(self.steps) - self.keep)]
        return self.steps

    # -------------------------------------------------------------- effects

    def _region(self, addr: int) -> tuple[str, int, int | None]:
        rid, off = addr >> REGION_SHIFT, addr & OFFSET_MASK
        name = self.rt.mem.region_name(rid) or f"region {rid:#x}"
        pkt_off = None
        if rid == PACKET:
            pkt = self.rt.hook_state.get("xdp_packet")
            if pkt is not None:
                pkt_off = off - pkt.data
        return name, off, pkt_off

    def _read(self, addr: int, n: int) -> bytes | None:
        try:
            return self.rt.mem.read(addr, n)
        except ProgramFault:
            return None

    def _access(self, kind: str, addr: int, size: int) -> MemAccess:
        name, off, pkt_off = self._region(addr)
        return MemAccess(kind, addr, name, off, size, packet_offset=pkt_off)

    def _before(self, step: Step, ins: isa.Instruction, regs: list[int]) -> Any:
        cls = ins.cls
        if cls == isa.BPF_LDX:
            return ("load", (regs[ins.src] + ins.off) & U64, ins.size)
        if cls in (isa.BPF_ST, isa.BPF_STX):
            addr = (regs[ins.dst] + ins.off) & U64
            if cls == isa.BPF_STX and ins.mode == isa.BPF_ATOMIC:
                return ("atomic", addr, ins.size, self._read(addr, ins.size))
            return ("store", addr, ins.size)
        if ins.opcode == isa.CALL and ins.src == 0:
            h = self.rt.helpers.get(ins.imm)
            name = h.name if h is not None else f"helper_{ins.imm}"
            step.helper = HelperCall(name, tuple(regs[1:6]))
            return ("helper", name, self._map_inputs(step, name, regs))
        return None

    def _map_inputs(self, step: Step, name: str, regs: list[int]) -> MapAccess | None:
        m = self.rt.map_from_handle(regs[1])
        if m is None:
            return None
        mname = m.spec.name
        if name == TAIL_CALL:
            return None
        if name in KEY_HELPERS:
            acc = MapAccess(mname, name, self._read(regs[2], m.spec.key_size))
            argno = VALUE_ARG_HELPERS.get(name)
            if argno is not None:
                acc.value = self._read(regs[argno], m.spec.value_size)
            return acc
        if name in VALUE_ARG_HELPERS:
            return MapAccess(mname, name, None, self._read(regs[VALUE_ARG_HELPERS[name]], m.spec.value_size))
        if name == "redirect_map":
            return MapAccess(mname, name, (regs[2] & 0xFFFF_FFFF).to_bytes(4, "little"))
        return MapAccess(mname, name, None)

    def _complete(self, next_prog: int, regs: list[int]) -> None:
        step, ins, before, extra = self._pending  # type: ignore[misc]
        self._pending = None
        for r in range(11):
            if regs[r] != before[r]:
                step.regs[r] = regs[r]
        if extra is None:
            return
        kind = extra[0]
        if kind == "load":
            acc = self._access("read", extra[1], extra[2])
            data = None if extra[1] >> REGION_SHIFT == CTX else self._read(extra[1], extra[2])
            if data is None:  # the context: the converted value the program received
                data = regs[ins.dst].to_bytes(8, "little")
            acc.data = data
            step.mem.append(acc)
        elif kind in ("store", "atomic"):
            if kind == "atomic":
                acc = self._access("read", extra[1], extra[2])
                acc.data = extra[3] or b""
                step.mem.append(acc)
            acc = self._access("write", extra[1], extra[2])
            acc.data = self._read(extra[1], extra[2]) or b""
            step.mem.append(acc)
        elif kind == "helper":
            name, macc = extra[1], extra[2]
            if name == TAIL_CALL:
                self._tail(step, before, next_prog)
                return
            assert step.helper is not None
            step.helper.result = regs[0]
            if macc is not None:
                if name in ("map_lookup_elem", "map_lookup_percpu_elem", "map_peek_elem", "map_pop_elem"):
                    m = self.rt.map_from_handle(before[1])
                    if name in ("map_peek_elem", "map_pop_elem"):
                        macc.value = self._read(before[2], m.spec.value_size) if regs[0] == 0 else None
                    else:
                        macc.value = self._read(regs[0], m.spec.value_size) if regs[0] else None
                step.maps.append(macc)

    def _tail(self, step: Step, before: list[int], next_prog: int) -> None:
        m = self.rt.map_from_handle(before[2])
        target = self.rt.programs[next_prog].name if next_prog != step.prog_id else None
        step.tail_call = TailCall(m.spec.name if m is not None else hex(before[2]), before[3] & 0xFFFF_FFFF,
                                  target)
        if step.helper is not None:
            step.helper.result = None
        if m is not None:
            key = (before[3] & 0xFFFF_FFFF).to_bytes(4, "little")
            step.maps.append(MapAccess(m.spec.name, TAIL_CALL, key, None))


def line_table(spec: Any) -> list[Any]:
    """pc -> the LineInfo covering it (the last record at or before it), None before the first."""
    n = len(spec.insns)
    out: list[Any] = [None] * n
    recs = sorted(spec.line_info, key=lambda li: li.insn_off)
    for i, li in enumerate(recs):
        end = recs[i + 1].insn_off if i + 1 < len(recs) else n
        for pc in range(li.insn_off, min(end, n)):
            out[pc] = li
    return out


def map_names(runtime: Runtime, prog: Any) -> dict[int, str]:
    """The object's map index -> name for a loaded program's `ld_pseudo` instructions, read back from
    the relocated instructions (a map handle, or a pointer into the map's value region)."""
    out: dict[int, str] = {}
    for spec_ins, ins in zip(prog.spec.insns, prog.insns, strict=False):
        if spec_ins.opcode != isa.LDDW or spec_ins.src not in (1, 2, 5, 6):
            continue
        value = ins.imm64
        m = runtime.map_from_handle(value) if spec_ins.src in (1, 5) else runtime.map_of_region(value >> 32)
        if m is not None:
            out[spec_ins.imm] = m.spec.name
    return out
