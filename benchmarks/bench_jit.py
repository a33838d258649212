"""JIT benchmark: program time per packet (JIT vs the kernel's BPF_PROG_TEST_RUN repeat mode vs the
interpreter), batch replay throughput, and compile time per program in programs/.

    python benchmarks/bench_jit.py [--repeat N] [--trials N] [--batch N] [--no-kernel] [--pcap FILE]

Figures are measured side by side in one run on this machine (see DESIGN.md "Performance method"):
- "kernel ns": BPF_PROG_TEST_RUN with `repeat` (the kernel's own JIT, its average per run); per
  packet kind `--trials` kernel and JIT measurements alternate and the fastest of each is shown;
- "JIT ns": `jit_batch.time_repeat` -- the same program run `repeat` times on one packet in native
  code, resetting the context per run as the kernel's repeat loop does (no packet copies), timed in
  thread CPU time (the kernel's timer also stops while its loop reschedules);
- "interp us": `run_xdp` with the interpreter, one Python call per packet;
- "mixed batch": the reference mix through `JitEngine.run_batch` (packets copied in and out, stack and
  frame zeroed per packet), and through the kernel one BPF_PROG_TEST_RUN per packet; "sink mode": the
  loop as `xdpsim run` uses it (jit.batch F_SINK: pcap records to file buffers, records in place, the
  chain run on the packets where they lie when it may), over the mix laid out as pcap records, or over
  the first `--batch` records of `--pcap FILE` (held in memory: the loop's figure without the replay's
  reader and writer threads; the packets are cold, as in a replay, once they exceed the caches);
- compile, per program: tier 1 (compact IR, level-0 machine code, loaded: what a run waits for),
  tier 2 (IR with proofs, O2, level-3 code: built in the background and swapped in between runs) and
  cached (the tier-2 object from the disk cache); benchmarks/bench_compile.py splits the phases.
The kernel columns need root and a kernel that allows BPF_PROG_TEST_RUN; otherwise they say why.
"""

from __future__ import annotations

import argparse
import os
import platform
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import xdpsim  # noqa: E402
from xdpsim.engines.interp import Interpreter  # noqa: E402
from xdpsim.engines.jit_batch import time_repeat  # noqa: E402
from xdpsim.hooks.xdp import run_xdp  # noqa: E402


def eth_ipv4(proto: int, l4: bytes) -> bytes:
    total = 20 + len(l4)
    ip = (
        bytes([0x45, 0])
        + total.to_bytes(2, "big")
        + bytes(4)
        + bytes([64, proto, 0, 0])
        + bytes([10, 0, 0, 1, 10, 0, 0, 2])
    )
    return bytes.fromhex("ffffffffffff020000000001") + b"\x08\x00" + ip + l4


def tcp(dport: int) -> bytes:
    return (40000).to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes(8) + bytes([0x50, 0x02]) + bytes(6)


def udp(dport: int, payload: bytes = b"x" * 18) -> bytes:
    return (
        (40000).to_bytes(2, "big")
        + dport.to_bytes(2, "big")
        + (8 + len(payload)).to_bytes(2, "big")
        + bytes(2)
        + payload
    )


KINDS = {
    "tcp": eth_ipv4(6, tcp(80)),
    "udp": eth_ipv4(17, udp(53)),
    "icmp": eth_ipv4(1, bytes([8, 0, 0, 0, 0, 1, 0, 1]) + b"ping" * 8),
    "ipv6-tcp": bytes.fromhex("ffffffffffff020000000001")
    + b"\x86\xdd"
    + bytes([0x60, 0, 0, 0, 0, 20, 6, 64])
    + bytes(32)
    + tcp(443),
    "arp": bytes.fromhex("ffffffffffff020000000001") + b"\x08\x06" + bytes(28),
    "malformed": eth_ipv4(6, tcp(80))[:30],
}
MIX = ["tcp"] * 5 + ["udp"] * 3 + ["icmp", "ipv6-tcp", "arp", "malformed"]


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}"


def kernel_collection(spec):  # noqa: ANN001, ANN201
    try:
        from xdpsim.engines.kernel import KernelCollection

        return KernelCollection(spec), None
    except Exception as e:  # noqa: BLE001 - any refusal is a reason to skip the kernel columns
        return None, f"{type(e).__name__}: {e}"


