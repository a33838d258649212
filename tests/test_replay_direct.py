"""XDPSIM_DIRECT_WRITES=1: sink files' whole pages written with O_DIRECT (sinks._write_direct), the partial
first and last pages of each write through the page cache. The files are the same bytes as without it:
records of every length, drains at any offset (first pages that start mid-page), pieces longer than the
stage (records appended back to back), Python writes between native ones; threaded or not."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from xdpsim.pipeline import sinks as sk
from xdpsim.pipeline.replay import replay_to_dir

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"


def _write(out: Path, direct: bool, threaded: bool) -> tuple[dict[str, bytes], bool]:
    s = sk.Sinks(out, threaded=threaded)
    rb = s._records = sk.RecordBuffers(s, threaded=threaded, direct=direct)  # noqa: SLF001
    rng = random.Random(7)
    slots = [rb.slot("eth0", outcome, None) for outcome in ("pass", "drop")]
    for k in range(12000):
        n = rng.choice((14, 60, 61, 1499, 4096, 4097, 9000)) if k % 7 else rng.randrange(14, 3000)
        rb.append(slots[rng.random() < 0.3], bytes([k % 251]) * n, 1_000_000_007 * k)
        if k % 2999 == 0:
            rb.drain()  # (the next write starts mid-page)
        if k % 5003 == 0:
            s.write("eth0", "pass", None, b"python" * 20, k)  # a Python write between native ones
    used = any(d >= 0 for d in rb._dfds.values())  # noqa: SLF001
    s.close()
    return {p.name: p.read_bytes() for p in out.iterdir() if p.suffix == ".pcap"}, used


@pytest.mark.parametrize(("threaded", "stage"), [(False, 0), (True, 0), (False, 1 << 16)])
def test_direct_writes_are_the_same_bytes(tmp_path: Path, threaded: bool, stage: int,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    if stage:  # a small stage: most pieces (back-to-back records) longer than it, cut across stages
        monkeypatch.setattr(sk, "_DIRECT_STAGE", stage)
    plain, _ = _write(tmp_path / "plain", False, threaded)
    direct, used = _write(tmp_path / "direct", True, threaded)
    assert direct == plain
    assert sum(len(v) for v in plain.values()) > 6 * sk._DIRECT_STAGE  # (many stage-fulls)
    if not used:
        pytest.skip("this file system refuses O_DIRECT: only the fallback ran")


@pytest.mark.skipif(not (PROGRAMS / "parser.o").exists(), reason="programs/parser.o not built")
def test_replay_with_direct_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xdpsim.io.workload import generate_reference

    cap = tmp_path / "w.pcap"
    generate_reference(cap, 20000, seed=5)
    outs = {}
    for direct in ("0", "1"):
        monkeypatch.setenv("XDPSIM_DIRECT_WRITES", direct)
        replay_to_dir(str(PROGRAMS / "parser.o"), cap, tmp_path / direct, engine="jit")
        outs[direct] = {p: (tmp_path / direct / p).read_bytes() for p in os.listdir(tmp_path / direct)
                        if p.endswith(".pcap")}
    assert outs["0"] == outs["1"] and outs["0"]
