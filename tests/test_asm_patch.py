"""xdpsim.asm.patch: instructions inserted into linked programs, every pc-relative reference fixed up.

Equivalence is checked by running the original and the patched program through the interpreter on
the same packets (actions, bytes, redirect targets, faults, final maps)."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from xdpsim import isa
from xdpsim.asm import assemble
from xdpsim.asm.patch import patch, remap_log
from xdpsim.engines.interp import Interpreter
from xdpsim.errors import EncodingError
from xdpsim.hooks.xdp import run_xdp
from xdpsim.io import open_capture
from xdpsim.loader import load_object
from xdpsim.runtime import Runtime
from xdpsim.spec import ObjectSpec, ProgType

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "programs"
PCAP = ROOT / "pcaps" / "mixed.pcap"
NOP = isa.Instruction(isa.BPF_JMP | isa.BPF_JA, 0, 0, 0, 0)  # `goto +0`


def packets(n: int = 48) -> list[bytes]:
    out = []
    with open_capture(str(PCAP)) as cap:
        for p in cap:
            out.append(bytes(p.data))
            if len(out) == n:
                break
    return out


def patched_spec(spec: ObjectSpec, edits) -> ObjectSpec:  # noqa: ANN001 - edits(prog) -> (before, replace)
    progs = {}
    for name, p in spec.programs.items():
        before, replace = edits(p)
        r = patch(p.insns, before, replace)
        progs[name] = dataclasses.replace(p, insns=r.insns, func_info=r.shift(p.func_info),
                                          line_info=r.shift(p.line_info),
                                          functions=r.shift_functions(p.functions))
    return dataclasses.replace(spec, programs=progs)


def outcomes(spec: ObjectSpec, data: list[bytes]) -> list:
    rt = Runtime(seed=1)
    coll = rt.load(spec)
    eng = Interpreter()
    out = []
    for name, p in spec.programs.items():
        if p.type != ProgType.XDP or "devmap" in p.section:
            continue
        for i, d in enumerate(data):
            r = run_xdp(rt, eng, coll.programs[name], d, ifindex=1, queue=i % 2, now_ns=i * 1000)
            out.append((name, i, int(r.action), r.data, r.redirect, r.error is not None, r.tail_calls))
    maps = {n: m.to_json() for n, m in coll.maps.items()}
    return [out, maps]


def nops_everywhere(p):  # noqa: ANN001, ANN201
    fill = {i + 1 for i, ins in enumerate(p.insns) if ins.opcode == isa.LDDW}
    return {pc: [NOP] for pc in range(len(p.insns)) if pc not in fill}, {}


def nops_random(p):  # noqa: ANN001, ANN201
    rng = random.Random(len(p.insns))
    fill = {i + 1 for i, ins in enumerate(p.insns) if ins.opcode == isa.LDDW}
    return {pc: [NOP] * rng.randint(1, 40) for pc in range(len(p.insns))
            if pc not in fill and rng.random() < 0.3}, {}


@pytest.mark.parametrize("obj", ["parser.o", "calls.o", "chain.o", "firewall.o", "redirect.o", "rewrite.o"])
@pytest.mark.parametrize("edits", [nops_everywhere, nops_random], ids=["every", "random"])
def test_patched_programs_behave_the_same(obj: str, edits) -> None:  # noqa: ANN001
    spec = load_object(str(PROGRAMS / obj))
    data = packets()
    new = patched_spec(spec, edits)
    assert any(len(new.programs[n].insns) > len(p.insns) for n, p in spec.programs.items())
    assert outcomes(new, data) == outcomes(spec, data)


def test_jump_into_inserted_code_and_replacement() -> None:
    # r0 = 1; if r1 == 0 goto L; r0 = 2; L: r0 += 10; exit  -- insert before L, replace `r0 = 2`
    prog = assemble("r0 = 1\nif r1 == 0 goto +1\nr0 = 2\nr0 += 10\nexit")
    p = patch(prog, before={3: assemble("r0 += 100")}, replace={2: assemble("r0 = 3\nr0 += 4")})
    assert p.insns[1].off == 2  # over the two replacement slots onto the inserted `r0 += 100`
    assert [p.new_pc(i) for i in range(5)] == [0, 1, 2, 4, 6]
    assert [p.old_pc(i) for i in range(7)] == [0, 1, 2, 2, 3, 3, 4]
    assert p.at == [0, 1, None, 5, 6]


def test_calls_and_func_pointers_and_gotol_are_fixed_up() -> None:
    call = isa.Instruction(isa.CALL, 0, isa.PSEUDO_CALL, 0, 4)  # to pc 5
    func = isa.Instruction(isa.LDDW, 2, isa.PSEUDO_FUNC, 0, 2)  # to pc 5 from pc 2
    gotol = isa.Instruction(isa.BPF_JMP32 | isa.BPF_JA, 0, 0, 0, 0)  # to pc 5 from pc 4
    prog = [call, isa.Instruction(0xB7, 0, 0, 0, 0), func, isa.Instruction(0), gotol,
            *assemble("r0 = 7\nexit")]
    prog[4] = dataclasses.replace(gotol, imm=0)
    p = patch(prog, before={5: [NOP, NOP], 1: [NOP]})
    assert p.new_pc(5) == 6
    assert p.insns[0].imm == p.new_pc(5) - 0 - 1
    assert p.insns[p.at[2]].imm == p.new_pc(5) - p.at[2] - 1
    isa.validate(p.insns)


def test_offset_overflow_is_refused_with_the_instruction() -> None:
    prog = assemble("if r1 == 0 goto +1\nr0 = 1\nr0 = 2\nexit")
    with pytest.raises(EncodingError, match="instruction 0: .*16-bit"):
        patch(prog, before={1: [NOP] * 40000})


def test_refuses_edits_at_lddw_second_slot_and_jump_replacement() -> None:
    prog = [*isa.lddw(1, 5), *assemble("if r1 == 0 goto +0\nexit")]
    with pytest.raises(EncodingError, match="second slot"):
        patch(prog, before={1: [NOP]})
    with pytest.raises(EncodingError, match="cannot replace"):
        patch(prog, replace={2: [NOP]})


def test_line_info_moves_to_the_inserted_code_and_logs_map_back() -> None:
    spec = load_object(str(PROGRAMS / "redirect.o"))
    prog = spec.programs["redirect_ifindex"]
    call = next(i for i, ins in enumerate(prog.insns) if ins.opcode == isa.CALL and ins.imm == 23)
    p = patch(prog.insns, before={call: [NOP, NOP, NOP]})
    lines = p.shift(prog.line_info)
    assert prog.source_line(call) is not None
    line_new = dataclasses.replace(prog, insns=p.insns, line_info=lines)
    assert line_new.source_line(p.new_pc(call)).line == prog.source_line(call).line
    log = f"{p.at[call]}: (85) call bpf_redirect#23\nfrom {p.at[call]} to {p.new_pc(call)}: R0=1\n"
    assert remap_log(log, p) == f"{call}: (85) call bpf_redirect#23\nfrom {call} to {call}: R0=1\n"
