"""Where a pipeline's programs run: xdpsim's own runtime (interp, jit) or the running kernel.

Both backends load the pipeline's objects, apply `[[map_entries]]`, run one program on one frame
(returning an `XdpResult`), and give the final maps and the ring buffer / perf records. The kernel
backend runs each program with one BPF_PROG_TEST_RUN (`engines/kernel.py`), learns where a redirect
went from the engine's instrumentation of the redirect helper calls (`kernel/redirects.py`), has no
bpf_printk lines in its results, and its per-CPU maps have one value per possible CPU of this machine.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import KernelError, MapError, ProgramFault, XdpsimError
from ..helpers.skbuff import SkbState
from ..hooks.tc import TcAction, TcResult, run_tc, s32
from ..hooks.xdp import XdpAction, XdpResult, run_xdp
from ..maps import RedirectTarget
from ..runtime import Collection, Runtime
from ..spec import MapType, ObjectSpec
from .broadcast import Port, hash_order, parse_value, program_may_broadcast
from .config import InterfaceSpec, MapEntry, PipelineError


def _find_map(entry: MapEntry, names: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """(object path, map name) of a `[[map_entries]]` entry: `name` or `object.o:name`."""
    if ":" in entry.map:
        path, name = entry.map.rsplit(":", 1)
        if path not in names:
            raise PipelineError(f"map_entries: {entry.map}: object {path} is not in the pipeline")
        if name not in names[path]:
            raise PipelineError(f"map_entries: {path} has no map {name!r} (maps: {', '.join(names[path])})")
        return path, name
    owners = [p for p, maps in names.items() if entry.map in maps]
    if not owners:
        every = sorted({n for maps in names.values() for n in maps})
        raise PipelineError(f"map_entries: no map named {entry.map!r} (maps: {', '.join(every)})")
    if len(owners) > 1:
        raise PipelineError(f"map_entries: map {entry.map!r} is in several objects ({', '.join(owners)}); "
                            "write it as object.o:name")
    return owners[0], entry.map


_PROG_VALUE_TYPES = (MapType.DEVMAP, MapType.DEVMAP_HASH, MapType.CPUMAP)


def _program_id(local: dict[str, int], entry: MapEntry, fallback: Any) -> int:
    if entry.program in local:
        return local[entry.program]
    try:
        return fallback(entry.program)
    except KeyError as e:
        raise PipelineError(f"map_entries: {entry.map}: no program named {entry.program!r}") from e


def _with_program(entry: MapEntry, m: Any, prog: int) -> bytes:
    """A devmap/cpumap value: ifindex (or queue size) from `value`, then the program (id, or kernel fd)."""
    if m.type not in _PROG_VALUE_TYPES or m.value_size < 8:
        raise PipelineError(f"map_entries: {entry.map}: `value` and `program` together are for devmap, "
                            "devmap_hash and cpumap entries with 8-byte values (struct bpf_devmap_val)")
    assert entry.value is not None
    return entry.value[:4].ljust(4, b"\0") + prog.to_bytes(4, "little")


def map_key_names(per_object: dict[str, dict[str, Any]]) -> dict[tuple[str, str], str]:
    """maps.json names: the map's name, or `file.o:name` when several objects have that name."""
    counts: dict[str, int] = {}
    for maps in per_object.values():
        for n in maps:
            counts[n] = counts.get(n, 0) + 1
    out = {}
    for path, maps in per_object.items():
        for n in maps:
            out[(path, n)] = n if counts[n] == 1 else f"{path.rsplit('/', 1)[-1]}:{n}"
    return out


