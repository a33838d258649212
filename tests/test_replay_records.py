"""Sink mode with a pcap file's records in place (jit.batch F_RECORDS, RecordBuffers.hold): a record the
program leaves as it is goes to its file straight from the capture's read buffer. The outputs are the
same bytes as when every record is copied, whatever the program changes (bytes, lengths), whatever the
capture's timestamps (nanoseconds, microseconds) and lengths (cut by a snaplen), across many batches and
buffer flushes in mid-batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_pipeline_fast import PCAPS, TIMING, outputs

from xdpsim.io import PcapWriter, open_capture
from xdpsim.pipeline import fastpath, replay, sinks
from xdpsim.pipeline.replay import replay_to_dir

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"


def _capture(path: Path, fmt: str) -> Path:
    """mixed.pcap's frames, three times over: nanosecond or microsecond timestamps, or cut (orig_len
    longer than the bytes kept)."""
    frames = [p for p in open_capture(PCAPS / "mixed.pcap")]
    with PcapWriter(path, nanosecond=fmt != "us") as w:
        t = 1_700_000_000_123_456_789
        for k in range(3 * len(frames)):
            p = frames[k % len(frames)]
            w.write(p.data, t + 1_000_003 * k, len(p.data) + (9 if fmt == "cut" and k % 2 else 0))
    return path


def _replay(spec: str, cap: Path, out: Path, records: bool, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setattr(fastpath, "RECORDS", records)
    stats = replay_to_dir(spec, cap, out, engine="jit")
    for k in TIMING:
        stats.pop(k)
    return stats


@pytest.mark.parametrize("fmt", ["ns", "us", "cut"])
@pytest.mark.parametrize("prog", ["parser.o", "rewrite.o:swap_tx", "rewrite.o:encap_ipip"])
def test_records_in_place_write_the_same_bytes_as_copies(tmp_path: Path, prog: str, fmt: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # small batches and buffers: many batches, streams handed over in mid-batch while the batch is held
    monkeypatch.setattr(replay, "FAST_BATCH", 97)
    monkeypatch.setattr(sinks.RecordBuffers, "SIZE", 1 << 14)
    monkeypatch.setattr(sinks.RecordBuffers, "IOV", 5)
    cap = _capture(tmp_path / "c.pcap", fmt)
    spec = str(PROGRAMS / prog)
    a = _replay(spec, cap, tmp_path / "in-place", True, monkeypatch)
    b = _replay(spec, cap, tmp_path / "copied", False, monkeypatch)
    assert json.dumps(a) == json.dumps(b)
    assert a["packets"] == 3 * len(list(open_capture(PCAPS / "mixed.pcap")))
    assert outputs(tmp_path / "in-place") == outputs(tmp_path / "copied")


@pytest.mark.parametrize("records", [True, False])
def test_unchanged_records_are_not_copied(tmp_path: Path, records: bool,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """parser.o changes no packet: with the records in place no record is copied into a buffer (each
    stream refers to the capture's bytes), without them every one is."""
    copied: list[int] = []
    pieces: list[int] = []
    flush = sinks.RecordBuffers._flush

    def spy(self: sinks.RecordBuffers, s: int) -> None:
        copied.append(int(self.files[s, 2]))  # (F_POS: bytes written to the buffer)
        pieces.append(int(self.files[s, 5]))  # (F_IOV_N)
        flush(self, s)

    monkeypatch.setattr(sinks.RecordBuffers, "_flush", spy)
    cap = _capture(tmp_path / "c.pcap", "ns")
    _replay(str(PROGRAMS / "parser.o"), cap, tmp_path / "out", records, monkeypatch)
    assert sum(pieces) > 0
    assert (sum(copied) == 0) == records
