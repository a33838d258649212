"""BPF_MAP_TYPE_LPM_TRIE: longest-prefix match on `{u32 prefixlen; u8 data[key_size - 4]}` keys.

The trie has the kernel's shape (kernel/bpf/lpm_trie.c): a path-compressed binary trie whose nodes
carry a prefix; intermediate nodes (no value) exist only where two branches meet and always have two
children. That shape is canonical for a set of prefixes, so iteration -- post-order, child 0 before
child 1, intermediate nodes skipped -- gives the kernel's order, and lookups agree with it bit for bit.

Lookup is native (`xdpsim_lpm_lookup`, also used by `xdpsim_map_lookup` for programs); insert and
delete are Python working on the same node records (layout in maps/native.py). Node records live in
one lazily zeroed buffer of 2 x max_entries + 1 nodes (a trie of n prefixes has at most n - 1
intermediate nodes); values live in their own slots so a value pointer handed to a program stays put
when the trie is restructured around it.

As the kernel: a lookup takes the longest stored prefix whose length is at most the key's
prefixlen (user-space lookups too, so `key in m` means "covered by"), a lookup prefixlen above the
maximum finds nothing, updates and deletes with such a key fail with EINVAL, a full trie refuses new
prefixes with ENOSPC, and a stored key keeps the data bytes it was last written with (bits past the
prefix included), which is what iteration returns.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..memory import AddressSpace, zeros
from ..spec import MapSpec
from . import native as nat
from .array import ValueStorage, prog_region_flags, refuse
from .base import BPF_EXIST, BPF_F_NO_PREALLOC, BPF_NOEXIST, Map, round8

LPM_DATA_SIZE_MIN = 1
LPM_DATA_SIZE_MAX = 256


class LpmTrieMap(Map):
    native_ops = frozenset({"lookup"})

    def __init__(self, spec: MapSpec, mem: AddressSpace, cpus: int, map_id: int):
        super().__init__(spec, mem, cpus, map_id)
        ds = spec.key_size - 4
        if not LPM_DATA_SIZE_MIN <= ds <= LPM_DATA_SIZE_MAX:
            raise refuse(spec, f"key_size {spec.key_size}: the data part must be 1..256 bytes")
        if spec.value_size == 0 or spec.max_entries == 0:
            raise refuse(spec, "value_size and max_entries must be non-zero")
        if not spec.flags & BPF_F_NO_PREALLOC:
            raise refuse(spec, "LPM tries must be created with BPF_F_NO_PREALLOC")
        self.data_size = ds
        self.max_prefixlen = ds * 8
        self.node_stride = nat.NODE_HEADER + round8(ds)
        self.node_capacity = 2 * spec.max_entries + 1
        self.nodes = zeros(self.node_capacity * self.node_stride)
        self._w = self.node_stride // 4
        self._n32 = self.nodes.view(np.uint32)
        d = self.desc
        d[nat.W_KIND] = nat.K_LPM
        d[nat.W_LPM_NODES] = self._pin(self.nodes)
        d[nat.W_LPM_NODE_STRIDE] = self.node_stride
        d[nat.W_LPM_MAX_PREFIX] = self.max_prefixlen
        self.store = ValueStorage(self, self.max_entries, 1, prog_region_flags(spec.flags))
        self._free_nodes: list[int] = []
        self._next_node = 0
        self._free_values: list[int] = []
        self._next_value = 0
        self._n = nat.native()
        self._d = self.native_descriptor()

    # ------------------------------------------------------------ node records (index = node number)

    def _f(self, node: int, field: int) -> int:
        return int(self._n32[node * self._w + field // 4])

    def _set(self, node: int, field: int, v: int) -> None:
        self._n32[node * self._w + field // 4] = v

    def _data(self, node: int) -> bytes:
        o = node * self.node_stride + nat.N_DATA
        return self.nodes[o : o + self.data_size].tobytes()

    def _child(self, node: int, bit: int) -> int | None:
        c = self._f(node, nat.N_CHILD0 + 4 * bit)
        return c - 1 if c else None

    def _is_im(self, node: int) -> bool:
        return bool(self._f(node, nat.N_FLAGS) & nat.NODE_INTERMEDIATE)

    @property
    def _root(self) -> int | None:
        r = int(self.desc[nat.W_LPM_ROOT])
        return r - 1 if r else None

    def _set_slot(self, slot: tuple[int | None, int], node: int | None) -> None:
        """Point a parent's child link (or the root when the parent is None) at `node`."""
        parent, bit = slot
        v = 0 if node is None else node + 1
        if parent is None:
            self.desc[nat.W_LPM_ROOT] = v
        else:
            self._set(parent, nat.N_CHILD0 + 4 * bit, v)

    def _alloc_node(self, plen: int, data: bytes, flags: int) -> int:
        if self._free_nodes:
            n = self._free_nodes.pop()
        else:
            n = self._next_node
            self._next_node += 1
        o = n * self.node_stride
        self.nodes[o : o + self.node_stride] = 0
        self._set(n, nat.N_PREFIXLEN, plen)
        self._set(n, nat.N_FLAGS, flags)
        self.nodes[o + nat.N_DATA : o + nat.N_DATA + self.data_size] = np.frombuffer(data, dtype=np.uint8)
        return n

    def _free_node(self, n: int) -> None:
        o = n * self.node_stride
        self.nodes[o : o + self.node_stride] = 0
        self._free_nodes.append(n)

    def _alloc_value(self) -> int:
        if self._free_values:
            return self._free_values.pop()
        v = self._next_value
        self._next_value += 1
        return v

    # ------------------------------------------------------------ bit arithmetic

    @staticmethod
    def _bit(data: bytes, index: int) -> int:
        return (data[index >> 3] >> (7 - (index & 7))) & 1

    def _match(self, node: int, data: bytes, plen: int) -> int:
        """Leading bits the node's prefix and `data` share, at most min(node prefixlen, plen)."""
        limit = min(self._f(node, nat.N_PREFIXLEN), plen)
        x = int.from_bytes(self._data(node), "big") ^ int.from_bytes(data, "big")
        common = self.max_prefixlen - x.bit_length()
        return min(common, limit)

    def _split(self, key: bytes) -> tuple[int, bytes]:
        return int.from_bytes(key[:4], "little"), key[4:]

    @property
    def count(self) -> int:
        return int(self.desc[nat.W_COUNT])

    # ------------------------------------------------------------ primitives

    def _lookup(self, key: bytes) -> Any:
        slot = self._n.lpm_lookup(self._d, key)
        return -_errno.ENOENT if slot < 0 else self.store.get(slot, self.value_size)

    def _update(self, key: bytes, value: bytes, flags: int) -> int:
        if flags > BPF_EXIST:
            return -_errno.EINVAL
        plen, data = self._split(key)
        if plen > self.max_prefixlen:
            return -_errno.EINVAL
        slot: tuple[int | None, int] = (None, 0)
        node = self._root
        ml = 0
        while node is not None:
            ml = self._match(node, data, plen)
            np_ = self._f(node, nat.N_PREFIXLEN)
            if np_ != ml or np_ == plen or np_ == self.max_prefixlen:
                break
            b = self._bit(data, np_)
            slot = (node, b)
            node = self._child(node, b)

        if node is not None and self._f(node, nat.N_PREFIXLEN) == ml:
            # the prefix is already a node: replace a real one, fill in an intermediate one
            if not self._is_im(node):
                if flags == BPF_NOEXIST:
                    return -_errno.EEXIST
                v = self._f(node, nat.N_VALUE)
            else:
                err = self._check_add(flags)
                if err:
                    return err
                v = self._alloc_value()
                self._set(node, nat.N_VALUE, v)
                self._set(node, nat.N_FLAGS, 0)
                self.desc[nat.W_COUNT] = self.count + 1
            o = node * self.node_stride + nat.N_DATA
            self.nodes[o : o + self.data_size] = np.frombuffer(data, dtype=np.uint8)
            self.store.put(v, value)
            return 0

        err = self._check_add(flags)
        if err:
            return err
        new = self._alloc_node(plen, data, 0)
        v = self._alloc_value()
        self._set(new, nat.N_VALUE, v)
        self.store.put(v, value)
        if node is None:
            self._set_slot(slot, new)
        elif ml == plen:
            # the new prefix covers the node: the node hangs below it
            self._set(new, nat.N_CHILD0 + 4 * self._bit(self._data(node), plen), node + 1)
            self._set_slot(slot, new)
        else:
            # they diverge at bit `ml`: an intermediate node takes both
            im = self._alloc_node(ml, self._data(node), nat.NODE_INTERMEDIATE)
            if self._bit(data, ml):
                self._set(im, nat.N_CHILD0, node + 1)
                self._set(im, nat.N_CHILD1, new + 1)
            else:
                self._set(im, nat.N_CHILD0, new + 1)
                self._set(im, nat.N_CHILD1, node + 1)
            self._set_slot(slot, im)
        self.desc[nat.W_COUNT] = self.count + 1
        return 0

    def _check_add(self, flags: int) -> int:
        if flags == BPF_EXIST:
            return -_errno.ENOENT
        if self.count >= self.max_entries:
            return -_errno.ENOSPC
        return 0

    def _find(self, key: bytes):
        """Walk to the node for exactly `key`: (node or None, its slot, parent, parent's slot)."""
        plen, data = self._split(key)
        trim: tuple[int | None, int] = (None, 0)
        trim2 = trim
        parent = None
        node = self._root
        ml = 0
        while node is not None:
            ml = self._match(node, data, plen)
            np_ = self._f(node, nat.N_PREFIXLEN)
            if np_ != ml or np_ == plen:
                break
            parent, trim2 = node, trim
            b = self._bit(data, np_)
            trim = (node, b)
            node = self._child(node, b)
        if node is None or self._f(node, nat.N_PREFIXLEN) != plen or ml != plen or self._is_im(node):
            return None, trim, parent, trim2
        return node, trim, parent, trim2

    def _delete(self, key: bytes) -> int:
        plen, _ = self._split(key)
        if plen > self.max_prefixlen:
            return -_errno.EINVAL
        node, trim, parent, trim2 = self._find(key)
        if node is None:
            return -_errno.ENOENT
        self.desc[nat.W_COUNT] = self.count - 1
        self._free_values.append(self._f(node, nat.N_VALUE))
        c0, c1 = self._child(node, 0), self._child(node, 1)
        if c0 is not None and c1 is not None:
            # still a branch point: keep it as an intermediate node
            self._set(node, nat.N_FLAGS, nat.NODE_INTERMEDIATE)
            self._set(node, nat.N_VALUE, 0)
            return 0
        if parent is not None and self._is_im(parent) and c0 is None and c1 is None:
            # a leaf under an intermediate node: the intermediate node has no reason left to exist
            other = self._child(parent, 1) if self._child(parent, 0) == node else self._child(parent, 0)
            self._set_slot(trim2, other)
            self._free_node(parent)
            self._free_node(node)
            return 0
        self._set_slot(trim, c0 if c0 is not None else c1)
        self._free_node(node)
        return 0

    def _postorder(self) -> list[int]:
        """Real nodes in the kernel's iteration order: post-order, child 0 first."""
        out: list[int] = []
        root = self._root
        if root is None:
            return out
        stack: list[tuple[int, bool]] = [(root, False)]
        while stack:
            n, expanded = stack.pop()
            if expanded:
                if not self._is_im(n):
                    out.append(n)
                continue
            stack.append((n, True))
            for b in (1, 0):  # pushed so child 0 comes off first
                c = self._child(n, b)
                if c is not None:
                    stack.append((c, False))
        return out

    def _node_key(self, n: int) -> bytes:
        return self._f(n, nat.N_PREFIXLEN).to_bytes(4, "little") + self._data(n)

    def _iter_keys(self) -> Iterator[bytes]:
        return (self._node_key(n) for n in self._postorder())

    def _count(self) -> int:
        return self.count

    def items(self) -> list[tuple[bytes, Any]]:
        return [(self._node_key(n), self.store.get(self._f(n, nat.N_VALUE), self.value_size))
                for n in self._postorder()]

    def next_key(self, key: Any | None = None) -> bytes | None:
        order = self._postorder()
        if not order:
            return None
        node = None if key is None else self._find(self._key(key))[0]
        if node is None:
            return self._node_key(order[0])
        i = order.index(node)
        return self._node_key(order[i + 1]) if i + 1 < len(order) else None

    def lookup_exact(self, key: Any) -> bytes | None:
        """The value stored for exactly this prefix (no longest-match), or None."""
        node = self._find(self._key(key))[0]
        return None if node is None else self.store.get(self._f(node, nat.N_VALUE), self.value_size)

    # ------------------------------------------------------------ program-facing

    def prog_lookup(self, key_addr: int, cpu: int = 0) -> int:
        k = self.mem.host(key_addr, self.key_size)
        return self._n.map_lookup(self._d, k, cpu)

    def prog_update(self, key_addr: int, value_addr: int, flags: int, cpu: int = 0) -> int:
        key = self.mem.read(key_addr, self.key_size)
        value = self.mem.read(value_addr, self.value_size)
        return self._update(key, value, flags)

    def prog_delete(self, key_addr: int, cpu: int = 0) -> int:
        return self._delete(self.mem.read(key_addr, self.key_size))
