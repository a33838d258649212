"""TC helpers beyond the bytes: redirect and fib_lookup (TC flavours, sharing ids 23 and 69 with XDP's
ones, which XDP runs keep), redirect_peer,
redirect_neigh, clone_redirect, the flow hash (get_hash_recalc, set_hash, set_hash_invalid),
get_route_realm, tunnel keys, get_socket_cookie, skb_cgroup_id.

A TC redirect is recorded in `state.redirect` as `RedirectTarget(kind, ifindex)`: kind "dev"
(egress of the target), "dev-ingress" (BPF_F_INGRESS: the target's TC ingress), "peer"
(redirect_peer) or "neigh" (redirect_neigh); the pipeline acts on it when the program returns
TC_ACT_REDIRECT. clone_redirect appends a `Clone` to the skb.

The flow hash is xdpsim's own (a CRC-32 of the addresses, protocol and ports): the kernel's uses a
per-boot random key, so hash values are never comparable with the kernel's; only "0 when cleared,
what set_hash stored when set" is.
"""

from __future__ import annotations

import errno as _errno
import zlib
from typing import TYPE_CHECKING

from ..maps import RedirectTarget
from . import fib as _fib
from . import register
from . import xdp as _xdp
from .skb import U32, skb_of
from .skbuff import ETH_P_IP_BE, ETH_P_IPV6_BE, Clone, SkbBuffer, TunnelInfo

if TYPE_CHECKING:
    from ..engines.base import RunState

TC_ACT_SHOT = 2
TC_ACT_REDIRECT = 7
BPF_F_INGRESS = 1
BPF_F_TUNINFO_IPV6 = 1 << 0
BPF_F_TUNINFO_FLAGS = 1 << 4
BPF_F_ZERO_CSUM_TX = 1 << 1
BPF_F_DONT_FRAGMENT = 1 << 2
BPF_F_SEQ_NUMBER = 1 << 3
BPF_F_NO_TUNNEL_KEY = 1 << 4
TUNNEL_KEY_SIZE = 44  # struct bpf_tunnel_key (6.18)
# older layouts the kernel still accepts: up to remote_ipv6[1], tunnel_ext, tunnel_label, local_ipv4
_SET_COMPAT = (8, 22, 24, 28)
_GET_COMPAT = (8, 22, 24, 32)


def is_tc_run(state: RunState) -> bool:
    return isinstance(state.packet, SkbBuffer)


