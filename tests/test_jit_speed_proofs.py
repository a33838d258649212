"""The JIT's speed proofs (jit/verify.py) are sound and found where the fast paths need them.

- signed bounds: a sign-extended 32-bit value (`<<= 32; s>>= 32`, movsx) compared with a constant gets
  bounds that let `data + x` become a packet pointer whose accesses are proven (parser.c's TCP/UDP
  header load); comparisons that do not bound it (a lower bound only, JMP32, the wrong edge) prove
  nothing;
- `maplookup`: bpf_map_lookup_elem on a known map with its key in the frame runs inline without
  handle or key checks (natives.map_lookup_proven); a hash key longer than the room in the frame goes
  to Python and faults as in the interpreter;
- `tailcall`: bpf_tail_call through a known prog array (r2 its handle on every path) skips the handle
  and map type checks (natives.tail_call); slots past the end, empty slots, a self-chain past 33 calls
  and another map in r2 on one path agree with the interpreter;
- random programs built around these patterns agree with the interpreter (run in a subprocess worker,
  xdpsim.jit.fuzzcheck, so an unsound proof that reads outside the frame fails the test, not pytest).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from test_jit_fuzz import _check  # runs the cases in the fuzzcheck worker, interp against JIT

import xdpsim
from xdpsim import isa
from xdpsim.engines.interp import Interpreter
from xdpsim.engines.jit import JitEngine
from xdpsim.hooks.xdp import run_xdp
from xdpsim.isa import Instruction as I  # noqa: N817
from xdpsim.jit.verify import analyse
from xdpsim.runtime import Runtime
from xdpsim.spec import MapSpec, MapType, ObjectSpec, ProgramSpec, ProgType

ROOT = Path(__file__).resolve().parent.parent

JMP_K = {"gt": 0x25, "ge": 0x35, "lt": 0xA5, "le": 0xB5, "sgt": 0x65, "sge": 0x75, "slt": 0xC5, "sle": 0xD5}
FLIP = {"gt": "lt", "lt": "gt", "ge": "le", "le": "ge"}
FLIP.update({"s" + a: "s" + b for a, b in FLIP.items()})


def _lddw(dst: int, value: int) -> list[I]:
    return list(isa.lddw(dst, value & ((1 << 64) - 1)))


def _link(items: list) -> list[I]:
    """Items: Instructions, ("label", name), or ("jmp", opcode, dst, src, imm, label)."""
    labels, pc = {}, 0
    for it in items:
        if isinstance(it, tuple) and it[0] == "label":
            labels[it[1]] = pc
        else:
            pc += 1
    out: list[I] = []
    for it in items:
        if isinstance(it, tuple) and it[0] == "label":
            continue
        if isinstance(it, tuple):
            _, op, dst, src, imm, label = it
            out.append(I(op, dst, src, labels[label] - len(out) - 1, imm))
        else:
            out.append(it)
    return out


def _head() -> list:
    """r6 = ctx, r2 = data, r3 = data_end, r7 = packet length (unknown to the static pass)."""
    return [I(0xBF, 6, 1), I(0x61, 2, 6, 0), I(0x61, 3, 6, 4), I(0xBF, 7, 3), I(0x1F, 7, 2)]


def _tail(n: int, size_op: int, off: int) -> list:
    """r2 += r4; bounds-check n bytes past it against data_end; load at off; drop path at 'drop'."""
    return [
        I(0x0F, 2, 4),
        I(0xBF, 5, 2),
        I(0x07, 5, 0, 0, n),
        ("jmp", 0x2D, 5, 3, 0, "drop"),
        I(size_op, 0, 2, off),
        I(0x95),
        ("label", "drop"),
        I(0xB7, 0, 0, 0, 1),
        I(0x95),
    ]


def _sext_program(neg: int, cmp: str, const: int, x_form: bool = False, swap: bool = False) -> list[I]:
    """parser.c's pattern: x = (a join of `neg` and the length & 0x3f) sign-extended from 32 bits,
    `if x <cmp> const goto drop`, then data + x."""
    items = _head() + [
        ("jmp", 0x25, 7, 0, 40, "small"),
        *_lddw(4, neg),
        ("jmp", 0x05, 0, 0, 0, "join"),
        ("label", "small"),
        I(0xBF, 4, 7),
        I(0x57, 4, 0, 0, 0x3F),
        ("label", "join"),
        I(0x67, 4, 0, 0, 32),
        I(0xC7, 4, 0, 0, 32),
    ]
    if x_form:  # the constant in r8: "if r4 op r8", or "if r8 op' r4" when swapped
        items.append(I(0xB7, 8, 0, 0, const))
        op = JMP_K[FLIP[cmp]] if swap else JMP_K[cmp]
        items.append(("jmp", op | 0x08, 8 if swap else 4, 4 if swap else 8, 0, "drop"))
    else:
        items.append(("jmp", JMP_K[cmp], 4, 0, const, "drop"))
    return _link(items + _tail(20, 0x69, 0))


def _final_load_proven(insns: list[I]) -> bool:
    proofs, _ = analyse(insns, xdp=True)
    load = max(pc for pc, ins in enumerate(insns) if ins.cls == isa.BPF_LDX)
    return load in proofs


def test_parser_accesses_are_all_proven() -> None:
    """Every memory access of the reference parser is proven, the TCP/UDP header load after the
    sign-extended l4 offset included, and both lookups run the inline proven path."""
    obj = xdpsim.load(ROOT / "programs" / "parser.o", engine="jit")
    eng = obj._engine("jit")  # noqa: SLF001
    for name, prog in obj.programs.items():
        lp = obj.runtime.programs[prog.id]
        pin = eng.program_input(obj.runtime, lp)
        for pc, ins in enumerate(lp.insns):
            if ins.cls in (isa.BPF_LDX, isa.BPF_ST, isa.BPF_STX) and not ins.is_filler:
                assert pc in pin.proofs, f"{name} insn {pc} not proven"
            if ins.opcode == isa.CALL and ins.imm == 1:
                assert pin.proofs[pc].kind == "maplookup", f"{name} insn {pc}"


@pytest.mark.parametrize(
    ("cmp", "const", "x_form", "swap", "proven"),
    [
        ("slt", 0, False, False, True),  # x s< 0 -> drop: x in [0, 63] after
        ("slt", 0, True, True, True),  # r8 = 0; if 0 s> x -> drop (parser.c's `if r2 s> r3`)
        ("slt", 0, True, False, True),  # if x s< r8 -> drop
        ("sgt", -1, True, True, False),  # if -1 s< x -> drop: the non-negative values
        ("sle", -1, False, False, True),
        ("sge", 0, False, False, False),  # drops the non-negative values: x may be -2 after
        ("gt", 5, False, False, True),  # unsigned x > 5 -> drop: x <= 5
        ("lt", 5, False, False, False),  # x < 5 -> drop: a lower bound only
        ("ge", 0x8000, False, False, True),
        ("sgt", 0x10000, False, False, False),  # an upper bound only: x may still be -2
        ("sge", 10, False, False, False),  # x s< 10 on the way on: -2 included
    ],
)
def test_sign_extended_offsets(cmp: str, const: int, x_form: bool, swap: bool, proven: bool) -> None:
    insns = _sext_program(-2, cmp, const, x_form, swap)
    assert _final_load_proven(insns) == proven
    _agree(insns, [bytes(range(n)) for n in (0, 14, 21, 22, 23, 30, 60, 64, 90)])


def test_jmp32_and_lost_bounds_prove_nothing() -> None:
    # a 32-bit comparison does not bound the 64-bit value
    insns = _sext_program(-2, "slt", 0)
    jmp = next(pc for pc, ins in enumerate(insns) if ins.opcode == JMP_K["slt"])
    insns[jmp] = I(0xC6, 4, 0, insns[jmp].off, 0)  # JMP32 JSLT
    assert not _final_load_proven(insns)
    _agree(insns, [bytes(n) for n in (0, 22, 60)])
    # without the sign extension (x is the u64 0xfffffffe on one path) nothing bounds x below 2^16
    head = [("jmp", 0x25, 7, 0, 40, "small"), *_lddw(4, 0xFFFF_FFFE), ("jmp", 0x05, 0, 0, 0, "join")]
    mask = [("label", "small"), I(0xBF, 4, 7), I(0x57, 4, 0, 0, 0x3F), ("label", "join")]
    no_sext = _link(_head() + head + mask + [("jmp", 0xC5, 4, 0, 0, "drop")] + _tail(20, 0x69, 2))
    assert not _final_load_proven(no_sext)
    _agree(no_sext, [bytes(n) for n in (0, 22, 60)])


def _agree(insns: list[I], packets: list[bytes]) -> None:
    for pkt in packets:
        out = []
        for eng in (Interpreter(), JitEngine()):
            rt = Runtime()
            prog = ProgramSpec("p", "xdp", ProgType.XDP, "xdp", list(insns))
            coll = rt.load(ObjectSpec("<t>", {"p": prog}, []))
            r = run_xdp(rt, eng, coll.programs["p"], pkt)
            # instructions counted: the JIT charges a whole block at its start, so only without a fault
            out.append((r.retval, str(r.error), r.insns if r.error is None else None))
        assert out[0] == out[1], (pkt.hex(), out)


# ------------------------------------------------------------------------------ map lookups

HASH8 = MapSpec("h8", MapType.HASH, 8, 8, 4)
ARR = MapSpec("arr", MapType.PERCPU_ARRAY, 4, 8, 4)


def _lookup_program(map_id: int, key_off: int, key_base: int = 10) -> list[I]:
    """*(u64 *)(r10 - 16) = 7; *(u32 *)(r10 - 4) = 1; r0 = lookup(map, key_base + key_off);
    r0 = r0 ? *r0 : 99"""
    return _link(
        [
            I(0x7A, 10, 0, -16, 7),
            I(0x62, 10, 0, -4, 1),
            I(0xBF, 2, key_base),
            I(0x07, 2, 0, 0, key_off),
            *_lddw(1, (4 << 32) | map_id),
            I(0x85, 0, 0, 0, 1),
            ("jmp", 0x15, 0, 0, 0, "null"),
            I(0x79, 0, 0, 0),
            I(0x95),
            ("label", "null"),
            I(0xB7, 0, 0, 0, 99),
            I(0x95),
        ]
    )


def _run_maps(insns: list[I], maps: list[MapSpec]) -> list[tuple]:
    out = []
    for eng in (Interpreter(), JitEngine()):
        rt = Runtime(cpus=2)
        spec = ObjectSpec("<t>", {"p": ProgramSpec("p", "xdp", ProgType.XDP, "xdp", list(insns))}, list(maps))
        coll = rt.load(spec)
        for m in coll.maps.values():
            if m.spec.type == MapType.PERCPU_ARRAY:
                m[1] = [(5).to_bytes(8, "little"), (6).to_bytes(8, "little")]
            else:
                m[(7).to_bytes(8, "little")] = (42).to_bytes(8, "little")
        r = run_xdp(rt, eng, coll.programs["p"], bytes(60), queue=1)
        out.append((r.retval, str(r.error), r.insns if r.error is None else None, dict(r.helper_counts)))
    return out


@pytest.mark.parametrize(
    ("maps", "key_off", "proof", "retval"),
    [
        ([ARR], -4, (0 << 10) | 4, 6),  # per-CPU array, CPU 1's slice
        ([HASH8], -16, 16, 42),  # hash key of 8 bytes with 16 in the frame
        ([HASH8], -4, 4, None),  # 8-byte key with 4 bytes in the frame: Python faults as the interpreter
        ([ARR, HASH8], -16, (1 << 10) | 16, 42),
    ],
)
def test_proven_lookups_agree(maps: list[MapSpec], key_off: int, proof: int, retval: int | None) -> None:
    insns = _lookup_program(len(maps) - 1, key_off)
    value_sizes = {i: m.value_size for i, m in enumerate(maps)}
    proofs, _ = analyse(insns, xdp=True, map_value_sizes=value_sizes)
    call = next(pc for pc, ins in enumerate(insns) if ins.opcode == isa.CALL)
    assert (proofs[call].kind, proofs[call].offset) == ("maplookup", proof)
    interp, jit = _run_maps(insns, maps)
    assert interp == jit
    if retval is None:
        assert "out-of-bounds" in interp[1]
    else:
        assert interp[0] == retval and interp[1] == "None"


def test_lookup_with_a_key_outside_the_frame_is_not_proven() -> None:
    value_sizes = {0: 8}
    for base, off in ((10, 0), (10, -516), (1, 0)):  # at r10 (no room), below the frame, the context
        insns = _lookup_program(0, off, key_base=base)
        proofs, _ = analyse(insns, xdp=True, map_value_sizes=value_sizes)
        call = next(pc for pc, ins in enumerate(insns) if ins.opcode == isa.CALL)
        assert call not in proofs
        interp, jit = _run_maps(insns, [ARR])
        assert interp == jit


JMP = MapSpec("jmp", MapType.PROG_ARRAY, 4, 4, 4, init_slots={0: "p", 2: "leaf"})


def _tail_program(key: int, other_map: bool) -> list[I]:
    """r6 = ctx; r0 = count++ in map 0's slot 0 (array); tail_call(ctx, jmp (or on an odd packet
    length, the array), key); r0 = 5: a self-call through slot 0 runs until the chain limit."""
    return _link(
        [
            I(0xBF, 6, 1),  # r6 = r1
            I(0x62, 10, 0, -4, 0),  # *(u32 *)(r10 - 4) = 0
            I(0xBF, 2, 10),
            I(0x07, 2, 0, 0, -4),
            *_lddw(1, 4 << 32),
            I(0x85, 0, 0, 0, 1),  # lookup(array, &key)
            ("jmp", 0x15, 0, 0, 0, "null"),
            I(0x79, 1, 0, 0, 0),
            I(0x07, 1, 0, 0, 1),
            I(0x7B, 0, 1, 0, 0),
            ("label", "null"),
            *_lddw(2, (4 << 32) | 1),
            *(
                [
                    I(0x61, 3, 6, 4, 0),  # r3 = data_end (low bits: the packet's length parity)
                    I(0x57, 3, 0, 0, 1),
                    ("jmp", 0x15, 3, 0, 0, "even"),
                    *_lddw(2, 4 << 32),  # the array: bpf_tail_call's fault
                    ("label", "even"),
                ]
                if other_map
                else []
            ),
            I(0xBF, 1, 6),
            I(0xB7, 3, 0, 0, key),
            I(0x85, 0, 0, 0, 12),
            I(0xB7, 0, 0, 0, 5),
            I(0x95),
        ]
    )


def _run_tail(insns: list[I], size: int) -> list[tuple]:
    out = []
    leaf = [I(0xB7, 0, 0, 0, 3), I(0x95)]
    for eng in (Interpreter(), JitEngine()):
        rt = Runtime()
        bodies = (("p", insns), ("leaf", leaf))
        progs = {n: ProgramSpec(n, "xdp", ProgType.XDP, "xdp", list(b)) for n, b in bodies}
        coll = rt.load(ObjectSpec("<t>", progs, [MapSpec("arr", MapType.ARRAY, 4, 8, 1), JMP]))
        r = run_xdp(rt, eng, coll.programs["p"], bytes(size))
        count = int.from_bytes(coll.maps["arr"][0], "little")
        out.append((r.retval, str(r.error), r.tail_calls, count, dict(r.helper_counts)))
    return out


@pytest.mark.parametrize(
    ("key", "retval", "calls"), [(0, 5, 33), (1, 5, 0), (2, 3, 1), (4, 5, 0), (-1, 5, 0)]
)
def test_proven_tail_calls_agree(key: int, retval: int, calls: int) -> None:
    insns = _tail_program(key, other_map=False)
    proofs, _ = analyse(insns, xdp=True, map_value_sizes={0: 8}, prog_arrays=frozenset({1}))
    call = max(pc for pc, ins in enumerate(insns) if ins.opcode == isa.CALL)
    assert (proofs[call].kind, proofs[call].offset) == ("tailcall", 1)
    assert call not in analyse(insns, xdp=True, map_value_sizes={0: 8})[0]  # not known as a prog array
    interp, jit = _run_tail(insns, 60)
    assert interp == jit
    assert interp[:3] == (retval, "None", calls)


def test_tail_call_with_another_map_on_one_path_is_not_proven() -> None:
    insns = _tail_program(2, other_map=True)
    proofs, _ = analyse(insns, xdp=True, map_value_sizes={0: 8}, prog_arrays=frozenset({1}))
    call = max(pc for pc, ins in enumerate(insns) if ins.opcode == isa.CALL)
    assert call not in proofs
    for size in (60, 61):  # the prog array (leaf runs), the array (the interpreter's fault)
        interp, jit = _run_tail(insns, size)
        assert interp == jit
    assert "bpf_tail_call" in interp[1]


# ------------------------------------------------------------------------------ random programs


def _imm(v: int) -> int:
    """v as the signed 32-bit immediate with the same low 32 bits."""
    return ((v + (1 << 31)) & 0xFFFF_FFFF) - (1 << 31)


@st.composite
def range_case(draw: st.DrawFn) -> dict:
    interesting = [0, 1, 14, 63, 0x7FFF, 0xFFFF, 0x10000, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFE, 0xFFFF_FFFF]
    # one path's value: often negative, the ones an unsound bound would let reach before data
    negative = st.sampled_from([-1, -2, -64, -(1 << 32)])
    neg = draw(st.one_of(negative, st.sampled_from(interesting + [1 << 32])))
    ops = []
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3]))):
        ops.append(
            draw(
                st.sampled_from(
                    [
                        [I(0x67, 4, 0, 0, 32), I(0xC7, 4, 0, 0, 32)],  # sign-extend the low half
                        [I(0xBC, 4, 4)],  # w4 = w4
                        [I(0xBF, 4, 4, 32)],  # r4 = (s32) r4
                        [I(0xC7, 4, 0, 0, draw(st.integers(0, 40)))],
                        [I(0x77, 4, 0, 0, draw(st.integers(0, 40)))],
                        [I(0x67, 4, 0, 0, draw(st.integers(0, 40)))],
                        [I(0x57, 4, 0, 0, _imm(draw(st.sampled_from(interesting))))],
                        [I(0x07, 4, 0, 0, draw(st.integers(-70, 70)))],
                    ]
                )
            )
        )
    cmps = []
    for _ in range(draw(st.integers(1, 2))):
        op = draw(st.sampled_from(sorted(JMP_K.values())))
        near = st.integers(-3, 70)  # constants near the values x takes: bounds that matter
        c = _imm(draw(st.one_of(near, st.sampled_from(interesting + [-1, -2, -20, -(1 << 31)]))))
        form = draw(st.integers(0, 2))  # K, "r4 op r8", "r8 op r4"
        keep_taken = draw(st.booleans())
        if form == 0:
            j = ("jmp", op, 4, 0, c, "cont" if keep_taken else "drop")
        else:
            cmps.append(I(0xB7, 8, 0, 0, c))
            a, b = (4, 8) if form == 1 else (8, 4)
            j = ("jmp", op | 0x08, a, b, 0, "cont" if keep_taken else "drop")
        cmps += [j] + ([("jmp", 0x05, 0, 0, 0, "drop")] if keep_taken else []) + [("label", "cont")]
    # unique labels per comparison
    n_cont = 0
    fixed = []
    for it in cmps:
        if isinstance(it, tuple) and it[0] == "label" and it[1] == "cont":
            fixed.append(("label", f"cont{n_cont}"))
            n_cont += 1
        elif isinstance(it, tuple) and it[0] == "jmp" and it[5] == "cont":
            fixed.append(it[:5] + (f"cont{n_cont}",))
        else:
            fixed.append(it)
    items = _head() + [
        ("jmp", 0x25, 7, 0, draw(st.integers(0, 80)), "small"),
        *_lddw(4, neg),
        ("jmp", 0x05, 0, 0, 0, "join"),
        ("label", "small"),
        I(0xBF, 4, 7),
        I(0x57, 4, 0, 0, draw(st.sampled_from([0x3F, 0xFF, 0xFFFF]))),
        ("label", "join"),
        *[x for o in ops for x in o],
        *fixed,
    ]
    n = draw(st.integers(1, 40))
    size_op = draw(st.sampled_from([0x71, 0x69, 0x61, 0x79]))
    insns = _link(items + _tail(n, size_op, draw(st.one_of(st.integers(-4, 4), st.integers(-4, 44)))))
    packet = bytes(draw(st.integers(0, 255)) for _ in range(draw(st.integers(0, 140))))
    return {"program": isa.encode(insns).hex(), "packet": packet.hex(), "object": None}


@settings(
    max_examples=int(os.environ.get("XDPSIM_FUZZ_EXAMPLES", "2")),
    derandomize=os.environ.get("XDPSIM_FUZZ_RANDOM") != "1",
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(st.lists(range_case(), min_size=20, max_size=20))
def test_random_range_programs_agree(cases: list[dict]) -> None:
    proven = sum(_final_load_proven(isa.decode(bytes.fromhex(c["program"]))) for c in cases)
    assert proven > 0  # the batch exercises proven loads, not only checked ones
    _check(cases)
