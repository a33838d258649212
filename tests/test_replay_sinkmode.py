"""The JIT replay's sink mode (native routing of records to the sink files) and the capture reader's
read (not map) path: same outputs as the other paths, and a capture truncated mid-replay is an error
naming the file and the offset, never a crash."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from test_pipeline_fast import (  # noqa: F401 - every_obj: the fixture
    EVERY_SPEC,
    PCAPS,
    TIMING,
    every_capture,
    every_obj,
    outputs,
)

from xdpsim.errors import CaptureError
from xdpsim.io import PcapWriter, read_batches
from xdpsim.pipeline import fastpath, sinks
from xdpsim.pipeline.replay import Replay, replay_to_dir

_SINKS_INIT = sinks.Sinks.__init__


def _replay(spec: Path, cap: Path, out: Path, sink: bool, monkeypatch: pytest.MonkeyPatch,
            threaded: bool = True) -> dict:
    monkeypatch.setattr(fastpath, "SINK_MODE", sink)
    monkeypatch.setattr(sinks.Sinks, "__init__",
                        lambda self, *a, **k: _SINKS_INIT(self, *a, **(k | {"threaded": threaded})))
    stats = replay_to_dir(str(spec), cap, out, engine="jit")
    for k in TIMING:
        stats.pop(k)
    return stats


@pytest.mark.parametrize("queues", [1, 4])
def test_sink_mode_same_json_and_bytes_as_array_batches(tmp_path: Path, every_obj: Path, queues: int,  # noqa: F811
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every verdict (faults, long frames, redirects and devmap programs included): stats.json as the same
    text, every pcap and maps.json the same bytes, threaded writer or not."""
    spec = tmp_path / "p.toml"
    spec.write_text(EVERY_SPEC.format(queues=queues, obj=every_obj, extra=""))
    cap = every_capture(tmp_path / "every.pcap")
    taken: list[object] = []
    real = fastpath._sink_batch
    monkeypatch.setattr(fastpath, "_sink_batch", lambda *a: taken.append(real(*a)))
    sink = _replay(spec, cap, tmp_path / "sink", True, monkeypatch)
    assert taken  # sink mode did run them
    unthreaded = _replay(spec, cap, tmp_path / "sink1", True, monkeypatch, threaded=False)
    arrays = _replay(spec, cap, tmp_path / "arrays", False, monkeypatch)
    assert json.dumps(sink) == json.dumps(arrays) == json.dumps(unthreaded)
    a, b, c = outputs(tmp_path / "sink"), outputs(tmp_path / "arrays"), outputs(tmp_path / "sink1")
    assert a.keys() == b.keys() == c.keys()
    for f in a:
        assert a[f] == b[f] == c[f], f
    reasons = {r for o in sink["reasons"].values() for r in o}
    assert {"frame_too_short", "frame_too_long", "program_fault", "unknown_action", "redirect_failed",
            "devmap_program", "interface", "cpu", "xsk", "xdp_tx", "xdp_pass"} <= reasons


def test_sink_mode_on_the_sample_captures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parser with tail calls, over every sample capture: the same as the array batch path."""
    spec = Path(__file__).resolve().parent.parent / "programs" / "parser.o"
    for capture in sorted(p for p in PCAPS.iterdir() if p.suffix in (".pcap", ".pcapng")):
        sink = _replay(spec, capture, tmp_path / capture.name / "sink", True, monkeypatch)
        arrays = _replay(spec, capture, tmp_path / capture.name / "arrays", False, monkeypatch)
        assert json.dumps(sink) == json.dumps(arrays), capture.name
        assert outputs(tmp_path / capture.name / "sink") == outputs(tmp_path / capture.name / "arrays")


def _capture(path: Path, n: int) -> Path:
    """n small frames (numbered) in one pcap."""
    frames = np.zeros((n, 64), np.uint8)
    frames[:, 12:14] = (0x08, 0x00)
    frames[:, 20:24] = np.arange(n, dtype=">u4").view(np.uint8).reshape(n, 4)
    with PcapWriter(path) as w:
        w.write_batch(frames.reshape(-1), np.arange(n) * 64, np.full(n, 64), 10**18 + np.arange(n) * 1000)
    return path


def test_capture_truncated_while_batches_are_read(tmp_path: Path) -> None:
    cap = _capture(tmp_path / "c.pcap", 5000)
    r = read_batches(cap, 1000)
    got = 0
    with pytest.raises(CaptureError) as e:
        for b in r:
            got += len(b)
            if got == 1000:
                os.truncate(cap, 24 + 80 * 1500)  # someone else cuts the file under the reader
    assert got >= 1000
    assert str(cap) in str(e.value) and "shrank" in str(e.value)
    assert e.value.offset is not None and 24 + 1000 * 80 <= e.value.offset <= 24 + 80 * 1500


def test_capture_truncated_during_a_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replay whose capture is cut after its first batch: a CaptureError naming the file and offset
    (stats.json records it; the packets before it are in the sinks), not a SIGBUS."""
    cap = _capture(tmp_path / "c.pcap", 140_000)  # three batches of the replay's 65,536
    spec = Path(__file__).resolve().parent.parent / "programs" / "parser.o"
    real = Replay.batch
    calls = []

    def batch(self: Replay, b: object) -> None:
        real(self, b)  # type: ignore[arg-type]
        calls.append(1)
        if len(calls) == 1:  # from another thread, as another process would
            t = threading.Thread(target=os.truncate, args=(cap, 24 + 80 * 70_000))
            t.start()
            t.join()

    monkeypatch.setattr(Replay, "batch", batch)
    with pytest.raises(CaptureError) as e:
        replay_to_dir(str(spec), cap, tmp_path / "out", engine="jit")
    assert str(cap) in str(e.value) and "shrank" in str(e.value)
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["capture"]["error_offset"] == e.value.offset >= 24 + 80 * 65_536
    assert stats["packets"] == sum(stats["outcomes"].values()) >= 65_536


