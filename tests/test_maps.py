"""User-space API of every map type, with the errnos the running Linux 6.18 kernel gave for the same
operations (asked with BPF_MAP_CREATE / BPF_MAP_UPDATE_ELEM & co. through a ctypes bpf() call)."""

from __future__ import annotations

import errno
import struct

import pytest

from xdpsim.errors import LoadError, MapError
from xdpsim.maps import (
    BPF_ANY,
    BPF_EXIST,
    BPF_F_LOCK,
    BPF_NOEXIST,
    MapKeyError,
    RedirectTarget,
    create_map,
)
from xdpsim.maps.base import BPF_F_NO_PREALLOC, BPF_F_RDONLY_PROG, ENOTSUPP
from xdpsim.memory import MAP_HANDLES, R_READ, AddressSpace, make_addr
from xdpsim.spec import MapSpec, MapType

_ids = iter(range(10**6))


def mk(t: MapType, ks: int, vs: int, me: int, flags: int = 0, cpus: int = 2, mem=None, **kw):
    mem = mem or AddressSpace()
    return create_map(MapSpec(f"m_{t.name.lower()}", t, ks, vs, me, flags, **kw), mem, cpus, next(_ids))


def err(fn, *args, **kw) -> int:
    with pytest.raises(MapError) as ei:
        fn(*args, **kw)
    return ei.value.errno


def u32(i: int) -> bytes:
    return struct.pack("<I", i)


# ---------------------------------------------------------------- create_map


def test_unsupported_types_are_named():
    with pytest.raises(LoadError, match="sockmap"):
        mk(MapType.SOCKMAP, 4, 4, 4)
    with pytest.raises(LoadError, match="unknown map type 99"):
        create_map(MapSpec("x", 99, 4, 4, 4), AddressSpace(), 1, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "t,ks,vs,me,flags",
    [
        # each refused by the kernel with EINVAL (ENOTSUPP for the LRU one)
        (MapType.ARRAY, 8, 8, 4, 0),
        (MapType.ARRAY, 4, 0, 4, 0),
        (MapType.ARRAY, 4, 4, 0, 0),
        (MapType.ARRAY, 4, 4, 4, BPF_F_NO_PREALLOC),
        (MapType.HASH, 0, 4, 4, 0),
        (MapType.HASH, 4, 0, 4, 0),
        (MapType.HASH, 4, 4, 0, 0),
        (MapType.LRU_HASH, 4, 4, 4, BPF_F_NO_PREALLOC),
        (MapType.LPM_TRIE, 8, 4, 4, 0),
        (MapType.LPM_TRIE, 4, 4, 4, BPF_F_NO_PREALLOC),
        (MapType.LPM_TRIE, 261, 4, 4, BPF_F_NO_PREALLOC),
        (MapType.LPM_TRIE, 8, 0, 4, BPF_F_NO_PREALLOC),
        (MapType.QUEUE, 4, 4, 4, 0),
        (MapType.QUEUE, 0, 0, 4, 0),
        (MapType.STACK, 0, 4, 0, 0),
        (MapType.QUEUE, 0, 4, 2, BPF_F_NO_PREALLOC),
        (MapType.DEVMAP, 4, 12, 4, 0),
        (MapType.DEVMAP, 4, 6, 4, 0),
        (MapType.DEVMAP, 8, 4, 4, 0),
        (MapType.DEVMAP_HASH, 8, 4, 2, 0),
        (MapType.CPUMAP, 4, 12, 4, 0),
        (MapType.XSKMAP, 4, 8, 4, 0),
        (MapType.PROG_ARRAY, 4, 8, 4, 0),
        (MapType.PROG_ARRAY, 8, 4, 4, 0),
        (MapType.ARRAY_OF_MAPS, 4, 4, 4, 0),  # no inner template
        (MapType.RINGBUF, 0, 0, 5000, 0),
        (MapType.RINGBUF, 0, 0, 2048, 0),
        (MapType.RINGBUF, 4, 0, 4096, 0),
        (MapType.PERF_EVENT_ARRAY, 8, 4, 4, 0),
    ],
)
def test_create_refused_like_the_kernel(t, ks, vs, me, flags):
    with pytest.raises(LoadError):
        mk(t, ks, vs, me, flags)


