"""Learning from the kernel where a redirect went, and running devmap/cpumap entry programs there.

BPF_PROG_TEST_RUN returns XDP_REDIRECT / TC_ACT_REDIRECT but not the target (outside live-frames mode
nothing is sent). So before a program is loaded, each call of bpf_redirect (23), bpf_redirect_map (51),
bpf_redirect_neigh (152) and bpf_redirect_peer (155) gets a few instructions in front of it that copy
the call's arguments, the helper id, the call site's pc (original numbering) and the program's index
into a hidden global-data map (one ARRAY entry, BPF_F_MMAPABLE so user space reads and clears it
without a syscall):

    r0 = map_value(hidden) ; *(u32 *)(r0 + 0) = helper ; *(u32 *)(r0 + 4) = pc ; *(u32 *)(r0 + 8) = prog
    *(u64 *)(r0 + 16) = r1 ; *(u64 *)(r0 + 24) = r2 ; ...                        ; call helper

r0 is free there: the call overwrites it and nothing reads it before. The last call of a run wins, as
in the kernel's per-CPU bpf_redirect_info. For bpf_redirect_map, r1 is the map's kernel address
(storing it is allowed to privileged programs only, as xdpsim's kernel engine runs): a calibration
program stores the address of each of the object's redirect maps into the same hidden value once, so
the map is identified by the running kernel itself, not guessed from the code.

Devmap and cpumap entry programs (`xdp/devmap`, `xdp/cpumap`) cannot be test-run (bpf_prog_test_run_xdp
refuses expected_attach_type BPF_XDP_DEVMAP/BPF_XDP_CPUMAP with EINVAL), so a twin loaded as a plain
XDP program runs instead; a devmap program's reads of `ctx->egress_ifindex` (which the verifier allows
only for BPF_XDP_DEVMAP: the field is read from the tx queue a test run does not have) are replaced by a
read of the egress ifindex that user space writes into the hidden value before the run.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..asm.patch import Patched, patch
from ..isa import (
    BPF_ALU,
    BPF_ALU64,
    BPF_ATOMIC,
    BPF_CALL,
    BPF_DW,
    BPF_EXIT,
    BPF_JA,
    BPF_JMP,
    BPF_JMP32,
    BPF_LDX,
    BPF_MEM,
    BPF_MEMSX,
    BPF_MOV,
    BPF_ST,
    BPF_STX,
    BPF_W,
    BPF_X,
    CALL,
    CALL_HELPER,
    LDDW,
    PSEUDO_CALL,
    PSEUDO_MAP_VALUE,
    Instruction,
)

REDIRECT = 23
REDIRECT_MAP = 51
REDIRECT_NEIGH = 152
REDIRECT_PEER = 155
#: helper id -> the argument registers worth recording (redirect_neigh's r2 is a pointer: not needed)
RECORDED_ARGS: dict[int, tuple[int, ...]] = {
    REDIRECT: (1, 2), REDIRECT_MAP: (1, 2, 3), REDIRECT_NEIGH: (1, 4), REDIRECT_PEER: (1, 2),
}

# the hidden value's layout
OFF_HELPER = 0  # u32: helper id of the last redirect call (0: none since user space cleared it)
OFF_PC = 4  # u32: its pc in the original program
OFF_PROG = 8  # u32: the program's index in its collection
OFF_ARGS = 16  # u64 r1..r4 at 16, 24, 32, 40
OFF_EGRESS = 48  # u32: egress_ifindex for a devmap program's twin
OFF_MAPS = 64  # u64 per map index: the map's kernel address (calibration), 0 for maps not calibrated
XDP_MD_EGRESS = 20  # offsetof(struct xdp_md, egress_ifindex)

_ST_W = BPF_ST | BPF_MEM | BPF_W
_STX_DW = BPF_STX | BPF_MEM | BPF_DW


def value_size(nmaps: int) -> int:
    return OFF_MAPS + 8 * max(nmaps, 1)


def map_value(dst: int, map_index: int, offset: int) -> list[Instruction]:
    """`lddw dst, map_value(map_index) + offset` in the loader's encoding (map index, not fd)."""
    return [Instruction(LDDW, dst, PSEUDO_MAP_VALUE, 0, map_index, offset), Instruction(0, 0, 0, 0, offset)]


