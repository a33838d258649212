"""The bpf_conformance suite: run its `.data` files, and speak its plugin protocol.

A `.data` file has sections introduced by `-- name` lines: `asm` (conformance assembler syntax),
`raw` (the program's bytes: one 64-bit little-endian instruction per `0x...` line, or hex bytes),
`mem` (hex bytes of the memory block), `result` (the expected r0), `error` (an expected error text),
and others (`c`, notes) that are not needed to run. A program runs in conformance mode (helper 5
returns r1, callx takes a helper id) with r1 = the address of the memory block (0 when there is none)
and r2 = its length, r10 = the top of a 512-byte frame; its r0 is the answer. `raw` wins over `asm`
when both are present (the bytes are what the test is about).

Plugin protocol (`python -m xdpsim.conformance [MEMHEX] [--engine NAME]`, options anywhere): the
program's bytes as hex on stdin, the memory block as hex in the argument; prints r0 in hex; on any
error prints the message on stderr and exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import isa
from .engines.base import Engine, RunState
from .errors import XdpsimError
from .memory import R_READ, R_WRITE
from .spec import ObjectSpec, ProgramSpec, ProgType

ENGINES = ("interp", "jit")


@dataclass
class ConformanceTest:
    path: str
    sections: dict[str, str]
    asm: str | None = None
    raw: bytes | None = None
    mem: bytes = b""
    result: int | None = None
    error: str | None = None
    extra: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    """What xdpsim answered: r0, or the error it raised."""

    r0: int | None = None
    error: str | None = None


def parse_data(text: str, path: str = "<data>") -> ConformanceTest:
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("-- "):
            current = line[3:].strip()
            sections.setdefault(current, [])
            continue
        if current is None:
            continue  # header comments
        sections[current].append(line)
    joined = {k: "\n".join(v) for k, v in sections.items()}
    t = ConformanceTest(path, joined)
    if "asm" in joined:
        t.asm = joined["asm"]
    if "raw" in joined:
        t.raw = parse_raw(joined["raw"], path)
    if "mem" in joined:
        t.mem = parse_hex_bytes(joined["mem"], path)
    if "result" in joined:
        t.result = int(joined["result"].strip(), 0)
    if "error" in joined:
        t.error = joined["error"].strip()
    t.extra = [k for k in joined if k not in ("asm", "raw", "mem", "result", "error")]
    return t


def _strip_comment(line: str) -> str:
    return line.split("#", 1)[0].strip()


def parse_hex_bytes(text: str, path: str = "<data>") -> bytes:
    out = bytearray()
    for n, line in enumerate(text.splitlines(), 1):
        for tok in _strip_comment(line).split():
            try:
                out.append(int(tok, 16))
            except ValueError:
                raise XdpsimError(f"{path}: bad hex byte {tok!r} on line {n} of a byte section") from None
    return bytes(out)


def parse_raw(text: str, path: str = "<data>") -> bytes:
    """`raw` section: one `0x<16 hex digits>` instruction per line (a little-endian u64), or hex bytes."""
    out = bytearray()
    for line in text.splitlines():
        s = _strip_comment(line)
        if not s:
            continue
        if s.lower().startswith("0x") and " " not in s:
            out += int(s, 16).to_bytes(8, "little")
        else:
            out += parse_hex_bytes(s, path)
    return bytes(out)


def program_of(test: ConformanceTest) -> list[isa.Instruction]:
    if test.raw is not None:
        return isa.decode(test.raw)
    if test.asm is not None:
        from .asm import assemble

        return assemble(test.asm)
    raise XdpsimError(f"{test.path}: no program (neither an asm nor a raw section)")


def make_engine(name: str) -> Engine:
    if name == "interp":
        from .engines.interp import Interpreter

        return Interpreter()
    if name == "jit":
        try:
            from .engines.jit import JitEngine
        except ImportError as e:
            raise XdpsimError(f"the jit engine is not available: {e}") from e
        return JitEngine()
    raise XdpsimError(f"unknown engine {name!r} (engines: {', '.join(ENGINES)})")


def run_program(insns: list[isa.Instruction], mem: bytes = b"", *, engine: str | Engine = "interp",
                budget: int | None = None) -> int:
    """Run one conformance program; returns r0 (u64). Raises XdpsimError (LoadError, ProgramFault...)."""
    import numpy as np

    from .runtime import Runtime

    rt = Runtime(conformance=True)
    spec = ProgramSpec(name="conformance", section="conformance", type=ProgType.SOCKET_FILTER, attach=None,
                       insns=list(insns))
    coll = rt.load(ObjectSpec(path="<conformance>", programs={"conformance": spec}, maps=[]))
    r1 = 0
    if mem:
        buf = np.frombuffer(bytearray(mem), dtype=np.uint8).copy()
        rid = rt.mem.add("mem", buf, R_READ | R_WRITE)
        rt.hook_state["conformance_mem"] = buf
        r1 = rid << 32
    eng = make_engine(engine) if isinstance(engine, str) else engine
    state = RunState(rt, args=(r1, len(mem)))
    if budget is not None:
        state.budget = budget
    return eng.run(rt, coll.programs["conformance"], state)


def run_test(test: ConformanceTest, engine: str | Engine = "interp") -> Outcome:
    try:
        return Outcome(r0=run_program(program_of(test), test.mem, engine=engine))
    except XdpsimError as e:
        return Outcome(error=str(e))


def run_file(path: str | Path, engine: str | Engine = "interp") -> tuple[ConformanceTest, Outcome]:
    p = Path(path)
    test = parse_data(p.read_text(), str(p))
    return test, run_test(test, engine)


def run_data_file(path: str | Path, engine: str | Engine = "interp") -> int:
    """r0 of the program in a `.data` file, run with its memory block; raises XdpsimError (with the
    file name) when it cannot be assembled, loaded or run."""
    p = Path(path)
    test = parse_data(p.read_text(), str(p))
    try:
        return run_program(program_of(test), test.mem, engine=engine)
    except XdpsimError as e:
        raise XdpsimError(f"{p}: {e}") from e


def passes(test: ConformanceTest, outcome: Outcome) -> bool:
    """The runner's verdict: when the file names an error text, an error containing that text; else
    no error and r0 equal to the `result` section (a file without one expects nothing xdpsim can
    give: it fails). An empty `-- error` section names no error."""
    if test.error:
        return outcome.error is not None and test.error in outcome.error
    return outcome.error is None and test.result is not None and outcome.r0 == test.result


# ---------------------------------------------------------------------------- plugin protocol


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m xdpsim.conformance",
        description="bpf_conformance plugin: program hex on stdin, r0 in hex on stdout")
    ap.add_argument("memory", nargs="?", default="", help="the memory block as hex")
    ap.add_argument("--engine", default="interp", choices=ENGINES)
    ap.add_argument("--budget", type=int, default=None, help="instruction budget")
    args = ap.parse_args(argv)
    try:
        program = bytes.fromhex("".join(sys.stdin.read().split()))
        mem = bytes.fromhex("".join(args.memory.split()))
        r0 = run_program(isa.decode(program), mem, engine=args.engine, budget=args.budget)
    except (XdpsimError, ValueError) as e:
        print(f"xdpsim: {e}", file=sys.stderr)
        return 1
    print(f"{r0:x}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
