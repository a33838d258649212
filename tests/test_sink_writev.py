"""pipeline/writev.py: the sink writer's hybrid writes (long pieces by reference in writevs, short ones
copied together into a stage) write exactly the pieces' bytes, in order, through short writes; errors
reach the replay's thread."""

from __future__ import annotations

import ctypes
import errno
import os
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xdpsim.pipeline import sinks, writev

pytestmark = pytest.mark.skipif(not writev.available(), reason="llvmlite cannot compile writev's plan here")


def _stream(lengths: list[int], gaps: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray, bytes]:
    """Pieces of the given lengths in one buffer (each after its gap: 0 makes it adjacent to the one
    before), their iovecs and the bytes they make in order."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, 256, sum(lengths) + sum(gaps) + 1, dtype=np.uint8)
    iov = np.zeros((len(lengths), 2), np.uint64)
    want, pos = [], 0
    for k, (length, gap) in enumerate(zip(lengths, gaps, strict=True)):
        pos += gap
        iov[k] = (src.ctypes.data + pos, length)
        want.append(src[pos : pos + length].tobytes())
        pos += length
    return src, iov, b"".join(want)


def _written(path: Path, iov: np.ndarray, stage: np.ndarray, **kw: int) -> bytes:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        writev.write_pieces(fd, iov, len(iov), stage, **kw)
    finally:
        os.close(fd)
    return path.read_bytes()


def _iovecs(addr: int, count: int) -> list[tuple[int, int]]:
    raw = np.ctypeslib.as_array((ctypes.c_uint64 * (2 * count)).from_address(addr))
    return [(int(a), int(n)) for a, n in raw.reshape(count, 2)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), stage_size=st.sampled_from([64, 100, 4096]), max_iov=st.sampled_from([1, 2, 3, 1024]),
       max_bytes=st.sampled_from([1, 150, 1 << 20]))
def test_the_bytes_of_the_pieces_in_order(tmp_path: Path, data: st.DataObject, stage_size: int,
                                          max_iov: int, max_bytes: int) -> None:
    min_ref = data.draw(st.integers(1, stage_size), label="min_ref")
    lengths = data.draw(st.lists(st.one_of(st.integers(max(0, min_ref - 3), min_ref + 3),
                                           st.integers(0, 3 * stage_size)), max_size=40), label="lengths")
    gaps = data.draw(st.lists(st.sampled_from([0, 0, 1, 7, 64]), min_size=len(lengths),
                              max_size=len(lengths)), label="gaps")
    src, iov, want = _stream(lengths, gaps)
    stage = np.zeros(stage_size, np.uint8)
    got = _written(tmp_path / "out", iov, stage, min_ref=min_ref, max_iov=max_iov, max_bytes=max_bytes)
    assert got == want
    del src


def test_long_pieces_go_by_reference_short_ones_through_the_stage(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The hybrid itself: every piece at least min_ref long is an iovec of its own (its own address: not
    copied), and runs of shorter ones are one iovec each, in the stage."""
    lengths = [10, 20, 600, 5, 512, 511, 1, 3000, 0, 40, 700, 700]
    _src, iov, want = _stream(lengths, [3] * len(lengths))
    stage = np.zeros(1 << 12, np.uint8)
    seen: list[tuple[int, int]] = []
    real = writev._writev

    def spy(fd: int, addr: int, count: int) -> int:
        seen.extend(_iovecs(addr, count))
        return real(fd, addr, count)

    monkeypatch.setattr(writev, "_writev", spy)
    assert _written(tmp_path / "out", iov, stage, min_ref=512) == want
    s0 = stage.ctypes.data
    pieces = [(int(a), int(n)) for a, n in iov]
    assert seen == [(s0, 30), pieces[2], (s0 + 30, 5), pieces[4], (s0 + 35, 512), pieces[7], (s0 + 547, 40),
                    pieces[10], pieces[11]]


