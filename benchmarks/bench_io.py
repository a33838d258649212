"""Capture I/O figures: reference workload generation, batch and streaming reads, batch writes.

    python benchmarks/bench_io.py [-n 1000000] [--keep FILE]

Prints packets per second for each step (the file is read twice: the first read warms the page cache),
in elapsed time and in CPU time (the process's: `prefetch` reads in a thread of its own, and the
caller's thread then only waits). Last, the sink writer's CPU time (`sink writer`): the streams a replay
passing 94% of the packets gives it (runs of consecutive records of the read batches, in place), written
by sinks._write_all (long pieces by reference in writevs, short ones copied) and by the plain gather
(_write_gathered), alternately, into files whose pages the previous round gave back.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from xdpsim.io import PcapngReader, PcapngWriter, PcapReader, PcapWriter, read_batches
from xdpsim.io.workload import generate_reference


def rate(n: int, seconds: float, cpu: float | None = None) -> str:
    out = f"{n / seconds / 1e6:6.2f} Mpps ({seconds:.2f} s)"
    return out if cpu is None else out + f", {n / cpu / 1e6:6.2f} Mpps per CPU second"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=1_000_000)
    ap.add_argument("--keep", help="write the workload here and keep it")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or os.path.join(tmp, "ref.pcap")
        t = time.perf_counter()
        generate_reference(path, args.n)
        dt = time.perf_counter() - t
        print(f"generate_reference      {rate(args.n, dt)}  {os.path.getsize(path)} bytes")
        for native, ahead in ((True, False), (True, False), (True, True), (False, False)):
            t, c = time.perf_counter(), time.process_time()
            n = sum(len(b) for b in read_batches(path, 65536, native=native, prefetch=ahead))
            walk = ("llvmlite walk" if native else "python walk ") + (", prefetch" if ahead else "")
            print(f"read_batches ({walk})  {rate(n, time.perf_counter() - t, time.process_time() - c)}")
        t = time.perf_counter()
        n = sum(1 for _ in PcapReader(path))
        print(f"PcapReader (streaming)  {rate(n, time.perf_counter() - t)}")
        t = time.perf_counter()
        with PcapWriter(os.path.join(tmp, "copy.pcap")) as w:
            for b in read_batches(path, 65536):
                w.write_batch(b.data, b.offsets, b.lengths, b.ts_ns, b.orig_lens)
        print(f"read_batches + write_batch copy  {rate(n, time.perf_counter() - t)}")
        ng = os.path.join(tmp, "ref.pcapng")
        with PcapngWriter(ng) as w:
            w.add_interface(name="eth0")
            w.add_interface(name="eth1")
            for p in PcapReader(path):
                w.write(p.data, p.ts_ns, interface=p.index & 1, orig_len=p.orig_len)
        for _ in range(2):
            t = time.perf_counter()
            n = sum(len(b) for b in read_batches(ng, 65536))
            print(f"read_batches pcapng     {rate(n, time.perf_counter() - t)}")
        t = time.perf_counter()
        n = sum(1 for _ in PcapngReader(ng))
        print(f"PcapngReader (streaming)  {rate(n, time.perf_counter() - t)}")
        sink_writer(path, tmp)


def sink_writer(path: str, tmp: str, rounds: int = 5, passed: float = 0.94) -> None:
    """CPU seconds (this thread's) of writing a replay's sink streams: pass.pcap gets the runs of passed
    records (each run one piece: adjacent records in the read buffer), drop.pcap the runs of the others."""
    from xdpsim.pipeline import sinks

    rng = np.random.default_rng(1)
    streams = []  # (batch, pass pieces, drop pieces): the batches stay referenced, so the pieces stay valid
    for b in read_batches(path, 65536):
        if not b.records:
            return
        starts = b.data.ctypes.data + b.offsets - 16
        ends = starts + 16 + b.lengths
        keep = rng.random(len(b)) < passed
        cut = np.flatnonzero(np.diff(keep.astype(np.int8))) + 1  # where runs of kept / dropped records change
        first, last = np.concatenate([[0], cut]), np.concatenate([cut, [len(b)]]) - 1
        runs = np.stack([starts[first], ends[last] - starts[first]], axis=1).astype(np.uint64)
        streams.append((b, runs[keep[first]], runs[~keep[first]]))
    spent: dict[str, list[float]] = {"writev": [], "gather": []}
    for _ in range(rounds + 1):  # (the first round warms up: fresh page-cache pages cost several times more)
        for how, write in (("writev", sinks._write_all), ("gather", sinks._write_gathered)):
            fds = [os.open(os.path.join(tmp, f"sink{k}.pcap"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                   for k in range(2)]
            t = time.thread_time()
            for _b, *pieces in streams:
                for fd, iov in zip(fds, pieces, strict=True):
                    write(fd, iov.copy(), len(iov))
            spent[how].append(time.thread_time() - t)
            for fd in fds:
                os.close(fd)
    n = sum(len(s[0]) for s in streams)
    for how, ts in spent.items():
        ts = sorted(ts[1:])
        print(f"sink writer ({how:6s}) {ts[len(ts) // 2]:.3f} CPU s per {n:,} packets "
              f"(median of {len(ts)}; {ts[0]:.3f}-{ts[-1]:.3f})")


if __name__ == "__main__":
    main()
