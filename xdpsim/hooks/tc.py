"""The TC hook: `struct __sk_buff` with the kernel's context-access rules, the TC and tcx action codes,
and one program run on one packet (`run_tc`).

Context accesses follow net/core/filter.c (tc_cls_act_is_valid_access, bpf_skb_is_valid_access and
the conversions of bpf_convert_ctx_access):

- readable: len, pkt_type, mark, queue_mapping, protocol (the __be16 as stored), vlan_present,
  vlan_tci, vlan_proto, priority, ingress_ifindex, ifindex, tc_index, cb[5], hash, tc_classid, data,
  data_end, napi_id, data_meta, tstamp (u64), wire_len, gso_segs, sk (u64; always NULL here: no
  socket objects are modelled), gso_size, tstamp_type (u8), hwtstamp (u64);
- u32 fields allow aligned narrow loads of 1, 2 or 4 bytes; cb any aligned size inside cb; data,
  data_end, data_meta exactly 4 bytes (they give 64-bit packet pointers into the PACKET region);
- writable (exactly 4 bytes; cb any size; tstamp 8): mark, priority, tc_index and tc_classid (16-bit
  fields: the low half is stored), cb, tstamp, queue_mapping (16-bit; values of 0xffff or more are
  ignored, as the kernel's rewrite skips the store);
- refused (a ProgramFault of kind "ctx": the verifier would have rejected the program): the sk_skb
  fields family..local_port, flow_keys, the padding after tstamp_type, misaligned or oversized
  accesses, writes anywhere else.

`run_tc` runs a program on a fresh skb the way BPF_PROG_TEST_RUN does (device lo, ifindex 1,
pkt_type from the destination MAC against lo's all-zero address, CHECKSUM_NONE) unless given the
metadata the packet carries (`skb=`, an SkbState from an earlier stage) and fields to set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from ..engines.base import DEFAULT_BUDGET, RunState, Tracer
from ..errors import ProgramFault
from ..helpers.csum import csum_partial
from ..helpers.skb_csum import csum_fold
from ..helpers.skbuff import CHECKSUM_COMPLETE, ETH_HLEN, Clone, SkbBuffer, SkbState
from ..memory import CTX, PACKET, R_CTX, R_READ, R_WRITE

if TYPE_CHECKING:
    from ..engines.base import Engine
    from ..maps import RedirectTarget
    from ..runtime import Runtime

SK_BUFF_SIZE = 192
NO_QUEUE_MAPPING = 0xFFFF


class TcAction(IntEnum):
    TC_ACT_UNSPEC = -1
    TC_ACT_OK = 0
    TC_ACT_RECLASSIFY = 1
    TC_ACT_SHOT = 2
    TC_ACT_PIPE = 3
    TC_ACT_STOLEN = 4
    TC_ACT_QUEUED = 5
    TC_ACT_REPEAT = 6
    TC_ACT_REDIRECT = 7
    TC_ACT_TRAP = 8

    def __str__(self) -> str:
        return self.name


class TcxAction(IntEnum):
    TCX_NEXT = -1
    TCX_PASS = 0
    TCX_DROP = 2
    TCX_REDIRECT = 7

    def __str__(self) -> str:
        return self.name


# offset -> (name, size of the field, writable)
_U32_FIELDS: dict[int, tuple[str, bool]] = {
    0: ("len", False), 4: ("pkt_type", False), 8: ("mark", True), 12: ("queue_mapping", True),
    16: ("protocol", False), 20: ("vlan_present", False), 24: ("vlan_tci", False),
    28: ("vlan_proto", False), 32: ("priority", True), 36: ("ingress_ifindex", False),
    40: ("ifindex", False), 44: ("tc_index", True), 68: ("hash", False), 72: ("tc_classid", True),
    84: ("napi_id", False), 160: ("wire_len", False), 164: ("gso_segs", False), 176: ("gso_size", False),
}
_PTR_FIELDS = {76: "data", 80: "data_end", 140: "data_meta"}
CB_LO, CB_HI = 48, 68


def field_name(off: int) -> str:
    base = off - off % 4
    if CB_LO <= off < CB_HI:
        return f"cb[{(off - CB_LO) // 4}]"
    if base in _U32_FIELDS:
        return _U32_FIELDS[base][0]
    if base in _PTR_FIELDS:
        return _PTR_FIELDS[base]
    if 88 <= off < 140:
        return "sk_skb field (family..local_port)"
    return {144: "flow_keys", 148: "flow_keys", 152: "tstamp", 156: "tstamp", 168: "sk", 172: "sk",
            180: "tstamp_type", 184: "hwtstamp", 188: "hwtstamp"}.get(base, "?")


class SkbContext:
    """The ctx accessor of one TC run (memory.CtxAccessor) over an SkbBuffer."""

    def __init__(self, skb: SkbBuffer):
        self.skb = skb
        self.queue = 0

    def _refuse(self, what: str, off: int, size: int, why: str) -> ProgramFault:
        return ProgramFault(f"{what} of {size} bytes at __sk_buff+{off:#x} ({field_name(off)}): {why} "
                            "(the verifier refuses it)", kind="ctx", size=size, region="ctx")

    def _u32(self, base: int) -> int:
        skb, st = self.skb, self.skb.st
        if base == 0:
            return len(skb)
        v = {
            4: st.pkt_type, 8: st.mark, 12: st.queue_mapping, 16: st.protocol,
            20: int(st.vlan_present), 24: st.vlan_tci if st.vlan_present else 0,
            28: st.vlan_proto if st.vlan_present else 0, 32: st.priority, 36: st.ingress_ifindex,
            40: st.ifindex, 44: st.tc_index, 68: st.hash, 72: st.tc_classid, 84: st.napi_id,
            160: st.wire_len, 164: st.gso_segs, 176: st.gso_size,
        }[base]
        return v & 0xFFFF_FFFF

    def ctx_load(self, off: int, size: int) -> int:
        if off % size:
            raise self._refuse("read", off, size, "misaligned context access")
        skb = self.skb
        if CB_LO <= off < CB_HI:
            if off + size > CB_HI:
                raise self._refuse("read", off, size, "past cb[4]")
            return int.from_bytes(skb.st.cb[off - CB_LO : off - CB_LO + size], "little")
        if off in _PTR_FIELDS or off - off % 4 in _PTR_FIELDS:
            if size != 4:
                raise self._refuse("read", off, size, "packet pointers are read with 4-byte loads only")
            ptr = {76: skb.data, 80: skb.data_end, 140: skb.data - skb.meta_len}[off]
            return (PACKET << 32) | ptr
        if off in (152, 184):
            if size != 8:
                raise self._refuse("read", off, size, "a u64 field is read with 8-byte loads only")
            return skb.st.tstamp if off == 152 else skb.st.hwtstamp
        if off == 168:
            if size != 8:
                raise self._refuse("read", off, size, "skb->sk is read with an 8-byte load only")
            return 0
        if off == 180:
            if size != 1:
                raise self._refuse("read", off, size, "tstamp_type is read with 1-byte loads only")
            return skb.st.tstamp_type
        base = off - off % 4
        if base not in _U32_FIELDS or size > 4:
            raise self._refuse("read", off, size, "not a readable __sk_buff field for TC programs")
        v = self._u32(base)
        shift = (off - base) * 8
        return (v >> shift) & ((1 << (size * 8)) - 1)

    def ctx_store(self, off: int, size: int, value: int) -> None:
        if off % size:
            raise self._refuse("write", off, size, "misaligned context access")
        st = self.skb.st
        if CB_LO <= off < CB_HI:
            if off + size > CB_HI:
                raise self._refuse("write", off, size, "past cb[4]")
            raw = (value & ((1 << (size * 8)) - 1)).to_bytes(size, "little")
            st.cb[off - CB_LO : off - CB_LO + size] = raw
            return
        if off == 152:
            if size != 8:
                raise self._refuse("write", off, size, "tstamp is written with 8-byte stores only")
            st.tstamp = value & ((1 << 64) - 1)
            return
        if off not in (8, 12, 32, 44, 72):
            raise self._refuse("write", off, size, "not a writable __sk_buff field for TC programs")
        if size != 4:
            raise self._refuse("write", off, size, "__sk_buff fields are written with 4-byte stores only")
        value &= 0xFFFF_FFFF
        if off == 8:
            st.mark = value
        elif off == 32:
            st.priority = value
        elif off == 44:
            st.tc_index = value & 0xFFFF
        elif off == 72:
            st.tc_classid = value & 0xFFFF
        elif value < NO_QUEUE_MAPPING:  # queue_mapping: 0xffff and above are not stored
            st.queue_mapping = value


@dataclass
class TcResult:
    """One TC run. `retval` is the program's r0 as a signed 32-bit code; `action` the TcAction it
    names (an unknown code stays an int, noted); a fault gives `error` and action TC_ACT_SHOT.
    `data`/`meta` the packet as left; `skb` the metadata after the run (what the next stage sees);
    `redirect` the target of a TC_ACT_REDIRECT; `clones` what bpf_clone_redirect sent."""

    action: TcAction | int
    data: bytes
    meta: bytes = b""
    skb: SkbState = field(default_factory=SkbState)
    redirect: RedirectTarget | None = None
    clones: list[Clone] = field(default_factory=list)
    error: ProgramFault | None = None
    trace: list[str] = field(default_factory=list)
    helper_counts: dict[str, int] = field(default_factory=dict)
    tail_calls: int = 0
    program: str = ""
    retval: int = 0
    insns: int = 0
    notes: list[str] = field(default_factory=list)
    csum_ok: bool | None = None  # run_tc(checksum_complete=True): skb->csum still right afterwards


def wire_skb(data: bytes, ifindex: int, *, dev_addr: bytes = bytes(6), broadcast: bytes = b"\xff" * 6,
             untag: bool = True) -> tuple[bytes, SkbState]:
    """A frame received from the wire on `ifindex` as TC ingress sees it: pkt_type and protocol from
    eth_type_trans against the device's addresses, skb_iif = ifindex, and (`untag`, what the stack's
    skb_vlan_untag and NICs' VLAN offload do before TC ingress) the outermost 802.1Q/802.1ad tag moved
    from the bytes into the offload tag. Returns the bytes TC sees and the metadata for run_tc(skb=)."""
    from ..helpers.skbuff import VLAN_TYPES_BE, be16, eth_type_trans

    st = SkbState(ifindex=ifindex, ingress_ifindex=ifindex)
    st.protocol, st.pkt_type = eth_type_trans(data, dev_addr, broadcast)
    if untag and st.protocol in VLAN_TYPES_BE and len(data) >= ETH_HLEN + 4:
        st.vlan_present, st.vlan_proto = True, st.protocol
        st.vlan_tci = int.from_bytes(data[14:16], "big")
        data = data[:12] + data[16:]
        st.protocol = be16(int.from_bytes(data[12:14], "big"))
    st.wire_len = len(data)
    return data, st


def host_skb(data: bytes, ifindex: int, *, sk_cookie: int = 0, mark: int = 0,
             priority: int = 0) -> tuple[bytes, SkbState]:
    """A frame the host sends out of `ifindex` (TC egress): no receiving device (skb_iif 0), PACKET_HOST,
    the protocol from the ethertype, and the socket's cookie/mark/priority if it has one."""
    from ..helpers.skbuff import eth_type_trans

    st = SkbState(ifindex=ifindex, ingress_ifindex=0, sk_cookie=sk_cookie, mark=mark, priority=priority)
    st.protocol = eth_type_trans(data)[0]
    st.wire_len = len(data)
    return data, st


