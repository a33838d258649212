"""Three-way differential runs: the same program and packets on interp, jit and the kernel.

    report = diff_program(spec, "packet_parser", packets, engines=("interp", "jit", "kernel"))
    report.ok, report.disagreements[0].field, report.map_differences, report.trace

Every engine starts from fresh state (its own maps, the same seed) and sees the packets in order;
after each chunk of packets the outcomes are compared packet by packet (the first field that differs
is reported: error, action, data, meta, TC skb fields, redirect target, bpf_clone_redirect copies
(`copy N`: target and bytes; interp and jit only), printk), after the run the maps. The kernel's
redirect target comes from the kernel engine's recording of the redirect helper calls
(kernel/redirects.py: the call, its arguments, the map identified by its kernel address, the entry
looked up after the run). What the kernel cannot be asked is not compared, and the report says why
(`not_compared`, `kernel_not_compared`, `maps_not_compared`, `notes`): a redirect target its recording
cannot tell, clones its test run transmits unreported, values from clocks and the kernel's random
generator, frames a test run refuses or treats unlike a device.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from ..errors import ProgramFault
from ..spec import ObjectSpec, ProgType
from .engines import (
    UNCOMPARABLE_HELPERS,
    EngineUnavailable,
    KernelRunner,
    Outcome,
    PacketIn,
    SimRunner,
    pick_cpu,
    skip_reason,
)
from .mapcmp import MapDifference, Snapshot, compare_snapshots, kernel_snapshot, sim_snapshot

ENGINES = ("interp", "jit", "kernel")
XDP_REDIRECT = 4
TC_ACT_REDIRECT = 7
REDIRECT_NOTE = ("redirect target: compared between interp and jit only where the kernel engine's recording "
                 "could not tell it (kernel_not_compared says why)")

COPIES_NOTE = ("bpf_clone_redirect copies: compared between interp and jit only (BPF_PROG_TEST_RUN transmits "
               "a clone without reporting it)")

Packets = Sequence[PacketIn] | Callable[[], Iterable[PacketIn]]


@dataclass
class Disagreement:
    packet: int
    field: str
    values: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"packet": self.packet, "field": self.field,
                "values": {e: _show(v) for e, v in self.values.items()}}


def _show(v: Any) -> Any:
    return v.hex() if isinstance(v, bytes) else v


@dataclass
class DiffReport:
    spec: str
    program: str
    engines: list[str]
    skipped_engines: dict[str, str] = field(default_factory=dict)
    packets: int = 0  # read from the source
    compared: int = 0  # run through every engine and compared
    disagreeing_packets: int = 0
    disagreements: list[Disagreement] = field(default_factory=list)  # the first `limit`, one per packet
    not_compared: Counter = field(default_factory=Counter)  # reason -> packets
    kernel_not_compared: Counter = field(default_factory=Counter)  # reason -> packets (interp-jit only)
    map_differences: list[MapDifference] = field(default_factory=list)
    maps_not_compared: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    trace_packet: int | None = None
    trace: str | None = None
    cpu: int = 0

    @property
    def ok(self) -> bool:
        return not self.disagreeing_packets and not self.map_differences

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec, "program": self.program, "engines": self.engines,
            "skipped_engines": self.skipped_engines, "cpu": self.cpu, "packets": self.packets,
            "compared": self.compared, "agree": self.ok, "disagreeing_packets": self.disagreeing_packets,
            "disagreements": [d.to_json() for d in self.disagreements],
            "map_differences": [d.to_json() for d in self.map_differences],
            "not_compared": dict(self.not_compared), "kernel_not_compared": dict(self.kernel_not_compared),
            "maps_not_compared": self.maps_not_compared, "notes": self.notes,
            "trace_packet": self.trace_packet, "trace": self.trace,
        }


def _chunks(it: Iterable[PacketIn], n: int) -> Iterator[list[PacketIn]]:
    src = iter(it)
    while chunk := list(islice(src, n)):
        yield chunk


def _iterate(packets: Packets) -> Iterable[PacketIn]:
    return packets() if callable(packets) else packets


def _kernel_reason(o: Outcome) -> str | None:
    """Why this (interp) run cannot be compared with the kernel's, or None."""
    for h in sorted(o.helpers):
        if h in UNCOMPARABLE_HELPERS:
            return UNCOMPARABLE_HELPERS[h]
    return None


def _unknown(redirect: str | None) -> bool:
    """A kernel redirect target its recording could not tell (compared between interp and jit only)."""
    return redirect is not None and redirect.startswith("unknown")


