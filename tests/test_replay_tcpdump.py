"""Every capture of tcpdump's test suite (../shared/pcaps/tcpdump/, 830 real and hostile files) replays
through programs/parser.o on the JIT, or is refused with a CaptureError naming the file and the offset:
no other exception, no hang, and the accounting invariant holds for every file (damaged ones included)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pipeline_expect import PROGRAMS

from xdpsim.errors import CaptureError
from xdpsim.pipeline.config import parse_spec
from xdpsim.pipeline.pipeline import Pipeline
from xdpsim.pipeline.replay import Replay
from xdpsim.pipeline.sinks import Sinks

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "pcaps" / "tcpdump"
MAX_PACKETS = 20_000  # per file: far above the corpus's largest (a reader looping would pass it)


def test_every_tcpdump_capture(tmp_path: Path) -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"{CORPUS} is absent (shared test data beside the repository)")
    files = sorted(p for p in CORPUS.iterdir() if p.is_file() and p.suffix in (".pcap", ".pcapng"))
    assert len(files) > 800
    replayed = refused = packets = 0
    start = time.monotonic()
    with Pipeline(parse_spec(str(PROGRAMS / "parser.o")), engine="jit") as pipeline:
        for n, path in enumerate(files):
            sinks = Sinks(tmp_path / str(n))
            replay = Replay(pipeline, sinks)
            try:
                stats = replay.run(path, max_packets=MAX_PACKETS)
                replayed += 1
            except CaptureError as e:
                assert e.path == str(path) and e.offset is not None, e
                assert str(path) in str(e) and f"offset {e.offset}" in str(e)
                stats = replay.stats
                refused += 1
            finally:
                sinks.close()
            stats.check()  # packets == sum(outcomes), damaged records included
            assert stats.packets <= MAX_PACKETS + 1, path
            packets += stats.packets
    assert replayed > 500 and refused > 0  # refusals: link types XDP never sees (802.11, PPP, ...)
    assert packets > 5_000  # 9,377 packets in the corpus as of writing
    assert time.monotonic() - start < 600  # generous: a hang would be far beyond
