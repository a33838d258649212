"""Many packets through one XDP program: `run_xdp_many`, the batch form of `run_xdp` for tests over captured
traffic (`Program.run_many`).

Packets run in order on the same Runtime, so map updates carry over from packet to packet exactly as
with one `run_xdp` per packet. On an engine with a native batch loop (the JIT's `run_batch`) all the
packets go to native code in one call and the results are rebuilt from its arrays; they equal
`run_xdp`'s field by field except two counters the loop does not keep per packet: `insns` (0) and
`helper_counts` (empty). Runs that need what the loop does not report -- metadata (given, or made by
a program that may call bpf_xdp_adjust_meta), a tracer, another engine -- go packet by packet through
`run_xdp` instead, so the results never depend on the path taken.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import isa
from .xdp import _ACTIONS, NO_TARGET_NOTE, XdpAction, XdpResult, run_xdp, unknown_action_note

if TYPE_CHECKING:
    from ..engines.base import Engine
    from ..runtime import Runtime

ADJUST_META = 54  # bpf_xdp_adjust_meta: the batch loop reports no metadata


def _may_adjust_meta(runtime: Runtime) -> bool:
    """Whether any program of the runtime calls bpf_xdp_adjust_meta (a tail call may reach any of
    them), decided once per set of programs."""
    hs = runtime.hook_state
    key = len(runtime.programs)
    cached = hs.get("xdp_many_meta")
    if cached is None or cached[0] != key:
        calls = any(ins.opcode == isa.CALL and ins.src == 0 and ins.imm == ADJUST_META
                    for p in runtime.programs for ins in p.insns)
        cached = hs["xdp_many_meta"] = (key, calls)
    return cached[1]


def run_xdp_many(
    runtime: Runtime,
    engine: Engine,
    prog_id: int,
    packets: Sequence[bytes],
    *,
    ifindex: int = 1,
    queue: int = 0,
    now_ns: int | Sequence[int] = 0,
    meta: bytes = b"",
    budget: int | None = None,
    tracer: Any = None,
) -> list[XdpResult]:
    """One XdpResult per packet, in order (see the module docstring). `now_ns` is one time for every
    packet or one per packet."""
    times = [now_ns] * len(packets) if isinstance(now_ns, int) else [int(t) for t in now_ns]
    if len(times) != len(packets):
        raise ValueError(f"run_xdp_many: {len(times)} times for {len(packets)} packets")
    batch = getattr(engine, "run_batch", None)
    if batch is None or meta or tracer is not None or not packets or _may_adjust_meta(runtime):
        return [run_xdp(runtime, engine, prog_id, p, ifindex=ifindex, queue=queue, now_ns=t, meta=meta,
                        budget=budget, tracer=tracer) for p, t in zip(packets, times, strict=True)]
    lengths = np.fromiter((len(p) for p in packets), np.uint32, len(packets))
    offsets = np.zeros(len(packets), np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    data = np.frombuffer(b"".join(packets), np.uint8)
    res = batch(runtime, prog_id, data, offsets, lengths, np.array(times, np.uint64),
                np.full(len(packets), queue, np.uint32), ifindex=ifindex, budget=budget)
    return _results(runtime, res, len(packets))


def _results(runtime: Runtime, res: Any, n: int) -> list[XdpResult]:
    """A BatchResult's packets as run_xdp reports them (notes included); the arrays are read once."""
    names = [p.name for p in runtime.programs]
    out = res.out.tobytes()
    rows = zip(res.retval.tolist(), res.action.tolist(), res.out_offset.tolist(), res.out_length.tolist(),
               res.prog.tolist(), res.tail_calls.tolist(), strict=True)
    errors, traces, notes_of = res.errors, res.traces, res.notes
    results = []
    for i, (retval, action, off, length, prog, tails) in enumerate(rows):
        error = errors.get(i)
        # helpers' remarks (a packet run_xdp ran alone: all its notes), then the hook's own, as run_xdp
        notes: list[str] = list(notes_of.get(i, ()))
        redirect = None
        if error is None:
            act = retval & 0xFFFF_FFFF
            if act > XdpAction.XDP_REDIRECT:
                _note(notes, unknown_action_note(act))
            elif action == XdpAction.XDP_REDIRECT:
                redirect = res.redirect_target(i)
                if redirect is None:
                    _note(notes, NO_TARGET_NOTE)
        else:
            retval = 0  # run_xdp reports r0 = 0 for a run that faulted
        results.append(XdpResult(
            _ACTIONS[action], out[off : off + length], b"", redirect, error, list(traces.get(i, ())), {},
            tails, names[prog], retval, 0, notes,
        ))
    return results


def _note(notes: list[str], note: str) -> None:
    if note not in notes:  # already there when the packet went through run_xdp alone (jit_batch._single)
        notes.append(note)
