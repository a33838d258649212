"""A static pass, in the spirit of the kernel verifier, that proves memory accesses safe so the JIT
can drop their run-time checks.

Forward dataflow over each function's basic blocks (a worklist until the abstract states stop
changing; states are joined at merges, so a fact holds only when it holds on every path). Abstract
register values:

- `Stack(off)`: this function's r10 + off (constant);
- `Pkt(pid, off)`: a packet pointer: `data + var + off`, where `pid` names the variable part (0: none;
  another id: an unsigned scalar of known bound added to data); `ranges[pid]` is the number of bytes
  past `data + var` the program's own comparisons against `data_end` proved in the packet;
- `PktEnd`, `Ctx(off)` (entry r1 + off), `MapVal(size, off)` / `MapOrNull(size)` (a lookup's result
  before / after the NULL check), `Scalar(umax)` (an unsigned bound, None = unknown; optionally signed
  bounds of the value and of its low 32 bits, which `<<= 32; s>>= 32`, movsx and comparisons with
  constants narrow: a sign-extended header offset checked against 0 can then be added to data),
  `Unknown`.

A map lookup is proven (`maplookup`: map id << 10 | bytes from the key to the frame's top) when r1 is
a map with a native lookup and r2 points into the frame: natives.map_lookup_proven skips the handle
and key checks. A tail call is proven (`tailcall`: the map id) when r2 is a BPF_MAP_TYPE_PROG_ARRAY
map (`prog_arrays`): natives.tail_call skips the handle and map type checks. An access is proven when
it lies inside the frame (stack), inside the proven packet range, or inside a map value (stores only
for maps programs may write: not frozen, not BPF_F_RDONLY_PROG -- a map frozen after its programs
were compiled keeps its compiled stores).
Packet facts rest on the context being the XDP context (`data`/`data_end` loaded from it): the
lowering guards packet proofs with a run-time test that the entry r1 is a context pointer, so a
program run with another r1 keeps its checks.
TC programs (`tc=True`) track the entry r1 too, only to prove their `__sk_buff` field loads
(TC_CTX_FIELDS): packet pointers loaded from the skb stay unknown, so TC has no packet proofs.
Anything else -- helper calls that may move the packet (all but a known list), bpf-to-bpf calls,
unknown stores over spilled pointers -- forgets the facts it could invalidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import isa
from ..isa import Instruction
from .cfg import build
from .lower import TC_CTX_FIELDS, Proof

FRAME = 512
# helpers that leave the packet (pointers and bytes) and the stack alone
PURE_HELPERS = frozenset({1, 2, 3, 5, 7, 8, 12, 14, 23, 28, 51})
MAP_LOOKUP = 1
TAIL_CALL = 12
# arguments of common helpers (the others: all five registers count as possible pointers)
HELPER_ARGS = {
    1: 2,
    2: 4,
    3: 2,
    5: 0,
    7: 0,
    8: 0,
    12: 3,
    23: 2,
    28: 5,
    44: 2,
    51: 3,
    54: 2,
    65: 2,
    189: 4,
    190: 4,
}


@dataclass(frozen=True)
class Stack:
    off: int


@dataclass(frozen=True)
class Pkt:
    pid: int
    off: int


@dataclass(frozen=True)
class PktEnd:
    pass


@dataclass(frozen=True)
class Ctx:
    off: int


@dataclass(frozen=True)
class MapVal:
    size: int
    off: int
    writable: bool = False


@dataclass(frozen=True)
class MapOrNull:
    size: int
    writable: bool = False


@dataclass(frozen=True)
class Scalar:
    umax: int | None  # None: unknown
    const: int | None = None
    # signed bounds of the 64-bit value and of its low 32 bits as an s32 (None: only what umax or
    # const say; see _s64/_s32), as the kernel verifier keeps them: a sign-extended 32-bit result
    # (<<= 32, s>>= 32) compared with 0 gets a small non-negative bound this way
    smin: int | None = None
    smax: int | None = None
    s32min: int | None = None
    s32max: int | None = None


UNKNOWN = Scalar(None)
U64_MAX = (1 << 64) - 1
S64 = (-(1 << 63), (1 << 63) - 1)
S32 = (-(1 << 31), (1 << 31) - 1)


def _signed(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def _s64(v: Scalar) -> tuple[int, int] | None:
    """Signed bounds of the 64-bit value (None: unknown)."""
    if v.const is not None:
        c = _signed(v.const, 64)
        return c, c
    if v.smin is not None and v.smax is not None:
        return v.smin, v.smax
    if v.umax is not None and v.umax <= S64[1]:
        return 0, v.umax
    return None


def _s32(v: Scalar) -> tuple[int, int] | None:
    """Signed bounds of the low 32 bits read as an s32 (None: unknown)."""
    if v.const is not None:
        c = _signed(v.const, 32)
        return c, c
    if v.s32min is not None and v.s32max is not None:
        return v.s32min, v.s32max
    r = _s64(v)
    if r is not None and S32[0] <= r[0] and r[1] <= S32[1]:
        return r  # the value is its own low half
    return None


def _meet(a: tuple[int, int] | None, b: tuple[int, int]) -> tuple[int, int]:
    return b if a is None else (max(a[0], b[0]), min(a[1], b[1]))


def _scalar(umax: int | None, s64: tuple[int, int] | None, s32: tuple[int, int] | None) -> Scalar:
    """A Scalar from facts that all hold, each sharpened by the others."""
    if s64 is not None and s64[0] >= 0:
        umax = s64[1] if umax is None else min(umax, s64[1])
    if umax is not None and umax <= S64[1]:
        s64 = _meet(s64, (0, umax))
    if s64 is not None and S32[0] <= s64[0] and s64[1] <= S32[1]:
        s32 = _meet(s32, s64)
    if s64 is None and s32 is None:
        return Scalar(umax)
    lo, hi = s64 if s64 is not None else (None, None)
    lo32, hi32 = s32 if s32 is not None else (None, None)
    return Scalar(umax, None, lo, hi, lo32, hi32)


@dataclass
class State:
    regs: list = field(default_factory=lambda: [UNKNOWN] * 11)
    ranges: dict[int, int] = field(default_factory=dict)
    slots: dict[int, object] = field(default_factory=dict)  # stack offset -> spilled 8-byte value

    def copy(self) -> State:
        return State(list(self.regs), dict(self.ranges), dict(self.slots))

    def join(self, other: State) -> State:
        regs = [a if a == b else _join_val(a, b) for a, b in zip(self.regs, other.regs, strict=True)]
        ranges = {k: min(v, other.ranges[k]) for k, v in self.ranges.items() if k in other.ranges}
        slots = {k: v for k, v in self.slots.items() if other.slots.get(k) == v}
        return State(regs, ranges, slots)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, State)
            and self.regs == other.regs
            and self.ranges == other.ranges
            and self.slots == other.slots
        )


def _hull(a: tuple[int, int] | None, b: tuple[int, int] | None) -> tuple[int, int] | None:
    return None if a is None or b is None else (min(a[0], b[0]), max(a[1], b[1]))


def _join_val(a: object, b: object) -> object:
    if isinstance(a, Scalar) and isinstance(b, Scalar):
        umax = None if a.umax is None or b.umax is None else max(a.umax, b.umax)
        return _scalar(umax, _hull(_s64(a), _s64(b)), _hull(_s32(a), _s32(b)))
    return UNKNOWN


class _Prover:
    def __init__(
        self,
        insns: list[Instruction],
        xdp: bool,
        map_value_sizes: dict[int, int],
        writable: frozenset[int] = frozenset(),
        tc: bool = False,
        prog_arrays: frozenset[int] = frozenset(),
    ):
        self.insns = insns
        self.prog_arrays = prog_arrays  # BPF_MAP_TYPE_PROG_ARRAY maps: tail calls through them are proven
        self.xdp = xdp
        self.tc = tc  # SCHED_CLS: the entry r1 is the __sk_buff (TC_CTX_FIELDS proven; no packet proofs)
        self.map_sizes = map_value_sizes
        self.writable = writable  # maps whose value regions programs may write
        # the lowest frame offset any access or helper buffer can reach (batch replay zeroes only
        # that much stack per packet); `stack_unknown` when some access might reach anywhere
        self.stack_floor = 0
        self.stack_unknown = False
        self.recording = False
        self.proofs: dict[int, Proof] = {}
        self.next_pid = 1
        self.pid_of: dict[int, int] = {}  # pc -> pid created there (stable across iterations)

    # ---------------------------------------------------------------- driver

    def run(self, extra: tuple[int, ...]) -> dict[int, Proof]:
        for f in build(self.insns, extra):
            self.function(f)
        return self.proofs

    def function(self, f) -> None:
        entry = State()
        entry.regs[10] = Stack(0)
        if f.start == 0 and (self.xdp or self.tc):
            entry.regs[1] = Ctx(0)
        states: dict[int, State] = {f.start: entry}
        work = [f.start]
        leaders = f.leaders
        ends = {s: (leaders[i + 1] if i + 1 < len(leaders) else f.end) for i, s in enumerate(leaders)}
        visits: dict[int, int] = {}
        while work:
            # lowest address first: with (mostly) forward jumps every predecessor of a block is
            # final before the block is visited, so joins see converged states
            start = min(work)
            work.remove(start)
            visits[start] = visits.get(start, 0) + 1
            if visits[start] > 50:  # a fact that keeps changing around a loop: give up on it
                states[start] = _widen(states[start])
            st = states[start].copy()
            for succ, out in self.block(st, start, ends[start]):
                if succ >= f.end or succ < f.start:
                    continue
                old = states.get(succ)
                new = out if old is None else self.join(old, out, succ)
                if old is None or new != old:
                    states[succ] = new
                    if succ not in work:
                        work.append(succ)
        # second pass over the fixed point, recording proofs
        self.recording = True
        for start, st in states.items():
            self.block(st.copy(), start, ends[start], record=True)
        self.recording = False

    def block(self, st: State, pc: int, end: int, record: bool = False) -> list[tuple[int, State]]:
        while pc < end:
            ins = self.insns[pc]
            if ins.is_lddw:
                st.regs[ins.dst] = self.lddw_value(ins)
                pc += 2
                continue
            cls = ins.cls
            if cls in (isa.BPF_JMP, isa.BPF_JMP32):
                code = ins.code
                if code == isa.BPF_EXIT:
                    return []
                if code == isa.BPF_CALL:
                    self.call(st, ins, pc, record)
                    pc += 1
                    continue
                if code == isa.BPF_JA:
                    return [(ins.jump_target(pc), st)]
                taken, fall = self.branch(st, ins)
                return [(ins.jump_target(pc), taken), (pc + 1, fall)]
            if cls in (isa.BPF_ALU, isa.BPF_ALU64):
                self.alu(st, ins, pc)
            elif cls == isa.BPF_LDX:
                self.load(st, ins, pc, record)
            elif cls in (isa.BPF_ST, isa.BPF_STX):
                self.store(st, ins, pc, record)
            else:
                pass
            pc += 1
        return [(end, st)]

    # ---------------------------------------------------------------- transfer functions

    def lddw_value(self, ins: Instruction) -> object:
        v = ins.imm64
        mid = v & 0xFFFF_FFFF
        if v >> 32 == 4 and (mid in self.map_sizes or mid in self.prog_arrays):
            return ("map", mid)
        return Scalar(v, v)

    def call(self, st: State, ins: Instruction, pc: int = -1, record: bool = False) -> None:
        nargs = HELPER_ARGS.get(ins.imm, 5) if ins.src == isa.CALL_HELPER else 5
        for r in range(1, nargs + 1):  # buffers a helper reads or writes start at its arguments
            v = st.regs[r]
            self.note_stack(v, getattr(v, "off", 0), record)
        r0: object = UNKNOWN
        if ins.src == isa.CALL_HELPER and ins.imm == MAP_LOOKUP:
            m = st.regs[1]
            if isinstance(m, tuple) and m[0] == "map" and m[1] in self.map_sizes:
                r0 = MapOrNull(self.map_sizes[m[1]], m[1] in self.writable)
                key = st.regs[2]
                # a map with a native lookup and a key in this frame with at least 4 bytes above it
                # (natives.map_lookup_proven: no handle or key checks); the room left in the frame
                # is kept for longer (hash) keys, which the lowering compares with the key size
                if isinstance(key, Stack) and -FRAME <= key.off <= -4:
                    self.prove(pc, Proof("maplookup", (m[1] << 10) | -key.off), record)
        if ins.src == isa.CALL_HELPER and ins.imm == TAIL_CALL:
            m = st.regs[2]
            if isinstance(m, tuple) and m[0] == "map" and m[1] in self.prog_arrays:
                # r2 is that prog array's handle on every path (natives.tail_call_proven: no handle or
                # map type checks, as the kernel's JIT emits for a map the verifier knows)
                self.prove(pc, Proof("tailcall", m[1]), record)
        pure = ins.src == isa.CALL_HELPER and ins.imm in PURE_HELPERS
        if not pure:
            self.forget_packet(st)
            st.slots.clear()
        for r in range(1, 6):
            st.regs[r] = UNKNOWN
        st.regs[0] = r0

    def forget_packet(self, st: State) -> None:
        st.ranges.clear()
        st.regs[:] = [UNKNOWN if isinstance(v, (Pkt, PktEnd)) else v for v in st.regs]
        st.slots = {k: v for k, v in st.slots.items() if not isinstance(v, (Pkt, PktEnd))}

    def alu(self, st: State, ins: Instruction, pc: int) -> None:
        r = st.regs
        d = ins.dst
        is64 = ins.cls == isa.BPF_ALU64
        code = ins.code
        src = r[ins.src] if ins.source == isa.BPF_X else Scalar(ins.imm & 0xFFFF_FFFF_FFFF_FFFF, ins.imm)
        if ins.source == isa.BPF_K and not is64:
            src = Scalar(ins.imm & 0xFFFF_FFFF, ins.imm & 0xFFFF_FFFF)
        dv = r[d]
        if code == isa.BPF_MOV and ins.off == 0:
            if is64:
                r[d] = src
            else:
                r[d] = _trunc32(src)
            return
        if code == isa.BPF_MOV and ins.off == 32 and is64 and isinstance(src, Scalar):
            s32 = _s32(src)  # movsx from 32 bits: the s32 value, sign-extended
            r[d] = _scalar(None, s32, s32) if s32 is not None else UNKNOWN
            return
        if is64 and code in (isa.BPF_ADD, isa.BPF_SUB) and isinstance(src, Scalar):
            k = src.const
            if k is not None and code == isa.BPF_SUB:
                k = -k
            if k is not None and -(1 << 31) <= k < (1 << 31):
                if isinstance(dv, Stack):
                    r[d] = Stack(dv.off + k)
                    return
                if isinstance(dv, Pkt):
                    r[d] = Pkt(dv.pid, dv.off + k)
                    return
                if isinstance(dv, MapVal):
                    r[d] = MapVal(dv.size, dv.off + k, dv.writable)
                    return
            if (
                code == isa.BPF_ADD
                and isinstance(dv, Pkt)
                and dv.off == 0
                and dv.pid == 0
                and src.umax is not None
                and src.umax < (1 << 16)
            ):
                r[d] = self.fresh_pkt(st, pc)  # data + a bounded unsigned scalar
                return
        if (
            is64
            and code == isa.BPF_ADD
            and isinstance(src, Pkt)
            and isinstance(dv, Scalar)
            and src.pid == 0
            and src.off == 0
            and dv.umax is not None
            and dv.umax < (1 << 16)
        ):
            r[d] = self.fresh_pkt(st, pc)
            return
        r[d] = _scalar_op(code, is64, dv, src, ins)

    def join(self, a: State, b: State, pc: int) -> State:
        """Join at `pc`. Two packet pointers with different offsets (data + 14 on one path, data + 18
        on the other) become a new variable pointer data + var, var in [14, 18] -- as the kernel
        keeps a pointer's variable offset -- keeping the bytes both paths proved after it."""
        st = a.join(b)
        for r in range(11):
            x, y = a.regs[r], b.regs[r]
            if (
                x != y
                and isinstance(x, Pkt)
                and isinstance(y, Pkt)
                and x.off >= 0
                and y.off >= 0
                and max(x.off, y.off) < (1 << 16)
            ):
                key = -(pc * 16 + r) - 1  # negative keys: join points (positive: adding insns)
                if key not in self.pid_of:
                    self.pid_of[key] = self.next_pid
                    self.next_pid += 1
                pid = self.pid_of[key]
                # bytes proven readable after the pointer on both paths stay proven after it
                after = min(a.ranges.get(x.pid, 0) - x.off, b.ranges.get(y.pid, 0) - y.off)
                if after > 0:
                    st.ranges[pid] = after
                else:
                    st.ranges.pop(pid, None)
                st.regs[r] = Pkt(pid, 0)
        return st

    def fresh_pkt(self, st: State, pc: int) -> Pkt:
        """data + a new bounded scalar, named by the instruction that adds it. Facts about an
        earlier value made here (a previous loop iteration) no longer hold."""
        if pc not in self.pid_of:
            self.pid_of[pc] = self.next_pid
            self.next_pid += 1
        pid = self.pid_of[pc]
        st.ranges.pop(pid, None)
        st.regs[:] = [UNKNOWN if isinstance(v, Pkt) and v.pid == pid else v for v in st.regs]  # in place
        st.slots = {k: v for k, v in st.slots.items() if not (isinstance(v, Pkt) and v.pid == pid)}
        return Pkt(pid, 0)

    def branch(self, st: State, ins: Instruction) -> tuple[State, State]:
        taken, fall = st.copy(), st.copy()
        self.refine(st, ins, taken, fall)
        if ins.source != isa.BPF_X or ins.cls != isa.BPF_JMP:
            self.null_check(ins, taken, fall)
            return taken, fall
        a, b = st.regs[ins.dst], st.regs[ins.src]
        code = ins.code
        # normalise to "p <op> end"
        if isinstance(b, Pkt) and isinstance(a, PktEnd):
            a, b = b, a
            code = {
                isa.BPF_JGT: isa.BPF_JLT,
                isa.BPF_JLT: isa.BPF_JGT,
                isa.BPF_JGE: isa.BPF_JLE,
                isa.BPF_JLE: isa.BPF_JGE,
            }.get(code, 0)
        if isinstance(a, Pkt) and isinstance(b, PktEnd):
            # p + n <= end  makes n bytes past data+var readable
            if code == isa.BPF_JGT:  # taken: p > end; fallthrough: p <= end
                _extend(fall, a)
            elif code == isa.BPF_JLE:
                _extend(taken, a)
            elif code == isa.BPF_JGE:  # fallthrough: p < end
                _extend(fall, a)
            elif code == isa.BPF_JLT:
                _extend(taken, a)
        return taken, fall

    def refine(self, st: State, ins: Instruction, taken: State, fall: State) -> None:
        """A 64-bit comparison of a scalar with a constant bounds the scalar on each edge."""
        code = ins.code
        if ins.cls != isa.BPF_JMP or code not in _FLIP:
            return
        a = st.regs[ins.dst]
        if ins.source == isa.BPF_K:
            b: object = Scalar(ins.imm & U64_MAX, ins.imm & U64_MAX)
        else:
            b = st.regs[ins.src]
        reg = ins.dst
        if isinstance(a, Scalar) and a.const is not None and isinstance(b, Scalar) and b.const is None:
            if ins.source != isa.BPF_X:
                return
            a, b, reg, code = b, a, ins.src, _FLIP[code]  # "c op x" as "x op' c"
        if not isinstance(a, Scalar) or not isinstance(b, Scalar) or b.const is None or a.const is not None:
            return  # (a constant keeps its value: pointer arithmetic relies on it)
        c = b.const & U64_MAX
        for state, op in ((taken, code), (fall, _NEGATE[code])):
            state.regs[reg] = _bound(a, op, c)

    def null_check(self, ins: Instruction, taken: State, fall: State) -> None:
        if ins.source != isa.BPF_K or ins.imm != 0 or ins.cls != isa.BPF_JMP:
            return
        v = taken.regs[ins.dst]
        if not isinstance(v, MapOrNull):
            return
        if ins.code == isa.BPF_JEQ:  # == 0 taken: NULL; fallthrough: a value
            fall.regs[ins.dst] = MapVal(v.size, 0, v.writable)
            taken.regs[ins.dst] = Scalar(0, 0)
        elif ins.code == isa.BPF_JNE:
            taken.regs[ins.dst] = MapVal(v.size, 0, v.writable)
            fall.regs[ins.dst] = Scalar(0, 0)

    def load(self, st: State, ins: Instruction, pc: int, record: bool) -> None:
        base = st.regs[ins.src]
        size = ins.size
        self.note_stack(base, getattr(base, "off", 0) + ins.off, record)
        result: object = Scalar((1 << (8 * size)) - 1) if ins.mode == isa.BPF_MEM else UNKNOWN
        if isinstance(base, Stack):
            off = base.off + ins.off
            if -FRAME <= off and off + size <= 0:
                self.prove(pc, Proof("stack", off), record)
                if size == 8 and ins.mode == isa.BPF_MEM and off in st.slots:
                    result = st.slots[off]
        elif isinstance(base, Pkt):
            off = base.off + ins.off
            if off >= 0 and off + size <= st.ranges.get(base.pid, 0):
                self.prove(pc, Proof("packet", off), record)
        elif isinstance(base, MapVal):
            off = base.off + ins.off
            if off >= 0 and off + size <= base.size:
                self.prove(pc, Proof("mapval", off), record)
        elif isinstance(base, Ctx) and self.xdp and size == 4 and ins.mode == isa.BPF_MEM:
            field_off = base.off + ins.off
            if field_off in (0, 4, 8, 12, 16):
                self.prove(pc, Proof("ctx", field_off), record)
            if field_off in (0, 8):
                result = Pkt(0, 0) if field_off == 0 else UNKNOWN
            elif field_off == 4:
                result = PktEnd()
            else:
                result = Scalar(0xFFFF_FFFF)
        elif isinstance(base, Ctx) and self.tc and size == 4 and ins.mode == isa.BPF_MEM:
            # __sk_buff fields the lowering reads from env; the packet pointers stay UNKNOWN (no packet
            # proofs for TC: the skb helpers that move the packet are not modelled by this pass)
            if base.off + ins.off in TC_CTX_FIELDS:
                self.prove(pc, Proof("ctx", base.off + ins.off), record)
            result = UNKNOWN if base.off + ins.off in (76, 80, 140) else Scalar(0xFFFF_FFFF)
        st.regs[ins.dst] = result

    def store(self, st: State, ins: Instruction, pc: int, record: bool) -> None:
        base = st.regs[ins.dst]
        size = ins.size
        self.note_stack(base, getattr(base, "off", 0) + ins.off, record)
        atomic = ins.cls == isa.BPF_STX and ins.mode == isa.BPF_ATOMIC
        if isinstance(base, Stack):
            off = base.off + ins.off
            if -FRAME <= off and off + size <= 0:
                self.prove(pc, Proof("stack", off), record)
                # forget slots this store overlaps; remember an 8-byte spill of a register
                for k in [k for k in st.slots if k < off + size and off < k + 8]:
                    del st.slots[k]
                if size == 8 and ins.cls == isa.BPF_STX and ins.mode == isa.BPF_MEM:
                    st.slots[off] = st.regs[ins.src]
            else:
                st.slots.clear()
        elif isinstance(base, Pkt):
            off = base.off + ins.off
            if off >= 0 and off + size <= st.ranges.get(base.pid, 0) and not atomic:
                self.prove(pc, Proof("packet", off), record)
        elif isinstance(base, MapVal):
            off = base.off + ins.off
            if base.writable and off >= 0 and off + size <= base.size:
                self.prove(pc, Proof("mapval", off), record)
        elif not isinstance(base, Ctx):
            st.slots.clear()  # an unknown pointer may point into the stack
        if atomic and ins.imm & isa.BPF_FETCH:
            target = 0 if ins.imm == isa.BPF_CMPXCHG else ins.src
            st.regs[target] = UNKNOWN

    def note_stack(self, base: object, off: int | None, record: bool) -> None:
        """Account for an access through `base` (+ off) or a helper argument, for stack_bytes."""
        if not record:
            return
        if isinstance(base, Stack):
            if off is not None and -FRAME <= off < 0:
                self.stack_floor = min(self.stack_floor, off)
            return
        if isinstance(base, (Pkt, MapVal)) and off is not None and abs(off) < (1 << 31):
            return  # data/value region +- 2 GiB: never the stack region (id 1)
        if isinstance(base, (Ctx, PktEnd, MapOrNull, tuple)):
            return
        if isinstance(base, Scalar) and base.umax is not None and base.umax < (1 << 32):
            return  # below 1 << 32: region 0, not a stack address
        if isinstance(base, Scalar) and base.const is not None and off is not None and abs(off) < (1 << 31):
            if ((base.const + off) & 0xFFFF_FFFF_FFFF_FFFF) >> 32 != 1:
                return  # a constant address (lddw of a map value or handle) outside the stack
        self.stack_unknown = True

    def prove(self, pc: int, proof: Proof, record: bool) -> None:
        if record:
            self.proofs[pc] = proof


