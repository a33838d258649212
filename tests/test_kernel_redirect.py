"""Redirect targets and devmap entry programs on the kernel engine (xdpsim.kernel.redirects).

The instrumentation is first checked without the kernel: instrumented programs run through the
interpreter leave the record the kernel engine reads, and behave as before. Then, in the running
kernel (skipped without root/BPF): bpf_redirect / bpf_redirect_map targets, devmap entry programs run
as their plain-XDP twin with egress_ifindex, TC redirects, and pipelines on the kernel engine routing
redirects as interp does."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import pytest
from kernel_fixtures import kernel  # noqa: F401 - the fixture
from pipeline_setup import build_bpf, build_pipeline_progs, log_rows, sink_frames

from xdpsim import isa
from xdpsim.engines.interp import Interpreter
from xdpsim.hooks.xdp import run_xdp
from xdpsim.kernel import redirects as rd
from xdpsim.loader import load_object
from xdpsim.runtime import Runtime
from xdpsim.spec import MapSpec, MapType, ObjectSpec

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "programs"
PCAPS = ROOT / "pcaps"
FRAME = bytes.fromhex("ffffffffffff02000000000108004500001c0001000040017cdd0a0000010a000002") + bytes(20)


@pytest.fixture(scope="module")
def progs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/pipeline_progs.c built as the kernel takes it (to_port, egress_mark, steer, ...)."""
    return build_pipeline_progs(tmp_path_factory, kernel_safe=True)


# --- the instrumentation, on the interpreter -------------------------------------------------------


def with_record_map(spec: ObjectSpec, egress: bool = False) -> ObjectSpec:
    """`spec` with every program instrumented and the hidden record map appended, as the kernel engine
    loads it (runnable by the interpreter)."""
    n = len(spec.maps)
    hidden = MapSpec("xdpsim_redir", MapType.ARRAY, 4, rd.value_size(n), 1)
    out = {}
    for i, (name, p) in enumerate(spec.programs.items()):
        patched = rd.instrument(p.insns, i, n, egress=egress and "devmap" in p.section)
        if patched is None:
            out[name] = p
            continue
        out[name] = dataclasses.replace(p, insns=patched.insns, line_info=patched.shift(p.line_info),
                                        func_info=patched.shift(p.func_info),
                                        functions=patched.shift_functions(p.functions))
    return dataclasses.replace(spec, programs=out, maps=[*spec.maps, hidden])


def test_recorder_leaves_the_call_and_its_arguments() -> None:
    spec = load_object(str(PROGRAMS / "redirect.o"))
    inst = with_record_map(spec)
    rt = Runtime()
    coll = rt.load(inst)
    orig = spec.programs["redirect_ifindex"]
    call = rd.redirect_calls(orig.insns)
    assert len(call) == 1 and orig.insns[call[0]].imm == rd.REDIRECT
    r = run_xdp(rt, Interpreter(), coll.programs["redirect_ifindex"], FRAME)
    assert r.redirect.index == 2 and r.action == 4
    rec = rd.read_record(coll.maps["xdpsim_redir"].lookup(0))
    names = list(spec.programs)
    assert rec == rd.Record(rd.REDIRECT, call[0], names.index("redirect_ifindex"), (2, 0, 0, 0))
    # bpf_redirect_map: r1 is the map (here the interpreter's handle), r2 the key, r3 the flags
    coll.maps["tx_ports"].update(0, 1)
    run_xdp(rt, Interpreter(), coll.programs["redirect_map"], FRAME)
    rec = rd.read_record(coll.maps["xdpsim_redir"].lookup(0))
    assert rec.helper == rd.REDIRECT_MAP and rec.args[:3] == (coll.maps["tx_ports"].handle, 0, 2)


def test_instrumented_programs_behave_the_same() -> None:
    spec = load_object(str(PROGRAMS / "redirect.o"))
    results = []
    for s in (spec, with_record_map(spec)):
        rt = Runtime()
        coll = rt.load(s)
        coll.maps["tx_ports"].update(0, 1)
        out = []
        for q in (0, 1):
            for name in ("redirect_map", "redirect_ifindex"):
                r = run_xdp(rt, Interpreter(), coll.programs[name], FRAME, queue=q)
                out.append((name, int(r.action), r.redirect, r.data))
        results.append((out, coll.maps["tx_ports"].to_json(), coll.maps[".bss"].to_json()))
    assert results[0] == results[1]


