"""The JIT engine: eBPF -> LLVM IR -> native code (xdpsim/jit/), a drop-in `Engine`.

`JitEngine().run(runtime, prog_id, state)` behaves as the interpreter's `run`: same r0, same packet
bytes and map contents, same ProgramFault (message built by engines/base.py's functions). Faults are
detected natively and reported through `env` (jit/abi.py); this module turns them into the
interpreter's exceptions. Helpers without a native lowering call their Python `impl` through a ctypes
trampoline with the live RunState.

Known differences (documented, not hidden): a budget fault ends the run at the start of the basic
block that exhausts the budget (the fault names the same instruction as the interpreter, but the
instructions of that block before it have not run: no stores, and no memory fault of theirs -- the
interpreter reports that one instead; see xdpsim/jit/__init__.py).
"""

from __future__ import annotations

import ctypes
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import isa
from ..errors import ProgramFault
from ..helpers.skbuff import SkbBuffer
from ..jit import abi
from ..jit.cfg import JitUnsupported
from ..jit.compiler import compiler, env_tier
from ..jit.lower import ProgramInput
from ..jit.natives import NATIVE_HELPER_IDS, NATIVE_MAP_TYPES, Natives, PrandomSync
from ..memory import CTX, FRAME_STACK, PACKET, STACK, STACK_SIZE
from .base import (
    MAX_CALL_FRAMES,
    NO_ATOMIC_REGIONS,
    U64,
    RunState,
    atomic_fault,
    bad_call_target_fault,
    budget_fault,
    call_depth_fault,
    frame_pointer,
    in_helper,
    internal_helper_fault,
    locate,
    lock_held_fault,
    prepare_stack,
    stack_low,
    tail_call_target,
)

if TYPE_CHECKING:
    from ..runtime import Runtime

_I64 = ctypes.c_int64
_VP = ctypes.c_void_p
ENTRY_TYPE = ctypes.CFUNCTYPE(_I64, _VP, _I64, _I64, _I64, _I64, _I64, _I64)
PY_HELPER_CTYPE = ctypes.CFUNCTYPE(_I64, _VP, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64)
PY_MEM_CTYPE = ctypes.CFUNCTYPE(_I64, _VP, _I64, _I64, _I64, _I64, _I64)
PY_INSN_CTYPE = ctypes.CFUNCTYPE(_I64, _VP, _I64)

TAIL_CALL = 12
_PRANDOM = 7
_FP0 = frame_pointer(0)  # r10 of the entry frame
_ZERO_ARGS = [0] * 5
_ENTRY_WORDS = range(abi.E_ENTRY_REGS, abi.E_ENTRY_REGS + len(abi.ENTRY_REGS))
_STACK_LO = STACK * 6 + 2  # the stack row's lo word in the region table as u32 words (hi follows)
_COUNTED = tuple(sorted(NATIVE_HELPER_IDS | {TAIL_CALL}))
_NO_MAP = np.zeros(64, dtype=np.uint64)  # a descriptor of nothing (see _RuntimeJit.refresh)
_UNSET: Any = object()  # RunState.redirect before a Python helper: did the helper set it?
_FROZEN = 1 << 32  # map_types flag: frozen maps take the Python path (-EPERM on update)
SK_BUFF_SIZE = 192  # the TC hook's context window (hooks/tc.py; not imported: it imports the engines)


def _blocks(pin: ProgramInput) -> list[tuple[int, int]]:
    """(start, end) of every basic block the lowering counts (cfg.build's leaders per function)."""
    from ..jit.cfg import build

    out = []
    for f in build(pin.insns, pin.entries):
        ends = f.leaders[1:] + [f.end]
        out.extend(zip(f.leaders, ends, strict=True))
    return out


def _s64(v: int) -> int:
    v &= U64
    return v - (1 << 64) if v >> 63 else v


