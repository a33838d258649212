"""The bpf() system call through ctypes: no libbpf, no compiled extension.

Each command gets the part of `union bpf_attr` it reads, laid out as include/uapi/linux/bpf.h (checked
against the running kernel's BTF, 6.18). The kernel accepts an attr shorter than its own union as long
as the bytes it knows of are given; our structs stop at the last field we set, so older kernels that
lack a trailing field still accept them.

Errors raise `KernelError(message, errno, log)`; a refused program carries the verifier log.
File descriptors are `Fd` objects: close them with `with` or `.close()` (a finaliser is only the
safety net).
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
import platform
import struct
import sys
import threading
from dataclasses import dataclass
from enum import IntEnum

from ..errors import KernelError, KernelUnavailable

# __NR_bpf per architecture (arch/*/include/uapi/asm/unistd*.h and the generic table).
_NR_BPF = {
    "x86_64": 321,
    "amd64": 321,
    "aarch64": 280,
    "arm64": 280,
    "riscv64": 280,
    "loongarch64": 280,
    "i386": 357,
    "i686": 357,
    "armv7l": 386,
    "armv6l": 386,
    "ppc64le": 361,
    "ppc64": 361,
    "s390x": 351,
}


class Cmd(IntEnum):
    MAP_CREATE = 0
    MAP_LOOKUP_ELEM = 1
    MAP_UPDATE_ELEM = 2
    MAP_DELETE_ELEM = 3
    MAP_GET_NEXT_KEY = 4
    PROG_LOAD = 5
    PROG_TEST_RUN = 10
    OBJ_GET_INFO_BY_FD = 15
    BTF_LOAD = 18
    MAP_LOOKUP_AND_DELETE_ELEM = 21
    MAP_FREEZE = 22


class AttachType(IntEnum):
    """The enum bpf_attach_type values the engine sets as expected_attach_type."""

    NONE = 0  # BPF_CGROUP_INET_INGRESS, but the kernel reads 0 as "unset" for XDP and SCHED_CLS
    XDP_DEVMAP = 33
    XDP_CPUMAP = 35
    XDP = 37
    TCX_INGRESS = 46
    TCX_EGRESS = 47


# map update flags
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2
BPF_F_LOCK = 4

# map_flags
BPF_F_NO_PREALLOC = 1 << 0
BPF_F_NO_COMMON_LRU = 1 << 1
BPF_F_NUMA_NODE = 1 << 2
BPF_F_RDONLY = 1 << 3
BPF_F_WRONLY = 1 << 4
BPF_F_RDONLY_PROG = 1 << 7
BPF_F_WRONLY_PROG = 1 << 8
BPF_F_MMAPABLE = 1 << 10
BPF_F_INNER_MAP = 1 << 12

# prog_flags
BPF_F_STRICT_ALIGNMENT = 1 << 0
BPF_F_ANY_ALIGNMENT = 1 << 1
BPF_F_XDP_HAS_FRAGS = 1 << 5

# test.flags
BPF_F_TEST_RUN_ON_CPU = 1 << 0
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
BPF_F_TEST_SKB_CHECKSUM_COMPLETE = 1 << 2

# log_level bits
BPF_LOG_LEVEL1 = 1
BPF_LOG_LEVEL2 = 2
BPF_LOG_STATS = 4

BPF_OBJ_NAME_LEN = 16

# The verifier log buffer starts here and grows on ENOSPC up to the cap (the kernel refuses a
# log_size of UINT_MAX >> 2 or more; a log that large is never useful to a person anyway).
LOG_START = 256 * 1024
LOG_CAP = 64 * 1024 * 1024


# --- union bpf_attr, one struct per command group ------------------------------------------------

_u32 = ctypes.c_uint32
_s32 = ctypes.c_int32
_u64 = ctypes.c_uint64


class MapCreateAttr(ctypes.Structure):
    _fields_ = [
        ("map_type", _u32),
        ("key_size", _u32),
        ("value_size", _u32),
        ("max_entries", _u32),
        ("map_flags", _u32),
        ("inner_map_fd", _u32),
        ("numa_node", _u32),
        ("map_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("map_ifindex", _u32),
        ("btf_fd", _u32),
        ("btf_key_type_id", _u32),
        ("btf_value_type_id", _u32),
        ("btf_vmlinux_value_type_id", _u32),
        ("map_extra", _u64),
    ]


class MapElemAttr(ctypes.Structure):
    _fields_ = [
        ("map_fd", _u32),
        ("key", _u64),
        ("value", _u64),  # also next_key
        ("flags", _u64),
    ]


class ProgLoadAttr(ctypes.Structure):
    _fields_ = [
        ("prog_type", _u32),
        ("insn_cnt", _u32),
        ("insns", _u64),
        ("license", _u64),
        ("log_level", _u32),
        ("log_size", _u32),
        ("log_buf", _u64),
        ("kern_version", _u32),
        ("prog_flags", _u32),
        ("prog_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("prog_ifindex", _u32),
        ("expected_attach_type", _u32),
        ("prog_btf_fd", _u32),
        ("func_info_rec_size", _u32),
        ("func_info", _u64),
        ("func_info_cnt", _u32),
        ("line_info_rec_size", _u32),
        ("line_info", _u64),
        ("line_info_cnt", _u32),
        ("attach_btf_id", _u32),
        ("attach_prog_fd", _u32),
        ("core_relo_cnt", _u32),
        ("fd_array", _u64),
        ("core_relos", _u64),
        ("core_relo_rec_size", _u32),
        ("log_true_size", _u32),  # written back by 6.4+ kernels: the size the whole log needs
    ]


class TestRunAttr(ctypes.Structure):
    _fields_ = [
        ("prog_fd", _u32),
        ("retval", _u32),
        ("data_size_in", _u32),
        ("data_size_out", _u32),
        ("data_in", _u64),
        ("data_out", _u64),
        ("repeat", _u32),
        ("duration", _u32),
        ("ctx_size_in", _u32),
        ("ctx_size_out", _u32),
        ("ctx_in", _u64),
        ("ctx_out", _u64),
        ("flags", _u32),
        ("cpu", _u32),
        ("batch_size", _u32),
    ]


class InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", _u32), ("info_len", _u32), ("info", _u64)]


class BtfLoadAttr(ctypes.Structure):
    _fields_ = [
        ("btf", _u64),
        ("btf_log_buf", _u64),
        ("btf_size", _u32),
        ("btf_log_size", _u32),
        ("btf_log_level", _u32),
        ("btf_log_true_size", _u32),
    ]


# --- the syscall -----------------------------------------------------------------------------------

_libc: ctypes.CDLL | None = None
_nr: int | None = None


def _setup() -> tuple[ctypes.CDLL, int]:
    global _libc, _nr
    if _libc is None or _nr is None:
        if sys.platform != "linux":
            raise KernelUnavailable(f"the kernel engine needs Linux (this is {sys.platform})")
        machine = platform.machine().lower()
        nr = _NR_BPF.get(machine)
        if nr is None:
            raise KernelUnavailable(f"no bpf() syscall number known for architecture {machine}")
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        _libc, _nr = libc, nr
    return _libc, _nr


def sys_bpf(cmd: int, attr: ctypes.Structure) -> int:
    """bpf(cmd, &attr, sizeof attr): the result (>= 0) or -errno. Retries EINTR/EAGAIN where harmless."""
    libc, nr = _setup()
    tries = 0
    while True:
        ret = libc.syscall(nr, int(cmd), ctypes.byref(attr), ctypes.sizeof(attr))
        if ret >= 0:
            return ret
        err = ctypes.get_errno()
        tries += 1
        # PROG_LOAD can fail with EAGAIN under memory pressure (libbpf retries it too). A TEST_RUN
        # interrupted by a signal is not retried: its program may already have touched maps.
        if cmd == Cmd.PROG_LOAD and err == _errno.EAGAIN and tries < 5:
            continue
        if cmd != Cmd.PROG_TEST_RUN and err == _errno.EINTR and tries < 5:
            continue
        return -err


def _errname(err: int) -> str:
    name = _errno.errorcode.get(err, f"errno {err}")
    if err == 524:  # ENOTSUPP, kernel-internal, leaks out of a few bpf() paths
        name = "ENOTSUPP"
    return f"{os.strerror(err) if err != 524 else 'Operation not supported'} ({name})"


def _fail(what: str, err: int, log: str = "") -> KernelError:
    return KernelError(f"{what}: {_errname(err)}", err, log)


def _ptr(buf: ctypes.Array | None) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


def _inbuf(data: bytes) -> ctypes.Array | None:
    """A C copy of `data` (None for empty: the kernel gets NULL, as for key-less queue maps)."""
    if not data:
        return None
    return ctypes.create_string_buffer(bytes(data), len(data))


def _obj_name(name: str) -> bytes:
    """A name the kernel accepts (bpf_obj_name_cpy: [A-Za-z0-9_.], at most 15 characters)."""
    clean = "".join(c if (c.isascii() and (c.isalnum() or c in "_.")) else "_" for c in name)
    return clean[: BPF_OBJ_NAME_LEN - 1].encode()


class Fd:
    """An owned file descriptor (map, program, BTF). `close()` is idempotent; use it as a context manager."""

    __slots__ = ("_fd", "kind")

    def __init__(self, fd: int, kind: str = "bpf"):
        self._fd = fd
        self.kind = kind

    @property
    def fd(self) -> int:
        if self._fd < 0:
            raise ValueError(f"{self.kind} fd is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def __int__(self) -> int:
        return self.fd

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Fd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Fd({self._fd}, {self.kind!r})"


# --- maps --------------------------------------------------------------------------------------------


def map_create(
    map_type: int,
    key_size: int,
    value_size: int,
    max_entries: int,
    *,
    flags: int = 0,
    name: str = "",
    inner_map_fd: int = 0,
    numa_node: int = 0,
    btf_fd: int = 0,
    btf_key_type_id: int = 0,
    btf_value_type_id: int = 0,
    map_extra: int = 0,
    map_ifindex: int = 0,
) -> Fd:
    attr = MapCreateAttr(
        map_type=map_type,
        key_size=key_size,
        value_size=value_size,
        max_entries=max_entries,
        map_flags=flags,
        inner_map_fd=inner_map_fd,
        numa_node=numa_node,
        map_name=_obj_name(name),
        map_ifindex=map_ifindex,
        btf_fd=btf_fd,
        btf_key_type_id=btf_key_type_id,
        btf_value_type_id=btf_value_type_id,
        map_extra=map_extra,
    )
    ret = sys_bpf(Cmd.MAP_CREATE, attr)
    if ret < 0:
        raise _fail(
            f"BPF_MAP_CREATE {name or '(unnamed)'} (type {map_type}, key {key_size}, value {value_size}, "
            f"max_entries {max_entries}, flags {flags:#x})",
            -ret,
        )
    return Fd(ret, f"map {name}")


def map_lookup(fd: int, key: bytes, value_size: int, flags: int = 0) -> bytes | None:
    """The value at `key` (value_size bytes: for per-CPU maps pass the whole per-CPU size); None if absent."""
    kbuf = _inbuf(key)
    vbuf = ctypes.create_string_buffer(max(value_size, 1))
    attr = MapElemAttr(map_fd=fd, key=_ptr(kbuf), value=ctypes.addressof(vbuf), flags=flags)
    ret = sys_bpf(Cmd.MAP_LOOKUP_ELEM, attr)
    if ret < 0:
        if -ret == _errno.ENOENT:
            return None
        raise _fail(f"BPF_MAP_LOOKUP_ELEM key {bytes(key).hex()}", -ret)
    return vbuf.raw[:value_size]


def map_update(fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    kbuf = _inbuf(key)
    vbuf = _inbuf(value)
    attr = MapElemAttr(map_fd=fd, key=_ptr(kbuf), value=_ptr(vbuf), flags=flags)
    ret = sys_bpf(Cmd.MAP_UPDATE_ELEM, attr)
    if ret < 0:
        raise _fail(f"BPF_MAP_UPDATE_ELEM key {bytes(key).hex()}", -ret)


def map_delete(fd: int, key: bytes) -> bool:
    """Delete `key`; False when it was absent (ENOENT)."""
    kbuf = _inbuf(key)
    attr = MapElemAttr(map_fd=fd, key=_ptr(kbuf))
    ret = sys_bpf(Cmd.MAP_DELETE_ELEM, attr)
    if ret < 0:
        if -ret == _errno.ENOENT:
            return False
        raise _fail(f"BPF_MAP_DELETE_ELEM key {bytes(key).hex()}", -ret)
    return True


def map_get_next_key(fd: int, key: bytes | None, key_size: int) -> bytes | None:
    """BPF_MAP_GET_NEXT_KEY: the key after `key` (the first with None); None at the end."""
    kbuf = _inbuf(key) if key is not None else None
    nbuf = ctypes.create_string_buffer(max(key_size, 1))
    attr = MapElemAttr(map_fd=fd, key=_ptr(kbuf), value=ctypes.addressof(nbuf))
    ret = sys_bpf(Cmd.MAP_GET_NEXT_KEY, attr)
    if ret < 0:
        if -ret == _errno.ENOENT:
            return None
        raise _fail("BPF_MAP_GET_NEXT_KEY", -ret)
    return nbuf.raw[:key_size]


def map_keys(fd: int, key_size: int, limit: int = 1 << 24) -> list[bytes]:
    """All keys, in the kernel's order (hash order depends on a per-map random seed)."""
    keys: list[bytes] = []
    k = map_get_next_key(fd, None, key_size)
    while k is not None and len(keys) < limit:
        keys.append(k)
        k = map_get_next_key(fd, k, key_size)
    return keys


