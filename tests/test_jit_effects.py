"""jit/effects.py: which programs provably never change their packet (the batch replay's F_UNCHANGED)."""

from __future__ import annotations

from pathlib import Path

import pytest

import xdpsim
from xdpsim.engines.jit_batch import packet_unchanged as chain_unchanged
from xdpsim.io.pcap import PcapReader
from xdpsim.io.workload import generate_reference
from xdpsim.isa import Instruction as I  # noqa: N817
from xdpsim.jit.effects import Effects, Facts, cached_effects, effects, packet_unchanged

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "programs"

# r2 = data, r3 = data_end, r4 = data + 14; if r4 > r3 goto out
HEAD = [I(0x61, 2, 1, 0, 0), I(0x61, 3, 1, 4, 0), I(0xBF, 4, 2, 0, 0), I(0x07, 4, 0, 0, 14)]
OUT = [I(0xB7, 0, 0, 0, 2), I(0x95, 0, 0, 0, 0)]  # r0 = XDP_PASS; exit


def _guarded(body: list[I]) -> list[I]:
    """HEAD, a bounds check jumping over `body` to OUT, body, OUT."""
    return [*HEAD, I(0x2D, 4, 3, len(body), 0), *body, *OUT]


def test_reads_and_stack_stores_leave_the_packet_unchanged() -> None:
    body = [I(0x71, 5, 2, 12, 0), I(0x62, 10, 0, -4, 7), I(0x63, 10, 5, -8, 0)]  # ldxb; st [r10-4]; stx
    assert effects(_guarded(body)) == Effects(False, False)
    assert packet_unchanged(_guarded(body))


@pytest.mark.parametrize(
    "body",
    [
        [I(0x72, 2, 0, 0, 1)],  # stb [data + 0] = 1: a proven packet store
        [I(0x73, 2, 5, 20, 0)],  # stxb past the proven range: unproven, may be the packet
        [I(0x62, 1, 0, 0, 0)],  # a store into the context
        [I(0x61, 5, 1, 16, 0), I(0x62, 5, 0, 0, 0)],  # a store through a scalar (rx_queue_index)
        [I(0xBF, 1, 1, 0, 0), I(0xB7, 2, 0, 0, 4), I(0x85, 0, 0, 0, 44)],  # bpf_xdp_adjust_head
        [I(0x85, 0, 0, 0, 65)],  # bpf_xdp_adjust_tail
        [I(0x85, 0, 0, 0, 190)],  # bpf_xdp_store_bytes
        [I(0x85, 0, 2, 0, 1000)],  # a kfunc
        [I(0x62, 10, 0, -600, 0)],  # below the frame
    ],
)
def test_writes_or_unknowns_count_as_writes(body: list[I]) -> None:
    assert effects(_guarded(body)).writes
    assert not packet_unchanged(_guarded(body))


def test_a_store_the_analysis_never_reached_counts_as_a_write() -> None:
    insns = [*OUT, I(0x72, 2, 0, 0, 1), *OUT]  # (dead code after the first exit)
    assert effects(insns).writes


def test_tail_calls_are_reported_apart() -> None:
    body = [I(0xB7, 3, 0, 0, 0), I(0x85, 0, 0, 0, 12)]  # bpf_tail_call(ctx, r2, 0)
    e = effects(_guarded(body))
    assert e == Effects(False, True)
    assert not packet_unchanged(_guarded(body))


def test_tc_programs_are_unknown() -> None:
    assert effects(_guarded([]), Facts(xdp=False)).writes


@pytest.mark.skipif(not (PROGRAMS / "rewrite.o").exists(), reason="programs not built")
def test_bundled_programs() -> None:
    """The parser chain is proven unchanged (tail calls into programs that are); every rewrite is not."""
    parser = xdpsim.load(PROGRAMS / "parser.o", engine="jit")
    eng = parser._engine("jit")  # noqa: SLF001
    assert all(chain_unchanged(eng, parser.runtime, p.id) for p in parser.programs.values())
    rewrite = xdpsim.load(PROGRAMS / "rewrite.o", engine="jit")
    eng = rewrite._engine("jit")  # noqa: SLF001
    assert not any(chain_unchanged(eng, rewrite.runtime, p.id) for p in rewrite.programs.values())


@pytest.mark.skipif(not (PROGRAMS / "edge_fw.o").exists(), reason="programs not built")
@pytest.mark.parametrize("path", ["parser.o", "edge_fw.o", "broadcast.o", "chain.o", "redirect.o",
                                  "rewrite.o", "icmp_echo.o", "firewall.o"])
def test_programs_proven_unchanged_do_not_change_packets(path: str, tmp_path: Path) -> None:
    """Soundness against the interpreter: every packet a proven program returns is the one it got."""
    import numpy as np

    generate_reference(tmp_path / "w.pcap", 300, seed=3)
    frames = [p.data for p in PcapReader(tmp_path / "w.pcap")]
    frames += [bytes(14), bytes(60), np.arange(200, dtype=np.uint8).tobytes()]
    obj = xdpsim.load(PROGRAMS / path, engine="interp")
    eng = xdpsim.load(PROGRAMS / path, engine="jit")
    jit = eng._engine("jit")  # noqa: SLF001
    for name, prog in obj.programs.items():
        if prog._hook != "xdp" or not chain_unchanged(jit, eng.runtime, eng.programs[name].id):  # noqa: SLF001
            continue
        for f in frames:
            r = prog.run(f)
            if r.error is None:
                assert r.data == f, f"{path}:{name} changed a packet"


def test_answers_are_remembered_on_disk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("XDPSIM_JIT_CACHE", "1")
    writes = _guarded([I(0x72, 2, 0, 0, 1)])
    tail = _guarded([I(0xB7, 3, 0, 0, 0), I(0x85, 0, 0, 0, 12)])
    for insns in (writes, tail):
        assert cached_effects(insns) == effects(insns)
    files = list((tmp_path / "xdpsim" / "jit" / "effects").iterdir())
    assert sorted(f.read_text() for f in files) == ["01", "10"]
    for f in files:  # a second process reads the answers (here: what the files say)
        f.write_text("11")
    assert cached_effects(writes) == Effects(True, True)
    monkeypatch.setenv("XDPSIM_JIT_CACHE", "0")
    assert cached_effects(writes) == Effects(True, False)
