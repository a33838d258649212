"""Batched XDP replay on the JIT: many packets per call into native code (jit/batch.py).

API (for the pipeline / `xdpsim run`):

    res = JitEngine().run_batch(runtime, prog_id, data, offsets, lengths, times=None, queues=None,
                                ifindex=1, budget=None)

- `data`: uint8 array of the packets' bytes, concatenated (e.g. a memory-mapped pcap); `offsets`
  (int64) and `lengths` (uint32) locate packet i; `times` (uint64 ns, bpf_ktime_get_ns) and `queues`
  (uint32 rx queue; CPU = queue % runtime.cpus) default to zeros.
- returns a `BatchResult` of numpy arrays, one entry per packet: `retval` (r0), `action` (XdpAction
  value: unknown codes and faults give XDP_ABORTED), `out_offset`/`out_length` into `out` (the
  packet bytes as the program left them: [data, data_end), metadata not included),
  `redirect_kind`/`redirect_a`/`redirect_b` (see `redirect_target(i)`), `fault` (1 when the packet's
  run faulted; `errors[i]` is the ProgramFault the interpreter raises for it), `prog` (id of the
  program that returned or faulted, after tail calls: XdpResult.program), `tail_calls` (successful
  tail calls of the run: XdpResult.tail_calls), plus `traces` (packet -> bpf_printk lines), `notes`
  (packet -> helpers' remarks, XdpResult.notes without the hook's own) and `helper_counts` (summed over
  the batch).
- `out_gap` (default 0): bytes left unused in `out` before each packet's output, so that a writer can
  put a pcap record header (16 bytes) there and write records straight from `out` (fastpath.py).
- `sink` (a `SinkPlan`, default None): sink mode, for replays (pipeline/fastpath.py): the loop writes
  each packet's pcap record to the buffer of the file its verdict routes to and counts it by (returning
  program, verdict key), frames shorter than `min_len` included (not run); faults, frames too long for
  the loop and redirects go to `sink.decide` one by one, in order; the per-packet arrays are then only
  meaningful for those packets.

Each packet sees what `run_xdp` gives it (zeroed 4096-byte frame, headroom 256, zeroed stack, budget,
tail-call count 0). Faults are not re-run: native code stops at the faulting packet, Python builds
the exact error from the fault record (as for a single run) and resumes at the next packet, so a
faulting packet's side effects (map updates before the fault) happen once, as in the interpreter.
Packets longer than the frame go through `run_xdp` one at a time (the "frame" fault, or the
fragments of an xdp.frags program). Prog-array updates made between calls take effect at the next
call; `on_batch(i)` (optional) is called between chunks of `chunk` packets, so a user can rebuild
chains mid-capture.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ProgramFault
from ..hooks.xdp import XDP_MD_SIZE, XdpAction, XdpContext, _packet_buffer, is_devmap_program, run_xdp
from ..jit import abi
from ..jit import batch as nb
from ..jit.compiler import compiler
from ..memory import CTX, R_CTX, R_READ, R_WRITE, STACK_SIZE
from .base import DEFAULT_BUDGET, RunState, prepare_stack

if TYPE_CHECKING:
    from ..maps import RedirectTarget
    from ..runtime import Runtime
    from .jit import JitEngine

BATCH_TYPE = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p)

# sink mode runs a chain proven never to change its packet on the packet where it lies (nb.F_IN_PLACE) when
# packet_in_place says no Python code can read packet memory during its runs; tests turn it off to compare
IN_PLACE = True
# helpers with no memory arguments, or (map lookup/update/delete: MAP_HELPERS) whose Python fallback runs
# only when a map or memory argument is bad -- then Python faults before reading any byte -- as long as
# every map of the runtime is one of natives.NATIVE_MAP_TYPES (or a prog array: refused before its key is
# read) and none is frozen (a frozen map's operations go to Python): map_lookup_elem, map_update_elem,
# map_delete_elem, ktime_get_ns, get_prandom_u32, get_smp_processor_id, tail_call, redirect
MAP_HELPERS = frozenset({1, 2, 3})
IN_PLACE_HELPERS = MAP_HELPERS | {5, 7, 8, 12, 23}

REDIRECT_PY = abi.REDIR_PY


@dataclass
class BatchResult:
    retval: np.ndarray
    action: np.ndarray
    out: np.ndarray
    out_offset: np.ndarray
    out_length: np.ndarray
    redirect_kind: np.ndarray
    redirect_a: np.ndarray
    redirect_b: np.ndarray
    fault: np.ndarray
    prog: np.ndarray
    tail_calls: np.ndarray
    errors: dict[int, ProgramFault] = field(default_factory=dict)
    traces: dict[int, list[str]] = field(default_factory=dict)
    notes: dict[int, list[str]] = field(default_factory=dict)  # packet -> remarks (run_xdp's notes)
    helper_counts: dict[str, int] = field(default_factory=dict)
    py_redirects: dict[int, Any] = field(default_factory=dict)
    runtime: Any = None
    addresses: dict[str, int] = field(default_factory=dict)  # host addresses of the *_base arrays below
    # the full-size arrays behind the views above (reused by run_batch(reuse=...))
    retval_base: Any = None
    action_base: Any = None
    out_base: Any = None
    out_offset_base: Any = None
    out_length_base: Any = None
    redirect_kind_base: Any = None
    redirect_a_base: Any = None
    redirect_b_base: Any = None
    fault_base: Any = None
    prog_base: Any = None
    tail_calls_base: Any = None

    def __len__(self) -> int:
        return len(self.retval)

    def packet(self, i: int) -> bytes:
        o = int(self.out_offset[i])
        return self.out[o : o + int(self.out_length[i])].tobytes()

    def redirect_target(self, i: int) -> RedirectTarget | None:
        """What run_xdp reports as `redirect` for packet i (None unless the action is REDIRECT)."""
        from ..maps import RedirectTarget

        if self.action[i] != XdpAction.XDP_REDIRECT:
            return None
        kind = int(self.redirect_kind[i])
        if kind == abi.REDIR_IFINDEX:
            return RedirectTarget("dev", int(self.redirect_a[i]))
        if kind == abi.REDIR_MAP:
            return self.runtime.maps[int(self.redirect_a[i])].resolve(int(self.redirect_b[i]))
        if kind == REDIRECT_PY:
            return self.py_redirects.get(i)
        return None


@dataclass
class Ran:
    """A packet of a sink-mode batch that Python decides (a fault, a frame too long for the loop, a
    redirect): what BatchResult holds for it in normal mode."""

    index: int
    retval: int
    data: bytes
    prog: int
    tail_calls: int
    error: ProgramFault | None
    redirect: Any  # RedirectTarget | None
    fault: bool = False


@dataclass
class SinkPlan:
    """run_batch(sink=...): the loop writes pcap records to file buffers itself (batch.py, F_SINK).

    `keys[a]` is the key of XDP action a (0..4), `keys[5]` that of an unknown action; nb.SINK_STOP
    makes the loop stop after the packet and hand it to `decide`. `route[key]` is the slot of the file
    the key's packets go to; `files` rows (nb.F_*: buffer, stream of pieces) are those files,
    `flush()` is called when one lacks a record's room (it must leave room in every one); with `records`
    (the 16 bytes before each packet of `data` are its pcap record header, as the file has it: nb.F_RECORDS)
    a file's stream may refer to `data` itself, which must then stay as it is until the stream is
    written. Frames shorter than `min_len` are not run: key `short_key`, written as they are, counted in
    the last row of `counts` (rows: returning program id, then "not run"; columns: keys). `hdr_ts` are
    the records' timestamps. `decide(ran)` gets every packet the loop did not route, in order;
    `tail_calls` sums the successful tail calls of the packets routed natively.
    """

    keys: np.ndarray  # int32[6]
    route: np.ndarray  # int32[nkeys]
    files: np.ndarray  # uint64[slots, nb.FILE_WORDS]
    nfiles: int
    counts: np.ndarray  # uint64[(nprogs + 1) * nkeys]
    nkeys: int
    short_key: int
    hdr_ts: np.ndarray  # int64[n]
    decide: Callable[[Ran], None]
    flush: Callable[[], None]
    min_len: int = 14
    tail_calls: int = 0
    records: bool = False


def run_batch(
    engine: JitEngine,
    runtime: Runtime,
    prog_id: int,
    data: np.ndarray,
    offsets: np.ndarray,
    lengths: np.ndarray,
    times: np.ndarray | None = None,
    queues: np.ndarray | None = None,
    *,
    ifindex: int = 1,
    budget: int | None = None,
    chunk: int = 65536,
    on_batch: Callable[[int], None] | None = None,
    reuse: BatchResult | None = None,
    out_gap: int = 0,
    sink: SinkPlan | None = None,
) -> BatchResult:
    n = len(offsets)
    if out_gap < 0:
        raise ValueError("run_batch: out_gap must be >= 0")
    data = np.ascontiguousarray(data, dtype=np.uint8)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    lengths = np.ascontiguousarray(lengths, dtype=np.uint32)
    times = np.zeros(n, np.uint64) if times is None else np.ascontiguousarray(times, dtype=np.uint64)
    queues = np.zeros(n, np.uint32) if queues is None else np.ascontiguousarray(queues, dtype=np.uint32)
    # (largest offset + largest length bounds every packet's end: the exact sums, a slower pass with a
    # temporary array, only when that bound does not settle it)
    end = len(data)
    if n and int(offsets.max()) + int(lengths.max()) > end and int((offsets + lengths).max()) > end:
        raise ValueError("run_batch: a packet (offset + length) lies past the end of `data`")
    budget = DEFAULT_BUDGET if budget is None else budget

    rj = engine._rj(runtime)  # noqa: SLF001 - the engine's per-runtime state
    cp = rj.compiled[prog_id]
    # sink mode: `out` only ever holds the one packet the loop stopped after
    res = _result(n, int(lengths.sum()) + n * out_gap if sink is None else 0, runtime, reuse)
    if cp is None and sink is not None:
        raise ValueError("run_batch: sink mode needs a program the JIT compiled")
    if cp is None:  # the JIT declined the program: one run_xdp per packet with the fallback
        pos = 0
        for i in range(n):
            pos = _single(engine, runtime, prog_id, res, i, data, offsets, lengths, times, queues, ifindex,
                          budget, pos + out_gap)
        return res

    mem = runtime.mem
    pkt = _packet_buffer(runtime)
    pkt.reset(b"")
    pkt.attach(mem)
    ctx = XdpContext(pkt, ifindex, 0, 0, is_devmap_program(runtime, prog_id))
    state = RunState(
        runtime, prog_id=prog_id, args=((CTX << 32),), packet=pkt, ctx=ctx, ifindex=ifindex, budget=budget
    )
    state.engine = engine
    has_sub = any(len(c.funcs) > 1 for c in rj.compiled if c is not None)
    a = np.zeros(nb.A_WORDS, np.uint64)
    a[nb.A_ENTRY] = cp.address
    a[nb.A_N] = n
    a[nb.A_PKTS] = data.ctypes.data
    a[nb.A_OFFSETS] = offsets.ctypes.data
    a[nb.A_LENGTHS] = lengths.ctypes.data
    a[nb.A_TIMES] = times.ctypes.data
    a[nb.A_QUEUES] = queues.ctypes.data
    addr = res.addresses or _addresses(res)  # (the per-packet arrays' bases: views of them start there)
    for word, name in _ARGS_OF:
        a[word] = addr[name]
    a[nb.A_NCPUS] = runtime.cpus
    a[nb.A_PROG] = prog_id
    a[nb.A_BUDGET] = budget
    # bpf-to-bpf calls or callbacks may use every frame; otherwise only frame 0 needs zeroing
    # (otherwise the deepest reach of any program that may run: tail calls go anywhere)
    a[nb.A_STACK_ZERO] = STACK_SIZE if has_sub else max(c.stack_bytes if c else 512 for c in rj.compiled)
    a[nb.A_FRAME] = pkt.frame.ctypes.data
    a[nb.A_HEADROOM] = pkt.headroom
    a[nb.A_MAX_LEN] = pkt.max_len
    a[nb.A_CTX] = CTX << 32
    a[nb.A_OUT_GAP] = out_gap
    if sink is not None:
        _sink_args(a, sink, runtime)
        # (without a pcap file's records in `data`, only in place: F_UNCHANGED is about those records)
        flags = _record_flags(engine, runtime, prog_id)
        a[nb.A_FLAGS] |= flags if sink.records else flags & nb.F_IN_PLACE
    fn = BATCH_TYPE(compiler().batch_address())
    pos = 0
    i = 0
    while i < n:
        end = min(n, i + chunk)
        # per chunk: the runtime may have changed (programs, maps, windows) between calls
        rj.refresh()
        _setup(rj, runtime, mem, pkt, ctx, state, ifindex)
        a[nb.A_STACK] = mem.stack.ctypes.data
        a[nb.A_OUT] = res.out.ctypes.data
        a[nb.A_OUT_CAP] = len(res.out)
        a[nb.A_OUT_POS] = pos = 0 if sink is not None else pos
        a[nb.A_START] = i
        a[nb.A_N] = end
        rj.state = state
        rj.batch = res
        envp, argp = rj.env_address, a.ctypes.data
        a[nb.A_ROOM_LEFT] = 0  # (Python may have written to the file buffers since the last call)
        try:
            stopped = fn(envp, argp)
            # sink mode, some file buffer full: only the buffers change (no Python ran a program, nothing
            # the runtime holds changed): straight back in, without the per-call set-up above
            while sink is not None and a[nb.A_STOP] == nb.STOP_FILES_FULL:
                sink.flush()
                a[nb.A_START] = stopped
                a[nb.A_ROOM_LEFT] = 0
                stopped = fn(envp, argp)
        finally:
            rj.state = None
            rj.batch = None
            rj.prandom.to_python()
        pos = int(a[nb.A_OUT_POS])
        reason = int(a[nb.A_STOP])
        if reason == nb.STOP_DONE:
            i = end
            if on_batch is not None and i < n:
                on_batch(i)
            continue
        i = int(stopped)
        if sink is not None:
            i = _sink_stop(engine, runtime, prog_id, res, sink, reason, i, pos, rj, state, pkt,
                           (data, offsets, lengths, times, queues, ifindex, budget, out_gap))
            if reason != nb.STOP_FILES_FULL:  # Python ran or looked at packets: the frame is dirty
                pkt.reset(b"")
                pkt.attach(mem)
            continue
        if reason == nb.STOP_OUT_FULL:
            grown = np.zeros(len(res.out) * 2, np.uint8)
            grown[:pos] = res.out[:pos]
            res.out = grown
            continue
        if reason == nb.STOP_TOO_LONG:
            pkt.reset(b"")
            pos = _single(
                engine, runtime, prog_id, res, i, data, offsets, lengths, times, queues, ifindex, budget,
                pos + out_gap,
            )
            i += 1
            continue
        # a fault: build the interpreter's error from the fault record, keep the packet as it is
        rj.env_to_python(state)
        state.prog_id = int(rj.env[abi.E_CUR_PROG])
        try:
            rj.raise_fault(state)
        except ProgramFault as e:
            res.errors[i] = e
        res.fault[i] = 1
        res.prog[i] = state.prog_id
        res.tail_calls[i] = int(rj.env[abi.E_TAIL_CALLS])
        out = pkt.bytes()
        pos += out_gap
        if pos + len(out) > len(res.out):
            grown = np.zeros(len(res.out) * 2 + len(out), np.uint8)
            grown[:pos] = res.out[:pos]
            res.out = grown
        res.out[pos : pos + len(out)] = np.frombuffer(out, np.uint8)
        res.out_offset[i] = pos
        res.out_length[i] = len(out)
        pos += len(out)
        pkt.frame.fill(0)
        i += 1
    res.out_base = res.out
    res.out = res.out[:pos]
    if sink is not None:
        sink.tail_calls += int(a[nb.A_TAILS_SUM])
        engine._outputs(rj, state)  # noqa: SLF001 - helper counts gathered natively
        res.helper_counts = dict(state.helper_counts)
        return res
    acts = res.retval & 0xFFFF_FFFF
    np.copyto(
        res.action, np.where(acts > XdpAction.XDP_REDIRECT, XdpAction.XDP_ABORTED, acts), casting="unsafe"
    )
    res.action[res.fault != 0] = XdpAction.XDP_ABORTED
    engine._outputs(rj, state)  # noqa: SLF001 - helper counts gathered natively
    res.helper_counts = dict(state.helper_counts)
    return res


def _record_flags(engine: JitEngine, runtime: Runtime, prog_id: int) -> int:
    """nb.F_UNCHANGED (packet_unchanged) and nb.F_IN_PLACE (packet_in_place) for the chain entered at
    prog_id, kept in the entry's cache while what they rest on stays: the runtime's programs (added, never
    changed: their effects are facts of their instructions; prog arrays may point anywhere, which both
    answers already allow), its maps and their frozen flags, IN_PLACE and the engine's native helpers
    (a replay asks once per batch)."""
    lp = runtime.programs[prog_id]
    key = (len(runtime.programs), tuple(m.frozen for m in runtime.maps), IN_PLACE, engine.native_helpers)
    known = lp.cache.get("record_flags")
    if known is not None and known[0] == key:
        return known[1]
    flags = 0
    if packet_unchanged(engine, runtime, prog_id):
        flags = nb.F_UNCHANGED
        if IN_PLACE and packet_in_place(engine, runtime, prog_id):
            flags |= nb.F_IN_PLACE
    lp.cache["record_flags"] = (key, flags)
    return flags


def packet_unchanged(engine: JitEngine, runtime: Runtime, prog_id: int) -> bool:
    """Whether it is proven (jit.effects) that no run of the program, nor of any program it may tail-call
    (then: every program of the runtime, wherever prog arrays point), changes its packet's bytes or
    frame. Each program's answer is kept in its cache (a map frozen later only turns stores into faults)."""
    from ..jit.effects import Facts, cached_effects
    from ..spec import ProgType

    def of(lp: Any) -> Any:
        e = lp.cache.get("effects")
        if e is None:
            xdp = getattr(lp.spec, "type", None) == ProgType.XDP
            facts = Facts(xdp, engine._value_sizes(runtime), engine._entries(lp),  # noqa: SLF001
                          engine._writable(runtime))  # noqa: SLF001
            e = lp.cache["effects"] = cached_effects(lp.insns, facts)
        return e

    first = of(runtime.programs[prog_id])
    if first.writes:
        return False
    return not first.tail_calls or not any(of(lp).writes for lp in runtime.programs)


