"""One program on one engine, packet after packet, each run reduced to what the engines must agree on.

`SimRunner` runs the interpreter or the JIT on a fresh Runtime of its own (same seed for all, so
bpf_get_prandom_u32 agrees between them); `KernelRunner` runs the running kernel through
BPF_PROG_TEST_RUN with the calling thread pinned to one CPU, the CPU the simulated engines are told
they run on, so per-CPU map slots and bpf_get_smp_processor_id line up. The kernel engine records the
redirect helper calls (kernel/redirects.py), so redirect targets are compared with the kernel's too;
devmap/cpumap entry programs run there as their plain-XDP twin.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import KernelError, ProgramFault, XdpsimError
from ..spec import ObjectSpec, ProgType

U32 = 0xFFFF_FFFF
ETH_HLEN = 14
MAX_LINEAR = 3520  # 4096 - 256 headroom - 320 tailroom: the longest single-buffer XDP frame
MAX_SKB_TEST = 3712  # 4096 - NET_SKB_PAD (64) - skb_shared_info (320): the longest skb a TC test run takes

#: helpers whose results the kernel cannot be made to reproduce in a test run (BPF_PROG_TEST_RUN has no
#: clock or seed input): a run that called one is compared between interp and jit only.
UNCOMPARABLE_HELPERS = {
    "ktime_get_ns": "bpf_ktime_get_ns reads the kernel's clock, which BPF_PROG_TEST_RUN cannot set "
                    "(xdpsim follows the packet timestamps)",
    "ktime_get_boot_ns": "bpf_ktime_get_boot_ns reads the kernel's clock, which a test run cannot set",
    "ktime_get_coarse_ns": "bpf_ktime_get_coarse_ns reads the kernel's clock, which a test run cannot set",
    "ktime_get_tai_ns": "bpf_ktime_get_tai_ns reads the kernel's clock, which a test run cannot set",
    "jiffies64": "bpf_jiffies64 reads the kernel's clock, which a test run cannot set",
    "get_prandom_u32": "bpf_get_prandom_u32 uses the kernel's per-CPU generator, which cannot be seeded "
                       "from user space (xdpsim's is seeded)",
}


@dataclass
class PacketIn:
    index: int
    data: bytes
    ts_ns: int = 0
    ifindex: int = 1
    queue: int = 0


@dataclass
class Outcome:
    """What one engine made of one packet. `action` is r0 as the hook reports it (XDP: u32; TC: s32)."""

    action: int
    data: bytes
    meta: bytes = b""
    # "dev 3", "dev 7 prog egress_mark", "cpu 1", "xsk 0", "dev-ingress 5" (TC); None: no redirect target;
    # kernel: "unknown: <why>" where its recording cannot tell (not compared then)
    redirect: str | None = None
    error: str | None = None
    trace: list[str] = field(default_factory=list)
    helpers: frozenset[str] = frozenset()
    skb: dict[str, Any] | None = None  # TC: the __sk_buff fields a test run reports back (SKB_COMPARED)
    # TC: what bpf_clone_redirect sent, in call order (copy_text); the kernel's test run transmits its
    # copies without telling, so its outcomes have none and copies are compared between interp and jit
    copies: tuple[str, ...] = ()


#: __sk_buff fields BPF_PROG_TEST_RUN copies back after a TC run that xdpsim models the same way
SKB_COMPARED = ("mark", "priority", "cb", "tstamp")


def _sim_skb(st: Any) -> dict[str, Any]:
    cb = bytes(st.cb)
    d = {"mark": st.mark & U32, "priority": st.priority & U32, "tstamp": st.tstamp,
         "cb": [int.from_bytes(cb[i:i + 4], "little") for i in range(0, 20, 4)]}
    return {k: d[k] for k in SKB_COMPARED}


def copy_text(ifindex: int, ingress: bool, data: bytes) -> str:
    """One bpf_clone_redirect copy as the outcomes show it: where it went and its bytes."""
    return f"clone to {'ingress' if ingress else 'egress'} of dev {ifindex}, {len(data)} bytes: {data.hex()}"


class EngineUnavailable(XdpsimError):
    """An engine cannot run here (JIT missing, no bpf(), program refused): its column is skipped."""


# Measured on 6.18: a TC test run of an IPv4 (IPv6) frame needs the 20 (40) bytes of its IP header.
_SKB_L3_MIN = {b"\x08\x00": ETH_HLEN + 20, b"\x86\xdd": ETH_HLEN + 40}

def skip_reason(spec: ObjectSpec, prog: str, pkt: PacketIn) -> str | None:
    """Why a packet cannot be run in BPF_PROG_TEST_RUN the way a device would deliver it, or None.

    Such packets go through no engine (running them in some engines only would desynchronise the maps)."""
    if len(pkt.data) < ETH_HLEN:
        return (f"frame of {len(pkt.data)} bytes: BPF_PROG_TEST_RUN refuses frames shorter than the "
                f"{ETH_HLEN}-byte Ethernet header (EINVAL)")
    p = spec.programs[prog]
    if p.type != ProgType.XDP:
        if len(pkt.data) > MAX_SKB_TEST:
            return (f"frame of {len(pkt.data)} bytes: BPF_PROG_TEST_RUN builds an skb in one page, at most "
                    f"{MAX_SKB_TEST} bytes (EINVAL); a real skb holds the rest in fragments")
        need = _SKB_L3_MIN.get(pkt.data[12:14], 0)
        if len(pkt.data) < need:
            return (f"frame of {len(pkt.data)} bytes: BPF_PROG_TEST_RUN refuses an skb whose ethertype "
                    "promises a network header it does not hold (EINVAL; IPv4 needs 34 bytes, IPv6 54)")
    if p.type == ProgType.XDP and not p.frags and len(pkt.data) > MAX_LINEAR:
        return (f"frame of {len(pkt.data)} bytes: BPF_PROG_TEST_RUN runs a single-buffer program on the "
                f"first {MAX_LINEAR} bytes and frags (a device refuses such a program at that MTU); xdpsim "
                "refuses the frame")
    return None


def target_text(kind: str, index: int, prog: str | None) -> str:
    """A redirect target as the engines' outcomes show it (an entry program by name: ids differ)."""
    return f"{kind} {index}" + (f" prog {prog}" if prog is not None else "")


