"""XDP broadcast (bpf_redirect_map with BPF_F_BROADCAST) in the pipeline, on the interpreter and the JIT:
one copy per devmap device, each through its entry's program, counted as packets of their own; the walk
order of devmap and devmap_hash; BPF_F_EXCLUDE_INGRESS; MTU; an empty walk; the JIT's batch path kept
off broadcasting programs. tests/test_broadcast_kernel.py asks the running kernel the same questions."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_setup import check_invariant, log_rows, sink_frames

from xdpsim.io import open_capture
from xdpsim.isa import Instruction
from xdpsim.pipeline.broadcast import Port, hash_order, n_buckets, program_may_broadcast, walk
from xdpsim.pipeline.config import parse_spec
from xdpsim.pipeline.pipeline import Pipeline
from xdpsim.pipeline.replay import replay_to_dir

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "programs"
EXAMPLE = PROGRAMS / "broadcast.toml"
MIXED = ROOT / "pcaps" / "mixed.pcap"
FRAME = bytes.fromhex("ffffffffffff02000000000108004500001c0001000040017cdd0a0000010a000002") + bytes(20)
ENGINES = ["interp", "jit"]


def frames(path: Path) -> list[bytes]:
    with open_capture(str(path)) as cap:
        return [bytes(p.data) for p in cap]


def sink(out: Path, name: str) -> list[bytes]:
    path = out / name
    return frames(path) if path.exists() else []


def stamped(f: bytes, ifindex: int) -> bytes:
    """What split_horizon makes of a copy leaving through `ifindex`: the source MAC's last byte."""
    return f[:11] + bytes([ifindex]) + f[12:]


# --- the bundled example, replayed -------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_example_floods_every_port(tmp_path: Path, engine: str) -> None:
    """programs/broadcast.toml over mixed.pcap: each packet is a broadcast; eth1 gets every frame
    stamped by split_horizon, eth2 (MTU 100) the frames of at most 118 bytes unchanged, and the copy
    back to eth0 is dropped by split_horizon; the copies are packets of their own (`clones`)."""
    src = frames(MIXED)
    runts = [f for f in src if len(f) < 14]
    sent = [f for f in src if len(f) >= 14]
    stats = replay_to_dir(str(EXAMPLE), MIXED, tmp_path, engine=engine, log=True)
    check_invariant(stats)
    to_eth1 = [stamped(f, 3) for f in sent]
    to_eth2 = [f for f in sent if len(f) <= 100 + 14 + 4]
    copies = len(sent) + len(to_eth1) + len(to_eth2)  # eth0's (dropped), eth1's, eth2's
    assert stats["packets"] == len(src) + copies
    assert stats["clones"] == copies
    assert stats["reasons"] == {
        "redirect": {"broadcast": len(sent), "broadcast_copy": len(to_eth1) + len(to_eth2)},
        "drop": {"devmap_program": len(sent), "frame_too_short": len(runts)},
    }
    assert stats["redirect_targets"] == {"broadcast": len(sent), "eth1": len(to_eth1), "eth2": len(to_eth2)}
    out = tmp_path / "eth0"  # several interfaces: sinks per interface, the ingress one's as for redirects
    assert sink(out, "redirect-broadcast.pcap") == sent
    assert sink(out, "redirect-eth1.pcap") == to_eth1
    assert sink(out, "redirect-eth2.pcap") == to_eth2
    # drop.pcap in input order: each runt, and each broadcast's copy for eth0 after it
    assert sink(out, "drop.pcap") == src
    lines = log_rows(tmp_path)
    log = [r for r in lines if "copy_of" not in r]
    assert [(r["outcome"], r["reason"], r["target"]) for r in log] == [
        ("redirect", "broadcast", "broadcast") if len(f) >= 14 else ("drop", "frame_too_short", None)
        for f in src]
    # each broadcast's copies follow its line, one line each, naming the packet
    want: list[tuple] = []
    for i, f in enumerate(src):
        want.append((i, None))
        if len(f) >= 14:
            want += [(i, ("drop", "devmap_program", None, len(f), "split_horizon")),
                     (i, ("redirect", "broadcast_copy", "eth1", len(f), "split_horizon"))]
            if len(f) <= 100 + 14 + 4:
                want.append((i, ("redirect", "broadcast_copy", "eth2", len(f), "")))
    got = [(r["index"], None) if "copy_of" not in r else
           (r["copy_of"], (r["outcome"], r["reason"], r["target"], r["length"], r["program"])) for r in lines]
    assert got == want
    assert {(r["copy"], r["interface"]) for r in lines if "copy_of" in r} == {("broadcast", "eth0")}
    redirected = len(sent) + len(to_eth1) + len(to_eth2)  # the broadcasts and the copies leaving
    assert stats["interfaces"] == {"eth0": {"pass": 0, "tx": 0, "redirect": redirected,
                                            "drop": len(runts) + len(sent), "aborted": 0, "error": 0}}