# "x op c" <-> "c op' x", and the condition that holds on the fall-through edge
_FLIP = {
    isa.BPF_JGT: isa.BPF_JLT,
    isa.BPF_JLT: isa.BPF_JGT,
    isa.BPF_JGE: isa.BPF_JLE,
    isa.BPF_JLE: isa.BPF_JGE,
    isa.BPF_JSGT: isa.BPF_JSLT,
    isa.BPF_JSLT: isa.BPF_JSGT,
    isa.BPF_JSGE: isa.BPF_JSLE,
    isa.BPF_JSLE: isa.BPF_JSGE,
}
_NEGATE = {
    isa.BPF_JGT: isa.BPF_JLE,
    isa.BPF_JLE: isa.BPF_JGT,
    isa.BPF_JGE: isa.BPF_JLT,
    isa.BPF_JLT: isa.BPF_JGE,
    isa.BPF_JSGT: isa.BPF_JSLE,
    isa.BPF_JSLE: isa.BPF_JSGT,
    isa.BPF_JSGE: isa.BPF_JSLT,
    isa.BPF_JSLT: isa.BPF_JSGE,
}


def _bound(v: Scalar, op: int, c: int) -> Scalar:
    """v once `v op c` (64-bit, c as u64) is known to hold."""
    umax, s64, s32 = v.umax, _s64(v), _s32(v)
    sc = _signed(c, 64)
    if op == isa.BPF_JLE:
        umax = c if umax is None else min(umax, c)
    elif op == isa.BPF_JLT:
        if c == 0:
            return v  # never holds: an unreachable edge keeps what it had
        umax = c - 1 if umax is None else min(umax, c - 1)
    elif op == isa.BPF_JSLE:
        s64 = _meet(s64, (S64[0], sc))
    elif op == isa.BPF_JSLT:
        if sc == S64[0]:
            return v
        s64 = _meet(s64, (S64[0], sc - 1))
    elif op == isa.BPF_JSGE:
        s64 = _meet(s64, (sc, S64[1]))
    elif op == isa.BPF_JSGT:
        if sc == S64[1]:
            return v
        s64 = _meet(s64, (sc + 1, S64[1]))
    else:  # JGT / JGE give lower bounds, which this domain does not keep
        return v
    if s64 is not None and s64[0] > s64[1]:
        return v  # an unreachable edge
    return _scalar(umax, s64, s32)


