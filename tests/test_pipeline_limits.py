"""The pipeline around programs built for the purpose (clang-19, at test time): bpf_xdp_adjust_head/
tail/meta at and past their limits (DESIGN.md), [[map_entries]], bpf_fib_lookup from the pipeline's
routes and neighbours, bpf_ktime_get_ns from capture times kept monotonic, ring buffer records, unknown
actions and faults as outcomes."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from pipeline_expect import PCAPS, frames
from pipeline_setup import build_pipeline_progs, log_rows

from xdpsim.io import PcapWriter, open_capture
from xdpsim.pipeline.replay import replay_to_dir

FRAME = frames(PCAPS / "icmp.pcap")[0]
L = len(FRAME)


@pytest.fixture(scope="module")
def obj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pipeline_progs(tmp_path_factory, "pipeline_progs.o")


def one_packet(tmp: Path, frame: bytes = FRAME) -> Path:
    path = tmp / "one.pcap"
    with PcapWriter(path) as w:
        w.write(frame, 1_700_000_000_000_000_000)
    return path


def adjust(tmp: Path, obj: Path, meta: int, head: int, tail: int,
           engine: str = "interp") -> tuple[dict, Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    toml = tmp / "p.toml"
    values = "".join(f"""
[[map_entries]]
map = "deltas"
key = "{k:02x}000000"
value = "{struct.pack('<i', v).hex()}"
""" for k, v in enumerate((meta, head, tail)))
    toml.write_text(f"""
[[interface]]
name = "eth0"
xdp = [{{ object = "{obj}", program = "adjust" }}]
{values}""")
    out = tmp / "out"
    stats = replay_to_dir(str(toml), one_packet(tmp), out, engine=engine)
    return stats, out


CASES = [
    # (meta, head, tail) -> packet length after, or None for XDP_DROP (the helper refused)
    ((0, -216, 0), L + 216),  # headroom 256 less sizeof(struct xdp_frame) 40
    ((0, -217, 0), None),
    ((0, L - 14, 0), 14),  # at least an Ethernet header stays
    ((0, L - 13, 0), None),
    ((0, 0, 3520 - L), 3520),  # 4096 - 256 headroom - 320 tailroom
    ((0, 0, 3521 - L), None),
    ((0, 0, 14 - L), 14),
    ((0, 0, 13 - L), None),
    ((-216, 0, 0), L),  # metadata up to the xdp_frame (this kernel: 216 fits, 220 does not)
    ((-220, 0, 0), None),
    ((-6, 0, 0), None),  # not a multiple of 4
    ((-32, -184, 0), L + 184),  # metadata and head share the headroom
    ((-32, -185, 0), None),
]


@pytest.mark.parametrize(("deltas", "length"), CASES, ids=[str(c[0]) for c in CASES])
def test_adjust_limits(tmp_path: Path, obj: Path, deltas: tuple[int, int, int], length: int | None) -> None:
    stats, out = adjust(tmp_path, obj, *deltas)
    if length is None:
        assert stats["reasons"] == {"drop": {"xdp_drop": 1}}
        assert [p.data for p in open_capture(out / "drop.pcap")] == [FRAME]
        return
    assert stats["reasons"] == {"pass": {"xdp_pass": 1}}
    (got,) = [p.data for p in open_capture(out / "pass.pcap")]
    assert len(got) == length
    meta, head, tail = deltas
    if head < 0:
        assert got == bytes(-head) + FRAME  # new headroom bytes are zero
    elif head > 0:
        assert got == FRAME[head:]
    elif tail:
        assert got == (FRAME + bytes(max(tail, 0)))[:length]
    else:
        assert got == FRAME


def test_adjust_jit_agrees(tmp_path: Path, obj: Path) -> None:
    for i, (deltas, _length) in enumerate(CASES):
        a, out_a = adjust(tmp_path / f"i{i}", obj, *deltas, engine="interp")
        b, out_b = adjust(tmp_path / f"j{i}", obj, *deltas, engine="jit")
        assert a["reasons"] == b["reasons"], deltas
        for name in ("pass.pcap", "drop.pcap"):
            if (out_a / name).exists():
                assert (out_a / name).read_bytes() == (out_b / name).read_bytes(), deltas


def fib_pipeline(tmp: Path, obj: Path, neighbour: bool) -> str:
    toml = tmp / "fib.toml"
    toml.write_text(f"""