def packet_in_place(engine: JitEngine, runtime: Runtime, prog_id: int) -> bool:
    """Whether the program (chain), already proven not to change its packet (packet_unchanged), may run on
    the packet where it lies (nb.F_IN_PLACE): no Python code reads packet memory during its runs. Native
    code reaches the packet through the region table (and env FRAME), which the loop points at it; Python
    code (helpers without native code, the native helpers' fallbacks) reads the frame. So: native helpers
    on, every program that may run calls only IN_PLACE_HELPERS (no kfuncs, no indirect calls), and, when
    one calls a map helper, every map is of a native type or a prog array, none frozen (a frozen .rodata
    that programs only read through its value address does not matter otherwise)."""
    from ..jit.natives import NATIVE_MAP_TYPES
    from ..spec import MapType

    if not getattr(engine, "native_helpers", False):
        return False
    entry = runtime.programs[prog_id]
    # (packet_unchanged: without tail calls only the entry runs; with them, any program of the runtime)
    progs = runtime.programs if entry.cache["effects"].tail_calls else [entry]
    helpers = [_helpers_of(lp) for lp in progs]
    if any(h is None or not h <= IN_PLACE_HELPERS for h in helpers):
        return False
    kinds = (*NATIVE_MAP_TYPES, MapType.PROG_ARRAY)
    return not any(h & MAP_HELPERS for h in helpers) or not any(  # type: ignore[operator]
        m.frozen or m.type not in kinds for m in runtime.maps)