def _extend(st: State, p: Pkt) -> None:
    if p.off > st.ranges.get(p.pid, 0):
        st.ranges[p.pid] = p.off


def _widen(st: State) -> State:
    st = st.copy()
    st.regs = [v if not isinstance(v, Scalar) else UNKNOWN for v in st.regs]
    return st


def _trunc32(v: object) -> object:
    if isinstance(v, Scalar):
        if v.const is not None:
            c = v.const & 0xFFFF_FFFF
            return Scalar(c, c)
        if v.umax is not None and v.umax <= 0xFFFF_FFFF:
            return v
        return _scalar(0xFFFF_FFFF, None, _s32(v))  # the low half is unchanged
    return Scalar(0xFFFF_FFFF)


def _scalar_op(code: int, is64: bool, a: object, b: object, ins: Instruction) -> object:
    """Unsigned bounds for the few operations bounds checks are made of; else unknown."""
    limit = (1 << 64) - 1 if is64 else 0xFFFF_FFFF
    if not isinstance(a, Scalar) or not isinstance(b, Scalar):
        return UNKNOWN if is64 else Scalar(0xFFFF_FFFF)
    if code == isa.BPF_AND:
        bounds = [x.umax for x in (a, b) if x.umax is not None]
        return Scalar(min(bounds)) if bounds else Scalar(None if is64 else limit)
    if code == isa.BPF_LSH and is64 and b.const is not None and b.const & 63 == 32:
        # x << 32 read as an s64 is the low half read as an s32, times 2^32
        s32 = _s32(a)
        if s32 is not None:
            return _scalar(None, (s32[0] << 32, s32[1] << 32), (0, 0))
    if code == isa.BPF_ARSH and is64 and b.const is not None and _s64(a) is not None:
        k = b.const & 63
        lo, hi = _s64(a)  # type: ignore[misc]
        return _scalar(None, (lo >> k, hi >> k), None)
    if code == isa.BPF_RSH and b.const is not None and a.umax is not None:
        return Scalar(a.umax >> (b.const & (63 if is64 else 31)))
    if code == isa.BPF_LSH and b.const is not None and a.umax is not None:
        v = a.umax << (b.const & (63 if is64 else 31))
        return Scalar(v) if v <= limit else Scalar(None if is64 else limit)
    if code == isa.BPF_ARSH and b.const is not None and a.umax is not None:
        k = b.const & (63 if is64 else 31)
        if a.umax < (limit >> 1):  # sign bit clear: an arithmetic shift is a logical one
            return Scalar(a.umax >> k)
    if code == isa.BPF_ADD and a.umax is not None and b.umax is not None and a.umax + b.umax <= limit:
        return Scalar(a.umax + b.umax)
    if code == isa.BPF_MUL and a.umax is not None and b.umax is not None and a.umax * b.umax <= limit:
        return Scalar(a.umax * b.umax)
    if code in (isa.BPF_DIV, isa.BPF_MOD) and ins.off == 0 and a.umax is not None:
        return Scalar(a.umax)
    return Scalar(None if is64 else limit)


