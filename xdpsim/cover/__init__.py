"""Coverage of BPF programs by C source line and branch direction (xdpsim cover, pytest --xdpsim-cov).

    cov = CoverageData()
    tracer = cov.tracer(obj.runtime)          # a RunState tracer: runs on the interpreter
    ... run packets with tracer=tracer ...
    report = build_report(cov)                # per program, per file, per line, per branch
    print(text_summary(report)); write_lcov(report, "cov.info"); write_html(report, "htmlcov")

Counting: `hits[pc]` is how often instruction pc ran, `taken[pc]`/`fall[pc]` how often the
conditional jump at pc went to its target / fell through. An engine that counts natively (the JIT,
when it can) fills the same arrays through `CoverageData.add_counts`.
"""

from .data import CoverageData, ProgramCoverage, is_branch
from .html import write_html
from .lcov import format_lcov, write_lcov
from .report import BranchStat, CoverageReport, FileReport, LineStat, ProgramReport, build_report
from .text import text_summary

__all__ = [
    "BranchStat",
    "CoverageData",
    "CoverageReport",
    "FileReport",
    "LineStat",
    "ProgramCoverage",
    "ProgramReport",
    "build_report",
    "format_lcov",
    "is_branch",
    "text_summary",
    "write_html",
    "write_lcov",
]
