"""Replays of the sample captures through the bundled programs: every packet's outcome, the bytes in
each sink, the final maps and the accounting invariant, against expectations derived from the packets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipeline_expect import (
    PCAPS,
    PROGRAMS,
    decode_parser_maps,
    frames,
    l3,
    parser_maps,
    parser_verdict,
    read_log,
)

from xdpsim.errors import CaptureError
from xdpsim.io import open_capture
from xdpsim.pipeline.replay import replay_to_dir
from xdpsim.pipeline.rss import RssSpreader
from xdpsim.pipeline.stats import OUTCOMES, REASONS


def check_invariant(stats: dict) -> None:
    assert stats["packets"] == sum(stats["outcomes"].values())
    for outcome, reasons in stats["reasons"].items():
        assert sum(reasons.values()) == stats["outcomes"][outcome]
        assert set(reasons) <= set(REASONS[outcome])
    assert set(stats["outcomes"]) == set(OUTCOMES)


def sink(out: Path, name: str) -> list[bytes]:
    path = out / name
    return [p.data for p in open_capture(path)] if path.exists() else []


@pytest.mark.parametrize(("engine", "capture"), [
    ("interp", "mixed.pcap"), ("jit", "mixed.pcap"), ("jit", "sll.pcap"), ("jit", "raw.pcap"),
    ("interp", "mixed.pcapng"), ("jit", "mixed.pcapng")])
def test_parser_every_packet(tmp_path: Path, engine: str, capture: str) -> None:
    src = frames(PCAPS / capture)
    stats = replay_to_dir(str(PROGRAMS / "parser.o"), PCAPS / capture, tmp_path, engine=engine, log=True)
    check_invariant(stats)
    assert stats["packets"] == len(src)
    log = read_log(tmp_path)
    assert [r["index"] for r in log] == list(range(len(src)))
    expected = [parser_verdict(f) for f in src]
    assert [(r["outcome"], r["reason"]) for r in log] == expected
    # sinks: the frames of each outcome, in input order, unmodified (the parser does not rewrite)
    for outcome in ("pass", "drop"):
        assert sink(tmp_path, f"{outcome}.pcap") == [f for f, e in zip(src, expected, strict=True)
                                                     if e[0] == outcome]
    assert not (tmp_path / "error.pcap").exists()
    protos, ports = parser_maps(src)
    maps = json.loads((tmp_path / "maps.json").read_text())
    assert decode_parser_maps(maps) == (protos, ports)
    assert maps["ipproto_jmp_table"]["entries"]["06000000"] is not None
    assert json.loads((tmp_path / "stats.json").read_text()) == stats


def test_mixed_has_every_kind() -> None:
    """The sample capture exercises each branch of the parser (else the test above proves little)."""
    kinds = {parser_verdict(f) for f in frames(PCAPS / "mixed.pcap")}
    assert kinds == {("pass", "xdp_pass"), ("drop", "xdp_drop"), ("drop", "frame_too_short")}
    reasons = {(f[23] if len(f) > 23 else None) for f in frames(PCAPS / "mixed.pcap")}
    assert {6, 17, 1} <= reasons


def test_interp_and_jit_same_outputs(tmp_path: Path) -> None:
    outs = {}
    for engine in ("interp", "jit"):
        out = tmp_path / engine
        replay_to_dir(str(PROGRAMS / "parser.o"), PCAPS / "mixed.pcap", out, engine=engine)
        outs[engine] = out
    for name in ("pass.pcap", "drop.pcap", "maps.json"):
        assert (outs["interp"] / name).read_bytes() == (outs["jit"] / name).read_bytes(), name


def test_per_cpu_maps_with_queues(tmp_path: Path) -> None:
    src = frames(PCAPS / "mixed.pcap")
    stats = replay_to_dir(str(PROGRAMS / "parser.o"), PCAPS / "mixed.pcap", tmp_path, engine="jit", queues=4,
                          log=True)
    check_invariant(stats)
    rss = RssSpreader(4)
    log = read_log(tmp_path)
    assert [r["queue"] for r in log] == [rss.queue(f) for f in src]
    assert len({r["queue"] for r in log}) == 4  # the flows spread over every queue
    # proto_count: one value per CPU, each CPU counting the packets of its queue
    maps = json.loads((tmp_path / "maps.json").read_text())
    for proto in (6, 17):
        per_cpu = [int.from_bytes(bytes.fromhex(v), "little")
                   for v in maps["proto_count"]["entries"][proto.to_bytes(4, "little").hex()]]
        assert len(per_cpu) == 4
        want = [0] * 4
        for f, r in zip(src, log, strict=True):
            kind, p, _ = l3(f)
            if kind == "ip" and p == proto:
                want[r["queue"]] += 1
        assert per_cpu == want
    assert sum(stats["queues"].values()) == stats["packets"]


def _toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pipeline.toml"
    path.write_text(text.replace("@PROGRAMS@", str(PROGRAMS)))
    return str(path)


def test_chain_priorities_and_chain_call_actions(tmp_path: Path) -> None:
    """chain.o's XDP_RUN_CONFIG: count (10, PASS) -> filter (20, PASS+DROP) -> last (30): the filter's DROP
    of short frames still runs chain_last, which passes IPv4 and drops the rest."""
    spec = _toml(tmp_path, """