def _helpers_of(lp: Any) -> frozenset[int] | None:
    """The helpers the program calls; None when it makes a call that is neither a helper's nor one of its
    own functions' (kfuncs, indirect calls)."""
    from .. import isa

    if "called_helpers" not in lp.cache:
        jumps = (isa.BPF_JMP, isa.BPF_JMP32)
        calls = [ins for ins in lp.insns if ins.cls in jumps and ins.code == isa.BPF_CALL]
        known = (isa.PSEUDO_CALL, isa.CALL_HELPER)
        direct = all(ins.source == isa.BPF_K and ins.src in known for ins in calls)
        ids = frozenset(i.imm for i in calls if i.src == isa.CALL_HELPER)
        lp.cache["called_helpers"] = ids if direct else None
    return lp.cache["called_helpers"]


def _sink_args(a: np.ndarray, sink: SinkPlan, runtime: Runtime) -> None:
    for arr in (sink.keys, sink.route, sink.files, sink.counts, sink.hdr_ts):
        assert arr.flags.c_contiguous
    assert sink.keys.dtype == np.int32 and sink.route.dtype == np.int32 and len(sink.keys) == 6
    assert sink.files.dtype == np.uint64 and sink.counts.dtype == np.uint64
    assert sink.files.ndim == 2 and sink.files.shape[1] == nb.FILE_WORDS
    assert len(sink.counts) >= (len(runtime.programs) + 1) * sink.nkeys and sink.hdr_ts.dtype == np.int64
    a[nb.A_FLAGS] = nb.F_SINK | (nb.F_RECORDS if sink.records else 0)
    a[nb.A_KEYS] = sink.keys.ctypes.data
    a[nb.A_ROUTE] = sink.route.ctypes.data
    a[nb.A_FILES] = sink.files.ctypes.data
    a[nb.A_NFILES] = sink.nfiles
    a[nb.A_COUNTS] = sink.counts.ctypes.data
    a[nb.A_NKEYS] = sink.nkeys
    a[nb.A_HDR_TS] = sink.hdr_ts.ctypes.data
    a[nb.A_MIN_LEN] = sink.min_len
    a[nb.A_SHORT_KEY] = sink.short_key
    a[nb.A_SHORT_SLOT] = len(runtime.programs) * sink.nkeys + sink.short_key
    a[nb.A_TAILS_SUM] = 0


