"""The two loops of capture I/O that numpy cannot vectorise, compiled with llvmlite.

- `index_records(buf, pos, count, endian)` walks at most `count` 16-byte-header pcap records from
  `pos` and returns their start offsets and the offset where it stopped: at the end of the buffer, at
  a record whose header or data runs past the end, or at one claiming more than MAX_SNAPLEN bytes (the
  caller decides what that is). Each record's position depends on the previous one's length.
  `walk_records` is the same walk also reading each record's lengths and timestamp on the way (the
  batch reader's one pass over the record headers).
- `index_pcapng(buf, pos, count, endian, snaps)` does the same for plain pcapng Enhanced Packet
  Blocks, stopping at any other block or at anything the streaming reader would have to look at.
- `put_headers(out, headers, offsets)` copies header rows into the gaps before packets in `out`.
- `interleave(headers, data, offsets, lengths)` builds `header 0, packet 0, header 1, packet 1, ...`
  (a pcap image) with one memcpy per piece; with zero-width headers it is a gather of byte ranges.
- `gather(out, pieces)` copies (address, length) pieces (struct iovecs) back to back.

Both run tens of millions of records per second. Where llvmlite cannot compile them, equivalent
Python/numpy code runs instead (`use_native=False` selects it, for tests).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import struct
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import llvmlite.ir as ir
import numpy as np

from .reader import MAX_SNAPLEN

MAX_BLOCK = 16 * 1024 * 1024  # pcapng.py's limit (imported from there would be circular)
_PREFETCH_AHEAD = 2048  # bytes: ~10 records of the reference workload
# cache lines asked for from there on, per record: the walk steps ~200 bytes a record, so one line a
# record leaves most header lines unasked (a walk over mapped, uncached pages: ~25.5 ns a record with 1,
# 22.5 with 4)
_PREFETCH_LINES = 4

_I1 = ir.IntType(1)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_I8 = ir.IntType(8)
_PTR = ir.PointerType()
_VOID = ir.VoidType()


def _c(v: int, ty: ir.IntType = _I64) -> ir.Constant:
    return ir.Constant(ty, v)


class _Fn:
    """One function under construction: its named arguments, its blocks and a builder.

    The loops keep their variables in phi nodes (as the hand-written IR did), so the machine code is the
    same without an optimisation pass.
    """

    def __init__(self, m: ir.Module, name: str, ret: ir.Type, args: list[tuple[str, ir.Type]],
                 blocks: list[str]) -> None:
        self.m = m
        self.f = ir.Function(m, ir.FunctionType(ret, [t for _, t in args]), name)
        self.a: dict[str, ir.Argument] = {}
        for arg, (arg_name, _) in zip(self.f.args, args, strict=True):
            arg.name = arg_name
            self.a[arg_name] = arg
        self.bb = {b: self.f.append_basic_block(b) for b in ["entry", *blocks]}
        self.b = ir.IRBuilder(self.bb["entry"])

    def at(self, block: str) -> ir.IRBuilder:
        """The builder, positioned at the end of `block`."""
        self.b.position_at_end(self.bb[block])
        return self.b

    def br(self, block: str) -> None:
        self.b.branch(self.bb[block])

    def cbr(self, cond: ir.Value, yes: str, no: str) -> None:
        self.b.cbranch(cond, self.bb[yes], self.bb[no])

    def phi(self, name: str, ty: ir.Type = _I64) -> ir.PhiInstr:
        return self.b.phi(ty, name)

    def append_loop(self, n: ir.Value,
                    append: Callable[[ir.IRBuilder, ir.Value, ir.Value], ir.Value]) -> None:
        """The whole function (blocks check, body, done): pos = 0; for i in range(n): pos = append(b, i,
        pos) (emitting item i at out + pos, returning the next pos); return pos."""
        self.at("entry")
        self.br("check")
        b = self.at("check")
        i, pos = self.phi("i"), self.phi("pos")
        self.cbr(b.icmp_signed("<", i, n, "more"), "body", "done")
        b = self.at("body")
        pos1 = append(b, i, pos)
        i1 = b.add(i, _c(1), "i1")
        body_end = b.block
        self.br("check")
        i.add_incoming(_c(0), self.bb["entry"])
        i.add_incoming(i1, body_end)
        pos.add_incoming(_c(0), self.bb["entry"])
        pos.add_incoming(pos1, body_end)
        self.at("done").ret(pos)

    def intrinsic(self, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        """The module's declaration of an LLVM intrinsic, declared on first use."""
        if name in self.m.globals:
            return self.m.globals[name]
        return ir.Function(self.m, ir.FunctionType(ret, args), name)

    def byte_ptr(self, base: ir.Value, off: ir.Value, name: str = "") -> ir.Value:
        return self.b.gep(base, [off], source_etype=_I8, name=name)

    def elem_ptr(self, base: ir.Value, ty: ir.Type, idx: ir.Value, name: str = "") -> ir.Value:
        return self.b.gep(base, [idx], source_etype=ty, name=name)

    def file_u32(self, buf: ir.Value, off: ir.Value, swap: ir.Value, name: str) -> ir.Value:
        """The unaligned u32 at buf + off in the file's byte order (swapped when `swap` is true)."""
        raw = self.b.load(self.byte_ptr(buf, off, name + ".p"), name + ".r", typ=_I32, align=1)
        bswap = self.intrinsic("llvm.bswap.i32", _I32, [_I32])
        swapped = self.b.call(bswap, [raw], name + ".s")
        return self.b.select(swap, swapped, raw, name + ".v")

    def memcpy(self, dst: ir.Value, src: ir.Value, n: ir.Value) -> None:
        fn = self.intrinsic("llvm.memcpy.p0.p0.i64", _VOID, [_PTR, _PTR, _I64, _I1])
        self.b.call(fn, [dst, src, n, _c(0, _I1)])


