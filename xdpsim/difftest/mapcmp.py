"""Map contents as engine-neutral snapshots, and their differences.

A snapshot is `{map name: {key hex: value}}` where every value is something all engines can agree
on: bytes as hex (the value's own size, no per-CPU padding), per-CPU maps on the one CPU the packets
ran on, prog arrays as program names and maps of maps as map names (ids differ between the kernel and
xdpsim), devmaps/cpumaps by their first u32 (ifindex / queue size; the rest is a program fd on the way
in and an id on the way out). Maps that cannot be compared map to a `NotCompared` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..spec import MapType

_PERCPU = {MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH, MapType.PERCPU_CGROUP_STORAGE}
_LRU = {MapType.LRU_HASH, MapType.LRU_PERCPU_HASH}
_FIRST_U32 = {MapType.DEVMAP, MapType.DEVMAP_HASH, MapType.CPUMAP}
_MAP_OF_MAPS = {MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS}
_SKIPPED = {
    MapType.RINGBUF: "a ring buffer's records are consumed, not read back, from the kernel",
    MapType.PERF_EVENT_ARRAY: "perf event records are not read back from the kernel in a test run",
    MapType.QUEUE: "reading a queue from user space pops it",
    MapType.STACK: "reading a stack from user space pops it",
    MapType.BLOOM_FILTER: "a bloom filter cannot be listed",
    MapType.XSKMAP: "the kernel does not let user space read an xskmap",
    MapType.SOCKMAP: "sockets do not exist in xdpsim",
    MapType.SOCKHASH: "sockets do not exist in xdpsim",
}


@dataclass(frozen=True)
class NotCompared:
    reason: str


Snapshot = dict[str, dict[str, Any] | NotCompared]


def _value(mtype: MapType, value_size: int, v: Any, cpu: int) -> Any:
    if isinstance(v, list):
        v = v[cpu]
    if isinstance(v, int):
        return v
    b = bytes(v)[:value_size]
    if mtype in _FIRST_U32:
        return b[:4].hex()
    return b.hex()


def sim_snapshot(runtime: Any, collection: Any, cpu: int) -> Snapshot:
    """The maps of an interp/jit Runtime's collection."""
    out: Snapshot = {}
    for name, m in collection.maps.items():
        mtype = MapType(m.spec.type)
        if mtype in _SKIPPED:
            out[name] = NotCompared(_SKIPPED[mtype])
            continue
        entries: dict[str, Any] = {}
        for k, v in m.items():
            if mtype == MapType.PROG_ARRAY:
                entries[bytes(k).hex()] = runtime.programs[int(v)].name
            elif mtype in _MAP_OF_MAPS:
                entries[bytes(k).hex()] = runtime.maps[int(v)].spec.name
            else:
                entries[bytes(k).hex()] = _value(mtype, m.spec.value_size, v, cpu)
        out[name] = entries
    return out


def kernel_snapshot(collection: Any, cpu: int) -> Snapshot:
    """The maps of a KernelCollection (per-CPU values taken on `cpu`)."""
    out: Snapshot = {}
    by_id = {m.id: name for name, m in collection.maps.items()}
    for name, m in collection.maps.items():
        mtype = MapType(m.spec.type)
        if mtype in _SKIPPED:
            out[name] = NotCompared(_SKIPPED[mtype])
            continue
        if mtype == MapType.PROG_ARRAY:
            slots = collection.prog_array_slots(name)
            out[name] = {i.to_bytes(4, "little").hex(): p for i, p in slots.items()}
            continue
        entries: dict[str, Any] = {}
        for k, v in m.items():
            if mtype in _MAP_OF_MAPS:
                mid = int.from_bytes(bytes(v)[:4], "little")
                entries[bytes(k).hex()] = by_id.get(mid, f"id:{mid}")
            else:
                entries[bytes(k).hex()] = _value(mtype, m.spec.value_size, v, cpu)
        out[name] = entries
    return out


@dataclass
class MapDifference:
    map: str
    key: str
    values: dict[str, Any]  # engine -> value (None: no such entry)

    def to_json(self) -> dict[str, Any]:
        return {"map": self.map, "key": self.key, "values": self.values}


def compare_snapshots(snaps: dict[str, Snapshot], specs: dict[str, Any],
                      limit: int = 50) -> tuple[list[MapDifference], dict[str, str]]:
    """Entries that differ between the engines' snapshots (at most `limit`), and map -> reason for the
    maps not compared. `specs`: map name -> MapSpec."""
    diffs: list[MapDifference] = []
    skipped: dict[str, str] = {}
    engines = list(snaps)
    for name, spec in specs.items():
        views = {e: snaps[e].get(name) for e in engines}
        reasons = [v.reason for v in views.values() if isinstance(v, NotCompared)]
        if reasons:
            skipped[name] = reasons[0]
            continue
        mtype = MapType(spec.type)
        if mtype in _LRU and any(len(v) >= spec.max_entries for v in views.values()):  # type: ignore[arg-type]
            skipped[name] = (f"LRU map full ({spec.max_entries} entries): which entries are evicted "
                             "depends on the kernel's per-CPU free lists")
            continue
        keys = sorted(set().union(*(v.keys() for v in views.values())))  # type: ignore[union-attr]
        found: list[MapDifference] = []
        for k in keys:
            vals = {e: v.get(k) for e, v in views.items()}  # type: ignore[union-attr]
            if len({repr(x) for x in vals.values()}) > 1:
                found.append(MapDifference(name, k, vals))
        if found and mtype in _LRU and "kernel" in views:
            sizes = {e: len(v) for e, v in views.items()}  # type: ignore[arg-type]
            if sizes["kernel"] < max(sizes.values()):
                skipped[name] = (f"LRU map: the kernel evicted before the map was full ({sizes}); eviction "
                                 "depends on its per-CPU free lists")
                continue
        diffs.extend(found[: max(0, limit - len(diffs))])
    return diffs, skipped
