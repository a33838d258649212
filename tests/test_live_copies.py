"""`xdpsim live` sends broadcast and bpf_clone_redirect copies: each copy is counted as a packet of its
own (stats `clones`, as a replay counts them) and leaves through the wire side of its target interface.
Without devices (fake endpoints) and, where taps can be made, with real frames."""

from __future__ import annotations

from pathlib import Path

import pytest
from live_fixtures import (
    PROGRAMS,
    in_ns,
    live,
    mac_of,
    quiet_tap,
    send_and_collect,
    skip_reason,
)
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from xdpsim.live import Binding, LivePort, LiveRunner
from xdpsim.live_chain import PipelineChains
from xdpsim.pipeline.config import parse_spec
from xdpsim.pipeline.stats import Stats

EXAMPLE = PROGRAMS / "broadcast.toml"  # eth0 floods ports: eth0 (split_horizon drops), eth1, eth2 (MTU 100)
FRAME = bytes.fromhex("ffffffffffff02000000000108004500001c0001000040017cdd0a0000010a000002") + bytes(20)


class FakeWire:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.sent.append(frame)


def test_chains_give_and_count_the_copies() -> None:
    chains = PipelineChains(parse_spec(str(EXAMPLE)), "interp")
    try:
        stats = Stats()
        v = chains.process("eth0", FRAME, 0, stats)
    finally:
        chains.close()
    assert (v.outcome, v.reason) == ("redirect", "broadcast")
    assert [(c.outcome, c.reason, c.target, c.interface) for c in v.clones] == [
        ("drop", "devmap_program", None, "eth0"), ("redirect", "broadcast_copy", "eth1", "eth0"),
        ("redirect", "broadcast_copy", "eth2", "eth0")]
    assert v.clones[1].data == FRAME[:11] + bytes([3]) + FRAME[12:]  # stamped by split_horizon
    assert stats.packets == 4 and stats.clones == 3
    assert dict(stats.reasons["redirect"]) == {"broadcast": 1, "broadcast_copy": 2}
    assert dict(stats.redirect_targets) == {"broadcast": 1, "eth1": 1, "eth2": 1}
    stats.check()


def test_runner_sends_each_copy_out_of_its_interface() -> None:
    spec = parse_spec(str(EXAMPLE))
    runner = LiveRunner(spec, {i.name: Binding("tap", f"w{n}") for n, i in enumerate(spec.interfaces)})
    try:
        wires = {i.name: FakeWire(f"w{n}") for n, i in enumerate(spec.interfaces)}
        runner.ports = {n: LivePort(n, w) for n, w in wires.items()}  # type: ignore[arg-type]
        v = runner.chains.process("eth0", FRAME, 0, runner.stats)
        runner._deliver(runner.ports["eth0"], v, 0)
        long = FRAME + bytes(100)  # over eth2's MTU: no copy for it
        runner._deliver(runner.ports["eth0"], runner.chains.process("eth0", long, 0, runner.stats), 0)
    finally:
        runner.chains.close()
    # the broadcast itself is not a frame on any wire; its copy back to eth0 is dropped by split_horizon
    assert wires["eth0"].sent == []
    assert wires["eth1"].sent == [FRAME[:11] + bytes([3]) + FRAME[12:], long[:11] + bytes([3]) + long[12:]]
    assert wires["eth2"].sent == [FRAME]
    assert runner.stats.clones == 5 and runner.stats.packets == 7


def test_a_copy_whose_target_is_gone_is_recounted_where_it_was_counted() -> None:
    spec = parse_spec(str(EXAMPLE))
    runner = LiveRunner(spec, {i.name: Binding("tap", f"w{n}") for n, i in enumerate(spec.interfaces)})
    try:
        runner.ports = {i.name: LivePort(i.name, FakeWire(i.name)) for i in spec.interfaces}  # type: ignore[arg-type]
        runner.ports["eth2"].ended = "w2 was removed"
        runner._deliver(runner.ports["eth0"], runner.chains.process("eth0", FRAME, 0, runner.stats), 0)
    finally:
        runner.chains.close()
    st = runner.stats
    st.check()
    assert dict(st.reasons["drop"]) == {"devmap_program": 1, "target_gone": 1}
    assert dict(st.reasons["redirect"]) == {"broadcast": 1, "broadcast_copy": 1}


@pytest.mark.parametrize("case", ["clone", "redirect"])
def test_runner_sends_tc_clones_and_tc_redirects(tmp_path: Path, case: str) -> None:
    """TC at eth0's ingress: tc_clone copies each frame to eth1's egress (the frame itself passes to the
    host: no host tap here), tc_redirect sends it there; either way eth1's wire gets the frame."""
    from test_pipeline_tc import CLONE, REDIRECT, UDP53, pipeline_file

    redirect = REDIRECT.replace("@HOOK@", "tc_egress").replace("@CFG@", "0200000000000000")
    text = CLONE if case == "clone" else redirect
    spec = parse_spec(str(pipeline_file(tmp_path, text)))
    runner = LiveRunner(spec, {i.name: Binding("tap", f"w{n}") for n, i in enumerate(spec.interfaces)})
    try:
        wires = {i.name: FakeWire(i.name) for i in spec.interfaces}
        runner.ports = {n: LivePort(n, w) for n, w in wires.items()}  # type: ignore[arg-type]
        v = runner.chains.process("eth0", UDP53, 0, runner.stats)
        runner._deliver(runner.ports["eth0"], v, 0)
    finally:
        runner.chains.close()
    assert wires["eth0"].sent == [] and len(wires["eth1"].sent) == 1
    assert runner.stats.clones == (case == "clone")
    runner.stats.check()


@pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")
def test_live_broadcast_copies_reach_the_other_tap(tmp_path: Path) -> None:
    """broadcast.o's flood_others on eth0 (tap w0), ports: eth0 and eth1 (tap w1): each frame sent into
    w0 comes out of w1 (the copy), nothing comes back out of w0 (BPF_F_EXCLUDE_INGRESS)."""
    from xdpsim.kernel.netns import NetNamespace

    spec = tmp_path / "live.toml"
    spec.write_text(f"""
[[interface]]
name = "eth0"
tap = "w0"
xdp = [{{ object = "{PROGRAMS / 'broadcast.o'}", program = "flood_others" }}]
[[interface]]
name = "eth1"
tap = "w1"
[[map_entries]]
map = "ports"
key = "00000000"
value = "0100000000000000"
[[map_entries]]
map = "ports"
key = "01000000"
value = "0200000000000000"
""")
    with NetNamespace() as ns:
        # no IPv6 on the taps made from here on: its autoconfiguration traffic would spoil the counts
        for key in ("default", "all"):
            in_ns(ns, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
        stats, got, sent = _flood(ns, spec)
    assert got == sent
    assert stats["clones"] == 3
    assert stats["reasons"]["redirect"] == {"broadcast": 3, "broadcast_copy": 3}


def _flood(ns, spec: Path) -> tuple[dict, list[bytes], list[bytes]]:  # noqa: ANN001 - a NetNamespace
    with live(ns, str(spec), {}) as run:
        quiet_tap(ns, "w0")
        quiet_tap(ns, "w1")
        eth = Ether(src="02:00:00:00:00:02", dst=mac_of(ns, "w0"))
        sent = [bytes(eth / IP(src="10.1.0.2", dst="10.1.0.1") / UDP(sport=4000, dport=7000 + i)
                      / (b"flood me %d" % i)) for i in range(3)]
        got = send_and_collect(ns, "w0", "w1", sent, b"flood me")
        run.wait_packets(6)
        return run.stop(), got, sent