class _CompiledProgram:
    """One program's native code: entry address and its function entries (callbacks, callx)."""

    def __init__(
        self, address: int, seconds: float, source: str, funcs: dict[int, int], stack_bytes: int = 512,
        blocks: list[tuple[int, int]] | None = None, key: str = "", tier: int = 2,
    ):
        self.key = key  # compiler.cache_key: the tier-2 code of the same key replaces tier 1's
        self.tier = tier  # 1 until the background O2 build is loaded (upgrade)
        self.blocks = blocks or []  # coverage: (start, end) of every basic block (cfg.build)
        self.stack_bytes = stack_bytes  # bytes below r10 the program can touch (verify.analyse)
        self.address = address
        self.seconds = seconds
        self.source = source
        self.funcs = funcs  # insn -> native address

    def upgrade(self) -> bool:
        """Take the tier-2 code once the background build loaded it (between runs: the engine's
        refresh). The entry and every function entry move together."""
        comp = compiler()
        c = comp.upgraded(self.key) if self.tier == 1 else None
        if c is None:
            return False
        self.funcs = comp.addresses(c.prefix, sorted(self.funcs))
        self.address, self.tier = c.address, 2
        return True


class _RuntimeJit:
    """Per-runtime native state: env, map descriptor table, entry table, Python trampolines."""

    def __init__(self, engine: JitEngine, runtime: Runtime):
        self.engine = engine
        self.rt = weakref.proxy(runtime)
        self.env = np.zeros(abi.ENV_WORDS, dtype=np.uint64)
        self.maps = np.zeros(0, dtype=np.uint64)
        self.frozen: list[bool] = []  # the maps' frozen flags when map_types was last made
        self.map_types = np.zeros(0, dtype=np.uint64)
        self.progs = np.zeros(0, dtype=np.uint64)
        self.compiled: list[_CompiledProgram | None] = []
        self.state: RunState | None = None
        self.batch: Any = None  # the BatchResult of a running batch (jit_batch.py)
        self.py_redirect: Any = None
        self.error: BaseException | None = None
        self.helper_counts = np.zeros(256, dtype=np.uint64)
        # coverage counters per program id (abi.E_COVER), allocated with the program's code
        self.counters: list[np.ndarray | None] = []
        self.cover_table = np.zeros(1, dtype=np.uint64)
        self.prandom = PrandomSync(runtime)
        self.generation = -1  # compiler().generation when tier-2 code was last looked for
        # trampolines: kept alive as long as this object (native code holds their addresses)
        self._py_helper = PY_HELPER_CTYPE(self._helper)
        self._py_mem = PY_MEM_CTYPE(self._mem)
        self._py_insn = PY_INSN_CTYPE(self._insn)
        self._py_exact = PY_INSN_CTYPE(self._exact)
        env = self.env
        env[abi.E_TABLE] = runtime.mem.table_address
        env[abi.E_PY_HELPER] = ctypes.cast(self._py_helper, _VP).value
        env[abi.E_PY_MEM] = ctypes.cast(self._py_mem, _VP).value
        env[abi.E_PY_INSN] = ctypes.cast(self._py_insn, _VP).value
        env[abi.E_PY_EXACT] = ctypes.cast(self._py_exact, _VP).value
        env[abi.E_HELPER_COUNTS] = self.helper_counts.ctypes.data
        env[abi.E_PRANDOM_STATE] = self.prandom.words.ctypes.data
        # the run path's views, made once (numpy scalar reads/writes and `.ctypes` cost microseconds a
        # run): env as u64 words (Python ints in and out), the region table as u32 words (6 a row),
        # the ctypes function of each entry address, the host address of the last frame seen
        self.envm = memoryview(env).cast("B").cast("Q")
        self.env_address = env.ctypes.data
        self.table_words = memoryview(runtime.mem.table.view(np.uint8)).cast("I")
        self.entries: dict[int, Any] = {}
        self.frame: Any = None
        self.frame_address = 0
        self.counts_zero = bytes(self.helper_counts.nbytes)
        self.countsm = memoryview(self.helper_counts).cast("B").cast("Q")

    # ---------------------------------------------------------------- compilation

    def refresh(self) -> None:
        """Compile programs registered since the last run; size the map and entry tables."""
        rt = self.rt
        # map types never change; frozen flags may (a map frozen after load): the type table is
        # made again only when one did (a run costs one list of flags, not the table)
        frozen = [m.frozen for m in rt.maps]
        if frozen != self.frozen or not self.envm[abi.E_MAPS]:
            types = [int(m.type) | (_FROZEN if m.frozen else 0) for m in rt.maps] or [0]
            if len(self.maps) != len(rt.maps) or not self.envm[abi.E_MAPS]:  # (set even with no map)
                # with no map at all, a zeroed descriptor: native map_of reads the descriptor of map 0
                # before it knows that the handle is no map (the result is then not used)
                descs = [m.native_descriptor() for m in rt.maps] or [_NO_MAP.ctypes.data]
                self.maps = np.array(descs, dtype=np.uint64)
                self.map_types = np.array(types, dtype=np.uint64)
                self.env[abi.E_MAPS] = self.maps.ctypes.data
                self.env[abi.E_MAP_TYPES] = self.map_types.ctypes.data
                self.env[abi.E_NMAPS] = len(rt.maps)
            else:
                self.map_types[:] = types
            self.frozen = frozen
        n = len(rt.programs)
        comp = compiler()
        if len(self.compiled) != n:
            with comp.foreground():  # tier-2 builds wait until every program has code
                while len(self.compiled) < n:
                    self.compiled.append(self.engine.compile(rt, rt.programs[len(self.compiled)]))
            self.progs = np.array([c.address if c else 0 for c in self.compiled] or [0], dtype=np.uint64)
            self.env[abi.E_PROGS] = self.progs.ctypes.data
            self.env[abi.E_NPROGS] = n
            if self.engine.coverage:
                while len(self.counters) < n:
                    prog = rt.programs[len(self.counters)]
                    self.counters.append(np.zeros(2 * len(prog.insns), dtype=np.uint64))
                self.cover_table = np.array([c.ctypes.data for c in self.counters] or [0], dtype=np.uint64)
                self.env[abi.E_COVER] = self.cover_table.ctypes.data
        if comp.generation != self.generation:
            self.upgrade(comp.generation)

    def upgrade(self, generation: int) -> None:
        """Tier-2 code loaded since the last look replaces tier 1's: here, between runs (a batch
        replay takes it at its next batch), one 8-byte entry per program in the tail-call table."""
        self.generation = generation
        if self.engine.tier == 1:  # forced tier 1 (even when another engine built tier 2 of its code)
            return
        for pid, cp in enumerate(self.compiled):
            if cp is not None and cp.tier == 1 and cp.upgrade():
                self.progs[pid] = cp.address

    # ---------------------------------------------------------------- state sync

    def load_state(self, state: RunState) -> None:
        env = self.envm
        env[abi.E_FAULT] = 0
        env[abi.E_FAULT_LEFT] = 0
        env[abi.E_BUDGET] = max(state.budget - state.insns, 0)
        env[abi.E_TAIL_CALLS] = state.tail_calls
        env[abi.E_CPU] = state.cpu
        env[abi.E_NOW_NS] = state.now_ns & U64
        env[abi.E_IFINDEX] = state.ifindex & 0xFFFF_FFFF
        env[abi.E_RXQ] = state.queue & 0xFFFF_FFFF
        env[abi.E_FRAGS] = len(state.frags)
        env[abi.E_REDIR_KIND] = abi.REDIR_NONE
        for i in _ENTRY_WORDS:  # r0, r6-r9 start at 0
            env[i] = 0
        # TC programs read lower.TC_CTX_FIELDS natively only from the hook's own skb context (env
        # mirrors the packet offsets and the other fields; packet_to_env refreshes them)
        pkt = state.packet
        env[abi.E_SKB_CTX] = int(
            isinstance(pkt, SkbBuffer) and getattr(state.ctx, "skb", None) is pkt
            and self.rt.mem.window(CTX) == (0, SK_BUFF_SIZE)
        )
        self.packet_to_env(state)

    def packet_to_env(self, state: RunState) -> None:
        env, pkt = self.envm, state.packet
        if pkt is None:
            env[abi.E_FRAME] = 0
            env[abi.E_DATA] = env[abi.E_DATA_END] = env[abi.E_META] = 0
            return
        frame = pkt.frame
        if frame is not self.frame:  # the hooks reuse one frame each: its address is asked once
            self.frame, self.frame_address = frame, frame.ctypes.data
        env[abi.E_FRAME] = self.frame_address
        env[abi.E_DATA] = pkt.data
        env[abi.E_DATA_END] = pkt.data_end
        env[abi.E_META] = pkt._meta  # noqa: SLF001 - the raw offset; data_meta is derived from it
        env[abi.E_META_OK] = int(pkt.meta_supported)
        env[abi.E_FRAME_SIZE] = pkt.frame_size
        env[abi.E_TAILROOM] = pkt.tailroom
        if env[abi.E_SKB_CTX] and isinstance(pkt, SkbBuffer):  # what TC reads natively (lower.TC_ENV_FIELDS)
            st = pkt.st
            f = abi.E_SKB_FIELDS
            env[f], env[f + 1] = st.mark & 0xFFFF_FFFF, st.protocol & 0xFFFF_FFFF
            env[f + 2], env[f + 3] = st.ingress_ifindex & 0xFFFF_FFFF, st.ifindex & 0xFFFF_FFFF

    def env_to_python(self, state: RunState) -> None:
        """Make the Python side see what native code changed: packet offsets, the windows of the
        packet and stack regions (native code writes the table rows; Python keeps a mirror)."""
        env, mem = self.envm, self.rt.mem
        pkt = state.packet
        if pkt is not None and env[abi.E_FRAME]:
            pkt.data = env[abi.E_DATA]
            pkt.data_end = env[abi.E_DATA_END]
            pkt._meta = env[abi.E_META]  # noqa: SLF001
            mem.set_window(PACKET, pkt.data_meta, pkt.data_end)
        words = self.table_words
        mem.set_window(STACK, words[_STACK_LO], words[_STACK_LO + 1])

    # ---------------------------------------------------------------- trampolines (called from native code)

    def _fail(self, exc: BaseException, pc: int) -> int:
        if isinstance(exc, ProgramFault):
            locate(exc, self.rt, int(self.env[abi.E_CUR_PROG]), pc)
        self.error = exc
        self.env[abi.E_FAULT] = abi.F_PYTHON
        return 0

    def _helper(
        self, env: int, pc: int, hid: int, r1: int, r2: int, r3: int, r4: int, r5: int, fp: int
    ) -> int:
        state = self.state
        try:
            assert state is not None
            self.env_to_python(state)
            state.prog_id = int(self.env[abi.E_CUR_PROG])
            if hid == TAIL_CALL:  # only odd tail calls get here: the fault the interpreter raises
                target = tail_call_target(self.rt, state, r2 & U64, r3 & U64)
                raise ProgramFault(
                    f"bpf_tail_call: program {target} has no native code (the JIT declined it: "
                    f"{self.rt.programs[target].cache.get(self.engine.cache_name)}); run this chain with the "
                    "interpreter",
                    kind="helper",
                )
            hd = self.rt.helpers.get(hid & 0xFFFF_FFFF) if hid >= 0 else None
            if hd is None or hd.impl is None:
                raise ProgramFault(f"call to unknown helper {hid}", kind="helper")
            state.helper_counts[hd.name] = state.helper_counts.get(hd.name, 0) + 1
            self._depth = state.depth = (STACK_SIZE - (fp & 0xFFFF_FFFF)) // FRAME_STACK
            self.prandom.to_python()
            batch = self.batch
            # native tail calls count in env (written back below: a stale count would reset the limit)
            state.tail_calls = int(self.env[abi.E_TAIL_CALLS])
            if batch is not None:  # the batch loop changes these per packet natively
                state.now_ns = int(self.env[abi.E_NOW_NS])
                state.cpu = int(self.env[abi.E_CPU])
                state.queue = int(self.env[abi.E_RXQ])
            prev_redirect, ntrace, nnotes = state.redirect, len(state.trace), len(state.notes)
            state.redirect = _UNSET
            args = (r1 & U64, r2 & U64, r3 & U64, r4 & U64, r5 & U64)
            try:
                r0 = hd.impl(state, *args) & U64
            except ProgramFault as e:  # as the interpreter: a fault inside a helper names it
                raise in_helper(hd.name, e, args) from e.__cause__
            except Exception as exc:
                raise internal_helper_fault(hd.name, exc) from exc
            finally:
                if state.redirect is _UNSET:
                    state.redirect = prev_redirect
                else:
                    self.env[abi.E_REDIR_KIND] = abi.REDIR_PY
                    self.py_redirect = state.redirect
                    if batch is not None:
                        batch.py_redirects[int(self.env[abi.E_BATCH_INDEX])] = state.redirect
                if batch is not None and len(state.trace) > ntrace:
                    batch.traces.setdefault(int(self.env[abi.E_BATCH_INDEX]), []).extend(state.trace[ntrace:])
                    del state.trace[ntrace:]
                if batch is not None and len(state.notes) > nnotes:  # a helper's remark, per packet too
                    batch.notes.setdefault(int(self.env[abi.E_BATCH_INDEX]), []).extend(state.notes[nnotes:])
                    del state.notes[nnotes:]
            if hid == _PRANDOM:  # from now on native code draws from a copy of the generator
                self.prandom.load()
            self.packet_to_env(state)
            self.env[abi.E_TAIL_CALLS] = state.tail_calls
            return _s64(r0)
        except BaseException as e:  # noqa: BLE001 - every error must go back through native code
            return self._fail(e, pc)

    _depth = 0

    def _mem(self, env: int, pc: int, addr: int, size: int, kind: int, value: int) -> int:
        state = self.state
        try:
            assert state is not None
            self.env_to_python(state)
            mem = self.rt.mem
            addr &= U64
            if kind == abi.M_STORE:
                mem.store(addr, size, value & U64)
                self.packet_to_env(state)
                return 0
            if self.batch is not None and state.ctx is not None:
                state.ctx.queue = int(self.env[abi.E_RXQ])
            v = mem.load(addr, size)
            if kind == abi.M_LOADSX and v >> (8 * size - 1):
                v -= 1 << (8 * size)
            return _s64(v)
        except BaseException as e:  # noqa: BLE001
            return self._fail(e, pc)

    def _insn(self, env: int, pc: int) -> int:
        """Instructions native code does not execute itself: give the interpreter's verdict."""
        try:
            prog = self.rt.programs[int(self.env[abi.E_CUR_PROG])]
            ins = prog.insns[pc] if 0 <= pc < len(prog.insns) else None
            if ins is not None and ins.opcode == isa.CALLX:  # lower_callx left the target in FAULT_ADDR
                raise bad_call_target_fault(int(self.env[abi.E_FAULT_ADDR]))
            raise ProgramFault(f"instruction {pc} cannot be executed", kind="fault")
        except BaseException as e:  # noqa: BLE001
            return self._fail(e, pc)

    def _exact(self, env: int, start: int) -> int:
        """A tier-1 region head found the budget might not last: the address of the function's exact
        copy (lower.py budget_regions), built now the first time."""
        try:
            cp = self.compiled[int(self.env[abi.E_CUR_PROG])]
            assert cp is not None
            return compiler().exact_address(cp.key, start)
        except BaseException as e:  # noqa: BLE001
            return self._fail(e, start)

    # ---------------------------------------------------------------- faults

    def raise_fault(self, state: RunState) -> None:
        env = self.env
        code = int(env[abi.E_FAULT])
        prog_id = int(env[abi.E_CUR_PROG])
        pc = int(env[abi.E_FAULT_PC])
        if code == abi.F_PYTHON:
            err, self.error = self.error, None
            assert err is not None
            raise err
        if code == abi.F_MEMORY:
            addr, size, write = (
                int(env[abi.E_FAULT_ADDR]),
                int(env[abi.E_FAULT_SIZE]),
                bool(env[abi.E_FAULT_WRITE]),
            )
            ins = self.rt.programs[prog_id].insns[pc]
            if addr >> 32 in NO_ATOMIC_REGIONS and ins.cls == isa.BPF_STX and ins.mode == isa.BPF_ATOMIC:
                raise locate(atomic_fault(addr, size), self.rt, prog_id, pc)
            try:
                self.rt.mem.check(addr, size, write)
            except ProgramFault as f:
                raise locate(f, self.rt, prog_id, pc) from None
            raise AssertionError(f"JIT reported a fault at {addr:#x} that the AddressSpace allows")
        if code == abi.F_BUDGET:
            pc = abi.budget_fault_pc(self.rt.programs[prog_id].insns, pc, int(env[abi.E_FAULT_ADDR]))
            state.insns = state.budget
            raise locate(budget_fault(state.budget), self.rt, prog_id, pc)
        if code == abi.F_DEPTH:
            raise locate(call_depth_fault(MAX_CALL_FRAMES - 1), self.rt, prog_id, pc)
        raise AssertionError(f"JIT fault code {code}")