def recorder(helper: int, pc: int, prog_index: int, map_index: int,
             map_pointer: bool = True) -> list[Instruction]:
    """What goes in front of a redirect call (`map_pointer` False: bpf_redirect_map's r1 is not stored,
    for kernels that refuse storing a pointer; the map is then found in the code, `static_map`)."""
    out = map_value(0, map_index, 0)
    out += [Instruction(_ST_W, 0, 0, OFF_HELPER, helper), Instruction(_ST_W, 0, 0, OFF_PC, pc),
            Instruction(_ST_W, 0, 0, OFF_PROG, prog_index)]
    regs = [r for r in RECORDED_ARGS[helper] if map_pointer or not (helper == REDIRECT_MAP and r == 1)]
    out += [Instruction(_STX_DW, 0, r, OFF_ARGS + 8 * (r - 1), 0) for r in regs]
    return out


def redirect_calls(insns: Sequence[Instruction]) -> list[int]:
    """pcs of the helper calls that set a redirect target."""
    return [pc for pc, ins in enumerate(insns)
            if ins.opcode == CALL and ins.src == CALL_HELPER and ins.imm in RECORDED_ARGS]


def instrument(insns: Sequence[Instruction], prog_index: int, map_index: int, *,
               egress: bool = False, map_pointer: bool = True) -> Patched | None:
    """The program with redirect calls recorded (and, `egress`, ctx->egress_ifindex reads replaced);
    None when there is nothing to change."""
    before = {pc: recorder(insns[pc].imm, pc, prog_index, map_index, map_pointer)
              for pc in redirect_calls(insns)}
    replace = egress_reads(insns, map_index) if egress else {}
    if not before and not replace:
        return None
    return patch(insns, before, replace)


def calibration(map_indexes: Sequence[int], hidden: int) -> list[Instruction]:
    """An XDP program storing each map's kernel address at OFF_MAPS + 8 * index of the hidden value."""
    out = map_value(0, hidden, 0)
    for i in map_indexes:
        out += [Instruction(LDDW, 1, 1, 0, i, 0), Instruction(0, 0, 0, 0, 0)]  # r1 = map (PSEUDO_MAP_FD)
        out.append(Instruction(_STX_DW, 0, 1, OFF_MAPS + 8 * i, 0))
    return out + [Instruction(BPF_ALU64 | BPF_MOV, 0, 0, 0, 2), Instruction(BPF_JMP | BPF_EXIT)]


def static_map(insns: Sequence[Instruction], pc: int) -> int | None:
    """The map index (the loader's PSEUDO_MAP_FD/IDX imm) in r1 at the call at `pc`, from the `lddw r1,
    map` (or a register it was copied from) in the same basic block; None when the code does not say."""
    leaders = {0}
    for i, ins in enumerate(insns):
        if ins.is_jump:
            leaders.update((ins.jump_target(i), i + 1))
    reg = 1
    i = pc - 1
    while i >= 0:
        ins = insns[i]
        if i and insns[i - 1].opcode == LDDW:  # the second slot: look at its lddw
            i -= 1
            ins = insns[i]
        if ins.opcode == LDDW and ins.dst == reg:
            return ins.imm if ins.src in (1, 5) else None  # PSEUDO_MAP_FD, PSEUDO_MAP_IDX
        if ins.cls in (BPF_JMP, BPF_JMP32) and ins.code == BPF_CALL and reg <= 5:
            return None
        if ins.cls in (BPF_ALU, BPF_ALU64, BPF_LDX) and ins.dst == reg:
            if ins.cls == BPF_ALU64 and ins.code == BPF_MOV and ins.source == BPF_X and ins.off == 0:
                reg = ins.src
            else:
                return None
        if ins.cls == BPF_STX and ins.mode == BPF_ATOMIC and ins.imm & 0x01 and \
                (0 if ins.imm == 0xF1 else ins.src) == reg:
            return None
        if i in leaders:
            return None
        i -= 1
    return None


@dataclass(frozen=True)
class Record:
    """The last redirect call of a run, as the instrumented program wrote it."""

    helper: int
    pc: int
    prog: int
    args: tuple[int, int, int, int]  # r1..r4 (those not recorded are 0)


_REC = struct.Struct("<III4x4Q")


def read_record(buf: bytes | memoryview) -> Record | None:
    helper, pc, prog, *args = _REC.unpack_from(buf, 0)
    if helper == 0:
        return None
    return Record(helper, pc, prog, tuple(args))  # type: ignore[arg-type]


# --- ctx->egress_ifindex in devmap programs -----------------------------------------------------------

