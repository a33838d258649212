"""The JIT's fast path for a replay: one native `run_batch` call per batch (engines/jit_batch.py).

Used when a batch's packets all enter one interface whose chain is a single program (several rx queues
are fine: RSS picks each packet's queue, and the native loop its CPU), and no program can emit ring
buffer or perf records (events.jsonl names each record's packet, which a batch cannot tell); other
batches go packet by packet. Everything the per-packet path decides is decided here over the whole
batch with numpy:

- each packet gets a key index (`FIXED` below, then one per redirect outcome met): the program's action
  through a lookup table built from the program's chain_call_actions (an action it chains runs off the
  end of the chain: XDP_PASS, dispatcher.run_chain), unknown actions and faults on top; redirects go
  one by one through the same Pipeline.redirect as the per-packet path;
- stats come from bincounts of the keys and of (returning program, key) pairs -- BatchResult.prog
  says which program returned after tail calls, BatchResult.tail_calls how many it took;
- each sink file receives its packets in input order in one `PcapWriter.write_batch` call over one
  buffer (the programs' output, with the bytes of frames not run and of packets rewritten after the
  program appended to it). run_batch leaves GAP bytes before each packet's output; when the buffer is
  the frames appended after it get the same room, and the writer puts the record headers there and
  writes from the buffer without a copy.

Without `--log`, batches run in sink mode instead (run_batch(sink=...), jit/batch.py F_SINK): the native
loop itself routes each packet by its key to the record buffer of its sink file (sinks.RecordBuffers,
written by a thread of their own), writes the pcap record header and counts (returning program, key)
pairs, runts included (written as they are, not run). No numpy pass over per-packet arrays, no
per-packet Python: faults, frames too long for the loop and redirects stop the loop and are decided here
one by one, in order (`_sink_batch`), and `_fold` turns the counts into stats.json in the same order
as `_count` (so the JSON is the same text). Batches of a pcap file's records as read (Batch.records) let
the loop refer to a record it would write unchanged instead of copying it (jit.batch F_RECORDS): the
files' streams are handed to the writer at the end of each such batch, which keeps its buffer till then.

With `--log` (one JSON line per packet) the batch is run with per-packet output arrays as above, and
faults/redirects work per packet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..hooks.xdp import XdpAction
from ..io.batch import Batch
from ..io.native import interleave
from ..jit.batch import SINK_STOP
from ..spec import MapType
from .pipeline import ETH_HLEN, Interface
from .routing import Decision
from .sinks import MAX_TS_NS
from .stats import Stats

if TYPE_CHECKING:
    from .replay import Replay

# sink mode (below) for every batch without --log; tests turn it off to compare with the other batch path
SINK_MODE = True
# sink mode refers to a pcap file's unchanged records as read; tests turn it off to compare with copies
RECORDS = True

# run_batch leaves this many bytes before each packet's output: a pcap record header's room, so the
# sinks write records straight from the output buffer (PcapWriter.write_batch(gaps=True))
GAP = 16

Key = tuple[str, str, "str | None"]  # (outcome, reason, redirect target)

# keys every batch starts with (their indices below); redirects add their own after these
FIXED: list[Key] = [
    ("drop", "frame_too_short", None), ("pass", "xdp_pass", None), ("pass", "chain_end", None),
    ("tx", "xdp_tx", None), ("drop", "xdp_drop", None), ("aborted", "xdp_aborted", None),
    ("aborted", "unknown_action", None), ("drop", "frame_too_long", None), ("error", "program_fault", None)]
K_SHORT, K_PASS, K_CHAIN_END, K_TX, K_DROP, K_ABORTED, K_UNKNOWN, K_TOO_LONG, K_FAULT = range(len(FIXED))
K_REDIRECT = len(FIXED)  # placeholder until Pipeline.redirect decided
# an action that ends the chain -> its key
_END = {XdpAction.XDP_ABORTED: K_ABORTED, XdpAction.XDP_DROP: K_DROP, XdpAction.XDP_PASS: K_PASS,
        XdpAction.XDP_TX: K_TX, XdpAction.XDP_REDIRECT: K_REDIRECT}


def action_keys(actions_mask: int) -> np.ndarray:
    """Key of each XDP action (0..4) for a lone program with these chain_call_actions."""
    lut = np.empty(len(_END), np.int32)
    for act, k in _END.items():
        chained = bool(actions_mask >> int(act) & 1)
        lut[int(act)] = (K_PASS if act == XdpAction.XDP_PASS else K_CHAIN_END) if chained else k
    return lut


def usable(replay: Replay) -> bool:
    """The pipeline's programs cannot emit events (their records could not be given their packet)."""
    ok = replay.__dict__.get("_fast_usable")
    if ok is None:
        backend = replay.p.backend
        colls = getattr(backend, "collections", {})
        events = (MapType.RINGBUF, MapType.PERF_EVENT_ARRAY)
        ok = hasattr(getattr(backend, "engine", None), "run_batch") and not any(
            m.type in events for c in colls.values() for m in c.maps.values())
        replay.__dict__["_fast_usable"] = ok
    return bool(ok)


