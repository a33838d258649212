"""`xdpsim diff` compares the copies a packet makes: bpf_clone_redirect's (single TC program runs and
pipelines; interp and jit only: the kernel's TC test run transmits a clone without reporting it) and an
XDP broadcast's through a devmap (pipelines, all three engines). A copy that differs is a disagreement
named `copy N` at the packet's index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_pipeline_tc import CLONE, ICMP_SMALL, TCP80, UDP53, capture, pipeline_file

from xdpsim.difftest import diff_program
from xdpsim.difftest.cli import capture_packets, format_report
from xdpsim.difftest.engines import Outcome, PacketIn, SimRunner
from xdpsim.difftest.pipeline import CLONES_NOTE, copies, diff_pipeline
from xdpsim.loader import load_object
from xdpsim.pipeline.pipeline import Pipeline

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "programs"
MIXED = str(ROOT / "pcaps" / "mixed.pcap")
SIMS = ["interp", "jit"]
ALL = ["interp", "jit", "kernel"]
CLONE_TO = 5  # tc_clone's redirect_cfg: copy every frame to the egress of ifindex 5


def _ran(r: Any, engines: list[str]) -> None:
    """An engine that cannot run here (JIT absent, no bpf()) skips the test, with the reason."""
    for e in engines:
        if e in r.skipped_engines:
            pytest.skip(r.skipped_engines[e])


@pytest.fixture
def cloning(monkeypatch: pytest.MonkeyPatch) -> Any:
    """tc_clone's redirect_cfg set in every simulated engine's fresh maps (diff starts from the object)."""
    real = SimRunner.__init__

    def init(self: SimRunner, *a: Any, **kw: Any) -> None:
        real(self, *a, **kw)
        self.collection.maps["redirect_cfg"][b"\0\0\0\0"] = CLONE_TO.to_bytes(4, "little") + bytes(4)

    monkeypatch.setattr(SimRunner, "__init__", init)
    return load_object(PROGRAMS / "tc_redirect.o")


def test_tc_clone_copies_agree_between_interp_and_jit(cloning: Any) -> None:
    packets = capture_packets(MIXED, limit=30)
    r = diff_program(cloning, "tc_clone", packets, engines=SIMS, trace=False)
    _ran(r, SIMS)
    assert r.ok and r.compared == 30, format_report(r)
    first = next(iter(packets()))
    out = SimRunner("jit", cloning, "tc_clone").run(first)
    assert out.copies == (f"clone to egress of dev {CLONE_TO}, {len(first.data)} bytes: {first.data.hex()}",)


def test_tc_clone_copy_disagreement_is_reported(cloning: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real = SimRunner.run

    def run(self: SimRunner, pkt: PacketIn, tracer: Any = None) -> Outcome:
        out = real(self, pkt, tracer)
        if self.name == "jit" and pkt.index == 3:
            out.copies = out.copies + ("clone to egress of dev 9, 0 bytes: ",)
        return out

    monkeypatch.setattr(SimRunner, "run", run)
    r = diff_program(cloning, "tc_clone", capture_packets(MIXED, limit=6), engines=SIMS, trace=False)
    _ran(r, SIMS)
    assert r.disagreeing_packets == 1, format_report(r)
    d = r.disagreements[0]
    assert (d.packet, d.field) == (3, "copy 1")
    assert d.values == {"interp": None, "jit": "clone to egress of dev 9, 0 bytes: "}
    assert "packet 3: copy 1 differs" in format_report(r)


def test_tc_clone_copies_are_not_asked_of_the_kernel(cloning: Any) -> None:
    """With the kernel in the run, the clones are still compared between interp and jit, and the report
    says the kernel's were not (its map entries differ: its redirect_cfg is the object's zero)."""
    r = diff_program(cloning, "tc_clone", capture_packets(MIXED, limit=4), engines=ALL, trace=False)
    _ran(r, ALL)
    assert r.disagreeing_packets == 0, format_report(r)
    assert any("bpf_clone_redirect copies" in why for why in r.kernel_not_compared)


def _clone_pipeline(tmp_path: Path) -> tuple[str, str]:
    return str(pipeline_file(tmp_path, CLONE)), str(capture(tmp_path / "in.pcap", [UDP53, ICMP_SMALL, TCP80]))


def test_pipeline_clone_copies_agree(tmp_path: Path) -> None:
    toml, pcap = _clone_pipeline(tmp_path)
    with Pipeline(load_spec(toml), engine="interp") as p:
        d = p.process(p.interface_for(0) or p.interfaces[0], UDP53, 0, 0)
        assert copies(d) and copies(d, clones=False) == ()
    r = diff_pipeline(toml, pcap, engines=ALL)
    _ran(r, SIMS)
    assert r.ok and r.compared == 3, format_report(r)
    if "kernel" in r.engines:
        assert r.kernel_not_compared[CLONES_NOTE] == 3


def load_spec(toml: str) -> Any:
    from xdpsim.pipeline.config import parse_spec

    return parse_spec(toml, queues=1)


def _tamper(monkeypatch: pytest.MonkeyPatch, engine: str, packet: int) -> None:
    """`engine`'s pipeline changes the last byte of the last copy of its `packet`-th packet."""
    real = Pipeline.process
    seen: dict[int, int] = {}

    def process(self: Pipeline, *a: Any, **kw: Any) -> Any:
        d = real(self, *a, **kw)
        n = seen[id(self)] = seen.get(id(self), -1) + 1
        if self.engine == engine and n == packet:
            c = d.clones[-1]
            c.data = bytes(c.data[:-1]) + bytes([c.data[-1] ^ 0xFF])
        return d

    monkeypatch.setattr(Pipeline, "process", process)


def test_pipeline_clone_copy_disagreement_is_reported(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    toml, pcap = _clone_pipeline(tmp_path)
    _tamper(monkeypatch, "jit", 1)
    r = diff_pipeline(toml, pcap, engines=SIMS)
    _ran(r, SIMS)
    assert r.disagreeing_packets == 1, format_report(r)
    d = r.disagreements[0]
    assert (d.packet, d.field) == (1, "copy 0")
    assert d.values["interp"].startswith("clone to eth1: redirect/tc_clone")
    assert d.values["interp"] != d.values["jit"]


def test_pipeline_broadcast_copies_agree_in_every_engine() -> None:
    toml = str(PROGRAMS / "broadcast.toml")
    with Pipeline(load_spec(toml), engine="interp") as p:
        first = next(iter(capture_packets(MIXED, limit=1)()))
        d = p.process(p.interface_for(0) or p.interfaces[0], first.data, 0, 0)
        assert len(copies(d)) >= 2 and copies(d) == copies(d, clones=False)
        assert all(c.startswith("broadcast to ") for c in copies(d))
    r = diff_pipeline(toml, MIXED, engines=ALL)
    _ran(r, SIMS)
    assert r.ok and r.compared > 100, format_report(r)


@pytest.mark.parametrize("engine", ["jit", "kernel"])
def test_pipeline_broadcast_copy_disagreement_is_reported(monkeypatch: pytest.MonkeyPatch,
                                                          engine: str) -> None:
    """Broadcast copies are compared with the kernel's too: a tampered copy on either side is reported."""
    _tamper(monkeypatch, engine, 2)
    r = diff_pipeline(str(PROGRAMS / "broadcast.toml"), MIXED, engines=["interp", engine])
    _ran(r, ["interp", engine])
    assert r.disagreeing_packets == 1, format_report(r)
    d = r.disagreements[0]
    assert d.packet == 2 and d.field.startswith("copy ")
    assert d.values["interp"].startswith("broadcast to ") and d.values["interp"] != d.values[engine]
