"""`xdpsim diff PIPELINE.toml`: a whole pipeline (interfaces, XDP chains, map entries, routes) on each
engine through `xdpsim.pipeline.Pipeline`, packet by packet.

Compared per packet: the outcome (pass, tx, redirect, drop, error), its reason, the bytes, the chain's
programs that ran, the redirect sink (the kernel engine learns the target from its recording of the
redirect helper calls, and runs devmap entry programs as plain-XDP twins; where it cannot tell, its
reason is `target_unknown` and the sink is compared between interp and jit only), and the packet's
copies (`copy N`: broadcast and bpf_clone_redirect copies, where each ended and its bytes; clones
between interp and jit only, as the kernel's TC test runs do not report them). After the run, every
map of every object.
Every interface gets one rx queue (`parse_spec(queues=1)`): the kernel's test runs all happen on the
CPU the diff pins them to, which is then the one simulated CPU whose per-CPU slots are compared.
"""

from __future__ import annotations

from typing import Any

from .core import DiffReport, Disagreement, first_copy_difference
from .engines import UNCOMPARABLE_HELPERS, pick_cpu
from .mapcmp import Snapshot, compare_snapshots, kernel_snapshot, sim_snapshot

CLONES_NOTE = ("bpf_clone_redirect copies: compared between interp and jit only (the kernel engine's TC test "
               "runs transmit a clone without reporting it); broadcast copies with the kernel too")
SINGLE_QUEUE_NOTE = ("pipeline run with one rx queue per interface: the kernel's test runs happen on the one "
                     "CPU they are pinned to")


def _decision_fields(d: Any, kernel: bool) -> dict[str, Any]:
    out = {"outcome": d.outcome, "fault": d.error is not None and d.outcome == "error",
           "data": None if d.outcome == "error" else bytes(d.data), "programs": tuple(d.ran)}
    if not kernel:
        out["error"] = d.error
    if d.reason != "target_unknown":  # only the kernel engine says so; the others always know
        out["reason"] = d.reason
        out["target"] = d.target
    out["copies"] = copies(d, clones=not kernel)
    return out


def copies(d: Any, *, clones: bool = True) -> tuple[str, ...]:
    """A packet's copies in the order the pipeline made them, copies of copies after their own (as
    packets.jsonl lists them: pipeline.copy_records): kind, where it ended, outcome, reason, bytes.
    clones=False leaves out bpf_clone_redirect copies and what followed them: the kernel engine's TC test
    runs transmit a clone without reporting it, so only broadcast copies are compared with the kernel."""
    kind = "broadcast" if d.reason == "broadcast" else "clone"
    if kind == "clone" and not clones:
        return ()
    out: list[str] = []
    for c in d.clones:
        data = bytes(c.data)
        out.append(f"{kind} to {c.target or c.interface}: {c.outcome}/{c.reason}, {len(data)} bytes: "
                   f"{data.hex()}")
        out.extend(copies(c, clones=clones))
    return tuple(out)


def _uncomparable(d: Any) -> str | None:
    r = getattr(d, "result", None)
    for h in sorted(getattr(r, "helper_counts", {}) or {}):
        if h in UNCOMPARABLE_HELPERS:
            return UNCOMPARABLE_HELPERS[h]
    return None


def _snapshot(p: Any, cpu: int) -> Snapshot:
    from ..pipeline.backends import map_key_names

    b = p.backend
    names = map_key_names({path: c.maps for path, c in b.collections.items()})
    out: Snapshot = {}
    for path, c in b.collections.items():
        snap = kernel_snapshot(c, cpu) if b.name == "kernel" else sim_snapshot(b.runtime, c, 0)
        out.update({names[(path, n)]: v for n, v in snap.items()})
    return out


