"""XDP helpers: adjust_head/tail/meta, load/store bytes, buffer length, redirect, redirect_map, check_mtu.

The packet is `state.packet` (a PacketBuffer attached as the PACKET region); for multi-buffer
(`xdp.frags`) programs `state.frags` holds the bytes past the linear part (see hooks/xdp.py).
Return values follow net/core/filter.c.
"""

from __future__ import annotations

import errno as _errno
from typing import TYPE_CHECKING

from ..engines.base import helper_arg_fault
from ..maps import RedirectTarget
from ..memory import CTX, ETH_HLEN
from ..spec import MapType
from . import register
from .maps import the_map

if TYPE_CHECKING:
    from ..engines.base import RunState
    from ..memory import PacketBuffer

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
BPF_F_BROADCAST = 1 << 3
BPF_F_EXCLUDE_INGRESS = 1 << 4
BPF_F_ACTION_MASK = XDP_ABORTED | XDP_DROP | XDP_PASS | XDP_TX
BPF_MTU_CHK_RET_SUCCESS = 0
BPF_MTU_CHK_RET_FRAG_NEEDED = 1
DEFAULT_MTU = 1500
FRAG_SIZE = 4096  # each fragment of a multi-buffer frame is one page (BPF_PROG_TEST_RUN, drivers)
MAX_SKB_FRAGS = 17
_REDIRECT_TYPES = (MapType.DEVMAP, MapType.DEVMAP_HASH, MapType.CPUMAP, MapType.XSKMAP)


def s32(v: int) -> int:
    v &= 0xFFFF_FFFF
    return v - (1 << 32) if v & 0x8000_0000 else v


def xdp_packet(state: RunState, helper: str, ctx: int) -> PacketBuffer:
    """The packet of an XDP run; the argument must be the context pointer."""
    if ctx >> 32 != CTX or state.packet is None:
        raise helper_arg_fault(helper, 1, "XDP context (the program's r1 at entry)", ctx, state)
    return state.packet