def map_freeze(fd: int) -> None:
    """BPF_MAP_FREEZE: no more writes from user space (a frozen .rodata lets the verifier trust it)."""
    attr = MapElemAttr(map_fd=fd)
    ret = sys_bpf(Cmd.MAP_FREEZE, attr)
    if ret < 0:
        raise _fail("BPF_MAP_FREEZE", -ret)


def map_lookup_and_delete(fd: int, key: bytes, value_size: int) -> bytes | None:
    """Pop (queue/stack with an empty key) or take out one element; None when empty/absent."""
    kbuf = _inbuf(key)
    vbuf = ctypes.create_string_buffer(max(value_size, 1))
    attr = MapElemAttr(map_fd=fd, key=_ptr(kbuf), value=ctypes.addressof(vbuf))
    ret = sys_bpf(Cmd.MAP_LOOKUP_AND_DELETE_ELEM, attr)
    if ret < 0:
        if -ret == _errno.ENOENT:
            return None
        raise _fail("BPF_MAP_LOOKUP_AND_DELETE_ELEM", -ret)
    return vbuf.raw[:value_size]


# --- BTF ---------------------------------------------------------------------------------------------


def btf_load(data: bytes, *, log_level: int = 0) -> Fd:
    """BPF_BTF_LOAD; on refusal the error carries the kernel's BTF log (fetched by a second try)."""
    blob = ctypes.create_string_buffer(bytes(data), len(data))
    attr = BtfLoadAttr(btf=ctypes.addressof(blob), btf_size=len(data))
    logbuf = None
    if log_level:
        logbuf = ctypes.create_string_buffer(LOG_START)
        attr.btf_log_buf = ctypes.addressof(logbuf)
        attr.btf_log_size, attr.btf_log_level = LOG_START, log_level
    ret = sys_bpf(Cmd.BTF_LOAD, attr)
    if ret >= 0:
        return Fd(ret, "btf")
    err = -ret
    if not log_level and err != _errno.EPERM:
        return btf_load(data, log_level=1)
    log = _cstr(logbuf) if logbuf is not None else ""
    raise _fail("BPF_BTF_LOAD", err, log)


