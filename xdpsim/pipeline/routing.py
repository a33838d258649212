"""Verdict routing: what happens to a frame after its interface's XDP chain.

TX goes back out of the interface it came in on; REDIRECT goes out of the target interface (a devmap
entry's program runs first, with `egress_ifindex` set; an XDP redirect does not pass the target's TC
egress), to a CPU (cpumap: `redirect-cpu<N>`) or to an AF_XDP socket (xskmap: `xsk-<queue>`), or, with
BPF_F_BROADCAST, out of every interface of the devmap, one copy each (broadcast.py); PASS goes
to the host; DROP and ABORTED are dropped with their reason; a fault is an error. Every case returns
an (outcome, reason) pair from stats.REASONS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..hooks.xdp import XdpAction

if TYPE_CHECKING:
    from ..hooks.xdp import XdpResult


@dataclass
class Decision:
    """One packet's fate: outcome and reason (stats.REASONS), sink target, the bytes to write."""

    outcome: str
    reason: str
    data: bytes
    target: str | None = None  # "eth1", "cpu3", "xsk-0": which redirect sink
    program: str = ""  # the program whose action decided (after tail calls)
    error: str | None = None
    result: XdpResult | None = None
    ran: list[str] = field(default_factory=list)  # the chain's programs that ran, in order
    stages: list[tuple[str, str]] = field(default_factory=list)  # (xdp | tc_ingress | tc_egress, verdict)
    # bpf_clone_redirect and broadcast copies: packets of their own
    clones: list[Decision] = field(default_factory=list)
    interface: str | None = None  # a clone's: the interface where it ended


def decide(result: XdpResult, *, off_the_end: bool = False) -> Decision:
    """Outcome of everything but redirects (the pipeline resolves those: it knows the interfaces)."""
    d = result.data
    p = result.program
    if result.error is not None:
        if result.error.kind == "frame":
            return Decision("drop", "frame_too_long", d, program=p, error=str(result.error), result=result)
        return Decision("error", "program_fault", d, program=p, error=str(result.error), result=result)
    act = result.action
    if act == XdpAction.XDP_PASS:
        return Decision("pass", "chain_end" if off_the_end else "xdp_pass", d, program=p, result=result)
    if act == XdpAction.XDP_TX:
        return Decision("tx", "xdp_tx", d, program=p, result=result)
    if act == XdpAction.XDP_DROP:
        return Decision("drop", "xdp_drop", d, program=p, result=result)
    if act == XdpAction.XDP_ABORTED:
        if (result.retval & 0xFFFF_FFFF) > XdpAction.XDP_REDIRECT:
            return Decision("aborted", "unknown_action", d, program=p, result=result)
        return Decision("aborted", "xdp_aborted", d, program=p, result=result)
    return Decision("redirect", "", d, program=p, result=result)  # resolved by the pipeline


def devmap_verdict(r: XdpResult) -> Decision | None:
    """A devmap entry program's run on a redirected frame (at the egress device, XDP metadata kept):
    None when it passes the frame on (XDP_PASS); else the frame's end: dropped with reason
    `devmap_program` (kernel/bpf/devmap.c, dev_map_bpf_prog_run: any other action drops), or an error."""
    if r.error is not None:
        return Decision("error", "program_fault", r.data, program=r.program, error=str(r.error), result=r)
    if r.action != XdpAction.XDP_PASS:
        return Decision("drop", "devmap_program", r.data, program=r.program, result=r,
                        error=f"devmap program {r.program} returned {r.action.name}")
    return None
