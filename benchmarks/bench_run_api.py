"""`Program.run` per packet: the Python cost of one run through the user API (what the pytest plugin and
users' unit tests pay per packet over captured traffic), and `Program.run_many` over the same packets.

    python benchmarks/bench_run_api.py [--n N] [--rounds R] [--engines jit,interp]

For parser.o (XDP: packet_parser -> tail call into the TCP/UDP handler) and parser_tc.o (TC, the same
chain), each engine runs the reference mix (bench_jit.MIX) one `Program.run` per packet, and (where the
API has it) one `Program.run_many` call for all N. Figures are microseconds per packet in thread CPU
time (descheduled time on a shared machine is not counted), the best of R rounds, the median beside it
to show the noise. Program time itself is ~0.1 us (bench_jit.py): everything else is set-up and results.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_jit import KINDS, MIX  # noqa: E402

import xdpsim  # noqa: E402


def _time(fn, n: int, rounds: int) -> tuple[float, float]:  # noqa: ANN001
    """(best, median) microseconds per packet of `fn()`, which handles n packets."""
    fn()  # warm up: compile, first-use allocations
    out = []
    for _ in range(rounds):
        t0 = time.thread_time_ns()
        fn()
        out.append((time.thread_time_ns() - t0) / n / 1000)
    return min(out), statistics.median(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="packets per round (default 2000)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--engines", default="jit,interp")
    args = ap.parse_args()
    console = Console()
    pkts = [KINDS[MIX[i % len(MIX)]] for i in range(args.n)]
    t = Table(title=f"Program.run per packet, reference mix of {args.n} packets, best of {args.rounds} "
                    "(median), thread CPU us")
    for col in ("program", "engine", "run() us", "run_many() us", "agree"):
        t.add_column(col, justify="right")
    for obj_name in ("parser.o", "parser_tc.o"):
        for engine in args.engines.split(","):
            obj = xdpsim.load(ROOT / "programs" / obj_name, engine=engine)
            prog = obj.programs["packet_parser"]

            def one_by_one(prog=prog) -> list:  # noqa: ANN001
                return [prog.run(p) for p in pkts]

            best, med = _time(one_by_one, args.n, args.rounds)
            many = "-"
            agree = "-"
            if hasattr(prog, "run_many"):
                mb, mm = _time(lambda prog=prog: prog.run_many(pkts), args.n, args.rounds)
                many = f"{mb:.2f} ({mm:.2f})"
                a = [(r.action, r.data, r.retval, r.program) for r in one_by_one()]
                b = [(r.action, r.data, r.retval, r.program) for r in prog.run_many(pkts)]
                agree = str(a == b)
            t.add_row(obj_name, engine, f"{best:.2f} ({med:.2f})", many, agree)
    console.print(t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