def _target(t: Any, runtime: Any) -> str | None:
    if t is None:
        return None
    prog = runtime.programs[t.prog].name if getattr(t, "prog", None) is not None else None
    return target_text(t.kind, t.index, prog)


def _kernel_target(t: Any, collection: Any) -> str | None:
    """A kernel run's recorded redirect (kernel/redirects.py) in the same words; None when the run set
    no target (kind "none"), "unknown: <why>" when the recording cannot tell."""
    if t is None or t.kind == "none":
        return None
    if t.kind == "unknown":
        return f"unknown: {t.why}"
    prog = None if t.prog is None else (collection.program_name(t.prog) or f"id:{t.prog}")
    return target_text(t.kind, t.index, prog)


class SimRunner:
    """The interpreter or the JIT on a Runtime of its own (`cpus` simulated CPUs, runs on `cpu`)."""

    def __init__(self, engine: str, spec: ObjectSpec, prog: str, *, cpu: int = 0, seed: int = 0):
        from ..runtime import Runtime

        self.name = engine
        self.spec = spec
        self.prog = prog
        self.cpu = cpu
        self.engine = _make_engine(engine)
        self.runtime = Runtime(cpus=cpu + 1, seed=seed)
        self.collection = self.runtime.load(spec)
        self.prog_id = self.collection.programs[prog]
        self.type = spec.programs[prog].type

    def run(self, pkt: PacketIn, tracer: Any = None) -> Outcome:
        if self.type == ProgType.XDP:
            from ..hooks.xdp import run_xdp

            r = run_xdp(self.runtime, self.engine, self.prog_id, pkt.data, ifindex=pkt.ifindex,
                        queue=pkt.queue, now_ns=pkt.ts_ns, cpu=self.cpu, tracer=tracer)
            action = int(r.retval) & U32 if r.error is None else int(r.action)
        else:
            from ..hooks.tc import run_tc, s32

            r = run_tc(self.runtime, self.engine, self.prog_id, pkt.data, now_ns=pkt.ts_ns, cpu=self.cpu,
                       tracer=tracer)
            action = s32(r.retval) if r.error is None else int(r.action)
            return Outcome(action, bytes(r.data), bytes(r.meta), _target(r.redirect, self.runtime),
                           _fault_text(r.error), list(r.trace), frozenset(r.helper_counts), _sim_skb(r.skb),
                           tuple(copy_text(c.ifindex, c.ingress, bytes(c.data)) for c in r.clones))
        return Outcome(action, bytes(r.data), bytes(r.meta), _target(r.redirect, self.runtime),
                       _fault_text(r.error), list(r.trace), frozenset(r.helper_counts))

    def close(self) -> None:
        pass


