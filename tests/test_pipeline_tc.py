"""TC in one pipeline (xdpsim/pipeline/tc_stage.py): wire -> XDP -> TC ingress -> host, host -> TC egress
-> wire, TC redirects to another interface's egress or ingress, clones as packets of their own, the
redirect loop limit, per-stage counts and the accounting invariant, on the interpreter and the JIT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipeline_setup import check_invariant
from pipeline_setup import log_rows as log
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from xdpsim.io import PcapWriter, open_capture
from xdpsim.pipeline.config import PipelineError, parse_pipeline
from xdpsim.pipeline.pipeline import Pipeline
from xdpsim.pipeline.replay import replay_to_dir

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"
ENGINES = ["interp", "jit"]
MAC = "02:00:00:00:00:01"


def eth(payload, dst: str = MAC) -> bytes:
    return bytes(Ether(dst=dst, src="02:00:00:00:00:99") / payload)


def pad(frame: bytes, n: int = 64) -> bytes:
    return frame.ljust(n, b"\0")


ICMP_SMALL = pad(eth(IP(src="10.0.0.1", dst="10.0.0.2") / ICMP()))  # 64 bytes: policed only above 100
ICMP_BIG = eth(IP(src="10.0.0.1", dst="10.0.0.2") / ICMP() / bytes(200))  # 242 bytes: dropped by tc_police
UDP53 = pad(eth(IP(src="10.0.0.3", dst="10.0.0.2") / UDP(sport=999, dport=53)))
TCP80 = pad(eth(IP(src="10.0.0.4", dst="10.0.0.2") / TCP(sport=999, dport=80)))
UDP_SHORT = eth(IP(src="10.0.0.5", dst="10.0.0.2") / UDP(sport=999, dport=53))  # 42 bytes: tcx_guard drops
MIXED = [ICMP_SMALL, ICMP_BIG, UDP53, TCP80, UDP_SHORT]


def capture(path: Path, frames: list[bytes]) -> Path:
    with PcapWriter(path) as w:
        for i, f in enumerate(frames):
            w.write(f, 1_700_000_000_000_000_000 + i * 1000)
    return path


def pipeline_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(text.replace("@P@", str(PROGRAMS)))
    return path


def sink(out: Path, name: str) -> list[bytes]:
    path = out / name
    return [p.data for p in open_capture(path)] if path.exists() else []


def replay(tmp_path: Path, toml: str, frames: list[bytes], engine: str,
           name: str = "out") -> tuple[dict, Path]:
    spec = pipeline_file(tmp_path, toml)
    cap = capture(tmp_path / "in.pcap", frames)
    out = tmp_path / name
    stats = replay_to_dir(str(spec), cap, out, engine=engine, log=True)
    check_invariant(stats)
    return stats, out


def entries(maps: dict, name: str) -> dict[int, int]:
    """A hash map of u32/u64 keys and u64 counters from maps.json, as ints."""
    raw = maps[name]["entries"]
    return {int.from_bytes(bytes.fromhex(k), "little"): int.from_bytes(bytes.fromhex(v), "little")
            for k, v in raw.items()}


CLASSIFY_POLICE = """
[[interface]]
name = "eth0"
mac = "02:00:00:00:00:01"
tc_ingress = [{ object = "@P@/tc_classify.o", program = "tc_police" },
              { object = "@P@/tc_classify.o", program = "tc_classify" }]
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_tc_only_pipeline_classifier_then_police(tmp_path: Path, engine: str) -> None:
    """Without priorities the later filter gets 49151 and runs first (the kernel's automatic ones):
    tc_classify sets mark/cb[0] and returns UNSPEC, tc_police acts on them."""
    stats, out = replay(tmp_path, CLASSIFY_POLICE, MIXED, engine)
    assert [(r["outcome"], r["reason"]) for r in log(out)] == [
        ("pass", "tc_pass"), ("drop", "tc_shot"), ("pass", "tc_pass"), ("pass", "tc_pass"),
        ("pass", "tc_pass")]
    assert sink(out, "pass.pcap") == [ICMP_SMALL, UDP53, TCP80, UDP_SHORT]
    assert sink(out, "drop.pcap") == [ICMP_BIG]
    assert stats["stages"] == {"tc_ingress": {"pass": 4, "drop": 1}}
    assert "xdp" not in stats["stages"]  # the interface has no XDP program
    maps = json.loads((out / "maps.json").read_text())
    assert entries(maps, "police_count") == {0x101: 2, 0x111: 2, 0x106: 1}
    assert stats["programs"]["tc_police"]["drop"] == 1
    # both filters' helper calls count: a lookup each per packet, an update per new mark in each map
    assert stats["helper_calls"] == {"map_lookup_elem": 10, "map_update_elem": 6}