@register("redirect", "ifindex", "flags")
def redirect(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    """TC bpf_redirect (XDP runs keep XDP's): flags other than BPF_F_INGRESS give TC_ACT_SHOT."""
    if not is_tc_run(state):
        return _xdp.redirect(state, r1, r2, r3, r4, r5)
    if r2 & ~BPF_F_INGRESS:
        return TC_ACT_SHOT
    state.redirect = RedirectTarget("dev-ingress" if r2 & BPF_F_INGRESS else "dev", r1 & U32)
    return TC_ACT_REDIRECT


@register("redirect_peer", "ifindex", "flags")
def redirect_peer(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    if r2:
        return TC_ACT_SHOT
    state.redirect = RedirectTarget("peer", r1 & U32)
    return TC_ACT_REDIRECT


@register("redirect_neigh", "ifindex", "params", "plen", "flags")
def redirect_neigh(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    plen = r3 & U32
    if (plen and plen < 20) or r4:  # sizeof(struct bpf_redir_neigh) = 20
        return TC_ACT_SHOT
    state.redirect = RedirectTarget("neigh", r1 & U32)
    return TC_ACT_REDIRECT


@register("clone_redirect", "skb", "ifindex", "flags")
def clone_redirect(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    """A copy of the packet as it is now goes to the target (its egress, or its ingress with
    BPF_F_INGRESS); the original goes on. -EINVAL for bad flags or a device that does not exist."""
    skb = skb_of(state, "clone_redirect", r1)
    if r3 & ~BPF_F_INGRESS:
        return -_errno.EINVAL
    ifindex = r2 & U32
    known = state.runtime.ifindexes
    if ifindex == 0 or (known is not None and ifindex not in known):
        return -_errno.EINVAL
    skb.clones.append(Clone(ifindex, bool(r3 & BPF_F_INGRESS), skb.bytes(), skb.snapshot()))
    return 0


BPF_FIB_LKUP_RET_FRAG_NEEDED = 8
DEFAULT_MTU = 1500


@register("fib_lookup", "ctx", "params", "plen", "flags")
def fib_lookup(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    """bpf_skb_fib_lookup: the route table's answer, and when the program gave no tot_len, the
    skb's length checked against the egress device (is_skb_forwardable: MTU + 14 + a VLAN tag);
    mtu_result (params+6) is then that device's MTU."""
    ret = _fib.fib_lookup(state, r1, r2, r3, r4, r5)
    if not is_tc_run(state) or ret != _fib.BPF_FIB_LKUP_RET_SUCCESS:
        return ret
    params = state.mem.read(r2, _fib.BPF_FIB_LOOKUP_SIZE)
    if int.from_bytes(params[6:8], "little"):
        return ret  # tot_len given: the table's own MTU check applies
    ifindex = int.from_bytes(params[8:12], "little")
    mtu = state.runtime.mtu.get(ifindex, DEFAULT_MTU)
    state.mem.write(r2 + 6, (mtu & 0xFFFF).to_bytes(2, "little"))
    if len(state.packet) > mtu + 14 + 4:  # type: ignore[arg-type]
        return BPF_FIB_LKUP_RET_FRAG_NEEDED
    return ret


# ---------------------------------------------------------------------------- hash


def flow_hash(skb: SkbBuffer) -> int:
    """xdpsim's flow hash: CRC-32 of L3 addresses, protocol and (TCP/UDP/SCTP) ports; never 0."""
    data = skb.bytes()
    nh = skb.net - skb.data
    key = b""
    if skb.st.protocol == ETH_P_IP_BE and len(data) >= nh + 20:
        ihl = (data[nh] & 0xF) * 4
        proto = data[nh + 9]
        key = data[nh + 12 : nh + 20] + bytes([proto])
        if proto in (6, 17, 132) and len(data) >= nh + ihl + 4:
            key += data[nh + ihl : nh + ihl + 4]
    elif skb.st.protocol == ETH_P_IPV6_BE and len(data) >= nh + 40:
        proto = data[nh + 6]
        key = data[nh + 8 : nh + 40] + bytes([proto])
        if proto in (6, 17, 132) and len(data) >= nh + 44:
            key += data[nh + 40 : nh + 44]
    return zlib.crc32(key) or 1


@register("get_hash_recalc", "skb")
def get_hash_recalc(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    skb = skb_of(state, "get_hash_recalc", r1)
    st = skb.st
    if not st.hash or not (st.l4_hash or st.sw_hash):
        st.hash, st.sw_hash, st.l4_hash = flow_hash(skb), True, True
    return st.hash


@register("set_hash", "skb", "hash")
def set_hash(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    skb = skb_of(state, "set_hash", r1)
    skb.st.hash, skb.st.sw_hash, skb.st.l4_hash = r2 & U32, True, True
    return 0


@register("set_hash_invalid", "skb")
def set_hash_invalid(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    skb = skb_of(state, "set_hash_invalid", r1)
    skb.st.hash, skb.st.sw_hash, skb.st.l4_hash = 0, False, False
    return 0


@register("get_route_realm", "skb")
def get_route_realm(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    """dst_tclassid: the route's realm; packets here carry no route (dst), so 0, as in a test run."""
    skb_of(state, "get_route_realm", r1)
    return 0


@register("get_socket_cookie", "ctx")
def get_socket_cookie(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    """The cookie of the packet's socket: 0 for packets from the wire (no socket); packets the host
    sends carry the cookie of their (simulated) socket."""
    return skb_of(state, "get_socket_cookie", r1).st.sk_cookie


@register("skb_cgroup_id", "skb")
def skb_cgroup_id(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    """The cgroup v2 id of the packet's socket: 0 without one."""
    skb = skb_of(state, "skb_cgroup_id", r1)
    return skb.st.cgroup_id if skb.st.sk_cookie else 0


# ---------------------------------------------------------------------------- tunnel keys


@register("skb_set_tunnel_key", "skb", "key", "size", "flags")
def skb_set_tunnel_key(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    skb = skb_of(state, "skb_set_tunnel_key", r1)
    size, flags = r3 & U32, r4
    if flags & ~(BPF_F_TUNINFO_IPV6 | BPF_F_ZERO_CSUM_TX | BPF_F_DONT_FRAGMENT | BPF_F_SEQ_NUMBER
                 | BPF_F_NO_TUNNEL_KEY):
        return -_errno.EINVAL
    if size != TUNNEL_KEY_SIZE and size not in _SET_COMPAT:
        return -_errno.EINVAL
    raw = state.mem.read(r2, size) + bytes(TUNNEL_KEY_SIZE - size)
    label = int.from_bytes(raw[24:28], "little")
    ext = int.from_bytes(raw[22:24], "little")
    ipv6 = bool(flags & BPF_F_TUNINFO_IPV6)
    if (not ipv6 and label) or ext:
        return -_errno.EINVAL
    if ipv6:
        remote, local = raw[4:20], raw[28:44]
    else:  # host-order u32s in the key, network order in the metadata
        remote = int.from_bytes(raw[4:8], "little").to_bytes(4, "big")
        local = int.from_bytes(raw[28:32], "little").to_bytes(4, "big")
    skb.st.tunnel = TunnelInfo(ipv6, int.from_bytes(raw[0:4], "little"), remote, local, raw[20], raw[21],
                               label & 0xFFFFF, flags)
    return 0


@register("skb_get_tunnel_key", "skb", "key", "size", "flags")
def skb_get_tunnel_key(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    skb = skb_of(state, "skb_get_tunnel_key", r1)
    size, flags = r3 & U32, r4
    info = skb.st.tunnel
    err = 0
    if info is None or flags & ~(BPF_F_TUNINFO_IPV6 | BPF_F_TUNINFO_FLAGS):
        err = -_errno.EINVAL
    elif info.ipv6 != bool(flags & BPF_F_TUNINFO_IPV6):
        err = -_errno.EPROTO
    elif size != TUNNEL_KEY_SIZE and (size not in _GET_COMPAT or (size == 8 and info.ipv6)):
        err = -_errno.EINVAL
    if err:
        state.mem.write(r2, bytes(size))
        return err
    assert info is not None
    out = bytearray(TUNNEL_KEY_SIZE)
    out[0:4] = (info.tun_id & U32).to_bytes(4, "little")
    out[20], out[21] = info.tos, info.ttl
    if info.ipv6:
        out[4:20], out[28:44] = info.remote, info.local
        out[24:28] = info.label.to_bytes(4, "little")
    else:
        out[4:8] = int.from_bytes(info.remote, "big").to_bytes(4, "little")
        out[28:32] = int.from_bytes(info.local, "big").to_bytes(4, "little")
    state.mem.write(r2, bytes(out[:size]))
    return 0
