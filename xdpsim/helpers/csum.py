"""bpf_csum_diff, as net/core/filter.c computes it since Linux 6.13 (the same on every architecture).

    ret = seed
    from_size && to_size: ret = csum_sub(csum_partial(to, to_size, ret), csum_partial(from, from_size, 0))
    to_size only:         ret = csum_partial(to, to_size, ret)
    from_size only:       ret = ~csum_partial(from, from_size, ~ret)
    return csum_from32to16(ret)

Sizes must be multiples of 4 and together at most 512 bytes (the per-CPU scratch buffer), else -EINVAL.
csum_partial is x86-64's (csum_partial64: little-endian 64-bit words with end-around carry, folded to
32 bits), the exact 32-bit value the kernel gets (the `~` of the from-only case shows it).
"""

from __future__ import annotations

import errno as _errno
from typing import TYPE_CHECKING

from . import register

if TYPE_CHECKING:
    from ..engines.base import RunState

U32 = 0xFFFF_FFFF
MAX_DIFF = 512  # sizeof(bpf_csum_scratchpad.diff): 128 x __be32


def csum_add(a: int, b: int) -> int:
    s = (a & U32) + (b & U32)
    return (s + (s >> 32)) & U32


M64 = (1 << 64) - 1


def csum_partial64(data: bytes, seed: int) -> int:
    """csum_partial exactly as x86-64 computes it (arch/x86/lib/csum-partial_64.c): the seed plus the
    buffer as little-endian 64-bit words (the tail zero-padded) with end-around carry, folded to 32 bits
    by csum_finalize_sum. Its 16-bit fold equals a 16-bit-word sum's; the 32-bit value differs, and
    bpf_csum_diff's `~csum_partial(from, size, ~seed)` shows it: 0 where 16-bit words give 0xffff
    (found by xdpsim diff against the kernel)."""
    padded = bytes(data) + bytes(-len(data) % 8)
    total = (seed & U32) + sum(int.from_bytes(padded[i : i + 8], "little") for i in range(0, len(padded), 8))
    while total >> 64:
        total = (total & M64) + (total >> 64)
    rotated = (total >> 32) | ((total & U32) << 32)
    return ((total + rotated) & M64) >> 32


# Every csum_partial the simulated kernel makes (skb->csum of a CHECKSUM_COMPLETE skb, the
# skb_postpull/postpush_rcsum of pushes, pulls and BPF_F_RECOMPUTE_CSUM stores) is x86-64's, so the
# 32-bit values programs see (bpf_csum_update's return, skb->csum) are the kernel's: a 16-bit-word sum
# folds to the same checksum but differs in those 32 bits (checked against the kernel in
# tests/test_tc_csum.py).
csum_partial = csum_partial64


def csum_from32to16(x: int) -> int:
    x &= U32
    x = (x & 0xFFFF) + (x >> 16)
    x = (x & 0xFFFF) + (x >> 16)
    return x & 0xFFFF


def csum_diff(frm: bytes, to: bytes, seed: int) -> int:
    ret = seed & U32
    if frm and to:
        ret = csum_add(csum_partial64(to, ret), ~csum_partial64(frm, 0) & U32)
    elif to:
        ret = csum_partial64(to, ret)
    elif frm:
        ret = ~csum_partial64(frm, ~ret & U32) & U32
    return csum_from32to16(ret)


@register("csum_diff", "from", "from_size", "to", "to_size", "seed")
def bpf_csum_diff(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    fs, ts = r2 & U32, r4 & U32
    if (fs | ts) & 3 or fs + ts > MAX_DIFF:
        return -_errno.EINVAL
    frm = state.mem.read(r1, fs) if fs else b""
    to = state.mem.read(r3, ts) if ts else b""
    return csum_diff(frm, to, r5)