def per_packet(console: Console, repeat: int, use_kernel: bool, trials: int = 5) -> None:
    """Per packet kind, `trials` JIT and kernel measurements alternated (each `repeat` runs); the
    table gives the fastest of each (the machine is shared: slower trials are other work) and the
    spread of the JIT's trials (slowest / fastest)."""
    obj = xdpsim.load(ROOT / "programs" / "parser.o", engine="jit")
    jit = obj._engine("jit")
    pid = obj.programs["packet_parser"].id
    interp_obj = xdpsim.load(obj.spec, engine="interp")
    ker, why = kernel_collection(obj.spec) if use_kernel else (None, "--no-kernel")
    t = Table(
        title=f"parser chain (packet_parser -> tail call): program time per packet, repeat {repeat}, "
        f"best of {trials}"
    )
    for col in ("packet", "kernel ns", "JIT ns", "JIT/kernel", "JIT spread", "interp us", "verdicts agree"):
        t.add_column(col, justify="right")
    for name, pkt in KINDS.items():
        time_repeat(jit, obj.runtime, pid, pkt, min(repeat, 10000))  # warm caches and branch predictors
        jit_ns, ker_ns = [], []
        for _ in range(max(trials, 1)):
            ns, r0 = time_repeat(jit, obj.runtime, pid, pkt, repeat)
            jit_ns.append(ns)
            if ker is not None:
                kr = ker.run_xdp("packet_parser", pkt, repeat=repeat)
                ker_ns.append(kr.duration_ns)
        n_interp = 300
        t0 = time.perf_counter()
        for _ in range(n_interp):
            ri = run_xdp(interp_obj.runtime, Interpreter(), pid, pkt)
        interp_us = (time.perf_counter() - t0) / n_interp * 1e6
        kns, agree = "-", str(ri.retval == r0)
        ratio = "-"
        ns = min(jit_ns)
        if ker is not None:
            kns = f"{min(ker_ns):.0f}"
            ratio = f"{ns / max(min(ker_ns), 1):.2f}x"
            agree = str(ri.retval == r0 == kr.retval)
        spread = f"{max(jit_ns) / ns:.2f}"
        t.add_row(name, kns, f"{ns:.1f}", ratio, spread, f"{interp_us:.1f}", agree)
    console.print(t)
    if ker is None:
        console.print(f"[yellow]kernel columns skipped: {why}[/]")
    else:
        ker.close()


def batch(console: Console, n: int, use_kernel: bool) -> None:
    obj = xdpsim.load(ROOT / "programs" / "parser.o", engine="jit")
    jit = obj._engine("jit")
    pid = obj.programs["packet_parser"].id
    pkts = [KINDS[MIX[i % len(MIX)]] for i in range(n)]
    lengths = np.array([len(p) for p in pkts], np.uint32)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    data = np.frombuffer(b"".join(pkts), np.uint8)
    times = np.arange(n, dtype=np.uint64) * 1000
    res = jit.run_batch(obj.runtime, pid, data, offsets, lengths, times)  # warm-up (and the pages)
    best = float("inf")
    for _ in range(3):
        t0 = time.thread_time()
        res = jit.run_batch(obj.runtime, pid, data, offsets, lengths, times, reuse=res)
        best = min(best, time.thread_time() - t0)
    t = Table(title=f"mixed batch ({n} packets: {', '.join(sorted(set(MIX)))})")
    for col in ("engine", "ns/packet", "packets/s", "note"):
        t.add_column(col, justify="right")
    t.add_row("JIT run_batch", f"{best / n * 1e9:.1f}", f"{n / best:,.0f}", "copies, zeroing; CPU time")
    ker, why = kernel_collection(obj.spec) if use_kernel else (None, "--no-kernel")
    if ker is not None:
        m = min(n, 20000)
        t0 = time.perf_counter()
        for p in pkts[:m]:
            ker.run_xdp("packet_parser", p)
        dt = (time.perf_counter() - t0) / m
        t.add_row("kernel, 1 test run/packet", f"{dt * 1e9:.0f}", f"{1 / dt:,.0f}", f"first {m} packets")
        ker.close()
    interp_obj = xdpsim.load(obj.spec, engine="interp")
    m = 3000
    t0 = time.perf_counter()
    for p in pkts[:m]:
        run_xdp(interp_obj.runtime, Interpreter(), pid, p)
    dt = (time.perf_counter() - t0) / m
    t.add_row("interpreter", f"{dt * 1e9:.0f}", f"{1 / dt:,.0f}", f"first {m} packets")
    console.print(t)
    counts = np.bincount(res.action, minlength=5)
    verdicts = dict(zip(["aborted", "drop", "pass", "tx", "redirect"], counts.tolist(), strict=True))
    console.print(f"JIT verdicts: {verdicts}")
    if ker is None:
        console.print(f"[yellow]kernel row skipped: {why}[/]")


