"""The text summary: lines and branches covered, in percent, per program and per source file."""

from __future__ import annotations

import os

from .report import CoverageReport, percent


def _short(path: str, width: int) -> str:
    return path if len(path) <= width else "..." + path[-(width - 3):]


def text_summary(report: CoverageReport, *, base: str | None = None) -> str:
    rows = [f"{'program':32} {'insns':>11} {'lines':>15} {'branches':>15}"]
    for p in report.programs:
        label = f"{os.path.basename(p.object)}:{p.name}"
        rows.append(f"{_short(label, 32):32} {p.insns_hit:>4}/{p.insns:<4}"
                    f" {percent(p.insns_hit, p.insns):3.0f}%"
                    f" {p.lines_hit:>4}/{p.lines:<4} {percent(p.lines_hit, p.lines):5.1f}%"
                    f" {p.branches_hit:>4}/{p.branches:<4} {percent(p.branches_hit, p.branches):5.1f}%")
    rows.append("")
    rows.append(f"{'file':48} {'lines':>15} {'branches':>15}")
    for path, f in report.files.items():
        shown = os.path.relpath(path, base) if base else path
        nl, nb = len(f.lines), len(f.branches)
        rows.append(f"{_short(shown, 48):48} {f.lines_hit:>4}/{nl:<4} {percent(f.lines_hit, nl):5.1f}%"
                    f" {f.branches_hit:>4}/{nb:<4} {percent(f.branches_hit, nb):5.1f}%")
    lines, hit, br, bhit = report.totals()
    rows.append(f"{'TOTAL':48} {hit:>4}/{lines:<4} {percent(hit, lines):5.1f}%"
                f" {bhit:>4}/{br:<4} {percent(bhit, br):5.1f}%")
    return "\n".join(rows)
