"""Network namespaces with chosen ifindexes and queue counts, and what TEST_RUN makes of ingress_ifindex.

Measured on Linux 6.18: BPF_PROG_TEST_RUN resolves xdp_md.ingress_ifindex in the *calling thread's*
network namespace (ENODEV when no such device there), refuses an rx_queue_index at or above the device's
rx queue count (EINVAL), and without an ingress_ifindex runs on the namespace's loopback: the program
reads ingress_ifindex 1 and rx_queue_index 0.
"""

from __future__ import annotations

import errno
import os
import struct
import subprocess

import kernel_fixtures
import pytest
from kernel_fixtures import W, addr, exit_, ldx, mul, raw

from xdpsim.errors import KernelError
from xdpsim.kernel import bpf
from xdpsim.kernel.netns import NETNS_DIR, Interface, NetNamespace, cleanup_stale

# The fixtures (conftest.py may import them too; these are the same objects).
kernel = kernel_fixtures.kernel
netns_ok = kernel_fixtures.netns_ok



def namespaces() -> set[str]:
    try:
        return set(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return set()


def current_netns() -> str:
    return os.readlink("/proc/thread-self/ns/net")


def test_devices_have_the_asked_ifindex_and_queues(netns_ok):
    with NetNamespace([Interface("eth0", 7, 4), ("wan", 12, 2)]) as ns:
        assert ns.name in namespaces()
        links = {link["ifname"]: link for link in ns.links()}
        assert links["eth0"]["ifindex"] == 7 and links["eth0"]["num_rx_queues"] == 4
        assert links["wan"]["ifindex"] == 12 and links["wan"]["num_rx_queues"] == 2
        assert links["lo"]["ifindex"] == 1
        assert all("UP" in link["flags"] for link in links.values())
        # veth peers are numbered out of the way of the requested ifindexes
        peers = [link["ifindex"] for name, link in links.items() if name.startswith("xp")]
        assert len(peers) == 2 and min(peers) > 12
        ns.add_interface(Interface("late", 3, 1))
        assert {link["ifname"] for link in ns.links()} >= {"late"}
    assert ns.name not in namespaces()


def test_removed_when_the_block_raises(netns_ok):
    before = namespaces()
    with pytest.raises(RuntimeError):
        with NetNamespace([Interface("eth0", 7, 2)]) as ns:
            name = ns.name
            raise RuntimeError("test failure inside")
    assert name not in namespaces()
    assert namespaces() <= before | set()


def test_removed_when_creation_fails(netns_ok):
    before = namespaces()
    with pytest.raises(KernelError) as ei:
        NetNamespace([Interface("a", 7, 1), Interface("b", 7, 1)]).create()
    assert ei.value.errno == errno.EEXIST
    with pytest.raises(KernelError):
        NetNamespace([Interface("lo1", 1, 2)]).create()  # the loopback has one queue
    with pytest.raises(KernelError):
        NetNamespace([Interface("x" * 16, 9, 1)]).create()  # IFNAMSIZ
    assert namespaces() == before


def test_entered_moves_the_thread_and_back(netns_ok):
    home = current_netns()
    with NetNamespace() as ns:
        with ns.entered():
            inside = current_netns()
            assert inside != home
            with ns.entered():  # re-entrant
                assert current_netns() == inside
            assert current_netns() == inside
        assert current_netns() == home
        with pytest.raises(ZeroDivisionError):
            with ns.entered():
                1 / 0  # noqa: B018
        assert current_netns() == home


def test_cleanup_stale_removes_dead_owners(netns_ok):
    proc = subprocess.Popen(["true"])
    proc.wait()
    name = f"xdpsim-{proc.pid}-0"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name in cleanup_stale()
        assert name not in namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


# r0 = ingress_ifindex * 100 + rx_queue_index
IFX = [
    ldx(W, 0, 1, 12),
    ldx(W, 2, 1, 16),
    mul(0, 100),
    addr(0, 2),
    exit_(),
]


def xdp_md(ifindex: int, rxq: int, size: int = 14) -> bytes:
    return struct.pack("<6I", 0, size, 0, ifindex, rxq, 0)


def test_test_run_resolves_ingress_ifindex_in_the_callers_namespace(netns_ok):
    with bpf.prog_load(6, raw(IFX), name="ifx").fd as fd, NetNamespace([Interface("eth0", 7, 4)]) as ns:
        run = lambda ifx, q: bpf.prog_test_run(fd.fd, bytes(14), ctx_in=xdp_md(ifx, q), ctx_out_size=24)  # noqa: E731
        # no ctx at all, or ingress_ifindex 0: the loopback of the current namespace, queue 0
        assert bpf.prog_test_run(fd.fd, bytes(14)).retval == 100
        assert run(0, 0).retval == 100
        with pytest.raises(KernelError) as ei:
            run(0, 1)  # a queue without a device
        assert ei.value.errno == errno.EINVAL
        # ifindex 7 exists only inside the namespace
        with pytest.raises(KernelError) as ei:
            run(7, 0)
        assert ei.value.errno == errno.ENODEV
        with ns.entered():
            assert run(7, 0).retval == 700
            assert run(7, 3).retval == 703
            out = run(7, 3)
            assert struct.unpack("<6I", out.ctx_out)[3:5] == (7, 3)
            with pytest.raises(KernelError) as ei:
                run(7, 4)  # rx_queue_index >= real_num_rx_queues
            assert ei.value.errno == errno.EINVAL
            with pytest.raises(KernelError) as ei:
                run(8, 0)
            assert ei.value.errno == errno.ENODEV
            assert run(1, 0).retval == 100  # the namespace's own loopback
