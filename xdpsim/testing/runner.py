"""One SPEC (`prog.o[:NAME]`) run packet by packet on a chosen engine, with what the golden files,
traces, coverage and the plugin need to know about each run: the deciding program (after tail calls,
the last one in the chain), the exit instruction, the C line it belongs to.

Pipeline files (.toml) with one interface run through the pipeline's libxdp dispatcher
(pipeline.dispatcher.run_chain: priorities, chain-call actions, XDP_PASS off the end) with the file's
map_entries applied (`ChainRunner`); the deciding program is the last one that ran (after its tail
calls). Pipelines of several interfaces belong to `xdpsim run`.
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


def source_of(spec: Any, pc: int) -> str | None:
    """"file.c:LINE: text" of instruction `pc` of a ProgramSpec (BTF line info), None without it."""
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
            engine: str | None = None, tracer: Tracer | None = None, program: str | None = None) -> Run:
        """Run the entry program (or `program`) on one frame."""
        from ..api import RunResult
        from ..hooks.xdp import run_xdp

        name = engine or self.engine
        prog = self.obj.programs[program or self.program]
        if name == "kernel":
            return Run(prog.run(data, engine="kernel", ifindex=ifindex, queue=queue))
        w = self._engine(name)
        w.state = None  # a frame refused before the program runs leaves no state
        rt = self.obj.runtime
        r = run_xdp(rt, w, prog.id, data, ifindex=ifindex, queue=queue,
                    now_ns=now_ns, tracer=tracer)
        res = RunResult(r.action, r.data, r.meta, r.redirect, r.error, r.trace, r.program, r.retval, name,
                        r.helper_counts, r.tail_calls, r.insns, r.notes)
        return finish_run(res, r, w.state, rt)

    def close(self) -> None:
        self.obj.close()


def finish_run(res: RunResult, r: Any, st: RunState | None, rt: Runtime) -> Run:
    """A Run from one XDP run: where it ended (the fault's pc, else the exit of the deciding program)."""
    if r.error is not None and r.error.pc is not None:
        pc = r.error.pc
    elif st is not None and st.insns:
        pc = st.exit_pc
    else:
        return Run(res)
    if st is not None:
        prog = rt.programs[st.prog_id]
    else:
        prog = next((p for p in rt.programs if p.name == r.program), None)
    return Run(res, pc, source_of(prog.spec if prog is not None else None, pc))


def is_chain(spec: str | os.PathLike[str]) -> bool:
    """A pipeline file whose interface runs several XDP programs."""
    spec = os.fspath(spec)
    if not spec.endswith(".toml"):
        return False
    from ..pipeline.config import parse_spec

    return any(len(i.xdp) > 1 for i in parse_spec(spec).interfaces)


def make_runner(spec: str | os.PathLike[str], engine: str = "interp", *, seed: int = 0) -> Any:
    """A SpecRunner for `prog.o[:NAME]` and one-program pipeline files, a ChainRunner for chains."""
    if is_chain(spec):
        return ChainRunner(os.fspath(spec), engine, seed=seed)
    return SpecRunner(spec, engine=engine, seed=seed)


class ChainRunner:
    """A pipeline file's XDP chain on one interface, on the interpreter or the JIT (one Runtime, so
    the two can be mixed packet by packet). `obj` gives `runtime` and `maps` (name, or file.o:name
    where several objects share a name) as SpecRunner's object does."""

    def __init__(self, spec: str, engine: str = "interp", *, seed: int = 0):
        from types import SimpleNamespace

        from ..loader import load_object
        from ..pipeline.backends import SimBackend, map_key_names
        from ..pipeline.config import parse_spec
        from ..pipeline.dispatcher import build_chain, choose_program

        if engine not in ("interp", "jit"):
            raise XdpsimError(f"{spec}: an XDP chain runs on the interpreter or the JIT here, not {engine!r} "
                              "(`xdpsim run --engine kernel` replays chains in the kernel)")
        pipe = parse_spec(spec)
        if len(pipe.interfaces) != 1:
            raise XdpsimError(f"{spec}: record/trace/cover take pipelines of one interface "
                              f"({len(pipe.interfaces)} here)")
        self.spec, self.engine = spec, engine
        self.iface = pipe.interfaces[0]
        self.backend = SimBackend("interp", cpus=self.iface.queues, seed=seed, budget=None)
        specs: dict[str, Any] = {}
        refs = []
        for ref in self.iface.xdp:
            path = str(ref.object)
            if path not in specs:
                specs[path] = load_object(path)
                self.backend.load(path, specs[path])
            refs.append((ref, specs[path], choose_program(specs[path], ref.program)))
        for entry in pipe.map_entries:
            self.backend.apply(entry)
        self.chain = build_chain(refs)
        self.program = self.chain[0].program
        rt = self.backend.runtime
        names = map_key_names({p: c.maps for p, c in self.backend.collections.items()})
        maps = {names[(p, n)]: m for p, c in self.backend.collections.items() for n, m in c.maps.items()}
        self.obj = SimpleNamespace(runtime=rt, maps=maps, close=lambda: None)
        self._watch: dict[str, _Watch] = {}

    def _engine(self, name: str) -> _Watch:
        w = self._watch.get(name)
        if w is None:
            if name == "interp":
                from ..engines.interp import Interpreter

                inner: Any = Interpreter()
            else:
                from ..engines.jit import JitEngine

                inner = JitEngine()
            w = self._watch[name] = _Watch(inner)
        return w

    def run(self, data: bytes, *, now_ns: int = 0, ifindex: int | None = None, queue: int = 0,
            engine: str | None = None, tracer: Tracer | None = None) -> Run:
        from ..api import RunResult
        from ..hooks.xdp import run_xdp
        from ..pipeline.dispatcher import run_chain

        w = self._engine(engine or self.engine)
        w.state = None
        rt = self.backend.runtime
        idx = self.iface.ifindex if ifindex is None else ifindex
        states: list[Any] = []

        def one(entry: Any, frame: bytes, meta: bytes) -> Any:
            pid = self.backend.prog_id(entry.object, entry.program)
            r = run_xdp(rt, w, pid, frame, ifindex=idx, queue=queue, now_ns=now_ns, meta=meta, tracer=tracer)
            states.append(w.state)
            return r

        cr = run_chain(self.chain, one, bytes(data))
        r = cr.result
        notes = list(r.notes) + ([f"off the end of the chain ({' -> '.join(cr.ran)}): XDP_PASS"]
                                 if cr.off_the_end else [])
        res = RunResult(r.action, r.data, r.meta, r.redirect, r.error, r.trace, r.program, r.retval, w.name,
                        r.helper_counts, r.tail_calls, r.insns, notes)
        return finish_run(res, r, states[-1] if states else None, rt)

    def close(self) -> None:
        self.backend.close()


def default_engine() -> str:
    """The JIT when it loads, else the interpreter."""
    try:
        import xdpsim.engines.jit  # noqa: F401
    except Exception:  # llvmlite missing or the JIT unfinished: the interpreter always works
        return "interp"
    return "jit"