[[interface]]
name = "eth0"
xdp = [{ object = "@PROGRAMS@/chain.o", program = "chain_last" },
       { object = "@PROGRAMS@/chain.o", program = "chain_filter" },
       { object = "@PROGRAMS@/chain.o", program = "chain_count" }]
""")
    src = frames(PCAPS / "mixed.pcap")
    out = tmp_path / "out"
    stats = replay_to_dir(spec, PCAPS / "mixed.pcap", out, engine="interp", log=True)
    check_invariant(stats)
    runnable = [f for f in src if len(f) >= 14]
    ipv4 = [f[12:14] == b"\x08\x00" for f in runnable]
    log = [r for r in read_log(out) if r["reason"] != "frame_too_short"]
    assert [r["outcome"] for r in log] == ["pass" if v else "drop" for v in ipv4]
    assert {r["program"] for r in log} == {"chain_last"}
    assert stats["programs"]["chain_count"]["runs"] == len(runnable)
    assert stats["programs"]["chain_filter"]["runs"] == len(runnable)
    assert stats["programs"]["chain_last"]["runs"] == len(runnable)
    bss = json.loads((out / "maps.json").read_text())[".bss"]["entries"]["00000000"]
    frames_count, short = int.from_bytes(bytes.fromhex(bss)[:8], "little"), int.from_bytes(
        bytes.fromhex(bss)[8:16], "little")
    assert (frames_count, short) == (len(runnable), sum(1 for f in runnable if len(f) < 60))


def test_chain_overridden_by_pipeline_file(tmp_path: Path) -> None:
    """The pipeline file's chain_call_actions replace XDP_RUN_CONFIG's: the filter's DROP ends the chain,
    and a priority puts chain_last first (whose DROP of non-IPv4 then ends it)."""
    spec = _toml(tmp_path, """
[[interface]]
name = "eth0"
xdp = [{ object = "@PROGRAMS@/chain.o", program = "chain_filter", chain_call_actions = ["pass"] },
       { object = "@PROGRAMS@/chain.o", program = "chain_last", priority = 5 }]
""")
    src = [f for f in frames(PCAPS / "mixed.pcap") if len(f) >= 14]
    out = tmp_path / "out"
    replay_to_dir(spec, PCAPS / "mixed.pcap", out, engine="interp", log=True)
    log = [r for r in read_log(out) if r["reason"] != "frame_too_short"]
    want = []
    for f in src:
        if f[12:14] != b"\x08\x00":
            want.append(("drop", "chain_last"))
        elif len(f) < 60:
            want.append(("drop", "chain_filter"))
        else:
            want.append(("pass", "chain_filter"))
    assert [(r["outcome"], r["program"]) for r in log] == want


def test_chain_off_the_end_is_pass(tmp_path: Path) -> None:
    """A last program whose DROP is in its chain_call_actions runs off the end: XDP_PASS."""
    spec = _toml(tmp_path, """
