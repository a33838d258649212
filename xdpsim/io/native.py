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

Both run tens of millions of records per second. Where llvmlite cannot compile them, equivalent
Python/numpy code runs instead (`use_native=False` selects it, for tests).
"""

from __future__ import annotations

import ctypes
import struct
import sys
import threading
from typing import NamedTuple

import numpy as np

from .reader import MAX_SNAPLEN

MAX_BLOCK = 16 * 1024 * 1024  # pcapng.py's limit (imported from there would be circular)

_IR = f"""
declare i32 @llvm.bswap.i32(i32)
declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)

define i64 @xdpsim_pcap_index(ptr %buf, i64 %size, i64 %pos0, i64 %max, ptr %out, i32 %swap, ptr %endpos,
                               ptr %caps, ptr %origs, ptr %tss, i64 %scale) {{
entry:
  %sw = icmp ne i32 %swap, 0
  br label %loop
loop:
  %pos = phi i64 [%pos0, %entry], [%nxt, %store]
  %n = phi i64 [0, %entry], [%n1, %store]
  %full = icmp sge i64 %n, %max
  br i1 %full, label %done, label %hdr
hdr:
  %p16 = add i64 %pos, 16
  %nohdr = icmp ugt i64 %p16, %size
  br i1 %nohdr, label %done, label %len
len:
  %p8 = add i64 %pos, 8
  %lp = getelementptr i8, ptr %buf, i64 %p8
  %raw = load i32, ptr %lp, align 1
  %bs = call i32 @llvm.bswap.i32(i32 %raw)
  %cl = select i1 %sw, i32 %bs, i32 %raw
  %cl64 = zext i32 %cl to i64
  %big = icmp ugt i64 %cl64, {MAX_SNAPLEN}
  br i1 %big, label %done, label %fit
fit:
  %nxt = add i64 %p16, %cl64
  %over = icmp ugt i64 %nxt, %size
  br i1 %over, label %done, label %store
store:
  %op = getelementptr i64, ptr %out, i64 %n
  store i64 %pos, ptr %op, align 8
  %cp = getelementptr i32, ptr %caps, i64 %n
  store i32 %cl, ptr %cp, align 4
  %secp = getelementptr i8, ptr %buf, i64 %pos
  %secr = load i32, ptr %secp, align 1
  %secs = call i32 @llvm.bswap.i32(i32 %secr)
  %sec = select i1 %sw, i32 %secs, i32 %secr
  %p4 = add i64 %pos, 4
  %fracp = getelementptr i8, ptr %buf, i64 %p4
  %fracr = load i32, ptr %fracp, align 1
  %fracs = call i32 @llvm.bswap.i32(i32 %fracr)
  %frac = select i1 %sw, i32 %fracs, i32 %fracr
  %p12 = add i64 %pos, 12
  %origp = getelementptr i8, ptr %buf, i64 %p12
  %origr = load i32, ptr %origp, align 1
  %origb = call i32 @llvm.bswap.i32(i32 %origr)
  %orig = select i1 %sw, i32 %origb, i32 %origr
  %orig64 = zext i32 %orig to i64
  %oq = getelementptr i64, ptr %origs, i64 %n
  store i64 %orig64, ptr %oq, align 8
  %sec64 = zext i32 %sec to i64
  %frac64 = zext i32 %frac to i64
  %secns = mul i64 %sec64, 1000000000
  %fracns = mul i64 %frac64, %scale
  %ts = add i64 %secns, %fracns
  %tq = getelementptr i64, ptr %tss, i64 %n
  store i64 %ts, ptr %tq, align 8
  %n1 = add i64 %n, 1
  br label %loop
done:
  store i64 %pos, ptr %endpos, align 8
  ret i64 %n
}}

define void @xdpsim_put_headers(ptr %out, ptr %hdrs, i64 %hsize, ptr %offs, i64 %n) {{
entry:
  br label %check
check:
  %i = phi i64 [0, %entry], [%i1, %body]
  %more = icmp slt i64 %i, %n
  br i1 %more, label %body, label %done
body:
  %hsrc = mul i64 %i, %hsize
  %hp = getelementptr i8, ptr %hdrs, i64 %hsrc
  %offp = getelementptr i64, ptr %offs, i64 %i
  %off = load i64, ptr %offp, align 8
  %dst = sub i64 %off, %hsize
  %op = getelementptr i8, ptr %out, i64 %dst
  call void @llvm.memcpy.p0.p0.i64(ptr %op, ptr %hp, i64 %hsize, i1 false)
  %i1 = add i64 %i, 1
  br label %check
done:
  ret void
}}

