"""TC checksum helpers with the kernel's incremental arithmetic (include/net/checksum.h,
net/core/utils.c inet_proto_csum_replace*) and its `ip_summed` rules: l3_csum_replace,
l4_csum_replace, csum_update, csum_level, skb_ecn_set_ce.

A checksum in the packet is a __sum16 read as the host (little-endian) loads it; `from`/`to` are the
register values the program passes, i.e. __be16/__be32 values as they sit in memory. Under
BPF_PROG_TEST_RUN an skb is CHECKSUM_NONE, so only the packet's checksum fields change; skb->csum
moves only for CHECKSUM_COMPLETE skbs and the header field is left alone for CHECKSUM_PARTIAL
(unless a pseudo-header field changed), as the kernel does.
"""

from __future__ import annotations

import errno as _errno
from typing import TYPE_CHECKING

from . import register
from .csum import csum_add
from .skb import U32, skb_of
from .skbuff import (
    CHECKSUM_COMPLETE,
    CHECKSUM_NONE,
    CHECKSUM_PARTIAL,
    CHECKSUM_UNNECESSARY,
    ETH_P_IP_BE,
    ETH_P_IPV6_BE,
    SKB_MAX_CSUM_LEVEL,
    SkbBuffer,
)

if TYPE_CHECKING:
    from ..engines.base import RunState

BPF_F_HDR_FIELD_MASK = 0xF
BPF_F_PSEUDO_HDR = 1 << 4
BPF_F_MARK_MANGLED_0 = 1 << 5
BPF_F_MARK_ENFORCE = 1 << 6
BPF_F_IPV6 = 1 << 7
CSUM_MANGLED_0 = 0xFFFF
BPF_CSUM_LEVEL_QUERY, BPF_CSUM_LEVEL_INC, BPF_CSUM_LEVEL_DEC, BPF_CSUM_LEVEL_RESET = range(4)


def csum_sub(a: int, b: int) -> int:
    return csum_add(a, ~b & U32)


def csum_fold(csum: int) -> int:
    """32-bit partial sum -> complemented 16-bit checksum (csum_fold)."""
    s = csum & U32
    s = (s + (((s >> 16) | (s << 16)) & U32)) & U32
    return ~(s >> 16) & 0xFFFF


def ror32(v: int, n: int) -> int:
    v &= U32
    return ((v >> n) | (v << (32 - n))) & U32


def csum_block_add(csum: int, csum2: int, offset: int) -> int:
    return csum_add(csum, ror32(csum2, 8) if offset & 1 else csum2 & U32)


def csum_block_sub(csum: int, csum2: int, offset: int) -> int:
    return csum_block_add(csum, ~csum2 & U32, offset)


def csum16_add(csum: int, addend: int) -> int:
    res = (csum + addend) & 0xFFFF
    return (res + (1 if res < (addend & 0xFFFF) else 0)) & 0xFFFF


def csum_replace4(sumv: int, frm: int, to: int) -> int:
    tmp = csum_sub(~sumv & U32, frm & U32)
    return csum_fold(csum_add(tmp, to & U32))


def csum_replace2(sumv: int, frm: int, to: int) -> int:
    return ~csum16_add(csum16_add(~sumv & 0xFFFF, ~frm & 0xFFFF), to & 0xFFFF) & 0xFFFF


def csum_replace_by_diff(sumv: int, diff: int) -> int:
    return csum_fold(csum_add(diff & U32, ~sumv & U32))


def _field_ok(skb: SkbBuffer, off: int) -> int:
    if off > 0xFFFF or off & 1:
        return -_errno.EFAULT
    if off + 2 > len(skb):
        return -_errno.EFAULT
    return 0