def test_filter_keys_refused_and_explicit_priorities(tmp_path: Path) -> None:
    base = tmp_path
    with pytest.raises(PipelineError, match="tcx programs run in the listed order"):
        parse_pipeline('[[interface]]\nname = "a"\ntcx_ingress = [{ object = "x.o", priority = 3 }]', base)
    with pytest.raises(PipelineError, match="protocol"):
        parse_pipeline('[[interface]]\nname = "a"\ntc_ingress = [{ object = "x.o", protocol = "ipx" }]', base)
    spec = parse_pipeline('[[interface]]\nname = "a"\ntc_egress = [{ object = "x.o:p", priority = 7, '
                          'handle = 2, protocol = "ipv6" }]', base)
    ref = spec.interfaces[0].tc_egress[0]
    assert (ref.program, ref.priority, ref.handle, ref.protocol) == ("p", 7, 2, 0x86DD)
    assert spec.objects() == [(base / "x.o").resolve()]
    # a priority used with another protocol is refused as `tc` refuses it
    bad = pipeline_file(tmp_path, """
[[interface]]
name = "eth0"
tc_ingress = [{ object = "@P@/tc_classify.o", program = "tc_classify", priority = 5, protocol = "ip" },
              { object = "@P@/tc_classify.o", program = "tc_police", priority = 5, protocol = "ipv6" }]
""")
    from xdpsim.pipeline.config import parse_spec

    with pytest.raises(PipelineError, match="tc_ingress tc_police.*another protocol"):
        Pipeline(parse_spec(str(bad)), engine="interp")


@pytest.mark.parametrize("engine", ENGINES)
def test_protocol_filter_skips_other_packets(tmp_path: Path, engine: str) -> None:
    """A filter for IPv6 only does not run on IPv4 frames: tc_police alone sees no mark and passes."""
    stats, out = replay(tmp_path, """
[[interface]]
name = "eth0"
tc_ingress = [{ object = "@P@/tc_classify.o", program = "tc_classify", priority = 1, protocol = "ipv6" },
              { object = "@P@/tc_classify.o", program = "tc_police", priority = 2 }]
""", [ICMP_BIG], engine)
    assert stats["reasons"] == {"pass": {"tc_pass": 1}}
    assert stats["programs"] == {"tc_police": {"runs": 1, "decided": 1, "pass": 1}}


XDP_TC = """
[[interface]]
name = "eth0"
mac = "02:00:00:00:00:01"
xdp = [{ object = "@P@/firewall.o" }]
tcx_ingress = ["@P@/tc_classify.o:tcx_guard"]
tc_ingress = [{ object = "@P@/tc_classify.o", program = "tc_classify", priority = 1 },
              { object = "@P@/tc_classify.o", program = "tc_police", priority = 2 }]

[[map_entries]]
map = "allowed_ports"
key = "3500"
value = "01"
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_xdp_then_tcx_then_clsact(tmp_path: Path, engine: str) -> None:
    stats, out = replay(tmp_path, XDP_TC, MIXED, engine)
    assert [(r["outcome"], r["reason"], r["program"]) for r in log(out)] == [
        ("pass", "tc_pass", "tc_police"),
        ("drop", "tc_shot", "tc_police"),
        ("pass", "tc_pass", "tc_police"),
        ("drop", "xdp_drop", "firewall"),  # port 80 is not allowed: TC never sees it
        ("drop", "tc_shot", "tcx_guard"),  # under 60 bytes: tcx drops it before clsact
    ]
    assert stats["stages"] == {"xdp": {"pass": 4, "drop": 1},
                               "tc_ingress": {"pass": 2, "drop": 2}}
    assert stats["programs"]["tcx_guard"]["runs"] == 4
    assert stats["programs"]["tc_classify"]["runs"] == 3  # not after tcx_guard's TCX_DROP
    assert stats["programs"]["firewall"]["runs"] == 5
    assert sink(out, "pass.pcap") == [ICMP_SMALL, UDP53]


REDIRECT = """
[[interface]]
name = "eth0"
tc_ingress = [{ object = "@P@/tc_classify.o", program = "tc_classify", priority = 1 },
              { object = "@P@/tc_redirect.o", program = "tc_redirect", priority = 2 }]

