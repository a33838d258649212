"""Map helpers: lookup/update/delete, queue and stack push/pop/peek, per-CPU lookup, for_each_map_elem."""

from __future__ import annotations

import errno as _errno
from typing import TYPE_CHECKING

from ..engines.base import helper_arg_fault
from ..memory import R_READ, zeros
from ..spec import MapType
from . import register

if TYPE_CHECKING:
    from ..engines.base import RunState
    from ..maps import Map

_QUEUE_TYPES = (MapType.QUEUE, MapType.STACK)
_PERCPU_TYPES = (MapType.PERCPU_ARRAY, MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH)
_FOR_EACH_TYPES = (MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.HASH, MapType.PERCPU_HASH, MapType.LRU_HASH,
                   MapType.LRU_PERCPU_HASH)
# map types whose elements programs may not look up / change through the generic helpers
# (kernel/bpf/verifier.c check_map_func_compatibility refuses the program)
_NO_PROG_LOOKUP = (MapType.PROG_ARRAY, MapType.RINGBUF, MapType.PERF_EVENT_ARRAY, MapType.QUEUE,
                   MapType.STACK, MapType.CPUMAP)
_NO_PROG_UPDATE = (*_NO_PROG_LOOKUP, MapType.DEVMAP, MapType.DEVMAP_HASH, MapType.XSKMAP,
                   MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS)


def the_map(state: RunState, helper: str, argno: int, handle: int, types: tuple[MapType, ...] | None = None,
            what: str = "map") -> Map:
    """The map a helper argument names, or the fault the verifier's check would have been."""
    m = state.runtime.map_from_handle(handle)
    if m is None or (types is not None and m.type not in types):
        raise helper_arg_fault(helper, argno, what, handle, state)
    return m


@register("map_lookup_elem", "map", "key")
def map_lookup_elem(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    m = state.runtime.map_from_handle(r1)
    if m is None or m.type in _NO_PROG_LOOKUP:
        raise helper_arg_fault("map_lookup_elem", 1, "map that programs may look up", r1, state)
    return m.prog_lookup(r2, state.cpu)


@register("map_update_elem", "map", "key", "value", "flags")
def map_update_elem(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    m = state.runtime.map_from_handle(r1)
    if m is None or m.type in _NO_PROG_UPDATE:
        raise helper_arg_fault("map_update_elem", 1, "map that programs may update", r1, state)
    return m.prog_update(r2, r3, r4, state.cpu)


@register("map_delete_elem", "map", "key")
def map_delete_elem(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    m = state.runtime.map_from_handle(r1)
    if m is None or m.type in _NO_PROG_UPDATE:
        raise helper_arg_fault("map_delete_elem", 1, "map that programs may delete from", r1, state)
    return m.prog_delete(r2, state.cpu)


@register("map_push_elem", "map", "value", "flags")
def map_push_elem(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    m = the_map(state, "map_push_elem", 1, r1, _QUEUE_TYPES, "queue or stack map")
    return m.prog_push(r2, r3, state.cpu)  # type: ignore[attr-defined]


@register("map_pop_elem", "map", "value")
def map_pop_elem(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    m = the_map(state, "map_pop_elem", 1, r1, _QUEUE_TYPES, "queue or stack map")
    return m.prog_pop(r2, state.cpu)  # type: ignore[attr-defined]


@register("map_peek_elem", "map", "value")
def map_peek_elem(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    m = the_map(state, "map_peek_elem", 1, r1, _QUEUE_TYPES, "queue or stack map")
    return m.prog_peek(r2, state.cpu)  # type: ignore[attr-defined]


@register("map_lookup_percpu_elem", "map", "key", "cpu")
def map_lookup_percpu_elem(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    m = the_map(state, "map_lookup_percpu_elem", 1, r1, _PERCPU_TYPES, "per-CPU array or hash map")
    cpu = r3 & 0xFFFF_FFFF
    if cpu >= state.runtime.cpus:
        return 0  # the kernel returns NULL for cpu >= nr_cpu_ids
    return m.prog_lookup(r2, cpu)


# ---------------------------------------------------------------------------- for_each_map_elem

_SCRATCH_SIZE = 1 << 16


def _key_scratch(state: RunState, key: bytes) -> tuple[int, int]:
    """Copy `key` into the runtime's read-only helper scratch region; returns (address, old top)."""
    hs = state.runtime.hook_state
    if "helper_scratch" not in hs:
        buf = zeros(_SCRATCH_SIZE)
        hs["helper_scratch"] = (state.runtime.mem.add("helper scratch", buf, R_READ), buf)
    rid, buf = hs["helper_scratch"]
    top = state.scratch_top
    size = (len(key) + 7) & ~7
    if top + size > _SCRATCH_SIZE:
        raise helper_arg_fault("for_each_map_elem", 1, "map whose keys fit the helper scratch area", 0, state)
    buf[top : top + len(key)] = list(key)
    state.scratch_top = top + size
    return (rid << 32) | top, top


@register("for_each_map_elem", "map", "callback_fn", "callback_ctx", "flags")
def for_each_map_elem(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    """Call callback(map, &key, &value, ctx) for each element; a return of 1 stops. Returns the number
    of elements visited. The key pointer is read-only (a scratch copy); values are the map's own."""
    m = the_map(state, "for_each_map_elem", 1, r1, _FOR_EACH_TYPES, "array or hash map")
    if r4:
        return -_errno.EINVAL
    if state.runtime.split_code_address(r2) is None:
        raise helper_arg_fault("for_each_map_elem", 2, "function (callback)", r2, state)
    engine = state.engine
    assert engine is not None, "for_each_map_elem needs the engine in RunState.engine"
    is_array = m.type in (MapType.ARRAY, MapType.PERCPU_ARRAY)
    cpu = state.cpu if m.percpu else 0
    n = 0
    for key in list(m.keys()):
        if is_array:
            value = m.value_addr(int.from_bytes(key, "little"), 0, cpu)  # type: ignore[attr-defined]
        else:
            slot = m.table.find(key)  # type: ignore[attr-defined]
            if slot < 0:  # deleted by an earlier callback
                continue
            value = m.value_addr(slot, cpu)  # type: ignore[attr-defined]
        kaddr, top = _key_scratch(state, key)
        try:
            ret = engine.call(state, r2, (m.handle, kaddr, value, r3, 0))
        finally:
            state.scratch_top = top
        n += 1
        if ret & 0xFFFF_FFFF_FFFF_FFFF:
            break
    return n