def _cstr(buf: ctypes.Array) -> str:
    raw = buf.raw
    end = raw.find(b"\0")
    return raw[: end if end >= 0 else len(raw)].decode("utf-8", "replace")


# --- programs ----------------------------------------------------------------------------------------


@dataclass
class ProgLoad:
    """The outcome of one BPF_PROG_LOAD: the fd (None when refused), the errno and the verifier log."""

    fd: Fd | None
    errno: int
    log: str


def prog_load_raw(
    prog_type: int,
    insns: bytes,
    *,
    license: str = "GPL",
    name: str = "",
    expected_attach_type: int = 0,
    prog_flags: int = 0,
    kern_version: int = 0,
    prog_btf_fd: int = 0,
    func_info: bytes = b"",
    func_info_rec_size: int = 8,
    line_info: bytes = b"",
    line_info_rec_size: int = 16,
    log_level: int = 0,
) -> ProgLoad:
    """One load (growing the log buffer on ENOSPC); never raises for a refusal."""
    if len(insns) % 8:
        raise KernelError(f"program {name}: {len(insns)} bytes of instructions is not a multiple of 8")
    ibuf = ctypes.create_string_buffer(bytes(insns), max(len(insns), 1))
    lic = ctypes.create_string_buffer(license.encode() + b"\0")
    fbuf = _inbuf(func_info)
    lbuf = _inbuf(line_info)
    size = LOG_START
    while True:
        logbuf = ctypes.create_string_buffer(size) if log_level else None
        attr = ProgLoadAttr(
            prog_type=prog_type,
            insn_cnt=len(insns) // 8,
            insns=ctypes.addressof(ibuf),
            license=ctypes.addressof(lic),
            log_level=log_level,
            log_size=size if log_level else 0,
            log_buf=_ptr(logbuf),
            kern_version=kern_version,
            prog_flags=prog_flags,
            prog_name=_obj_name(name),
            expected_attach_type=expected_attach_type,
            prog_btf_fd=prog_btf_fd,
        )
        if func_info:
            attr.func_info_rec_size = func_info_rec_size
            attr.func_info = _ptr(fbuf)
            attr.func_info_cnt = len(func_info) // func_info_rec_size
        if line_info:
            attr.line_info_rec_size = line_info_rec_size
            attr.line_info = _ptr(lbuf)
            attr.line_info_cnt = len(line_info) // line_info_rec_size
        ret = sys_bpf(Cmd.PROG_LOAD, attr)
        log = _cstr(logbuf) if logbuf is not None else ""
        if ret >= 0:
            return ProgLoad(Fd(ret, f"prog {name}"), 0, log)
        err = -ret
        # ENOSPC with a log means the log did not fit (the verdict is hidden behind it): grow and retry.
        if err == _errno.ENOSPC and log_level and size < LOG_CAP:
            need = attr.log_true_size
            size = min(LOG_CAP, max(size * 4, need + 1 if need else 0))
            continue
        return ProgLoad(None, err, log)


