"""libxdp's multi-program dispatcher: which programs run on an interface, in which order, and when the next.

libxdp sorts the programs of an interface by run priority (lower first, default 50), ties broken by
program name; after each program the next one runs when the returned action's bit is set in that
program's `chain_call_actions` (default: XDP_PASS only); a program whose action is not chained ends the
chain with that action, and running off the end of the chain gives XDP_PASS. A program's priority and
chain-call actions come from the pipeline file, else from its `XDP_RUN_CONFIG` (`.xdp_run_config`), else
the defaults.

Also here: choosing the program of `prog.o` alone (exactly one XDP entry program that no prog array
refers to), with an error listing the candidates otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..hooks.xdp import XdpAction
from ..spec import MapType, ObjectSpec, ProgType
from .config import DEFAULT_CHAIN_CALL_ACTIONS, DEFAULT_PRIORITY, XDP_ACTION_NAMES, PipelineError, ProgramRef

if TYPE_CHECKING:
    from ..hooks.xdp import XdpResult


@dataclass(frozen=True)
class ChainEntry:
    """One program of an interface's XDP chain."""

    object: str  # the object file's path
    program: str  # C function name
    priority: int
    actions_mask: int  # bit i set: action i continues the chain

    def chains(self, action: int) -> bool:
        return 0 <= action < 32 and bool(self.actions_mask >> action & 1)


def action_mask(names: list[str] | tuple[str, ...]) -> int:
    mask = 0
    for n in names:
        name = n.lower().removeprefix("xdp_")
        if name not in XDP_ACTION_NAMES:
            raise PipelineError(f"unknown XDP action {n!r} in chain_call_actions")
        mask |= 1 << XDP_ACTION_NAMES.index(name)
    return mask


def is_entry_candidate(spec: ObjectSpec, name: str) -> bool:
    """An XDP program that could be attached to an interface: not a devmap/cpumap program."""
    p = spec.programs[name]
    where = (p.attach or p.section or "").lower()
    return p.type == ProgType.XDP and "devmap" not in where and "cpumap" not in where


def tail_call_targets(spec: ObjectSpec) -> set[str]:
    """Programs that a prog array of the object names (declarative slots): not entry points."""
    out: set[str] = set()
    for m in spec.maps:
        if m.type == MapType.PROG_ARRAY:
            out.update(m.init_slots.values())
    return out


def choose_program(spec: ObjectSpec, name: str | None, extra_targets: set[str] | None = None) -> str:
    """The program to attach: `name`, or the object's only XDP entry program."""
    if name is not None:
        if name not in spec.programs:
            raise PipelineError(f"{spec.path}: no program named {name!r} "
                                f"(programs: {', '.join(spec.programs)})")
        if spec.programs[name].type != ProgType.XDP:
            raise PipelineError(f"{spec.path}: program {name} is not an XDP program "
                                f"({ProgType(spec.programs[name].type).name})")
        return name
    targets = tail_call_targets(spec) | (extra_targets or set())
    candidates = [n for n in spec.programs if is_entry_candidate(spec, n) and n not in targets]
    if len(candidates) == 1:
        return candidates[0]
    every = [n for n in spec.programs if is_entry_candidate(spec, n)]
    if not candidates:
        raise PipelineError(f"{spec.path}: no XDP entry program (XDP programs: {', '.join(every) or 'none'})")
    raise PipelineError(f"{spec.path}: {len(candidates)} XDP entry programs, say which one as "
                        f"{spec.path}:NAME (candidates: {', '.join(candidates)})")


def build_chain(refs: list[tuple[ProgramRef, ObjectSpec, str]]) -> list[ChainEntry]:
    """The chain in run order from (ref, object spec, chosen program name) triples."""
    entries = []
    for ref, spec, name in refs:
        ps = spec.programs[name]
        prio = ref.priority if ref.priority is not None else (
            ps.run_priority if ps.run_priority is not None else DEFAULT_PRIORITY)
        names = ref.chain_call_actions if ref.chain_call_actions is not None else (
            ps.chain_call_actions if ps.chain_call_actions is not None else list(DEFAULT_CHAIN_CALL_ACTIONS))
        entries.append(ChainEntry(str(ref.object), name, prio, action_mask(names)))
    return sorted(entries, key=lambda e: (e.priority, e.program))


@dataclass
class ChainRun:
    """What the chain decided for one packet: the last result, and every program that ran."""

    result: XdpResult
    ran: list[str]
    off_the_end: bool = False


def run_chain(chain: list[ChainEntry], run_one: Callable[[ChainEntry, bytes, bytes], XdpResult],
              data: bytes, meta: bytes = b"") -> ChainRun:
    """Run the chain on one frame; each program sees the frame and metadata as the previous left them."""
    ran: list[str] = []
    redirect = None
    result = None
    for entry in chain:
        result = run_one(entry, data, meta)
        ran.append(entry.program)
        if result.redirect is not None:
            redirect = result.redirect
        if result.error is not None or (result.retval & 0xFFFF_FFFF) > XdpAction.XDP_REDIRECT:
            return ChainRun(result, ran)  # a fault or an unknown action ends the chain
        if not entry.chains(int(result.action)):
            if result.action == XdpAction.XDP_REDIRECT and result.redirect is None and redirect is not None:
                # the kernel's per-CPU redirect info survives from an earlier program of the chain
                result.redirect = redirect
            return ChainRun(result, ran)
        data, meta = result.data, result.meta
    assert result is not None, "an empty chain is handled by the caller"
    # off the end: XDP_PASS (a reason of its own only when the last program did not return PASS itself)
    off = result.action != XdpAction.XDP_PASS
    result.action = XdpAction.XDP_PASS
    result.redirect = None
    return ChainRun(result, ran, off_the_end=off)


def choose_tc_program(spec: ObjectSpec, name: str | None, key: str,
                      extra_targets: set[str] | None = None) -> str:
    """The TC program of a `tc_*`/`tcx_*` entry: `name`, or the object's only TC (SCHED_CLS/ACT) entry
    program; among several, the only one whose section names the hook (`tcx/ingress` for tcx_ingress,
    `tc/egress` or `tc` ... for tc_egress)."""
    tc_types = (ProgType.SCHED_CLS, ProgType.SCHED_ACT)
    if name is not None:
        if name not in spec.programs:
            raise PipelineError(f"{spec.path}: no program named {name!r} "
                                f"(programs: {', '.join(spec.programs)})")
        if spec.programs[name].type not in tc_types:
            raise PipelineError(f"{spec.path}: program {name} under {key} is not a TC program "
                                f"({ProgType(spec.programs[name].type).name})")
        return name
    targets = tail_call_targets(spec) | (extra_targets or set())
    candidates = [n for n, p in spec.programs.items() if p.type in tc_types and n not in targets]
    if len(candidates) > 1:
        hook = key.replace("_", "/")  # tcx/ingress, tc/egress
        named = [n for n in candidates if (spec.programs[n].section or "").startswith(hook)]
        candidates = named or candidates
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise PipelineError(f"{spec.path}: no TC entry program for {key}")
    raise PipelineError(f"{spec.path}: {len(candidates)} TC entry programs for {key}, say which one as "
                        f"{spec.path}:NAME (candidates: {', '.join(candidates)})")