define i64 @xdpsim_interleave(ptr %out, ptr %hdrs, i64 %hsize, ptr %data, ptr %offs, ptr %lens, i64 %n) {{
entry:
  br label %check
check:
  %i = phi i64 [0, %entry], [%i1, %body]
  %pos = phi i64 [0, %entry], [%pos2, %body]
  %more = icmp slt i64 %i, %n
  br i1 %more, label %body, label %done
body:
  %hsrc = mul i64 %i, %hsize
  %hp = getelementptr i8, ptr %hdrs, i64 %hsrc
  %op = getelementptr i8, ptr %out, i64 %pos
  call void @llvm.memcpy.p0.p0.i64(ptr %op, ptr %hp, i64 %hsize, i1 false)
  %pos1 = add i64 %pos, %hsize
  %offp = getelementptr i64, ptr %offs, i64 %i
  %off = load i64, ptr %offp, align 8
  %lenp = getelementptr i64, ptr %lens, i64 %i
  %len = load i64, ptr %lenp, align 8
  %dp = getelementptr i8, ptr %data, i64 %off
  %op2 = getelementptr i8, ptr %out, i64 %pos1
  call void @llvm.memcpy.p0.p0.i64(ptr %op2, ptr %dp, i64 %len, i1 false)
  %pos2 = add i64 %pos1, %len
  %i1 = add i64 %i, 1
  br label %check
done:
  ret i64 %pos
}}
"""

def _ld32(name: str, offset: str) -> str:
    """IR loading the u32 at %pos + offset in the file's byte order into i64 %name."""
    return "\n".join([
        f"  %{name}.a = add i64 %pos, {offset}",
        f"  %{name}.p = getelementptr i8, ptr %buf, i64 %{name}.a",
        f"  %{name}.r = load i32, ptr %{name}.p, align 1",
        f"  %{name}.s = call i32 @llvm.bswap.i32(i32 %{name}.r)",
        f"  %{name}.v = select i1 %sw, i32 %{name}.s, i32 %{name}.r",
        f"  %{name} = zext i32 %{name}.v to i64",
    ])


# Walks plain Enhanced Packet Blocks: stops at any other block, or at one with anything the streaming
# reader would warn about or refuse (bad length or trailer, unknown interface, an interface marked
# slow (snaps[id] < 0), captured length beyond the block or the snap length, orig_len < caplen).
_IR_PCAPNG = f"""
define i64 @xdpsim_pcapng_index(ptr %buf, i64 %size, i64 %pos0, i64 %max, ptr %out, i32 %swap, i64 %nif,
                                ptr %snaps, ptr %endpos) {{{{
entry:
  %sw = icmp ne i32 %swap, 0
  br label %loop
loop:
  %pos = phi i64 [%pos0, %entry], [%nxt, %store]
  %n = phi i64 [0, %entry], [%n1, %store]
  %full = icmp sge i64 %n, %max
  br i1 %full, label %done, label %room
room:
  %p32 = add i64 %pos, 32
  %short = icmp ugt i64 %p32, %size
  br i1 %short, label %done, label %type
type:
{_ld32("btype", "0")}
  %isepb = icmp eq i64 %btype, 6
  br i1 %isepb, label %blen, label %done
blen:
{_ld32("len", "4")}
  %small = icmp ult i64 %len, 32
  %mis = and i64 %len, 3
  %misb = icmp ne i64 %mis, 0
  %big = icmp ugt i64 %len, {{max_block}}
  %bad1 = or i1 %small, %misb
  %bad2 = or i1 %bad1, %big
  %nxt = add i64 %pos, %len
  %over = icmp ugt i64 %nxt, %size
  %bad3 = or i1 %bad2, %over
  br i1 %bad3, label %done, label %trail
trail:
  %toff = sub i64 %len, 4
{_ld32("trailer", "%toff")}
  %tbad = icmp ne i64 %trailer, %len
  br i1 %tbad, label %done, label %iface
iface:
{_ld32("ifid", "8")}
  %noif = icmp uge i64 %ifid, %nif
  br i1 %noif, label %done, label %snap
snap:
  %sp = getelementptr i64, ptr %snaps, i64 %ifid
  %snaplen = load i64, ptr %sp, align 8
  %slow = icmp slt i64 %snaplen, 0
  br i1 %slow, label %done, label %cap
cap:
{_ld32("caplen", "20")}
{_ld32("orig", "24")}
  %room2 = sub i64 %len, 32
  %c1 = icmp ugt i64 %caplen, %room2
  %hassnap = icmp sgt i64 %snaplen, 0
  %oversnap = icmp ugt i64 %caplen, %snaplen
  %c2 = and i1 %hassnap, %oversnap
  %c3 = icmp ult i64 %orig, %caplen
  %c12 = or i1 %c1, %c2
  %c123 = or i1 %c12, %c3
  br i1 %c123, label %done, label %store
store:
  %op = getelementptr i64, ptr %out, i64 %n
  store i64 %pos, ptr %op, align 8
  %n1 = add i64 %n, 1
  br label %loop
done:
  store i64 %pos, ptr %endpos, align 8
  ret i64 %n
}}}}
"""