def _build_pcap_index(m: ir.Module) -> None:
    """xdpsim_pcap_index(buf, size, pos0, max, out, swap, endpos, caps, origs, tss, scale, limit, odd)
    -> records.

    Walks at most `max` pcap records from pos0; stores each record's offset (out), captured length
    (caps, u32), original length (origs) and timestamp in ns (tss: secs * 1e9 + frac * scale); stops at
    a record whose header or data runs past `size` or that claims more than MAX_SNAPLEN bytes, and
    stores the offset where it stopped in *endpos. Adds to *odd the records the reader must look at
    (captured length above `limit`, or original length below the captured one).
    """
    fn = _Fn(m, "xdpsim_pcap_index", _I64,
             [("buf", _PTR), ("size", _I64), ("pos0", _I64), ("max", _I64), ("out", _PTR), ("swap", _I32),
              ("endpos", _PTR), ("caps", _PTR), ("origs", _PTR), ("tss", _PTR), ("scale", _I64),
              ("limit", _I64), ("odd", _PTR)],
             ["loop", "hdr", "len", "fit", "store", "done"])
    a = fn.a
    b = fn.at("entry")
    sw = b.icmp_unsigned("!=", a["swap"], _c(0, _I32), "sw")
    fn.br("loop")

    b = fn.at("loop")
    pos, n, odd = fn.phi("pos"), fn.phi("n"), fn.phi("odd")
    fn.cbr(b.icmp_signed(">=", n, a["max"], "full"), "done", "hdr")

    b = fn.at("hdr")
    p16 = b.add(pos, _c(16), "p16")
    # the headers a few records on, asked for now: each header's position depends on the one before,
    # so without this the walk waits for every header's line in turn (a prefetch never faults)
    prefetch = fn.intrinsic("llvm.prefetch.p0", _VOID, [_PTR, _I32, _I32, _I32])
    for line in range(_PREFETCH_LINES):
        at = fn.byte_ptr(a["buf"], b.add(pos, _c(_PREFETCH_AHEAD + 64 * line), "pf"))
        b.call(prefetch, [at, _c(0, _I32), _c(3, _I32), _c(1, _I32)])
    fn.cbr(b.icmp_unsigned(">", p16, a["size"], "nohdr"), "done", "len")

    b = fn.at("len")
    cl = fn.file_u32(a["buf"], b.add(pos, _c(8), "p8"), sw, "cl")
    cl64 = b.zext(cl, _I64, "cl64")
    fn.cbr(b.icmp_unsigned(">", cl64, _c(MAX_SNAPLEN), "big"), "done", "fit")

    b = fn.at("fit")
    nxt = b.add(p16, cl64, "nxt")
    fn.cbr(b.icmp_unsigned(">", nxt, a["size"], "over"), "done", "store")

    b = fn.at("store")
    b.store(pos, fn.elem_ptr(a["out"], _I64, n, "op"), align=8)
    b.store(cl, fn.elem_ptr(a["caps"], _I32, n, "cp"), align=4)
    sec = fn.file_u32(a["buf"], pos, sw, "sec")
    frac = fn.file_u32(a["buf"], b.add(pos, _c(4), "p4"), sw, "frac")
    orig = fn.file_u32(a["buf"], b.add(pos, _c(12), "p12"), sw, "orig")
    b.store(b.zext(orig, _I64, "orig64"), fn.elem_ptr(a["origs"], _I64, n, "oq"), align=8)
    sec64, frac64 = b.zext(sec, _I64, "sec64"), b.zext(frac, _I64, "frac64")
    secns = b.mul(sec64, _c(1_000_000_000), "secns")
    fracns = b.mul(frac64, a["scale"], "fracns")
    b.store(b.add(secns, fracns, "ts"), fn.elem_ptr(a["tss"], _I64, n, "tq"), align=8)
    over = b.icmp_unsigned(">", cl64, a["limit"], "over")
    short = b.icmp_unsigned("<", orig, cl, "short")
    odd1 = b.add(odd, b.zext(b.or_(over, short, "isodd"), _I64, "odd01"), "odd1")
    n1 = b.add(n, _c(1), "n1")
    fn.br("loop")

    pos.add_incoming(a["pos0"], fn.bb["entry"])
    pos.add_incoming(nxt, fn.bb["store"])
    n.add_incoming(_c(0), fn.bb["entry"])
    n.add_incoming(n1, fn.bb["store"])
    odd.add_incoming(_c(0), fn.bb["entry"])
    odd.add_incoming(odd1, fn.bb["store"])

    b = fn.at("done")
    b.store(pos, a["endpos"], align=8)
    old_odd = b.load(a["odd"], "odd0", typ=_I64, align=8)
    b.store(b.add(old_odd, odd, "oddsum"), a["odd"], align=8)
    b.ret(n)


