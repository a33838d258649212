"""Live packet endpoints: TAP devices, AF_PACKET sockets, and rtnetlink (link events, kernel counters).

Everything here moves raw Ethernet frames (bytes) and knows nothing of programs.

- `TapDevice(name)`: `/dev/net/tun` with `IFF_TAP | IFF_NO_PI`. TUNSETIFF creates the tap, or attaches to
  an existing (persistent) one of that name. Frames the kernel transmits into the tap are what we read
  (the "wire" side); what we write, the kernel receives as if it arrived on the tap. A tap we created
  disappears when we close it; one we attached to stays.
- `PacketSocket(name)`: an AF_PACKET raw socket bound to an existing interface. The kernel hands it a
  *copy* of each frame and still delivers the original, so on such an interface xdpsim observes and
  mirrors rather than filters. `PACKET_IGNORE_OUTGOING` hides our own transmissions (and the host's).
- `LinkWatcher`: an rtnetlink socket subscribed to RTNLGRP_LINK; a tap that goes down only goes quiet
  on reads (writes fail with EIO) and a deleted one fails with EBADFD, so link events are how a source
  learns it has ended.
- `RtnlQuery().stats(ifindex)` / `link_stats(ifindex)`: the kernel's counters of a device (RTM_GETLINK,
  IFLA_STATS64), in the network namespace the socket was opened in: a tap whose
  reader falls behind drops in the kernel and only its `tx_dropped` says so.

Sockets and devices belong to the network namespace of the thread that opens them, so a caller may
open them inside `NetNamespace.entered()` and use them from anywhere.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from dataclasses import dataclass

from ..errors import XdpsimError

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFF_RUNNING = 0x40
IFNAMSIZ = 16

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23

NETLINK_ROUTE = 0
RTMGRP_LINK = 1
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 1
IFLA_IFNAME = 3
IFLA_STATS64 = 23
_NLMSG = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")
_RTA = struct.Struct("=HH")

MAX_FRAME = 65536  # a read buffer no Ethernet frame (GSO off) exceeds

# Errors that mean the device is gone or unusable (not "try again").
GONE_ERRNOS = {errno.EBADFD, errno.EIO, errno.ENXIO, errno.ENODEV, errno.ENETDOWN, errno.EBADF}


class LiveError(XdpsimError):
    """A live device that cannot be opened or used; says which device and why."""


def _check_name(name: str) -> bytes:
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ or b"/" in raw or b" " in raw:
        raise LiveError(f"bad interface name {name!r} (1 to {IFNAMSIZ - 1} bytes, no '/' or spaces)")
    return raw


def _privilege_error(what: str, cap: str, e: OSError) -> LiveError:
    return LiveError(f"{what}: {e.strerror}; this needs root or {cap}")


def ifindex_of(name: str) -> int | None:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def set_up(name: str) -> None:
    """Bring a device up (SIOCSIFFLAGS), as `ip link set NAME up`."""
    raw = _check_name(name)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            req = fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH22x", raw, 0))
            flags = struct.unpack_from("16sH", req)[1]
            fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", raw, flags | IFF_UP))
        except PermissionError as e:
            raise _privilege_error(f"bringing {name} up", "CAP_NET_ADMIN", e) from e
        except OSError as e:
            raise LiveError(f"bringing {name} up: {e.strerror}") from e


class Endpoint:
    """What the runner needs of a live device: a pollable fd, frames in, frames out."""

    name: str
    kind: str
    ifindex: int

    def fileno(self) -> int:
        raise NotImplementedError

    def recv(self) -> bytes | None:
        """One frame, or None when nothing is waiting. Raises OSError when the device is gone."""
        raise NotImplementedError

    def send(self, frame: bytes) -> None:
        """Write one frame. Raises OSError (EIO when down, EBADFD when deleted, ENOBUFS when full)."""
        raise NotImplementedError

    def socket_drops(self) -> int:
        """Frames the kernel dropped for this endpoint's own queue since the last call (0 if unknown)."""
        return 0

    def close(self) -> None:
        raise NotImplementedError


class TapDevice(Endpoint):
    """A TAP device, created or attached to by name; non-blocking."""

    kind = "tap"

    def __init__(self, name: str, *, up: bool = True):
        raw = _check_name(name)
        self.name = name
        self.created = ifindex_of(name) is None
        try:
            self._fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError as e:
            raise LiveError("/dev/net/tun does not exist: this system has no TUN/TAP support "
                            "(modprobe tun, or give the container the device)") from e
        except PermissionError as e:
            raise _privilege_error("opening /dev/net/tun", "CAP_NET_ADMIN", e) from e
        try:
            fcntl.ioctl(self._fd, TUNSETIFF, struct.pack("16sH22x", raw, IFF_TAP | IFF_NO_PI))
        except OSError as e:
            os.close(self._fd)
            self._fd = -1
            if e.errno == errno.EPERM:
                raise _privilege_error(f"creating tap {name}", "CAP_NET_ADMIN", e) from e
            if e.errno in (errno.EINVAL, errno.EBUSY):
                raise LiveError(f"cannot attach to {name}: it exists and is not a free TAP device "
                                f"({e.strerror}); use --iface for other interfaces") from e
            raise LiveError(f"TUNSETIFF {name}: {e.strerror}") from e
        self.ifindex = ifindex_of(name) or 0
        if up and self.created:
            set_up(name)

    def fileno(self) -> int:
        return self._fd

    def recv(self) -> bytes | None:
        try:
            return os.read(self._fd, MAX_FRAME)
        except BlockingIOError:
            return None

    def send(self, frame: bytes) -> None:
        os.write(self._fd, frame)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __repr__(self) -> str:
        return f"TapDevice({self.name}#{self.ifindex}{', created' if self.created else ''})"


