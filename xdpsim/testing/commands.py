"""The `xdpsim record`, `xdpsim trace` and `xdpsim cover` subcommands (added to the `xdpsim` command
by cli.build_parser through `add_commands`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ..errors import XdpsimError

Handler = Callable[[argparse.Namespace], int]


def add_commands(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    """Add the three subparsers; returns name -> handler for cli.COMMANDS."""
    p = sub.add_parser("record", help="write the golden outcome of every packet of a capture (JSON lines)")
    p.add_argument("spec", help="object file (prog.o or prog.o:PROGRAM) or pipeline file (.toml)")
    p.add_argument("--pcap", required=True, help="input capture (pcap or pcapng)")
    p.add_argument("--golden", required=True, help="golden file to write")
    p.add_argument("--engine", default="auto", choices=["auto", "kernel", "interp", "jit"],
                   help="recording engine (auto: the kernel where it can run BPF, else the interpreter)")
    p.add_argument("--maps", action="store_true", help="record the map entries each packet changes")

    p = sub.add_parser("trace", help="trace one packet instruction by instruction (on the interpreter)")
    p.add_argument("spec", help="object file (prog.o or prog.o:PROGRAM) or pipeline file (.toml)")
    p.add_argument("--pcap", required=True, help="input capture")
    p.add_argument("--packet", type=int, required=True, metavar="N",
                   help="index of the packet to trace (packets 0..N-1 are replayed first so maps hold state)")
    p.add_argument("--engine", default=None, choices=["interp", "jit"],
                   help="engine replaying packets 0..N-1 (default: jit when available)")
    p.add_argument("-v", "--verbose", action="store_true", help="every effect in full")

    p = sub.add_parser("cover", help="C-source line and branch coverage of a capture's replay")
    p.add_argument("spec", help="object file (prog.o or prog.o:PROGRAM) or pipeline file (.toml)")
    p.add_argument("--pcap", required=True, help="input capture")
    p.add_argument("--html", metavar="DIR", help="write an HTML report (coverage.py style) into DIR")
    p.add_argument("--lcov", metavar="FILE", help="write an LCOV tracefile")
    p.add_argument("--engine", default="auto", choices=["auto", "interp", "jit"],
                   help="counting engine (auto: the JIT, with counters compiled in, when available; "
                        "interp: the single-stepping tracer)")
    return {"record": cmd_record, "trace": cmd_trace, "cover": cmd_cover}


def cmd_record(args: argparse.Namespace) -> int:
    from ..golden import record

    head = record(args.spec, args.pcap, args.golden, engine=args.engine, maps=args.maps)
    print(f"{args.golden}: {head['packets']} packets recorded on {head['engine']}", file=sys.stderr)
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from ..io import open_capture
    from ..tracing import Recorder, format_trace
    from .packets import summary
    from .runner import default_engine, make_runner

    if args.packet < 0:
        raise XdpsimError(f"--packet {args.packet}: packet indices start at 0")
    runner = make_runner(args.spec, engine=args.engine or default_engine())
    try:
        target, count = None, 0
        for pkt in open_capture(args.pcap):
            if pkt.index == args.packet:
                target = pkt
                break
            runner.run(pkt.data, now_ns=pkt.ts_ns)
            count += 1
        if target is None:
            raise XdpsimError(f"{args.pcap} has no packet {args.packet} (it holds {count})")
        rec = Recorder(runner.obj.runtime)
        run = runner.run(target.data, now_ns=target.ts_ns, engine="interp", tracer=rec)
        steps = rec.finish(run.result.error)
        r = run.result
        print(f"packet {target.index}: {summary(target.data)} ({len(target.data)} bytes); "
              f"{target.index} packets replayed first on {runner.engine}")
        print(format_trace(steps, verbose=args.verbose, describe=runner.obj.runtime.mem.describe))
        tail = f", {r.tail_calls} tail call(s)" if r.tail_calls else ""
        print(f"result: {r.action.name} from {r.program} ({r.insns} instructions{tail})"
              + (f"; redirect {r.redirect.kind}:{r.redirect.index}" if r.redirect else ""))
        if r.error is not None:
            print(f"fault: {r.error}")
        for note in r.notes:
            print(f"note: {note}")
        for line in r.trace:
            print(f"bpf_printk: {line}")
    finally:
        runner.close()
    return 0


def cmd_cover(args: argparse.Namespace) -> int:
    from ..cover import build_report, text_summary, write_html, write_lcov
    from ..cover.jit import cover_capture

    cov, n, engine = cover_capture(args.spec, args.pcap, args.engine)
    report = build_report(cov)
    print(f"{n} packets from {args.pcap} through {args.spec} (counted on {engine})")
    print(text_summary(report))
    if args.html:
        print(f"HTML report: {write_html(report, args.html)}")
    if args.lcov:
        write_lcov(report, args.lcov)
        print(f"LCOV: {args.lcov}")
    return 0