def first_difference(outs: dict[str, Outcome], *, kernel_ok: bool) -> tuple[str, dict[str, Any]] | None:
    """The first field in which the engines' outcomes of one packet differ (kernel_ok: whether the
    kernel's outcome takes part), or None."""
    sims = {e: o for e, o in outs.items() if e != "kernel"}
    every = outs if kernel_ok else sims
    checks: list[tuple[str, dict[str, Any]]] = [
        ("error", {e: o.error for e, o in sims.items()}),
        ("fault", {e: o.error is not None for e, o in every.items()}),
        ("action", {e: o.action for e, o in every.items()}),
        ("data", {e: o.data for e, o in every.items()}),
        ("meta", {e: o.meta for e, o in every.items()}),
        ("skb", {e: o.skb for e, o in every.items()}),
        ("redirect", {e: o.redirect for e, o in every.items() if not _unknown(o.redirect)}),
        ("copies", {e: o.copies for e, o in sims.items()}),  # the kernel's test run does not tell them
        ("printk", {e: o.trace for e, o in sims.items()}),
    ]
    for name, vals in checks:
        if name == "fault" and "kernel" not in vals:
            continue
        if any(o.error is not None for o in every.values()) and name in ("action", "data", "meta", "skb"):
            continue  # a fault's outcome is the fault; the bytes left behind are not a result
        if len({repr(v) for v in vals.values()}) > 1:
            if name == "copies":
                return first_copy_difference(vals)
            if name == "fault":  # show the fault text rather than True/False
                vals = {e: every[e].error for e in every}
            return name, vals
    return None


def first_copy_difference(copies: dict[str, Sequence[Any]]) -> tuple[str, dict[str, Any]]:
    """`copy N` (N from 0, in the order the copies were made) and each engine's copy N (None: it made
    fewer), for the first N at which the engines' lists of copies differ."""
    n = max(len(c) for c in copies.values())
    for i in range(n):
        vals = {e: c[i] if i < len(c) else None for e, c in copies.items()}
        if len({repr(v) for v in vals.values()}) > 1:
            return f"copy {i}", vals
    raise ValueError("the engines' copies agree")