def jit_batch(replay: Replay, iface: Interface, b: Batch, times: np.ndarray) -> bool:
    """Run batch `b` natively through `iface`'s single program; False when this path does not apply."""
    if len(iface.chain) != 1 or not iface.prog_ids or iface.prog_ids[0] is None or not usable(replay):
        return False
    if SINK_MODE and not replay.log:
        plan = _plan(replay, iface)
        if plan is not None:
            _sink_batch(replay, iface, plan, b, times)
            return True
    p = replay.p
    backend: Any = p.backend
    n = len(b)
    lengths = b.lengths
    ok = np.flatnonzero(lengths >= ETH_HLEN)
    whole = len(ok) == n  # the common case: no fancy indexing
    queues = np.zeros(n, np.uint32)
    if iface.spec.queues > 1:  # RSS in Python: the hash of each frame's flow
        rss = iface.rss
        queues[:] = [rss.queue(b.packet(i)) for i in range(n)]

    def sel(a: np.ndarray) -> np.ndarray:
        return a if whole else a[ok]

    reuse = replay.__dict__.get("_batch_result")
    if reuse is not None:
        # run_batch reuses the last result's arrays only when its output buffer holds this batch: give
        # it room to spare, or batches a little larger than any before each allocate (and fault in) anew
        need = int(sel(lengths).sum(dtype=np.int64)) + GAP * n + 8 * 4096
        if len(reuse.out_base) < need:
            reuse.out_base = np.empty(need + need // 4, np.uint8)
    # lengths and (monotonic, >= 0) times as run_batch's unsigned types without a copy
    res = backend.engine.run_batch(backend.runtime, iface.prog_ids[0], b.data, sel(b.offsets),
                                   sel(lengths.astype(np.int32, copy=False).view(np.uint32)),
                                   sel(times.astype(np.int64, copy=False).view(np.uint64)), sel(queues),
                                   ifindex=iface.ifindex, budget=backend.budget, reuse=reuse, out_gap=GAP)
    replay.__dict__["_batch_result"] = res  # its arrays are reused by the next batch (constant memory)
    names = [prog.name for prog in backend.runtime.programs]
    keys: list[Key] = list(FIXED)

    # ---- each run packet's key
    action = res.action
    code = action_keys(iface.chain[0].actions_mask)[action]
    fault = res.fault != 0
    unknown = (res.retval & 0xFFFF_FFFF) > XdpAction.XDP_REDIRECT
    faults = np.flatnonzero(fault)
    if len(faults):
        unknown &= ~fault
    code[unknown] = K_UNKNOWN  # an unknown action ends the chain (whatever the mask says)
    errors: dict[int, str] = {}  # run index -> error text
    for j in faults.tolist():
        err = res.errors.get(j)
        code[j] = K_TOO_LONG if err is not None and err.kind == "frame" else K_FAULT
        errors[j] = str(err) if err is not None else "program fault"
    redirects = np.flatnonzero(code == K_REDIRECT)
    replaced: dict[int, bytes] = {}  # run index -> bytes written (a devmap program rewrote them)
    decided: dict[int, Decision] = {}
    for j in redirects.tolist():
        i = j if whole else int(ok[j])
        data = res.packet(j)
        d = p.redirect(iface, Decision("redirect", "", data, program=names[int(res.prog[j])]),
                       res.redirect_target(j), int(queues[i]), int(times[i]))
        k = (d.outcome, d.reason, d.target)
        if k not in keys:
            keys.append(k)
        code[j] = keys.index(k)
        decided[j] = d
        if d.data is not data:
            replaced[j] = d.data
        if d.error:
            errors[j] = d.error

    _count(replay, iface, keys, code, res, names, n - len(ok), decided, errors)
    _count_queues(replay.stats, iface, queues, n)

    # ---- outputs, each sink in input order
    codes = code if whole else np.full(n, K_SHORT, np.int32)
    if not whole:
        codes[ok] = code
    buf, src_off, src_len = _sources(b, ok, whole, res, replaced)
    ts = np.clip(b.ts_ns, 0, MAX_TS_NS)
    files: dict[tuple[str, str | None], int] = {}
    file_of = np.array([files.setdefault((o, t), len(files)) for o, _r, t in keys], np.int32)
    fids = file_of[codes]
    present = np.flatnonzero(np.bincount(fids, minlength=len(files)))
    by_id = {f: k for k, f in files.items()}
    for f in present.tolist():
        outcome, target = by_id[f]
        w = replay.sinks.writer(iface.name, outcome, target)
        if len(present) == 1:
            w.write_batch(buf, src_off, src_len, ts, gaps=True)
        else:
            idx = np.flatnonzero(fids == f)
            w.write_batch(buf, src_off[idx], src_len[idx], ts[idx], gaps=True)
    if res.traces:
        for j in sorted(res.traces):
            replay.sinks.trace(res.traces[j])
    if replay.log:
        _log(replay, iface, b, keys, codes, ok, whole, res, names, queues, src_len, decided, errors)
    return True


class _Plan:
    """An interface's sink-mode routing: the action keys, each FIXED key's file slot, the counts."""

    def __init__(self, replay: Replay, iface: Interface, slots: list[int]) -> None:
        self.rb = replay.sinks.records()
        lut = action_keys(iface.chain[0].actions_mask)
        lut[lut == K_REDIRECT] = SINK_STOP
        self.keys = np.append(lut, K_UNKNOWN).astype(np.int32)
        self.route = np.array(slots, np.int32)
        self.nprogs = len(replay.p.backend.runtime.programs)
        self.counts = np.zeros((self.nprogs + 1) * len(FIXED), np.uint64)


def _plan(replay: Replay, iface: Interface) -> _Plan | None:
    """The interface's sink-mode plan; None when the record buffers cannot take its files."""
    plans = replay.__dict__.setdefault("_sink_plans", {})
    plan = plans.get(iface.name, False)
    if plan is False:
        rb = replay.sinks.records()
        slots = [rb.slot(iface.name, o, t) for o, _r, t in FIXED]
        plan = None if None in slots else _Plan(replay, iface, slots)  # type: ignore[arg-type]
        plans[iface.name] = plan
    if plan is not None and len(replay.p.backend.runtime.programs) != plan.nprogs:
        plan = plans[iface.name] = _Plan(replay, iface, plan.route.tolist())
    return plan


class _Decided(NamedTuple):
    """A packet of a sink-mode batch that Python decided."""

    index: int
    key: int
    prog: int
    tails: int
    decision: Decision | None  # redirects
    error: str | None


def _sink_batch(replay: Replay, iface: Interface, plan: _Plan, b: Batch, times: np.ndarray) -> None:
    """One batch in sink mode: the native loop writes each packet's record to its file's buffer and counts
    it; faults, long frames and redirects come back here one by one, in order."""
    from ..engines.jit_batch import SinkPlan

    p = replay.p
    backend: Any = p.backend
    n = len(b)
    if iface.spec.queues > 1:  # RSS in Python: the hash of each frame's flow
        rss = iface.rss
        queues = np.fromiter((rss.queue(b.packet(i)) for i in range(n)), np.uint32, n)
    else:  # (read only: one array for every batch, not fresh pages to fault in each time)
        queues = _zeros_u32(replay, n)
    names = [prog.name for prog in backend.runtime.programs]
    keys: list[Key] = list(FIXED)
    decided: list[_Decided] = []
    rb = plan.rb
    mono = times.astype(np.int64, copy=False)
    chained = action_keys(iface.chain[0].actions_mask)

    def decide(ran: Any) -> None:
        j = ran.index
        ts = int(b.ts_ns[j])
        if ran.fault:
            err = ran.error
            key = K_TOO_LONG if err is not None and err.kind == "frame" else K_FAULT
            decided.append(_Decided(j, key, ran.prog, ran.tail_calls, None,
                                    str(err) if err is not None else "program fault"))
            rb.append(int(plan.route[key]), ran.data, ts)
            return
        act = ran.retval & 0xFFFF_FFFF
        key = K_UNKNOWN if act > XdpAction.XDP_REDIRECT else int(chained[act])
        if key != K_REDIRECT:
            decided.append(_Decided(j, key, ran.prog, ran.tail_calls, None, None))
            rb.append(int(plan.route[key]), ran.data, ts)
            return
        d = p.redirect(iface, Decision("redirect", "", ran.data, program=names[ran.prog]), ran.redirect,
                       int(queues[j]), int(mono[j]))
        k = (d.outcome, d.reason, d.target)
        if k not in keys:
            keys.append(k)
        decided.append(_Decided(j, keys.index(k), ran.prog, ran.tail_calls, d, d.error or None))
        slot = rb.slot(iface.name, d.outcome, d.target)
        if slot is None:
            rb.drain()
            replay.sinks.write(iface.name, d.outcome, d.target, d.data, ts)
        else:
            rb.append(slot, d.data, ts)

    plan.counts[:] = 0
    sp = SinkPlan(plan.keys, plan.route, rb.files, rb.nfiles, plan.counts, len(FIXED), K_SHORT,
                  np.ascontiguousarray(b.ts_ns, np.int64), decide, rb.flush_full, ETH_HLEN,
                  records=b.records and RECORDS)
    reuse = replay.__dict__.get("_batch_result")
    if sp.records:  # the files' streams may refer to the capture's records as read (not copied)
        rb.hold(b.data)
    try:
        res = backend.engine.run_batch(backend.runtime, iface.prog_ids[0], b.data, b.offsets,
                                       b.lengths.astype(np.int32, copy=False).view(np.uint32),
                                       mono.view(np.uint64), queues, ifindex=iface.ifindex,
                                       budget=backend.budget, reuse=reuse, sink=sp)
    finally:
        rb.release()  # (before the reader may read into that buffer again: the writer keeps it)
    replay.__dict__["_batch_result"] = res  # its arrays are reused by the next batch (constant memory)
    rb.pending = True
    _fold(replay, iface, plan, keys, decided, names, n, sp.tail_calls, res.helper_counts)
    _count_queues(replay.stats, iface, queues, n)
    if res.traces:
        for j in sorted(res.traces):
            replay.sinks.trace(res.traces[j])


def _zeros_u32(replay: Replay, n: int) -> np.ndarray:
    """n zeros (uint32), read only, from one array per replay."""
    z = replay.__dict__.get("_zeros_u32")
    if z is None or len(z) < n:
        z = replay.__dict__["_zeros_u32"] = np.zeros(n, np.uint32)
        z.flags.writeable = False
    return z[:n]


def _fold(replay: Replay, iface: Interface, plan: _Plan, keys: list[Key], decided: list[_Decided],
          names: list[str], n: int, tails: int, helper_counts: dict[str, int]) -> None:
    """stats.json's share of a sink-mode batch, counted in the order _count counts (same JSON)."""
    st = replay.stats
    nk0, nk, nprogs = len(FIXED), len(keys), plan.nprogs
    # (Python lists: a few dozen counts, where numpy's per-call cost -- cold after a native batch -- is
    # most of the work)
    native = plan.counts.tolist()  # rows: returning program, then "not run"; columns: FIXED keys
    counts = [sum(native[k::nk0]) for k in range(nk0)] + [0] * (nk - nk0)
    pairs = [0] * (nprogs * nk)  # (program, key), flat
    for pid in range(nprogs):
        pairs[pid * nk : pid * nk + nk0] = native[pid * nk0 : (pid + 1) * nk0]
    for e in decided:
        counts[e.key] += 1
        tails += e.tails
        if e.decision is None:
            pairs[e.prog * nk + e.key] += 1
    for k, c in enumerate(counts):
        if not c:
            continue
        outcome, reason, target = keys[k]
        st.count(outcome, reason, iface.name, n=c)
        if target:
            st.redirect_targets[target] += c
    ran = n - sum(native[nprogs * nk0 :])
    if ran:  # (a batch of runts runs nothing: no entry for the program then)
        st.programs[names[iface.prog_ids[0]]]["runs"] += ran  # type: ignore[index]
    for e in decided:
        d = e.decision
        if d is None:
            continue
        if d.program:
            st.programs[d.program]["decided"] += 1
            st.programs[d.program][d.outcome] += 1
        if d.result is not None:  # the devmap program's run is the one the per-packet path counts
            tails += d.result.tail_calls - e.tails
            st.helper_calls.update(d.result.helper_counts)
    for pk, c in enumerate(pairs):
        if not c:
            continue
        pid, k = divmod(pk, nk)
        pc = st.programs[names[pid]]
        pc["decided"] += c
        pc[keys[k][0]] += c
    st.tail_calls += tails
    st.helper_calls.update(helper_counts)
    for e in sorted(decided, key=lambda e: e.decision is not None):  # faults first, as _count
        if e.error:
            st.errors[e.error] += 1


def _count(replay: Replay, iface: Interface, keys: list[Key], code: np.ndarray, res: Any, names: list[str],
           short: int, decided: dict[int, Decision], errors: dict[int, str]) -> None:
    """stats.json's share of the batch: outcomes, reasons, programs, tail calls, helpers, errors."""
    st = replay.stats
    nk = len(keys)
    counts = np.bincount(code, minlength=nk)
    counts[K_SHORT] += short
    for k in np.flatnonzero(counts).tolist():
        outcome, reason, target = keys[k]
        c = int(counts[k])
        st.count(outcome, reason, iface.name, n=c)
        if target:
            st.redirect_targets[target] += c
    if len(code):  # (a batch of runts runs nothing: no entry for the program then)
        st.programs[names[iface.prog_ids[0]]]["runs"] += len(code)  # type: ignore[index]
    prog = res.prog.astype(np.int64)
    tails = int(res.tail_calls.sum())
    if decided:  # redirects name their deciding program themselves (a devmap program may have)
        rj = np.fromiter(decided, np.int64, len(decided))
        keep = np.ones(len(code), bool)
        keep[rj] = False
        pairs = np.bincount(prog[keep] * nk + code[keep], minlength=len(names) * nk)
        for j, d in decided.items():
            if d.program:
                st.programs[d.program]["decided"] += 1
                st.programs[d.program][d.outcome] += 1
            if d.result is not None:  # the devmap program's run is the one the per-packet path counts
                tails += d.result.tail_calls - int(res.tail_calls[j])
                st.helper_calls.update(d.result.helper_counts)
    else:
        pairs = np.bincount(prog * nk + code, minlength=len(names) * nk)
    for pk in np.flatnonzero(pairs).tolist():
        pid, k = divmod(pk, nk)
        c = int(pairs[pk])
        pc = st.programs[names[pid]]
        pc["decided"] += c
        pc[keys[k][0]] += c
    st.tail_calls += tails
    st.helper_calls.update(res.helper_counts)
    for e in errors.values():
        st.errors[e] += 1


def _sources(b: Batch, ok: np.ndarray, whole: bool, res: Any,
             replaced: dict[int, bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(buffer, offsets, lengths) of the bytes each packet of the batch is written with; like the
    programs' output, the buffer has GAP free bytes before each packet."""
    if whole and not replaced:
        return res.out, res.out_offset, res.out_length
    n = len(b)
    src_off = np.empty(n, np.int64)
    src_len = np.empty(n, np.int64)
    src_off[ok] = res.out_offset
    src_len[ok] = res.out_length
    parts: list[np.ndarray] = []
    base = len(res.out)
    if not whole:  # frames not run: their own bytes, gathered (each after GAP free bytes)
        short = np.flatnonzero(b.lengths < ETH_HLEN)
        sl = b.lengths[short].astype(np.int64)
        parts.append(interleave(np.zeros((len(short), GAP), np.uint8), b.data, b.offsets[short], sl))
        src_len[short] = sl
        src_off[short] = base + np.cumsum(sl + GAP) - sl
        base += int(sl.sum()) + GAP * len(short)
    for j, data in replaced.items():
        i = j if whole else int(ok[j])
        parts.append(np.zeros(GAP, np.uint8))
        parts.append(np.frombuffer(data, np.uint8))
        src_off[i], src_len[i] = base + GAP, len(data)
        base += GAP + len(data)
    extra = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    pos = len(res.out)
    if res.out_base is not None and len(res.out_base) - pos >= len(extra):  # room behind the output
        res.out_base[pos : pos + len(extra)] = extra
        return res.out_base[: pos + len(extra)], src_off, src_len
    return np.concatenate((res.out, extra)), src_off, src_len


def _log(replay: Replay, iface: Interface, b: Batch, keys: list[Key], codes: np.ndarray, ok: np.ndarray,
         whole: bool, res: Any, names: list[str], queues: np.ndarray, src_len: np.ndarray,
         decided: dict[int, Decision], errors: dict[int, str]) -> None:
    """--log: the per-packet path's record for every packet (one dict each: the slow part)."""
    pos = np.arange(len(b)) if whole else np.full(len(b), -1, np.int64)
    if not whole:
        pos[ok] = np.arange(len(ok))
    for i in range(len(b)):
        outcome, reason, target = keys[int(codes[i])]
        j = int(pos[i])
        program = "" if j < 0 else decided[j].program if j in decided else names[int(res.prog[j])]
        replay.sinks.log_packet({
            "index": b.index + i, "interface": iface.name, "queue": int(queues[i]), "outcome": outcome,
            "reason": reason, "program": program, "length": int(src_len[i]), "target": target,
            "error": errors.get(j) if j >= 0 else None})


def _count_queues(st: Stats, iface: Interface, queues: np.ndarray, n: int) -> None:
    """stats.json's per-queue counts for a batch of n packets (one bincount when there are several)."""
    if iface.spec.queues > 1:
        for q, c in enumerate(np.bincount(queues).tolist()):
            if c:
                st.queues[iface.queue_keys[q]] += c
    else:
        st.queues[iface.queue_keys[0]] += n
