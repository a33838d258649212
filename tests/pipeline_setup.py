"""Set-up shared by the pipeline/redirect tests: BPF C built at test time (clang-19), a replay's
outputs read back (the sink captures, packets.jsonl), and the invariant its statistics keep.

A build skips the test, with the reason, where clang is not installed."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from xdpsim.io import open_capture
from xdpsim.pipeline.stats import OUTCOMES, REASONS

PIPELINE_PROGS = Path(__file__).with_name("pipeline_progs.c")


def build_bpf(source: Path | str, out: Path, *cflags: str, what: str = "the test programs") -> Path:
    """Compile `source` (a .c path, or C text written next to `out` as <out stem>.c) to the BPF object
    `out`, as the house recipe says; skips the test where no clang is installed."""
    clang = shutil.which("clang-19") or shutil.which("clang")
    if clang is None:
        pytest.skip(f"clang-19 is not installed: cannot build {what}")
    if isinstance(source, str):
        src = out.with_suffix(".c")
        src.write_text(source)
    else:
        src = source
    arch = subprocess.run(["uname", "-m"], capture_output=True, text=True).stdout.strip()
    subprocess.run([clang, "-O2", "-g", "-target", "bpf", f"-I/usr/include/{arch}-linux-gnu", *cflags, "-c",
                    str(src), "-o", str(out)], check=True)
    return out


def build_pipeline_progs(tmp_path_factory: pytest.TempPathFactory, name: str = "p.o",
                         kernel_safe: bool = False) -> Path:
    """tests/pipeline_progs.c built into a fresh temporary folder; `kernel_safe` builds it as the kernel
    takes it (-DKERNEL_SAFE)."""
    out = tmp_path_factory.mktemp("progs") / name
    return build_bpf(PIPELINE_PROGS, out, *(["-DKERNEL_SAFE"] if kernel_safe else []))


def sink_frames(out: Path) -> dict[str, list[bytes]]:
    """Every capture a replay wrote under `out`, by its path relative to `out`: its frames."""
    got = {}
    for f in sorted(out.rglob("*.pcap")):
        with open_capture(str(f)) as cap:
            got[str(f.relative_to(out))] = [bytes(r.data) for r in cap]
    return got


def log_rows(out: Path) -> list[dict]:
    """The lines of a replay's --log packet log (out/packets.jsonl)."""
    return [json.loads(x) for x in (out / "packets.jsonl").read_text().splitlines()]


def check_invariant(stats: dict) -> None:
    """A replay's statistics add up: every packet has one outcome, every outcome's reasons sum to it and
    are among its known reasons, and every outcome is listed."""
    assert stats["packets"] == sum(stats["outcomes"].values())
    for outcome, reasons in stats["reasons"].items():
        assert sum(reasons.values()) == stats["outcomes"][outcome]
        assert set(reasons) <= set(REASONS[outcome])
    assert set(stats["outcomes"]) == set(OUTCOMES)


def numbered_capture(path: Path, n: int) -> Path:
    """n Ethernet records of 60..187 bytes, packet i holding i in its bytes 20..24."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i in range(n):
        frame = bytearray(60 + i % 128)
        frame[12:14] = b"\x08\x00"
        frame[20:24] = i.to_bytes(4, "big")
        out.append(struct.pack("<IIII", 1_700_000_000 + i, i, len(frame), len(frame)) + bytes(frame))
    path.write_bytes(b"".join(out))
    return path
