"""`xdpsim check`: the kernel verifier's verdict per program, with the C source line on refusal."""

from __future__ import annotations

import json
from pathlib import Path

import kernel_fixtures
import pytest

from xdpsim.check import check_object, format_verdicts
from xdpsim.cli import main

kernel = kernel_fixtures.kernel
PROGRAMS = Path(__file__).resolve().parent.parent / "programs"
ACCEPTED = sorted(p for p in PROGRAMS.glob("*.o") if p.name != "bad_bounds.o")


def test_bad_bounds_refused_with_source_line(kernel: str, capsys: pytest.CaptureFixture[str]) -> None:
    [v] = check_object(str(PROGRAMS / "bad_bounds.o"))
    assert not v.accepted
    assert "EACCES" in v.message
    assert v.source is not None and v.source.startswith("bad_bounds.c:23:") and "*next == 0x45" in v.source
    assert "invalid access to packet" in v.log
    assert main(["check", str(PROGRAMS / "bad_bounds.o")]) == 1
    out = capsys.readouterr().out
    assert "bad_bounds (xdp): REFUSED" in out and "bad_bounds.c:23" in out
    assert "0 accepted, 1 refused" in out


@pytest.mark.parametrize("obj", ACCEPTED, ids=[p.stem for p in ACCEPTED])
def test_other_programs_accepted(kernel: str, obj: Path) -> None:
    verdicts = check_object(str(obj))
    assert verdicts, f"{obj.name} has no programs"
    refused = [v.message for v in verdicts if not v.accepted]
    assert not refused, refused
    assert all(v.log.startswith("processed ") for v in verdicts)


def test_cli_exit_status_and_json(kernel: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(PROGRAMS / "parser.o")]) == 0
    assert "3 programs, 3 accepted, 0 refused" in capsys.readouterr().out
    assert main(["check", "--json", str(PROGRAMS / "parser.o"), str(PROGRAMS / "bad_bounds.o")]) == 1
    data = json.loads(capsys.readouterr().out)
    verdict = {p["program"]: p["accepted"] for obj in data for p in obj["programs"]}
    assert verdict == {"packet_parser": True, "parse_tcp": True, "parse_udp": True, "bad_bounds": False}


def test_format_without_kernel() -> None:
    from xdpsim.check import Verdict

    text = format_verdicts("x.o", [
        Verdict("a", "xdp", True, log="processed 5 insns"),
        Verdict("b", "xdp", False, "program b refused by the kernel (EACCES): bad", "x.c:3: `y`", "l1\nbad"),
    ])
    assert "a (xdp): accepted (processed 5 insns)" in text
    assert "source: x.c:3: `y`" in text and "    bad" in text
    assert text.endswith("2 programs, 1 accepted, 1 refused by the running kernel's verifier")
