"""Maps whose values name other objects: prog_array, array_of_maps, hash_of_maps.

The kernel stores file descriptors' objects and gives user space their ids back; xdpsim stores ids:
program ids for prog arrays, map ids for maps of maps (the runtime assigns both and may set
`name_resolver`, `prog_resolver` and `map_resolver` so that names work and bad ids are refused).

`ProgArrayMap.table` and `ArrayOfMapsMap.table` are numpy int32 arrays of `max_entries` (-1 = empty)
that never move; the JIT reads them directly (descriptor word TABLE holds their address):
a tail call through index i jumps to program `table[i]` when `i < max_entries` and `table[i] >= 0`.
Updates from user space are immediate; the runtime runs them between packets.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..errors import LoadError
from ..memory import MAP_HANDLES, R_READ, REGION_SHIFT, AddressSpace
from ..spec import MapSpec, MapType
from . import native as nat
from .array import refuse
from .base import BPF_ANY, BPF_F_INNER_MAP, Map
from .hash import HashMap
from .redirect import array_next_key


class _FdArray(Map):
    """Array of ids, -1 = empty, with the kernel's fd_array update/delete rules."""

    what = "id"

    def __init__(self, spec: MapSpec, mem: AddressSpace, cpus: int, map_id: int):
        super().__init__(spec, mem, cpus, map_id)
        if spec.key_size != 4 or spec.value_size != 4 or spec.max_entries == 0:
            raise refuse(spec, "key_size and value_size must be 4, max_entries non-zero")
        self.table = np.full(self.max_entries, -1, dtype=np.int32)
        self.desc[nat.W_TABLE] = self._pin(self.table)

    @property
    def table_address(self) -> int:
        return self.table.ctypes.data

    def _norm_value(self, value: Any) -> int:
        if isinstance(value, str):
            if self.name_resolver is None:
                raise TypeError(f"map {self.name}: {value!r} is a name and no runtime resolves names here")
            return int(self.name_resolver(value))
        if isinstance(value, bytes | bytearray | memoryview):
            return int.from_bytes(self._value(value), "little", signed=True)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError(f"map {self.name}: values are {self.what}s (int), not {type(value).__name__}")

    def _valid(self, ident: int) -> int:
        """0, or the errno refusing `ident`."""
        return 0

    def _update(self, key: bytes, value: int, flags: int) -> int:
        # kernel order (arraymap.c bpf_fd_array_map_update_elem): flags, range, the fd itself
        if flags != BPF_ANY:
            return -_errno.EINVAL
        i = int.from_bytes(key, "little")
        if i >= self.max_entries:
            return -_errno.E2BIG
        if value < 0:
            return -_errno.EBADF
        err = self._valid(value)
        if err:
            return err
        self.table[i] = value
        return 0

    def _lookup(self, key: bytes) -> Any:
        i = int.from_bytes(key, "little")
        if i >= self.max_entries or self.table[i] < 0:
            return -_errno.ENOENT
        return int(self.table[i])

    def _delete(self, key: bytes) -> int:
        i = int.from_bytes(key, "little")
        if i >= self.max_entries:
            return -_errno.E2BIG
        if self.table[i] < 0:
            return -_errno.ENOENT
        self.table[i] = -1
        return 0

    def _iter_keys(self) -> Iterator[bytes]:
        return (int(i).to_bytes(4, "little") for i in np.flatnonzero(self.table >= 0))

    def _count(self) -> int:
        return int(np.count_nonzero(self.table >= 0))

    def next_key(self, key: Any | None = None) -> bytes | None:
        return array_next_key(self.max_entries, None if key is None else self._key(key))

    def at(self, index: int) -> int | None:
        """The id at `index`, or None (empty or out of range): the tail-call fast path."""
        if 0 <= index < self.max_entries:
            v = int(self.table[index])
            return v if v >= 0 else None
        return None

    #: name -> id (the runtime's program or map names)
    name_resolver: Callable[[str], int] | None = None