def test_egress_reads_are_found_through_moves_and_spills(progs: Path) -> None:
    spec = load_object(str(progs))
    p = spec.programs["egress_mark"]
    reads = rd.egress_reads(p.insns, len(spec.maps))
    assert len(reads) == 1
    (pc,) = reads
    assert p.insns[pc].cls == isa.BPF_LDX and p.insns[pc].off == rd.XDP_MD_EGRESS
    # hand-made: ctx saved in r6, spilled and filled, then read at +20; a non-ctx +20 read stays
    prog = [isa.Instruction(0xBF, 6, 1), isa.Instruction(0x7B, 10, 6, -8), isa.Instruction(0xB7, 6, 0, 0, 0),
            isa.Instruction(0x79, 7, 10, -8), isa.Instruction(0x61, 2, 7, 20),
            isa.Instruction(0x61, 3, 10, 20 - 64), isa.Instruction(0x95)]
    assert sorted(rd.egress_reads(prog, 3)) == [4]
    # a register that is ctx on one path only is not replaced (the verifier then says where)
    prog2 = [isa.Instruction(0x15, 2, 0, 1, 0), isa.Instruction(0xBF, 1, 2), isa.Instruction(0x61, 0, 1, 20),
             isa.Instruction(0x95)]
    assert rd.egress_reads(prog2, 3) == {}


def test_egress_reads_in_a_subprogram_given_ctx() -> None:
    # main: r6 = r1; call sub (ctx in r1); r0 = 2; exit.  sub: r0 = *(u32 *)(r1 + 20); exit
    prog = [isa.Instruction(0xBF, 6, 1), isa.Instruction(isa.CALL, 0, isa.PSEUDO_CALL, 0, 2),
            isa.Instruction(0xB7, 0, 0, 0, 2), isa.Instruction(0x95), isa.Instruction(0x61, 0, 1, 20),
            isa.Instruction(0x95)]
    assert sorted(rd.egress_reads(prog, 3)) == [4]
    # after the call r1 is clobbered: a +20 read through it is no ctx read
    prog2 = [isa.Instruction(isa.CALL, 0, 0, 0, 8), isa.Instruction(0x61, 0, 1, 20), isa.Instruction(0x95)]
    assert rd.egress_reads(prog2, 3) == {}


def test_devmap_program_twin_reads_the_written_egress(progs: Path) -> None:
    spec = load_object(str(progs))
    inst = with_record_map(spec, egress=True)
    rt = Runtime()
    coll = rt.load(inst)
    hidden = coll.maps["xdpsim_redir"]
    value = bytearray(hidden.lookup(0))
    struct.pack_into("<I", value, rd.OFF_EGRESS, 9)
    hidden.update(0, bytes(value))
    r = run_xdp(rt, Interpreter(), coll.programs["egress_mark"], FRAME)  # egress_ifindex 0 for the hook
    assert r.action == 2 and r.data[0] == 9


def test_resolve_without_a_record_or_with_bad_flags() -> None:
    t = rd.resolve(None, tc=False, programs=["p"], maps=[], lookup=lambda i, k: None)
    assert t.kind == "none" and "without calling" in t.why
    t = rd.resolve(rd.Record(rd.REDIRECT, 5, 0, (3, 1, 0, 0)), tc=False, programs=["p"], maps=[],
                   lookup=lambda i, k: None)
    assert t.kind == "none" and "flags 0x1" in t.why
    t = rd.resolve(rd.Record(rd.REDIRECT_MAP, 7, 0, (0xFFFF8888, 1, 0, 0)), tc=False, programs=["p"],
                   maps=[rd.RedirectMap("m", rd.DEVMAP, 4, 0x1234)], lookup=lambda i, k: None)
    assert t.kind == "unknown" and "none of the object's" in t.why
    t = rd.resolve(rd.Record(rd.REDIRECT_MAP, 7, 0, (0x1234, 1, 0, 0)), tc=False, programs=["p"],
                   maps=[rd.RedirectMap("m", rd.DEVMAP, 4, 0x1234)], lookup=lambda i, k: None)
    assert t.kind == "none" and "m[1] is empty" in t.why
    t = rd.resolve(rd.Record(rd.REDIRECT, 5, 0, (3, 1, 0, 0)), tc=True, programs=["p"], maps=[],
                   lookup=lambda i, k: None)
    assert (t.kind, t.index, t.program, t.pc) == ("dev-ingress", 3, "p", 5)


# --- in the kernel ---------------------------------------------------------------------------------


