"""Live mode in network namespaces: real frames into taps, what xdpsim's pipeline writes back out.

Every test makes its own namespace (removed afterwards) and taps inside it; xdpsim opens the devices
from inside the namespace and loops in a thread (one test runs the `xdpsim live` command instead).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest
from live_fixtures import (
    PROGRAMS,
    in_ns,
    ip,
    live,
    mac_of,
    packet_socket,
    quiet_tap,
    send_and_collect,
    skip_unless_live,
)
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether

from xdpsim.kernel.netns import NetNamespace
from xdpsim.live import Binding, LiveRunner
from xdpsim.pipeline.config import parse_spec

pytestmark = skip_unless_live()

PEER_MAC = "02:00:00:00:00:02"


@pytest.fixture
def ns():
    with NetNamespace() as n:
        # No IPv6 on any device made from here on: its autoconfiguration traffic spoils exact counts.
        for key in ("default", "all"):
            in_ns(n, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
        yield n


def _icmp_socket(ns: NetNamespace) -> socket.socket:
    with ns.entered():
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(5)
    return s


def _ping(s: socket.socket, dst: str, ident: int, seq: int) -> None:
    s.sendto(bytes(ICMP(type=8, id=ident, seq=seq) / b"xdpsim-live-test"), (dst, 0))


def _replies(s: socket.socket, ident: int, n: int) -> list[int]:
    seqs = []
    while len(seqs) < n:
        pkt = IP(s.recv(4096))
        if ICMP in pkt and pkt[ICMP].type == 0 and pkt[ICMP].id == ident:
            seqs.append(pkt[ICMP].seq)
    return seqs


def test_tx_icmp_echo_answers_pings(ns):
    with live(ns, str(PROGRAMS / "icmp_echo.o"), {"eth0": Binding("tap", "w0")}) as run:
        quiet_tap(ns, "w0", "10.9.0.1/24", ("10.9.0.2", PEER_MAC))
        s = _icmp_socket(ns)
        for seq in range(4):
            _ping(s, "10.9.0.2", 0x4242, seq)
        assert sorted(_replies(s, 0x4242, 4)) == [0, 1, 2, 3]
        s.close()
        stats = run.stop()
    assert stats["outcomes"]["tx"] == 4
    assert stats["reasons"]["tx"] == {"xdp_tx": 4}
    assert stats["packets"] == sum(stats["outcomes"].values())
    assert stats["programs"]["icmp_echo"]["tx"] == 4


def test_drop_counts_and_count_stops(ns, tmp_path):
    # firewall: UDP to a port not in allowed_ports is dropped. --count 5 ends the run by itself.
    with live(ns, str(PROGRAMS / "firewall.o"), {"eth0": Binding("tap", "w0")}, count=5,
              out=tmp_path) as run:
        quiet_tap(ns, "w0")
        s = packet_socket(ns, "w0")
        frame = Ether(src=PEER_MAC, dst=mac_of(ns, "w0")) / IP(src="10.1.0.2", dst="10.1.0.1") / UDP(
            sport=1000, dport=9) / (b"x" * 20)
        for _ in range(5):
            s.send(bytes(frame))
        s.close()
        run._thread.join(20)
        stats = run.stats
    assert stats is not None and stats["live"]["stop"] == "--count 5 reached"
    assert stats["packets"] == 5
    assert stats["reasons"]["drop"] == {"xdp_drop": 5}
    saved = json.loads((tmp_path / "stats.json").read_text())
    assert saved["outcomes"]["drop"] == 5
    maps = json.loads((tmp_path / "maps.json").read_text())
    value = bytes.fromhex(maps["counters"]["entries"]["00000000"])
    # {passed, dropped_blocked, dropped_port}: the program's own count of the five frames.
    assert struct.unpack("<3Q", value) == (0, 0, 5)
    assert (tmp_path / "drop.pcap").stat().st_size > 24


def _two_taps(tmp_path, program: str) -> str:
    spec = tmp_path / "live.toml"
    spec.write_text(f"""
