"""Helpers the JIT runs natively (no Python): tail_call, map lookup/update/delete, ktime, prandom,
smp_processor_id, redirect, redirect_map, xdp_adjust_head/meta/tail, csum_diff, xdp_load/store_bytes.

Each lowering handles the common case and hands anything unusual (a bad map handle, a map type
without a native algorithm, an argument that fails its memory check, fragments, broadcast) to the
helper's Python implementation through the trampoline, so faults and odd return values are exactly
the interpreter's. Map operations call maps/native.py's functions (one algorithm for every engine);
their addresses are registered as process symbols and resolved when object code is loaded.

bpf_get_prandom_u32 is the Runtime's `random.Random` (MT19937, `getrandbits(32)` = one tempered
word), advanced natively over a copy of its state (`PrandomSync`): the first call of a run goes
through Python, which copies the state out; the engine copies it back after the run (and before any
Python helper), so the interpreter and the JIT draw the same sequence from the same seed.
"""

from __future__ import annotations

import errno as _errno
from typing import TYPE_CHECKING, Any

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np

from ..maps import native as mnat
from ..memory import CTX, MAP_HANDLES, PACKET, R_READ, R_WRITE, REGION_SHIFT
from ..spec import MapType
from . import abi
from .lower import FN_TYPE, I1, I8, I32, I64, PTR, U32, VOID, NativeHelpers, Proof, c64

if TYPE_CHECKING:
    from .lower import FuncLowering

H_MAP_LOOKUP, H_MAP_UPDATE, H_MAP_DELETE = 1, 2, 3
H_KTIME, H_PRANDOM, H_SMP_ID, H_TAIL_CALL = 5, 7, 8, 12
H_REDIRECT, H_CSUM_DIFF, H_ADJUST_HEAD, H_REDIRECT_MAP, H_ADJUST_META, H_ADJUST_TAIL = 23, 28, 44, 51, 54, 65
H_LOAD_BYTES, H_STORE_BYTES = 189, 190

NATIVE_HELPER_IDS = frozenset(
    {
        H_MAP_LOOKUP,
        H_MAP_UPDATE,
        H_MAP_DELETE,
        H_KTIME,
        H_PRANDOM,
        H_SMP_ID,
        H_TAIL_CALL,
        H_REDIRECT,
        H_CSUM_DIFF,
        H_ADJUST_HEAD,
        H_REDIRECT_MAP,
        H_ADJUST_META,
        H_ADJUST_TAIL,
        H_LOAD_BYTES,
        H_STORE_BYTES,
    }
)

# map types whose program operations are the native algorithms (maps/native.py K_ARRAY, K_HASH)
NATIVE_MAP_TYPES = (
    MapType.ARRAY,
    MapType.PERCPU_ARRAY,
    MapType.HASH,
    MapType.PERCPU_HASH,
    MapType.LRU_HASH,
    MapType.LRU_PERCPU_HASH,
)
SPARSE_REDIRECT_TYPES = (MapType.DEVMAP, MapType.CPUMAP, MapType.XSKMAP)

XDP_ABORTED, XDP_REDIRECT = 0, 4
BPF_F_BROADCAST = 1 << 3
BPF_F_EXCLUDE_INGRESS = 1 << 4
XDP_FRAME_STRUCT_SIZE = 40
ETH_HLEN = 14
XDP_META_MAX = 255
ENOTSUPP = 524
MAX_CSUM_DIFF = 512

MT_N, MT_M = 624, 397


class PrandomSync:
    """The Runtime's Mersenne Twister state as u32 words (624 + index) that native code advances."""

    def __init__(self, runtime: Any):
        self.runtime = runtime
        self.words = np.zeros(MT_N + 2, dtype=np.uint32)  # [624 state][index][loaded flag]

    @property
    def loaded(self) -> bool:
        return bool(self.words[MT_N + 1])

    def load(self) -> None:
        """Copy the Python generator's state out (native code continues from it)."""
        version, internal, gauss = self.runtime.rng.getstate()
        self.words[: MT_N + 1] = internal
        self.words[MT_N + 1] = 1
        self._gauss = gauss

    def from_python(self) -> None:
        """Forget the native copy: the Python generator is the truth until native code loads it."""
        self.words[MT_N + 1] = 0

    def to_python(self) -> None:
        if self.loaded:
            internal = tuple(int(x) for x in self.words[: MT_N + 1])
            self.runtime.rng.setstate((3, internal, self._gauss))
            self.words[MT_N + 1] = 0


