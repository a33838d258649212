"""Hash maps: hash, percpu_hash, lru_hash, lru_percpu_hash (and the table under devmap_hash and
hash_of_maps). The algorithm is native (maps/native.py); this module allocates its storage and wraps it.

Storage (all lazily zeroed, so `max_entries` is a limit, not an allocation, yet never moves):
- value slots: `max_entries x round_up(value_size, 8)` bytes per CPU, one region per CPU. A value
  pointer handed to a program stays valid for the map's life (the kernel's preallocated elements
  behave the same: a deleted element's memory is reused by a later insert);
- entry records: `max_entries x (24 + round_up(key_size, 8))` (hash, chain and list links, key);
- buckets: `roundup_pow_of_two(max_entries)` u32 chain heads, as the kernel sizes its table.
All-zero is the empty state (links are slot+1), so nothing is touched at creation.

Iteration order is insertion order (a deleted and re-inserted key goes to the end); the kernel's
depends on a random hash seed. LRU maps evict exactly the least recently used entry when an insert
finds the map full (program lookups and every update make an entry most recent; user-space lookups
do not, as in the kernel). The kernel's LRU is approximate and per-CPU, so it may evict a different
entry, or evict before the map is full; updating an existing key never evicts here.
"""

from __future__ import annotations

import ctypes
import errno as _errno
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..memory import AddressSpace, zeros
from ..spec import MapSpec, MapType
from . import native as nat
from .array import ValueStorage, prog_region_flags, refuse
from .base import BPF_F_NO_PREALLOC, ENOTSUPP, Map, round8


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class HashTable:
    """The native hash table of one map: entry records, buckets, descriptor words."""

    def __init__(self, m: Map, lru: bool):
        self.m = m
        d = m.desc
        self.key_size = m.key_size
        self.entry_stride = nat.ENTRY_HEADER + round8(m.key_size)
        self.entries = zeros(m.max_entries * self.entry_stride)
        nb = _pow2(m.max_entries)
        self.buckets = zeros(nb * 4)
        d[nat.W_KIND] = nat.K_HASH
        d[nat.W_FLAGS] = int(d[nat.W_FLAGS]) | (nat.F_LRU if lru else 0)
        d[nat.W_ENTRIES] = m._pin(self.entries)
        d[nat.W_ENTRY_STRIDE] = self.entry_stride
        d[nat.W_BUCKETS] = m._pin(self.buckets)
        d[nat.W_BUCKET_MASK] = nb - 1
        self.ent32 = self.entries.view(np.uint32)
        self.words = self.entry_stride // 4
        self.n = nat.native()
        self.daddr = m.native_descriptor()

    @property
    def count(self) -> int:
        return int(self.m.desc[nat.W_COUNT])

    def find(self, key: bytes) -> int:
        return self.n.hash_lookup(self.daddr, key)

    def slots(self) -> Iterator[int]:
        """Live slots in insertion order."""
        d, e, w = self.m.desc, self.ent32, self.words
        s1 = int(d[nat.W_ORD_HEAD])
        while s1:
            nxt = int(e[(s1 - 1) * w + nat.E_ORD_NEXT // 4])  # read before the caller may delete it
            yield s1 - 1
            s1 = nxt

    def lru_slots(self) -> list[int]:
        """Live slots from most to least recently used (LRU maps)."""
        d, e, w = self.m.desc, self.ent32, self.words
        out, s1 = [], int(d[nat.W_LRU_HEAD])
        while s1:
            out.append(s1 - 1)
            s1 = int(e[(s1 - 1) * w + nat.E_LRU_NEXT // 4])
        return out

    def key_at(self, slot: int) -> bytes:
        o = slot * self.entry_stride + nat.E_KEY
        return self.entries[o : o + self.key_size].tobytes()


class HashMap(Map):
    """BPF_MAP_TYPE_HASH; the per-CPU and LRU variants set the class attributes."""

    lru = False
    native_ops = frozenset({"lookup", "update", "delete"})

    def __init__(self, spec: MapSpec, mem: AddressSpace, cpus: int, map_id: int, *, region_flags=None):
        super().__init__(spec, mem, cpus, map_id)
        if spec.key_size == 0 or spec.value_size == 0 or spec.max_entries == 0:
            raise refuse(spec, "key_size, value_size and max_entries must be non-zero")
        if self.lru and spec.flags & BPF_F_NO_PREALLOC:
            raise refuse(spec, "LRU maps are always preallocated (BPF_F_NO_PREALLOC)", "ENOTSUPP")
        self.lock_off: int | None = None
        self.desc[nat.W_FLAGS] = nat.F_PERCPU if self.percpu else 0
        copies = cpus if self.percpu else 1
        self.table = HashTable(self, self.lru)
        flags = prog_region_flags(spec.flags) if region_flags is None else region_flags
        self.store = ValueStorage(self, self.max_entries, copies, flags)
        self._n = nat.native()
        self._d = self.native_descriptor()

    def set_spin_lock(self, offset: int | None) -> None:
        """The value holds a `struct bpf_spin_lock` at `offset` (from BTF): enables BPF_F_LOCK."""
        self.lock_off = offset
        f = int(self.desc[nat.W_FLAGS]) & ~nat.F_LOCK
        self.desc[nat.W_FLAGS] = f | (nat.F_LOCK if offset is not None else 0)
        self.desc[nat.W_LOCK_OFF] = offset or 0

    @property
    def evictions(self) -> int:
        return int(self.desc[nat.W_EVICTIONS])

    def lru_order(self) -> list[bytes]:
        """Keys from most to least recently used (the last one is evicted next)."""
        return [self.table.key_at(s) for s in self.table.lru_slots()]

    def value_addr(self, slot: int, cpu: int = 0) -> int:
        return ((self.store.rid + (cpu if self.percpu else 0)) << 32) | (slot * self.value_stride)

    # ------------------------------------------------------------ primitives

    def _read(self, slot: int) -> Any:
        if self.percpu:
            return [self.store.get(slot, self.value_stride, c) for c in range(self.cpus)]
        return self.store.get(slot, self.value_size)

    def _lookup(self, key: bytes) -> Any:
        slot = self._n.hash_lookup(self._d, key)
        return -_errno.ENOENT if slot < 0 else self._read(slot)

    def _update(self, key: bytes, value: Any, flags: int) -> int:
        if self.percpu:
            slot = self._n.hash_update(self._d, key, None, flags, 0)
            if slot >= 0:
                for c, v in enumerate(value):
                    self.store.put(slot, v + bytes(self.value_stride - len(v)), c)
        else:
            slot = self._n.hash_update(self._d, key, value, flags, 0)
        return min(slot, 0)

    def _delete(self, key: bytes) -> int:
        return self._n.hash_delete(self._d, key)

    def _iter_keys(self) -> Iterator[bytes]:
        t = self.table
        return (t.key_at(s) for s in list(t.slots()))

    def _count(self) -> int:
        return self.table.count

    def next_key(self, key: Any | None = None) -> bytes | None:
        k = None if key is None else self._key(key)
        buf = ctypes.create_string_buffer(self.key_size)
        r = self._n.hash_next_key(self._d, k, buf)
        return None if r < 0 else buf.raw

    def items(self) -> list[tuple[bytes, Any]]:
        t = self.table
        return [(t.key_at(s), self._read(s)) for s in list(t.slots())]

    def lookup_and_delete(self, key: Any) -> Any:
        """BPF_MAP_LOOKUP_AND_DELETE_ELEM (hash maps only, as the kernel)."""
        v = self.lookup(key)
        self.delete(key)
        return v

    # ------------------------------------------------------------ program-facing

    def prog_lookup(self, key_addr: int, cpu: int = 0) -> int:
        k = self.mem.host(key_addr, self.key_size)
        return self._n.map_lookup(self._d, k, cpu)

    def prog_update(self, key_addr: int, value_addr: int, flags: int, cpu: int = 0) -> int:
        k = self.mem.host(key_addr, self.key_size)
        v = self.mem.host(value_addr, self.value_size)
        return self._n.map_update(self._d, k, v, flags, cpu)

    def prog_delete(self, key_addr: int, cpu: int = 0) -> int:
        k = self.mem.host(key_addr, self.key_size)
        return self._n.map_delete(self._d, k)


class PercpuHashMap(HashMap):
    percpu = True


class LruHashMap(HashMap):
    lru = True


class LruPercpuHashMap(HashMap):
    lru = True
    percpu = True


HASH_CLASSES = {
    MapType.HASH: HashMap,
    MapType.PERCPU_HASH: PercpuHashMap,
    MapType.LRU_HASH: LruHashMap,
    MapType.LRU_PERCPU_HASH: LruPercpuHashMap,
}

__all__ = ["HashMap", "PercpuHashMap", "LruHashMap", "LruPercpuHashMap", "HashTable", "ENOTSUPP"]
