"""Native map algorithms (hash, LRU hash, LPM trie lookup, array), built once with llvmlite.

Written once as LLVM IR (with `llvmlite.ir` builders), compiled once per process with MCJIT, and called
by everyone: the interpreter and the Python dict API through ctypes, the JIT by address from its
generated code. One algorithm, one storage, so the three can never disagree.

Threading: the functions take no locks. A map is used by one thread at a time (the runtime runs one
packet at a time per process); sharing maps between processes would need atomics here first.

## Descriptor

Every map has a descriptor: `DESC_WORDS` little-endian u64 words in a numpy buffer that never moves
(`Map.native_descriptor()` gives its host address). Word indices (constants `W_*` below):

| word | name            | meaning |
|------|-----------------|---------|
| 0    | KIND            | `K_*` below: which algorithm `xdpsim_map_*` dispatch to |
| 1    | FLAGS           | `F_PERCPU`=1 (value slice per CPU), `F_LRU`=2, `F_LOCK`=4 (spin lock at LOCK_OFF) |
| 2    | KEY_SIZE        | bytes |
| 3    | VALUE_SIZE      | bytes |
| 4    | VALUE_STRIDE    | round_up(VALUE_SIZE, 8): bytes from one value slot to the next |
| 5    | MAX_ENTRIES     | capacity in entries (hash: the limit; entry slots 0..MAX_ENTRIES-1) |
| 6    | VALUES          | host address of CPU 0's value slots (slot s at VALUES + s*VALUE_STRIDE) |
| 7    | CPU_STRIDE      | bytes from CPU c's slots to CPU c+1's (MAX_ENTRIES*VALUE_STRIDE; 0: not per-CPU) |
| 8    | VALUES_RID      | region id of CPU 0's values; CPU c's region is VALUES_RID + c |
| 9    | NCPUS           | simulated CPUs |
| 10   | LOCK_OFF        | offset of the bpf_spin_lock in the value (when F_LOCK) |
| 11   | COUNT           | live entries |
| 12   | BUCKETS         | host address of u32[MASK+1] bucket heads (slot+1, 0 = empty) |
| 13   | BUCKET_MASK     | number of buckets - 1 (a power of two >= MAX_ENTRIES) |
| 14   | ENTRIES         | host address of the entry records (below) |
| 15   | ENTRY_STRIDE    | bytes per entry record: 24 + round_up(KEY_SIZE, 8) |
| 16   | NEXT_UNUSED     | entry slots never used yet are NEXT_UNUSED..MAX_ENTRIES-1 |
| 17   | FREE_HEAD       | freed slots, a LIFO chained through the entry's `next` (slot+1, 0 = none) |
| 18   | ORD_HEAD        | oldest entry in insertion order (slot+1) |
| 19   | ORD_TAIL        | newest entry in insertion order |
| 20   | LRU_HEAD        | most recently used entry (LRU maps) |
| 21   | LRU_TAIL        | least recently used entry: the next to be evicted |
| 22   | EVICTIONS       | entries evicted so far (LRU) |
| 23   | SEED            | hash seed (fixed: bucket placement is deterministic) |
| 24   | LPM_ROOT        | LPM: root node (node+1, 0 = empty trie) |
| 25   | LPM_NODES       | LPM: host address of the node records (below) |
| 26   | LPM_NODE_STRIDE | LPM: bytes per node: 24 + round_up(KEY_SIZE - 4, 8) |
| 27   | LPM_MAX_PREFIX  | LPM: (KEY_SIZE - 4) * 8 |
| 28   | TABLE           | host address of int32[MAX_ENTRIES], -1 = empty: prog ids (prog_array), inner map |
|      |                 | ids (array_of_maps), devmap/cpumap/xskmap occupancy (ifindex, qsize, socket) |
| 29   | HANDLE_BASE     | MAP_HANDLES << 32: a map id's program-visible handle is HANDLE_BASE OR id |

Hash entry record (u32 fields; "slot+1" links, 0 = none), then the key:

    +0 hash  +4 next (bucket chain / free list)  +8 ord_prev  +12 ord_next  +16 lru_prev  +20 lru_next
    +24 key[KEY_SIZE]

LPM node record: `+0 prefixlen u32, +4 flags u32 (1 = intermediate: no value), +8 child[0] (node+1),
+12 child[1], +16 value slot u32, +20 reserved, +24 data[KEY_SIZE-4]`. The trie has the
kernel's shape (a path-compressed binary trie whose intermediate nodes have exactly two children), so
it is canonical for a set of prefixes and iterates (post-order, child 0 first) in the kernel's order.
Lookup is native; insert and delete are done in Python on the same records (maps/lpm.py).

Kinds: K_NONE=0 (no native ops: queue, stack, ringbuf, perf_event_array, prog_array for lookups),
K_ARRAY=1 (array, percpu_array), K_HASH=2 (hash, percpu_hash, lru_hash, lru_percpu_hash,
devmap_hash; FLAGS say which), K_LPM=3, K_SPARSE=4 (devmap, cpumap, xskmap: an array whose slots
exist only where TABLE[i] >= 0), K_ARRAY_OF_MAPS=5, K_HASH_OF_MAPS=6 (value = u32 inner map id).

## Functions

All pointers are host addresses (the caller has bounds-checked program memory), all integers i64;
C view (every function returns int64_t):

    xdpsim_map_lookup(desc, key, cpu)              -> program address of the value, or 0
        The program-facing bpf_map_lookup_elem for every kind: ((VALUES_RID + cpu) << 32) |
        slot*VALUE_STRIDE for per-CPU maps, (VALUES_RID << 32) | ... otherwise; for maps of maps
        the inner map's handle. LRU maps mark the entry used. K_NONE gives 0.
    xdpsim_map_update(desc, key, value, flags, cpu) -> 0 or -errno
        bpf_map_update_elem for K_ARRAY and K_HASH (value copied to CPU `cpu`'s slice for per-CPU
        maps; a new per-CPU hash entry has the other CPUs' values zeroed, as the kernel's
        pcpu_init_value). Other kinds: -EOPNOTSUPP -- use the Python `Map.prog_update`.
    xdpsim_map_delete(desc, key)                   -> 0 or -errno (K_ARRAY: -EINVAL; K_HASH; else -EOPNOTSUPP)
    xdpsim_hash_lookup(desc, key)                  -> slot or -1 (no LRU effect: user-space lookups)
    xdpsim_hash_lookup_touch(desc, key)            -> slot or -1 (LRU maps: entry becomes most recent)
    xdpsim_hash_update(desc, key, value, flags, cpu) -> slot or -errno
        value may be NULL: the slot's values (all CPUs) are zeroed for a new entry and left alone for
        an existing one (the Python API then writes every CPU's value itself).
    xdpsim_hash_delete(desc, key)                  -> 0 or -ENOENT
    xdpsim_hash_next_key(desc, key_or_NULL, out)   -> 0 (next key copied to out) or -ENOENT
        Insertion order; a NULL or absent key gives the first key, as the kernel.
    xdpsim_lpm_lookup(desc, key)                   -> value slot or -1 (longest prefix match)
    xdpsim_hash_bytes(ptr, len, seed)              -> u64 (the hash function, exposed for tests)

Errno values are Linux's: EINVAL 22, ENOENT 2, EEXIST 17, E2BIG 7, EOPNOTSUPP 95.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import os
import tempfile
import threading
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np

from ..memory import MAP_HANDLES, REGION_SHIFT

# ---------------------------------------------------------------- descriptor layout
DESC_WORDS = 32
W_KIND = 0
W_FLAGS = 1
W_KEY_SIZE = 2
W_VALUE_SIZE = 3
W_VALUE_STRIDE = 4
W_MAX_ENTRIES = 5
W_VALUES = 6
W_CPU_STRIDE = 7
W_VALUES_RID = 8
W_NCPUS = 9
W_LOCK_OFF = 10
W_COUNT = 11
W_BUCKETS = 12
W_BUCKET_MASK = 13
W_ENTRIES = 14
W_ENTRY_STRIDE = 15
W_NEXT_UNUSED = 16
W_FREE_HEAD = 17
W_ORD_HEAD = 18
W_ORD_TAIL = 19
W_LRU_HEAD = 20
W_LRU_TAIL = 21
W_EVICTIONS = 22
W_SEED = 23
W_LPM_ROOT = 24
W_LPM_NODES = 25
W_LPM_NODE_STRIDE = 26
W_LPM_MAX_PREFIX = 27
W_TABLE = 28
W_HANDLE_BASE = 29

K_NONE = 0
K_ARRAY = 1
K_HASH = 2
K_LPM = 3
K_SPARSE = 4
K_ARRAY_OF_MAPS = 5
K_HASH_OF_MAPS = 6

F_PERCPU = 1
F_LRU = 2
F_LOCK = 4

# Hash entry record
E_HASH = 0
E_NEXT = 4
E_ORD_PREV = 8
E_ORD_NEXT = 12
E_LRU_PREV = 16
E_LRU_NEXT = 20
E_KEY = 24
ENTRY_HEADER = 24

# LPM node record
N_PREFIXLEN = 0
N_FLAGS = 4
N_CHILD0 = 8
N_CHILD1 = 12
N_VALUE = 16
N_RESERVED = 20
N_DATA = 24
NODE_HEADER = 24
NODE_INTERMEDIATE = 1

HASH_SEED = 0x243F6A8885A308D3  # fixed: placement is deterministic (the kernel's seed is random)

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2
BPF_F_LOCK = 4

_I1 = ir.IntType(1)
_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_PTR = ir.PointerType()
_VOID = ir.VoidType()


def _c(v: int, ty: ir.IntType = _I64) -> ir.Constant:
    return ir.Constant(ty, v)


def new_descriptor() -> np.ndarray:
    return np.zeros(DESC_WORDS, dtype=np.uint64)


# ================================================================ IR construction


class _Fn:
    """A function under construction, with the small vocabulary the algorithms are written in.

    Loops use stack slots (alloca) for their variables; the optimiser's SROA/mem2reg turns them into
    registers, which keeps the builder code readable.
    """

    def __init__(self, mod: _Module, name: str, ret: ir.Type, args: list[ir.Type], internal: bool = False):
        self.mod = mod
        self.f = ir.Function(mod.m, ir.FunctionType(ret, args), name)
        if internal:
            self.f.linkage = "internal"
        self.args = self.f.args
        self._entry = self.f.append_basic_block("entry")
        self.b = ir.IRBuilder(self._entry)

    # -- blocks and variables
    def block(self, name: str) -> ir.Block:
        return self.f.append_basic_block(name)

    def var(self, init: ir.Value, ty: ir.Type = _I64) -> ir.AllocaInstr:
        with self.b.goto_entry_block():
            slot = self.b.alloca(ty)
        self.b.store(init, slot)
        return slot

    def get(self, v: ir.AllocaInstr) -> ir.Value:
        return self.b.load(v)

    def put(self, v: ir.AllocaInstr, val: ir.Value) -> None:
        self.b.store(val, v)

    # -- memory (byte offsets, unaligned)
    def at(self, ptr: ir.Value, off: ir.Value | int) -> ir.Value:
        if isinstance(off, int):
            if off == 0:
                return ptr
            off = _c(off)
        return self.b.gep(ptr, [off], source_etype=_I8)

    def ld(self, ptr: ir.Value, off: ir.Value | int, ty: ir.Type) -> ir.Value:
        return self.b.load(self.at(ptr, off), typ=ty, align=1)

    def st(self, ptr: ir.Value, off: ir.Value | int, val: ir.Value) -> None:
        self.b.store(val, self.at(ptr, off), align=1)

    def dw(self, desc: ir.Value, word: int) -> ir.Value:
        return self.b.load(self.at(desc, 8 * word), typ=_I64, align=8)

    def set_dw(self, desc: ir.Value, word: int, val: ir.Value) -> None:
        self.b.store(val, self.at(desc, 8 * word), align=8)

    def ptr(self, addr: ir.Value) -> ir.Value:
        return self.b.inttoptr(addr, _PTR)

    def ld32(self, ptr: ir.Value, off: ir.Value | int) -> ir.Value:
        """A u32 field widened to i64."""
        return self.b.zext(self.ld(ptr, off, _I32), _I64)

    def st32(self, ptr: ir.Value, off: ir.Value | int, val: ir.Value) -> None:
        self.st(ptr, off, self.b.trunc(val, _I32))

    # -- arithmetic shorthands
    def add(self, a, b):
        return self.b.add(a, b if isinstance(b, ir.Value) else _c(b))

    def sub(self, a, b):
        return self.b.sub(a, b if isinstance(b, ir.Value) else _c(b))

    def mul(self, a, b):
        return self.b.mul(a, b if isinstance(b, ir.Value) else _c(b))

    def eq(self, a, b):
        return self.b.icmp_unsigned("==", a, b if isinstance(b, ir.Value) else _c(b, a.type))

    def ne(self, a, b):
        return self.b.icmp_unsigned("!=", a, b if isinstance(b, ir.Value) else _c(b, a.type))

    def ult(self, a, b):
        return self.b.icmp_unsigned("<", a, b if isinstance(b, ir.Value) else _c(b, a.type))

    def ule(self, a, b):
        return self.b.icmp_unsigned("<=", a, b if isinstance(b, ir.Value) else _c(b, a.type))

    def ugt(self, a, b):
        return self.b.icmp_unsigned(">", a, b if isinstance(b, ir.Value) else _c(b, a.type))

    def band(self, a, b):
        return self.b.and_(a, b if isinstance(b, ir.Value) else _c(b, a.type))

    def call(self, fn: _Fn | ir.Function, *args):
        f = fn.f if isinstance(fn, _Fn) else fn
        return self.b.call(f, list(args))

    def if_then(self, cond: ir.Value):
        return self.b.if_then(cond)

    def ret_if(self, cond: ir.Value, val: ir.Value | int) -> None:
        """`if (cond) return val;`"""
        with self.b.if_then(cond, likely=False):
            self.b.ret(val if isinstance(val, ir.Value) else _c(val))

    def while_(self, cond_fn, body_fn) -> None:
        """`while (cond_fn()) body_fn();` -- body_fn may emit `break` by branching to the returned exit."""
        head, body, done = self.block("while.head"), self.block("while.body"), self.block("while.end")
        self.b.branch(head)
        self.b.position_at_end(head)
        self.b.cbranch(cond_fn(), body, done)
        self.b.position_at_end(body)
        body_fn(done)
        if not self.b.block.is_terminated:
            self.b.branch(head)
        self.b.position_at_end(done)


class _Module:
    def __init__(self) -> None:
        self.m = ir.Module(name="xdpsim_maps")
        fty = ir.FunctionType
        self.memcpy = ir.Function(self.m, fty(_VOID, [_PTR, _PTR, _I64, _I1]), "llvm.memcpy.p0.p0.i64")
        self.memset = ir.Function(self.m, fty(_VOID, [_PTR, _I8, _I64, _I1]), "llvm.memset.p0.i64")
        self.ctlz8 = ir.Function(self.m, ir.FunctionType(_I8, [_I8, _I1]), "llvm.ctlz.i8")

    def copy(self, fn: _Fn, dst: ir.Value, src: ir.Value, n: ir.Value) -> None:
        fn.b.call(self.memcpy, [dst, src, n, _c(0, _I1)])

    def zero(self, fn: _Fn, dst: ir.Value, n: ir.Value) -> None:
        fn.b.call(self.memset, [dst, _c(0, _I8), n, _c(0, _I1)])


def _rotl(fn: _Fn, x: ir.Value, r: int) -> ir.Value:
    return fn.b.or_(fn.b.shl(x, _c(r)), fn.b.lshr(x, _c(64 - r)))


def _build(mod: _Module) -> None:  # noqa: C901 - one place that lays out every algorithm
    K1, K2, K3 = 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9

    # ------------------------------------------------------------ hash function
    # 8 bytes at a time, each word multiplied, rotated and folded in; a zero-padded tail word; then
    # an avalanche of xor-shifts and multiplies so every key bit reaches the bucket-index bits.
    hb = _Fn(mod, "xdpsim_hash_bytes", _I64, [_PTR, _I64, _I64])
    p, n, seed = hb.args
    h = hb.var(hb.b.xor(seed, hb.mul(n, K2)))
    i = hb.var(_c(0))

    def fold(fn: _Fn, hv, w):
        w = fn.mul(w, K1)
        w = _rotl(fn, w, 29)
        w = fn.mul(w, K2)
        x = fn.b.xor(fn.get(hv), w)
        x = _rotl(fn, x, 31)
        fn.put(hv, fn.add(fn.mul(x, 5), K3))

    def words_body(done):
        fold(hb, h, hb.ld(p, hb.get(i), _I64))
        hb.put(i, hb.add(hb.get(i), 8))

    hb.while_(lambda: hb.ule(hb.add(hb.get(i), 8), n), words_body)
    with hb.if_then(hb.ult(hb.get(i), n)):
        w = hb.var(_c(0))
        j = hb.var(hb.get(i))

        def tail_body(done):
            byte = hb.b.zext(hb.ld(p, hb.get(j), _I8), _I64)
            shift = hb.mul(hb.sub(hb.get(j), hb.get(i)), 8)
            hb.put(w, hb.b.or_(hb.get(w), hb.b.shl(byte, shift)))
            hb.put(j, hb.add(hb.get(j), 1))

        hb.while_(lambda: hb.ult(hb.get(j), n), tail_body)
        fold(hb, h, hb.get(w))
    x = hb.get(h)
    for mult in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
        x = hb.b.xor(x, hb.b.lshr(x, _c(33)))
        x = hb.mul(x, mult)
    x = hb.b.xor(x, hb.b.lshr(x, _c(33)))
    hb.b.ret(x)

    # ------------------------------------------------------------ byte compare
    eqf = _Fn(mod, "xdpsim_key_eq", _I1, [_PTR, _PTR, _I64], internal=True)
    a, bb, n = eqf.args
    i = eqf.var(_c(0))

    def eq_words(done):
        ne = eqf.ne(eqf.ld(a, eqf.get(i), _I64), eqf.ld(bb, eqf.get(i), _I64))
        eqf.ret_if(ne, _c(0, _I1))
        eqf.put(i, eqf.add(eqf.get(i), 8))

    eqf.while_(lambda: eqf.ule(eqf.add(eqf.get(i), 8), n), eq_words)

    def eq_bytes(done):
        ne = eqf.ne(eqf.ld(a, eqf.get(i), _I8), eqf.ld(bb, eqf.get(i), _I8))
        eqf.ret_if(ne, _c(0, _I1))
        eqf.put(i, eqf.add(eqf.get(i), 1))

    eqf.while_(lambda: eqf.ult(eqf.get(i), n), eq_bytes)
    eqf.b.ret(_c(1, _I1))

    # ------------------------------------------------------------ helpers on entries
    def entry(fn: _Fn, desc, slot):
        """Pointer to entry record `slot` (0-based)."""
        base = fn.ptr(fn.dw(desc, W_ENTRIES))
        return fn.at(base, fn.mul(slot, fn.dw(desc, W_ENTRY_STRIDE)))

    def key_hash(fn: _Fn, desc, key):
        hv = fn.call(hb, key, fn.dw(desc, W_KEY_SIZE), fn.dw(desc, W_SEED))
        return fn.band(fn.b.xor(hv, fn.b.lshr(hv, _c(32))), 0xFFFF_FFFF)

    def bucket_ptr(fn: _Fn, desc, hv):
        idx = fn.band(hv, fn.dw(desc, W_BUCKET_MASK))
        return fn.at(fn.ptr(fn.dw(desc, W_BUCKETS)), fn.mul(idx, 4))

    # find(desc, key, hash) -> slot+1 or 0
    find = _Fn(mod, "xdpsim_hash_find", _I64, [_PTR, _PTR, _I64], internal=True)
    desc, key, hv = find.args
    cur = find.var(find.ld32(bucket_ptr(find, desc, hv), 0))
    ks = find.dw(desc, W_KEY_SIZE)

    def find_body(done):
        s1 = find.get(cur)
        e = entry(find, desc, find.sub(s1, 1))
        same_hash = find.eq(find.ld32(e, E_HASH), hv)
        with find.if_then(same_hash):
            find.ret_if(find.call(eqf, find.at(e, E_KEY), key, ks), s1)
        find.put(cur, find.ld32(e, E_NEXT))

    find.while_(lambda: find.ne(find.get(cur), 0), find_body)
    find.b.ret(_c(0))

    # doubly linked lists threaded through the entries: (head word, tail word, prev field, next field)
    def list_fns(tag: str, w_head: int, w_tail: int, f_prev: int, f_next: int):
        unlink = _Fn(mod, f"xdpsim_{tag}_unlink", _VOID, [_PTR, _I64], internal=True)
        desc, slot = unlink.args
        e = entry(unlink, desc, slot)
        prv, nxt = unlink.ld32(e, f_prev), unlink.ld32(e, f_next)
        is_head = unlink.eq(prv, 0)
        with unlink.b.if_else(is_head) as (then, other):
            with then:
                unlink.set_dw(desc, w_head, nxt)
            with other:
                unlink.st32(entry(unlink, desc, unlink.sub(prv, 1)), f_next, nxt)
        with unlink.b.if_else(unlink.eq(nxt, 0)) as (then, other):
            with then:
                unlink.set_dw(desc, w_tail, prv)
            with other:
                unlink.st32(entry(unlink, desc, unlink.sub(nxt, 1)), f_prev, prv)
        unlink.st32(e, f_prev, _c(0))
        unlink.st32(e, f_next, _c(0))
        unlink.b.ret_void()

        def push(end: str, w_end: int, w_other: int, f_out: int, f_in: int) -> _Fn:
            """Link `slot` in at one end of the list (head: out = prev, in = next; tail: mirrored)."""
            fn = _Fn(mod, f"xdpsim_{tag}_push_{end}", _VOID, [_PTR, _I64], internal=True)
            desc, slot = fn.args
            e = entry(fn, desc, slot)
            old = fn.dw(desc, w_end)
            fn.st32(e, f_out, _c(0))
            fn.st32(e, f_in, old)
            s1 = fn.add(slot, 1)
            with fn.b.if_else(fn.eq(old, 0)) as (then, other):
                with then:
                    fn.set_dw(desc, w_other, s1)
                with other:
                    fn.st32(entry(fn, desc, fn.sub(old, 1)), f_out, s1)
            fn.set_dw(desc, w_end, s1)
            fn.b.ret_void()
            return fn

        push_head = push("head", w_head, w_tail, f_prev, f_next)
        push_tail = push("tail", w_tail, w_head, f_next, f_prev)
        return unlink, push_head, push_tail

    ord_unlink, _, ord_push_tail = list_fns("ord", W_ORD_HEAD, W_ORD_TAIL, E_ORD_PREV, E_ORD_NEXT)
    lru_unlink, lru_push_head, _ = list_fns("lru", W_LRU_HEAD, W_LRU_TAIL, E_LRU_PREV, E_LRU_NEXT)

    # remove(desc, slot): take an entry out of its bucket chain and both lists, free the slot.
    remove = _Fn(mod, "xdpsim_hash_remove", _VOID, [_PTR, _I64], internal=True)
    desc, slot = remove.args
    e = entry(remove, desc, slot)
    bp = bucket_ptr(remove, desc, remove.ld32(e, E_HASH))
    s1 = remove.add(slot, 1)
    head = remove.ld32(bp, 0)
    nxt = remove.ld32(e, E_NEXT)
    with remove.b.if_else(remove.eq(head, s1)) as (then, other):
        with then:
            remove.st32(bp, 0, nxt)
        with other:
            cur = remove.var(head)

            def unchain(done):
                pe = entry(remove, desc, remove.sub(remove.get(cur), 1))
                pn = remove.ld32(pe, E_NEXT)
                with remove.if_then(remove.eq(pn, s1)):
                    remove.st32(pe, E_NEXT, nxt)
                    remove.b.branch(done)
                remove.put(cur, pn)

            remove.while_(lambda: remove.ne(remove.get(cur), 0), unchain)
    remove.call(ord_unlink, desc, slot)
    with remove.if_then(remove.ne(remove.band(remove.dw(desc, W_FLAGS), F_LRU), 0)):
        remove.call(lru_unlink, desc, slot)
    remove.st32(e, E_NEXT, remove.dw(desc, W_FREE_HEAD))
    remove.set_dw(desc, W_FREE_HEAD, s1)
    remove.set_dw(desc, W_COUNT, remove.sub(remove.dw(desc, W_COUNT), 1))
    remove.b.ret_void()

    # ------------------------------------------------------------ public hash functions
    def lookup_fn(name: str, touch: bool) -> _Fn:
        fn = _Fn(mod, name, _I64, [_PTR, _PTR])
        desc, key = fn.args
        s1 = fn.call(find, desc, key, key_hash(fn, desc, key))
        fn.ret_if(fn.eq(s1, 0), -1)
        slot = fn.sub(s1, 1)
        if touch:
            is_lru = fn.ne(fn.band(fn.dw(desc, W_FLAGS), F_LRU), 0)
            not_head = fn.ne(fn.dw(desc, W_LRU_HEAD), s1)
            with fn.if_then(fn.b.and_(is_lru, not_head)):
                fn.call(lru_unlink, desc, slot)
                fn.call(lru_push_head, desc, slot)
        fn.b.ret(slot)
        return fn

    lookup_fn("xdpsim_hash_lookup", touch=False)
    h_lookup_touch = lookup_fn("xdpsim_hash_lookup_touch", touch=True)

    # value_ptr(desc, slot, cpu) -> host pointer of that CPU's value
    vptr = _Fn(mod, "xdpsim_value_ptr", _PTR, [_PTR, _I64, _I64], internal=True)
    desc, slot, cpu = vptr.args
    off = vptr.add(vptr.mul(slot, vptr.dw(desc, W_VALUE_STRIDE)), vptr.mul(cpu, vptr.dw(desc, W_CPU_STRIDE)))
    vptr.b.ret(vptr.at(vptr.ptr(vptr.dw(desc, W_VALUES)), off))

    # copy_value(desc, dst, src, fresh): copy VALUE_SIZE bytes, keeping (or, fresh, zeroing) the lock
    cpv = _Fn(mod, "xdpsim_copy_value", _VOID, [_PTR, _PTR, _PTR, _I1], internal=True)
    desc, dst, src, fresh = cpv.args
    has_lock = cpv.ne(cpv.band(cpv.dw(desc, W_FLAGS), F_LOCK), 0)
    lock_off = cpv.dw(desc, W_LOCK_OFF)
    saved = cpv.var(_c(0, _I32), _I32)
    with cpv.if_then(has_lock):
        cpv.put(saved, cpv.ld(dst, lock_off, _I32))
    mod.copy(cpv, dst, src, cpv.dw(desc, W_VALUE_SIZE))
    with cpv.if_then(has_lock):
        # a bpf_spin_lock is never copied from user or program data (copy_map_value skips it)
        cpv.st(dst, lock_off, cpv.b.select(fresh, _c(0, _I32), cpv.get(saved)))
    cpv.b.ret_void()

    def flags_invalid(fn: _Fn, desc, flags):
        """(flags & ~BPF_F_LOCK) > BPF_EXIST, or BPF_F_LOCK on a value without a lock: -EINVAL."""
        unknown = fn.ugt(fn.band(flags, ~BPF_F_LOCK & 0xFFFF_FFFF_FFFF_FFFF), BPF_EXIST)
        lock_wo = fn.b.and_(
            fn.ne(fn.band(flags, BPF_F_LOCK), 0), fn.eq(fn.band(fn.dw(desc, W_FLAGS), F_LOCK), 0)
        )
        return fn.b.or_(unknown, lock_wo)

    upd = _Fn(mod, "xdpsim_hash_update", _I64, [_PTR, _PTR, _PTR, _I64, _I64])
    desc, key, value, flags, cpu = upd.args
    upd.ret_if(flags_invalid(upd, desc, flags), -errno.EINVAL)
    op = upd.band(flags, ~BPF_F_LOCK & 0xFFFF_FFFF_FFFF_FFFF)
    hv = key_hash(upd, desc, key)
    s1 = upd.call(find, desc, key, hv)
    percpu = upd.ne(upd.band(upd.dw(desc, W_FLAGS), F_PERCPU), 0)
    is_lru = upd.ne(upd.band(upd.dw(desc, W_FLAGS), F_LRU), 0)
    has_value = upd.ne(upd.b.ptrtoint(value, _I64), 0)
    stride = upd.dw(desc, W_VALUE_STRIDE)
    with upd.if_then(upd.ne(s1, 0)):
        # existing entry: NOEXIST refuses, anything else replaces the value in place
        upd.ret_if(upd.eq(op, BPF_NOEXIST), -errno.EEXIST)
        slot = upd.sub(s1, 1)
        with upd.if_then(has_value):
            dstv = upd.call(vptr, desc, slot, upd.b.select(percpu, cpu, _c(0)))
            upd.call(cpv, desc, dstv, value, _c(0, _I1))
        with upd.if_then(is_lru):
            upd.call(lru_unlink, desc, slot)
            upd.call(lru_push_head, desc, slot)
        upd.b.ret(slot)
    upd.ret_if(upd.eq(op, BPF_EXIST), -errno.ENOENT)
    # allocate a slot: the free list, then never-used slots, then (LRU) the least recently used entry
    newslot = upd.var(_c(-1))
    free = upd.dw(desc, W_FREE_HEAD)
    with upd.b.if_else(upd.ne(free, 0)) as (then, other):
        with then:
            upd.set_dw(desc, W_FREE_HEAD, upd.ld32(entry(upd, desc, upd.sub(free, 1)), E_NEXT))
            upd.put(newslot, upd.sub(free, 1))
        with other:
            unused = upd.dw(desc, W_NEXT_UNUSED)
            with upd.b.if_else(upd.ult(unused, upd.dw(desc, W_MAX_ENTRIES))) as (then2, other2):
                with then2:
                    upd.set_dw(desc, W_NEXT_UNUSED, upd.add(unused, 1))
                    upd.put(newslot, unused)
                with other2:
                    victim = upd.dw(desc, W_LRU_TAIL)
                    with upd.if_then(upd.b.and_(is_lru, upd.ne(victim, 0))):
                        upd.call(remove, desc, upd.sub(victim, 1))
                        upd.set_dw(desc, W_EVICTIONS, upd.add(upd.dw(desc, W_EVICTIONS), 1))
                        fh = upd.dw(desc, W_FREE_HEAD)  # remove() pushed the victim on the free list
                        upd.set_dw(desc, W_FREE_HEAD, upd.ld32(entry(upd, desc, upd.sub(fh, 1)), E_NEXT))
                        upd.put(newslot, upd.sub(fh, 1))
    slot = upd.get(newslot)
    upd.ret_if(upd.eq(slot, -1), -errno.E2BIG)
    e = entry(upd, desc, slot)
    upd.st32(e, E_HASH, hv)
    mod.copy(upd, upd.at(e, E_KEY), key, upd.dw(desc, W_KEY_SIZE))
    bp = bucket_ptr(upd, desc, hv)
    upd.st32(e, E_NEXT, upd.ld32(bp, 0))
    upd.st32(bp, 0, upd.add(slot, 1))
    upd.call(ord_push_tail, desc, slot)
    with upd.if_then(is_lru):
        upd.call(lru_push_head, desc, slot)
    upd.set_dw(desc, W_COUNT, upd.add(upd.dw(desc, W_COUNT), 1))
    # values: a new entry starts from zeros on every CPU except the one written (pcpu_init_value)
    ncpu = upd.b.select(percpu, upd.dw(desc, W_NCPUS), _c(1))
    c = upd.var(_c(0))

    def init_values(done):
        cc = upd.get(c)
        dstv = upd.call(vptr, desc, slot, cc)
        write_here = upd.b.and_(has_value, upd.b.or_(upd.b.not_(percpu), upd.eq(cc, cpu)))
        with upd.b.if_else(write_here) as (then, other):
            with then:
                upd.call(cpv, desc, dstv, value, _c(1, _I1))
                # padding up to the stride too, so user space sees zeros there, as the kernel's
                # percpu copy-out does for fresh elements
                vs = upd.dw(desc, W_VALUE_SIZE)
                mod.zero(upd, upd.at(dstv, vs), upd.sub(stride, vs))
            with other:
                mod.zero(upd, dstv, stride)
        upd.put(c, upd.add(cc, 1))

    upd.while_(lambda: upd.ult(upd.get(c), ncpu), init_values)
    upd.b.ret(slot)

    dele = _Fn(mod, "xdpsim_hash_delete", _I64, [_PTR, _PTR])
    desc, key = dele.args
    s1 = dele.call(find, desc, key, key_hash(dele, desc, key))
    dele.ret_if(dele.eq(s1, 0), -errno.ENOENT)
    dele.call(remove, desc, dele.sub(s1, 1))
    dele.b.ret(_c(0))

    nk = _Fn(mod, "xdpsim_hash_next_key", _I64, [_PTR, _PTR, _PTR])
    desc, key, out = nk.args
    nxt = nk.var(nk.dw(desc, W_ORD_HEAD))
    with nk.if_then(nk.ne(nk.b.ptrtoint(key, _I64), 0)):
        s1 = nk.call(find, desc, key, key_hash(nk, desc, key))
        with nk.if_then(nk.ne(s1, 0)):
            nk.put(nxt, nk.ld32(entry(nk, desc, nk.sub(s1, 1)), E_ORD_NEXT))
    n1 = nk.get(nxt)
    nk.ret_if(nk.eq(n1, 0), -errno.ENOENT)
    mod.copy(nk, out, nk.at(entry(nk, desc, nk.sub(n1, 1)), E_KEY), nk.dw(desc, W_KEY_SIZE))
    nk.b.ret(_c(0))

    # ------------------------------------------------------------ LPM lookup
    # match(a, b, limit): number of leading bits a and b share, at most `limit`.
    lm = _Fn(mod, "xdpsim_lpm_match", _I64, [_PTR, _PTR, _I64], internal=True)
    a, bb, limit = lm.args
    bit = lm.var(_c(0))

    def match_body(done):
        j = lm.b.lshr(lm.get(bit), _c(3))
        x = lm.b.xor(lm.ld(a, j, _I8), lm.ld(bb, j, _I8))
        with lm.if_then(lm.ne(x, 0)):
            lz = lm.b.zext(lm.b.call(mod.ctlz8, [x, _c(0, _I1)]), _I64)
            got = lm.add(lm.get(bit), lz)
            lm.b.ret(lm.b.select(lm.ult(got, limit), got, limit))
        lm.put(bit, lm.add(lm.get(bit), 8))

    lm.while_(lambda: lm.ult(lm.get(bit), limit), match_body)
    lm.b.ret(limit)

    lpm = _Fn(mod, "xdpsim_lpm_lookup", _I64, [_PTR, _PTR])
    desc, key = lpm.args
    kplen = lpm.ld32(key, 0)
    kdata = lpm.at(key, 4)
    maxp = lpm.dw(desc, W_LPM_MAX_PREFIX)
    lpm.ret_if(lpm.ugt(kplen, maxp), -1)  # the running kernel: a lookup prefixlen > max finds nothing
    node = lpm.var(lpm.dw(desc, W_LPM_ROOT))
    found = lpm.var(_c(-1))

    def lpm_body(done):
        nidx = lpm.sub(lpm.get(node), 1)
        nd = lpm.at(lpm.ptr(lpm.dw(desc, W_LPM_NODES)), lpm.mul(nidx, lpm.dw(desc, W_LPM_NODE_STRIDE)))
        nplen = lpm.ld32(nd, N_PREFIXLEN)
        real = lpm.eq(lpm.band(lpm.ld32(nd, N_FLAGS), NODE_INTERMEDIATE), 0)
        limit = lpm.b.select(lpm.ult(nplen, kplen), nplen, kplen)
        ml = lpm.call(lm, lpm.at(nd, N_DATA), kdata, limit)
        with lpm.if_then(lpm.eq(ml, maxp)):
            with lpm.if_then(real):
                lpm.put(found, lpm.ld32(nd, N_VALUE))
            lpm.b.branch(done)
        with lpm.if_then(lpm.ult(ml, nplen)):
            lpm.b.branch(done)
        with lpm.if_then(real):
            lpm.put(found, lpm.ld32(nd, N_VALUE))
        byte = lpm.b.zext(lpm.ld(kdata, lpm.b.lshr(nplen, _c(3)), _I8), _I64)
        bitv = lpm.band(lpm.b.lshr(byte, lpm.sub(_c(7), lpm.band(nplen, 7))), 1)
        lpm.put(node, lpm.ld32(nd, lpm.add(lpm.mul(bitv, 4), N_CHILD0)))

    lpm.while_(lambda: lpm.ne(lpm.get(node), 0), lpm_body)
    lpm.b.ret(lpm.get(found))

    # ------------------------------------------------------------ dispatchers
    def prog_addr(fn: _Fn, desc, slot, cpu):
        percpu = fn.ne(fn.band(fn.dw(desc, W_FLAGS), F_PERCPU), 0)
        rid = fn.add(fn.dw(desc, W_VALUES_RID), fn.b.select(percpu, cpu, _c(0)))
        return fn.b.or_(fn.b.shl(rid, _c(REGION_SHIFT)), fn.mul(slot, fn.dw(desc, W_VALUE_STRIDE)))

    def array_index(fn: _Fn, desc, key):
        """u32 index from the key, or return `oob` when past max_entries."""
        idx = fn.ld32(key, 0)
        return idx, fn.ult(idx, fn.dw(desc, W_MAX_ENTRIES))

    def table_at(fn: _Fn, desc, idx):
        return fn.b.sext(fn.ld(fn.ptr(fn.dw(desc, W_TABLE)), fn.mul(idx, 4), _I32), _I64)

    ml_ = _Fn(mod, "xdpsim_map_lookup", _I64, [_PTR, _PTR, _I64])
    desc, key, cpu = ml_.args
    kind = ml_.dw(desc, W_KIND)
    kinds = (K_ARRAY, K_HASH, K_LPM, K_SPARSE, K_ARRAY_OF_MAPS, K_HASH_OF_MAPS)
    sw_blocks = {k: ml_.block(f"kind{k}") for k in kinds}
    dflt = ml_.block("none")
    sw = ml_.b.switch(kind, dflt)
    for k, blk in sw_blocks.items():
        sw.add_case(_c(k), blk)
    ml_.b.position_at_end(dflt)
    ml_.b.ret(_c(0))
    # array / percpu array
    ml_.b.position_at_end(sw_blocks[K_ARRAY])
    idx, ok = array_index(ml_, desc, key)
    ml_.ret_if(ml_.b.not_(ok), 0)
    ml_.b.ret(prog_addr(ml_, desc, idx, cpu))
    # sparse arrays (devmap, cpumap, xskmap)
    ml_.b.position_at_end(sw_blocks[K_SPARSE])
    idx, ok = array_index(ml_, desc, key)
    ml_.ret_if(ml_.b.not_(ok), 0)
    ml_.ret_if(ml_.b.icmp_signed("<", table_at(ml_, desc, idx), _c(0)), 0)
    ml_.b.ret(prog_addr(ml_, desc, idx, cpu))
    # hash family
    ml_.b.position_at_end(sw_blocks[K_HASH])
    slot = ml_.call(h_lookup_touch, desc, key)
    ml_.ret_if(ml_.b.icmp_signed("<", slot, _c(0)), 0)
    ml_.b.ret(prog_addr(ml_, desc, slot, cpu))
    # LPM
    ml_.b.position_at_end(sw_blocks[K_LPM])
    slot = ml_.call(lpm, desc, key)
    ml_.ret_if(ml_.b.icmp_signed("<", slot, _c(0)), 0)
    ml_.b.ret(prog_addr(ml_, desc, slot, cpu))
    # array of maps: the inner map's handle
    ml_.b.position_at_end(sw_blocks[K_ARRAY_OF_MAPS])
    idx, ok = array_index(ml_, desc, key)
    ml_.ret_if(ml_.b.not_(ok), 0)
    mid = table_at(ml_, desc, idx)
    ml_.ret_if(ml_.b.icmp_signed("<", mid, _c(0)), 0)
    ml_.b.ret(ml_.b.or_(ml_.dw(desc, W_HANDLE_BASE), mid))
    # hash of maps
    ml_.b.position_at_end(sw_blocks[K_HASH_OF_MAPS])
    slot = ml_.call(h_lookup_touch, desc, key)
    ml_.ret_if(ml_.b.icmp_signed("<", slot, _c(0)), 0)
    mid = ml_.ld32(ml_.call(vptr, desc, slot, _c(0)), 0)
    ml_.b.ret(ml_.b.or_(ml_.dw(desc, W_HANDLE_BASE), mid))

    mu = _Fn(mod, "xdpsim_map_update", _I64, [_PTR, _PTR, _PTR, _I64, _I64])
    desc, key, value, flags, cpu = mu.args
    kind = mu.dw(desc, W_KIND)
    with mu.if_then(mu.eq(kind, K_HASH)):
        r = mu.call(upd, desc, key, value, flags, cpu)
        mu.b.ret(mu.b.select(mu.b.icmp_signed("<", r, _c(0)), r, _c(0)))
    with mu.if_then(mu.eq(kind, K_ARRAY)):
        # kernel order: unknown flags, index range, NOEXIST, lock (arraymap.c)
        unknown = mu.ugt(mu.band(flags, ~BPF_F_LOCK & 0xFFFF_FFFF_FFFF_FFFF), BPF_EXIST)
        mu.ret_if(unknown, -errno.EINVAL)
        idx, ok = array_index(mu, desc, key)
        mu.ret_if(mu.b.not_(ok), -errno.E2BIG)
        mu.ret_if(mu.ne(mu.band(flags, BPF_NOEXIST), 0), -errno.EEXIST)
        no_lock = mu.eq(mu.band(mu.dw(desc, W_FLAGS), F_LOCK), 0)
        lock_wo = mu.b.and_(mu.ne(mu.band(flags, BPF_F_LOCK), 0), no_lock)
        mu.ret_if(lock_wo, -errno.EINVAL)
        percpu = mu.ne(mu.band(mu.dw(desc, W_FLAGS), F_PERCPU), 0)
        dstv = mu.call(vptr, desc, idx, mu.b.select(percpu, cpu, _c(0)))
        mu.call(cpv, desc, dstv, value, _c(0, _I1))
        mu.b.ret(_c(0))
    mu.b.ret(_c(-errno.EOPNOTSUPP))

    md = _Fn(mod, "xdpsim_map_delete", _I64, [_PTR, _PTR])
    desc, key = md.args
    kind = md.dw(desc, W_KIND)
    with md.if_then(md.eq(kind, K_HASH)):
        md.b.ret(md.call(dele, desc, key))
    md.ret_if(md.eq(kind, K_ARRAY), -errno.EINVAL)
    md.b.ret(_c(-errno.EOPNOTSUPP))


# ================================================================ compilation

EXPORTED = (
    "xdpsim_map_lookup",
    "xdpsim_map_update",
    "xdpsim_map_delete",
    "xdpsim_hash_lookup",
    "xdpsim_hash_lookup_touch",
    "xdpsim_hash_update",
    "xdpsim_hash_delete",
    "xdpsim_hash_next_key",
    "xdpsim_lpm_lookup",
    "xdpsim_hash_bytes",
)

_VP = ctypes.c_void_p
_I = ctypes.c_int64
_SIGNATURES = {
    "xdpsim_map_lookup": (_I, _VP, _VP, _I),
    "xdpsim_map_update": (_I, _VP, _VP, _VP, _I, _I),
    "xdpsim_map_delete": (_I, _VP, _VP),
    "xdpsim_hash_lookup": (_I, _VP, _VP),
    "xdpsim_hash_lookup_touch": (_I, _VP, _VP),
    "xdpsim_hash_update": (_I, _VP, _VP, _VP, _I, _I),
    "xdpsim_hash_delete": (_I, _VP, _VP),
    "xdpsim_hash_next_key": (_I, _VP, _VP, _VP),
    "xdpsim_lpm_lookup": (_I, _VP, _VP),
    "xdpsim_hash_bytes": (ctypes.c_uint64, _VP, _I, ctypes.c_uint64),
}


class Native:
    """The compiled module: `addresses[name]` for the JIT, ctypes callables as attributes
    (`hash_lookup`, `map_lookup`, ... without the `xdpsim_` prefix) for everyone else."""

    def __init__(self) -> None:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        target = llvm.Target.from_default_triple()
        self._tm = target.create_target_machine(opt=3, codemodel="jitdefault")
        # the object code is cached on disk (it depends only on this file and LLVM): building and
        # optimising the module costs a second or more at every process start otherwise
        obj = _cache_read()
        if obj is None:
            parsed = llvm.parse_assembly(self.ir)
            parsed.triple = self._tm.triple
            parsed.data_layout = str(self._tm.target_data)
            parsed.verify()
            pto = llvm.create_pipeline_tuning_options(speed_level=3)
            pb = llvm.create_pass_builder(self._tm, pto)
            pb.getModulePassManager().run(parsed, pb)
            obj = self._tm.emit_object(parsed)
            _cache_write(obj)
        empty = llvm.parse_assembly("")
        empty.triple = self._tm.triple
        self._engine = llvm.create_mcjit_compiler(empty, self._tm)
        self._engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        self._engine.finalize_object()
        self.addresses: dict[str, int] = {}
        for name in EXPORTED:
            addr = self._engine.get_function_address(name)
            if not addr:
                raise RuntimeError(f"native map module: {name} missing after compilation")
            self.addresses[name] = addr
            ret, *args = _SIGNATURES[name]
            setattr(self, name.removeprefix("xdpsim_"), ctypes.CFUNCTYPE(ret, *args)(addr))

    @functools.cached_property
    def ir(self) -> str:
        """The module's LLVM IR (built with llvmlite.ir by _build)."""
        mod = _Module()
        _build(mod)
        return str(mod.m)

    # typed attributes filled in __init__ (for readers and type checkers)
    map_lookup: ctypes._CFuncPtr
    map_update: ctypes._CFuncPtr
    map_delete: ctypes._CFuncPtr
    hash_lookup: ctypes._CFuncPtr
    hash_lookup_touch: ctypes._CFuncPtr
    hash_update: ctypes._CFuncPtr
    hash_delete: ctypes._CFuncPtr
    hash_next_key: ctypes._CFuncPtr
    lpm_lookup: ctypes._CFuncPtr
    hash_bytes: ctypes._CFuncPtr


