"""Replaying a capture through a Pipeline into an output directory (`xdpsim run`).

`replay_to_dir(spec, pcap, out, engine=, queues=, log=, seed=, budget=, progress=) -> stats dict` writes:
one pcap per outcome (sinks.py), `stats.json`, `maps.json`, `trace.log`, `events.jsonl` (ring buffer
and perf records, when any), `packets.jsonl` (with `log`). The capture is read in batches (constant
memory); every record of the file ends in exactly one outcome: packets by the programs' verdicts,
records the reader could not hand out as `error` with the damage as reason. A CaptureError part way
(the file cannot be read past some offset) ends the replay after the packets before it, is recorded in
`stats["capture"]["error"]` and re-raised once the outputs are written.

Time: `bpf_ktime_get_ns` is the packet's capture time, kept monotonic: a packet stamped before the one
before it runs at the previous time, and `clamped_timestamps` counts those.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CaptureError
from ..io import read_batches
from ..io.batch import Batch
from .config import PipelineSpec, parse_spec
from .pipeline import Pipeline, copy_records
from .sinks import Sinks
from .stats import RECORD_REASONS, Stats

BATCH = 4096
FAST_BATCH = 65536  # packets per batch of the JIT's native batches
# the JIT's first batch (each next one twice the last, up to FAST_BATCH): the programs start once the
# reader thread has read this many, not a whole batch (~7 ms at the start of a replay)
FIRST_FAST_BATCH = 8192


class Clock:
    """Capture time made monotonic for bpf_ktime_get_ns; counts the steps back it clamped."""

    def __init__(self) -> None:
        self.last = 0
        self.clamped = 0

    def times(self, ts: np.ndarray, ts_sorted: bool = False) -> np.ndarray:
        """The batch's clock; `ts` itself (not a copy: callers only read it) when already monotonic.
        `ts_sorted`: `ts` is known to be non-decreasing (the reader checked: no pass here)."""
        ts = ts.astype(np.int64, copy=False)
        if not len(ts):
            return ts
        if ts[0] >= self.last and (ts_sorted or bool((ts[1:] >= ts[:-1]).all())):  # the usual case
            self.last = int(ts[-1])
            return ts
        mono = np.maximum.accumulate(np.maximum(ts, self.last))
        prev = np.concatenate(([self.last], mono[:-1]))
        self.clamped += int(np.count_nonzero(ts < prev))
        self.last = int(mono[-1])
        return mono


class Replay:
    """One replay of one capture through a pipeline into sinks."""

    def __init__(self, pipeline: Pipeline, sinks: Sinks, *, log: bool = False, fast: bool = True):
        self.p = pipeline
        self.sinks = sinks
        self.log = log
        self.stats = Stats(engine=pipeline.engine)
        self.clock = Clock()
        self.fast = fast and pipeline.engine == "jit"
        self.stopped_early = False
        if self.fast:  # the reader's and the writer's compiled loops (disk-cached) loaded now, like the
            # programs, not by their threads at the first batch while the programs wait
            from ..io.batch import load_code
            from .writev import available

            load_code()
            available()

    def run(self, path: str | os.PathLike[str], progress: Any = None,
            max_packets: int | None = None) -> Stats:
        """Replay the capture at `path`; `max_packets` stops after about that many (whole batches), for
        tests over large corpora (then stats.json's "capture" says `stopped_early`)."""
        start = time.perf_counter()
        reader = None
        error: CaptureError | None = None
        try:
            reader = (read_batches(path, FAST_BATCH, prefetch=True, first=FIRST_FAST_BATCH) if self.fast
                      else read_batches(path, BATCH))
            for batch in reader:
                self.batch(batch)
                if progress is not None:
                    progress(reader.offset)
                if max_packets is not None and self.stats.packets >= max_packets:
                    self.stopped_early = True
                    break
        except CaptureError as e:
            error = e
        drain = getattr(self.sinks, "drain", None)
        if drain is not None:
            drain()  # (the clock stops once every packet is in its file)
        self.stats.seconds = time.perf_counter() - start
        self.stats.clamped_timestamps = self.clock.clamped
        self._account_reader(reader, error)
        if error is not None:
            raise error
        return self.stats

    def _account_reader(self, reader: Any, error: CaptureError | None) -> None:
        """Records the reader could not hand out, each its own error outcome; the capture's damage."""
        cap: dict[str, Any] = {"path": str(getattr(reader, "path", "")), "warnings": []}
        if reader is not None:
            skipped = reader.skipped
            for kind, reason in RECORD_REASONS.items():
                n = min(reader.warnings.counts.get(kind, 0), skipped)
                if n:
                    self.stats.count("error", reason, n=n)
                    skipped -= n
            if skipped:
                self.stats.count("error", "damaged_record", n=skipped)
            cap.update(records=reader.records, packets=reader.packets, skipped=reader.skipped,
                       warning_counts=dict(reader.warnings.counts))
            cap["warnings"] = [{"offset": w.offset, "kind": w.kind, "message": str(w)}
                               for w in reader.warnings[:100]]
        if self.stopped_early:
            cap["stopped_early"] = True
        if error is not None:
            cap["error"] = str(error)
            cap["error_offset"] = error.offset
        self.stats.capture = cap

    # ------------------------------------------------------------------ batches

    def batch(self, b: Batch) -> None:
        times = self.clock.times(b.ts_ns, b.ts_sorted)
        if not self.fast:
            for i in range(len(b)):
                self.packet(b, i, int(times[i]))
            return
        from .fastpath import jit_batch

        # runs of packets from one capture interface: each run is one native batch where it can be
        if b.one_interface:  # (the reader knows: no numpy passes here, between native batches)
            runs: list[tuple[int, int]] = [(0, len(b))]
        else:
            cut = np.flatnonzero(np.diff(b.interface)) + 1
            runs = list(zip(np.concatenate(([0], cut)).tolist(), np.concatenate((cut, [len(b)])).tolist(),
                            strict=True))
        for s, e in runs:
            iface = self.p.interface_for(int(b.interface[s]))
            run = b if (s, e) == (0, len(b)) else _slice(b, s, e)
            if iface is not None and jit_batch(self, iface, run, times[s:e]):
                continue
            for i in range(e - s):
                self.packet(run, i, int(times[s + i]))

    def packet(self, b: Batch, i: int, now_ns: int) -> None:
        p = self.p
        data = b.packet(i)
        index = b.index + i
        ts = int(b.ts_ns[i])
        iface = p.interface_for(int(b.interface[i]))
        if iface is None:
            self.stats.count("drop", "no_interface")
            self.sinks.write("unmapped", "drop", None, data, ts)  # its own directory: no interface's
            if self.log:
                self.sinks.log_packet({"index": index, "interface": None, "capture_interface":
                                       int(b.interface[i]), "outcome": "drop", "reason": "no_interface",
                                       "length": len(data)})
            return
        queue = iface.rss.queue(data) if iface.spec.queues > 1 else 0
        d = p.process(iface, data, now_ns, queue)
        st = self.stats
        st.decision(d, iface.name)
        st.queues[iface.queue_keys[queue]] += 1
        r = d.result
        if r is not None:
            st.tail_calls += r.tail_calls
            st.helper_calls.update(r.helper_counts)
            if r.trace:
                self.sinks.trace(r.trace)
        self.sinks.write(iface.name, d.outcome, d.target, d.data, ts)
        if d.stages or d.clones:
            from .tc_stage import account_extra

            account_extra(self, d, ts)
        events = p.backend.events()
        for e in events:
            e["packet"] = index
            self.sinks.event(e)
        if self.log:
            self.sinks.log_packet({"index": index, "interface": iface.name, "queue": queue,
                                   "outcome": d.outcome,
                                   "reason": d.reason, "program": d.program, "length": len(d.data),
                                   "target": d.target, "error": d.error})
            for rec in copy_records(d, index):  # its broadcast / clone copies, one line each
                self.sinks.log_packet(rec)


def _slice(b: Batch, s: int, e: int) -> Batch:
    """Packets s..e of a batch (views: no bytes are copied)."""
    return Batch(b.data, b.offsets[s:e], b.lengths[s:e], b.ts_ns[s:e], b.interface[s:e], b.index + s,
                 b.orig_lens[s:e], b.records)


def replay_to_dir(spec: str | PipelineSpec, pcap: str | os.PathLike[str], out: Path, *, engine: str = "jit",
                  queues: int | None = None, log: bool = False, seed: int = 0, budget: int | None = None,
                  progress: bool = False, fast: bool = True) -> dict:
    """Replay `pcap` through SPEC (object or pipeline file) into directory `out`; returns stats.json.
    `fast=False` keeps the JIT on the per-packet path (the reference the batch path is tested against)."""
    pspec = parse_spec(spec, queues=queues) if isinstance(spec, str) else spec
    out = Path(out)
    with Pipeline(pspec, engine=engine, seed=seed, budget=budget) as pipeline:
        sinks = Sinks(out, per_interface=len(pipeline.interfaces) > 1)
        replay = Replay(pipeline, sinks, log=log, fast=fast)
        error: CaptureError | None = None
        bar = _progress(pcap) if progress else nullcontext(None)
        try:
            with bar as update:
                replay.run(pcap, progress=update)
            from .tc_stage import feed_hosts

            feed_hosts(replay)  # host_pcap: packets sent by the host, through TC egress
        except CaptureError as e:
            error = e
        finally:
            sinks.close()
        stats = replay.stats.to_dict()
        sinks.write_json("stats.json", stats)
        sinks.write_json("maps.json", pipeline.maps_json())
    if error is not None:
        error.stats = stats  # type: ignore[attr-defined] - the CLI prints the summary before the error
        raise error
    return stats


class _progress:
    """A rich progress bar over the capture's bytes (only on a terminal: the CLI decides)."""

    def __init__(self, pcap: str | os.PathLike[str]):
        self.total = max(os.path.getsize(pcap), 1) if os.path.exists(pcap) else 1

    def __enter__(self) -> Any:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

        self.bar = Progress(TextColumn("replaying"), BarColumn(), TransferSpeedColumn(),
                            TimeRemainingColumn(), transient=True)
        self.bar.__enter__()
        self.task = self.bar.add_task("replay", total=self.total)
        return lambda offset: self.bar.update(self.task, completed=offset)

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)
