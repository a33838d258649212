"""Coverage counted by the JIT (JitEngine(coverage=True)) equals the interpreter tracer's: every XDP
program of programs/ over every sample capture of pcaps/, through the native batch loop and packet by
packet; the counters' layout and the cache separation of instrumented code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_cover import _xdp_programs

from xdpsim.cover import CoverageData, build_report, text_summary
from xdpsim.cover.jit import cover_capture, coverage_engine, gather, install
from xdpsim.engines.jit import JitEngine
from xdpsim.io import open_capture
from xdpsim.testing.runner import SpecRunner

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = sorted(p for p in (ROOT / "pcaps").iterdir() if p.suffix in (".pcap", ".pcapng"))


def _interp(spec: str) -> CoverageData:
    runner = SpecRunner(spec, engine="interp")
    data = CoverageData()
    tracer = data.tracer(runner.obj.runtime)
    for cap in CAPTURES:
        for pkt in open_capture(cap):
            runner.run(pkt.data, now_ns=pkt.ts_ns, tracer=tracer)
            tracer.end_run()
    return data


def _jit_per_packet(spec: str) -> CoverageData:
    runner = SpecRunner(spec, engine="interp")
    jit = coverage_engine()
    install(runner, jit)
    data = CoverageData()
    for cap in CAPTURES:
        for pkt in open_capture(cap):
            runner.run(pkt.data, now_ns=pkt.ts_ns, engine="jit")
    gather(jit, runner.obj.runtime, data)
    return data


@pytest.mark.parametrize("spec", _xdp_programs(), ids=lambda s: s.rsplit("/", 1)[-1])
def test_jit_counts_equal_the_interpreter_tracer(spec):
    """Every XDP program over the sample captures (one runtime, so map state carries over as it does
    for the interpreter): identical hits, taken and fall-through counts, hence identical reports."""
    assert CAPTURES
    want = _interp(spec)
    got = _jit_per_packet(spec)
    assert got.to_json() == want.to_json()
    assert sum(sum(p.hits) for p in got.programs.values()) > 0
    assert text_summary(build_report(got)) == text_summary(build_report(want))


@pytest.mark.parametrize("spec", _xdp_programs()[:4], ids=lambda s: s.rsplit("/", 1)[-1])
@pytest.mark.parametrize("cap", CAPTURES, ids=lambda p: p.name)
def test_batch_loop_counts_equal_the_interpreter(spec, cap):
    """The native replay loop (run_batch) counts as packet-by-packet runs on the interpreter do."""
    want, n1, e1 = cover_capture(spec, cap, "interp")
    got, n2, e2 = cover_capture(spec, cap, "jit", batch_size=7)  # several batches per capture
    assert (e1, e2) == ("interp", "jit") and n1 == n2 > 0
    assert got.to_json() == want.to_json()


def test_counter_layout_and_reset():
    """hits per instruction slot (an lddw's second slot 0), taken only at conditional jumps; reset
    zeroes; an engine without coverage refuses to report."""
    spec = _xdp_programs()[0]
    runner = SpecRunner(spec, engine="interp")
    jit = coverage_engine()
    install(runner, jit)
    pkt = next(iter(open_capture(ROOT / "pcaps" / "mixed.pcap")))
    run = runner.run(pkt.data, engine="jit")
    rt = runner.obj.runtime
    pid = runner.obj.programs[runner.program].id
    hits, taken = jit.coverage_counts(rt, pid, reset=True)
    insns = rt.programs[pid].insns
    assert hits.dtype == taken.dtype == np.uint64 and len(hits) == len(taken) == len(insns)
    assert int(hits.sum()) == run.result.insns
    assert hits[0] == 1
    for pc, ins in enumerate(insns):
        if pc and insns[pc - 1].is_lddw:
            assert hits[pc] == 0
        if not ins.is_jump or ins.code == 0x00:
            assert taken[pc] == 0
        assert taken[pc] <= hits[pc]
    again = jit.coverage_counts(rt, pid)
    assert not again[0].any() and not again[1].any()
    with pytest.raises(ValueError, match="coverage=True"):
        JitEngine().coverage_counts(rt, pid)


def test_instrumented_code_is_cached_apart():
    """coverage is part of the compile-cache key: the plain engine's code has no counters."""
    assert JitEngine().cache_name != JitEngine(coverage=True).cache_name
    spec = _xdp_programs()[0]
    runner = SpecRunner(spec, engine="interp")
    rt = runner.obj.runtime
    prog = rt.programs[runner.obj.programs[runner.program].id]
    plain = JitEngine().compile(rt, prog)
    counted = coverage_engine().compile(rt, prog)
    assert plain is not None and counted is not None and plain.address != counted.address


def test_cover_command_engines_agree(tmp_path, capsys):
    """`xdpsim cover --engine jit` writes the LCOV file `--engine interp` writes."""
    from xdpsim.cli import main

    spec, cap = _xdp_programs()[0], ROOT / "pcaps" / "mixed.pcap"
    out = {}
    for engine in ("interp", "jit"):
        lcov = tmp_path / f"{engine}.info"
        assert main(["cover", spec, "--pcap", str(cap), "--lcov", str(lcov), "--engine", engine]) == 0
        assert f"(counted on {engine})" in capsys.readouterr().out
        out[engine] = lcov.read_text()
    assert out["jit"] == out["interp"] and "DA:" in out["jit"]


def test_golden_replay_counts_on_the_jit():
    """golden.outcomes (the plugin's xdpsim_golden under --xdpsim-cov) counts on the JIT as on the
    interpreter, with the same outcomes."""
    from xdpsim.golden import outcomes

    spec, cap = _xdp_programs()[0], ROOT / "pcaps" / "icmp.pcap"
    runs = {}
    for engine in ("interp", "jit"):
        data = CoverageData()
        recs = [(r["action"], r["sha256"]) for r in outcomes(spec, cap, engine=engine, coverage=data)]
        runs[engine] = (recs, data.to_json())
    assert runs["jit"] == runs["interp"]
