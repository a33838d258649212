"""The JIT's two tiers (jit/compiler.py): tier 1 (compact IR, level-0 code, the shared library of
out-of-line functions) is held to the interpreter on its own -- the conformance suite, every program
over the sample captures, budget faults -- and the swap to tier 2 happens between runs, the tail-call
table and batch replays included; the disk cache holds only tier 2, filled even by a short process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import xdpsim
from xdpsim.asm import assemble
from xdpsim.conformance import passes, run_file
from xdpsim.difftest import PacketIn, diff_program
from xdpsim.difftest.cli import capture_packets
from xdpsim.engines.interp import Interpreter
from xdpsim.engines.jit import JitEngine
from xdpsim.hooks.xdp import run_xdp
from xdpsim.jit.compiler import Compiler, cache_dir, cache_key, compiler
from xdpsim.jit.lower import ProgramInput
from xdpsim.loader import load_object
from xdpsim.runtime import Runtime
from xdpsim.spec import MapSpec, MapType, ObjectSpec, ProgramSpec, ProgType

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "programs"
SUITE = ROOT.parent / "shared" / "conformance" / "tests"
TESTS = sorted(SUITE.glob("*.data"))
CAPTURES = sorted(p for p in (ROOT / "pcaps").iterdir() if p.suffix in (".pcap", ".pcapng"))


# ------------------------------------------------------------------------------ tier 1 on its own


@pytest.mark.skipif(not TESTS, reason=f"conformance suite not found at {SUITE}")
def test_conformance_suite_on_tier_1() -> None:
    eng = JitEngine(tier=1)
    failed = []
    for path in TESTS:
        test, outcome = run_file(path, eng)
        if not passes(test, outcome):
            failed.append(f"{path.name}: {outcome}")
    assert not failed, "\n".join(failed)


def _programs() -> list[tuple[str, str]]:
    return [(o.name, n) for o in sorted(PROGRAMS.glob("*.o")) if o.name != "bad_bounds.o"
            for n in load_object(o).programs if n != "devmap_prog"]


_PACKETS: list[list[PacketIn]] = []


@pytest.mark.parametrize(("obj", "prog"), _programs(), ids=lambda v: str(v).removesuffix(".o"))
def test_programs_over_sample_captures_on_tier_1(
    obj: str, prog: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """interp against JIT tier 1 (the kernel column is tests/test_differential.py's)."""
    monkeypatch.setenv("XDPSIM_JIT_TIER", "1")  # the engine difftest makes is a forced tier 1
    if not _PACKETS:
        pkts: list[PacketIn] = []
        for cap in CAPTURES:
            pkts.extend(PacketIn(len(pkts), p.data, p.ts_ns) for p in capture_packets(str(cap))())
        _PACKETS.append(pkts)
    report = diff_program(load_object(PROGRAMS / obj), prog, _PACKETS[0], engines=("interp", "jit"))
    assert report.ok, report.disagreements[:3]
    assert report.compared > 0.9 * len(_PACKETS[0]), report.not_compared  # (as tests/test_differential.py)


BUDGET_PROG = """
    r1 = 0
    r2 = 0x1122334455667788 ll
    r1 += 1
    r3 = 7 ll
    r1 += r3
    if r1 < 100 goto -7
    r0 = r1
    exit
"""


@pytest.mark.parametrize("tier", [1, 2])
def test_budget_faults_name_the_instruction_after_lddw(tier: int) -> None:
    """A budget fault in a block holding lddw names the interpreter's instruction (abi.F_BUDGET)."""
    spec = ObjectSpec("<t>", {"p": ProgramSpec("p", "xdp", ProgType.XDP, "xdp", assemble(BUDGET_PROG))}, [])
    for budget in range(1, 30):
        outs = []
        for eng in (Interpreter(), JitEngine(tier=tier)):
            rt = Runtime()
            pid = rt.load(spec).programs["p"]
            r = run_xdp(rt, eng, pid, bytes(60), budget=budget)
            outs.append((str(r.error), r.insns))
        assert outs[0] == outs[1], (budget, outs)


# ------------------------------------------------------------------------------ the swap


def _chain_runtime() -> tuple[Runtime, dict[str, int]]:
    """main tail-calls slot 1 of prog array `jmp` (map 0: handle 4 << 32), which holds `other`."""
    main = "r6 = r1\nr2 = 0x400000000 ll\nr3 = 1\ncall 12\nr0 = 1\nexit"
    progs = {n: ProgramSpec(n, "xdp", ProgType.XDP, "xdp", assemble(t))
             for n, t in (("main", main), ("other", "r0 = 3\nexit"))}
    rt = Runtime()
    jmp = MapSpec("jmp", MapType.PROG_ARRAY, 4, 4, 4, init_slots={1: "other"})
    coll = rt.load(ObjectSpec("<t>", progs, [jmp]))
    return rt, coll.programs


def test_tier_2_replaces_tier_1_between_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("XDPSIM_JIT_TIER", raising=False)
    obj = xdpsim.load(PROGRAMS / "parser.o", engine="jit")
    jit = obj._engine("jit")  # noqa: SLF001
    assert jit.tier is None
    rt = obj.runtime
    pid = obj.programs["packet_parser"].id
    pkt = bytes.fromhex("ffffffffffff020000000001") + b"\x08\x00" + bytes([0x45]) + bytes(8) + bytes([6]) \
        + bytes(10) + bytes(20)
    first = run_xdp(rt, jit, pid, pkt)
    rj = jit._rj(rt)  # noqa: SLF001
    cps = [c for c in rj.compiled if c is not None]
    assert compiler().wait(120)
    second = run_xdp(rt, jit, pid, pkt)
    assert (first.action, first.data, first.tail_calls) == (second.action, second.data, second.tail_calls)
    # every program of the object now runs its O2 code, and the tail-call table points at it
    for i, cp in enumerate(rj.compiled):
        assert cp is not None and cp.tier == 2
        assert int(rj.progs[i]) == cp.address == compiler().upgraded(cp.key).address
        assert set(cp.funcs) and all(cp.funcs.values())
    assert cps and all(c.tier == 2 for c in cps)


def test_forced_tier_1_is_never_upgraded() -> None:
    rt, progs = _chain_runtime()
    jit = JitEngine(tier=1)
    r = run_xdp(rt, jit, progs["main"], bytes(60))
    assert r.retval == 3 and r.tail_calls == 1
    compiler().wait(120)
    r = run_xdp(rt, jit, progs["main"], bytes(60))
    assert r.retval == 3
    assert all(c is not None and c.tier == 1 for c in jit._rj(rt).compiled)  # noqa: SLF001


def test_batch_replay_takes_tier_2_at_the_next_batch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import numpy as np

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("XDPSIM_JIT_TIER", raising=False)
    obj = xdpsim.load(PROGRAMS / "edge_fw.o", engine="jit")
    jit = obj._engine("jit")  # noqa: SLF001
    pid = obj.programs["edge_fw"].id
    pkts = [bytes.fromhex("ffffffffffff020000000001") + b"\x08\x06" + bytes(28)] * 50
    lengths = np.array([len(p) for p in pkts], np.uint32)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    data = np.frombuffer(b"".join(pkts), np.uint8)
    a = jit.run_batch(obj.runtime, pid, data, offsets, lengths)
    assert compiler().wait(120)
    b = jit.run_batch(obj.runtime, pid, data, offsets, lengths)
    assert jit._rj(obj.runtime).compiled[pid].tier == 2  # noqa: SLF001
    assert list(a.action) == list(b.action) == [2] * 50
    assert obj.maps["reasons"][10] == [(100).to_bytes(8, "little")]  # R_ARP, both batches


# ------------------------------------------------------------------------------ the disk cache


def test_only_tier_2_goes_to_disk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("XDPSIM_JIT_CACHE", "1")
    monkeypatch.delenv("XDPSIM_JIT_TIER", raising=False)
    prog = ProgramInput(assemble("r0 = 40\nr0 += 3\nexit"))
    c = Compiler()
    assert c.compile(prog, tier=1).tier == 1
    assert not (cache_dir() / f"{cache_key(prog)}.o").exists()
    first = c.compile(prog)  # tiered: tier 1 is in memory, tier 2 builds in the background
    assert first.tier == 1 and first.source == "memory"
    assert c.wait(120)
    assert (cache_dir() / f"{cache_key(prog)}.o").exists()
    assert c.compile(prog).tier == 2
    second = Compiler().compile(prog)
    assert (second.source, second.tier) == ("disk", 2)


def test_a_short_process_still_fills_the_cache(tmp_path: Path) -> None:
    code = (
        "import xdpsim\n"
        "from xdpsim.hooks.xdp import run_xdp\n"
        f"o = xdpsim.load({str(PROGRAMS / 'chain.o')!r}, engine='jit')\n"
        "print(o.programs['chain_count'].run(bytes(60)).action)\n"
    )
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path), XDPSIM_JIT_CACHE="1")
    env.pop("XDPSIM_JIT_TIER", None)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=300)
    objs = list((tmp_path / "xdpsim" / "jit").glob("*.o"))
    spec = load_object(PROGRAMS / "chain.o")
    rt = Runtime()
    rt.load(spec)
    eng = JitEngine()
    keys = {cache_key(eng.program_input(rt, p)) for p in rt.programs}
    assert keys <= {p.stem for p in objs}, "every program's tier-2 object is on disk after exit"