def test_example_engines_agree(tmp_path: Path) -> None:
    """The JIT (per-packet: broadcasting programs keep off its batch path) writes what interp writes."""
    got = {}
    for engine in ENGINES:
        stats = replay_to_dir(str(EXAMPLE), MIXED, tmp_path / engine, engine=engine)
        got[engine] = (stats["reasons"], stats["clones"], sink_frames(tmp_path / engine))
    assert got["jit"] == got["interp"]


# --- flags, orders and empty walks, through Pipeline.process -------------------------------------------


TOML = """
[[interface]]
name = "eth0"
ifindex = 2
xdp = [{{ object = "{obj}", program = "{prog}" }}]
[[interface]]
name = "eth1"
ifindex = 3
xdp = [{{ object = "{obj}", program = "{prog}" }}]
[[interface]]
name = "eth2"
ifindex = 4
{entries}
"""


def entry(map_name: str, key: int, ifindex: int, program: str | None = None) -> str:
    prog = f'program = "{program}"\n' if program else ""
    value = ifindex.to_bytes(4, "little").hex() + ("" if program else "00000000")
    k = key.to_bytes(4, "little").hex()
    return f'[[map_entries]]\nmap = "{map_name}"\nkey = "{k}"\nvalue = "{value}"\n{prog}'


def pipeline(tmp_path: Path, engine: str, prog: str, entries: list[str]) -> Pipeline:
    path = tmp_path / "p.toml"
    path.write_text(TOML.format(obj=PROGRAMS / "broadcast.o", prog=prog, entries="\n".join(entries)))
    return Pipeline(parse_spec(str(path)), engine=engine)


def copies(d) -> list[tuple[str, str, str | None]]:  # noqa: ANN001 - a Decision
    return [(c.outcome, c.reason, c.target) for c in d.clones]


@pytest.mark.parametrize("engine", ENGINES)
def test_without_exclude_ingress_the_ingress_port_gets_a_copy(tmp_path: Path, engine: str) -> None:
    ents = [entry("ports", 6, 4), entry("ports", 1, 2), entry("ports", 3, 3)]
    with pipeline(tmp_path, engine, "flood", ents) as p:
        d = p.process(p.interfaces[0], FRAME, 0)
    assert (d.outcome, d.reason, d.target) == ("redirect", "broadcast", "broadcast")
    # a devmap walks its slots in index order: key 1 (eth0), 3 (eth1), 6 (eth2)
    assert copies(d) == [("redirect", "broadcast_copy", "eth0"), ("redirect", "broadcast_copy", "eth1"),
                         ("redirect", "broadcast_copy", "eth2")]
    assert all(c.data == FRAME and c.interface == "eth0" for c in d.clones)


@pytest.mark.parametrize("engine", ENGINES)
def test_exclude_ingress_skips_the_ingress_device_and_its_duplicates(tmp_path: Path, engine: str) -> None:
    ents = [entry("ports", 0, 2), entry("ports", 1, 3), entry("ports", 2, 2), entry("ports", 5, 3)]
    with pipeline(tmp_path, engine, "flood_others", ents) as p:
        d = p.process(p.interfaces[0], FRAME, 0)
        # the same frame entering on eth1: eth1's two entries are skipped, eth0's two get copies
        d1 = p.process(p.interfaces[1], FRAME, 0)
    assert copies(d) == [("redirect", "broadcast_copy", "eth1")] * 2  # two entries, two copies
    assert copies(d1) == [("redirect", "broadcast_copy", "eth0")] * 2
    assert {c.interface for c in d1.clones} == {"eth1"}


@pytest.mark.parametrize("engine", ENGINES)
def test_devmap_hash_walks_bucket_by_bucket(tmp_path: Path, engine: str) -> None:
    """hports has 8 entries, so 8 buckets (key & 7): keys 14, 9, 3 walk as 9 (bucket 1), 3, 14 (bucket 6)."""
    ents = [entry("hports", 14, 4), entry("hports", 9, 3), entry("hports", 3, 2)]
    with pipeline(tmp_path, engine, "flood_hash", ents) as p:
        d = p.process(p.interfaces[1], FRAME, 0)  # in on eth1: its entry (key 9) is excluded
    assert [c.target for c in d.clones] == ["eth0", "eth2"]


@pytest.mark.parametrize("engine", ENGINES)
def test_devmap_program_decides_per_copy(tmp_path: Path, engine: str) -> None:
    ents = [entry("ports", 0, 2, "split_horizon"), entry("ports", 1, 3, "split_horizon"),
            entry("ports", 2, 4)]
    with pipeline(tmp_path, engine, "flood", ents) as p:
        d = p.process(p.interfaces[0], FRAME, 0)
    assert copies(d) == [("drop", "devmap_program", None), ("redirect", "broadcast_copy", "eth1"),
                         ("redirect", "broadcast_copy", "eth2")]
    assert [c.data for c in d.clones] == [FRAME, stamped(FRAME, 3), FRAME]  # each copy its own bytes
    assert d.data == FRAME  # the broadcast itself: as the XDP program left it
    assert d.clones[0].program == d.clones[1].program == "split_horizon" and d.clones[2].program == ""
    assert "returned XDP_DROP" in d.clones[0].error


