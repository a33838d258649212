"""One SPEC (`prog.o[:NAME]`) run packet by packet on a chosen engine, with what the golden files,
traces, coverage and the plugin need to know about each run: the deciding program (after tail calls,
the last one in the chain), the exit instruction, the C line it belongs to.

Pipeline files (.toml) with one XDP program on one interface are run the same way (the program and
the map_entries of the file applied); chains of several programs need the pipeline's chain runner.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import XdpsimError

if TYPE_CHECKING:
    from ..api import Object, RunResult
    from ..engines.base import Engine, RunState, Tracer
    from ..runtime import Runtime


class _Watch:
    """Wraps an engine to keep the last RunState (exit pc and deciding program for every engine)."""

    def __init__(self, inner: Engine):
        self.inner = inner
        self.name = inner.name
        self.state: RunState | None = None

    def run(self, runtime: Runtime, prog_id: int, state: RunState) -> int:
        self.state = state
        return self.inner.run(runtime, prog_id, state)

    def call(self, state: RunState, func_addr: int, args: tuple[int, ...]) -> int:
        return self.inner.call(state, func_addr, args)


@dataclass
class Run:
    """A RunResult plus where it ended: `exit_pc` in program `program` (None for the kernel engine,
    which cannot say), and the C source line of that instruction."""

    result: RunResult
    exit_pc: int | None = None
    source: str | None = None  # "parser.c:105: return XDP_DROP; /* no telnet */"


def entry_program(obj: Object, name: str | None) -> str:
    """`name`, or the object's one XDP program that no prog array names as a tail-call target."""
    from ..spec import ProgType

    progs = obj.spec.programs
    if name is not None:
        if name not in progs:
            raise XdpsimError(f"{obj.path}: no program named {name!r} (programs: {', '.join(progs)})")
        return name
    targets = {p for m in obj.spec.maps for p in m.init_slots.values()}
    cands = [n for n, p in progs.items() if p.type == ProgType.XDP and n not in targets]
    if len(cands) != 1:
        xdp = ", ".join(n for n, p in progs.items() if p.type == ProgType.XDP)
        raise XdpsimError(f"{obj.path}: say which program to run, as {obj.path}:NAME (XDP programs: {xdp})")
    return cands[0]


def source_of(obj: Object, program: str, pc: int) -> str | None:
    spec = obj.spec.programs.get(program)
    li = spec.source_line(pc) if spec is not None and spec.line_info else None
    if li is None:
        return None
    return f"{os.path.basename(li.file)}:{li.line}: {li.text.strip()}"


class SpecRunner:
    """`SpecRunner("parser.o", engine="jit").run(data, now_ns=ts)` -> Run. `engine` may be "interp",
    "jit" or "kernel"; `run(..., engine="interp", tracer=t)` runs one packet on another engine of
    the same object (interp and jit share maps; the kernel has its own)."""

    def __init__(self, spec: str | os.PathLike[str], engine: str = "interp", *, seed: int = 0):
        from .. import api

        spec = os.fspath(spec)
        path, name, entries = self._parse(spec)
        self.spec = spec
        self.engine = engine
        self.obj = api.load(path, engine=engine, seed=seed)
        self.program = entry_program(self.obj, name)
        for m, key, value in entries:
            self.obj.maps[m][key] = value
        self._watch: dict[str, _Watch] = {}

    @staticmethod
    def _parse(spec: str) -> tuple[str, str | None, list[tuple[str, bytes, Any]]]:
        if not spec.endswith(".toml"):
            if ":" in spec and not os.path.exists(spec):
                path, name = spec.rsplit(":", 1)
                return path, name, []
            return spec, None, []
        from ..pipeline.config import parse_spec

        pipe = parse_spec(spec)
        progs = [(i, r) for i in pipe.interfaces for r in i.xdp]
        if len(progs) != 1:
            raise XdpsimError(f"{spec}: record/trace/cover run pipeline files with exactly one XDP program "
                              f"for now ({len(progs)} found); give the program as prog.o:NAME instead")
        ref = progs[0][1]
        entries = []
        for e in pipe.map_entries:
            name = e.map.rsplit(":", 1)[-1]
            entries.append((name, e.key, e.value if e.value is not None else e.program))
        return str(ref.object), ref.program, entries

    def _engine(self, name: str) -> _Watch:
        w = self._watch.get(name)
        if w is None:
            w = self._watch[name] = _Watch(self.obj._engine(name))
        return w

    def run(self, data: bytes, *, now_ns: int = 0, ifindex: int = 1, queue: int = 0,
            engine: str | None = None, tracer: Tracer | None = None) -> Run:
        from ..api import RunResult
        from ..hooks.xdp import run_xdp

        name = engine or self.engine
        if name == "kernel":
            res = self.obj.programs[self.program].run(data, engine="kernel", ifindex=ifindex, queue=queue)
            return Run(res)
        w = self._engine(name)
        rt = self.obj.runtime
        r = run_xdp(rt, w, self.obj.programs[self.program].id, data, ifindex=ifindex, queue=queue,
                    now_ns=now_ns, tracer=tracer)
        res = RunResult(r.action, r.data, r.meta, r.redirect, r.error, r.trace, r.program, r.retval, name,
                        r.helper_counts, r.tail_calls, r.insns, r.notes)
        st = w.state
        if r.error is not None and r.error.pc is not None:
            pc = r.error.pc
        elif st is not None and st.insns:
            pc = st.exit_pc
        else:
            return Run(res)
        return Run(res, pc, source_of(self.obj, r.program, pc))

    def close(self) -> None:
        self.obj.close()


def default_engine() -> str:
    """The JIT when it loads, else the interpreter."""
    try:
        import xdpsim.engines.jit  # noqa: F401
    except Exception:  # llvmlite missing or the JIT unfinished: the interpreter always works
        return "interp"
    return "jit"