class _Run:
    def __init__(self, spec: ObjectSpec, prog: str, engines: Sequence[str], seed: int, report: DiffReport):
        self.runners: dict[str, Any] = {}
        for e in engines:
            try:
                if e == "kernel":
                    self.runners[e] = KernelRunner(spec, prog, cpu=report.cpu)
                else:
                    self.runners[e] = SimRunner(e, spec, prog, cpu=report.cpu, seed=seed)
            except EngineUnavailable as exc:
                report.skipped_engines[e] = str(exc)
        self.report = report

    def run(self, name: str, pkt: PacketIn) -> Outcome | None:
        """One packet on one engine; an engine that breaks (not a program fault: an exception of its own)
        loses its column for the rest of the run."""
        try:
            return self.runners[name].run(pkt)
        except (ProgramFault, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - a broken engine is reported, the others go on
            self.report.skipped_engines[name] = (f"engine {name} broke at packet {pkt.index}: "
                                                 f"{type(exc).__name__}: {exc}")
            self.runners.pop(name).close()
            return None

    def close(self) -> None:
        for r in self.runners.values():
            r.close()


def diff_program(spec: ObjectSpec, prog: str, packets: Packets, *, engines: Sequence[str] = ENGINES,
                 seed: int = 0, chunk: int = 1024, limit: int = 50, trace: bool = True,
                 trace_keep: int = 400) -> DiffReport:
    """Run `packets` through program `prog` of `spec` on each engine and compare (see the module doc).
    `packets`: a sequence, or a function giving a fresh iterable (the trace replays the packets)."""
    if prog not in spec.programs:
        raise KeyError(f"{spec.path}: no program named {prog!r} (programs: {', '.join(spec.programs)})")
    bad = [e for e in engines if e not in ENGINES]
    if bad:
        raise ValueError(f"unknown engine(s) {', '.join(bad)} (engines: {', '.join(ENGINES)})")
    report = DiffReport(spec.path, prog, list(engines), cpu=pick_cpu())
    run = _Run(spec, prog, engines, seed, report)
    kernel = run.runners.get("kernel")
    tainted: set[str] = set()  # reasons why map contents cannot be compared with the kernel's
    unknown_redirect = False
    redirect_code = XDP_REDIRECT if spec.programs[prog].type == ProgType.XDP else TC_ACT_REDIRECT
    try:
        if kernel is not None:
            kernel.__enter__()
        for batch in _chunks(_iterate(packets), chunk):
            report.packets += len(batch)
            todo = []
            for p in batch:
                why = skip_reason(spec, prog, p)
                if why is None:
                    todo.append(p)
                else:
                    report.not_compared[_reason_key(why)] += 1
            outs = {e: [] for e in list(run.runners)}
            for e in list(run.runners):
                res = []
                for p in todo:
                    o = run.run(e, p)
                    if o is None:
                        break
                    res.append(o)
                outs[e] = res
            live = [e for e in outs if e in run.runners]
            if len(live) < 2:
                continue
            for i, p in enumerate(todo):
                per = {e: outs[e][i] for e in live}
                ref = per.get("interp") or per.get("jit")
                kreason = _kernel_reason(ref) if ref is not None and "kernel" in per else None
                if kreason:
                    report.kernel_not_compared[kreason] += 1
                    tainted.add(kreason)
                if "kernel" in per and any(o.copies for e, o in per.items() if e != "kernel"):
                    report.kernel_not_compared[COPIES_NOTE] += 1
                k = per.get("kernel")
                if k is not None and not kreason and k.action == redirect_code and _unknown(k.redirect):
                    unknown_redirect = True
                    report.kernel_not_compared[f"redirect target: {k.redirect}"] += 1
                report.compared += 1
                d = first_difference(per, kernel_ok="kernel" in per and kreason is None)
                if d is not None:
                    report.disagreeing_packets += 1
                    if len(report.disagreements) < limit:
                        report.disagreements.append(Disagreement(p.index, d[0], d[1]))
        _compare_maps(run, spec, report, tainted, limit)
    finally:
        if kernel is not None and "kernel" in run.runners:
            kernel.__exit__(None, None, None)
        run.close()
    if unknown_redirect:
        report.notes.append(REDIRECT_NOTE)
    report.engines = [e for e in engines if e not in report.skipped_engines]
    if trace and report.disagreements and "interp" in report.engines:
        report.trace_packet = report.disagreements[0].packet
        report.trace = trace_packet(spec, prog, packets, report.trace_packet, cpu=report.cpu, seed=seed,
                                    keep=trace_keep)
    return report


def _reason_key(why: str) -> str:
    """A skip reason without the frame's own length, so reasons count up (`frame of N bytes: ...`)."""
    head, _, rest = why.partition(": ")
    return rest if head.startswith("frame of ") else why


def _compare_maps(run: _Run, spec: ObjectSpec, report: DiffReport, tainted: set[str], limit: int) -> None:
    snaps: dict[str, Snapshot] = {}
    for e, r in run.runners.items():
        if e == "kernel":
            snaps[e] = kernel_snapshot(r.collection, report.cpu)
        else:
            snaps[e] = sim_snapshot(r.runtime, r.collection, report.cpu)
    if len(snaps) < 2:
        return
    specs = {m.name: m for m in spec.maps}
    diffs, skipped = compare_snapshots(snaps, specs, limit)
    if tainted and "kernel" in snaps:
        sims = {e: s for e, s in snaps.items() if e != "kernel"}
        sim_diffs, _ = compare_snapshots(sims, specs, limit) if len(sims) > 1 else ([], {})
        sim_maps = {d.map for d in sim_diffs}
        for d in diffs:
            if d.map not in sim_maps:
                why = "compared between interp and jit only: " + "; ".join(sorted(tainted))
                skipped.setdefault(d.map, why)
        diffs = [d for d in diffs if d.map in sim_maps]
    report.map_differences = diffs
    report.maps_not_compared = skipped


def trace_packet(spec: ObjectSpec, prog: str, packets: Packets, index: int, *, cpu: int = 0, seed: int = 0,
                 keep: int = 400) -> str:
    """The interpreter's instruction trace of packet `index` (by PacketIn.index), after replaying the
    packets before it on fresh state (so the maps are as they were in the compared run)."""
    from ..tracing import Recorder, format_trace

    runner = SimRunner("interp", spec, prog, cpu=cpu, seed=seed)
    for p in _iterate(packets):
        if skip_reason(spec, prog, p) is not None:
            continue
        if p.index == index:
            rec = Recorder(runner.runtime, keep=keep)
            out = runner.run(p, tracer=rec)
            steps = rec.finish(None)
            head = f"interp trace of packet {index} ({len(p.data)} bytes), action {out.action}"
            if out.error:
                head += f", fault: {out.error}"
            if keep is not None and rec.count > len(steps):
                head += f" (last {len(steps)} of {rec.count} instructions)"
            return head + "\n" + format_trace(steps)
        runner.run(p)
    return f"packet {index} not found on replay"
