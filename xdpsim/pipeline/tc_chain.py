"""TC chains on one interface and direction: tcx programs, then clsact filters (pure semantics).

Nothing here runs a program itself: `run_stage` takes a `runner(prog, data, meta, skb) -> TcResult`
(hooks/tc.py's result) that runs one program on the packet as it is now, so any engine, or the
kernel, can be wired in. What the kernel does around the programs (net/core/dev.c tcx_run/tc_run,
net/sched/cls_api.c, cls_bpf.c in direct-action mode):

- tcx (include/net/tcx.h): the programs run in order; the first result other than TCX_NEXT (-1) ends
  the tcx chain. Its code then counts as: TCX_PASS (0; tc_index = tc_classid), TCX_DROP (2),
  TCX_REDIRECT (7); any other code (an unknown one included) counts as TCX_NEXT. Only a final
  TCX_NEXT goes on into the clsact filters. At most 64 programs.
- clsact (`FilterList`): filters sorted by priority; within one priority (one classifier instance,
  one protocol) the most recently added filter runs first. A filter runs only when its protocol is
  ETH_P_ALL or the packet's (the offload VLAN protocol when a VLAN tag is in the metadata). Before
  each filter tc_classid is reset to the filter's `classid` (0 unless given). Direct-action codes
  OK, SHOT, STOLEN, TRAP and REDIRECT end the chain; every other code (RECLASSIFY, PIPE, QUEUED,
  REPEAT, UNSPEC, unknown) goes on to the next filter; running off the end gives TC_ACT_UNSPEC.
  After a final OK, tc_index = TC_H_MIN(TC_H_MAJ(classid) | tc_classid).
- Priorities: without one, a filter gets the kernel's automatic priority: 49152 (0xC000) when no
  filter has a priority of 32768 or more, else one less than the lowest such priority (measured:
  three filters without a priority get 49152, 49151, 49150). Handles default to the lowest free
  one from 1. A priority already used with another protocol is refused, as `tc` is.
- Verdicts: "pass" (OK, UNSPEC and the codes that do not end the chain; tcx PASS/NEXT), "drop"
  (SHOT; tcx DROP; a redirect without target), "stolen" (STOLEN, TRAP: consumed),
  "redirect" (REDIRECT with a target).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import XdpsimError
from ..helpers.skbuff import Clone, SkbState, be16
from ..hooks.tc import TcAction, TcResult, TcxAction

ETH_P_ALL = 0x0003
TCX_MAX_PROGS = 64
AUTO_PRIO_FIRST = 0xC000
AUTO_PRIO_FLOOR = 0x8000
XMIT_RECURSION_LIMIT = 8  # the kernel's bound on nested egress redirects (dev_xmit_recursion)
RECURSION_OUTCOME = "redirect-loop"  # the named outcome of a packet stopped by that bound

#: runner(prog, data, meta, skb) -> TcResult: run one program on the packet as it is now
Runner = Callable[[Any, bytes, bytes, SkbState], TcResult]

_ENDS_CHAIN = (TcAction.TC_ACT_OK, TcAction.TC_ACT_SHOT, TcAction.TC_ACT_STOLEN, TcAction.TC_ACT_TRAP,
               TcAction.TC_ACT_REDIRECT)


class ChainError(XdpsimError):
    """A filter or program the kernel would refuse to attach."""


@dataclass
class TcFilter:
    """One clsact filter: `prog` (whatever the runner takes), `priority` (1..65535), `handle`,
    `protocol` (host-order ethertype, ETH_P_ALL = every packet), `classid` (the filter's classid
    option, major:minor), `name` for reports."""

    prog: Any
    priority: int
    handle: int
    protocol: int = ETH_P_ALL
    classid: int = 0
    name: str = ""
    seq: int = 0  # order of addition (the newest runs first within a priority)


class FilterList:
    """The filters of one clsact direction (ingress or egress) of one interface."""

    def __init__(self) -> None:
        self.filters: list[TcFilter] = []
        self._seq = 0

    def add(self, prog: Any, *, priority: int | None = None, handle: int | None = None,
            protocol: int = ETH_P_ALL, classid: int = 0, name: str = "") -> TcFilter:
        if priority is None:
            high = [f.priority for f in self.filters if f.priority >= AUTO_PRIO_FLOOR]
            priority = min(high) - 1 if high else AUTO_PRIO_FIRST
        if not 1 <= priority <= 0xFFFF:
            raise ChainError(f"filter priority {priority}: must be 1..65535")
        same = [f for f in self.filters if f.priority == priority]
        if any(f.protocol != protocol for f in same):
            raise ChainError(f"filter priority {priority} is already used with another protocol "
                             "(the kernel: Protocol mismatch for filter with specified priority)")
        used = {f.handle for f in same}
        if handle is None:
            handle = 1
            while handle in used:
                handle += 1
        elif handle in used:
            raise ChainError(f"filter priority {priority} handle {handle:#x} exists already")
        self._seq += 1
        f = TcFilter(prog, priority, handle, protocol, classid, name or str(prog), self._seq)
        self.filters.append(f)
        return f

    def delete(self, priority: int, handle: int | None = None) -> None:
        """Remove one filter (or, without a handle, every filter of that priority)."""
        keep = [f for f in self.filters if not (f.priority == priority and handle in (None, f.handle))]
        if len(keep) == len(self.filters):
            which = f" handle {handle:#x}" if handle else ""
            raise ChainError(f"no filter with priority {priority}{which}")
        self.filters = keep

    def order(self) -> list[TcFilter]:
        """Run order: ascending priority, the newest first within one priority."""
        return sorted(self.filters, key=lambda f: (f.priority, -f.seq))

    def __len__(self) -> int:
        return len(self.filters)


@dataclass
class StageResult:
    """One stage (tcx then clsact) on one packet: `verdict` ("pass", "drop", "stolen", "redirect"),
    `code` (the final TC/tcx code), `by` ("tcx", "clsact" or "none"), the packet after the stage
    (`data`, `meta`, `skb`), `redirect` (target), `clones` (from clone_redirect), `runs` (program,
    result) in order, `error` (the first fault, which counts as TC_ACT_SHOT)."""

    verdict: str
    code: int
    by: str
    data: bytes
    meta: bytes
    skb: SkbState
    redirect: Any = None
    clones: list[Clone] = field(default_factory=list)
    runs: list[tuple[Any, TcResult]] = field(default_factory=list)
    error: Any = None
    notes: list[str] = field(default_factory=list)


def _code(res: TcResult) -> int:
    return int(res.action)


def _packet_protocol(skb: SkbState) -> int:
    return skb.vlan_proto if skb.vlan_present else skb.protocol


def run_stage(runner: Runner, data: bytes, meta: bytes, skb: SkbState, *, tcx: list[Any] | None = None,
              filters: FilterList | None = None) -> StageResult:
    """Run the tcx programs, then (on TCX_NEXT) the clsact filters, on one packet."""
    tcx = tcx or []
    if len(tcx) > TCX_MAX_PROGS:
        raise ChainError(f"{len(tcx)} tcx programs: at most {TCX_MAX_PROGS} per hook")
    out = StageResult("pass", int(TcAction.TC_ACT_UNSPEC), "none", data, meta, skb)

    def step(prog: Any) -> TcResult:
        res = runner(prog, out.data, out.meta, out.skb)
        out.data, out.meta, out.skb = res.data, res.meta, res.skb
        out.runs.append((prog, res))
        out.clones.extend(res.clones)
        out.notes.extend(res.notes)
        if res.error is not None and out.error is None:  # run_tc made it TC_ACT_SHOT
            out.error = res.error
        return res

    last: TcResult | None = None
    if tcx:
        code = int(TcxAction.TCX_NEXT)
        for prog in tcx:
            last = step(prog)
            code = _code(last)
            if code != TcxAction.TCX_NEXT:
                break
        if code in (TcxAction.TCX_PASS, TcxAction.TCX_DROP, TcxAction.TCX_REDIRECT):
            out.by, out.code = "tcx", code
            if code == TcxAction.TCX_PASS:
                out.skb.tc_index = out.skb.tc_classid & 0xFFFF
            return _verdict(out, last)
        if code != TcxAction.TCX_NEXT:
            out.notes.append(f"tcx code {code} is not a tcx verdict: counted as TCX_NEXT")
    if filters is None or not len(filters):
        return out
    code = int(TcAction.TC_ACT_UNSPEC)
    classid = 0
    for f in filters.order():
        if f.protocol != ETH_P_ALL and be16(f.protocol) != _packet_protocol(out.skb):
            continue
        out.skb.tc_classid = f.classid & 0xFFFF
        last = step(f.prog)
        classid = (f.classid & 0xFFFF_0000) | out.skb.tc_classid
        c = _code(last)
        code = c if c in _ENDS_CHAIN else int(TcAction.TC_ACT_UNSPEC)
        if code != TcAction.TC_ACT_UNSPEC:
            break
    out.by, out.code = "clsact", code
    if code == TcAction.TC_ACT_OK:
        out.skb.tc_index = classid & 0xFFFF
    return _verdict(out, last)


def _verdict(out: StageResult, last: TcResult | None) -> StageResult:
    code = out.code
    if code == TcAction.TC_ACT_SHOT:  # == TCX_DROP
        out.verdict = "drop"
    elif code in (TcAction.TC_ACT_STOLEN, TcAction.TC_ACT_TRAP) and out.by == "clsact":
        out.verdict = "stolen"
    elif code == TcAction.TC_ACT_REDIRECT:
        out.redirect = last.redirect if last is not None else None
        if out.redirect is None:
            out.verdict = "drop"
            out.notes.append("redirect without a target: dropped")
        else:
            out.verdict = "redirect"
    else:
        out.verdict = "pass"
    return out


@dataclass
class RedirectWalk:
    """Where a chain of TC redirects ended: `result` (the last stage's), `hops` (redirects followed),
    `path` (ifindex, direction) per hop, `outcome` (the last verdict, or RECURSION_OUTCOME when the
    hop limit stopped a loop)."""

    result: StageResult
    hops: int
    path: list[tuple[int, str]]
    outcome: str


def follow_redirects(first: StageResult, run_at: Callable[[int, str, StageResult], StageResult], *,
                     limit: int = XMIT_RECURSION_LIMIT) -> RedirectWalk:
    """Follow TC redirects from `first`: a "dev" redirect runs the target's egress stage, "dev-ingress"
    its ingress stage (`run_at(ifindex, "egress" | "ingress", previous)`), until a verdict other than
    redirect or `limit` redirects (the kernel stops nested egress redirects at 8: the packet is dropped,
    here with the named outcome RECURSION_OUTCOME). Other kinds (peer, neigh) end the walk as they are."""
    res, hops, path = first, 0, []
    while res.verdict == "redirect" and res.redirect.kind in ("dev", "dev-ingress"):
        if hops >= limit:
            return RedirectWalk(res, hops, path, RECURSION_OUTCOME)
        where = "ingress" if res.redirect.kind == "dev-ingress" else "egress"
        path.append((res.redirect.index, where))
        hops += 1
        res = run_at(res.redirect.index, where, res)
    return RedirectWalk(res, hops, path, res.verdict)
