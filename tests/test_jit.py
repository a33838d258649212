"""The JIT against the interpreter: programs/, faults, tail calls, prog-array updates, prandom, the
batch replay loop and the compile cache. Tests parametrised with `engine` run on both engines with
the same expectations; the others compare the two directly."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import pytest

import xdpsim
from xdpsim.asm import assemble
from xdpsim.engines.base import RunState
from xdpsim.engines.interp import Interpreter
from xdpsim.engines.jit import JitEngine
from xdpsim.errors import ProgramFault
from xdpsim.hooks.xdp import XdpAction, run_xdp
from xdpsim.runtime import Runtime
from xdpsim.spec import MapSpec, MapType, ObjectSpec, ProgramSpec, ProgType

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = sorted(glob.glob(str(ROOT / "programs" / "*.o")))
CONFORMANCE = ROOT.parent / "shared" / "conformance" / "tests"


def _eth_ip(proto: int, payload: bytes, dport: int = 80, ihl: int = 5) -> bytes:
    eth = bytes(6) + bytes([2, 0, 0, 0, 0, 1]) + b"\x08\x00"
    total = 20 + len(payload) + 8
    ip = (
        bytes([0x40 | ihl, 0])
        + total.to_bytes(2, "big")
        + bytes(4)
        + bytes([64, proto, 0, 0])
        + bytes([10, 0, 0, 1, 10, 0, 0, 2])
        + bytes(4 * (ihl - 5))
    )
    l4 = (1234).to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes(4)
    return eth + ip + l4 + payload


PACKETS = [
    _eth_ip(6, bytes(20), 80),
    _eth_ip(6, bytes(20), 23),
    _eth_ip(17, b"abc", 19),
    _eth_ip(17, b"q" * 40, 53),
    _eth_ip(1, b"ping"),
    bytes(6) + bytes(6) + b"\x08\x06" + bytes(28),  # ARP
    bytes(10),  # runt
    _eth_ip(6, bytes(20), ihl=15)[:40],  # truncated IP options
    bytes(6) + bytes(6) + b"\x86\xdd" + bytes([0x60]) + bytes(5) + bytes([6, 64]) + bytes(32) + bytes(20),
]


@pytest.fixture(params=["interp", "jit"])
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


def _outcome(r) -> tuple:
    return (
        r.action,
        r.data,
        r.meta,
        r.redirect,
        str(r.error) if r.error else None,
        r.retval,
        r.tail_calls,
        r.program,
        r.trace,
        r.helper_counts,
    )


# ------------------------------------------------------------------------------ programs/


@pytest.mark.parametrize("path", PROGRAMS, ids=[os.path.basename(p) for p in PROGRAMS])
def test_programs_agree_with_the_interpreter(path: str) -> None:
    oi = xdpsim.load(path, engine="interp")
    oj = xdpsim.load(path, engine="jit")
    for name, prog in oi.programs.items():
        if prog.spec.type != ProgType.XDP:
            continue
        for i, pkt in enumerate(PACKETS):
            a = prog.run(pkt, now_ns=1000 * i, queue=i % 2)
            b = oj.programs[name].run(pkt, now_ns=1000 * i, queue=i % 2, engine="jit")
            assert b.engine == "jit"
            assert _outcome(a) == _outcome(b), (name, i)
    assert {k: m.to_json() for k, m in oi.maps.items()} == {k: m.to_json() for k, m in oj.maps.items()}


def test_parser_results(engine: str) -> None:
    obj = xdpsim.load(ROOT / "programs" / "parser.o", engine=engine)
    p = obj.programs["packet_parser"]
    assert p.run(PACKETS[0]).action == XdpAction.XDP_PASS
    r = p.run(PACKETS[1])
    assert r.action == XdpAction.XDP_DROP and r.program == "parse_tcp" and r.tail_calls == 1
    assert p.run(PACKETS[2]).action == XdpAction.XDP_DROP
    assert p.run(PACKETS[5]).action == XdpAction.XDP_PASS  # ARP: not IP
    assert p.run(PACKETS[6]).action == XdpAction.XDP_DROP  # runt
    counts = obj.maps["proto_count"][6]
    assert int.from_bytes(counts[0], "little") == 2


# ------------------------------------------------------------------------------ asm programs


def _runtime(
    text: str,
    maps: list[MapSpec] = (),
    extra: dict[str, str] | None = None,
    slots: dict[int, str] | None = None,
) -> tuple[Runtime, dict[str, int]]:
    rt = Runtime()
    progs = {"main": ProgramSpec("main", "xdp", ProgType.XDP, "xdp", assemble(text))}
    for name, body in (extra or {}).items():
        progs[name] = ProgramSpec(name, "xdp", ProgType.XDP, "xdp", assemble(body))
    specs = list(maps)
    if slots is not None:
        specs.append(MapSpec("jmp", MapType.PROG_ARRAY, 4, 4, 8, init_slots=slots))
    coll = rt.load(ObjectSpec("<t>", progs, specs))
    return rt, coll.programs


def _engine(name: str):
    return JitEngine() if name == "jit" else Interpreter()


COUNTER = MapSpec("counter", MapType.ARRAY, 4, 8, 4)


def _count_and_tail_call(handle_counter: int, handle_jmp: int, slot: int) -> str:
    return f"""
        r6 = r1
        r1 = 0
        *(u32 *)(r10 - 4) = r1
        r2 = r10
        r2 += -4
        r1 = {handle_counter:#x} ll
        call 1
        if r0 == 0 goto +2
        r1 = 1
        lock *(u64 *)(r0 + 0) += r1
        r1 = r6
        r2 = {handle_jmp:#x} ll
        r3 = {slot}
        call 12
        r0 = 7
        exit
    """


def test_tail_call_chain_stops_after_33(engine: str) -> None:
    # main tail-calls itself through slot 0: 33 calls succeed, the 34th falls through
    text = _count_and_tail_call(4 << 32, (4 << 32) | 1, 0)
    rt, progs = _runtime(text, [COUNTER], slots={0: "main"})
    r = run_xdp(rt, _engine(engine), progs["main"], PACKETS[0])
    assert r.error is None and r.retval == 7 and r.tail_calls == 33
    assert int.from_bytes(rt.maps[0][0], "little") == 34
    assert r.helper_counts["tail_call"] == 34


def test_prog_array_update_takes_effect_next_run(engine: str) -> None:
    main = _count_and_tail_call(4 << 32, (4 << 32) | 1, 3)
    rt, progs = _runtime(main, [COUNTER], extra={"other": "r0 = 3\nexit"}, slots={})
    eng = _engine(engine)
    assert run_xdp(rt, eng, progs["main"], PACKETS[0]).retval == 7  # empty slot: falls through
    rt.maps[1][3] = "other"
    r = run_xdp(rt, eng, progs["main"], PACKETS[0])
    assert r.retval == 3 and r.program == "other"
    del rt.maps[1][3]
    assert run_xdp(rt, eng, progs["main"], PACKETS[0]).retval == 7


def test_tail_call_through_a_non_prog_array_faults_as_the_interpreter() -> None:
    text = _count_and_tail_call(4 << 32, 4 << 32, 0)  # r2 = the array map, not a prog array
    outs = []
    for name in ("interp", "jit"):
        rt, progs = _runtime(text, [COUNTER], slots={})
        r = run_xdp(rt, _engine(name), progs["main"], PACKETS[0])
        outs.append(str(r.error))
    assert outs[0] == outs[1] and "bpf_tail_call" in outs[0] and "insn 15" in outs[0]


FAULTS = {
    "packet out of bounds": """
        r2 = *(u32 *)(r1 + 0)
        r3 = *(u32 *)(r1 + 4)
        r0 = *(u32 *)(r2 + 200)
        exit""",
    "bounds check too short": """
        r2 = *(u32 *)(r1 + 0)
        r3 = *(u32 *)(r1 + 4)
        r4 = r2
        r4 += 14
        if r4 > r3 goto +2
        r0 = *(u32 *)(r2 + 12)
        exit
        r0 = 1
        exit""",
    "ctx store": "r2 = 1\n*(u32 *)(r1 + 0) = r2\nr0 = 2\nexit",
    "egress_ifindex": "r0 = *(u32 *)(r1 + 20)\nexit",
    "misaligned ctx": "r0 = *(u16 *)(r1 + 2)\nexit",
    "null": "r1 = 0\nr0 = *(u8 *)(r1 + 3)\nexit",
    "map handle": "r1 = 0x400000000 ll\nr0 = *(u64 *)(r1 + 0)\nexit",
    "stack below frame": "r0 = *(u64 *)(r10 - 520)\nexit",
    "budget": "r0 = 0\nr0 += 1\ngoto -2\nexit",
    "atomic on null": "r1 = 0\nr2 = 1\nlock *(u64 *)(r1 + 8) += r2\nr0 = 0\nexit",
    "bad helper map": "r1 = 5\nr2 = r10\nr2 += -8\ncall 1\nexit",
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_faults_are_the_interpreters(name: str) -> None:
    errors = []
    for eng in ("interp", "jit"):
        rt, progs = _runtime(FAULTS[name], [COUNTER])
        packet = bytes(15) if "short" in name else PACKETS[0]  # 15 bytes: passes a 14-byte check
        r = run_xdp(rt, _engine(eng), progs["main"], packet, budget=5000)
        assert isinstance(r.error, ProgramFault)
        errors.append((str(r.error), r.error.kind, r.error.pc, r.error.address, r.data))
    assert errors[0] == errors[1]


def test_call_depth_fault_matches() -> None:
    from xdpsim import isa

    # insn 0 calls the subprogram at 2, which calls itself forever
    insns = [
        isa.Instruction(isa.CALL, 0, isa.PSEUDO_CALL, 0, 1),
        isa.Instruction(isa.EXIT),
        isa.Instruction(isa.CALL, 0, isa.PSEUDO_CALL, 0, -1),
        isa.Instruction(isa.EXIT),
    ]
    out = []
    for eng in ("interp", "jit"):
        rt = Runtime()
        spec = ProgramSpec("main", "xdp", ProgType.XDP, "xdp", insns)
        coll = rt.load(ObjectSpec("<t>", {"main": spec}, []))
        with pytest.raises(ProgramFault) as e:
            _engine(eng).run(rt, coll.programs["main"], RunState(rt))
        out.append((str(e.value), e.value.kind))
    assert out[0] == out[1] and out[0][1] == "call-depth"


def test_prandom_gives_the_interpreters_sequence() -> None:
    text = """
        r6 = 0
        call 7
        *(u32 *)(r10 - 4) = r6
        *(u64 *)(r10 - 16) = r0
        r1 = 0x400000000 ll
        r2 = r10
        r2 += -4
        r3 = r10
        r3 += -16
        r4 = 0
        call 2
        call 7
        r6 = 1
        *(u32 *)(r10 - 4) = r6
        *(u64 *)(r10 - 16) = r0
        r1 = 0x400000000 ll
        r2 = r10
        r2 += -4
        r3 = r10
        r3 += -16
        r4 = 0
        call 2
        call 7
        exit
    """
    results = []
    for eng in ("interp", "jit"):
        rt, progs = _runtime(text, [COUNTER])
        e = _engine(eng)
        r0s = [run_xdp(rt, e, progs["main"], PACKETS[0]).retval for _ in range(3)]
        results.append((r0s, rt.maps[0].to_json(), rt.rng.getrandbits(32)))
    assert results[0] == results[1]


def test_helper_counts_and_redirect(engine: str) -> None:
    obj = xdpsim.load(ROOT / "programs" / "redirect.o", engine=engine)
    r = obj.programs["redirect_ifindex"].run(PACKETS[0])
    assert r.action == XdpAction.XDP_REDIRECT and r.redirect.kind == "dev" and r.redirect.index == 2
    assert r.helper_counts == {"redirect": 1}
    # devmap: an empty slot takes the flags' action, a filled one redirects to its ifindex
    r = obj.programs["redirect_map"].run(PACKETS[0], queue=3)
    assert r.action == XdpAction.XDP_PASS and r.redirect is None
    obj.maps["tx_ports"][3] = 7
    r = obj.programs["redirect_map"].run(PACKETS[0], queue=3)
    assert r.action == XdpAction.XDP_REDIRECT and (r.redirect.kind, r.redirect.index) == ("dev", 7)
    assert r.helper_counts == {"redirect_map": 1}


# ------------------------------------------------------------------------------ conformance


@pytest.mark.skipif(not CONFORMANCE.is_dir(), reason="../shared/conformance is absent")
def test_conformance_suite_on_the_jit() -> None:
    from xdpsim import conformance

    jit, interp = JitEngine(), Interpreter()
    bad = []
    for path in sorted(CONFORMANCE.glob("*.data")):
        test, oj = conformance.run_file(path, jit)
        _, oi = conformance.run_file(path, interp)
        if (oj.r0, oj.error) != (oi.r0, oi.error) or not conformance.passes(test, oj):
            bad.append(path.name)
    assert not bad


# ------------------------------------------------------------------------------ batch replay


def _concat(packets: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lengths = np.array([len(p) for p in packets], np.uint32)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return np.frombuffer(b"".join(packets), np.uint8), offsets, lengths


@pytest.mark.parametrize(
    "path",
    [p for p in PROGRAMS if "tc" not in os.path.basename(p)],
    ids=[os.path.basename(p) for p in PROGRAMS if "tc" not in os.path.basename(p)],
)
def test_batch_replay_matches_run_xdp(path: str) -> None:
    oi = xdpsim.load(path, engine="interp")
    oj = xdpsim.load(path, engine="jit")
    jit = oj._engine("jit")
    packets = PACKETS * 3 + [bytes(4000)]  # one frame too long for single-buffer XDP
    data, offsets, lengths = _concat(packets)
    times = np.arange(len(packets), dtype=np.uint64) * 1000
    queues = (np.arange(len(packets)) % 2).astype(np.uint32)
    for name, prog in oi.programs.items():
        if prog.spec.type != ProgType.XDP:
            continue
        res = jit.run_batch(oj.runtime, oj.programs[name].id, data, offsets, lengths, times, queues, chunk=7)
        for i, pkt in enumerate(packets):
            a = prog.run(pkt, now_ns=int(times[i]), queue=int(queues[i]))
            got = (
                XdpAction(int(res.action[i])),
                res.packet(i),
                res.redirect_target(i),
                str(res.errors[i]) if i in res.errors else None,
                res.traces.get(i, []),
            )
            want = (a.action, a.data, a.redirect, str(a.error) if a.error else None, a.trace)
            assert got == want, (name, i)
    assert {k: m.to_json() for k, m in oi.maps.items()} == {k: m.to_json() for k, m in oj.maps.items()}


def test_batch_fault_in_the_middle_runs_once() -> None:
    # counts every packet, then reads 200 bytes in: short packets fault after counting
    text = _count_and_tail_call(4 << 32, (4 << 32) | 1, 0).replace(
        "r0 = 7\n        exit",
        "r2 = *(u32 *)(r6 + 0)\n        r0 = *(u8 *)(r2 + 200)\n        r0 = 2\n        exit",
    )
    packets = [bytes(300), bytes(60), bytes(300), bytes(60), bytes(300)]
    data, offsets, lengths = _concat(packets)
    rt, progs = _runtime(text, [COUNTER], slots={})
    res = JitEngine().run_batch(rt, progs["main"], data, offsets, lengths)
    assert list(res.fault) == [0, 1, 0, 1, 0]
    assert list(res.action) == [2, 0, 2, 0, 2]
    assert "out-of-bounds read of 1 bytes" in str(res.errors[1]) and res.errors[1].pc == 17
    assert int.from_bytes(rt.maps[0][0], "little") == 5  # each packet counted exactly once


def test_batch_reuse_and_repeat_timing() -> None:
    from xdpsim.engines.jit_batch import time_repeat

    obj = xdpsim.load(ROOT / "programs" / "parser.o", engine="jit")
    jit = obj._engine("jit")
    pid = obj.programs["packet_parser"].id
    data, offsets, lengths = _concat(PACKETS)
    first = jit.run_batch(obj.runtime, pid, data, offsets, lengths)
    again = jit.run_batch(obj.runtime, pid, data, offsets, lengths, reuse=first)
    assert again is first and [again.packet(i) for i in range(len(PACKETS))] == PACKETS
    ns, r0 = time_repeat(jit, obj.runtime, pid, PACKETS[0], 1000)
    assert ns > 0 and r0 == XdpAction.XDP_PASS


# ------------------------------------------------------------------------------ compile cache


def test_disk_cache_second_compile_loads_object_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xdpsim.jit.compiler import Compiler
    from xdpsim.jit.lower import ProgramInput

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("XDPSIM_JIT_CACHE", "1")
    monkeypatch.delenv("XDPSIM_JIT_TIER", raising=False)
    prog = ProgramInput(assemble("r0 = 41\nr0 += 1\nexit"))
    c1, c2 = Compiler(), Compiler()  # (kept alive: their engines own the machine code)
    first = c1.compile(prog)
    assert first.source == "compiled"
    assert c1.wait(60)  # the O2 build (tier 2) in the background is what goes to disk
    assert list((tmp_path / "xdpsim" / "jit").glob("*.o"))
    second = c2.compile(prog)
    assert second.source == "disk"
    import ctypes

    fn = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, *[ctypes.c_int64] * 6)(second.address)
    from xdpsim.jit import abi
    from xdpsim.memory import AddressSpace

    mem = AddressSpace()
    env = np.zeros(abi.ENV_WORDS, np.uint64)
    env[abi.E_TABLE] = mem.table_address
    env[abi.E_BUDGET] = 100
    assert fn(env.ctypes.data, 0, 0, 0, 0, 0, (1 << 32) | 4096) == 42


def test_batch_hook_between_chunks_rebuilds_the_chain() -> None:
    main = _count_and_tail_call(4 << 32, (4 << 32) | 1, 3)
    rt, progs = _runtime(main, [COUNTER], extra={"other": "r0 = 3\nexit"}, slots={})
    data, offsets, lengths = _concat([PACKETS[0]] * 10)
    seen = []

    def hook(i: int) -> None:
        seen.append(i)
        if i == 4:
            rt.maps[1][3] = "other"  # from packet 4 on, slot 3 jumps to `other`

    res = JitEngine().run_batch(rt, progs["main"], data, offsets, lengths, chunk=2, on_batch=hook)
    assert seen == [2, 4, 6, 8]
    assert [int(r) for r in res.retval] == [7] * 4 + [3] * 6


def test_engines_without_native_helpers_or_proofs_agree() -> None:
    obj = xdpsim.load(ROOT / "programs" / "parser.o", engine="jit")
    pid = obj.programs["packet_parser"].id
    outs = []
    for eng in (JitEngine(), JitEngine(native_helpers=False), JitEngine(proofs=False)):
        outs.append([run_xdp(obj.runtime, eng, pid, p).retval for p in PACKETS])
        assert obj.runtime.programs[pid].cache[eng.cache_name] is not None
    assert outs[0] == outs[1] == outs[2]
    assert len({k for k in obj.runtime.programs[pid].cache if k.startswith("jit:")}) == 3


def test_callers_r1_to_r5_after_a_call_are_the_callees(engine: str) -> None:
    from xdpsim import isa

    mov = isa.BPF_ALU64 | isa.BPF_MOV | isa.BPF_K
    insns = [isa.Instruction(mov, 1, 0, 0, 5), isa.Instruction(mov, 6, 0, 0, 7),
             isa.Instruction(isa.CALL, 0, isa.PSEUDO_CALL, 0, 3),  # -> 6
             isa.Instruction(isa.BPF_ALU64 | isa.BPF_MOV | isa.BPF_X, 0, 1),
             isa.Instruction(isa.BPF_ALU64 | isa.BPF_ADD | isa.BPF_X, 0, 6), isa.Instruction(isa.EXIT),
             isa.Instruction(mov, 1, 0, 0, 9), isa.Instruction(mov, 6, 0, 0, 100),
             isa.Instruction(mov, 0, 0, 0, 0), isa.Instruction(isa.EXIT)]
    rt = Runtime()
    coll = rt.load(ObjectSpec("<t>", {"main": ProgramSpec("main", "xdp", ProgType.XDP, "xdp", insns)}, []))
    assert _engine(engine).run(rt, coll.programs["main"], RunState(rt)) == 9 + 7  # r1 callee's, r6 kept


@pytest.mark.parametrize("budget", range(1, 8))
def test_budget_fault_names_the_interpreters_instruction(budget: int) -> None:
    """Every block's budget check (one fault block shared per function) names the instruction the
    interpreter stops at, whichever block runs out."""
    src = "r0 = 0\nr0 += 1\nr0 += 1\nif r0 > 5 goto +1\nr0 += 1\nr0 += 1\nexit"
    out = []
    for eng in ("interp", "jit"):
        rt, progs = _runtime(src, [COUNTER])
        r = run_xdp(rt, _engine(eng), progs["main"], PACKETS[0], budget=budget)
        assert isinstance(r.error, ProgramFault) or budget == 7
        out.append((str(r.error), getattr(r.error, "pc", None), r.action))
    assert out[0] == out[1]
