"""The kernel engine runs the seed's parser chain over a capture with the statistics of the other engines
(`xdpsim run --engine kernel`: the pipeline's KernelBackend over engines/kernel.py)."""

from __future__ import annotations

import json
from pathlib import Path

import kernel_fixtures
import pytest

kernel = kernel_fixtures.kernel
ROOT = Path(__file__).resolve().parent.parent

# what only a simulated engine can know or what is timing: a test run returns r0 and the packet, not the
# helper calls, the tail calls or which program of a tail-call chain returned
ENGINE_ONLY = ("engine", "seconds", "packets_per_second", "helper_calls", "tail_calls", "programs")


def _per_cpu_total(values: list[str]) -> int:
    return sum(int.from_bytes(bytes.fromhex(v)[:8], "little") for v in values)


@pytest.mark.parametrize("capture", ["mixed.pcap", "mixed.pcapng"])
def test_parser_chain_statistics_match(kernel: str, tmp_path: Path, capture: str) -> None:
    from xdpsim.pipeline.replay import replay_to_dir

    pcap = ROOT / "pcaps" / capture
    stats, maps = {}, {}
    for engine in ("interp", "kernel"):
        out = tmp_path / engine
        stats[engine] = replay_to_dir(str(ROOT / "programs" / "parser.o"), pcap, out, engine=engine)
        maps[engine] = json.loads((out / "maps.json").read_text())
    sim, ker = ({k: v for k, v in stats[e].items() if k not in ENGINE_ONLY} for e in ("interp", "kernel"))
    assert sim == ker
    runs = {e: s["programs"]["packet_parser"]["runs"] for e, s in stats.items()}
    assert runs["interp"] == runs["kernel"] == stats["kernel"]["programs"]["packet_parser"]["decided"]
    assert ker["packets"] > 100 and ker["outcomes"].get("drop") and ker["outcomes"].get("pass")
    # the maps: counters per protocol (per-CPU: totals, the kernel has a slot per possible CPU), port stats
    for name in ("proto_count", "port_stats"):
        a, b = maps["interp"][name]["entries"], maps["kernel"][name]["entries"]
        if name == "proto_count":
            a = {k: _per_cpu_total(v) for k, v in a.items()}
            b = {k: _per_cpu_total(v) for k, v in b.items()}
        assert a == b, name
    assert any(a.values())
