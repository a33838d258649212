"""The JIT's batch path of a replay (pipeline/fastpath.py) against the per-packet path on the same engine.

Every XDP entry program in programs/, alone on an interface, over every sample capture: stats.json (but
timings), every output file's bytes and maps.json must be the same whichever path ran the packets.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xdpsim.loader import load_object
from xdpsim.pipeline.dispatcher import is_entry_candidate
from xdpsim.pipeline.replay import replay_to_dir

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "programs"
PCAPS = ROOT / "pcaps"
CAPTURES = sorted(p.name for p in PCAPS.iterdir() if p.suffix in (".pcap", ".pcapng"))
TIMING = ("seconds", "packets_per_second")


def _programs() -> list[str]:
    out = []
    for obj in sorted(PROGRAMS.glob("*.o")):
        spec = load_object(obj)
        out += [f"{obj.name}:{n}" for n in spec.programs if is_entry_candidate(spec, n)]
    return out


PROGS = _programs()


def outputs(out: Path) -> dict[str, bytes]:
    """Every file of an output directory but stats.json, by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "stats.json"}


def replay_both(tmp_path: Path, spec: str, capture: str, **kw: object) -> tuple[dict, dict, Path, Path]:
    fast, slow = tmp_path / "fast", tmp_path / "slow"
    sf = replay_to_dir(spec, PCAPS / capture, fast, engine="jit", fast=True, **kw)  # type: ignore[arg-type]
    ss = replay_to_dir(spec, PCAPS / capture, slow, engine="jit", fast=False, **kw)  # type: ignore[arg-type]
    for s in (sf, ss):
        for k in TIMING:
            s.pop(k)
    return sf, ss, fast, slow


def test_every_program_is_listed() -> None:
    assert len(PROGS) >= 15 and "chain.o:chain_filter" in PROGS and "parser.o:packet_parser" in PROGS
    assert len(CAPTURES) >= 4


@pytest.mark.parametrize("prog", PROGS)
def test_fast_path_matches_per_packet(tmp_path: Path, prog: str) -> None:
    obj, name = prog.split(":")
    for capture in CAPTURES:
        d = tmp_path / capture
        sf, ss, fast, slow = replay_both(d, f"{PROGRAMS / obj}:{name}", capture)
        assert sf == ss, f"{prog} on {capture}: stats differ"
        fo, so = outputs(fast), outputs(slow)
        assert fo.keys() == so.keys(), f"{prog} on {capture}: files differ"
        for f in fo:
            assert fo[f] == so[f], f"{prog} on {capture}: {f} differs"


def test_lone_program_chaining_its_own_action_passes(tmp_path: Path) -> None:
    """chain_filter returns XDP_DROP for short frames, and DROP is in its chain_call_actions: alone on an
    interface, the dispatcher runs off the end of the chain, which is XDP_PASS (reason chain_end)."""
    sf, ss, _, _ = replay_both(tmp_path, f"{PROGRAMS}/chain.o:chain_filter", "mixed.pcap")
    assert sf == ss
    assert sf["reasons"]["pass"].get("chain_end", 0) > 0
    assert "xdp_drop" not in sf["reasons"].get("drop", {})


def test_log_same_on_both_paths(tmp_path: Path) -> None:
    sf, ss, fast, slow = replay_both(tmp_path, f"{PROGRAMS}/parser.o", "mixed.pcapng", log=True)
    assert sf == ss
    lf = [json.loads(x) for x in (fast / "packets.jsonl").read_text().splitlines()]
    ls = [json.loads(x) for x in (slow / "packets.jsonl").read_text().splitlines()]
    assert lf == ls and len(lf) == sf["packets"]


def test_batch_result_names_the_returning_program() -> None:
    """BatchResult.prog / .tail_calls per packet equal run_xdp's program and tail_calls (parser.o tail-calls
    parse_tcp / parse_udp for TCP / UDP frames), the long frame (run_xdp fallback) included."""
    import numpy as np

    from xdpsim.engines.jit import JitEngine
    from xdpsim.hooks.xdp import run_xdp
    from xdpsim.io import open_capture
    from xdpsim.runtime import Runtime

    frames = [p.data for p in open_capture(PCAPS / "mixed.pcap") if len(p.data) >= 14] + [b"\0" * 4000]
    rt = Runtime()
    coll = rt.load(load_object(PROGRAMS / "parser.o"))
    pid = coll.programs["packet_parser"]
    eng = JitEngine()
    data = np.frombuffer(b"".join(frames), np.uint8)
    lengths = np.array([len(f) for f in frames], np.uint32)
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    res = eng.run_batch(rt, pid, data, offsets, lengths)
    names = [p.name for p in rt.programs]
    want = [run_xdp(rt, eng, pid, f) for f in frames]
    assert [names[i] for i in res.prog.tolist()] == [r.program for r in want]
    assert res.tail_calls.tolist() == [r.tail_calls for r in want]
    assert {"parse_tcp", "parse_udp", "packet_parser"} <= {r.program for r in want}


def test_stats_credit_tail_call_targets(tmp_path: Path) -> None:
    sf, _, _, _ = replay_both(tmp_path, f"{PROGRAMS}/parser.o", "mixed.pcap")
    assert sf["tail_calls"] > 0 and sf["notes"] == []
    assert sf["programs"]["parse_tcp"]["decided"] > 0 and sf["programs"]["parse_udp"]["decided"] > 0
    assert sf["programs"]["packet_parser"]["runs"] == sum(
        c["decided"] for c in sf["programs"].values())