def test_kernel_bpf_redirect_and_redirect_map_targets(kernel: str) -> None:  # noqa: F811
    from xdpsim.engines.kernel import KernelCollection

    spec = load_object(str(PROGRAMS / "redirect.o"))
    with KernelCollection(spec) as c:
        assert c.programs["redirect_map"].patch is not None
        r = c.run_xdp("redirect_ifindex", FRAME)
        assert r.retval == 4 and (r.redirect.kind, r.redirect.index) == ("dev", 2)
        assert r.redirect.program == "redirect_ifindex"
        assert c.read_map(".bss")[bytes(4)] == (1).to_bytes(8, "little")  # the program still counts
        r = c.run_xdp("redirect_map", FRAME)
        assert r.retval == 2 and r.redirect is None  # empty slot: the flags' XDP_PASS
        c.maps["tx_ports"].update(0, 1)
        r = c.run_xdp("redirect_map", FRAME)
        assert r.retval == 4
        t = r.redirect
        assert (t.kind, t.index, t.map, t.key) == ("dev", 1, "tx_ports", 0)


def test_kernel_devmap_entry_program_and_cpumap(kernel: str, progs: Path) -> None:  # noqa: F811
    from xdpsim.engines.kernel import KernelCollection

    spec = load_object(str(progs))
    with KernelCollection(spec, interfaces=[("xs7", 7, 1)]) as c:
        em = c.programs["egress_mark"]
        assert em.entry and em.run_fd is not None and em.patch is not None
        with c.entered():
            c.maps["ports"].update(0, (7).to_bytes(4, "little") + em.fd.fd.to_bytes(4, "little"))
        r = c.run_xdp("to_port", FRAME)
        assert r.retval == 4
        assert (r.redirect.kind, r.redirect.index, r.redirect.prog) == ("dev", 7, em.id)
        assert c.program_name(r.redirect.prog) == "egress_mark"
        r = c.run_xdp("egress_mark", FRAME, egress_ifindex=7)
        assert r.retval == 2 and r.data_out == b"\x07" + FRAME[1:]
        r = c.run_xdp("egress_mark", FRAME + b"\0", egress_ifindex=7)
        assert r.retval == 1  # odd length: XDP_DROP
        c.maps["cpus"].update(1, (192).to_bytes(4, "little") + bytes(4))
        odd = FRAME + b"\0"
        r = c.run_xdp("steer", odd)
        assert r.retval == 4 and (r.redirect.kind, r.redirect.index, r.redirect.map) == ("cpu", 1, "cpus")


def test_kernel_log_names_original_instructions(kernel: str) -> None:  # noqa: F811
    from xdpsim.engines.kernel import KernelCollection

    spec = load_object(str(PROGRAMS / "redirect.o"))
    prog = spec.programs["redirect_ifindex"]
    (call,) = rd.redirect_calls(prog.insns)
    with KernelCollection(spec, programs=["redirect_ifindex"], log_level=2) as c:
        log = c.programs["redirect_ifindex"].log
    assert f"\n{call}: (85) call bpf_redirect#23" in log  # inserted code is numbered as the call
    assert f"\n{call + 1}: (" in log and f"\n{call + 2}: (" not in log  # the exit after it


def test_kernel_tc_redirect_target(kernel: str) -> None:  # noqa: F811
    from xdpsim.engines.kernel import KernelCollection

    spec = load_object(str(PROGRAMS / "tc_redirect.o"))
    with KernelCollection(spec, programs=["tc_redirect"]) as c:
        for flags, kind in ((0, "dev"), (1, "dev-ingress")):
            c.maps["redirect_cfg"].update(0, struct.pack("<II", 5, flags))
            r = c.run_skb("tc_redirect", FRAME)
            assert r.retval == 7 and (r.redirect.kind, r.redirect.index) == (kind, 5)
        c.maps["redirect_cfg"].update(0, struct.pack("<II", 5, 2))
        r = c.run_skb("tc_redirect", FRAME)
        assert r.retval == 2 and r.redirect is None  # TC_ACT_SHOT for flags the helper refuses


DEVMAP = """
[[interface]]
name = "eth0"
ifindex = 2
xdp = [{{ object = "{obj}", program = "to_port" }}]
[[interface]]
name = "eth1"
ifindex = 7
[[map_entries]]
map = "ports"
key = "00000000"
value = "07000000"
program = "egress_mark"
"""


