"""Counts of what the differential suite compared, printed in pytest's terminal summary.

tests/conftest.py imports `pytest_terminal_summary` from here; the tests call `record(report, kind)`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

STATS: dict[str, Any] = {"packets": Counter(), "programs": set(), "generated": 0, "runs": 0,
                         "disagreements": 0, "skipped": Counter(), "engines": set()}

KINDS = {"captures": "sample captures", "frames": "hypothesis frames", "generated": "generated programs",
         "corpus": "tcpdump corpus", "pipeline": "pipeline"}


def record(report: Any, kind: str = "captures") -> None:
    """Add one DiffReport (xdpsim.difftest) to the totals under `kind` (a key of KINDS)."""
    STATS["packets"][kind] += report.compared
    STATS["runs"] += 1
    STATS["disagreements"] += report.disagreeing_packets + len(report.map_differences)
    STATS["engines"].update(report.engines)
    if kind == "generated":
        STATS["generated"] += 1
    else:
        STATS["programs"].add(f"{report.spec}:{report.program}")
    for engine, why in report.skipped_engines.items():
        STATS["skipped"][f"{engine}: {why}"] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not STATS["runs"]:
        return
    tr = terminalreporter
    total = sum(STATS["packets"].values())
    parts = ", ".join(f"{n} {KINDS.get(k, k)}" for k, n in STATS["packets"].items())
    tr.section("differential suite (interp / jit / kernel)")
    tr.write_line(f"{total} packets compared ({parts}) in {STATS['runs']} runs over "
                  f"{len(STATS['programs'])} bundled programs and {STATS['generated']} generated programs; "
                  f"engines {', '.join(sorted(STATS['engines']))}; {STATS['disagreements']} disagreements")
    for why, n in sorted(STATS["skipped"].items()):
        tr.write_line(f"  engine skipped in {n} runs: {why}")
