"""Live mode without devices: argument binding, the per-packet processors, privilege errors."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import ARP, Ether

from xdpsim.io.live import LiveError
from xdpsim.live import LiveRunner, _gone_reason, bindings_from_args
from xdpsim.live_chain import PipelineChains
from xdpsim.pipeline.config import PipelineError, parse_pipeline, parse_spec
from xdpsim.pipeline.stats import Stats

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"


def _two(tmp_path: Path) -> str:
    p = tmp_path / "p.toml"
    p.write_text(f"""
[[interface]]
name = "eth0"
tap = "w0"
xdp = "{PROGRAMS / 'icmp_echo.o'}"
[[interface]]
name = "eth1"
device = "enp1s0"
""")
    return str(p)


def test_bindings_single_interface_and_file_keys(tmp_path):
    b = bindings_from_args(parse_spec(str(PROGRAMS / "icmp_echo.o")), ["w0"], [], ["h0"])
    assert (b["eth0"].kind, b["eth0"].name, b["eth0"].host_tap) == ("tap", "w0", "h0")
    spec = parse_spec(_two(tmp_path))
    b = bindings_from_args(spec, [], ["eth0=veth9"], [])
    assert (b["eth0"].kind, b["eth0"].name) == ("device", "veth9")  # the command line wins
    assert (b["eth1"].kind, b["eth1"].name) == ("device", "enp1s0")


def test_bindings_errors(tmp_path):
    spec = parse_spec(_two(tmp_path))
    with pytest.raises(LiveError, match="several interfaces; write --tap IFACE=w9"):
        bindings_from_args(spec, ["w9"], [], [])
    with pytest.raises(PipelineError, match="no interface named 'eth7'"):
        bindings_from_args(spec, ["eth7=w9"], [], [])
    one = parse_spec(str(PROGRAMS / "icmp_echo.o"))
    with pytest.raises(LiveError, match="--host-tap for eth0, which has no wire device"):
        bindings_from_args(one, [], [], ["h0"])
    with pytest.raises(LiveError, match="eth0 not bound to a device"):
        LiveRunner(one, {})


def test_gone_reasons():
    assert _gone_reason("w1", OSError(errno.EBADFD, "x")) == "w1 was removed"
    assert _gone_reason("w1", OSError(errno.EIO, "x")) == "w1 went down"
    gone = _gone_reason("w1", OSError(errno.EPERM, "Operation not permitted"))
    assert gone == "w1: Operation not permitted"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run the command without privileges")
@pytest.mark.parametrize("args, needs", [(["--tap", "zz0"], "CAP_NET_ADMIN"),
                                         (["--iface", "lo"], "CAP_NET_RAW")])
def test_without_privileges_says_which(args, needs):
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", sys.executable,
         "-m", "xdpsim.cli", "live", str(PROGRAMS / "icmp_echo.o"), *args, "--count", "1"],
        capture_output=True, text=True, timeout=60, cwd=PROGRAMS.parent)
    assert proc.returncode == 2
    assert f"this needs root or {needs}" in proc.stderr


def _mixed_frames() -> list[bytes]:
    eth = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")
    out = []
    for i in range(40):
        out.append(bytes(eth / IP(src=f"10.0.{i}.2", dst="10.0.0.1") / ICMP(type=8, id=i)))
        out.append(bytes(eth / IP(src="10.0.0.2", dst="10.0.0.1") / UDP(dport=53 + i) / b"q"))
    out += [bytes(eth)[:10], bytes(eth / ARP()), bytes(eth / IP() / ICMP(type=8))[:36], b"\xff" * 60]
    return out


@pytest.mark.parametrize("obj, program", [("icmp_echo.o", None), ("firewall.o", None),
                                          ("redirect.o", "redirect_ifindex"), ("parser.o", "packet_parser"),
                                          ("rewrite.o", "trim_tail")])
def test_batched_frames_decide_as_single_ones(tmp_path, obj, program):
    """The live runner's native batch (one run_batch call per drain) gives each frame the verdict,
    bytes and map effects that one-by-one processing gives."""
    ref = f'{{ object = "{PROGRAMS / obj}"' + (f', program = "{program}" }}' if program else " }")
    text = f'[[interface]]\nname = "eth0"\nxdp = [{ref}]\n[[interface]]\nname = "eth1"\n'
    spec = parse_pipeline(text, tmp_path)
    one, many = PipelineChains(spec, "jit"), PipelineChains(spec, "jit")
    s1, s2 = Stats(), Stats()
    frames = _mixed_frames()
    singles = [one.process("eth0", f, 5, s1) for f in frames]
    calls = []
    native = many._batch
    many._batch = lambda *a: calls.append(1) or native(*a)  # type: ignore[method-assign]
    batched = many.process_batch("eth0", frames, 5, s2)
    assert calls == [1], "the native batch path did not run"
    for f, a, b in zip(frames, singles, batched, strict=True):
        assert (a.outcome, a.reason, a.data, a.target) == (b.outcome, b.reason, b.data, b.target), f.hex()
    assert s1.outcomes == s2.outcomes and s1.packets == s2.packets == len(frames)
    assert one.maps_json() == many.maps_json()