def test_create_accepted_like_the_kernel():
    mk(MapType.HASH, 513, 4, 4)  # user-space keys may exceed the 512-byte stack
    mk(MapType.LPM_TRIE, 260, 4, 4, BPF_F_NO_PREALLOC)
    mk(MapType.RINGBUF, 0, 0, 8192)
    mk(MapType.DEVMAP, 4, 8, 4)
    assert mk(MapType.PERF_EVENT_ARRAY, 4, 4, 0, cpus=3).max_entries == 3  # libbpf: one per CPU


def test_handles_and_descriptor():
    mem = AddressSpace()
    m = create_map(MapSpec("h", MapType.HASH, 4, 4, 8), mem, 1, 7)
    assert m.id == 7 and m.handle == (MAP_HANDLES << 32) | 7
    assert m.native_descriptor() == m.desc.ctypes.data
    assert mem.region_name(m.values_region) == "h"


# ---------------------------------------------------------------- array


def test_array_errnos_from_the_kernel():
    a = mk(MapType.ARRAY, 4, 8, 4)
    assert err(a.update, 1, b"x" * 8, BPF_NOEXIST) == errno.EEXIST
    a.update(1, b"x" * 8, BPF_EXIST)
    assert err(a.update, 4, b"x" * 8) == errno.E2BIG
    assert err(a.update, 4, b"x" * 8, BPF_NOEXIST) == errno.E2BIG
    assert err(a.update, 1, b"x" * 8, 3) == errno.EINVAL
    assert err(a.update, 1, b"x" * 8, 8) == errno.EINVAL
    assert err(a.update, 1, b"x" * 8, BPF_F_LOCK) == errno.EINVAL  # no bpf_spin_lock in the value
    assert err(a.delete, 1) == errno.EINVAL
    assert err(a.delete, 9) == errno.EINVAL
    assert err(a.lookup, 9) == errno.ENOENT
    assert a.next_key(None) == u32(0) and a.next_key(3) is None and a.next_key(9) == u32(0)
    assert err(a.update, 1, b"short") == errno.EINVAL
    assert err(a.lookup, b"\x01\x00") == errno.EINVAL


def test_array_dict_api():
    a = mk(MapType.ARRAY, 4, 6, 3)
    assert len(a) == 3 and a[0] == bytes(6)
    a[2] = b"abcdef"
    a[u32(1)] = 0x0102
    assert a[1] == b"\x02\x01\x00\x00\x00\x00" and a[2] == b"abcdef"
    assert list(a) == [u32(0), u32(1), u32(2)]
    assert a.to_json() == {"type": "array", "entries": {
        "00000000": "000000000000", "01000000": "020100000000", "02000000": "616263646566"}}
    assert 2 in a and 3 not in a
    with pytest.raises(KeyError):
        a[3]


def test_array_spin_lock_and_f_lock():
    a = mk(MapType.ARRAY, 4, 8, 2)
    a.set_spin_lock(0)
    a.view()[1, 0] = 1  # "locked"
    a.update(1, b"\xff" * 8, BPF_F_LOCK)
    assert a[1] == b"\x01\x00\x00\x00" + b"\xff" * 4  # the lock word is never copied over


