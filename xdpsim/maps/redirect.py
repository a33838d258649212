"""Redirect maps: devmap, devmap_hash, cpumap, xskmap.

Each has `resolve(key) -> RedirectTarget | None` for the bpf_redirect_map helper (whose flag
semantics -- default action on a miss, BPF_F_BROADCAST, BPF_F_EXCLUDE_INGRESS -- live in the helpers).

Values are the kernel's user-visible structs: `struct bpf_devmap_val {u32 ifindex; u32 prog}` (or
only the ifindex when value_size is 4), `struct bpf_cpumap_val {u32 qsize; u32 prog}`, and for
xskmap a socket placeholder id (the kernel takes an AF_XDP socket fd). The `prog` word is stored as
given: 0 means no program (the kernel's "fd > 0" test); other values are whatever program id the
runtime uses, checked with `Map.prog_resolver` when the runtime sets one. Programs may look values up
(devmap, xskmap: the kernel allows bpf_map_lookup_elem there) and get a read-only pointer.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..memory import R_READ, AddressSpace
from ..spec import MapSpec
from . import native as nat
from .array import ValueStorage, refuse
from .base import BPF_EXIST, BPF_NOEXIST, Map
from .hash import HashMap

CPUMAP_MAX_QSIZE = 16384


@dataclass(frozen=True)
class RedirectTarget:
    """Where bpf_redirect_map sends a frame: kind "dev" (index = ifindex), "cpu" (index = CPU),
    or "xsk" (index = socket id); `prog` is the devmap/cpumap program id, if any. Kind "broadcast"
    (BPF_F_BROADCAST: every entry of a devmap / devmap_hash) has the map as index and the call's
    flags in `flags` (BPF_F_EXCLUDE_INGRESS); `flags` is 0 for every other kind."""

    kind: str
    index: int
    prog: int | None = None
    flags: int = 0


def array_next_key(max_entries: int, key: bytes | None) -> bytes | None:
    """The kernel's get_next_key for array-shaped maps: every index, restarting at 0 out of range."""
    if key is None:
        return (0).to_bytes(4, "little")
    i = int.from_bytes(key, "little")
    if i >= max_entries:
        return (0).to_bytes(4, "little")
    if i == max_entries - 1:
        return None
    return (i + 1).to_bytes(4, "little")


class SparseArrayMap(Map):
    """An array whose slots exist only where `table[i] >= 0` (native kind K_SPARSE)."""

    native_ops = frozenset({"lookup"})
    allowed_value_sizes: tuple[int, ...] = (4, 8)
    #: ifindex -> bool; the runtime sets it to refuse unknown interfaces with EINVAL, as the kernel
    ifindex_resolver: Callable[[int], bool] | None = None

    def __init__(self, spec: MapSpec, mem: AddressSpace, cpus: int, map_id: int):
        super().__init__(spec, mem, cpus, map_id)
        if spec.key_size != 4 or spec.value_size not in self.allowed_value_sizes or spec.max_entries == 0:
            raise refuse(spec, f"key_size must be 4, value_size one of {self.allowed_value_sizes}, "
                               "max_entries non-zero")
        self.table = np.full(self.max_entries, -1, dtype=np.int32)
        self.desc[nat.W_KIND] = nat.K_SPARSE
        self.desc[nat.W_TABLE] = self._pin(self.table)
        self.store = ValueStorage(self, self.max_entries, 1, R_READ)

    def _index(self, key: bytes) -> int:
        return int.from_bytes(key, "little")

    def _update_index(self, key: bytes, flags: int) -> int:
        """The slot an update writes, or -errno: the checks every array-like redirect map's update makes
        first, in the kernel's order (flags, then range)."""
        if flags > BPF_EXIST:
            return -_errno.EINVAL
        i = self._index(key)
        if i >= self.max_entries:
            return -_errno.E2BIG
        return i

    def _lookup(self, key: bytes) -> Any:
        i = self._index(key)
        if i >= self.max_entries or self.table[i] < 0:
            return -_errno.ENOENT
        return self.store.get(i, self.value_size)

    def _clear_slot(self, i: int) -> None:
        self.table[i] = -1
        self.store.zero(i)

    def _set_slot(self, i: int, value: bytes, primary: int) -> None:
        self.store.put(i, value)
        self.table[i] = primary

    def _delete(self, key: bytes) -> int:
        i = self._index(key)
        if i >= self.max_entries:
            return -_errno.EINVAL
        self._clear_slot(i)  # deleting an empty slot succeeds, as the kernel
        return 0

    def _iter_keys(self) -> Iterator[bytes]:
        return (int(i).to_bytes(4, "little") for i in np.flatnonzero(self.table >= 0))

    def _count(self) -> int:
        return int(np.count_nonzero(self.table >= 0))

    def next_key(self, key: Any | None = None) -> bytes | None:
        return array_next_key(self.max_entries, None if key is None else self._key(key))

    def _prog_ok(self, value: bytes) -> bool:
        if len(value) < 8:
            return True
        prog = int.from_bytes(value[4:8], "little", signed=True)
        return prog <= 0 or self.prog_resolver is None or bool(self.prog_resolver(prog))

    def _prog_of(self, i: int) -> int | None:
        if self.value_size < 8:
            return None
        prog = int.from_bytes(self.store.get(i, 8)[4:8], "little", signed=True)
        return prog if prog > 0 else None

    def prog_lookup(self, key_addr: int, cpu: int = 0) -> int:
        i = self.mem.load(key_addr, 4)
        if i >= self.max_entries or self.table[i] < 0:
            return 0
        return (self.store.rid << 32) | (i * self.value_stride)


