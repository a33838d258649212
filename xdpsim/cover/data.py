"""Raw coverage counts per program, gathered by a tracer or handed in by an engine."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import isa

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..spec import ProgramSpec


def is_branch(ins: isa.Instruction) -> bool:
    """A conditional jump whose two directions differ (a `goto +0` is not a branch)."""
    return ins.is_jump and ins.code != isa.BPF_JA and ins.jump_target(0) != 1


@dataclass
class ProgramCoverage:
    """Counts for one program of one object: per instruction executions, per conditional jump the
    times it was taken and the times it fell through."""

    object: str
    name: str
    spec: ProgramSpec
    hits: list[int] = field(default_factory=list)
    taken: list[int] = field(default_factory=list)
    fall: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.spec.insns)
        for attr in ("hits", "taken", "fall"):
            if not getattr(self, attr):
                setattr(self, attr, [0] * n)

    @property
    def key(self) -> tuple[str, str]:
        return (self.object, self.name)


class CoverageData:
    """Counts for every program seen, keyed by (object path, program name), mergeable."""

    def __init__(self) -> None:
        self.programs: dict[tuple[str, str], ProgramCoverage] = {}

    def program(self, object_path: str, spec: ProgramSpec) -> ProgramCoverage:
        key = (os.path.abspath(object_path) if object_path else "", spec.name)
        pc = self.programs.get(key)
        if pc is None:
            pc = self.programs[key] = ProgramCoverage(key[0], spec.name, spec)
        return pc

    def register(self, runtime: Runtime) -> None:
        """Make every program of `runtime` appear in reports, run or not (0% is news too)."""
        for prog in runtime.programs:
            self.program(prog.object_path, prog.spec)

    def add_counts(self, object_path: str, spec: ProgramSpec, hits: Any, taken: Any,
                   fall: Any | None = None) -> None:
        """Add an engine's counts (sequences indexed by pc). `fall` defaults to hits - taken at
        each conditional jump (exact unless a run stopped right after a jump)."""
        pc = self.program(object_path, spec)
        hits, taken = [int(x) for x in hits], [int(x) for x in taken]
        if fall is None:
            fall = [h - t if is_branch(ins) else 0 for h, t, ins in zip(hits, taken, spec.insns, strict=True)]
        for i in range(len(pc.hits)):
            pc.hits[i] += hits[i]
            pc.taken[i] += taken[i]
            pc.fall[i] += int(fall[i])

    def merge(self, other: CoverageData) -> None:
        for p in other.programs.values():
            self.add_counts(p.object, p.spec, p.hits, p.taken, p.fall)

    def tracer(self, runtime: Runtime) -> CoverageTracer:
        self.register(runtime)
        return CoverageTracer(self, runtime)

    def to_json(self) -> dict:
        """Counts only (no specs): for comparing runs and saving raw data."""
        return {f"{o}:{n}": {"hits": p.hits, "taken": p.taken, "fall": p.fall}
                for (o, n), p in sorted(self.programs.items())}

    def save(self, path: str | os.PathLike[str]) -> None:
        with open(path, "w") as f:
            json.dump(self.to_json(), f)


class CoverageTracer:
    """`tracer(prog_id, pc, regs)` counting into a CoverageData. A conditional jump's direction is
    known at the next call: the instruction after a jump runs in the same program and frame."""

    def __init__(self, data: CoverageData, runtime: Runtime):
        self.data = data
        self.rt = runtime
        self._progs: dict[int, tuple[list[int], list[int], list[int], list[int]]] = {}
        self._jump: tuple[list[int], list[int], int, int] | None = None  # taken, fall, pc, target

    def _tables(self, prog_id: int) -> tuple[list[int], list[int], list[int], list[int]]:
        t = self._progs.get(prog_id)
        if t is None:
            prog = self.rt.programs[prog_id]
            pc = self.data.program(prog.object_path, prog.spec)
            targets = [ins.jump_target(i) if is_branch(ins) else -1 for i, ins in enumerate(prog.spec.insns)]
            t = self._progs[prog_id] = (pc.hits, pc.taken, pc.fall, targets)
        return t

    def __call__(self, prog_id: int, pc: int, regs: list[int]) -> None:
        j = self._jump
        if j is not None:
            if pc == j[3]:
                j[0][j[2]] += 1
            else:
                j[1][j[2]] += 1
            self._jump = None
        hits, taken, fall, targets = self._progs.get(prog_id) or self._tables(prog_id)
        hits[pc] += 1
        if targets[pc] >= 0:
            self._jump = (taken, fall, pc, targets[pc])

    def end_run(self) -> None:
        """Forget a jump whose direction never showed (a run ended by a fault right after it)."""
        self._jump = None
