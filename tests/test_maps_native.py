"""The native (llvmlite) map algorithms against Python reference models, the program-facing API,
the descriptor contract the JIT relies on, and lazily allocated storage."""

from __future__ import annotations

import ctypes
import errno
import struct
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from xdpsim.errors import ProgramFault
from xdpsim.maps import BPF_ANY, BPF_EXIST, BPF_NOEXIST, create_map
from xdpsim.maps import native as nat
from xdpsim.maps.base import BPF_F_NO_PREALLOC
from xdpsim.memory import STACK, AddressSpace, make_addr
from xdpsim.spec import MapSpec, MapType

SETTINGS = settings(max_examples=60, stateful_step_count=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def u32(i: int) -> bytes:
    return struct.pack("<I", i)


# ---------------------------------------------------------------- hash vs dict


class HashModel(RuleBasedStateMachine):
    """A hash map against a dict (insertion-ordered, as xdpsim's iteration)."""

    KEY_SIZE = 13  # not a multiple of 8: exercises the hash and compare tails
    MAX = 8

    def __init__(self):
        super().__init__()
        self.m = create_map(MapSpec("h", MapType.HASH, self.KEY_SIZE, 5, self.MAX), AddressSpace(), 1, 0)
        self.model: dict[bytes, bytes] = {}

    keys = st.integers(0, 20).map(lambda i: bytes([i % 3]) * 12 + bytes([i]))
    values = st.binary(min_size=5, max_size=5)
    flags = st.sampled_from([BPF_ANY, BPF_NOEXIST, BPF_EXIST, 3])

    @rule(k=keys, v=values, f=flags)
    def update(self, k, v, f):
        if f > BPF_EXIST:
            want = errno.EINVAL
        elif k in self.model:
            want = errno.EEXIST if f == BPF_NOEXIST else 0
        elif f == BPF_EXIST:
            want = errno.ENOENT
        elif len(self.model) >= self.MAX:
            want = errno.E2BIG
        else:
            want = 0
        try:
            self.m.update(k, v, f)
            got = 0
        except Exception as e:  # noqa: BLE001 - the errno is what is compared
            got = e.errno
        assert got == want
        if want == 0:
            self.model[k] = v

    @rule(k=keys)
    def delete(self, k):
        if k in self.model:
            self.m.delete(k)
            del self.model[k]
        else:
            with pytest.raises(KeyError):
                self.m.delete(k)

    @rule(k=keys)
    def lookup(self, k):
        assert self.m.get(k) == self.model.get(k)

    @invariant()
    def same_contents_and_order(self):
        assert self.m.items() == list(self.model.items())
        assert len(self.m) == len(self.model)
        # BPF_MAP_GET_NEXT_KEY walks the same order
        walked, k = [], self.m.next_key(None)
        while k is not None:
            walked.append(k)
            k = self.m.next_key(k)
        assert walked == list(self.model)


TestHashModel = HashModel.TestCase
TestHashModel.settings = SETTINGS


class LruModel(RuleBasedStateMachine):
    """An LRU hash against an exact LRU model; program lookups refresh, user lookups do not."""

    MAX = 5

    def __init__(self):
        super().__init__()
        self.mem = AddressSpace()
        self.m = create_map(MapSpec("l", MapType.LRU_HASH, 4, 4, self.MAX), self.mem, 1, 0)
        self.order: dict[bytes, bytes] = {}  # insertion order
        self.recent: OrderedDict[bytes, None] = OrderedDict()  # last = most recent

    keys = st.integers(0, 12).map(u32)

    def _touch(self, k):
        self.recent.pop(k, None)
        self.recent[k] = None

    @rule(k=keys, v=st.integers(0, 2**32 - 1))
    def update(self, k, v):
        if k not in self.order and len(self.order) >= self.MAX:
            victim = next(iter(self.recent))
            del self.recent[victim], self.order[victim]
        self.m[k] = v
        self.order[k] = u32(v)
        self._touch(k)

    @rule(k=keys)
    def prog_lookup(self, k):
        self.mem.write(make_addr(STACK, 0), k)
        addr = self.m.prog_lookup(make_addr(STACK, 0))
        assert (addr != 0) == (k in self.order)
        if addr:
            assert self.mem.read(addr, 4) == self.order[k]
            self._touch(k)

    @rule(k=keys)
    def user_lookup(self, k):
        assert self.m.get(k) == self.order.get(k)

    @rule(k=keys)
    def delete(self, k):
        if k in self.order:
            del self.m[k], self.order[k], self.recent[k]

    @invariant()
    def same(self):
        assert self.m.items() == list(self.order.items())
        assert self.m.lru_order() == list(reversed(self.recent))


TestLruModel = LruModel.TestCase
TestLruModel.settings = SETTINGS


# ---------------------------------------------------------------- LPM vs brute force


def _prefix_int(data: bytes, plen: int, bits: int) -> int:
    return int.from_bytes(data, "big") >> (bits - plen) if plen else 0


class LpmModel(RuleBasedStateMachine):
    """An LPM trie (IPv4-sized keys, few distinct prefixes) against a brute-force longest match."""

    MAX = 10
    BITS = 32

    def __init__(self):
        super().__init__()
        spec = MapSpec("t", MapType.LPM_TRIE, 8, 4, self.MAX, BPF_F_NO_PREALLOC)
        self.m = create_map(spec, AddressSpace(), 1, 0)
        self.model: dict[tuple[int, int], tuple[bytes, bytes]] = {}  # (plen, prefix) -> (data, value)

    # a small address space (top bits from a few patterns) so prefixes nest and collide often
    datas = st.sampled_from([0x0A000000, 0x0A010000, 0x0A010100, 0x0A010101, 0x0A800000, 0xC0A80100,
                             0x0A0100FF, 0x00000000, 0xFFFFFFFF]).map(lambda x: x.to_bytes(4, "big"))
    plens = st.integers(0, 32)

    def key(self, plen, data):
        return u32(plen) + data

    @rule(plen=plens, data=datas, v=st.integers(0, 2**32 - 1), f=st.sampled_from([0, 1, 2]))
    def update(self, plen, data, v, f):
        ident = (plen, _prefix_int(data, plen, self.BITS))
        if ident in self.model:
            want = errno.EEXIST if f == BPF_NOEXIST else 0
        elif f == BPF_EXIST:
            want = errno.ENOENT
        elif len(self.model) >= self.MAX:
            want = errno.ENOSPC
        else:
            want = 0
        try:
            self.m.update(self.key(plen, data), v, f)
            got = 0
        except Exception as e:  # noqa: BLE001
            got = e.errno
        assert got == want
        if want == 0:
            self.model[ident] = (data, u32(v))

    @rule(plen=plens, data=datas)
    def delete(self, plen, data):
        ident = (plen, _prefix_int(data, plen, self.BITS))
        if ident in self.model:
            del self.m[self.key(plen, data)]
            del self.model[ident]
        else:
            with pytest.raises(KeyError):
                del self.m[self.key(plen, data)]

    @rule(plen=plens, data=datas | st.binary(min_size=4, max_size=4))
    def lookup(self, plen, data):
        best = None
        for (p, pref), (_, v) in self.model.items():
            if p <= plen and _prefix_int(data, p, self.BITS) == pref and (best is None or p > best[0]):
                best = (p, v)
        assert self.m.get(self.key(plen, data)) == (best[1] if best else None)

    @invariant()
    def same_entries_and_shape(self):
        got = {(int.from_bytes(k[:4], "little"), _prefix_int(k[4:], int.from_bytes(k[:4], "little"),
                                                             self.BITS)): (k[4:], v)
               for k, v in self.m.items()}
        assert got == self.model
        assert len(self.m) == len(self.model)
        # canonical shape: every intermediate node has two children
        m = self.m
        stack = [m._root] if m._root is not None else []
        seen = 0
        while stack:
            n = stack.pop()
            seen += 1
            kids = [c for c in (m._child(n, 0), m._child(n, 1)) if c is not None]
            if m._is_im(n):
                assert len(kids) == 2
            stack.extend(kids)
        assert seen <= 2 * len(self.model)


TestLpmModel = LpmModel.TestCase
TestLpmModel.settings = SETTINGS


# ---------------------------------------------------------------- determinism


def test_iteration_is_deterministic_across_instances():
    def build():
        m = create_map(MapSpec("h", MapType.HASH, 16, 8, 64), AddressSpace(), 1, 0)
        rng = np.random.default_rng(5)
        for _ in range(200):
            k = rng.integers(0, 100).item()
            key = struct.pack("<QQ", k, k * 7)
            if rng.random() < 0.3:
                m.get(key) is not None and m.delete(key)
            elif len(m) < 64 or key in m:
                m[key] = k
        return m.keys(), bytes(m.table.entries), bytes(m.table.buckets)

    assert build() == build()


def test_hash_function_is_fixed():
    n = nat.native()
    # pinned: bucket placement (and so the entries buffer) must not change between versions silently
    assert n.hash_bytes(b"", 0, nat.HASH_SEED) == n.hash_bytes(b"", 0, nat.HASH_SEED)
    hs = {n.hash_bytes(u32(i), 4, nat.HASH_SEED) & 0xFF for i in range(1000)}
    assert len(hs) > 200  # low bits spread


def _hash_reference(data: bytes, seed: int) -> int:
    """The hash function as its docstring in maps/native.py states it: 8-byte little-endian words
    folded in, a zero-padded tail word, then the avalanche."""
    m64 = (1 << 64) - 1
    k1, k2, k3 = 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (64 - r))) & m64

    def fold(h: int, w: int) -> int:
        w = rotl(w * k1 & m64, 29) * k2 & m64
        return (rotl(h ^ w, 31) * 5 + k3) & m64

    h = (seed ^ len(data) * k2) & m64
    for i in range(0, len(data) - len(data) % 8, 8):
        h = fold(h, int.from_bytes(data[i : i + 8], "little"))
    if len(data) % 8:
        h = fold(h, int.from_bytes(data[len(data) - len(data) % 8 :], "little"))
    for mult in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
        h = (h ^ h >> 33) * mult & m64
    return h ^ h >> 33


