"""Event maps: ringbuf (BPF_MAP_TYPE_RINGBUF) and perf_event_array.

Ring buffer: as kernel/bpf/ringbuf.c. The data area is `max_entries` bytes (a power of two and a
multiple of the page size); each record is an 8-byte header `{u32 len | BUSY(1<<31) | DISCARD(1<<30);
u32 pg_off}` followed by the sample, rounded up to 8. Positions are free-running counters; a
reservation fails (NULL) when it would put the producer more than size - 1 bytes ahead of the
consumer or of the oldest uncommitted record. The kernel maps the data pages twice in a row so that
a record crossing the end stays contiguous; here the region is simply 2 x size bytes long and a
record is read back from where it was written, which gives programs the same contiguous view.

`records()` is the consumer (user space): it returns committed samples in order, skipping discarded
ones, and stops at the first record still reserved (BUSY), as libbpf's ring_buffer__consume.

perf_event_array: bpf_perf_event_output writes a sample to the perf event at an index
(BPF_F_CURRENT_CPU = the running CPU). Here every index below min(max_entries, CPUs) starts with a
simulated reader opened on the CPU of the same number (as a perf_buffer opens one per CPU);
`attach`/`detach` change that. Writing to an index without a reader gives -ENOENT, to a reader bound
to another CPU -EOPNOTSUPP, out of range -E2BIG -- the kernel's answers.
"""

from __future__ import annotations

import dataclasses
import errno as _errno
from collections.abc import Iterator
from typing import Any

from ..errors import ProgramFault
from ..memory import R_READ, R_WRITE, AddressSpace, zeros
from ..spec import MapSpec
from .array import refuse
from .base import ENOTSUPP, Map

PAGE_SIZE = 4096
BPF_RINGBUF_BUSY_BIT = 1 << 31
BPF_RINGBUF_DISCARD_BIT = 1 << 30
BPF_RINGBUF_HDR_SZ = 8
RINGBUF_MAX_RECORD_SZ = 0xFFFF_FFFF // 4

BPF_RB_NO_WAKEUP = 1
BPF_RB_FORCE_WAKEUP = 2
BPF_RB_AVAIL_DATA = 0
BPF_RB_RING_SIZE = 1
BPF_RB_CONS_POS = 2
BPF_RB_PROD_POS = 3

BPF_F_INDEX_MASK = 0xFFFF_FFFF
BPF_F_CURRENT_CPU = BPF_F_INDEX_MASK


def _r8(n: int) -> int:
    return (n + 7) & ~7


class _NoEntries(Map):
    """Maps with no key/value entries: every dict operation fails as the kernel's syscall does."""

    lookup_errno = _errno.EINVAL
    next_key_errno = ENOTSUPP

    def _lookup(self, key: bytes) -> Any:
        return -self.lookup_errno

    def _update(self, key: bytes, value: Any, flags: int) -> int:
        return -_errno.EINVAL

    def _delete(self, key: bytes) -> int:
        return -_errno.EINVAL

    def _norm_value(self, value: Any) -> Any:
        return value

    def _key(self, key: Any) -> bytes:
        return b"" if key is None else super()._key(key)

    def _iter_keys(self) -> Iterator[bytes]:
        return iter(())

    def _count(self) -> int:
        return 0

    def next_key(self, key: Any | None = None) -> bytes | None:
        self._raise("get_next_key", -self.next_key_errno)
        return None


