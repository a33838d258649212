"""The `xdpsim` command.

Each subcommand is a small function; the work is done by the library. Exit status: 0 on success
(dropped packets are not failures), 1 when `diff` finds a disagreement, 2 for errors of xdpsim's own
(bad arguments, unreadable files, refused objects).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import XdpsimError

if TYPE_CHECKING:
    from .pipeline.config import PipelineSpec

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def register(fn: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = fn
        return fn

    return register


def _add_spec(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="object file (prog.o or prog.o:PROGRAM) or pipeline file (.toml)")


def _add_engine(p: argparse.ArgumentParser, default: str = "jit") -> None:
    p.add_argument("--engine", default=default, choices=["interp", "jit", "kernel"],
                   help=f"engine that runs the programs (default: {default})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xdpsim", description="Run eBPF XDP/TC programs outside the kernel."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("run", help="replay a capture through a program or pipeline")
    _add_spec(p)
    p.add_argument("--pcap", required=True, help="input capture (pcap or pcapng)")
    p.add_argument("--out", required=True, help="output directory (one pcap per outcome, stats, maps)")
    _add_engine(p)
    p.add_argument("--queues", type=int, default=None, help="rx queues (simulated CPUs) per interface")
    p.add_argument("--json", action="store_true", help="print stats.json on stdout instead of a table")
    p.add_argument("--log", action="store_true", help="write packets.jsonl, one line per packet")
    p.add_argument("--seed", type=int, default=0, help="seed of bpf_get_prandom_u32")
    p.add_argument("--budget", type=int, default=None, help="instruction budget per program run")
    p.add_argument("--host-pcap", action="append", default=[], metavar="[IFACE=]FILE",
                   help="packets the host sends out of interface IFACE (default: the pipeline's first), "
                        "through its TC egress to the wire; as the pipeline key host_pcap, which it "
                        "replaces for that interface; repeatable")

    p = sub.add_parser("disasm", help="disassemble an object's programs, with C source lines")
    p.add_argument("object")
    p.add_argument("--program", help="only this program")

    p = sub.add_parser("maps", help="list an object's map specs")
    p.add_argument("object")

    from .live import add_commands as add_live_commands  # `xdpsim live` (xdpsim/live.py)

    COMMANDS["live"] = add_live_commands(sub)

    from .testing.commands import add_commands as add_testing_commands  # record, trace, cover

    COMMANDS.update(add_testing_commands(sub))

    from .difftest.cli import add_commands as add_diff_commands  # diff, check (xdpsim/difftest/)

    COMMANDS.update(add_diff_commands(sub))
    return parser


@command("run")
def cmd_run(args: argparse.Namespace) -> int:
    from .errors import CaptureError
    from .pipeline.replay import replay_to_dir

    spec = _with_host_pcaps(args.spec, args.queues, args.host_pcap) if args.host_pcap else args.spec
    try:
        stats = replay_to_dir(
            spec, args.pcap, Path(args.out), engine=args.engine, queues=args.queues,
            log=args.log, seed=args.seed, budget=args.budget, progress=not args.json and sys.stderr.isatty(),
        )
    except CaptureError as e:
        # the packets before the damage were replayed and written: show them, then the error
        stats = getattr(e, "stats", None)
        if stats is not None and stats["packets"]:
            _print_stats(stats, args)
        raise
    _print_stats(stats, args)
    return 0


def _with_host_pcaps(spec: str, queues: int | None, values: list[str]) -> PipelineSpec:
    """The pipeline of SPEC with each `--host-pcap [IFACE=]FILE` set as that interface's host_pcap
    (what `pipeline/tc_stage.py` feed_hosts sends after the replay). A FILE holding `=` needs IFACE=."""
    from .pipeline.config import PipelineError, parse_spec

    pspec = parse_spec(spec, queues=queues)
    names = [i.name for i in pspec.interfaces]
    seen: set[str] = set()
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = names[0], value
        elif name not in names:
            raise PipelineError(f"--host-pcap {value}: no interface named {name!r} "
                                f"(interfaces: {', '.join(names)})")
        if name in seen:
            raise PipelineError(f"--host-pcap {value}: interface {name!r} already has a host capture")
        if not Path(path).is_file():
            raise PipelineError(f"--host-pcap {value}: no such file {path!r}")
        seen.add(name)
        pspec.interface(name).host_pcap = Path(path).resolve()
    return pspec


def _print_stats(stats: dict, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        from .pipeline.report import print_summary

        print_summary(stats, Path(args.out))


@command("disasm")
def cmd_disasm(args: argparse.Namespace) -> int:
    from .asm import disassemble
    from .loader import load_object

    spec = load_object(args.object)
    names = {i: m.name for i, m in enumerate(spec.maps)}
    for note in spec.notices:
        print(f"# {note}", file=sys.stderr)
    for prog in spec.programs.values():
        if args.program and prog.name != args.program:
            continue
        print(f"{prog.name} (section {prog.section}, {len(prog.insns)} instructions):")
        lines = {li.insn_off: li for li in prog.line_info}
        text = disassemble(prog.insns, names=names)
        for pc, line in enumerate(text):
            if pc in prog.functions and pc:
                print(f"\n{prog.functions[pc]}:")
            li = lines.get(pc)
            if li is not None and li.text:
                print(f"; {li.text.strip()}  [{Path(li.file).name}:{li.line}]")
            if line:
                print(f"{pc:6}: {line}")
        print()
    return 0


@command("maps")
def cmd_maps(args: argparse.Namespace) -> int:
    from .loader import load_object

    spec = load_object(args.object)
    print(f"{'name':24} {'type':18} {'key':>5} {'value':>6} {'max_entries':>12} flags  initial")
    for m in spec.maps:
        init = ", ".join(f"[{k}]={v}" for k, v in sorted(m.init_slots.items()))
        if m.initial is not None:
            init = f"{len(m.initial)} bytes" + (" (frozen)" if m.frozen else "")
        print(f"{m.name:24} {m.type.name.lower():18} {m.key_size:5} {m.value_size:6} {m.max_entries:12} "
              f"{m.flags:#5x}  {init}")
    return 0


def main(argv: list[str] | None = None) -> int:
    # Nothing xdpsim does uses BLAS, but numpy's OpenBLAS starts a thread per core at numpy's first import
    # that spins (up to ~0.1 s of a core) waiting for work. The command is a process of its own: one BLAS
    # thread unless the user chose otherwise. Set here, before any subcommand imports numpy, and not at
    # `import xdpsim`, which must leave a library user's process as it is.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(f"xdpsim {__version__}")
        return 0
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except XdpsimError as e:
        print(f"xdpsim {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"xdpsim {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `xdpsim disasm x.o | head`: the reader left
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
