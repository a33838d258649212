"""The program's address space: regions, pointer encoding, bounds checks, and the XDP packet buffer.

A program address is ``(region_id << 32) | offset``. Region ids 0-4 are fixed (see the table in
docs/ARCHITECTURE.md); ids from 5 on are handed out by `AddressSpace.add` in creation order, so the
same object loaded the same way gives the same pointer values in every run and in both engines.

`AddressSpace.table` is a numpy structured array of `MAX_REGIONS` rows, preallocated so that it never
moves: native code (the JIT, the native map functions) keeps its host address. Each row is 24 bytes:

    +0  base   u64  host address of the region's buffer (0 when the region has none)
    +8  lo     u32  first valid offset
    +12 hi     u32  one past the last valid offset
    +16 flags  u32  R_READ=1 | R_WRITE=2 | R_CTX=4
    +20 (pad)  u32

An access of `size` bytes at offset `off` of region `rid` is valid when `rid < MAX_REGIONS`,
`lo <= off`, `off + size <= hi` and the flag for the access kind is set. Regions with `R_CTX` are
the hook's context: their loads and stores are converted by a registered accessor (xdp_md->data is a
u32 field in C but gives a 64-bit packet pointer), so native code must not touch them directly.

The Python side keeps, per region, a small record with a memoryview of the buffer so that the
interpreter's per-instruction `load`/`store` cost one list index, three comparisons and one
`struct.unpack_from` (measured about 0.25 us on the reference machine).
"""

from __future__ import annotations

import errno as _errno
import mmap
import struct
from typing import Protocol

import numpy as np

from .errors import ProgramFault

REGION_SHIFT = 32
OFFSET_MASK = (1 << REGION_SHIFT) - 1

# Fixed region ids.
NULL = 0
STACK = 1
CTX = 2
PACKET = 3
MAP_HANDLES = 4
FIRST_DYNAMIC = 5

# Preallocated so the table never moves while programs run (native code holds its address).
MAX_REGIONS = 4096

R_READ = 1
R_WRITE = 2
R_CTX = 4

STACK_SIZE = 4096  # 8 frames x 512 bytes
FRAME_STACK = 512

REGION_DTYPE = np.dtype(
    [("base", "<u8"), ("lo", "<u4"), ("hi", "<u4"), ("flags", "<u4"), ("_pad", "<u4")]
)
assert REGION_DTYPE.itemsize == 24

_MASKS = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFF_FFFF, 8: 0xFFFF_FFFF_FFFF_FFFF}
_STRUCTS = {1: struct.Struct("<B"), 2: struct.Struct("<H"), 4: struct.Struct("<I"), 8: struct.Struct("<Q")}
# Bound methods looked up once: the interpreter calls these per instruction.
_UNPACK = {n: s.unpack_from for n, s in _STRUCTS.items()}
_PACK = {n: s.pack_into for n, s in _STRUCTS.items()}


def make_addr(rid: int, off: int) -> int:
    """The program address of offset `off` in region `rid`."""
    return (rid << REGION_SHIFT) | (off & OFFSET_MASK)


def split_addr(addr: int) -> tuple[int, int]:
    return addr >> REGION_SHIFT, addr & OFFSET_MASK


_LAZY_THRESHOLD = 1 << 16


def zeros(nbytes: int) -> np.ndarray:
    """A zero-filled byte buffer that costs nothing until written.

    Large buffers are private anonymous mappings: their pages are the shared zero page until first
    written, so a 33-million-entry array map costs page-table entries, not 264 MB. (np.zeros would
    be lazy too, but numpy advises transparent huge pages on big arrays, and then each first write
    costs 2 MB instead of 4 KB.) The mapping lives as long as the array (its base).
    """
    n = max(int(nbytes), 1)
    if n < _LAZY_THRESHOLD:
        return np.zeros(n, dtype=np.uint8)
    mm = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(mm, dtype=np.uint8)


class CtxAccessor(Protocol):
    """What the hook registers for the ctx region (xdp_md, __sk_buff): converted field accesses."""

    def ctx_load(self, off: int, size: int) -> int: ...

    def ctx_store(self, off: int, size: int, value: int) -> None: ...


