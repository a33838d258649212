"""Windows of a capture file mapped into memory, made safe against truncation by a read lease.

Reading a pcap through a mapping saves the reader the copy a pread makes (and the fresh pages its read
buffers need): the batches are views of the file's page-cache pages. But a file truncated under a mapping
makes any access to the lost pages a SIGBUS, which would kill the replay. So a file is only mapped while
this process holds a read lease on it (fcntl F_SETLEASE F_RDLCK, refused while anyone has the file open
for writing): whoever then opens it for writing or truncates it is made to wait (up to
/proc/sys/fs/lease-break-time seconds) until the lease is given up. A watcher thread polls the lease
(F_GETLEASE turns F_UNLCK when a break is pending) every POLL seconds while windows exist; on a break it
`detach`es every window still alive -- an anonymous copy of its bytes is moved over it with mremap, so
whoever reads the window meanwhile sees the same bytes before and after -- and only then gives the lease
up. From then on `window()` returns None and the reader goes on with preads, which see the truncation and
end in the usual CaptureError at the offset where the data stops.

The lease notification is a signal; it is set (F_SETSIG) to SIGURG, which is ignored by default (SIGIO
would kill the process). Mapping is not used (`MappedFile.open` returns None) where the lease cannot be
taken (file open for writing somewhere, not the file's owner, file systems without leases), on file
systems other than the local ones in _LOCAL_FS (on network and FUSE file systems a truncation made
elsewhere breaks no local lease), where the break time is below MIN_BREAK_TIME, where something handles
SIGURG, or with XDPSIM_MMAP=0. The reader unmaps the windows no batch uses any more itself. A window's
pages are populated with MADV_POPULATE_READ when it is made, so that a read error is a failed call (the
reader then falls back to preads, which report it) rather than a SIGBUS. What remains: the kernel breaks
the lease by force after the break time, so a process stopped (SIGSTOP, a debugger) for longer than that
while someone waits to truncate its capture can still meet a SIGBUS once it continues; and pages the
kernel evicted under memory pressure are read again on access, where a disk error is a SIGBUS.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import mmap
import os
import signal
import sys
import threading
import weakref

import numpy as np

POLL = 0.05  # seconds between lease checks while windows exist
MIN_BREAK_TIME = 2  # seconds: a shorter lease-break-time leaves too little time to detach
_MADV_POPULATE_READ = 22
_PAGE = mmap.ALLOCATIONGRANULARITY
_MREMAP_MAYMOVE, _MREMAP_FIXED = 1, 2
_MAP_FAILED = ctypes.c_void_p(-1).value


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                          ctypes.c_long]
    libc.mremap.restype = ctypes.c_void_p
    libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]
    return libc


_LIBC = _libc() if sys.platform.startswith("linux") else None


def _break_time() -> int:
    try:
        with open("/proc/sys/fs/lease-break-time") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


# statfs f_type of the local file systems mapped (where a lease sees every truncation: on network and
# FUSE file systems a change made elsewhere would not break it; nor on overlayfs, whose layers' files
# may be changed directly)
_LOCAL_FS = {0xEF53: "ext2/3/4", 0x58465342: "xfs", 0x9123683E: "btrfs", 0x01021994: "tmpfs",
             0xF2F52010: "f2fs", 0x2FC12FC1: "zfs", 0x858458F6: "ramfs"}


def _local_fs(fd: int) -> bool:
    if _LIBC is None:
        return False
    buf = ctypes.create_string_buffer(256)  # (struct statfs: f_type, a long, first)
    if _LIBC.fstatfs(fd, buf) != 0:
        return False
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF in _LOCAL_FS


def enabled() -> bool:
    """Whether captures may be mapped at all here (each file must still grant its lease)."""
    if _LIBC is None or os.environ.get("XDPSIM_MMAP", "1") == "0":
        return False
    if signal.getsignal(signal.SIGURG) not in (signal.SIG_DFL, signal.SIG_IGN, None):
        return False  # (the lease's notifications would reach that handler)
    return _break_time() >= MIN_BREAK_TIME


class MappedFile:
    """A read-leased open file whose windows (`window(pos, n)`) are views of mappings; see the module
    docstring. `finish()` once no new window will be asked for: the lease goes when the last window
    does (or at a break, after detaching)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd  # (our own descriptor of the leased open file)
        self.broken = False  # the lease was broken (or given up): no more windows
        self._finished = False
        # (re-entrant: a window's weak-reference callback may run in a collection under the lock)
        self._lock = threading.RLock()
        # live windows: id -> (weak reference to the mmap, its address, its length)
        self._windows: dict[int, tuple[weakref.ref, int, int]] = {}
        self._held: list[mmap.mmap] = []  # the windows made, until no array uses them (_unmap_unused)
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="xdpsim-lease", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, fd: int) -> MappedFile | None:
        """The file open at `fd` (read-only) with a read lease taken, or None where it cannot be had (then
        read it with preads). Take it before reading the file's size: a truncation after that waits."""
        if not enabled() or not _local_fs(fd):
            return None
        own = os.dup(fd)
        try:
            fcntl.fcntl(own, fcntl.F_SETSIG, signal.SIGURG)
            fcntl.fcntl(own, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        except OSError:  # (open for writing somewhere, not ours, no leases on this file system, ...)
            os.close(own)
            return None
        return cls(own)

    def window(self, pos: int, n: int) -> np.ndarray | None:
        """File bytes [pos, pos + n) as an array that maps them, or None (lease broken, or the mapping
        failed): read them instead. The caller must not ask beyond the file's size as it was after
        `open`. The mapping is private and writable, like a read buffer: a write (which batches' users
        must not make: their data is read-only) changes this process's copy, never the file, and is no
        SIGSEGV."""
        start = pos - pos % _PAGE
        length = pos + n - start
        self._unmap_unused()
        with self._lock:
            if self.broken or self._finished or n <= 0:
                return None
            try:
                mm = mmap.mmap(self.fd, length, access=mmap.ACCESS_COPY, offset=start)
            except (OSError, ValueError):
                self.broken = True  # (preads from here on)
                return None
            arr = np.frombuffer(mm, np.uint8)
            # (a read error: this error, not a SIGBUS later; through ctypes, which releases the GIL for the
            # ~1 ms it takes per batch -- mmap.madvise holds it, and the programs' thread waited on it)
            assert _LIBC is not None  # (enabled() said so)
            if _LIBC.madvise(arr.ctypes.data, length, _MADV_POPULATE_READ) != 0:
                del arr
                mm.close()
                self.broken = True
                return None
            key = id(mm)
            self._windows[key] = (weakref.ref(mm, lambda _r, k=key: self._gone(k)), arr.ctypes.data, length)
            self._held.append(mm)
        return arr[pos - start :]

    def _unmap_unused(self) -> None:
        """Unmaps the windows no array uses any more, here (the reader's thread) rather than in whichever
        thread drops the last batch of one (unmapping a window's pages costs ~0.1 us each)."""
        held = self._held
        for i in range(len(held) - 1, -1, -1):
            # referenced by the list, getrefcount's argument: no array is a view of it
            if sys.getrefcount(held[i]) <= 2:
                del held[i]

    def _gone(self, key: int) -> None:
        with self._lock:
            self._windows.pop(key, None)
            if not self._windows:
                self._wake.set()

    def finish(self) -> None:
        """No more windows will be asked for (the ones in use go with their last batch)."""
        with self._lock:
            self._finished = True
        self._held.clear()
        self._wake.set()

    def _watch(self) -> None:
        """Polls the lease while windows exist (or more may come); detaches them all on a break; gives
        the lease up at the end."""
        try:
            while True:
                with self._lock:
                    done = self._finished and not self._windows
                if done:
                    return
                try:
                    leased = fcntl.fcntl(self.fd, fcntl.F_GETLEASE) == fcntl.F_RDLCK
                except OSError:
                    leased = False
                if not leased:
                    self._detach_all()
                    while True:  # (a window that could not be copied: the lease waits for it to go)
                        with self._lock:
                            if not self._windows:
                                return
                        self._wake.wait(POLL)
                        self._wake.clear()
                self._wake.wait(POLL)
                self._wake.clear()
        finally:
            with self._lock:
                self.broken = True
            try:
                fcntl.fcntl(self.fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
            except OSError:
                pass
            os.close(self.fd)

    def _detach_all(self) -> None:
        with self._lock:
            self.broken = True  # (no new windows from here on)
            live = []
            for ref, addr, length in list(self._windows.values()):
                mm = ref()
                if mm is not None:  # (held here: it cannot be unmapped while we move pages over it)
                    live.append((mm, addr, length))
        while live:
            mm, addr, length = live.pop()
            try:
                detach(addr, length)
            except OSError:
                continue  # (no memory for the copy: kept, and the lease with it)
            with self._lock:
                self._windows.pop(id(mm), None)  # (its own pages now: truncation cannot touch it)
            del mm


def detach(addr: int, length: int) -> None:
    """Replaces the mapping at [addr, addr + length) by an anonymous copy of its bytes, in one
    step for anyone reading it (mremap moves the copy's pages over it)."""
    assert _LIBC is not None
    prot_rw, flags = mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    new = _LIBC.mmap(None, length, prot_rw, flags, -1, 0)
    if new in (None, _MAP_FAILED):
        raise OSError(ctypes.get_errno(), "mmap of a window's copy failed")
    ctypes.memmove(new, addr, length)  # (the file is whole: whoever truncates it waits for the lease)
    got = _LIBC.mremap(new, length, length, _MREMAP_MAYMOVE | _MREMAP_FIXED, addr)
    if got != addr:
        err = ctypes.get_errno()
        _LIBC.munmap(new, length)
        raise OSError(err, "mremap of a window's copy failed")