def _sink_stop(engine: JitEngine, runtime: Runtime, prog_id: int, res: BatchResult, sink: SinkPlan,
               reason: int, i: int, pos: int, rj: Any, state: RunState, pkt: Any, inputs: tuple) -> int:
    """Sink mode: what the loop stopped for; returns the packet to resume at."""
    if reason == nb.STOP_FILES_FULL:
        sink.flush()
        return i
    # the batch's helper calls so far are the batch's (decide() may run a devmap program on this runtime)
    counts = rj.helper_counts
    for hid in np.flatnonzero(counts).tolist():
        hd = runtime.helpers.get(hid)
        name = hd.name if hd is not None else str(hid)
        state.helper_counts[name] = state.helper_counts.get(name, 0) + int(counts[hid])
    counts[:] = 0
    if reason == nb.STOP_SINK:  # the loop ran it and left its output at A_OUT: a redirect
        o = int(res.out_offset[i])
        res.action[i] = XdpAction.XDP_REDIRECT
        sink.decide(Ran(i, int(res.retval[i]), res.out[o : o + int(res.out_length[i])].tobytes(),
                        int(res.prog[i]), int(res.tail_calls[i]), None, res.redirect_target(i)))
        return i + 1
    if reason == nb.STOP_TOO_LONG:
        data, offsets, lengths, times, queues, ifindex, budget, out_gap = inputs
        pkt.reset(b"")
        _single(engine, runtime, prog_id, res, i, data, offsets, lengths, times, queues, ifindex, budget,
                pos + out_gap)
        o = int(res.out_offset[i])
        out = res.out[o : o + int(res.out_length[i])].tobytes()
        red = res.py_redirects.get(i) if (res.retval[i] & 0xFFFF_FFFF) == XdpAction.XDP_REDIRECT else None
        sink.decide(Ran(i, int(res.retval[i]), out, int(res.prog[i]), int(res.tail_calls[i]),
                        res.errors.get(i), red, bool(res.fault[i])))
        return i + 1
    # a fault: the interpreter's error from the fault record, the packet as it is
    rj.env_to_python(state)
    state.prog_id = int(rj.env[abi.E_CUR_PROG])
    err: ProgramFault | None = None
    try:
        rj.raise_fault(state)
    except ProgramFault as e:
        err = e
    if err is not None:
        res.errors[i] = err
    res.fault[i] = 1
    sink.decide(Ran(i, 0, pkt.bytes(), state.prog_id, int(rj.env[abi.E_TAIL_CALLS]), err, None, True))
    return i + 1


