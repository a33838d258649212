"""TC pipelines on the kernel engine (one BPF_PROG_TEST_RUN per TC program) against the interpreter:
the same per-packet outcomes, sink bytes and maps. Not comparable, and so not compared: frames the
test run refuses (IPv4 under 34 bytes, over 3712: outcome `test_run_refused`), redirect targets and
clones (the kernel does not report them), tc_classid/tc_index/VLAN offload/hash (not in ctx_out)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kernel_fixtures import kernel  # noqa: F401 - the fixture
from test_pipeline_tc import CLASSIFY_POLICE, MIXED, PROGRAMS, XDP_TC, capture, check_invariant, log, sink

from xdpsim.pipeline.replay import replay_to_dir

PCAPS = PROGRAMS.parent / "pcaps"

NAT = """
[[interface]]
name = "eth0"
ifindex = 2
tc_ingress = ["@P@/tc_nat.o"]
tc_egress = ["@P@/tc_nat.o"]
host_pcap = "host.pcap"
"""


def run(tmp_path: Path, toml: str, cap: Path, engine: str) -> tuple[dict, Path]:
    spec = tmp_path / "pipeline.toml"
    spec.write_text(toml.replace("@P@", str(PROGRAMS)))
    out = tmp_path / engine
    stats = replay_to_dir(str(spec), cap, out, engine=engine, log=True)
    check_invariant(stats)
    return stats, out


@pytest.mark.parametrize("toml", [XDP_TC, CLASSIFY_POLICE], ids=["xdp+tc", "tc-only"])
def test_tc_pipeline_agrees_with_kernel(tmp_path: Path, toml: str, kernel: str) -> None:  # noqa: F811
    cap = capture(tmp_path / "in.pcap", MIXED)
    sim, sim_out = run(tmp_path, toml, cap, "interp")
    ker, ker_out = run(tmp_path, toml, cap, "kernel")
    assert [(r["outcome"], r["reason"], r["program"]) for r in log(ker_out)] == \
        [(r["outcome"], r["reason"], r["program"]) for r in log(sim_out)]
    assert ker["stages"] == sim["stages"]
    for name in ("pass.pcap", "drop.pcap"):
        assert sink(ker_out, name) == sink(sim_out, name)
    sim_maps = json.loads((sim_out / "maps.json").read_text())
    ker_maps = json.loads((ker_out / "maps.json").read_text())
    for m in ("class_count", "police_count"):
        assert ker_maps[m]["entries"] == sim_maps[m]["entries"]


def test_nat_pipeline_bytes_agree_with_kernel(tmp_path: Path, kernel: str) -> None:  # noqa: F811
    """tc_nat at ingress (wire) and egress (host feed) over the sample captures: verdicts and rewritten
    bytes (checksums included) agree on every frame the test run accepts."""
    (tmp_path / "host.pcap").write_bytes((PCAPS / "icmp.pcap").read_bytes())
    cap = PCAPS / "mixed.pcap"
    sim, sim_out = run(tmp_path, NAT, cap, "interp")
    ker, ker_out = run(tmp_path, NAT, cap, "kernel")
    s_log, k_log = log(sim_out), log(ker_out)
    assert len(s_log) == len(k_log) == sim["packets"]
    refused = {(r.get("host", False), r["index"]) for r in k_log if r["reason"] == "test_run_refused"}
    assert len(refused) == ker["reasons"].get("error", {}).get("test_run_refused", 0)
    compared = [(s["outcome"], s["reason"]) for s in s_log
                if (s.get("host", False), s["index"]) not in refused]
    assert compared == [(k["outcome"], k["reason"]) for k in k_log if k["reason"] != "test_run_refused"]
    assert len(compared) > 400
    # the frames the kernel refused are the ones its test run cannot take: short IPv4 frames
    assert all(r["length"] < 34 for r in k_log if r["reason"] == "test_run_refused")
    passed_sim = sink(sim_out, "pass.pcap")
    s_pass = [s for s in s_log if s["outcome"] == "pass"]
    kept = [b for b, s in zip(passed_sim, s_pass, strict=True) if (False, s["index"]) not in refused]
    assert sink(ker_out, "pass.pcap") == kept
    assert sink(ker_out, "wire-eth0.pcap") == sink(sim_out, "wire-eth0.pcap")
    assert len(sink(sim_out, "wire-eth0.pcap")) == sim["reasons"]["tx"]["host_tx"] > 0