@pytest.mark.parametrize("engine", ENGINES)
def test_empty_walks_drop_the_frame(tmp_path: Path, engine: str) -> None:
    """The kernel frees the frame (xdp_do_redirect still returns 0: test_broadcast_kernel.py)."""
    with pipeline(tmp_path, engine, "flood", []) as p:
        d = p.process(p.interfaces[0], FRAME, 0)
    assert (d.outcome, d.reason, d.clones) == ("drop", "broadcast_empty", [])
    assert "the map is empty" in d.error
    with pipeline(tmp_path, engine, "flood_others", [entry("ports", 4, 2)]) as p:
        d = p.process(p.interfaces[0], FRAME, 0)
    assert (d.outcome, d.reason, d.clones) == ("drop", "broadcast_empty", [])
    assert "key 4: ingress ifindex 2 excluded" in d.error


@pytest.mark.parametrize("engine", ENGINES)
def test_replay_counts_an_empty_broadcast_once(tmp_path: Path, engine: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(TOML.format(obj=PROGRAMS / "broadcast.o", prog="flood", entries=""))
    stats = replay_to_dir(str(path), MIXED, tmp_path / "out", engine=engine)
    check_invariant(stats)
    n = len(frames(MIXED))
    assert stats["packets"] == n and stats["clones"] == 0
    assert stats["reasons"]["drop"]["broadcast_empty"] + stats["reasons"]["drop"]["frame_too_short"] == n


# --- the pieces --------------------------------------------------------------------------------------


def test_walk_mtu_and_exclusion() -> None:
    ports = [Port(0, 2), Port(1, 3), Port(2, 4, prog=7)]
    mtu = {2: 1500, 3: 100, 4: 1500}
    keep, skipped = walk(ports, ingress=2, exclude_ingress=True, length=118, mtu=mtu)
    assert keep == [Port(1, 3), Port(2, 4, 7)] and skipped == ["key 0: ingress ifindex 2 excluded"]
    keep, skipped = walk(ports, ingress=2, exclude_ingress=False, length=119, mtu=mtu)
    assert keep == [Port(0, 2), Port(2, 4, 7)] and "over ifindex 3's MTU 100" in skipped[0]


def test_hash_order_is_the_bucket_order() -> None:
    assert [n_buckets(m) for m in (1, 2, 3, 8, 9)] == [1, 2, 4, 8, 16]
    ports = [Port(k, k) for k in (7, 8, 1, 16, 3)]
    assert [p.key for p in hash_order(ports, 8)] == [8, 16, 1, 3, 7]


def _call_with_r3(*before: Instruction) -> list[Instruction]:
    return [*before, Instruction(0x85, 0, 0, 0, 51), Instruction(0x95, 0, 0, 0, 0)]


def test_program_may_broadcast_reads_the_flags_constant() -> None:
    mov = lambda imm: Instruction(0xB7, 3, 0, 0, imm)  # noqa: E731
    assert not program_may_broadcast(_call_with_r3(mov(2)))  # XDP_PASS on a miss
    assert program_may_broadcast(_call_with_r3(mov(8)))
    assert program_may_broadcast(_call_with_r3(mov(8 | 16)))
    assert program_may_broadcast(_call_with_r3(Instruction(0xBF, 3, 6, 0, 0)))  # r3 = r6: unknown
    assert program_may_broadcast(_call_with_r3(mov(2), Instruction(0x07, 3, 0, 0, 6)))  # r3 += 6
    # a jump target between the constant and the call: another path may bring other flags
    jumpy = [Instruction(0xB7, 3, 0, 0, 0), Instruction(0x15, 1, 0, 1, 0), Instruction(0xB7, 3, 0, 0, 8),
             Instruction(0x85, 0, 0, 0, 51), Instruction(0x95, 0, 0, 0, 0)]
    assert program_may_broadcast(jumpy)
    assert not program_may_broadcast([Instruction(0xB7, 0, 0, 0, 2), Instruction(0x95, 0, 0, 0, 0)])


def test_batch_path_is_kept_off_broadcasting_pipelines(tmp_path: Path) -> None:
    """Interface.prog_ids empty: the JIT's batch path (fastpath.py) declines, since it writes one record
    per packet and a broadcast makes several; other devmap pipelines keep it."""
    with pipeline(tmp_path, "jit", "flood", []) as p:
        assert p.interfaces[0].prog_ids == []
    path = tmp_path / "r.toml"
    path.write_text(f'[[interface]]\nname = "eth0"\nxdp = [{{ object = "{PROGRAMS / "redirect.o"}", '
                    'program = "redirect_map" }]\n')
    with Pipeline(parse_spec(str(path)), engine="jit") as p:
        assert p.interfaces[0].prog_ids != [] and p.interfaces[0].prog_ids[0] is not None
