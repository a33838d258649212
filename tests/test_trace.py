"""Instruction traces: contents for a known packet (parser.o, mixed.pcap packet 0: UDP to port 19,
dropped by parse_udp after a tail call), a fault, and `xdpsim trace` (replay of 0..N-1 first)."""

from __future__ import annotations

from pathlib import Path

import pytest

import xdpsim
from xdpsim.cli import main
from xdpsim.hooks.xdp import XdpAction
from xdpsim.io import open_capture
from xdpsim.memory import PACKET
from xdpsim.tracing import format_trace, trace_run

ROOT = Path(__file__).resolve().parent.parent
PARSER = str(ROOT / "programs" / "parser.o")
MIXED = str(ROOT / "pcaps" / "mixed.pcap")


@pytest.fixture(scope="module")
def first_packet() -> bytes:
    return next(iter(open_capture(MIXED))).data


@pytest.fixture(scope="module")
def traced(first_packet):
    obj = xdpsim.load(PARSER)
    return obj, trace_run(obj.programs["packet_parser"], first_packet)


def test_every_instruction_is_a_step(traced):
    _, run = traced
    r = run.result
    assert r.action == XdpAction.XDP_DROP and r.program == "parse_udp"
    assert len(run.steps) == r.insns
    assert [s.n for s in run.steps] == list(range(r.insns))
    assert (run.steps[0].prog, run.steps[0].pc) == ("packet_parser", 0)
    assert run.returned_at.prog == "parse_udp" and run.returned_at.insn == "exit"
    assert all(s.insn and s.file for s in run.steps)  # disassembly and BTF line for each


def test_registers_and_memory(traced, first_packet):
    obj, run = traced
    # r2 = ctx->data: the context read gives the packet pointer (region packet, data at 0x100)
    load = next(s for s in run.steps if s.prog == "packet_parser" and s.insn == "r2 = *(u32 *)(r1 + 0x0)")
    assert load.regs == {2: (PACKET << 32) | 0x100}
    assert load.mem[0].kind == "read" and load.mem[0].region == "ctx" and load.mem[0].offset == 0
    assert load.source.startswith("void *data = (void *)(long)ctx->data")
    # the ethertype bytes, as packet offsets 12 and 13
    reads = {m.packet_offset: m.data for s in run.steps if s.prog == "packet_parser" for m in s.mem
             if m.region == "packet"}
    assert reads[12] == first_packet[12:13] and reads[13] == first_packet[13:14]
    # the key stored on the stack before bpf_map_lookup_elem(&proto_count, &key)
    store = next(s for s in run.steps if s.prog == "packet_parser" and s.mem and s.mem[0].kind == "write")
    assert store.mem[0].region == "stack" and store.mem[0].data == bytes([17, 0, 0, 0])


def test_helpers_maps_and_tail_call(traced):
    _, run = traced
    calls = [s for s in run.steps if s.helper is not None]
    names = [s.helper.name for s in calls]
    assert names == ["map_lookup_elem", "tail_call", "map_lookup_elem", "map_update_elem"]
    look = calls[0]
    assert look.maps[0].map == "proto_count" and look.maps[0].key == bytes([17, 0, 0, 0])
    assert look.maps[0].value == bytes(8)  # the per-CPU counter before this packet's increment
    assert look.helper.result == look.regs[0] and look.helper.result >> 32 > 4  # a map value pointer
    tail = calls[1]
    t = tail.tail_call
    assert (t.map, t.index, t.target) == ("ipproto_jmp_table", 17, "parse_udp")
    after = run.steps[tail.n + 1]
    assert (after.prog, after.pc) == ("parse_udp", 0)
    miss = calls[2]  # port_stats has no entry for (UDP, 19) yet; struct port_key {u8 proto; u16 port}
    key = bytes([17, 0, 19, 0])
    assert miss.maps[0].map == "port_stats" and miss.maps[0].key == key and miss.maps[0].value is None
    upd = calls[3]
    assert upd.maps[0].key == key
    assert upd.maps[0].value[:8] == (1).to_bytes(8, "little")  # packets = 1, then bytes
    assert upd.helper.result == 0


