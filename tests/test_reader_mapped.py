"""Mapped capture windows (io/mapped.py): the same batches as preads, and a file truncated by another
process while its windows are in use is a CaptureError as with preads, never a SIGBUS. The truncations
run in child processes (a SIGBUS there is a return code, not the end of the test run)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from xdpsim.errors import CaptureError
from xdpsim.io import mapped, read_batches

ROOT = Path(__file__).resolve().parent.parent
needs_mapping = pytest.mark.skipif(not mapped.enabled(),
                                   reason="no read leases / mremap here (mapped.enabled())")


@pytest.fixture(autouse=True)
def _map_small_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import xdpsim.io.batch

    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        if not mapped._local_fs(fd):
            pytest.skip("the temporary directory is not on a file system mapped.py maps")
    finally:
        os.close(fd)
    monkeypatch.setattr(xdpsim.io.batch, "_MAP_MIN", 0)  # (the captures here are small)


def test_only_local_file_systems_are_mapped() -> None:
    fd = os.open("/proc/self/status", os.O_RDONLY)
    try:
        assert not mapped._local_fs(fd) and mapped.MappedFile.open(fd) is None
    finally:
        os.close(fd)


def _count_windows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    made = [0]
    real = mapped.MappedFile.window

    def window(self: mapped.MappedFile, pos: int, n: int) -> object:
        got = real(self, pos, n)
        made[0] += got is not None
        return got

    monkeypatch.setattr(mapped.MappedFile, "window", window)
    return made


def _capture(path: Path, n: int, size: int = 80) -> Path:
    """n Ethernet records of `size` bytes, packet i holding i in its bytes 20..24."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    frame = bytearray(size)
    frame[12:14] = b"\x08\x00"
    for i in range(n):
        frame[20:24] = i.to_bytes(4, "big")
        out.append(struct.pack("<IIII", 1_700_000_000 + i // 1000, i % 1000, size, size) + bytes(frame))
    path.write_bytes(b"".join(out))
    return path


def _child(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT,
                          env=None if env is None else {**os.environ, **env})


def _batches(r: object) -> list[tuple]:
    return [(b.index, [b.packet(i) for i in range(len(b))], b.ts_ns.tolist(), b.orig_lens.tolist())
            for b in r]  # type: ignore[attr-defined]


@needs_mapping
@pytest.mark.parametrize("batch", [1, 333, 5000])
def test_mapped_batches_equal_read_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int) -> None:
    cap = _capture(tmp_path / "c.pcap", 3000)
    with open(cap, "ab") as f:
        f.write(struct.pack("<IIII", 1, 0, 300000, 300000))  # a record claiming too much: damage
    runs = []
    made = _count_windows(monkeypatch)
    for setting in ("1", "0"):
        monkeypatch.setenv("XDPSIM_MMAP", setting)
        r = read_batches(cap, batch, prefetch=True)
        got: list[tuple] = []
        with pytest.raises(CaptureError) as e:
            for b in r:
                got.append(_batches([b])[0])
        runs.append((got, str(e.value), e.value.offset, r.records, r.packets, r.skipped, r.offset))
    assert sum(len(b[1]) for b in runs[0][0]) == 3000
    assert made[0] >= len(runs[0][0])  # (the first run's batches were views of windows)
    assert runs[0] == runs[1]


@needs_mapping
@pytest.mark.parametrize("tail", ["", "header", "data"])
def test_mapped_windows_grow_and_stop_like_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 tail: str) -> None:
    """Records that grow from batch to batch (a window sized from the last batch is too small: a bigger
    one is mapped), and a file that ends inside a record header or its data: as with preads."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i in range(4000):
        frame = bytes(60 + (i // 500) * 180)  # 60 .. 1320 bytes
        out.append(struct.pack("<IIII", 1_700_000_000, i, len(frame), len(frame)) + frame)
    out.append({"": b"", "header": b"\0" * 9, "data": struct.pack("<IIII", 1, 0, 500, 500) + bytes(99)}[tail])
    cap = tmp_path / "c.pcap"
    cap.write_bytes(b"".join(out))
    made = _count_windows(monkeypatch)
    runs = []
    for setting in ("1", "0"):
        monkeypatch.setenv("XDPSIM_MMAP", setting)
        r = read_batches(cap, 450, prefetch=True)
        runs.append((_batches(r), [str(w) for w in r.warnings], r.records, r.packets, r.skipped, r.offset))
    assert made[0] > 9 and sum(len(b[1]) for b in runs[0][0]) == 4000  # (9 batches; some re-mapped)
    assert runs[0] == runs[1]


@needs_mapping
def test_no_mapping_while_the_file_is_open_for_writing(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cap = _capture(tmp_path / "c.pcap", 100)
    with open(cap, "ab"), open(cap, "rb") as f:
        assert mapped.MappedFile.open(f.fileno()) is None  # (the lease is refused: read instead)
    made = _count_windows(monkeypatch)
    with open(cap, "ab"):
        assert sum(len(b) for b in read_batches(cap, 64)) == 100
    assert made[0] == 0
    assert sum(len(b) for b in read_batches(cap, 64)) == 100
    assert made[0] == 2


@needs_mapping
def test_a_window_outlives_a_truncation_by_another_process(tmp_path: Path) -> None:
    cap = _capture(tmp_path / "c.pcap", 50_000)  # 4.8 MB
    res = _child("""
        import os, subprocess, sys, time
        from xdpsim.io.mapped import MappedFile
        path = sys.argv[1]
        with open(path, "rb") as f:
            m = MappedFile.open(f.fileno())
            assert m is not None
            size = os.fstat(f.fileno()).st_size
            w = m.window(24, size - 24)
            before = w.tobytes()
            t = time.monotonic()
            cut = "import os, sys; os.truncate(sys.argv[1], 100)"
            subprocess.run([sys.executable, "-c", cut, path], check=True)
            waited = time.monotonic() - t
            assert os.stat(path).st_size == 100
            assert w.tobytes() == before  # (the window's own copy: no SIGBUS)
            assert m.window(24, 10) is None  # (the lease is gone: the reader goes on reading)
            m.finish()
        print(waited)
    """, str(cap))
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    assert float(res.stdout) < 30  # (the truncation waited for the detach, not the lease-break time)


_REPLAY = """
    import json, os, subprocess, sys
    from pathlib import Path
    from xdpsim.errors import CaptureError
    from xdpsim.pipeline.replay import Replay, replay_to_dir
    cap, out, spec = sys.argv[1:4]
    real = Replay.batch
    calls = []
    def batch(self, b):
        real(self, b)
        calls.append(1)
        if len(calls) == 1:  # another process cuts the capture after the first batch
            cut = "import os, sys; os.truncate(sys.argv[1], 24 + 80 * 70_000)"
            subprocess.run([sys.executable, "-c", cut, cap], check=True)
    Replay.batch = batch
    try:
        replay_to_dir(spec, cap, Path(out), engine="jit")
        error = None
    except CaptureError as e:
        error = [str(e), e.offset]
    stats = json.loads((Path(out) / "stats.json").read_text())
    print(json.dumps({"error": error, "packets": stats["packets"], "outcomes": stats["outcomes"],
                      "capture_error_offset": stats["capture"].get("error_offset")}))