def prove(
    insns: list[Instruction],
    xdp: bool = False,
    map_value_sizes: dict[int, int] | None = None,
    entries: tuple[int, ...] = (),
    writable_maps: frozenset[int] = frozenset(),
    tc: bool = False,
    prog_arrays: frozenset[int] = frozenset(),
) -> dict[int, Proof]:
    """pc -> Proof for every load/store proven in bounds (see the module docstring). Stores into map
    values are proven only for `writable_maps` (not frozen, not BPF_F_RDONLY_PROG); tail calls through
    `prog_arrays` (the ids of the BPF_MAP_TYPE_PROG_ARRAY maps) get a "tailcall" proof."""
    return analyse(insns, xdp, map_value_sizes, entries, writable_maps, tc, prog_arrays)[0]


def analyse(
    insns: list[Instruction],
    xdp: bool = False,
    map_value_sizes: dict[int, int] | None = None,
    entries: tuple[int, ...] = (),
    writable_maps: frozenset[int] = frozenset(),
    tc: bool = False,
    prog_arrays: frozenset[int] = frozenset(),
) -> tuple[dict[int, Proof], int]:
    """(proofs, stack bytes): the proofs of `prove`, and how many bytes below the frame pointer the
    program can touch at all (512 when an access might reach anywhere)."""
    p = _Prover(insns, xdp, map_value_sizes or {}, writable_maps, tc, prog_arrays)
    proofs = p.run(entries)
    if p.stack_unknown:
        return proofs, FRAME
    return proofs, (-p.stack_floor + 7) & ~7
