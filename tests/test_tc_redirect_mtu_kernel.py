"""TC redirects and MTUs asked of the running kernel (skipped without root/BPF/veths/clang/tc, saying why).

A clsact ingress program on veth `in` (whose peer, `src`, sends the frames with AF_PACKET) redirects every
frame to veth `dst` (ifindex 3) and returns; an AF_PACKET socket counts what arrives where it should.
The TC test run does not transmit, so the programs are really attached. What the kernel (6.x) answers:

- bpf_redirect / bpf_clone_redirect to dst's egress: the redirect code (__bpf_tx_skb -> dev_queue_xmit)
  checks no MTU; veth_xmit hands the skb to dst's peer through __dev_forward_skb, whose
  is_skb_forwardable drops a frame longer than the *peer's* MTU + 14 + 4 (dst's own MTU plays no part).
- BPF_F_INGRESS (either helper): __bpf_rx_skb forwards with check_mtu false: any length arrives.
- bpf_redirect_peer (to a peer in another namespace): no MTU check either.

xdpsim's pipeline (tc_stage.xmit_mtu_exceeded) stands an interface for both ends of such a link: its
`mtu` decides at egress, nothing at ingress (tests/test_tc_redirect_mtu.py).
"""

from __future__ import annotations

import contextlib
import platform
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_fixtures import kernel, netns_ok  # noqa: F401 - the fixtures

from xdpsim.kernel.netns import Interface, NetNamespace

MTU = 1000
LIMIT = MTU + 14 + 4
SRC, DST = 2, 3
IN_PEER, DST_PEER = "xp1003", "xp1004"  # NetNamespace names the peers xp<highest ifindex + 1000 + i>
ETHERTYPE = 0x88B5
BPF_F_INGRESS = 1

PROGRAM = r"""
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
SEC("tc")
int probe(struct __sk_buff *skb)
{
#if MODE == 0
	return bpf_redirect(TARGET, FLAGS);
#elif MODE == 1
	return bpf_redirect_peer(TARGET, 0);
#else
	bpf_clone_redirect(skb, TARGET, FLAGS);
	return TC_ACT_SHOT;
#endif
}
char _license[] SEC("license") = "GPL";
"""
REDIRECT, PEER, CLONE = 0, 1, 2


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def frame(n: int) -> bytes:
    return bytes.fromhex("020000000002" "020000000001") + ETHERTYPE.to_bytes(2, "big") + bytes(n - 14)


class Rig:
    """The namespace `ns` (src/in and dst/its peer) and, for redirect_peer, `ns2` holding dst's peer."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ns = NetNamespace([Interface("src", SRC), Interface("dst", DST)]).create()
        self.ns2: NetNamespace | None = None
        names = {link["ifname"] for link in self.ns.links()}
        if not {IN_PEER, DST_PEER} <= names:
            raise AssertionError(f"the veth peers are not named as expected: {sorted(names)}")
        for dev in ("src", IN_PEER):
            ip("-n", self.ns.name, "link", "set", "dev", dev, "mtu", "9000")
        subprocess.run(["tc", "-n", self.ns.name, "qdisc", "add", "dev", IN_PEER, "clsact"], check=True,
                       capture_output=True)

    def peer_elsewhere(self) -> NetNamespace:
        """dst's peer moved into a second namespace (bpf_redirect_peer wants one)."""
        if self.ns2 is None:
            self.ns2 = NetNamespace().create()
            ip("-n", self.ns.name, "link", "set", "dev", DST_PEER, "netns", self.ns2.name)
            ip("-n", self.ns2.name, "link", "set", "dev", DST_PEER, "up")
        return self.ns2

    def mtu(self, dst: int, peer: int) -> None:
        ip("-n", self.ns.name, "link", "set", "dev", "dst", "mtu", str(dst))
        ns = self.ns2 or self.ns
        ip("-n", ns.name, "link", "set", "dev", DST_PEER, "mtu", str(peer))

    def attach(self, mode: int, flags: int = 0) -> None:
        obj = self.tmp / f"probe{mode}_{flags}.o"
        src = self.tmp / "probe.c"
        src.write_text(PROGRAM)
        subprocess.run(["clang-19", "-O2", "-target", "bpf", f"-I/usr/include/{platform.machine()}-linux-gnu",
                        f"-DMODE={mode}", f"-DTARGET={DST}", f"-DFLAGS={flags}", "-c", str(src), "-o",
                        str(obj)], check=True, capture_output=True)
        subprocess.run(["tc", "-n", self.ns.name, "filter", "replace", "dev", IN_PEER, "ingress", "pref", "1",
                        "handle", "1", "bpf", "da", "obj", str(obj), "sec", "tc"], check=True,
                       capture_output=True)

    def arrivals(self, where: str, lengths: list[int]) -> list[bool]:
        """For each length, whether the frame sent from src arrived at `where` ("peer": dst's peer,
        "dst": dst's own receive path) -- seen by an AF_PACKET socket there, outgoing copies not counted."""
        ns = (self.ns2 or self.ns) if where == "peer" else self.ns
        dev = DST_PEER if where == "peer" else "dst"
        with ns.entered():
            rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETHERTYPE))
        with self.ns.entered():
            tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        with contextlib.closing(rx), contextlib.closing(tx):
            rx.bind((dev, ETHERTYPE))
            rx.setblocking(False)
            tx.bind(("src", 0))
            got = []
            for n in lengths:
                tx.send(frame(n))
                seen = False
                for _ in range(30):
                    time.sleep(0.005)
                    try:
                        data, addr = rx.recvfrom(65536)
                    except BlockingIOError:
                        continue
                    if addr[2] != socket.PACKET_OUTGOING and len(data) == n:
                        seen = True
                        break
                got.append(seen)
            return got

    def close(self) -> None:
        for ns in (self.ns2, self.ns):
            if ns is not None:
                ns.close()