[[interface]]
name = "eth0"
xdp = [{ object = "@PROGRAMS@/chain.o", program = "chain_last", chain_call_actions = ["pass", "drop"] }]
""")
    out = tmp_path / "out"
    stats = replay_to_dir(spec, PCAPS / "mixed.pcap", out, engine="interp")
    n = sum(1 for f in frames(PCAPS / "mixed.pcap") if len(f) >= 14)
    non_ipv4 = sum(1 for f in frames(PCAPS / "mixed.pcap") if len(f) >= 14 and f[12:14] != b"\x08\x00")
    assert stats["outcomes"]["pass"] == n
    assert stats["reasons"]["pass"] == {"xdp_pass": n - non_ipv4, "chain_end": non_ipv4}


def test_devmap_redirect_to_second_interface(tmp_path: Path) -> None:
    spec = _toml(tmp_path, """
[[interface]]
name = "eth0"
xdp = [{ object = "@PROGRAMS@/redirect.o", program = "redirect_map" }]
[[interface]]
name = "eth1"
[[map_entries]]
map = "tx_ports"
key = "00000000"
value = "02000000"
""")
    out = tmp_path / "out"
    stats = replay_to_dir(spec, PCAPS / "mixed.pcapng", out, engine="jit", log=True)
    check_invariant(stats)
    src = list(open_capture(PCAPS / "mixed.pcapng"))
    eth0 = [p.data for p in src if p.interface == 0]
    eth1 = [p.data for p in src if p.interface == 1]
    assert sink(out / "eth0", "redirect-eth1.pcap") == [f for f in eth0 if len(f) >= 14]
    assert sink(out / "eth1", "pass.pcap") == [f for f in eth1 if len(f) >= 14]
    assert stats["redirect_targets"] == {"eth1": sum(1 for f in eth0 if len(f) >= 14)}
    assert stats["interfaces"]["eth1"]["pass"] == stats["reasons"]["pass"]["no_program"]


def test_redirect_to_missing_interface_fails(tmp_path: Path) -> None:
    """redirect_ifindex sends to ifindex 2; with one interface the redirect fails and the frame drops."""
    src = frames(PCAPS / "icmp.pcap")
    stats = replay_to_dir(f"{PROGRAMS}/redirect.o:redirect_ifindex", PCAPS / "icmp.pcap", tmp_path,
                          engine="interp")
    assert stats["reasons"] == {"drop": {"redirect_failed": len(src)}}
    bss = json.loads((tmp_path / "maps.json").read_text())[".bss"]["entries"]["00000000"]
    assert int.from_bytes(bytes.fromhex(bss), "little") == len(src)


def test_devmap_without_entry_passes(tmp_path: Path) -> None:
    """An empty devmap slot: bpf_redirect_map returns its flags' action (XDP_PASS)."""
    stats = replay_to_dir(f"{PROGRAMS}/redirect.o:redirect_map", PCAPS / "icmp.pcap", tmp_path, engine="jit")
    assert stats["reasons"] == {"pass": {"xdp_pass": 20}}


def test_swap_tx_rewrites(tmp_path: Path) -> None:
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether

    src = frames(PCAPS / "icmp.pcap")
    stats = replay_to_dir(f"{PROGRAMS}/rewrite.o:swap_tx", PCAPS / "icmp.pcap", tmp_path, engine="jit")
    check_invariant(stats)
    out = sink(tmp_path, "tx.pcap")
    assert len(out) == len(src) == stats["outcomes"]["tx"]
    for a, b in zip(src, out, strict=True):
        pa, pb = Ether(a), Ether(b)
        assert (pb.src, pb.dst) == (pa.dst, pa.src)
        assert (pb[IP].src, pb[IP].dst) == (pa[IP].dst, pa[IP].src)
        assert bytes(pb[ICMP]) == bytes(pa[ICMP])
        fixed = Ether(b)
        del fixed[IP].chksum
        assert Ether(bytes(fixed))[IP].chksum == pb[IP].chksum  # the program kept the checksum valid


