"""Finding record boundaries in a memory-mapped pcap file: the one inherently sequential step.

`index_records(buf, pos, count, endian)` walks at most `count` 16-byte-header records from `pos` and
returns their start offsets and the offset where it stopped: at the end of the buffer, at a record
whose header or data runs past the end, or at one claiming more than MAX_SNAPLEN bytes (the caller
decides what that is). The walk is a small llvmlite-compiled loop (tens of millions of records per
second); where llvmlite cannot compile it, the same walk runs in Python.
"""

from __future__ import annotations

import ctypes
import struct
import sys
import threading

import numpy as np

from .reader import MAX_SNAPLEN

_IR = f"""
declare i32 @llvm.bswap.i32(i32)

define i64 @xdpsim_pcap_index(ptr %buf, i64 %size, i64 %pos0, i64 %max, ptr %out, i32 %swap, ptr %endpos) {{
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
  %n1 = add i64 %n, 1
  br label %loop
done:
  store i64 %pos, ptr %endpos, align 8
  ret i64 %n
}}
"""

_FN = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                       ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p)
_lock = threading.Lock()
_compiled: list = []  # [(engine, function)] once compiled, [None] when llvmlite is unusable


def _native():
    with _lock:
        if not _compiled:
            try:
                import llvmlite.binding as llvm

                llvm.initialize_native_target()
                llvm.initialize_native_asmprinter()
                tm = llvm.Target.from_default_triple().create_target_machine(opt=2)
                mod = llvm.parse_assembly(_IR)
                mod.verify()
                engine = llvm.create_mcjit_compiler(mod, tm)
                engine.finalize_object()
                _compiled.append((engine, _FN(engine.get_function_address("xdpsim_pcap_index"))))
            except Exception:  # noqa: BLE001 - any llvmlite failure means: walk in Python
                _compiled.append(None)
        return _compiled[0]


def index_records(buf: np.ndarray, pos: int, count: int, endian: str,
                  use_native: bool = True) -> tuple[np.ndarray, int]:
    """(start offsets of up to `count` complete records from `pos`, offset where the walk stopped).

    `buf` is a uint8 array of the whole file, `endian` the file's byte order ("<" or ">").
    """
    native = _native() if use_native else None
    if native is not None:
        out = np.empty(count, dtype=np.int64)
        end = ctypes.c_int64(0)
        swap = int((endian == "<") != (sys.byteorder == "little"))
        n = native[1](buf.ctypes.data, len(buf), pos, count, out.ctypes.data, swap, ctypes.addressof(end))
        return out[:n], end.value
    return _index_python(buf, pos, count, endian)


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