def egress_reads(insns: Sequence[Instruction], map_index: int) -> dict[int, list[Instruction]]:
    """Replacements for loads of xdp_md->egress_ifindex through the ctx pointer: the same load from the
    hidden value's OFF_EGRESS. The ctx pointer is followed through register moves, 8-byte stack spills
    and bpf-to-bpf call arguments; a load the analysis cannot prove to be from ctx is left alone (the
    verifier then refuses the twin, and says where)."""
    states = ctx_states(insns)
    out: dict[int, list[Instruction]] = {}
    for pc, ins in enumerate(insns):
        st = states.get(pc)
        if st is None or ins.cls != BPF_LDX or ins.mode not in (BPF_MEM, BPF_MEMSX):
            continue
        if ins.src in st and XDP_MD_EGRESS <= ins.off < XDP_MD_EGRESS + 4:
            delta = ins.off - XDP_MD_EGRESS
            out[pc] = map_value(ins.dst, map_index, OFF_EGRESS + delta) + [
                Instruction(ins.opcode, ins.dst, ins.dst, 0, 0)]
    return out


def ctx_states(insns: Sequence[Instruction]) -> dict[int, frozenset]:
    """pc -> registers (ints) and stack slots (("s", off) of the current frame) holding the ctx pointer
    on every path reaching pc (a must-analysis: the meet is the intersection)."""
    fillers = {pc + 1 for pc, ins in enumerate(insns) if ins.opcode == LDDW}
    states: dict[int, frozenset] = {0: frozenset({1})}
    work = [0]
    n = len(insns)

    def flow(pc: int, st: frozenset) -> None:
        if not 0 <= pc < n or pc in fillers:
            return
        old = states.get(pc)
        new = st if old is None else old & st
        if new != old:
            states[pc] = new
            work.append(pc)

    while work:
        pc = work.pop()
        ins = insns[pc]
        st = set(states[pc])
        cls = ins.cls
        if ins.opcode == LDDW:
            st.discard(ins.dst)
            flow(pc + 2, frozenset(st))
            continue
        if cls in (BPF_JMP, BPF_JMP32):
            if ins.code == BPF_EXIT:
                continue
            if ins.code == BPF_CALL:
                if ins.src == PSEUDO_CALL:
                    # the callee starts with the arguments (r1-r5) and a stack of its own
                    flow(pc + ins.imm + 1, frozenset(r for r in st if isinstance(r, int) and 1 <= r <= 5))
                st = {r for r in st if not (isinstance(r, int) and r <= 5)}
                flow(pc + 1, frozenset(st))
                continue
            if ins.is_jump:
                flow(ins.jump_target(pc), frozenset(st))
                if ins.code == BPF_JA:  # no fall-through
                    continue
            flow(pc + 1, frozenset(st))
            continue
        if cls in (BPF_ALU, BPF_ALU64):
            is_ctx = cls == BPF_ALU64 and ins.code == BPF_MOV and ins.source == BPF_X and ins.off == 0 \
                and ins.src in st
            st.discard(ins.dst)
            if is_ctx:
                st.add(ins.dst)
        elif cls == BPF_LDX:
            slot = ("s", ins.off) if ins.src == 10 else None
            fill = ins.mode == BPF_MEM and ins.opcode & 0x18 == BPF_DW and slot in st
            st.discard(ins.dst)
            if fill:
                st.add(ins.dst)
        elif cls in (BPF_ST, BPF_STX):
            if ins.dst == 10:
                size = ins.size
                hit = [s for s in st if isinstance(s, tuple) and s[1] < ins.off + size and ins.off < s[1] + 8]
                st.difference_update(hit)
                if cls == BPF_STX and ins.mode == BPF_MEM and size == 8 and ins.src in st:
                    st.add(("s", ins.off))
            if cls == BPF_STX and ins.mode == BPF_ATOMIC and ins.imm & 0x01:  # fetch writes src (cmpxchg: r0)
                st.discard(0 if ins.imm == 0xF1 else ins.src)
        flow(pc + 1, frozenset(st))
    return states


# --- from a record to a target ------------------------------------------------------------------------

XDP_REDIRECT = 4
TC_ACT_REDIRECT = 7
BPF_F_INGRESS = 1
BPF_F_BROADCAST = 1 << 3
BPF_F_EXCLUDE_INGRESS = 1 << 4
U32 = 0xFFFF_FFFF
# BPF_MAP_TYPE_*: the maps bpf_redirect_map takes
DEVMAP, CPUMAP, XSKMAP, DEVMAP_HASH = 14, 16, 17, 25
_NAMES = {REDIRECT: "bpf_redirect", REDIRECT_MAP: "bpf_redirect_map", REDIRECT_NEIGH: "bpf_redirect_neigh",
          REDIRECT_PEER: "bpf_redirect_peer"}