[[interface]]
name = "eth0"
tap = "w0"
xdp = [{{ object = "{PROGRAMS / 'redirect.o'}", program = "{program}" }}]
[[interface]]
name = "eth1"
tap = "w1"
""")
    return str(spec)


def _udp_frame(ns: NetNamespace, dev: str, dport: int, payload: bytes) -> bytes:
    return bytes(Ether(src=PEER_MAC, dst=mac_of(ns, dev)) / IP(src="10.1.0.2", dst="10.1.0.1")
                 / UDP(sport=4000, dport=dport) / payload)


def test_redirect_to_second_interface(ns, tmp_path):
    spec = _two_taps(tmp_path, "redirect_ifindex")  # bpf_redirect(2): eth1
    with live(ns, spec, {}) as run:
        quiet_tap(ns, "w0")
        quiet_tap(ns, "w1")
        sent = [_udp_frame(ns, "w0", 7000 + i, b"redirect me %d" % i) for i in range(3)]
        got = send_and_collect(ns, "w0", "w1", sent, b"redirect me")
        stats = run.stop()
    assert got == sent
    assert stats["outcomes"]["redirect"] == 3
    assert stats["redirect_targets"] == {"eth1": 3}


def test_pass_reaches_host_stack(ns):
    with live(ns, str(PROGRAMS / "icmp_echo.o"), {"eth0": Binding("tap", "w0", host_tap="h0")}) as run:
        quiet_tap(ns, "w0")
        quiet_tap(ns, "h0", "10.8.0.1/24", ("10.8.0.2", PEER_MAC))
        with ns.entered():
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("10.8.0.1", 5555))
        udp.settimeout(5)
        tx = packet_socket(ns, "w0")
        frame = Ether(src=PEER_MAC, dst=mac_of(ns, "h0")) / IP(src="10.8.0.2", dst="10.8.0.1") / UDP(
            sport=4000, dport=5555) / b"to the host"
        tx.send(bytes(frame))
        data, addr = udp.recvfrom(100)
        # The host answers through h0: xdpsim forwards that to the wire side (w0).
        udp.sendto(b"answer", addr)
        for s in (udp, tx):
            s.close()
        time.sleep(0.2)
        stats = run.stop()
    assert (data, addr) == (b"to the host", ("10.8.0.2", 4000))
    assert stats["outcomes"]["pass"] == 1
    assert stats["live"]["host_out"]["eth0"] >= 1


def test_interface_removed_while_running(ns, tmp_path):
    spec = _two_taps(tmp_path, "redirect_ifindex")
    with live(ns, spec, {}) as run:
        quiet_tap(ns, "w0")
        quiet_tap(ns, "w1")
        ip(ns, "link", "del", "w1")
        end = time.monotonic() + 10
        while run.runner.ports["eth1"].ended is None and time.monotonic() < end:
            time.sleep(0.01)
        assert run.runner.ports["eth1"].ended == "w1 was removed"
        tx = packet_socket(ns, "w0")
        for i in range(2):  # eth0 keeps running; its redirects to the gone eth1 are counted drops
            tx.send(_udp_frame(ns, "w0", 7000, b"x%d" % i))
        tx.close()
        run.wait_packets(2)
        stats = run.stop()
    assert stats["live"]["ended"] == {"eth1": "w1 was removed"}
    assert any("eth1: source ended (w1 was removed)" in m for m in run.messages)
    assert stats["reasons"]["drop"] == {"target_gone": 2}
    assert stats["packets"] == sum(stats["outcomes"].values()) == 2


def test_interface_down_ends_source(ns):
    with live(ns, str(PROGRAMS / "icmp_echo.o"), {"eth0": Binding("tap", "w0")}) as run:
        quiet_tap(ns, "w0")
        ip(ns, "link", "set", "w0", "down")
        run._thread.join(10)  # the only source ended: the run ends by itself
        stats = run.stats
    assert stats is not None
    assert stats["live"]["ended"] == {"eth0": "w0 went down"}
    assert stats["live"]["stop"] == "every source has ended"


def test_backlog_dropped_by_kernel_is_counted(ns):
    """Frames the tap dropped while xdpsim was not reading show up as drops: packets == frames sent."""
    n = 3000
    runner = LiveRunner(parse_spec(str(PROGRAMS / "icmp_echo.o")), {"eth0": Binding("tap", "w0")},
                        duration=3, messages=lambda m: None)
    with ns.entered():
        runner.open()
    tx = packet_socket(ns, "w0")
    frame = _udp_frame(ns, "w0", 9, b"flood")
    for _ in range(n):  # nobody reads the tap yet: its queue overflows in the kernel
        tx.send(frame)
    tx.close()
    stats = runner.run()
    backlog = stats["reasons"]["drop"]["kernel_backlog"]
    assert backlog > 0
    assert stats["packets"] == n
    assert stats["outcomes"]["pass"] + backlog == n


def test_cli_sigint_stops_cleanly(ns, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(PROGRAMS.parent))
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns.name, sys.executable, "-m", "xdpsim.cli", "live",
         str(PROGRAMS / "icmp_echo.o"), "--tap", "w0", "--out", str(out), "--quiet", "--engine", "interp"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        end = time.monotonic() + 30
        while in_ns(ns, "ip", "link", "show", "w0", check=False).returncode and time.monotonic() < end:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        quiet_tap(ns, "w0", "10.9.0.1/24", ("10.9.0.2", PEER_MAC))
        s = _icmp_socket(ns)
        for seq in range(3):
            _ping(s, "10.9.0.2", 0x77, seq)
        assert sorted(_replies(s, 0x77, 3)) == [0, 1, 2]
        s.close()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "SIGINT: stopping" in stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["outcomes"]["tx"] == 3
    assert stats["packets"] == sum(stats["outcomes"].values())
    assert (out / "maps.json").exists() and (out / "tx.pcap").exists()
    assert "3 packets" in stdout or "packets in" in stdout


def test_netlink_link_parse():
    from xdpsim.io.live import _parse_links

    name = b"w0\0\0"
    attr = struct.pack("=HH", 4 + len(name), 3) + name
    body = struct.pack("=BxHiII", 0, 1, 7, 0x1, 0) + attr
    msg = struct.pack("=IHHII", 16 + len(body), 17, 0, 0, 0) + body
    ((mtype, index, flags, attrs),) = _parse_links(msg)
    assert (mtype, index, flags, attrs[3]) == (17, 7, 1, name)


def test_af_packet_on_existing_interface_mirrors(ns):
    """--iface: xdpsim gets a copy of what arrives on vB and its XDP_TX answer leaves vB toward vA."""
    ip(ns, "link", "add", "vA", "type", "veth", "peer", "name", "vB")
    for dev in ("vA", "vB"):
        ip(ns, "link", "set", dev, "up")
    with live(ns, str(PROGRAMS / "icmp_echo.o"), {"eth0": Binding("device", "vB")}) as run:
        s = packet_socket(ns, "vA")
        req = Ether(src=mac_of(ns, "vA"), dst=mac_of(ns, "vB")) / IP(src="10.5.0.1", dst="10.5.0.2") / ICMP(
            type=8, id=9, seq=1) / b"mirror"
        s.send(bytes(req))
        while True:
            data, addr = s.recvfrom(4096)
            if addr[2] != socket.PACKET_OUTGOING and b"mirror" in data:
                break
        s.close()
        stats = run.stop()
    reply = Ether(data)
    assert reply[ICMP].type == 0 and reply[IP].src == "10.5.0.2" and reply[Ether].dst == mac_of(ns, "vA")
    assert stats["outcomes"]["tx"] == 1
    assert stats["live"]["devices"]["eth0"]["kind"] == "af_packet"


def test_host_tap_removed_keeps_the_wire_running(ns):
    """Without its host tap, an interface still answers on the wire; PASS frames become counted drops."""
    with live(ns, str(PROGRAMS / "icmp_echo.o"), {"eth0": Binding("tap", "w0", host_tap="h0")}) as run:
        quiet_tap(ns, "w0", "10.9.0.1/24", ("10.9.0.2", PEER_MAC))
        ip(ns, "link", "del", "h0")
        end = time.monotonic() + 10
        while run.runner.ports["eth0"].host_gone is None and time.monotonic() < end:
            time.sleep(0.01)
        tx = packet_socket(ns, "w0")
        for i in range(3):
            tx.send(_udp_frame(ns, "w0", 5000, b"to nobody %d" % i))
        tx.close()
        s = _icmp_socket(ns)
        _ping(s, "10.9.0.2", 0x99, 1)
        assert _replies(s, 0x99, 1) == [1]
        s.close()
        run.wait_packets(4)
        stats = run.stop()
    assert stats["live"]["host_gone"] == {"eth0": "h0 was removed"}
    assert stats["live"]["ended"] == {}
    assert stats["reasons"]["drop"] == {"pass_write_failed": 3}
    assert stats["outcomes"]["tx"] == 1
    assert stats["packets"] == sum(stats["outcomes"].values()) == 4