def test_percpu_array_shape():
    a = mk(MapType.PERCPU_ARRAY, 4, 12, 2, cpus=3)
    assert a[0] == [bytes(16)] * 3  # each value rounded up to 8, as the syscall returns them
    a[1] = [b"a" * 12, b"b" * 12, b"c" * 12]
    assert a[1] == [b"a" * 12 + bytes(4), b"b" * 12 + bytes(4), b"c" * 12 + bytes(4)]
    a[0] = b"z" * 12  # one value: every CPU
    assert a[0] == [b"z" * 12 + bytes(4)] * 3
    a[0] = b"".join(bytes([i]) * 16 for i in range(3))  # the syscall's flat buffer
    assert [v[0] for v in a[0]] == [0, 1, 2]
    assert err(a.update, 0, [b"a" * 12]) == errno.EINVAL
    rids = [a.values_region + c for c in range(3)]
    assert [a.mem.region_name(r) for r in rids] == [f"{a.name}[cpu{c}]" for c in range(3)]


def test_global_data_rodata_is_read_only():
    mem = AddressSpace()
    spec = MapSpec(".rodata", MapType.ARRAY, 4, 8, 1, BPF_F_RDONLY_PROG, initial=b"abc", frozen=True)
    ro = create_map(spec, mem, 1, 0)
    assert ro[0] == b"abc" + bytes(5)
    assert err(ro.update, 0, bytes(8)) == errno.EPERM
    assert mem.load(ro.value_addr(0, 1), 1) == ord("b")
    from xdpsim.errors import ProgramFault

    with pytest.raises(ProgramFault, match="read-only region .rodata"):
        mem.store(ro.value_addr(), 1, 0)


def test_big_array_json_lists_nonzero_only():
    a = mk(MapType.ARRAY, 4, 4, 100_000)
    a[5] = 1
    a[99_999] = 2
    j = a.to_json()
    assert j["entries"] == {u32(5).hex(): "01000000", u32(99_999).hex(): "02000000"}


# ---------------------------------------------------------------- hash family


def test_hash_errnos_from_the_kernel():
    h = mk(MapType.HASH, 4, 4, 2)
    h[1] = b"aaaa"
    h[2] = b"bbbb"
    assert err(h.update, 3, b"cccc") == errno.E2BIG
    h.update(1, b"dddd")  # replacing when full is fine
    h.update(1, b"dddd", BPF_EXIST)
    assert err(h.update, 3, b"cccc", BPF_NOEXIST) == errno.E2BIG
    assert err(h.update, 3, b"cccc", BPF_EXIST) == errno.ENOENT
    assert err(h.update, 1, b"dddd", BPF_NOEXIST) == errno.EEXIST
    assert err(h.update, 1, b"dddd", 3) == errno.EINVAL
    assert err(h.update, 1, b"dddd", BPF_F_LOCK) == errno.EINVAL
    assert err(h.delete, 7) == errno.ENOENT
    assert err(h.lookup, 7) == errno.ENOENT
    assert h.next_key(7) == u32(1)  # an absent key restarts the walk
    assert h.next_key(None) == u32(1) and h.next_key(1) == u32(2) and h.next_key(2) is None
    with pytest.raises(MapKeyError) as ei:
        h[7]
    assert isinstance(ei.value, KeyError) and ei.value.errno == errno.ENOENT
    assert h.lookup_and_delete(1) == b"dddd" and len(h) == 1


def test_hash_insertion_order_iteration():
    h = mk(MapType.HASH, 8, 4, 16)
    keys = [struct.pack("<Q", (i * 2654435761) % 1000) for i in range(10)]
    for i, k in enumerate(keys):
        h[k] = i
    assert h.keys() == keys
    del h[keys[3]]
    h[keys[3]] = 3
    assert h.keys() == keys[:3] + keys[4:] + [keys[3]]
    assert h.items()[0] == (keys[0], b"\x00\x00\x00\x00")
    assert h.to_json()["entries"][keys[1].hex()] == "01000000"


