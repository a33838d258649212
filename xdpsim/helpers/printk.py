"""bpf_trace_printk and bpf_trace_vprintk: the kernel's format subset, output into `state.trace`.

kernel/bpf/helpers.c bpf_bprintf_prepare accepts `%d %i %u %x %X %ld %li %lu %lx %lld %lli %llu %llx
%p %px %pK %s %c %%` (with flags, width and precision digits); anything else makes the helper
return -EINVAL and print nothing. At most 3 arguments for trace_printk, 12 for trace_vprintk. The
return value is the length of the formatted text, as bstr_printf's.
"""

from __future__ import annotations

import errno as _errno
import re
from typing import TYPE_CHECKING

from ..errors import ProgramFault
from . import register

if TYPE_CHECKING:
    from ..engines.base import RunState

MAX_BPRINTF_VARARGS = 12
MAX_STRING = 512  # bounded string reads for %s
_SPEC = re.compile(r"%([-+ #0]*)(\d*)(?:\.(\d+))?(ll|l|h|hh|z)?([a-zA-Z%])")


def _read_cstr(state: RunState, addr: int, limit: int) -> bytes | None:
    """The NUL-terminated string at `addr` (at most `limit` bytes read), or None when unreadable."""
    out = bytearray()
    try:
        for i in range(limit):
            b = state.mem.load(addr + i, 1)
            if b == 0:
                return bytes(out)
            out.append(b)
    except ProgramFault:
        return None if not out else bytes(out)
    return bytes(out)


def format_printk(state: RunState, fmt: bytes, args: list[int]) -> str | None:
    """The formatted text, or None when the kernel would refuse the format."""
    text = fmt.decode("latin-1")
    out: list[str] = []
    pos = 0
    ai = 0
    for m in _SPEC.finditer(text):
        out.append(text[pos : m.start()])
        pos = m.end()
        flags, width, prec, length, conv = m.groups()
        if conv == "%":
            if flags or width or prec or length:
                return None
            out.append("%")
            continue
        if ai >= len(args):
            return None
        v = args[ai]
        ai += 1
        if conv == "p":
            # %p, %px, %pK: the raw address (xdpsim pointers are deterministic: nothing to hash)
            if text[pos : pos + 1] in ("x", "K"):
                pos += 1
            out.append(f"{v:016x}")  # as the kernel's %px: 16 zero-padded hex digits
            continue
        if conv == "s":
            s = _read_cstr(state, v, MAX_STRING)
            out.append("" if s is None else s.decode("latin-1"))  # the kernel prints "" when unreadable
            continue
        if conv == "c":
            out.append(chr(v & 0xFF))
            continue
        if conv not in "diuxX" or length in ("h", "hh", "z"):
            return None
        bits = 64 if length in ("l", "ll") else 32
        v &= (1 << bits) - 1
        if conv in "di" and v >> (bits - 1):
            v -= 1 << bits
        spec = "%" + flags + width + (f".{prec}" if prec else "") + ("d" if conv in "diu" else conv)
        out.append(spec % v)
    out.append(text[pos:])
    return "".join(out)


def _emit(state: RunState, fmt_addr: int, fmt_size: int, args: list[int]) -> int:
    if fmt_size == 0:
        return -_errno.EINVAL
    fmt = state.mem.read(fmt_addr, fmt_size)
    nul = fmt.find(b"\0")
    if nul < 0:
        return -_errno.EINVAL  # the format must be NUL-terminated within fmt_size
    text = format_printk(state, fmt[:nul], args)
    if text is None:
        return -_errno.EINVAL
    state.trace.append(text.rstrip("\n"))
    return len(text.encode("latin-1"))


@register("trace_printk", "fmt", "fmt_size", "arg1", "arg2", "arg3")
def trace_printk(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    return _emit(state, r1, r2 & 0xFFFF_FFFF, [r3, r4, r5])


@register("trace_vprintk", "fmt", "fmt_size", "data", "data_len")
def trace_vprintk(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    n = r4 & 0xFFFF_FFFF
    if n % 8 or n > 8 * MAX_BPRINTF_VARARGS or (n and not r3):
        return -_errno.EINVAL
    raw = state.mem.read(r3, n) if n else b""
    args = [int.from_bytes(raw[i : i + 8], "little") for i in range(0, n, 8)]
    return _emit(state, r1, r2 & 0xFFFF_FFFF, args)
