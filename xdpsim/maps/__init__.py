"""Runtime maps: storage, the dict-like user-space API, the program-facing API and the native layout.

`create_map(spec, mem, cpus, map_id)` instantiates a `MapSpec` into an `AddressSpace`. One module per
family: array (array, percpu_array, global data), hash (hash, percpu_hash, lru_hash,
lru_percpu_hash), lpm (lpm_trie), fdarray (prog_array, array_of_maps, hash_of_maps), redirect
(devmap, devmap_hash, cpumap, xskmap), ringbuf (ringbuf, perf_event_array), queue (queue, stack);
native holds the llvmlite-compiled algorithms and documents the descriptor the JIT reads.
"""

from __future__ import annotations

from ..errors import LoadError
from ..memory import AddressSpace
from ..spec import MapSpec, MapType
from .array import ArrayMap, PercpuArrayMap
from .base import (
    BPF_ANY,
    BPF_EXIST,
    BPF_F_LOCK,
    BPF_NOEXIST,
    Map,
    MapKeyError,
    errno_name,
    type_name,
)
from .fdarray import ArrayOfMapsMap, HashOfMapsMap, ProgArrayMap
from .hash import HashMap, LruHashMap, LruPercpuHashMap, PercpuHashMap
from .lpm import LpmTrieMap
from .queue import QueueMap, StackMap
from .redirect import CpuMap, DevMap, DevMapHash, RedirectTarget, XskMap
from .ringbuf import BPF_F_CURRENT_CPU, PerfEventArrayMap, RingBufMap

MAP_CLASSES: dict[MapType, type[Map]] = {
    MapType.ARRAY: ArrayMap,
    MapType.PERCPU_ARRAY: PercpuArrayMap,
    MapType.HASH: HashMap,
    MapType.PERCPU_HASH: PercpuHashMap,
    MapType.LRU_HASH: LruHashMap,
    MapType.LRU_PERCPU_HASH: LruPercpuHashMap,
    MapType.LPM_TRIE: LpmTrieMap,
    MapType.PROG_ARRAY: ProgArrayMap,
    MapType.DEVMAP: DevMap,
    MapType.DEVMAP_HASH: DevMapHash,
    MapType.CPUMAP: CpuMap,
    MapType.XSKMAP: XskMap,
    MapType.ARRAY_OF_MAPS: ArrayOfMapsMap,
    MapType.HASH_OF_MAPS: HashOfMapsMap,
    MapType.RINGBUF: RingBufMap,
    MapType.PERF_EVENT_ARRAY: PerfEventArrayMap,
    MapType.QUEUE: QueueMap,
    MapType.STACK: StackMap,
}


def create_map(spec: MapSpec, mem: AddressSpace, cpus: int, map_id: int) -> Map:
    """A runtime map for `spec`, its storage registered in `mem`; `map_id` is its index in the runtime
    (its program-visible handle is `(MAP_HANDLES << 32) | map_id`). Raises LoadError for types xdpsim
    does not implement and for specs the kernel would refuse."""
    try:
        t = MapType(spec.type)
    except ValueError:
        raise LoadError(f"map {spec.name}: unknown map type {int(spec.type)}") from None
    cls = MAP_CLASSES.get(t)
    if cls is None:
        raise LoadError(
            f"map {spec.name}: type {t.name.lower()} (BPF_MAP_TYPE_{t.name}) is not supported by xdpsim "
            f"(supported: {', '.join(sorted(k.name.lower() for k in MAP_CLASSES))})"
        )
    if cpus < 1:
        raise ValueError("cpus must be at least 1")
    return cls(spec, mem, cpus, map_id)


__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_F_CURRENT_CPU",
    "BPF_F_LOCK",
    "BPF_NOEXIST",
    "MAP_CLASSES",
    "ArrayMap",
    "ArrayOfMapsMap",
    "CpuMap",
    "DevMap",
    "DevMapHash",
    "HashMap",
    "HashOfMapsMap",
    "LpmTrieMap",
    "LruHashMap",
    "LruPercpuHashMap",
    "Map",
    "MapKeyError",
    "PercpuArrayMap",
    "PercpuHashMap",
    "PerfEventArrayMap",
    "ProgArrayMap",
    "QueueMap",
    "RedirectTarget",
    "RingBufMap",
    "StackMap",
    "XskMap",
    "create_map",
    "errno_name",
    "type_name",
]
