"""The kernel engine: instantiate an ObjectSpec in the running kernel through bpf() and run it there.

This is the reference the other engines are judged against ("same object, same packet, same maps ->
same verdict, same output bytes, same map contents"), so it does what libbpf would do with the object
and nothing more:

- BTF (`ObjectSpec.btf_raw`, already fixed up by the loader) is loaded when present; if the kernel
  refuses it, everything is loaded without BTF and `notes` says why.
- Maps are created in spec order; per-CPU values are exchanged as the syscall does (one value per
  *possible* CPU, each rounded up to 8 bytes). Global data is an ARRAY of one entry holding the
  section bytes; `.rodata` (`MapSpec.frozen`) gets BPF_F_RDONLY_PROG and is frozen after the write,
  so the verifier may trust its contents as libbpf arranges. Maps of maps get `inner_map_fd` from a
  template map created from `MapSpec.inner` and closed right after.
- Programs get map fds patched into their `lddw` pseudo instructions (`imm` = map index -> fd; a map
  value's offset stays in `next_imm`), func_info/line_info when BTF loaded, and libbpf's
  expected_attach_type for their section. Prog arrays and maps of maps are filled from
  `MapSpec.init_slots` once every program is loaded.
- Runs use BPF_PROG_TEST_RUN with `struct xdp_md` / `struct __sk_buff` as ctx_in/ctx_out. An
  `ingress_ifindex` must name a device in the calling thread's network namespace (the kernel resolves
  it there), so the collection owns a throwaway namespace with the requested devices and steps into it
  for each run (`xdpsim.kernel.netns`).

Beyond what libbpf does, and only so that a test run can say what a device would have done
(`xdpsim.kernel.redirects`, `record_redirects=True`): each bpf_redirect / bpf_redirect_map /
bpf_redirect_neigh / bpf_redirect_peer call gets a few instructions in front of it that record its
arguments in a hidden mmapped map, so `KernelResult.redirect` says where an XDP_REDIRECT or
TC_ACT_REDIRECT went; `KernelProgram.patch` maps instruction indexes (load logs are given back in the
original numbering, BTF line info moves with the code). Programs for devmap/cpumap entries are loaded
as they are (for the map values) and once more as plain XDP programs for test runs, which
bpf_prog_test_run_xdp refuses for their attach types. `verify` (xdpsim check) loads the unchanged code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno as _errno
import mmap
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..asm.patch import Patched, remap_log
from ..errors import KernelError, LoadError, MapError
from ..kernel import bpf
from ..kernel import redirects as rd
from ..kernel.btfload import btf_strings, func_info_records, line_col, line_info_records
from ..kernel.netns import Interface, NetNamespace
from ..spec import MapSpec, MapType, ObjectSpec, ProgramSpec, ProgType

LDDW = 0x18
PSEUDO_MAP_FD = 1
PSEUDO_MAP_VALUE = 2
PSEUDO_MAP_IDX = 5
PSEUDO_MAP_IDX_VALUE = 6

_MAP_PSEUDOS = (PSEUDO_MAP_FD, PSEUDO_MAP_VALUE, PSEUDO_MAP_IDX, PSEUDO_MAP_IDX_VALUE)

XDP_MD = struct.Struct("<6I")  # data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
SK_BUFF_SIZE = 192  # sizeof(struct __sk_buff) on 6.18 (checked against the kernel's BTF)

# struct __sk_buff fields BPF_PROG_TEST_RUN lets user space set (convert___skb_to_skb) and reports back
# (convert_skb_to___skb): name -> (offset, struct format).
SKB_FIELDS: dict[str, tuple[int, str]] = {
    "mark": (8, "<I"),
    "priority": (32, "<I"),
    "ingress_ifindex": (36, "<I"),
    "ifindex": (40, "<I"),
    "cb": (48, "<5I"),
    "tstamp": (152, "<Q"),
    "wire_len": (160, "<I"),
    "gso_segs": (164, "<I"),
    "gso_size": (176, "<I"),
    "hwtstamp": (184, "<Q"),
}
_SKB_SETTABLE = ("mark", "priority", "ingress_ifindex", "ifindex", "cb", "tstamp", "wire_len", "gso_segs",
                 "gso_size", "hwtstamp")

# libbpf creates these map types without key/value BTF (the kernel refuses or ignores it for them).
_NO_BTF_TYPES = {
    MapType.PERF_EVENT_ARRAY, MapType.CGROUP_ARRAY, MapType.STACK_TRACE, MapType.ARRAY_OF_MAPS,
    MapType.HASH_OF_MAPS, MapType.DEVMAP, MapType.DEVMAP_HASH, MapType.CPUMAP, MapType.XSKMAP,
    MapType.SOCKMAP, MapType.SOCKHASH, MapType.QUEUE, MapType.STACK, MapType.ARENA,
}
_PERCPU_TYPES = {MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH,
                 MapType.PERCPU_CGROUP_STORAGE}
_KEYLESS_TYPES = {MapType.QUEUE, MapType.STACK, MapType.RINGBUF, MapType.USER_RINGBUF, MapType.BLOOM_FILTER,
                  MapType.PERF_EVENT_ARRAY, MapType.ARENA}
_FD_VALUE_TYPES = {MapType.PROG_ARRAY, MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS}


@dataclass
class KernelResult:
    """One BPF_PROG_TEST_RUN. `data_out` is the packet as the program left it (XDP: from `data`, the
    metadata apart in `meta`; TC: from skb->data), `ctx_out` the raw context written back."""

    retval: int
    data_out: bytes
    duration_ns: int
    meta: bytes = b""
    ctx_out: bytes | None = None
    # where an XDP_REDIRECT / TC_ACT_REDIRECT went (None for other verdicts, or when the collection
    # does not record redirects); see xdpsim.kernel.redirects
    redirect: rd.KernelRedirect | None = None

    @property
    def skb(self) -> dict[str, Any]:
        """The __sk_buff fields the kernel reports back after a TC run."""
        return decode_sk_buff(self.ctx_out or b"")


def decode_sk_buff(raw: bytes) -> dict[str, Any]:
    if len(raw) < SK_BUFF_SIZE:
        return {}
    out: dict[str, Any] = {}
    for name, (off, fmt) in SKB_FIELDS.items():
        vals = struct.unpack_from(fmt, raw, off)
        out[name] = list(vals) if len(vals) > 1 else vals[0]
    return out


# --- verifier logs ---------------------------------------------------------------------------------

_SRC_LINE = re.compile(r"^; (?P<text>.*?)(?: @ (?P<file>[^:\s]+):(?P<line>\d+))?$")
_LOG_TAIL = ("processed ", "verification time", "stack depth", "max_states_per_insn", "mark_read")


def log_error_line(log: str) -> str:
    """The verifier's complaint: the last line of the log before its statistics."""
    for line in reversed(log.strip().splitlines()):
        s = line.strip()
        if s and not s.startswith(_LOG_TAIL) and not s.startswith(";"):
            return s
    return ""


