"""Copies in the packet log: with --log, packets.jsonl has one line per broadcast or bpf_clone_redirect
copy, after the line of the packet it was copied from (`copy_of`: that line's index; `copy`: "broadcast"
or "clone"), copies of copies included; host-sent packets' copies say `host` as their packet does.
(tests/test_broadcast.py checks a broadcast's copy lines one by one.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_setup import log_rows
from test_pipeline_tc import CLONE, CLONE_LOOP, ENGINES, ICMP_SMALL, TCP80, UDP53, capture, replay

from xdpsim.pipeline.pipeline import copy_records
from xdpsim.pipeline.routing import Decision


@pytest.mark.parametrize("engine", ENGINES)
def test_clone_lines_follow_their_packet(tmp_path: Path, engine: str) -> None:
    """tc_clone at eth0's TC ingress copies each packet to eth1's egress: each packet's line, then its
    copy's (counted at eth1, where it left)."""
    frames = [UDP53, ICMP_SMALL, TCP80]
    stats, out = replay(tmp_path, CLONE, frames, engine)
    got = [(r.get("index"), r.get("copy_of"), r.get("copy"), r["interface"], r["outcome"], r["reason"],
            r["target"], r["length"]) for r in log_rows(out)]
    want = []
    for i, f in enumerate(frames):
        want += [(i, None, None, "eth0", "pass", "tc_pass", None, len(f)),
                 (None, i, "clone", "eth1", "redirect", "tc_clone", "eth1", len(f))]
    assert got == want
    assert stats["packets"] == len(got) and stats["clones"] == len(frames)


@pytest.mark.parametrize("engine", ENGINES)
def test_copies_of_copies_of_a_host_packet(tmp_path: Path, engine: str) -> None:
    """An egress program cloning to its own egress (test_pipeline_tc's loop): the host-sent packet's line,
    then nine copy lines, all `host`, all naming packet 0; the last stopped at the recursion bound."""
    capture(tmp_path / "host.pcap", [UDP53])
    stats, out = replay(tmp_path, CLONE_LOOP, [], engine)
    rows = log_rows(out)
    ids = [(r["host"], r.get("index"), r.get("copy_of")) for r in rows]
    assert ids == [(True, 0, None)] + [(True, None, 0)] * 9
    assert [r["reason"] for r in rows[1:]] == ["tc_clone"] * 8 + ["redirect_loop"]
    assert stats["packets"] == len(rows)


def test_copy_records_walk_nested_copies() -> None:
    inner = Decision("redirect", "tc_clone", b"c" * 20, target="eth2", program="p2")
    inner.interface = "eth2"
    first = Decision("redirect", "tc_clone", b"b" * 30, target="eth1", program="p1", clones=[inner])
    first.interface = "eth1"
    d = Decision("pass", "tc_pass", b"a" * 40, clones=[first])
    assert copy_records(d, 7) == [
        {"copy_of": 7, "copy": "clone", "interface": "eth1", "outcome": "redirect", "reason": "tc_clone",
         "program": "p1", "length": 30, "target": "eth1", "error": None},
        {"copy_of": 7, "copy": "clone", "interface": "eth2", "outcome": "redirect", "reason": "tc_clone",
         "program": "p2", "length": 20, "target": "eth2", "error": None}]
    assert copy_records(Decision("drop", "xdp_drop", b""), 0) == []
