"""AddressSpace bounds checks and fault messages; PacketBuffer adjust limits (measured on Linux 6.18)."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from xdpsim.errors import ProgramFault
from xdpsim.memory import (
    CTX,
    ENOTSUPP,
    MAP_HANDLES,
    MAX_REGIONS,
    PACKET,
    R_CTX,
    R_READ,
    R_WRITE,
    REGION_DTYPE,
    STACK,
    AddressSpace,
    PacketBuffer,
    make_addr,
    zeros,
)


@pytest.fixture
def mem() -> AddressSpace:
    return AddressSpace()


def fault(fn, *args) -> ProgramFault:
    with pytest.raises(ProgramFault) as ei:
        fn(*args)
    assert ei.value.kind == "memory"
    return ei.value


# ---------------------------------------------------------------- table layout


def test_table_is_preallocated_and_native_readable(mem):
    assert mem.table.shape == (MAX_REGIONS,)
    assert REGION_DTYPE.itemsize == 24
    addr = mem.table_address
    buf = zeros(64)
    rid = mem.add("vals", buf, R_READ | R_WRITE)
    assert rid == 5
    assert mem.table_address == addr  # never moves
    row = mem.table[rid]
    assert int(row["base"]) == buf.ctypes.data
    assert (int(row["lo"]), int(row["hi"]), int(row["flags"])) == (0, 64, R_READ | R_WRITE)
    raw = np.frombuffer(mem.table.tobytes()[rid * 24 : rid * 24 + 24], dtype=np.uint32)
    assert raw[4] == R_READ | R_WRITE and raw[3] == 64


def test_fixed_regions(mem):
    assert [mem.region_name(i) for i in range(5)] == ["null", "stack", "ctx", "packet", "map handles"]
    assert mem.window(STACK) == (0, 4096)
    assert int(mem.table[CTX]["flags"]) & R_CTX


def test_dynamic_ids_are_consecutive(mem):
    ids = [mem.add(f"r{i}", zeros(8), R_READ) for i in range(3)]
    assert ids == [5, 6, 7]
    first = mem.add_many(["a", "b"], [zeros(8), zeros(8)], R_READ)
    assert first == 8 and mem.region_name(9) == "b"


# ---------------------------------------------------------------- access


def test_load_store_roundtrip_little_endian(mem):
    buf = zeros(32)
    rid = mem.add("x", buf, R_READ | R_WRITE)
    a = make_addr(rid, 8)
    mem.store(a, 4, 0x1122334455)  # truncated to 4 bytes
    assert mem.load(a, 4) == 0x22334455
    assert bytes(buf[8:12]) == bytes.fromhex("55443322")
    mem.store(a, 8, -1)
    assert mem.load(a, 8) == 0xFFFF_FFFF_FFFF_FFFF
    mem.write(a, b"\x01\x02")
    assert mem.read(a, 3) == b"\x01\x02\xff"
    assert mem.load(a, 2) == 0x0201 and mem.load(a, 1) == 1
    assert mem.host(a, 8) == buf.ctypes.data + 8


def test_out_of_bounds_message_names_region_and_window(mem):
    frame = zeros(4096)
    mem.set(PACKET, buffer=frame, lo=0x100, hi=0x13C)
    f = fault(mem.load, 0x300000140, 4)
    assert f.reason == "out-of-bounds read of 4 bytes at 0x300000140 in region packet [0x100, 0x13c)"
    assert (f.address, f.size, f.region) == (0x300000140, 4, "packet")
    # straddling the end
    f = fault(mem.load, 0x300000139, 4)
    assert "out-of-bounds read of 4 bytes" in f.reason
    # below the window (headroom before data_meta)
    fault(mem.store, 0x3000000FF, 1, 0)
    assert mem.load(0x300000138, 4) == 0


def test_null_and_missing_regions(mem):
    f = fault(mem.store, 0x10, 4, 1)
    assert f.reason.startswith("null pointer write") and f.region == "null"
    f = fault(mem.load, 0, 8)
    assert f.reason.startswith("null pointer read")
    f = fault(mem.load, 0x1234 << 32, 4)
    assert "not a pointer (region 0x1234 does not exist)" in f.reason
    f = fault(mem.load, 0x7FF << 32, 4)  # inside the table, never added
    assert "does not exist" in f.reason
    f = fault(mem.load, (1 << 64) - 8, 8)  # region id past the table
    assert "does not exist" in f.reason


def test_read_only_and_handles(mem):
    rid = mem.add(".rodata", zeros(16), R_READ)
    a = make_addr(rid, 0)
    assert mem.load(a, 8) == 0
    f = fault(mem.store, a, 4, 1)
    assert "read-only region .rodata" in f.reason and f.region == ".rodata"
    fault(mem.write, a, b"x")
    fault(mem.host, a, 4, True)
    f = fault(mem.load, make_addr(MAP_HANDLES, 3), 8)
    assert "map handle" in f.reason
    assert mem.describe(make_addr(MAP_HANDLES, 3)) == "0x400000003 (map handle 3)"
    assert mem.describe(make_addr(rid, 4)) == f"{make_addr(rid, 4):#x} (.rodata+0x4)"


def test_set_window_and_flags(mem):
    rid = mem.add("w", zeros(64), R_READ | R_WRITE, lo=8, hi=16)
    fault(mem.load, make_addr(rid, 0), 1)
    mem.set_window(rid, 0, 64)
    assert mem.load(make_addr(rid, 0), 1) == 0
    assert int(mem.table[rid]["hi"]) == 64
    mem.set_flags(rid, R_READ)
    fault(mem.store, make_addr(rid, 0), 1, 0)
    with pytest.raises(ValueError):
        mem.add("bad", zeros(8), R_READ, lo=0, hi=9)


class Ctx:
    def __init__(self):
        self.stored = []

    def ctx_load(self, off, size):
        return 0x3_0000_0100 if off == 0 else off

    def ctx_store(self, off, size, value):
        self.stored.append((off, size, value))


def test_ctx_accesses_are_converted(mem):
    ctx = Ctx()
    mem.set_ctx(ctx)
    mem.set(CTX, lo=0, hi=24)
    # xdp_md->data is a u32 in C, the converted load gives a 64-bit packet pointer
    assert mem.load(make_addr(CTX, 0), 4) == 0x3_0000_0100
    assert mem.load(make_addr(CTX, 16), 4) == 16
    mem.store(make_addr(CTX, 12), 4, 7)
    assert ctx.stored == [(12, 4, 7)]
    f = fault(mem.load, make_addr(CTX, 24), 4)
    assert "region ctx [0x0, 0x18)" in f.reason


def test_region_table_limit():
    m = AddressSpace()
    for i in range(MAX_REGIONS - 5):
        m.add(f"r{i}", zeros(1), R_READ)
    with pytest.raises(MemoryError):
        m.add("one too many", zeros(1), R_READ)


# ---------------------------------------------------------------- PacketBuffer


def pkt(n: int = 64, **kw) -> PacketBuffer:
    return PacketBuffer(bytes(range(256)) * (n // 256) + bytes(range(n % 256)), **kw)


def test_packet_layout_and_window(mem):
    p = pkt(100, mem=mem)
    assert (p.data, p.data_end, p.data_meta) == (256, 356, 256)
    assert p.bytes() == pkt(100).bytes() and len(p) == 100
    assert mem.window(PACKET) == (256, 356)
    assert mem.load(make_addr(PACKET, 256), 1) == 0
    fault(mem.load, make_addr(PACKET, 356), 1)
    fault(mem.load, make_addr(PACKET, 255), 1)


def test_adjust_meta_limits_measured_on_6_18():
    p = pkt()
    assert p.adjust_meta(-216) == 0  # 216 bytes of metadata: the most the running kernel allows
    assert p.meta_len == 216 and p.data_meta == 40
    p = pkt()
    assert p.adjust_meta(-220) == -errno.EINVAL  # below hard start + sizeof(struct xdp_frame)
    p = pkt()
    assert p.adjust_meta(-6) == -errno.EACCES  # not a multiple of 4
    assert p.adjust_meta(-8) == 0 and p.adjust_meta(4) == 0 and p.meta_len == 4
    assert p.adjust_meta(8) == -errno.EINVAL  # meta above data
    assert p.adjust_meta(4) == 0 and p.meta_len == 0


def test_adjust_meta_255_limit_with_more_headroom():
    # with a larger headroom the u8 meta_len limit (255, so 252) is the one that bites: -EACCES
    p = PacketBuffer(bytes(64), headroom=512, frame_size=8192)
    assert p.adjust_meta(-252) == 0
    p = PacketBuffer(bytes(64), headroom=512, frame_size=8192)
    assert p.adjust_meta(-256) == -errno.EACCES


def test_adjust_meta_unsupported(mem):
    p = pkt(mem=mem, meta_supported=False)
    assert p.adjust_meta(-4) == -ENOTSUPP
    assert p.data_meta == p.data and mem.window(PACKET)[0] == p.data
    assert p.adjust_head(-40) == 0 and p.data_meta == p.data == 216


def test_adjust_head_limits(mem):
    p = pkt(64, mem=mem)
    assert p.adjust_head(-216) == 0 and p.data == 40  # down to hard start + sizeof(xdp_frame)
    assert mem.window(PACKET) == (40, 320)
    p = pkt(64)
    assert p.adjust_head(-217) == -errno.EINVAL
    p = pkt(64)
    assert p.adjust_head(50) == 0 and len(p) == 14  # at least ETH_HLEN must remain
    p = pkt(64)
    assert p.adjust_head(51) == -errno.EINVAL
    # metadata counts against the headroom and moves with data
    p = pkt(64)
    assert p.adjust_meta(-8) == 0
    p.frame[248:256] = np.arange(1, 9, dtype=np.uint8)
    assert p.adjust_head(-209) == -errno.EINVAL
    assert p.adjust_head(-208) == 0 and p.data == 48 and p.data_meta == 40
    assert p.meta_bytes() == bytes(range(1, 9))
    assert p.adjust_head(20) == 0 and p.meta_bytes() == bytes(range(1, 9))


def test_adjust_tail_limits(mem):
    p = pkt(64, mem=mem)
    p.frame[320:400] = 0xAB  # stale bytes past data_end are zeroed when the tail grows
    assert p.adjust_tail(3520 - 64) == 0 and len(p) == 3520  # 4096 - 256 - 320
    assert p.bytes()[64:] == bytes(3456)
    assert mem.window(PACKET) == (256, 3776)
    assert p.adjust_tail(1) == -errno.EINVAL
    p = pkt(64)
    assert p.adjust_tail(3457) == -errno.EINVAL
    assert p.adjust_tail(-50) == 0 and len(p) == 14
    assert p.adjust_tail(-1) == -errno.EINVAL


def test_reset_reuses_and_zeroes(mem):
    p = pkt(100, mem=mem)
    p.adjust_head(-16)
    p.frame[240:256] = 7
    p.reset(b"\xaa" * 20)
    assert p.bytes() == b"\xaa" * 20 and not p.frame[:256].any() and not p.frame[276:].any()
    assert mem.window(PACKET) == (256, 276)
    with pytest.raises(ValueError):
        p.reset(bytes(3521))
    p.reset(bytes(3520), meta=b"abcd")
    assert p.meta_bytes() == b"abcd" and p.data_meta == 252


def test_odd_sizes_take_the_slow_path(mem):
    rid = mem.add("x", zeros(16), R_READ | R_WRITE)
    mem.store(make_addr(rid, 1), 3, 0xABCDEF)
    assert mem.load(make_addr(rid, 1), 3) == 0xABCDEF
    assert mem.read(make_addr(rid, 0), 5) == bytes.fromhex("00efcdab00")