def _skb_buffer(runtime: Runtime) -> SkbBuffer:
    """The runtime's reusable skb, attached as the PACKET region (again after another hook moved it)."""
    hs = runtime.hook_state
    skb = hs.get("tc_skb")
    if skb is None:
        skb = SkbBuffer()
        hs["tc_skb"] = skb
        hs["tc_skb_base"] = skb.frame.ctypes.data
    if runtime.mem.region_base(PACKET) != hs["tc_skb_base"]:
        skb.attach(runtime.mem)
    return skb


def s32(v: int) -> int:
    v &= 0xFFFF_FFFF
    return v - (1 << 32) if v & 0x8000_0000 else v


def run_tc(
    runtime: Runtime,
    engine: Engine,
    prog_id: int,
    data: bytes,
    *,
    skb: SkbState | None = None,
    meta: bytes = b"",
    now_ns: int = 0,
    budget: int | None = None,
    cpu: int = 0,
    dev_addr: bytes = bytes(6),
    broadcast: bytes = bytes(6),
    max_len: int | None = None,
    checksum_complete: bool = False,
    tracer: Tracer | None = None,
    **fields: Any,
) -> TcResult:
    """Run TC program `prog_id` on one packet. `skb`: the metadata the packet carries (copied; default:
    a fresh skb as BPF_PROG_TEST_RUN makes one); `fields`: SkbState fields to set first (mark=...,
    cb=[...], ifindex=...). `dev_addr`/`broadcast`: the receiving device's addresses (default lo's,
    all zeros), which decide pkt_type; `max_len`: the longest packet skb_change_tail/head may make
    (default SKB_MAX_ALLOC, 16064, as measured under BPF_PROG_TEST_RUN). `checksum_complete`: as
    BPF_F_TEST_SKB_CHECKSUM_COMPLETE, the skb starts CHECKSUM_COMPLETE with skb->csum over the bytes
    from the network header, and `TcResult.csum_ok` says whether skb->csum still matches the packet
    afterwards (the kernel's test run fails with EBADMSG when not). Faults are outcomes
    (`TcResult.error`), never raised."""
    prog = runtime.programs[prog_id]
    if type(data) is not bytes:
        data = bytes(data)
    buf = _skb_buffer(runtime)
    if len(data) < ETH_HLEN:
        err = ProgramFault(f"frame of {len(data)} bytes: a TC skb starts with a {ETH_HLEN}-byte Ethernet "
                           "header", kind="frame", program=prog.name)
        return TcResult(TcAction.TC_ACT_SHOT, data, error=err, program=prog.name)
    st = skb.copy() if skb is not None else None
    buf.reset(data, meta=meta, state=st, dev_addr=dev_addr, broadcast=broadcast, max_len=max_len or 0)
    if st is not None and not st.wire_len:
        st.wire_len = len(data)
    for name, value in fields.items():
        if not hasattr(buf.st, name):
            raise ValueError(f"__sk_buff has no field {name!r} to set")
        setattr(buf.st, name, bytearray(b"".join(int(v).to_bytes(4, "little") for v in value))
                if name == "cb" else value)
    if checksum_complete:
        buf.st.ip_summed = CHECKSUM_COMPLETE
        buf.st.csum = csum_partial(buf.bytes()[buf.net - buf.data :], 0)
    ctx = SkbContext(buf)
    mem = runtime.mem
    mem.set_ctx(ctx)
    if mem.window(CTX) != (0, SK_BUFF_SIZE):
        mem.set(CTX, lo=0, hi=SK_BUFF_SIZE, flags=R_READ | R_WRITE | R_CTX)
    state = RunState(
        runtime, prog_id=prog_id, args=((CTX << 32),), cpu=cpu, now_ns=now_ns, packet=buf,  # type: ignore[arg-type]
        ctx=ctx, ifindex=buf.st.ifindex, budget=DEFAULT_BUDGET if budget is None else budget, tracer=tracer,
    )
    error: ProgramFault | None = None
    retval = 0
    try:
        retval = engine.run(runtime, prog_id, state)
    except ProgramFault as e:
        error = e
    notes = list(state.notes)
    code = s32(retval)
    action: TcAction | int
    if error is not None:
        action = TcAction.TC_ACT_SHOT
    elif code in TcAction._value2member_map_:
        action = TcAction(code)
    else:
        action = code
        notes.append(f"unknown TC action {code}: a direct-action filter treats it as TC_ACT_UNSPEC")
    csum_ok = None
    if checksum_complete and error is None:
        now = csum_partial(buf.bytes()[max(buf.net - buf.data, 0) :], 0)
        csum_ok = csum_fold(buf.st.csum) == csum_fold(now)
        if not csum_ok:
            notes.append("skb->csum no longer matches the packet (CHECKSUM_COMPLETE): the kernel's test "
                         "run fails with EBADMSG")
    if action == TcAction.TC_ACT_REDIRECT and state.redirect is None:
        notes.append("TC_ACT_REDIRECT without a target (no bpf_redirect succeeded): the kernel drops it")
    return TcResult(
        action=action, data=buf.bytes(), meta=buf.meta_bytes(), skb=buf.st,
        redirect=state.redirect if action == TcAction.TC_ACT_REDIRECT else None, clones=list(buf.clones),
        error=error, trace=state.trace, helper_counts=state.helper_counts, tail_calls=state.tail_calls,
        program=runtime.programs[state.prog_id].name, retval=retval, insns=state.insns, notes=notes,
        csum_ok=csum_ok,
    )
