"""Whole-replay throughput: `xdpsim run` of the reference workload through programs/parser.o.

    python benchmarks/bench_replay.py [-n 1000000] [--kernel-packets 100000] [--interp-packets 5000]

Generates DESIGN.md's reference workload (xdpsim.io.workload, deterministic) into a temporary directory
and replays it, capture to sinks (pcaps, stats.json, maps.json), with:

- `jit`: the whole capture (the batch path: one native call per 65,536 packets);
- `kernel`: the running kernel, one BPF_PROG_TEST_RUN per packet, on the first `--kernel-packets`
  packets (where this process may load BPF programs; skipped with the reason elsewhere), and
  `kernel-raw`: the same test runs in a bare loop (no routing, no sinks: the kernel side's floor);
- `interp`: the reference interpreter on the first `--interp-packets` packets;
- `jit` again on the kernel's subset, so that memory at two capture sizes can be compared.

Each replay runs in its own process; packets/s counts the replay loop (objects loaded and programs
compiled before; every record in its sink file at the end) in elapsed time, "per CPU second" the same
loop in the CPU time of the whole process (every thread: the JIT's replay reads the capture ahead and
writes the sinks in threads of their own, beside the one running the programs), "main thread" in that
thread's CPU time alone (the figure elapsed time reaches when the other threads have a core of their
own), wall seconds the whole command. `--repeat N` runs each replay N times and prints every run (the
machine may be shared: the spread says how noisy the figures are). Peak memory: VmHWM (peak resident
set; it includes the memory-mapped capture's file pages, which the kernel can drop at will) and the
peak of RssAnon (anonymous memory, sampled every 10 ms: what the replay itself holds, constant in the
capture's size).

The programs run as tier-2 code from the first packet (XDPSIM_JIT_TIER=2 unless set: the loop measures
the optimised code, not tier 1 while tier 2 builds in a background thread); each JIT row says which tier
ran. `reader`/`writer` are the CPU seconds of the read-ahead and sink-writer threads. `--floor` also
measures what plain reading and writing of the capture's bytes costs this machine (os.preadv into one
reused 16 MiB buffer; os.write of 4 MiB pieces into a new file, twice: the first time into page-cache
pages the kernel takes fresh, the second into the ones the deleted first file gave back), the floor under
the replay's reader and writer threads. `--direct` also runs `jit-direct` after each JIT run of the whole
workload: the same replay with the sink files' whole pages written with O_DIRECT (XDPSIM_DIRECT_WRITES=1:
no copy into the page cache, but each write waits for the device). `--one-core` also runs `jit-1core`
after each JIT run of the whole workload: the same replay with the whole process (its reader and writer
threads too) held on one CPU (sched_setaffinity): its packets/s is what one core does end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARSER = ROOT / "programs" / "parser.o"


def _status_kb(pid: int | str, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def one(engine: str, pcap: str, out: str) -> None:
    """Child process: one replay; prints its figures as JSON."""
    sys.path.insert(0, str(ROOT))
    from xdpsim.pipeline.replay import replay_to_dir

    t = time.perf_counter()
    if engine == "kernel-raw":
        print(json.dumps(kernel_raw(pcap) | {"hwm_kb": _status_kb("self", "VmHWM")}))
        return
    cpu = _CpuClock()
    stats = replay_to_dir(str(PARSER), pcap, Path(out), engine=engine)
    wall = time.perf_counter() - t
    print(json.dumps({"packets": stats["packets"], "seconds": stats["seconds"], "wall": wall,
                      "cpu": cpu.process, "main": cpu.main, "threads": cpu.threads, "tiers": cpu.tiers,
                      "outcomes": stats["outcomes"], "hwm_kb": _status_kb("self", "VmHWM")}))


class _CpuClock:
    """CPU time spent in the replay loop (Replay.run: capture to sinks), the kernel's time reading the
    capture and writing the sinks included: `process` counts every thread of the process, `main` the
    thread that runs the programs. On a machine shared with other work, wall time also counts the time
    the replay waited for a core."""

    def __init__(self) -> None:
        from xdpsim.io.prefetch import Prefetch
        from xdpsim.pipeline.replay import Replay
        from xdpsim.pipeline.sinks import RecordBuffers

        self.process = self.main = 0.0
        self.threads: dict[str, float] = {}
        self.tiers: list[int] = []  # tier of each program's code when the loop started, then at its end
        run = Replay.run

        def timed(replay: Replay, *a: object, **kw: object) -> object:
            self.tiers = _tiers(replay)
            t0, p0 = time.thread_time(), time.process_time()
            try:
                return run(replay, *a, **kw)  # type: ignore[arg-type]
            finally:
                self.main += time.thread_time() - t0
                self.process += time.process_time() - p0
                self.tiers += _tiers(replay)

        Replay.run = timed  # type: ignore[method-assign]
        self._thread_clock(Prefetch, "_produce", "reader")
        self._thread_clock(RecordBuffers, "_run", "writer")

    def _thread_clock(self, cls: type, name: str, label: str) -> None:
        """CPU time of the thread running cls.name (its whole body)."""
        body = getattr(cls, name)

        def timed(obj: object) -> None:
            t0 = time.thread_time()
            try:
                body(obj)
            finally:
                self.threads[label] = self.threads.get(label, 0.0) + time.thread_time() - t0

        setattr(cls, name, timed)


def _tiers(replay: object) -> list[int]:
    """The JIT tier of each compiled program of the replay's pipeline (empty for other engines)."""
    backend = getattr(getattr(replay, "p", None), "backend", None)
    engine, runtime = getattr(backend, "engine", None), getattr(backend, "runtime", None)
    if engine is None or runtime is None or not hasattr(engine, "_rj"):
        return []
    rj = engine._rj(runtime)  # noqa: SLF001 - a benchmark looking inside
    return [int(getattr(c, "tier", 0)) for c in rj.compiled if c is not None]


