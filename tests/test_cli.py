"""The `xdpsim` command: run (table, --json, errors and exit status), disasm, maps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from xdpsim.cli import main

ROOT = Path(__file__).resolve().parent.parent
PARSER = str(ROOT / "programs" / "parser.o")
MIXED = str(ROOT / "pcaps" / "mixed.pcap")


def test_run_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["run", PARSER, "--pcap", MIXED, "--out", str(tmp_path), "--json", "--engine", "interp"])
    assert rc == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["packets"] == 442 == sum(stats["outcomes"].values())
    assert stats == json.loads((tmp_path / "stats.json").read_text())
    assert {p.name for p in tmp_path.iterdir()} == {"pass.pcap", "drop.pcap", "stats.json", "maps.json",
                                                    "trace.log"}


def test_run_table_and_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["run", PARSER, "--pcap", MIXED, "--out", str(tmp_path), "--log"])
    assert rc == 0  # dropped packets are no failure
    out = capsys.readouterr().out
    assert "442 packets" in out and "xdp_drop 78" in out and "frame_too_short 7" in out
    assert len((tmp_path / "packets.jsonl").read_text().splitlines()) == 442


def test_run_ambiguous_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["run", str(ROOT / "programs" / "redirect.o"), "--pcap", MIXED, "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "candidates: redirect_map, redirect_ifindex" in err  # devmap_prog is no entry point


def test_run_unknown_program_and_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", PARSER + ":nope", "--pcap", MIXED, "--out", str(tmp_path)]) == 2
    assert "no program named 'nope'" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.o"), "--pcap", MIXED, "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["run", PARSER, "--pcap", str(tmp_path / "none.pcap"), "--out", str(tmp_path)]) == 2
    assert "none.pcap" in capsys.readouterr().err


def test_run_tail_call_target_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A program can still be named explicitly even when a prog array refers to it."""
    rc = main(["run", PARSER + ":parse_udp", "--pcap", MIXED, "--out", str(tmp_path), "--json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["programs"].keys() == {"parse_udp"}


def test_run_damaged_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "pcaps" / "damaged" / "record_too_long.pcap"
    rc = main(["run", PARSER, "--pcap", str(path), "--out", str(tmp_path), "--json"])
    assert rc == 2
    cap = capsys.readouterr()
    assert "at offset 505" in cap.err and "record_too_long.pcap" in cap.err
    stats = json.loads(cap.out)  # the packets before the damage were still replayed
    assert stats["packets"] == 5 and stats["reasons"]["error"] == {"damaged_record": 1}


def test_run_pipeline_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = tmp_path / "p.toml"
    toml.write_text('[[interface]]\nname = "eth0"\nxdp = [{ object = "parser.o" }]\n')
    (tmp_path / "parser.o").write_bytes(Path(PARSER).read_bytes())  # paths are relative to the file
    rc = main(["run", str(toml), "--pcap", MIXED, "--out", str(tmp_path / "o"), "--json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["outcomes"]["pass"] == 357


def test_bad_pipeline_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = tmp_path / "p.toml"
    toml.write_text('[[interface]]\nname = "eth0"\nxdp = [{ object = "x.o", bogus = 1 }]\n')
    assert main(["run", str(toml), "--pcap", MIXED, "--out", str(tmp_path / "o")]) == 2
    assert "unknown key(s) bogus" in capsys.readouterr().err


def test_disasm_has_source_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["disasm", PARSER, "--program", "packet_parser"]) == 0
    out = capsys.readouterr().out
    assert "packet_parser (section xdp" in out
    assert "[parser.c:" in out and "bpf_tail_call" in out
    assert "parse_tcp (section" not in out


def test_maps(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["maps", PARSER]) == 0
    out = capsys.readouterr().out
    assert "ipproto_jmp_table" in out and "[6]=parse_tcp" in out and "percpu_array" in out


def test_console_script_no_progress_bar_off_a_terminal(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "xdpsim.cli", "run", PARSER, "--pcap", MIXED, "--out",
                        str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # no progress bar when stderr is not a terminal
    assert "output:" in r.stdout


def test_kernel_engine_unavailable(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Where bpf() is not permitted, --engine kernel is an error saying why (not a crash)."""
    from xdpsim.kernel import bpf

    monkeypatch.setattr(bpf, "_probe", (False, "bpf(BPF_PROG_LOAD): Operation not permitted (EPERM)"))
    rc = main(["run", PARSER, "--pcap", MIXED, "--out", str(tmp_path), "--engine", "kernel"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "engine 'kernel' is not available here" in err and "EPERM" in err


def _host_capture(path: Path, n: int) -> Path:
    """The first `n` frames of mixed.pcap, as a capture the host sends."""
    from xdpsim.io import PcapWriter, open_capture

    with PcapWriter(path) as w:
        for i, p in enumerate(open_capture(MIXED)):
            if i == n:
                break
            w.write(p.data, 1_700_000_000_000_000_000 + i * 1000)
    return path


def test_run_host_pcap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--host-pcap FILE sends from the first interface, IFACE=FILE from the one named, through TC egress."""
    toml = tmp_path / "p.toml"
    toml.write_text('[[interface]]\nname = "eth0"\nxdp = ["parser.o"]\n\n'
                    '[[interface]]\nname = "eth1"\nifindex = 2\ntc_egress = ["tc_classify.o:tc_classify"]\n')
    for name in ("parser.o", "tc_classify.o"):
        (tmp_path / name).write_bytes((ROOT / "programs" / name).read_bytes())
    h3, h5 = _host_capture(tmp_path / "h3.pcap", 3), _host_capture(tmp_path / "h5.pcap", 5)
    rc = main(["run", str(toml), "--pcap", MIXED, "--out", str(tmp_path / "o"), "--json",
               "--host-pcap", str(h3), "--host-pcap", f"eth1={h5}"])
    assert rc == 0
    stats = json.loads(capsys.readouterr().out)
    host = stats["capture"]["host"]
    assert (host["eth0"]["packets"], host["eth1"]["packets"]) == (3, 5)
    assert host["eth1"]["path"] == str(h5.resolve())
    assert stats["packets"] == 442 + 8
    assert stats["stages"]["tc_egress"] == {"pass": 5}  # eth0 has no TC egress program
    assert stats["reasons"]["tx"] == {"host_tx": 8}
    assert stats["programs"]["tc_classify"]["runs"] == 5


def test_run_host_pcap_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = _host_capture(tmp_path / "h.pcap", 1)
    out = str(tmp_path / "o")
    assert main(["run", PARSER, "--pcap", MIXED, "--out", out, "--host-pcap", f"eth9={h}"]) == 2
    assert "no interface named 'eth9'" in capsys.readouterr().err
    missing = str(tmp_path / "none.pcap")
    assert main(["run", PARSER, "--pcap", MIXED, "--out", out, "--host-pcap", missing]) == 2
    assert "none.pcap" in capsys.readouterr().err
    assert main(["run", PARSER, "--pcap", MIXED, "--out", out, "--host-pcap", str(h),
                 "--host-pcap", str(h)]) == 2
    assert "already has a host capture" in capsys.readouterr().err