@given(st.binary(max_size=40), st.integers(0, (1 << 64) - 1))
@settings(max_examples=300, deadline=None)
def test_hash_function_matches_its_definition(data: bytes, seed: int):
    # every key length 0..40 (all seven tail lengths): the native function is this function exactly,
    # so bucket placement (the entries buffer, maps.json's order) does not move between versions
    assert nat.native().hash_bytes(data, len(data), seed) == _hash_reference(data, seed)


# ---------------------------------------------------------------- program-facing API


@pytest.fixture
def mem():
    return AddressSpace()


def put(mem, off, data):
    mem.write(make_addr(STACK, off), data)
    return make_addr(STACK, off)


def test_prog_api_hash(mem):
    h = create_map(MapSpec("h", MapType.HASH, 4, 8, 2), mem, 1, 0)
    k1, k2, k3 = put(mem, 0, u32(1)), put(mem, 8, u32(2)), put(mem, 16, u32(3))
    v = put(mem, 32, b"ABCDEFGH")
    assert h.prog_lookup(k1) == 0
    assert h.prog_update(k1, v, BPF_ANY) == 0
    assert h.prog_update(k1, v, BPF_NOEXIST) == -errno.EEXIST
    assert h.prog_update(k2, v, BPF_EXIST) == -errno.ENOENT
    assert h.prog_update(k2, v, BPF_ANY) == 0
    assert h.prog_update(k3, v, BPF_ANY) == -errno.E2BIG
    assert h.prog_update(k3, v, 7) == -errno.EINVAL
    addr = h.prog_lookup(k1)
    assert addr >> 32 == h.values_region and mem.read(addr, 8) == b"ABCDEFGH"
    mem.store(addr, 1, ord("z"))  # programs write values in place
    assert h[1] == b"zBCDEFGH"
    assert h.prog_delete(k1) == 0 and h.prog_delete(k1) == -errno.ENOENT
    with pytest.raises(ProgramFault):
        h.prog_lookup(make_addr(STACK, 4094))  # the key runs off the stack