def time_repeat(
    engine: JitEngine,
    runtime: Runtime,
    prog_id: int,
    packet: bytes,
    repeat: int,
    *,
    ifindex: int = 1,
    queue: int = 0,
) -> tuple[float, int]:
    """Run the program `repeat` times on one packet in native code, as BPF_PROG_TEST_RUN's repeat
    mode does (the frame is set up once; each run resets the context and counters, not the bytes).
    Returns (nanoseconds per run, r0 of the last run)."""
    import time

    n = int(repeat)
    rj = engine._rj(runtime)  # noqa: SLF001
    cp = rj.compiled[prog_id]
    if cp is None:
        raise ValueError("the JIT declined this program")
    mem = runtime.mem
    pkt = _packet_buffer(runtime)
    pkt.reset(bytes(packet))
    pkt.attach(mem)
    ctx = XdpContext(pkt, ifindex, queue, 0, is_devmap_program(runtime, prog_id))
    state = RunState(runtime, prog_id=prog_id, args=((CTX << 32),), packet=pkt, ctx=ctx, ifindex=ifindex)
    state.engine = engine
    a = np.zeros(nb.A_WORDS, np.uint64)
    # timing mode reads and writes element 0 of the per-packet arrays only
    lengths = np.full(1, len(packet), np.uint32)
    queues = np.full(1, queue, np.uint32)
    times = np.zeros(1, np.uint64)
    offsets = np.zeros(1, np.int64)
    retval = np.zeros(1, np.uint64)
    out_off = np.zeros(1, np.int64)
    out_len = np.zeros(1, np.uint32)
    kinds = np.zeros(1, np.uint8)
    ra = np.zeros(1, np.uint32)
    rb = np.zeros(1, np.uint32)
    out = np.zeros(2 * 4096, np.uint8)
    for k, v in (
        (nb.A_ENTRY, cp.address),
        (nb.A_N, n),
        (nb.A_START, 0),
        (nb.A_OFFSETS, offsets.ctypes.data),
        (nb.A_LENGTHS, lengths.ctypes.data),
        (nb.A_TIMES, times.ctypes.data),
        (nb.A_QUEUES, queues.ctypes.data),
        (nb.A_OUT, out.ctypes.data),
        (nb.A_OUT_CAP, len(out)),
        (nb.A_OUT_OFF, out_off.ctypes.data),
        (nb.A_OUT_LEN, out_len.ctypes.data),
        (nb.A_RETVAL, retval.ctypes.data),
        (nb.A_REDIR_KIND, kinds.ctypes.data),
        (nb.A_REDIR_A, ra.ctypes.data),
        (nb.A_REDIR_B, rb.ctypes.data),
        (nb.A_NCPUS, runtime.cpus),
        (nb.A_PROG, prog_id),
        (nb.A_BUDGET, DEFAULT_BUDGET),
        (nb.A_STACK_ZERO, 0),
        (nb.A_STACK, mem.stack.ctypes.data),
        (nb.A_FRAME, pkt.frame.ctypes.data),
        (nb.A_HEADROOM, pkt.headroom),
        (nb.A_MAX_LEN, pkt.max_len),
        (nb.A_CTX, CTX << 32),
        (nb.A_FLAGS, nb.F_REPEAT),
    ):
        a[k] = v
    a[nb.A_PKTS] = out.ctypes.data
    _setup(rj, runtime, mem, pkt, ctx, state, ifindex)
    fn = BATCH_TYPE(compiler().batch_address())
    rj.state = state
    try:
        # CPU time of this thread: like the kernel's test-run timer, which stops while the loop
        # reschedules, time spent descheduled on a busy machine is not the program's
        t0 = time.thread_time_ns()
        stopped = fn(rj.env.ctypes.data, a.ctypes.data)
        dt = time.thread_time_ns() - t0
    finally:
        rj.state = None
        rj.prandom.to_python()
    if stopped != n:
        raise RuntimeError(
            f"repeat run stopped at {stopped} (reason {int(a[nb.A_STOP])}): the program faulted"
        )
    return dt / n, int(retval[-1])


