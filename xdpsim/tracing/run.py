"""Run one packet on the interpreter with a Recorder attached."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api import Program, RunResult, _packet_bytes
from ..hooks.xdp import run_xdp
from .recorder import Recorder, Step


@dataclass
class TracedRun:
    """A run and its instruction trace (`steps`, oldest first; only the last `keep` when asked)."""

    result: RunResult
    steps: list[Step]

    @property
    def returned_at(self) -> Step | None:
        """The instruction that ended the run (the exit, or the faulting instruction)."""
        return self.steps[-1] if self.steps else None


def trace_run(program: Program, packet: Any, *, keep: int | None = None, ifindex: int = 1, queue: int = 0,
              now_ns: int = 0, meta: bytes = b"", budget: int | None = None) -> TracedRun:
    """Run `program` (an api.Program) on `packet` with the interpreter, whatever the object's default
    engine, on the object's own runtime (so its maps see the run, as in any other run)."""
    obj = program.object
    rt = obj.runtime
    rec = Recorder(rt, keep=keep)
    data = _packet_bytes(packet)
    r = run_xdp(rt, obj._engine("interp"), program.id, data, ifindex=ifindex, queue=queue, now_ns=now_ns,
                meta=meta, budget=budget, tracer=rec)
    steps = rec.finish(r.error)
    res = RunResult(r.action, r.data, r.meta, r.redirect, r.error, r.trace, r.program, r.retval, "interp",
                    r.helper_counts, r.tail_calls, r.insns, r.notes)
    return TracedRun(res, steps)