class SimBackend:
    """Programs in one xdpsim Runtime, run by the interpreter or the JIT."""

    def __init__(self, engine: str, cpus: int, seed: int, budget: int | None):
        self.name = engine
        self.runtime = Runtime(cpus=cpus, seed=seed)
        self.budget = budget
        if engine == "interp":
            from ..engines.interp import Interpreter

            self.engine: Any = Interpreter()
        else:
            from ..engines.jit import JitEngine

            self.engine = JitEngine()
        self.collections: dict[str, Collection] = {}
        self._event_maps: list[tuple[str, Any]] | None = None

    def load(self, path: str, spec: ObjectSpec) -> None:
        self.collections[path] = self.runtime.load(spec)

    def warm_up(self, prog_id: int) -> None:
        """Compile now (JIT), so a replay's clock measures the replay: an empty batch compiles every
        program of the runtime."""
        if hasattr(self.engine, "run_batch"):
            empty = np.zeros(0, np.int64)
            self.engine.run_batch(self.runtime, prog_id, np.zeros(1, np.uint8), empty,
                                  empty.astype(np.uint32))

    def prog_id(self, path: str, name: str) -> int:
        return self.collections[path].programs[name]

    def run(self, path: str, name: str, data: bytes, meta: bytes, *, ifindex: int, queue: int, now_ns: int,
            prog_id: int | None = None, egress_ifindex: int = 0) -> XdpResult:
        pid = self.prog_id(path, name) if prog_id is None else prog_id
        return run_xdp(self.runtime, self.engine, pid, data, ifindex=ifindex, queue=queue, now_ns=now_ns,
                       meta=meta, budget=self.budget, egress_ifindex=egress_ifindex)

    def run_entry(self, prog: int, data: bytes, meta: bytes = b"", *, ifindex: int, queue: int, now_ns: int,
                  egress_ifindex: int = 0, cpu: int | None = None) -> XdpResult:
        """A devmap/cpumap entry's program (`RedirectTarget.prog`: a runtime program id); `cpu`: where a
        cpumap program runs (its entry's CPU)."""
        return run_xdp(self.runtime, self.engine, prog, data, ifindex=ifindex, queue=queue, now_ns=now_ns,
                       meta=meta, budget=self.budget, egress_ifindex=egress_ifindex, cpu=cpu)

    def broadcast_ports(self, target: RedirectTarget) -> tuple[str, list[Port]]:
        """A broadcast target's map (`target.index`: its runtime id): its name and its entries in the
        kernel's walk order (broadcast.py)."""
        m = self.runtime.maps[target.index]
        ports = [parse_value(k, v) for k, v in m.items()]
        if m.type == MapType.DEVMAP_HASH:
            ports = hash_order(ports, m.max_entries)
        return m.name, ports

    def may_broadcast(self) -> bool:
        """Whether any program of the runtime (a tail call may reach any) can broadcast."""
        rt = self.runtime
        if not any(m.type in (MapType.DEVMAP, MapType.DEVMAP_HASH) for m in rt.maps):
            return False
        return any(program_may_broadcast(p.insns) for p in rt.programs)

    def run_tc(self, path: str, name: str, data: bytes, meta: bytes, skb: SkbState, *, now_ns: int,
               cpu: int = 0, prog_id: int | None = None, dev_addr: bytes = bytes(6)) -> TcResult:
        """One TC program on a packet carrying `skb` (its metadata from the stages before)."""
        pid = self.prog_id(path, name) if prog_id is None else prog_id
        return run_tc(self.runtime, self.engine, pid, data, skb=skb, meta=meta, now_ns=now_ns,
                      budget=self.budget, cpu=cpu, dev_addr=dev_addr, broadcast=b"\xff" * 6)

    def apply(self, entry: MapEntry) -> None:
        path, name = _find_map(entry, {p: c.maps for p, c in self.collections.items()})
        m = self.collections[path].maps[name]
        try:
            if entry.program is not None and entry.value is not None:
                prog = _program_id(self.collections[path].programs, entry, self.runtime.prog_id)
                m.update(entry.key, _with_program(entry, m, prog))
            elif entry.program is not None:
                m.update(entry.key, entry.program)
            elif entry.cpu is not None:
                cpus = self.runtime.cpus
                values = list(m.lookup(entry.key)) if entry.key in m else [bytes(m.value_size)] * cpus
                values[entry.cpu] = entry.value
                m.update(entry.key, values)
            else:
                m.update(entry.key, entry.value)
        except (MapError, KeyError, TypeError, ValueError, IndexError) as e:
            raise PipelineError(f"map_entries: {entry.map} key {entry.key.hex()}: {e}") from e

    def maps_json(self) -> dict[str, Any]:
        names = map_key_names({p: c.maps for p, c in self.collections.items()})
        return {names[(p, n)]: m.to_json() for p, c in self.collections.items() for n, m in c.maps.items()}

    def events(self) -> list[dict[str, Any]]:
        """Ring buffer and perf event records produced since the last call (consumed)."""
        if self._event_maps is None:  # once: the maps do not change after loading
            self._event_maps = [(n, m) for c in self.collections.values() for n, m in c.maps.items()
                                if m.type in (MapType.RINGBUF, MapType.PERF_EVENT_ARRAY)]
        out: list[dict[str, Any]] = []
        for name, m in self._event_maps:
            if m.type == MapType.RINGBUF:
                out.extend({"map": name, "data": r.hex()} for r in m.records())
            else:
                out.extend({"map": name, "cpu": c, "data": d.hex()} for c, d in m.records())
        return out

    def close(self) -> None:
        pass