@register("xdp_adjust_head", "xdp_md", "delta")
def xdp_adjust_head(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    return xdp_packet(state, "xdp_adjust_head", r1).adjust_head(s32(r2))


@register("xdp_adjust_meta", "xdp_md", "delta")
def xdp_adjust_meta(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    return xdp_packet(state, "xdp_adjust_meta", r1).adjust_meta(s32(r2))


@register("xdp_adjust_tail", "xdp_md", "delta")
def xdp_adjust_tail(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    """With fragments (net/core/filter.c bpf_xdp_frags_{shrink,increase}_tail): shrinking takes
    bytes off the fragments from the end and, once they are all gone, off the linear part (at least
    ETH_HLEN bytes must stay); growing zero-fills the last fragment's tailroom (fragments are pages:
    `FRAG_SIZE` minus what the last one holds)."""
    pkt = xdp_packet(state, "xdp_adjust_tail", r1)
    delta = s32(r2)
    frags = state.frags
    if not frags:
        return pkt.adjust_tail(delta)
    if delta < 0:
        shrink = -delta
        if shrink > len(pkt) + len(frags) - ETH_HLEN:
            return -_errno.EINVAL
        from_frags = min(shrink, len(frags))
        del frags[len(frags) - from_frags :]
        if shrink > from_frags:  # the fragments are gone: the rest comes off the linear part
            return pkt.adjust_tail(from_frags - shrink)
        return 0
    last = (len(frags) - 1) % FRAG_SIZE + 1
    if delta > FRAG_SIZE - last:
        return -_errno.EINVAL
    frags.extend(bytes(delta))
    return 0


@register("xdp_get_buff_len", "xdp_md")
def xdp_get_buff_len(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    return len(xdp_packet(state, "xdp_get_buff_len", r1)) + len(state.frags)


def _span(state: RunState, pkt: PacketBuffer, off: int, n: int) -> int:
    """0 when [off, off + n) lies in the buffer, else the kernel's error (bpf_xdp_pointer)."""
    if off > 0xFFFF or n > 0xFFFF:
        return -_errno.EFAULT
    if off + n > len(pkt) + len(state.frags):
        return -_errno.EINVAL
    return 0


@register("xdp_load_bytes", "xdp_md", "offset", "buf", "len")
def xdp_load_bytes(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    pkt = xdp_packet(state, "xdp_load_bytes", r1)
    off, n = r2 & 0xFFFF_FFFF, r4 & 0xFFFF_FFFF
    err = _span(state, pkt, off, n)
    if err:
        return err
    data = (pkt.bytes() + bytes(state.frags))[off : off + n]
    state.mem.write(r3, data)
    return 0


@register("xdp_store_bytes", "xdp_md", "offset", "buf", "len")
def xdp_store_bytes(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    pkt = xdp_packet(state, "xdp_store_bytes", r1)
    off, n = r2 & 0xFFFF_FFFF, r4 & 0xFFFF_FFFF
    err = _span(state, pkt, off, n)
    if err:
        return err
    data = state.mem.read(r3, n)
    lin = len(pkt)
    head = data[: max(0, lin - off)]
    if head:
        pkt.frame[pkt.data + off : pkt.data + off + len(head)] = list(head)
    rest = data[len(head) :]
    if rest:
        start = max(0, off - lin)
        state.frags[start : start + len(rest)] = rest
    return 0


@register("redirect", "ifindex", "flags")
def redirect(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    """XDP bpf_redirect: any flag makes it XDP_ABORTED; otherwise the target is remembered."""
    if r2:
        return XDP_ABORTED
    state.redirect = RedirectTarget("dev", r1 & 0xFFFF_FFFF)
    return XDP_REDIRECT


@register("redirect_map", "map", "key", "flags")
def redirect_map(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    """__bpf_xdp_redirect_map: the low two flag bits are the action on a miss; devmaps also take
    BPF_F_BROADCAST / BPF_F_EXCLUDE_INGRESS (a broadcast target is kind "broadcast", index = map id,
    flags = the call's broadcast flags: the pipeline sends the copies)."""
    m = the_map(state, "redirect_map", 1, r1, _REDIRECT_TYPES, "devmap, devmap_hash, cpumap or xskmap")
    allowed = BPF_F_ACTION_MASK
    if m.type in (MapType.DEVMAP, MapType.DEVMAP_HASH):
        allowed |= BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS
    if r3 & ~allowed:
        return XDP_ABORTED
    if r3 & BPF_F_BROADCAST:
        flags = r3 & (BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS)
        state.redirect = RedirectTarget("broadcast", m.id, None, flags)
        if r3 & BPF_F_EXCLUDE_INGRESS:
            state.notes.append(f"broadcast through {m.name} excluding ingress ifindex {state.ifindex}")
        return XDP_REDIRECT
    key = r2 & 0xFFFF_FFFF
    target = m.resolve(key)  # type: ignore[attr-defined]
    if target is None:
        state.redirect = None
        return r3 & BPF_F_ACTION_MASK
    state.redirect = target
    return XDP_REDIRECT


@register("check_mtu", "ctx", "ifindex", "mtu_len", "len_diff", "flags")
def check_mtu(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    """bpf_xdp_check_mtu: compares the L2 length (or *mtu_len + ETH_HLEN when *mtu_len is set) plus
    len_diff against the device's MTU + ETH_HLEN; writes the MTU to *mtu_len."""
    pkt = xdp_packet(state, "check_mtu", r1)
    if r5:
        return -_errno.EINVAL
    rt = state.runtime
    ifindex = (r2 & 0xFFFF_FFFF) or state.ifindex
    if rt.ifindexes is not None and ifindex not in rt.ifindexes:
        return -_errno.ENODEV
    mtu = rt.mtu.get(ifindex, DEFAULT_MTU)
    given = state.mem.load(r3, 4)
    length = given + ETH_HLEN if given else len(pkt)
    length += s32(r4)
    state.mem.store(r3, 4, mtu)
    return BPF_MTU_CHK_RET_FRAG_NEEDED if length > mtu + ETH_HLEN else BPF_MTU_CHK_RET_SUCCESS
