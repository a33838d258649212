"""Where the JIT's cold compile time goes, per program (issue 4: < 100 ms up to 500 instructions).

    python benchmarks/bench_compile.py [programs/parser.o ...] [--repeat N] [--phases] [--startup]

Per program (CPU time of this thread, best of --repeat, milliseconds; no disk cache: a cold compile):
- `tier 1`: until native code can run (IR built, printed, parsed by LLVM, level-0 machine code,
  loaded) -- what a run waits for before its first packet;
- `tier 2`: the O2 build that replaces it in the background (parse, library linked in, O2 pipeline,
  level-3 machine code, load) -- CPU time of the background thread's work, measured here in the
  foreground;
- `cached`: the tier-2 object read back from the disk cache and loaded (a second run).
The shared library of out-of-line functions (built once per xdpsim version and variant, then read
from the disk cache) is built before the timings and shown on its own line.

`--phases` splits tier 1 into `lower` (eBPF -> llvmlite.ir), `print` (the module as text), `parse`
(LLVM), `emit` (level-0 machine code), with the IR size. `--startup` times `xdpsim run` (a new
process replaying pcaps/mixed.pcap with the JIT), cold (empty cache: the tier-2 builds the process
waits for at exit included) and cached: CPU time of the process (all threads) and wall clock.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT = ["parser.o", "tc_probe.o", "calls.o", "edge_fw.o"]


def _ms(t0: float) -> float:
    return (time.thread_time() - t0) * 1e3


def tiers(paths: list[str], repeat: int, phases: bool) -> None:
    import llvmlite.binding as llvm

    from xdpsim import api
    from xdpsim.engines.jit import JitEngine
    from xdpsim.jit.compiler import Compiler, cache_dir, cache_key

    eng = JitEngine()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["XDG_CACHE_HOME"] = cache
        os.environ["XDPSIM_JIT_CACHE"] = "1"
        comp = Compiler()
        for variant in ((True, False), (False, True), (False, False)):
            t0 = time.thread_time()
            comp.library(variant, eng._natives)  # noqa: SLF001
            print(f"library {variant}: built once per xdpsim version, {_ms(t0):.0f} ms (level 0, O2 follows)")
        comp.wait()  # (its O2 object for the disk cache: built in the background, not measured here)
        head = f"{'program':18s} {'insns':>5s} {'tier 1':>7s} {'tier 2':>7s} {'cached':>7s}"
        if phases:
            head += f"   {'lower':>6s} {'print':>6s} {'parse':>6s} {'emit':>6s}  IR"
        print(head)
        fit: list[tuple[int, float]] = []  # (instructions, tier-1 ms)
        for path in paths:
            rt = api.load(path, engine="interp").runtime
            for prog in rt.programs:
                pin = eng.program_input(rt, prog)
                best = [float("inf")] * 3
                obj = cache_dir() / f"{cache_key(pin)}.o"
                for _ in range(repeat):
                    for i, tier in enumerate((1, 2)):
                        comp.t1.clear()
                        comp.t2.clear()
                        obj.unlink(missing_ok=True)  # tier 2 writes the object the cached column reads
                        t0 = time.thread_time()
                        comp.compile(pin, eng._natives, tier=tier)  # noqa: SLF001
                        best[i] = min(best[i], _ms(t0))
                    comp.t2.clear()
                    t0 = time.thread_time()
                    c = comp.compile(pin, eng._natives, tier=2)  # noqa: SLF001
                    assert c.source == "disk", c.source
                    best[2] = min(best[2], _ms(t0))
                fit.append((len(prog.insns), best[0]))
                line = f"{prog.name:18s} {len(prog.insns):5d} {best[0]:7.1f} {best[1]:7.1f} {best[2]:7.2f}"
                if phases:  # (no cyclic collection, as in Compiler.tier1_text)
                    gc.disable()
                    t = [time.thread_time()]
                    module = comp.tier1_lowering(pin, "bench", eng._natives).lower()  # noqa: SLF001
                    t.append(time.thread_time())
                    text = str(module)
                    t.append(time.thread_time())
                    mod = llvm.parse_assembly(text)
                    mod.triple = comp.tm.triple
                    t.append(time.thread_time())
                    comp.tm0.emit_object(mod)
                    t.append(time.thread_time())
                    gc.enable()
                    ph = [1e3 * (b - a) for a, b in zip(t, t[1:], strict=False)]
                    line += "   " + " ".join(f"{x:6.1f}" for x in ph) + f"  {text.count(chr(10))} lines"
                print(line)
        _growth(fit)


def _growth(fit: list[tuple[int, float]]) -> None:
    """Least-squares line through (instructions, tier-1 ms): how tier 1 grows with program size."""
    if len({n for n, _ in fit}) < 2:
        return
    mx = sum(n for n, _ in fit) / len(fit)
    my = sum(t for _, t in fit) / len(fit)
    slope = sum((n - mx) * (t - my) for n, t in fit) / sum((n - mx) ** 2 for n, _ in fit)
    base = my - slope * mx
    at500 = base + 500 * slope
    print(f"tier 1 ~ {base:.1f} ms + {slope * 1e3:.0f} us/insn: {at500:.0f} ms at 500 instructions")


def startup(obj: str) -> None:
    """`xdpsim run` in a new process: wall time cold (empty cache) and cached (the same cache)."""
    pcap = ROOT / "pcaps" / "mixed.pcap"
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, XDG_CACHE_HOME=str(Path(d) / "cache"), XDPSIM_JIT_CACHE="1")
        env.pop("XDPSIM_JIT_TIER", None)
        cmd = [sys.executable, "-m", "xdpsim.cli", "run", obj, "--pcap", str(pcap),
               "--out", str(Path(d) / "out"), "--engine", "jit", "--json"]
        base = [sys.executable, "-c", "import xdpsim.cli"]
        for label, c in (("python + import xdpsim.cli", base), ("xdpsim run, cold cache", cmd),
                         ("xdpsim run, cached", cmd), ("xdpsim run, cached", cmd)):
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(c, env=env, check=True, capture_output=True)
            wall = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
            print(f"{label:28s} {cpu:6.2f} s CPU {wall:6.2f} s wall  ({Path(obj).name}, {pcap.name})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("objects", nargs="*", default=[str(ROOT / "programs" / p) for p in DEFAULT])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--phases", action="store_true")
    ap.add_argument("--startup", action="store_true")
    a = ap.parse_args()
    tiers(a.objects, a.repeat, a.phases)
    if a.startup:
        startup(str(ROOT / "programs" / "parser.o") + ":packet_parser")


if __name__ == "__main__":
    main()
