"""The batch reader's buffers are reused: a consumer that drops its batches makes the reader allocate a
few read buffers and column arrays, not one per batch (fresh pages cost the reader thread a page
fault and a clear per 4 KiB), and a consumer that keeps its batches still sees every batch's own bytes."""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
import pytest
from pipeline_setup import numbered_capture

from xdpsim.io import read_batches


def _distinct(seen: list[weakref.ref], arr: np.ndarray) -> None:
    """Adds `arr` to `seen` unless it is one of them (objects, not addresses: a freed array's address
    may be handed out again)."""
    if not any(r() is arr for r in seen):
        seen.append(weakref.ref(arr))


@pytest.mark.parametrize("prefetch", [False, True])
def test_dropped_batches_give_their_buffers_back(tmp_path: Path, prefetch: bool,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDPSIM_MMAP", "0")  # (read buffers: mapped windows are one per batch)
    cap = numbered_capture(tmp_path / "c.pcap", 2000)
    columns: list[weakref.ref] = []
    buffers: list[weakref.ref] = []
    count = 0
    for b in read_batches(cap, 100, prefetch=prefetch):
        assert isinstance(b.offsets.base, np.ndarray) and isinstance(b.data.base, np.ndarray)
        _distinct(columns, b.offsets.base)
        _distinct(buffers, b.data.base)
        assert int.from_bytes(b.packet(0)[20:24], "big") == b.index
        count += 1
    assert count == 20
    # the consumer holds one batch, the reader (prefetch) makes the next, one more is in between
    assert len(columns) <= 3, len(columns)
    assert len(buffers) <= 4, len(buffers)


def test_kept_batches_keep_their_bytes(tmp_path: Path) -> None:
    cap = numbered_capture(tmp_path / "c.pcap", 2000)
    kept = list(read_batches(cap, 100, prefetch=True))
    assert [b.index for b in kept] == list(range(0, 2000, 100))
    for b in kept:
        got = [int.from_bytes(b.packet(i)[20:24], "big") for i in range(len(b))]
        assert got == list(range(b.index, b.index + 100))
        assert b.offsets.tolist() == sorted(b.offsets.tolist())
