"""TC data helpers on the simulated sk_buff (helpers/skbuff.py), as net/core/filter.c does them:
skb_load_bytes, skb_load_bytes_relative, skb_store_bytes, skb_pull_data, skb_change_tail,
skb_change_head, skb_adjust_room, skb_change_proto, skb_change_type, skb_vlan_push, skb_vlan_pop.

Every skb here is linear, so "make writable" only fails where the kernel's pskb_may_pull fails: a
length past the end of the packet (-ENOMEM). Return values are the kernel's.
"""

from __future__ import annotations

import errno as _errno
from typing import TYPE_CHECKING

from ..engines.base import helper_arg_fault
from ..memory import CTX
from . import register
from .skbuff import (
    CHECKSUM_COMPLETE,
    CHECKSUM_NONE,
    CHECKSUM_UNNECESSARY,
    ETH_HLEN,
    ETH_P_802_3_MIN,
    ETH_P_IP_BE,
    ETH_P_IPV6_BE,
    PACKET_OTHERHOST,
    SKB_MAX_ALLOC,
    VLAN_HLEN,
    VLAN_TYPES_BE,
    SkbBuffer,
    be16,
)

if TYPE_CHECKING:
    from ..engines.base import RunState

ENOTSUPP = 524
INT_MAX = 0x7FFF_FFFF
U32 = 0xFFFF_FFFF
BPF_F_RECOMPUTE_CSUM = 1 << 0
BPF_F_INVALIDATE_HASH = 1 << 1
BPF_HDR_START_MAC, BPF_HDR_START_NET = 0, 1
# skb_adjust_room
BPF_ADJ_ROOM_NET, BPF_ADJ_ROOM_MAC = 0, 1
F_FIXED_GSO = 1 << 0
F_ENCAP_L3_IPV4 = 1 << 1
F_ENCAP_L3_IPV6 = 1 << 2
F_ENCAP_L4_GRE = 1 << 3
F_ENCAP_L4_UDP = 1 << 4
F_NO_CSUM_RESET = 1 << 5
F_ENCAP_L2_ETH = 1 << 6
F_DECAP_L3_IPV4 = 1 << 7
F_DECAP_L3_IPV6 = 1 << 8
F_ENCAP_L2_MASK = 0xFF << 56
F_ENCAP_L3_MASK = F_ENCAP_L3_IPV4 | F_ENCAP_L3_IPV6
F_DECAP_L3_MASK = F_DECAP_L3_IPV4 | F_DECAP_L3_IPV6
F_ADJ_ROOM_MASK = (F_FIXED_GSO | F_ENCAP_L3_MASK | F_ENCAP_L4_GRE | F_ENCAP_L4_UDP | F_ENCAP_L2_ETH
                   | F_ENCAP_L2_MASK | F_DECAP_L3_MASK)


def s32(v: int) -> int:
    v &= U32
    return v - (1 << 32) if v & 0x8000_0000 else v


def skb_of(state: RunState, helper: str, ctx: int) -> SkbBuffer:
    """The skb of a TC run; argument 1 must be the context pointer."""
    pkt = state.packet
    if ctx >> 32 != CTX or not isinstance(pkt, SkbBuffer):
        raise helper_arg_fault(helper, 1, "TC context (struct __sk_buff, the program's r1 at entry)", ctx,
                               state)
    return pkt


def may_pull(skb: SkbBuffer, n: int) -> bool:
    return n <= len(skb)


def clear_hash(skb: SkbBuffer) -> None:
    skb.st.hash, skb.st.sw_hash, skb.st.l4_hash = 0, False, False


def reset_csum_unnecessary(skb: SkbBuffer) -> None:
    if skb.st.ip_summed == CHECKSUM_UNNECESSARY:
        skb.st.ip_summed, skb.st.csum_level = CHECKSUM_NONE, 0


def rcsum_sub(skb: SkbBuffer, chunk: bytes, off: int) -> None:
    """skb_postpull_rcsum: take `chunk` (at packet offset `off`) out of a CHECKSUM_COMPLETE sum."""
    from .csum import csum_partial
    from .skb_csum import csum_block_sub

    if skb.st.ip_summed == CHECKSUM_COMPLETE:
        skb.st.csum = csum_block_sub(skb.st.csum, csum_partial(chunk, 0), off)


def rcsum_add(skb: SkbBuffer, chunk: bytes, off: int) -> None:
    from .csum import csum_partial
    from .skb_csum import csum_block_add

    if skb.st.ip_summed == CHECKSUM_COMPLETE:
        skb.st.csum = csum_block_add(skb.st.csum, csum_partial(chunk, 0), off)


# ---------------------------------------------------------------------------- load / store