_I64, _VP = ctypes.c_int64, ctypes.c_void_p
_INDEX = ctypes.CFUNCTYPE(_I64, _VP, _I64, _I64, _I64, _VP, ctypes.c_int32, _VP, _VP, _VP, _VP, _I64)
_INTERLEAVE = ctypes.CFUNCTYPE(_I64, _VP, _VP, _I64, _VP, _VP, _VP, _I64)
_PUT_HEADERS = ctypes.CFUNCTYPE(None, _VP, _VP, _I64, _VP, _I64)
_NG_INDEX = ctypes.CFUNCTYPE(_I64, _VP, _I64, _I64, _I64, _VP, ctypes.c_int32, _I64, _VP, _VP)
_lock = threading.Lock()
# [(engine, index, interleave, pcapng index, put headers)] once compiled, [None] when llvmlite is unusable
_compiled: list = []


def _native():
    with _lock:
        if not _compiled:
            try:
                import llvmlite.binding as llvm

                llvm.initialize_native_target()
                llvm.initialize_native_asmprinter()
                tm = llvm.Target.from_default_triple().create_target_machine(opt=2)
                mod = llvm.parse_assembly(_IR + _IR_PCAPNG.format(max_block=MAX_BLOCK))
                mod.verify()
                engine = llvm.create_mcjit_compiler(mod, tm)
                engine.finalize_object()
                _compiled.append((engine, _INDEX(engine.get_function_address("xdpsim_pcap_index")),
                                  _INTERLEAVE(engine.get_function_address("xdpsim_interleave")),
                                  _NG_INDEX(engine.get_function_address("xdpsim_pcapng_index")),
                                  _PUT_HEADERS(engine.get_function_address("xdpsim_put_headers"))))
            except Exception:  # noqa: BLE001 - any llvmlite failure means: run the Python version
                _compiled.append(None)
        return _compiled[0]


def index_records(buf: np.ndarray, pos: int, count: int, endian: str,
                  use_native: bool = True) -> tuple[np.ndarray, int]:
    """(start offsets of up to `count` complete records from `pos`, offset where the walk stopped).

    `buf` is a uint8 array of the whole file, `endian` the file's byte order ("<" or ">").
    """
    w = walk_records(buf, pos, count, endian, 1000, use_native)
    return w.starts, w.end


class RecordWalk(NamedTuple):
    """What `walk_records` found: per record its start offset, captured length, original length (as the
    file says, unchecked) and timestamp in ns; `end` is the offset where the walk stopped."""

    starts: np.ndarray  # int64
    caplen: np.ndarray  # int32
    orig: np.ndarray  # int64
    ts_ns: np.ndarray  # int64
    end: int


def walk_records(buf: np.ndarray, pos: int, count: int, endian: str, frac_scale: int,
                 use_native: bool = True) -> RecordWalk:
    """index_records that also reads each record's header fields in the same pass (no second gather
    over the headers): timestamps are `sec * 10**9 + frac * frac_scale`."""
    native = _native() if use_native else None
    if native is not None:
        out = np.empty((4, count), dtype=np.int64)  # one allocation for the four columns
        caps = out[3].view(np.int32)[:count]  # (int32: half of the last row)
        end = ctypes.c_int64(0)
        swap = int((endian == "<") != (sys.byteorder == "little"))
        n = native[1](buf.ctypes.data, len(buf), pos, count, out.ctypes.data, swap, ctypes.addressof(end),
                      caps.ctypes.data, out[1].ctypes.data, out[2].ctypes.data, frac_scale)
        return RecordWalk(out[0, :n], caps[:n], out[1, :n], out[2, :n], end.value)
    starts, end = _index_python(buf, pos, count, endian)
    heads = buf[starts[:, None] + np.arange(16)].view(endian + "u4").astype(np.int64).reshape(-1, 4)
    return RecordWalk(starts, heads[:, 2].astype(np.int32), heads[:, 3].copy(),
                      heads[:, 0] * 1_000_000_000 + heads[:, 1] * frac_scale, end)


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
