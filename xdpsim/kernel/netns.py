"""Throwaway network namespaces with devices of chosen ifindex and rx queue count.

Why: BPF_PROG_TEST_RUN for XDP resolves `xdp_md.ingress_ifindex` with
`dev_get_by_index(current->nsproxy->net_ns, ...)` and refuses an `rx_queue_index` at or above the
device's `real_num_rx_queues` (net/bpf/test_run.c, xdp_convert_md_to_buff); `__sk_buff.ifindex` is
resolved the same way for TC. So the devices must exist in the *calling thread's* network namespace at
test-run time. Maps and programs are not tied to a namespace, so the engine only steps into the
namespace (`setns`) around each test run and back out.

iproute2's `ip` does the plumbing (`ip netns add`, `ip -n NS link add ... index N numrxqueues Q`): it is
simpler and sturdier than rtnetlink through ctypes. Everything is removed on `close()`, on leaving the
`with` block (also on error), and at interpreter exit for anything still open.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno as _errno
import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..errors import KernelError, KernelUnavailable

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"
PREFIX = "xdpsim"
IFNAMSIZ = 16


@dataclass(frozen=True)
class Interface:
    """A device to create: `kind` "veth" (a pair; the peer gets an ifindex above every requested one)
    or "dummy". ifindex 1 is the namespace's own loopback (one queue)."""

    name: str
    ifindex: int
    queues: int = 1
    kind: str = "veth"


_counter = itertools.count()
_live: dict[str, NetNamespace] = {}
_live_lock = threading.Lock()
_tls = threading.local()
_swept = False


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.setns.restype = ctypes.c_int
    return libc


def _setns(fd: int) -> None:
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise KernelError(f"setns(CLONE_NEWNET): {os.strerror(err)}", err)


def _ip_binary() -> str:
    ip = shutil.which("ip") or next((p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip") if
                                     os.access(p, os.X_OK)), None)
    if ip is None:
        raise KernelUnavailable("network namespaces need iproute2's `ip` command, which is not installed")
    return ip