def io_floor(pcap: str, out_dir: Path) -> dict:
    """CPU seconds of reading the capture's bytes and of writing them to a new file (twice: fresh page
    cache, then recycled), in this thread."""
    import numpy as np

    buf = np.empty(16 << 20, np.uint8)
    view = memoryview(buf)
    fd = os.open(pcap, os.O_RDONLY)
    try:
        t0, done = time.thread_time(), 0
        while got := os.preadv(fd, [view], done):
            done += got
        read = time.thread_time() - t0
        writes = []
        for k in range(2):
            path = out_dir / f"floor-{k}.bin"
            out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            pos, spent = 0, 0.0
            try:
                while got := os.preadv(fd, [view[: 4 << 20]], pos):
                    t0 = time.thread_time()
                    piece = view[:got]
                    while len(piece):
                        piece = piece[os.write(out, piece) :]
                    spent += time.thread_time() - t0
                    pos += got
            finally:
                os.close(out)
            writes.append(spent)
            if k == 0:
                os.unlink(path)  # (its pages go back to the kernel, for the second write to reuse)
    finally:
        os.close(fd)
    return {"bytes": done, "read": read, "write_fresh": writes[0], "write_recycled": writes[1]}


def kernel_raw(pcap: str) -> dict:
    """The floor of the kernel's side: BPF_PROG_TEST_RUN per packet in a bare loop (no routing, no
    sinks, frames in memory), for comparison with the full kernel-engine replay."""
    from collections import Counter

    from xdpsim.engines.kernel import KernelCollection
    from xdpsim.io import open_capture
    from xdpsim.loader import load_object

    frames = [p.data for p in open_capture(pcap) if len(p.data) >= 14]
    names = {0: "aborted", 1: "drop", 2: "pass", 3: "tx", 4: "redirect"}
    with KernelCollection(load_object(PARSER)) as coll:
        t = time.perf_counter()
        acts = Counter(coll.run_xdp("packet_parser", f).retval for f in frames)
        seconds = time.perf_counter() - t
    return {"packets": len(frames), "seconds": seconds, "wall": seconds,
            "outcomes": {names.get(a, str(a)): n for a, n in acts.items()}}


def measure(engine: str, pcap: Path, out: Path) -> dict:
    """Run one replay in a child, sampling its anonymous memory ("jit-direct": the JIT's replay with
    XDPSIM_DIRECT_WRITES=1; "jit-1core": the JIT's replay with every thread held on one CPU)."""
    env = dict(os.environ)
    pin = None
    if engine == "jit-direct":
        engine, env["XDPSIM_DIRECT_WRITES"] = "jit", "1"
    elif engine == "jit-1core":
        engine, cpu = "jit", min(os.sched_getaffinity(0))
        pin = lambda: os.sched_setaffinity(0, {cpu})  # noqa: E731 - in the child, before it runs
    proc = subprocess.Popen([sys.executable, __file__, "--one", engine, str(pcap), str(out)],
                            stdout=subprocess.PIPE, text=True, env=env, preexec_fn=pin)
    peak_anon = 0
    while proc.poll() is None:
        peak_anon = max(peak_anon, _status_kb(proc.pid, "RssAnon"))
        time.sleep(0.01)
    text = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"{engine} replay failed (exit {proc.returncode})")
    res = json.loads(text.strip().splitlines()[-1])
    res["anon_kb"] = peak_anon
    return res


