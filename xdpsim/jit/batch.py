"""The native replay loop: runs an XDP program over a batch of packets without returning to Python.

One generic function (built once per process, not per program: the program's entry point is an
argument) does, for each packet i from `start`:

    copy the packet into the 4096-byte frame at headroom 256; set env (packet window, time, queue,
    CPU = queue % cpus, budget, tail-call count 0); zero the stack frames in use; call the entry;
    stop and return i when the run faulted (Python builds the exact ProgramFault from env, as for
    a single run, then resumes at i + 1 -- nothing is re-run, so side effects happen once);
    store r0, copy [data, data_end) to the output buffer, store the redirect decision;
    zero the part of the frame the packet could have dirtied (so the next packet sees the zeroed
    frame run_xdp gives it).

It also stops before a packet too long for the frame (Python records the interpreter's "frame"
fault) and when the output buffer has less than one frame of room left (Python grows it).

`args` is a u64 array (`A_*` below); every pointer is a host address of a numpy array.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import llvmlite.ir as ir

from ..memory import PACKET, REGION_SHIFT, STACK, STACK_SIZE, XDP_FRAME_SIZE
from . import abi
from .lower import FN_TYPE, I1, I8, I32, I64, PTR, VOID, c64

A_ENTRY = 0
A_N = 1
A_START = 2
A_PKTS = 3  # u8[]: the packets' bytes, concatenated
A_OFFSETS = 4  # i64[n]
A_LENGTHS = 5  # u32[n]
A_TIMES = 6  # u64[n] (ns)
A_QUEUES = 7  # u32[n]
A_OUT = 8  # u8[cap]
A_OUT_CAP = 9
A_OUT_POS = 10  # in/out
A_OUT_OFF = 11  # i64[n]
A_OUT_LEN = 12  # u32[n]
A_RETVAL = 13  # u64[n] (r0)
A_REDIR_KIND = 14  # u8[n]: abi.REDIR_* at the end of the run
A_REDIR_A = 15  # u32[n]: ifindex (REDIR_IFINDEX) or map id (REDIR_MAP)
A_REDIR_B = 16  # u32[n]: map key (REDIR_MAP)
A_NCPUS = 17
A_PROG = 18
A_BUDGET = 19
A_STACK_ZERO = 20  # bytes of stack to zero per packet (from the top)
A_STACK = 21  # host address of the stack buffer
A_FRAME = 22  # host address of the frame
A_HEADROOM = 23
A_MAX_LEN = 24
A_STOP = 25  # out: why the loop stopped (STOP_*)
A_CTX = 26  # r1: the context address
A_FLAGS = 27  # F_REPEAT: timing mode (see below)
A_PROG_OUT = 28  # u32[n] or 0: id of the program that returned (env CUR_PROG after tail calls)
A_TAILS_OUT = 29  # u32[n] or 0: successful tail calls of the run
A_OUT_GAP = 30  # bytes left free before each packet's output (0: back to back; 16: room for pcap headers)
# sink mode (F_SINK): each packet's pcap record goes straight to the buffer of its sink file
A_KEYS = 31  # i32[6]: key of XDP actions 0..4, then of an unknown action (SINK_STOP: Python decides)
A_ROUTE = 32  # i32[nkeys]: file slot of each key
A_FILES = 33  # u64[nfiles][FILE_WORDS]: each file's buffer and stream (F_* below)
A_NFILES = 34
A_COUNTS = 35  # u64[(nprogs + 1) * nkeys]: packets by (returning program, key); last row: not run
A_NKEYS = 36
A_HDR_TS = 37  # i64[n]: the record timestamps (ns; clamped to pcap's range here)
A_MIN_LEN = 38  # frames shorter than this are not run: key A_SHORT_KEY, written as they are
A_SHORT_KEY = 39
A_TAILS_SUM = 40  # in/out: successful tail calls of the packets counted natively
A_SHORT_SLOT = 41  # index in A_COUNTS of the frames not run
# in/out: the part of the frame the last packet dirtied, not yet zeroed (0, 0: none). Zeroing waits for
# the next packet, which only zeroes what its own copy does not overwrite; every stop zeroes it all.
A_PEND_LO = 42
A_PEND_HI = 43
A_ROOM_LEFT = 44  # in/out, sink mode: packets that surely fit in the file buffers (0: look at them); 0 on
# every entry when something else wrote to the buffers meanwhile
A_WORDS = 48

# Timing mode, like BPF_PROG_TEST_RUN's repeat: the frame already holds the packet (all lengths
# equal); per iteration only the context, windows and counters are reset -- no packet copy in or
# out, no zeroing -- so the time measured is the program's.
F_REPEAT = 1
# Sink mode: instead of per-packet output arrays, the loop writes each packet's pcap record (16-byte
# header: seconds, nanoseconds, length twice; then [data, data_end)) to the file its key routes to (its
# buffer and stream, F_* below) and counts it in A_COUNTS. It stops (STOP_SINK, returning i) after a
# packet whose key is SINK_STOP (a redirect: the per-packet arrays at i and the output at A_OUT hold it,
# as in normal mode), and (STOP_FILES_FULL) before a packet when some file has less than a record's
# room left (bytes or pieces).
F_SINK = 2
# Sink mode, with F_RECORDS: the 16 bytes before each packet of A_PKTS are its record header as read (a pcap
# file's records, in place): a record to write that is the same bytes is not copied; the file's stream
# refers to it (the caller keeps those bytes until the stream is written).
F_RECORDS = 4
# Sink mode with F_RECORDS, F_UNCHANGED: the program (chain) provably never writes the packet nor moves its
# frame (jit.effects): a record whose header is the one read is the bytes read (no compare of the bytes).
F_UNCHANGED = 8
# Sink mode, F_IN_PLACE (a chain proven never to write the packet nor move its frame, as for F_UNCHANGED;
# with or without F_RECORDS): the program runs on the packet where it lies in A_PKTS instead of a copy in
# the frame: the PACKET region's base (region table row) and env FRAME point `headroom` bytes before it, so
# the window [headroom, headroom + length) is the packet as read; no copy in, no zeroing after. Only for a
# chain in which no Python code can read packet memory either (engines/jit_batch.packet_in_place: Python
# reads the frame). A faulting packet is copied into the frame before the loop stops (Python reports it
# from there, as without F_IN_PLACE); every stop points the region and env back at the frame.
F_IN_PLACE = 16
# the flag sets compiled with their flags as constants (no per-packet tests, dead paths removed): a
# replay's sink mode; BATCH_FN runs every other set in the generic loop
SPECIALISED = (F_SINK | F_RECORDS, F_SINK | F_RECORDS | F_UNCHANGED | F_IN_PLACE)
# A file of sink mode (a row of A_FILES): its buffer (base address, capacity, bytes used) and its stream,
# the pieces the file gets in order: u64[iov_cap][2] (address, length; a struct iovec), iov_n used.
F_BASE, F_CAP, F_POS, F_IOV, F_IOV_CAP, F_IOV_N = range(6)
FILE_WORDS = 6
SINK_STOP = 0x7FFF_FFFF
RECORD_ROOM = XDP_FRAME_SIZE + 16  # the most one record can take
MAX_TS_NS = (1 << 32) * 1_000_000_000 - 1  # pcap's seconds are 32 bits

STOP_DONE = 0
STOP_FAULT = 1
STOP_TOO_LONG = 2
STOP_OUT_FULL = 3
STOP_SINK = 4
STOP_FILES_FULL = 5

BATCH_FN = "xdpsim_xdp_batch"
# The packets arrive cold (read by another thread, megabytes ago): while packet i runs, the lines of packet
# i + PREFETCH_AHEAD that the loop and most programs read first (its record header, its first bytes) are
# prefetched (sink mode on ref.pcap: ~135 -> ~117 ns/packet; 8, 12, 16 and 24 ahead measured alike)
PREFETCH_AHEAD = 12
PREFETCH_AT = (-16, 48)


def build_module() -> ir.Module:
    """BATCH_FN: runs the loop compiled for the call's A_FLAGS when they are a SPECIALISED set, else the
    generic loop (flags tested per packet)."""
    m = ir.Module(name="xdpsim_batch")
    decls = (
        ir.Function(m, ir.FunctionType(VOID, [PTR, PTR, I64, I1]), "llvm.memcpy.p0.p0.i64"),
        ir.Function(m, ir.FunctionType(VOID, [PTR, I8, I64, I1]), "llvm.memset.p0.i64"),
        ir.Function(m, ir.FunctionType(I32, [PTR, PTR, I64]), "memcmp"),
        ir.Function(m, ir.FunctionType(VOID, [PTR, I32, I32, I32]), "llvm.prefetch.p0"),
    )
    generic = _loop(m, f"{BATCH_FN}_any", None, decls)
    loops = [(flags, _loop(m, f"{BATCH_FN}_{flags}", flags, decls)) for flags in SPECIALISED]
    f = ir.Function(m, ir.FunctionType(I64, [PTR, PTR]), BATCH_FN)
    env, args = f.args
    b = ir.IRBuilder(f.append_basic_block("entry"))
    flags = b.load(b.gep(args, [c64(A_FLAGS)], source_etype=I64), typ=I64)
    targets = [f.append_basic_block(f"flags{fl}") for fl, _ in loops]
    other = f.append_basic_block("other")
    sw = b.switch(flags, other)
    for (fl, fn), blk in zip(loops, targets, strict=True):
        sw.add_case(c64(fl), blk)
        b.position_at_end(blk)
        b.ret(b.call(fn, [env, args], tail=True))
    b.position_at_end(other)
    b.ret(b.call(generic, [env, args], tail=True))
    return m


def _loop(m: ir.Module, name: str, flags: int | None, decls: tuple[ir.Function, ...]) -> ir.Function:
    """The loop for A_FLAGS == `flags` (None: any flags, read from args)."""
    memcpy, memset, memcmp, prefetch = decls
    f = ir.Function(m, ir.FunctionType(I64, [PTR, PTR]), name)
    f.linkage = "internal"
    env, args = f.args
    entry, head, body, stop, done, advance = (
        f.append_basic_block(n) for n in ("entry", "head", "body", "stop", "done", "advance")
    )
    b = ir.IRBuilder(entry)

    def blocks(*names: str) -> list[ir.Block]:
        return [f.append_basic_block(x) for x in names]

    def slot(base: ir.Value, word: int) -> ir.Value:
        return b.gep(base, [c64(word)], source_etype=I64)

    def arg(word: int) -> ir.Value:
        return b.load(slot(args, word), typ=I64)

    def aptr(word: int) -> ir.Value:
        return b.inttoptr(arg(word), PTR)

    def env_set(word: int, v: ir.Value) -> None:
        b.store(v, slot(env, word))

    def env_get(word: int) -> ir.Value:
        return b.load(slot(env, word), typ=I64)

    def elem(word: int, i: ir.Value, ty: ir.Type) -> ir.Value:
        return b.gep(aptr(word), [i], source_etype=ty)

    def flag(bit: int) -> ir.Value:
        """Whether the call's flags have `bit` (a constant in a specialised loop, else tested at entry)."""
        return bits[bit]

    def set_stop(reason: int) -> None:
        b.store(c64(reason), slot(args, A_STOP))
        b.branch(stop)

    def zero_range(lo: ir.Value, hi: ir.Value) -> None:
        """memset(frame + lo, 0, hi - lo) when lo < hi."""
        with b.if_then(b.icmp_unsigned("<", lo, hi)):
            b.call(memset, [b.gep(frame, [lo], source_etype=I8), ir.Constant(I8, 0), b.sub(hi, lo),
                            ir.Constant(I1, 0)])

    def defer_clean() -> None:
        """The frame's dirty part ([min(dirty_lo, meta), max(dirty_hi, data_end))) zeroed later (F_IN_PLACE:
        the frame was not used)."""
        with b.if_then(b.not_(in_place)):
            lo, hi = dirty_range(b, env_get)
            b.store(lo, slot(args, A_PEND_LO))
            b.store(hi, slot(args, A_PEND_HI))

    def set_packet_base(base: ir.Value) -> None:
        """The PACKET region's host base (its region table row) and env FRAME: where the packet's frame is."""
        b.store(base, b.gep(table, [c64(PACKET * 24)], source_etype=I8), align=8)
        env_set(abi.E_FRAME, base)

    def back_to_frame() -> None:
        with b.if_then(in_place):
            set_packet_base(b.ptrtoint(frame, I64))

    def clean_pending() -> None:
        zero_range(arg(A_PEND_LO), arg(A_PEND_HI))
        b.store(c64(0), slot(args, A_PEND_LO))
        b.store(c64(0), slot(args, A_PEND_HI))

    def record(key: ir.Value, src: ir.Value, length: ir.Value, slot_index: ir.Value,
               orig: ir.Value | None = None, orig_len: ir.Value | None = None) -> None:
        """Sink mode: the pcap record of `length` bytes at `src` to `key`'s file. `orig` (F_RECORDS: the
        16 bytes before it are the input record's header) is the packet as read: when that record is
        byte for byte the one to write, the file's stream refers to it (no copy), else the record is
        written to the file's buffer. Either way it extends the stream's last piece when adjacent."""
        fno = b.sext(b.load(elem(A_ROUTE, key, I32), typ=I32), I64)
        fp = b.gep(aptr(A_FILES), [b.mul(fno, c64(FILE_WORDS))], source_etype=I64)
        posp = b.gep(fp, [c64(F_POS)], source_etype=I64)
        ts = b.load(elem(A_HDR_TS, i, I64), typ=I64)
        ts = b.select(b.icmp_signed("<", ts, c64(0)), c64(0), ts)
        ts = b.select(b.icmp_signed(">", ts, c64(MAX_TS_NS)), c64(MAX_TS_NS), ts)
        sec = b.udiv(ts, c64(1_000_000_000))
        nsec = b.sub(ts, b.mul(sec, c64(1_000_000_000)))
        len32 = b.trunc(length, I32)
        head = (b.trunc(sec, I32), b.trunc(nsec, I32), len32, len32)
        rec_len = b.add(length, c64(16))
        copy_blk, join = blocks("reccopy", "recjoin")
        pieces: list[tuple[ir.Value, ir.Block]] = []
        if orig is not None:
            assert orig_len is not None
            same_blk, ref_blk = blocks("recsame", "recref")
            records = flag(F_RECORDS)
            b.cbranch(b.and_(records, b.icmp_unsigned("==", orig_len, length)), same_blk, copy_blk)
            b.position_at_end(same_blk)
            in_hdr = b.gep(orig, [c64(-16)], source_etype=I8)
            same = ir.Constant(I1, 1)
            for k, v in enumerate(head):
                got = b.load(b.gep(in_hdr, [c64(4 * k)], source_etype=I8), typ=I32, align=1)
                same = b.and_(same, b.icmp_unsigned("==", got, v))
            bytes_blk, kept_blk = blocks("recbytes", "reckept")
            b.cbranch(same, kept_blk, copy_blk)
            b.position_at_end(kept_blk)
            unchanged = flag(F_UNCHANGED)
            b.cbranch(unchanged, ref_blk, bytes_blk)
            b.position_at_end(bytes_blk)
            diff = b.call(memcmp, [src, orig, length])
            b.cbranch(b.icmp_signed("==", diff, ir.Constant(I32, 0)), ref_blk, copy_blk)
            b.position_at_end(ref_blk)
            pieces.append((b.ptrtoint(in_hdr, I64), ref_blk))
            b.branch(join)
        else:
            b.branch(copy_blk)
        b.position_at_end(copy_blk)
        fpos = b.load(posp, typ=I64)
        dst = b.gep(b.inttoptr(b.load(fp, typ=I64), PTR), [fpos], source_etype=I8)
        for k, v in enumerate(head):
            b.store(v, b.gep(dst, [c64(4 * k)], source_etype=I8), align=1)
        b.call(memcpy, [b.gep(dst, [c64(16)], source_etype=I8), src, length, ir.Constant(I1, 0)])
        b.store(b.add(fpos, rec_len), posp)
        pieces.append((b.ptrtoint(dst, I64), copy_blk))
        b.branch(join)
        b.position_at_end(join)
        at = b.phi(I64)
        for v, blk in pieces:
            at.add_incoming(v, blk)
        # the stream: (address, length) pieces; this record extends the last one when it starts at its end
        iov = b.inttoptr(b.load(b.gep(fp, [c64(F_IOV)], source_etype=I64), typ=I64), PTR)
        np_ = b.gep(fp, [c64(F_IOV_N)], source_etype=I64)
        npieces = b.load(np_, typ=I64)
        last_len_p = b.gep(iov, [b.sub(b.mul(npieces, c64(2)), c64(1))], source_etype=I64)
        extend_chk, extend_blk, new_blk, done_blk = blocks("iovchk", "iovextend", "iovnew", "iovdone")
        b.cbranch(b.icmp_unsigned("!=", npieces, c64(0)), extend_chk, new_blk)
        b.position_at_end(extend_chk)
        last_len = b.load(last_len_p, typ=I64)
        last_at = b.load(b.gep(iov, [b.sub(b.mul(npieces, c64(2)), c64(2))], source_etype=I64), typ=I64)
        b.cbranch(b.icmp_unsigned("==", b.add(last_at, last_len), at), extend_blk, new_blk)
        b.position_at_end(extend_blk)
        b.store(b.add(last_len, rec_len), last_len_p)
        b.branch(done_blk)
        b.position_at_end(new_blk)
        b.store(at, b.gep(iov, [b.mul(npieces, c64(2))], source_etype=I64))
        b.store(rec_len, b.gep(iov, [b.add(b.mul(npieces, c64(2)), c64(1))], source_etype=I64))
        b.store(b.add(npieces, c64(1)), np_)
        b.branch(done_blk)
        b.position_at_end(done_blk)
        cp = elem(A_COUNTS, slot_index, I64)
        b.store(b.add(b.load(cp, typ=I64), c64(1)), cp)

    all_flags = arg(A_FLAGS) if flags is None else None
    bits = {bit: ir.Constant(I1, int(bool(flags & bit))) if all_flags is None
            else b.icmp_unsigned("!=", b.and_(all_flags, c64(bit)), c64(0))
            for bit in (F_REPEAT, F_SINK, F_RECORDS, F_UNCHANGED, F_IN_PLACE)}
    n = arg(A_N)
    start = arg(A_START)
    table = b.inttoptr(env_get(abi.E_TABLE), PTR)
    frame = aptr(A_FRAME)
    stack = aptr(A_STACK)
    headroom = arg(A_HEADROOM)
    fnp = b.inttoptr(arg(A_ENTRY), FN_TYPE.as_pointer())
    b.branch(head)

    b.position_at_end(head)
    i = b.phi(I64)
    i.add_incoming(start, entry)
    b.cbranch(b.icmp_unsigned("<", i, n), body, done)

    b.position_at_end(advance)
    i.add_incoming(b.add(i, c64(1)), advance)
    b.branch(head)

    b.position_at_end(body)
    # timing mode reuses element 0 of every per-packet array (no fresh pages to fault in)
    repeat = flag(F_REPEAT)
    sink = flag(F_SINK)
    in_place = flag(F_IN_PLACE)
    pi = b.select(repeat, c64(0), i)
    length = b.zext(b.load(elem(A_LENGTHS, pi, I32), typ=I32), I64)
    (sink_chk, files_loop, files_body, runt_chk, runt_blk, normal_chk, chk1, tl_blk, chk2, of_blk,
     run_blk) = blocks("sinkchk", "filesloop", "filesbody", "runtchk", "runt", "normalchk", "chk1",
                       "toolong", "chk2", "outfull", "run")
    b.cbranch(sink, sink_chk, normal_chk)

    # sink mode: every file buffer has a record's room, runts are written as they are (not run). A packet
    # writes at most one record (RECORD_ROOM) to one file: after a look at every buffer finds m bytes in
    # the fullest, the next m // RECORD_ROOM packets need no look (A_ROOM_LEFT counts them down)
    b.position_at_end(sink_chk)
    left_p = slot(args, A_ROOM_LEFT)
    left = b.load(left_p, typ=I64)
    counted = f.append_basic_block("roomcounted")
    b.cbranch(b.icmp_unsigned("!=", left, c64(0)), counted, files_loop)
    b.position_at_end(counted)
    b.store(b.sub(left, c64(1)), left_p)
    b.branch(runt_chk)
    b.position_at_end(files_loop)
    fi = b.phi(I64)
    least = b.phi(I64)
    fi.add_incoming(c64(0), sink_chk)
    least.add_incoming(c64(-1), sink_chk)
    looked = f.append_basic_block("roomlooked")
    b.cbranch(b.icmp_unsigned("<", fi, arg(A_NFILES)), files_body, looked)
    b.position_at_end(files_body)
    fp = b.gep(aptr(A_FILES), [b.mul(fi, c64(FILE_WORDS))], source_etype=I64)
    cap = b.load(b.gep(fp, [c64(F_CAP)], source_etype=I64), typ=I64)
    used = b.load(b.gep(fp, [c64(F_POS)], source_etype=I64), typ=I64)
    iov_room = b.sub(b.load(b.gep(fp, [c64(F_IOV_CAP)], source_etype=I64), typ=I64),
                     b.load(b.gep(fp, [c64(F_IOV_N)], source_etype=I64), typ=I64))
    room = b.udiv(b.sub(cap, used), c64(RECORD_ROOM))  # records that surely fit (bytes and pieces)
    room = b.select(b.icmp_unsigned("<", iov_room, room), iov_room, room)
    fi.add_incoming(b.add(fi, c64(1)), files_body)
    least.add_incoming(b.select(b.icmp_unsigned("<", room, least), room, least), files_body)
    full_blk = f.append_basic_block("filesfull")
    b.cbranch(b.icmp_unsigned("==", room, c64(0)), full_blk, files_loop)
    b.position_at_end(full_blk)
    set_stop(STOP_FILES_FULL)
    b.position_at_end(looked)
    b.store(b.sub(least, c64(1)), left_p)  # (>= 1 here; no files: all ones, as good as endless)
    b.branch(runt_chk)
    b.position_at_end(runt_chk)
    b.cbranch(b.icmp_unsigned("<", length, arg(A_MIN_LEN)), runt_blk, chk1)
    b.position_at_end(runt_blk)
    src = b.gep(aptr(A_PKTS), [b.load(elem(A_OFFSETS, i, I64), typ=I64)], source_etype=I8)
    short = arg(A_SHORT_KEY)
    record(short, src, length, arg(A_SHORT_SLOT), src, length)
    b.branch(advance)

    b.position_at_end(normal_chk)
    b.branch(chk1)
    b.position_at_end(chk1)
    too_long = b.icmp_unsigned(">", length, arg(A_MAX_LEN))
    b.cbranch(too_long, tl_blk, chk2)
    b.position_at_end(tl_blk)
    set_stop(STOP_TOO_LONG)
    b.position_at_end(chk2)
    room = b.sub(arg(A_OUT_CAP), arg(A_OUT_POS))
    out_full = b.icmp_unsigned("<", room, b.add(c64(XDP_FRAME_SIZE), arg(A_OUT_GAP)))
    b.cbranch(b.and_(out_full, b.not_(sink)), of_blk, run_blk)
    b.position_at_end(of_blk)
    set_stop(STOP_OUT_FULL)

    b.position_at_end(run_blk)
    with b.if_then(b.not_(repeat)):  # (timing mode has one packet)
        ahead = b.add(i, c64(PREFETCH_AHEAD))
        ahead = b.select(b.icmp_unsigned("<", ahead, n), ahead, i)
        later = b.gep(aptr(A_PKTS), [b.load(elem(A_OFFSETS, ahead, I64), typ=I64)], source_etype=I8)
        read, keep, data = (ir.Constant(I32, v) for v in (0, 3, 1))  # (keep: in every cache level)
        for at in PREFETCH_AT:
            b.call(prefetch, [b.gep(later, [c64(at)], source_etype=I8), read, keep, data])
    # F_IN_PLACE: the packet's frame is where it lies (its region base `headroom` bytes before it), else the
    # frame itself, the packet copied in
    here_blk, copy_in, framed = blocks("inplace", "copyin", "framed")
    b.cbranch(in_place, here_blk, copy_in)
    b.position_at_end(here_blk)
    src_here = b.gep(aptr(A_PKTS), [b.load(elem(A_OFFSETS, pi, I64), typ=I64)], source_etype=I8)
    base_here = b.sub(b.ptrtoint(src_here, I64), headroom)
    set_packet_base(base_here)
    frame_here = b.inttoptr(base_here, PTR)
    b.branch(framed)
    b.position_at_end(copy_in)
    with b.if_then(b.not_(repeat)):
        # the last packet's dirt that this packet's copy does not cover: [lo, headroom), [end, hi)
        plo, phi = arg(A_PEND_LO), arg(A_PEND_HI)
        low_end = b.select(b.icmp_unsigned("<", phi, headroom), phi, headroom)
        zero_range(plo, low_end)
        pkt_end = b.add(headroom, length)
        zero_range(b.select(b.icmp_unsigned(">", plo, pkt_end), plo, pkt_end), phi)
        b.store(c64(0), slot(args, A_PEND_LO))
        b.store(c64(0), slot(args, A_PEND_HI))
        src = b.gep(aptr(A_PKTS), [b.load(elem(A_OFFSETS, pi, I64), typ=I64)], source_etype=I8)
        b.call(memcpy, [b.gep(frame, [headroom], source_etype=I8), src, length, ir.Constant(I1, 0)])
    copied_end = b.block
    b.branch(framed)
    b.position_at_end(framed)
    pframe = b.phi(PTR)  # this packet's frame
    pframe.add_incoming(frame_here, here_blk)
    pframe.add_incoming(frame, copied_end)
    data_end = b.add(headroom, length)
    for w, v in (
        (abi.E_DATA, headroom),
        (abi.E_DATA_END, data_end),
        (abi.E_META, headroom),
        (abi.E_DIRTY_LO, headroom),
        (abi.E_DIRTY_HI, data_end),
    ):
        env_set(w, v)
    q = b.zext(b.load(elem(A_QUEUES, pi, I32), typ=I32), I64)
    env_set(abi.E_RXQ, q)
    ncpus = arg(A_NCPUS)  # (a division costs ~40 cycles: only when the queue is past the CPUs; a
    # select would compute it for every packet)
    env_set(abi.E_CPU, q)
    with b.if_then(b.icmp_unsigned(">=", q, ncpus), likely=False):
        env_set(abi.E_CPU, b.urem(q, ncpus))
    env_set(abi.E_NOW_NS, b.load(elem(A_TIMES, pi, I64), typ=I64))
    env_set(abi.E_FAULT, c64(0))
    env_set(abi.E_BUDGET, arg(A_BUDGET))
    env_set(abi.E_TAIL_CALLS, c64(0))
    env_set(abi.E_REDIR_KIND, c64(abi.REDIR_NONE))
    env_set(abi.E_CUR_PROG, arg(A_PROG))
    for k in range(len(abi.ENTRY_REGS)):  # a run starts with r0, r6-r9 zero
        env_set(abi.E_ENTRY_REGS + k, c64(0))
    env_set(abi.E_BATCH_INDEX, i)
    # region windows: packet [data_meta, data_end), stack frame 0
    b.store(b.trunc(headroom, I32), b.gep(table, [c64(PACKET * 24 + 8)], source_etype=I8), align=4)
    b.store(b.trunc(data_end, I32), b.gep(table, [c64(PACKET * 24 + 12)], source_etype=I8), align=4)
    b.store(ir.Constant(I32, STACK_SIZE - 512), b.gep(table, [c64(STACK * 24 + 8)], source_etype=I8), align=4)
    with b.if_then(b.not_(repeat)):
        zero = arg(A_STACK_ZERO)
        b.call(
            memset,
            [
                b.gep(stack, [b.sub(c64(STACK_SIZE), zero)], source_etype=I8),
                ir.Constant(I8, 0),
                zero,
                ir.Constant(I1, 0),
            ],
        )
    r0 = b.call(
        fnp, [env, arg(A_CTX), c64(0), c64(0), c64(0), c64(0), c64((STACK << REGION_SHIFT) | STACK_SIZE)]
    )
    faulted = b.icmp_unsigned("!=", env_get(abi.E_FAULT), c64(0))
    ok_blk, f_blk, sink_blk, rec_blk, out_blk = blocks("ok", "fault", "sinkkey", "record", "out")
    b.cbranch(faulted, f_blk, ok_blk)
    b.position_at_end(f_blk)
    with b.if_then(in_place):  # Python reports the fault from the frame: the packet (never changed) there
        b.call(memcpy, [b.gep(frame, [headroom], source_etype=I8), b.gep(pframe, [headroom], source_etype=I8),
                        length, ir.Constant(I1, 0)])
    set_stop(STOP_FAULT)

    b.position_at_end(ok_blk)
    b.cbranch(sink, sink_blk, out_blk)

    # sink mode: the action's key; a redirect (SINK_STOP) takes the normal output path, then stops
    b.position_at_end(sink_blk)
    act = b.and_(r0, c64(0xFFFF_FFFF))
    kidx = b.select(b.icmp_unsigned(">", act, c64(4)), c64(5), act)
    key = b.sext(b.load(elem(A_KEYS, kidx, I32), typ=I32), I64)
    b.cbranch(b.icmp_unsigned("==", key, c64(SINK_STOP)), out_blk, rec_blk)
    b.position_at_end(rec_blk)
    d, de = env_get(abi.E_DATA), env_get(abi.E_DATA_END)
    prog = env_get(abi.E_CUR_PROG)
    pkt_in = b.gep(aptr(A_PKTS), [b.load(elem(A_OFFSETS, i, I64), typ=I64)], source_etype=I8)
    record(key, b.gep(pframe, [d], source_etype=I8), b.sub(de, d), b.add(b.mul(prog, arg(A_NKEYS)), key),
           pkt_in, length)
    tp = slot(args, A_TAILS_SUM)
    b.store(b.add(b.load(tp, typ=I64), env_get(abi.E_TAIL_CALLS)), tp)
    defer_clean()
    b.branch(advance)

    b.position_at_end(out_blk)
    b.store(r0, elem(A_RETVAL, pi, I64))
    d, de = env_get(abi.E_DATA), env_get(abi.E_DATA_END)
    olen = b.select(repeat, c64(0), b.sub(de, d))
    pos = b.add(arg(A_OUT_POS), b.select(repeat, c64(0), arg(A_OUT_GAP)))
    with b.if_then(b.not_(repeat)):
        b.call(
            memcpy,
            [
                b.gep(aptr(A_OUT), [pos], source_etype=I8),
                b.gep(pframe, [d], source_etype=I8),
                olen,
                ir.Constant(I1, 0),
            ],
        )
    b.store(pos, elem(A_OUT_OFF, pi, I64))
    b.store(b.trunc(olen, I32), elem(A_OUT_LEN, pi, I32))
    b.store(b.add(pos, olen), slot(args, A_OUT_POS))
    b.store(b.trunc(env_get(abi.E_REDIR_KIND), I8), elem(A_REDIR_KIND, pi, I8))
    kind = env_get(abi.E_REDIR_KIND)
    is_map = b.icmp_unsigned("==", kind, c64(abi.REDIR_MAP))
    b.store(
        b.trunc(b.select(is_map, env_get(abi.E_REDIR_MAP), env_get(abi.E_REDIR_INDEX)), I32),
        elem(A_REDIR_A, pi, I32),
    )
    b.store(b.trunc(env_get(abi.E_REDIR_INDEX), I32), elem(A_REDIR_B, pi, I32))
    for word, env_word in ((A_PROG_OUT, abi.E_CUR_PROG), (A_TAILS_OUT, abi.E_TAIL_CALLS)):
        with b.if_then(b.icmp_unsigned("!=", arg(word), c64(0))):  # optional outputs
            b.store(b.trunc(env_get(env_word), I32), elem(word, pi, I32))
    with b.if_then(b.not_(repeat)):
        defer_clean()
    sink_stop = f.append_basic_block("sinkstop")
    b.cbranch(sink, sink_stop, advance)
    b.position_at_end(sink_stop)
    set_stop(STOP_SINK)

    b.position_at_end(stop)  # (the frame as zeroed as Python expects it: all but a faulting packet)
    back_to_frame()
    clean_pending()
    b.ret(i)
    b.position_at_end(done)
    back_to_frame()
    clean_pending()
    b.store(c64(STOP_DONE), slot(args, A_STOP))
    b.ret(n)
    return f


def dirty_range(b: ir.IRBuilder, env_get) -> tuple[ir.Value, ir.Value]:
    """[min(dirty_lo, meta), max(dirty_hi, data_end)): what the packet and adjusts could touch."""
    lo = env_get(abi.E_DIRTY_LO)
    hi = env_get(abi.E_DIRTY_HI)
    meta, de = env_get(abi.E_META), env_get(abi.E_DATA_END)
    lo = b.select(b.icmp_unsigned("<", meta, lo), meta, lo)
    hi = b.select(b.icmp_unsigned(">", de, hi), de, hi)
    return lo, hi


def compile_batch(tm: llvm.TargetMachine) -> bytes:
    mod = llvm.parse_assembly(str(build_module()))
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    mod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=2)
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return tm.emit_object(mod)