def test_a_full_stage_or_iovec_table_starts_the_next_writev(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[tuple[int, int]]] = []
    real = writev._writev

    def spy(fd: int, addr: int, count: int) -> int:
        calls.append(_iovecs(addr, count))
        return real(fd, addr, count)

    monkeypatch.setattr(writev, "_writev", spy)
    _src, iov, want = _stream([30, 30, 30, 100, 100, 100, 30], [1] * 7)
    stage = np.zeros(64, np.uint8)
    assert _written(tmp_path / "out", iov, stage, min_ref=64, max_iov=2) == want
    # stage of 64 holds two 30s; the third starts a new stage-full; two iovecs per writev
    assert [[n for _, n in c] for c in calls] == [[60], [30, 100], [100, 100], [30]]
    calls.clear()
    # at most 150 bytes per writev: the 200 is split (its first 150 by reference, the 50 left is short
    # and copied, with the 40s after it)
    _src, iov, want = _stream([30, 30, 100, 200, 40, 40, 40, 40], [1] * 8)
    assert _written(tmp_path / "out", iov, np.zeros(4096, np.uint8), min_ref=64, max_bytes=150) == want
    assert [[n for _, n in c] for c in calls] == [[60], [100], [150], [130], [80]]


@pytest.mark.parametrize("seed", range(6))
def test_short_writes_resume_where_they_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                seed: int) -> None:
    """A writev that writes less than asked (as the kernel may: a signal, a full pipe, a file size limit)
    is continued from the byte where it stopped, mid-iovec included."""
    rng = random.Random(seed)
    lengths = [rng.choice([1, 50, 200, 511, 512, 513, 4000, 9000]) for _ in range(300)]
    _src, iov, want = _stream(lengths, [rng.choice([0, 5]) for _ in lengths], seed)
    real, shorts = writev._writev, [0]

    def short(fd: int, addr: int, count: int) -> int:
        """writes a random prefix of the iovecs' bytes (at least one byte)"""
        vecs = _iovecs(addr, count)
        total = sum(n for _, n in vecs)
        keep, cut = rng.randint(1, total), []
        for a, n in vecs:
            take = min(n, keep - sum(m for _, m in cut))
            if take <= 0:
                break
            cut.append((a, take))
        shorts[0] += sum(n for _, n in cut) < total
        arr = np.array(cut, np.uint64)
        return real(fd, arr.ctypes.data, len(cut))

    monkeypatch.setattr(writev, "_writev", short)
    assert _written(tmp_path / "out", iov, np.zeros(1 << 14, np.uint8), min_ref=512, max_iov=16) == want
    assert shorts[0] > 10


def test_a_writev_writing_nothing_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writev, "_writev", lambda fd, addr, count: 0)
    _src, iov, _ = _stream([10, 1000], [0, 0])
    with pytest.raises(OSError, match="wrote nothing"):
        _written(tmp_path / "out", iov, np.zeros(64, np.uint8), min_ref=64)


class _FakeLibc:
    """writev failing with the given errnos first, then the real one."""

    def __init__(self, errnos: list[int]) -> None:
        self.errnos = errnos
        self.real = writev._libc

    def writev(self, fd: int, addr: int, count: int) -> int:
        if self.errnos:
            ctypes.set_errno(self.errnos.pop(0))
            return -1
        return self.real.writev(fd, addr, count)