[[interface]]
name = "eth1"
xdp = [{ object = "@P@/firewall.o" }]     # no allowed ports: XDP would drop every UDP/TCP frame
@HOOK@ = ["@P@/tc_redirect.o:tc_mark_egress"]

[[map_entries]]
map = "redirect_cfg"
key = "00000000"
value = "@CFG@"
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_redirect_to_egress_of_second_interface_carries_mark(tmp_path: Path, engine: str) -> None:
    toml = REDIRECT.replace("@HOOK@", "tc_egress").replace("@CFG@", "0200000000000000")
    stats, out = replay(tmp_path, toml, [UDP53, TCP80, ICMP_SMALL], engine)
    got = [(r["outcome"], r["reason"], r["target"]) for r in log(out)]
    assert got == [("redirect", "tc_redirect", "eth1")] * 3
    assert sink(out / "eth0", "redirect-eth1.pcap") == [UDP53, TCP80, ICMP_SMALL]
    assert stats["stages"] == {"tc_ingress": {"redirect": 3}, "tc_egress": {"pass": 3}}
    assert "firewall" not in stats["programs"]  # a TC redirect does not run the target's XDP
    maps = json.loads((out / "maps.json").read_text())
    # the marks tc_classify set at eth0's ingress, seen by eth1's egress program
    assert entries(maps, "egress_marks") == {0x111: 1, 0x106: 1, 0x101: 1}


@pytest.mark.parametrize("engine", ENGINES)
def test_redirect_with_bpf_f_ingress_runs_tc_ingress_not_xdp(tmp_path: Path, engine: str) -> None:
    toml = REDIRECT.replace("@HOOK@", "tc_ingress").replace("@CFG@", "0200000001000000")
    stats, out = replay(tmp_path, toml, [UDP53, TCP80], engine)
    assert [(r["outcome"], r["reason"]) for r in log(out)] == [("pass", "tc_pass")] * 2
    assert stats["stages"] == {"tc_ingress": {"redirect": 2, "pass": 2}}
    assert "firewall" not in stats["programs"]
    maps = json.loads((out / "maps.json").read_text())
    assert entries(maps, "egress_marks") == {0x111: 1, 0x106: 1}
    assert sink(out / "eth0", "pass.pcap") == [UDP53, TCP80]


@pytest.mark.parametrize("engine", ENGINES)
def test_redirect_to_unknown_ifindex_and_bad_flags(tmp_path: Path, engine: str) -> None:
    toml = REDIRECT.replace("@HOOK@", "tc_egress").replace("@CFG@", "0900000000000000")
    stats, out = replay(tmp_path, toml, [UDP53], engine)
    assert stats["reasons"] == {"drop": {"tc_redirect_failed": 1}}
    assert any("ifindex 9" in e for e in stats["errors"])
    toml = REDIRECT.replace("@HOOK@", "tc_egress").replace("@CFG@", "0200000002000000")
    stats, _ = replay(tmp_path, toml, [UDP53], engine, name="flags")
    assert stats["reasons"] == {"drop": {"tc_shot": 1}}  # bpf_redirect with bad flags: TC_ACT_SHOT