def test_kernel_pipeline_routes_devmap_redirects_like_interp(kernel: str, progs: Path,  # noqa: F811
                                                            tmp_path: Path) -> None:
    from xdpsim.pipeline.replay import replay_to_dir

    toml = tmp_path / "d.toml"
    toml.write_text(DEVMAP.format(obj=progs))
    got = {}
    for engine in ("interp", "kernel"):
        out = tmp_path / engine
        stats = replay_to_dir(str(toml), PCAPS / "mixed.pcap", out, engine=engine, log=True)
        rows = log_rows(out)
        sink = (out / "eth0" / "redirect-eth1.pcap").read_bytes()
        got[engine] = ([(r.get("outcome"), r.get("reason"), r.get("target")) for r in rows], stats["reasons"],
                       stats["redirect_targets"], sink)
    assert got["kernel"][0] == got["interp"][0]
    assert got["kernel"][1:] == got["interp"][1:]
    assert "target_unknown" not in json.dumps(got["kernel"][1])
    assert got["kernel"][2] == {"eth1": got["interp"][2]["eth1"]} and got["interp"][2]["eth1"] > 0


def test_diff_compares_kernel_redirect_targets(kernel: str, progs: Path, tmp_path: Path) -> None:  # noqa: F811
    from xdpsim.difftest import KernelRunner, PacketIn, SimRunner
    from xdpsim.difftest.pipeline import diff_pipeline

    spec = load_object(str(PROGRAMS / "redirect.o"))
    pkt = PacketIn(0, FRAME)
    with KernelRunner(spec, "redirect_ifindex") as k:
        sim = SimRunner("interp", spec, "redirect_ifindex").run(pkt)
        assert k.run(pkt).redirect == sim.redirect == "dev 2"
    k.close()
    # a devmap entry program runs in the kernel (as its twin) and its bytes are compared
    pspec = load_object(str(progs))
    with KernelRunner(pspec, "egress_mark") as k:
        assert k.run(pkt).data == SimRunner("interp", pspec, "egress_mark").run(pkt).data == b"\0" + FRAME[1:]
    k.close()
    toml = tmp_path / "d.toml"
    toml.write_text(DEVMAP.format(obj=progs))
    report = diff_pipeline(str(toml), str(PCAPS / "mixed.pcap"), engines=["interp", "kernel"])
    assert report.engines == ["interp", "kernel"] and report.compared > 400
    assert report.ok, report.disagreements[:3]
    assert not report.kernel_not_compared


# --- cpumap entry programs -------------------------------------------------------------------------

CPUMAP_SOURCE = Path(__file__).with_name("kernel_redirect_progs.c")

CPUMAP = """
[[interface]]
name = "eth0"
ifindex = 2
queues = 2
xdp = [{{ object = "{obj}", program = "to_cpu" }}]
[[interface]]
name = "eth1"
ifindex = 7
[[map_entries]]
map = "cpus"
key = "01000000"
value = "c0000000"
program = "on_cpu"
[[map_entries]]
map = "ports"
key = "00000000"
value = "0700000000000000"
"""


@pytest.fixture(scope="module")
def cpumap_obj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bpf(CPUMAP_SOURCE, tmp_path_factory.mktemp("cprogs") / "c.o")


def replay_cpumap(obj: Path, tmp_path: Path, engine: str) -> tuple[dict, list, dict[str, list[bytes]], dict]:
    from xdpsim.pipeline.replay import replay_to_dir

    toml = tmp_path / "c.toml"
    toml.write_text(CPUMAP.format(obj=obj))
    out = tmp_path / engine
    stats = replay_to_dir(str(toml), PCAPS / "mixed.pcap", out, engine=engine, log=True)
    rows = [(r.get("outcome"), r.get("reason"), r.get("target")) for r in log_rows(out)]
    sinks = sink_frames(out)
    maps = json.loads((out / "maps.json").read_text())
    return stats, rows, sinks, maps


