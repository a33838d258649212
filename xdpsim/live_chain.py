"""Per-packet XDP processing for live mode: one frame in, one verdict out.

Built on the lower layers (loader, Runtime, hooks.xdp.run_xdp) with the replay pipeline's semantics:
the programs of an interface run as libxdp's dispatcher runs them (sorted by priority, then name; the
next one runs when the action is in the previous one's chain-call actions; running off the end is
XDP_PASS), and the outcome/reason names are those of `pipeline.stats`. Kept apart from the live runner
so that it can be replaced by the pipeline's own per-packet API without touching the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import XdpsimError
from .hooks.xdp import XdpAction, run_xdp
from .loader import load_object
from .pipeline.config import DEFAULT_CHAIN_CALL_ACTIONS, DEFAULT_PRIORITY, PipelineError, PipelineSpec
from .pipeline.rss import RssSpreader
from .pipeline.stats import Stats
from .runtime import Runtime
from .spec import ProgType

ETH_HLEN = 14
MIN_BATCH = 4  # fewer frames than this go one by one (a native batch call has a fixed cost)
_SIMPLE = {XdpAction.XDP_PASS: ("pass", "xdp_pass"), XdpAction.XDP_TX: ("tx", "xdp_tx"),
           XdpAction.XDP_DROP: ("drop", "xdp_drop"), XdpAction.XDP_ABORTED: ("aborted", "xdp_aborted")}
_ACTION_NAMES = {a: a.name.removeprefix("XDP_").lower() for a in XdpAction}
_INT_NAMES = {int(a): n for a, n in _ACTION_NAMES.items()}


@dataclass
class Verdict:
    """Where one frame goes: `outcome` and `reason` as in pipeline.stats, the frame as the programs left
    it, and for interface redirects the target interface's name."""

    outcome: str
    reason: str
    data: bytes
    target: str | None = None
    program: str = ""


@dataclass
class _Stage:
    prog_id: int
    name: str
    priority: int
    chain_call: frozenset[str]


@dataclass
class _Port:
    name: str
    ifindex: int
    stages: list[_Stage] = field(default_factory=list)
    rss: RssSpreader | None = None


def make_engine(name: str):
    """The JIT when it builds and runs here, else the interpreter (which always does)."""
    if name == "interp":
        from .engines.interp import Interpreter

        return Interpreter()
    if name != "jit":
        raise XdpsimError(f"live mode runs the interp or jit engine, not {name!r}")
    try:
        from .engines.jit import JitEngine

        return JitEngine()
    except Exception as e:  # noqa: BLE001 - any failure to build the JIT falls back, with the reason
        import sys

        from .engines.interp import Interpreter

        print(f"xdpsim live: JIT unavailable ({e}); using the interpreter", file=sys.stderr)
        return Interpreter()