CLONE = """
[[interface]]
name = "eth0"
tc_ingress = [{ object = "@P@/tc_classify.o", program = "tc_classify", priority = 1 },
              { object = "@P@/tc_redirect.o", program = "tc_clone", priority = 2 }]

[[interface]]
name = "eth1"
tc_egress = ["@P@/tc_redirect.o:tc_mark_egress"]

[[map_entries]]
map = "redirect_cfg"
key = "00000000"
value = "0200000000000000"
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_clone_redirect_counts_clones_as_packets(tmp_path: Path, engine: str) -> None:
    stats, out = replay(tmp_path, CLONE, [UDP53, ICMP_SMALL, TCP80], engine)
    assert stats["packets"] == 6 and stats["clones"] == 3
    assert stats["reasons"] == {"pass": {"tc_pass": 3}, "redirect": {"tc_clone": 3}}
    assert stats["interfaces"]["eth0"]["pass"] == 3
    assert stats["interfaces"]["eth1"]["redirect"] == 3
    assert sink(out / "eth0", "pass.pcap") == [UDP53, ICMP_SMALL, TCP80]
    assert sink(out / "eth1", "redirect-eth1.pcap") == [UDP53, ICMP_SMALL, TCP80]
    assert stats["stages"] == {"tc_ingress": {"pass": 3}, "tc_egress": {"pass": 3}}
    maps = json.loads((out / "maps.json").read_text())
    assert entries(maps, "egress_marks") == {0x111: 1, 0x101: 1, 0x106: 1}  # the clone keeps the mark
    assert entries(maps, "clone_ret") == {0: 3}


# the host sends one packet out of eth0, whose egress program clones it to eth0's egress again
CLONE_LOOP = """
[[interface]]
name = "eth0"
tc_egress = ["@P@/tc_redirect.o:tc_clone"]
host_pcap = "host.pcap"

[[map_entries]]
map = "redirect_cfg"
key = "00000000"
value = "0100000000000000"
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_clone_loop_stops_at_the_limit(tmp_path: Path, engine: str) -> None:
    """An egress program cloning to its own egress: each copy clones again until the recursion bound."""
    capture(tmp_path / "host.pcap", [UDP53])
    stats, _ = replay(tmp_path, CLONE_LOOP, [], engine)
    assert stats["clones"] == 9
    assert stats["packets"] == 10
    assert stats["reasons"] == {"tx": {"host_tx": 1}, "redirect": {"tc_clone": 8},
                                "drop": {"redirect_loop": 1}}


REDIRECT_LOOP = """
[[interface]]
name = "eth0"
tc_ingress = ["@P@/tc_redirect.o:tc_redirect"]
tc_egress = ["@P@/tc_redirect.o:tc_redirect"]

[[map_entries]]
map = "redirect_cfg"
key = "00000000"
value = "0100000000000000"
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_redirect_loop_is_a_named_outcome(tmp_path: Path, engine: str) -> None:
    stats, out = replay(tmp_path, REDIRECT_LOOP, [UDP53, ICMP_SMALL], engine)
    assert stats["reasons"] == {"drop": {"redirect_loop": 2}}
    assert stats["stages"] == {"tc_ingress": {"redirect": 2}, "tc_egress": {"redirect": 16}}
    assert stats["programs"]["tc_redirect"]["runs"] == 18
    assert all("stopped after 8 TC redirects" in e for e in stats["errors"])
    assert sink(out, "drop.pcap") == [UDP53, ICMP_SMALL]


HOST = """
[[interface]]
name = "eth0"
tc_egress = [{ object = "@P@/tc_classify.o", program = "tc_classify", priority = 1 },
             { object = "@P@/tc_classify.o", program = "tc_police", priority = 2 }]