def diff_pipeline(path: str, pcap: str, *, engines: list[str], seed: int = 0, limit: int = 50) -> DiffReport:
    import os

    from ..errors import XdpsimError
    from ..io import open_capture
    from ..pipeline.config import parse_spec
    from ..pipeline.pipeline import Pipeline

    spec = parse_spec(path, queues=1)
    report = DiffReport(path, "(pipeline)", list(engines), cpu=pick_cpu())
    report.notes.append(SINGLE_QUEUE_NOTE)
    pipes: dict[str, Any] = {}
    for e in engines:
        try:
            pipes[e] = Pipeline(spec, engine=e, seed=seed)
        except XdpsimError as exc:
            report.skipped_engines[e] = str(exc)
    saved = None
    if "kernel" in pipes:
        saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {report.cpu})
    tainted: set[str] = set()
    try:
        with open_capture(pcap) as cap:
            for pkt in cap:
                report.packets += 1
                decisions = {}
                for e, p in pipes.items():
                    iface = p.interface_for(int(pkt.interface))
                    if iface is None:
                        break
                    decisions[e] = p.process(iface, bytes(pkt.data), int(pkt.ts_ns), 0)
                if len(decisions) < len(pipes):
                    report.not_compared["no pipeline interface for the capture interface"] += 1
                    continue
                ref = decisions.get("interp") or decisions.get("jit")
                why = _uncomparable(ref) if ref is not None else None
                if why and "kernel" in decisions:
                    report.kernel_not_compared[why] += 1
                    tainted.add(why)
                report.compared += 1
                if "kernel" in decisions and any(copies(d) != copies(d, clones=False)
                                                 for e, d in decisions.items() if e != "kernel"):
                    report.kernel_not_compared[CLONES_NOTE] += 1
                    tainted.add(CLONES_NOTE)  # the programs a clone meets did not run in the kernel either
                k = decisions.get("kernel")
                if k is not None and k.reason == "target_unknown":
                    report.kernel_not_compared[k.error or "redirect target unknown"] += 1
                keys = {e: _decision_fields(d, "kernel" in decisions)
                        for e, d in decisions.items() if not (e == "kernel" and why)}
                sims = {e: _decision_fields(d, False) for e, d in decisions.items() if e != "kernel"}
                for vals in (sims, keys):
                    d = _first(vals)
                    if d is not None:
                        report.disagreeing_packets += 1
                        if len(report.disagreements) < limit:
                            report.disagreements.append(Disagreement(pkt.index, d[0], d[1]))
                        break
        snaps = {e: _snapshot(p, report.cpu) for e, p in pipes.items()}
        specs = {n: _MapStub(v) for n, v in _map_specs(pipes).items()}
        if len(snaps) > 1:
            diffs, skipped = compare_snapshots(snaps, specs, limit)
            if tainted:
                sims = {e: s for e, s in snaps.items() if e != "kernel"}
                sim_diffs = compare_snapshots(sims, specs, limit)[0] if len(sims) > 1 else []
                sim_maps = {d.map for d in sim_diffs}
                for d in diffs:
                    if d.map not in sim_maps:
                        skipped.setdefault(d.map, "compared between interp and jit only: "
                                           + "; ".join(sorted(tainted)))
                diffs = [d for d in diffs if d.map in sim_maps]
            report.map_differences, report.maps_not_compared = diffs, skipped
    finally:
        if saved is not None:
            os.sched_setaffinity(0, saved)
        for p in pipes.values():
            p.close()
    report.engines = [e for e in engines if e not in report.skipped_engines]
    return report


def _first(vals: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    if len(vals) < 2:
        return None
    common = set.intersection(*(set(v) for v in vals.values()))
    for f in ("fault", "error", "outcome", "reason", "programs", "data", "target", "copies"):
        if f in common and len({repr(v[f]) for v in vals.values()}) > 1:
            if f == "copies":
                return first_copy_difference({e: v[f] for e, v in vals.items()})
            return f, {e: v[f] for e, v in vals.items()}
    return None


class _MapStub:
    """What compare_snapshots reads of a MapSpec."""

    def __init__(self, spec: Any):
        self.type = spec.type
        self.max_entries = spec.max_entries


def _map_specs(pipes: dict[str, Any]) -> dict[str, Any]:
    from ..pipeline.backends import map_key_names

    p = next(iter(pipes.values()))
    b = p.backend
    names = map_key_names({path: c.maps for path, c in b.collections.items()})
    out = {}
    for path, c in b.collections.items():
        for n, m in c.maps.items():
            out[names[(path, n)]] = m.spec
    return out