def _result(n: int, total: int, runtime: Runtime, reuse: BatchResult | None) -> BatchResult:
    """Fresh result arrays, or `reuse`'s when they are big enough (a replay cut into batches then
    writes the same pages again instead of faulting in new ones)."""
    out_size = max(total + 8 * 4096, 1 << 16)
    if reuse is not None and len(reuse.retval_base) >= n and len(reuse.out_base) >= out_size:
        r = reuse
        views = {k: getattr(r, k + "_base")[:n] for k in _ARRAYS}
        for k, v in views.items():
            setattr(r, k, v)
        r.fault[:] = 0
        r.redirect_kind[:] = 0
        r.out = r.out_base
        r.errors, r.traces, r.py_redirects, r.helper_counts = {}, {}, {}, {}
        r.notes = {}
        return r
    r = BatchResult(
        retval=np.zeros(n, np.uint64),
        action=np.zeros(n, np.uint8),
        out=np.zeros(out_size, np.uint8),
        out_offset=np.zeros(n, np.int64),
        out_length=np.zeros(n, np.uint32),
        redirect_kind=np.zeros(n, np.uint8),
        redirect_a=np.zeros(n, np.uint32),
        redirect_b=np.zeros(n, np.uint32),
        fault=np.zeros(n, np.uint8),
        prog=np.zeros(n, np.uint32),
        tail_calls=np.zeros(n, np.uint32),
        runtime=runtime,
    )
    for k in _ARRAYS:
        setattr(r, k + "_base", getattr(r, k))
    r.out_base = r.out
    return r