host_pcap = "host.pcap"
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_host_side_feed_goes_through_tc_egress_to_the_wire(tmp_path: Path, engine: str) -> None:
    capture(tmp_path / "host.pcap", MIXED)
    stats, out = replay(tmp_path, HOST, [UDP53], engine)
    assert stats["packets"] == 6  # one from the wire (no ingress program: to the host) and five sent
    assert stats["reasons"] == {"pass": {"no_program": 1}, "tx": {"host_tx": 4}, "drop": {"tc_shot": 1}}
    assert sink(out, "wire-eth0.pcap") == [ICMP_SMALL, UDP53, TCP80, UDP_SHORT]
    assert sink(out, "drop.pcap") == [ICMP_BIG]
    assert sink(out, "pass.pcap") == [UDP53]
    assert stats["stages"] == {"tc_egress": {"pass": 4, "drop": 1}}
    assert stats["capture"]["host"]["eth0"]["packets"] == 5
    host = [r for r in log(out) if r.get("host")]
    assert [r["reason"] for r in host] == ["host_tx", "tc_shot", "host_tx", "host_tx", "host_tx"]


@pytest.mark.parametrize("engine", ENGINES)
def test_xdp_tx_does_not_pass_tc_egress(tmp_path: Path, engine: str) -> None:
    stats, out = replay(tmp_path, """
[[interface]]
name = "eth0"
xdp = [{ object = "@P@/rewrite.o", program = "swap_tx" }]
tc_egress = ["@P@/tc_classify.o:tc_police"]
""", [UDP53, ICMP_BIG], engine)
    assert stats["outcomes"]["tx"] == 2 and stats["reasons"]["tx"] == {"xdp_tx": 2}
    assert "tc_police" not in stats["programs"]
    assert stats["stages"] == {"xdp": {"tx": 2}}


def test_pipeline_send_api_and_vlan_tag_restored() -> None:
    """Pipeline.process on a VLAN frame: TC ingress sees it untagged (offload tag), the sink bytes get
    the tag back."""
    from scapy.layers.l2 import Dot1Q

    from xdpsim.pipeline.config import InterfaceSpec, PipelineSpec, TcRef

    frame = pad(bytes(Ether(dst=MAC) / Dot1Q(vlan=5) / IP(dst="10.0.0.2") / UDP(dport=53)))
    ref = TcRef(PROGRAMS / "tc_classify.o", "tc_police")
    spec = PipelineSpec([InterfaceSpec("eth0", 1, tc_ingress=[ref], tc_egress=[ref])])
    with Pipeline(spec, engine="interp") as p:
        (iface,) = p.interfaces
        d = p.process(iface, frame, 0)
        assert (d.outcome, d.reason, d.data) == ("pass", "tc_pass", frame)
        assert d.result is not None and d.result.skb.vlan_present and d.result.skb.vlan_tci == 5
        assert len(d.result.data) == len(frame) - 4
        s = p.send(iface, frame, 0)
        assert (s.outcome, s.reason, s.target, s.data) == ("tx", "host_tx", "eth0", frame)
        assert p.send(iface, frame[:10], 0).reason == "frame_too_short"


@pytest.mark.parametrize("engine", ENGINES)
def test_egress_vlan_push_reaches_the_wire_bytes(tmp_path: Path, engine: str) -> None:
    """bpf_skb_vlan_push at egress sets the offload tag; the frame on the wire carries it in its bytes
    (validate_xmit_vlan for a device without VLAN offload). IPv6 frames get 802.1ad 200 over 802.1Q 100."""
    from scapy.layers.inet6 import IPv6

    v6 = pad(eth(IPv6(dst="2001:db8::1") / UDP(dport=53)), 80)
    capture(tmp_path / "host.pcap", [UDP53, v6])
    stats, out = replay(tmp_path, """
[[interface]]
name = "eth0"
tc_egress = ["@P@/tc_vlan.o"]
host_pcap = "host.pcap"
""", [], engine)
    assert stats["reasons"] == {"tx": {"host_tx": 2}}
    q100 = bytes.fromhex("81006064")  # 802.1Q, priority 3, VLAN 100
    assert sink(out, "wire-eth0.pcap") == [UDP53[:12] + q100 + UDP53[12:],
                                           v6[:12] + bytes.fromhex("88a800c8") + q100 + v6[12:]]