def sink_batch(console: Console, n: int, pcap: str | None) -> None:
    """run_batch in sink mode (the native loop of a replay) over pcap records held in memory: the mix, or
    a capture's first n records. Per-packet CPU time of this thread, best of 5 passes in 65,536-packet
    batches; the file buffers are emptied (not written) when full."""
    from xdpsim.engines.jit_batch import SinkPlan
    from xdpsim.jit import batch as nb
    from xdpsim.pipeline.fastpath import FIXED, K_REDIRECT, K_SHORT, K_UNKNOWN, action_keys

    if pcap is None:  # the mix as a nanosecond pcap file's records
        pkts = [KINDS[MIX[i % len(MIX)]] for i in range(n)]
        ts = 1_700_000_000_000_000_000 + np.arange(n, dtype=np.int64) * 1000
        parts = [bytes(24)]
        for p, t in zip(pkts, ts.tolist(), strict=True):
            parts += [struct.pack("<IIII", t // 10**9, t % 10**9, len(p), len(p)), p]
        raw = np.frombuffer(b"".join(parts), np.uint8)
        lengths = np.array([len(p) for p in pkts], np.uint32)
        offsets = 24 + 16 + np.concatenate([[0], np.cumsum(lengths.astype(np.int64) + 16)[:-1]])
        what = f"{n} packets: the mix"
    else:
        raw, offsets, lengths, ts = _records(pcap, n)
        what = f"{len(offsets)} records of {Path(pcap).name}"
    n = len(offsets)
    obj = xdpsim.load(ROOT / "programs" / "parser.o", engine="jit")
    jit = obj._engine("jit")
    pid = obj.programs["packet_parser"].id
    outcomes = sorted({o for o, _r, _t in FIXED})
    route = np.array([outcomes.index(o) for o, _r, _t in FIXED], np.int32)
    size, iov = 4 << 20, 16384  # (sinks.RecordBuffers' part)
    bufs = [(np.zeros(size, np.uint8), np.zeros((iov, 2), np.uint64)) for _ in outcomes]
    files = np.zeros((len(outcomes), nb.FILE_WORDS), np.uint64)

    def empty() -> None:
        for k, (buf, vec) in enumerate(bufs):
            files[k] = (buf.ctypes.data, size, 0, vec.ctypes.data, iov, 0)

    empty()
    lut = action_keys(0)
    lut[lut == K_REDIRECT] = nb.SINK_STOP
    keys = np.append(lut, K_UNKNOWN).astype(np.int32)
    counts = np.zeros((len(obj.runtime.programs) + 1) * len(FIXED), np.uint64)
    queues = np.zeros(min(n, 65536), np.uint32)
    res = None

    def one_pass() -> float:
        nonlocal res
        spent = 0.0
        for s in range(0, n, 65536):
            e = min(n, s + 65536)
            plan = SinkPlan(keys, route, files, len(outcomes), counts, len(FIXED), K_SHORT, ts[s:e],
                            lambda ran: None, empty, 14, records=True)
            t0 = time.thread_time()
            res = jit.run_batch(obj.runtime, pid, raw, offsets[s:e], lengths[s:e], ts[s:e].view(np.uint64),
                                queues[: e - s], reuse=res, sink=plan)
            spent += time.thread_time() - t0
        return spent

    one_pass()  # warm-up (and the pages)
    best = min(one_pass() for _ in range(5))
    t = Table(title=f"sink mode ({what}; records in place, as a replay)")
    for col in ("engine", "ns/packet", "packets/s", "note"):
        t.add_column(col, justify="right")
    t.add_row("JIT run_batch, sink", f"{best / n * 1e9:.1f}", f"{n / best:,.0f}", "CPU time, this thread")
    console.print(t)


def _records(pcap: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The bytes of a pcap file's first n records and their (data offsets, lengths, timestamps in ns)."""
    raw = np.fromfile(pcap, np.uint8)
    view = memoryview(raw)
    magic = struct.unpack_from("<I", view, 0)[0]
    if magic not in (0xA1B2C3D4, 0xA1B23C4D):
        raise SystemExit(f"{pcap}: not a little-endian pcap file (magic {magic:#x})")
    unit = 1 if magic == 0xA1B23C4D else 1000
    offsets, lengths, ts = [], [], []
    pos = 24
    while pos + 16 <= len(raw) and len(offsets) < n:
        sec, frac, incl = struct.unpack_from("<III", view, pos)
        offsets.append(pos + 16)
        lengths.append(incl)
        ts.append(sec * 1_000_000_000 + frac * unit)
        pos += 16 + incl
    return (raw, np.array(offsets, np.int64), np.array(lengths, np.uint32), np.array(ts, np.int64))


def compile_times(console: Console) -> None:
    from xdpsim.jit.compiler import Compiler, cache_dir, cache_key
    from xdpsim.runtime import Runtime

    t = Table(title="JIT compile CPU time per program, ms (tier 1: until native code runs, level-0 code; "
              "tier 2: the O2 build that replaces it in the background; cached: tier 2 from disk)")
    for col in ("object", "program", "insns", "tier 1", "tier 2", "cached"):
        t.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["XDG_CACHE_HOME"] = cache
        from xdpsim.engines.jit import JitEngine
        from xdpsim.loader import load_object

        eng = JitEngine()
        # one process-wide compiler writing the (empty) cache, one reading it back: as two runs would
        comp, cached_c = Compiler(), Compiler()
        for variant in ((True, False), (False, True), (False, False)):  # built once per xdpsim version
            comp.library(variant, eng._natives)
        seen = set()
        for path in sorted((ROOT / "programs").glob("*.o")):
            rt = Runtime()
            coll = rt.load(load_object(path))
            for name, pid in coll.programs.items():
                prog = rt.programs[pid]
                pin = eng.program_input(rt, prog)
                key = cache_key(pin)
                if key in seen:
                    continue  # the same program twice (parser.o / parser_tc.o share code)
                seen.add(key)
                ms = []
                for tier in (1, 2):
                    (cache_dir() / f"{key}.o").unlink(missing_ok=True)
                    t0 = time.thread_time()  # CPU time: the machine may be busy with other work
                    comp.compile(pin, eng._natives, tier=tier)
                    ms.append((time.thread_time() - t0) * 1e3)
                t0 = time.thread_time()
                cached = cached_c.compile(pin, eng._natives, tier=2)
                ms.append((time.thread_time() - t0) * 1e3)
                assert cached.source == "disk", cached.source
                cells = (f"{ms[0]:.1f}", f"{ms[1]:.1f}", f"{ms[2]:.2f}")
                t.add_row(path.name, name, str(len(prog.insns)), *cells)
    console.print(t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1_000_000)
    ap.add_argument("--no-kernel", action="store_true")
    ap.add_argument("--pcap", help="sink mode over this pcap file's first --batch records (default: the mix)")
    ap.add_argument("--trials", type=int, default=5, help="per-packet measurements per kind (best counts)")
    args = ap.parse_args()
    # the per-packet and batch figures are those of the optimised (tier-2) code, not of a first tier
    os.environ.setdefault("XDPSIM_JIT_TIER", "2")
    console = Console()
    console.print(f"[bold]xdpsim JIT benchmark[/] on {machine()}")
    per_packet(console, args.repeat, not args.no_kernel, args.trials)
    batch(console, args.batch, not args.no_kernel)
    sink_batch(console, args.batch, args.pcap)
    compile_times(console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