def _cache_path() -> Path | None:
    """$XDG_CACHE_HOME/xdpsim/native/<key>.o, the key hashing this file and the LLVM in use (None when
    XDPSIM_JIT_CACHE=0 disables the disk cache)."""
    if os.environ.get("XDPSIM_JIT_CACHE", "1") == "0":
        return None
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(f"{llvmlite.__version__} {llvm.llvm_version_info} {llvm.get_process_triple()}".encode())
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xdpsim" / "native" / f"maps-{h.hexdigest()[:32]}.o"


def _cache_read() -> bytes | None:
    p = _cache_path()
    try:
        return p.read_bytes() if p is not None else None
    except OSError:
        return None


def _cache_write(obj: bytes) -> None:
    p = _cache_path()
    if p is None:
        return
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")  # write then rename: never half a file
        with os.fdopen(fd, "wb") as f:
            f.write(obj)
        os.replace(tmp, p)
    except OSError:
        pass  # a read-only home is no reason to fail


_native: Native | None = None
_lock = threading.Lock()


def native() -> Native:
    """The process-wide compiled module (compiled on first use, about 0.1 s)."""
    global _native
    if _native is None:
        with _lock:
            if _native is None:
                _native = Native()
    return _native


def address(name: str) -> int:
    """Host address of an exported native function (for the JIT)."""
    return native().addresses[name if name.startswith("xdpsim_") else "xdpsim_" + name]


def handle_base() -> int:
    return MAP_HANDLES << REGION_SHIFT