def prog_load(prog_type: int, insns: bytes, *, name: str = "", log_level: int = 0, **kw: object) -> ProgLoad:
    """Load a program or raise KernelError with the verifier log.

    As libbpf does, a load without a log that fails is repeated with log_level 1 to get the log.
    """
    res = prog_load_raw(prog_type, insns, name=name, log_level=log_level, **kw)  # type: ignore[arg-type]
    if res.fd is None and not log_level and res.errno not in (_errno.EPERM,):
        res = prog_load_raw(prog_type, insns, name=name, log_level=BPF_LOG_LEVEL1, **kw)  # type: ignore[arg-type]
    if res.fd is None:
        raise _fail(f"BPF_PROG_LOAD {name or '(unnamed)'}", res.errno, res.log)
    return res


# --- test runs ---------------------------------------------------------------------------------------


@dataclass
class TestRun:
    retval: int  # the program's r0, u32 as the kernel reports it
    data_out: bytes
    duration_ns: int  # mean time per repetition
    ctx_out: bytes | None
    data_size_out: int


_scratch = threading.local()


def _scratch_buf(name: str, size: int) -> ctypes.Array:
    """A per-thread output buffer reused across runs (allocating and zeroing 64 KiB per packet shows)."""
    buf = getattr(_scratch, name, None)
    if buf is None or len(buf) < size:
        buf = ctypes.create_string_buffer(max(size, 4096))
        setattr(_scratch, name, buf)
    return buf


