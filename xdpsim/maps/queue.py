"""BPF_MAP_TYPE_QUEUE and BPF_MAP_TYPE_STACK (kernel/bpf/queue_stack_maps.c).

No keys: push, pop and peek. A push on a full map fails with E2BIG unless its flags say BPF_EXIST,
which drops the oldest element to make room (for a stack too: the bottom one); BPF_NOEXIST or
unknown flags give EINVAL; pop and peek on an empty map give ENOENT. From user space, update(None,
value) pushes, lookup(None) peeks, `pop()` is BPF_MAP_LOOKUP_AND_DELETE_ELEM; delete and
get_next_key fail with EINVAL. Values are copied in and out, so programs never hold pointers into the
storage, which therefore stays Python-side.
"""

from __future__ import annotations

import errno as _errno
from collections import deque
from collections.abc import Iterator
from typing import Any

from ..memory import AddressSpace
from ..spec import MapSpec
from .array import refuse
from .base import BPF_EXIST, BPF_F_NO_PREALLOC, BPF_NOEXIST, Map


class QueueMap(Map):
    lifo = False

    def __init__(self, spec: MapSpec, mem: AddressSpace, cpus: int, map_id: int):
        super().__init__(spec, mem, cpus, map_id)
        if spec.key_size != 0 or spec.value_size == 0 or spec.max_entries == 0:
            raise refuse(spec, "key_size must be 0, value_size and max_entries non-zero")
        if spec.flags & BPF_F_NO_PREALLOC:
            raise refuse(spec, "BPF_F_NO_PREALLOC is not allowed")
        self._items: deque[bytes] = deque()

    # ------------------------------------------------------------ core (errno-returning)

    def push(self, value: Any, flags: int = 0) -> int:
        """0 or -errno (see the module docstring)."""
        if flags & BPF_NOEXIST or flags > BPF_EXIST:
            return -_errno.EINVAL
        v = self._value(value)
        if len(self._items) >= self.max_entries:
            if not flags & BPF_EXIST:
                return -_errno.E2BIG
            self._items.popleft()  # the oldest element goes, queue or stack
        self._items.append(v)
        return 0

    def _take(self, remove: bool) -> bytes | int:
        if not self._items:
            return -_errno.ENOENT
        if self.lifo:
            return self._items.pop() if remove else self._items[-1]
        return self._items.popleft() if remove else self._items[0]

    # ------------------------------------------------------------ user space

    def _key(self, key: Any) -> bytes:
        if key not in (None, b""):
            raise TypeError(f"map {self.name}: a {self.type_name} has no keys (use None)")
        return b""

    def lookup(self, key: Any = None) -> Any:
        """Peek."""
        r = self._take(False)
        if isinstance(r, int):
            self._raise("peek", r)
        return r

    def pop(self) -> bytes:
        r = self._take(True)
        if isinstance(r, int):
            self._raise("pop", r)
        return r

    def peek(self) -> bytes:
        return self.lookup(None)

    def update(self, key: Any, value: Any, flags: int = 0) -> None:
        self._key(key)
        self._check_user_write("push")
        r = self.push(value, flags)
        if r < 0:
            self._raise("push", r)

    def delete(self, key: Any = None) -> None:
        self._raise("delete", -_errno.EINVAL)

    def next_key(self, key: Any | None = None) -> bytes | None:
        self._raise("get_next_key", -_errno.EINVAL)
        return None

    def __contains__(self, key: Any) -> bool:
        return False

    def _iter_keys(self) -> Iterator[bytes]:
        return iter(())

    def _count(self) -> int:
        return len(self._items)

    def values(self) -> list[bytes]:
        """Elements in the order pops would return them."""
        return list(reversed(self._items)) if self.lifo else list(self._items)

    def items(self) -> list[tuple[bytes, Any]]:
        return []

    def clear(self) -> None:
        self._items.clear()

    def to_json(self) -> dict:
        return {"type": self.type_name, "entries": {}, "values": [v.hex() for v in self.values()]}

    # ------------------------------------------------------------ programs

    def prog_push(self, value_addr: int, flags: int, cpu: int = 0) -> int:
        """bpf_map_push_elem."""
        return self.push(self.mem.read(value_addr, self.value_size), flags)

    def prog_pop(self, value_addr: int, cpu: int = 0) -> int:
        """bpf_map_pop_elem: the element is written to `value_addr`."""
        self.mem.check(value_addr, self.value_size, write=True)
        r = self._take(True)
        if isinstance(r, int):
            return r
        self.mem.write(value_addr, r)
        return 0

    def prog_peek(self, value_addr: int, cpu: int = 0) -> int:
        """bpf_map_peek_elem."""
        self.mem.check(value_addr, self.value_size, write=True)
        r = self._take(False)
        if isinstance(r, int):
            return r
        self.mem.write(value_addr, r)
        return 0


class StackMap(QueueMap):
    lifo = True
