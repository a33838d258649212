"""Coverage counts -> per program and per source file statistics, with the LCOV meanings:

- a line's count is the maximum over the instructions that BTF line info maps to it (within one
  program); a file's line count is the sum of that over every program (a header inlined into three
  programs counts the runs of all three);
- a branch is one conditional jump, named by the jump's instruction index ("block") and direction
  0 = fall through, 1 = taken; the same (line, index, direction) in several programs is summed;
- a line is "partial" when it ran but one of its branch directions never did.
Instructions before the first line-info record (none, for clang output) or in lddw's second slot are
not counted; a program without line info is reported by instruction only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..tracing.recorder import line_table
from .data import CoverageData, ProgramCoverage, is_branch


@dataclass
class BranchStat:
    line: int
    block: int  # the jump's instruction index
    direction: int  # 0 fall through, 1 taken
    count: int
    reached: bool  # the jump itself ran (LCOV prints "-" otherwise)
    programs: list[str] = field(default_factory=list)


@dataclass
class LineStat:
    line: int
    count: int
    text: str = ""
    programs: list[str] = field(default_factory=list)


@dataclass
class FileReport:
    path: str
    lines: dict[int, LineStat] = field(default_factory=dict)
    branches: list[BranchStat] = field(default_factory=list)
    functions: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (line, calls)
    branch_index: dict[tuple[int, int, int], BranchStat] = field(default_factory=dict, repr=False)

    @property
    def lines_hit(self) -> int:
        return sum(1 for s in self.lines.values() if s.count)

    @property
    def branches_hit(self) -> int:
        return sum(1 for b in self.branches if b.count)

    def missed_branches(self, line: int) -> list[BranchStat]:
        return [b for b in self.branches if b.line == line and not b.count]


@dataclass
class ProgramReport:
    object: str
    name: str
    insns: int
    insns_hit: int
    lines: int
    lines_hit: int
    branches: int
    branches_hit: int


@dataclass
class CoverageReport:
    programs: list[ProgramReport]
    files: dict[str, FileReport]

    def totals(self) -> tuple[int, int, int, int]:
        lines = sum(len(f.lines) for f in self.files.values())
        hit = sum(f.lines_hit for f in self.files.values())
        br = sum(len(f.branches) for f in self.files.values())
        bhit = sum(f.branches_hit for f in self.files.values())
        return lines, hit, br, bhit


def percent(hit: int, total: int) -> float:
    return 100.0 * hit / total if total else 100.0


def source_path(path: str, object_path: str) -> str:
    """The source file as compiled (BTF keeps the compile-time path); when it is not there (the
    object was built elsewhere), the file of that name beside the object, if any."""
    norm = os.path.normpath(path)
    if os.path.exists(norm) or not object_path:
        return norm
    beside = os.path.join(os.path.dirname(object_path), os.path.basename(norm))
    return beside if os.path.exists(beside) else norm


def _program(p: ProgramCoverage, files: dict[str, FileReport]) -> ProgramReport:
    spec = p.spec
    table = line_table(spec)
    paths: dict[str, str] = {}
    executable = [pc for pc in range(len(spec.insns)) if not (pc and spec.insns[pc - 1].is_lddw)]
    # per program: line -> max over its instructions
    line_max: dict[tuple[str, int], int] = {}
    line_text: dict[tuple[str, int], str] = {}
    branches: dict[tuple[str, int, int, int], tuple[int, bool]] = {}
    for pc in executable:
        li = table[pc]
        if li is None:
            continue
        f = paths.get(li.file)
        if f is None:
            f = paths[li.file] = source_path(li.file, p.object)
        key = (f, li.line)
        line_max[key] = max(line_max.get(key, 0), p.hits[pc])
        line_text.setdefault(key, li.text)
        if is_branch(spec.insns[pc]):
            reached = p.hits[pc] > 0
            branches[(key[0], key[1], pc, 0)] = (p.fall[pc], reached)
            branches[(key[0], key[1], pc, 1)] = (p.taken[pc], reached)
    for (path, line), count in line_max.items():
        f = files.setdefault(path, FileReport(path))
        st = f.lines.get(line)
        if st is None:
            st = f.lines[line] = LineStat(line, 0, line_text[(path, line)].rstrip())
        st.count += count
        st.programs.append(p.name)
    for (path, line, pc, d), (count, reached) in branches.items():
        f = files.setdefault(path, FileReport(path))
        b = f.branch_index.get((line, pc, d))
        if b is None:
            b = f.branch_index[(line, pc, d)] = BranchStat(line, pc, d, 0, False)
            f.branches.append(b)
        b.count += count
        b.reached = b.reached or reached
        b.programs.append(p.name)
    for off, fname in (spec.functions or {0: spec.name}).items():
        li = table[off] if off < len(table) else None
        if li is None:
            continue
        path = paths.get(li.file) or source_path(li.file, p.object)
        f = files.setdefault(path, FileReport(path))
        line, calls = f.functions.get(fname, (li.line, 0))
        f.functions[fname] = (line, calls + p.hits[off])
    nb = sum(1 for pc in executable if is_branch(spec.insns[pc]))
    return ProgramReport(
        object=p.object, name=p.name, insns=len(executable),
        insns_hit=sum(1 for pc in executable if p.hits[pc]),
        lines=len(line_max), lines_hit=sum(1 for c in line_max.values() if c),
        branches=2 * nb,
        branches_hit=sum(1 for pc in executable if is_branch(spec.insns[pc])
                         for c in (p.taken[pc], p.fall[pc]) if c),
    )


def build_report(data: CoverageData) -> CoverageReport:
    files: dict[str, FileReport] = {}
    progs = [_program(p, files) for _, p in sorted(data.programs.items())]
    for f in files.values():
        f.branches.sort(key=lambda b: (b.line, b.block, b.direction))
    return CoverageReport(progs, dict(sorted(files.items())))