class XdpChains:
    """The XDP chains of a pipeline's interfaces in one Runtime (one simulated CPU per rx queue)."""

    def __init__(self, spec: PipelineSpec, engine, *, seed: int = 0, budget: int | None = None):
        self.spec = spec
        self.engine = engine
        self.budget = budget
        self.runtime = Runtime(cpus=max(i.queues for i in spec.interfaces), seed=seed)
        self.runtime.ifindexes = {i.ifindex for i in spec.interfaces}
        for i in spec.interfaces:
            self.runtime.mtu[i.ifindex] = i.mtu
        self.collections = {}
        for path in spec.objects():
            self.collections[path] = self.runtime.load(load_object(str(path)))
        self.ports: dict[str, _Port] = {}
        self.by_ifindex: dict[int, str] = {}
        for iface in spec.interfaces:
            rss = RssSpreader(iface.queues) if iface.queues > 1 else None
            port = _Port(iface.name, iface.ifindex, rss=rss)
            for ref in iface.xdp:
                port.stages.append(self._stage(ref, iface.name))
            port.stages.sort(key=lambda s: (s.priority, s.name))
            self.ports[iface.name] = port
            self.by_ifindex[iface.ifindex] = iface.name
        self._apply_map_entries()

    def _stage(self, ref, where: str) -> _Stage:
        coll = self.collections[ref.object]
        names = list(coll.programs)
        if ref.program is None:
            specs = {n: self.runtime.programs[coll.programs[n]].spec for n in names}
            xdp = [n for n, ps in specs.items() if ps.type == ProgType.XDP and "devmap" not in ps.section
                   and "cpumap" not in ps.section]
            if len(xdp) != 1:
                raise PipelineError(f"interface {where}: {ref.object.name} has {len(xdp)} XDP programs "
                                    f"({', '.join(xdp)}); name one as {ref.object.name}:PROGRAM")
            name = xdp[0]
        elif ref.program in coll.programs:
            name = ref.program
        else:
            raise PipelineError(f"interface {where}: {ref.object.name} has no program {ref.program!r} "
                                f"(it has {', '.join(names)})")
        pid = coll.programs[name]
        pspec = self.runtime.programs[pid].spec
        prio = ref.priority if ref.priority is not None else (pspec.run_priority or DEFAULT_PRIORITY)
        cca = ref.chain_call_actions
        if cca is None:
            cca = pspec.chain_call_actions or list(DEFAULT_CHAIN_CALL_ACTIONS)
        return _Stage(pid, name, prio, frozenset(a.lower().removeprefix("xdp_") for a in cca))

    def _find_map(self, ref: str):
        if ":" in ref:
            obj, name = ref.rsplit(":", 1)
            for path, coll in self.collections.items():
                if str(path) == obj and name in coll.maps:
                    return coll.maps[name]
            raise PipelineError(f"map_entries: no map {ref}")
        for coll in self.collections.values():
            if ref in coll.maps:
                return coll.maps[ref]
        raise PipelineError(f"map_entries: no map named {ref!r} in the pipeline's objects")

    def _apply_map_entries(self) -> None:
        for e in self.spec.map_entries:
            m = self._find_map(e.map)
            if e.program is not None:
                value: object = self.runtime.prog_id(e.program)
            elif e.cpu is not None:
                vals = list(m[e.key]) if e.key in m else [bytes(m.spec.value_size)] * self.runtime.cpus
                vals[e.cpu] = e.value
                value = vals
            else:
                value = e.value
            m.update(e.key, value)

    def maps_json(self) -> dict:
        out: dict[str, dict] = {}
        for path, coll in self.collections.items():
            for name, m in coll.maps.items():
                key = name if name not in out else f"{path.name}:{name}"
                out[key] = m.to_json()
        return out

    def process(self, iface: str, frame: bytes, now_ns: int, stats: Stats) -> Verdict:
        """Run `frame`, received on interface `iface`, through its chain; counts into `stats`."""
        port = self.ports[iface]
        queue = port.rss.queue(frame) if port.rss is not None else 0
        stats.queues[f"{iface}:{queue}"] += 1
        v = self._run(port, frame, queue, now_ns, stats)
        stats.count(v.outcome, v.reason, iface)
        if v.outcome == "redirect":
            stats.redirect_targets[v.target or v.reason] += 1
        return v

    def process_batch(self, iface: str, frames: list[bytes], now_ns: int, stats: Stats) -> list[Verdict]:
        return [self.process(iface, f, now_ns, stats) for f in frames]

    def _run(self, port: _Port, frame: bytes, queue: int, now_ns: int, stats: Stats) -> Verdict:
        if len(frame) < ETH_HLEN:
            return Verdict("drop", "frame_too_short", frame)
        if not port.stages:
            return Verdict("pass", "no_program", frame)
        data, meta = frame, b""
        redirect = None
        r = None
        for stage in port.stages:
            r = run_xdp(self.runtime, self.engine, stage.prog_id, data, ifindex=port.ifindex, queue=queue,
                        now_ns=now_ns, meta=meta, budget=self.budget)
            stats.programs[stage.name][_ACTION_NAMES[r.action]] += 1
            stats.tail_calls += r.tail_calls
            stats.helper_calls.update(r.helper_counts)
            if r.error is not None:
                if r.error.kind == "frame":
                    return Verdict("drop", "frame_too_long", frame, program=stage.name)
                stats.errors[f"{r.error.kind}: {r.error}"] += 1
                return Verdict("error", "program_fault", frame, program=r.program)
            if r.redirect is not None:
                redirect = r.redirect
            if r.retval & 0xFFFFFFFF > XdpAction.XDP_REDIRECT:
                return self._verdict(r, port, now_ns, stats)  # an unknown action ends the chain
            data, meta = r.data, r.meta
            if _ACTION_NAMES[r.action] in stage.chain_call:
                continue
            if r.action == XdpAction.XDP_REDIRECT and r.redirect is None:
                r.redirect = redirect  # the kernel's per-CPU redirect info outlives the program that set it
            return self._verdict(r, port, now_ns, stats)
        # off the end of the chain: XDP_PASS (a reason of its own when the last program did not pass)
        last_pass = r is not None and r.action == XdpAction.XDP_PASS
        return Verdict("pass", "xdp_pass" if last_pass else "chain_end", data)

    def _verdict(self, r, port: _Port, now_ns: int, stats: Stats) -> Verdict:
        a = r.action
        if a == XdpAction.XDP_PASS:
            return Verdict("pass", "xdp_pass", r.data, program=r.program)
        if a == XdpAction.XDP_TX:
            return Verdict("tx", "xdp_tx", r.data, program=r.program)
        if a == XdpAction.XDP_DROP:
            return Verdict("drop", "xdp_drop", r.data, program=r.program)
        if a == XdpAction.XDP_ABORTED:
            reason = "unknown_action" if r.retval & 0xFFFFFFFF > XdpAction.XDP_REDIRECT else "xdp_aborted"
            return Verdict("aborted", reason, r.data, program=r.program)
        t = r.redirect
        if t is None:
            return Verdict("drop", "redirect_no_target", r.data, program=r.program)
        if t.kind == "cpu":
            return Verdict("redirect", "cpu", r.data, target=f"cpu{t.index}", program=r.program)
        if t.kind == "xsk":
            return Verdict("redirect", "xsk", r.data, target=f"xsk{t.index}", program=r.program)
        target = self.by_ifindex.get(t.index)
        if target is None:
            return Verdict("drop", "redirect_failed", r.data, program=r.program)
        data = r.data
        if t.prog is not None:  # a devmap program runs on the egress device after the redirect
            d = run_xdp(self.runtime, self.engine, t.prog, data, ifindex=port.ifindex, now_ns=now_ns,
                        egress_ifindex=t.index, budget=self.budget)
            dname = self.runtime.programs[t.prog].name
            stats.programs[dname][_ACTION_NAMES[d.action]] += 1
            if d.error is not None:
                stats.errors[f"{d.error.kind}: {d.error}"] += 1
                return Verdict("error", "program_fault", data, program=dname)
            if d.action != XdpAction.XDP_PASS:
                return Verdict("drop", "devmap_program", d.data, program=dname)
            data = d.data
        return Verdict("redirect", "interface", data, target=target, program=r.program)


