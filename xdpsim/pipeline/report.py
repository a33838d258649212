"""The summary table `xdpsim run` prints at the end (rich)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from .stats import OUTCOMES


def print_summary(stats: dict, out: Path, console: Console | None = None) -> None:
    console = console or Console()
    total = stats["packets"]
    table = Table(title=f"xdpsim: {total} packets", title_justify="left")
    table.add_column("outcome")
    table.add_column("packets", justify="right")
    table.add_column("%", justify="right")
    table.add_column("reasons")
    for outcome in OUTCOMES:
        n = stats["outcomes"].get(outcome, 0)
        if not n:
            continue
        reasons = stats.get("reasons", {}).get(outcome, {})
        detail = ", ".join(f"{r} {c}" for r, c in reasons.items())
        table.add_row(outcome, str(n), f"{100.0 * n / total:.1f}" if total else "-", detail)
    console.print(table)
    progs = stats.get("programs", {})
    if progs:
        pt = Table(title="programs", title_justify="left")
        pt.add_column("program")
        pt.add_column("runs", justify="right")
        pt.add_column("decided", justify="right")
        for name, c in progs.items():
            pt.add_row(name, str(c.get("runs", 0)), str(c.get("decided", 0)))
        console.print(pt)
    extra = []
    if stats.get("tail_calls"):
        extra.append(f"tail calls {stats['tail_calls']}")
    cap = stats.get("capture") or {}
    if cap.get("error"):
        extra.append(f"capture: {cap['error']}")
    if stats.get("clamped_timestamps"):
        extra.append(f"timestamps clamped {stats['clamped_timestamps']}")
    if stats.get("seconds"):
        extra.append(f"{stats['seconds']:.3f} s, {stats.get('packets_per_second') or 0:,} packets/s "
                     f"({stats.get('engine')})")
    for line in extra:
        console.print(line)
    for note in stats.get("notes", []):
        console.print(f"note: {note}", style="dim")
    console.print(f"output: {out}/")