@dataclass(frozen=True)
class KernelRedirect:
    """Where a kernel run's redirect went. kind: "dev" (index = ifindex; `prog` = kernel id of a devmap
    entry's program), "dev-ingress", "peer", "neigh" (TC), "cpu" (index = CPU; `prog`: the cpumap
    entry's program), "xsk" (index = the xskmap key), "broadcast" (index = the map's index in the
    object); "none" when the run set no target (no call, flags the helper refused, a lookup miss: the
    kernel's xdp_do_redirect / skb_do_redirect would fail) and "unknown" when it cannot be told (the
    map is not one of the object's); `why` says which. `map`/`key`/`flags`: the bpf_redirect_map
    call's, `program` and `pc`: the call site (original numbering)."""

    kind: str
    index: int = 0
    prog: int | None = None
    map: str | None = None
    key: int | None = None
    flags: int = 0
    program: str = ""
    pc: int = -1
    why: str = ""


@dataclass(frozen=True)
class RedirectMap:
    """What resolving a bpf_redirect_map call needs of one of the object's maps."""

    name: str
    type: int
    value_size: int
    address: int  # its kernel address (calibration), 0 if unknown


def resolve(rec: Record | None, *, tc: bool, programs: Sequence[str], maps: Sequence[RedirectMap],
            lookup: Callable[[int, int], bytes | None],
            static: Callable[[int, int], int | None] | None = None) -> KernelRedirect:
    """The target of a run that returned XDP_REDIRECT / TC_ACT_REDIRECT, from its last recorded call.
    `lookup(map_index, key) -> bytes | None` reads a redirect map's entry from user space; `static(prog,
    pc) -> map index | None` finds a bpf_redirect_map's map in the code when its address is unknown."""
    if rec is None:
        return KernelRedirect("none", why="the run returned a redirect without calling a redirect helper")
    where = dict(program=programs[rec.prog] if rec.prog < len(programs) else f"#{rec.prog}", pc=rec.pc)
    name = _NAMES.get(rec.helper, str(rec.helper))
    r1, r2, r3, r4 = rec.args
    if rec.helper == REDIRECT:
        ok = not (r2 & ~BPF_F_INGRESS) if tc else r2 == 0
        if not ok:
            return KernelRedirect("none", flags=r2, why=f"{name} at insn {rec.pc} with flags {r2:#x}: "
                                  "the helper refused them", **where)  # type: ignore[arg-type]
        kind = "dev-ingress" if tc and r2 & BPF_F_INGRESS else "dev"
        return KernelRedirect(kind, r1 & U32, flags=r2, **where)  # type: ignore[arg-type]
    if rec.helper == REDIRECT_PEER:
        return KernelRedirect("peer", r1 & U32, flags=r2, **where)  # type: ignore[arg-type]
    if rec.helper == REDIRECT_NEIGH:
        return KernelRedirect("neigh", r1 & U32, flags=r4, **where)  # type: ignore[arg-type]
    index = next((i for i, m in enumerate(maps) if m.address and m.address == r1), None)
    if index is None and static is not None and not any(m.address for m in maps):
        index = static(rec.prog, rec.pc)  # no addresses: the map is what the code loaded into r1
        if index is not None and not (0 <= index < len(maps) and maps[index].type in
                                      (DEVMAP, DEVMAP_HASH, CPUMAP, XSKMAP)):
            index = None
    if index is None:
        return KernelRedirect("unknown", why=f"{name} at insn {rec.pc}: the map is none of the object's "
                              "redirect maps (an inner map?)", **where)  # type: ignore[arg-type]
    m = maps[index]
    key, flags = r2 & U32, r3
    kw = dict(map=m.name, key=key, flags=flags, **where)
    if flags & BPF_F_BROADCAST:
        return KernelRedirect("broadcast", index, **kw)  # type: ignore[arg-type]
    if m.type == XSKMAP:
        return KernelRedirect("xsk", key, **kw)  # type: ignore[arg-type]
    value = lookup(index, key)
    if value is None:
        why = f"{name} at insn {rec.pc}: {m.name}[{key}] is empty after the run"
        return KernelRedirect("none", why=why, **kw)  # type: ignore[arg-type]
    prog = int.from_bytes(value[4:8], "little") if len(value) >= 8 else 0
    if m.type == CPUMAP:
        return KernelRedirect("cpu", key, prog or None, **kw)  # type: ignore[arg-type]
    return KernelRedirect("dev", int.from_bytes(value[:4], "little"), prog or None, **kw)  # type: ignore[arg-type]