MAX_LINEAR = 3520  # 4096-byte frame less 256 of headroom and 320 of tailroom
VETH_MTU = 1500  # what a new veth has


class KernelBackend:
    """Programs in the running kernel, one BPF_PROG_TEST_RUN per program run."""

    name = "kernel"

    def __init__(self, cpus: int, seed: int, budget: int | None,
                 interfaces: list[InterfaceSpec] | None = None):
        from ..kernel import bpf
        from ..kernel.netns import Interface

        try:
            bpf.require_kernel()
        except XdpsimError as e:
            raise XdpsimError(f"engine 'kernel' is not available here: {e}") from e
        self.collections: dict[str, Any] = {}
        self._broadcast: list[tuple[str, str]] = []  # (object path, map name) of broadcast targets
        # a broadcast devmap's entries, read once (two syscalls a slot): programs cannot write a devmap (the
        # kernel makes it BPF_F_RDONLY_PROG: "write into map forbidden", tests/test_kernel_devmap_ports.py),
        # only apply() does, which forgets what was read
        self._ports: dict[tuple[str, str], list[Port]] = {}
        # devices for the ingress ifindexes, with their rx queues (ifindex 1 is the loopback: one queue)
        self.devices = []
        # devices whose `mtu` is not the veth default: set in each collection's namespace, so that what
        # the kernel's helpers read of a device (bpf_check_mtu, bpf_fib_lookup's mtu_result) is the
        # pipeline's MTU, as in xdpsim's own engines
        self._mtus: dict[str, int] = {}
        for i in interfaces or []:
            if i.ifindex == 1:
                if i.queues > 1:
                    raise PipelineError(f"kernel engine: interface {i.name} has ifindex 1, the test "
                                        "namespace's loopback with one rx queue; give it `ifindex = 2` (or "
                                        f"more) for {i.queues} queues")
                continue
            self.devices.append(Interface(f"xs{i.ifindex}"[:15], i.ifindex, i.queues))
            if i.mtu != VETH_MTU:
                self._mtus[self.devices[-1].name] = i.mtu

    def load(self, path: str, spec: ObjectSpec) -> None:
        from ..engines.kernel import KernelCollection

        coll = self.collections[path] = KernelCollection(spec, interfaces=self.devices)
        if self._mtus and coll.netns is not None:
            _set_mtus(coll.netns.name, self._mtus)

    def run(self, path: str, name: str, data: bytes, meta: bytes, *, ifindex: int, queue: int, now_ns: int,
            prog_id: int | None = None, egress_ifindex: int = 0) -> XdpResult:
        coll = self.collections[path]
        if len(data) > MAX_LINEAR and not coll.spec.programs[name].frags:
            # BPF_PROG_TEST_RUN refuses it (EINVAL); the same named outcome as xdpsim's own engines
            err = ProgramFault(f"frame too long for single-buffer XDP: {len(data)} bytes, at most "
                               f"{MAX_LINEAR} (the program {name} is not xdp.frags)", kind="frame",
                               program=name)
            return XdpResult(XdpAction.XDP_ABORTED, data, error=err, program=name)
        try:
            r = coll.run_xdp(name, data, ingress_ifindex=ifindex, rx_queue_index=queue, meta=meta,
                             egress_ifindex=egress_ifindex)
        except KernelError as e:
            raise XdpsimError(f"kernel engine, program {name}: {e}") from e
        act = r.retval & 0xFFFF_FFFF
        notes = []
        if act > XdpAction.XDP_REDIRECT:
            notes.append(f"unknown XDP action {act}: treated as XDP_ABORTED (the kernel warns and drops)")
            action = XdpAction.XDP_ABORTED
        else:
            action = XdpAction(act)
        redirect = _kernel_target(r.redirect, notes) if action == XdpAction.XDP_REDIRECT else None
        if redirect is not None and redirect.kind == "broadcast":
            # the map as an index into this backend's broadcast maps (several objects may have one)
            key = (path, r.redirect.map)
            if key not in self._broadcast:
                self._broadcast.append(key)
            redirect = RedirectTarget("broadcast", self._broadcast.index(key), None, r.redirect.flags)
        return XdpResult(action, r.data_out, r.meta, redirect=redirect, program=name, retval=r.retval,
                         notes=notes)

    def broadcast_ports(self, target: RedirectTarget) -> tuple[str, list[Port]]:
        """A broadcast target's map, read from the kernel: its name and its entries in the kernel's
        order (BPF_MAP_GET_NEXT_KEY walks a devmap_hash bucket by bucket, as the broadcast does)."""
        path, name = self._broadcast[target.index]
        ports = self._ports.get((path, name))
        if ports is None:
            ports = [parse_value(k, v) for k, v in self.collections[path].maps[name].items()]  # type: ignore[arg-type]
            self._ports[(path, name)] = ports
        return name, ports

    def run_entry(self, prog: int, data: bytes, meta: bytes = b"", *, ifindex: int, queue: int, now_ns: int,
                  egress_ifindex: int = 0, cpu: int | None = None) -> XdpResult:
        """A devmap/cpumap entry's program (`RedirectTarget.prog`: its kernel id), as its plain-XDP twin;
        `cpu`: the thread is pinned there for the run (a cpumap program runs on its entry's CPU), when
        this process may run there."""
        for path, coll in self.collections.items():
            name = coll.program_name(prog)
            if name is not None:
                with _on_cpu(cpu):
                    return self.run(path, name, data, meta, ifindex=ifindex, queue=queue, now_ns=now_ns,
                                    egress_ifindex=egress_ifindex)
        raise XdpsimError(f"kernel engine: a redirect map entry names program id {prog}, which is not a "
                          "program of the pipeline")

    def run_tc(self, path: str, name: str, data: bytes, meta: bytes, skb: SkbState, *, now_ns: int,
               cpu: int = 0, prog_id: int | None = None, dev_addr: bytes = bytes(6)) -> TcResult:
        """One BPF_PROG_TEST_RUN (SCHED_CLS). ctx_in carries what the kernel accepts (mark, priority,
        the ifindexes, cb, tstamp, wire_len); ctx_out gives back mark, priority, cb, tstamp. Not seen:
        tc_classid, tc_index, VLAN offload, hash, clones (clone_redirect really transmits), XDP metadata
        (TC's data_meta is empty under the test run). The redirect target is recorded by the kernel
        engine's instrumentation (xdpsim.kernel.redirects); kind "unknown" where it could not be."""
        from ..engines.kernel import decode_sk_buff

        coll = self.collections[path]
        cb = [int.from_bytes(skb.cb[i : i + 4], "little") for i in range(0, 20, 4)]
        try:
            r = coll.run_skb(name, data, mark=skb.mark, priority=skb.priority, cb=cb,
                             ingress_ifindex=skb.ingress_ifindex, ifindex=skb.ifindex, tstamp=skb.tstamp)
        except KernelError as e:
            # e.g. IPv4 frames under 34 bytes or frames over 3712: the test run refuses them (EINVAL)
            err = ProgramFault(f"BPF_PROG_TEST_RUN refused a frame of {len(data)} bytes "
                               f"({os.strerror(e.errno) if e.errno else e})",
                               kind="frame", program=name)
            return TcResult(TcAction.TC_ACT_SHOT, data, meta, skb, error=err, program=name)
        st = skb.copy()
        out = decode_sk_buff(r.ctx_out or b"")
        if out:
            st.mark, st.priority, st.tstamp = out["mark"], out["priority"], out["tstamp"]
            st.cb = bytearray(b"".join(int(v).to_bytes(4, "little") for v in out["cb"]))
        code = s32(r.retval)
        action: TcAction | int = TcAction(code) if code in TcAction._value2member_map_ else code
        notes: list[str] = []
        redirect = None
        if action == TcAction.TC_ACT_REDIRECT:
            redirect = _kernel_target(r.redirect, notes)
        return TcResult(action, r.data_out, b"", st, redirect=redirect, program=name, retval=r.retval,
                        notes=notes)

    def apply(self, entry: MapEntry) -> None:
        path, name = _find_map(entry, {p: c.maps for p, c in self.collections.items()})
        coll = self.collections[path]
        self._ports.pop((path, name), None)
        # inside the collection's namespace: devmap updates resolve ifindexes there
        with coll.entered():
            self._apply(coll, name, entry)

    def _apply(self, coll: Any, name: str, entry: MapEntry) -> None:
        key = int.from_bytes(entry.key, "little")
        try:
            if entry.program is not None and entry.value is not None:
                fd = coll.program(entry.program).fd.fd
                coll.maps[name].update(entry.key, _with_program(entry, coll.maps[name], fd))
            elif entry.program is not None:
                coll.set_prog_slot(name, key, entry.program)
            elif entry.cpu is not None:
                m = coll.maps[name]
                values = list(m.lookup(entry.key)) if entry.key in m else None
                if values is None:
                    raise PipelineError(f"map_entries: {entry.map}: a per-CPU `cpu` entry needs an "
                                        "existing key")
                values[entry.cpu] = entry.value
                m.update(entry.key, values)
            else:
                coll.maps[name].update(entry.key, entry.value)
        except (MapError, KernelError, KeyError, TypeError, ValueError) as e:
            raise PipelineError(f"map_entries: {entry.map} key {entry.key.hex()}: {e}") from e

    def maps_json(self) -> dict[str, Any]:
        names = map_key_names({p: c.maps for p, c in self.collections.items()})
        return {names[(p, n)]: _kernel_json(m)
                for p, c in self.collections.items() for n, m in c.maps.items()}

    def events(self) -> list[dict[str, Any]]:
        return []  # ring buffers in the kernel need an mmap consumer: not read by this backend

    def close(self) -> None:
        for c in self.collections.values():
            c.close()
        self.collections.clear()