def _declare(mod: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    g = mod.globals.get(name)
    if g is not None:
        return g
    return ir.Function(mod, ir.FunctionType(ret, args), name)


class Natives(NativeHelpers):
    """Lowers the helpers in NATIVE_HELPER_IDS (see the module docstring)."""

    def __init__(self) -> None:
        n = mnat.native()
        for name in ("xdpsim_map_lookup", "xdpsim_map_update", "xdpsim_map_delete"):
            llvm.add_symbol(name, n.addresses[name])

    def lower(self, fl: FuncLowering, pc: int, hid: int) -> bool:
        fn = {
            H_TAIL_CALL: self.tail_call,
            H_MAP_LOOKUP: self.map_lookup,
            H_MAP_UPDATE: self.map_update,
            H_MAP_DELETE: self.map_delete,
            H_KTIME: self.ktime,
            H_PRANDOM: self.prandom,
            H_SMP_ID: self.smp_id,
            H_REDIRECT: self.redirect,
            H_REDIRECT_MAP: self.redirect_map,
            H_ADJUST_HEAD: self.adjust_head,
            H_ADJUST_META: self.adjust_meta,
            H_ADJUST_TAIL: self.adjust_tail,
            H_CSUM_DIFF: self.csum_diff,
            H_LOAD_BYTES: self.load_bytes,
            H_STORE_BYTES: self.store_bytes,
        }.get(hid)
        if fn is None:
            return False
        if hid == H_KTIME and fl.mod.prog.conformance:
            return False  # the conformance suite's helper 5 is "return r1"
        if hid == H_REDIRECT and not fl.mod.prog.xdp:
            return False  # TC's bpf_redirect returns TC_ACT_REDIRECT (helpers/tc.py), not XDP_REDIRECT
        if hid in (H_TAIL_CALL, H_KTIME, H_SMP_ID):  # a guaranteed tail call / one load: inline
            self.count(fl, hid)
            fn(fl, pc)
            return True
        proof = fl.mod.prog.proofs.get(pc)
        if hid == H_MAP_LOOKUP and proof is not None and proof.kind == "maplookup":
            self.count(fl, hid)
            self.map_lookup_proven(fl, pc, proof.offset)
            return True
        # the others: one function per helper in the module, called from every site
        helper = self.function(fl.mod, hid, fn)
        args = [fl.env] + [fl.get(r) for r in range(6)] + [fl.fp, c64(pc)]
        r0 = fl.call_lib(helper, args)
        fl.ret_if_fault()
        fl.put(0, r0)
        return True

    def function(self, mod: Any, hid: int, emit: Any) -> ir.Function:
        from .lower import HelperBody

        name = f"xdpsim.helper.{hid}"
        f = mod.module.globals.get(name)
        if f is None:
            f = ir.Function(mod.module, ir.FunctionType(I64, [PTR] + [I64] * 8), name)
            if mod.shared:  # (helper bodies come from the library module: declared, on first use)
                return f
            f.linkage = "internal"
            body = HelperBody(mod, f, regs=True)
            self.count(body, hid)  # (in the body, not at every call site: less IR per call)
            emit(body, body.pc_arg)
            body.b.ret(body.get(0))
        return f

    # ---------------------------------------------------------------- shared pieces

    def count(self, fl: FuncLowering, hid: int) -> None:
        b = fl.b
        counts = b.inttoptr(fl.env_load(abi.E_HELPER_COUNTS), PTR)
        p = b.gep(counts, [c64(hid)], source_etype=I64)
        fl.meta(b.store(b.add(fl.meta(b.load(p, typ=I64)), c64(1)), p))

    def uncount(self, fl: FuncLowering, hid: int) -> None:
        """The Python fallback counts the call itself."""
        b = fl.b
        counts = b.inttoptr(fl.env_load(abi.E_HELPER_COUNTS), PTR)
        p = b.gep(counts, [c64(hid)], source_etype=I64)
        fl.meta(b.store(b.sub(fl.meta(b.load(p, typ=I64)), c64(1)), p))

    def map_of(
        self, fl: FuncLowering, handle: ir.Value, types: tuple[int, ...]
    ) -> tuple[ir.Value, ir.Value, ir.Value]:
        """(ok, map id, descriptor pointer): ok when `handle` is a map handle of one of `types`."""
        b = fl.b
        mid = b.and_(handle, c64(U32))
        ok = b.and_(
            b.icmp_unsigned("==", b.lshr(handle, c64(REGION_SHIFT)), c64(MAP_HANDLES)),
            b.icmp_unsigned("<", mid, fl.env_load(abi.E_NMAPS)),
        )
        safe = b.select(ok, mid, c64(0))
        types_p = b.inttoptr(fl.env_load(abi.E_MAP_TYPES), PTR)
        mtype = fl.meta(b.load(b.gep(types_p, [safe], source_etype=I64), typ=I64))
        tok = ir.Constant(I1, 0)
        for t in types:
            tok = b.or_(tok, b.icmp_unsigned("==", mtype, c64(int(t))))
        ok = b.and_(ok, tok)
        maps_p = b.inttoptr(fl.env_load(abi.E_MAPS), PTR)
        desc = b.inttoptr(fl.meta(b.load(b.gep(maps_p, [safe], source_etype=I64), typ=I64)), PTR)
        return ok, mid, desc

    def dw(self, fl: FuncLowering, desc: ir.Value, word: int) -> ir.Value:
        return fl.meta(fl.b.load(fl.b.gep(desc, [c64(8 * word)], source_etype=I8), typ=I64, align=8))

    def probe(
        self, fl: FuncLowering, addr: ir.Value, size: ir.Value | int, need: int
    ) -> tuple[ir.Value, ir.Value]:
        """(ok, host pointer) for a helper's memory argument, without faulting (the Python fallback
        raises the exact fault when ok is false)."""
        b = fl.b
        size_v = c64(size) if isinstance(size, int) else size
        rid = b.lshr(addr, c64(REGION_SHIFT))
        off = b.and_(addr, c64(U32))
        in_table = b.icmp_unsigned("<", rid, c64(4096))
        rid_safe = b.select(in_table, rid, c64(0))
        table = b.inttoptr(fl.env_load(abi.E_TABLE), PTR)
        row = b.gep(table, [b.mul(rid_safe, c64(24))], source_etype=I8)
        base = fl.meta(b.load(row, typ=I64, align=8))
        lo = b.zext(fl.meta(b.load(b.gep(row, [c64(8)], source_etype=I8), typ=I32, align=4)), I64)
        hi = b.zext(fl.meta(b.load(b.gep(row, [c64(12)], source_etype=I8), typ=I32, align=4)), I64)
        flags = fl.meta(b.load(b.gep(row, [c64(16)], source_etype=I8), typ=I32, align=4))
        from ..memory import R_CTX

        ok = b.icmp_unsigned("==", b.and_(flags, ir.Constant(I32, need | R_CTX)), ir.Constant(I32, need))
        ok = b.and_(ok, b.icmp_unsigned("!=", base, c64(0)))
        ok = b.and_(ok, b.icmp_unsigned("<=", lo, off))
        ok = b.and_(ok, b.icmp_unsigned("<=", b.add(off, size_v), hi))
        ok = b.and_(ok, in_table)
        return ok, b.gep(b.inttoptr(base, PTR), [off], source_etype=I8)

    def with_fallback(self, fl: FuncLowering, pc: int, hid: int, ok: ir.Value, native) -> None:
        """if (ok) r0 = native() else r0 = python helper; `native` emits code and returns r0."""
        b = fl.b
        fast, slow, done = (fl.fn.append_basic_block(n) for n in ("h.native", "h.python", "h.done"))
        b.cbranch(ok, fast, slow)
        b.position_at_end(slow)
        self.uncount(fl, hid)
        fl.call_py_helper(pc, hid)
        b.branch(done)
        b.position_at_end(fast)
        r0 = native()
        if r0 is not None:
            fl.put(0, r0)
        if not b.block.is_terminated:
            b.branch(done)
        b.position_at_end(done)

    def packet_ok(self, fl: FuncLowering) -> ir.Value:
        """r1 is the context of a run with a linear packet (no fragments)."""
        b = fl.b
        r1 = fl.get(1)
        ok = b.icmp_unsigned("==", b.lshr(r1, c64(REGION_SHIFT)), c64(CTX))
        ok = b.and_(ok, b.icmp_unsigned("!=", fl.env_load(abi.E_FRAME), c64(0)))
        return b.and_(ok, b.icmp_unsigned("==", fl.env_load(abi.E_FRAGS), c64(0)))

    def set_window(self, fl: FuncLowering) -> None:
        """The packet region's window after an adjust: [data_meta, data_end)."""
        b = fl.b
        meta = b.select(
            b.icmp_unsigned("!=", fl.env_load(abi.E_META_OK), c64(0)),
            fl.env_load(abi.E_META),
            fl.env_load(abi.E_DATA),
        )
        table = b.inttoptr(fl.env_load(abi.E_TABLE), PTR)
        # the batch loop zeroes what a packet could have dirtied: track the window's extremes
        lo, hi, de = fl.env_load(abi.E_DIRTY_LO), fl.env_load(abi.E_DIRTY_HI), fl.env_load(abi.E_DATA_END)
        fl.env_store(abi.E_DIRTY_LO, b.select(b.icmp_unsigned("<", meta, lo), meta, lo))
        fl.env_store(abi.E_DIRTY_HI, b.select(b.icmp_unsigned(">", de, hi), de, hi))
        b.store(b.trunc(meta, I32), b.gep(table, [c64(PACKET * 24 + 8)], source_etype=I8), align=4)
        b.store(
            b.trunc(fl.env_load(abi.E_DATA_END), I32),
            b.gep(table, [c64(PACKET * 24 + 12)], source_etype=I8),
            align=4,
        )

    def s32(self, fl: FuncLowering, v: ir.Value) -> ir.Value:
        return fl.b.sext(fl.b.trunc(v, I32), I64)

    def intrinsic(self, fl: FuncLowering, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        return _declare(fl.mod.module, name, ret, args)

    # ---------------------------------------------------------------- tail call

    def tail_call(self, fl: FuncLowering, pc: int) -> None:
        b = fl.b
        proof = fl.mod.prog.proofs.get(pc)
        fall = fl.fn.append_basic_block("tc.fall")
        if proof is not None and proof.kind == "tailcall":
            # verify.py proved r2 the handle of prog array `proof.offset` on every path: no handle or
            # map type checks (what the kernel's JIT leaves out for a map its verifier knows)
            maps_p = b.inttoptr(fl.env_load(abi.E_MAPS), PTR)
            desc_p = b.gep(maps_p, [c64(proof.offset)], source_etype=I64)
            desc = b.inttoptr(fl.meta(b.load(desc_p, typ=I64)), PTR)
        else:
            ok, mid, desc = self.map_of(fl, fl.get(2), (MapType.PROG_ARRAY,))
            bad, good = fl.fn.append_basic_block("tc.bad"), fl.fn.append_basic_block("tc.map")
            b.cbranch(ok, good, bad)
            b.position_at_end(bad)
            # (counted, as the interpreter counts the call before it faults: the trampoline does not)
            fl.call_py_helper(pc, H_TAIL_CALL)  # raises the interpreter's fault
            fl.ret(c64(0))
            b.position_at_end(good)
        idx = b.and_(fl.get(3), c64(U32))
        in_range = b.icmp_unsigned("<", idx, self.dw(fl, desc, mnat.W_MAX_ENTRIES))
        idx_safe = b.select(in_range, idx, c64(0))
        table = b.inttoptr(self.dw(fl, desc, mnat.W_TABLE), PTR)
        pid = b.sext(b.load(b.gep(table, [idx_safe], source_etype=I32), typ=I32), I64)
        tcc = fl.env_load(abi.E_TAIL_CALLS)
        go = b.and_(in_range, b.icmp_signed(">=", pid, c64(0)))
        go = b.and_(go, b.icmp_unsigned("<", tcc, c64(abi.MAX_TAIL_CALLS)))
        jump, other = fl.fn.append_basic_block("tc.jump"), fl.fn.append_basic_block("tc.nonative")
        check = fl.fn.append_basic_block("tc.check")
        b.cbranch(go, check, fall)  # (the entry table is read only for a call that happens)
        b.position_at_end(check)
        known = b.icmp_unsigned("<", pid, fl.env_load(abi.E_NPROGS))
        pid_safe = b.select(known, pid, c64(0))
        progs = b.inttoptr(fl.env_load(abi.E_PROGS), PTR)
        entry = b.load(b.gep(progs, [pid_safe], source_etype=I64), typ=I64)
        native = b.and_(known, b.icmp_unsigned("!=", entry, c64(0)))
        b.cbranch(native, jump, other)
        # a target without native code (the JIT declined it): Python says why, as a fault
        b.position_at_end(other)
        self.uncount(fl, H_TAIL_CALL)
        fl.call_py_helper(pc, H_TAIL_CALL)
        fl.ret(c64(0))
        b.position_at_end(jump)
        fl.env_store(abi.E_TAIL_CALLS, b.add(tcc, c64(1)))
        fl.env_store(abi.E_CUR_PROG, pid)
        target = b.inttoptr(entry, FN_TYPE.as_pointer())
        args = [fl.env] + [fl.get(r) for r in range(1, 6)] + [fl.fp]
        fl.pass_entry_regs()
        fl.sync_budget_out()  # the target starts from env BUDGET; nothing may follow a musttail call
        r = b.call(target, args, tail="musttail")
        b.ret(r)
        b.position_at_end(fall)  # fall through: r0 unchanged

    # ---------------------------------------------------------------- maps

    def map_lookup(self, fl: FuncLowering, pc: int) -> None:
        b = fl.b
        ok, mid, desc = self.map_of(fl, fl.get(1), NATIVE_MAP_TYPES)
        ksize = self.dw(fl, desc, mnat.W_KEY_SIZE)
        kok, kptr = self.probe(fl, fl.get(2), ksize, R_READ)
        lookup = _declare(fl.mod.module, "xdpsim_map_lookup", I64, [PTR, PTR, I64])

        def native() -> ir.Value:
            # arrays inline: ((VALUES_RID + cpu if per-CPU) << 32) | index * stride
            is_array = b.icmp_unsigned("==", self.dw(fl, desc, mnat.W_KIND), c64(mnat.K_ARRAY))
            arr, other, done = (fl.fn.append_basic_block(n) for n in ("ml.array", "ml.call", "ml.done"))
            b.cbranch(is_array, arr, other)
            b.position_at_end(arr)
            idx = b.zext(fl.prog_mem(b.load(kptr, typ=I32, align=1)), I64)
            percpu = b.icmp_unsigned(
                "!=", b.and_(self.dw(fl, desc, mnat.W_FLAGS), c64(mnat.F_PERCPU)), c64(0)
            )
            rid = b.add(
                self.dw(fl, desc, mnat.W_VALUES_RID), b.select(percpu, fl.env_load(abi.E_CPU), c64(0))
            )
            addr = b.or_(b.shl(rid, c64(REGION_SHIFT)), b.mul(idx, self.dw(fl, desc, mnat.W_VALUE_STRIDE)))
            v_arr = b.select(b.icmp_unsigned("<", idx, self.dw(fl, desc, mnat.W_MAX_ENTRIES)), addr, c64(0))
            arr_end = b.block
            b.branch(done)
            b.position_at_end(other)
            v_call = b.call(lookup, [desc, kptr, fl.env_load(abi.E_CPU)])
            other_end = b.block
            b.branch(done)
            b.position_at_end(done)
            phi = b.phi(I64)
            phi.add_incoming(v_arr, arr_end)
            phi.add_incoming(v_call, other_end)
            return phi

        self.with_fallback(fl, pc, H_MAP_LOOKUP, b.and_(ok, kok), native)

    def map_lookup_proven(self, fl: FuncLowering, pc: int, fact: int) -> None:
        """bpf_map_lookup_elem where verify.py proved r1 the handle of map `fact >> 10` (a map with a
        native lookup) and r2 a pointer into this function's frame with `fact & 1023` bytes from it to
        the frame's top (so an array's 4-byte key needs no check): inline, no handle or key checks."""
        b = fl.b
        mid, room = fact >> 10, fact & 1023
        maps_p = b.inttoptr(fl.env_load(abi.E_MAPS), PTR)
        desc = b.inttoptr(fl.meta(b.load(b.gep(maps_p, [c64(mid)], source_etype=I64), typ=I64)), PTR)
        kptr = fl.proven_ptr(fl.get(2), Proof("stack"))
        is_array = b.icmp_unsigned("==", self.dw(fl, desc, mnat.W_KIND), c64(mnat.K_ARRAY))
        arr, other, done = (fl.fn.append_basic_block(n) for n in ("mlp.array", "mlp.call", "mlp.done"))
        b.cbranch(is_array, arr, other)
        b.position_at_end(arr)
        idx = b.zext(fl.prog_mem(b.load(kptr, typ=I32, align=1)), I64)
        percpu = b.icmp_unsigned("!=", b.and_(self.dw(fl, desc, mnat.W_FLAGS), c64(mnat.F_PERCPU)), c64(0))
        rid = b.add(self.dw(fl, desc, mnat.W_VALUES_RID), b.select(percpu, fl.env_load(abi.E_CPU), c64(0)))
        addr = b.or_(b.shl(rid, c64(REGION_SHIFT)), b.mul(idx, self.dw(fl, desc, mnat.W_VALUE_STRIDE)))
        v_arr = b.select(b.icmp_unsigned("<", idx, self.dw(fl, desc, mnat.W_MAX_ENTRIES)), addr, c64(0))
        arr_end = b.block
        b.branch(done)
        # hash-like maps: the native algorithm; a key longer than the room left in the frame goes to
        # Python (which reports the interpreter's fault)
        b.position_at_end(other)
        native, python = fl.fn.append_basic_block("mlp.native"), fl.fn.append_basic_block("mlp.python")
        b.cbranch(b.icmp_unsigned("<=", self.dw(fl, desc, mnat.W_KEY_SIZE), c64(room)), native, python)
        b.position_at_end(native)
        lookup = _declare(fl.mod.module, "xdpsim_map_lookup", I64, [PTR, PTR, I64])
        v_call = b.call(lookup, [desc, kptr, fl.env_load(abi.E_CPU)])
        call_end = b.block
        b.branch(done)
        b.position_at_end(python)
        self.uncount(fl, H_MAP_LOOKUP)
        fl.call_py_helper(pc, H_MAP_LOOKUP)
        v_py = fl.get(0)
        py_end = b.block
        b.branch(done)
        b.position_at_end(done)
        phi = b.phi(I64)
        phi.add_incoming(v_arr, arr_end)
        phi.add_incoming(v_call, call_end)
        phi.add_incoming(v_py, py_end)
        fl.put(0, phi)

    def map_update(self, fl: FuncLowering, pc: int) -> None:
        b = fl.b
        ok, mid, desc = self.map_of(fl, fl.get(1), NATIVE_MAP_TYPES)
        kok, kptr = self.probe(fl, fl.get(2), self.dw(fl, desc, mnat.W_KEY_SIZE), R_READ)
        vok, vptr = self.probe(fl, fl.get(3), self.dw(fl, desc, mnat.W_VALUE_SIZE), R_READ)
        # frozen maps (.rodata) answer -EPERM in Python: the engine marks them non-native
        update = _declare(fl.mod.module, "xdpsim_map_update", I64, [PTR, PTR, PTR, I64, I64])
        all_ok = b.and_(b.and_(ok, kok), vok)
        self.with_fallback(
            fl,
            pc,
            H_MAP_UPDATE,
            all_ok,
            lambda: b.call(update, [desc, kptr, vptr, fl.get(4), fl.env_load(abi.E_CPU)]),
        )

    def map_delete(self, fl: FuncLowering, pc: int) -> None:
        b = fl.b
        ok, mid, desc = self.map_of(fl, fl.get(1), NATIVE_MAP_TYPES)
        kok, kptr = self.probe(fl, fl.get(2), self.dw(fl, desc, mnat.W_KEY_SIZE), R_READ)
        delete = _declare(fl.mod.module, "xdpsim_map_delete", I64, [PTR, PTR])
        self.with_fallback(fl, pc, H_MAP_DELETE, b.and_(ok, kok), lambda: b.call(delete, [desc, kptr]))

    # ---------------------------------------------------------------- time, cpu, random

    def ktime(self, fl: FuncLowering, pc: int) -> None:
        fl.put(0, fl.env_load(abi.E_NOW_NS))

    def smp_id(self, fl: FuncLowering, pc: int) -> None:
        fl.put(0, fl.env_load(abi.E_CPU))

    def prandom(self, fl: FuncLowering, pc: int) -> None:
        b = fl.b
        st = b.inttoptr(fl.env_load(abi.E_PRANDOM_STATE), PTR)
        loaded = b.load(b.gep(st, [c64(MT_N + 1)], source_etype=I32), typ=I32)
        ok = b.icmp_unsigned("!=", loaded, ir.Constant(I32, 0))
        gen = self._mt_function(fl.mod.module)
        self.with_fallback(fl, pc, H_PRANDOM, ok, lambda: b.zext(b.call(gen, [st]), I64))

    def _mt_function(self, module: ir.Module) -> ir.Function:
        """u32 genrand(u32 *state): CPython's genrand_uint32 (MT19937) on [624 words][index]."""
        name = "xdpsim_mt_next"
        if name in module.globals:
            return module.globals[name]
        f = ir.Function(module, ir.FunctionType(I32, [PTR]), name)
        f.linkage = "internal"
        st = f.args[0]
        b = ir.IRBuilder(f.append_basic_block("entry"))
        idx_p = b.gep(st, [c64(MT_N)], source_etype=I32)
        idx = b.load(idx_p, typ=I32)
        need = b.icmp_unsigned(">=", idx, ir.Constant(I32, MT_N))
        twist, body, out = (
            f.append_basic_block("twist"),
            f.append_basic_block("loop"),
            f.append_basic_block("out"),
        )
        b.cbranch(need, twist, out)
        b.position_at_end(twist)
        b.branch(body)
        b.position_at_end(body)
        kk = b.phi(I32)
        kk.add_incoming(ir.Constant(I32, 0), twist)

        def word(i: ir.Value) -> ir.Value:
            return b.load(b.gep(st, [b.zext(i, I64)], source_etype=I32), typ=I32)

        def wrap(i: ir.Value) -> ir.Value:
            return b.urem(i, ir.Constant(I32, MT_N))

        y = b.or_(
            b.and_(word(kk), ir.Constant(I32, 0x80000000)),
            b.and_(word(wrap(b.add(kk, ir.Constant(I32, 1)))), ir.Constant(I32, 0x7FFFFFFF)),
        )
        mag = b.select(
            b.icmp_unsigned("!=", b.and_(y, ir.Constant(I32, 1)), ir.Constant(I32, 0)),
            ir.Constant(I32, 0x9908B0DF),
            ir.Constant(I32, 0),
        )
        nv = b.xor(b.xor(word(wrap(b.add(kk, ir.Constant(I32, MT_M)))), b.lshr(y, ir.Constant(I32, 1))), mag)
        b.store(nv, b.gep(st, [b.zext(kk, I64)], source_etype=I32))
        nk = b.add(kk, ir.Constant(I32, 1))
        kk.add_incoming(nk, body)
        b.cbranch(b.icmp_unsigned("<", nk, ir.Constant(I32, MT_N)), body, out)
        b.position_at_end(out)
        i = b.phi(I32)
        i.add_incoming(idx, f.entry_basic_block)
        i.add_incoming(ir.Constant(I32, 0), body)
        y = word(i)
        b.store(b.add(i, ir.Constant(I32, 1)), idx_p)
        y = b.xor(y, b.lshr(y, ir.Constant(I32, 11)))
        y = b.xor(y, b.and_(b.shl(y, ir.Constant(I32, 7)), ir.Constant(I32, 0x9D2C5680)))
        y = b.xor(y, b.and_(b.shl(y, ir.Constant(I32, 15)), ir.Constant(I32, 0xEFC60000)))
        y = b.xor(y, b.lshr(y, ir.Constant(I32, 18)))
        b.ret(y)
        return f

    # ---------------------------------------------------------------- redirect

    def redirect(self, fl: FuncLowering, pc: int) -> None:
        b = fl.b
        flags = fl.get(2)
        with b.if_else(b.icmp_unsigned("!=", flags, c64(0))) as (then, other):
            with then:
                fl.put(0, c64(XDP_ABORTED))
            with other:
                fl.env_store(abi.E_REDIR_KIND, c64(abi.REDIR_IFINDEX))
                fl.env_store(abi.E_REDIR_INDEX, b.and_(fl.get(1), c64(U32)))
                fl.put(0, c64(XDP_REDIRECT))

    def redirect_map(self, fl: FuncLowering, pc: int) -> None:
        b = fl.b
        ok, mid, desc = self.map_of(fl, fl.get(1), SPARSE_REDIRECT_TYPES)
        flags = fl.get(3)
        # broadcast and devmap_hash go to Python; the allowed-flags check depends on the type
        ok = b.and_(ok, b.icmp_unsigned("==", b.and_(flags, c64(BPF_F_BROADCAST)), c64(0)))

        def native() -> ir.Value:
            types_p = b.inttoptr(fl.env_load(abi.E_MAP_TYPES), PTR)
            mtype = b.load(b.gep(types_p, [mid], source_etype=I64), typ=I64)
            is_dev = b.icmp_unsigned("==", mtype, c64(int(MapType.DEVMAP)))
            allowed = b.select(is_dev, c64(3 | BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS), c64(3))
            res = fl.tmp()
            bad_flags = b.icmp_unsigned("!=", b.and_(flags, b.not_(allowed)), c64(0))
            with b.if_else(bad_flags) as (then, other):
                with then:
                    b.store(c64(XDP_ABORTED), res)
                with other:
                    key = b.and_(fl.get(2), c64(U32))
                    in_range = b.icmp_unsigned("<", key, self.dw(fl, desc, mnat.W_MAX_ENTRIES))
                    table = b.inttoptr(self.dw(fl, desc, mnat.W_TABLE), PTR)
                    slot = b.load(b.gep(table, [b.select(in_range, key, c64(0))], source_etype=I32), typ=I32)
                    hit = b.and_(in_range, b.icmp_signed(">=", slot, ir.Constant(I32, 0)))
                    fl.env_store(abi.E_REDIR_KIND, b.select(hit, c64(abi.REDIR_MAP), c64(abi.REDIR_CLEAR)))
                    fl.env_store(abi.E_REDIR_MAP, mid)
                    fl.env_store(abi.E_REDIR_INDEX, key)
                    b.store(b.select(hit, c64(XDP_REDIRECT), b.and_(flags, c64(3))), res)
            return b.load(res)

        self.with_fallback(fl, pc, H_REDIRECT_MAP, ok, native)

    # ---------------------------------------------------------------- XDP packet

    def _delta(self, fl: FuncLowering) -> ir.Value:
        return self.s32(fl, fl.get(2))

    def adjust_head(self, fl: FuncLowering, pc: int) -> None:
        b = fl.b
        memmove = _declare(fl.mod.module, "llvm.memmove.p0.p0.i64", VOID, [PTR, PTR, I64, I1])

        def native() -> ir.Value:
            delta = self._delta(fl)
            data, data_end, meta = (
                fl.env_load(abi.E_DATA),
                fl.env_load(abi.E_DATA_END),
                fl.env_load(abi.E_META),
            )
            meta_ok = b.icmp_unsigned("!=", fl.env_load(abi.E_META_OK), c64(0))
            metalen = b.select(meta_ok, b.sub(data, meta), c64(0))
            nd = b.add(data, delta)
            bad = b.or_(
                b.icmp_signed("<", nd, b.add(c64(XDP_FRAME_STRUCT_SIZE), metalen)),
                b.icmp_signed(">", nd, b.sub(data_end, c64(ETH_HLEN))),
            )
            res = fl.tmp()
            with b.if_else(bad) as (then, other):
                with then:
                    b.store(c64(-_errno.EINVAL), res)
                with other:
                    frame = b.inttoptr(fl.env_load(abi.E_FRAME), PTR)
                    src = b.gep(frame, [meta], source_etype=I8)
                    dst = b.gep(frame, [b.add(meta, delta)], source_etype=I8)
                    b.call(memmove, [dst, src, metalen, ir.Constant(I1, 0)])
                    fl.env_store(abi.E_META, b.add(meta, delta))
                    fl.env_store(abi.E_DATA, nd)
                    self.set_window(fl)
                    b.store(c64(0), res)
            return b.load(res)

        self.with_fallback(fl, pc, H_ADJUST_HEAD, self.packet_ok(fl), native)

    def adjust_meta(self, fl: FuncLowering, pc: int) -> None:
        b = fl.b

        def native() -> ir.Value:
            delta = self._delta(fl)
            data, meta = fl.env_load(abi.E_DATA), fl.env_load(abi.E_META)
            res = fl.tmp()
            nm = b.add(meta, delta)
            metalen = b.sub(data, nm)
            range_bad = b.or_(
                b.icmp_signed("<", nm, c64(XDP_FRAME_STRUCT_SIZE)), b.icmp_signed(">", nm, data)
            )
            len_bad = b.or_(
                b.icmp_unsigned("!=", b.and_(metalen, c64(3)), c64(0)),
                b.icmp_signed(">", metalen, c64(XDP_META_MAX)),
            )
            unsupported = b.icmp_unsigned("==", fl.env_load(abi.E_META_OK), c64(0))
            b.store(c64(0), res)
            with b.if_else(unsupported) as (then, other):
                with then:
                    b.store(c64(-ENOTSUPP), res)
                with other:
                    with b.if_else(range_bad) as (t2, o2):
                        with t2:
                            b.store(c64(-_errno.EINVAL), res)
                        with o2:
                            with b.if_else(len_bad) as (t3, o3):
                                with t3:
                                    b.store(c64(-_errno.EACCES), res)
                                with o3:
                                    fl.env_store(abi.E_META, nm)
                                    self.set_window(fl)
            return b.load(res)

        self.with_fallback(fl, pc, H_ADJUST_META, self.packet_ok(fl), native)

    def adjust_tail(self, fl: FuncLowering, pc: int) -> None:
        b = fl.b
        memset = _declare(fl.mod.module, "llvm.memset.p0.i64", VOID, [PTR, I8, I64, I1])

        def native() -> ir.Value:
            delta = self._delta(fl)
            data, data_end = fl.env_load(abi.E_DATA), fl.env_load(abi.E_DATA_END)
            nde = b.add(data_end, delta)
            hard_end = b.sub(fl.env_load(abi.E_FRAME_SIZE), fl.env_load(abi.E_TAILROOM))
            bad = b.or_(
                b.icmp_signed(">", nde, hard_end), b.icmp_signed("<", nde, b.add(data, c64(ETH_HLEN)))
            )
            res = fl.tmp()
            with b.if_else(bad) as (then, other):
                with then:
                    b.store(c64(-_errno.EINVAL), res)
                with other:
                    with b.if_then(b.icmp_signed(">", delta, c64(0))):
                        frame = b.inttoptr(fl.env_load(abi.E_FRAME), PTR)
                        b.call(
                            memset,
                            [
                                b.gep(frame, [data_end], source_etype=I8),
                                ir.Constant(I8, 0),
                                delta,
                                ir.Constant(I1, 0),
                            ],
                        )
                    fl.env_store(abi.E_DATA_END, nde)
                    self.set_window(fl)
                    b.store(c64(0), res)
            return b.load(res)

        self.with_fallback(fl, pc, H_ADJUST_TAIL, self.packet_ok(fl), native)

    def _span_err(self, fl: FuncLowering, off: ir.Value, n: ir.Value) -> ir.Value:
        """0, -EFAULT or -EINVAL (helpers/xdp.py _span) for a linear packet."""
        b = fl.b
        plen = b.sub(fl.env_load(abi.E_DATA_END), fl.env_load(abi.E_DATA))
        big = b.or_(b.icmp_unsigned(">", off, c64(0xFFFF)), b.icmp_unsigned(">", n, c64(0xFFFF)))
        past = b.icmp_unsigned(">", b.add(off, n), plen)
        return b.select(big, c64(-_errno.EFAULT), b.select(past, c64(-_errno.EINVAL), c64(0)))

    def _bytes(self, fl: FuncLowering, pc: int, hid: int, store: bool) -> None:
        b = fl.b
        memcpy = fl.mod.memcpy
        off = b.and_(fl.get(2), c64(U32))
        n = b.and_(fl.get(4), c64(U32))
        err = self._span_err(fl, off, n)
        # the buffer is checked only when the span is fine and non-empty (as mem.read/write do)
        bok, bptr = self.probe(fl, fl.get(3), n, R_READ if store else R_WRITE)
        trivially = b.or_(b.icmp_unsigned("!=", err, c64(0)), b.icmp_unsigned("==", n, c64(0)))
        ok = b.and_(self.packet_ok(fl), b.or_(trivially, bok))

        def native() -> ir.Value:
            with b.if_then(b.icmp_unsigned("==", err, c64(0))):
                frame = b.inttoptr(fl.env_load(abi.E_FRAME), PTR)
                pptr = b.gep(frame, [b.add(fl.env_load(abi.E_DATA), off)], source_etype=I8)
                if store:
                    b.call(memcpy, [pptr, bptr, n, ir.Constant(I1, 0)])
                else:
                    b.call(memcpy, [bptr, pptr, n, ir.Constant(I1, 0)])
            return err

        self.with_fallback(fl, pc, hid, ok, native)

    def load_bytes(self, fl: FuncLowering, pc: int) -> None:
        self._bytes(fl, pc, H_LOAD_BYTES, store=False)

    def store_bytes(self, fl: FuncLowering, pc: int) -> None:
        self._bytes(fl, pc, H_STORE_BYTES, store=True)

    # ---------------------------------------------------------------- csum_diff

    def csum_diff(self, fl: FuncLowering, pc: int) -> None:
        b = fl.b
        fs, ts = b.and_(fl.get(2), c64(U32)), b.and_(fl.get(4), c64(U32))
        einval = b.or_(
            b.icmp_unsigned("!=", b.and_(b.or_(fs, ts), c64(3)), c64(0)),
            b.icmp_unsigned(">", b.add(fs, ts), c64(MAX_CSUM_DIFF)),
        )
        fok, fptr = self.probe(fl, fl.get(1), fs, R_READ)
        tok, tptr = self.probe(fl, fl.get(3), ts, R_READ)
        fok = b.or_(fok, b.icmp_unsigned("==", fs, c64(0)))
        tok = b.or_(tok, b.icmp_unsigned("==", ts, c64(0)))
        ok = b.or_(einval, b.and_(fok, tok))
        part = self._csum_partial(fl.mod.module)

        def native() -> ir.Value:
            seed = b.and_(fl.get(5), c64(U32))
            res = fl.tmp()
            with b.if_else(einval) as (then, other):
                with then:
                    b.store(c64(-_errno.EINVAL), res)
                with other:
                    has_f = b.icmp_unsigned("!=", fs, c64(0))
                    has_t = b.icmp_unsigned("!=", ts, c64(0))
                    pt = b.call(part, [tptr, ts, seed])  # csum_partial(to, seed)
                    pf0 = b.call(part, [fptr, fs, c64(0)])
                    both = self._csum_add(fl, pt, b.and_(b.not_(pf0), c64(U32)))
                    only_f = b.and_(
                        b.not_(b.call(part, [fptr, fs, b.and_(b.not_(seed), c64(U32))])), c64(U32)
                    )
                    r = b.select(
                        b.and_(has_f, has_t), both, b.select(has_t, pt, b.select(has_f, only_f, seed))
                    )
                    r = b.add(b.and_(r, c64(0xFFFF)), b.lshr(r, c64(16)))
                    r = b.add(b.and_(r, c64(0xFFFF)), b.lshr(r, c64(16)))
                    b.store(b.and_(r, c64(0xFFFF)), res)
            return b.load(res)

        self.with_fallback(fl, pc, H_CSUM_DIFF, ok, native)

    def _csum_add(self, fl: FuncLowering, a: ir.Value, c: ir.Value) -> ir.Value:
        b = fl.b
        s = b.add(b.and_(a, c64(U32)), b.and_(c, c64(U32)))
        return b.and_(b.add(s, b.lshr(s, c64(32))), c64(U32))

    def _csum_partial(self, module: ir.Module) -> ir.Function:
        """u64 csum_partial(ptr, len (a multiple of 4), seed): helpers/csum.py's csum_partial64 (x86-64's:
        64-bit little-endian words, the 4-byte tail zero-extended, end-around carry, 32-bit fold)."""
        name = "xdpsim_csum_partial64"
        if name in module.globals:
            return module.globals[name]
        f = ir.Function(module, ir.FunctionType(I64, [PTR, I64, I64]), name)
        f.linkage = "internal"
        p, n, seed = f.args
        blocks = ("entry", "loop", "high", "add", "out")
        entry, loop, high, add, out = (f.append_basic_block(x) for x in blocks)
        b = ir.IRBuilder(entry)
        acc0 = b.and_(seed, c64(U32))
        b.cbranch(b.icmp_unsigned("==", n, c64(0)), out, loop)
        b.position_at_end(loop)
        i = b.phi(I64)
        acc = b.phi(I64)
        i.add_incoming(c64(0), entry)
        acc.add_incoming(acc0, entry)
        u32 = ir.IntType(32)
        low = b.zext(b.load(b.gep(p, [i], source_etype=I8), typ=u32, align=1), I64)
        # the high half only when 8 bytes remain: never read past the buffer (a 4-byte tail counts as 0)
        b.cbranch(b.icmp_unsigned(">=", b.sub(n, i), c64(8)), high, add)
        b.position_at_end(high)
        hi = b.zext(b.load(b.gep(p, [b.add(i, c64(4))], source_etype=I8), typ=u32, align=1), I64)
        b.branch(add)
        b.position_at_end(add)
        top = b.phi(I64)
        top.add_incoming(c64(0), loop)
        top.add_incoming(hi, high)
        w = b.or_(low, b.shl(top, c64(32)))
        s = b.add(acc, w)
        nacc = b.add(s, b.zext(b.icmp_unsigned("<", s, w), I64))  # end-around carry
        ni = b.add(i, c64(8))
        i.add_incoming(ni, add)
        acc.add_incoming(nacc, add)
        b.cbranch(b.icmp_unsigned("<", ni, n), loop, out)
        b.position_at_end(out)
        t = b.phi(I64)
        t.add_incoming(acc0, entry)
        t.add_incoming(nacc, add)
        rot = b.or_(b.lshr(t, c64(32)), b.shl(t, c64(32)))
        b.ret(b.lshr(b.add(t, rot), c64(32)))
        return f