def test_prog_api_percpu(mem):
    h = create_map(MapSpec("p", MapType.PERCPU_HASH, 4, 4, 4), mem, 3, 0)
    h[1] = [1, 2, 3]
    k = put(mem, 0, u32(1))
    v = put(mem, 8, u32(99))
    a1 = h.prog_lookup(k, cpu=1)
    assert a1 >> 32 == h.values_region + 1 and mem.load(a1, 4) == 2
    assert h.prog_update(k, v, BPF_ANY, cpu=2) == 0  # existing: only CPU 2 changes
    assert [int.from_bytes(x[:4], "little") for x in h[1]] == [1, 2, 99]
    k2 = put(mem, 16, u32(2))
    assert h.prog_update(k2, v, BPF_ANY, cpu=1) == 0  # new: the other CPUs start at zero
    assert [int.from_bytes(x[:4], "little") for x in h[2]] == [0, 99, 0]

    a = create_map(MapSpec("a", MapType.PERCPU_ARRAY, 4, 8, 4), mem, 3, 1)
    idx = put(mem, 24, u32(3))
    addr = a.prog_lookup(idx, cpu=2)
    assert addr == ((a.values_region + 2) << 32) | 24
    mem.store(addr, 8, 5)
    assert a[3][2] == struct.pack("<Q", 5) and a[3][0] == bytes(8)
    assert a.prog_lookup(put(mem, 32, u32(4))) == 0
    assert a.prog_update(idx, put(mem, 40, bytes(8)), BPF_NOEXIST, cpu=0) == -errno.EEXIST
    assert a.prog_delete(idx) == -errno.EINVAL


def test_prog_api_lpm(mem):
    t = create_map(MapSpec("t", MapType.LPM_TRIE, 8, 4, 4, BPF_F_NO_PREALLOC), mem, 1, 0)
    k = put(mem, 0, u32(8) + bytes([10, 0, 0, 0]))
    assert t.prog_update(k, put(mem, 8, b"vvvv"), BPF_ANY) == 0
    q = put(mem, 16, u32(32) + bytes([10, 9, 8, 7]))
    addr = t.prog_lookup(q)
    assert mem.read(addr, 4) == b"vvvv"
    assert t.prog_delete(k) == 0 and t.prog_lookup(q) == 0