"""


@needs_mapping
@pytest.mark.parametrize("setting", ["1", "0"])
def test_replay_of_a_capture_truncated_by_another_process(tmp_path: Path, setting: str) -> None:
    """Mapped (1) or read (0): the replay ends in the CaptureError naming the file and the offset where
    its data stops, the packets before it in the sinks -- not a SIGBUS."""
    cap = _capture(tmp_path / "c.pcap", 140_000)  # three batches of the replay's 65,536
    res = _child(_REPLAY, str(cap), str(tmp_path / "out"), str(ROOT / "programs" / "parser.o"),
                 env={"XDPSIM_MMAP": setting})
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    got = json.loads(res.stdout.strip().splitlines()[-1])
    message, offset = got["error"]
    assert str(cap) in message and "shrank" in message
    assert got["capture_error_offset"] == offset >= 24 + 80 * 65_536
    # every whole record before the offset (the first batches are small: the cut falls in a later one)
    assert got["packets"] == sum(got["outcomes"].values()) == (offset - 24) // 96


@needs_mapping
def test_a_window_that_cannot_be_copied_keeps_the_truncater_waiting(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    def no_copy(addr: int, length: int) -> None:
        raise OSError(12, "no memory (test)")

    monkeypatch.setattr(mapped, "detach", no_copy)
    cap = _capture(tmp_path / "c.pcap", 1000)
    size = cap.stat().st_size
    with open(cap, "rb") as f:
        m = mapped.MappedFile.open(f.fileno())
        assert m is not None
        w = m.window(24, size - 24)
        assert w is not None
        first = int.from_bytes(w[16 + 20 : 16 + 24].tobytes(), "big")
        cut = threading.Thread(target=os.truncate, args=(cap, 100))
        cut.start()
        time.sleep(10 * mapped.POLL)
        assert cut.is_alive() and cap.stat().st_size == size  # (the window is still the file's)
        assert first == 0 and int.from_bytes(w[-4:].tobytes(), "big") == 0  # (its last packet's tail)
        m.finish()
        del w  # the window goes: the lease with it
        cut.join(timeout=10 * mapped.POLL + 5)
        assert not cut.is_alive() and cap.stat().st_size == 100


@needs_mapping
def test_a_write_into_a_window_changes_neither_the_file_nor_kills(tmp_path: Path) -> None:
    """Batches' data are read-only by contract; native code that wrote anyway would change the process's
    copy (as with a read buffer), not the file, and get no SIGSEGV (run in a child)."""
    cap = _capture(tmp_path / "c.pcap", 20_000)
    before = cap.read_bytes()
    res = _child("""
        import ctypes, sys
        from xdpsim.io.mapped import MappedFile
        with open(sys.argv[1], "rb") as f:
            m = MappedFile.open(f.fileno())
            assert m is not None
            w = m.window(24, 1000)
            ctypes.memset(w.ctypes.data, 0xEE, 100)  # (past numpy's read-only flag, as native code would)
            assert w[:100].tobytes() == b"\\xee" * 100
            m.finish()
        print("ok")
    """, str(cap))
    assert res.returncode == 0 and res.stdout.strip() == "ok", (res.returncode, res.stderr[-2000:])
    assert cap.read_bytes() == before