def test_percpu_hash():
    h = mk(MapType.PERCPU_HASH, 4, 4, 4, cpus=2)
    h[1] = [1, 2]
    assert h[1] == [u32(1) + bytes(4), u32(2) + bytes(4)]
    h.update(1, [3, 4], BPF_EXIST)
    assert h[1] == [u32(3) + bytes(4), u32(4) + bytes(4)]
    assert h.to_json()["entries"] == {"01000000": ["0300000000000000", "0400000000000000"]}


def test_lru_eviction_order():
    lru = mk(MapType.LRU_HASH, 4, 4, 4)
    for i in range(6):
        lru[i] = i
    # the kernel, with the same inserts, also kept exactly {2, 3, 4, 5}
    assert sorted(lru.keys()) == [u32(i) for i in (2, 3, 4, 5)] and lru.evictions == 2
    assert lru.lru_order() == [u32(i) for i in (5, 4, 3, 2)]
    lru[2] = 20  # an update makes 2 the most recent
    lru.lookup(3)  # a user-space lookup does not (as the kernel's syscall path)
    lru[6] = 6
    assert sorted(lru.keys()) == [u32(i) for i in (2, 4, 5, 6)]
    assert lru.lru_order()[0] == u32(6) and lru.lru_order()[-1] == u32(4)
    assert err(lru.update, 1, 1, 3) == errno.EINVAL and err(lru.update, 1, 1, BPF_F_LOCK) == errno.EINVAL


def test_lru_program_lookup_marks_used():
    mem = AddressSpace()
    lru = mk(MapType.LRU_HASH, 4, 4, 3, mem=mem)
    for i in range(3):
        lru[i] = i
    kbuf = mem.stack
    kbuf[0:4] = list(u32(0))
    assert lru.prog_lookup(make_addr(1, 0)) != 0  # program lookups refresh key 0
    lru[3] = 3
    assert sorted(lru.keys()) == [u32(0), u32(2), u32(3)]


def test_lru_percpu_hash():
    h = mk(MapType.LRU_PERCPU_HASH, 4, 8, 2, cpus=2)
    for i in range(3):
        h[i] = [i, i + 10]
    assert sorted(h.keys()) == [u32(1), u32(2)] and h[2][1][:1] == b"\x0c"


# ---------------------------------------------------------------- LPM trie


def lk(plen: int, *data: int) -> bytes:
    return struct.pack("<I", plen) + bytes(data)


def test_lpm_errnos_and_lookup_from_the_kernel():
    t = mk(MapType.LPM_TRIE, 8, 4, 2, BPF_F_NO_PREALLOC)
    assert err(t.update, lk(33, 10, 0, 0, 0), b"aaaa") == errno.EINVAL
    t[lk(8, 10, 1, 2, 3)] = b"aaaa"
    t[lk(16, 10, 1, 0, 0)] = b"bbbb"
    assert err(t.update, lk(24, 10, 1, 2, 0), b"cccc") == errno.ENOSPC
    assert err(t.update, lk(24, 10, 1, 2, 0), b"cccc", BPF_EXIST) == errno.ENOENT
    assert err(t.update, lk(24, 10, 1, 2, 0), b"cccc", BPF_NOEXIST) == errno.ENOSPC
    assert err(t.update, lk(8, 10, 9, 9, 9), b"dddd", BPF_NOEXIST) == errno.EEXIST
    t[lk(8, 10, 9, 9, 9)] = b"dddd"  # replaces the /8, and its stored data bytes
    assert err(t.update, lk(8, 10, 0, 0, 0), b"dddd", 3) == errno.EINVAL
    assert err(t.update, lk(8, 10, 0, 0, 0), b"dddd", BPF_F_LOCK) == errno.EINVAL
    assert t[lk(32, 10, 1, 5, 5)] == b"bbbb"
    assert t[lk(12, 10, 1, 5, 5)] == b"dddd"  # the key's prefixlen bounds the match
    assert err(t.lookup, lk(7, 10, 1, 5, 5)) == errno.ENOENT
    assert err(t.lookup, lk(40, 10, 1, 5, 5)) == errno.ENOENT
    assert t.keys() == [lk(16, 10, 1, 0, 0), lk(8, 10, 9, 9, 9)]
    assert t.next_key(lk(24, 1, 2, 3, 4)) == lk(16, 10, 1, 0, 0)
    assert t.next_key(lk(8, 10, 0, 0, 0)) is None
    assert err(t.delete, lk(24, 10, 1, 2, 0)) == errno.ENOENT
    assert err(t.delete, lk(33, 10, 1, 2, 0)) == errno.EINVAL
    del t[lk(16, 10, 1, 7, 7)]  # bits past the prefix do not matter
    assert t.keys() == [lk(8, 10, 9, 9, 9)]


