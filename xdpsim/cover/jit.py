"""Coverage gathered on the JIT: code compiled with counters (JitEngine(coverage=True)), read back
into a CoverageData. A capture replays through the native batch loop when the spec is one program,
so a large capture is measured at JIT speed.

    data, n, engine = cover_capture("parser.o", "trace.pcap")           # jit when available
    data, n, engine = cover_capture("parser.o", "trace.pcap", "interp")  # the tracer, single-stepping

The counts equal the interpreter tracer's (tests/test_cover_jit.py) except where a run stops inside a
basic block: a memory fault counts the rest of the faulting block as run, and a block the instruction
budget stops is not counted at all.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .data import CoverageData

if TYPE_CHECKING:
    from ..engines.jit import JitEngine
    from ..runtime import Runtime

ENGINES = ("auto", "interp", "jit")


def coverage_engine() -> JitEngine:
    from ..engines.jit import JitEngine

    return JitEngine(coverage=True)


def gather(engine: JitEngine, runtime: Runtime, data: CoverageData) -> None:
    """Move the counters of every natively compiled program of `runtime` into `data` (and zero them).
    Programs the JIT declined ran on the interpreter: a tracer counted them."""
    data.register(runtime)
    for prog_id, prog in enumerate(runtime.programs):
        if engine.compile(runtime, prog) is None:
            continue
        hits, taken = engine.coverage_counts(runtime, prog_id, reset=True)
        if hits.any():
            data.add_counts(prog.object_path, prog.spec, hits, taken)


def install(runner: Any, engine: JitEngine) -> None:
    """Make `runner` (testing.runner.SpecRunner or ChainRunner) run "jit" on `engine`."""
    from ..testing.runner import _Watch

    runner._watch[engine.name] = _Watch(engine)  # noqa: SLF001 - the runners' engine slot


def resolve(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"coverage engine {engine!r}: one of {', '.join(ENGINES)}")
    if engine == "auto":
        from ..testing.runner import default_engine

        return "jit" if default_engine() == "jit" else "interp"
    return engine


def cover_capture(spec: str | os.PathLike[str], pcap: str | os.PathLike[str], engine: str = "auto",
                  *, batch_size: int = 65536) -> tuple[CoverageData, int, str]:
    """Replay every packet of `pcap` through SPEC (prog.o[:NAME] or a pipeline file) counting
    coverage; returns (data, packets, engine used)."""
    from ..testing.runner import SpecRunner, make_runner

    name = resolve(engine)
    runner = make_runner(spec, engine="interp")
    data = CoverageData()
    try:
        if name == "interp":
            return data, _per_packet(runner, pcap, data, None), name
        jit = coverage_engine()
        install(runner, jit)
        rt = runner.obj.runtime
        if isinstance(runner, SpecRunner):
            prog = runner.obj.programs[runner.program]
            if jit.compile(rt, rt.programs[prog.id]) is not None:
                n = _batched(jit, rt, prog.id, pcap, batch_size)
                gather(jit, rt, data)
                return data, n, name
        n = _per_packet(runner, pcap, data, jit)
        return data, n, name
    finally:
        runner.close()


def _per_packet(runner: Any, pcap: str | os.PathLike[str], data: CoverageData, jit: JitEngine | None) -> int:
    from ..io import open_capture

    # on the JIT the tracer only sees programs it declined (the interpreter runs those)
    tracer = data.tracer(runner.obj.runtime)
    n = 0
    for pkt in open_capture(pcap):
        runner.run(pkt.data, now_ns=pkt.ts_ns, engine="jit" if jit else "interp", tracer=tracer)
        tracer.end_run()
        n += 1
    if jit is not None:
        gather(jit, runner.obj.runtime, data)
    return n


def _batched(jit: JitEngine, runtime: Runtime, prog_id: int, pcap: str | os.PathLike[str],
             batch_size: int) -> int:
    """The capture through the native replay loop, as SpecRunner.run would take it packet by packet
    (ifindex 1, queue 0, the capture's timestamps)."""
    import numpy as np

    from ..io.batch import read_batches

    n = 0
    for b in read_batches(pcap, batch_size):
        jit.run_batch(runtime, prog_id, b.data, b.offsets, b.lengths.astype(np.uint32),
                      b.ts_ns.astype(np.uint64), None, ifindex=1)
        n += len(b)
    return n
