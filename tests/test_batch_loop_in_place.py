"""The native batch loop's in-place runs (jit.batch F_IN_PLACE) and specialised loops (jit.batch SPECIALISED).

A chain proven never to change its packet, in which no Python code can read packet memory
(engines/jit_batch.packet_in_place), runs on each packet where the capture's read buffer holds it instead
of a copy in the frame. Replays with and without it write the same files and the same stats.json: packets
that pass or drop, faulting packets (reported from the frame, where the loop copies them before it stops),
redirects (handed to Python from the packet's own bytes), runts, frames too long for the loop, across
many batches and buffer flushes. Chains that a Python helper or a frozen map could make read the frame
are not run in place.
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import numpy as np
import pytest
from pipeline_setup import build_bpf
from test_pipeline_fast import PCAPS, TIMING, outputs

import xdpsim
from xdpsim.engines import jit_batch
from xdpsim.engines.jit import JitEngine
from xdpsim.io import PcapWriter, open_capture
from xdpsim.io.pcapng import PcapngWriter
from xdpsim.jit import batch as nb
from xdpsim.pipeline import replay, sinks
from xdpsim.pipeline.replay import replay_to_dir

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"

REDIRECT_SRC = """
#include "common.h"
char LICENSE[] SEC("license") = "GPL";
/* every IPv4 frame is redirected (no target: Python decides), the rest pass: never written */
SEC("xdp")
int to_nowhere(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	return eth->h_proto == bpf_htons(ETH_P_IP) ? XDP_REDIRECT : XDP_PASS;
}
"""

PRINTK_SRC = """
#include "common.h"
char LICENSE[] SEC("license") = "GPL";
SEC("xdp")
int chatty(struct xdp_md *ctx)
{
	bpf_printk("frame");
	return XDP_PASS;
}
"""

RODATA_SRC = """
#include "common.h"
char LICENSE[] SEC("license") = "GPL";
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");
static volatile const __u32 limit = 100;
/* a frozen map (.rodata), read through its value's address */
SEC("xdp")
int short_pass(struct xdp_md *ctx)
{
	return ctx->data_end - ctx->data < limit ? XDP_PASS : XDP_DROP;
}
/* the same, and a map helper: with a frozen map in the runtime its calls may go to Python */
SEC("xdp")
int counted(struct xdp_md *ctx)
{
	__u32 k = 0;
	__u64 *v = bpf_map_lookup_elem(&hits, &k);

	if (v)
		*v += 1;
	return ctx->data_end - ctx->data < limit ? XDP_PASS : XDP_DROP;
}
"""


def _capture(path: Path) -> Path:
    """mixed.pcap's frames three times over, with 14-byte frames (bad_bounds.o faults on them), runts
    (not run) and frames too long for the loop's frame among them; pcap, or pcapng by the suffix (its
    batches are not a pcap file's records: no F_RECORDS)."""
    frames = [p.data for p in open_capture(PCAPS / "mixed.pcap")]
    extra = [frames[0][:14], frames[1][:9], frames[0] + bytes(4000), frames[2][:14]]
    ng = path.suffix == ".pcapng"
    with PcapngWriter(path) if ng else PcapWriter(path, nanosecond=True) as w:
        if ng:
            w.add_interface()
        t = 1_700_000_000_000_000_000
        for k in range(3 * len(frames)):
            w.write(frames[k % len(frames)], t + 1_000_003 * k)
            if k % 7 == 0:
                w.write(extra[k // 7 % len(extra)], t + 1_000_003 * k + 1)
    return path


def _replay(spec: str, cap: Path, out: Path, in_place: bool, monkeypatch: pytest.MonkeyPatch,
            flags: list[int] | None = None) -> dict:
    """A replay in small batches and buffers (many batches, flushes in mid-batch), in place or not;
    `flags` gets the A_FLAGS of every native call."""
    monkeypatch.setattr(replay, "FAST_BATCH", 97)
    monkeypatch.setattr(sinks.RecordBuffers, "SIZE", 1 << 14)
    monkeypatch.setattr(sinks.RecordBuffers, "IOV", 5)
    monkeypatch.setattr(jit_batch, "IN_PLACE", in_place)
    real = jit_batch.BATCH_TYPE
    if flags is not None:

        def spy(address: int):  # noqa: ANN202 - a CFUNCTYPE instance
            fn = real(address)

            def call(env: int, args: int) -> int:
                flags.append(int((ctypes.c_uint64 * nb.A_WORDS).from_address(args)[nb.A_FLAGS]))
                return fn(env, args)

            return call

        monkeypatch.setattr(jit_batch, "BATCH_TYPE", spy)
    try:
        stats = replay_to_dir(spec, cap, out, engine="jit")
    finally:
        monkeypatch.setattr(jit_batch, "BATCH_TYPE", real)
    for k in TIMING:
        stats.pop(k)
    return stats


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
@pytest.mark.parametrize("prog", ["parser.o", "bad_bounds.o", "redirect"])
def test_in_place_writes_what_copies_write(tmp_path: Path, prog: str, fmt: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    spec = str(PROGRAMS / prog) if prog.endswith(".o") else str(
        build_bpf(REDIRECT_SRC, tmp_path / "redirect.o", f"-I{PROGRAMS}"))
    cap = _capture(tmp_path / f"c.{fmt}")
    flags: list[int] = []
    a = _replay(spec, cap, tmp_path / "in-place", True, monkeypatch, flags)
    b = _replay(spec, cap, tmp_path / "copied", False, monkeypatch)
    records = nb.F_RECORDS | nb.F_UNCHANGED if fmt == "pcap" else 0  # (pcapng: no pcap file's records)
    full = nb.F_SINK | nb.F_IN_PLACE | records
    assert flags and set(flags) == {full}  # every native call ran in place
    assert json.dumps(a) == json.dumps(b)
    assert outputs(tmp_path / "in-place") == outputs(tmp_path / "copied")
    if prog == "bad_bounds.o":  # the faulting frames are written from the frame the loop copied them into
        assert a["outcomes"]["error"] > 0
        assert any(len(f) == 14 and any(f) for f in _frames(tmp_path / "in-place", "error"))
    if prog == "redirect":
        assert a["outcomes"]["redirect"] + a["outcomes"]["drop"] > 0


def _frames(out: Path, outcome: str) -> list[bytes]:
    files = [p for p in out.rglob(f"{outcome}*.pcap")]
    assert files, f"no {outcome} file in {sorted(p.name for p in out.rglob('*'))}"
    return [p.data for f in files for p in open_capture(f)]


def _in_place(spec: Path | str, program: str, native_helpers: bool = True) -> bool:
    obj = xdpsim.load(spec, engine="jit")
    eng = obj._engine("jit") if native_helpers else JitEngine(native_helpers=False)
    pid = obj.programs[program].id
    rt = obj.runtime
    return jit_batch.packet_unchanged(eng, rt, pid) and jit_batch.packet_in_place(eng, rt, pid)


def test_chains_python_could_read_the_frame_of_are_not_run_in_place(tmp_path: Path) -> None:
    assert _in_place(PROGRAMS / "parser.o", "packet_parser")  # tail calls, hash and per-CPU array maps
    assert not _in_place(PROGRAMS / "parser.o", "packet_parser", native_helpers=False)
    printk = build_bpf(PRINTK_SRC, tmp_path / "printk.o", f"-I{PROGRAMS}")
    assert not _in_place(printk, "chatty")  # a helper with no native code: Python
    rodata = build_bpf(RODATA_SRC, tmp_path / "rodata.o", f"-I{PROGRAMS}")
    assert _in_place(rodata, "short_pass")  # a frozen map, but no map helper that could go to Python
    assert not _in_place(rodata, "counted")  # a map helper, a frozen map in the runtime: it may


def test_specialised_loops_are_the_replays_flag_sets() -> None:
    """The flags a replay's sink mode uses are compiled as constants; BATCH_FN dispatches on them."""
    assert nb.F_SINK | nb.F_RECORDS in nb.SPECIALISED
    assert nb.F_SINK | nb.F_RECORDS | nb.F_UNCHANGED | nb.F_IN_PLACE in nb.SPECIALISED
    text = str(nb.build_module())
    for flags in nb.SPECIALISED:
        assert f'define internal i64 @"{nb.BATCH_FN}_{flags}"' in text
    assert np.all([f"i64 {flags}, label" in text for flags in nb.SPECIALISED])


def test_record_flags_follow_the_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chain's flags, kept between batches, are asked again when a map is frozen (its operations then
    go to Python) or in-place runs are turned off."""
    obj = xdpsim.load(PROGRAMS / "parser.o", engine="jit")
    eng, rt = obj._engine("jit"), obj.runtime
    pid = obj.programs["packet_parser"].id
    both = nb.F_UNCHANGED | nb.F_IN_PLACE
    assert jit_batch._record_flags(eng, rt, pid) == both
    monkeypatch.setattr(jit_batch, "IN_PLACE", False)
    assert jit_batch._record_flags(eng, rt, pid) == nb.F_UNCHANGED
    monkeypatch.setattr(jit_batch, "IN_PLACE", True)
    assert jit_batch._record_flags(eng, rt, pid) == both
    [m for m in rt.maps if m.name == "proto_count"][0].freeze()
    assert not jit_batch._record_flags(eng, rt, pid) & nb.F_IN_PLACE
