"""Array and per-CPU array maps (global data sections are arrays of one entry).

Storage is one flat, lazily zeroed buffer of `max_entries x round_up(value_size, 8)` bytes per CPU --
the kernel's value stride -- registered as one region per CPU (consecutive region ids). Entry i of
CPU c is at program address `((values_region + c) << 32) | i * stride`. A 33-million-entry array
costs nothing until its pages are written.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import LoadError
from ..memory import R_READ, R_WRITE, AddressSpace, zeros
from ..spec import MapSpec, MapType
from . import native as nat
from .base import (
    BPF_EXIST,
    BPF_F_LOCK,
    BPF_F_NO_PREALLOC,
    BPF_F_RDONLY_PROG,
    BPF_F_WRONLY_PROG,
    BPF_NOEXIST,
    JSON_FULL_ARRAY_LIMIT,
    Map,
)

REGION_LIMIT = 1 << 32


def prog_region_flags(flags: int) -> int:
    """Program access to value storage from map_flags (BPF_F_RDONLY_PROG / BPF_F_WRONLY_PROG)."""
    if flags & BPF_F_RDONLY_PROG:
        return R_READ
    if flags & BPF_F_WRONLY_PROG:
        return R_WRITE
    return R_READ | R_WRITE


def refuse(spec: MapSpec, why: str, err: str = "EINVAL") -> LoadError:
    return LoadError(f"map {spec.name} ({MapType(spec.type).name.lower()}): {why} (the kernel refuses "
                     f"BPF_MAP_CREATE with {err})")


class ValueStorage:
    """`slots x stride` bytes per CPU in one lazily zeroed buffer, one region per CPU."""

    def __init__(self, m: Map, slots: int, copies: int, flags: int, region_name: str | None = None):
        self.stride = m.value_stride
        self.slots = slots
        self.copies = copies
        per = slots * self.stride
        if per > REGION_LIMIT:
            raise LoadError(f"map {m.name}: {per} bytes of values exceed the 4 GiB a region can address")
        self.per_cpu_bytes = per
        self.buf = zeros(per * copies)
        self.views = [self.buf[c * per : (c + 1) * per] for c in range(copies)]
        name = region_name or m.name
        if copies == 1:
            self.rid = m.mem.add(name, self.views[0], flags)
        else:
            self.rid = m.mem.add_many([f"{name}[cpu{c}]" for c in range(copies)], self.views, flags)
        d = m.desc
        d[nat.W_VALUES] = self.buf.ctypes.data
        d[nat.W_CPU_STRIDE] = per if copies > 1 else 0
        d[nat.W_VALUES_RID] = self.rid
        m.values_region = self.rid

    def get(self, slot: int, size: int, cpu: int = 0) -> bytes:
        o = slot * self.stride
        return self.views[cpu][o : o + size].tobytes()

    def put(self, slot: int, data: bytes, cpu: int = 0, lock_off: int | None = None) -> None:
        o = slot * self.stride
        view = self.views[cpu]
        if lock_off is not None:
            # a bpf_spin_lock inside the value is never overwritten by a copy (copy_map_value)
            saved = view[o + lock_off : o + lock_off + 4].copy()
            view[o : o + len(data)] = np.frombuffer(data, dtype=np.uint8)
            view[o + lock_off : o + lock_off + 4] = saved
        else:
            view[o : o + len(data)] = np.frombuffer(data, dtype=np.uint8)

    def zero(self, slot: int) -> None:
        o = slot * self.stride
        for v in self.views:
            v[o : o + self.stride] = 0


class ArrayMap(Map):
    """BPF_MAP_TYPE_ARRAY (and global data: .data, .rodata, .bss)."""

    native_ops = frozenset({"lookup", "update", "delete"})

    def __init__(self, spec: MapSpec, mem: AddressSpace, cpus: int, map_id: int):
        super().__init__(spec, mem, cpus, map_id)
        if spec.key_size != 4:
            raise refuse(spec, f"key_size {spec.key_size}, arrays need 4")
        if spec.value_size == 0 or spec.max_entries == 0:
            raise refuse(spec, "value_size and max_entries must be non-zero")
        if spec.flags & BPF_F_NO_PREALLOC:
            raise refuse(spec, "BPF_F_NO_PREALLOC is not allowed for arrays")
        self.lock_off: int | None = None
        copies = cpus if self.percpu else 1
        self.desc[nat.W_KIND] = nat.K_ARRAY
        self.desc[nat.W_FLAGS] = nat.F_PERCPU if self.percpu else 0
        self.store = ValueStorage(self, self.max_entries, copies, prog_region_flags(spec.flags))
        self._percpu_factor = 1 if self.percpu else 0
        if spec.initial:
            init = bytes(spec.initial)[: self.value_size]
            self.store.put(0, init)
        if spec.frozen:
            self.freeze()

    # ------------------------------------------------------------ extras

    def freeze(self) -> None:
        """BPF_MAP_FREEZE plus the verifier's view of .rodata: no more writes from user space, and
        programs may only read."""
        self.frozen = True
        for c in range(self.store.copies):
            self.mem.set_flags(self.store.rid + c, R_READ)

    def set_spin_lock(self, offset: int | None) -> None:
        """The value holds a `struct bpf_spin_lock` at `offset` (from BTF): enables BPF_F_LOCK."""
        self.lock_off = offset
        if offset is None:
            self.desc[nat.W_FLAGS] = int(self.desc[nat.W_FLAGS]) & ~nat.F_LOCK
        else:
            self.desc[nat.W_FLAGS] = int(self.desc[nat.W_FLAGS]) | nat.F_LOCK
            self.desc[nat.W_LOCK_OFF] = offset

    def value_addr(self, index: int = 0, offset: int = 0, cpu: int = 0) -> int:
        """Program address of entry `index` + `offset` (lddw PSEUDO_MAP_VALUE gives index 0)."""
        return ((self.store.rid + cpu) << 32) | (index * self.value_stride + offset)

    def view(self, cpu: int = 0) -> np.ndarray:
        """The entries as a (max_entries, stride) uint8 array (a view, not a copy)."""
        return self.store.views[cpu].reshape(self.max_entries, self.value_stride)

    # ------------------------------------------------------------ primitives

    def _index(self, key: bytes) -> int:
        return int.from_bytes(key, "little")

    def _lookup(self, key: bytes) -> Any:
        i = self._index(key)
        if i >= self.max_entries:
            return -_errno.ENOENT
        if self.percpu:
            return [self.store.get(i, self.value_stride, c) for c in range(self.cpus)]
        return self.store.get(i, self.value_size)

    def _update(self, key: bytes, value: Any, flags: int) -> int:
        # kernel order (arraymap.c): unknown flags, index range, NOEXIST, lock without a lock
        if (flags & ~BPF_F_LOCK) > BPF_EXIST:
            return -_errno.EINVAL
        i = self._index(key)
        if i >= self.max_entries:
            return -_errno.E2BIG
        if flags & BPF_NOEXIST:
            return -_errno.EEXIST
        if flags & BPF_F_LOCK and self.lock_off is None:
            return -_errno.EINVAL
        if self.percpu:
            for c, v in enumerate(value):
                self.store.put(i, v, c)
        else:
            self.store.put(i, value, 0, self.lock_off)
        return 0

    def _delete(self, key: bytes) -> int:
        return -_errno.EINVAL  # array elements always exist

    def _iter_keys(self) -> Iterator[bytes]:
        return (i.to_bytes(4, "little") for i in range(self.max_entries))

    def _count(self) -> int:
        return self.max_entries

    def next_key(self, key: Any | None = None) -> bytes | None:
        if key is None:
            return (0).to_bytes(4, "little")
        i = self._index(self._key(key))
        if i >= self.max_entries:
            return (0).to_bytes(4, "little")  # the kernel restarts from 0 for an out-of-range key
        if i == self.max_entries - 1:
            return None
        return (i + 1).to_bytes(4, "little")

    def clear(self) -> None:
        self.store.buf[:] = 0

    def nonzero_indices(self) -> np.ndarray:
        """Indices whose value (on any CPU) has a non-zero byte; reads, never writes, the storage."""
        hit = np.zeros(self.max_entries, dtype=bool)
        chunk = max(1, (1 << 24) // self.value_stride)
        for c in range(self.store.copies):
            v = self.view(c)
            for s in range(0, self.max_entries, chunk):
                hit[s : s + chunk] |= v[s : s + chunk].any(axis=1)
        return np.flatnonzero(hit)

    def to_json(self) -> dict:
        if self.max_entries <= JSON_FULL_ARRAY_LIMIT:
            return super().to_json()
        entries = {}
        for i in self.nonzero_indices().tolist():
            k = int(i).to_bytes(4, "little")
            entries[k.hex()] = self._json_value(self._lookup(k))
        return {"type": self.type_name, "entries": entries, "nonzero_only": True}

    # ------------------------------------------------------------ program-facing

    def prog_lookup(self, key_addr: int, cpu: int = 0) -> int:
        # same arithmetic as xdpsim_map_lookup's K_ARRAY case, without the ctypes call
        i = self.mem.load(key_addr, 4)
        if i >= self.max_entries:
            return 0
        return ((self.store.rid + cpu * self._percpu_factor) << 32) | (i * self.value_stride)

    def prog_update(self, key_addr: int, value_addr: int, flags: int, cpu: int = 0) -> int:
        if self.frozen:
            return -_errno.EPERM
        k = self.mem.host(key_addr, 4)
        v = self.mem.host(value_addr, self.value_size)
        return nat.native().map_update(self.native_descriptor(), k, v, flags, cpu)

    def prog_delete(self, key_addr: int, cpu: int = 0) -> int:
        self.mem.check(key_addr, 4)
        return -_errno.EINVAL


class PercpuArrayMap(ArrayMap):
    """BPF_MAP_TYPE_PERCPU_ARRAY: one value region per simulated CPU."""

    percpu = True