def log_source_line(log: str) -> str | None:
    """`file:line: `code`` of the last source line the verifier printed (it prints `; code @ file:line`
    comments when the program was loaded with BTF line info), None when the log has none."""
    last = None
    for line in log.splitlines():
        m = _SRC_LINE.match(line)
        if m and line.startswith("; "):
            last = m
    if last is None:
        return None
    text = last.group("text").strip()
    if last.group("file"):
        return f"{last.group('file')}:{last.group('line')}: `{text}`"
    return f"`{text}`"


def refusal_message(prog: str, err: int, log: str) -> str:
    name = _errno.errorcode.get(err, str(err))
    msg = f"program {prog} refused by the kernel ({name})"
    what = log_error_line(log)
    if what:
        msg += f": {what}"
    src = log_source_line(log)
    if src:
        msg += f" (at {src})"
    return msg


# --- maps --------------------------------------------------------------------------------------------


class KernelMap:
    """A map in the kernel, with the dict-like user API of xdpsim's runtime maps (bytes in, bytes out).

    Per-CPU values are lists of one `bytes` per possible CPU, each `round8(value_size)` long, as the
    syscall returns them. Prog arrays and maps of maps read back kernel ids (u32), as the syscall does.
    """

    def __init__(self, spec: MapSpec, fd: bpf.Fd, collection: KernelCollection | None = None):
        self.spec = spec
        self.name = spec.name
        self.type = MapType(spec.type)
        self.fd = fd
        self.key_size = spec.key_size
        self.value_size = spec.value_size
        self.percpu = self.type in _PERCPU_TYPES
        self.cpus = bpf.possible_cpus()
        self.stride = bpf.percpu_value_size(self.value_size)
        self._coll = collection
        info = bpf.map_info(fd.fd)
        self.id = int(info["id"])  # type: ignore[arg-type]
        self.max_entries = int(info["max_entries"])  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<KernelMap {self.name} {self.type.name.lower()} id={self.id} fd={self.fd.fd}>"

    # normalisation
    def _key(self, key: Any) -> bytes:
        if key is None and self.key_size == 0:
            return b""
        if isinstance(key, int):
            return key.to_bytes(self.key_size, "little", signed=key < 0)
        key = bytes(key)
        if len(key) != self.key_size:
            raise MapError(f"map {self.name}: key of {len(key)} bytes, the map's keys have {self.key_size}",
                           _errno.EINVAL)
        return key

    def _one(self, value: Any, size: int) -> bytes:
        if isinstance(value, int):
            return value.to_bytes(self.value_size, "little", signed=value < 0).ljust(size, b"\0")
        v = bytes(value)
        if len(v) == self.value_size or len(v) == size:
            return v.ljust(size, b"\0")
        raise MapError(f"map {self.name}: value of {len(v)} bytes, the map's values have {self.value_size}",
                       _errno.EINVAL)

    def _value(self, value: Any) -> bytes:
        if self.type in _FD_VALUE_TYPES and isinstance(value, str):
            if self._coll is None:
                raise MapError(f"map {self.name}: cannot resolve {value!r} without a collection",
                               _errno.EINVAL)
            return self._coll._fd_of(self, value).to_bytes(4, "little")
        if not self.percpu:
            return self._one(value, self.value_size)
        if isinstance(value, (list, tuple)):
            if len(value) != self.cpus:
                raise MapError(f"map {self.name}: {len(value)} per-CPU values for {self.cpus} possible CPUs",
                               _errno.EINVAL)
            return b"".join(self._one(v, self.stride) for v in value)
        if isinstance(value, (bytes, bytearray, memoryview)) and len(value) == self.cpus * self.stride \
                and len(value) != self.value_size:
            return bytes(value)  # the syscall's flat buffer
        return self._one(value, self.stride) * self.cpus

    def _split(self, raw: bytes) -> bytes | list[bytes]:
        if not self.percpu:
            return raw
        return [raw[i * self.stride : (i + 1) * self.stride] for i in range(self.cpus)]

    @property
    def _vsize(self) -> int:
        return self.stride * self.cpus if self.percpu else self.value_size

    # API
    def lookup(self, key: Any) -> bytes | list[bytes]:
        try:
            raw = bpf.map_lookup(self.fd.fd, self._key(key), self._vsize)
        except KernelError as e:
            raise MapError(f"map {self.name}: {e}", e.errno) from e
        if raw is None:
            raise _missing(self.name, key)
        return self._split(raw)

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self.lookup(key)
        except KeyError:
            return default

    def update(self, key: Any, value: Any, flags: int = bpf.BPF_ANY) -> None:
        try:
            bpf.map_update(self.fd.fd, self._key(key), self._value(value), flags)
        except KernelError as e:
            raise MapError(f"map {self.name}: {e}", e.errno) from e

    def delete(self, key: Any) -> None:
        try:
            ok = bpf.map_delete(self.fd.fd, self._key(key))
        except KernelError as e:
            raise MapError(f"map {self.name}: {e}", e.errno) from e
        if not ok:
            raise _missing(self.name, key)

    def next_key(self, key: Any | None = None) -> bytes | None:
        return bpf.map_get_next_key(self.fd.fd, None if key is None else self._key(key), self.key_size)

    def keys(self) -> list[bytes]:
        if self.type in _KEYLESS_TYPES:
            raise KernelError(f"map {self.name}: {self.type.name.lower()} maps have no keys to list",
                              _errno.EOPNOTSUPP)
        return bpf.map_keys(self.fd.fd, self.key_size)

    def items(self) -> list[tuple[bytes, bytes | list[bytes]]]:
        out = []
        for k in self.keys():
            raw = bpf.map_lookup(self.fd.fd, k, self._vsize)
            if raw is not None:  # deleted meanwhile, or an empty prog-array slot
                out.append((k, self._split(raw)))
        return out

    def read(self) -> dict[bytes, bytes | list[bytes]]:
        return dict(self.items())

    def freeze(self) -> None:
        bpf.map_freeze(self.fd.fd)

    def __getitem__(self, key: Any) -> Any:
        return self.lookup(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.update(key, value)

    def __delitem__(self, key: Any) -> None:
        self.delete(key)

    def __contains__(self, key: Any) -> bool:
        return self.get(key) is not None

    def __iter__(self):  # noqa: ANN204 - a plain key iterator
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.items()) if self.type in _FD_VALUE_TYPES else len(self.keys())

    def to_json(self) -> dict:
        """Like the runtime maps' dump; prog arrays show program names (kernel ids mean nothing elsewhere)."""
        if self.type == MapType.PROG_ARRAY and self._coll is not None:
            return {"type": self.type.name.lower(),
                    "entries": {k.to_bytes(4, "little").hex(): v
                                for k, v in self._coll.prog_array_slots(self.name).items()}}
        entries: dict[str, Any] = {}
        for k, v in self.items():
            entries[k.hex()] = [x.hex() for x in v] if isinstance(v, list) else v.hex()
        return {"type": self.type.name.lower(), "entries": entries}