def _run(args: Sequence[str]) -> str:
    proc = subprocess.run([_ip_binary(), *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip()
        err = _errno.EPERM if "Operation not permitted" in msg else _errno.EINVAL
        if "File exists" in msg:
            err = _errno.EEXIST
        raise KernelError(f"ip {' '.join(args)}: {msg}", err)
    return proc.stdout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale() -> list[str]:
    """Delete `xdpsim-<pid>-<n>` namespaces left by processes that no longer exist (a killed test run)."""
    removed = []
    try:
        names = os.listdir(NETNS_DIR)
    except OSError:
        return removed
    for name in names:
        parts = name.split("-")
        if len(parts) == 3 and parts[0] == PREFIX and parts[1].isdigit():
            if int(parts[1]) != os.getpid() and not _pid_alive(int(parts[1])):
                with contextlib.suppress(KernelError):
                    _run(["netns", "del", name])
                    removed.append(name)
    return removed


class NetNamespace:
    """A network namespace of its own, with devices of given ifindex and queue count.

    >>> with NetNamespace([Interface("eth0", 7, queues=4)]) as ns:
    ...     with ns.entered():
    ...         ...  # bpf(BPF_PROG_TEST_RUN) sees ifindex 7 with 4 rx queues
    """

    def __init__(self, interfaces: Sequence[Interface | tuple] = (), *, name: str | None = None):
        self.name = name or f"{PREFIX}-{os.getpid()}-{next(_counter)}"
        self.interfaces: dict[int, Interface] = {}
        self._requested = [i if isinstance(i, Interface) else Interface(*i) for i in interfaces]
        self._fd = -1
        self._peer_next = 0

    # --- lifetime ----------------------------------------------------------------------------------

    def create(self) -> NetNamespace:
        if self._fd >= 0:
            return self
        if sys.platform != "linux":
            raise KernelUnavailable(f"network namespaces need Linux (this is {sys.platform})")
        global _swept
        if not _swept:  # once per process: what a killed earlier run left behind
            _swept = True
            cleanup_stale()
        _run(["netns", "add", self.name])
        with _live_lock:
            _live[self.name] = self
        try:
            self._fd = os.open(os.path.join(NETNS_DIR, self.name), os.O_RDONLY | os.O_CLOEXEC)
            _run(["-n", self.name, "link", "set", "dev", "lo", "up"])
            self.interfaces[1] = Interface("lo", 1, 1, "loopback")
            # Peers are numbered above every requested ifindex, so none takes an index asked for later.
            self._peer_next = max([i.ifindex for i in self._requested] + [1]) + 1000
            for iface in self._requested:
                self.add_interface(iface)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Remove the namespace; its devices (veth pairs inside it included) go with it. Idempotent."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        with _live_lock:
            registered = _live.pop(self.name, None) is not None
        if registered:
            with contextlib.suppress(KernelError, OSError, subprocess.SubprocessError):
                _run(["netns", "del", self.name])
        self.interfaces = {}

    def __enter__(self) -> NetNamespace:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def fd(self) -> int:
        if self._fd < 0:
            raise KernelError(f"network namespace {self.name} is not open")
        return self._fd

    @property
    def alive(self) -> bool:
        return self._fd >= 0

    # --- devices -----------------------------------------------------------------------------------

    def add_interface(self, iface: Interface | tuple) -> Interface:
        """Create one more device in the namespace (up, with `queues` tx and rx queues)."""
        if not isinstance(iface, Interface):
            iface = Interface(*iface)
        if iface.ifindex in self.interfaces:
            have = self.interfaces[iface.ifindex]
            if have.name == iface.name and have.queues >= iface.queues:
                return have
            raise KernelError(f"{self.name}: ifindex {iface.ifindex} is already {have.name} "
                              f"({have.queues} queues)", _errno.EEXIST)
        if iface.ifindex < 1:
            raise KernelError(f"ifindex {iface.ifindex} of {iface.name}: must be 1 or more", _errno.EINVAL)
        if iface.ifindex == 1:
            # Every namespace has its loopback at ifindex 1, with a single queue.
            if iface.queues > 1:
                raise KernelError(f"{iface.name}: ifindex 1 is the loopback, which has one rx queue "
                                  f"(asked for {iface.queues})", _errno.EINVAL)
            return self.interfaces[1]
        if len(iface.name.encode()) >= IFNAMSIZ or not iface.name or "/" in iface.name:
            raise KernelError(f"bad interface name {iface.name!r} (at most {IFNAMSIZ - 1} bytes)",
                              _errno.EINVAL)
        q = str(max(1, iface.queues))
        base = ["-n", self.name, "link", "add", "name", iface.name, "index", str(iface.ifindex),
                "numtxqueues", q, "numrxqueues", q]
        if iface.kind == "veth":
            self._peer_next = max(self._peer_next, iface.ifindex + 1000)
            peer_idx = self._peer_next
            self._peer_next += 1
            peer = f"xp{peer_idx}"[: IFNAMSIZ - 1]
            _run([*base, "type", "veth", "peer", "name", peer, "index", str(peer_idx),
                  "numtxqueues", q, "numrxqueues", q])
            _run(["-n", self.name, "link", "set", "dev", peer, "up"])
        elif iface.kind == "dummy":
            _run([*base, "type", "dummy"])
        else:
            raise KernelError(f"unknown interface kind {iface.kind!r} (veth or dummy)", _errno.EINVAL)
        _run(["-n", self.name, "link", "set", "dev", iface.name, "up"])
        self.interfaces[iface.ifindex] = iface
        return iface

    def links(self) -> list[dict]:
        """`ip -d -j link show` inside the namespace: what the kernel reports (ifindex, queues, ...)."""
        return json.loads(_run(["-n", self.name, "-d", "-j", "link", "show"]) or "[]")

    # --- running inside ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def entered(self) -> Iterator[NetNamespace]:
        """Move the calling thread into the namespace for the block, then back (re-entrant per thread)."""
        depth = getattr(_tls, "depth", {})
        _tls.depth = depth
        if depth.get(self.name, 0):
            depth[self.name] += 1
            try:
                yield self
            finally:
                depth[self.name] -= 1
            return
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(self.fd)
            depth[self.name] = 1
            try:
                yield self
            finally:
                depth[self.name] = 0
                _setns(home)
        finally:
            os.close(home)

    def __repr__(self) -> str:
        devs = ", ".join(f"{i.name}#{i.ifindex}x{i.queues}" for i in self.interfaces.values())
        return f"NetNamespace({self.name}{': ' + devs if devs else ''})"


def _close_all() -> None:
    with _live_lock:
        live = list(_live.values())
    for ns in live:
        ns.close()


atexit.register(_close_all)

_probe: tuple[bool, str] | None = None


def netns_available() -> tuple[bool, str]:
    """(True, "") when namespaces with devices can be made here; else the reason. Cached."""
    global _probe
    if _probe is None:
        try:
            _ip_binary()
            with NetNamespace([Interface("probe0", 5, 2)]) as ns:
                with ns.entered():
                    pass
            _probe = (True, "")
        except (KernelError, KernelUnavailable, OSError) as e:
            _probe = (False, f"cannot create a network namespace with devices: {e}")
    return _probe
