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

Only `--log` (one JSON line per packet) and faults/redirects work per packet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..hooks.xdp import XdpAction
from ..io.batch import Batch
from ..io.native import interleave
from ..spec import MapType
from .pipeline import ETH_HLEN, Interface
from .routing import Decision
from .sinks import MAX_TS_NS

if TYPE_CHECKING:
    from .replay import Replay

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
    st = replay.stats
    if iface.spec.queues > 1:
        for q, c in enumerate(np.bincount(queues).tolist()):
            if c:
                st.queues[iface.queue_keys[q]] += c
    else:
        st.queues[iface.queue_keys[0]] += n

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