def _missing(name: str, key: Any) -> Exception:
    msg = f"map {name}: no entry for key {key.hex() if isinstance(key, (bytes, bytearray)) else key!r}"
    try:
        from ..maps.base import MapKeyError  # late: the runtime maps pull in llvmlite
    except ImportError:  # pragma: no cover - maps package missing
        return MapError(msg, _errno.ENOENT)
    return MapKeyError(msg, _errno.ENOENT)


# --- programs ----------------------------------------------------------------------------------------


@dataclass
class KernelProgram:
    name: str
    spec: ProgramSpec
    fd: bpf.Fd
    id: int
    tag: str
    log: str = ""  # the load log when a log level was asked for (original instruction numbering)
    notes: list[str] = field(default_factory=list)
    index: int = 0  # position in the object's programs (what recorded redirects name)
    patch: Patched | None = None  # the instrumentation (redirect recording) of the loaded code
    # the fd test runs use when it is not `fd`: a devmap/cpumap program's plain-XDP twin
    run_fd: bpf.Fd | None = None
    run_refused: str = ""  # why a devmap/cpumap program has no twin to test-run

    @property
    def entry(self) -> bool:
        """A devmap or cpumap entry program (BPF_PROG_TEST_RUN refuses them; a twin runs instead)."""
        return expected_attach_type(self.spec) in (bpf.AttachType.XDP_DEVMAP, bpf.AttachType.XDP_CPUMAP)


def expected_attach_type(prog: ProgramSpec) -> int:
    """What libbpf sets for the program's section (libbpf's section_defs)."""
    where = (prog.attach or prog.section or "").lower()
    if prog.type == ProgType.XDP:
        if "devmap" in where:
            return bpf.AttachType.XDP_DEVMAP
        if "cpumap" in where:
            return bpf.AttachType.XDP_CPUMAP
        return bpf.AttachType.XDP
    if prog.type == ProgType.SCHED_CLS:
        if where.startswith(("tcx/ingress", "tc/ingress")):
            return bpf.AttachType.TCX_INGRESS
        if where.startswith(("tcx/egress", "tc/egress")):
            return bpf.AttachType.TCX_EGRESS
    return bpf.AttachType.NONE


