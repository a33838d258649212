"""Cost of coverage on the JIT (issue 8: at most 2x the uninstrumented replay).

    python -m xdpsim.io.workload /tmp/ref200k.pcap -n 200000
    python benchmarks/bench_cover.py /tmp/ref200k.pcap [--spec programs/parser.o] [--repeat 3]

Prints, best of --repeat: the capture through JitEngine.run_batch without and with counters (the
replay loop alone, batches read beforehand; with counters the read-back into a CoverageData is
included), then the whole commands `xdpsim run` and `xdpsim cover` (wall clock, process start and
capture reading included).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

import numpy as np

from xdpsim.cover import CoverageData
from xdpsim.cover.jit import gather
from xdpsim.engines.jit import JitEngine
from xdpsim.io.batch import read_batches
from xdpsim.testing.runner import SpecRunner


def replay(spec: str, batches: list, coverage: bool) -> float:
    runner = SpecRunner(spec, engine="interp")
    rt = runner.obj.runtime
    pid = runner.obj.programs[runner.program].id
    eng = JitEngine(coverage=coverage)
    eng.compile(rt, rt.programs[pid])
    t0 = time.perf_counter()
    for b in batches:
        eng.run_batch(rt, pid, b.data, b.offsets, b.lengths.astype(np.uint32), b.ts_ns.astype(np.uint64))
    if coverage:
        gather(eng, rt, CoverageData())
    dt = time.perf_counter() - t0
    runner.close()
    return dt


def command(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "xdpsim.cli", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pcap")
    ap.add_argument("--spec", default="programs/parser.o")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    batches = list(read_batches(a.pcap))
    n = sum(len(b) for b in batches)
    plain = min(replay(a.spec, batches, False) for _ in range(a.repeat))
    counted = min(replay(a.spec, batches, True) for _ in range(a.repeat))
    print(f"{n} packets through {a.spec}")
    print(f"run_batch plain      {plain:7.3f} s  {n / plain / 1e6:6.2f} Mpps")
    print(f"run_batch coverage   {counted:7.3f} s  {n / counted / 1e6:6.2f} Mpps   x{counted / plain:.2f}")
    with tempfile.TemporaryDirectory() as out:
        run = min(command(["run", a.spec, "--pcap", a.pcap, "--out", out]) for _ in range(a.repeat))
    cover = min(command(["cover", a.spec, "--pcap", a.pcap]) for _ in range(a.repeat))
    print(f"xdpsim run (jit)     {run:7.3f} s")
    print(f"xdpsim cover (jit)   {cover:7.3f} s   x{cover / run:.2f}")


if __name__ == "__main__":
    main()
