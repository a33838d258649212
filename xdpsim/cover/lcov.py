"""LCOV tracefile output (geninfo's format: SF, FN/FNDA, BRDA, DA, end_of_record), with the meanings
of report.py: DA counts are per-line maxima summed across programs, BRDA blocks are jump indices and
branches 0/1 fall-through/taken, `-` for a jump that never ran."""

from __future__ import annotations

import os

from .report import CoverageReport


def format_lcov(report: CoverageReport, test_name: str = "") -> str:
    out: list[str] = []
    for path, f in report.files.items():
        out.append(f"TN:{test_name}")
        out.append(f"SF:{path}")
        for name, (line, _calls) in sorted(f.functions.items(), key=lambda kv: (kv[1][0], kv[0])):
            out.append(f"FN:{line},{name}")
        for name, (_line, calls) in sorted(f.functions.items(), key=lambda kv: (kv[1][0], kv[0])):
            out.append(f"FNDA:{calls},{name}")
        out.append(f"FNF:{len(f.functions)}")
        out.append(f"FNH:{sum(1 for _, c in f.functions.values() if c)}")
        for b in f.branches:
            out.append(f"BRDA:{b.line},{b.block},{b.direction},{b.count if b.reached else '-'}")
        out.append(f"BRF:{len(f.branches)}")
        out.append(f"BRH:{f.branches_hit}")
        for line in sorted(f.lines):
            out.append(f"DA:{line},{f.lines[line].count}")
        out.append(f"LF:{len(f.lines)}")
        out.append(f"LH:{f.lines_hit}")
        out.append("end_of_record")
    return "\n".join(out) + ("\n" if out else "")


def write_lcov(report: CoverageReport, path: str | os.PathLike[str], test_name: str = "") -> None:
    with open(path, "w") as fh:
        fh.write(format_lcov(report, test_name))
