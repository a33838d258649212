"""The XDP hook: `struct xdp_md`, the actions, and one program run on one packet (`run_xdp`).

`xdp_md` is six u32 fields: data +0, data_end +4, data_meta +8, ingress_ifindex +12,
rx_queue_index +16, egress_ifindex +20. As the kernel's xdp_is_valid_access and its context
conversion: only aligned 4-byte loads are allowed; data, data_end and data_meta give 64-bit packet
pointers (region PACKET); egress_ifindex is readable only by devmap programs (attach "xdp/devmap");
every store is refused. A refused access is a ProgramFault of kind "ctx" (the verifier would have
rejected the program).

Frames: at most 3520 bytes (4096-byte page, 256 headroom, 320 tailroom). A longer frame cannot be run
by a single-buffer program: the result carries a ProgramFault of kind "frame" ("frame too long for
single-buffer XDP") and the program does not run. An `xdp.frags` program gets the first 3520 bytes as
the linear part and the rest in `RunState.frags`, which stands for the kernel's page-sized fragments
(17 at most, each full but the last, as BPF_PROG_TEST_RUN lays them out): bpf_xdp_get_buff_len,
load/store_bytes, adjust_tail and perf_event_output see it; direct packet access reaches only the
linear part, as in the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

from ..engines.base import DEFAULT_BUDGET, RunState, Tracer
from ..errors import ProgramFault
from ..helpers.xdp import FRAG_SIZE, MAX_SKB_FRAGS
from ..memory import CTX, PACKET, R_CTX, R_READ, R_WRITE, PacketBuffer

if TYPE_CHECKING:
    from ..engines.base import Engine
    from ..maps import RedirectTarget
    from ..runtime import Runtime

XDP_MD_SIZE = 24
_FIELDS = {0: "data", 4: "data_end", 8: "data_meta", 12: "ingress_ifindex", 16: "rx_queue_index",
           20: "egress_ifindex"}


class XdpAction(IntEnum):
    XDP_ABORTED = 0
    XDP_DROP = 1
    XDP_PASS = 2
    XDP_TX = 3
    XDP_REDIRECT = 4

    def __str__(self) -> str:
        return self.name


_ACTIONS = tuple(XdpAction)
NO_TARGET_NOTE = ("XDP_REDIRECT without a target (no bpf_redirect/bpf_redirect_map succeeded): the kernel's "
                  "xdp_do_redirect fails and drops the frame")


def unknown_action_note(act: int) -> str:
    return f"unknown XDP action {act}: treated as XDP_ABORTED (the kernel warns and drops)"


class XdpContext:
    """The ctx accessor of one XDP run (memory.CtxAccessor)."""

    def __init__(self, packet: PacketBuffer, ifindex: int, queue: int, egress_ifindex: int = 0,
                 devmap: bool = False):
        self.packet = packet
        self.ifindex = ifindex
        self.queue = queue
        self.egress_ifindex = egress_ifindex
        self.devmap = devmap

    def ctx_load(self, off: int, size: int) -> int:
        name = _FIELDS.get(off - off % 4, "?")
        if size != 4 or off % 4:
            raise ProgramFault(
                f"read of {size} bytes at xdp_md+{off:#x} ({name}): the kernel allows only aligned "
                "4-byte loads of xdp_md fields", kind="ctx", size=size, region="ctx")
        p = self.packet
        if off == 0:
            return (PACKET << 32) | p.data
        if off == 4:
            return (PACKET << 32) | p.data_end
        if off == 8:
            return (PACKET << 32) | p.data_meta
        if off == 12:
            return self.ifindex
        if off == 16:
            return self.queue
        if not self.devmap:
            raise ProgramFault("read of xdp_md->egress_ifindex: only devmap programs (xdp/devmap) may read "
                               "it", kind="ctx", size=size, region="ctx")
        return self.egress_ifindex

    def ctx_store(self, off: int, size: int, value: int) -> None:
        name = _FIELDS.get(off - off % 4, "?")
        raise ProgramFault(f"write of {size} bytes to xdp_md+{off:#x} ({name}): the XDP context is "
                           "read-only (the verifier refuses stores)", kind="ctx", size=size, region="ctx")


@dataclass
class XdpResult:
    """One XDP run. `action` is what the kernel would act on (an unknown code becomes XDP_ABORTED,
    `retval` keeps the program's r0); `data`/`meta` the packet and metadata as the program left
    them; `redirect` the target set by bpf_redirect/bpf_redirect_map; `error` a ProgramFault when the
    run faulted (then `action` is XDP_ABORTED); `program` the name of the program that returned."""

    action: XdpAction
    data: bytes
    meta: bytes = b""
    redirect: RedirectTarget | None = None
    error: ProgramFault | None = None
    trace: list[str] = field(default_factory=list)
    helper_counts: dict[str, int] = field(default_factory=dict)
    tail_calls: int = 0
    program: str = ""
    retval: int = 0
    insns: int = 0
    notes: list[str] = field(default_factory=list)


def _packet_buffer(runtime: Runtime) -> PacketBuffer:
    """The runtime's reusable XDP frame, attached as the PACKET region (again if another hook, e.g.
    TC, pointed the region elsewhere since: checked by the region's host address)."""
    hs = runtime.hook_state
    pkt = hs.get("xdp_packet")
    if pkt is None:
        pkt = PacketBuffer(b"", mem=runtime.mem)
        hs["xdp_packet"] = pkt
        hs["xdp_packet_base"] = pkt.frame.ctypes.data
    elif runtime.mem.region_base(PACKET) != hs["xdp_packet_base"]:
        pkt.attach(runtime.mem)
    return pkt


def is_devmap_program(runtime: Runtime, prog_id: int) -> bool:
    prog = runtime.programs[prog_id]
    devmap = prog.cache.get("xdp:devmap")  # fixed per program: asked once per packet otherwise
    if devmap is None:
        spec = prog.spec
        devmap = prog.cache["xdp:devmap"] = "devmap" in (spec.attach or "") or "devmap" in spec.section
    return devmap


def run_xdp(
    runtime: Runtime,
    engine: Engine,
    prog_id: int,
    data: bytes,
    *,
    ifindex: int = 1,
    queue: int = 0,
    now_ns: int = 0,
    meta: bytes = b"",
    budget: int | None = None,
    cpu: int | None = None,
    egress_ifindex: int = 0,
    tracer: Tracer | None = None,
) -> XdpResult:
    """Run XDP program `prog_id` on one frame. Faults are outcomes (`XdpResult.error`), never raised.
    `cpu` defaults to `queue % runtime.cpus` (one simulated CPU per rx queue)."""
    prog = runtime.programs[prog_id]
    if type(data) is not bytes:
        data = bytes(data)
    pkt = _packet_buffer(runtime)
    frags = bytearray()
    if len(data) > pkt.max_len:
        if not prog.spec.frags:
            err = ProgramFault(
                f"frame too long for single-buffer XDP: {len(data)} bytes, at most {pkt.max_len} (the "
                f"program {prog.name} is not xdp.frags)", kind="frame", program=prog.name)
            return XdpResult(XdpAction.XDP_ABORTED, data, error=err, program=prog.name)
        if len(data) > pkt.max_len + MAX_SKB_FRAGS * FRAG_SIZE:
            err = ProgramFault(
                f"frame too long for multi-buffer XDP: {len(data)} bytes, at most "
                f"{pkt.max_len + MAX_SKB_FRAGS * FRAG_SIZE} ({MAX_SKB_FRAGS} fragments of {FRAG_SIZE})",
                kind="frame", program=prog.name)
            return XdpResult(XdpAction.XDP_ABORTED, data, error=err, program=prog.name)
        data, frags = data[: pkt.max_len], bytearray(data[pkt.max_len :])
    mem = runtime.mem
    pkt.reset(data, meta=meta)
    ctx = XdpContext(pkt, ifindex, queue, egress_ifindex, is_devmap_program(runtime, prog_id))
    mem.set_ctx(ctx)
    if mem.window(CTX) != (0, XDP_MD_SIZE):
        mem.set(CTX, lo=0, hi=XDP_MD_SIZE, flags=R_READ | R_WRITE | R_CTX)
    state = RunState(
        runtime, prog_id=prog_id, args=((CTX << 32),), cpu=queue % runtime.cpus if cpu is None else cpu,
        now_ns=now_ns, packet=pkt, ctx=ctx, ifindex=ifindex, queue=queue,
        budget=DEFAULT_BUDGET if budget is None else budget, tracer=tracer, frags=frags,
    )
    error: ProgramFault | None = None
    retval = 0
    try:
        retval = engine.run(runtime, prog_id, state)
    except ProgramFault as e:
        error = e
    notes = list(state.notes)
    if error is not None:
        action = XdpAction.XDP_ABORTED
    else:
        act = retval & 0xFFFF_FFFF  # the kernel's bpf_prog_run_xdp returns a u32
        if act > XdpAction.XDP_REDIRECT:
            action = XdpAction.XDP_ABORTED
            notes.append(unknown_action_note(act))
        else:
            action = _ACTIONS[act]  # XdpAction(act) without the enum call's cost
        if action == XdpAction.XDP_REDIRECT and state.redirect is None:
            notes.append(NO_TARGET_NOTE)
    out = pkt.bytes() + bytes(state.frags) if state.frags else pkt.bytes()
    return XdpResult(
        action=action, data=out, meta=pkt.meta_bytes(),
        redirect=state.redirect if action == XdpAction.XDP_REDIRECT else None, error=error,
        trace=state.trace, helper_counts=state.helper_counts, tail_calls=state.tail_calls,
        program=runtime.programs[state.prog_id].name, retval=retval, insns=state.insns, notes=notes,
    )
