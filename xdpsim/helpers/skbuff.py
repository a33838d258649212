"""The simulated `struct sk_buff` a TC program runs on: a linear packet plus the metadata the kernel
keeps beside it (mark, priority, VLAN offload tag, hash, checksum state, headers, tunnel info...).

Layout: one lazily zeroed frame of `FRAME_SIZE` bytes with the packet starting at `HEADROOM`; the
PACKET region is this frame with the window [data - meta_len, data_end) (the kernel's direct-access
window `data_meta`..`data_end`; every skb here is linear, as BPF_PROG_TEST_RUN's are). Helpers that
grow or shrink the packet move `data`/`data_end` inside the frame (the kernel may reallocate the head;
programs cannot tell: the verifier invalidates packet pointers after such helpers).

Header offsets (`mac`, `net`, `trans`) are absolute frame offsets, like the kernel's skb->*_header,
so they move with the bytes exactly as the kernel's do. `protocol` and `vlan_proto` are kept as the
kernel keeps them: __be16 values, i.e. the little-endian u16 of the wire bytes (IPv4 is 0x0008).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..memory import PACKET, zeros

if TYPE_CHECKING:
    from ..memory import AddressSpace

FRAME_SIZE = 1 << 17
HEADROOM = 8192  # room for skb_change_head / skb_adjust_room growth at the front
ETH_HLEN = 14
VLAN_HLEN = 4
CHECKSUM_NONE, CHECKSUM_UNNECESSARY, CHECKSUM_COMPLETE, CHECKSUM_PARTIAL = range(4)
SKB_MAX_CSUM_LEVEL = 3
PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST = range(4)
ETH_P_802_3_MIN = 0x0600
SKB_MAX_ALLOC = 16384 - 320  # SKB_MAX_ORDER(0, 2)


def be16(v: int) -> int:
    """A host-order ethertype as the kernel stores a __be16 (on a little-endian host)."""
    return ((v & 0xFF) << 8) | ((v >> 8) & 0xFF)


ETH_P_IP_BE = be16(0x0800)
ETH_P_IPV6_BE = be16(0x86DD)
ETH_P_8021Q_BE = be16(0x8100)
ETH_P_8021AD_BE = be16(0x88A8)
VLAN_TYPES_BE = (ETH_P_8021Q_BE, ETH_P_8021AD_BE)


@dataclass
class TunnelInfo:
    """The tunnel metadata bpf_skb_set_tunnel_key attaches (a metadata dst in the kernel)."""

    ipv6: bool
    tun_id: int
    remote: bytes  # 4 or 16 bytes, network order
    local: bytes
    tos: int
    ttl: int
    label: int
    flags: int


@dataclass
class Clone:
    """A copy sent by bpf_clone_redirect: the bytes and metadata at the time of the call."""

    ifindex: int
    ingress: bool
    data: bytes
    meta: dict[str, Any]


@dataclass
class SkbState:
    """Metadata of one skb (what travels with the packet along a pipeline)."""

    mark: int = 0
    priority: int = 0
    queue_mapping: int = 0
    pkt_type: int = PACKET_HOST
    protocol: int = 0
    vlan_present: bool = False
    vlan_proto: int = 0
    vlan_tci: int = 0
    ingress_ifindex: int = 0
    ifindex: int = 1
    tc_index: int = 0
    tc_classid: int = 0
    cb: bytearray = field(default_factory=lambda: bytearray(20))
    hash: int = 0
    sw_hash: bool = False
    l4_hash: bool = False
    tstamp: int = 0
    tstamp_type: int = 0
    wire_len: int = 0
    gso_segs: int = 0
    gso_size: int = 0
    hwtstamp: int = 0
    napi_id: int = 0
    ip_summed: int = CHECKSUM_NONE
    csum: int = 0
    csum_level: int = 0
    encapsulation: bool = False
    inner_protocol: int = 0
    tunnel: TunnelInfo | None = None
    sk_cookie: int = 0  # 0: no socket (a packet received from the wire)
    cgroup_id: int = 0

    def copy(self) -> SkbState:
        import copy

        return copy.deepcopy(self)


class SkbBuffer:
    """The packet bytes of one skb plus its `SkbState` (`st`); `data`, `data_end`, `mac`, `net`,
    `trans` are frame offsets (`trans` None when unset). `max_len` is the longest packet the length
    helpers may make (skb_change_tail/head): measured under BPF_PROG_TEST_RUN on lo, SKB_MAX_ALLOC = 16064."""

    def __init__(self) -> None:
        self.frame = zeros(FRAME_SIZE)
        self._mv = memoryview(self.frame)  # reset copies packets in through it (no temporary array)
        self._dirty = (HEADROOM, HEADROOM)
        self.data = self.data_end = HEADROOM
        self.meta_len = 0
        self.mac = self.net = HEADROOM
        self.trans: int | None = None
        self.inner_mac = self.inner_net = 0
        self.inner_trans: int | None = None
        self.max_len = SKB_MAX_ALLOC
        self.st = SkbState()
        self.clones: list[Clone] = []
        self._mem: AddressSpace | None = None

    # ------------------------------------------------------------------ loading

    def reset(self, data: bytes, *, meta: bytes = b"", state: SkbState | None = None,
              dev_addr: bytes = bytes(6), broadcast: bytes = bytes(6),
              max_len: int = 0) -> None:
        """A new packet at the standard headroom, its headers as eth_type_trans leaves them (mac at
        data, network header after the Ethernet header; the data pointer back at the MAC header
        as TC sees it). `state` (copied by the caller if needed) becomes `st`; without one the
        protocol and pkt_type come from the frame as eth_type_trans computes them against
        `dev_addr` and the device's `broadcast` address (lo's are both all zeros: unicast frames to
        others are PACKET_OTHERHOST, ff:ff:ff:ff:ff:ff is PACKET_MULTICAST there)."""
        lo, hi = self._dirty
        self.frame[lo:hi] = 0
        n = len(data)
        start = HEADROOM
        if n + start > FRAME_SIZE - 64:
            raise ValueError(f"packet of {n} bytes does not fit the simulated skb")
        self._mv[start : start + n] = data if type(data) is bytes else bytes(data)
        if meta:
            self._mv[start - len(meta) : start] = bytes(meta)
        self._dirty = (start - len(meta), start + n)
        self.data, self.data_end, self.meta_len = start, start + n, len(meta)
        self.mac, self.net, self.trans = start, start + ETH_HLEN, None
        self.inner_mac = self.inner_net = 0
        self.inner_trans = None
        self.max_len = max_len or SKB_MAX_ALLOC
        self.clones = []
        if state is None:
            state = SkbState()
            state.protocol, state.pkt_type = eth_type_trans(bytes(data), dev_addr, broadcast)
            state.wire_len = n
        self.st = state
        self._sync()

    def attach(self, mem: AddressSpace) -> None:
        self._mem = mem
        mem.set(PACKET, buffer=self.frame, lo=self.data - self.meta_len, hi=self.data_end)

    def _sync(self) -> None:
        lo, hi = self._dirty
        self._dirty = (min(lo, self.data - self.meta_len), max(hi, self.data_end))
        if self._mem is not None:
            self._mem.set_window(PACKET, self.data - self.meta_len, self.data_end)

    # ------------------------------------------------------------------ views

    def __len__(self) -> int:
        return self.data_end - self.data

    def bytes(self) -> bytes:
        return self.frame[self.data : self.data_end].tobytes()

    def meta_bytes(self) -> bytes:
        return self.frame[self.data - self.meta_len : self.data].tobytes()

    def read(self, off: int, n: int) -> bytes:
        """`n` bytes at packet offset `off` (the caller checked the range)."""
        return self.frame[self.data + off : self.data + off + n].tobytes()

    def write(self, off: int, chunk: bytes) -> None:
        if chunk:
            self.frame[self.data + off : self.data + off + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)

    def u16(self, off: int) -> int:
        """The u16 at packet offset `off` as a little-endian load (a __be16/__sum16 as the kernel sees it)."""
        return int(self.frame[self.data + off]) | (int(self.frame[self.data + off + 1]) << 8)

    def set_u16(self, off: int, v: int) -> None:
        self.frame[self.data + off] = v & 0xFF
        self.frame[self.data + off + 1] = (v >> 8) & 0xFF

    # The attributes the JIT engine syncs with its native environment (PacketBuffer's names).
    meta_supported = True
    frame_size = FRAME_SIZE
    tailroom = 64

    @property
    def _meta(self) -> int:
        return self.data - self.meta_len

    @_meta.setter
    def _meta(self, value: int) -> None:
        self.meta_len = self.data - value

    @property
    def data_meta(self) -> int:
        return self.data - self.meta_len

    @property
    def mac_len(self) -> int:
        return self.net - self.mac

    # ------------------------------------------------------------------ reshaping (kernel primitives)

    def _move_meta(self, new_data: int) -> None:
        if self.meta_len:
            m = self.frame[self.data - self.meta_len : self.data].copy()
            self.frame[new_data - self.meta_len : new_data] = m

    def _ensure_headroom(self, n: int) -> None:
        """pskb_expand_head's effect: when fewer than `n` bytes are free in front, move the packet (and
        every header offset) further into the frame."""
        lo = self.data - self.meta_len
        if lo >= n:
            return
        shift = n - lo + HEADROOM
        if self.data_end + shift > FRAME_SIZE:
            raise ValueError(f"skb of {len(self)} bytes cannot grow by {n} more in front")
        self.frame[lo + shift : self.data_end + shift] = self.frame[lo : self.data_end].copy()
        self.frame[lo : lo + shift] = 0
        self.data += shift
        self.data_end += shift
        self.mac += shift
        self.net += shift
        self.inner_mac += shift
        self.inner_net += shift
        if self.trans is not None:
            self.trans += shift
        if self.inner_trans is not None:
            self.inner_trans += shift
        self._sync()

    def push(self, n: int) -> None:
        """__skb_push: `n` more bytes in front (their contents are the caller's business)."""
        self._ensure_headroom(n)
        self._move_meta(self.data - n)
        self.data -= n
        self._sync()

    def pull(self, n: int) -> None:
        """__skb_pull: drop `n` bytes in front."""
        self._move_meta(self.data + n)
        self.data += n
        self._sync()

    def put_zero(self, n: int) -> None:
        """Grow the tail by `n` zeroed bytes."""
        self.frame[self.data_end : self.data_end + n] = 0
        self.data_end += n
        self._sync()

    def trim(self, length: int) -> None:
        self.data_end = self.data + length
        self._sync()

    def insert_zero(self, off: int, n: int) -> None:
        """bpf_skb_generic_push: push `n`, move the first `off` bytes to the front, zero the gap."""
        self.push(n)
        head = self.frame[self.data + n : self.data + n + off].copy()
        self.frame[self.data : self.data + off] = head
        self.frame[self.data + off : self.data + off + n] = 0

    def remove(self, off: int, n: int) -> None:
        """bpf_skb_generic_pop: drop `n` bytes after the first `off` ones."""
        head = self.frame[self.data : self.data + off].copy()
        self.pull(n)
        self.frame[self.data : self.data + off] = head

    def snapshot(self) -> dict[str, Any]:
        """The metadata a clone or a later stage sees."""
        return {"state": self.st.copy(), "meta": self.meta_bytes()}


def eth_type_trans(frame: bytes, dev_addr: bytes = bytes(6),
                   broadcast: bytes = b"\xff" * 6) -> tuple[int, int]:
    """(skb->protocol as __be16, pkt_type) as net/ethernet/eth.c computes them for `frame` received by a
    device with address `dev_addr` and broadcast address `broadcast`."""
    dest = frame[:6]
    if dest == bytes(dev_addr):
        pkt_type = PACKET_HOST
    elif dest[0] & 1:
        pkt_type = PACKET_BROADCAST if dest == bytes(broadcast) else PACKET_MULTICAST
    else:
        pkt_type = PACKET_OTHERHOST
    proto = int.from_bytes(frame[12:14], "big") if len(frame) >= 14 else 0
    if proto >= ETH_P_802_3_MIN:
        return be16(proto), pkt_type
    if frame[14:16] == b"\xff\xff":
        return be16(0x0001), pkt_type  # ETH_P_802_3
    return be16(0x0004), pkt_type  # ETH_P_802_2