class RingBufMap(_NoEntries):
    def __init__(self, spec: MapSpec, mem: AddressSpace, cpus: int, map_id: int):
        super().__init__(spec, mem, cpus, map_id)
        size = spec.max_entries
        if spec.key_size or spec.value_size:
            raise refuse(spec, "key_size and value_size must be 0")
        if size < PAGE_SIZE or size & (size - 1) or size % PAGE_SIZE:
            raise refuse(spec, f"max_entries {size} must be a power of 2 and a multiple of {PAGE_SIZE}")
        self.size = size
        self.mask = size - 1
        self.data = zeros(2 * size)
        self.rid = mem.add(spec.name, self.data, R_READ | R_WRITE)
        self.values_region = self.rid
        self.producer = 0
        self.consumer = 0
        self.pending = 0
        self._mv = memoryview(self.data)

    def _hdr(self, off: int) -> int:
        return int.from_bytes(self._mv[off : off + 4], "little")

    def _set_hdr(self, off: int, length: int, pg_off: int | None = None) -> None:
        self._mv[off : off + 4] = length.to_bytes(4, "little")
        if pg_off is not None:
            self._mv[off + 4 : off + 8] = pg_off.to_bytes(4, "little")

    # ------------------------------------------------------------ producer (programs)

    def reserve(self, size: int, flags: int = 0) -> int:
        """bpf_ringbuf_reserve: program address of `size` bytes, or 0."""
        if flags or size > RINGBUF_MAX_RECORD_SZ:
            return 0
        length = _r8(size + BPF_RINGBUF_HDR_SZ)
        if length > self.size:
            return 0
        # move the pending position over records already committed or discarded
        while self.pending < self.producer:
            h = self._hdr(self.pending & self.mask)
            if h & BPF_RINGBUF_BUSY_BIT:
                break
            self.pending += _r8((h & ~BPF_RINGBUF_DISCARD_BIT) + BPF_RINGBUF_HDR_SZ)
        new = self.producer + length
        if new - self.consumer > self.mask or new - self.pending > self.mask:
            return 0
        off = self.producer & self.mask
        self._set_hdr(off, size | BPF_RINGBUF_BUSY_BIT, off >> 12)
        self.producer = new
        return (self.rid << 32) | (off + BPF_RINGBUF_HDR_SZ)

    def _record_at(self, addr: int, what: str) -> int:
        rid, off = addr >> 32, (addr & 0xFFFF_FFFF) - BPF_RINGBUF_HDR_SZ
        if rid != self.rid or not 0 <= off < self.size or not self._hdr(off) & BPF_RINGBUF_BUSY_BIT:
            raise ProgramFault(
                f"bpf_ringbuf_{what}: {addr:#x} is not a reserved record of ring buffer {self.name}",
                kind="helper", address=addr,
            )
        return off

    def submit(self, addr: int, flags: int = 0) -> None:
        """bpf_ringbuf_submit: commit a reserved record."""
        off = self._record_at(addr, "submit")
        self._set_hdr(off, self._hdr(off) & ~BPF_RINGBUF_BUSY_BIT)

    def discard(self, addr: int, flags: int = 0) -> None:
        """bpf_ringbuf_discard: drop a reserved record (the consumer skips it)."""
        off = self._record_at(addr, "discard")
        self._set_hdr(off, (self._hdr(off) & ~BPF_RINGBUF_BUSY_BIT) | BPF_RINGBUF_DISCARD_BIT)

    def output(self, data: bytes, flags: int = 0) -> int:
        """bpf_ringbuf_output: 0, -EINVAL for unknown flags, -EAGAIN when full."""
        if flags & ~(BPF_RB_NO_WAKEUP | BPF_RB_FORCE_WAKEUP):
            return -_errno.EINVAL
        addr = self.reserve(len(data))
        if not addr:
            return -_errno.EAGAIN
        off = addr & 0xFFFF_FFFF
        self._mv[off : off + len(data)] = data
        self.submit(addr)
        return 0

    def query(self, flag: int) -> int:
        """bpf_ringbuf_query."""
        if flag == BPF_RB_AVAIL_DATA:
            return self.producer - self.consumer
        if flag == BPF_RB_RING_SIZE:
            return self.size
        if flag == BPF_RB_CONS_POS:
            return self.consumer
        if flag == BPF_RB_PROD_POS:
            return self.producer
        return 0

    # ------------------------------------------------------------ consumer (user space)

    def _scan(self, consume: bool) -> list[bytes]:
        out, pos = [], self.consumer
        while pos < self.producer:
            off = pos & self.mask
            h = self._hdr(off)
            if h & BPF_RINGBUF_BUSY_BIT:
                break
            n = h & ~BPF_RINGBUF_DISCARD_BIT
            if not h & BPF_RINGBUF_DISCARD_BIT:
                out.append(bytes(self._mv[off + BPF_RINGBUF_HDR_SZ : off + BPF_RINGBUF_HDR_SZ + n]))
            pos += _r8(n + BPF_RINGBUF_HDR_SZ)
        if consume:
            self.consumer = pos
        return out

    def records(self, consume: bool = True) -> list[bytes]:
        """Committed samples in order (consumed unless `consume=False`)."""
        return self._scan(consume)

    def to_json(self) -> dict:
        return {"type": self.type_name, "entries": {}, "records": [r.hex() for r in self._scan(False)]}


class PerfEventArrayMap(_NoEntries):
    lookup_errno = _errno.EOPNOTSUPP

    def __init__(self, spec: MapSpec, mem: AddressSpace, cpus: int, map_id: int):
        if spec.max_entries == 0:
            # libbpf sizes a perf event array to the number of CPUs when it says 0
            spec = dataclasses.replace(spec, max_entries=cpus)
        super().__init__(spec, mem, cpus, map_id)
        if spec.key_size != 4 or spec.value_size != 4:
            raise refuse(spec, "key_size and value_size must be 4")
        self.events: dict[int, int] = {i: i for i in range(min(self.max_entries, cpus))}
        self._records: list[tuple[int, bytes]] = []

    def attach(self, index: int, cpu: int | None = None) -> None:
        """Open a simulated perf event reader at `index`, bound to `cpu` (default: the same number)."""
        self.events[index] = index if cpu is None else cpu

    def detach(self, index: int) -> None:
        self.events.pop(index, None)

    def output(self, flags: int, data: bytes, cpu: int = 0) -> int:
        """bpf_perf_event_output's map side: `flags` low 32 bits = index or BPF_F_CURRENT_CPU.
        (The XDP/TC variants append packet bytes given by flags' upper 32 bits: the helper does that.)"""
        index = flags & BPF_F_INDEX_MASK
        if index == BPF_F_CURRENT_CPU:
            index = cpu
        if index >= self.max_entries:
            return -_errno.E2BIG
        ev = self.events.get(index)
        if ev is None:
            return -_errno.ENOENT
        if ev != cpu:
            return -_errno.EOPNOTSUPP
        self._records.append((cpu, bytes(data)))
        return 0

    def records(self, consume: bool = True) -> list[tuple[int, bytes]]:
        """(cpu, sample) pairs in output order."""
        out = list(self._records)
        if consume:
            self._records.clear()
        return out

    def _delete(self, key: bytes) -> int:
        i = int.from_bytes(key, "little")
        if i >= self.max_entries:
            return -_errno.E2BIG
        return 0 if self.events.pop(i, None) is not None else -_errno.ENOENT

    def to_json(self) -> dict:
        return {"type": self.type_name, "entries": {},
                "records": [{"cpu": c, "data": d.hex()} for c, d in self._records]}