def test_icmp_echo_replies(tmp_path: Path) -> None:
    from scapy.layers.inet import ICMP

    src = frames(PCAPS / "icmp.pcap")
    replay_to_dir(str(PROGRAMS / "icmp_echo.o"), PCAPS / "icmp.pcap", tmp_path, engine="jit")
    from scapy.layers.l2 import Ether

    out = sink(tmp_path, "tx.pcap")
    assert len(out) == len(src)
    assert all(Ether(f)[ICMP].type == 0 for f in out)
    assert [Ether(f)[ICMP].seq for f in out] == [Ether(f)[ICMP].seq for f in src]


def test_trim_tail_and_meta(tmp_path: Path) -> None:
    src = frames(PCAPS / "mixed.pcap")
    replay_to_dir(f"{PROGRAMS}/rewrite.o:trim_tail", PCAPS / "mixed.pcap", tmp_path / "t", engine="jit")
    out = sink(tmp_path / "t", "pass.pcap")
    runnable = [f for f in src if len(f) >= 14]
    assert [len(f) for f in out] == [128 if len(f) > 128 else 64 if len(f) < 64 else len(f) for f in runnable]
    for a, b in zip(runnable, out, strict=True):
        assert b[: min(len(a), 128)] == a[:128]
        if len(b) > len(a):
            assert b[len(a):] == bytes(len(b) - len(a))  # the grown tail is zeroed
    stats = replay_to_dir(f"{PROGRAMS}/rewrite.o:add_meta", PCAPS / "icmp.pcap", tmp_path / "m",
                          engine="interp")
    assert stats["reasons"] == {"pass": {"xdp_pass": 20}}
    assert sink(tmp_path / "m", "pass.pcap") == frames(PCAPS / "icmp.pcap")  # metadata is not the packet


