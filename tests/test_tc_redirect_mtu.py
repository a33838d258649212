"""TC redirects and the target's MTU (xdpsim/pipeline/tc_stage.py xmit_mtu_exceeded), as the kernel does
(asked on veths in tests/test_tc_redirect_mtu_kernel.py): a frame leaving an interface's egress after a
TC redirect or as a bpf_clone_redirect copy is dropped when longer than the MTU + 14 + 4 (reason
`tc_redirect_mtu`, after the target's TC egress ran); a redirect to an ingress (BPF_F_INGRESS), copy or
not, checks no MTU at all. Every engine decides TC redirects in the same TcFlow."""

from __future__ import annotations

from pathlib import Path

import pytest
from kernel_fixtures import kernel  # noqa: F401 - the fixture
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from xdpsim.io import PcapWriter
from xdpsim.pipeline.config import parse_spec
from xdpsim.pipeline.pipeline import Pipeline
from xdpsim.pipeline.replay import replay_to_dir
from xdpsim.pipeline.stats import REASONS

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"
ENGINES = ["interp", "jit"]
MTU = 1000
LIMIT = MTU + 14 + 4

TOML = """
[[interface]]
name = "eth0"
ifindex = 3
tc_ingress = ["{p}/tc_redirect.o:{prog}"]

[[interface]]
name = "eth1"
ifindex = 2
mtu = {mtu}
tc_egress = ["{p}/tc_redirect.o:tc_mark_egress"]

[[map_entries]]
map = "redirect_cfg"
key = "00000000"
value = "02000000{flags}"
"""


def frame(n: int) -> bytes:
    head = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:99")
                 / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=999, dport=53))
    return head + bytes(n - len(head))


def spec(tmp_path: Path, prog: str, ingress: bool, mtu: int = MTU) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(TOML.format(p=PROGRAMS, prog=prog, mtu=mtu, flags="01000000" if ingress else "00000000"))
    return path


def fates(p: Pipeline, n: int) -> list[tuple[str, str, str | None]]:
    """The packet's fate, then each clone's."""
    d = p.process(p.by_ifindex[3], frame(n), 0)
    return [(x.outcome, x.reason, x.target) for x in [d, *d.clones]]


@pytest.mark.parametrize("engine", ENGINES)
def test_egress_redirect_over_the_mtu_is_dropped(tmp_path: Path, engine: str) -> None:
    with Pipeline(parse_spec(str(spec(tmp_path, "tc_redirect", False))), engine=engine) as p:
        assert fates(p, LIMIT) == [("redirect", "tc_redirect", "eth1")]
        assert fates(p, LIMIT + 1) == [("drop", "tc_redirect_mtu", None)]
        d = p.process(p.by_ifindex[3], frame(LIMIT + 1), 0)
        assert d.error is not None and "eth1" in d.error and str(LIMIT) in d.error
        # the target's TC egress ran before the device refused the frame (the kernel's order)
        assert d.stages == [("tc_ingress", "redirect"), ("tc_egress", "pass")]


@pytest.mark.parametrize("engine", ENGINES)
def test_ingress_redirect_checks_no_mtu(tmp_path: Path, engine: str) -> None:
    """BPF_F_INGRESS: __bpf_rx_skb forwards with check_mtu false, so a frame 3x the MTU reaches the host."""
    with Pipeline(parse_spec(str(spec(tmp_path, "tc_redirect", True))), engine=engine) as p:
        assert fates(p, LIMIT + 1) == [("pass", "tc_pass", None)]
        assert fates(p, 3 * MTU) == [("pass", "tc_pass", None)]


@pytest.mark.parametrize("engine", ENGINES)
def test_clone_to_egress_over_the_mtu_is_dropped(tmp_path: Path, engine: str) -> None:
    """The copy is dropped; the original (TC_ACT_OK at eth0's ingress) is not concerned."""
    with Pipeline(parse_spec(str(spec(tmp_path, "tc_clone", False))), engine=engine) as p:
        assert fates(p, LIMIT) == [("pass", "tc_pass", None), ("redirect", "tc_clone", "eth1")]
        assert fates(p, LIMIT + 1) == [("pass", "tc_pass", None), ("drop", "tc_redirect_mtu", None)]
        d = p.process(p.by_ifindex[3], frame(LIMIT + 1), 0)
        assert "clone" in (d.clones[0].error or "")


@pytest.mark.parametrize("engine", ENGINES)
def test_clone_to_ingress_checks_no_mtu(tmp_path: Path, engine: str) -> None:
    with Pipeline(parse_spec(str(spec(tmp_path, "tc_clone", True))), engine=engine) as p:
        assert fates(p, 3 * MTU) == [("pass", "tc_pass", None), ("pass", "tc_pass", None)]


def test_the_limit_follows_the_interface_mtu(tmp_path: Path) -> None:
    with Pipeline(parse_spec(str(spec(tmp_path, "tc_redirect", False, mtu=1500))), engine="interp") as p:
        assert fates(p, 1518) == [("redirect", "tc_redirect", "eth1")]
        assert fates(p, 1519) == [("drop", "tc_redirect_mtu", None)]


def test_kernel_engine_decides_the_same(kernel: str, tmp_path: Path) -> None:  # noqa: F811
    """The kernel engine's TC test runs do not transmit: the pipeline applies the same rule to them."""
    got = {}
    for engine in ("interp", "kernel"):
        with Pipeline(parse_spec(str(spec(tmp_path, "tc_redirect", False))), engine=engine) as p:
            got[engine] = [fates(p, n) for n in (LIMIT, LIMIT + 1)]
    assert got["kernel"] == got["interp"] == [[("redirect", "tc_redirect", "eth1")],
                                              [("drop", "tc_redirect_mtu", None)]]


@pytest.mark.parametrize("engine", ENGINES)
def test_replay_counts_the_reason(tmp_path: Path, engine: str) -> None:
    cap = tmp_path / "in.pcap"
    with PcapWriter(cap) as w:
        for i, n in enumerate((100, LIMIT, LIMIT + 1, 1400)):
            w.write(frame(n), 1_700_000_000_000_000_000 + i * 1000)
    stats = replay_to_dir(str(spec(tmp_path, "tc_redirect", False)), cap, tmp_path / "out", engine=engine)
    assert stats["reasons"] == {"redirect": {"tc_redirect": 2}, "drop": {"tc_redirect_mtu": 2}}
    assert stats["packets"] == sum(stats["outcomes"].values()) == 4
    assert "tc_redirect_mtu" in REASONS["drop"]
