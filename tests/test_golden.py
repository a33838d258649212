"""Golden outcomes: record, round trip on every engine, per-field diffs, updates, map deltas, the
kernel as the recording engine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from xdpsim.cli import main
from xdpsim.golden import (
    GoldenMismatch,
    assert_matches_golden,
    compare,
    load_golden,
    record,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "unit-testing"
OBJ = str(EXAMPLE / "parser.o")
PCAP = str(EXAMPLE / "capture.pcap")


def kernel_ok() -> tuple[bool, str]:
    try:
        from xdpsim.kernel.bpf import kernel_available

        return kernel_available()
    except Exception as e:  # pragma: no cover - not Linux
        return False, str(e)


@pytest.fixture
def golden(tmp_path) -> Path:
    path = tmp_path / "g.jsonl"
    record(OBJ, PCAP, path, engine="interp")
    return path


def rewrite(path: Path, edit) -> None:
    lines = path.read_text().splitlines()
    docs = [json.loads(ln) for ln in lines]
    docs = edit(docs)
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))


def test_format(golden):
    header, recs = load_golden(golden)
    assert header["xdpsim_golden"] == 1 and header["engine"] == "interp" and header["hash"] == "sha256"
    assert header["packets"] == len(recs) == 23 and header["pcap"] == "capture.pcap"
    assert [r["packet"] for r in recs] == list(range(23))
    assert {r["action"] for r in recs} == {"XDP_PASS", "XDP_DROP"}
    first = recs[0]
    assert set(first) == {"packet", "action", "program", "len", "sha256", "redirect", "error"}
    assert first["program"] == "flow_parser" and len(first["sha256"]) == 64
    assert all(line.startswith("{") for line in golden.read_text().splitlines())  # one JSON object a line


@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_round_trip(golden, engine):
    assert assert_matches_golden(OBJ, PCAP, golden, engine=engine) == 23


def test_every_changed_packet_with_a_field_diff(golden):
    def edit(docs):
        docs[1 + 5]["action"] = "XDP_DROP"  # was PASS (docs[0] is the header)
        docs[1 + 5]["len"] = 99
        docs[1 + 13]["sha256"] = "0" * 64
        return docs[:-1]  # packet 22 missing from the file

    rewrite(golden, edit)
    with pytest.raises(GoldenMismatch) as ei:
        assert_matches_golden(OBJ, PCAP, golden, engine="interp")
    changes = {c.packet: c.fields for c in ei.value.changes}
    assert changes == {
        5: {"action": ("XDP_DROP", "XDP_PASS"), "len": (99, 54)},
        13: {"sha256": ("0" * 64, changes[13]["sha256"][1])},
        22: {"packet": ("missing", "present")},
    }
    msg = str(ei.value)
    assert msg.startswith(f"golden file {golden}: 3 of 22 packets changed "
                          "(now on interp; recorded on interp)")
    assert "  packet 5 (Ether / IP / TCP 10.0.0.2:telnet > 10.0.0.1:40002 SA):" in msg
    assert "    action: XDP_DROP -> XDP_PASS" in msg and "    len: 99 -> 54" in msg
    assert "    sha256: 0000000000000000... -> " in msg


def test_null_fields_are_not_compared(golden):
    def edit(docs):
        docs[1 + 1]["program"] = "somebody_else"
        docs[1 + 2]["program"] = None
        docs[1 + 2]["note"] = "deciding program unknown"
        return docs

    rewrite(golden, edit)
    with pytest.raises(GoldenMismatch) as ei:
        assert_matches_golden(OBJ, PCAP, golden, engine="interp")
    assert [(c.packet, c.fields) for c in ei.value.changes] == [
        (1, {"program": ("somebody_else", "flow_parser")})]  # packet 2's null program is not compared


def test_changed_capture_is_reported(golden):
    def edit(docs):
        docs[0]["pcap_sha256"] = "f" * 64
        return docs

    rewrite(golden, edit)
    with pytest.raises(GoldenMismatch, match="pcap_sha256"):
        assert_matches_golden(OBJ, PCAP, golden, engine="interp")


def test_update_rewrites(golden):
    rewrite(golden, lambda docs: docs[:5])
    assert assert_matches_golden(OBJ, PCAP, golden, update=True) == 23
    assert assert_matches_golden(OBJ, PCAP, golden, engine="interp") == 23


def test_map_deltas(tmp_path):
    path = tmp_path / "m.jsonl"
    record(OBJ, PCAP, path, engine="interp", maps=True)
    header, recs = load_golden(path)
    assert header["maps"] is True
    # stats[0] (STAT_PASS) goes from 0 to 1 with the first packet, a passed SYN to port 80
    assert recs[0]["maps"] == {"stats": {"00000000": ["0000000000000000", "0100000000000000"]}}
    assert recs[4]["maps"] == {"stats": {"02000000": ["0000000000000000", "0100000000000000"]}}  # telnet
    assert assert_matches_golden(OBJ, PCAP, path, engine="jit") == 23
    rewrite(path, lambda d: [*d[:2], {**d[2], "maps": {}}, *d[3:]])  # packet 1's delta
    with pytest.raises(GoldenMismatch) as ei:
        assert_matches_golden(OBJ, PCAP, path, engine="interp")
    assert [c.packet for c in ei.value.changes] == [1]
    assert "maps: {} -> {\"stats\"" in str(ei.value)


def test_compare_reports_extra_packets():
    g = [{"packet": 0, "action": "XDP_PASS"}]
    now = [{"packet": 0, "action": "XDP_PASS"}, {"packet": 1, "action": "XDP_DROP"}]
    assert [(c.packet, c.fields) for c in compare(g, now)] == [(1, {"packet": ("missing", "present")})]


def test_the_kernel_records(tmp_path):
    ok, why = kernel_ok()
    if not ok:
        pytest.skip(f"kernel engine unavailable: {why}")
    path = tmp_path / "k.jsonl"
    assert main(["record", OBJ, "--pcap", PCAP, "--golden", str(path), "--maps"]) == 0
    header, recs = load_golden(path)
    assert header["engine"] == "kernel"
    # the 10-byte runt: BPF_PROG_TEST_RUN refuses frames under 14 bytes, the interpreter stands in
    assert "the kernel refused" in recs[19]["note"] and recs[19]["action"] == "XDP_DROP"
    assert all(r["program"] == "flow_parser" for r in recs)  # from the interpreter, which agrees
    for engine in ("interp", "jit"):
        assert assert_matches_golden(OBJ, PCAP, path, engine=engine) == 23


def test_committed_example_golden_matches():
    """examples/unit-testing/golden.jsonl was recorded on the kernel; every engine must agree."""
    header, _ = load_golden(EXAMPLE / "golden.jsonl")
    assert header["engine"] == "kernel"
    assert assert_matches_golden(OBJ, PCAP, EXAMPLE / "golden.jsonl", engine="interp") == 23


def test_missing_golden_says_how_to_make_one(tmp_path):
    from xdpsim.errors import XdpsimError

    with pytest.raises(XdpsimError, match="xdpsim record SPEC --pcap IN --golden FILE"):
        assert_matches_golden(OBJ, PCAP, tmp_path / "none.jsonl", engine="interp")


def test_pipeline_file_spec(tmp_path):
    shutil.copy(OBJ, tmp_path / "parser.o")
    (tmp_path / "p.toml").write_text('[[interface]]\nname = "eth0"\nxdp = [{ object = "parser.o" }]\n')
    record(str(tmp_path / "p.toml"), PCAP, tmp_path / "p.jsonl", engine="interp")
    assert compare(load_golden(tmp_path / "p.jsonl")[1], load_golden(EXAMPLE / "golden.jsonl")[1]) == []


def test_xdp_chain_of_a_pipeline_file(tmp_path, capsys):
    """programs/chain.o's three programs through libxdp's dispatcher: recorded on the interpreter
    ("auto" for chains), checked on the JIT; the deciding program is the last that ran."""
    shutil.copy(ROOT / "programs" / "chain.o", tmp_path / "chain.o")
    toml = tmp_path / "p.toml"
    progs = ", ".join(f'{{ object = "chain.o", program = "{n}" }}' for n in ("chain_count", "chain_filter",
                                                                             "chain_last"))
    toml.write_text(f'[[interface]]\nname = "eth0"\nxdp = [{progs}]\n')
    mixed = ROOT / "pcaps" / "mixed.pcap"
    header = record(str(toml), mixed, tmp_path / "g.jsonl", maps=True)
    assert header["engine"] == "interp"
    recs = load_golden(tmp_path / "g.jsonl")[1]
    assert {r["program"] for r in recs} == {"chain_last"}  # chain_filter's DROP continues the chain
    # .bss {frames, short_frames}: packet 0 is 49 bytes, so both counters go up
    assert recs[0]["maps"] == {".bss": {"00000000": ["0" * 32, "0100000000000000" * 2]}}
    assert assert_matches_golden(str(toml), mixed, tmp_path / "g.jsonl", engine="jit") == 442
    assert main(["trace", str(toml), "--pcap", str(mixed), "--packet", "0", "--engine", "interp"]) == 0
    out = capsys.readouterr().out
    assert "chain_count" in out and "chain_filter" in out and "result: XDP_PASS from chain_last" in out


def test_kernel_recording_names_the_tail_call_target(tmp_path):
    """parser.o tail-calls into parse_tcp / parse_udp: the kernel cannot say which program returned,
    the interpreter (agreeing on action and bytes) names it."""
    ok, why = kernel_ok()
    if not ok:
        pytest.skip(f"kernel engine unavailable: {why}")
    from xdpsim.io import PcapWriter, open_capture

    small = tmp_path / "small.pcap"
    with open(small, "wb") as f:
        w = PcapWriter(f)
        for pkt in open_capture(ROOT / "pcaps" / "mixed.pcap"):
            if pkt.index % 37 == 0:
                w.write(pkt.data, pkt.ts_ns)
    parser = str(ROOT / "programs" / "parser.o")
    header = record(parser, small, tmp_path / "k.jsonl", engine="kernel", maps=True)
    recs = load_golden(tmp_path / "k.jsonl")[1]
    assert header["engine"] == "kernel" and len(recs) == 12
    assert {"parse_tcp", "parse_udp"} <= {r["program"] for r in recs}
    assert all("note" not in r for r in recs)
    for engine in ("interp", "jit"):
        assert assert_matches_golden(parser, small, tmp_path / "k.jsonl", engine=engine) == 12