class JitEngine:
    """eBPF programs compiled to native code. `native_helpers=False` sends every helper but tail_call
    (always a native jump) to Python; `proofs=False` keeps every run-time memory check;
    `coverage=True` compiles counters in (block runs, taken conditional jumps): read them with
    `coverage_counts`."""

    name = "jit"

    def __init__(
        self,
        native_helpers: bool = True,
        proofs: bool = True,
        coverage: bool = False,
        tier: int | None = None,
    ):
        """`tier`: None compiles tier 1 (fast to build) and replaces it by tier 2 (O2, built in the
        background) between runs; 1 or 2 forces that tier (default: XDPSIM_JIT_TIER, see compiler.py)."""
        self.tier = tier if tier is not None else env_tier()
        self.native_helpers = native_helpers
        self.proofs = proofs
        self.coverage = coverage

        self._natives = Natives()
        self._per_runtime: weakref.WeakKeyDictionary[Any, _RuntimeJit] = weakref.WeakKeyDictionary()

    @property
    def cache_name(self) -> str:
        """LoadedProgram.cache key: engines with other settings compile their own code."""
        forced = f"t{self.tier}" if self.tier else ""  # forced tier-1 code is never upgraded
        return f"jit:{int(self.native_helpers)}{int(self.proofs)}{int(self.coverage)}{forced}"

    # ---------------------------------------------------------------- compilation

    def program_input(self, runtime: Runtime, prog: Any) -> ProgramInput:
        from ..jit.verify import analyse
        from ..spec import ProgType

        insns = prog.insns
        xdp = prog.spec.type == ProgType.XDP if hasattr(prog.spec, "type") else False
        ptype = getattr(prog.spec, "type", None)
        tc = ptype in (ProgType.SCHED_CLS, ProgType.SCHED_ACT)
        entries = self._entries(prog)
        proofs, stack_bytes = analyse(
            insns,
            xdp=xdp,
            tc=tc,
            map_value_sizes=self._value_sizes(runtime),
            entries=entries,
            writable_maps=self._writable(runtime),
        )
        if not self.proofs:
            proofs = {}
        return ProgramInput(
            stack_bytes=stack_bytes,
            insns=insns,
            xdp=xdp,
            tc=tc,
            proofs=proofs,
            native_helpers=NATIVE_HELPER_IDS if self.native_helpers else frozenset({TAIL_CALL}),
            conformance=runtime.conformance,
            entries=entries,
            code_region=runtime.code_region,
            coverage=self.coverage,
        )

    @staticmethod
    def _writable(runtime: Runtime) -> frozenset[int]:
        from ..maps.base import BPF_F_RDONLY_PROG

        return frozenset(m.id for m in runtime.maps if not m.frozen and not m.flags & BPF_F_RDONLY_PROG)

    @staticmethod
    def _value_sizes(runtime: Runtime) -> dict[int, int]:
        """Maps whose lookups give readable value pointers of value_size bytes (verify.py)."""
        from ..maps.base import BPF_F_WRONLY_PROG

        return {
            m.id: m.value_size
            for m in runtime.maps
            if m.type in NATIVE_MAP_TYPES and not m.flags & BPF_F_WRONLY_PROG
        }

    @staticmethod
    def _entries(prog: Any) -> tuple[int, ...]:
        """Subprogram entries the loader named, and callbacks taken by address (lddw PSEUDO_FUNC)."""
        spec = prog.spec
        out = set(getattr(spec, "functions", {}) or {})
        for pc, ins in enumerate(spec.insns):
            if ins.opcode == isa.LDDW and ins.src == isa.PSEUDO_FUNC:
                out.add(pc + ins.imm + 1)
        n = len(prog.insns)
        return tuple(sorted(e for e in out if 0 < e < n))

    def compile(self, runtime: Runtime, prog: Any) -> _CompiledProgram | None:
        cached = prog.cache.get(self.cache_name)
        if isinstance(cached, _CompiledProgram):
            return cached
        try:
            pin = self.program_input(runtime, prog)
            c = compiler().compile(pin, self._natives, tier=self.tier)
        except JitUnsupported as e:
            prog.cache[self.cache_name] = e
            return None
        funcs = compiler().function_addresses(c, pin)
        blocks = _blocks(pin) if self.coverage else None
        cp = _CompiledProgram(c.address, c.seconds, c.source, funcs, pin.stack_bytes, blocks, c.key, c.tier)
        prog.cache[self.cache_name] = cp
        return cp

    def coverage_counts(
        self, runtime: Runtime, prog_id: int, reset: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """(hits, taken) of program `prog_id` since the start (or the last reset): u64 arrays with one
        entry per instruction slot, as cover.CoverageData.add_counts takes them. hits[pc]: runs of
        instruction pc (its block's runs; 0 for an lddw's second slot); taken[pc]: times the
        conditional jump at pc went to its target. A block left by a memory fault counts whole."""
        if not self.coverage:
            raise ValueError("coverage_counts: this JitEngine was made without coverage=True")
        rj = self._rj(runtime)
        cp = rj.compiled[prog_id]
        if cp is None:
            raise ValueError(f"coverage_counts: program {prog_id} has no native code (the JIT declined it: "
                             f"{runtime.programs[prog_id].cache.get(self.cache_name)})")
        counters = rj.counters[prog_id]
        assert counters is not None
        n = len(counters) // 2
        hits = np.zeros(n, dtype=np.uint64)
        insns = runtime.programs[prog_id].insns
        for start, end in cp.blocks:
            hits[start:end] = counters[start]
        for pc in range(n - 1):  # the second slot of an lddw is not an instruction of its own
            if insns[pc].is_lddw:
                hits[pc + 1] = 0
        taken = counters[n:].copy()
        if reset:
            counters[:] = 0
        return hits, taken

    def _rj(self, runtime: Runtime) -> _RuntimeJit:
        last = self._last_rj  # runs come in series on one runtime: skip the weak dictionary then
        if last is not None and last[0]() is runtime:
            rj = last[1]
        else:
            rj = self._per_runtime.get(runtime)
            if rj is None:
                rj = _RuntimeJit(self, runtime)
                self._per_runtime[runtime] = rj
            self._last_rj = (weakref.ref(runtime), rj)
        rj.refresh()
        return rj

    _last_rj: tuple[Any, _RuntimeJit] | None = None

    # ---------------------------------------------------------------- Engine protocol

    def run(self, runtime: Runtime, prog_id: int, state: RunState) -> int:
        rj = self._rj(runtime)
        cp = rj.compiled[prog_id]
        if cp is None:  # the JIT declined this program: the interpreter runs it
            from .interp import Interpreter

            return Interpreter().run(runtime, prog_id, state)
        state.engine = self
        state.prog_id = prog_id
        prepare_stack(state)
        rj.load_state(state)
        rj.prandom.from_python()
        env = rj.envm
        env[abi.E_CUR_PROG] = prog_id
        fn = rj.entries.get(cp.address)
        if fn is None:  # one ctypes function per entry address (tier-2 code gets its own)
            fn = rj.entries[cp.address] = ENTRY_TYPE(cp.address)
        args = [_s64(a) for a in state.args[:5]]
        if len(args) < 5:
            args += _ZERO_ARGS[len(args) :]
        outer = rj.state
        rj.state = state
        try:
            r0 = fn(rj.env_address, *args, _FP0)
        finally:
            rj.state = outer
            rj.env_to_python(state)
            rj.prandom.to_python()
            self._outputs(rj, state)
        state.exit_pc = env[abi.E_EXIT_PC]
        if env[abi.E_FAULT]:
            rj.raise_fault(state)
        if state.locks:
            raise locate(lock_held_fault(state.locks), runtime, state.prog_id, state.exit_pc)
        return r0 & U64

    def _outputs(self, rj: _RuntimeJit, state: RunState) -> None:
        env = rj.envm
        state.tail_calls = env[abi.E_TAIL_CALLS]
        state.prog_id = env[abi.E_CUR_PROG]
        if env[abi.E_FAULT] != abi.F_BUDGET:
            left = env[abi.E_FAULT_LEFT]  # (a tier-1 access's fault: the budget left then)
            left = left - 1 if left else env[abi.E_BUDGET]
            state.insns = state.budget - (left - (1 << 64) if left >> 63 else left)  # a signed count
        else:
            state.insns = state.budget
        kind = env[abi.E_REDIR_KIND]
        if kind:
            from ..maps import RedirectTarget

            if kind == abi.REDIR_IFINDEX:
                state.redirect = RedirectTarget("dev", env[abi.E_REDIR_INDEX])
            elif kind == abi.REDIR_CLEAR:
                state.redirect = None
            elif kind == abi.REDIR_PY:
                state.redirect = rj.py_redirect
            else:
                m = rj.rt.maps[env[abi.E_REDIR_MAP]]
                state.redirect = m.resolve(env[abi.E_REDIR_INDEX])
        # native code counts calls of the helpers it lowers (NATIVE_HELPER_IDS): those words first,
        # one read each, then one comparison of the whole array for anything else (none today)
        cm, helpers, hc = rj.countsm, rj.rt.helpers, state.helper_counts
        for hid in _COUNTED:
            n = cm[hid]
            if n:
                cm[hid] = 0
                hd = helpers.get(hid)
                name = hd.name if hd is not None else str(hid)
                hc[name] = hc.get(name, 0) + n
        counts = rj.helper_counts
        if counts.tobytes() != rj.counts_zero:
            nz = counts.nonzero()[0].tolist()
            for hid, n in zip(nz, counts[nz].tolist(), strict=True):
                hd = helpers.get(hid)
                name = hd.name if hd is not None else str(hid)
                hc[name] = hc.get(name, 0) + n
            counts.fill(0)

    def run_batch(
        self,
        runtime: Runtime,
        prog_id: int,
        data: np.ndarray,
        offsets: np.ndarray,
        lengths: np.ndarray,
        times: np.ndarray | None = None,
        queues: np.ndarray | None = None,
        **kw: Any,
    ) -> Any:
        """Run XDP program `prog_id` over a batch of packets in native code (engines/jit_batch.py
        documents the arguments and the BatchResult)."""
        from .jit_batch import run_batch

        return run_batch(self, runtime, prog_id, data, offsets, lengths, times, queues, **kw)

    def call(self, state: RunState, func_addr: int, args: tuple[int, ...]) -> int:
        """A callback (bpf_loop, for_each_map_elem) from a Python helper: runs natively one frame
        below the caller's."""
        runtime = state.runtime
        rj = self._rj(runtime)
        where = runtime.split_code_address(func_addr)
        cp = rj.compiled[where[0]] if where is not None else None
        if where is None or cp is None or where[1] not in cp.funcs:
            raise bad_call_target_fault(func_addr)
        depth = rj._depth + 1
        # a callback starts with r0, r6-r9 zero (the interpreter's engine.call); the caller's are
        # restored by the native code around the helper call that got us here
        saved_regs = rj.env[abi.E_ENTRY_REGS : abi.E_ENTRY_REGS + len(abi.ENTRY_REGS)].copy()
        rj.env[abi.E_ENTRY_REGS : abi.E_ENTRY_REGS + len(abi.ENTRY_REGS)] = 0
        if depth >= MAX_CALL_FRAMES:
            raise call_depth_fault(depth - 1)
        mem = runtime.mem
        saved = mem.window(STACK)
        mem.set_window(STACK, stack_low(depth), STACK_SIZE)
        a = [(x & U64) for x in args] + [0] * (5 - len(args))
        saved_depth = rj._depth
        rj._depth = depth
        try:
            r0 = ENTRY_TYPE(cp.funcs[where[1]])(
                rj.env.ctypes.data, *[_s64(x) for x in a[:5]], frame_pointer(depth)
            )
            if rj.env[abi.E_FAULT] and rj.error is None:
                # (built here: the message names the stack window of the faulting frame, as the
                # interpreter's does, not the caller's restored below)
                rj.env_to_python(state)
                rj.raise_fault(state)
        finally:
            rj._depth = saved_depth
            rj.env[abi.E_ENTRY_REGS : abi.E_ENTRY_REGS + len(abi.ENTRY_REGS)] = saved_regs
            mem.set_window(STACK, *saved)
        if rj.env[abi.E_FAULT]:
            err = rj.error
            assert err is not None
            raise err  # the helper's trampoline stores it again on the way out
        return r0 & U64