def _addresses(res: BatchResult) -> dict[str, int]:
    """The host address of each per-packet array of `res` (its full-size base: reuse keeps them)."""
    res.addresses = {k: getattr(res, k + "_base").ctypes.data for k in _ARRAYS}
    return res.addresses


_ARGS_OF = ((nb.A_OUT_OFF, "out_offset"), (nb.A_OUT_LEN, "out_length"), (nb.A_RETVAL, "retval"),
            (nb.A_REDIR_KIND, "redirect_kind"), (nb.A_REDIR_A, "redirect_a"), (nb.A_REDIR_B, "redirect_b"),
            (nb.A_PROG_OUT, "prog"), (nb.A_TAILS_OUT, "tail_calls"))

_ARRAYS = (
    "retval",
    "action",
    "out_offset",
    "out_length",
    "redirect_kind",
    "redirect_a",
    "redirect_b",
    "fault",
    "prog",
    "tail_calls",
)


def _setup(
    rj: Any, runtime: Runtime, mem: Any, pkt: Any, ctx: XdpContext, state: RunState, ifindex: int
) -> None:
    mem.set_ctx(ctx)
    mem.set(CTX, lo=0, hi=XDP_MD_SIZE, flags=R_READ | R_WRITE | R_CTX)
    prepare_stack(state)
    rj.load_state(state)
    rj.prandom.from_python()
    rj.env[abi.E_IFINDEX] = ifindex
    rj.env[abi.E_FRAME] = pkt.frame.ctypes.data