class _Region:
    """The Python-side mirror of one table row, plus what only Python needs (name, memoryview)."""

    __slots__ = ("name", "buf", "mv", "base", "lo", "hi", "flags", "readable", "writable")

    def __init__(self, name: str, buf: np.ndarray | None, lo: int, hi: int, flags: int):
        self.name = name
        self.set(buf, lo, hi, flags)

    def set(self, buf: np.ndarray | None, lo: int, hi: int, flags: int) -> None:
        self.buf = buf
        self.mv = memoryview(buf).cast("B") if buf is not None else None
        self.base = buf.ctypes.data if buf is not None else 0
        self.lo = lo
        self.hi = hi
        self.flags = flags
        # Precomputed fast-path tests: a ctx region always takes the slow path (its accesses are
        # converted), and so does a region without a buffer.
        plain = buf is not None and not flags & R_CTX
        self.readable = plain and bool(flags & R_READ)
        self.writable = plain and bool(flags & R_WRITE)


def _as_bytes_array(buffer: np.ndarray) -> np.ndarray:
    if not isinstance(buffer, np.ndarray):
        raise TypeError(f"region buffers are numpy arrays, not {type(buffer).__name__}")
    if not buffer.flags.c_contiguous:
        raise ValueError("region buffers must be C-contiguous (native code addresses them linearly)")
    return buffer.reshape(-1).view(np.uint8)