class PipelineChains:
    """The replay pipeline's own per-packet API (`pipeline.pipeline.Pipeline.process`) behind the
    interface the live runner uses: `process(iface, frame, now_ns, stats) -> Verdict`, `maps_json()`."""

    def __init__(self, spec: PipelineSpec, engine: str, *, seed: int = 0, budget: int | None = None):
        from .pipeline.pipeline import Pipeline

        self.pipeline = Pipeline(spec, engine=engine, seed=seed, budget=budget)
        self.by_name = {i.name: i for i in self.pipeline.interfaces}
        self.engine_name = engine

    def process(self, iface: str, frame: bytes, now_ns: int, stats: Stats) -> Verdict:
        i = self.by_name[iface]
        queue = i.rss.queue(frame)
        stats.queues[f"{iface}:{queue}"] += 1
        d = self.pipeline.process(i, frame, now_ns, queue)
        stats.count(d.outcome, d.reason, iface)
        r = d.result
        if r is not None:
            stats.programs[d.program or r.program][_ACTION_NAMES[r.action]] += 1
            stats.tail_calls += r.tail_calls
            stats.helper_calls.update(r.helper_counts)
        if d.error and d.outcome == "error":
            stats.errors[d.error] += 1
        if d.outcome == "redirect":
            stats.redirect_targets[d.target or d.reason] += 1
        return Verdict(d.outcome, d.reason, d.data, target=d.target, program=d.program)

    def process_batch(self, iface: str, frames: list[bytes], now_ns: int, stats: Stats) -> list[Verdict]:
        """Several frames received together on `iface`: one native `run_batch` call when the
        interface's chain is a single program on one queue under the JIT, else frame by frame.
        Verdicts and statistics are those of `process` (tests/test_live_unit.py compares them)."""
        i = self.by_name[iface]
        engine = getattr(self.pipeline.backend, "engine", None)
        if (len(frames) < MIN_BATCH or len(i.chain) != 1 or not i.prog_ids or i.spec.queues != 1
                or not hasattr(engine, "run_batch")):
            return [self.process(iface, f, now_ns, stats) for f in frames]
        return self._batch(i, engine, frames, now_ns, stats)

    def _batch(self, i, engine, frames: list[bytes], now_ns: int, stats: Stats) -> list[Verdict]:
        import numpy as np

        from .pipeline.routing import Decision

        backend = self.pipeline.backend
        entry = i.chain[0]
        prog = entry.program
        lengths = np.fromiter((len(f) for f in frames), np.int64, len(frames))
        offsets = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
        ok = np.flatnonzero(lengths >= ETH_HLEN)
        if not len(ok):
            return [self.process(i.name, f, now_ns, stats) for f in frames]
        data = np.frombuffer(b"".join(frames), np.uint8)
        res = engine.run_batch(backend.runtime, i.prog_ids[0], data, offsets[ok],
                               lengths[ok].astype(np.uint32), np.full(len(ok), now_ns, np.uint64), None,
                               ifindex=i.ifindex, budget=backend.budget)
        stats.helper_calls.update(res.helper_counts)
        out: list[Verdict] = [Verdict("drop", "frame_too_short", f) for f in frames]
        # plain lists: indexing numpy arrays one element at a time costs more than the programs
        actions, faults, rets = res.action.tolist(), res.fault.tolist(), res.retval.tolist()
        offs, lens, outmv = res.out_offset.tolist(), res.out_length.tolist(), memoryview(res.out)
        counts = stats.programs[prog]
        for j, k in enumerate(ok.tolist()):
            frame = frames[k]
            act = actions[j]
            counts[_INT_NAMES[act]] += 1
            if faults[j]:
                err = res.errors.get(j)
                if err is not None and err.kind == "frame":
                    out[k] = Verdict("drop", "frame_too_long", frame, program=prog)
                    continue
                stats.errors[str(err) if err is not None else "program fault"] += 1
                out[k] = Verdict("error", "program_fault", frame, program=prog)
                continue
            pkt = bytes(outmv[offs[j] : offs[j] + lens[j]])
            if rets[j] & 0xFFFFFFFF > XdpAction.XDP_REDIRECT:
                out[k] = Verdict("aborted", "unknown_action", pkt, program=prog)
            elif entry.chains(act):  # off the end of a one-program chain: XDP_PASS
                out[k] = Verdict("pass", "xdp_pass" if act == XdpAction.XDP_PASS else "chain_end", pkt,
                                 program=prog)
            elif act == XdpAction.XDP_REDIRECT:
                d = self.pipeline.redirect(i, Decision("redirect", "", pkt, program=prog),
                                           res.redirect_target(j), 0, now_ns)
                if d.error and d.outcome == "error":
                    stats.errors[d.error] += 1
                out[k] = Verdict(d.outcome, d.reason, d.data, target=d.target, program=d.program or prog)
            else:
                outcome, reason = _SIMPLE[XdpAction(act)]
                out[k] = Verdict(outcome, reason, pkt, program=prog)
        for v in out:
            stats.count(v.outcome, v.reason, i.name)
            if v.outcome == "redirect":
                stats.redirect_targets[v.target or v.reason] += 1
        stats.queues[f"{i.name}:0"] += len(frames)
        return out

    def maps_json(self) -> dict:
        return self.pipeline.maps_json()

    def close(self) -> None:
        self.pipeline.close()


def make_processor(spec: PipelineSpec, engine: str, *, seed: int = 0, budget: int | None = None):
    """The pipeline's per-packet processing when that module is present, else XdpChains (same
    semantics, built on the lower layers). The JIT falls back to the interpreter if it cannot run."""
    eng = make_engine(engine)
    name = getattr(eng, "name", engine)
    try:
        import importlib

        importlib.import_module(".pipeline.pipeline", __package__)
    except ImportError:
        return XdpChains(spec, eng, seed=seed, budget=budget), name
    return PipelineChains(spec, name, seed=seed, budget=budget), name