def test_lpm_iteration_order_matches_the_kernel():
    t = mk(MapType.LPM_TRIE, 8, 4, 10, BPF_F_NO_PREALLOC)
    for k in [lk(8, 10, 0, 0, 0), lk(16, 10, 1, 0, 0), lk(16, 10, 2, 0, 0), lk(24, 10, 1, 1, 0),
              lk(0, 0, 0, 0, 0), lk(24, 192, 168, 1, 0), lk(32, 10, 1, 1, 1)]:
        t[k] = b"vvvv"
    kernel_order = ["200000000a010101", "180000000a010100", "100000000a010000", "100000000a020000",
                    "080000000a000000", "18000000c0a80100", "0000000000000000"]
    assert [k.hex() for k in t.keys()] == kernel_order
    assert t.next_key(lk(24, 1, 2, 3, 4)).hex() == kernel_order[0]
    assert t.next_key(lk(12, 10, 1, 2, 4)).hex() == kernel_order[0]
    assert t.lookup_exact(lk(16, 10, 1, 0, 0)) == b"vvvv" and t.lookup_exact(lk(17, 10, 1, 0, 0)) is None


# ---------------------------------------------------------------- queue / stack


@pytest.mark.parametrize("t,order", [(MapType.QUEUE, (2, 3)), (MapType.STACK, (3, 2))])
def test_queue_stack_from_the_kernel(t, order):
    q = mk(t, 0, 4, 2)
    q.update(None, u32(1))
    q.update(None, u32(2))
    assert err(q.update, None, u32(3)) == errno.E2BIG
    assert err(q.update, None, u32(3), BPF_NOEXIST) == errno.EINVAL
    assert err(q.update, None, u32(3), 3) == errno.EINVAL
    assert err(q.update, None, u32(3), BPF_F_LOCK) == errno.EINVAL
    q.update(None, u32(3), BPF_EXIST)  # full: the oldest element makes room
    assert q.peek() == u32(order[0]) and len(q) == 2
    assert q.values() == [u32(order[0]), u32(order[1])]
    assert [q.pop(), q.pop()] == [u32(order[0]), u32(order[1])]
    assert err(q.pop) == errno.ENOENT and err(q.lookup, None) == errno.ENOENT
    assert err(q.delete, None) == errno.EINVAL and err(q.next_key, None) == errno.EINVAL
    q.update(None, u32(7), BPF_EXIST)  # EXIST on a map with room just pushes
    assert q.to_json() == {"type": t.name.lower(), "entries": {}, "values": [u32(7).hex()]}


def test_queue_program_ops():
    mem = AddressSpace()
    q = mk(MapType.QUEUE, 0, 4, 2, mem=mem)
    st = make_addr(1, 64)
    mem.write(st, u32(9))
    assert q.prog_push(st, 0) == 0
    assert q.prog_peek(make_addr(1, 0)) == 0 and mem.read(make_addr(1, 0), 4) == u32(9)
    assert q.prog_pop(make_addr(1, 8)) == 0 and mem.read(make_addr(1, 8), 4) == u32(9)
    assert q.prog_pop(make_addr(1, 8)) == -errno.ENOENT