class AddressSpace:
    """Regions of program-visible memory with checked access (see the module docstring)."""

    def __init__(self) -> None:
        self.table = np.zeros(MAX_REGIONS, dtype=REGION_DTYPE)
        # the table as u32 words (6 a row: lo is word 2, hi word 3): set_window writes through it, as a
        # structured row assignment costs microseconds and windows move at least once per run
        self._words = memoryview(self.table.view(np.uint8)).cast("I")
        self._regions: list[_Region | None] = [None] * MAX_REGIONS
        self._next = FIRST_DYNAMIC
        self._ctx: CtxAccessor | None = None
        self._fixed("null", NULL, None, 0, 0, 0)
        # A default stack so that a fresh AddressSpace is usable at once; engines may re-point it.
        self.stack = zeros(STACK_SIZE)
        self._fixed("stack", STACK, self.stack, 0, STACK_SIZE, R_READ | R_WRITE)
        self._fixed("ctx", CTX, None, 0, 0, R_READ | R_WRITE | R_CTX)
        self._fixed("packet", PACKET, None, 0, 0, R_READ | R_WRITE)
        self._fixed("map handles", MAP_HANDLES, None, 0, 0, 0)

    # ---------------------------------------------------------------- region management

    @property
    def table_address(self) -> int:
        """Host address of the region table (rows of 24 bytes, see the module docstring)."""
        return self.table.ctypes.data

    def _fixed(self, name: str, rid: int, buf: np.ndarray | None, lo: int, hi: int, flags: int) -> None:
        self._regions[rid] = _Region(name, buf, lo, hi, flags)
        self._sync(rid)

    def _sync(self, rid: int) -> None:
        r = self._regions[rid]
        row = self.table[rid]
        if r is None:
            row["base"] = row["lo"] = row["hi"] = row["flags"] = 0
            return
        row["base"] = r.buf.ctypes.data if r.buf is not None else 0
        row["lo"] = r.lo
        row["hi"] = r.hi
        row["flags"] = r.flags

    def add(self, name: str, buffer: np.ndarray, flags: int, lo: int = 0, hi: int | None = None) -> int:
        """Register `buffer` as a new region; returns its id. The buffer must outlive the region."""
        buf = _as_bytes_array(buffer)
        if hi is None:
            hi = buf.nbytes
        self._check_window(name, buf, lo, hi)
        rid = self._next
        if rid >= MAX_REGIONS:
            raise MemoryError(f"address space full: {MAX_REGIONS} regions (adding {name!r})")
        self._next += 1
        self._regions[rid] = _Region(name, buf, lo, hi, flags)
        self._sync(rid)
        return rid

    def add_many(self, names: list[str], buffers: list[np.ndarray], flags: int) -> int:
        """Register several regions with consecutive ids (per-CPU value storage); returns the first."""
        if self._next + len(buffers) > MAX_REGIONS:
            raise MemoryError(f"address space full: {MAX_REGIONS} regions (adding {names[0]!r}...)")
        first = self._next
        for name, buf in zip(names, buffers, strict=True):
            self.add(name, buf, flags)
        return first

    @staticmethod
    def _check_window(name: str, buf: np.ndarray | None, lo: int, hi: int, converted: bool = False) -> None:
        # a ctx region may have no buffer at all: its accessor gives every field its meaning
        size = buf.nbytes if buf is not None else (1 << REGION_SHIFT if converted else 0)
        if not 0 <= lo <= hi <= size:
            raise ValueError(f"region {name}: window [{lo:#x}, {hi:#x}) outside its {size}-byte buffer")
        if hi > 1 << REGION_SHIFT:
            raise ValueError(f"region {name}: {hi} bytes exceed the 4 GiB a region offset can address")

    def set(
        self,
        rid: int,
        buffer: np.ndarray | None = None,
        lo: int | None = None,
        hi: int | None = None,
        flags: int | None = None,
    ) -> None:
        """Re-point a region (stack, ctx and packet change per run). Omitted arguments keep their value,
        except that a new buffer without `hi` opens the whole buffer."""
        r = self._regions[rid]
        if r is None:
            raise ValueError(f"region {rid} does not exist")
        buf = r.buf if buffer is None else _as_bytes_array(buffer)
        if lo is None:
            lo = r.lo if buffer is None else 0
        if hi is None:
            hi = r.hi if buffer is None else buf.nbytes
        flags = r.flags if flags is None else flags
        self._check_window(r.name, buf, lo, hi, bool(flags & R_CTX))
        r.set(buf, lo, hi, flags)
        self._sync(rid)

    def set_window(self, rid: int, lo: int, hi: int) -> None:
        """Move the valid window of a region (the packet's [data_meta, data_end)); cheap."""
        r = self._regions[rid]
        r.lo = lo
        r.hi = hi
        w = self._words
        w[rid * 6 + 2] = lo
        w[rid * 6 + 3] = hi

    def set_flags(self, rid: int, flags: int) -> None:
        """Change a region's access flags (freezing .rodata makes it read-only)."""
        r = self._regions[rid]
        r.set(r.buf, r.lo, r.hi, flags)
        self._sync(rid)

    def set_ctx(self, accessor: CtxAccessor | None) -> None:
        """Register the hook's context accessor: loads/stores in the ctx region go to it."""
        self._ctx = accessor

    def region_name(self, rid: int) -> str | None:
        r = self._regions[rid] if 0 <= rid < MAX_REGIONS else None
        return r.name if r is not None else None

    def region_base(self, rid: int) -> int:
        """Host address of a region's buffer (0 without one): which buffer a re-pointed region uses."""
        r = self._regions[rid]
        return r.base if r is not None else 0

    def region_buffer(self, rid: int) -> np.ndarray | None:
        r = self._regions[rid] if 0 <= rid < MAX_REGIONS else None
        return r.buf if r is not None else None

    def window(self, rid: int) -> tuple[int, int]:
        r = self._regions[rid]
        return r.lo, r.hi

    def __len__(self) -> int:
        """Number of region ids in use (fixed ones included)."""
        return self._next

    def describe(self, addr: int) -> str:
        """Human form of a program address: `0x300000140 (packet+0x140)`."""
        rid, off = split_addr(addr)
        name = self.region_name(rid)
        if addr == 0:
            return "0x0 (NULL)"
        if name is None:
            return f"{addr:#x} (no region {rid:#x})"
        if rid == MAP_HANDLES:
            return f"{addr:#x} (map handle {off})"
        return f"{addr:#x} ({name}+{off:#x})"

    # ---------------------------------------------------------------- checks

    def _fault(self, addr: int, size: int, write: bool) -> ProgramFault:
        """The fault for an access that failed the fast-path checks."""
        access = "write" if write else "read"
        rid, off = split_addr(addr) if addr >= 0 else (-1, 0)
        r = self._regions[rid] if 0 <= rid < MAX_REGIONS else None
        if rid == NULL:
            reason = f"null pointer {access} of {size} bytes at {addr:#x}"
            name = "null"
        elif r is None:
            reason = f"not a pointer (region {rid:#x} does not exist): {access} of {size} bytes at {addr:#x}"
            name = None
        elif rid == MAP_HANDLES:
            reason = f"{access} of {size} bytes through a map handle ({addr:#x}): a map is not memory"
            name = r.name
        elif r.buf is None and not r.flags & R_CTX:
            reason = f"{access} of {size} bytes at {addr:#x} in region {r.name}, which has no memory now"
            name = r.name
        elif not (off >= r.lo and off + size <= r.hi):
            reason = (
                f"out-of-bounds {access} of {size} bytes at {addr:#x} in region {r.name} "
                f"[{r.lo:#x}, {r.hi:#x})"
            )
            name = r.name
        elif write and not r.flags & R_WRITE:
            reason = f"{access} of {size} bytes at {addr:#x} to read-only region {r.name}"
            name = r.name
        elif not write and not r.flags & R_READ:
            reason = f"{access} of {size} bytes at {addr:#x} from write-only region {r.name}"
            name = r.name
        else:  # pragma: no cover - callers only get here when a check failed
            reason = f"invalid {access} of {size} bytes at {addr:#x} in region {r.name}"
            name = r.name
        return ProgramFault(reason, kind="memory", address=addr, size=size, region=name)

    def _checked(self, addr: int, size: int, write: bool) -> tuple[_Region, int]:
        """Region and offset of a valid access, or raise the fault. Ctx regions pass here only with
        their own window (the accessor decides what each field means)."""
        rid = addr >> REGION_SHIFT
        off = addr & OFFSET_MASK
        if 0 < rid < MAX_REGIONS and addr >= 0:
            r = self._regions[rid]
            if (
                r is not None
                and (r.buf is not None or r.flags & R_CTX)
                and off >= r.lo
                and off + size <= r.hi
                and r.flags & (R_WRITE if write else R_READ)
            ):
                return r, off
        raise self._fault(addr, size, write)

    # ---------------------------------------------------------------- access

    def load(self, addr: int, size: int) -> int:
        """Little-endian unsigned load of `size` (1, 2, 4, 8) bytes; raises ProgramFault."""
        try:
            r = self._regions[addr >> REGION_SHIFT]
            off = addr & OFFSET_MASK
            if r.readable and off >= r.lo and off + size <= r.hi:
                return _UNPACK[size](r.mv, off)[0]
        except (IndexError, AttributeError, TypeError, KeyError):
            pass  # an id past the table, a free row (None), an odd size: the slow path sorts it out
        return self._load_slow(addr, size)

    def _load_slow(self, addr: int, size: int) -> int:
        r, off = self._checked(addr, size, False)
        if r.flags & R_CTX and self._ctx is not None:
            return self._ctx.ctx_load(off, size)
        if r.buf is None:
            raise self._fault(addr, size, False)
        return int.from_bytes(r.mv[off : off + size], "little")

    def store(self, addr: int, size: int, value: int) -> None:
        """Little-endian store of the low `size` bytes of `value`; raises ProgramFault."""
        try:
            r = self._regions[addr >> REGION_SHIFT]
            off = addr & OFFSET_MASK
            if r.writable and off >= r.lo and off + size <= r.hi:
                _PACK[size](r.mv, off, value & _MASKS[size])
                return
        except (IndexError, AttributeError, TypeError, KeyError):
            pass
        self._store_slow(addr, size, value)

    def _store_slow(self, addr: int, size: int, value: int) -> None:
        r, off = self._checked(addr, size, True)
        if r.flags & R_CTX and self._ctx is not None:
            self._ctx.ctx_store(off, size, value)
            return
        if r.buf is None:
            raise self._fault(addr, size, True)
        r.mv[off : off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def read(self, addr: int, n: int) -> bytes:
        """`n` bytes at `addr` (helpers' buffer arguments); raises ProgramFault."""
        if n == 0:
            return b""
        r, off = self._checked(addr, n, False)
        if r.buf is None:  # ctx: byte-wise reads make no sense through a converter
            raise ProgramFault(
                f"read of {n} bytes at {addr:#x} in region {r.name}: the context is accessed by field",
                kind="memory", address=addr, size=n, region=r.name,
            )
        return bytes(r.mv[off : off + n])

    def write(self, addr: int, data: bytes) -> None:
        """Copy `data` to `addr`; raises ProgramFault."""
        n = len(data)
        if n == 0:
            return
        r, off = self._checked(addr, n, True)
        if r.buf is None:
            raise ProgramFault(
                f"write of {n} bytes at {addr:#x} in region {r.name}: the context is accessed by field",
                kind="memory", address=addr, size=n, region=r.name,
            )
        r.mv[off : off + n] = data

    def host(self, addr: int, size: int, write: bool = False) -> int:
        """Host address of a checked access of `size` bytes (for native map functions)."""
        try:
            r = self._regions[addr >> REGION_SHIFT]
            off = addr & OFFSET_MASK
            if (r.writable if write else r.readable) and off >= r.lo and off + size <= r.hi:
                return r.base + off
        except (IndexError, AttributeError, TypeError, KeyError):
            pass
        r, off = self._checked(addr, size, write)
        if r.buf is None:
            raise ProgramFault(
                f"{'write' if write else 'read'} of {size} bytes at {addr:#x}: region {r.name} has "
                "no host memory", kind="memory", address=addr, size=size, region=r.name,
            )
        return r.base + off

    def check(self, addr: int, size: int, write: bool = False) -> None:
        """Raise the ProgramFault an access would raise, touch nothing."""
        self._checked(addr, size, write)


# ==================================================================== XDP packet buffer

XDP_FRAME_SIZE = 4096  # one page per frame, as BPF_PROG_TEST_RUN and most drivers
XDP_PACKET_HEADROOM = 256
# SKB_DATA_ALIGN(sizeof(struct skb_shared_info)) on x86-64: the tailroom the kernel reserves at the
# frame's end (xdp_data_hard_end), so data_end can grow to 4096 - 320 = 3776, i.e. 3520 bytes of packet.
SKB_SHARED_INFO_SIZE = 320
# sizeof(struct xdp_frame) on x86-64 (include/net/xdp.h: data 8, len 4, headroom 4, metasize 4,
# mem_type 4, dev_rx 8, frame_sz 4, flags 4). The kernel keeps the frame header in the headroom, so
# metadata may reach down to hard start + 40: 256 - 40 = 216 bytes of metadata at most, which is what
# the running 6.18 kernel gives (216 succeed, 220 fail with -EINVAL).
XDP_FRAME_STRUCT_SIZE = 40
ETH_HLEN = 14
# include/net/xdp.h xdp_metalen_invalid(): the meta length must be a multiple of 4 and fit in
# skb_shared_info.meta_len (a u8), so at most 255 (in practice 252).
XDP_META_MAX = 255
ENOTSUPP = 524  # the kernel-internal errno bpf_xdp_adjust_meta returns when meta is unsupported


class PacketBuffer:
    """One XDP frame: `frame` (4096 zeroed bytes), with `data`, `data_end` and `data_meta` offsets.

    The adjust operations follow net/core/filter.c exactly and return 0 or a negative errno, as the
    helpers do. When attached to an AddressSpace, the PACKET region is this frame with the valid
    window [data_meta, data_end), updated by every adjust.

    Metadata: the kernel marks "no metadata support" with data_meta = data + 1
    (xdp_set_data_meta_invalid). BPF_PROG_TEST_RUN and generic XDP support metadata, so that is the
    default here (data_meta starts equal to data). With `meta_supported=False`, adjust_meta returns
    -ENOTSUPP (524) as the kernel does, and `data_meta` -- the value xdp_md->data_meta reads -- is
    reported as `data` rather than the kernel's data + 1: either way a program's `meta + n > data`
    check finds no metadata, and `data` keeps the packet window well-formed.
    """

    def __init__(
        self,
        data: bytes = b"",
        *,
        meta: bytes = b"",
        headroom: int = XDP_PACKET_HEADROOM,
        frame_size: int = XDP_FRAME_SIZE,
        tailroom: int = SKB_SHARED_INFO_SIZE,
        meta_supported: bool = True,
        mem: AddressSpace | None = None,
    ):
        self.frame_size = frame_size
        self.headroom = headroom
        self.tailroom = tailroom
        self.frame = zeros(frame_size)
        self._mv = memoryview(self.frame)
        self.meta_supported = meta_supported
        self._mem: AddressSpace | None = None
        self.data = self.data_end = self._meta = headroom
        self.reset(data, meta=meta)
        if mem is not None:
            self.attach(mem)

    # -------------------------------------------------------------- layout

    @property
    def hard_start(self) -> int:
        return 0

    @property
    def data_hard_end(self) -> int:
        """The highest data_end the frame allows (frame end minus the shared-info tailroom)."""
        return self.frame_size - self.tailroom

    @property
    def max_len(self) -> int:
        """Longest packet at the default headroom (3520 for the standard frame)."""
        return self.data_hard_end - self.headroom

    @property
    def data_meta(self) -> int:
        """What xdp_md->data_meta reads (offset in the frame); `data` when metadata is unsupported."""
        return self._meta if self.meta_supported else self.data

    @property
    def meta_len(self) -> int:
        return self.data - self._meta if self.meta_supported else 0

    def __len__(self) -> int:
        return self.data_end - self.data

    def bytes(self) -> bytes:
        """The packet as it is now: [data, data_end)."""
        return self.frame[self.data : self.data_end].tobytes()

    def meta_bytes(self) -> bytes:
        return self.frame[self.data_meta : self.data].tobytes()

    def reset(self, data: bytes, *, meta: bytes = b"") -> None:
        """Load a new packet into the same frame (zeroing what the last one left behind).

        The kernel's test run hands the program a freshly zeroed frame (kzalloc) with the packet at
        the headroom; zeroing here keeps runs independent of the previous packet's leftovers.
        """
        n = len(data)
        if n > self.data_hard_end - self.headroom:
            raise ValueError(
                f"packet of {n} bytes does not fit an XDP frame: at most {self.max_len} bytes "
                f"({self.frame_size}-byte frame, {self.headroom} headroom, {self.tailroom} tailroom)"
            )
        if len(meta) > self.headroom - XDP_FRAME_STRUCT_SIZE or len(meta) % 4:
            raise ValueError(f"metadata of {len(meta)} bytes is not valid (multiple of 4, at most "
                             f"{self.headroom - XDP_FRAME_STRUCT_SIZE})")
        self.frame.fill(0)
        self.data = self.headroom
        self.data_end = self.headroom + n
        # a memoryview copy: no temporary array
        self._mv[self.data : self.data_end] = data if type(data) is bytes else bytes(data)
        self._meta = self.data - len(meta)
        if meta:
            if not self.meta_supported:
                raise ValueError("metadata given for a frame without metadata support")
            self._mv[self._meta : self.data] = bytes(meta)
        self._sync()

    def attach(self, mem: AddressSpace) -> None:
        """Make this frame the PACKET region of `mem` and keep its window up to date."""
        self._mem = mem
        mem.set(PACKET, buffer=self.frame, lo=self.data_meta, hi=self.data_end)

    def _sync(self) -> None:
        if self._mem is not None:
            self._mem.set_window(PACKET, self.data_meta, self.data_end)

    # -------------------------------------------------------------- the three adjust helpers

    def adjust_head(self, delta: int) -> int:
        """bpf_xdp_adjust_head: move data by `delta`; the metadata moves with it."""
        metalen = self.meta_len
        # Frame header (struct xdp_frame) + metadata must stay below data; at least an Ethernet
        # header must remain.
        data_start = self.hard_start + XDP_FRAME_STRUCT_SIZE + metalen
        data = self.data + delta
        if data < data_start or data > self.data_end - ETH_HLEN:
            return -_errno.EINVAL
        if metalen:
            m = self._meta
            self.frame[m + delta : m + delta + metalen] = self.frame[m : m + metalen].copy()
        self._meta += delta
        self.data = data
        self._sync()
        return 0

    def adjust_meta(self, delta: int) -> int:
        """bpf_xdp_adjust_meta: move data_meta by `delta` (negative grows the metadata)."""
        if not self.meta_supported:
            return -ENOTSUPP
        meta = self._meta + delta
        metalen = self.data - meta
        # Order of checks as in the kernel: range first (-EINVAL), then length (-EACCES).
        if meta < self.hard_start + XDP_FRAME_STRUCT_SIZE or meta > self.data:
            return -_errno.EINVAL
        if metalen % 4 or metalen > XDP_META_MAX:
            return -_errno.EACCES
        self._meta = meta
        self._sync()
        return 0

    def adjust_tail(self, delta: int) -> int:
        """bpf_xdp_adjust_tail: move data_end by `delta`; grown bytes are zeroed."""
        data_end = self.data_end + delta
        if data_end > self.data_hard_end:
            return -_errno.EINVAL
        if data_end < self.data + ETH_HLEN:
            return -_errno.EINVAL
        if delta > 0:
            # The kernel clears grown bytes (they could hold stale memory).
            self.frame[self.data_end : data_end] = 0
        self.data_end = data_end
        self._sync()
        return 0
