"""The Map base class: identity, key/value normalisation, the dict-like user API and JSON dumps.

Subclasses implement a handful of primitives on normalised bytes (`_lookup`, `_update`, `_delete`,
`_iter_keys`, `_count`) that return values or negative errnos the way the kernel's map ops do; this
class turns those into the Python API (exceptions carrying the kernel's errno) and never touches
storage itself.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..errors import MapError
from ..memory import MAP_HANDLES, REGION_SHIFT, AddressSpace
from ..spec import MapSpec, MapType
from . import native as nat

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2
BPF_F_LOCK = 4

# map_flags (include/uapi/linux/bpf.h)
BPF_F_NO_PREALLOC = 1 << 0
BPF_F_NO_COMMON_LRU = 1 << 1
BPF_F_NUMA_NODE = 1 << 2
BPF_F_RDONLY = 1 << 3
BPF_F_WRONLY = 1 << 4
BPF_F_ZERO_SEED = 1 << 6
BPF_F_RDONLY_PROG = 1 << 7
BPF_F_WRONLY_PROG = 1 << 8
BPF_F_MMAPABLE = 1 << 10
BPF_F_INNER_MAP = 1 << 12

ENOTSUPP = 524  # kernel-internal errno some map ops return to user space

# Above this many entries, array dumps list only non-zero entries.
JSON_FULL_ARRAY_LIMIT = 65536

_ERRNO_NAMES = {ENOTSUPP: "ENOTSUPP"}


def errno_name(err: int) -> str:
    err = abs(err)
    return _ERRNO_NAMES.get(err) or _errno.errorcode.get(err, str(err))


def is_err(r: Any) -> bool:
    """Primitives return values (bytes, per-CPU lists, or ids >= 0) or negative errnos."""
    return isinstance(r, int) and r < 0


def round8(n: int) -> int:
    return (n + 7) & ~7


class MapKeyError(MapError, KeyError):
    """A missing key (ENOENT): both a MapError with errno and a KeyError, so `m[k]` is dict-like."""

    def __str__(self) -> str:
        return MapError.__str__(self)


def type_name(t: MapType | int) -> str:
    try:
        return MapType(t).name.lower()
    except ValueError:
        return f"type {int(t)}"


class Map:
    """A runtime map. See docs/ARCHITECTURE.md "Maps" for the contract.

    Attributes: `spec`, `id`, `handle` (the program-visible value of `lddw rX, map`), `name`, `type`,
    `key_size`, `value_size`, `max_entries`, `flags`, `cpus`, `values_region` (region id of the
    value storage, CPU 0's for per-CPU maps, None when programs get no value pointers).
    """

    percpu = False
    #: operations `Map.native_descriptor()` supports through xdpsim_map_lookup/update/delete
    native_ops: frozenset[str] = frozenset()

    def __init__(self, spec: MapSpec, mem: AddressSpace, cpus: int, map_id: int):
        self.spec = spec
        self.mem = mem
        self.cpus = cpus
        self.id = map_id
        self.handle = (MAP_HANDLES << REGION_SHIFT) | map_id
        self.name = spec.name
        self.type = MapType(spec.type)
        self.key_size = spec.key_size
        self.value_size = spec.value_size
        self.max_entries = spec.max_entries
        self.flags = spec.flags
        self.value_stride = round8(self.value_size)
        self.values_region: int | None = None
        self.frozen = False
        self.desc = nat.new_descriptor()
        d = self.desc
        d[nat.W_KEY_SIZE] = self.key_size
        d[nat.W_VALUE_SIZE] = self.value_size
        d[nat.W_VALUE_STRIDE] = self.value_stride
        d[nat.W_MAX_ENTRIES] = self.max_entries
        d[nat.W_NCPUS] = cpus
        d[nat.W_SEED] = nat.HASH_SEED
        d[nat.W_HANDLE_BASE] = MAP_HANDLES << REGION_SHIFT
        self._keep: list[Any] = []  # buffers the descriptor points to

    # ------------------------------------------------------------------ identity

    @property
    def type_name(self) -> str:
        return type_name(self.type)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name!r} id={self.id} {self.type_name} key={self.key_size} "
            f"value={self.value_size} max={self.max_entries}>"
        )

    def native_descriptor(self) -> int:
        """Host address of this map's descriptor (layout in maps/native.py)."""
        return self.desc.ctypes.data

    def _pin(self, buf: np.ndarray) -> int:
        self._keep.append(buf)
        return buf.ctypes.data

    def _errmsg(self, what: str, err: int, detail: str = "") -> str:
        msg = f"map {self.name} ({self.type_name}): {what}: {errno_name(err)}"
        return msg + (f" ({detail})" if detail else "")

    def _raise(self, what: str, err: int, key: bytes | None = None, detail: str = "") -> None:
        err = abs(err)
        if key is not None:
            what = f"{what} of key {key.hex() or '(none)'}"
        if err == _errno.ENOENT:
            raise MapKeyError(self._errmsg(what, err, detail), err)
        raise MapError(self._errmsg(what, err, detail), err)

    # ------------------------------------------------------------------ normalisation

    def _key(self, key: Any) -> bytes:
        ks = self.key_size
        if isinstance(key, bool):
            raise TypeError(f"map {self.name}: a bool is not a key")
        if isinstance(key, int):
            if ks not in (1, 2, 4, 8) or not 0 <= key < 1 << (8 * ks):
                raise MapError(self._errmsg(f"key {key}", _errno.EINVAL, f"not a u{8 * ks} index"),
                               _errno.EINVAL)
            return key.to_bytes(ks, "little")
        if isinstance(key, bytes | bytearray | memoryview):
            b = bytes(key)
            if len(b) != ks:
                raise MapError(self._errmsg(f"key {b.hex()}", _errno.EINVAL,
                                            f"{len(b)} bytes, the map's key_size is {ks}"), _errno.EINVAL)
            return b
        raise TypeError(f"map {self.name}: keys are bytes or int, not {type(key).__name__}")

    def _value(self, value: Any, size: int | None = None) -> bytes:
        vs = self.value_size if size is None else size
        if isinstance(value, bool):
            raise TypeError(f"map {self.name}: a bool is not a value")
        if isinstance(value, int):
            if vs == 0 or not -(1 << (8 * vs - 1)) <= value < 1 << (8 * vs):
                raise MapError(self._errmsg(f"value {value}", _errno.EINVAL,
                                            f"an int does not fit the {vs}-byte value"), _errno.EINVAL)
            return (value & ((1 << (8 * vs)) - 1)).to_bytes(vs, "little")
        if isinstance(value, bytes | bytearray | memoryview):
            b = bytes(value)
            if len(b) != vs:
                raise MapError(self._errmsg("value", _errno.EINVAL,
                                            f"{len(b)} bytes, the map's value_size is {vs}"), _errno.EINVAL)
            return b
        raise TypeError(f"map {self.name}: values are bytes or int, not {type(value).__name__}")

    def _percpu_values(self, value: Any) -> list[bytes]:
        """Per-CPU update argument -> one value_size bytes per CPU.

        Accepted: a list/tuple of one value per CPU (value_size or rounded-up size each), the
        kernel's syscall buffer (cpus x round_up(value_size, 8) bytes), or one value for every CPU.
        """
        vs, st, n = self.value_size, self.value_stride, self.cpus
        if isinstance(value, list | tuple):
            if len(value) != n:
                raise MapError(self._errmsg("per-CPU value", _errno.EINVAL,
                                            f"{len(value)} values for {n} CPUs"), _errno.EINVAL)
            out = []
            for v in value:
                if isinstance(v, bytes | bytearray | memoryview) and len(v) == st and st != vs:
                    v = bytes(v)[:vs]
                out.append(self._value(v))
            return out
        if isinstance(value, bytes | bytearray | memoryview) and len(value) == n * st and not (
            n == 1 and st == vs
        ):
            b = bytes(value)
            return [b[i * st : i * st + vs] for i in range(n)]
        return [self._value(value)] * n

    def _check_user_write(self, what: str) -> None:
        if self.frozen or self.flags & BPF_F_RDONLY:
            # the kernel refuses syscall writes to frozen or BPF_F_RDONLY maps with EPERM
            raise MapError(self._errmsg(what, _errno.EPERM, "map is read-only for user space"), _errno.EPERM)

    def _check_user_read(self, what: str) -> None:
        if self.flags & BPF_F_WRONLY:
            raise MapError(self._errmsg(what, _errno.EPERM, "map is write-only for user space"), _errno.EPERM)

    # ------------------------------------------------------------------ primitives (subclasses)

    def _lookup(self, key: bytes) -> Any:
        """Value for `key` (bytes, a list of bytes per CPU, or an id >= 0) or a negative errno."""
        return -_errno.EOPNOTSUPP

    def _update(self, key: bytes, value: Any, flags: int) -> int:
        return -_errno.EOPNOTSUPP

    def _delete(self, key: bytes) -> int:
        return -_errno.EOPNOTSUPP

    def _iter_keys(self) -> Iterator[bytes]:
        return iter(())

    def _count(self) -> int:
        return sum(1 for _ in self._iter_keys())

    def _norm_value(self, value: Any) -> Any:
        return self._percpu_values(value) if self.percpu else self._value(value)

    # ------------------------------------------------------------------ user-space (dict-like) API

    def lookup(self, key: Any) -> Any:
        """The value (per-CPU maps: a list of one bytes per CPU, each rounded up to 8 bytes).
        A missing key raises MapKeyError (a KeyError and a MapError with errno ENOENT)."""
        k = self._key(key)
        self._check_user_read("lookup")
        r = self._lookup(k)
        if is_err(r):
            self._raise("lookup", r, k)
        return r

    def update(self, key: Any, value: Any, flags: int = BPF_ANY) -> None:
        k = self._key(key)
        self._check_user_write("update")
        r = self._update(k, self._norm_value(value), flags)
        if r < 0:
            self._raise("update", r, k)

    def delete(self, key: Any) -> None:
        k = self._key(key)
        self._check_user_write("delete")
        r = self._delete(k)
        if r < 0:
            self._raise("delete", r, k)

    def next_key(self, key: Any | None = None) -> bytes | None:
        """BPF_MAP_GET_NEXT_KEY: the key after `key` (first when None or absent); None at the end."""
        k = None if key is None else self._key(key)
        it = self._iter_keys()
        first = next(it, None)
        if k is None or first is None:
            return first
        seen = first == k
        for x in it:
            if seen:
                return x
            seen = x == k
        return None if seen else first

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self.lookup(key)
        except KeyError:
            return default

    def __getitem__(self, key: Any) -> Any:
        return self.lookup(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.update(key, value, BPF_ANY)

    def __delitem__(self, key: Any) -> None:
        self.delete(key)

    def __contains__(self, key: Any) -> bool:
        try:
            k = self._key(key)
        except (MapError, TypeError):
            return False
        return not is_err(self._lookup(k))

    def __len__(self) -> int:
        return self._count()

    def __iter__(self) -> Iterator[bytes]:
        return self._iter_keys()

    def keys(self) -> list[bytes]:
        return list(self._iter_keys())

    def values(self) -> list[Any]:
        return [v for _, v in self.items()]

    def items(self) -> list[tuple[bytes, Any]]:
        out = []
        for k in self._iter_keys():
            v = self._lookup(k)
            if not is_err(v):
                out.append((k, v))
        return out

    def clear(self) -> None:
        """Delete every entry (arrays: zero every value)."""
        for k in list(self._iter_keys()):
            self._delete(k)

    # ------------------------------------------------------------------ program-facing API

    def prog_lookup(self, key_addr: int, cpu: int = 0) -> int:
        """bpf_map_lookup_elem: program address of the value, or 0."""
        return 0

    def prog_update(self, key_addr: int, value_addr: int, flags: int, cpu: int = 0) -> int:
        """bpf_map_update_elem: 0 or a negative errno."""
        return -_errno.EINVAL

    def prog_delete(self, key_addr: int, cpu: int = 0) -> int:
        """bpf_map_delete_elem: 0 or a negative errno."""
        return -_errno.EINVAL

    # ------------------------------------------------------------------ dumps

    def _json_value(self, v: Any) -> Any:
        if isinstance(v, list):
            return [x.hex() for x in v]
        if isinstance(v, int):
            return v
        return v.hex()

    def to_json(self) -> dict:
        """`{"type": ..., "entries": {key hex: value hex | [per-CPU hex...]}}`."""
        return {
            "type": self.type_name,
            "entries": {k.hex(): self._json_value(v) for k, v in self.items()},
        }

    # hooks the runtime may set
    #: map id -> Map (maps of maps validate inner maps with it)
    map_resolver: Callable[[int], Any] | None = None
    #: program id -> bool (prog arrays and devmap/cpumap programs validate ids with it)
    prog_resolver: Callable[[int], bool] | None = None
