"""Writing a stream of (address, length) pieces (struct iovecs) to a file: long pieces by reference with
writev, short ones copied together into a stage first.

Why both: the kernel copies every byte of a write into the page cache whatever the pieces look like, and
a writev costs about a plain write of the same bytes when its pieces are a few hundred bytes or more, but
~100 ns more per piece below that. Copying every piece into a stage first (a plain gather) costs a user
copy of every byte on top of the kernel's. So pieces at least `min_ref` bytes long go to the kernel as
they are (no user copy) and runs of shorter ones are copied back to back into the stage, where each run
is one iovec: the user copy is limited to the short pieces. A writev carries at most MAX_BYTES (1 MiB):
bigger writes make the page cache take 2 MiB folios, which on a VM whose balloon reports free 2 MiB
blocks to the host (virtio free page reporting, order 9) are pages the host must hand over afresh --
several times the kernel's CPU per byte.

`plan` (compiled with llvmlite: a loop over ~100,000 pieces per replay, too many for Python) makes one
writev's iovecs (at most IOV_MAX) from the stream; `write_pieces` writes the whole stream, plan by plan,
resuming after short writes, in one native call (xdpsim_writev_all: the writer thread takes the GIL back
once per stream, not twice per writev -- ~26 times per 65,536-packet batch, each a moment the programs'
thread could find the GIL taken). The bytes written are the pieces' bytes, in order.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from pathlib import Path
from typing import Any

import llvmlite.ir as ir
import numpy as np

IOV_MAX = 1024  # iovecs per writev (Linux's UIO_MAXIOV)
MIN_REF = 512  # pieces at least this long are written by reference (measured: see write_pieces)
MAX_BYTES = 1 << 20  # bytes per writev at most (measured: see write_pieces)

_I1, _I64, _I8 = ir.IntType(1), ir.IntType(64), ir.IntType(8)
_PTR = ir.PointerType()
_NAME = "xdpsim_writev_plan"
_NAME_ALL = "xdpsim_writev_all"


def _c(v: int, ty: ir.IntType = _I64) -> ir.Constant:
    return ir.Constant(ty, v)


def _module() -> ir.Module:
    """xdpsim_writev_plan(pieces, n, min_ref, stage, stage_size, out, out_max, max_bytes, state) -> pieces
    used.

    Walks the n (address, length) pieces: one at least `min_ref` long becomes an iovec of its own; a
    shorter one is copied into the stage after the bytes already there and joins the iovec of the stage
    run it follows, or starts a new one. Stops before a piece when `out_max` iovecs are made and the piece
    would need another, when a short piece does not fit in the stage's room, or when the piece would take
    the iovecs' bytes past `max_bytes`; a first piece longer than that is split: its first `max_bytes`
    bytes are an iovec and its row in `pieces` becomes the rest (not counted as used). Stores the iovecs
    made in state[0] and their bytes in state[1]. The caller keeps min_ref <= stage_size, out_max >= 1
    and max_bytes >= 1, so each call uses or splits a piece whenever n > 0.
    """
    m = ir.Module(name="xdpsim_writev")
    fnty = ir.FunctionType(_I64, [_PTR, _I64, _I64, _PTR, _I64, _PTR, _I64, _I64, _PTR])
    f = ir.Function(m, fnty, _NAME)
    pieces, n, min_ref, stage, stage_size, out, out_max, max_bytes, state = f.args
    memcpy = ir.Function(m, ir.FunctionType(ir.VoidType(), [_PTR, _PTR, _I64, _I1]), "llvm.memcpy.p0.p0.i64")
    names = ["entry", "loop", "piece", "over", "splitroom", "split", "kind", "ref", "refput", "short",
             "shortfit", "newrun", "newput", "copy", "next", "done"]
    bb = {name: f.append_basic_block(name) for name in names}
    b = ir.IRBuilder(bb["entry"])
    b.branch(bb["loop"])

    def at_end(block: str) -> ir.IRBuilder:
        b.position_at_end(bb[block])
        return b

    def word(base: ir.Value, idx: ir.Value, name: str) -> ir.Value:
        return b.gep(base, [idx], source_etype=_I64, name=name)

    def put(idx: ir.Value, addr: ir.Value, length: ir.Value) -> None:
        """out[idx] = (addr, length)"""
        k2 = b.shl(idx, _c(1), "k2")
        b.store(addr, word(out, k2, "oat"), align=8)
        b.store(length, word(out, b.add(k2, _c(1), "k21"), "olen"), align=8)

    # loop: i (pieces used), k (iovecs made), spos (stage bytes used), total (the iovecs' bytes), run (the
    # last iovec is a stage run, which the next short piece extends)
    at_end("loop")
    i, k = b.phi(_I64, "i"), b.phi(_I64, "k")
    spos, total = b.phi(_I64, "spos"), b.phi(_I64, "total")
    run = b.phi(_I1, "run")
    b.cbranch(b.icmp_signed("<", i, n, "more"), bb["piece"], bb["done"])

    at_end("piece")
    i2 = b.shl(i, _c(1), "i2")
    addr = b.load(word(pieces, i2, "atp"), "at", typ=_I64, align=8)
    length = b.load(word(pieces, b.add(i2, _c(1), "i21"), "lenp"), "len", typ=_I64, align=8)
    total1 = b.add(total, length, "total1")
    b.cbranch(b.icmp_unsigned(">", total1, max_bytes, "big"), bb["over"], bb["kind"])

    at_end("over")  # past max_bytes: the next writev's, or, first of its writev, its first max_bytes bytes
    b.cbranch(b.icmp_unsigned("!=", total, _c(0), "some"), bb["done"], bb["splitroom"])
    at_end("splitroom")
    b.cbranch(b.icmp_signed("<", k, out_max, "sroom"), bb["split"], bb["done"])
    at_end("split")
    put(k, addr, max_bytes)
    b.store(b.add(addr, max_bytes, "rest"), word(pieces, i2, "restp"), align=8)
    b.store(b.sub(length, max_bytes, "restlen"), word(pieces, b.add(i2, _c(1), "i21s"), "restlenp"), align=8)
    b.store(b.add(k, _c(1), "ksplit"), state, align=8)
    b.store(max_bytes, word(state, _c(1), "tps"), align=8)
    b.ret(i)

    at_end("kind")
    b.cbranch(b.icmp_unsigned(">=", length, min_ref, "long"), bb["ref"], bb["short"])

    at_end("ref")  # a long piece: an iovec of its own, when there is room for one
    b.cbranch(b.icmp_signed("<", k, out_max, "refroom"), bb["refput"], bb["done"])
    at_end("refput")
    put(k, addr, length)
    k_ref = b.add(k, _c(1), "kref")
    b.branch(bb["next"])

    at_end("short")  # a short piece: copied into the stage, when it fits
    spos1 = b.add(spos, length, "spos1")
    dst = b.gep(stage, [spos], source_etype=_I8, name="dst")
    b.cbranch(b.icmp_unsigned("<=", spos1, stage_size, "fits"), bb["shortfit"], bb["done"])
    at_end("shortfit")
    b.cbranch(run, bb["copy"], bb["newrun"])
    at_end("newrun")  # the first of a run: a new iovec (of length 0, extended below)
    b.cbranch(b.icmp_signed("<", k, out_max, "newroom"), bb["newput"], bb["done"])
    at_end("newput")
    put(k, b.ptrtoint(dst, _I64, "dsti"), _c(0))
    k_new = b.add(k, _c(1), "knew")
    b.branch(bb["copy"])
    at_end("copy")
    kk = b.phi(_I64, "kk")
    kk.add_incoming(k, bb["shortfit"])
    kk.add_incoming(k_new, bb["newput"])
    b.call(memcpy, [dst, b.inttoptr(addr, _PTR, "src"), length, _c(0, _I1)])
    lp = word(out, b.add(b.shl(b.sub(kk, _c(1), "kl"), _c(1), "kl2"), _c(1), "kl21"), "runlen")
    b.store(b.add(b.load(lp, "rl", typ=_I64, align=8), length, "rl1"), lp, align=8)
    b.branch(bb["next"])

    at_end("next")
    k_next, spos_next = b.phi(_I64, "knext"), b.phi(_I64, "snext")
    run_next = b.phi(_I1, "rnext")
    k_next.add_incoming(k_ref, bb["refput"])
    k_next.add_incoming(kk, bb["copy"])
    spos_next.add_incoming(spos, bb["refput"])
    spos_next.add_incoming(spos1, bb["copy"])
    run_next.add_incoming(_c(0, _I1), bb["refput"])
    run_next.add_incoming(_c(1, _I1), bb["copy"])
    i1 = b.add(i, _c(1), "i1")
    b.branch(bb["loop"])

    for phi, first, again in ((i, _c(0), i1), (k, _c(0), k_next), (spos, _c(0), spos_next),
                              (total, _c(0), total1), (run, _c(0, _I1), run_next)):
        phi.add_incoming(first, bb["entry"])
        phi.add_incoming(again, bb["next"])

    at_end("done")
    b.store(k, state, align=8)
    b.store(total, word(state, _c(1), "tp"), align=8)
    b.ret(i)
    _build_write_all(m, f)
    return m


_I32 = ir.IntType(32)
_EINTR = errno.EINTR
NO_PROGRESS = -(1 << 20)  # xdpsim_writev_all's result when a plan used nothing (cannot happen: checked)
WROTE_NOTHING = NO_PROGRESS - 1  # ... when a writev returned 0 with bytes left


def _build_write_all(m: ir.Module, plan: ir.Function) -> None:
    """xdpsim_writev_all(pieces, n, min_ref, stage, stage_size, out, out_max, max_bytes, state, fd, writev,
    errno_at) -> 0, or -errno (WROTE_NOTHING: a writev returned 0; NO_PROGRESS).

    The whole stream in one call (one GIL round trip per stream, not two per writev): plan by plan,
    `writev(fd, iovecs, count)` (ssize_t; -1 and errno set on failure, read through `errno_at()`, the
    address of the thread's errno) again from where a short write stopped, EINTR retried.
    """
    wty = ir.FunctionType(_I64, [_I32, _PTR, _I32])
    ety = ir.FunctionType(_PTR, [])
    fnty = ir.FunctionType(_I64, [_PTR, _I64, _I64, _PTR, _I64, _PTR, _I64, _I64, _PTR, _I32, _I64, _I64])
    f = ir.Function(m, fnty, _NAME_ALL)
    pieces, n, min_ref, stage, stage_size, out, out_max, max_bytes, state, fd, wfn, efn = f.args
    b0 = ir.IRBuilder(f.append_basic_block("fns"))
    wptr = b0.inttoptr(wfn, wty.as_pointer(), "writev")
    eptr = b0.inttoptr(efn, ety.as_pointer(), "errno_at")
    names = ["entry", "loop", "plan", "send", "failed", "fail", "wrote", "partial", "eio", "adv", "skip",
             "part", "sent", "ok", "stuck"]
    bb = {name: f.append_basic_block(name) for name in names}
    b0.branch(bb["entry"])
    b = ir.IRBuilder(bb["entry"])
    b.branch(bb["loop"])

    def at_end(block: str) -> ir.IRBuilder:
        b.position_at_end(bb[block])
        return b

    def word(base: ir.Value, idx: ir.Value, name: str) -> ir.Value:
        return b.gep(base, [idx], source_etype=_I64, name=name)

    at_end("loop")  # i: pieces written
    i = b.phi(_I64, "i")
    b.cbranch(b.icmp_signed("<", i, n, "more"), bb["plan"], bb["ok"])

    at_end("plan")
    at = b.gep(pieces, [b.shl(i, _c(4), "i16")], source_etype=_I8, name="at")
    used = b.call(plan, [at, b.sub(n, i, "left"), min_ref, stage, stage_size, out, out_max, max_bytes,
                         state], name="used")
    count = b.load(state, "count", typ=_I64, align=8)
    total = b.load(word(state, _c(1), "tp"), "total", typ=_I64, align=8)
    progress = b.or_(b.icmp_signed(">", used, _c(0), "u"), b.icmp_signed(">", total, _c(0), "t"), "prog")
    b.cbranch(progress, bb["send"], bb["stuck"])

    at_end("send")  # first: the first iovec not yet written whole; rest: bytes left
    first, rest = b.phi(_I64, "first"), b.phi(_I64, "rest")
    iov = b.gep(out, [b.shl(first, _c(4), "f16")], source_etype=_I8, name="iov")
    got = b.call(wptr, [fd, iov, b.trunc(b.sub(count, first, "cnt"), _I32, "cnt32")], name="got")
    b.cbranch(b.icmp_signed("<", got, _c(0), "neg"), bb["failed"], bb["wrote"])

    at_end("failed")
    err = b.load(b.call(eptr, [], name="errp"), "err", typ=_I32, align=4)
    b.cbranch(b.icmp_signed("==", err, _c(_EINTR, _I32), "intr"), bb["send"], bb["fail"])
    at_end("fail")
    b.ret(b.sub(_c(0), b.sext(err, _I64, "err64"), "nerr"))

    at_end("wrote")
    rest1 = b.sub(rest, got, "rest1")
    b.cbranch(b.icmp_signed("<=", rest1, _c(0), "all"), bb["sent"], bb["partial"])
    at_end("partial")
    b.cbranch(b.icmp_signed("==", got, _c(0), "none"), bb["eio"], bb["adv"])
    at_end("eio")
    b.ret(_c(WROTE_NOTHING))

    at_end("adv")  # skip the iovecs written whole; the one cut short starts where the write stopped
    fa, ra = b.phi(_I64, "fa"), b.phi(_I64, "ra")
    lenp = word(out, b.add(b.shl(fa, _c(1), "fa2"), _c(1), "fa21"), "lenp")
    length = b.load(lenp, "len", typ=_I64, align=8)
    b.cbranch(b.icmp_unsigned(">=", ra, length, "whole"), bb["skip"], bb["part"])
    at_end("skip")
    fa1, ra1 = b.add(fa, _c(1), "fa1"), b.sub(ra, length, "ra1")
    b.branch(bb["adv"])
    at_end("part")
    basep = word(out, b.shl(fa, _c(1), "fb2"), "basep")
    b.store(b.add(b.load(basep, "base", typ=_I64, align=8), ra, "base1"), basep, align=8)
    b.store(b.sub(length, ra, "len1"), lenp, align=8)
    b.branch(bb["send"])

    at_end("sent")
    i1 = b.add(i, used, "i1")
    b.branch(bb["loop"])
    at_end("ok")
    b.ret(_c(0))
    at_end("stuck")
    b.ret(_c(NO_PROGRESS))

    i.add_incoming(_c(0), bb["entry"])
    i.add_incoming(i1, bb["sent"])
    first.add_incoming(_c(0), bb["plan"])
    first.add_incoming(first, bb["failed"])
    first.add_incoming(fa, bb["part"])
    rest.add_incoming(total, bb["plan"])
    rest.add_incoming(rest, bb["failed"])
    rest.add_incoming(rest1, bb["part"])
    fa.add_incoming(first, bb["partial"])
    fa.add_incoming(fa1, bb["skip"])
    ra.add_incoming(got, bb["partial"])
    ra.add_incoming(ra1, bb["skip"])


_PLAN = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                         ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
# (the plan's arguments, then fd, writev's and __errno_location's addresses)
_WRITE_ALL = ctypes.CFUNCTYPE(_PLAN._restype_, *_PLAN._argtypes_, ctypes.c_int, ctypes.c_int64,
                              ctypes.c_int64)
_lock = threading.Lock()
_compiled: list = []  # [(engine, plan, write_all)] once compiled, [None] when llvmlite cannot


def _native() -> Any:
    """The compiled plan function (None where llvmlite cannot compile it)."""
    with _lock:
        if not _compiled:
            try:
                from ..io.native import native_engine

                # (disk-cached: tens of ms the writer thread would spend at every replay's first write)
                engine = native_engine("writev", Path(__file__), _module)
                _compiled.append((engine, _PLAN(engine.get_function_address(_NAME)),
                                  _WRITE_ALL(engine.get_function_address(_NAME_ALL))))
            except Exception:  # noqa: BLE001 - any llvmlite failure means: the caller's plain gather
                _compiled.append(None)
        return _compiled[0]


def available() -> bool:
    """Whether write_pieces can run here (llvmlite compiled its plan)."""
    return _native() is not None


_libc = ctypes.CDLL(None, use_errno=True)
_libc.writev.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
_libc.writev.restype = ctypes.c_ssize_t
# (the native loop calls these itself)
_LIBC_WRITEV = ctypes.cast(_libc.writev, ctypes.c_void_p).value or 0
_LIBC_ERRNO = ctypes.cast(_libc["__errno_location"], ctypes.c_void_p).value or 0
_WRITEV_T = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
_ERRNO_T = ctypes.CFUNCTYPE(ctypes.c_void_p)


def _writev(fd: int, iov_addr: int, count: int) -> int:
    """writev(2) of the `count` iovecs at iov_addr (the GIL released): bytes written; OSError on failure.
    (A function of its own: tests replace it with one writing less, as the kernel may.)"""
    while True:
        done = _libc.writev(fd, iov_addr, count)
        if done >= 0:
            return int(done)
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise OSError(err, os.strerror(err))


class _Scratch(threading.local):
    """Per writing thread: the iovecs of one writev and the plan's two results."""

    def __init__(self) -> None:
        self.out = np.zeros((IOV_MAX, 2), np.uint64)
        self.state = np.zeros(2, np.int64)
        self.addrs = (self.out.ctypes.data, self.state.ctypes.data)


_scratch = _Scratch()


def write_pieces(fd: int, iov: np.ndarray, n: int, stage: np.ndarray, min_ref: int = MIN_REF,
                 max_iov: int = IOV_MAX, max_bytes: int = MAX_BYTES) -> None:
    """The n (address, length) pieces of `iov` (uint64 rows, struct iovecs; readable memory) to fd, in
    order: writevs of at most `max_bytes` (a longer piece is split; its row in `iov` is changed to its
    rest meanwhile) of the pieces at least `min_ref` long as they are and of the shorter ones copied
    together into `stage` (which a writev's return leaves free again). Short writes resume where they
    stopped; errors are raised as OSError. Needs available().

    Measured on the reference replay (1M packets, 210 MB in ~105,000 pieces; writer thread CPU s, median
    of alternating runs, output pages recycled): everything gathered then written 0.13; min_ref 256 to
    2048 with 1 MiB writevs 0.086-0.09 (user time 0.06 -> 0.01-0.02; the kernel's copy, ~0.07, is the
    rest). min_ref: below ~256 the kernel's cost per iovec grows, above ~2048 the copies of short pieces.
    max_bytes: unbounded writevs (~6 MiB each here) cost the kernel 0.16 instead of 0.07 (the page cache
    then takes 2 MiB folios, which on this VM are pages the host must hand over afresh), 512 KiB ones
    0.1 (more calls); a replay rewriting every packet (rewrite.o:swap_tx: 4 MiB pieces of record
    buffers, written whole before) 0.136 -> 0.099. max_iov: iovecs per writev (fewer: for tests).
    """
    write_all = _native()[2]
    if not 0 < min_ref <= len(stage):
        raise ValueError(f"min_ref {min_ref} must be in 1..{len(stage)} (the stage's size)")
    if not 0 < max_iov <= IOV_MAX:
        raise ValueError(f"max_iov {max_iov} must be in 1..{IOV_MAX}")
    if max_bytes < 1:
        raise ValueError(f"max_bytes {max_bytes} must be at least 1")
    iov = np.ascontiguousarray(iov[:n], np.uint64)
    out_addr, state_addr = _scratch.addrs
    with _Syscalls() as (wfn, efn):
        got = write_all(iov.ctypes.data, n, min_ref, stage.ctypes.data, len(stage), out_addr, max_iov,
                        max_bytes, state_addr, fd, wfn, efn)
    if got == NO_PROGRESS:  # (cannot happen with the checks above)
        raise RuntimeError(f"writev plan made no progress ({n} pieces)")
    if got == WROTE_NOTHING:
        raise OSError(errno.EIO, f"writev to fd {fd} wrote nothing")
    if got < 0:
        raise OSError(-got, os.strerror(-got))


class _Syscalls:
    """The writev and errno-address functions the native loop calls: libc's own, or, where a test
    replaced `_writev` or `_libc` (to write less, or fail), callbacks into those (errno kept here)."""

    _REAL = (_writev, _libc)

    def __enter__(self) -> tuple[int, int]:
        if (_writev, _libc) == self._REAL:
            return _LIBC_WRITEV, _LIBC_ERRNO
        err = ctypes.c_int(0)

        def call(fd: int, addr: int, count: int) -> int:
            try:
                return _writev(fd, addr, count)
            except OSError as e:
                err.value = e.errno or errno.EIO
                return -1

        self._fns = (_WRITEV_T(call), _ERRNO_T(lambda: ctypes.addressof(err)), err)
        return (ctypes.cast(self._fns[0], ctypes.c_void_p).value or 0,
                ctypes.cast(self._fns[1], ctypes.c_void_p).value or 0)

    def __exit__(self, *exc: object) -> None:
        self._fns = None


