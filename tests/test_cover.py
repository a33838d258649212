"""Coverage by C source line and branch direction: counts checked by hand against the example parser
(examples/unit-testing/parser.c) and its 23-packet capture, the LCOV meanings (line = max over its
instructions, summed across programs; branches = jump index and 0/1), the text summary and the HTML
report (parsed)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from xdpsim.cli import main
from xdpsim.cover import CoverageData, build_report, format_lcov, is_branch, text_summary, write_html
from xdpsim.io import open_capture
from xdpsim.testing.runner import SpecRunner

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "unit-testing"
PARSER_C = str(EXAMPLE / "parser.c")


def example_c(files: dict):
    """The example's parser.c among report or LCOV files: the path BTF recorded at compile time when it
    exists on this machine, else the copy beside the object (a clone elsewhere)."""
    (key,) = [k for k in files if k.endswith("examples/unit-testing/parser.c")]
    return files[key]


def coverage_of(spec: str | Path, pcap: str | Path) -> CoverageData:
    runner = SpecRunner(str(spec), engine="interp")
    cov = CoverageData()
    tracer = cov.tracer(runner.obj.runtime)
    for pkt in open_capture(pcap):
        runner.run(pkt.data, now_ns=pkt.ts_ns, tracer=tracer)
        tracer.end_run()
    return cov


@pytest.fixture(scope="module")
def example_report():
    return build_report(coverage_of(EXAMPLE / "parser.o", EXAMPLE / "capture.pcap"))


def parse_lcov(text: str) -> dict[str, dict]:
    files: dict[str, dict] = {}
    cur: dict | None = None
    for line in text.splitlines():
        tag, _, rest = line.partition(":")
        if tag == "SF":
            cur = files[rest] = {"DA": {}, "BRDA": [], "FN": {}, "FNDA": {}}
        elif tag == "DA":
            n, c = rest.split(",")
            cur["DA"][int(n)] = int(c)
        elif tag == "BRDA":
            ln, block, br, taken = rest.split(",")
            cur["BRDA"].append((int(ln), int(block), int(br), None if taken == "-" else int(taken)))
        elif tag == "FN":
            ln, name = rest.split(",")
            cur["FN"][name] = int(ln)
        elif tag == "FNDA":
            c, name = rest.split(",")
            cur["FNDA"][name] = int(c)
        elif tag in ("LF", "LH", "BRF", "BRH", "FNF", "FNH"):
            cur[tag] = int(rest)
        elif line == "end_of_record":
            cur = None
        else:
            assert tag == "TN", f"unexpected LCOV line {line!r}"
    return files


def test_line_counts_match_the_capture_by_hand(example_report):
    # capture.pcap: 23 frames; 1 runt (< 14 bytes); 2 non-IPv4 (IPv6, ARP); 20 IPv4 of which one has a
    # cut header and one IHL 4; of the 18 left 13 TCP (one with a cut TCP header, 2 to port 23),
    # 4 UDP (1 to port 19), 1 ICMP
    lines = example_c(example_report.files).lines
    expect = {57: 23, 59: 22, 63: 20, 65: 18, 67: 18, 70: 13, 72: 12, 77: 4, 79: 4, 83: 23}
    assert {n: lines[n].count for n in expect} == expect
    assert "if (tcp->dest == bpf_htons(TELNET_PORT))" in lines[72].text


def test_branch_directions_by_hand(example_report):
    f = example_c(example_report.files)
    per_line: dict[int, list[tuple[int, int]]] = {}
    for b in f.branches:
        per_line.setdefault(b.line, []).append((b.block, b.count))

    def pair(line: int) -> list[int]:
        (jump,) = {blk for blk, _ in per_line[line]}  # one conditional jump on these lines
        return sorted(c for blk, c in per_line[line] if blk == jump)

    assert pair(57) == [1, 22]  # runt / room for Ethernet
    assert pair(59) == [2, 20]  # not IPv4 / IPv4
    assert pair(70) == [1, 12]  # cut TCP header / whole
    assert pair(72) == [2, 10]  # telnet / other ports
    assert pair(77) == [0, 4]  # no UDP datagram is cut short: one direction never taken
    assert pair(79) == [1, 3]  # chargen / other ports
    missed = f.missed_branches(77)
    assert len(missed) == 1 and missed[0].count == 0 and missed[0].reached


def test_lcov_records(example_report):
    text = format_lcov(example_report)
    assert text.endswith("end_of_record\n")
    files = parse_lcov(text)
    rec = example_c(files)
    assert rec["DA"][72] == 12 and rec["LF"] == len(rec["DA"])
    assert rec["LH"] == sum(1 for c in rec["DA"].values() if c)
    assert rec["FN"] == {"flow_parser": 52} and rec["FNDA"] == {"flow_parser": 23}
    assert rec["BRF"] == len(rec["BRDA"]) and rec["BRH"] == sum(1 for *_, t in rec["BRDA"] if t)
    assert {br for _, _, br, _ in rec["BRDA"]} == {0, 1}
    # a jump that never ran is "-" in both directions
    never = [b for b in rec["BRDA"] if b[3] is None]
    assert never and all((ln, blk, 1 - br, None) in rec["BRDA"] for ln, blk, br, _ in never)


def test_lcov_line_is_max_over_instructions_and_sum_over_programs():
    """parser.o's three programs all inline common.h's parse_l3: a header line counts the runs of every
    program (sum), and within one program the maximum over the line's instructions, not their sum."""
    cov = coverage_of(ROOT / "programs" / "parser.o", ROOT / "pcaps" / "mixed.pcap")
    files = parse_lcov(format_lcov(build_report(cov)))
    common = next(v for k, v in files.items() if k.endswith("common.h"))
    parser = next(v for k, v in files.items() if k.endswith("parser.c"))
    entries = parser["FNDA"]
    assert entries["packet_parser"] == 442
    # common.h:48 (`if ((void *)(eth + 1) > data_end)`) runs once in each program run: several
    # instructions each, counted once
    assert common["DA"][48] == entries["packet_parser"] + entries["parse_tcp"] + entries["parse_udp"]
    progs = {(p.object, p.name): p for p in cov.programs.values()}
    pp = next(p for (o, n), p in progs.items() if n == "packet_parser")
    line48 = [pc for pc, li in enumerate(pp.spec.insns) if pp.spec.source_line(pc)
              and pp.spec.source_line(pc).file.endswith("common.h") and pp.spec.source_line(pc).line == 48]
    assert len(line48) > 1 and sum(pp.hits[pc] for pc in line48) > 442


