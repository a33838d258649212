"""bpf_fib_lookup answered from the pipeline file's `[[route]]` and `[[neighbour]]` tables.

As the kernel's bpf_ipv4/ipv6_fib_lookup, simplified to one routing table: longest prefix match on the
destination; no route -> NOT_FWDED; the egress interface's MTU below `tot_len` -> FRAG_NEEDED (with
`mtu_result`); a gateway route replaces the destination with the gateway; the next hop's MAC comes from
the neighbours (none -> NO_NEIGH unless BPF_FIB_LOOKUP_SKIP_NEIGH); on success `ifindex`, `smac`
(the egress interface's `mac`) and `dmac` are filled in.

struct bpf_fib_lookup (64 bytes): family u8 +0, l4_protocol +1, sport +2, dport +4, tot_len/mtu_result
u16 +6, ifindex u32 +8, tos/flowinfo/rt_metric +12, src +16 (16), dst +32 (16), vlan proto/TCI +48,
smac +52, dmac +58.
"""

from __future__ import annotations

import errno
import ipaddress
import struct

from .config import PipelineSpec

AF_INET = 2
AF_INET6 = 10
RET_SUCCESS = 0
RET_NOT_FWDED = 4
RET_NO_NEIGH = 7
RET_FRAG_NEEDED = 8
SKIP_NEIGH = 1 << 2


def _mac(text: str | None) -> bytes:
    if not text:
        return bytes(6)
    return bytes(int(x, 16) for x in text.split(":"))


class PipelineFib:
    """A FibTable (helpers/fib.py) over the pipeline's routes and neighbours."""

    def __init__(self, spec: PipelineSpec):
        self.ifaces = {i.name: i for i in spec.interfaces}
        # longest prefix first, so the first match wins
        self.routes = sorted(spec.routes, key=lambda r: -r.prefix.prefixlen)
        self.neighbours = {(ipaddress.ip_address(n.address), n.interface): _mac(n.mac)
                           for n in spec.neighbours}

    def lookup(self, params: bytes, flags: int) -> tuple[int, bytes]:
        p = bytearray(params)
        family = p[0]
        if family == AF_INET:
            dst: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(bytes(p[32:36]))
        elif family == AF_INET6:
            dst = ipaddress.IPv6Address(bytes(p[32:48]))
        else:
            return -errno.EAFNOSUPPORT, bytes(p)  # as the kernel's bpf_fib_lookup
        route = next((r for r in self.routes if dst.version == r.prefix.version and dst in r.prefix), None)
        if route is None:
            return RET_NOT_FWDED, bytes(p)
        iface = self.ifaces[route.interface]
        tot_len = struct.unpack_from("<H", p, 6)[0]
        if tot_len and tot_len > iface.mtu:
            struct.pack_into("<H", p, 6, iface.mtu)
            return RET_FRAG_NEEDED, bytes(p)
        nexthop = ipaddress.ip_address(route.gateway) if route.gateway else dst
        if route.gateway:
            if family == AF_INET:
                p[32:36] = nexthop.packed
            else:
                p[32:48] = nexthop.packed
        struct.pack_into("<I", p, 8, iface.ifindex)
        p[52:58] = _mac(iface.mac)
        if flags & SKIP_NEIGH:
            return RET_SUCCESS, bytes(p)
        mac = self.neighbours.get((nexthop, route.interface))
        if mac is None:
            return RET_NO_NEIGH, bytes(p)
        p[58:64] = mac
        return RET_SUCCESS, bytes(p)