def _fault_text(e: ProgramFault | None) -> str | None:
    return None if e is None else str(e)


def _make_engine(name: str) -> Any:
    if name == "interp":
        from ..engines.interp import Interpreter

        return Interpreter()
    if name == "jit":
        try:
            from ..engines.jit import JitEngine

            return JitEngine()
        except Exception as e:  # ImportError, llvmlite missing, a JIT still being built: skip its column
            raise EngineUnavailable(f"engine jit unavailable: {type(e).__name__}: {e}") from e
    raise XdpsimError(f"unknown engine {name!r} (engines: interp, jit, kernel)")


def pick_cpu() -> int:
    """The CPU runs are pinned to: 0 when this process may run there, else the lowest it may use."""
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return 0
    return 0 if 0 in allowed or not allowed else min(allowed)


class KernelRunner:
    """The object in the running kernel; runs pin the calling thread to `cpu` (restored afterwards)."""

    name = "kernel"

    def __init__(self, spec: ObjectSpec, prog: str, *, cpu: int = 0):
        from ..engines.kernel import KernelCollection, verify
        from ..kernel.bpf import kernel_available

        ok, why = kernel_available()
        if not ok:
            raise EngineUnavailable(f"engine kernel unavailable: {why}")
        self.spec = spec
        self.prog = prog
        self.cpu = cpu
        self.type = spec.programs[prog].type
        try:
            self.collection = KernelCollection(spec)
        except KernelError as e:
            # Which program was refused, and why, in the verifier's words (xdpsim check says the same).
            verdicts = verify(spec)
            refused = [v[1].splitlines()[0] for v in verdicts.values() if not v[0]]
            raise EngineUnavailable("engine kernel: the kernel refuses the object: "
                                    + ("; ".join(refused) or str(e))) from e
        except XdpsimError as e:
            raise EngineUnavailable(f"engine kernel: {e}") from e
        kp = self.collection.programs[prog]
        if kp.entry and kp.run_fd is None:  # devmap/cpumap programs run as a plain-XDP twin
            self.collection.close()
            raise EngineUnavailable(f"engine kernel: {kp.name} ({kp.spec.section}) cannot be test-run: "
                                    f"BPF_PROG_TEST_RUN refuses its attach type and its plain-XDP twin was "
                                    f"refused: {kp.run_refused}")
        self._saved: set[int] | None = None

    def __enter__(self) -> KernelRunner:
        try:
            self._saved = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {self.cpu})
        except (AttributeError, OSError):
            self._saved = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            os.sched_setaffinity(0, self._saved)
            self._saved = None

    def run(self, pkt: PacketIn, tracer: Any = None) -> Outcome:
        c = self.collection
        try:
            if self.type == ProgType.XDP:
                r = c.run_xdp(self.prog, pkt.data, ingress_ifindex=pkt.ifindex, rx_queue_index=pkt.queue)
                action = r.retval & U32
            else:
                r = c.run_skb(self.prog, pkt.data)
                action = r.retval & U32
                action = action - (1 << 32) if action & 0x8000_0000 else action
        except KernelError as e:
            return Outcome(-1, b"", error=f"kernel: {e}")
        skb = None
        if self.type != ProgType.XDP:
            from ..engines.kernel import decode_sk_buff

            fields = decode_sk_buff(r.ctx_out or b"")
            skb = {k: fields.get(k) for k in SKB_COMPARED}
        return Outcome(action, bytes(r.data_out), bytes(r.meta), _kernel_target(r.redirect, c), skb=skb)

    def close(self) -> None:
        self.collection.close()