# ---------------------------------------------------------------- redirect maps


def test_devmap_from_the_kernel():
    d = mk(MapType.DEVMAP, 4, 4, 4)
    d[0] = 1
    d.update(2, 0)  # ifindex 0 empties the slot
    assert err(d.update, 4, 1) == errno.E2BIG
    assert err(d.update, 0, 1, BPF_NOEXIST) == errno.EEXIST
    assert err(d.update, 9, 1, BPF_NOEXIST) == errno.E2BIG
    assert err(d.update, 0, 1, 3) == errno.EINVAL
    assert d[0] == u32(1) and err(d.lookup, 1) == errno.ENOENT and err(d.lookup, 9) == errno.ENOENT
    d.delete(3)  # an empty slot deletes fine
    assert err(d.delete, 9) == errno.EINVAL
    assert d.next_key(None) == u32(0) and d.next_key(3) is None and d.next_key(4) == u32(0)
    assert d.resolve(0) == RedirectTarget("dev", 1) and d.resolve(1) is None and d.resolve(99) is None
    d.ifindex_resolver = lambda i: i < 100
    assert err(d.update, 1, 9999) == errno.EINVAL
    d.delete(0)
    assert len(d) == 0


def test_devmap_with_program_and_hash():
    d = mk(MapType.DEVMAP, 4, 8, 4)
    d[1] = u32(5) + u32(3)
    assert d.resolve(1) == RedirectTarget("dev", 5, 3)
    h = mk(MapType.DEVMAP_HASH, 4, 4, 2)
    h[10] = 1
    h[20] = 2
    assert err(h.update, 30, 1) == errno.E2BIG
    assert err(h.update, 40, 0) == errno.EINVAL  # no "ifindex 0 deletes" in the hash flavour
    assert err(h.update, 10, 1, BPF_NOEXIST) == errno.EEXIST
    del h[20]
    h.update(50, 1, BPF_EXIST)  # the kernel ignores BPF_EXIST for devmap_hash
    assert err(h.delete, 99) == errno.ENOENT and err(h.lookup, 99) == errno.ENOENT
    assert h.resolve(50) == RedirectTarget("dev", 1) and h.resolve(20) is None
    assert h.mem.table[h.values_region]["flags"] == R_READ


def test_cpumap_from_the_kernel():
    c = mk(MapType.CPUMAP, 4, 4, 8, cpus=2)
    c[0] = 192
    c.update(1, 0)  # qsize 0: empty
    assert err(c.update, 0, 16385) == errno.EOVERFLOW
    c.update(0, 16384)
    assert err(c.update, 5, 100) == errno.ENODEV  # not a possible CPU
    assert err(c.update, 8, 100) == errno.E2BIG
    assert err(c.update, 0, 100, BPF_NOEXIST) == errno.EEXIST
    assert err(c.update, 0, 100, 3) == errno.EINVAL
    assert c[0] == u32(16384) and err(c.lookup, 1) == errno.ENOENT and err(c.lookup, 9) == errno.ENOENT
    c.delete(1)
    assert err(c.delete, 9) == errno.EINVAL
    assert c.resolve(0) == RedirectTarget("cpu", 0) and c.resolve(1) is None


def test_xskmap_from_the_kernel():
    x = mk(MapType.XSKMAP, 4, 4, 4)
    x[0] = 7
    assert err(x.lookup, 0) == errno.EOPNOTSUPP
    assert err(x.update, 0, 8, BPF_NOEXIST) == errno.EEXIST
    assert err(x.update, 1, 8, BPF_EXIST) == errno.ENOENT
    assert err(x.update, 9, 8) == errno.E2BIG
    x.delete(3)
    assert err(x.delete, 9) == errno.EINVAL
    assert x.items() == [(u32(0), u32(7))] and x.resolve(0) == RedirectTarget("xsk", 7)


# ---------------------------------------------------------------- prog arrays and maps of maps