def _build_put_headers(m: ir.Module) -> None:
    """xdpsim_put_headers(out, hdrs, hsize, offs, n): copies header row i to out[offs[i] - hsize:]."""
    fn = _Fn(m, "xdpsim_put_headers", _VOID,
             [("out", _PTR), ("hdrs", _PTR), ("hsize", _I64), ("offs", _PTR), ("n", _I64)],
             ["check", "body", "done"])
    a = fn.a
    fn.at("entry")
    fn.br("check")

    b = fn.at("check")
    i = fn.phi("i")
    fn.cbr(b.icmp_signed("<", i, a["n"], "more"), "body", "done")

    b = fn.at("body")
    hp = fn.byte_ptr(a["hdrs"], b.mul(i, a["hsize"], "hsrc"), "hp")
    off = b.load(fn.elem_ptr(a["offs"], _I64, i, "offp"), "off", typ=_I64, align=8)
    op = fn.byte_ptr(a["out"], b.sub(off, a["hsize"], "dst"), "op")
    fn.memcpy(op, hp, a["hsize"])
    i1 = b.add(i, _c(1), "i1")
    fn.br("check")

    i.add_incoming(_c(0), fn.bb["entry"])
    i.add_incoming(i1, fn.bb["body"])

    fn.at("done").ret_void()


