"""`xdpsim.load(path) -> Object`: the user-facing way to run one object's XDP programs on packets.

    obj = xdpsim.load("programs/parser.o")
    res = obj.programs["packet_parser"].run(packet)          # bytes or a scapy Packet
    assert res.action == XdpAction.XDP_PASS; res.raise_for_error()
    obj.maps["counters"][0]
    results = obj.programs["packet_parser"].run_many(packets, now_ns=times)  # a capture at once

`run_many` gives what one `run` per packet gives (maps carry over); on the JIT, XDP programs take the
native batch loop (~25x cheaper per packet than `run`), without per-packet `insns`/`helper_counts`.

TC programs (sections tc, classifier, tcx/...) run the same way on a `struct __sk_buff`; their
`action` is a hooks.tc.TcAction, `skb` the metadata after the run (mark, cb, ...), and __sk_buff
fields may be given: `prog.run(packet, mark=7, cb=[1, 2, 3, 4, 5])`.

Engines: "interp" (the reference interpreter), "jit" (xdpsim.engines.jit.JitEngine, on the same
Runtime and maps as the interpreter, so the two can be mixed run by run), "kernel" (the running
kernel through bpf(): its own maps, `Object.maps` are then KernelMaps with the same dict API).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ProgramFault, XdpsimError
from .hooks.tc import TcAction, run_tc
from .hooks.xdp import XdpAction, run_xdp
from .runtime import Runtime
from .spec import ObjectSpec, ProgType

if TYPE_CHECKING:
    from .engines.base import Engine, Tracer
    from .maps import RedirectTarget

ENGINES = ("interp", "jit", "kernel")


@dataclass
class RunResult:
    """One run of one packet: `action` (XdpAction; prints as XDP_PASS...), `data` (output bytes),
    `meta`, `redirect` (target or None), `error` (ProgramFault or None: a fault is an outcome),
    `trace` (bpf_printk lines), `program` (name of the program that returned, after tail calls),
    `retval` (raw r0), `engine`, and the run's counters."""

    action: XdpAction | TcAction | int
    data: bytes
    meta: bytes = b""
    redirect: RedirectTarget | None = None
    error: ProgramFault | None = None
    trace: list[str] = field(default_factory=list)
    program: str = ""
    retval: int = 0
    engine: str = "interp"
    helper_counts: dict[str, int] = field(default_factory=dict)
    tail_calls: int = 0
    insns: int = 0
    notes: list[str] = field(default_factory=list)
    duration_ns: int = 0
    #: TC runs: the skb metadata after the run (helpers.skbuff.SkbState); kernel runs fill only the
    #: fields BPF_PROG_TEST_RUN reports back (mark, priority, ifindexes, cb, tstamp, wire_len, gso_*,
    #: hwtstamp)
    skb: Any = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def raise_for_error(self) -> RunResult:
        """Raise the run's ProgramFault, if any (for tests); returns self otherwise."""
        if self.error is not None:
            raise self.error
        return self


def _packet_bytes(packet: Any) -> bytes:
    if type(packet) is bytes:  # the common case, first: no copy
        return packet
    if isinstance(packet, bytes | bytearray | memoryview):
        return bytes(packet)
    if hasattr(packet, "__bytes__"):  # scapy Packet and friends
        return bytes(packet)
    raise TypeError(f"a packet is bytes or a scapy Packet, not {type(packet).__name__}")


