"""The JIT's batch path of a replay (pipeline/fastpath.py) against the per-packet path on the same engine.

Every XDP entry program in programs/, alone on an interface, over every sample capture: stats.json (but
timings), every output file's bytes and maps.json must be the same whichever path ran the packets.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipeline_setup import build_bpf

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


@pytest.mark.parametrize("lengths", [[], [0, 1, 5, 13], [13, 14, 3]])
def test_runts_and_empty_captures(tmp_path: Path, lengths: list[int]) -> None:
    from xdpsim.io import PcapWriter

    cap = tmp_path / "c.pcap"
    with PcapWriter(cap) as w:
        for i, n in enumerate(lengths):
            w.write(bytes(range(n)), 1000 + i)
    sf, ss, fast, slow = replay_both(tmp_path, f"{PROGRAMS}/parser.o", str(cap))
    assert sf == ss and sf["packets"] == len(lengths)
    assert outputs(fast) == outputs(slow)


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


# ---------------------------------------------------------------- every verdict, routed both ways

SOURCE = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct { __uint(type, BPF_MAP_TYPE_DEVMAP); __uint(max_entries, 4); __type(key, __u32);
         __type(value, struct bpf_devmap_val); } ports SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_CPUMAP); __uint(max_entries, 4); __type(key, __u32);
         __type(value, struct bpf_cpumap_val); } cpus SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_XSKMAP); __uint(max_entries, 4); __type(key, __u32);
         __type(value, __u32); } xsks SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 2); __type(key, __u32);
         __type(value, __u32); } jmp SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 16); __type(key, __u32);
         __type(value, __u64); } seen SEC(".maps");

SEC("xdp")
int tail(struct xdp_md *ctx)
{
	bpf_printk("tail %d", ctx->data_end - ctx->data);
	return (ctx->data_end - ctx->data) & 2 ? XDP_DROP : XDP_PASS;
}

/* the verdict by frame length modulo 16 */
SEC("xdp")
int every(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data;
	__u32 k = len % 16;
	__u64 *n = bpf_map_lookup_elem(&seen, &k);

	if (n)
		__sync_fetch_and_add(n, 1);
	switch (k) {
	case 0: return bpf_redirect_map(&ports, 0, XDP_ABORTED);
	case 1: return bpf_redirect_map(&cpus, 0, XDP_DROP);
	case 2: return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_DROP);
	case 3: return bpf_redirect(99, 0);
	case 4: return XDP_REDIRECT;
	case 5: return 9;
	case 6: return XDP_TX;
	case 7: return XDP_ABORTED;
	case 8: bpf_tail_call(ctx, &jmp, 0); return XDP_TX;
	case 9: return *(volatile __u8 *)(long)(ctx->data_end + 1);
	case 10: bpf_xdp_adjust_head(ctx, 4); return XDP_PASS;
	case 11: bpf_printk("eleven"); return XDP_PASS;
	case 12: return bpf_redirect(2, 0);
	default: return len & 1 ? XDP_DROP : XDP_PASS;
	}
}

SEC("xdp/devmap")
int egress(struct xdp_md *ctx)
{
	__u8 *first = (void *)(long)ctx->data;

	if ((void *)(first + 1) > (void *)(long)ctx->data_end)
		return XDP_DROP;
	*first = 0xee;
	return ctx->data_end - ctx->data > 100 ? XDP_DROP : XDP_PASS;
}
"""


@pytest.fixture(scope="module")
def every_obj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bpf(SOURCE, tmp_path_factory.mktemp("every") / "every.o", what="the test program")


# the pipeline around `every`: its devmap entry's program, a CPU, an AF_XDP socket, its tail call
# (`extra`: more keys of its xdp entry, after the program's name)
EVERY_SPEC = """
[[interface]]
name = "eth0"
queues = {queues}
xdp = [{{ object = "{obj}", program = "every"{extra} }}]
[[interface]]
name = "eth1"
[[map_entries]]
map = "ports"
key = "00000000"
value = "02000000"
program = "egress"
[[map_entries]]
map = "cpus"
key = "00000000"
value = "0001000000000000"
[[map_entries]]
map = "xsks"
key = "00000000"
value = "05000000"
[[map_entries]]
map = "jmp"
key = "00000000"
program = "tail"
"""


def every_capture(path: Path) -> Path:
    """Frames of every length 0..180 (so every verdict, short frames included), twice, and two too long
    for a single buffer; timestamps step back once (the clock clamps)."""
    from xdpsim.io import PcapWriter, open_capture

    base = [p.data for p in open_capture(PCAPS / "mixed.pcap") if len(p.data) >= 60]
    with PcapWriter(path) as w:
        t = 1_700_000_000_000_000_000
        for rnd in range(2):
            for n in range(181):
                src = base[(n + rnd) % len(base)]
                w.write((src * 4)[:n], t + n * 1000 - (5000 if n == 90 else 0))
            w.write(b"\x02" * 4000, t + 999_999)
    return path


