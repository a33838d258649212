"""perf_event_output and the ring buffer helpers (output, reserve, submit, discard, query)."""

from __future__ import annotations

import errno as _errno
from typing import TYPE_CHECKING

from ..engines.base import helper_arg_fault
from ..spec import MapType
from . import register
from .maps import the_map

if TYPE_CHECKING:
    from ..engines.base import RunState

BPF_F_INDEX_MASK = 0xFFFF_FFFF
BPF_F_CTXLEN_MASK = 0xFFFFF << 32


def packet_bytes(state: RunState, n: int) -> bytes | None:
    """The first `n` bytes of the packet (linear part then fragments), or None if it is shorter."""
    pkt = state.packet
    if pkt is None:
        return None
    data = pkt.bytes() + bytes(state.frags)
    return data[:n] if n <= len(data) else None


@register("perf_event_output", "ctx", "map", "flags", "data", "size")
def perf_event_output(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    """bpf_xdp_event_output: the sample is `data[:size]` then `flags >> 32` bytes of the packet."""
    m = the_map(state, "perf_event_output", 2, r2, (MapType.PERF_EVENT_ARRAY,), "perf_event_array map")
    if r3 & ~(BPF_F_CTXLEN_MASK | BPF_F_INDEX_MASK):
        return -_errno.EINVAL
    sample = state.mem.read(r4, r5)
    ctx_len = (r3 & BPF_F_CTXLEN_MASK) >> 32
    if ctx_len:
        extra = packet_bytes(state, ctx_len)
        if extra is None:
            return -_errno.EFAULT
        sample += extra
    return m.output(r3 & BPF_F_INDEX_MASK, sample, state.cpu)  # type: ignore[attr-defined]


def _ringbuf(state: RunState, helper: str, handle: int):  # noqa: ANN202 - a RingBufMap
    return the_map(state, helper, 1, handle, (MapType.RINGBUF,), "ringbuf map")


@register("ringbuf_output", "ringbuf", "data", "size", "flags")
def ringbuf_output(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    rb = _ringbuf(state, "ringbuf_output", r1)
    return rb.output(state.mem.read(r2, r3), r4)


@register("ringbuf_reserve", "ringbuf", "size", "flags")
def ringbuf_reserve(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    return _ringbuf(state, "ringbuf_reserve", r1).reserve(r2, r3)


def _record_map(state: RunState, helper: str, addr: int):  # noqa: ANN202 - a RingBufMap
    m = state.runtime.map_of_region(addr >> 32)
    if m is None or m.type != MapType.RINGBUF:
        raise helper_arg_fault(helper, 1, "ring buffer record from bpf_ringbuf_reserve", addr, state)
    return m


@register("ringbuf_submit", "data", "flags")
def ringbuf_submit(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    _record_map(state, "ringbuf_submit", r1).submit(r1, r2)
    return 0


@register("ringbuf_discard", "data", "flags")
def ringbuf_discard(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    _record_map(state, "ringbuf_discard", r1).discard(r1, r2)
    return 0


@register("ringbuf_query", "ringbuf", "flags")
def ringbuf_query(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    return _ringbuf(state, "ringbuf_query", r1).query(r2)