def _single(
    engine: JitEngine,
    runtime: Runtime,
    prog_id: int,
    res: BatchResult,
    i: int,
    data: np.ndarray,
    offsets: np.ndarray,
    lengths: np.ndarray,
    times: np.ndarray,
    queues: np.ndarray,
    ifindex: int,
    budget: int,
    pos: int | None = None,
) -> int:
    """One packet through run_xdp (long frames, programs the JIT declined); returns the new out position."""
    o, ln = int(offsets[i]), int(lengths[i])
    r = run_xdp(
        runtime,
        engine,
        prog_id,
        data[o : o + ln].tobytes(),
        ifindex=ifindex,
        queue=int(queues[i]),
        now_ns=int(times[i]),
        budget=budget,
    )
    if pos is None:
        pos = int(res.out_offset[i - 1] + res.out_length[i - 1]) if i else 0
    out = r.data
    if pos + len(out) > len(res.out):
        grown = np.zeros(len(res.out) * 2 + len(out), np.uint8)
        grown[:pos] = res.out[:pos]
        res.out = grown
    res.out[pos : pos + len(out)] = np.frombuffer(out, np.uint8)
    res.out_offset[i] = pos
    res.out_length[i] = len(out)
    res.retval[i] = r.retval
    res.prog[i] = _prog_id(runtime, prog_id, r.program)
    res.tail_calls[i] = r.tail_calls
    if r.error is not None:
        res.errors[i] = r.error
        res.fault[i] = 1
    if r.redirect is not None:
        res.redirect_kind[i] = REDIRECT_PY
        res.py_redirects[i] = r.redirect
    if r.trace:
        res.traces[i] = list(r.trace)
    if r.notes:
        res.notes[i] = list(r.notes)
    return pos + len(out)


def _prog_id(runtime: Runtime, entry: int, name: str) -> int:
    """The id of the program named `name` that a run entered at `entry` returned from (XdpResult names
    it): the entry itself, else that name in the entry's object, else the first of that name."""
    progs = runtime.programs
    if progs[entry].name == name:
        return entry
    same = [p.id for p in progs if p.name == name and p.object_path == progs[entry].object_path]
    return same[0] if same else next((p.id for p in progs if p.name == name), entry)