def test_prog_array_from_the_kernel():
    p = mk(MapType.PROG_ARRAY, 4, 4, 4)
    assert err(p.lookup, 0) == errno.ENOENT and err(p.lookup, 9) == errno.ENOENT
    assert err(p.delete, 0) == errno.ENOENT and err(p.delete, 9) == errno.E2BIG
    assert err(p.update, 9, 1) == errno.E2BIG
    assert err(p.update, 0, 1, BPF_EXIST) == errno.EINVAL  # fd arrays take BPF_ANY only
    assert err(p.update, 9, 1, BPF_NOEXIST) == errno.EINVAL
    p[1] = 5
    p[2] = u32(6)  # a 4-byte value, like the syscall's
    assert p[1] == 5 and p.at(2) == 6 and p.at(0) is None and p.at(99) is None
    assert list(p.table) == [-1, 5, 6, -1] and p.table_address == p.table.ctypes.data
    assert p.keys() == [u32(1), u32(2)] and p.to_json()["entries"] == {"01000000": 5, "02000000": 6}
    p.prog_resolver = lambda i: i < 10
    assert err(p.update, 0, 11) == errno.EBADF
    p.name_resolver = {"parse_tcp": 3}.__getitem__
    p[0] = "parse_tcp"
    assert p.at(0) == 3
    del p[1]
    assert p.at(1) is None


def test_array_of_maps():
    mem = AddressSpace()
    inner = MapSpec("inner", MapType.ARRAY, 4, 4, 4)
    maps = {}

    def add(spec):
        m = create_map(spec, mem, 1, len(maps))
        maps[m.id] = m
        return m

    outer = add(MapSpec("outer", MapType.ARRAY_OF_MAPS, 4, 4, 4, inner=inner))
    good = add(MapSpec("i1", MapType.ARRAY, 4, 4, 4))
    wrong_vs = add(MapSpec("i2", MapType.ARRAY, 4, 8, 4))
    wrong_max = add(MapSpec("i3", MapType.ARRAY, 4, 4, 5))
    wrong_type = add(MapSpec("i4", MapType.HASH, 4, 4, 4))
    outer.map_resolver = maps.get
    outer[0] = good.id
    for bad in (wrong_vs, wrong_max, wrong_type):
        assert err(outer.update, 1, bad.id) == errno.EINVAL
    assert err(outer.update, 1, 999) == errno.EBADF
    assert err(outer.update, 0, good.id, BPF_NOEXIST) == errno.EINVAL
    assert err(outer.update, 9, good.id) == errno.E2BIG
    assert outer[0] == good.id and err(outer.lookup, 1) == errno.ENOENT
    assert err(outer.delete, 1) == errno.ENOENT
    mem.write(make_addr(1, 0), u32(0))
    assert outer.prog_lookup(make_addr(1, 0)) == good.handle
    mem.write(make_addr(1, 0), u32(1))
    assert outer.prog_lookup(make_addr(1, 0)) == 0


def test_hash_of_maps():
    mem = AddressSpace()
    inner = MapSpec("inner", MapType.ARRAY, 4, 4, 4)
    outer = create_map(MapSpec("hom", MapType.HASH_OF_MAPS, 4, 4, 1, inner=inner), mem, 1, 0)
    i1 = create_map(MapSpec("i1", MapType.ARRAY, 4, 4, 4), mem, 1, 1)
    outer.map_resolver = {1: i1}.get
    outer[5] = 1
    assert err(outer.update, 6, 1) == errno.E2BIG
    assert err(outer.update, 5, 1, BPF_NOEXIST) == errno.EEXIST
    assert err(outer.update, 6, 1, BPF_EXIST) == errno.ENOENT
    assert err(outer.delete, 7) == errno.ENOENT
    assert outer[5] == 1 and outer.to_json()["entries"] == {"05000000": 1}
    mem.write(make_addr(1, 0), u32(5))
    assert outer.prog_lookup(make_addr(1, 0)) == i1.handle


