"""read_batches(first=): a pcap file's first batch is small, each next one twice the last up to batch_size,
with the same packets, counters and warnings as fixed-size batches (mapped windows and read buffers)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from pipeline_setup import numbered_capture

from xdpsim.io import read_batches
from xdpsim.io.batch import load_code


def _packets(r: object) -> list[bytes]:
    return [b.packet(i) for b in r for i in range(len(b))]  # type: ignore[attr-defined]


@pytest.mark.parametrize("mmap", ["0", "1"])
@pytest.mark.parametrize("prefetch", [False, True])
def test_ramp_sizes_and_same_packets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mmap: str,
                                     prefetch: bool) -> None:
    monkeypatch.setenv("XDPSIM_MMAP", mmap)
    cap = numbered_capture(tmp_path / "c.pcap", 12000)  # ~1.5 MB: mapped where the lease allows
    with open(cap, "ab") as f:
        f.write(b"\x00" * 20)  # a truncated record header at the end: a warning
    ramp = read_batches(cap, 1000, prefetch=prefetch, first=7)
    sizes = [len(b) for b in ramp]
    assert sizes[:9] == [7, 14, 28, 56, 112, 224, 448, 896, 1000]
    plain = read_batches(cap, 1000)
    total = sum(len(b) for b in read_batches(cap, 1000))  # (12000, and the empty record of the tail)
    assert all(s == 1000 for s in sizes[9:-1]) and sum(sizes) == total == 12001
    assert _packets(read_batches(cap, 1000, first=7)) == _packets(plain)
    for name in ("records", "packets", "skipped", "offset"):
        assert getattr(ramp, name) == getattr(plain, name), name
    assert [str(w) for w in ramp.warnings] == [str(w) for w in plain.warnings] and len(plain.warnings) == 1


def test_first_bigger_than_batch_size_is_batch_size(tmp_path: Path) -> None:
    cap = numbered_capture(tmp_path / "c.pcap", 250)
    assert [len(b) for b in read_batches(cap, 100, first=1000)] == [100, 100, 50]


def test_damage_inside_the_ramp(tmp_path: Path) -> None:
    """A record whose caplen is past any snap length: the batches before it, then its CaptureError."""
    from xdpsim.errors import CaptureError

    cap = numbered_capture(tmp_path / "c.pcap", 100)
    data = bytearray(cap.read_bytes())
    at = 24 + sum(16 + 60 + i % 128 for i in range(20))  # record 20's header
    data[at + 8 : at + 12] = struct.pack("<I", 1 << 30)
    cap.write_bytes(bytes(data))
    got = []
    with pytest.raises(CaptureError) as e:
        for b in read_batches(cap, 64, first=4, prefetch=True):
            got.append(len(b))
    assert got == [4, 8, 8] and e.value.offset == at  # 4 + 8, then the 8 records before the damage


def test_load_code_loads_the_walk() -> None:
    load_code()  # (no error; the walk's code is then there for the reader thread)
    from xdpsim.io import native

    assert native._native() is not None


@pytest.mark.parametrize("first", [None, 10])
def test_a_capture_shrinking_between_reads_gives_its_whole_records_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: int | None) -> None:
    """Read (not mapped): the batch the short read falls in gives its whole records before the offset where
    the data stops, then the CaptureError at that offset."""
    from xdpsim.errors import CaptureError

    monkeypatch.setenv("XDPSIM_MMAP", "0")
    cap = numbered_capture(tmp_path / "c.pcap", 2000)
    ends = [24]
    for i in range(2000):
        ends.append(ends[-1] + 16 + 60 + i % 128)
    cut = ends[150] + 30  # inside record 150
    got: list[int] = []
    with pytest.raises(CaptureError) as e:
        for b in read_batches(cap, 100, first=first):
            got.extend(int.from_bytes(b.packet(i)[20:24], "big") for i in range(len(b)))
            if len(got) == len(b):  # after the first batch
                with open(cap, "r+b") as f:
                    f.truncate(cut)
    assert got == list(range(150)) and e.value.offset == cut and "shrank" in str(e.value)


@pytest.mark.parametrize("mmap", ["0", "1"])
def test_reader_flags_sorted_times_and_one_interface(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     mmap: str) -> None:
    monkeypatch.setenv("XDPSIM_MMAP", mmap)
    cap = numbered_capture(tmp_path / "c.pcap", 12000)
    data = bytearray(cap.read_bytes())
    at = 24 + sum(16 + 60 + i % 128 for i in range(2500))  # record 2500 (third batch) a second back
    data[at : at + 4] = struct.pack("<I", 1_700_000_000 + 2500 - 2)
    cap.write_bytes(bytes(data))
    batches = list(read_batches(cap, 1000, prefetch=True))
    assert all(b.one_interface for b in batches)
    assert [b.ts_sorted for b in batches] == [b.index != 2000 for b in batches]
    for b in batches:  # the flag says what a pass over the times says
        assert b.ts_sorted == bool((b.ts_ns[1:] >= b.ts_ns[:-1]).all())


def test_clock_trusts_the_flag_only_for_the_pass() -> None:
    import numpy as np

    from xdpsim.pipeline.replay import Clock

    c = Clock()
    ts = np.array([5, 6, 7], np.int64)
    assert c.times(ts, True) is ts and c.last == 7
    back = np.array([6, 8, 9], np.int64)  # sorted, but starts before the last batch's end: clamped
    assert c.times(back, True).tolist() == [7, 8, 9] and c.clamped == 1
