"""Where the JIT's cold compile time goes, per program (issue 4: < 100 ms up to 500 instructions).

    python benchmarks/bench_compile.py [programs/parser.o programs/tc_probe.o ...] [--repeat N]

Phases, best of --repeat, milliseconds: `lower` (eBPF -> llvmlite.ir objects), `print` (the module as
LLVM assembly text), `parse` (LLVM parses and verifies the text), `opt` (the O2 pipeline), `emit`
(machine code into an object file), and the IR size. The sum is what a cold `JitEngine.compile` pays
besides loading the object (compiler.Compiler._build).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import llvmlite.binding as llvm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xdpsim import api  # noqa: E402
from xdpsim.engines.jit import JitEngine  # noqa: E402
from xdpsim.jit.compiler import compiler  # noqa: E402
from xdpsim.jit.lower import ModuleLowering  # noqa: E402

PHASES = ("lower", "print", "parse", "opt", "emit")


def phases(pin, natives, tm) -> tuple[list[float], int]:  # noqa: ANN001 - benchmark script
    t = [time.perf_counter()]
    module = ModuleLowering(pin, "bench", natives).lower()
    t.append(time.perf_counter())
    text = str(module)
    t.append(time.perf_counter())
    parsed = llvm.parse_assembly(text)
    parsed.triple = tm.triple
    parsed.data_layout = str(tm.target_data)
    parsed.verify()
    t.append(time.perf_counter())
    pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=2))
    pb.getModulePassManager().run(parsed, pb)
    t.append(time.perf_counter())
    tm.emit_object(parsed)
    t.append(time.perf_counter())
    return [1000 * (b - a) for a, b in zip(t, t[1:], strict=False)], len(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("objects", nargs="*", default=[str(ROOT / "programs" / "parser.o"),
                                                   str(ROOT / "programs" / "tc_probe.o")])
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    tm = compiler().tm
    eng = JitEngine()
    print(f"{'program':24s} {'insns':>5s} " + " ".join(f"{p:>7s}" for p in PHASES) + f" {'total':>7s}  IR")
    for path in a.objects:
        rt = api.load(path, engine="interp").runtime
        for prog in rt.programs:
            pin = eng.program_input(rt, prog)
            runs = [phases(pin, eng._natives, tm) for _ in range(a.repeat)]  # noqa: SLF001
            best = [min(r[0][i] for r in runs) for i in range(len(PHASES))]
            print(f"{prog.name:24s} {len(prog.insns):5d} " + " ".join(f"{x:7.1f}" for x in best)
                  + f" {sum(best):7.1f}  {runs[0][1] // 1000}k chars")


if __name__ == "__main__":
    main()