@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_cpumap_program_in_the_pipeline(cpumap_obj: Path, tmp_path: Path, engine: str) -> None:
    """The cpumap entry's program runs on CPU 1: PASS goes up the stack there (cpu1 sink, its bytes),
    XDP_REDIRECT redirects again (devmap -> eth1), DROP drops with reason cpumap_program."""
    stats, rows, sinks, maps = replay_cpumap(cpumap_obj, tmp_path, engine)
    src = [f for f in _frames(PCAPS / "mixed.pcap") if len(f) >= 14]
    want = {"cpu1": [b"\xcc" + f[1:] for f in src if len(f) % 3 == 2],
            "eth1": [f for f in src if len(f) % 3 == 1]}
    cpu_sink = next(v for k, v in sinks.items() if k.endswith("redirect-cpu1.pcap"))
    eth1_sink = next(v for k, v in sinks.items() if k.endswith("redirect-eth1.pcap"))
    assert cpu_sink == want["cpu1"] and eth1_sink == want["eth1"]
    assert stats["reasons"]["drop"]["cpumap_program"] == sum(1 for f in src if len(f) % 3 == 0)
    assert stats["redirect_targets"] == {"cpu1": len(want["cpu1"]), "eth1": len(want["eth1"])}
    entries = maps["seen"]["entries"].items()
    seen = {int(k[:2], 16): int.from_bytes(bytes.fromhex(v), "little") for k, v in entries}
    assert seen == {0: 0, 1: 2, 2: 1, 3: len(src)}  # rx queue lost, ingress device kept, on CPU 1


def _frames(path: Path) -> list[bytes]:
    from xdpsim.io import open_capture

    with open_capture(str(path)) as cap:
        return [bytes(p.data) for p in cap]


def test_kernel_cpumap_program_context_live(kernel: str, cpumap_obj: Path) -> None:  # noqa: F811
    """What the kernel gives a cpumap program (a live-frames test run redirects for real; the cpumap's
    kthread on CPU 1 runs the program): rx_queue_index 0, the ingress device, CPU 1."""
    import os
    import time

    from xdpsim.engines.kernel import XDP_MD, KernelCollection
    from xdpsim.kernel import bpf

    if bpf.possible_cpus() < 2 or 1 not in os.sched_getaffinity(0):
        pytest.skip("needs CPU 1")
    spec = load_object(str(cpumap_obj))
    with KernelCollection(spec, interfaces=[("xs3", 3, 4)]) as c:
        c.maps["cpus"].update(1, struct.pack("<II", 192, c.programs["on_cpu"].fd.fd))
        ctx = XDP_MD.pack(0, len(FRAME), 0, 3, 2, 0)
        with c.netns.entered():
            bpf.prog_test_run(c.programs["to_cpu"].fd.fd, FRAME, ctx_in=ctx, data_out_size=0,
                              flags=bpf.BPF_F_TEST_XDP_LIVE_FRAMES)
        for _ in range(100):
            seen = {int.from_bytes(k, "little"): int.from_bytes(v, "little")
                    for k, v in c.read_map("seen").items()}
            if seen[3]:
                break
            time.sleep(0.02)
    assert seen == {0: 0, 1: 3, 2: 1, 3: 1}


def test_kernel_cpumap_pipeline_agrees_with_interp(kernel: str, cpumap_obj: Path,  # noqa: F811
                                                   tmp_path: Path) -> None:
    import os

    sim = replay_cpumap(cpumap_obj, tmp_path, "interp")
    ker = replay_cpumap(cpumap_obj, tmp_path, "kernel")
    assert ker[1] == sim[1]  # per packet: outcome, reason, target
    assert ker[0]["reasons"] == sim[0]["reasons"] and ker[0]["redirect_targets"] == sim[0]["redirect_targets"]
    assert ker[2] == sim[2]
    seen_k, seen_s = ker[3]["seen"]["entries"], sim[3]["seen"]["entries"]
    if 1 not in os.sched_getaffinity(0):
        seen_k.pop("02000000"), seen_s.pop("02000000")  # the CPU: the thread could not be pinned to 1
    assert seen_k == seen_s