[[interface]]
name = "eth0"
xdp = [{{ object = "{obj}", program = "fib" }}]
[[interface]]
name = "eth1"
mac = "02:00:00:00:01:01"
[[route]]
prefix = "10.0.0.0/24"
interface = "eth1"
gateway = "10.9.9.9"
""" + ("""
[[neighbour]]
address = "10.9.9.9"
mac = "02:00:00:00:09:09"
interface = "eth1"
""" if neighbour else ""))
    return str(toml)


@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_fib_lookup_from_routes(tmp_path: Path, obj: Path, engine: str) -> None:
    src = frames(PCAPS / "icmp.pcap")  # 10.0.0.1 -> 10.0.0.2
    spec = fib_pipeline(tmp_path, obj, True)
    stats = replay_to_dir(spec, PCAPS / "icmp.pcap", tmp_path / "o", engine=engine)
    assert stats["reasons"] == {"redirect": {"interface": len(src)}}
    out = [p.data for p in open_capture(tmp_path / "o" / "eth0" / "redirect-eth1.pcap")]
    assert out == [bytes.fromhex("020000000909" "020000000101") + f[12:] for f in src]


def test_fib_lookup_without_neighbour(tmp_path: Path, obj: Path) -> None:
    spec = fib_pipeline(tmp_path, obj, False)
    stats = replay_to_dir(spec, PCAPS / "icmp.pcap", tmp_path / "o", engine="interp")
    assert stats["reasons"] == {"pass": {"xdp_pass": 20}}
    assert (tmp_path / "o" / "trace.log").read_text().splitlines() == ["fib 7"] * 20  # NO_NEIGH


@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_clock_events_unknown_action_and_fault(tmp_path: Path, obj: Path, engine: str) -> None:
    """Capture times 5, 3 (steps back: clamped to 5), 9 s; lengths 60, 150 (faults), 250 (action 7)."""
    cap = tmp_path / "c.pcap"
    base = 1_700_000_000_000_000_000
    packets = [(FRAME[:60], base + 5), (FRAME + bytes(52), base + 3), (FRAME + bytes(152), base + 9),
               (FRAME[:60], base + 1)]
    with PcapWriter(cap) as w:
        for data, ts in packets:
            w.write(data, ts)
    toml = tmp_path / "c.toml"
    toml.write_text(f'[[interface]]\nname = "eth0"\nxdp = [{{ object = "{obj}", program = "clock" }}]\n')
    out = tmp_path / "o"
    stats = replay_to_dir(str(toml), cap, out, engine=engine, log=True)
    assert stats["packets"] == 4 == sum(stats["outcomes"].values())
    assert stats["reasons"] == {"pass": {"xdp_pass": 2}, "error": {"program_fault": 1},
                                "aborted": {"unknown_action": 1}}
    assert stats["clamped_timestamps"] == 2
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    recs = [struct.unpack("<QII", bytes.fromhex(e["data"]))[:2] for e in events]
    assert recs == [(base + 5, 60), (base + 5, 150), (base + 9, 250), (base + 9, 60)]
    assert [p.data for p in open_capture(out / "error.pcap")] == [packets[1][0]]
    assert [p.data for p in open_capture(out / "aborted.pcap")] == [packets[2][0]]
    log = log_rows(out)
    assert log[1]["outcome"] == "error" and "clock" in log[1]["error"]
    (err,) = stats["errors"]
    assert "insn" in err or "instruction" in err


def test_cpumap_and_xskmap_sinks(tmp_path: Path, obj: Path) -> None:
    """cpumap -> redirect-cpu<N>.pcap (CPU 1 of 2); xskmap -> xsk-<queue>.pcap (queue 1's socket only:
    queue 0's slot is empty, so those frames drop)."""
    toml = tmp_path / "s.toml"
    toml.write_text(f"""
[[interface]]
name = "eth0"
queues = 2
xdp = [{{ object = "{obj}", program = "steer" }}]
[[map_entries]]
map = "cpus"
key = "01000000"
value = "0001000000000000"
[[map_entries]]
map = "xsks"
key = "01000000"
value = "05000000"
""")
    from xdpsim.pipeline.rss import RssSpreader

    src = frames(PCAPS / "mixed.pcap")
    for engine in ("interp", "jit"):
        out = tmp_path / engine
        stats = replay_to_dir(str(toml), PCAPS / "mixed.pcap", out, engine=engine)
        rss = RssSpreader(2)
        runnable = [f for f in src if len(f) >= 14]
        odd = [f for f in runnable if len(f) % 2]
        q1 = [f for f in runnable if not len(f) % 2 and rss.queue(f) == 1]
        assert [p.data for p in open_capture(out / "redirect-cpu1.pcap")] == odd
        assert [p.data for p in open_capture(out / "xsk-1.pcap")] == q1
        assert stats["reasons"]["redirect"] == {"cpu": len(odd), "xsk": len(q1)}
        assert stats["reasons"]["drop"]["xdp_drop"] == len(runnable) - len(odd) - len(q1)


@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_frags_program_gets_long_frames(tmp_path: Path, obj: Path, engine: str) -> None:
    """An xdp.frags program runs frames longer than a single buffer (as fragments) and they come out
    whole; a single-buffer program would have dropped them as frame_too_long."""
    big = FRAME[:14] + bytes(range(256)) * 20
    cap = tmp_path / "big.pcap"
    with PcapWriter(cap) as w:
        for i, f in enumerate([FRAME, big, FRAME]):
            w.write(f, 1_700_000_000_000_000_000 + i)
    toml = tmp_path / "f.toml"
    toml.write_text(f'[[interface]]\nname = "eth0"\nxdp = [{{ object = "{obj}", program = "frags" }}]\n')
    stats = replay_to_dir(str(toml), cap, tmp_path / "o", engine=engine)
    assert stats["reasons"] == {"pass": {"xdp_pass": 2}, "tx": {"xdp_tx": 1}}
    assert [p.data for p in open_capture(tmp_path / "o" / "tx.pcap")] == [big]


@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_devmap_entry_program(tmp_path: Path, obj: Path, engine: str) -> None:
    """A devmap entry with its own xdp/devmap program (value + program in [[map_entries]]): the program
    runs on the redirected frame with egress_ifindex set, and its DROP drops the frame."""
    toml = tmp_path / "d.toml"
    toml.write_text(f"""
[[interface]]
name = "eth0"
xdp = [{{ object = "{obj}", program = "to_port" }}]
[[interface]]
name = "eth1"
ifindex = 7
[[map_entries]]
map = "ports"
key = "00000000"
value = "07000000"
program = "egress_mark"
""")
    src = [f for f in frames(PCAPS / "mixed.pcap") if len(f) >= 14]
    out = tmp_path / "o"
    stats = replay_to_dir(str(toml), PCAPS / "mixed.pcap", out, engine=engine)
    even = [f for f in src if not len(f) % 2]
    got = [p.data for p in open_capture(out / "eth0" / "redirect-eth1.pcap")]
    assert got == [b"\x07" + f[1:] for f in even]
    assert stats["reasons"]["drop"]["devmap_program"] == len(src) - len(even)
    assert stats["redirect_targets"] == {"eth1": len(even)}


def test_devmap_program_needs_a_devmap(tmp_path: Path, obj: Path) -> None:
    from xdpsim.pipeline.config import PipelineError

    toml = tmp_path / "d.toml"
    toml.write_text(f'[[interface]]\nname = "eth0"\nxdp = [{{ object = "{obj}", program = "to_port" }}]\n'
                    '[[map_entries]]\nmap = "deltas"\nkey = "00000000"\nvalue = "07000000"\n'
                    'program = "egress_mark"\n')
    with pytest.raises(PipelineError, match="devmap, devmap_hash and cpumap"):
        replay_to_dir(str(toml), PCAPS / "icmp.pcap", tmp_path / "o", engine="interp")