class ProgArrayMap(_FdArray):
    """BPF_MAP_TYPE_PROG_ARRAY: index -> program id (bpf_tail_call's jump table)."""

    what = "program id"

    def _valid(self, ident: int) -> int:
        if self.prog_resolver is not None and not self.prog_resolver(ident):
            return -_errno.EBADF
        return 0


def inner_compatible(template: MapSpec, inner: Any) -> bool:
    """The kernel's bpf_map_meta_equal: same type, sizes and flags; same max_entries unless the
    template has BPF_F_INNER_MAP."""
    s = inner.spec
    if MapType(s.type) != MapType(template.type) or s.key_size != template.key_size:
        return False
    if s.value_size != template.value_size:
        return False
    if (s.flags & ~BPF_F_INNER_MAP) != (template.flags & ~BPF_F_INNER_MAP):
        return False
    return bool(template.flags & BPF_F_INNER_MAP) or s.max_entries == template.max_entries


def _check_inner(m: Map, ident: int) -> int:
    if m.map_resolver is None:
        return 0
    inner = m.map_resolver(ident)
    if inner is None:
        return -_errno.EBADF
    if MapType(inner.spec.type) in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
        return -_errno.EINVAL  # no nesting beyond one level
    return 0 if inner_compatible(m.spec.inner, inner) else -_errno.EINVAL


class ArrayOfMapsMap(_FdArray):
    """BPF_MAP_TYPE_ARRAY_OF_MAPS: index -> inner map id. Programs' lookups give the inner map's handle."""

    what = "map id"
    native_ops = frozenset({"lookup"})

    def __init__(self, spec: MapSpec, mem: AddressSpace, cpus: int, map_id: int):
        if spec.inner is None:
            raise LoadError(f"map {spec.name} (array_of_maps): no inner map template (the kernel "
                            "refuses BPF_MAP_CREATE with EINVAL)")
        super().__init__(spec, mem, cpus, map_id)
        self.desc[nat.W_KIND] = nat.K_ARRAY_OF_MAPS

    def _valid(self, ident: int) -> int:
        return _check_inner(self, ident)

    def prog_lookup(self, key_addr: int, cpu: int = 0) -> int:
        i = self.mem.load(key_addr, 4)
        if i >= self.max_entries or self.table[i] < 0:
            return 0
        return (MAP_HANDLES << REGION_SHIFT) | int(self.table[i])


class HashOfMapsMap(HashMap):
    """BPF_MAP_TYPE_HASH_OF_MAPS: key -> inner map id (stored as the 4-byte value)."""

    native_ops = frozenset({"lookup"})

    def __init__(self, spec: MapSpec, mem: AddressSpace, cpus: int, map_id: int):
        if spec.inner is None:
            raise LoadError(f"map {spec.name} (hash_of_maps): no inner map template (the kernel "
                            "refuses BPF_MAP_CREATE with EINVAL)")
        if spec.value_size != 4:
            raise refuse(spec, "value_size must be 4")
        super().__init__(spec, mem, cpus, map_id, region_flags=R_READ)
        self.desc[nat.W_KIND] = nat.K_HASH_OF_MAPS

    _norm_value = _FdArray._norm_value
    what = "map id"
    name_resolver: Callable[[str], int] | None = None

    def _update(self, key: bytes, value: int, flags: int) -> int:
        if value < 0:
            return -_errno.EBADF
        err = _check_inner(self, value)
        if err:
            return err
        return super()._update(key, value.to_bytes(4, "little"), flags)

    def _read(self, slot: int) -> Any:
        return int.from_bytes(self.store.get(slot, 4), "little")

    def prog_update(self, key_addr: int, value_addr: int, flags: int, cpu: int = 0) -> int:
        return -_errno.EINVAL  # programs cannot insert maps

    def prog_delete(self, key_addr: int, cpu: int = 0) -> int:
        return -_errno.EINVAL