@register("skb_load_bytes", "skb", "offset", "to", "len")
def skb_load_bytes(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    skb = skb_of(state, "skb_load_bytes", r1)
    off, n = r2 & U32, r4 & U32
    if off > INT_MAX or off + n > len(skb):
        state.mem.write(r3, bytes(n))
        return -_errno.EFAULT
    state.mem.write(r3, skb.read(off, n))
    return 0


@register("skb_load_bytes_relative", "skb", "offset", "to", "len", "start_header")
def skb_load_bytes_relative(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    skb = skb_of(state, "skb_load_bytes_relative", r1)
    off, n, hdr = r2 & U32, r4 & U32, r5 & U32
    start = {BPF_HDR_START_MAC: skb.mac, BPF_HDR_START_NET: skb.net}.get(hdr)
    if off > 0xFFFF or start is None or start + off + n > skb.data_end:
        state.mem.write(r3, bytes(n))
        return -_errno.EFAULT
    state.mem.write(r3, skb.frame[start + off : start + off + n].tobytes())
    return 0


@register("skb_store_bytes", "skb", "offset", "from", "len", "flags")
def skb_store_bytes(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    skb = skb_of(state, "skb_store_bytes", r1)
    off, n = r2 & U32, r4 & U32
    if r5 & ~(BPF_F_RECOMPUTE_CSUM | BPF_F_INVALIDATE_HASH):
        return -_errno.EINVAL
    if off > INT_MAX:
        return -_errno.EFAULT
    if not may_pull(skb, off + n):
        return -_errno.EFAULT  # measured on 6.18 (pskb_may_pull's -ENOMEM does not come out here)
    chunk = state.mem.read(r3, n)
    if r5 & BPF_F_RECOMPUTE_CSUM:  # updates skb->csum only (CHECKSUM_COMPLETE), never the headers
        rcsum_sub(skb, skb.read(off, n), off)
    skb.write(off, chunk)
    if r5 & BPF_F_RECOMPUTE_CSUM:
        rcsum_add(skb, chunk, off)
    if r5 & BPF_F_INVALIDATE_HASH:
        clear_hash(skb)
    return 0


@register("skb_pull_data", "skb", "len")
def skb_pull_data(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    skb = skb_of(state, "skb_pull_data", r1)
    n = r2 & U32
    return 0 if may_pull(skb, n or len(skb)) else -_errno.ENOMEM


# ---------------------------------------------------------------------------- length changes


def min_len(skb: SkbBuffer) -> int:
    """__bpf_skb_min_len: the transport header's offset if set, else the network header's."""
    if skb.trans is not None:
        return skb.trans - skb.data
    return skb.net - skb.data


@register("skb_change_tail", "skb", "len", "flags")
def skb_change_tail(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    skb = skb_of(state, "skb_change_tail", r1)
    new_len = r2 & U32
    if r3 or new_len > skb.max_len or new_len < min_len(skb):
        return -_errno.EINVAL
    if skb.st.encapsulation:
        return -ENOTSUPP
    cur = len(skb)
    if new_len != cur and skb.st.ip_summed == CHECKSUM_COMPLETE:
        skb.st.ip_summed = CHECKSUM_NONE  # __skb_grow_rcsum / __skb_trim_rcsum: skb->csum is left stale
    if new_len > cur:
        skb.put_zero(new_len - cur)
    elif new_len < cur:
        skb.trim(new_len)
    return 0


@register("skb_change_head", "skb", "len", "flags")
def skb_change_head(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    skb = skb_of(state, "skb_change_head", r1)
    room = r2 & U32
    new_len = len(skb) + room
    if r3 or new_len > skb.max_len or new_len > U32:
        return -_errno.EINVAL
    skb.push(room)
    skb.frame[skb.data : skb.data + room] = 0
    skb.mac = skb.data  # skb_reset_mac_header; the network header stays where it was
    return 0


def net_base_len(skb: SkbBuffer) -> int:
    if skb.st.protocol == ETH_P_IP_BE:
        return 20
    if skb.st.protocol == ETH_P_IPV6_BE:
        return 40
    return 0x10000  # bpf_skb_net_base_len: "never" (refused earlier by the protocol check)


def hdr_push(skb: SkbBuffer, off: int, n: int) -> None:
    """bpf_skb_net_hdr_push: `n` zero bytes at packet offset `off`; mac/network headers move back."""
    trans_same = skb.trans == skb.net
    skb.insert_zero(off, n)
    skb.mac -= n
    skb.net -= n
    if trans_same:
        skb.trans = skb.net


def hdr_pop(skb: SkbBuffer, off: int, n: int) -> int:
    trans_same = skb.trans == skb.net
    if not may_pull(skb, off + n):
        return -_errno.ENOMEM
    rcsum_sub(skb, skb.read(off, n), off)
    skb.remove(off, n)
    skb.mac += n
    skb.net += n
    if trans_same:
        skb.trans = skb.net
    return 0


def _net_grow(skb: SkbBuffer, off: int, n: int, flags: int) -> int:
    encap = bool(flags & F_ENCAP_L3_MASK)
    inner_mac_len = (flags >> 56) & 0xFF
    mac_len = inner_net = 0
    inner_trans = None
    if flags & ~(F_ADJ_ROOM_MASK | F_NO_CSUM_RESET) or flags & F_DECAP_L3_MASK:
        return -_errno.EINVAL
    if encap:
        if (flags & F_ENCAP_L3_MASK) == F_ENCAP_L3_MASK:
            return -_errno.EINVAL
        if flags & F_ENCAP_L4_GRE and flags & F_ENCAP_L4_UDP:
            return -_errno.EINVAL
        if flags & F_ENCAP_L2_ETH and inner_mac_len != ETH_HLEN:
            return -_errno.EINVAL
        if skb.st.encapsulation:
            return -_errno.EALREADY
        mac_len = skb.net - skb.mac
        inner_net = skb.net
        if inner_mac_len > n:
            return -_errno.EINVAL
        inner_trans = skb.trans
    elif flags & (F_ENCAP_L4_GRE | F_ENCAP_L4_UDP | F_ENCAP_L2_ETH | F_ENCAP_L2_MASK):
        return -_errno.EINVAL
    hdr_push(skb, off, n)
    if encap:
        skb.inner_mac = inner_net - inner_mac_len
        skb.inner_net = inner_net
        skb.inner_trans = inner_trans
        skb.st.inner_protocol = be16(0x6558) if flags & F_ENCAP_L2_ETH else skb.st.protocol
        skb.st.encapsulation = True
        skb.net = skb.data + mac_len
        if flags & (F_ENCAP_L4_GRE | F_ENCAP_L4_UDP):
            skb.trans = skb.net + (40 if flags & F_ENCAP_L3_IPV6 else 20)
        if skb.st.protocol == ETH_P_IP_BE and flags & F_ENCAP_L3_IPV6:
            skb.st.protocol = ETH_P_IPV6_BE
        elif skb.st.protocol == ETH_P_IPV6_BE and flags & F_ENCAP_L3_IPV4:
            skb.st.protocol = ETH_P_IP_BE
    return 0


def _net_shrink(skb: SkbBuffer, off: int, n: int, flags: int) -> int:
    if flags & ~(F_FIXED_GSO | F_DECAP_L3_MASK | F_NO_CSUM_RESET):
        return -_errno.EINVAL
    err = hdr_pop(skb, off, n)
    if err:
        return err
    if skb.st.protocol == ETH_P_IP_BE and flags & F_DECAP_L3_IPV6:
        skb.st.protocol = ETH_P_IPV6_BE
    elif skb.st.protocol == ETH_P_IPV6_BE and flags & F_DECAP_L3_IPV4:
        skb.st.protocol = ETH_P_IP_BE
    return 0


@register("skb_adjust_room", "skb", "len_diff", "mode", "flags")
def skb_adjust_room(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    """IPv4/IPv6 only; MAC mode inserts/removes after the MAC header, NET mode after a fixed 20 (IPv4)
    or 40 (IPv6) bytes of network header; the encap flags record the inner headers and may change
    skb->protocol; the checksum state drops CHECKSUM_UNNECESSARY unless NO_CSUM_RESET."""
    skb = skb_of(state, "skb_adjust_room", r1)
    diff, mode, flags = s32(r2), r3 & U32, r4
    shrink = diff < 0
    n = abs(diff)
    len_min = net_base_len(skb)
    if flags & ~(F_ADJ_ROOM_MASK | F_NO_CSUM_RESET):
        return -_errno.EINVAL
    if n > 0xFFF:
        return -_errno.EFAULT
    if skb.st.protocol not in (ETH_P_IP_BE, ETH_P_IPV6_BE):
        return -ENOTSUPP
    off = skb.mac_len
    if mode == BPF_ADJ_ROOM_NET:
        off += net_base_len(skb)
    elif mode != BPF_ADJ_ROOM_MAC:
        return -ENOTSUPP
    if flags & F_DECAP_L3_MASK:
        if not shrink:
            return -_errno.EINVAL
        dec = flags & F_DECAP_L3_MASK
        if dec == F_DECAP_L3_IPV4:
            len_min = 20
        elif dec == F_DECAP_L3_IPV6:
            len_min = 40
        else:
            return -_errno.EINVAL
    len_cur = len(skb) - (skb.net - skb.data)
    if shrink and (n >= len_cur or len_cur - n < len_min):
        return -ENOTSUPP
    if not shrink and len(skb) + n > SKB_MAX_ALLOC:
        return -ENOTSUPP
    ret = _net_shrink(skb, off, n, flags) if shrink else _net_grow(skb, off, n, flags)
    if not ret and not flags & F_NO_CSUM_RESET:
        reset_csum_unnecessary(skb)
    return ret


@register("skb_change_proto", "skb", "proto", "flags")
def skb_change_proto(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    """IPv4 <-> IPv6 (NAT64): 20 bytes inserted/removed after the MAC header; the bytes and the
    ethertype are the program's to write."""
    skb = skb_of(state, "skb_change_proto", r1)
    if r3:
        return -_errno.EINVAL
    to = r2 & 0xFFFF
    frm = skb.st.protocol
    if frm == ETH_P_IP_BE and to == ETH_P_IPV6_BE:
        hdr_push(skb, skb.mac_len, 20)
    elif frm == ETH_P_IPV6_BE and to == ETH_P_IP_BE:
        err = hdr_pop(skb, skb.mac_len, 20)
        if err:
            return err
    else:
        return -ENOTSUPP
    skb.st.protocol = to
    clear_hash(skb)
    return 0


@register("skb_change_type", "skb", "type")
def skb_change_type(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    skb = skb_of(state, "skb_change_type", r1)
    t = r2 & U32
    if skb.st.pkt_type > PACKET_OTHERHOST or t > PACKET_OTHERHOST:
        return -_errno.EINVAL
    skb.st.pkt_type = t
    return 0


# ---------------------------------------------------------------------------- VLAN


def _vlan_pop_bytes(skb: SkbBuffer) -> tuple[int, int]:
    """__skb_vlan_pop: remove the tag in the bytes; (0, tci) or (-errno, 0)."""
    if skb.data != skb.mac:
        return -_errno.EINVAL, 0
    if not may_pull(skb, ETH_HLEN + VLAN_HLEN):
        return -_errno.ENOMEM, 0
    rcsum_sub(skb, skb.read(12, VLAN_HLEN), 12)
    tci = int.from_bytes(skb.read(14, 2), "big")
    inner = skb.u16(16)
    macs = skb.read(0, 12)
    skb.pull(VLAN_HLEN)
    skb.write(0, macs)
    # vlan_set_encap_proto
    host = be16(inner)
    if host >= ETH_P_802_3_MIN:
        skb.st.protocol = inner
    elif skb.read(0, 2) == b"\xff\xff":
        skb.st.protocol = be16(0x0001)
    else:
        skb.st.protocol = be16(0x0004)
    skb.mac += VLAN_HLEN
    if skb.net - skb.data < ETH_HLEN:
        skb.net = skb.data + ETH_HLEN
    return 0, tci


@register("skb_vlan_pop", "skb")
def skb_vlan_pop(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    """The offload tag if there is one, else the outermost tag in the bytes; a further tag in the
    bytes then moves into the offload tag (skb_vlan_pop)."""
    skb = skb_of(state, "skb_vlan_pop", r1)
    st = skb.st
    if st.vlan_present:
        st.vlan_present, st.vlan_tci, st.vlan_proto = False, 0, 0
    else:
        if st.protocol not in VLAN_TYPES_BE:
            return 0
        err, _ = _vlan_pop_bytes(skb)
        if err:
            return err
    if st.protocol not in VLAN_TYPES_BE:
        return 0
    proto = st.protocol
    err, tci = _vlan_pop_bytes(skb)
    if err:
        return err
    st.vlan_present, st.vlan_proto, st.vlan_tci = True, proto, tci
    return 0


@register("skb_vlan_push", "skb", "vlan_proto", "vlan_tci")
def skb_vlan_push(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    """Sets the offload tag (the bytes do not change); a tag already in offload is first written
    into the bytes after the MAC addresses (skb_vlan_push)."""
    skb = skb_of(state, "skb_vlan_push", r1)
    st = skb.st
    proto = r2 & 0xFFFF
    if proto not in VLAN_TYPES_BE:
        proto = VLAN_TYPES_BE[0]
    if st.vlan_present:
        if skb.data != skb.mac:
            return -_errno.EINVAL
        macs = skb.read(0, 12)
        skb.push(VLAN_HLEN)
        skb.write(0, macs)
        tag = st.vlan_proto.to_bytes(2, "little") + (st.vlan_tci & 0xFFFF).to_bytes(2, "big")
        skb.write(12, tag)
        skb.mac = skb.data
        st.protocol = st.vlan_proto
        skb.net -= VLAN_HLEN
        rcsum_add(skb, tag, 12)
    st.vlan_present, st.vlan_proto, st.vlan_tci = True, proto, r3 & 0xFFFF
    return 0