@pytest.mark.parametrize("queues", [1, 4])
@pytest.mark.parametrize("chain", [None, '["pass", "drop", "tx"]'])
def test_every_verdict_both_paths(tmp_path: Path, every_obj: Path, queues: int, chain: str | None,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from xdpsim.pipeline import fastpath

    taken: list[bool] = []
    real = fastpath.jit_batch
    monkeypatch.setattr(fastpath, "jit_batch", lambda *a: taken.append(real(*a)) or taken[-1])
    extra = f", chain_call_actions = {chain}" if chain else ""
    spec = tmp_path / "p.toml"
    spec.write_text(EVERY_SPEC.format(queues=queues, obj=every_obj, extra=extra))
    cap = every_capture(tmp_path / "every.pcap")
    fast, slow = tmp_path / "fast", tmp_path / "slow"
    sf = replay_to_dir(str(spec), cap, fast, engine="jit", fast=True, log=True)
    assert taken and all(taken)  # the batch path did run them
    ss = replay_to_dir(str(spec), cap, slow, engine="jit", fast=False, log=True)
    for s in (sf, ss):
        for k in TIMING:
            s.pop(k)
    # Known difference: for a frame its devmap program drops (or faults on), the per-packet path counts
    # that program's helper calls only (its Decision carries the devmap run), the batch path also the
    # entry program's (summed natively): here one lookup and one bpf_redirect_map each.
    dropped = sf["reasons"]["drop"]["devmap_program"]
    hf, hs = sf.pop("helper_calls"), ss.pop("helper_calls")
    assert dropped and {k: hf[k] - hs.get(k, 0) for k in hf if hf[k] != hs.get(k, 0)} == {
        "map_lookup_elem": dropped, "redirect_map": dropped}
    assert sf == ss
    fo, so = outputs(fast), outputs(slow)
    assert fo.keys() == so.keys()
    for f in fo:
        assert fo[f] == so[f], f
    reasons = {r for o in sf["reasons"].values() for r in o}
    want = {"frame_too_short", "frame_too_long", "program_fault", "unknown_action", "redirect_failed",
            "redirect_no_target", "devmap_program", "interface", "cpu", "xsk", "xdp_tx", "xdp_pass"}
    assert want - {"xdp_tx"} <= reasons if chain else want <= reasons
    assert sf["tail_calls"] > 0 and sf["programs"]["tail"]["decided"] > 0
    assert ("chain_end" in reasons) == bool(chain)


def test_jit_keeps_tail_call_count_across_python_helpers(every_obj: Path) -> None:
    """A Python-side helper (bpf_printk) after a native tail call must not reset the run's tail-call
    count: run_xdp on the JIT reports what the interpreter reports."""
    from xdpsim.engines.interp import Interpreter
    from xdpsim.engines.jit import JitEngine
    from xdpsim.hooks.xdp import run_xdp
    from xdpsim.runtime import Runtime

    got = []
    for engine in (Interpreter(), JitEngine()):
        rt = Runtime()
        coll = rt.load(load_object(every_obj))
        coll.maps["jmp"].update(b"\0\0\0\0", coll.programs["tail"])
        r = run_xdp(rt, engine, coll.programs["every"], b"\x01" * 24)  # 24 % 16 == 8: the tail call
        got.append((r.program, r.tail_calls, r.helper_counts))
    assert got[0] == got[1] and got[0][:2] == ("tail", 1)


TWO_INTERFACES = {
    "devmap": """
[[interface]]
name = "eth0"
xdp = [{ object = "@PROGRAMS@/redirect.o", program = "redirect_map" }]
[[interface]]
name = "eth1"
xdp = [{ object = "@PROGRAMS@/parser.o" }]
[[map_entries]]
map = "tx_ports"
key = "00000000"
value = "02000000"
""",
    "unmapped": """
[[interface]]
name = "wan"
capture_interface = 1
queues = 2
xdp = [{ object = "@PROGRAMS@/parser.o" }]
[[interface]]
name = "lan"
capture_interface = 7
""",
}


@pytest.mark.parametrize("name", sorted(TWO_INTERFACES))
def test_interfaces_of_a_pcapng(tmp_path: Path, name: str) -> None:
    """Runs of packets from each capture interface: batches cut per interface, unmapped ones per packet."""
    spec = tmp_path / "p.toml"
    spec.write_text(TWO_INTERFACES[name].replace("@PROGRAMS@", str(PROGRAMS)))
    sf, ss, fast, slow = replay_both(tmp_path, str(spec), "mixed.pcapng", log=True)
    assert sf == ss and len(sf["interfaces"]) >= 1
    assert outputs(fast) == outputs(slow)