def test_kernel_refused_instrumentation_falls_back_and_says_so(kernel: str,  # noqa: F811
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Instrumented code the verifier refuses: the program loads as it is, its redirects are "unknown"
    with the reason, and the refusal names the C line of the call the code was put in front of."""
    from xdpsim.engines.kernel import KernelCollection

    bad = [isa.Instruction(0x7B, 0, 1, 0, 0)]  # *(u64 *)(r0 + 0) = r1 with r0 never written
    monkeypatch.setattr(rd, "recorder", lambda *args: list(bad))
    spec = load_object(str(PROGRAMS / "redirect.o"))
    (call,) = rd.redirect_calls(spec.programs["redirect_ifindex"].insns)
    with KernelCollection(spec, programs=["redirect_ifindex"]) as c:
        assert c.programs["redirect_ifindex"].patch is None
        note = next(n for n in c.notes if "redirect targets not recorded" in n)
        line = spec.programs["redirect_ifindex"].source_line(call)
        assert "R0 !read_ok" in note and f"redirect.c:{line.line}" in note  # line info moved with the code
        r = c.run_xdp("redirect_ifindex", FRAME)
        assert r.retval == 4 and r.redirect.kind == "unknown" and "redirect_ifindex" in r.redirect.why


@pytest.mark.parametrize(("hook", "cfg"), [("tc_egress", "0200000000000000"),
                                           ("tc_ingress", "0200000001000000")], ids=["egress", "ingress"])
def test_kernel_tc_pipeline_follows_redirects_like_interp(kernel: str, tmp_path: Path, hook: str,  # noqa: F811
                                                          cfg: str) -> None:
    """A TC redirect to the second interface's egress (or, BPF_F_INGRESS, its ingress): the kernel's
    recorded target is followed as interp's, to the same sinks, stages and maps."""
    pytest.importorskip("scapy")
    from test_pipeline_tc import REDIRECT, TCP80, UDP53, log, replay, sink

    toml = REDIRECT.replace("@HOOK@", hook).replace("@CFG@", cfg)
    toml = toml.replace('name = "eth0"\n', 'name = "eth0"\nifindex = 3\n', 1)  # 1 is the namespace's loopback
    got = {}
    for engine in ("interp", "kernel"):
        (tmp_path / engine).mkdir()
        stats, out = replay(tmp_path / engine, toml, [UDP53, TCP80], engine)
        got[engine] = ([(r["outcome"], r["reason"], r["target"]) for r in log(out)], stats["stages"],
                       sink(out / "eth0", "redirect-eth1.pcap"), sink(out / "eth0", "pass.pcap"),
                       json.loads((out / "maps.json").read_text())["egress_marks"]["entries"])
    assert got["kernel"] == got["interp"]
    assert "target_unknown" not in str(got["kernel"][0])


def test_static_map_finds_the_lddw_into_r1(progs: Path) -> None:
    spec = load_object(str(progs))
    index = {m.name: i for i, m in enumerate(spec.maps)}
    to_port = spec.programs["to_port"].insns
    assert [rd.static_map(to_port, pc) for pc in rd.redirect_calls(to_port)] == [index["ports"]]
    # clang merged steer's two bpf_redirect_map calls into one, r1 set on two paths to two maps: the
    # code cannot say which (the kernel engine identifies the map by its recorded address instead)
    steer = spec.programs["steer"].insns
    assert [rd.static_map(steer, pc) for pc in rd.redirect_calls(steer)] == [None]
    ld = [isa.Instruction(isa.LDDW, 6, isa.PSEUDO_MAP_FD, 0, 3), isa.Instruction(0)]
    call = isa.Instruction(isa.CALL, 0, 0, 0, rd.REDIRECT_MAP)
    # through a copy in the same block; a jump target between the lddw and the call ends the search
    assert rd.static_map([*ld, isa.Instruction(0xBF, 1, 6), call], 3) == 3
    prog = [*ld, isa.Instruction(0x15, 2, 0, 0, 0), isa.Instruction(0xBF, 1, 6), call]
    assert rd.static_map(prog, 4) is None
    moved = [*ld, isa.Instruction(0xBF, 1, 6), isa.Instruction(0x07, 1, 0, 0, 8), call]  # r1 += 8
    assert rd.static_map(moved, 4) is None


def test_kernel_redirect_map_found_in_the_code(kernel: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Where the kernel refuses storing map pointers, the map of a bpf_redirect_map comes from the code."""
    from xdpsim.engines.kernel import KernelCollection

    monkeypatch.setattr(rd, "calibration", lambda maps, hidden: [isa.Instruction(0x7B, 0, 1, 0, 0),
                                                                 isa.Instruction(0x95)])
    spec = load_object(str(PROGRAMS / "redirect.o"))
    with KernelCollection(spec) as c:
        assert any("found in the code" in n for n in c.notes)
        c.maps["tx_ports"].update(0, 1)
        r = c.run_xdp("redirect_map", FRAME)
        assert r.retval == 4 and (r.redirect.kind, r.redirect.index, r.redirect.map) == ("dev", 1, "tx_ports")


def test_api_kernel_runs_give_the_redirect_target(kernel: str) -> None:  # noqa: F811
    import xdpsim

    obj = xdpsim.load(str(PROGRAMS / "redirect.o"))
    try:
        prog = obj.programs["redirect_ifindex"]
        got = {e: prog.run(FRAME, engine=e).redirect for e in ("interp", "kernel")}
    finally:
        obj.close()
    assert got["kernel"] == got["interp"] and (got["kernel"].kind, got["kernel"].index) == ("dev", 2)