class PacketSocket(Endpoint):
    """An AF_PACKET raw socket on an existing interface (observe and mirror: the kernel keeps the
    original of every frame it hands us)."""

    kind = "af_packet"

    def __init__(self, name: str):
        _check_name(name)
        self.name = name
        idx = ifindex_of(name)
        if idx is None:
            raise LiveError(f"no interface named {name} (in this network namespace)")
        self.ifindex = idx
        try:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError as e:
            raise _privilege_error(f"AF_PACKET socket on {name}", "CAP_NET_RAW", e) from e
        try:
            self._sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            self._sock.bind((name, ETH_P_ALL))
        except OSError as e:
            self._sock.close()
            raise LiveError(f"AF_PACKET socket on {name}: {e.strerror}") from e
        self._sock.setblocking(False)
        self.socket_drops()  # the counters reset on read: start from zero

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv(self) -> bytes | None:
        try:
            return self._sock.recv(MAX_FRAME)
        except BlockingIOError:
            return None

    def send(self, frame: bytes) -> None:
        self._sock.send(frame)

    def socket_drops(self) -> int:
        try:
            raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        except OSError:
            return 0
        return struct.unpack("II", raw)[1]

    def close(self) -> None:
        self._sock.close()

    def __repr__(self) -> str:
        return f"PacketSocket({self.name}#{self.ifindex})"


# --- rtnetlink ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkEvent:
    """RTM_NEWLINK / RTM_DELLINK: `deleted`, else the device's flags (IFF_UP, IFF_RUNNING)."""

    ifindex: int
    name: str
    flags: int
    deleted: bool

    @property
    def up(self) -> bool:
        return not self.deleted and bool(self.flags & IFF_UP)


def _attrs(buf: bytes, off: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while off + 4 <= end:
        length, kind = _RTA.unpack_from(buf, off)
        if length < 4:
            break
        out[kind & 0x3FFF] = buf[off + 4 : off + length]
        off += (length + 3) & ~3
    return out


def _parse_links(buf: bytes) -> list[tuple[int, int, int, dict[int, bytes]]]:
    """(message type, ifindex, flags, attributes) of every link message in a netlink datagram."""
    out = []
    off = 0
    while off + _NLMSG.size <= len(buf):
        length, mtype, _flags, _seq, _pid = _NLMSG.unpack_from(buf, off)
        if length < _NLMSG.size:
            break
        if mtype == NLMSG_ERROR:
            code = struct.unpack_from("=i", buf, off + _NLMSG.size)[0]
            if code:
                raise OSError(-code, os.strerror(-code))
        elif mtype in (RTM_NEWLINK, RTM_DELLINK):
            _fam, _type, index, flags, _change = _IFINFO.unpack_from(buf, off + _NLMSG.size)
            attrs = _attrs(buf, off + _NLMSG.size + _IFINFO.size, off + length)
            out.append((mtype, index, flags, attrs))
        off += (length + 3) & ~3
    return out


class LinkWatcher:
    """Link events of the network namespace it was opened in (non-blocking, pollable)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self._sock.bind((0, RTMGRP_LINK))
        self._sock.setblocking(False)

    def fileno(self) -> int:
        return self._sock.fileno()

    def events(self) -> list[LinkEvent]:
        out: list[LinkEvent] = []
        while True:
            try:
                buf = self._sock.recv(65536)
            except BlockingIOError:
                return out
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # we fell behind on events: the caller re-checks links
                    out.append(LinkEvent(0, "", 0, False))
                    continue
                raise
            for mtype, index, flags, attrs in _parse_links(buf):
                name = attrs.get(IFLA_IFNAME, b"").split(b"\0")[0].decode(errors="replace")
                out.append(LinkEvent(index, name, flags, mtype == RTM_DELLINK))

    def close(self) -> None:
        self._sock.close()


@dataclass(frozen=True)
class LinkStats:
    """struct rtnl_link_stats64's first counters, and the device's flags."""

    rx_packets: int
    tx_packets: int
    rx_dropped: int
    tx_dropped: int
    flags: int


class RtnlQuery:
    """Requests to rtnetlink in the network namespace it was opened in (RTM_GETLINK for counters)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self._seq = 0

    def stats(self, ifindex: int) -> LinkStats | None:
        """The kernel's counters of device `ifindex`; None when it is gone."""
        self._seq += 1
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, ifindex, 0, 0)
        self._sock.send(_NLMSG.pack(_NLMSG.size + len(body), RTM_GETLINK, NLM_F_REQUEST, self._seq, 0) + body)
        try:
            links = _parse_links(self._sock.recv(65536))
        except OSError as e:
            if e.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        for _mtype, index, flags, attrs in links:
            if index == ifindex and IFLA_STATS64 in attrs:
                c = struct.unpack_from("=8Q", attrs[IFLA_STATS64])
                return LinkStats(rx_packets=c[0], tx_packets=c[1], rx_dropped=c[6], tx_dropped=c[7],
                                 flags=flags)
        return None

    def close(self) -> None:
        self._sock.close()


def link_stats(ifindex: int) -> LinkStats | None:
    """The counters of device `ifindex` in the calling thread's network namespace (None if gone)."""
    q = RtnlQuery()
    try:
        return q.stats(ifindex)
    finally:
        q.close()