class Program:
    """One program of a loaded object (`Object.programs[name]`)."""

    def __init__(self, obj: Object, name: str, prog_id: int):
        self.object = obj
        self.name = name
        self.id = prog_id
        ptype = obj.spec.programs[name].type
        # which hook runs it, decided once (run() is called per packet)
        self._hook = ("tc" if ptype in (ProgType.SCHED_CLS, ProgType.SCHED_ACT)
                      else "xdp" if ptype == ProgType.XDP else None)

    @property
    def spec(self) -> Any:
        return self.object.spec.programs[self.name]

    def __repr__(self) -> str:
        return f"<Program {self.name} ({self.spec.section}) of {self.object.path}>"

    def run(self, packet: Any, *, engine: str | None = None, ifindex: int = 1, queue: int = 0,
            now_ns: int = 0, meta: bytes = b"", budget: int | None = None,
            tracer: Tracer | None = None, **skb_fields: Any) -> RunResult:
        """Run this XDP or TC program on one packet with `engine` (default: the object's). `tracer(prog_id,
        pc, regs)` is called before each instruction (interp; engines that cannot trace ignore it).
        TC programs take __sk_buff fields as keywords (mark=, priority=, cb=, ...; `ifindex` is the
        device's)."""
        hook = self._hook
        if hook == "tc":
            return self._run_tc(packet, engine, ifindex, now_ns, meta, budget, tracer, skb_fields)
        if skb_fields:
            raise XdpsimError(f"program {self.name} is an XDP program: no __sk_buff fields to set "
                              f"({', '.join(skb_fields)})")
        if hook != "xdp":
            raise XdpsimError(f"program {self.name} is a {ProgType(self.spec.type).name} program; "
                              "Program.run runs XDP programs")
        data = _packet_bytes(packet)
        name = engine or self.object.engine
        if name == "kernel":
            return self.object._run_kernel(self.name, data, ifindex=ifindex, queue=queue, meta=meta)
        eng = self.object._engine(name)
        r = run_xdp(self.object.runtime, eng, self.id, data, ifindex=ifindex, queue=queue, now_ns=now_ns,
                    meta=meta, budget=budget, tracer=tracer)
        return RunResult(r.action, r.data, r.meta, r.redirect, r.error, r.trace, r.program, r.retval, name,
                         r.helper_counts, r.tail_calls, r.insns, r.notes)

    def run_many(self, packets: Iterable[Any], *, engine: str | None = None, ifindex: int = 1, queue: int = 0,
                 now_ns: int | Sequence[int] = 0, meta: bytes = b"", budget: int | None = None,
                 tracer: Tracer | None = None, **skb_fields: Any) -> list[RunResult]:
        """Run this program on each packet in turn, as one `run` per packet would (maps carry over from
        packet to packet); returns one RunResult per packet, in order. `now_ns` is one time for all or
        one per packet (e.g. the capture's timestamps); the other arguments are `run`'s.

        On the JIT an XDP program's packets go through the native batch loop in one call
        (JitEngine.run_batch), many times cheaper than a Python call per packet; the results equal
        `run`'s except `insns` (0) and `helper_counts` (empty), which that loop does not count per
        packet. Metadata, a tracer, a program that may call bpf_xdp_adjust_meta, TC programs and the
        other engines go packet by packet (hooks/xdp_many.py).

            results = prog.run_many(rdpcap("capture.pcap"))
            assert all(r.action == XdpAction.XDP_PASS for r in results)
        """
        pkts = [_packet_bytes(p) for p in packets]
        times = [now_ns] * len(pkts) if isinstance(now_ns, int) else list(now_ns)
        if len(times) != len(pkts):
            raise XdpsimError(f"run_many: {len(times)} times for {len(pkts)} packets")
        name = engine or self.object.engine
        if self._hook != "xdp" or skb_fields or name == "kernel":
            kw = dict(engine=engine, ifindex=ifindex, queue=queue, meta=meta, budget=budget, tracer=tracer)
            return [self.run(p, now_ns=t, **kw, **skb_fields) for p, t in zip(pkts, times, strict=True)]
        from .hooks.xdp_many import run_xdp_many

        rs = run_xdp_many(self.object.runtime, self.object._engine(name), self.id, pkts, ifindex=ifindex,
                          queue=queue, now_ns=times, meta=meta, budget=budget, tracer=tracer)
        return [RunResult(r.action, r.data, r.meta, r.redirect, r.error, r.trace, r.program, r.retval, name,
                          r.helper_counts, r.tail_calls, r.insns, r.notes) for r in rs]

    def _run_tc(self, packet: Any, engine: str | None, ifindex: int, now_ns: int, meta: bytes,
                budget: int | None, tracer: Tracer | None, fields: dict[str, Any]) -> RunResult:
        data = _packet_bytes(packet)
        name = engine or self.object.engine
        if name == "kernel":
            if meta:
                raise XdpsimError("the kernel's BPF_PROG_TEST_RUN takes no metadata for TC programs")
            if ifindex != 1:
                fields = {"ifindex": ifindex, **fields}
            return self.object._run_kernel_tc(self.name, data, fields)
        fields = {"ifindex": ifindex, **fields}
        r = run_tc(self.object.runtime, self.object._engine(name), self.id, data, meta=meta, now_ns=now_ns,
                   budget=budget, tracer=tracer, **fields)
        return RunResult(r.action, r.data, r.meta, r.redirect, r.error, r.trace, r.program, r.retval, name,
                         r.helper_counts, r.tail_calls, r.insns, r.notes, skb=r.skb)