@pytest.fixture
def rig(netns_ok: None, tmp_path: Path) -> Iterator[Rig]:  # noqa: F811 - the fixture
    for tool in ("tc", "clang-19"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: the probe program is compiled and attached with it")
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.close()


SIZES = [LIMIT - 1, LIMIT, LIMIT + 1, 1500]


@pytest.mark.parametrize("mode", [REDIRECT, CLONE])
def test_egress_redirect_is_dropped_over_the_receiving_peers_mtu(rig: Rig, mode: int) -> None:
    rig.attach(mode)
    rig.mtu(dst=1500, peer=MTU)  # the peer's MTU decides ...
    assert rig.arrivals("peer", SIZES) == [True, True, False, False]
    rig.mtu(dst=MTU, peer=1500)  # ... not the redirect target's own
    assert rig.arrivals("peer", SIZES) == [True, True, True, True]


@pytest.mark.parametrize("mode", [REDIRECT, CLONE])
def test_ingress_redirect_checks_no_mtu(rig: Rig, mode: int) -> None:
    rig.attach(mode, BPF_F_INGRESS)
    rig.mtu(dst=MTU, peer=MTU)
    assert rig.arrivals("dst", [LIMIT, LIMIT + 1, 4000]) == [True, True, True]


def test_redirect_peer_checks_no_mtu(rig: Rig) -> None:
    rig.peer_elsewhere()
    rig.attach(PEER)
    rig.mtu(dst=MTU, peer=MTU)
    assert rig.arrivals("peer", [LIMIT, LIMIT + 1, 4000]) == [True, True, True]


def test_the_pipeline_decides_what_the_kernel_does(rig: Rig, tmp_path: Path) -> None:
    """tc_redirect.o to eth1 (MTU 1000 in the pipeline) and the probe to dst (MTU 1000 at both ends):
    the same lengths leave, egress and ingress, copies or not."""
    from test_tc_redirect_mtu import frame as sim_frame
    from test_tc_redirect_mtu import spec

    from xdpsim.pipeline.config import parse_spec
    from xdpsim.pipeline.pipeline import Pipeline

    rig.mtu(dst=MTU, peer=MTU)
    lengths = [LIMIT - 1, LIMIT, LIMIT + 1, 1500, 3000]
    for prog, mode in (("tc_redirect", REDIRECT), ("tc_clone", CLONE)):
        for ingress in (False, True):
            rig.attach(mode, BPF_F_INGRESS if ingress else 0)
            kernel_says = rig.arrivals("dst" if ingress else "peer", lengths)
            with Pipeline(parse_spec(str(spec(tmp_path, prog, ingress))), engine="interp") as p:
                ds = [p.process(p.by_ifindex[3], sim_frame(n), 0) for n in lengths]
            sim = [(d.clones[0] if d.clones else d).reason != "tc_redirect_mtu" for d in ds]
            assert sim == kernel_says, (prog, ingress)