def _link_fds(prog: ProgramSpec, fds: Sequence[int], names: Sequence[str]) -> bytes:
    """The program's bytes with map indexes in lddw pseudo instructions replaced by map fds."""
    out = bytearray()
    for pc, ins in enumerate(prog.insns):
        imm, src = ins.imm, ins.src
        if ins.opcode == LDDW and src in _MAP_PSEUDOS:
            if not 0 <= imm < len(fds):
                raise LoadError(f"program {prog.name}, insn {pc}: map index {imm} out of range "
                                f"({len(fds)} maps)")
            imm = fds[imm]
            src = PSEUDO_MAP_FD if src in (PSEUDO_MAP_FD, PSEUDO_MAP_IDX) else PSEUDO_MAP_VALUE
        out += struct.pack("<BBhi", ins.opcode & 0xFF, ((src & 0xF) << 4) | (ins.dst & 0xF), ins.off, imm)
    return bytes(out)


# --- the collection ----------------------------------------------------------------------------------

InterfaceLike = Interface | tuple


class KernelCollection:
    """An ObjectSpec's maps and programs, live in the running kernel. Use it as a context manager.

    `interfaces`: devices `(name, ifindex, rx queues)` to create in a private network namespace for
    runs that give an `ingress_ifindex` (ifindex 1 is the namespace's loopback). With
    `auto_interfaces` (the default) a run naming an ifindex that does not exist yet creates a veth
    with that ifindex and enough queues on the fly. `netns` shares an existing namespace instead
    (not closed with the collection). `programs` loads only those (and needs the prog arrays that
    reference others to be filled by hand). `load=False` stops after BTF and maps (used by `verify`).
    """

    def __init__(
        self,
        objspec: ObjectSpec,
        *,
        interfaces: Iterable[InterfaceLike] | None = None,
        netns: NetNamespace | None = None,
        auto_interfaces: bool = True,
        programs: Iterable[str] | None = None,
        use_btf: bool = True,
        log_level: int = 0,
        load: bool = True,
        record_redirects: bool = True,
    ):
        bpf.require_kernel()
        self.spec = objspec
        self.maps: dict[str, KernelMap] = {}
        self.programs: dict[str, KernelProgram] = {}
        self.notes: list[str] = []
        self.btf_fd: bpf.Fd | None = None
        self.auto_interfaces = auto_interfaces
        self.log_level = log_level
        self._map_fds: list[int] = []
        self._own_ns = netns is None
        self.netns: NetNamespace | None = netns
        self._btf_strings: dict[str, int] | None = None
        self._prog_ids: dict[int, str] = {}
        self._hidden: int | None = None  # map index of the redirect record (xdpsim.kernel.redirects)
        self._hidden_fd: bpf.Fd | None = None
        self._rec: mmap.mmap | None = None
        self._redirect_maps: list[rd.RedirectMap] = []
        self._unrecorded: list[str] = []  # programs with redirect calls loaded without the recording
        self._map_pointers = True  # bpf_redirect_map's r1 (the map's kernel address) is recorded
        try:
            if use_btf:
                self._load_btf()
            self._create_maps()
            if load and record_redirects:
                self._create_recorder()
            if load:
                wanted = list(objspec.programs) if programs is None else list(programs)
                for name in wanted:
                    if name not in objspec.programs:
                        raise LoadError(f"{objspec.path}: no program named {name!r} "
                                        f"(programs: {', '.join(objspec.programs)})")
                    self.programs[name] = self._load_program(objspec.programs[name])
                self._fill_slots()
            ifaces = list(interfaces or [])
            if ifaces:
                self._namespace().create()
                for i in ifaces:
                    self.netns.add_interface(i)  # type: ignore[union-attr]
        except BaseException:
            self.close()
            raise

    # --- lifetime --------------------------------------------------------------------------------

    def close(self) -> None:
        for p in self.programs.values():
            p.fd.close()
            if p.run_fd is not None:
                p.run_fd.close()
        if self._rec is not None:
            self._rec.close()
            self._rec = None
        if self._hidden_fd is not None:
            self._hidden_fd.close()
        for m in self.maps.values():
            m.fd.close()
        if self.btf_fd is not None:
            self.btf_fd.close()
        if self.netns is not None and self._own_ns:
            self.netns.close()
            self.netns = None

    def __enter__(self) -> KernelCollection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- loading ---------------------------------------------------------------------------------

    def _load_btf(self) -> None:
        raw = self.spec.btf_raw
        if not raw:
            return
        try:
            self.btf_fd = bpf.btf_load(raw)
            self._btf_strings = btf_strings(raw)
        except (KernelError, ValueError) as e:
            self.btf_fd = None
            first = str(e).splitlines()[0]
            log = getattr(e, "log", "")
            why = log.strip().splitlines()[-1] if log.strip() else ""
            self.notes.append(f"BTF not loaded, maps and programs go without it: {first}"
                              + (f" ({why})" if why else ""))

    def _create_one(self, spec: MapSpec, *, inner: bool = False) -> bpf.Fd:
        mtype = MapType(spec.type)
        max_entries = spec.max_entries
        if mtype == MapType.PERF_EVENT_ARRAY and max_entries == 0:
            max_entries = bpf.possible_cpus()  # libbpf: one ring per possible CPU
        flags = spec.flags
        if spec.frozen:
            flags |= bpf.BPF_F_RDONLY_PROG  # lets the verifier read frozen .rodata as constants
        inner_fd: bpf.Fd | None = None
        if mtype in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
            if spec.inner is None:
                raise LoadError(f"map {spec.name}: a map of maps needs an inner map template")
            inner_fd = self._create_one(spec.inner, inner=True)
        btf_fd = self.btf_fd.fd if self.btf_fd is not None else 0
        use_btf = bool(btf_fd and mtype not in _NO_BTF_TYPES and spec.btf_value_type_id and not inner)
        common = dict(flags=flags, name=spec.name, inner_map_fd=inner_fd.fd if inner_fd else 0,
                      numa_node=spec.numa_node, map_extra=spec.map_extra)
        try:
            try:
                if use_btf:
                    return bpf.map_create(int(mtype), spec.key_size, spec.value_size, max_entries,
                                          btf_fd=btf_fd, btf_key_type_id=spec.btf_key_type_id,
                                          btf_value_type_id=spec.btf_value_type_id, **common)  # type: ignore[arg-type]
            except KernelError as e:
                self.notes.append(f"map {spec.name}: created without BTF, the kernel refused it with BTF "
                                  f"({str(e).splitlines()[0]})")
            return bpf.map_create(int(mtype), spec.key_size, spec.value_size, max_entries,
                                  **common)  # type: ignore[arg-type]
        except KernelError as e:
            raise LoadError(f"{self.spec.path}: map {spec.name} ({mtype.name.lower()}): {e}") from e
        finally:
            if inner_fd is not None:
                inner_fd.close()

    def _create_maps(self) -> None:
        for spec in self.spec.maps:
            fd = self._create_one(spec)
            m = KernelMap(spec, fd, self)
            self.maps[spec.name] = m
            self._map_fds.append(fd.fd)
            if spec.initial:
                # Global data: one entry holding the section's bytes (.bss is all zeros: nothing to do).
                value = bytes(spec.initial)[: spec.value_size].ljust(spec.value_size, b"\0")
                if any(value):
                    m.update(0, value)
            if spec.frozen:
                m.freeze()

    def _create_recorder(self) -> None:
        """The hidden map redirect calls are recorded in, mmapped, and the redirect maps' kernel
        addresses (how a recorded bpf_redirect_map names its map)."""
        n = len(self.spec.maps)
        try:
            fd = bpf.map_create(int(MapType.ARRAY), 4, rd.value_size(n), 1, flags=bpf.BPF_F_MMAPABLE,
                                name="xdpsim_redir")
        except KernelError as e:
            self.notes.append(f"redirect targets not recorded: the record map cannot be created ({e})")
            return
        self._hidden_fd, self._hidden = fd, n
        self._map_fds.append(fd.fd)
        self._rec = mmap.mmap(fd.fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        kinds = (MapType.DEVMAP, MapType.DEVMAP_HASH, MapType.CPUMAP, MapType.XSKMAP)
        wanted = [i for i, m in enumerate(self.spec.maps) if m.type in kinds]
        addrs: dict[int, int] = {}
        if wanted:
            cal = ProgramSpec("xdpsim_cal", "xdp", ProgType.XDP, "xdp", rd.calibration(wanted, n))
            insns = _link_fds(cal, self._map_fds, [])
            res = bpf.prog_load_raw(int(ProgType.XDP), insns, name="xdpsim_cal", log_level=1)
            if res.fd is None:
                self._map_pointers = False
                self.notes.append("bpf_redirect_map's map is found in the code (the lddw into r1), not by "
                                  f"its kernel address: the kernel refused storing map addresses "
                                  f"({log_error_line(res.log)})")
            else:
                with res.fd:
                    bpf.prog_test_run(res.fd.fd, bytes(64))
                for i in wanted:
                    addrs[i] = struct.unpack_from("<Q", self._rec, rd.OFF_MAPS + 8 * i)[0]
        self._redirect_maps = [rd.RedirectMap(m.name, int(m.type), m.value_size, addrs.get(i, 0))
                               for i, m in enumerate(self.spec.maps)]

    def _btf_info(self, prog: ProgramSpec) -> tuple[bytes, bytes, list[str]]:
        """func_info and line_info records for BPF_PROG_LOAD (empty without BTF), and notes."""
        notes: list[str] = []
        if self.btf_fd is None or self._btf_strings is None:
            return b"", b"", notes
        finfo = b""
        if prog.func_info and all(f.type_id for f in prog.func_info):
            finfo = func_info_records((f.insn_off, f.type_id) for f in prog.func_info)
        elif prog.func_info:
            notes.append("func_info without BTF type ids: not passed")
        linfo = b""
        if prog.line_info:
            recs = []
            strings = self._btf_strings
            for li in prog.line_info:
                foff = strings.get(li.file)
                toff = strings.get(li.text)
                if foff is None or toff is None:
                    notes.append(f"line info for insn {li.insn_off} names a string not in .BTF: "
                                 f"line info not passed")
                    recs = []
                    break
                recs.append((li.insn_off, foff, toff, line_col(li.line, li.col)))
            linfo = line_info_records(recs)
        return finfo, linfo, notes

    def _prog_license(self, prog: ProgramSpec) -> str:
        return prog.license or self.spec.license or ""

    def load_raw(self, prog: ProgramSpec, *, log_level: int = 0,
                 attach: int | None = None) -> tuple[bpf.ProgLoad, list[str]]:
        """One BPF_PROG_LOAD of `prog` against this collection's maps; the refusal is returned, not raised.

        When the load with func/line info fails over that info (EINVAL naming it), it is tried again
        without, as libbpf does for old kernels; the notes say so.
        """
        insns = _link_fds(prog, self._map_fds, [m.name for m in self.spec.maps])
        finfo, linfo, notes = self._btf_info(prog)
        kw: dict[str, Any] = dict(
            license=self._prog_license(prog),
            name=prog.name,
            expected_attach_type=int(expected_attach_type(prog) if attach is None else attach),
            prog_flags=bpf.BPF_F_XDP_HAS_FRAGS if prog.frags else 0,
            kern_version=self.spec.kernel_version,
        )
        btf_kw: dict[str, Any] = {}
        if finfo or linfo:
            btf_kw = dict(prog_btf_fd=self.btf_fd.fd, func_info=finfo, line_info=linfo)  # type: ignore[union-attr]
        res = bpf.prog_load_raw(int(prog.type), insns, log_level=log_level, **kw, **btf_kw)
        if res.fd is None and not log_level:
            res = bpf.prog_load_raw(int(prog.type), insns, log_level=bpf.BPF_LOG_LEVEL1, **kw, **btf_kw)
        if res.fd is None and btf_kw and res.errno == _errno.EINVAL and re.search(
                r"func_info|line_info|BTF|btf", res.log):
            notes.append(f"loaded without func/line info: the kernel refused it ({log_error_line(res.log)})")
            res = bpf.prog_load_raw(int(prog.type), insns, log_level=max(log_level, 1), **kw)
        return res, notes

    def _instrumented(self, prog: ProgramSpec, index: int, entry: bool) -> tuple[ProgramSpec, Patched] | None:
        """`prog` with its redirect calls recorded (entry programs: ctx->egress_ifindex reads replaced)."""
        if self._hidden is None:
            return None
        p = rd.instrument(prog.insns, index, self._hidden, egress=entry, map_pointer=self._map_pointers)
        if p is None:
            return None
        spec = dataclasses.replace(prog, insns=p.insns, func_info=p.shift(prog.func_info),
                                   line_info=p.shift(prog.line_info),
                                   functions=p.shift_functions(prog.functions))
        return spec, p

    def _load_program(self, prog: ProgramSpec) -> KernelProgram:
        index = list(self.spec.programs).index(prog.name)
        entry = expected_attach_type(prog) in (bpf.AttachType.XDP_DEVMAP, bpf.AttachType.XDP_CPUMAP)
        inst = self._instrumented(prog, index, entry)
        patched: Patched | None = None
        res: bpf.ProgLoad | None = None
        notes: list[str] = []
        if inst is not None and not entry:
            # the instrumented code is the program (prog arrays hold it too: tail calls record as well)
            res, notes = self.load_raw(inst[0], log_level=self.log_level)
            if res.fd is None:
                log = remap_log(res.log, inst[1])
                notes = [f"redirect targets not recorded: the kernel refused the instrumented program "
                         f"({refusal_message(prog.name, res.errno, log)})"]
                res = None
                self._unrecorded.append(prog.name)
            else:
                patched = inst[1]
        if res is None:
            res, more = self.load_raw(prog, log_level=self.log_level)
            notes += more
        if res.fd is None:
            raise KernelError(refusal_message(prog.name, res.errno, res.log), res.errno, res.log)
        info = bpf.prog_info(res.fd.fd)
        log = remap_log(res.log, patched) if patched is not None and res.log else res.log
        kp = KernelProgram(prog.name, prog, res.fd, int(info["id"]), str(info["tag"]),  # type: ignore[arg-type]
                           log, notes, index=index, patch=patched)
        if entry:
            self._load_twin(kp, inst)
        self._prog_ids[kp.id] = prog.name
        self.notes.extend(f"program {prog.name}: {n}" for n in kp.notes)
        return kp

    def _load_twin(self, kp: KernelProgram, inst: tuple[ProgramSpec, Patched] | None) -> None:
        """A devmap/cpumap program's plain-XDP copy for test runs (module doc of kernel/redirects.py)."""
        spec, p = inst if inst is not None else (kp.spec, None)
        res, _ = self.load_raw(spec, log_level=1, attach=int(bpf.AttachType.XDP))
        if res.fd is None:
            log = remap_log(res.log, p) if p is not None else res.log
            kp.run_refused = refusal_message(kp.name, res.errno, log)
            kp.notes.append(f"cannot be test-run: its plain-XDP twin was refused ({kp.run_refused})")
            return
        kp.run_fd, kp.patch = res.fd, p

    def _fd_of(self, m: KernelMap, name: str) -> int:
        if m.type == MapType.PROG_ARRAY:
            if name not in self.programs:
                raise MapError(f"map {m.name}: no loaded program named {name!r}", _errno.EBADF)
            return self.programs[name].fd.fd
        if name not in self.maps:
            raise MapError(f"map {m.name}: no map named {name!r}", _errno.EBADF)
        return self.maps[name].fd.fd

    def _fill_slots(self) -> None:
        for spec in self.spec.maps:
            for index, target in sorted(spec.init_slots.items()):
                m = self.maps[spec.name]
                if m.type == MapType.PROG_ARRAY and target not in self.programs:
                    self.notes.append(f"map {spec.name}[{index}]: program {target} not loaded, "
                                      "slot left empty")
                    continue
                m.update(index, target)

    # --- user-space map access -----------------------------------------------------------------------

    def map(self, name: str) -> KernelMap:
        try:
            return self.maps[name]
        except KeyError:
            raise KeyError(f"{self.spec.path}: no map named {name!r} "
                           f"(maps: {', '.join(self.maps)})") from None

    def set_map_entry(self, map_name: str, key: Any, value: Any, flags: int = bpf.BPF_ANY) -> None:
        """Write one entry (bytes, ints little-endian, per-CPU lists; program/map names for prog
        arrays and maps of maps)."""
        self.map(map_name).update(key, value, flags)

    def delete_map_entry(self, map_name: str, key: Any) -> None:
        self.map(map_name).delete(key)

    def set_prog_slot(self, map_name: str, index: int, prog_name: str | None) -> None:
        """Point a prog-array slot at a loaded program, or empty it (None)."""
        m = self.map(map_name)
        if prog_name is None:
            try:
                m.delete(index)
            except KeyError:
                pass
        else:
            m.update(index, prog_name)

    def read_map(self, name: str) -> dict[bytes, bytes | list[bytes]]:
        """Every entry as the syscall returns it (per-CPU: one round8(value_size) bytes per possible CPU;
        prog arrays: the kernel program id, u32)."""
        return self.map(name).read()

    def prog_array_slots(self, name: str) -> dict[int, str]:
        """A prog array's occupied slots -> program names (kernel ids of programs not loaded here
        show as `id:<n>`)."""
        out: dict[int, str] = {}
        for k, v in self.map(name).items():
            pid = int.from_bytes(v if isinstance(v, bytes) else v[0], "little")
            out[int.from_bytes(k, "little")] = self._prog_ids.get(pid, f"id:{pid}")
        return out

    # --- runs ------------------------------------------------------------------------------------

    def _namespace(self) -> NetNamespace:
        if self.netns is None:
            self.netns = NetNamespace()
            self._own_ns = True
        return self.netns

    def _ensure_ifindex(self, ifindex: int, queues: int) -> NetNamespace | None:
        """The namespace to run in for this ifindex (None: the caller's own, ifindex 0 or 1 only)."""
        if ifindex in (0, 1):  # the loopback, which every namespace has
            return self.netns if self.netns is not None and self.netns.alive else None
        ns = self.netns
        if ns is not None and ns.alive and ifindex in ns.interfaces:
            return ns
        if not self.auto_interfaces:
            if ns is None:
                raise KernelError(f"ingress_ifindex {ifindex}: no network namespace with devices was "
                                  "asked for (interfaces=...)", _errno.ENODEV)
            return ns  # the kernel reports ENODEV itself
        ns = self._namespace().create()
        ns.add_interface(Interface(f"xif{ifindex}"[:15], ifindex, max(queues, bpf.possible_cpus())))
        return ns

    @contextlib.contextmanager
    def entered(self, *ifindexes: int) -> Iterator[KernelCollection]:
        """Run a batch inside the collection's namespace with one setns in and one out (instead of two
        per run, which doubles the per-packet cost); `ifindexes` are created first if needed."""
        for i in ifindexes:
            self._ensure_ifindex(i, 1)
        ns = self.netns if self.netns is not None else None
        if ns is None or not ns.alive:
            yield self
            return
        with ns.entered():
            yield self

    def program(self, name: str) -> KernelProgram:
        try:
            return self.programs[name]
        except KeyError:
            raise KeyError(f"{self.spec.path}: no loaded program named {name!r} "
                           f"(loaded: {', '.join(self.programs)})") from None

    def run_xdp(
        self,
        prog_name: str,
        data: bytes,
        *,
        ingress_ifindex: int = 0,
        rx_queue_index: int = 0,
        meta: bytes = b"",
        repeat: int = 1,
        egress_ifindex: int = 0,
    ) -> KernelResult:
        """BPF_PROG_TEST_RUN of an XDP program with a `struct xdp_md` context.

        A devmap/cpumap entry program runs as its plain-XDP twin; a devmap program reads
        `egress_ifindex` as its ctx->egress_ifindex. An XDP_REDIRECT's target is in `.redirect`.

        `ingress_ifindex` 0 lets the kernel use the namespace's loopback (the program reads 1);
        `meta` is put before the packet as XDP metadata: a multiple of 4 bytes, at most 216 on 6.18
        (the headroom less struct xdp_frame; else EINVAL, tests/test_kernel_testrun_limits.py). Packets
        over 3520 bytes go on in fragments, even for a program that is not xdp.frags.
        """
        prog = self.program(prog_name)
        ctx = XDP_MD.pack(len(meta), len(meta) + len(data), 0, ingress_ifindex, rx_queue_index, 0)
        ns = self._ensure_ifindex(ingress_ifindex, rx_queue_index + 1)
        if self._rec is not None:
            struct.pack_into("<I", self._rec, rd.OFF_EGRESS, egress_ifindex)
        run = self._test_run(prog, ns, bytes(meta) + bytes(data), ctx, XDP_MD.size, repeat)
        d = XDP_MD.unpack(run.ctx_out) if run.ctx_out and len(run.ctx_out) >= XDP_MD.size else (len(meta),)
        start = d[0]
        target = self._redirect(tc=False) if run.retval == rd.XDP_REDIRECT else None
        return KernelResult(run.retval, run.data_out[start:], run.duration_ns, run.data_out[:start],
                            run.ctx_out, target)

    def run_skb(
        self,
        prog_name: str,
        data: bytes,
        *,
        repeat: int = 1,
        flags: int = 0,
        ctx: bytes | None = None,
        **fields: Any,
    ) -> KernelResult:
        """BPF_PROG_TEST_RUN of a SCHED_CLS/SCHED_ACT program with a `struct __sk_buff` context.

        `fields`: the __sk_buff fields the kernel accepts from user space: mark, priority,
        ingress_ifindex, ifindex (> 1: a device in the namespace, created if needed; skb->dev is
        the loopback otherwise), cb (5 u32), tstamp, wire_len, gso_segs, gso_size, hwtstamp. `ctx`
        gives the raw 192 bytes instead. `flags` may be BPF_F_TEST_SKB_CHECKSUM_COMPLETE.
        """
        prog = self.program(prog_name)
        if ctx is None:
            buf = bytearray(SK_BUFF_SIZE)
            for name, value in fields.items():
                if name not in _SKB_SETTABLE:
                    raise KernelError(f"__sk_buff.{name} cannot be set for a test run "
                                      f"(settable: {', '.join(_SKB_SETTABLE)})", _errno.EINVAL)
                off, fmt = SKB_FIELDS[name]
                vals = list(value) + [0] * (5 - len(value)) if name == "cb" else [value]
                struct.pack_into(fmt, buf, off, *vals)
            ctx = bytes(buf)
        elif fields:
            raise KernelError("give either ctx or __sk_buff fields, not both", _errno.EINVAL)
        ifindex = struct.unpack_from("<I", ctx, 40)[0]
        ns = self._ensure_ifindex(ifindex if ifindex > 1 else 0, 1)
        run = self._test_run(prog, ns, bytes(data), ctx, SK_BUFF_SIZE, repeat, flags)
        target = self._redirect(tc=True) if run.retval == rd.TC_ACT_REDIRECT else None
        return KernelResult(run.retval, run.data_out, run.duration_ns, b"", run.ctx_out, target)

    def run(self, prog_name: str, data: bytes, **kw: Any) -> KernelResult:
        """run_xdp or run_skb by the program's type."""
        if self.program(prog_name).spec.type == ProgType.XDP:
            return self.run_xdp(prog_name, data, **kw)
        return self.run_skb(prog_name, data, **kw)

    def _test_run(self, prog: KernelProgram, ns: NetNamespace | None, data: bytes, ctx: bytes, ctx_size: int,
                  repeat: int, flags: int = 0) -> bpf.TestRun:
        fd = prog.run_fd if prog.run_fd is not None else prog.fd
        if prog.entry and prog.run_fd is None:
            raise KernelError(f"program {prog.name}: a {prog.spec.section} program cannot be test-run "
                              f"(BPF_PROG_TEST_RUN refuses its attach type) and its plain-XDP twin was "
                              f"refused: {prog.run_refused}", _errno.EINVAL)
        if self._rec is not None:
            self._rec[rd.OFF_HELPER : rd.OFF_HELPER + 4] = bytes(4)  # no redirect call yet
        try:
            if ns is None:
                return bpf.prog_test_run(fd.fd, data, ctx_in=ctx, ctx_out_size=ctx_size, repeat=repeat,
                                         flags=flags)
            with ns.entered():
                return bpf.prog_test_run(fd.fd, data, ctx_in=ctx, ctx_out_size=ctx_size, repeat=repeat,
                                         flags=flags)
        except KernelError as e:
            raise KernelError(f"program {prog.name}: {e}", e.errno, e.log) from e

    def _redirect(self, *, tc: bool) -> rd.KernelRedirect | None:
        """The last run's redirect target, from the record its instrumented code left (None when this
        collection does not record redirects)."""
        if self._rec is None:
            return None
        if self._unrecorded:  # a redirect call of theirs would leave no record, or an older one
            return rd.KernelRedirect("unknown", why=f"program(s) {', '.join(self._unrecorded)} run without "
                                     "redirect recording (the kernel refused the instrumented code)")
        names = list(self.spec.programs)

        def lookup(index: int, key: int) -> bytes | None:
            m = self.maps[self.spec.maps[index].name]
            return bpf.map_lookup(m.fd.fd, key.to_bytes(4, "little"), m.value_size)

        def static(prog: int, pc: int) -> int | None:
            return rd.static_map(self.spec.programs[names[prog]].insns, pc) if prog < len(names) else None

        return rd.resolve(rd.read_record(self._rec), tc=tc, programs=names, maps=self._redirect_maps,
                          lookup=lookup, static=static)

    def program_name(self, kernel_id: int) -> str | None:
        """The name of this collection's program with that kernel id (devmap/cpumap values hold ids)."""
        return self._prog_ids.get(kernel_id)


def verify(objspec: ObjectSpec, *, log_level: int = bpf.BPF_LOG_LEVEL1,
           use_btf: bool = True) -> dict[str, tuple[bool, str]]:
    """Ask the kernel's verifier about every program: name -> (accepted, verifier log).

    For `xdpsim check`. A refused program's log ends with the complaint; `refusal_message` turns it
    into one line with the C source line when the log shows one. When the maps cannot even be
    created, every program is reported refused with that reason.
    """
    out: dict[str, tuple[bool, str]] = {}
    try:
        coll = KernelCollection(objspec, load=False, use_btf=use_btf)
    except (KernelError, LoadError) as e:
        return {name: (False, str(e)) for name in objspec.programs}
    with coll:
        for name, prog in objspec.programs.items():
            res, notes = coll.load_raw(prog, log_level=log_level)
            log = "".join(f"xdpsim note: {n}\n" for n in notes) + res.log
            if res.fd is not None:
                res.fd.close()
                out[name] = (True, log)
            else:
                out[name] = (False, refusal_message(name, res.errno, res.log) + "\n" + log)
    return out