@register("l3_csum_replace", "skb", "offset", "from", "to", "size")
def l3_csum_replace(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    skb = skb_of(state, "l3_csum_replace", r1)
    off, flags = r2 & U32, r5
    if flags & ~BPF_F_HDR_FIELD_MASK:
        return -_errno.EINVAL
    err = _field_ok(skb, off)
    if err:
        return err
    cur = skb.u16(off)
    kind = flags & BPF_F_HDR_FIELD_MASK
    if kind == 0:
        if r3:
            return -_errno.EINVAL
        new = csum_replace_by_diff(cur, r4)
    elif kind == 2:
        new = csum_replace2(cur, r3 & 0xFFFF, r4 & 0xFFFF)
    elif kind == 4:
        new = csum_replace4(cur, r3, r4)
    else:
        return -_errno.EINVAL
    skb.set_u16(off, new)
    return 0


def _proto_replace4(skb: SkbBuffer, cur: int, frm: int, to: int, pseudo: bool) -> int:
    """inet_proto_csum_replace4 -> the new field value (skb->csum updated as the kernel does)."""
    st = skb.st
    if st.ip_summed != CHECKSUM_PARTIAL:
        new = csum_replace4(cur, frm, to)
        if st.ip_summed == CHECKSUM_COMPLETE and pseudo:
            st.csum = ~csum_add(csum_sub(~st.csum & U32, frm & U32), to & U32) & U32
        return new
    if pseudo:
        return ~csum_fold(csum_add(csum_sub(cur, frm & U32), to & U32)) & 0xFFFF
    return cur


def _proto_replace_by_diff(skb: SkbBuffer, cur: int, diff: int, pseudo: bool, ipv6: bool) -> int:
    st = skb.st
    if st.ip_summed != CHECKSUM_PARTIAL:
        new = csum_replace_by_diff(cur, diff)
        if st.ip_summed == CHECKSUM_COMPLETE and pseudo and not ipv6:
            st.csum = ~csum_sub(diff & U32, st.csum) & U32
        return new
    if pseudo:
        return ~csum_fold(csum_add(diff & U32, cur)) & 0xFFFF
    return cur


@register("l4_csum_replace", "skb", "offset", "from", "to", "flags")
def l4_csum_replace(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    skb = skb_of(state, "l4_csum_replace", r1)
    off, flags = r2 & U32, r5
    if flags & ~(BPF_F_MARK_MANGLED_0 | BPF_F_MARK_ENFORCE | BPF_F_PSEUDO_HDR | BPF_F_HDR_FIELD_MASK
                 | BPF_F_IPV6):
        return -_errno.EINVAL
    err = _field_ok(skb, off)
    if err:
        return err
    pseudo, mmzero = bool(flags & BPF_F_PSEUDO_HDR), bool(flags & BPF_F_MARK_MANGLED_0)
    cur = skb.u16(off)
    if mmzero and not flags & BPF_F_MARK_ENFORCE and not cur:
        return 0  # a UDP datagram without checksum keeps none
    kind = flags & BPF_F_HDR_FIELD_MASK
    if kind == 0:
        if r3:
            return -_errno.EINVAL
        new = _proto_replace_by_diff(skb, cur, r4, pseudo, bool(flags & BPF_F_IPV6))
    elif kind == 2:
        new = _proto_replace4(skb, cur, r3 & 0xFFFF, r4 & 0xFFFF, pseudo)
    elif kind == 4:
        new = _proto_replace4(skb, cur, r3, r4, pseudo)
    else:
        return -_errno.EINVAL
    if mmzero and not new:
        new = CSUM_MANGLED_0
    skb.set_u16(off, new)
    return 0


@register("csum_update", "skb", "csum")
def csum_update(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    skb = skb_of(state, "csum_update", r1)
    if skb.st.ip_summed == CHECKSUM_COMPLETE:
        skb.st.csum = csum_add(skb.st.csum, r2 & U32)
        return skb.st.csum
    return -524  # -ENOTSUPP


@register("csum_level", "skb", "level")
def csum_level(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    skb = skb_of(state, "csum_level", r1)
    st = skb.st
    level = r2
    if level == BPF_CSUM_LEVEL_QUERY:
        return st.csum_level if st.ip_summed == CHECKSUM_UNNECESSARY else -_errno.EACCES
    if level == BPF_CSUM_LEVEL_INC:
        if st.ip_summed == CHECKSUM_UNNECESSARY:
            if st.csum_level < SKB_MAX_CSUM_LEVEL:
                st.csum_level += 1
        elif st.ip_summed == CHECKSUM_NONE:
            st.ip_summed, st.csum_level = CHECKSUM_UNNECESSARY, 0
    elif level == BPF_CSUM_LEVEL_DEC:
        if st.ip_summed == CHECKSUM_UNNECESSARY:
            if st.csum_level == 0:
                st.ip_summed = CHECKSUM_NONE
            else:
                st.csum_level -= 1
    elif level == BPF_CSUM_LEVEL_RESET:
        if st.ip_summed == CHECKSUM_UNNECESSARY:
            st.ip_summed, st.csum_level = CHECKSUM_NONE, 0
    else:
        return -_errno.EINVAL
    return 0


@register("skb_ecn_set_ce", "skb")
def skb_ecn_set_ce(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    """INET_ECN_set_ce on the network header: ECT(0)/ECT(1) become CE (IPv4 with the header checksum
    updated incrementally); returns 1 when the packet is (now) CE-marked, 0 for not-ECT."""
    skb = skb_of(state, "skb_ecn_set_ce", r1)
    nh = skb.net - skb.data
    if skb.st.protocol == ETH_P_IP_BE and nh + 20 <= len(skb):
        tos = skb.read(nh + 1, 1)[0]
        ecn = (tos + 1) & 3
        if not ecn & 2:
            return int(not ecn)
        check_add = (0xFBFF + (ecn << 8)) & 0xFFFF  # (u16)htons(0xFFFB) + (u16)htons(ecn)
        skb.set_u16(nh + 10, csum16_add(skb.u16(nh + 10), check_add))
        skb.write(nh + 1, bytes([tos | 3]))
        return 1
    if skb.st.protocol == ETH_P_IPV6_BE and nh + 40 <= len(skb):
        first = skb.read(nh, 4)
        dsfield = ((first[0] & 0x0F) << 4) | (first[1] >> 4)
        if dsfield & 3 == 0:
            return 0
        new = bytes([first[0], first[1] | 0x30]) + first[2:]
        skb.write(nh, new)
        if skb.st.ip_summed == CHECKSUM_COMPLETE:
            frm, to = int.from_bytes(first, "little"), int.from_bytes(new, "little")
            skb.st.csum = csum_add(csum_sub(skb.st.csum, frm), to)
        return 1
    return 0