def prog_test_run(
    fd: int,
    data: bytes | None,
    *,
    ctx_in: bytes | None = None,
    ctx_out_size: int = 0,
    data_out_size: int | None = None,
    repeat: int = 1,
    flags: int = 0,
    cpu: int = 0,
    batch_size: int = 0,
) -> TestRun:
    """BPF_PROG_TEST_RUN. `data_out_size` defaults to len(data) + 64 KiB, enough for any growth."""
    din = _inbuf(data or b"")
    nout = data_out_size if data_out_size is not None else len(data or b"") + 65536
    dout = _scratch_buf("data", nout) if nout else None
    cin = _inbuf(ctx_in) if ctx_in is not None else None
    cout = _scratch_buf("ctx", ctx_out_size) if ctx_out_size else None
    attr = TestRunAttr(
        prog_fd=fd,
        data_size_in=len(data or b""),
        data_size_out=nout,
        data_in=_ptr(din),
        data_out=_ptr(dout),
        repeat=repeat,
        ctx_size_in=len(ctx_in) if ctx_in is not None else 0,
        ctx_size_out=ctx_out_size,
        ctx_in=_ptr(cin),
        ctx_out=_ptr(cout),
        flags=flags,
        cpu=cpu,
        batch_size=batch_size,
    )
    ret = sys_bpf(Cmd.PROG_TEST_RUN, attr)
    if ret < 0:
        err = -ret
        what = "BPF_PROG_TEST_RUN"
        if err == _errno.ENOSPC:
            what += f" (output of {attr.data_size_out} bytes does not fit {nout})"
        raise _fail(what, err)
    out = ctypes.string_at(ctypes.addressof(dout), min(attr.data_size_out, nout)) if dout is not None else b""
    ctx = None
    if cout is not None:
        ctx = ctypes.string_at(ctypes.addressof(cout), min(attr.ctx_size_out, ctx_out_size))
    return TestRun(attr.retval, out, attr.duration, ctx, attr.data_size_out)


