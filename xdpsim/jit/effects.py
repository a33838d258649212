"""What a program can do to the packet it runs on, proven statically from its instructions.

`effects(insns, facts)` tells whether a program may write packet memory or move its frame (data,
data_end, data_meta) -- `writes` is False only when every store goes through a pointer verify.py's
analysis proves to lie in the program's own stack frame or in a map value, and every helper it calls is
one that neither writes the packet nor adjusts it (no indirect calls, no kfuncs) -- and whether it may
tail-call (`tail_calls`: then other programs run on the same packet, and a chain is unchanged only when
each of them is). `packet_unchanged(insns, facts)` is both false. Then a run's output packet is its
input, byte for byte, and the batch replay need not compare them (jit.batch F_UNCHANGED). Anything the
analysis cannot see -- a store through a pointer it does not know, a store or call it never reached, an
unknown helper -- counts as a write: only a proof counts.

The analysis is verify.py's abstract interpretation (the same fixed point that proves accesses for the
JIT), observed at every store and call of its recording pass; verify.py itself is not changed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import isa
from ..isa import Instruction
from .verify import FRAME, MapVal, Stack, State, _Prover

# helpers that neither write the packet (no buffer argument they write may be the packet) nor move its
# frame, nor run other programs: map lookup/update/delete, ktime, prandom, smp_processor_id, redirect,
# csum_diff (reads its buffers), redirect_map. Tail calls run another program: `Effects.tail_calls`.
PACKET_SAFE_HELPERS = frozenset({1, 2, 3, 5, 7, 8, 23, 28, 51})
TAIL_CALL = 12


@dataclass(frozen=True)
class Effects:
    writes: bool  # may write the packet or move its frame (or unknown)
    tail_calls: bool  # may run another program on the packet (bpf_tail_call)


class _Effects(_Prover):
    """verify's prover, noting at every store and call (recording pass) whether it may touch the packet."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: set[int] = set()  # stores and calls the recording pass reached
        self.unsafe: set[int] = set()  # those that may write the packet or move its frame
        self.tail_calls = False

    def store(self, st: State, ins: Instruction, pc: int, record: bool) -> None:
        if record:
            self.seen.add(pc)
            if not _own_memory(st.regs[ins.dst], ins.off, ins.size):
                self.unsafe.add(pc)
        super().store(st, ins, pc, record)

    def call(self, st: State, ins: Instruction, pc: int = -1, record: bool = False) -> None:
        if record:
            self.seen.add(pc)
            helper = ins.src == isa.CALL_HELPER and ins.imm in PACKET_SAFE_HELPERS
            local = ins.src == isa.PSEUDO_CALL  # a function of this program: analysed on its own
            tail = ins.src == isa.CALL_HELPER and ins.imm == TAIL_CALL
            self.tail_calls |= tail
            if ins.source != isa.BPF_K or not (helper or local or tail):
                self.unsafe.add(pc)
        super().call(st, ins, pc, record)


def _own_memory(base: object, off: int, size: int) -> bool:
    """A store of `size` bytes at base + off proven inside this frame or inside a map value."""
    if isinstance(base, Stack):
        at = base.off + off
        return -FRAME <= at and at + size <= 0
    if isinstance(base, MapVal):
        at = base.off + off
        return at >= 0 and at + size <= base.size
    return False


def _writes_or_calls(ins: Instruction) -> bool:
    if ins.cls in (isa.BPF_ST, isa.BPF_STX):
        return True
    return ins.cls in (isa.BPF_JMP, isa.BPF_JMP32) and ins.code == isa.BPF_CALL


@dataclass(frozen=True)
class Facts:
    """What the analysis knows of a program beside its instructions (verify.py's inputs)."""

    xdp: bool = True  # the packet facts rest on r1 being the XDP context: otherwise nothing is proven
    map_value_sizes: dict[int, int] | None = None  # map id -> value size of maps whose lookups give values
    entries: tuple[int, ...] = ()  # subprogram and callback entries, analysed as functions of their own
    writable_maps: frozenset[int] = frozenset()  # map ids whose values the program may store into


XDP = Facts()  # an XDP program knowing of no maps


def effects(insns: list[Instruction], facts: Facts = XDP) -> Effects:
    """What the program may do to its packet (see the module docstring)."""
    if not facts.xdp:
        return Effects(True, True)
    p = _Effects(insns, True, facts.map_value_sizes or {}, facts.writable_maps)
    try:
        p.run(facts.entries)
    except Exception:  # noqa: BLE001 - a program the analysis cannot follow: unknown
        return Effects(True, True)
    pc = 0
    while pc < len(insns):
        ins = insns[pc]
        if _writes_or_calls(ins) and (pc not in p.seen or pc in p.unsafe):
            return Effects(True, p.tail_calls)
        pc += 2 if ins.is_lddw else 1
    return Effects(False, p.tail_calls)


def packet_unchanged(insns: list[Instruction], facts: Facts = XDP) -> bool:
    """True when it is proven that no run of the program (which makes no tail calls) changes the
    packet's bytes or frame; False when it may, or when that is unknown."""
    e = effects(insns, facts)
    return not e.writes and not e.tail_calls


def cached_effects(insns: list[Instruction], facts: Facts = XDP) -> Effects:
    """effects(), remembered on disk beside the JIT's code (off with XDPSIM_JIT_CACHE=0): the analysis
    costs milliseconds per program (tens at 1000 instructions), which a replay's start would pay again
    every run. The key covers the instructions (relocated lddw values included), the map facts and the
    analysis' own sources."""
    if os.environ.get("XDPSIM_JIT_CACHE", "1") == "0":
        return effects(insns, facts)
    from .compiler import _source_hash, cache_dir

    h = hashlib.sha256(f"effects 1 {_source_hash()}".encode())
    h.update(Path(isa.__file__).read_bytes())
    h.update(isa.encode(insns))
    h.update(repr([(pc, i.imm64) for pc, i in enumerate(insns) if i.is_lddw]).encode())
    key = (facts.xdp, sorted((facts.map_value_sizes or {}).items()), tuple(facts.entries),
           sorted(facts.writable_maps))
    h.update(repr(key).encode())
    path = cache_dir() / "effects" / h.hexdigest()[:32]
    try:
        text = path.read_text()
        if len(text) == 2 and set(text) <= {"0", "1"}:
            return Effects(text[0] == "1", text[1] == "1")
    except OSError:
        pass
    e = effects(insns, facts)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")  # (whole files only, for readers)
        with os.fdopen(fd, "w") as f:
            f.write(f"{int(e.writes)}{int(e.tail_calls)}")
        os.replace(tmp, path)
    except OSError:
        pass  # (no cache then: analysed again next time)
    return e
