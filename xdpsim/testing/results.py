"""Objects the plugin's fixtures hand to tests: a loaded object whose runs return `TestResult`s, whose
`action` is a `Verdict` — an int made per result that knows its run, so a failing
`assert result.action == XDP_DROP` can show the packet, the deciding program, the trace tail and the
C source line (the plugin's pytest_assertrepr_compare asks `explain()`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .packets import hexdump, summary

if TYPE_CHECKING:
    from ..tracing.recorder import Step
    from .runner import Run, SpecRunner

ACTION_NAMES = ("XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX", "XDP_REDIRECT")
TAIL = 12  # instructions of the trace shown in a failure report
BRANCHES = 3  # conditional jumps (on distinct C lines) shown before the return


class Verdict(int):
    """An XDP action that compares and hashes as its int, prints as its name, and carries its run."""

    result: TestResult

    def __new__(cls, value: int, result: TestResult) -> Verdict:
        v = super().__new__(cls, value)
        v.result = result
        return v

    @property
    def name(self) -> str:
        return ACTION_NAMES[self] if 0 <= self < len(ACTION_NAMES) else str(int(self))

    def __repr__(self) -> str:
        return self.name

    __str__ = __repr__


@dataclass
class TestResult:
    """What a test sees of one run: the RunResult's fields (`action` a Verdict), the packet, where
    the run ended (`exit_pc`, `source`), and `steps`, the trace tail (interpreter runs record it as
    they go; other engines replay the packet on the interpreter when it is first asked for)."""

    __test__ = False  # not a test class, whatever its name

    run: Run
    packet: bytes
    index: int | None = None
    owner: Any = None
    entry: str = ""
    _steps: list[Step] | None = field(default=None, repr=False)
    _steps_note: str = ""

    def __post_init__(self) -> None:
        self.action = Verdict(int(self.run.result.action), self)

    def __getattr__(self, name: str) -> Any:  # data, redirect, error, program, trace, tail_calls, ...
        if name.startswith("_") or name in ("run",):
            raise AttributeError(name)
        return getattr(self.run.result, name)

    @property
    def exit_pc(self) -> int | None:
        return self.run.exit_pc

    @property
    def source(self) -> str | None:
        return self.run.source

    @property
    def steps(self) -> list[Step]:
        if self._steps is None and self.owner is not None:
            self._steps, self._steps_note = self.owner.replay_trace(self)
        return self._steps or []

    def explain(self) -> list[str]:
        """The failure report: packet, deciding program, where it returned, trace tail."""
        r = self.run.result
        where = f"packet #{self.index}" if self.index is not None else "packet"
        # most telling first: pytest shows the first 8 lines unless -vv (or truncation_limit_lines = 0)
        out = [f"{where}: {summary(self.packet)} ({len(self.packet)} bytes)"]
        chain = f" after {r.tail_calls} tail call(s)" if r.tail_calls else ""
        out.append(f"deciding program: {r.program}{chain} (engine {r.engine}), r0 = {r.retval}")
        if r.error is not None:
            out.append(f"fault: {r.error}")
        steps = self.steps
        out += decision_lines(steps, self.run.source, self.run.exit_pc)
        for n in r.notes:
            out.append(f"note: {n}")
        out += ["  " + ln for ln in hexdump(self.packet, 128)]
        if steps:
            from ..tracing.format import format_trace

            out.append(f"last {min(TAIL, len(steps))} instructions{self._steps_note}:")
            out += ["  " + ln for ln in format_trace(steps[-TAIL:]).splitlines()]
        return out


def decision_lines(steps: list[Step], source: str | None, exit_pc: int | None) -> list[str]:
    """Where the verdict came from: the exit (its C line is often just the closing brace), the last
    write of r0 and the last conditional jump before it, each with its C source line."""
    out = []
    if steps:
        last = steps[-1]
        # the last conditional jumps on distinct C lines: at -O2 the exit and the r0 write often carry
        # a closing brace's line, and the decision is one of these
        seen: set[tuple[str | None, int | None]] = set()
        picked = []
        for i in range(len(steps) - 1, -1, -1):
            s = steps[i]
            if s.prog != last.prog or not s.insn.startswith("if ") or (s.file, s.line) in seen:
                continue
            seen.add((s.file, s.line))
            went = "taken" if i + 1 < len(steps) and steps[i + 1].pc != s.pc + 1 else "not taken"
            picked.append(f"branch at insn {s.pc} ({went}), {s.location}: {s.source}")
            if len(picked) == BRANCHES:
                break
        out += reversed(picked)
        r0 = next((s for s in reversed(steps[:-1])
                   if 0 in s.regs and s.prog == last.prog and s.helper is None), None)
        if r0 is not None:
            out.append(f"r0 = {r0.regs[0]} set by insn {r0.pc}, {r0.location}: {r0.source}")
    if source is not None:
        out.append(f"returned by insn {exit_pc}, {source}")
    return out


class TestProgram:
    """`bpf_object(...).programs[name]`: `run(packet)` -> TestResult."""

    __test__ = False

    def __init__(self, obj: TestObject, name: str):
        self.object = obj
        self.name = name

    def run(self, packet: Any, *, now_ns: int = 0, ifindex: int = 1, queue: int = 0,
            engine: str | None = None) -> TestResult:
        return self.object._run(self.name, packet, now_ns=now_ns, ifindex=ifindex, queue=queue, engine=engine)

    def __call__(self, packet: Any, **kw: Any) -> TestResult:
        return self.run(packet, **kw)


class TestObject:
    """A loaded object for tests (the `bpf_object` fixture): `run(packet)` runs the entry program
    (the one XDP program no prog array names), `programs[name].run(packet)` any program, `maps` the
    maps (dict API). Every run is counted into the session's coverage under --xdpsim-cov."""

    __test__ = False

    def __init__(self, path: str | os.PathLike[str], engine: str, coverage: Any = None):
        from .runner import SpecRunner, entry_program

        self.path = os.fspath(path)
        # coverage counts on the interpreter's tracer, or on the JIT with counters compiled in
        self.engine = "interp" if coverage is not None and engine not in ("interp", "jit") else engine
        self.runner: SpecRunner = SpecRunner(self.path, engine=self.engine)
        self._coverage = coverage
        self._coverage_jit: Any = None
        if coverage is not None and self.engine == "jit":
            from ..cover.jit import coverage_engine, install

            self._coverage_jit = coverage_engine()
            install(self.runner, self._coverage_jit)
        self.obj = self.runner.obj
        self.maps = self.obj.maps
        self.programs = {name: TestProgram(self, name) for name in self.obj.programs}
        self._entry = entry_program
        self._coverage_tracer = coverage.tracer(self.obj.runtime) if coverage is not None else None

    def __repr__(self) -> str:
        return f"<TestObject {self.path} engine {self.engine}>"

    def run(self, packet: Any, **kw: Any) -> TestResult:
        return self._run(self.runner.program, packet, **kw)

    def _run(self, program: str, packet: Any, *, now_ns: int = 0, ifindex: int = 1, queue: int = 0,
             engine: str | None = None) -> TestResult:
        from ..tracing.recorder import Recorder

        data = bytes(packet)
        index = getattr(packet, "index", None)
        eng = engine or self.engine
        rec = Recorder(self.obj.runtime, keep=TAIL * 4) if eng == "interp" else None
        cov = self._coverage_tracer
        tracer: Any = rec
        if cov is not None:
            tracer = _tee(rec, cov) if rec is not None else cov
        try:
            run = self.runner.run(data, now_ns=now_ns, ifindex=ifindex, queue=queue, engine=eng,
                                  tracer=tracer, program=program)
        finally:
            if cov is not None:
                cov.end_run()
            if self._coverage_jit is not None and eng == "jit":
                from ..cover.jit import gather

                gather(self._coverage_jit, self.obj.runtime, self._coverage)
        res = TestResult(run, data, index, self, program)
        if rec is not None:
            res._steps = rec.finish(run.result.error)
        return res

    def replay_trace(self, res: TestResult) -> tuple[list[Step], str]:
        """Trace tail for a run made on another engine: the packet again on the interpreter, in a
        fresh copy of the object (its initial maps: exact for programs whose verdict does not
        depend on map state)."""
        from ..tracing.recorder import Recorder
        from .runner import SpecRunner

        fresh = SpecRunner(self.path, engine="interp")
        try:
            rec = Recorder(fresh.obj.runtime, keep=TAIL * 4)
            run = fresh.run(res.packet, tracer=rec, program=res.entry or None)
            return rec.finish(run.result.error), (
                f" (replayed on the interpreter from the object's initial maps; {res.run.result.engine} "
                "runs are not traced)")
        finally:
            fresh.close()


def _tee(a: Any, b: Any) -> Any:
    def tracer(prog_id: int, pc: int, regs: list[int]) -> None:
        a(prog_id, pc, regs)
        b(prog_id, pc, regs)

    return tracer
