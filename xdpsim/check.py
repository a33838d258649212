"""`xdpsim check OBJECT`: ask the running kernel's verifier about every program of an object.

The emulator runs programs the kernel would refuse (a packet read past its bounds check faults only
on the packets that reach it, or not at all), so before trusting a replay a user should know whether
the kernel would load the object. This loads every program through bpf() (maps created as libbpf
would, BTF and line info passed so the log names C lines) and prints the verdict per program; on a
refusal the verifier's complaint with the C source line, and with `--log` the whole log.

Exit status: 0 when every program is accepted, 1 when any is refused, 2 when the check cannot be
made (no bpf() here, unreadable object).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import XdpsimError


@dataclass
class Verdict:
    """The kernel verifier's answer about one program."""

    program: str
    section: str
    accepted: bool
    message: str = ""  # refusal: `program P refused by the kernel (EACCES): <complaint> (at <line>)`
    source: str | None = None  # refusal: the C line the verifier was at (`file:line: `code``), if known
    log: str = ""  # the verifier log (on acceptance: its statistics lines)
    notes: list[str] = field(default_factory=list)


def check_object(path: str) -> list[Verdict]:
    """Load every program of the object at `path` into the running kernel; one Verdict per program.

    Raises XdpsimError (KernelError) where this process cannot use bpf()."""
    from .engines.kernel import log_source_line, verify
    from .kernel.bpf import kernel_available
    from .loader import load_object

    ok, why = kernel_available()
    if not ok:
        raise XdpsimError(f"cannot ask the kernel: {why}")
    spec = load_object(path)
    out: list[Verdict] = []
    for name, (accepted, log) in verify(spec).items():
        prog = spec.programs[name]
        notes = [line[len("xdpsim note: "):] for line in log.splitlines() if line.startswith("xdpsim note: ")]
        if accepted:
            stats = [ln for ln in log.splitlines() if ln.startswith(("processed ", "verification time"))]
            out.append(Verdict(name, prog.section, True, log="\n".join(stats), notes=notes))
        else:
            message, _, rest = log.partition("\n")
            out.append(Verdict(name, prog.section, False, message, log_source_line(rest), rest, notes))
    return out


def format_verdicts(path: str, verdicts: list[Verdict], *, full_log: bool = False) -> str:
    lines: list[str] = []
    for v in verdicts:
        if v.accepted:
            stat = v.log.splitlines()[0] if v.log else ""
            lines.append(f"{path}: {v.program} ({v.section}): accepted" + (f" ({stat})" if stat else ""))
        else:
            lines.append(f"{path}: {v.program} ({v.section}): REFUSED")
            lines.append(f"  {v.message}")
            if v.source:
                lines.append(f"  source: {v.source}")
            log = v.log.strip().splitlines()
            shown = log if full_log else log[-12:]  # the tail holds the complaint and the lines leading to it
            if shown:
                lines.append("  verifier log" + ("" if full_log else " (last lines; --log for all)") + ":")
                lines.extend(f"    {line}" for line in shown)
        lines.extend(f"  note: {n}" for n in v.notes)
    refused = sum(not v.accepted for v in verdicts)
    lines.append(f"{len(verdicts)} programs, {len(verdicts) - refused} accepted, {refused} refused "
                 "by the running kernel's verifier")
    return "\n".join(lines)


def cmd_check(args: argparse.Namespace) -> int:
    status = 0
    report: list[dict[str, Any]] = []
    for path in args.objects:
        verdicts = check_object(path)
        if any(not v.accepted for v in verdicts):
            status = 1
        if args.json:
            report.append({"object": path, "programs": [asdict(v) for v in verdicts]})
        else:
            print(format_verdicts(path, verdicts, full_log=args.log))
    if args.json:
        print(json.dumps(report if len(report) != 1 else report[0], indent=2))
    return status


def add_check_command(sub: Any) -> Any:
    """Register `xdpsim check` on the CLI's subparsers; returns the command function."""
    p = sub.add_parser("check", help="ask the running kernel's verifier about every program of an object")
    p.add_argument("objects", nargs="+", metavar="OBJECT", help="ELF object file(s)")
    p.add_argument("--log", action="store_true", help="print the whole verifier log of refused programs")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    return cmd_check


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - `python -m xdpsim.check`
    p = argparse.ArgumentParser(prog="xdpsim check")
    sub = p.add_subparsers(dest="command", required=True)
    fn = add_check_command(sub)
    args = p.parse_args(["check", *(sys.argv[1:] if argv is None else argv)])
    try:
        return fn(args)
    except XdpsimError as e:
        print(f"xdpsim check: error: {e}", file=sys.stderr)
        return 2



if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