DAMAGED = {
    # file: (packets run, error records by reason, capture error expected)
    "truncated_last_record.pcap": (9, {"truncated_record": 1}, False),
    "truncated_header.pcap": (5, {"truncated_record": 1}, False),
    "record_over_snaplen.pcap": (10, {}, False),
    "record_beyond_file.pcap": (6, {"truncated_record": 1}, False),
    "record_too_long.pcap": (4, {"damaged_record": 1}, True),
    "bad_block_length.pcapng": (2, {"damaged_record": 1}, True),
    "truncated_block.pcapng": (5, {"truncated_record": 1}, False),
    "bad_magic.pcap": (0, {}, True),
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damaged_captures(tmp_path: Path, name: str) -> None:
    runs, errors, fatal = DAMAGED[name]
    path = PCAPS / "damaged" / name
    if fatal:
        with pytest.raises(CaptureError) as ei:
            replay_to_dir(str(PROGRAMS / "parser.o"), path, tmp_path, engine="jit")
        assert ei.value.offset is not None and str(path) in str(ei.value)
        stats = json.loads((tmp_path / "stats.json").read_text())
        assert stats["capture"]["error_offset"] == ei.value.offset
    else:
        stats = replay_to_dir(str(PROGRAMS / "parser.o"), path, tmp_path, engine="jit")
    check_invariant(stats)
    assert stats["packets"] == runs + sum(errors.values())
    assert stats["reasons"].get("error", {}) == errors
    assert stats["packets"] - sum(errors.values()) == runs
    if stats["capture"].get("warnings"):
        assert all(w["offset"] > 0 and name in w["message"] for w in stats["capture"]["warnings"])


def _long_capture(tmp_path: Path) -> tuple[Path, list[bytes]]:
    from xdpsim.io import PcapWriter

    src = frames(PCAPS / "icmp.pcap")[:3]
    big = src[0][:14] + bytes(4000)
    path = tmp_path / "long.pcap"
    with PcapWriter(path) as w:
        for i, f in enumerate([src[0], big, src[1], src[2][:13]]):
            w.write(f, 1_700_000_000_000_000_000 + i)
    return path, [src[0], big, src[1], src[2][:13]]


@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_frame_too_long_and_too_short(tmp_path: Path, engine: str) -> None:
    path, src = _long_capture(tmp_path)
    stats = replay_to_dir(str(PROGRAMS / "parser.o"), path, tmp_path / "o", engine=engine, log=True)
    check_invariant(stats)
    assert [(r["outcome"], r["reason"]) for r in read_log(tmp_path / "o")] == [
        ("pass", "xdp_pass"), ("drop", "frame_too_long"), ("pass", "xdp_pass"), ("drop", "frame_too_short")]
    assert sink(tmp_path / "o", "drop.pcap") == [src[1], src[3]]
    (err,) = stats["errors"]
    assert "frame too long" in err and "4014 bytes" in err


def test_prog_array_slot_from_map_entries(tmp_path: Path) -> None:
    """[[map_entries]] puts parse_tcp into slot 17: UDP frames are then judged by the TCP handler."""
    spec = _toml(tmp_path, """
[[interface]]
name = "eth0"
xdp = [{ object = "@PROGRAMS@/parser.o", program = "packet_parser" }]
[[map_entries]]
map = "ipproto_jmp_table"
key = "11000000"
program = "parse_tcp"
""")
    src = frames(PCAPS / "mixed.pcap")
    out = tmp_path / "out"
    replay_to_dir(spec, PCAPS / "mixed.pcap", out, engine="jit", log=True)
    got = [(r["outcome"], r["reason"]) for r in read_log(out)]
    want = []
    for f in src:
        kind, proto, l4 = l3(f)
        if kind == "ip" and proto == 17:
            ok = l4 <= 128 and len(f) >= l4 + 20
            dport = int.from_bytes(f[l4 + 2:l4 + 4], "big") if ok else None
            want.append(("drop", "xdp_drop") if not ok or dport == 23 else ("pass", "xdp_pass"))
        else:
            want.append(parser_verdict(f))
    assert got == want
    assert want != [parser_verdict(f) for f in src]  # the slot made a difference
    maps = json.loads((out / "maps.json").read_text())
    _, ports = decode_parser_maps(maps)
    assert all(proto == 6 for proto, _port in ports)  # parse_tcp counted everything as TCP


def test_capture_interfaces_mapping(tmp_path: Path) -> None:
    """capture_interface chooses which pcapng interface feeds which pipeline interface; frames of an
    interface nobody takes are dropped with a reason."""
    spec = _toml(tmp_path, """
[[interface]]
name = "wan"
capture_interface = 1
xdp = [{ object = "@PROGRAMS@/parser.o" }]
[[interface]]
name = "lan"
capture_interface = 7
""")
    src = list(open_capture(PCAPS / "mixed.pcapng"))
    out = tmp_path / "out"
    stats = replay_to_dir(spec, PCAPS / "mixed.pcapng", out, engine="interp", log=True)
    check_invariant(stats)
    on1 = [p.data for p in src if p.interface == 1]
    assert stats["reasons"]["drop"]["no_interface"] == sum(1 for p in src if p.interface == 0)
    assert stats["interfaces"]["wan"] and "lan" not in stats["interfaces"]
    assert sink(out / "unmapped", "drop.pcap") == [p.data for p in src if p.interface == 0]
    wan = [r for r in read_log(out) if r["interface"] == "wan"]
    assert [(r["outcome"], r["reason"]) for r in wan] == [parser_verdict(f) for f in on1]


def test_chain_jit_agrees_with_interp(tmp_path: Path) -> None:
    """A three-program chain runs packet by packet on the JIT: the same sinks and maps as the interpreter."""
    spec = _toml(tmp_path, """
[[interface]]
name = "eth0"
xdp = [{ object = "@PROGRAMS@/chain.o", program = "chain_count" },
       { object = "@PROGRAMS@/chain.o", program = "chain_filter" },
       { object = "@PROGRAMS@/chain.o", program = "chain_last" }]
""")
    outs = {}
    for engine in ("interp", "jit"):
        outs[engine] = tmp_path / engine
        replay_to_dir(spec, PCAPS / "mixed.pcap", outs[engine], engine=engine, log=True)
    for name in ("pass.pcap", "drop.pcap", "maps.json", "packets.jsonl"):
        assert (outs["interp"] / name).read_bytes() == (outs["jit"] / name).read_bytes(), name