# ---------------------------------------------------------------- ringbuf / perf event array


def test_ringbuf_records():
    mem = AddressSpace()
    rb = mk(MapType.RINGBUF, 0, 0, 4096, mem=mem)
    assert err(rb.lookup, None) == errno.EINVAL and err(rb.update, None, b"") == errno.EINVAL
    assert err(rb.next_key, None) == ENOTSUPP
    a = rb.reserve(10)
    assert a >> 32 == rb.rid and a & 0xFFFFFFFF == 8
    mem.write(a, b"0123456789")
    b = rb.reserve(4)
    mem.write(b, b"drop")
    assert rb.records() == []  # the first record is still reserved
    rb.discard(b)
    rb.submit(a)
    assert rb.query(0) == 24 + 16 and rb.query(1) == 4096 and rb.query(3) == 40
    assert rb.output(b"xyz") == 0 and rb.output(b"", 4) == -errno.EINVAL
    assert rb.records() == [b"0123456789", b"xyz"]
    assert rb.query(0) == 0 and rb.query(2) == rb.query(3) == 56
    assert rb.reserve(1, flags=1) == 0 and rb.reserve(4096) == 0


def test_ringbuf_full_and_wrap():
    mem = AddressSpace()
    rb = mk(MapType.RINGBUF, 0, 0, 4096, mem=mem)
    assert rb.output(bytes(4000)) == 0
    assert rb.output(bytes(100)) == -errno.EAGAIN  # 4008 + 108 would exceed size - 1
    assert len(rb.records()) == 1
    # the next records wrap around the end and stay contiguous
    for i in range(3):
        assert rb.output(bytes([i]) * 200) == 0
    assert rb.records() == [bytes([i]) * 200 for i in range(3)]
    from xdpsim.errors import ProgramFault

    with pytest.raises(ProgramFault):
        rb.submit(make_addr(rb.rid, 8))  # not reserved


def test_perf_event_array():
    pe = mk(MapType.PERF_EVENT_ARRAY, 4, 4, 4, cpus=2)
    assert pe.output(0xFFFFFFFF, b"a", cpu=1) == 0
    assert pe.output(0, b"b", cpu=0) == 0
    assert pe.output(1, b"c", cpu=0) == -errno.EOPNOTSUPP  # the reader at 1 is bound to CPU 1
    assert pe.output(2, b"d", cpu=0) == -errno.ENOENT  # no reader there
    assert pe.output(4, b"e", cpu=0) == -errno.E2BIG
    assert pe.to_json()["records"] == [{"cpu": 1, "data": "61"}, {"cpu": 0, "data": "62"}]
    assert pe.records() == [(1, b"a"), (0, b"b")] and pe.records() == []
    assert err(pe.lookup, 0) == errno.EOPNOTSUPP


# ---------------------------------------------------------------- misc API


def test_flags_rdonly_wronly_user():
    from xdpsim.maps.base import BPF_F_RDONLY, BPF_F_WRONLY

    r = mk(MapType.HASH, 4, 4, 4, BPF_F_RDONLY)
    assert err(r.update, 1, 1) == errno.EPERM
    w = mk(MapType.HASH, 4, 4, 4, BPF_F_WRONLY)
    w[1] = 1
    assert err(w.lookup, 1) == errno.EPERM


def test_value_normalisation():
    h = mk(MapType.HASH, 4, 2, 4)
    h[1] = -1
    assert h[1] == b"\xff\xff"
    assert err(h.update, 1, 1 << 16) == errno.EINVAL
    with pytest.raises(TypeError):
        h[1] = 1.5
    with pytest.raises(TypeError):
        h[True] = 1
    assert h.get(9) is None and h.get(9, b"") == b""
    h.clear()
    assert len(h) == 0
    assert BPF_ANY == 0
