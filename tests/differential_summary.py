"""Counts of what the differential suite compared, printed in pytest's terminal summary.

tests/conftest.py imports `pytest_terminal_summary` from here; the tests call `record(report)`.
"""

from __future__ import annotations

from typing import Any

STATS: dict[str, Any] = {"packets": 0, "programs": set(), "generated": 0, "runs": 0, "disagreements": 0,
                         "skipped": {}, "engines": set()}


def record(report: Any, *, generated: bool = False) -> None:
    """Add one DiffReport (xdpsim.difftest) to the totals."""
    STATS["packets"] += report.compared
    STATS["runs"] += 1
    STATS["disagreements"] += report.disagreeing_packets + len(report.map_differences)
    STATS["engines"].update(report.engines)
    if generated:
        STATS["generated"] += 1
    else:
        STATS["programs"].add(f"{report.spec}:{report.program}")
    for engine, why in report.skipped_engines.items():
        STATS["skipped"].setdefault(f"{engine}: {why}", 0)
        STATS["skipped"][f"{engine}: {why}"] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not STATS["runs"]:
        return
    tr = terminalreporter
    tr.section("differential suite (interp / jit / kernel)")
    tr.write_line(f"{STATS['packets']} packets compared in {STATS['runs']} runs over "
                  f"{len(STATS['programs'])} bundled programs and {STATS['generated']} generated programs; "
                  f"engines {', '.join(sorted(STATS['engines']))}; {STATS['disagreements']} disagreements")
    for why, n in sorted(STATS["skipped"].items()):
        tr.write_line(f"  engine skipped in {n} runs: {why}")