def _build_interleave(m: ir.Module) -> None:
    """xdpsim_interleave(out, hdrs, hsize, data, offs, lens, n) -> bytes written.

    Writes header row i then data[offs[i]:offs[i] + lens[i]] for each i, back to back from out.
    """
    fn = _Fn(m, "xdpsim_interleave", _I64,
             [("out", _PTR), ("hdrs", _PTR), ("hsize", _I64), ("data", _PTR), ("offs", _PTR),
              ("lens", _PTR), ("n", _I64)],
             ["check", "body", "done"])
    a = fn.a

    def record(b: ir.IRBuilder, i: ir.Value, pos: ir.Value) -> ir.Value:
        hp = fn.byte_ptr(a["hdrs"], b.mul(i, a["hsize"], "hsrc"), "hp")
        fn.memcpy(fn.byte_ptr(a["out"], pos, "op"), hp, a["hsize"])
        pos1 = b.add(pos, a["hsize"], "pos1")
        off = b.load(fn.elem_ptr(a["offs"], _I64, i, "offp"), "off", typ=_I64, align=8)
        length = b.load(fn.elem_ptr(a["lens"], _I64, i, "lenp"), "len", typ=_I64, align=8)
        dp = fn.byte_ptr(a["data"], off, "dp")
        fn.memcpy(fn.byte_ptr(a["out"], pos1, "op2"), dp, length)
        return b.add(pos1, length, "pos2")

    fn.append_loop(a["n"], record)


def _build_gather(m: ir.Module) -> None:
    """xdpsim_gather(out, pieces, n) -> bytes written: the n (address, length) pieces (u64 pairs, struct
    iovecs) back to back from out."""
    fn = _Fn(m, "xdpsim_gather", _I64, [("out", _PTR), ("pieces", _PTR), ("n", _I64)],
             ["check", "body", "done"])
    a = fn.a

    def piece(b: ir.IRBuilder, i: ir.Value, pos: ir.Value) -> ir.Value:
        at = b.load(fn.elem_ptr(a["pieces"], _I64, b.mul(i, _c(2)), "atp"), "at", typ=_I64, align=8)
        length = b.load(fn.elem_ptr(a["pieces"], _I64, b.add(b.mul(i, _c(2)), _c(1)), "lenp"), "len",
                        typ=_I64, align=8)
        fn.memcpy(fn.byte_ptr(a["out"], pos, "op"), b.inttoptr(at, _PTR, "src"), length)
        return b.add(pos, length, "pos1")

    fn.append_loop(a["n"], piece)


def _build_pcapng_index(m: ir.Module) -> None:
    """xdpsim_pcapng_index(buf, size, pos0, max, out, swap, nif, snaps, endpos) -> blocks.

    Walks plain Enhanced Packet Blocks: stops at any other block, or at one with anything the streaming
    reader would warn about or refuse (bad length or trailer, unknown interface, an interface marked
    slow (snaps[id] < 0), captured length beyond the block or the snap length, orig_len < caplen).
    """
    fn = _Fn(m, "xdpsim_pcapng_index", _I64,
             [("buf", _PTR), ("size", _I64), ("pos0", _I64), ("max", _I64), ("out", _PTR), ("swap", _I32),
              ("nif", _I64), ("snaps", _PTR), ("endpos", _PTR)],
             ["loop", "room", "type", "blen", "trail", "iface", "snap", "cap", "store", "done"])
    a = fn.a

    def u32_at(off: ir.Value, name: str) -> ir.Value:
        """The u32 at pos + off, as i64."""
        v = fn.file_u32(a["buf"], fn.b.add(pos, off, name + ".a"), sw, name)
        return fn.b.zext(v, _I64, name)

    b = fn.at("entry")
    sw = b.icmp_unsigned("!=", a["swap"], _c(0, _I32), "sw")
    fn.br("loop")

    b = fn.at("loop")
    pos, n = fn.phi("pos"), fn.phi("n")
    fn.cbr(b.icmp_signed(">=", n, a["max"], "full"), "done", "room")

    b = fn.at("room")
    p32 = b.add(pos, _c(32), "p32")
    fn.cbr(b.icmp_unsigned(">", p32, a["size"], "short"), "done", "type")

    b = fn.at("type")
    btype = u32_at(_c(0), "btype")
    fn.cbr(b.icmp_unsigned("==", btype, _c(6), "isepb"), "blen", "done")

    b = fn.at("blen")
    length = u32_at(_c(4), "len")
    small = b.icmp_unsigned("<", length, _c(32), "small")
    misb = b.icmp_unsigned("!=", b.and_(length, _c(3), "mis"), _c(0), "misb")
    big = b.icmp_unsigned(">", length, _c(MAX_BLOCK), "big")
    bad2 = b.or_(b.or_(small, misb, "bad1"), big, "bad2")
    nxt = b.add(pos, length, "nxt")
    bad3 = b.or_(bad2, b.icmp_unsigned(">", nxt, a["size"], "over"), "bad3")
    fn.cbr(bad3, "done", "trail")

    b = fn.at("trail")
    trailer = u32_at(b.sub(length, _c(4), "toff"), "trailer")
    fn.cbr(b.icmp_unsigned("!=", trailer, length, "tbad"), "done", "iface")

    b = fn.at("iface")
    ifid = u32_at(_c(8), "ifid")
    fn.cbr(b.icmp_unsigned(">=", ifid, a["nif"], "noif"), "done", "snap")

    b = fn.at("snap")
    snaplen = b.load(fn.elem_ptr(a["snaps"], _I64, ifid, "sp"), "snaplen", typ=_I64, align=8)
    fn.cbr(b.icmp_signed("<", snaplen, _c(0), "slow"), "done", "cap")

    b = fn.at("cap")
    caplen = u32_at(_c(20), "caplen")
    orig = u32_at(_c(24), "orig")
    c1 = b.icmp_unsigned(">", caplen, b.sub(length, _c(32), "room2"), "c1")
    hassnap = b.icmp_signed(">", snaplen, _c(0), "hassnap")
    c2 = b.and_(hassnap, b.icmp_unsigned(">", caplen, snaplen, "oversnap"), "c2")
    c3 = b.icmp_unsigned("<", orig, caplen, "c3")
    fn.cbr(b.or_(b.or_(c1, c2, "c12"), c3, "c123"), "done", "store")

    b = fn.at("store")
    b.store(pos, fn.elem_ptr(a["out"], _I64, n, "op"), align=8)
    n1 = b.add(n, _c(1), "n1")
    fn.br("loop")

    pos.add_incoming(a["pos0"], fn.bb["entry"])
    pos.add_incoming(nxt, fn.bb["store"])
    n.add_incoming(_c(0), fn.bb["entry"])
    n.add_incoming(n1, fn.bb["store"])

    b = fn.at("done")
    b.store(pos, a["endpos"], align=8)
    b.ret(n)