class Object:
    """A loaded object: `programs` (C name -> Program), `maps` (name -> Map, or KernelMap for the
    kernel engine), `spec` (the ObjectSpec), `runtime` (interp/jit), `engine` (the default)."""

    def __init__(self, spec: ObjectSpec, *, engine: str = "interp", cpus: int = 1, seed: int = 0):
        if engine not in ENGINES:
            raise XdpsimError(f"unknown engine {engine!r} (engines: {', '.join(ENGINES)})")
        self.spec = spec
        self.path = spec.path
        self.engine = engine
        self.runtime = Runtime(cpus=cpus, seed=seed)
        self.collection = self.runtime.load(spec)
        self._engines: dict[str, Engine] = {}
        self._kernel: Any = None
        self.programs = {name: Program(self, name, pid) for name, pid in self.collection.programs.items()}
        self.maps: dict[str, Any] = dict(self.collection.maps)
        if engine == "kernel":
            self.maps = dict(self.kernel.maps)

    def __repr__(self) -> str:
        return f"<xdpsim Object {self.path}: programs {', '.join(self.programs)}; engine {self.engine}>"

    def _engine(self, name: str) -> Engine:
        eng = self._engines.get(name)
        if eng is None:
            if name == "interp":
                from .engines.interp import Interpreter

                eng = Interpreter()
            elif name == "jit":
                try:
                    from .engines.jit import JitEngine
                except ImportError as e:
                    raise XdpsimError(f"engine 'jit' is not available: {e}") from e
                eng = JitEngine()
            else:
                raise XdpsimError(f"unknown engine {name!r} (engines: {', '.join(ENGINES)})")
            self._engines[name] = eng
        return eng

    @property
    def kernel(self) -> Any:
        """The object instantiated in the running kernel (KernelCollection), created on first use."""
        if self._kernel is None:
            from .engines.kernel import KernelCollection

            self._kernel = KernelCollection(self.spec)
        return self._kernel

    def _run_kernel(self, name: str, data: bytes, *, ifindex: int, queue: int, meta: bytes) -> RunResult:
        r = self.kernel.run_xdp(name, data, ingress_ifindex=ifindex, rx_queue_index=queue, meta=meta)
        act = r.retval & 0xFFFF_FFFF
        notes = []
        if act > XdpAction.XDP_REDIRECT:
            notes.append(f"unknown XDP action {act}: treated as XDP_ABORTED (the kernel warns and drops)")
            action = XdpAction.XDP_ABORTED
        else:
            action = XdpAction(act)
        return RunResult(action, r.data_out, r.meta, _kernel_redirect(r.redirect, notes), None, [], name,
                         r.retval, "kernel", notes=notes, duration_ns=r.duration_ns)

    def _run_kernel_tc(self, name: str, data: bytes, fields: dict[str, Any]) -> RunResult:
        from .helpers.skbuff import SkbState
        from .hooks.tc import s32

        r = self.kernel.run_skb(name, data, **fields)
        st = SkbState()
        for key, value in r.skb.items():
            setattr(st, key, bytearray(b"".join(v.to_bytes(4, "little") for v in value))
                    if key == "cb" else value)
        code = s32(r.retval)
        action: TcAction | int = TcAction(code) if code in TcAction._value2member_map_ else code
        notes: list[str] = []
        target = _kernel_redirect(r.redirect, notes)
        return RunResult(action, r.data_out, b"", target, None, [], name, r.retval, "kernel", notes=notes,
                         duration_ns=r.duration_ns, skb=st)

    def close(self) -> None:
        if self._kernel is not None:
            self._kernel.close()
            self._kernel = None

    def __enter__(self) -> Object:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load(path: str | os.PathLike | ObjectSpec, *, engine: str = "interp", cpus: int = 1,
         seed: int = 0) -> Object:
    """Load an ELF object (or an ObjectSpec) for running with `engine` ("interp", "jit" or "kernel")."""
    if isinstance(path, ObjectSpec):
        spec = path
    else:
        from .loader import load_object

        spec = load_object(path)
    return Object(spec, engine=engine, cpus=cpus, seed=seed)


def _kernel_redirect(t: Any, notes: list[str]) -> Any:
    """The kernel engine's recorded redirect (kernel/redirects.py) as a RedirectTarget: None when the run
    set none; kind "unknown" (why in `notes`) when it cannot be told; `prog` is a kernel program id."""
    if t is None or t.kind == "none":
        return None
    from .maps import RedirectTarget

    if t.kind == "unknown":
        notes.append(f"redirect target unknown: {t.why}")
    return RedirectTarget(t.kind, t.index, t.prog, t.flags if t.kind == "broadcast" else 0)