def test_interrupted_writev_is_retried_other_errors_raised(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _src, iov, want = _stream([10, 1000, 20], [0, 4, 4])
    monkeypatch.setattr(writev, "_libc", _FakeLibc([errno.EINTR, errno.EINTR]))
    assert _written(tmp_path / "a", iov, np.zeros(64, np.uint8), min_ref=64) == want
    monkeypatch.setattr(writev, "_libc", _FakeLibc([errno.ENOSPC]))
    with pytest.raises(OSError) as e:
        _written(tmp_path / "b", iov, np.zeros(64, np.uint8), min_ref=64)
    assert e.value.errno == errno.ENOSPC


def test_bad_arguments(tmp_path: Path) -> None:
    _src, iov, _ = _stream([10], [0])
    with pytest.raises(ValueError, match="min_ref"):
        _written(tmp_path / "a", iov, np.zeros(64, np.uint8), min_ref=65)
    with pytest.raises(ValueError, match="max_iov"):
        _written(tmp_path / "b", iov, np.zeros(64, np.uint8), max_iov=writev.IOV_MAX + 1, min_ref=8)


@pytest.mark.parametrize("threaded", [False, True])
def test_record_buffers_surface_a_disk_full_writev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   threaded: bool) -> None:
    """ENOSPC in the writer's writev is raised in the replay's thread (at the drain)."""
    monkeypatch.setattr(writev, "_libc", _FakeLibc([errno.ENOSPC]))
    s = sinks.Sinks(tmp_path, threaded=threaded)
    rb = s.records()
    with pytest.raises(OSError) as e:
        rb.append(rb.slot("eth0", "pass", None), b"x" * 100, 0)
        rb.drain()
    assert e.value.errno == errno.ENOSPC
    s.close()


@pytest.mark.parametrize("native", [True, False])
def test_record_buffers_write_the_same_records_either_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         native: bool) -> None:
    """Sinks through writev (short and long records, parts flushed mid-stream) or the plain gather (where
    llvmlite cannot compile the plan) give the same files."""
    from xdpsim.io import open_capture

    if not native:
        monkeypatch.setattr(writev, "available", lambda: False)
    monkeypatch.setattr(sinks.RecordBuffers, "SIZE", 1 << 13)
    rng = random.Random(5)
    s = sinks.Sinks(tmp_path, threaded=True)
    rb = s.records()
    want: list[tuple[bytes, int]] = []
    for i in range(400):
        data = bytes([i % 251]) * rng.choice([14, 60, 700, 1500, 3000])
        rb.append(rb.slot("eth0", "pass", None), data, i)
        want.append((data, i))
    s.close()
    assert [(p.data, p.ts_ns) for p in open_capture(tmp_path / "pass.pcap")] == want


def test_a_piece_longer_than_a_writev_is_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(the page cache takes 2 MiB folios for big writes: max_bytes keeps writevs at 1 MiB by default)"""
    calls: list[list[tuple[int, int]]] = []
    real = writev._writev

    def spy(fd: int, addr: int, count: int) -> int:
        calls.append(_iovecs(addr, count))
        return real(fd, addr, count)

    monkeypatch.setattr(writev, "_writev", spy)
    _src, iov, want = _stream([10000, 3000], [0, 0])
    at = int(iov[0, 0])
    assert _written(tmp_path / "out", iov, np.zeros(1024, np.uint8), min_ref=512, max_bytes=4096) == want
    assert calls == [[(at, 4096)], [(at + 4096, 4096)], [(at + 8192, 1808)], [(at + 10000, 3000)]]
    calls.clear()
    _src, iov, want = _stream([3 << 20], [0])
    assert _written(tmp_path / "out", iov, np.zeros(1024, np.uint8)) == want
    assert [n for c in calls for _, n in c] == [1 << 20] * 3


def test_the_gather_fallback_writes_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without llvmlite's plan: pieces gathered into the stage, longer ones written a stage-full at a time."""
    monkeypatch.setattr(writev, "available", lambda: False)
    monkeypatch.setattr(sinks, "_STAGE", 64)
    sizes: list[int] = []
    real = os.write

    def spy(fd: int, data: memoryview) -> int:
        sizes.append(len(data))
        return real(fd, data)

    monkeypatch.setattr(os, "write", spy)
    _src, iov, want = _stream([10, 200, 30, 64, 5, 40, 40], [0, 3, 3, 0, 0, 1, 1])
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        sinks._write_all(fd, iov, len(iov))
    finally:
        os.close(fd)
    assert (tmp_path / "out").read_bytes() == want
    assert max(sizes) <= 64 and len(sizes) > 5