def _module() -> ir.Module:
    """The IR module of every walker, as text llvmlite can compile."""
    m = ir.Module(name="xdpsim_io")
    for build in (_build_pcap_index, _build_put_headers, _build_interleave, _build_pcapng_index,
                  _build_gather):
        build(m)
    return m


_CI64, _CVP = ctypes.c_int64, ctypes.c_void_p
_INDEX = ctypes.CFUNCTYPE(_CI64, _CVP, _CI64, _CI64, _CI64, _CVP, ctypes.c_int32, _CVP, _CVP, _CVP, _CVP,
                          _CI64, _CI64, _CVP)
_INTERLEAVE = ctypes.CFUNCTYPE(_CI64, _CVP, _CVP, _CI64, _CVP, _CVP, _CVP, _CI64)
_PUT_HEADERS = ctypes.CFUNCTYPE(None, _CVP, _CVP, _CI64, _CVP, _CI64)
_NG_INDEX = ctypes.CFUNCTYPE(_CI64, _CVP, _CI64, _CI64, _CI64, _CVP, ctypes.c_int32, _CI64, _CVP, _CVP)
_GATHER = ctypes.CFUNCTYPE(_CI64, _CVP, _CVP, _CI64)
_lock = threading.Lock()
# [(engine, index, interleave, pcapng index, put headers, gather)] once compiled, [None] when llvmlite is
# unusable
_compiled: list = []


def _native():
    with _lock:
        if not _compiled:
            try:
                engine = native_engine("walkers", Path(__file__), _module)
                _compiled.append((engine, _INDEX(engine.get_function_address("xdpsim_pcap_index")),
                                  _INTERLEAVE(engine.get_function_address("xdpsim_interleave")),
                                  _NG_INDEX(engine.get_function_address("xdpsim_pcapng_index")),
                                  _PUT_HEADERS(engine.get_function_address("xdpsim_put_headers")),
                                  _GATHER(engine.get_function_address("xdpsim_gather"))))
            except Exception:  # noqa: BLE001 - any llvmlite failure means: run the Python version
                _compiled.append(None)
        return _compiled[0]