def _batches(r: object) -> list[tuple]:
    return [(b.index, [b.packet(i) for i in range(len(b))], b.ts_ns.tolist(), b.orig_lens.tolist())
            for b in r]  # type: ignore[attr-defined]


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_prefetch_gives_what_the_reader_gives(tmp_path: Path, batch: int) -> None:
    """Read ahead by a thread: the same batches, counters and warnings (a damaged tail included)."""
    cap = _capture(tmp_path / "c.pcap", 3000)
    with open(cap, "ab") as f:
        f.write(b"\x00" * 20)  # a truncated record header at the end: a warning
    plain, ahead = read_batches(cap, batch), read_batches(cap, batch, prefetch=True)
    assert _batches(plain) == _batches(ahead)
    for name in ("records", "packets", "skipped", "offset"):
        assert getattr(plain, name) == getattr(ahead, name), name
    assert [str(w) for w in plain.warnings] == [str(w) for w in ahead.warnings] and len(plain.warnings) == 1


def test_prefetch_counters_when_the_consumer_stops_early(tmp_path: Path) -> None:
    """The thread is a batch ahead; the counters are those of the batches taken."""
    cap = _capture(tmp_path / "c.pcap", 3000)
    r = read_batches(cap, 1000, prefetch=True)
    it = iter(r)
    first = next(it)
    assert len(first) == 1000 and r.packets == 1000 and r.offset == 24 + 80 * 1000
    it.close()  # type: ignore[attr-defined]
    assert r.packets == 1000 and r.records == 1000


def test_pcapng_truncated_while_batches_are_read(tmp_path: Path) -> None:
    from xdpsim.io import PcapngWriter

    cap = tmp_path / "c.pcapng"
    with PcapngWriter(cap) as w:
        w.add_interface(name="eth0")
        for i in range(6000):  # 6 MB: more than the reader's first window
            w.write(bytes(1000) + i.to_bytes(4, "big"), 10**18 + i, interface=0)
    size = cap.stat().st_size
    got = 0
    with pytest.raises(CaptureError) as e:
        for b in read_batches(cap, 1000):
            got += len(b)
            if got == 1000:
                os.truncate(cap, size // 2)
    assert got >= 1000 and str(cap) in str(e.value)


@pytest.mark.parametrize("threaded", [True, False])
def test_record_buffers_keep_each_file_in_order(tmp_path: Path, threaded: bool,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Records appended to buffers (small ones: many flushes), records too big for a buffer and
    per-packet writes, interleaved: each file gets them in the order given, files only once used."""
    from xdpsim.io import open_capture

    monkeypatch.setattr(sinks.RecordBuffers, "SIZE", 1 << 12)
    s = sinks.Sinks(tmp_path, threaded=threaded)
    rb = s.records()
    a, b, unused = rb.slot("eth0", "pass", None), rb.slot("eth0", "drop", None), rb.slot("eth0", "tx", None)
    assert (a, b) == (0, 1) and unused == 2 and rb.slot("eth0", "pass", None) == 0
    want: dict[str, list[tuple[bytes, int]]] = {"pass": [], "drop": []}
    for i in range(300):
        data = bytes([i % 256]) * (i * 37 % 5000)  # some longer than a buffer
        name, slot = ("pass", a) if i % 3 else ("drop", b)
        if i % 7 == 0:
            s.write("eth0", name, None, data, 10**18 + i)  # the per-packet path, between buffered ones
        else:
            rb.append(slot, data, 10**18 + i)
        want[name].append((data, 10**18 + i))
    s.close()
    assert sorted(p.name for p in tmp_path.glob("*.pcap")) == ["drop.pcap", "pass.pcap"]
    for name, recs in want.items():
        got = [(p.data, p.ts_ns) for p in open_capture(tmp_path / f"{name}.pcap")]
        assert got == recs, name


def test_record_buffers_report_a_failed_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails in the writer thread (disk full) is raised in the replay's thread."""
    import errno

    def full(fd: int, buf: object, n: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sinks, "_write_all", full)
    s = sinks.Sinks(tmp_path, threaded=True)
    rb = s.records()
    rb.append(rb.slot("eth0", "pass", None), b"x" * 100, 0)
    with pytest.raises(OSError, match="No space"):
        rb.drain()
    s.close()
