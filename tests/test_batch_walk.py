"""walk_records: the native walk's header fields equal the Python walk's, in both byte orders."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from xdpsim.io.native import walk_records


def _image(endian: str, records: list[tuple[int, int, bytes, int]]) -> np.ndarray:
    body = b"".join(struct.pack(endian + "IIII", s, f, len(d), o) + d for s, f, d, o in records)
    return np.frombuffer(b"\0" * 24 + body + b"\x01\x02\x03", dtype=np.uint8)  # a torn tail


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("scale", [1, 1000])
def test_walk_fields_native_equals_python(endian: str, scale: int) -> None:
    rng = np.random.default_rng(7)
    recs = [(int(rng.integers(0, 2**32)), int(rng.integers(0, 10**6)),
             bytes(rng.integers(0, 256, ln, np.uint8)), int(rng.integers(0, 2**32)))
            for ln in rng.integers(0, 300, 50).tolist()]
    buf = _image(endian, recs)
    for count in (1, 7, 50, 64):
        a = walk_records(buf, 24, count, endian, scale, use_native=True)
        b = walk_records(buf, 24, count, endian, scale, use_native=False)
        assert a.end == b.end
        for x, y in zip(a[:4], b[:4], strict=True):
            assert x.tolist() == y.tolist()
        k = min(count, 50)
        assert a.caplen.tolist() == [len(d) for _s, _f, d, _o in recs[:k]]
        assert a.orig.tolist() == [o for *_x, o in recs[:k]]
        assert a.ts_ns.tolist() == [s * 10**9 + f * scale for s, f, _d, _o in recs[:k]]


@pytest.mark.parametrize("endian", ["<", ">"])
def test_walk_counts_the_records_to_warn_about(endian: str) -> None:
    """`odd`: records longer than the limit or with orig_len below caplen, in both walks, over steps."""
    from xdpsim.io.native import RecordWalker

    lens = [10, 120, 60, 200, 30, 101, 100]
    origs = [10, 500, 59, 100, 30, 101, 99]  # short: 60/59, 200/100, 100/99; over 100: 120, 200, 101
    recs = [(i, 0, bytes(n), o) for i, (n, o) in enumerate(zip(lens, origs, strict=True))]
    buf = _image(endian, recs)
    for native in (True, False):
        w = walk_records(buf, 24, 100, endian, 1, use_native=native, limit=100)
        assert len(w.starts) == 7 and w.odd == 5, (native, w.odd)
        walker = RecordWalker(100, endian, 1, native, limit=100)
        pos = 24
        for have in (24 + 16 + 10 + 16 + 120, len(buf)):  # two steps: the counts add up
            pos = walker.step(buf, have, pos)
        assert walker.result(pos).odd == 5
        assert walk_records(buf, 24, 100, endian, 1, use_native=native).odd == 3  # (the default limit)


def _gapped(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n random packets, each after 16 free bytes (run_batch(out_gap=16)'s layout), some apart."""
    lengths = rng.integers(0, 200, n)
    spare = np.where(rng.random(n) < 0.2, rng.integers(1, 40, n), 0)  # breaks in the runs
    offsets = np.cumsum(lengths + 16 + spare) - lengths
    data = rng.integers(0, 256, int(offsets[-1] + lengths[-1]) + 5, np.uint8)
    return data, offsets, lengths


@pytest.mark.parametrize("order", ["ascending", "shuffled", "subset"])
def test_write_in_place_equals_interleaved(monkeypatch, tmp_path, order: str) -> None:
    from xdpsim.io import pcap
    from xdpsim.io.pcap import PcapWriter

    calls: list[int] = []
    real = pcap.put_headers
    monkeypatch.setattr(pcap, "put_headers", lambda out, h, o: calls.append(len(o)) or real(out, h, o))

    rng = np.random.default_rng(3)
    data, offsets, lengths = _gapped(rng, 300)
    idx = np.arange(300)
    if order == "shuffled":
        idx = rng.permutation(300)
    elif order == "subset":
        idx = np.flatnonzero(rng.random(300) < 0.7)
    ts = rng.integers(0, 2**40, len(idx))
    orig = lengths[idx] + rng.integers(0, 3, len(idx))
    for snaplen in (65535, 100):  # (100: records cut, written the ordinary way)
        paths = [tmp_path / f"{order}-{snaplen}-{g}.pcap" for g in (False, True)]
        for g, path in zip((False, True), paths, strict=True):
            with PcapWriter(path, snaplen=snaplen) as w:
                w.write(b"first", 5)
                w.write_batch(data.copy(), offsets[idx], lengths[idx], ts, orig, gaps=g)
                w.write_batch(data.copy(), offsets[idx][:7], lengths[idx][:7], ts[:7], gaps=g)
                w.write(b"last", 6)
        assert paths[0].read_bytes() == paths[1].read_bytes()
        assert bool(calls) == (snaplen == 65535)  # the in-place path ran exactly where it applies
        calls.clear()


@pytest.mark.parametrize("libc", [True, False])
def test_writev_all_resumes_short_writes(monkeypatch, tmp_path, libc: bool) -> None:
    import os

    from xdpsim.io import pcap

    real = pcap._writev
    if not libc:
        monkeypatch.setattr(pcap, "_libc_writev", None)  # the os.writev fallback

    def short(fd: int, iov: np.ndarray) -> int:  # at most 7 bytes per call
        first = iov[:1].copy()
        first[0, 1] = min(int(first[0, 1]), 7)
        return real(fd, first)

    monkeypatch.setattr(pcap, "_writev", short)
    monkeypatch.setattr(pcap, "_IOV_MAX", 3)
    pieces = [bytes([i]) * (i % 11 + 1) for i in range(40)]
    buf = np.frombuffer(b"".join(p + b"--" for p in pieces), np.uint8).copy()
    sizes = np.array([len(p) + 2 for p in pieces])
    starts = np.cumsum(sizes) - sizes
    path = tmp_path / "w.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        pcap._writev_all(fd, buf, starts, starts + sizes - 2)  # each piece without its "--"
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(pieces)


def test_run_batch_out_gap_leaves_room_before_each_output() -> None:
    from pathlib import Path

    import xdpsim

    root = Path(__file__).resolve().parent.parent
    obj = xdpsim.load(root / "programs" / "parser.o", engine="jit")
    jit = obj._engine("jit")
    pid = obj.programs["packet_parser"].id
    rng = np.random.default_rng(5)
    eth_ip = bytes.fromhex("ffffffffffff0000000000010800") + bytes.fromhex("450000280000000040060000")
    packets = [eth_ip + bytes(rng.integers(0, 256, int(n), np.uint8)) for n in rng.integers(0, 120, 40)]
    packets[7] = bytes(4000)  # too long for the frame: run_xdp's path inside the batch
    lengths = np.array([len(p) for p in packets], np.uint32)
    offsets = (np.cumsum(lengths) - lengths).astype(np.int64)
    data = np.frombuffer(b"".join(packets), np.uint8)
    plain = jit.run_batch(obj.runtime, pid, data, offsets, lengths, chunk=9)
    want = [plain.packet(i) for i in range(len(packets))]
    gapped = jit.run_batch(obj.runtime, pid, data, offsets, lengths, chunk=9, out_gap=16)
    assert [gapped.packet(i) for i in range(len(packets))] == want
    ends = gapped.out_offset + gapped.out_length
    assert int(gapped.out_offset[0]) == 16
    assert (gapped.out_offset[1:] - ends[:-1] == 16).all()
    assert len(gapped.out) == int(ends[-1])