def test_engine_counts_give_the_same_report():
    """add_counts (how an engine counting natively hands its counters in: hits and taken, fall-through
    derived) builds the report the tracer's counts build."""
    cov = coverage_of(EXAMPLE / "parser.o", EXAMPLE / "capture.pcap")
    again = CoverageData()
    for p in cov.programs.values():
        again.add_counts(p.object, p.spec, p.hits, p.taken)
    assert format_lcov(build_report(again)) == format_lcov(build_report(cov))


def test_text_summary(example_report):
    text = text_summary(example_report)
    row = next(ln for ln in text.splitlines() if "flow_parser" in ln)
    lines, branches = example_report.programs[0].lines, example_report.programs[0].branches
    assert f"{lines}/{lines}" in row and "100.0%" in row
    hit = example_report.programs[0].branches_hit
    assert f"{hit}/{branches}" in row and f"{100 * hit / branches:.1f}%" in row
    assert re.search(r"TOTAL\s+\d+/\d+", text)


class _Rows(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, list[str]]] = []
        self._cls: str | None = None
        self._cells: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr":
            self._cls, self._cells = a.get("class") or "", []
        elif tag == "td":
            self._cells.append("")
        elif tag == "a" and "href" in a:
            self.links.append(a["href"])

    def handle_data(self, data):
        if self._cls is not None and self._cells:
            self._cells[-1] += data

    def handle_endtag(self, tag):
        if tag == "tr" and self._cls is not None:
            self.rows.append((self._cls, self._cells))
            self._cls = None


def test_html_report(example_report, tmp_path):
    index = write_html(example_report, tmp_path / "html")
    idx = _Rows()
    idx.feed(index.read_text())
    page = next(link for link in idx.links if link.startswith("parser_c"))
    total = next(cells for cls, cells in idx.rows if cells and cells[0] == "Total")
    assert total[1:3] == ["16", "0"]  # 16 lines, none missed
    src = _Rows()
    src.feed((tmp_path / "html" / page).read_text())
    by_line = {int(cells[0]): (cls, cells[1], cells[2]) for cls, cells in src.rows}
    assert len(by_line) == len(Path(PARSER_C).read_text().splitlines())
    assert by_line[72][:2] == ("run", "12")
    assert by_line[77][0] == "par" and "never" in by_line[77][2]  # a direction never taken
    assert by_line[47] == ("", "", "")  # a blank line: not executable


def test_cover_command(tmp_path, capsys):
    html, lcov = tmp_path / "h", tmp_path / "c.info"
    assert main(["cover", str(EXAMPLE / "parser.o"), "--pcap", str(EXAMPLE / "capture.pcap"),
                 "--html", str(html), "--lcov", str(lcov)]) == 0
    out = capsys.readouterr().out
    assert "23 packets" in out and "flow_parser" in out
    assert (html / "index.html").exists()
    assert example_c(parse_lcov(lcov.read_text()))["DA"][72] == 12


def _xdp_programs() -> list[str]:
    from xdpsim.loader import load_object
    from xdpsim.spec import ProgType

    out = []
    for obj in sorted((ROOT / "programs").glob("*.o")):
        if obj.stem == "bad_bounds":
            continue  # the kernel refuses it; it faults on purpose (test_trace covers its fault)
        spec = load_object(obj)
        targets = {p for m in spec.maps for p in m.init_slots.values()}
        out += [f"{obj}:{n}" for n, p in spec.programs.items() if p.type == ProgType.XDP and n not in targets]
    return out


@pytest.mark.parametrize("spec", _xdp_programs(), ids=lambda s: s.rsplit("/", 1)[-1])
def test_every_bundled_program_counts_every_instruction(spec):
    """Coverage of each XDP program of programs/ over a sample of mixed.pcap: the tracer counts exactly
    the instructions the runs executed and each conditional jump's directions add up to its executions."""
    runner = SpecRunner(spec, engine="interp")
    cov = CoverageData()
    tracer = cov.tracer(runner.obj.runtime)
    executed = 0
    for i, pkt in enumerate(open_capture(ROOT / "pcaps" / "mixed.pcap")):
        if i % 11:
            continue
        run = runner.run(pkt.data, now_ns=pkt.ts_ns, tracer=tracer)
        tracer.end_run()
        executed += run.result.insns
    assert sum(sum(p.hits) for p in cov.programs.values()) == executed
    for p in cov.programs.values():
        for pc, ins in enumerate(p.spec.insns):
            if is_branch(ins):
                assert p.taken[pc] + p.fall[pc] == p.hits[pc]
            else:
                assert p.taken[pc] == p.fall[pc] == 0
    report = build_report(cov)
    assert report.programs and all(r.lines_hit <= r.lines for r in report.programs)
