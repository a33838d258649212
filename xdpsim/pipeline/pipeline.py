"""The Pipeline: interfaces with their XDP chains and TC hooks, loaded into one backend, deciding each
frame's fate.

`Pipeline(spec, engine="jit", seed=0, budget=None)` loads every object of a PipelineSpec (once, even
when several interfaces use it), picks each chain's programs (dispatcher.py), applies `[[map_entries]]`,
gives the runtime the pipeline's ifindexes, MTUs and FIB (`[[route]]`, `[[neighbour]]`), and then
`process(iface, frame, now_ns, queue) -> Decision` runs one frame through an interface's chain and routes
the verdict (routing.py); a frame XDP passes goes on through the interface's TC ingress (tc_stage.py).
`send(iface, frame, now_ns) -> Decision` is the host side: TC egress, then the wire. The replay loop
(replay.py) feeds it packets and writes what it decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..hooks.xdp import XdpAction, XdpResult
from ..loader import load_object
from ..maps import RedirectTarget
from ..spec import ObjectSpec
from .backends import KernelBackend, SimBackend, make_backend
from .broadcast import BPF_F_EXCLUDE_INGRESS, Port, frame_limit, walk
from .config import InterfaceSpec, PipelineError, PipelineSpec
from .dispatcher import ChainEntry, build_chain, choose_program, run_chain
from .fib import PipelineFib
from .routing import Decision, decide, devmap_verdict
from .rss import RssSpreader
from .tc_stage import TcFlow, TcHooks, build_hooks

ETH_HLEN = 14
# a frame bounced between cpumap programs: the kernel has no limit (each hop is a kthread's queue), xdpsim
# stops it so a replay ends
MAX_CPUMAP_REDIRECTS = 8


@dataclass
class Interface:
    spec: InterfaceSpec
    chain: list[ChainEntry]
    rss: RssSpreader
    # the XDP chain's runtime ids for the JIT's native batch path (fastpath.py); left empty when the
    # pipeline has TC hooks or programs that may broadcast, whose packets must take the per-packet path
    prog_ids: list[int | None] = field(default_factory=list)
    ids: dict[ChainEntry, int | None] = field(default_factory=dict)  # chain entry -> runtime prog id
    tc: TcHooks = field(default_factory=TcHooks)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def queue_keys(self) -> list[str]:
        """stats.json's names of this interface's queues ("eth0:0", ...), made once."""
        keys = self.__dict__.get("_queue_keys")
        if keys is None:
            keys = self.__dict__["_queue_keys"] = [f"{self.name}:{q}" for q in range(self.spec.queues)]
        return keys

    @property
    def ifindex(self) -> int:
        return self.spec.ifindex


def mtu_exceeded(length: int, out: Interface) -> str | None:
    """Why a frame of `length` bytes (data to data_end, no metadata) cannot be redirected out of `out`,
    or None. The kernel's xdp_ok_fwd_dev, when the frame is queued (__xdp_enqueue, for bpf_redirect and
    a devmap entry alike; is_valid_dst for a broadcast copy): longer than the device's MTU + its
    hard_header_len (14 for Ethernet) + VLAN_HLEN (4) is -EMSGSIZE, the frame dropped. The check comes
    before the devmap entry's program, which therefore cannot shrink the frame back under it (asked of
    the kernel: tests/test_redirect_mtu_kernel.py)."""
    limit = frame_limit(out.spec.mtu)
    if length <= limit:
        return None
    return (f"redirect of a {length}-byte frame to {out.name}: over its MTU {out.spec.mtu} (at most {limit} "
            "bytes: MTU + 14 + 4; xdp_ok_fwd_dev -EMSGSIZE)")


def copy_records(d: Decision, packet: int) -> list[dict]:
    """--log (packets.jsonl): one line per copy a packet made -- a broadcast's copies (`copy`:
    "broadcast") and bpf_clone_redirect's (`copy`: "clone"), copies of copies too -- each naming the
    packet (`copy_of`: the index of the packet's own line) and, as a packet's line does, where it was
    counted (`interface`), its outcome, reason, deciding program, length, target and error."""
    out: list[dict] = []
    kind = "broadcast" if d.reason == "broadcast" else "clone"
    for c in d.clones:
        out.append({"copy_of": packet, "copy": kind, "interface": c.interface, "outcome": c.outcome,
                    "reason": c.reason, "program": c.program, "length": len(c.data), "target": c.target,
                    "error": c.error})
        out.extend(copy_records(c, packet))
    return out


class Pipeline:
    def __init__(self, spec: PipelineSpec, engine: str = "jit", seed: int = 0, budget: int | None = None):
        self.spec = spec
        self.engine = engine
        self.objects: dict[str, ObjectSpec] = {}
        for path in spec.objects():
            try:
                self.objects[str(path)] = load_object(path)
            except OSError as e:
                raise PipelineError(f"{path}: cannot read: {e.strerror}") from e
        self.cpus = max(i.queues for i in spec.interfaces)
        self.backend: SimBackend | KernelBackend = make_backend(engine, self.cpus, seed, budget,
                                                                spec.interfaces)
        try:
            self._setup()
        except BaseException:
            self.backend.close()
            raise

    def _setup(self) -> None:
        spec = self.spec
        for path, objspec in self.objects.items():
            self.backend.load(path, objspec)
        # programs that [[map_entries]] put into prog arrays are tail-call targets, not entry points
        targets = {e.program for e in spec.map_entries if e.program is not None}
        sim = isinstance(self.backend, SimBackend)
        tc_prog_id = self.backend.prog_id if sim else (lambda path, name: None)  # type: ignore[union-attr]
        self.has_tc = any(i.tc_refs() for i in spec.interfaces)
        self.interfaces: list[Interface] = []
        # a broadcast's copies are packets of their own, which the JIT's batch path does not write
        broadcasts = sim and self.backend.may_broadcast()  # type: ignore[union-attr]
        for ispec in spec.interfaces:
            refs = []
            for r in ispec.xdp:
                obj = self.objects[str(r.object)]
                refs.append((r, obj, choose_program(obj, r.program, targets)))
            chain = build_chain(refs)
            iface = Interface(ispec, chain, RssSpreader(ispec.queues))
            iface.tc = build_hooks(ispec, self.objects, tc_prog_id, targets)
            if isinstance(self.backend, SimBackend):
                ids = [self.backend.prog_id(e.object, e.program) for e in chain]
                iface.ids = dict(zip(chain, ids, strict=True))
                iface.prog_ids = [] if self.has_tc or broadcasts else ids
            self.interfaces.append(iface)
        self.by_ifindex = {i.ifindex: i for i in self.interfaces}
        if isinstance(self.backend, SimBackend):
            rt = self.backend.runtime
            rt.ifindexes = set(self.by_ifindex)
            rt.mtu = {i.ifindex: i.spec.mtu for i in self.interfaces}
            rt.fib = PipelineFib(spec)
        for entry in spec.map_entries:
            self.backend.apply(entry)
        self.tc = TcFlow(self)
        first = next((pid for i in self.interfaces for pid in i.ids.values()), None)
        if first is not None and isinstance(self.backend, SimBackend):
            self.backend.warm_up(first)

    # ------------------------------------------------------------------ capture interfaces

    def interface_for(self, capture_interface: int) -> Interface | None:
        """The pipeline interface fed by a capture's interface id: `capture_interface` when given, else
        the interface at that position; a pipeline of one interface takes every capture interface."""
        if len(self.interfaces) == 1 and self.interfaces[0].spec.capture_interface is None:
            return self.interfaces[0]
        for i in self.interfaces:
            if i.spec.capture_interface == capture_interface:
                return i
        if 0 <= capture_interface < len(self.interfaces):
            i = self.interfaces[capture_interface]
            if i.spec.capture_interface is None:
                return i
        return None

    # ------------------------------------------------------------------ one frame

    def _run(self, iface: Interface, queue: int, now_ns: int):  # noqa: ANN202 - a closure factory
        ids = iface.ids

        def run_one(entry: ChainEntry, data: bytes, meta: bytes) -> XdpResult:
            return self.backend.run(entry.object, entry.program, data, meta, ifindex=iface.ifindex,
                                    queue=queue, now_ns=now_ns, prog_id=ids.get(entry))

        return run_one

    def process(self, iface: Interface, data: bytes, now_ns: int, queue: int = 0) -> Decision:
        """A frame from the wire: XDP, then (PASS) TC ingress."""
        if len(data) < ETH_HLEN:
            return Decision("drop", "frame_too_short", data)
        if not iface.chain:
            d = Decision("pass", "no_program", data)
        else:
            run = run_chain(iface.chain, self._run(iface, queue, now_ns), data)
            d = decide(run.result, off_the_end=run.off_the_end)
            if d.outcome == "redirect":
                d = self.redirect(iface, d, run.result.redirect, queue, now_ns)
            d.ran = run.ran
        if self.has_tc:
            d = self.tc.after_xdp(iface, d, now_ns, queue)
        return d

    def send(self, iface: Interface, data: bytes, now_ns: int) -> Decision:
        """A frame the host sends out of `iface`: TC egress, then the wire (or where it redirects)."""
        return self.tc.send(iface, data, now_ns)

    def redirect(self, iface: Interface, d: Decision, target: RedirectTarget | None, queue: int,
                 now_ns: int, depth: int = 0) -> Decision:
        """Route an XDP_REDIRECT (`depth`: redirects already behind the frame, made by cpumap programs)."""
        if target is None:
            d.outcome, d.reason = "drop", "redirect_no_target"
            return d
        if target.kind == "unknown":  # the kernel engine could not tell (its notes say why)
            d.reason = "target_unknown"
            notes = d.result.notes if d.result is not None else []
            d.error = next((n for n in notes if n.startswith("redirect target unknown")), None)
            return d
        meta = d.result.meta if d.result is not None else b""
        if target.kind == "broadcast":
            return self.broadcast(iface, d, target, meta, queue, now_ns)
        if target.kind == "cpu":
            if target.prog is not None:
                return self.cpumap_program(iface, d, target, meta, now_ns, depth)
            d.reason, d.target = "cpu", f"cpu{target.index}"
            return d
        if target.kind == "xsk":
            d.reason, d.target = "xsk", f"xsk-{queue}"
            return d
        out = self.by_ifindex.get(target.index)
        if out is None:
            d.outcome, d.reason = "drop", "redirect_failed"
            d.error = f"redirect to ifindex {target.index}, which is not an interface of the pipeline"
            return d
        too_long = mtu_exceeded(len(d.data), out)
        if too_long is not None:
            d.outcome, d.reason, d.error = "drop", "redirect_mtu", too_long
            return d
        if target.prog is not None:
            r = self.backend.run_entry(target.prog, d.data, meta, ifindex=iface.ifindex, queue=queue,
                                       now_ns=now_ns, egress_ifindex=out.ifindex)
            refused = devmap_verdict(r)
            if refused is not None:
                return refused
            d.data = r.data
        d.reason, d.target = "interface", out.name
        return d

    def broadcast(self, iface: Interface, d: Decision, target: RedirectTarget, meta: bytes, queue: int,
                  now_ns: int) -> Decision:
        """BPF_F_BROADCAST (broadcast.py): one copy per device of the devmap, each through its entry's
        program. The packet itself ends as `redirect`, reason `broadcast` (sink redirect-broadcast.pcap,
        the frame as the XDP program left it); its copies are packets of their own (`Decision.clones`,
        counted in stats `clones` as bpf_clone_redirect copies are): reason `broadcast_copy` out of
        their device, `devmap_program` when its program drops the copy. With no copy to send the
        packet is dropped, reason `broadcast_empty` (the kernel frees the frame; xdp_do_redirect still
        returns 0)."""
        name, ports = self.backend.broadcast_ports(target)
        mtu = {i.ifindex: i.spec.mtu for i in self.interfaces}
        exclude = bool(target.flags & BPF_F_EXCLUDE_INGRESS)
        keep, skipped = walk(ports, ingress=iface.ifindex, exclude_ingress=exclude, length=len(d.data),
                             mtu=mtu)
        if not keep:
            why = "; ".join(skipped) if skipped else "the map is empty"
            d.outcome, d.reason = "drop", "broadcast_empty"
            d.error = f"broadcast through {name}: no device to send a copy to ({why})"
            return d
        d.reason, d.target = "broadcast", "broadcast"
        for port in keep:
            d.clones.append(self._copy(iface, d, port, meta, queue, now_ns))
        return d

    def _copy(self, iface: Interface, d: Decision, port: Port, meta: bytes, queue: int,
              now_ns: int) -> Decision:
        """One broadcast copy leaving through `port` (its devmap program first, on a copy of its own)."""
        out = self.by_ifindex.get(port.ifindex)
        if out is None:
            c = Decision("drop", "redirect_failed", d.data, error=f"broadcast copy to ifindex "
                         f"{port.ifindex} (key {port.key}), which is not an interface of the pipeline")
        elif port.prog is None:
            c = Decision("redirect", "broadcast_copy", d.data, target=out.name)
        else:
            r = self.backend.run_entry(port.prog, d.data, meta, ifindex=iface.ifindex, queue=queue,
                                       now_ns=now_ns, egress_ifindex=out.ifindex)
            c = devmap_verdict(r) or Decision("redirect", "broadcast_copy", r.data, target=out.name,
                                              program=r.program, result=r)
        c.interface = iface.name  # written and counted where the frame came in, as a redirect is
        return c

    def cpumap_program(self, iface: Interface, d: Decision, target: RedirectTarget, meta: bytes, now_ns: int,
                       depth: int) -> Decision:
        """A cpumap entry's program on the frame, on the entry's CPU (kernel/bpf/cpumap.c,
        cpu_map_bpf_prog_run_xdp): XDP_PASS sends it up the stack there (the `cpu<N>` sink), XDP_REDIRECT
        redirects it again (xdp_do_redirect from that CPU), any other action drops it. The frame keeps its
        metadata and ingress device; the rx queue index is lost (the kernel's rxq has queue_index 0)."""
        cpu = target.index
        r = self.backend.run_entry(target.prog, d.data, meta, ifindex=iface.ifindex, queue=0, now_ns=now_ns,
                                   cpu=cpu)
        if r.error is not None:
            return Decision("error", "program_fault", r.data, program=r.program, error=str(r.error), result=r)
        if r.action == XdpAction.XDP_PASS:
            return Decision("redirect", "cpu", r.data, target=f"cpu{cpu}", program=r.program, result=r)
        if r.action == XdpAction.XDP_REDIRECT:
            if depth + 1 >= MAX_CPUMAP_REDIRECTS:
                return Decision("drop", "redirect_loop", r.data, program=r.program, result=r,
                                error=f"cpumap programs redirected the frame {depth + 1} times")
            again = Decision("redirect", "", r.data, program=r.program, result=r)
            return self.redirect(iface, again, r.redirect, 0, now_ns, depth + 1)
        return Decision("drop", "cpumap_program", r.data, program=r.program, result=r,
                        error=f"cpumap program {r.program} on CPU {cpu} returned {r.action.name}")

    # ------------------------------------------------------------------ the end

    def maps_json(self) -> dict:
        return self.backend.maps_json()

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
