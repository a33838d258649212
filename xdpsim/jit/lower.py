"""Translation of eBPF instructions to LLVM IR (llvmlite.ir builders), one small method per construct.

Registers are allocas (promoted to SSA by LLVM's mem2reg/SROA), each jump target starts a basic
block, each bpf-to-bpf subprogram is its own function with the ABI signature of abi.py. No undefined
behaviour reaches LLVM: divisors are replaced before dividing, shift counts are masked, and every
memory access goes through `Access` (checked against the region table, or proven safe by the static
pass of `verify.py`).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

import llvmlite.ir as ir

from .. import isa
from ..isa import Instruction
from ..memory import CTX, MAX_REGIONS, PACKET, R_CTX, R_READ, R_WRITE, REGION_SHIFT, STACK
from . import abi
from .cfg import Function, JitUnsupported, build, is_subcall
from .live import ALL, live_after, live_before

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I16 = ir.IntType(16)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()
INT = {1: I8, 2: I16, 4: I32, 8: I64}
FN_TYPE = ir.FunctionType(I64, [PTR, I64, I64, I64, I64, I64, I64])
PY_HELPER_TYPE = ir.FunctionType(I64, [PTR, I64, I64, I64, I64, I64, I64, I64, I64])  # env pc id r1..r5 fp
PY_MEM_TYPE = ir.FunctionType(I64, [PTR, I64, I64, I64, I64, I64])  # env pc addr size kind value
PY_INSN_TYPE = ir.FunctionType(I64, [PTR, I64])  # env pc
PY_EXACT_TYPE = ir.FunctionType(I64, [PTR, I64])  # env function start -> its exact copy (0: fault set)
# tier 1's exact copy of a function (budget_regions): env r0..r9 fp resume-pc
EXACT_TYPE = ir.FunctionType(I64, [PTR] + [I64] * 12)

U32 = 0xFFFF_FFFF
TAIL_CALL_ID = 12  # bpf_tail_call (natives.H_TAIL_CALL): its lowering reads registers in blocks of its own


_C64: dict[int, ir.Constant] = {}


def c64(v: int) -> ir.Constant:
    # shared instances: a constant's text is then formatted once, not at every use (printing the
    # module is a large part of a tier-1 compile); constants have no parent, so modules may share them
    v &= 0xFFFF_FFFF_FFFF_FFFF
    c = _C64.get(v)
    if c is None:
        if len(_C64) > 4096:
            _C64.clear()
        c = _C64[v] = ir.Constant(I64, v)
    return c


def c32(v: int) -> ir.Constant:
    return ir.Constant(I32, v & U32)


# __sk_buff fields SCHED_CLS programs read natively (4-byte loads): len, data, data_end, data_meta
# (from the packet offsets in env) and mark, protocol, ingress_ifindex, ifindex (env SKB_FIELDS), all
# of which every Python callback refreshes (engines/jit.py packet_to_env)
TC_CTX_FIELDS = (0, 8, 16, 36, 40, 76, 80, 140)
TC_ENV_FIELDS = {8: 0, 16: 1, 36: 2, 40: 3}  # field offset -> index in env SKB_FIELDS


@dataclass
class Proof:
    """What the static pass proved about one memory instruction (verify.py)."""

    kind: str  # "stack" (offset from this function's r10), "packet", "ctx"
    offset: int = 0  # stack: byte offset from fp; ctx: field offset


@dataclass
class ProgramInput:
    """Everything the translation depends on (and so everything the compile cache key holds)."""

    insns: list[Instruction]
    lddw: dict[int, int] = field(default_factory=dict)  # pc -> resolved 64-bit value of pseudo lddw
    xdp: bool = False
    tc: bool = False  # SCHED_CLS: TC_CTX_FIELDS read from env when the run's context is the hook's skb
    proofs: dict[int, Proof] = field(default_factory=dict)
    # helper id -> native lowering (natives.py); others call Python
    native_helpers: frozenset[int] = frozenset()
    budget_per_block: bool = True
    conformance: bool = False  # callx takes a helper id (the bpf_conformance suite's convention)
    entries: tuple[int, ...] = ()  # function entries besides 0 and call targets (callbacks)
    # bytes below r10 the program can reach (verify.analyse; the batch loop zeroes that much)
    stack_bytes: int = 512
    code_region: int = 5  # Runtime.code_region: function pointers are (5 << 32) | (prog << 20) | insn
    # count block runs and taken conditional jumps into the program's counters (abi.E_COVER)
    coverage: bool = False


class ModuleLowering:
    """One program -> one LLVM module exporting `entry_name`."""

    def __init__(
        self,
        prog: ProgramInput,
        entry_name: str,
        natives: NativeHelpers | None = None,
        shared: bool = False,
        compact: bool = False,
        exact: int | None = None,
        lib: dict[str, int] | None = None,
    ):
        """`shared`: the out-of-line functions (slow/checked paths, native helper bodies) are only
        declared: they come from the library module (library_module; compiler.py links or loads it).
        `compact` (tier 1, with `shared`): an access without a proof calls the whole checked access
        out of line instead of checking inline (the same function the proven paths fall back to).
        `exact` (tier 1): the module holds only the exact copy of the function starting there
        (FuncLowering.budget_regions), which calls the other functions' tier-1 code by name.
        `lib` (tier 1): the loaded library's functions, plain name -> address (FuncLowering.call_lib)."""
        assert shared or not compact, "compact lowering calls the library's checked functions"
        assert exact is None or compact, "exact copies are tier 1's"
        self.prog = prog
        self.exact = exact
        self.lib = lib
        self.shared = shared
        self.compact = compact
        self.entry_name = entry_name
        self.module = ir.Module(name=entry_name)
        self.funcs = build(prog.insns, prog.entries)
        self.ir_funcs: dict[int, ir.Function] = {}
        for f in self.funcs:
            # every function is exported: callbacks (bpf_loop...) enter subprograms from Python
            fn = ir.Function(self.module, FN_TYPE, function_name(entry_name, f.start))
            self.ir_funcs[f.start] = fn
        self.natives = natives
        # TBAA: program memory (region buffers) never overlaps the engine's own memory (env, the
        # region table, map descriptors), so a program store does not force env/table loads again
        # (tier 1 runs no optimisation: no metadata to build, print and parse)
        if not compact:
            m = self.module
            root = m.add_metadata([ir.MetaDataString(m, "xdpsim")])
            types = [m.add_metadata([ir.MetaDataString(m, n), root, c64(0)]) for n in ("env", "mem")]
            self.tbaa_env, self.tbaa_mem = (m.add_metadata([t, t, c64(0)]) for t in types)

    @property
    def memcpy(self) -> ir.Function:
        """llvm.memcpy, declared on first use (every declaration is IR to build, print and parse)."""
        return self._intrinsic("llvm.memcpy.p0.p0.i64", ir.FunctionType(VOID, [PTR, PTR, I64, I1]))

    def bswap(self, width: int) -> ir.Function:
        return self._intrinsic(f"llvm.bswap.i{width}", ir.FunctionType(INT[width // 8], [INT[width // 8]]))

    def _intrinsic(self, name: str, ty: ir.FunctionType) -> ir.Function:
        fn = self.module.globals.get(name)
        return fn if fn is not None else ir.Function(self.module, ty, name)

    def _cold_access_function(self, name: str) -> tuple[ir.Function, bool]:
        """The module's `i64 name(env, pc, addr, value)`, declared out of line and cold on first use;
        the flag says whether it was just declared (its body still to be built)."""
        fn = self.module.globals.get(name)
        if fn is not None:
            return fn, False
        fn = ir.Function(self.module, ir.FunctionType(I64, [PTR, I64, I64, I64]), name)
        if self.shared:
            return fn, False  # a declaration: the library module defines it
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        fn.attributes.add("cold")
        return fn, True

    def slow_function(self, kind: int, size: int) -> ir.Function:
        """`i64 slow(env, pc, addr, value)`: the slow path of loads/stores of one kind and size."""
        fn, new = self._cold_access_function(f"xdpsim.slow.{kind}.{size}")
        if new:
            body = HelperBody(self, fn)
            env, pc, addr, value = fn.args
            r = body.slow_access_body(pc, addr, size, kind, value)
            body.b.ret(r)
        return fn

    def checked_function(self, kind: int, size: int) -> ir.Function:
        """`i64 checked(env, pc, addr, value)`: a whole checked load (value ignored) or store, out of
        line -- the fallback of proven packet accesses when the context is not the hook's."""
        fn, new = self._cold_access_function(f"xdpsim.checked.{kind}.{size}")
        if new:
            self._checked_body(HelperBody(self, fn), kind, size)
        return fn

    def guarded_function(self, kind: int, size: int) -> ir.Function:
        """`i64 guarded(env, pc, addr, value)`: the checked access, unless a fault is recorded already
        (then it does nothing and returns 0). Tier 1 calls a block's accesses without testing env
        FAULT after each and tests it once before anything else observable (FuncLowering.flush):
        what runs between only computes registers, which a fault leaves unobserved."""
        fn, new = self._cold_access_function(f"xdpsim.guarded.{kind}.{size}")
        if new:
            body = HelperBody(self, fn)
            b = body.b
            run, faulted = fn.append_basic_block("run"), fn.append_basic_block("faulted")
            b.cbranch(b.icmp_unsigned("!=", body.env_load(abi.E_FAULT), c64(0)), faulted, run)
            b.position_at_end(faulted)
            b.ret(c64(0))
            b.position_at_end(run)
            r = b.call(self.checked_function(kind, size), list(fn.args))
            # a fault now: tier 1 runs on to its next test (FuncLowering.flush), counting; the engine
            # takes the instruction count from the budget left here (abi.E_FAULT_LEFT)
            rec, done = fn.append_basic_block("recorded"), fn.append_basic_block("done")
            b.cbranch(b.icmp_unsigned("!=", body.env_load(abi.E_FAULT), c64(0)), rec, done)
            b.position_at_end(rec)
            body.env_store(abi.E_FAULT_LEFT, b.add(body.env_load(abi.E_BUDGET), c64(1)))
            b.branch(done)
            b.position_at_end(done)
            b.ret(r)
        return fn

    @staticmethod
    def _checked_body(body: HelperBody, kind: int, size: int) -> None:
        env, pc, addr, value = body.fn.args
        if kind == abi.M_STORE:
            body.mem_store(pc, addr, size, value, None)
            body.b.ret(c64(0))
        else:
            body.b.ret(body.mem_load(pc, addr, size, kind == abi.M_LOADSX, None))

    def atomic_ptr_function(self, size: int) -> ir.Function:
        """`i64 atomicptr(env, pc, addr, 0)`: FuncLowering.atomic_ptr out of line (tier 1): the host
        address, or 0 with the fault recorded."""
        fn, new = self._cold_access_function(f"xdpsim.atomicptr.{size}")
        if new:
            body = HelperBody(self, fn)
            env, pc, addr, _ = fn.args
            body.b.ret(body.b.ptrtoint(body.atomic_ptr(pc, addr, size), I64))
        return fn

    def lower(self) -> ir.Module:
        if self.exact is not None:
            f = next(f for f in self.funcs if f.start == self.exact)
            fn = ir.Function(self.module, EXACT_TYPE, exact_name(self.entry_name, f.start))
            FuncLowering(self, f, fn=fn, resume=True).lower()
            return self.module
        for f in self.funcs:
            bound = self.budget_bound(f)
            if bound is None:
                FuncLowering(self, f).lower()
                continue
            # two copies: the function itself tests once at entry that no path through it can
            # exhaust the budget (and that the context is the hook's) and then tests no block; when
            # that fails, it tail-calls the copy that tests every block (the lowering above: exact
            # faults). The copy runs only near the end of the budget or on another context: built
            # without optimisation (less compile time)
            slow = ir.Function(self.module, FN_TYPE, function_name(self.entry_name, f.start) + ".slow")
            slow.linkage = "internal"
            for attr in ("noinline", "optnone", "cold"):
                slow.attributes.add(attr)
            FuncLowering(self, f, fn=slow).lower()
            fast = FuncLowering(self, f)
            fast.budget_bound, fast.slow_fn = bound, slow
            fast.lower()
        return self.module

    def budget_bound(self, f: Function) -> int | None:
        """The most instructions a run of `f` can execute (its longest path), when that is bounded and
        nothing it calls counts instructions: only forward jumps, and only native helper calls (which
        never run program code; a tail call leaves the function, its target tests its own budget).
        None otherwise, and for tier 1, coverage or no per-block budget."""
        prog = self.prog
        if self.compact or prog.coverage or not prog.budget_per_block:
            return None
        insns = prog.insns
        pc = f.start
        while pc < f.end:
            ins = insns[pc]
            if ins.cls in (isa.BPF_JMP, isa.BPF_JMP32) and ins.code != isa.BPF_EXIT:
                if ins.code == isa.BPF_CALL:
                    helper = ins.opcode == isa.CALL and ins.src == isa.CALL_HELPER
                    if not helper or ins.imm not in prog.native_helpers:
                        return None
                elif ins.jump_target(pc) <= pc:
                    return None
            pc += 2 if ins.is_lddw else 1
        leaders = f.leaders
        ends = dict(zip(leaders, leaders[1:] + [f.end], strict=True))
        longest: dict[int, int] = {}
        for start in reversed(leaders):  # successors lie after their block: already known
            end = ends[start]
            n = last = 0
            p = start
            while p < end:
                n, last = n + 1, p
                p += 2 if insns[p].is_lddw else 1
            ins = insns[last]
            succs: list[int] = [end]
            if ins.cls in (isa.BPF_JMP, isa.BPF_JMP32) and ins.code == isa.BPF_EXIT:
                succs = []
            elif ins.cls in (isa.BPF_JMP, isa.BPF_JMP32) and ins.code != isa.BPF_CALL:
                t = ins.jump_target(last)
                succs = [t] if ins.code == isa.BPF_JA else [t, last + 1]
            longest[start] = n + max((longest.get(t, 0) for t in succs), default=0)
        return longest[f.start]


class FuncLowering:
    """One eBPF function -> one LLVM function."""

    def __init__(
        self, mod: ModuleLowering, func: Function, fn: ir.Function | None = None, resume: bool = False
    ):
        """`fn`: the LLVM function to build (default: the one named for the program's function).
        `resume` (tier 1): `fn` is the function's exact copy (EXACT_TYPE): it starts at the block its
        last argument names with r0..r9 from its arguments (see budget_regions)."""
        self.mod = mod
        self.func = func
        self.insns = mod.prog.insns
        self.fn = fn if fn is not None else mod.ir_funcs[func.start]
        self.resume = resume
        if resume:
            self.env, *regargs, fp, self.resume_pc = self.fn.args
            args = regargs[1:6] + [fp]
        else:
            self.env, *args = self.fn.args
        self.args = args  # r1..r5, fp
        entry = self.fn.append_basic_block("entry")
        self.entry = entry
        self.b = ir.IRBuilder(entry)
        self.regs = [self.b.alloca(I64, name=f"r{i}") for i in range(11)]
        self.fp = args[5]
        if resume:
            self.live = live_before(self.insns, func)
            self._dirty = set()
            for i in range(10):
                self.b.store(regargs[i], self.regs[i])
        elif mod.compact:  # tier 1: lazy register stores (see put); only live registers initialised
            self.live = live_before(self.insns, func)
            self._dirty: set[int] = set()
            live0 = self.live.get(func.start, ALL)
            for i in range(10):  # (r10 is never loaded: get(10) is fp)
                if (live0 >> i) & 1:
                    if 1 <= i <= 5:
                        v = args[i - 1]
                    else:
                        v = self.env_load(abi.E_ENTRY_REGS + abi.ENTRY_REGS.index(i))
                    self.b.store(v, self.regs[i])
        else:
            # r0 and r6-r9 start as the caller's (calls and tail calls keep every register, as in the
            # interpreter; 0 at the start of a run): the call site left them in env
            for i in range(11):
                if i in abi.ENTRY_REGS:
                    self.b.store(self.env_load(abi.E_ENTRY_REGS + abi.ENTRY_REGS.index(i)), self.regs[i])
                else:
                    self.b.store(c64(0), self.regs[i])
            for i in range(5):
                self.b.store(args[i], self.regs[i + 1])
            self.b.store(self.fp, self.regs[10])
        self.cur_prog = self.b.load(self._env_ptr(abi.E_CUR_PROG), typ=I64)
        self.budget_ptr = self._env_ptr(abi.E_BUDGET)
        # the budget lives in a local (a register after mem2reg): env BUDGET is written back before
        # anything that may run program code or end the function (sync_budget_out, ret) and read
        # again after it (sync_budget_in), so env holds the exact count wherever Python looks
        if not mod.compact:  # (tier 1 counts in env itself: no copies around every call)
            self.budget_var = self.b.alloca(I64, name="budget")
            self.b.store(self.b.load(self.budget_ptr, typ=I64), self.budget_var)
        self.budget_block: ir.Block | None = None  # the function's shared budget fault (charge_budget)
        self.budget_phis: tuple[ir.PhiInstr, ir.PhiInstr] | None = None
        self.cov: ir.Value | None = None
        if mod.prog.coverage:  # this program's counters: env[COVER][cur_prog] (fixed for the run)
            covtab = self.b.inttoptr(self.env_load(abi.E_COVER), PTR)
            self.cov = self.b.inttoptr(
                self.b.load(self.b.gep(covtab, [self.cur_prog], source_etype=I64), typ=I64), PTR
            )
        # Packet and context proofs (verify.py) hold when the entry r1 is the context pointer and the
        # hook opened the whole xdp_md window: tested once here, the proven paths branch on it.
        self.blocks = {pc: self.fn.append_basic_block(f"pc{pc}") for pc in func.leaders}
        self.fault_block: ir.Block | None = None
        self.pc = func.start
        # tier 1 tests the budget only at region heads (budget_regions), when that saves IR
        self.regions: dict[int, int] | None = None
        if mod.compact and not resume and not mod.prog.coverage and mod.prog.budget_per_block:
            self.regions = self.budget_regions()
        if mod.compact:  # tier 1 lowers no proofs
            return
        b = self.b
        table = self.table = b.inttoptr(self.env_load(abi.E_TABLE), PTR)
        ctx_hi = self.meta(b.load(b.gep(table, [c64(CTX * 24 + 12)], source_etype=I8), typ=I32, align=4))
        ctx_lo = self.meta(b.load(b.gep(table, [c64(CTX * 24 + 8)], source_etype=I8), typ=I32, align=4))
        self.ctx_ok = b.and_(
            b.icmp_unsigned("==", args[0], c64(CTX << REGION_SHIFT)),
            b.and_(b.icmp_unsigned(">=", ctx_hi, c32(20)), b.icmp_unsigned("==", ctx_lo, c32(0))),
        )
        if mod.prog.tc:  # TC: the engine says whether the context is the hook's SkbContext (env SKB_CTX)
            self.ctx_ok = b.and_(
                b.icmp_unsigned("==", args[0], c64(CTX << REGION_SHIFT)),
                b.icmp_unsigned("!=", self.env_load(abi.E_SKB_CTX), c64(0)),
            )

    # ---------------------------------------------------------------- small vocabulary

    def _env_ptr(self, word: int) -> ir.Value:
        """&env[word], computed once per function in its entry block (less IR: env FAULT alone is
        read after every call)."""
        ptrs = self.__dict__.setdefault("_env_ptrs", {})
        p = ptrs.get(word)
        if p is None:
            if self.b.block is self.entry:  # (goto_block would then leave the builder past its end)
                p = ptrs[word] = self.b.gep(self.env, [c64(word)], source_etype=I64)
            else:
                with self.b.goto_block(self.entry):
                    p = ptrs[word] = self.b.gep(self.env, [c64(word)], source_etype=I64)
        return p

    def call_lib(self, fn: ir.Function, args: list[ir.Value]) -> ir.Instruction:
        """Call a function of the shared library. Tier 1 knows the loaded library's addresses and
        calls through them (a pointer made once per function in its entry block): LLVM's fast
        instruction selector lowers no direct call to another object in the JIT's code model (it
        then falls back to the slow selector for the rest of the block), indirect calls it does."""
        lib = self.mod.lib
        addr = lib.get(fn.name) if lib is not None else None
        if addr is None:
            return self.b.call(fn, args)
        ptrs = self.__dict__.setdefault("_lib_ptrs", {})
        p = ptrs.get(fn.name)
        if p is None:
            if self.b.block is self.entry:
                p = ptrs[fn.name] = self.b.inttoptr(c64(addr), fn.function_type.as_pointer())
            else:
                with self.b.goto_block(self.entry):
                    p = ptrs[fn.name] = self.b.inttoptr(c64(addr), fn.function_type.as_pointer())
        return self.b.call(p, args)

    def env_load(self, word: int) -> ir.Value:
        return self.meta(self.b.load(self._env_ptr(word), typ=I64))

    def env_store(self, word: int, val: ir.Value) -> None:
        self.meta(self.b.store(val, self._env_ptr(word)))

    def meta(self, instr: ir.Instruction) -> ir.Instruction:
        """Tag a load/store of the engine's memory (env, region table, descriptors) for TBAA."""
        if not self.mod.compact:  # (tier 1 runs no optimisation: less text to print and parse)
            instr.set_metadata("tbaa", self.mod.tbaa_env)
        return instr

    def prog_mem(self, instr: ir.Instruction) -> ir.Instruction:
        """Tag a load/store/atomic of program memory (a region buffer) for TBAA."""
        if not self.mod.compact:
            instr.set_metadata("tbaa", self.mod.tbaa_mem)
        return instr

    def table_ptr(self) -> ir.Value:
        """The region table (its address never changes during a run: loaded once per function)."""
        if getattr(self, "table", None) is None:
            with self.b.goto_block(self.entry):
                self.table = self.b.inttoptr(self.env_load(abi.E_TABLE), PTR)
        return self.table

    def tmp(self, ty: ir.Type = I64) -> ir.Value:
        """A local variable (alloca in the entry block, so mem2reg promotes it)."""
        with self.b.goto_block(self.entry):
            return self.b.alloca(ty)

    # The last value of each register loaded or stored in the block the builder is in: a later read
    # in the same block reuses it instead of emitting another load (less IR for LLVM to parse and
    # promote). Valid because registers change only through put() and the builder only appends.
    #
    # Tier 1 (compact) goes further: while `_lazy` (plain ALU, loads, stores, lddw: instructions whose
    # lowering only leaves its block through ret_if_fault, which carries the cache over) put() stores
    # nothing; the registers written since (`_dirty`) are stored by flush() where a later read may
    # load them from their allocas -- before a block's exit and before any other instruction -- and
    # only those live there (live.py). Nothing reads the allocas after a fault: the function returns.
    _reg_block: ir.Block | None = None
    _reg_vals: dict[int, ir.Value]
    _lazy = False
    _dirty: set[int] | frozenset[int] = frozenset()  # (tier-1 functions have their own set)

    def _reg_cache(self) -> dict[int, ir.Value]:
        blk = self.b.block
        if blk is not self._reg_block:
            if self._dirty:
                raise AssertionError(f"insn {self.pc}: registers {sorted(self._dirty)} left unstored")
            self._reg_block, self._reg_vals = blk, {}
        return self._reg_vals

    def get(self, r: int) -> ir.Value:
        if r == 10 and self.mod.compact:  # r10 is read-only (isa.validate): the frame pointer itself
            return self.fp
        cache = self._reg_cache()
        v = cache.get(r)
        if v is None:
            v = cache[r] = self.b.load(self.regs[r])
        return v

    def put(self, r: int, v: ir.Value) -> None:
        if v.type == I32:
            v = self.b.zext(v, I64)
        cache = self._reg_cache()
        if self._lazy:
            self._dirty.add(r)
        else:
            self.b.store(v, self.regs[r])
            if self._dirty:
                self._dirty.discard(r)
        cache[r] = v

    _unchecked = False  # tier 1: an access since the last flush may have recorded a fault
    _block = -1  # tier 1 with budget regions: the block being lowered

    def flush(self, live: int, exit_: bool = False) -> None:
        """Tier 1, before a block's exit or anything but registers and accesses: leave if one of the
        block's accesses faulted (guarded_function), then store the registers written since the last
        flush that are in `live` (a bit mask). With budget regions a block's exit (`exit_`) does not
        test: what runs after a fault until the next test only computes registers and skips its
        accesses (guarded), and whatever is observable tests first (see budget_regions)."""
        if self._unchecked and not (exit_ and self.regions is not None
                                    and self._block not in self.exit_tests):
            self._unchecked = False
            self.ret_if_fault()
        if self._dirty:
            cache = self._reg_cache()
            for r in sorted(self._dirty):
                if (live >> r) & 1:
                    self.b.store(cache[r], self.regs[r])
            self._dirty.clear()

    def get32(self, r: int) -> ir.Value:
        return self.b.trunc(self.get(r), I32)

    _unwind_block: ir.Block | None = None

    def ret_if_fault(self) -> None:
        """After anything that may fault (calls, slow paths): leave at once when env FAULT is set
        (through one `ret 0` block per function; branch weights mark it cold)."""
        if self._unwind_block is None:
            self._unwind_block = self.fn.append_basic_block("unwind")
            with self.b.goto_block(self._unwind_block):
                self.ret(c64(0))
        f = self.env_load(abi.E_FAULT)
        ok = self.fn.append_basic_block()
        self.unlikely(self.b.cbranch(self.b.icmp_unsigned("!=", f, c64(0)), self._unwind_block, ok))
        carried = self._reg_cache() if self.mod.compact else None
        self.b.position_at_end(ok)
        if carried is not None:  # `ok` follows only the block before: its register values hold there
            self._reg_block = ok

    def unlikely(self, br: ir.Instruction) -> None:
        """Branch weights 1:99 (one metadata node per module: llvmlite's lookup of equal nodes is slow;
        none at tier 1, which runs no optimisation)."""
        if self.mod.compact:
            return
        md = self.mod.__dict__.get("_unlikely_md")
        if md is None:
            m = self.mod.module
            md = m.add_metadata([ir.MetaDataString(m, "branch_weights"), c32(1), c32(99)])
            self.mod._unlikely_md = md
        br.set_metadata("prof", md)

    def fault(
        self, code: int, pc: int | ir.Value, addr: ir.Value | None = None, size: int = 0, write: int = 0
    ) -> None:
        """Record a fault and return (the caller's block is terminated)."""
        self.env_store(abi.E_FAULT, c64(code))
        self.env_store(abi.E_FAULT_PC, self._pc(pc))
        if addr is not None:
            self.env_store(abi.E_FAULT_ADDR, addr)
            self.env_store(abi.E_FAULT_SIZE, c64(size))
            self.env_store(abi.E_FAULT_WRITE, c64(write))
        self.ret(c64(0))

    budget_var: ir.Value | None = None  # HelperBody functions do not count instructions

    def sync_budget_out(self) -> None:
        """env BUDGET = the local count (before calls that may run program code, and returns)."""
        if self.budget_var is not None:
            self.meta(self.b.store(self.b.load(self.budget_var, typ=I64), self.budget_ptr))

    def sync_budget_in(self) -> None:
        """The local count = env BUDGET (after a call that may have run program code)."""
        if self.budget_var is not None:
            self.b.store(self.meta(self.b.load(self.budget_ptr, typ=I64)), self.budget_var)

    def ret(self, v: ir.Value) -> None:
        """Leave the function: env gets the budget first."""
        self.sync_budget_out()
        self.b.ret(v)

    # ---------------------------------------------------------------- driver

    # ModuleLowering.budget_bound: no path through this function runs more instructions; with it, the
    # budget (and the context, for packet/ctx proofs) is tested once at entry; on failure the function
    # runs as `slow_fn`, which tests every block (and the context at every proven access)
    budget_bound: int | None = None
    slow_fn: ir.Function | None = None

    def lower(self) -> None:
        if self.budget_bound is not None:
            assert self.slow_fn is not None and self.budget_var is not None
            b = self.b
            run, slow = self.fn.append_basic_block("bounded"), self.fn.append_basic_block("slow_copy")
            go_slow = b.icmp_signed("<", b.load(self.budget_var, typ=I64), c64(self.budget_bound))
            lo, hi = self.func.start, self.func.end
            if any(p.kind in ("packet", "ctx") for pc, p in self.mod.prog.proofs.items() if lo <= pc < hi):
                # the copy also runs the packet and context proofs' fallbacks: here they are not needed
                go_slow = b.or_(go_slow, b.not_(self.ctx_ok))
                self.ctx_ok = ir.Constant(I1, 1)
            self.unlikely(b.cbranch(go_slow, slow, run))
            b.position_at_end(slow)  # (nothing written yet: the copy starts from env and args)
            self.b.ret(self.b.call(self.slow_fn, list(self.fn.args), tail="musttail"))
            self.b.position_at_end(run)
        if self.resume:  # the exact copy starts at the block its caller stopped before
            sw = self.b.switch(self.resume_pc, self.blocks[self.func.start])
            for start, blk in self.blocks.items():
                sw.add_case(c64(start), blk)
        else:
            self.b.branch(self.blocks[self.func.start])
        pc = self.func.start
        while pc < self.func.end:
            if pc in self.blocks:
                blk = self.blocks[pc]
                if not self.b.block.is_terminated:
                    if self.mod.compact:
                        self.flush(self.live.get(pc, ALL), exit_=True)
                    self.b.branch(blk)
                self.b.position_at_end(blk)
                self.block_entry(pc)
            ins = self.insns[pc]
            self.pc = pc
            if self.b.block.is_terminated:  # unreachable code after an exit/ja without a label
                self.b.position_at_end(self.fn.append_basic_block(f"dead{pc}"))
            if self.mod.compact:
                self.lower_compact(pc, ins)
            else:
                self.lower_insn(pc, ins)
            pc += 2 if ins.is_lddw else 1
        if not self.b.block.is_terminated:
            # falling off the end of a function (the verifier refuses it; the interpreter does not):
            # the interpreter runs on into the next function's code in the same frame, so that
            # function's exit is this one's; past the last instruction the interpreter reports it
            if self.mod.compact:
                self.flush(ALL)
            nxt = self.mod.ir_funcs.get(self.func.end)
            if nxt is not None:
                args = [self.env] + [self.get(r) for r in range(1, 6)] + [self.fp]
                self.pass_entry_regs()
                self.sync_budget_out()
                self.b.ret(self.b.call(nxt, args))
                return
            self.sync_budget_out()
            self.b.call(self._py_insn_fn(), [self.env, c64(self.func.end)])
            self.ret(c64(0))

    def lower_compact(self, pc: int, ins: Instruction) -> None:
        """Tier 1: plain instructions with lazy register stores, the others after a flush."""
        cls = ins.cls
        jmp = cls in (isa.BPF_JMP, isa.BPF_JMP32)
        if ins.is_lddw or cls in (isa.BPF_ALU, isa.BPF_ALU64, isa.BPF_LDX, isa.BPF_ST) or (
            cls == isa.BPF_STX and ins.mode != isa.BPF_ATOMIC
        ):
            self._lazy = True
            try:
                self.lower_insn(pc, ins)
            finally:
                self._lazy = False
            return
        if jmp and ins.code not in (isa.BPF_CALL, isa.BPF_EXIT):
            self.lower_insn(pc, ins)  # (lower_jmp flushes before its branch)
            return
        if jmp and ins.code == isa.BPF_EXIT:
            self.flush(0)  # (exit reads through the cache; nothing after it reads the allocas)
            self.lower_insn(pc, ins)
            return
        if ins.opcode == isa.CALL and ins.src == isa.CALL_HELPER and ins.imm != TAIL_CALL_ID:
            # a helper call takes its arguments through the register cache and leaves its block
            # only to return (a fault): only what is live after it needs its alloca
            self.flush(live_after(self.insns, self.live, pc))
        else:
            self.flush(self.live.get(pc, ALL))
        self.lower_insn(pc, ins)

    def count(self, slot: int, inc: ir.Value) -> None:
        """Coverage: counters[slot] += inc (abi.E_COVER)."""
        assert self.cov is not None
        p = self.b.gep(self.cov, [c64(slot)], source_etype=I64)
        self.b.store(self.b.add(self.b.load(p, typ=I64), inc), p)

    # Tier 1's budget regions. Every cycle of the control flow passes a loop head (a jump to itself or
    # backwards), so the blocks between region heads -- the function's entry, its loop heads, and the
    # blocks after calls that may run program code (subprograms, callx, Python helpers) -- form
    # acyclic regions with a longest path. A head tests once that the budget covers that path; then
    # no block of the region can exhaust it and the region's blocks are charged without a test. When
    # the budget might not last, the head resumes the function in its exact copy (compiled when first
    # needed, through env PY_EXACT: compiler.py), which tests every block as before: faults (budget and
    # memory alike) are those of testing every block.
    REGION_HEAD_COST = 30  # IR lines of the resume path: regions pay when they save more

    def budget_regions(self) -> dict[int, int] | None:
        """Region head -> the most instructions from its start to the next head (or the function's
        end); None when testing every block is less IR."""
        f, insns = self.func, self.insns
        leaders = f.leaders
        ends = dict(zip(leaders, leaders[1:] + [f.end], strict=True))
        heads = {f.start} | (f.loop_heads & set(ends))
        length: dict[int, int] = {}
        succs: dict[int, list[int]] = {}
        first: dict[int, int] = {}  # the block's first instruction that is not NEUTRAL: its kind
        last: dict[int, int] = {}  # its last one's
        observes: set[int] = set()  # blocks with an OBSERVABLE instruction
        for start in leaders:
            n, at, p, end = 0, start, start, ends[start]
            k0 = k1 = NEUTRAL
            while p < end:
                ins = insns[p]
                n, at = n + 1, p
                k = _fault_kind(ins)
                if k:
                    k0, k1 = k0 or k, k
                    if k == OBSERVABLE:
                        observes.add(start)
                p += 2 if ins.is_lddw else 1
            length[start], first[start], last[start] = n, k0, k1
            ins = insns[at]
            succs[start] = [end]
            if ins.cls in (isa.BPF_JMP, isa.BPF_JMP32):
                if ins.code == isa.BPF_EXIT:
                    succs[start] = []
                elif ins.code == isa.BPF_CALL:
                    native = ins.opcode == isa.CALL and ins.src == isa.CALL_HELPER and (
                        ins.imm in self.mod.prog.native_helpers
                    )
                    if not native and end in ends:
                        heads.add(end)
                else:
                    t = ins.jump_target(at)
                    succs[start] = [t] if ins.code == isa.BPF_JA else [t, at + 1]
        if 3 * (len(leaders) - len(heads)) <= self.REGION_HEAD_COST:
            return None
        # Blocks a run may enter with a fault recorded but not tested yet (an access in a block
        # before, on some path, and no test since): their first observable instruction tests; heads
        # entered so test env FAULT with the budget. Edges into blocks that are no head go forward.
        # A block left so still tests at its exit when its fault would reach two or more tests
        # (heads, blocks with something observable before any access): `reach` holds up to two.
        reach: dict[int, frozenset[int]] = {}
        for start in reversed(leaders):
            if start in heads or first[start] == OBSERVABLE:
                reach[start] = frozenset({start})
            elif start in observes:
                reach[start] = frozenset()  # (its own accesses' test covers what comes in)
            else:
                reach[start] = self._reach_of(succs[start], reach, heads)
        self.unchecked_in = unchecked = set()
        self.exit_tests = set()
        for start in leaders:
            k = last[start]
            if k == OBSERVABLE or (k == NEUTRAL and (start not in unchecked or start in heads)):
                continue  # (a head tests env FAULT)
            nxt = [t for t in succs[start] if t in ends]
            if len(self._reach_of(nxt, reach, heads)) >= 2:
                self.exit_tests.add(start)
            else:
                unchecked.update(nxt)
        longest: dict[int, int] = {}
        for start in reversed(leaders):  # a successor that is no head lies after its block
            longest[start] = length[start] + max(
                (longest[t] for t in succs[start] if t in ends and t not in heads), default=0
            )
        return {h: longest[h] for h in heads}

    unchecked_in: set[int] = set()  # (budget_regions)
    exit_tests: set[int] = set()

    @staticmethod
    def _reach_of(succs: list[int], reach: dict[int, frozenset[int]], heads: set[int]) -> frozenset[int]:
        """The tests (up to two) a fault left untested on entering `succs` would reach."""
        out: frozenset[int] = frozenset()
        for t in succs:
            out |= frozenset({t}) if t in heads or t not in reach else reach[t]
            if len(out) >= 2:
                break
        return out

    _resume_block: ir.Block | None = None
    _resume_phi: ir.PhiInstr | None = None

    def resume_block(self) -> tuple[ir.Block, ir.PhiInstr]:
        """The function's way into its exact copy: registers from their allocas (a region head starts a
        block: every live register is stored), the copy's address from env PY_EXACT (0: it could not
        be built, the fault is recorded), its result returned."""
        if self._resume_block is None or self._resume_phi is None:
            b = self.b
            blk = self._resume_block = self.fn.append_basic_block("resume")
            with b.goto_block(blk):
                at = self._resume_phi = b.phi(I64)
                none, copy, go = (self.fn.append_basic_block(f"resume.{n}") for n in ("none", "copy", "go"))
                # (a head entered with a recorded fault comes here too: the run ends with that fault)
                b.cbranch(b.icmp_unsigned("!=", self.env_load(abi.E_FAULT), c64(0)), none, copy)
                b.position_at_end(none)
                b.ret(c64(0))
                b.position_at_end(copy)
                regs = [b.load(self.regs[i]) for i in range(10)]
                tramp = b.inttoptr(self.env_load(abi.E_PY_EXACT), PY_EXACT_TYPE.as_pointer())
                addr = b.call(tramp, [self.env, c64(self.func.start)])
                b.cbranch(b.icmp_unsigned("==", addr, c64(0)), none, go)
                b.position_at_end(go)
                copy = b.inttoptr(addr, EXACT_TYPE.as_pointer())
                b.ret(b.call(copy, [self.env, *regs, self.fp, at]))
        return self._resume_block, self._resume_phi

    def charge_region(self, pc: int) -> None:
        """Tier 1: charge the block; a region head first tests the budget against its region."""
        assert self.regions is not None
        b = self.b
        before = b.load(self.budget_ptr, typ=I64)
        w = self.regions.get(pc)
        if w is not None:
            blk, phi = self.resume_block()
            phi.add_incoming(c64(pc), b.block)
            ok = self.fn.append_basic_block(f"pc{pc}.run")
            stop = b.icmp_signed("<", before, c64(w))
            if pc in self.unchecked_in:
                stop = b.or_(stop, b.icmp_unsigned("!=", self.env_load(abi.E_FAULT), c64(0)))
            b.cbranch(stop, blk, ok)
            b.position_at_end(ok)
        b.store(b.sub(before, c64(self._block_len(pc))), self.budget_ptr)
        self._unchecked = w is None and pc in self.unchecked_in
        self._block = pc

    def block_entry(self, pc: int) -> None:
        """Charge the block's instructions to the budget: a runaway loop ends with F_BUDGET. With
        coverage, count the block's run (after the budget: a block the budget stops is not counted)."""
        if self.regions is not None:
            self.charge_region(pc)
        elif self.budget_bound is not None:  # the entry test covered every path: charge, no test
            count = self.budget_var
            assert count is not None
            self.b.store(self.b.sub(self.b.load(count, typ=I64), c64(self._block_len(pc))), count)
        elif self.mod.prog.budget_per_block:
            # (tier 1 tests every block: deferring adds IR there and it runs no optimisation)
            deferred, after = self.deferred_checks() if not self.mod.compact else ((), ())
            if pc in deferred:
                self.charge_deferred(pc)
            elif pc in after:
                self.charge_after_deferred(pc)
            else:
                self.charge_budget(pc)
        if self.cov is not None:
            self.count(pc, c64(1))

    # Deferred budget checks. A block that can neither fault nor do anything observable (ALU, jumps,
    # loads proven on the stack or in map values: registers only change) is charged without a test;
    # its successors test for it. Faulting at the successor's start then names the same instruction
    # with the same memory and maps as faulting at the block's own start would (registers are not
    # observable after a fault). A deferred block's successors are never deferred, so one pending
    # block at most: the budget on entering any block is >= 0 except after a deferred one, and a
    # negative budget at a block's start says the pending block ran out (at its `before`-th).
    _deferred: tuple[frozenset[int], frozenset[int]] | None = None

    def deferred_checks(self) -> tuple[frozenset[int], frozenset[int]]:
        """(blocks charged without a test, blocks that test for a deferred predecessor)."""
        if self._deferred is not None:
            return self._deferred
        leaders = self.func.leaders
        ends = dict(zip(leaders, leaders[1:] + [self.func.end], strict=True))
        succs: dict[int, list[int]] = {}
        pure: set[int] = set()
        for start in leaders:
            end = ends[start]
            last = start
            ok = not self.mod.prog.coverage
            for p in range(start, end):
                ins = self.insns[p]
                if p > start and self.insns[p - 1].is_lddw:
                    continue
                last = p
                ok = ok and self._pure(p, ins)
            ins = self.insns[last]
            if ins.cls in (isa.BPF_JMP, isa.BPF_JMP32) and ins.code not in (isa.BPF_CALL, isa.BPF_EXIT):
                target = ins.jump_target(last)
                succs[start] = [target] if ins.code == isa.BPF_JA else [target, last + 1]
            elif ins.cls in (isa.BPF_JMP, isa.BPF_JMP32) and ins.code == isa.BPF_EXIT:
                succs[start] = []
                ok = False
            else:
                succs[start] = [end]
            if ok and all(t in ends and t != start for t in succs[start]):
                pure.add(start)
        deferred: set[int] = set()
        after: set[int] = set()
        for start in leaders:  # no edge between two deferred blocks; their successors without lddw
            ts = succs[start]
            if start not in pure or start in after or any(t in deferred for t in ts):
                continue
            if all(self._lddw_free(t, ends[t]) for t in ts):
                deferred.add(start)
                after.update(ts)
        self._deferred = (frozenset(deferred), frozenset(after - deferred))
        return self._deferred

    def _lddw_free(self, start: int, end: int) -> bool:
        return not any(self.insns[p].is_lddw for p in range(start, end))

    def _pure(self, pc: int, ins: Instruction) -> bool:
        """The instruction changes registers only and cannot fault."""
        cls = ins.cls
        if ins.is_lddw:
            return False  # keeps the pending block's slots contiguous (the fault's pc is start + before)
        if cls in (isa.BPF_ALU, isa.BPF_ALU64):
            return True
        if cls in (isa.BPF_JMP, isa.BPF_JMP32):
            return ins.code not in (isa.BPF_CALL, isa.BPF_EXIT)
        if cls == isa.BPF_LDX and ins.mode in (isa.BPF_MEM, isa.BPF_MEMSX):
            proof = self.mod.prog.proofs.get(pc)
            return proof is not None and proof.kind in ("stack", "mapval")
        return False

    def charge_deferred(self, pc: int) -> None:
        """A deferred block: charged, its start and budget kept for the successor's test."""
        b = self.b
        count = self.budget_ptr if self.budget_var is None else self.budget_var
        pend_start, pend_before = self.pending()
        before = b.load(count, typ=I64)
        b.store(c64(pc), pend_start)
        b.store(before, pend_before)
        b.store(b.sub(before, c64(self._block_len(pc))), count)

    _pending: tuple[ir.Value, ir.Value] | None = None

    def pending(self) -> tuple[ir.Value, ir.Value]:
        """Locals (registers after mem2reg): the pending deferred block's start and budget."""
        if self._pending is None:
            b = self.b
            with b.goto_block(self.entry):
                self._pending = (b.alloca(I64, name="pend.start"), b.alloca(I64, name="pend.before"))
                b.store(c64(0), self._pending[0])
                b.store(c64(0), self._pending[1])
        return self._pending

    def charge_after_deferred(self, pc: int) -> None:
        """A block that may follow a deferred one: a negative budget at its start is the pending
        block's fault (its start and budget go to the function's budget fault block)."""
        n = self._block_len(pc)
        b = self.b
        count = self.budget_ptr if self.budget_var is None else self.budget_var
        before = b.load(count, typ=I64)
        left = b.sub(before, c64(n))
        b.store(left, count)
        shared = self._budget_fault()
        pend_start, pend_before = self.pending()
        assert self.budget_phis is not None
        site = self.fn.append_basic_block(f"pc{pc}.budget")
        ok = self.fn.append_basic_block(f"pc{pc}.run")
        self.unlikely(b.cbranch(b.icmp_signed("<", left, c64(0)), site, ok))
        b.position_at_end(site)
        pending = b.icmp_signed("<", before, c64(0))
        start = b.select(pending, b.load(pend_start, typ=I64), c64(pc))
        at = b.select(pending, b.load(pend_before, typ=I64), before)
        self.budget_phis[0].add_incoming(start, site)
        self.budget_phis[1].add_incoming(at, site)
        b.branch(shared)
        b.position_at_end(ok)

    def charge_budget(self, pc: int) -> None:
        n = self._block_len(pc)
        b = self.b
        count = self.budget_ptr if self.budget_var is None else self.budget_var
        before = b.load(count, typ=I64)
        left = b.sub(before, c64(n))
        b.store(left, count)
        exhausted = b.icmp_signed("<", left, c64(0))
        # one fault block per function (less IR to build, optimise, emit): it records the block's
        # start and `before`; the exhausting instruction is the before-th of the block, which the
        # engine finds (lddw counts once: abi.F_BUDGET)
        shared = self._budget_fault()
        assert self.budget_phis is not None
        self.budget_phis[0].add_incoming(c64(pc), b.block)
        self.budget_phis[1].add_incoming(before, b.block)
        ok = self.fn.append_basic_block(f"pc{pc}.run")
        self.unlikely(b.cbranch(exhausted, shared, ok))
        b.position_at_end(ok)

    def _budget_fault(self) -> ir.Block:
        if self.budget_block is None:
            blk = self.budget_block = self.fn.append_basic_block("budget_fault")
            with self.b.goto_block(blk):
                start, before = self.b.phi(I64), self.b.phi(I64)
                self.budget_phis = (start, before)
                self.fault(abi.F_BUDGET, start, before)
        return self.budget_block

    def _block_len(self, pc: int) -> int:
        leaders = self.func.leaders
        i = bisect.bisect_left(leaders, pc)
        end = leaders[i + 1] if i + 1 < len(leaders) else self.func.end
        return sum(1 for p in range(pc, end) if not (p > 0 and self.insns[p - 1].is_lddw))

    def lower_insn(self, pc: int, ins: Instruction) -> None:
        cls = ins.cls
        if ins.is_lddw:
            self.lower_lddw(pc, ins)
        elif cls in (isa.BPF_ALU, isa.BPF_ALU64):
            self.lower_alu(ins)
        elif cls in (isa.BPF_JMP, isa.BPF_JMP32):
            self.lower_jmp(pc, ins)
        elif cls == isa.BPF_LDX:
            self.lower_ldx(pc, ins)
        elif cls == isa.BPF_ST:
            self.lower_st(pc, ins, c64(ins.imm))
        elif cls == isa.BPF_STX:
            if ins.mode == isa.BPF_ATOMIC:
                self.lower_atomic(pc, ins)
            else:
                self.lower_st(pc, ins, self.get(ins.src))
        else:  # LD ABS/IND and anything else: the interpreter decides what happens
            self.py_insn(pc)

    def py_insn(self, pc: int) -> None:
        """Let the Python side execute (or refuse) this instruction: it sets a fault."""
        self.b.call(self._py_insn_fn(), [self.env, c64(pc)])
        self.ret_if_fault()

    def _py_insn_fn(self) -> ir.Value:
        return self.b.inttoptr(self.env_load(abi.E_PY_INSN), PY_INSN_TYPE.as_pointer())

    # ---------------------------------------------------------------- lddw

    def lower_lddw(self, pc: int, ins: Instruction) -> None:
        if ins.src == 0:
            self.put(ins.dst, c64(ins.imm64))
            return
        if pc not in self.mod.prog.lddw:
            raise JitUnsupported(f"insn {pc}: lddw with pseudo source {ins.src} is not resolved")
        self.put(ins.dst, c64(self.mod.prog.lddw[pc]))

    # ---------------------------------------------------------------- ALU

    def lower_alu(self, ins: Instruction) -> None:
        is64 = ins.cls == isa.BPF_ALU64
        ty = I64 if is64 else I32
        code = ins.code
        if code == isa.BPF_END:
            self.put(ins.dst, self.alu_end(ins, is64))
            return
        # (a mov does not read its destination: no load for LLVM to remove)
        dst = None if code == isa.BPF_MOV else self.get(ins.dst) if is64 else self.get32(ins.dst)
        if code == isa.BPF_NEG:
            self.put(ins.dst, self.b.neg(dst))
            return
        if ins.source == isa.BPF_X:
            src = self.get(ins.src) if is64 else self.get32(ins.src)
        else:
            src = ir.Constant(ty, ins.imm & (0xFFFF_FFFF_FFFF_FFFF if is64 else U32))
        op = ALU_OPS.get(code)
        if op is None:
            raise JitUnsupported(f"ALU operation {code:#x}")
        self.put(ins.dst, op(self, ins, ty, dst, src))

    def alu_end(self, ins: Instruction, is64: bool) -> ir.Value:
        width = ins.imm
        v = self.b.trunc(self.get(ins.dst), INT[width // 8]) if width < 64 else self.get(ins.dst)
        if is64 or ins.source == isa.BPF_TO_BE:  # bswap (v4) or to big-endian on a little-endian host
            v = self.b.call(self.mod.bswap(width), [v])
        return self.b.zext(v, I64) if width < 64 else v

    def alu_divmod(self, ins: Instruction, ty: ir.IntType, a: ir.Value, d: ir.Value, mod: bool) -> ir.Value:
        b = self.b
        zero = ir.Constant(ty, 0)
        dz = b.icmp_unsigned("==", d, zero)
        safe = b.select(dz, ir.Constant(ty, 1), d)
        if ins.off == 1:  # signed: INT_MIN / -1 must not trap; RFC: gives INT_MIN, modulo 0
            bits = ty.width
            ovf = b.and_(
                b.icmp_unsigned("==", a, ir.Constant(ty, 1 << (bits - 1))),
                b.icmp_unsigned("==", d, ir.Constant(ty, (1 << bits) - 1)),
            )
            safe = b.select(ovf, ir.Constant(ty, 1), safe)
            r = b.srem(a, safe) if mod else b.sdiv(a, safe)
        else:
            r = b.urem(a, safe) if mod else b.udiv(a, safe)
        return b.select(dz, a if mod else zero, r)

    def alu_shift(self, kind: str, ty: ir.IntType, a: ir.Value, s: ir.Value) -> ir.Value:
        if isinstance(s, ir.Constant):  # an immediate count: masked here, one instruction less
            s = ir.Constant(ty, s.constant & (ty.width - 1))
        else:
            s = self.b.and_(s, ir.Constant(ty, ty.width - 1))
        return getattr(self.b, kind)(a, s)

    def alu_mov(self, ins: Instruction, ty: ir.IntType, a: ir.Value, s: ir.Value) -> ir.Value:
        if ins.source == isa.BPF_X and ins.off in (8, 16, 32):
            return self.b.sext(self.b.trunc(s, INT[ins.off // 8]), ty)
        return s

    # ---------------------------------------------------------------- jumps, calls, exit

    def lower_jmp(self, pc: int, ins: Instruction) -> None:
        code = ins.code
        if code == isa.BPF_EXIT:
            self.env_store(abi.E_EXIT_PC, c64(pc))
            if len(self.mod.funcs) > 1:  # the caller's r1-r5 after the call are ours (interpreter)
                for r in range(1, 6):
                    self.env_store(abi.E_RET_REGS + r - 1, self.get(r))
            self.ret(self.get(0))
            return
        if code == isa.BPF_CALL:
            self.lower_call(pc, ins)
            return
        target = self.blocks[ins.jump_target(pc)]
        if code == isa.BPF_JA:
            if self.mod.compact:
                self.flush(live_after(self.insns, self.live, pc), exit_=True)
            self.b.branch(target)
            return
        is64 = ins.cls == isa.BPF_JMP
        ty = I64 if is64 else I32
        a = self.get(ins.dst) if is64 else self.get32(ins.dst)
        if ins.source == isa.BPF_X:
            s = self.get(ins.src) if is64 else self.get32(ins.src)
        else:
            s = ir.Constant(ty, ins.imm & (0xFFFF_FFFF_FFFF_FFFF if is64 else U32))
        if code == isa.BPF_JSET:
            cond = self.b.icmp_unsigned("!=", self.b.and_(a, s), ir.Constant(ty, 0))
        else:
            signed, op = JMP_OPS[code]
            cond = (self.b.icmp_signed if signed else self.b.icmp_unsigned)(op, a, s)
        if self.cov is not None and ins.jump_target(pc) != pc + 1:  # taken[pc] += cond, branch-free
            self.count(len(self.insns) + pc, self.b.zext(cond, I64))
        if self.mod.compact:
            self.flush(live_after(self.insns, self.live, pc), exit_=True)
        self.b.cbranch(cond, target, self.blocks[pc + 1])

    def lower_call(self, pc: int, ins: Instruction) -> None:
        if is_subcall(ins):
            self.lower_subcall(pc, ins)
        elif ins.opcode == isa.CALL and ins.src == isa.CALL_HELPER:
            self.lower_helper(pc, ins.imm)
        elif ins.opcode == isa.CALLX:
            self.lower_callx(pc, ins)
        else:  # kfuncs: the Python side decides
            self.py_insn(pc)

    def lower_callx(self, pc: int, ins: Instruction) -> None:
        target = self.get(ins.dst)
        if self.mod.prog.conformance:
            self.call_py_helper(pc, target)
            return
        b = self.b
        off = b.and_(target, c64(U32))
        ours = b.and_(
            b.icmp_unsigned("==", b.lshr(target, c64(REGION_SHIFT)), c64(self.mod.prog.code_region)),
            b.icmp_unsigned("==", b.lshr(off, c64(20)), self.cur_prog),
        )
        insn = b.select(ours, b.and_(off, c64((1 << 20) - 1)), c64(-1))
        bad = self.fn.append_basic_block("callx.bad")
        done = self.fn.append_basic_block("callx.done")
        sw = b.switch(insn, bad)
        results = []
        for f in self.mod.funcs:
            blk = self.fn.append_basic_block(f"callx.{f.start}")
            sw.add_case(c64(f.start), blk)
            b.position_at_end(blk)
            results.append((self.emit_subcall(pc, self.mod.ir_funcs[f.start]), b.block))
            b.branch(done)
        b.position_at_end(bad)
        self.env_store(abi.E_FAULT_ADDR, target)
        self.b.call(self._py_insn_fn(), [self.env, c64(pc)])
        self.ret(c64(0))
        b.position_at_end(done)
        phi = b.phi(I64)
        for v, blk in results:
            phi.add_incoming(v, blk)
        self.put(0, phi)

    def lower_subcall(self, pc: int, ins: Instruction) -> None:
        self.put(0, self.emit_subcall(pc, self.mod.ir_funcs[pc + ins.imm + 1]))

    def pass_entry_regs(self) -> None:
        """Leave r0 and r6-r9 in env for the function about to start (see abi.E_ENTRY_REGS)."""
        for k, r in enumerate(abi.ENTRY_REGS):
            self.env_store(abi.E_ENTRY_REGS + k, self.get(r))

    def stack_lo(self, fp_off: ir.Value) -> None:
        """Open the stack window down to the frame below `fp_off` (the interpreter's stack_low)."""
        table = self.b.inttoptr(self.env_load(abi.E_TABLE), PTR)
        lo = self.b.gep(table, [c64(STACK * 24 + 8)], source_etype=I8)
        self.meta(self.b.store(self.b.trunc(self.b.sub(fp_off, c64(abi.FRAME_BYTES)), I32), lo, align=4))

    def emit_subcall(self, pc: int, callee: ir.Function) -> ir.Value:
        # depth = (4096 - fp_offset) / 512; a call from depth 7 would need a ninth frame
        fp_off = self.b.and_(self.fp, c64(U32))
        too_deep = self.b.icmp_unsigned(
            "<=", fp_off, c64(abi.STACK_BYTES - (abi.MAX_FRAMES - 1) * abi.FRAME_BYTES)
        )
        with self.b.if_then(too_deep, likely=False):
            self.fault(abi.F_DEPTH, pc)
        callee_fp = self.b.sub(self.fp, c64(abi.FRAME_BYTES))
        self.stack_lo(self.b.and_(callee_fp, c64(U32)))
        args = [self.env] + [self.get(r) for r in range(1, 6)] + [callee_fp]
        self.pass_entry_regs()
        self.sync_budget_out()
        r0 = self.b.call(callee, args)
        self.sync_budget_in()
        self.ret_if_fault()
        for r in range(1, 6):
            self.put(r, self.env_load(abi.E_RET_REGS + r - 1))
        self.stack_lo(fp_off)
        # a tail call inside the callee changed the running program; it is ours again
        self.env_store(abi.E_CUR_PROG, self.cur_prog)
        return r0

    def lower_helper(self, pc: int, hid: int) -> None:
        natives = self.mod.natives
        if natives is not None and hid in self.mod.prog.native_helpers and natives.lower(self, pc, hid):
            return
        self.call_py_helper(pc, hid)

    def call_py_helper(self, pc: int, hid: int | ir.Value) -> None:
        fnp = self.b.inttoptr(self.env_load(abi.E_PY_HELPER), PY_HELPER_TYPE.as_pointer())
        hid_v = c64(hid) if isinstance(hid, int) else hid
        args = [self.env, self._pc(pc), hid_v] + [self.get(r) for r in range(1, 6)] + [self.fp]
        self.sync_budget_out()  # a Python helper may call back into program code (bpf_loop)
        r0 = self.b.call(fnp, args)
        self.sync_budget_in()
        self.ret_if_fault()
        self.put(0, r0)

    # ---------------------------------------------------------------- memory

    def address(self, base: ir.Value, off: int) -> ir.Value:
        if off == 0 and self.mod.compact:  # (tier 1: no `add x, 0` to print, parse and emit)
            return base
        return self.b.add(base, c64(off))

    def lower_ldx(self, pc: int, ins: Instruction) -> None:
        size = ins.size
        sx = ins.mode == isa.BPF_MEMSX
        addr = self.address(self.get(ins.src), ins.off)
        v = self.mem_load(pc, addr, size, sx, proof=self.mod.prog.proofs.get(pc))
        self.put(ins.dst, v)

    def lower_st(self, pc: int, ins: Instruction, value: ir.Value) -> None:
        addr = self.address(self.get(ins.dst), ins.off)
        self.mem_store(pc, addr, ins.size, value, proof=self.mod.prog.proofs.get(pc))

    def lower_atomic(self, pc: int, ins: Instruction) -> None:
        size = ins.size
        ty = INT[size]
        addr = self.b.add(self.get(ins.dst), c64(ins.off))
        proof = self.mod.prog.proofs.get(pc)
        if proof is not None and proof.kind in ("stack", "mapval"):
            ptr = self.proven_ptr(addr, proof)
        elif self.mod.compact:  # tier 1: the same checks, out of line
            ptr = self.call_lib(self.mod.atomic_ptr_function(size), [self.env, self._pc(pc), addr, c64(0)])
            self.ret_if_fault()
            ptr = self.b.inttoptr(ptr, PTR)
        else:
            ptr = self.atomic_ptr(pc, addr, size)
        src = self.b.trunc(self.get(ins.src), ty) if size == 4 else self.get(ins.src)
        op = ins.imm
        if op == isa.BPF_CMPXCHG:
            r0 = self.b.trunc(self.get(0), ty) if size == 4 else self.get(0)
            pair = self.prog_mem(self.b.cmpxchg(ptr, r0, src, "seq_cst", "seq_cst"))
            self.put(0, self.widen(self.b.extract_value(pair, 0), size))
            return
        rmw = ATOMIC_RMW[op & ~isa.BPF_FETCH] if op != isa.BPF_XCHG else "xchg"
        old = self.prog_mem(self.b.atomic_rmw(rmw, ptr, src, "seq_cst"))
        if op & isa.BPF_FETCH:
            self.put(ins.src, self.widen(old, size))

    def atomic_ptr(self, pc: int | ir.Value, addr: ir.Value, size: int) -> ir.Value:
        """Host pointer of an atomic without a proof (faults recorded here)."""
        # the verifier refuses atomics on packet pointers (ctx ones fail the check below): a
        # fault before any access; JitEngine reports it as engines.base.atomic_fault
        ok, pkt = self.fn.append_basic_block("at.ok"), self.fn.append_basic_block("at.pkt")
        rid = self.b.lshr(addr, c64(REGION_SHIFT))
        self.b.cbranch(self.b.icmp_unsigned("==", rid, c64(PACKET)), pkt, ok)
        self.b.position_at_end(pkt)
        self.fault(abi.F_MEMORY, pc, addr, size, 1)
        self.b.position_at_end(ok)
        return self.host_ptr(pc, addr, size, write=True, atomic=True)

    def widen(self, v: ir.Value, size: int, signed: bool = False) -> ir.Value:
        if size == 8:
            return v
        return self.b.sext(v, I64) if signed else self.b.zext(v, I64)

    def mem_load(self, pc: int, addr: ir.Value, size: int, sx: bool, proof: Proof | None) -> ir.Value:
        b = self.b
        if (
            proof is not None
            and proof.kind == "ctx"
            and size == 4
            and (
                (self.mod.prog.xdp and proof.offset in (0, 4, 8, 12, 16))
                or (self.mod.prog.tc and proof.offset in TC_CTX_FIELDS)
            )
        ):
            # a field of the XDP or TC context: from env when ctx_ok, else the general path
            native, other = self.fn.append_basic_block("ctx.field"), self.fn.append_basic_block("ctx.other")
            b.cbranch(self.ctx_ok, native, other)
            b.position_at_end(native)
            v = self.ctx_field_load(proof.offset)
            if sx:
                v = b.sext(b.trunc(v, I32), I64)
            native_end = b.block
            b.position_at_end(other)
            # not the hook's context: the whole checked access, out of line (a cold path)
            kind = abi.M_LOADSX if sx else abi.M_LOAD
            v_other = self.call_lib(self.mod.checked_function(kind, size),
                                    [self.env, self._pc(pc), addr, c64(0)])
            self.ret_if_fault()
            other_end = b.block
            merge = self.fn.append_basic_block("ctx.merged")
            b.branch(merge)
            b.position_at_end(native_end)
            b.branch(merge)
            b.position_at_end(merge)
            phi = b.phi(I64)
            phi.add_incoming(v, native_end)
            phi.add_incoming(v_other, other_end)
            return phi
        if proof is not None and proof.kind in ("stack", "mapval"):
            return self.widen(
                self.prog_mem(b.load(self.proven_ptr(addr, proof), typ=INT[size], align=1)), size, sx
            )
        if proof is not None and proof.kind == "packet":
            proven, checked = self.fn.append_basic_block("ld.proven"), self.fn.append_basic_block("ld.check")
            done = self.fn.append_basic_block("ld.done")
            b.cbranch(self.ctx_ok, proven, checked).set_weights([1000, 1])
            b.position_at_end(proven)
            v_proven = self.widen(
                self.prog_mem(b.load(self.proven_ptr(addr, proof), typ=INT[size], align=1)), size, sx
            )
            proven_end = b.block
            b.branch(done)
            b.position_at_end(checked)
            kind = abi.M_LOADSX if sx else abi.M_LOAD
            v_checked = self.call_lib(self.mod.checked_function(kind, size),
                                      [self.env, self._pc(pc), addr, c64(0)])
            self.ret_if_fault()
            checked_end = b.block
            b.branch(done)
            b.position_at_end(done)
            phi = b.phi(I64)
            phi.add_incoming(v_proven, proven_end)
            phi.add_incoming(v_checked, checked_end)
            return phi
        if self.mod.compact:  # tier 1: the whole checked access out of line (far less IR to build)
            kind = abi.M_LOADSX if sx else abi.M_LOAD
            self._unchecked = True  # (env FAULT tested by flush)
            return self.call_lib(self.mod.guarded_function(kind, size),
                                 [self.env, self._pc(pc), addr, c64(0)])
        fast, slow, done = (self.fn.append_basic_block(n) for n in ("ld.fast", "ld.slow", "ld.done"))
        ptr = self.check(addr, size, R_READ, fast, slow)
        b.position_at_end(fast)
        v_fast = self.widen(self.prog_mem(b.load(ptr, typ=INT[size], align=1)), size, sx)
        fast_end = b.block
        b.branch(done)
        b.position_at_end(slow)
        v_slow = self.slow_access(pc, addr, size, abi.M_LOADSX if sx else abi.M_LOAD, c64(0))
        slow_end = b.block
        b.branch(done)
        b.position_at_end(done)
        phi = b.phi(I64)
        phi.add_incoming(v_fast, fast_end)
        phi.add_incoming(v_slow, slow_end)
        return phi

    def mem_store(self, pc: int, addr: ir.Value, size: int, value: ir.Value, proof: Proof | None) -> None:
        b = self.b
        v = b.trunc(value, INT[size]) if size < 8 and not self.mod.compact else value
        if proof is not None and proof.kind in ("stack", "mapval"):
            self.prog_mem(b.store(v, self.proven_ptr(addr, proof), align=1))
            return
        if proof is not None and proof.kind == "packet":
            proven, checked = self.fn.append_basic_block("st.proven"), self.fn.append_basic_block("st.check")
            done = self.fn.append_basic_block("st.done")
            b.cbranch(self.ctx_ok, proven, checked).set_weights([1000, 1])
            b.position_at_end(proven)
            self.prog_mem(b.store(v, self.proven_ptr(addr, proof), align=1))
            b.branch(done)
            b.position_at_end(checked)
            self.call_lib(self.mod.checked_function(abi.M_STORE, size), [self.env, self._pc(pc), addr, value])
            self.ret_if_fault()
            b.branch(done)
            b.position_at_end(done)
            return
        if self.mod.compact:  # tier 1 (see mem_load)
            self.call_lib(self.mod.guarded_function(abi.M_STORE, size), [self.env, self._pc(pc), addr, value])
            self._unchecked = True
            return
        fast, slow, done = (self.fn.append_basic_block(n) for n in ("st.fast", "st.slow", "st.done"))
        ptr = self.check(addr, size, R_WRITE, fast, slow)
        b.position_at_end(fast)
        self.prog_mem(b.store(v, ptr, align=1))
        b.branch(done)
        b.position_at_end(slow)
        self.slow_access(pc, addr, size, abi.M_STORE, value)
        b.branch(done)
        b.position_at_end(done)

    def host_ptr(self, pc: int, addr: ir.Value, size: int, write: bool, atomic: bool = False) -> ir.Value:
        """Host pointer of a checked access whose slow path is a fault (atomics, helper buffers)."""
        b = self.b
        fast, slow = self.fn.append_basic_block("acc.fast"), self.fn.append_basic_block("acc.slow")
        ptr = self.check(addr, size, R_WRITE if write else R_READ, fast, slow)
        b.position_at_end(slow)
        if atomic:
            # the interpreter loads, then stores: a failing read is reported as a read
            rd_ok, rd_bad = self.fn.append_basic_block("at.rd"), self.fn.append_basic_block("at.rdbad")
            self.check(addr, size, R_READ, rd_ok, rd_bad)
            b.position_at_end(rd_bad)
            self.fault(abi.F_MEMORY, pc, addr, size, 0)
            b.position_at_end(rd_ok)
            self.fault(abi.F_MEMORY, pc, addr, size, 1)
        else:
            self.fault(abi.F_MEMORY, pc, addr, size, int(write))
        b.position_at_end(fast)
        return ptr

    def check(self, addr: ir.Value, size: int, need: int, ok: ir.Block, bad: ir.Block) -> ir.Value:
        """Branch to `ok` (returning the host pointer valid there) when the region table allows the
        access, else to `bad`. Context regions always go to `bad` (their accesses are converted)."""
        b = self.b
        rid = b.lshr(addr, c64(REGION_SHIFT))
        off = b.and_(addr, c64(U32))
        in_table = b.icmp_unsigned("<", rid, c64(MAX_REGIONS))
        rid_safe = b.select(in_table, rid, c64(0))  # row 0 (null) never allows anything
        row = b.gep(self.table_ptr(), [b.mul(rid_safe, c64(24))], source_etype=I8)
        base = self.meta(b.load(row, typ=I64, align=8))
        lo = b.zext(self.meta(b.load(b.gep(row, [c64(8)], source_etype=I8), typ=I32, align=4)), I64)
        hi = b.zext(self.meta(b.load(b.gep(row, [c64(12)], source_etype=I8), typ=I32, align=4)), I64)
        flags = self.meta(b.load(b.gep(row, [c64(16)], source_etype=I8), typ=I32, align=4))
        flag_ok = b.icmp_unsigned("==", b.and_(flags, c32(need | R_CTX)), c32(need))
        ok_c = b.and_(flag_ok, b.icmp_unsigned("!=", base, c64(0)))
        ok_c = b.and_(ok_c, b.icmp_unsigned("<=", lo, off))
        ok_c = b.and_(ok_c, b.icmp_unsigned("<=", b.add(off, c64(size)), hi))
        ok_c = b.and_(ok_c, in_table)
        b.cbranch(ok_c, ok, bad)
        b.position_at_end(ok)
        ptr = b.gep(b.inttoptr(base, PTR), [off], source_etype=I8)
        return ptr

    def slow_access(self, pc: int, addr: ir.Value, size: int, kind: int, value: ir.Value) -> ir.Value:
        """The slow path of an access: one shared (cold, not inlined) function per kind and size in
        the module, so each access site costs a call, not a copy of the context conversion."""
        fn = self.mod.slow_function(kind, size)
        r = self.call_lib(fn, [self.env, self._pc(pc), addr, value])
        self.ret_if_fault()
        return r

    def _pc(self, pc: int | ir.Value) -> ir.Value:
        return c64(pc) if isinstance(pc, int) else pc

    def slow_access_body(
        self, pc: ir.Value, addr: ir.Value, size: int, kind: int, value: ir.Value
    ) -> ir.Value:
        """Context accesses go to Python (the hook converts them); anything else faults natively."""
        b = self.b
        rid = b.lshr(addr, c64(REGION_SHIFT))
        is_ctx = b.icmp_unsigned("==", rid, c64(CTX))
        pyb, flt, done = (self.fn.append_basic_block(n) for n in ("ctx.py", "mem.fault", "slow.done"))
        b.cbranch(is_ctx, pyb, flt)
        b.position_at_end(flt)
        self.fault(abi.F_MEMORY, pc, addr, size, int(kind == abi.M_STORE))
        b.position_at_end(pyb)
        if (self.mod.prog.xdp or self.mod.prog.tc) and size == 4 and kind in (abi.M_LOAD, abi.M_LOADSX):
            return self.xdp_ctx_dynamic(pc, addr, size, kind, value, done)
        r, _ = self.py_mem(pc, addr, size, kind, value, done)
        b.position_at_end(done)
        return r

    def py_mem(
        self, pc: int, addr: ir.Value, size: int, kind: int, value: ir.Value, done: ir.Block
    ) -> tuple[ir.Value, ir.Block]:
        """Call the Python memory slow path; branches to `done`, returns (value, its block)."""
        b = self.b
        fnp = b.inttoptr(self.env_load(abi.E_PY_MEM), PY_MEM_TYPE.as_pointer())
        r = b.call(fnp, [self.env, self._pc(pc), addr, c64(size), c64(kind), value])
        self.ret_if_fault()
        blk = b.block
        b.branch(done)
        return r, blk

    def ctx_window_ok(self, off: ir.Value | int, size: int) -> ir.Value:
        """The ctx region's window (set by the hook) holds [off, off + size)."""
        b = self.b
        table = b.inttoptr(self.env_load(abi.E_TABLE), PTR)
        row = b.gep(table, [c64(CTX * 24)], source_etype=I8)
        lo = b.zext(self.meta(b.load(b.gep(row, [c64(8)], source_etype=I8), typ=I32, align=4)), I64)
        hi = b.zext(self.meta(b.load(b.gep(row, [c64(12)], source_etype=I8), typ=I32, align=4)), I64)
        off_v = c64(off) if isinstance(off, int) else off
        return b.and_(b.icmp_unsigned("<=", lo, off_v), b.icmp_unsigned("<=", b.add(off_v, c64(size)), hi))

    def xdp_ctx_dynamic(
        self, pc: int, addr: ir.Value, size: int, kind: int, value: ir.Value, done: ir.Block
    ) -> ir.Value:
        """A 4-byte load from the context at a run-time offset: the five fields every XDP program may
        read (TC: TC_CTX_FIELDS when the context is the hook's skb), natively; anything else
        (egress_ifindex, misaligned, other __sk_buff fields) through Python."""
        b = self.b
        off = b.and_(addr, c64(U32))
        py = self.fn.append_basic_block("ctx.pyload")
        merge = self.fn.append_basic_block("ctx.merge")
        native = self.fn.append_basic_block("ctx.native")
        if self.mod.prog.tc:
            b.cbranch(b.icmp_unsigned("!=", self.env_load(abi.E_SKB_CTX), c64(0)), native, py)
        else:
            b.cbranch(self.ctx_window_ok(off, 4), native, py)
        b.position_at_end(native)
        sw = b.switch(off, py)
        incoming = []
        for field_off in TC_CTX_FIELDS if self.mod.prog.tc else (0, 4, 8, 12, 16):
            blk = self.fn.append_basic_block(f"ctx.{field_off}")
            sw.add_case(c64(field_off), blk)
            b.position_at_end(blk)
            v = self.ctx_field_load(field_off)
            if kind == abi.M_LOADSX:
                v = b.sext(b.trunc(v, I32), I64)
            incoming.append((v, b.block))
            b.branch(merge)
        b.position_at_end(py)
        incoming.append(self.py_mem(pc, addr, size, kind, value, merge))
        b.position_at_end(merge)
        phi = b.phi(I64)
        for v, blk in incoming:
            phi.add_incoming(v, blk)
        b.branch(done)
        b.position_at_end(done)
        return phi

    def proven_ptr(self, addr: ir.Value, proof: Proof) -> ir.Value:
        """Host pointer of an access the static pass proved in bounds: no checks, one table read
        (the region's base; for map values the region comes from the pointer: per-CPU copies)."""
        b = self.b
        table = self.table_ptr()
        if proof.kind == "mapval":
            row = b.gep(table, [b.mul(b.lshr(addr, c64(REGION_SHIFT)), c64(24))], source_etype=I8)
        else:
            row = b.gep(table, [c64((STACK if proof.kind == "stack" else PACKET) * 24)], source_etype=I8)
        base = self.meta(b.load(row, typ=I64, align=8))
        return b.gep(b.inttoptr(base, PTR), [b.and_(addr, c64(U32))], source_etype=I8)

    def ctx_field_load(self, off: int) -> ir.Value:
        """A context field read natively: xdp_md's, or for TC programs the __sk_buff's TC_CTX_FIELDS
        (the values SkbContext gives: len = data_end - data, pointers (PACKET << 32) | offset, the
        others as the engine copied them into env)."""
        if not self.mod.prog.tc:
            v = self.xdp_ctx_load(off)
            assert v is not None
            return v
        b = self.b
        if off == 0:
            return b.and_(b.sub(self.env_load(abi.E_DATA_END), self.env_load(abi.E_DATA)), c64(U32))
        if off in TC_ENV_FIELDS:
            return self.env_load(abi.E_SKB_FIELDS + TC_ENV_FIELDS[off])
        word = {76: abi.E_DATA, 80: abi.E_DATA_END, 140: abi.E_META}[off]
        return b.or_(self.env_load(word), c64(PACKET << REGION_SHIFT))

    def xdp_ctx_load(self, off: int) -> ir.Value | None:
        """xdp_md fields natively: data/data_end/data_meta become packet pointers."""
        word = {0: abi.E_DATA, 4: abi.E_DATA_END, 8: abi.E_META, 12: abi.E_IFINDEX, 16: abi.E_RXQ}.get(off)
        if word is None:
            return None
        v = self.env_load(word)
        if off == 8:  # data_meta is data when the frame has no metadata support
            ok = self.b.icmp_unsigned("!=", self.env_load(abi.E_META_OK), c64(0))
            v = self.b.select(ok, v, self.env_load(abi.E_DATA))
        if off <= 8:
            return self.b.or_(v, c64(PACKET << REGION_SHIFT))
        return v


class HelperBody(FuncLowering):
    """A module-level function that shares FuncLowering's vocabulary: slow paths and native helpers.

    Helper functions have the signature `i64 (env, r0, r1, r2, r3, r4, r5, fp, pc)` and return r0;
    slow paths `i64 (env, pc, addr, value)`. A fault stores its record in env and returns 0; callers
    check env FAULT after the call."""

    def __init__(self, mod: ModuleLowering, fn: ir.Function, regs: bool = False):
        self.mod = mod
        self.fn = fn
        self.insns = mod.prog.insns
        self.env = fn.args[0]
        self.entry = fn.append_basic_block("entry")
        self.b = ir.IRBuilder(self.entry)
        self.regs = []
        if regs:
            self.regs = [self.b.alloca(I64, name=f"r{i}") for i in range(6)]
            for i in range(6):
                self.b.store(fn.args[1 + i], self.regs[i])
            self.fp = fn.args[7]
            self.pc_arg = fn.args[8]
        body = self.fn.append_basic_block("body")
        self.b.branch(body)
        self.b.position_at_end(body)


LIBRARY_ANCHOR = "xdpsim.lib.anchor"


def library_module(xdp: bool, tc: bool, natives: NativeHelpers, helper_ids: frozenset[int]) -> ir.Module:
    """The program-independent out-of-line functions of one (xdp, tc) variant in one module: every
    slow and checked access path and every native helper body, built by the same code that builds
    them inside a program's module (a program lowered with `shared=True` declares them). Helper
    bodies are built by lowering a small anchor program that calls each helper once."""
    insns = [Instruction(isa.CALL, 0, 0, 0, hid) for hid in sorted(helper_ids)]
    insns.append(Instruction(isa.EXIT, 0, 0, 0, 0))
    pin = ProgramInput(insns=insns, xdp=xdp, tc=tc, native_helpers=frozenset(helper_ids))
    ml = ModuleLowering(pin, LIBRARY_ANCHOR, natives)
    for kind in (abi.M_LOAD, abi.M_LOADSX, abi.M_STORE):
        for size in (1, 2, 4, 8):
            ml.slow_function(kind, size)
            ml.checked_function(kind, size)
            ml.guarded_function(kind, size)
    for size in (4, 8):
        ml.atomic_ptr_function(size)
    return ml.lower()


# tier 1 with budget regions: what an instruction does to a fault recorded but not tested yet
NEUTRAL, ACCESS, OBSERVABLE = 0, 1, 2


def _fault_kind(ins: Instruction) -> int:
    """ACCESS: a guarded access (may record a fault, runs on); OBSERVABLE: tested before (and after
    whatever may fault: calls, exits, atomics...); NEUTRAL: registers and jumps (see flush)."""
    cls = ins.cls
    if ins.is_lddw or cls in (isa.BPF_ALU, isa.BPF_ALU64):
        return NEUTRAL
    if cls in (isa.BPF_LDX, isa.BPF_ST) or (cls == isa.BPF_STX and ins.mode != isa.BPF_ATOMIC):
        return ACCESS
    if cls in (isa.BPF_JMP, isa.BPF_JMP32) and ins.code not in (isa.BPF_CALL, isa.BPF_EXIT):
        return NEUTRAL
    return OBSERVABLE


def function_name(entry_name: str, start: int) -> str:
    return entry_name if start == 0 else f"{entry_name}.sub{start}"


def exact_name(entry_name: str, start: int) -> str:
    """Tier 1: the exact copy of a function (FuncLowering.budget_regions), compiled when first needed."""
    return function_name(entry_name, start) + ".exact"


def _arith(name: str) -> Callable:
    return lambda fl, ins, ty, a, s: getattr(fl.b, name)(a, s)


ALU_OPS: dict[int, Callable] = {
    isa.BPF_ADD: _arith("add"),
    isa.BPF_SUB: _arith("sub"),
    isa.BPF_MUL: _arith("mul"),
    isa.BPF_OR: _arith("or_"),
    isa.BPF_AND: _arith("and_"),
    isa.BPF_XOR: _arith("xor"),
    isa.BPF_DIV: lambda fl, ins, ty, a, s: fl.alu_divmod(ins, ty, a, s, mod=False),
    isa.BPF_MOD: lambda fl, ins, ty, a, s: fl.alu_divmod(ins, ty, a, s, mod=True),
    isa.BPF_LSH: lambda fl, ins, ty, a, s: fl.alu_shift("shl", ty, a, s),
    isa.BPF_RSH: lambda fl, ins, ty, a, s: fl.alu_shift("lshr", ty, a, s),
    isa.BPF_ARSH: lambda fl, ins, ty, a, s: fl.alu_shift("ashr", ty, a, s),
    isa.BPF_MOV: lambda fl, ins, ty, a, s: fl.alu_mov(ins, ty, a, s),
}

JMP_OPS = {
    isa.BPF_JEQ: (False, "=="),
    isa.BPF_JNE: (False, "!="),
    isa.BPF_JGT: (False, ">"),
    isa.BPF_JGE: (False, ">="),
    isa.BPF_JLT: (False, "<"),
    isa.BPF_JLE: (False, "<="),
    isa.BPF_JSGT: (True, ">"),
    isa.BPF_JSGE: (True, ">="),
    isa.BPF_JSLT: (True, "<"),
    isa.BPF_JSLE: (True, "<="),
}

ATOMIC_RMW = {isa.BPF_ADD: "add", isa.BPF_OR: "or", isa.BPF_AND: "and", isa.BPF_XOR: "xor"}


class NativeHelpers:
    """Interface of natives.py: `lower(fl, pc, hid) -> bool` emits a helper natively (True) or
    declines (False: the Python trampoline is used)."""

    def lower(self, fl: FuncLowering, pc: int, hid: int) -> bool:  # pragma: no cover - interface
        return False
