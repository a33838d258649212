"""Per-packet XDP processing for live mode: frames in, verdicts out, statistics counted.

`PipelineChains` puts the replay pipeline's per-packet API (`pipeline.pipeline.Pipeline.process`:
libxdp-style chains, verdict routing, devmap programs) behind the two calls the live runner makes, and
adds a batch path: frames read together from one device run in one native `run_batch` call when the
interface's chain is a single program on one queue under the JIT, with the same verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import XdpsimError
from .hooks.xdp import XdpAction
from .pipeline.config import PipelineSpec
from .pipeline.stats import Stats

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
    # broadcast and bpf_clone_redirect copies, frames of their own (each counted as a packet, in
    # `clones` too); a copy's `interface` is where it is counted, as in a replay
    clones: list[Verdict] = field(default_factory=list)
    interface: str | None = None


def _copies(d, stats: Stats) -> list[Verdict]:  # noqa: ANN001 - a pipeline Decision
    """A decision's copies (and theirs) as verdicts, each counted as a packet of its own, as a replay
    counts them (pipeline.tc_stage.account_extra)."""
    out = []
    for c in d.clones:
        stats.clones += 1
        stats.count(c.outcome, c.reason, c.interface)
        if c.outcome == "redirect":
            stats.redirect_targets[c.target or c.reason] += 1
        if c.error and c.outcome == "error":
            stats.errors[c.error] += 1
        out.append(Verdict(c.outcome, c.reason, c.data, target=c.target, program=c.program,
                           clones=_copies(c, stats), interface=c.interface))
    return out


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
        return Verdict(d.outcome, d.reason, d.data, target=d.target, program=d.program,
                       clones=_copies(d, stats))

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
    """The pipeline's per-packet processing for live mode, and the engine's name. The JIT falls back to
    the interpreter (with a message) where it cannot be built."""
    name = getattr(make_engine(engine), "name", engine)
    return PipelineChains(spec, name, seed=seed, budget=budget), name
