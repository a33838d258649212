"""Helpers for the live-mode tests: namespaces with taps, real frames in, what came out."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from xdpsim.kernel.netns import NetNamespace, netns_available
from xdpsim.live import Binding, LiveRunner
from xdpsim.pipeline.config import parse_spec

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "live mode tests need root (taps need CAP_NET_ADMIN, AF_PACKET CAP_NET_RAW)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (no TUN/TAP support here)"
    ok, why = netns_available()
    return None if ok else why


def ip(ns: NetNamespace, *args: str) -> None:
    subprocess.run(["ip", "-n", ns.name, *args], check=True, capture_output=True, timeout=20)


def in_ns(ns: NetNamespace, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns.name, *cmd], check=check, capture_output=True,
                          text=True, timeout=30)


def quiet_tap(ns: NetNamespace, name: str, addr: str | None = None,
              neighbour: tuple[str, str] | None = None) -> None:
    """No IPv6 on the tap (autoconfiguration traffic would spoil exact counts), an address, and a
    static neighbour so the stack sends IPv4 without ARP."""
    in_ns(ns, "sysctl", "-qw", f"net.ipv6.conf.{name}.disable_ipv6=1")
    if addr:
        ip(ns, "addr", "add", addr, "dev", name)
    if neighbour:
        ip(ns, "neigh", "replace", neighbour[0], "lladdr", neighbour[1], "dev", name)


def mac_of(ns: NetNamespace, name: str) -> str:
    return in_ns(ns, "cat", f"/sys/class/net/{name}/address").stdout.strip()


class Running:
    """A LiveRunner looping in a thread; `stop()` joins it and gives the final statistics."""

    def __init__(self, runner: LiveRunner):
        self.runner = runner
        self.stats: dict | None = None
        self.error: BaseException | None = None
        self.messages: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.stats = self.runner.run()
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            self.error = e

    def wait_packets(self, n: int, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while self.runner.stats.packets < n and time.monotonic() < end and self._thread.is_alive():
            time.sleep(0.01)

    def stop(self, timeout: float = 20.0) -> dict:
        self.runner.stop("test done")
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "live runner did not stop"
        if self.error is not None:
            raise self.error
        assert self.stats is not None
        return self.stats


@contextmanager
def live(ns: NetNamespace, spec: str, bindings: dict[str, Binding], **kw) -> Iterator[Running]:
    """Open the runner's devices inside `ns`, run it in a thread, stop it on leaving."""
    msgs: list[str] = []
    runner = LiveRunner(parse_spec(spec), bindings, messages=msgs.append, duration=kw.pop("duration", 60),
                        **kw)
    with ns.entered():
        runner.open()
    r = Running(runner)
    r.messages = msgs
    try:
        yield r
    finally:
        if r._thread.is_alive():
            r.stop()


def packet_socket(ns: NetNamespace, dev: str) -> socket.socket:
    """An AF_PACKET socket on `dev` in `ns` (sends frames out of it, receives what arrives)."""
    with ns.entered():
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        s.bind((dev, 0x0003))
    s.settimeout(5)
    return s


def skip_unless_live() -> pytest.MarkDecorator:
    why = skip_reason()
    return pytest.mark.skipif(why is not None, reason=why or "")


def send_and_collect(ns: NetNamespace, tx_dev: str, rx_dev: str, frames: list[bytes],
                     marker: bytes) -> list[bytes]:
    """Send `frames` into `tx_dev` and return as many frames holding `marker` as arrived on `rx_dev` (its own
    outgoing frames and unrelated traffic passed over); the socket timeout fails a frame that never comes."""
    rx = packet_socket(ns, rx_dev)
    tx = packet_socket(ns, tx_dev)
    try:
        for f in frames:
            tx.send(f)
        got = []
        while len(got) < len(frames):
            data, addr = rx.recvfrom(4096)
            if addr[2] != socket.PACKET_OUTGOING and marker in data:
                got.append(data)
        return got
    finally:
        rx.close()
        tx.close()
