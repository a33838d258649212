"""Capture I/O figures: reference workload generation, batch and streaming reads, batch writes.

    python benchmarks/bench_io.py [-n 1000000] [--keep FILE]

Prints packets per second for each step (the file is read twice: the first read warms the page cache),
in elapsed time and in CPU time (the process's: `prefetch` reads in a thread of its own, and the
caller's thread then only waits).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

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


if __name__ == "__main__":
    main()