# --- object info -------------------------------------------------------------------------------------


def obj_get_info(fd: int, size: int = 256) -> bytes:
    """BPF_OBJ_GET_INFO_BY_FD: the raw info struct (bpf_prog_info / bpf_map_info / bpf_btf_info)."""
    buf = ctypes.create_string_buffer(size)
    attr = InfoAttr(bpf_fd=fd, info_len=size, info=ctypes.addressof(buf))
    ret = sys_bpf(Cmd.OBJ_GET_INFO_BY_FD, attr)
    if ret < 0:
        raise _fail("BPF_OBJ_GET_INFO_BY_FD", -ret)
    return buf.raw[: attr.info_len]


def prog_info(fd: int) -> dict[str, object]:
    """The leading fields of struct bpf_prog_info: type, id, tag, jited/xlated lengths, name."""
    raw = obj_get_info(fd)
    ptype, pid = struct.unpack_from("<II", raw, 0)
    tag = raw[8:16].hex()
    jited, xlated = struct.unpack_from("<II", raw, 16)
    name = raw[64:80].split(b"\0")[0].decode()
    return {"type": ptype, "id": pid, "tag": tag, "jited_len": jited, "xlated_len": xlated, "name": name}


def map_info(fd: int) -> dict[str, object]:
    """The leading fields of struct bpf_map_info."""
    raw = obj_get_info(fd)
    mtype, mid, ks, vs, me, fl = struct.unpack_from("<IIIIII", raw, 0)
    name = raw[24:40].split(b"\0")[0].decode()
    return {"type": mtype, "id": mid, "key_size": ks, "value_size": vs, "max_entries": me, "flags": fl,
            "name": name}