def native_engine(name: str, source: Path, module: Callable[[], ir.Module]) -> Any:
    """An llvmlite engine holding the machine code of `module()` (built from the file `source`; disk-cached
    as `name`, see cached_object_code), finalised: read its functions with get_function_address."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    tm = llvm.Target.from_default_triple().create_target_machine(opt=2)
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
    engine.add_object_file(llvm.ObjectFileRef.from_data(cached_object_code(name, source, module, llvm, tm)))
    engine.finalize_object()
    return engine


def cached_object_code(name: str, source: Path, module: Callable[[], ir.Module], llvm: Any, tm: Any) -> bytes:
    """Machine code of `module()` (built from the file `source`): from the disk cache beside the JIT's
    (off with XDPSIM_JIT_CACHE=0) when this source built it with this LLVM for this target, else
    compiled and cached (whole files only: written aside, then renamed, for concurrent readers)."""
    path = None
    if os.environ.get("XDPSIM_JIT_CACHE", "1") != "0":
        h = hashlib.sha256(source.read_bytes())
        h.update(f"{llvm.llvm_version_info} {tm.triple} {tm.target_data}".encode())
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = Path(base) / "xdpsim" / "io" / f"{name}-{h.hexdigest()[:32]}.o"
        try:
            return path.read_bytes()
        except OSError:
            pass
    mod = llvm.parse_assembly(str(module()))
    mod.verify()
    obj = tm.emit_object(mod)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(obj)
            os.replace(tmp, path)
        except OSError:
            pass  # (no cache then: compiled again next time)
    return obj


def index_records(buf: np.ndarray, pos: int, count: int, endian: str,
                  use_native: bool = True) -> tuple[np.ndarray, int]:
    """(start offsets of up to `count` complete records from `pos`, offset where the walk stopped).

    `buf` is a uint8 array of the whole file, `endian` the file's byte order ("<" or ">").
    """
    w = walk_records(buf, pos, count, endian, 1000, use_native)
    return w.starts, w.end


class RecordWalk(NamedTuple):
    """What `walk_records` found: per record its start offset, captured length, original length (as the
    file says, unchecked) and timestamp in ns; `end` is the offset where the walk stopped; `odd` counts
    the records the reader must warn about (see RecordWalker's `limit`)."""

    starts: np.ndarray  # int64
    caplen: np.ndarray  # int32
    orig: np.ndarray  # int64
    ts_ns: np.ndarray  # int64
    end: int
    odd: int = 0  # records with caplen above the walk's `limit` or orig below caplen (0: none to look at)


def walk_records(buf: np.ndarray, pos: int, count: int, endian: str, frac_scale: int,
                 use_native: bool = True, limit: int = MAX_SNAPLEN) -> RecordWalk:
    """index_records that also reads each record's header fields in the same pass (no second gather
    over the headers): timestamps are `sec * 10**9 + frac * frac_scale`; `odd` counts the records with
    a captured length above `limit` or an original length below it."""
    native = _native() if use_native else None
    if native is not None:
        out = np.empty((4, count), dtype=np.int64)  # one allocation for the four columns
        caps = out[3].view(np.int32)[:count]  # (int32: half of the last row)
        end, odd = ctypes.c_int64(0), ctypes.c_int64(0)
        swap = int((endian == "<") != (sys.byteorder == "little"))
        n = native[1](buf.ctypes.data, len(buf), pos, count, out.ctypes.data, swap, ctypes.addressof(end),
                      caps.ctypes.data, out[1].ctypes.data, out[2].ctypes.data, frac_scale, limit,
                      ctypes.addressof(odd))
        return RecordWalk(out[0, :n], caps[:n], out[1, :n], out[2, :n], end.value, odd.value)
    starts, end = _index_python(buf, pos, count, endian)
    heads = buf[starts[:, None] + np.arange(16)].view(endian + "u4").astype(np.int64).reshape(-1, 4)
    caplen, orig = heads[:, 2], heads[:, 3].copy()
    odd = int(np.count_nonzero((caplen > limit) | (orig < caplen)))
    ts = heads[:, 0] * 1_000_000_000 + heads[:, 1] * frac_scale
    return RecordWalk(starts, caplen.astype(np.int32), orig, ts, end, odd)


class RecordWalker:
    """walk_records in steps, over a buffer being filled piece by piece: each `step` walks the records
    the bytes loaded so far hold and appends them to the same arrays, so the record headers are read
    while the piece just read is still in cache (a walk over a buffer bigger than the cache waits on
    memory at every record: each header's position depends on the one before)."""

    def __init__(self, count: int, endian: str, frac_scale: int, use_native: bool = True,
                 out: np.ndarray | None = None, limit: int = MAX_SNAPLEN) -> None:
        self.count, self.endian, self.scale, self.limit = count, endian, frac_scale, limit
        self.native = _native() if use_native else None
        # one allocation for the four columns; `out` (int64, 4 x count): the caller's, reused
        self.out = np.empty((4, count), dtype=np.int64) if out is None else out
        self.caps = self.out[3].view(np.int32)[:count]  # (int32: half of the last row)
        self.swap = int((endian == "<") != (sys.byteorder == "little"))
        self.n = 0
        self._end = ctypes.c_int64(0)
        self._end_at = ctypes.addressof(self._end)
        self._odd = ctypes.c_int64(0)  # (the native walk adds to it)
        self._odd_at = ctypes.addressof(self._odd)
        self.odd = 0  # the Python walk's count
        # the columns' addresses, taken once (`.ctypes.data` costs microseconds: a batch's walk takes
        # one step per piece read, and the pieces are small so that each is walked while in cache)
        o = self.out
        self._cols = (o[0].ctypes.data, self.caps.ctypes.data, o[1].ctypes.data, o[2].ctypes.data)
        self._buf: tuple[np.ndarray, int] | None = None

    def step(self, buf: np.ndarray, have: int, pos: int) -> int:
        """Walk buf[:have] from `pos` (until `count` records in all); returns where the walk stopped."""
        k = self.count - self.n
        if k <= 0:
            return pos
        n0 = self.n
        if self.native is not None:
            known = self._buf
            if known is None or known[0] is not buf:
                known = self._buf = (buf, buf.ctypes.data)
            starts, caps, origs, tss = self._cols
            got = self.native[1](known[1], have, pos, k, starts + 8 * n0, self.swap, self._end_at,
                                 caps + 4 * n0, origs + 8 * n0, tss + 8 * n0, self.scale, self.limit,
                                 self._odd_at)
            self.n += got
            return self._end.value
        o = self.out
        w = walk_records(buf[:have], pos, k, self.endian, self.scale, use_native=False, limit=self.limit)
        self.odd += w.odd
        got = len(w.starts)
        o[0, n0 : n0 + got], self.caps[n0 : n0 + got] = w.starts, w.caplen
        o[1, n0 : n0 + got], o[2, n0 : n0 + got] = w.orig, w.ts_ns
        self.n += got
        return w.end

    def result(self, end: int) -> RecordWalk:
        n = self.n
        return RecordWalk(self.out[0, :n], self.caps[:n], self.out[1, :n], self.out[2, :n], end,
                          self.odd + self._odd.value)


def _index_python(buf: np.ndarray, pos: int, count: int, endian: str) -> tuple[np.ndarray, int]:
    caplen_at = struct.Struct(endian + "I").unpack_from
    mv = memoryview(buf)
    starts: list[int] = []
    append = starts.append
    size = len(buf)
    last = size - 16
    while len(starts) < count and pos <= last:
        caplen = caplen_at(mv, pos + 8)[0]
        nxt = pos + 16 + caplen
        if caplen > MAX_SNAPLEN or nxt > size:
            break
        append(pos)
        pos = nxt
    return np.asarray(starts, dtype=np.int64), pos


def interleave(headers: np.ndarray, data: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
               use_native: bool = True) -> np.ndarray:
    """header row i then `data[offsets[i]:offsets[i]+lengths[i]]`, for every i, in one uint8 array.

    `headers` is an (n, h) uint8 array (h may be 0). The caller has checked that every range lies in
    `data`.
    """
    n, hsize = headers.shape
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    headers = np.ascontiguousarray(headers, dtype=np.uint8)
    data = np.ascontiguousarray(data, dtype=np.uint8)
    total = n * hsize + int(lengths.sum())
    out = np.empty(total, dtype=np.uint8)
    native = _native() if use_native else None
    if native is not None and n:
        done = native[2](out.ctypes.data, headers.ctypes.data, hsize, data.ctypes.data, offsets.ctypes.data,
                         lengths.ctypes.data, n)
        assert done == total
        return out
    if not n:
        return out
    ends = np.cumsum(lengths)
    starts = ends - lengths
    rec_pos = starts + np.arange(n, dtype=np.int64) * hsize
    if hsize:
        out[(rec_pos[:, None] + np.arange(hsize)).reshape(-1)] = headers.reshape(-1)
    if total > n * hsize:
        within = np.arange(int(ends[-1]), dtype=np.int64) - np.repeat(starts, lengths)
        out[np.repeat(rec_pos + hsize, lengths) + within] = data[np.repeat(offsets, lengths) + within]
    return out


def gather(out: np.ndarray, pieces: np.ndarray, use_native: bool = True) -> int:
    """The (address, length) rows of `pieces` (uint64, a struct iovec array) copied back to back into
    `out`, which the caller made big enough; returns the bytes written. The addresses must be readable
    memory (the caller's)."""
    n = len(pieces)
    native = _native() if use_native else None
    if native is not None:
        return int(native[5](out.ctypes.data, pieces.ctypes.data, n)) if n else 0
    pos, base = 0, out.ctypes.data
    for at, length in pieces.tolist():
        ctypes.memmove(base + pos, at, length)
        pos += length
    return pos


def put_headers(out: np.ndarray, headers: np.ndarray, offsets: np.ndarray, use_native: bool = True) -> None:
    """Header row i into `out[offsets[i] - h : offsets[i]]` for every i (`headers` is (n, h) uint8): the
    gaps run_batch(out_gap=h) leaves before each packet. The caller has checked the ranges."""
    n, hsize = headers.shape
    headers = np.ascontiguousarray(headers, dtype=np.uint8)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    native = _native() if use_native else None
    if native is not None and out.flags.c_contiguous and out.flags.writeable:
        native[4](out.ctypes.data, headers.ctypes.data, hsize, offsets.ctypes.data, n)
        return
    out[(offsets[:, None] - hsize + np.arange(hsize)).reshape(-1)] = headers.reshape(-1)


def index_pcapng(buf: np.ndarray, pos: int, count: int, endian: str, snaps: np.ndarray,
                 use_native: bool = True) -> tuple[np.ndarray, int]:
    """(start offsets of up to `count` plain Enhanced Packet Blocks from `pos`, where the walk stopped).

    `snaps[id]` is the snap length of the section's interface `id` (0: none), or -1 when its packets
    must go through the streaming reader. The walk stops at the first block that is not a plain EPB.
    """
    snaps = np.ascontiguousarray(snaps, dtype=np.int64)
    native = _native() if use_native else None
    if native is not None:
        out = np.empty(count, dtype=np.int64)
        end = ctypes.c_int64(0)
        swap = int((endian == "<") != (sys.byteorder == "little"))
        n = native[3](buf.ctypes.data, len(buf), pos, count, out.ctypes.data, swap, len(snaps),
                      snaps.ctypes.data, ctypes.addressof(end))
        return out[:n], end.value
    return _index_pcapng_python(buf, pos, count, endian, snaps)


def _index_pcapng_python(buf: np.ndarray, pos: int, count: int, endian: str,
                         snaps: np.ndarray) -> tuple[np.ndarray, int]:
    u32 = struct.Struct(endian + "I").unpack_from
    epb = struct.Struct(endian + "IIIIIIII").unpack_from
    mv = memoryview(buf)
    size = len(buf)
    starts: list[int] = []
    while len(starts) < count and pos + 32 <= size:
        btype, length, ifid, _hi, _lo, caplen, orig, _ = epb(mv, pos)
        if btype != 6 or length < 32 or length % 4 or length > MAX_BLOCK or pos + length > size:
            break
        if u32(mv, pos + length - 4)[0] != length or ifid >= len(snaps) or snaps[ifid] < 0:
            break
        if caplen > length - 32 or 0 < snaps[ifid] < caplen or orig < caplen:
            break
        starts.append(pos)
        pos += length
    return np.asarray(starts, dtype=np.int64), pos