def subset(src: Path, dst: Path, n: int) -> int:
    """The first `n` packets of `src` as a pcap (streamed)."""
    from xdpsim.io import PcapWriter, open_capture

    count = 0
    with PcapWriter(dst) as w:
        for p in open_capture(src):
            if count >= n:
                break
            w.write(p.data, p.ts_ns, p.orig_len)
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="packets in the workload (default 1,000,000)")
    ap.add_argument("--kernel-packets", type=int, default=100_000, help="packets replayed through the kernel")
    ap.add_argument("--interp-packets", type=int, default=5_000, help="packets replayed by the interpreter")
    ap.add_argument("--jit-only", action="store_true", help="only the JIT's replay of the whole workload")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each replay (default 1)")
    ap.add_argument("--floor", action="store_true", help="also measure plain reading and writing of the "
                    "capture's bytes (the I/O floor)")
    ap.add_argument("--pcap", help="replay this capture as the workload instead of generating one")
    ap.add_argument("--direct", action="store_true", help="also replay the whole workload with sink "
                    "files written with O_DIRECT (XDPSIM_DIRECT_WRITES=1), each run after a plain one")
    ap.add_argument("--one-core", action="store_true", help="also replay the whole workload with the "
                    "process held on one CPU (every thread), each run after a plain one")
    ap.add_argument("--one", nargs=3, metavar=("ENGINE", "PCAP", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        one(*args.one)
        return 0
    sys.path.insert(0, str(ROOT))
    from xdpsim.io.workload import generate_reference
    from xdpsim.kernel.bpf import kernel_available

    with tempfile.TemporaryDirectory(prefix="xdpsim-bench-") as tmp:
        d = Path(tmp)
        ref = Path(args.pcap) if args.pcap else d / "reference.pcap"
        t = time.perf_counter()
        if not args.pcap:
            generate_reference(ref, args.n)
        print(f"workload: {ref}, {ref.stat().st_size / 1e6:.0f} MB, generated in "
              f"{time.perf_counter() - t:.1f} s")
        runs: list[tuple[str, Path]] = [("jit", ref)]
        ok, ksub = False, 0
        if not args.jit_only:
            small = d / "subset.pcap"
            ksub = subset(ref, small, args.kernel_packets)
            ok, why = kernel_available()
            if ok:
                runs += [("kernel", small), ("kernel-raw", small)]
            else:
                print(f"kernel: skipped ({why})")
            interp = d / "interp.pcap"
            subset(ref, interp, args.interp_packets)
            runs += [("interp", interp), ("jit", small)]
        rows = []
        plan = [(engine, pcap, k) for engine, pcap in runs for k in range(args.repeat)]
        extras = [e for e, on in (("jit-direct", args.direct), ("jit-1core", args.one_core)) if on]
        if extras:  # alternated with the plain runs of the whole workload
            plan = [x for e, p, k in plan
                    for x in [(e, p, k)] + [(extra, p, k) for extra in extras if p == ref and e == "jit"]]
        for engine, pcap, k in plan:
            res = measure(engine, pcap, d / f"out-{engine}-{pcap.stem}-{k}")
            if k == 0:
                rows.append((engine, res))
            pps = res["packets"] / res["seconds"]
            cpu = f"{res['packets'] / res['cpu']:>11,.0f}" if res.get("cpu") else f"{'-':>11}"
            main = f"{res['packets'] / res['main']:>11,.0f}" if res.get("main") else f"{'-':>11}"
            extra = ""
            if res.get("tiers"):
                th = res.get("threads", {})
                extra = (f"; CPU s main {res['main']:.3f}, reader {th.get('reader', 0):.3f}, writer "
                         f"{th.get('writer', 0):.3f}; tiers {res['tiers']}")
            print(f"  {engine:10} {res['packets']:>9,} packets: {pps:>11,.0f} packets/s "
                  f"({cpu} per CPU second, {main} per main-thread CPU second; wall {res['wall']:.1f} s),"
                  f" peak RSS {res['hwm_kb'] / 1024:.0f} MB, peak anonymous "
                  f"{res['anon_kb'] / 1024:.0f} MB{extra}", flush=True)
            shutil.rmtree(d / f"out-{engine}-{pcap.stem}-{k}", ignore_errors=True)
        if args.floor:
            for _ in range(args.repeat):
                f = io_floor(str(ref), d)
                print(f"  I/O floor, {f['bytes'] / 1e6:.0f} MB: read {f['read']:.3f} CPU s, write "
                      f"{f['write_fresh']:.3f} (fresh page cache) / {f['write_recycled']:.3f} (recycled)",
                      flush=True)
        jit = rows[0][1]["packets"] / rows[0][1]["seconds"]
        print("\nside by side (whole replay, capture to sinks, packets/s):")
        for engine, res in rows:
            pps = res["packets"] / res["seconds"]
            print(f"  {engine:10} on {res['packets']:>9,}: {pps:>11,.0f}   "
                  f"jit(full) / this = {jit / pps:8.2f}x")
        if ok:
            outcomes = {e: r["outcomes"] for e, r in rows if r["packets"] == ksub and e != "kernel-raw"}
            same = len({json.dumps(o, sort_keys=True) for o in outcomes.values()}) == 1
            print(f"kernel and jit outcomes on the {ksub:,}-packet subset {'agree' if same else 'DIFFER'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    os.environ.setdefault("XDPSIM_JIT_TIER", "2")  # (children inherit it: see the module docstring)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # (as `xdpsim run` does: nothing here uses BLAS)
    sys.exit(main())