def _set_mtus(netns: str, mtus: dict[str, int]) -> None:
    """`ip link set dev NAME mtu N` in the namespace for each device; a refusal names the interface."""
    for name, mtu in mtus.items():
        proc = subprocess.run(["ip", "-n", netns, "link", "set", "dev", name, "mtu", str(mtu)],
                              capture_output=True, text=True, timeout=30)
        if proc.returncode:
            raise PipelineError(f"kernel engine: cannot give device {name} (ifindex {name[2:]}) the MTU "
                                f"{mtu}: {proc.stderr.strip() or 'ip failed'}")


@contextlib.contextmanager
def _on_cpu(cpu: int | None) -> Iterator[None]:
    """The calling thread pinned to `cpu` (if given and allowed), restored afterwards."""
    try:
        saved = os.sched_getaffinity(0) if cpu is not None else None
    except (AttributeError, OSError):
        saved = None
    if saved is None or cpu not in saved or saved == {cpu}:
        yield
        return
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


def _kernel_target(t: Any, notes: list[str]) -> RedirectTarget | None:
    """A redirect verdict's recorded target (kernel/redirects.py KernelRedirect) as a RedirectTarget
    (`prog`: the entry program's kernel id): None when the run set none (as xdpsim's engines say), kind
    "unknown" when it cannot be told or the collection records no redirects; why goes to `notes`."""
    if t is None:
        notes.append("redirect target unknown: the kernel engine does not record redirects here (see "
                     "the collection's notes)")
        return RedirectTarget("unknown", 0)
    if t.kind == "none":
        notes.append(f"no redirect target: {t.why}")
        return None
    if t.kind == "unknown":
        notes.append(f"redirect target unknown: {t.why}")
    return RedirectTarget(t.kind, t.index, t.prog, t.flags if t.kind == "broadcast" else 0)


def _kernel_json(m: Any) -> dict[str, Any]:
    """A kernel map's maps.json entry; ring buffers, perf arrays, queues have no keys to list."""
    try:
        return m.to_json()
    except KernelError as e:
        return {"type": m.type.name.lower(), "entries": {}, "note": str(e)}


def make_backend(engine: str, cpus: int, seed: int, budget: int | None,
                 interfaces: list[InterfaceSpec] | None = None) -> SimBackend | KernelBackend:
    if engine in ("interp", "jit"):
        return SimBackend(engine, cpus, seed, budget)
    if engine == "kernel":
        return KernelBackend(cpus, seed, budget, interfaces)
    raise PipelineError(f"unknown engine {engine!r} (engines: interp, jit, kernel)")