def test_compact_and_verbose_text(traced):
    obj, run = traced
    compact = format_trace(run.steps)
    assert "tail call ipproto_jmp_table[17] -> parse_udp" in compact
    assert "; parser.c:129: if (dport == 19)" in compact
    assert len([ln for ln in compact.splitlines() if not ln.lstrip().startswith(";")]) == len(run.steps)
    verbose = format_trace(run.steps, verbose=True, describe=obj.runtime.mem.describe)
    assert "bpf_map_lookup_elem(0x400000001 (map handle 1), 0x100000ffc (stack+0xffc)" in verbose
    assert "read packet[12] [08]" in verbose


def test_fault_is_the_last_step():
    obj = xdpsim.load(str(ROOT / "programs" / "bad_bounds.o"))
    run = trace_run(obj.programs["bad_bounds"], bytes(14))  # byte 14 is past the end
    assert run.result.error is not None
    last = run.returned_at
    assert last.pc == run.result.error.pc and last.fault and "out-of-bounds read" in last.fault
    assert last.source == "if (*next == 0x45)"
    assert "FAULT: out-of-bounds read" in format_trace(run.steps)


def test_trace_command_replays_earlier_packets(capsys):
    assert main(["trace", PARSER, "--pcap", MIXED, "--packet", "1", "--engine", "interp"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("packet 1: ") and "1 packets replayed first on interp" in out
    # packet 0 counted one UDP packet: packet 1's lookup sees the counter at 1
    assert "map proto_count: key 11 00 00 00 value 01 00 00 00 00 00 00 00" in out
    assert "map port_stats: key 11 00 13 00 value 01 00 00 00 00 00 00 00" in out
    assert out.rstrip().splitlines()[-1].startswith("result: XDP_DROP from parse_udp")


def test_trace_command_verbose_on_the_jit_replay(capsys):
    assert main(["trace", PARSER, "--pcap", MIXED, "--packet", "2", "-v"]) == 0
    out = capsys.readouterr().out
    assert "2 packets replayed first on" in out
    assert "(packet+0x100)" in out and "write stack+0xffc [11 00 00 00]" in out


def test_trace_command_bad_index(capsys):
    assert main(["trace", PARSER, "--pcap", MIXED, "--packet", "100000"]) == 2
    assert "has no packet 100000 (it holds 442)" in capsys.readouterr().err


def _entry_programs() -> list[str]:
    from xdpsim.loader import load_object
    from xdpsim.spec import ProgType

    out = []
    for obj in sorted((ROOT / "programs").glob("*.o")):
        spec = load_object(obj)
        targets = {p for m in spec.maps for p in m.init_slots.values()}
        out += [f"{obj}:{n}" for n, p in spec.programs.items() if p.type == ProgType.XDP and n not in targets]
    return out


@pytest.mark.parametrize("spec", _entry_programs(), ids=lambda s: s.rsplit("/", 1)[-1])
def test_every_bundled_program_traces(spec):
    """bpf-to-bpf calls, bpf_loop callbacks, adjust_head/meta/tail, redirects, CO-RE, globals: one
    step per executed instruction, and the verbose text renders."""
    from xdpsim.testing.runner import SpecRunner
    from xdpsim.tracing import Recorder

    runner = SpecRunner(spec, engine="interp")
    for i, pkt in enumerate(open_capture(MIXED)):
        if i % 60:
            continue
        rec = Recorder(runner.obj.runtime)
        run = runner.run(pkt.data, tracer=rec)
        steps = rec.finish(run.result.error)
        assert len(steps) == run.result.insns
        assert format_trace(steps, verbose=True, describe=runner.obj.runtime.mem.describe)
