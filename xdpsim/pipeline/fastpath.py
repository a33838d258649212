"""The JIT's fast path for a replay: one native `run_batch` call per batch (engines/jit_batch.py).

Used when a batch's packets all enter one interface whose chain is a single program (several rx queues
are fine: RSS picks each packet's queue, and the native loop its CPU);
other batches go packet by packet. The verdicts are routed as the per-packet path routes them (the
common actions with numpy, redirects and faults one by one through the same Pipeline.redirect and
routing code), and each sink receives its packets in input order (`write_batch` when none of them
was rewritten after the program, otherwise one write per packet).

What this path cannot see, and stats.json therefore lacks for it: the number of successful tail calls
and the program that returned after them (the entry program is counted as the deciding one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..hooks.xdp import XdpAction
from ..io.batch import Batch
from .pipeline import ETH_HLEN, Interface
from .routing import Decision
from .sinks import MAX_TS_NS

if TYPE_CHECKING:
    from .replay import Replay

# sink keys of the common verdicts (decided with numpy)
_VECTOR = {
    int(XdpAction.XDP_PASS): ("pass", "xdp_pass"),
    int(XdpAction.XDP_TX): ("tx", "xdp_tx"),
    int(XdpAction.XDP_DROP): ("drop", "xdp_drop"),
}


def jit_batch(replay: Replay, iface: Interface, b: Batch, times: np.ndarray) -> bool:
    """Run batch `b` natively through `iface`'s single program; False when this path does not apply."""
    p = replay.p
    if len(iface.chain) != 1 or not iface.prog_ids:
        return False
    backend = p.backend
    engine = backend.engine  # type: ignore[union-attr]
    if not hasattr(engine, "run_batch"):
        return False
    n = len(b)
    lengths = b.lengths.astype(np.int64)
    ok = np.flatnonzero(lengths >= ETH_HLEN)
    queues = np.zeros(n, np.uint32)
    if iface.spec.queues > 1:  # RSS in Python: the hash of each frame's flow
        rss = iface.rss
        queues[:] = [rss.queue(b.packet(i)) for i in range(n)]
    res = engine.run_batch(backend.runtime, iface.prog_ids[0], b.data, b.offsets[ok], lengths[ok],  # type: ignore[union-attr]
                           times[ok].astype(np.uint64), queues[ok], ifindex=iface.ifindex,
                           budget=backend.budget)  # type: ignore[union-attr]
    prog = iface.chain[0].program
    st = replay.stats
    # per packet of the batch: sink key index into `keys`, and replaced bytes where routing rewrote them
    keys: list[tuple[str, str, str | None]] = []
    key_of: dict[tuple[str, str, str | None], int] = {}

    def key(outcome: str, reason: str, target: str | None = None) -> int:
        k = (outcome, reason, target)
        if k not in key_of:
            key_of[k] = len(keys)
            keys.append(k)
        return key_of[k]

    sink = np.full(n, -1, np.int32)
    replaced: dict[int, bytes] = {}
    errors: dict[int, str] = {}
    sink[lengths < ETH_HLEN] = key("drop", "frame_too_short")
    action = np.asarray(res.action)
    fault = np.asarray(res.fault) != 0
    unknown = ~fault & ((np.asarray(res.retval) & 0xFFFF_FFFF) > XdpAction.XDP_REDIRECT)
    # an action in the program's own chain_call_actions runs off the end of the chain: XDP_PASS
    # (dispatcher.run_chain); a fault or an unknown action ends the chain as it is
    chained = ~fault & ~unknown & ((iface.chain[0].actions_mask >> action.astype(np.int64)) & 1 != 0)
    action = np.where(chained, np.uint8(XdpAction.XDP_PASS), action)
    sink[ok[chained & (np.asarray(res.action) != XdpAction.XDP_PASS)]] = key("pass", "chain_end")
    chained_other = chained & (np.asarray(res.action) != XdpAction.XDP_PASS)
    for act, (outcome, reason) in _VECTOR.items():
        sink[ok[(action == act) & ~chained_other]] = key(outcome, reason)
    aborted = (action == XdpAction.XDP_ABORTED) & ~fault
    sink[ok[aborted & ~unknown]] = key("aborted", "xdp_aborted")
    sink[ok[unknown]] = key("aborted", "unknown_action")
    for j in np.flatnonzero(np.asarray(res.fault)).tolist():
        err = res.errors.get(j)
        i = int(ok[j])
        if err is not None and err.kind == "frame":
            sink[i] = key("drop", "frame_too_long")
        else:
            sink[i] = key("error", "program_fault")
        errors[i] = str(err) if err is not None else "program fault"
    targets: dict[int, str] = {}
    for j in np.flatnonzero((action == XdpAction.XDP_REDIRECT) & ~fault).tolist():
        i = int(ok[j])
        data = res.packet(j)
        d = p.redirect(iface, Decision("redirect", "", data, program=prog), res.redirect_target(j),
                       int(queues[i]), int(times[i]))
        sink[i] = key(d.outcome, d.reason, d.target)
        if d.data is not data:
            replaced[i] = d.data
        if d.error:
            errors[i] = d.error
        if d.target:
            targets[i] = d.target
    assert (sink >= 0).all(), "fast path: a packet without an outcome"

    # statistics
    counts = np.bincount(sink, minlength=len(keys))
    for k, (outcome, reason, target) in enumerate(keys):
        c = int(counts[k])
        if not c:
            continue
        st.count(outcome, reason, iface.name, n=c)
        if target:
            st.redirect_targets[target] += c
        if reason != "frame_too_short":
            st.programs[prog]["decided"] += c
            st.programs[prog][outcome] += c
    st.programs[prog]["runs"] += len(ok)
    st.note("JIT batch path: successful tail calls are not counted and the entry program is credited "
            "with every verdict (the native loop does not report which program returned)")
    for q, c in enumerate(np.bincount(queues, minlength=1).tolist()):
        if c:
            st.queues[f"{iface.name}:{q}"] += c
    st.helper_calls.update(res.helper_counts)
    for e in errors.values():
        st.errors[e] += 1

    # outputs, each sink in input order
    ts = np.clip(b.ts_ns.astype(np.int64), 0, MAX_TS_NS)
    pos = np.full(n, -1, np.int64)
    pos[ok] = np.arange(len(ok))
    files: dict[tuple[str, str | None], list[int]] = {}
    for k, (outcome, _reason, target) in enumerate(keys):
        files.setdefault((outcome, target), []).append(k)
    for (outcome, target), ks in files.items():
        idx = np.flatnonzero(np.isin(sink, ks))  # one file, several reasons: still input order
        if not len(idx):
            continue
        w = replay.sinks.writer(iface.name, outcome, target)
        j = pos[idx]
        if (j >= 0).all() and not (replaced and replaced.keys() & set(idx.tolist())):
            w.write_batch(res.out, res.out_offset[j], res.out_length[j], ts[idx])
            continue
        for i in idx.tolist():
            w.write(_bytes(i, b, res, pos, replaced), int(ts[i]))
    if res.traces:
        for j in sorted(res.traces):
            replay.sinks.trace(res.traces[j])
    for e in backend.events():
        replay.sinks.event(e)
    if replay.log:
        for i in range(n):
            outcome, reason, target = keys[int(sink[i])]
            j = int(pos[i])
            replay.sinks.log_packet({
                "index": b.index + i, "interface": iface.name, "queue": int(queues[i]), "outcome": outcome,
                "reason": reason,
                "program": prog if j >= 0 else "", "length": len(_bytes(i, b, res, pos, replaced)),
                "target": target, "error": errors.get(i)})
    return True


def _bytes(i: int, b: Batch, res: object, pos: np.ndarray, replaced: dict[int, bytes]) -> bytes:
    if i in replaced:
        return replaced[i]
    j = int(pos[i])
    return res.packet(j) if j >= 0 else b.packet(i)  # type: ignore[attr-defined]