# --- environment -------------------------------------------------------------------------------------

_possible: int | None = None


def parse_cpu_list(text: str) -> list[int]:
    """'0-3,5,7-8' -> [0, 1, 2, 3, 5, 7, 8] (the sysfs cpulist format)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.extend(range(int(lo), int(hi) + 1))
        else:
            cpus.append(int(part))
    return cpus


def possible_cpus() -> int:
    """How many per-CPU values the syscall returns: one per *possible* CPU (not online, not cpu_count)."""
    global _possible
    if _possible is None:
        try:
            with open("/sys/devices/system/cpu/possible") as f:
                _possible = len(parse_cpu_list(f.read()))
        except OSError:
            _possible = os.cpu_count() or 1
    return _possible


def percpu_value_size(value_size: int) -> int:
    """Bytes one CPU's value takes in the syscall's per-CPU buffer (rounded up to 8)."""
    return (value_size + 7) & ~7


def _capabilities() -> str:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    eff = int(line.split()[1], 16)
                    names = {21: "CAP_SYS_ADMIN", 12: "CAP_NET_ADMIN", 39: "CAP_BPF", 38: "CAP_PERFMON"}
                    have = [n for bit, n in names.items() if eff >> bit & 1]
                    return ", ".join(have) or "none of CAP_BPF/CAP_NET_ADMIN/CAP_SYS_ADMIN"
    except OSError:
        pass
    return "unknown"


_probe: tuple[bool, str] | None = None
_probe_lock = threading.Lock()

# r0 = XDP_PASS (2); exit
_PROBE_PROG = struct.pack("<BBhi", 0xB7, 0, 0, 2) + struct.pack("<BBhi", 0x95, 0, 0, 0)


def kernel_available() -> tuple[bool, str]:
    """(True, description) when this process can load an XDP program and BPF_PROG_TEST_RUN it; else why not.

    The answer is cached: the probe loads one two-instruction program.
    """
    global _probe
    with _probe_lock:
        if _probe is None:
            _probe = _run_probe()
        return _probe


def _run_probe() -> tuple[bool, str]:
    try:
        _setup()
    except KernelUnavailable as e:
        return False, str(e)
    try:
        with map_create(2, 4, 8, 1, name="xdpsim_probe"):
            pass
        res = prog_load(6, _PROBE_PROG, name="xdpsim_probe", license="GPL")
        assert res.fd is not None
        with res.fd as fd:
            run = prog_test_run(fd.fd, bytes(14))
    except KernelError as e:
        who = f"euid {os.geteuid()}, capabilities: {_capabilities()}"
        if e.errno == _errno.EPERM:
            return False, ("bpf() not permitted (EPERM): run as root or with CAP_BPF and CAP_NET_ADMIN "
                           f"({who})")
        if e.errno == _errno.ENOSYS:
            return False, "this kernel has no bpf() syscall (ENOSYS)"
        if e.errno == _errno.EINVAL and "TEST_RUN" in str(e):
            return False, f"BPF_PROG_TEST_RUN is not supported for XDP here: {e}"
        return False, f"bpf() probe failed: {e} ({who})"
    if run.retval != 2:
        return False, f"bpf() probe: a program returning 2 gave {run.retval}"
    return True, f"Linux {platform.release()} ({platform.machine()}), bpf() and BPF_PROG_TEST_RUN work"


def require_kernel() -> None:
    """Raise KernelUnavailable with the reason when the kernel engine cannot run here."""
    ok, why = kernel_available()
    if not ok:
        raise KernelUnavailable(why)