class DevMap(SparseArrayMap):
    """BPF_MAP_TYPE_DEVMAP: index -> ifindex (table holds the ifindex)."""

    def _update(self, key: bytes, value: bytes, flags: int) -> int:
        # kernel order (devmap.c __dev_map_update_elem): flags, range, NOEXIST (always exists), value
        i = self._update_index(key, flags)
        if i < 0:
            return i
        if flags == BPF_NOEXIST:
            return -_errno.EEXIST
        ifindex = int.from_bytes(value[:4], "little")
        if ifindex == 0:
            self._clear_slot(i)  # an ifindex of 0 empties the slot
            return 0
        if self.ifindex_resolver is not None and not self.ifindex_resolver(ifindex):
            return -_errno.EINVAL
        if not self._prog_ok(value):
            return -_errno.EINVAL
        self._set_slot(i, value, ifindex)
        return 0

    def resolve(self, key: int) -> RedirectTarget | None:
        if not 0 <= key < self.max_entries or self.table[key] < 0:
            return None
        return RedirectTarget("dev", int(self.table[key]), self._prog_of(key))


class CpuMap(SparseArrayMap):
    """BPF_MAP_TYPE_CPUMAP: CPU index -> queue size (table holds qsize)."""

    def _update(self, key: bytes, value: bytes, flags: int) -> int:
        # kernel order (cpumap.c cpu_map_update_elem)
        i = self._update_index(key, flags)
        if i < 0:
            return i
        if flags == BPF_NOEXIST:
            return -_errno.EEXIST
        qsize = int.from_bytes(value[:4], "little")
        if qsize > CPUMAP_MAX_QSIZE:
            return -_errno.EOVERFLOW
        if i >= self.cpus:
            return -_errno.ENODEV  # not a possible CPU of the simulated machine
        if qsize == 0:
            self._clear_slot(i)
            return 0
        if not self._prog_ok(value):
            return -_errno.EINVAL
        self._set_slot(i, value, qsize)
        return 0

    def resolve(self, key: int) -> RedirectTarget | None:
        if not 0 <= key < self.max_entries or self.table[key] < 0:
            return None
        return RedirectTarget("cpu", key, self._prog_of(key))


class XskMap(SparseArrayMap):
    """BPF_MAP_TYPE_XSKMAP: rx queue index -> AF_XDP socket (a placeholder id here)."""

    allowed_value_sizes = (4,)

    def _update(self, key: bytes, value: bytes, flags: int) -> int:
        i = self._update_index(key, flags)
        if i < 0:
            return i
        sock = int.from_bytes(value, "little", signed=True)
        if sock < 0:
            return -_errno.EBADF
        present = self.table[i] >= 0
        if present and flags == BPF_NOEXIST:
            return -_errno.EEXIST
        if not present and flags == BPF_EXIST:
            return -_errno.ENOENT
        self._set_slot(i, value, sock)
        return 0

    def lookup(self, key: Any) -> Any:
        # the kernel gives user space no way to read an xskmap slot back
        k = self._key(key)
        self._raise("lookup", -_errno.EOPNOTSUPP, k)

    def items(self) -> list[tuple[bytes, Any]]:
        return [(k, self.store.get(self._index(k), 4)) for k in self._iter_keys()]

    def resolve(self, key: int) -> RedirectTarget | None:
        if not 0 <= key < self.max_entries or self.table[key] < 0:
            return None
        return RedirectTarget("xsk", int(self.table[key]))


class DevMapHash(HashMap):
    """BPF_MAP_TYPE_DEVMAP_HASH: any u32 key -> bpf_devmap_val, on the native hash table."""

    native_ops = frozenset({"lookup"})
    ifindex_resolver: Callable[[int], bool] | None = None

    def __init__(self, spec: MapSpec, mem: AddressSpace, cpus: int, map_id: int):
        if spec.key_size != 4 or spec.value_size not in (4, 8):
            raise refuse(spec, "key_size must be 4 and value_size 4 or 8")
        super().__init__(spec, mem, cpus, map_id, region_flags=R_READ)

    def _update(self, key: bytes, value: bytes, flags: int) -> int:
        # kernel order (__dev_map_hash_update_elem): flags, NOEXIST on an existing key, the device,
        # then the size limit; BPF_EXIST is not checked at all (an update may create).
        if flags > BPF_EXIST:
            return -_errno.EINVAL
        exists = self._n.hash_lookup(self._d, key) >= 0
        if exists and flags & BPF_NOEXIST:
            return -_errno.EEXIST
        ifindex = int.from_bytes(value[:4], "little")
        if ifindex == 0 or (self.ifindex_resolver is not None and not self.ifindex_resolver(ifindex)):
            return -_errno.EINVAL
        if len(value) >= 8:
            prog = int.from_bytes(value[4:8], "little", signed=True)
            if prog > 0 and self.prog_resolver is not None and not self.prog_resolver(prog):
                return -_errno.EINVAL
        return min(0, self._n.hash_update(self._d, key, value, 0, 0))

    def prog_update(self, key_addr: int, value_addr: int, flags: int, cpu: int = 0) -> int:
        return -_errno.EINVAL  # programs cannot update devmaps

    def prog_delete(self, key_addr: int, cpu: int = 0) -> int:
        return -_errno.EINVAL

    def resolve(self, key: int) -> RedirectTarget | None:
        slot = self._n.hash_lookup(self._d, (key & 0xFFFF_FFFF).to_bytes(4, "little"))
        if slot < 0:
            return None
        v = self.store.get(slot, self.value_size)
        prog = int.from_bytes(v[4:8], "little", signed=True) if len(v) >= 8 else 0
        return RedirectTarget("dev", int.from_bytes(v[:4], "little"), prog if prog > 0 else None)