# ---------------------------------------------------------------- the JIT's view: raw calls by address


def test_native_calls_by_address_match_python(mem):
    h = create_map(MapSpec("h", MapType.HASH, 4, 4, 16), mem, 1, 3)
    for i in range(10):
        h[i] = i * i
    lookup = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(
        nat.address("xdpsim_map_lookup"))
    key = ctypes.create_string_buffer(u32(7), 4)
    addr = lookup(h.native_descriptor(), ctypes.addressof(key), 0)
    assert addr == h.prog_lookup(put(mem, 0, u32(7)))
    assert mem.load(addr, 4) == 49
    d = h.desc
    assert d[nat.W_KIND] == nat.K_HASH and d[nat.W_COUNT] == 10 and d[nat.W_VALUES_RID] == h.values_region
    assert d[nat.W_VALUES] == mem.table[h.values_region]["base"]
    slot = nat.native().hash_lookup(h.native_descriptor(), u32(7))
    assert addr == (h.values_region << 32) | slot * 8


def test_descriptor_for_arrays_and_tables(mem):
    a = create_map(MapSpec("a", MapType.ARRAY, 4, 12, 5), mem, 1, 0)
    n = nat.native()
    assert n.map_lookup(a.native_descriptor(), u32(4), 0) == (a.values_region << 32) | 64
    assert n.map_lookup(a.native_descriptor(), u32(5), 0) == 0
    assert n.map_update(a.native_descriptor(), u32(4), b"x" * 12, 0, 0) == 0 and a[4] == b"x" * 12
    assert n.map_delete(a.native_descriptor(), u32(4)) == -errno.EINVAL
    d = create_map(MapSpec("d", MapType.DEVMAP, 4, 4, 4), mem, 1, 1)
    d[2] = 7
    assert n.map_lookup(d.native_descriptor(), u32(2), 0) == (d.values_region << 32) | 16
    assert n.map_lookup(d.native_descriptor(), u32(1), 0) == 0
    p = create_map(MapSpec("p", MapType.PROG_ARRAY, 4, 4, 4), mem, 1, 2)
    assert p.desc[nat.W_TABLE] == p.table.ctypes.data and n.map_lookup(p.native_descriptor(), u32(0), 0) == 0
    assert n.map_update(p.native_descriptor(), u32(0), u32(0), 0, 0) == -errno.EOPNOTSUPP


# ---------------------------------------------------------------- lazy storage


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_huge_array_costs_nothing_until_written():
    mem = AddressSpace()
    nat.native()
    before = rss_kib()
    a = create_map(MapSpec("big", MapType.ARRAY, 4, 8, 33_000_000), mem, 1, 0)  # 264 MB of values
    a[32_999_999] = 0xDEAD
    a[0] = 1
    assert a[32_999_999] == struct.pack("<Q", 0xDEAD) and a[123_456] == bytes(8)
    assert a.prog_lookup(put(mem, 0, u32(32_999_999))) == (a.values_region << 32) | 32_999_999 * 8
    grown = rss_kib() - before
    assert grown < 8 * 1024, f"RSS grew by {grown} KiB"


def test_huge_hash_costs_nothing_until_written():
    mem = AddressSpace()
    nat.native()  # compiling the native module (LLVM) is a one-time cost, not the map's
    before = rss_kib()
    h = create_map(MapSpec("bigh", MapType.PERCPU_HASH, 16, 64, 4_000_000), mem, 2, 0)
    for i in range(1000):
        h[struct.pack("<QQ", i, i)] = i
    assert len(h) == 1000
    grown = rss_kib() - before
    assert grown < 16 * 1024, f"RSS grew by {grown} KiB"


@pytest.mark.parametrize("ks", [1, 3, 8, 17, 512])
def test_key_sizes(ks):
    h = create_map(MapSpec("h", MapType.HASH, ks, 4, 300), AddressSpace(), 1, 0)
    keys = [(i.to_bytes(2, "little") * ks)[:ks] if ks > 1 else bytes([i]) for i in range(256)]
    keys = list(dict.fromkeys(keys))
    for i, k in enumerate(keys):
        h[k] = i
    assert [int.from_bytes(h[k], "little") for k in keys] == list(range(len(keys)))
    for k in keys[::2]:
        del h[k]
    assert h.keys() == keys[1::2]
    # keys differing only in the last byte are different keys
    if ks > 1:
        a, b = bytes(ks - 1) + b"\x01", bytes(ks - 1) + b"\x02"
        h.clear()
        h[a] = 1
        assert b not in h and a in h
