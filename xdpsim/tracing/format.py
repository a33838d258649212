"""Text of a trace: compact (one line per instruction, effects abbreviated) or verbose (-v: every
register written, memory bytes, helper arguments, map keys and values in full)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .recorder import Step

Describe = Callable[[int], str]


def _hexbytes(b: bytes | None, limit: int | None = 16) -> str:
    if b is None:
        return "-"
    if limit is not None and len(b) > limit:
        return b[:limit].hex(" ") + f" ... ({len(b)} bytes)"
    return b.hex(" ") if b else "(empty)"


def _val(v: int, describe: Describe | None) -> str:
    if describe is not None and v >> 32:
        text = describe(v)
        if "no region" not in text:  # only values that point somewhere are worth a region name
            return text
    return f"{v:#x}"


def _effects(step: Step, verbose: bool, describe: Describe | None) -> list[str]:
    out: list[str] = []
    # compact: r10 moves only at calls, and a helper's r0 is printed with the call
    skip = () if verbose else (10, 0) if step.helper is not None else (10,)
    regs = [(r, v) for r, v in step.regs.items() if r not in skip]
    if regs:
        out.append(" ".join(f"r{r}={_val(v, describe if verbose else None)}" for r, v in regs))
    for m in step.mem:
        out.append(f"{m.kind} {m.where()} [{_hexbytes(m.data, None if verbose else 8)}]")
    h = step.helper
    if h is not None:
        res = "" if h.result is None else f" = {_val(h.result, describe)}"
        if verbose:
            args = ", ".join(_val(a, describe) for a in h.args)
            out.append(f"bpf_{h.name}({args}){res}")
        else:
            out.append(f"bpf_{h.name}(){res}")
    for a in step.maps:
        if a.op == "tail_call":
            continue
        kv = f"key {_hexbytes(a.key, None if verbose else 8)}"
        if a.value is not None or a.op.startswith("map_lookup"):
            kv += f" value {_hexbytes(a.value, None if verbose else 8)}"
        out.append(f"map {a.map}: {kv}")
    t = step.tail_call
    if t is not None:
        out.append(f"tail call {t.map}[{t.index}] -> " + (t.target if t.target else "fell through"))
    if step.fault:
        out.append(f"FAULT: {step.fault}")
    return out


def format_step(step: Step, *, verbose: bool = False, describe: Describe | None = None) -> str:
    """One instruction: `prog  pc: disassembly  ; effects` (verbose: effects on following lines)."""
    head = f"{step.prog:>16} {step.pc:5}: {step.insn}"
    eff = _effects(step, verbose, describe)
    if not eff:
        return head
    if verbose:
        return head + "".join(f"\n{'':24}{e}" for e in eff)
    return f"{head:60} ; " + "; ".join(eff)


def format_trace(steps: Sequence[Step], *, verbose: bool = False, describe: Describe | None = None,
                 source: bool = True) -> str:
    """The whole trace; the C source line is printed whenever it changes (`source=False`: never)."""
    lines: list[str] = []
    last: tuple[str, str | None, int | None] | None = None
    for s in steps:
        where = (s.prog, s.file, s.line)
        if source and s.file is not None and where != last:
            lines.append(f"{'':18}; {s.location}: {s.source}")
        last = where
        lines.append(format_step(s, verbose=verbose, describe=describe))
    return "\n".join(lines)
