"""`xdpsim diff SPEC --pcap IN [--engines interp,jit,kernel] [--json]` and the `xdpsim check` registration.

SPEC is `prog.o` (every XDP/TC program of the object, each compared on its own), `prog.o:NAME`, or a
pipeline file (`.toml`, compared through `xdpsim.pipeline` with each engine: pipeline.py in this
package). Exit status 1 when the engines disagree, 0 when they agree, 2 on errors.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import XdpsimError
from ..spec import ProgType
from .core import ENGINES, DiffReport, diff_program
from .engines import PacketIn

_RUNNABLE = (ProgType.XDP, ProgType.SCHED_CLS, ProgType.SCHED_ACT)


def split_spec(spec: str) -> tuple[str, str | None]:
    """`prog.o[:NAME]` -> (path, NAME or None); a path that itself contains ':' still works."""
    if os.path.exists(spec) or ":" not in spec:
        return spec, None
    path, _, name = spec.rpartition(":")
    return path, name or None


def capture_packets(path: str, *, ifindex: int = 1, queue: int = 0,
                    limit: int | None = None) -> Callable[[], Iterator[PacketIn]]:
    """A function giving the capture's packets afresh each call (the trace replays them)."""
    from ..io import open_capture

    def packets() -> Iterator[PacketIn]:
        with open_capture(path) as cap:
            for n, p in enumerate(cap):
                if limit is not None and n >= limit:
                    return
                yield PacketIn(p.index, bytes(p.data), int(p.ts_ns), ifindex, queue)

    return packets


def _engines(text: str) -> list[str]:
    names = [e.strip() for e in text.split(",") if e.strip()]
    bad = [e for e in names if e not in ENGINES]
    if bad or len(names) < 2:
        raise XdpsimError(f"--engines: give two or more of {', '.join(ENGINES)} (got {text!r})")
    return names


def format_report(r: DiffReport) -> str:
    lines = [f"{r.spec}:{r.program}: engines {', '.join(r.engines) or '(none)'}; {r.packets} packets, "
             f"{r.compared} compared (per-CPU maps on CPU {r.cpu})"]
    for e, why in r.skipped_engines.items():
        lines.append(f"  skipped {e}: {why}")
    for why, n in r.not_compared.items():
        lines.append(f"  not run ({n} packets): {why}")
    for why, n in r.kernel_not_compared.items():
        lines.append(f"  interp/jit only, not the kernel ({n} packets): {why}")
    for d in r.disagreements:
        n = 160 if d.field.startswith("copy ") else 48  # a copy's target and length before its bytes
        vals = "; ".join(f"{e}={_short(v, n)}" for e, v in d.values.items())
        lines.append(f"  packet {d.packet}: {d.field} differs: {vals}")
    if r.disagreeing_packets > len(r.disagreements):
        lines.append(f"  ... {r.disagreeing_packets - len(r.disagreements)} more disagreeing packets")
    for m in r.map_differences:
        vals = "; ".join(f"{e}={_short(v)}" for e, v in m.values.items())
        lines.append(f"  map {m.map} key {m.key}: {vals}")
    for name, why in r.maps_not_compared.items():
        lines.append(f"  map {name} not compared: {why}")
    for n in r.notes:
        lines.append(f"  note: {n}")
    if r.trace:
        lines.append(r.trace)
    if len(r.engines) < 2:
        lines.append("  NOTHING COMPARED: fewer than two engines could run")
    else:
        lines.append("  AGREE" if r.ok else f"  DISAGREE: {r.disagreeing_packets} packets, "
                     f"{len(r.map_differences)} map entries")
    return "\n".join(lines)


def _short(v: Any, n: int = 48) -> str:
    s = v.hex() if isinstance(v, bytes) else str(v)
    return s if len(s) <= n else s[:n] + f"...({len(v) if isinstance(v, bytes) else len(s)})"


def cmd_diff(args: argparse.Namespace) -> int:
    engines = _engines(args.engines)
    if args.spec.endswith(".toml"):
        from .pipeline import diff_pipeline

        report = diff_pipeline(args.spec, args.pcap, engines=engines, seed=args.seed, limit=args.limit)
        print(json.dumps(report.to_json(), indent=2) if args.json else format_report(report))
        if len(report.engines) < 2:
            return 2
        return 0 if report.ok else 1
    from ..loader import load_object

    path, name = split_spec(args.spec)
    spec = load_object(path)
    if name is not None:
        if name not in spec.programs:
            raise XdpsimError(f"{path}: no program named {name!r} (programs: {', '.join(spec.programs)})")
        names = [name]
    else:
        names = [n for n, p in spec.programs.items() if p.type in _RUNNABLE]
    packets = capture_packets(args.pcap, ifindex=args.ifindex, queue=args.queue, limit=args.count)
    reports = [diff_program(spec, n, packets, engines=engines, seed=args.seed, limit=args.limit)
               for n in names]
    if args.json:
        out: Any = [r.to_json() for r in reports]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
    else:
        print("\n".join(format_report(r) for r in reports))
    if any(len(r.engines) < 2 for r in reports):
        return 2
    return 0 if all(r.ok for r in reports) else 1


def add_commands(sub: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Register `xdpsim diff` and `xdpsim check` on the CLI's subparsers; returns name -> command."""
    from ..check import add_check_command

    p = sub.add_parser("diff", help="run a capture through interp, jit and the kernel and compare")
    p.add_argument("spec", help="prog.o, prog.o:PROGRAM or a pipeline file (.toml)")
    p.add_argument("--pcap", required=True, help="input capture (pcap or pcapng)")
    p.add_argument("--engines", default=",".join(ENGINES), help="engines to compare (default: all three)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--seed", type=int, default=0, help="seed of bpf_get_prandom_u32 (interp, jit)")
    p.add_argument("--ifindex", type=int, default=1, help="ingress ifindex of every packet (default 1)")
    p.add_argument("--queue", type=int, default=0, help="rx queue of every packet (default 0)")
    p.add_argument("--count", type=int, default=None, help="compare only the first N packets")
    p.add_argument("--limit", type=int, default=50, help="disagreements listed at most (default 50)")
    return {"diff": cmd_diff, "check": add_check_command(sub)}
