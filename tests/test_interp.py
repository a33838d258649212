"""The reference interpreter: every instruction class and its edge cases (RFC 9669, ISA v4)."""

from __future__ import annotations

import kernel_fixtures
import pytest

from xdpsim import isa
from xdpsim.asm import assemble
from xdpsim.engines.base import RunState
from xdpsim.engines.interp import Interpreter
from xdpsim.errors import LoadError, ProgramFault
from xdpsim.runtime import Runtime
from xdpsim.spec import ObjectSpec, ProgramSpec, ProgType

U64 = (1 << 64) - 1
INT64_MIN = 1 << 63


def run(text: str | list[isa.Instruction], *args: int, budget: int | None = None, tracer=None) -> int:
    insns = assemble(text) if isinstance(text, str) else text
    rt = Runtime()
    spec = ProgramSpec("t", "xdp", ProgType.XDP, "xdp", insns)
    coll = rt.load(ObjectSpec("<t>", {"t": spec}, []))
    st = RunState(rt, args=args, tracer=tracer)
    if budget is not None:
        st.budget = budget
    return Interpreter().run(rt, coll.programs["t"], st)


def fault(text: str | list[isa.Instruction], *args: int, **kw) -> ProgramFault:
    with pytest.raises(ProgramFault) as e:
        run(text, *args, **kw)
    return e.value


# ---------------------------------------------------------------------------- ALU


ALU_CASES = [
        # division and modulo by zero
        ("r0 = 7\nr1 = 0\nr0 /= r1", 0),
        ("r0 = 7\nr1 = 0\nr0 %= r1", 7),
        ("r0 = -1 ll\nw1 = 0\nw0 %= w1", 0xFFFF_FFFF),  # 32-bit: the dividend, zero-extended
        ("r0 = -1 ll\nw1 = 0\nw0 /= w1", 0),
        # signed division: INT_MIN / -1 = INT_MIN, INT_MIN % -1 = 0, truncation toward zero
        ("r0 = 0x8000000000000000 ll\nr0 s/= -1", INT64_MIN),
        ("r0 = 0x8000000000000000 ll\nr0 s%= -1", 0),
        ("w0 = -2147483648\nw0 s/= -1", 0x8000_0000),
        ("w0 = -2147483648\nw0 s%= -1", 0),
        ("r0 = -7\nr0 s/= 2", (-3) & U64),
        ("r0 = -7\nr0 s%= 2", (-1) & U64),
        ("r0 = 7\nr0 s%= -2", 1),
        ("r0 = -7\nr1 = 0\nr0 s/= r1", 0),
        ("r0 = -7\nr1 = 0\nr0 s%= r1", (-7) & U64),
        ("w0 = -7\nw1 = 0\nw0 s%= w1", 0xFFFF_FFF9),
        # unsigned division of "negative" values
        ("r0 = -1\nr0 /= 2", (U64 >> 1)),
        ("w0 = -1\nw0 /= 2", 0x7FFF_FFFF),
        # shift counts are masked
        ("r0 = 1\nr1 = 65\nr0 <<= r1", 2),
        ("w0 = 1\nw1 = 33\nw0 <<= w1", 2),
        ("r0 = -1\nr1 = 64\nr0 >>= r1", U64),
        ("r0 = -16\nr0 s>>= 2", (-4) & U64),
        ("w0 = -16\nw0 s>>= 2", 0xFFFF_FFFC),
        ("r0 = 0x80000000\nw0 s>>= 31", 0xFFFF_FFFF),
        # 32-bit results are zero-extended
        ("r0 = -1\nw0 += 1", 0),
        ("r0 = -1\nw0 = w0", 0xFFFF_FFFF),
        ("r0 = -1\nw0 *= 3", 0xFFFF_FFFD),
        ("w0 = -5", 0xFFFF_FFFB),
        ("r0 = -5", (-5) & U64),
        ("r0 = 0x100000005 ll\nw0 -= 6", 0xFFFF_FFFF),
        ("r0 = 5\nr0 = -r0", (-5) & U64),
        ("r0 = -1 ll\nw0 = -w0", 1),
        ("r0 = 0xff00ff00ff00ff00 ll\nr0 ^= -1", 0x00FF00FF00FF00FF),
        ("r0 = 0xff00ff00ff00ff00 ll\nw0 |= 1", 0xFF00FF01),
        ("r0 = 6\nr0 &= 3", 2),
        ("r0 = 0x7fffffffffffffff ll\nr0 += 1", INT64_MIN),
        ("r0 = 3\nr0 *= -1", (-3) & U64),
        # movsx
        ("r1 = 0x80\nr0 = (s8)r1", (-128) & U64),
        ("r1 = 0x18000\nr0 = (s16)r1", (-32768) & U64),
        ("r1 = 0xffffffff\nr0 = (s32)r1", U64),
        ("r1 = 0x80\nw0 = (s8)w1", 0xFFFF_FF80),
        ("r1 = 0x7f\nr0 = (s8)r1", 0x7F),
        # byte swaps: le truncates, be and bswap swap
        ("r0 = 0x1122334455667788 ll\nr0 = le16 r0", 0x7788),
        ("r0 = 0x1122334455667788 ll\nr0 = le32 r0", 0x55667788),
        ("r0 = 0x1122334455667788 ll\nr0 = le64 r0", 0x1122334455667788),
        ("r0 = 0x1122334455667788 ll\nr0 = be16 r0", 0x8877),
        ("r0 = 0x1122334455667788 ll\nr0 = be32 r0", 0x88776655),
        ("r0 = 0x1122334455667788 ll\nr0 = be64 r0", 0x8877665544332211),
        ("r0 = 0x1122334455667788 ll\nr0 = bswap16 r0", 0x8877),
        ("r0 = 0x1122334455667788 ll\nr0 = bswap32 r0", 0x88776655),
        ("r0 = 0x1122334455667788 ll\nr0 = bswap64 r0", 0x8877665544332211),
]


@pytest.mark.parametrize("body, expected", ALU_CASES)
def test_alu(body: str, expected: int) -> None:
    assert run(body + "\nexit") == expected


# ---------------------------------------------------------------------------- jumps


JUMP_CASES = [
        ("if r1 > r2", True),  # -1 unsigned is huge
        ("if r1 s> r2", False),
        ("if r1 s< r2", True),
        ("if r1 s<= -1", True),
        ("if r1 == -1", True),
        ("if w1 == -1", True),
        ("if w1 s< 0", True),
        ("if w3 == 0", True),  # 0x100000000: the low 32 bits are zero
        ("if r3 == 0", False),
        ("if w3 s>= 0", True),
        ("if r1 & 0x10", True),
        ("if w2 & 0x10", False),
        ("if r2 != 1", False),
        ("if r2 >= 1", True),
        ("if r2 <= 0", False),
        ("if r2 < 2", True),
        ("if w1 > w2", True),
        ("if w1 s> w2", False),
]


def jump_prog(cond: str) -> str:
    return f"r1 = -1\nr2 = 1\nr3 = 0x100000000 ll\nr0 = 0\n{cond} goto +1\nexit\nr0 = 1\nexit"


@pytest.mark.parametrize("cond, taken", JUMP_CASES)
def test_conditional_jumps(cond: str, taken: bool) -> None:
    assert run(jump_prog(cond)) == int(taken)


def test_ja_and_gotol() -> None:
    assert run("r0 = 1\ngoto +1\nr0 = 2\nexit") == 1
    assert run("r0 = 1\ngotol +1\nr0 = 2\nexit") == 1
    assert run("r0 = 3\ngotol +2\nr0 = 2\nexit\nexit") == 3


# ---------------------------------------------------------------------------- memory


def test_stack_loads_stores_and_sign_extension() -> None:
    prog = """
        r1 = 0x80ff7f01 ll
        *(u32 *)(r10 - 8) = r1
        *(u8 *)(r10 - 4) = 0xfe
        *(u16 *)(r10 - 2) = -2
        r0 = *(u64 *)(r10 - 8)
        exit
    """
    assert run(prog) == 0xFFFE_00FE_80FF_7F01
    assert run("*(u32 *)(r10 - 4) = -1\nr0 = *(s32 *)(r10 - 4)\nexit") == U64
    assert run("*(u32 *)(r10 - 4) = 0x8000\nr0 = *(s16 *)(r10 - 4)\nexit") == (-0x8000) & U64
    assert run("*(u32 *)(r10 - 4) = 0x7f\nr0 = *(s8 *)(r10 - 4)\nexit") == 0x7F
    assert run("*(u64 *)(r10 - 8) = -1\nr0 = *(u8 *)(r10 - 8)\nexit") == 0xFF


def test_stack_is_zeroed_per_run() -> None:
    rt = Runtime()
    spec = ProgramSpec("t", "xdp", ProgType.XDP, "xdp", assemble(
        "r0 = *(u64 *)(r10 - 8)\n*(u64 *)(r10 - 8) = 7\nexit"))
    pid = rt.load(ObjectSpec("<t>", {"t": spec}, [])).programs["t"]
    eng = Interpreter()
    assert eng.run(rt, pid, RunState(rt)) == 0
    assert eng.run(rt, pid, RunState(rt)) == 0


@pytest.mark.parametrize("size, old, expected_r0, expected_mem", [
    ("u64", 5, 5, 9),   # r0 == old: stored
    ("u64", 6, 6, 6),   # r0 != old: unchanged, r0 = old
])
def test_cmpxchg(size: str, old: int, expected_r0: int, expected_mem: int) -> None:
    prog = f"""
        r1 = {old}
        *(u64 *)(r10 - 8) = r1
        r0 = 5
        r1 = 9
        r0 = cmpxchg_64(r10 - 8, r0, r1)
        r2 = *(u64 *)(r10 - 8)
        r0 <<= 32
        r0 |= r2
        exit
    """
    assert run(prog) == (expected_r0 << 32) | expected_mem


def test_cmpxchg32_compares_low_half_and_zero_extends() -> None:
    prog = """
        r1 = 0xfffffffe
        *(u32 *)(r10 - 8) = r1
        r0 = 0x12fffffffe ll
        r1 = 3
        w0 = cmpxchg32_32(r10 - 8, w0, w1)
        r2 = *(u32 *)(r10 - 8)
        r2 <<= 40
        r0 |= r2
        exit
    """
    assert run(prog) == (3 << 40) | 0xFFFF_FFFE


@pytest.mark.parametrize("op, fetch_text, expected_mem", [
    ("add", "r1 = atomic_fetch_add((u64 *)(r10 - 8), r1)", 12 + 10),
    ("or", "r1 = atomic_fetch_or((u64 *)(r10 - 8), r1)", 12 | 10),
    ("and", "r1 = atomic_fetch_and((u64 *)(r10 - 8), r1)", 12 & 10),
    ("xor", "r1 = atomic_fetch_xor((u64 *)(r10 - 8), r1)", 12 ^ 10),
    ("xchg", "r1 = xchg_64(r10 - 8, r1)", 10),
])
def test_atomic_fetch_ops(op: str, fetch_text: str, expected_mem: int) -> None:
    prog = (f"r1 = 12\n*(u64 *)(r10 - 8) = r1\nr1 = 10\n{fetch_text}\n"
            "r0 = *(u64 *)(r10 - 8)\nr0 <<= 8\nr0 |= r1\nexit")
    assert run(prog) == (expected_mem << 8) | 12


def test_atomic_without_fetch_and_32bit() -> None:
    prog = """
        r1 = -1
        *(u64 *)(r10 - 8) = r1
        w1 = 1
        lock *(u32 *)(r10 - 8) += w1
        r0 = *(u64 *)(r10 - 8)
        exit
    """
    assert run(prog) == 0xFFFF_FFFF_0000_0000
    prog32 = """
        w1 = -1
        *(u32 *)(r10 - 8) = r1
        w1 = 2
        w1 = atomic_fetch_add((u32 *)(r10 - 8), w1)
        r0 = r1
        exit
    """
    assert run(prog32) == 0xFFFF_FFFF  # fetched old value, zero-extended


def test_lddw_value() -> None:
    assert run("r0 = 0x1122334455667788 ll\nexit") == 0x1122334455667788


# ---------------------------------------------------------------------------- calls and frames


def local_call(offset: int) -> isa.Instruction:
    return isa.Instruction(isa.CALL, 0, isa.PSEUDO_CALL, 0, offset)


def test_bpf_to_bpf_call_preserves_r6_to_r9_and_has_its_own_frame() -> None:
    main = assemble("r6 = 6\nr7 = 7\nr8 = 8\nr9 = 9\n*(u64 *)(r10 - 8) = 100\nr1 = 5")
    after = assemble("""
        r1 = *(u64 *)(r10 - 8)
        r0 += r1
        if r6 != 6 goto +4
        if r7 != 7 goto +3
        if r8 != 8 goto +2
        if r9 != 9 goto +1
        exit
        r0 = -1
        exit
    """)
    callee = assemble("""
        *(u64 *)(r10 - 8) = 1
        r6 = 0
        r7 = 0
        r8 = 0
        r9 = 0
        r0 = r1
        r0 += 1
        r2 = r10
        exit
    """)
    n_main = len(main)
    prog = [*main, local_call(len(after)), *after, *callee]
    assert prog[n_main + 1 + len(after)] == callee[0]
    assert run(prog) == 106


def nested_calls(depth: int) -> list[isa.Instruction]:
    """Function k calls function k+1 until `depth` functions are active; each returns r0 + 1."""
    out: list[isa.Instruction] = []
    for k in range(depth):
        if k < depth - 1:
            out += [local_call(2), *assemble("r0 += 1\nexit")]
        else:
            out += assemble("r0 = r10\nexit")
    return out


def test_eight_frames_allowed_ninth_faults() -> None:
    r0 = run(nested_calls(8))
    assert r0 == ((1 << 32) | (4096 - 7 * 512)) + 7  # r10 of frame 7, then +1 per return
    f = fault(nested_calls(9))
    assert f.kind == "call-depth"
    assert "at most 8 frames" in str(f)
    assert f.pc is not None and f.program == "t"


def test_stack_access_below_the_frame_faults() -> None:
    f = fault("r0 = *(u64 *)(r10 - 520)\nexit")
    assert f.kind == "memory" and f.region == "stack"
    assert "out-of-bounds read of 8 bytes" in f.reason
    assert f.pc == 0 and "r10 - 0x208" in (f.insn or "")


def test_callx_through_a_function_pointer() -> None:
    # lddw PSEUDO_FUNC: r1 = &f; callx r1; f returns 42
    lo, hi = isa.lddw(1, 3, src=isa.PSEUDO_FUNC)  # target = pc(0) + 3 + 1 = 4
    prog = [lo, hi, isa.Instruction(isa.CALLX, 1), *assemble("exit\nr0 = 42\nexit")]
    assert run(prog) == 42


def test_callx_to_a_non_function_faults() -> None:
    f = fault("r1 = 1234\ncallx r1\nexit")
    assert f.kind == "call" and "not a function" in f.reason and f.pc == 1


# ---------------------------------------------------------------------------- faults and budget


def test_null_dereference_names_everything() -> None:
    f = fault("r1 = 0\nr0 = *(u32 *)(r1 + 16)\nexit")
    assert f.kind == "memory" and f.pc == 1 and f.program == "t"
    assert "null pointer read of 4 bytes at 0x10" in str(f)
    assert "r0 = *(u32 *)(r1 + 0x10)" in str(f)


def test_runaway_loop_hits_budget() -> None:
    f = fault("r0 = 0\nr0 += 1\ngoto -2\nexit", budget=1000)
    assert f.kind == "budget" and "1000" in f.reason and f.program == "t"
    assert f.pc in (1, 2)


def test_budget_counts_exactly() -> None:
    assert run("r0 = 1\nexit", budget=2) == 1
    assert fault("r0 = 1\nexit", budget=1).kind == "budget"


def test_tracer_sees_each_instruction() -> None:
    seen: list[tuple[int, int]] = []
    run("r0 = 1\nif r0 == 1 goto +1\nr0 = 2\nexit", tracer=lambda pid, pc, regs: seen.append((pid, pc)))
    assert seen == [(0, 0), (0, 1), (0, 3)]


# ---------------------------------------------------------------------------- load-time refusals


def _load(insns: list[isa.Instruction]) -> None:
    Runtime().load(ObjectSpec("<t>", {"t": ProgramSpec("t", "xdp", ProgType.XDP, "xdp", insns)}, []))


def test_unknown_helper_is_refused_at_load() -> None:
    with pytest.raises(LoadError, match=r"instruction 0: unknown helper 999"):
        _load(assemble("call 999\nexit"))
    with pytest.raises(LoadError, match=r"unknown helper 17 \(bpf_get_cgroup_classid\)"):
        _load(assemble("call 17\nexit"))


def test_kfunc_call_is_refused_at_load() -> None:
    with pytest.raises(LoadError, match=r"instruction 0: kfunc call \(BTF id 1234"):
        _load([isa.Instruction(isa.CALL, 0, isa.PSEUDO_KFUNC_CALL, 0, 1234), *assemble("exit")])


def test_invalid_instruction_is_refused_at_load() -> None:
    with pytest.raises(LoadError, match=r"program t: instruction 0"):
        _load([isa.Instruction(0xFF), *assemble("exit")])


# ---------------------------------------------------------------------------- the kernel agrees

kernel = kernel_fixtures.kernel


def _kernel_r0(text: str) -> int:
    """r0 of `text` run by the kernel as an XDP program (two runs: BPF_PROG_TEST_RUN gives 32 bits)."""
    from xdpsim.engines.kernel import KernelCollection

    halves = []
    for tail in ("exit", "r0 >>= 32\nexit"):
        body = text.rsplit("exit", 1)[0] + tail
        spec = ObjectSpec("<t>", {"t": ProgramSpec("t", "xdp", ProgType.XDP, "xdp", assemble(body),
                                                   license="GPL")}, [], license="GPL")
        with KernelCollection(spec) as kc:
            halves.append(kc.run_xdp("t", bytes(64)).retval & 0xFFFF_FFFF)
    return halves[0] | (halves[1] << 32)


@pytest.mark.parametrize("body, expected", ALU_CASES)
def test_kernel_agrees_on_alu(kernel: str, body: str, expected: int) -> None:
    assert _kernel_r0(body + "\nexit") == run(body + "\nexit") == expected


@pytest.mark.parametrize("cond, taken", JUMP_CASES)
def test_kernel_agrees_on_jumps(kernel: str, cond: str, taken: bool) -> None:
    assert _kernel_r0(jump_prog(cond)) == run(jump_prog(cond)) == int(taken)


MEMORY_CASES = [
    # every byte written first: the kernel lets root read uninitialised stack (garbage there)
    "r1 = 0x80ff7f01 ll\n*(u32 *)(r10 - 8) = r1\n*(u8 *)(r10 - 4) = 0xfe\n*(u8 *)(r10 - 3) = 0\n"
    "*(u16 *)(r10 - 2) = -2\nr0 = *(u64 *)(r10 - 8)\nexit",
    "*(u32 *)(r10 - 4) = -1\nr0 = *(s32 *)(r10 - 4)\nexit",
    "*(u32 *)(r10 - 4) = 0x8000\nr0 = *(s16 *)(r10 - 4)\nexit",
    "*(u32 *)(r10 - 4) = 0x80\nr0 = *(s8 *)(r10 - 4)\nexit",
    "r1 = 5\n*(u64 *)(r10 - 8) = r1\nr0 = 5\nr1 = 9\nr0 = cmpxchg_64(r10 - 8, r0, r1)\n"
    "r2 = *(u64 *)(r10 - 8)\n"
    "r0 <<= 32\nr0 |= r2\nexit",
    "r1 = 6\n*(u64 *)(r10 - 8) = r1\nr0 = 5\nr1 = 9\nr0 = cmpxchg_64(r10 - 8, r0, r1)\n"
    "r2 = *(u64 *)(r10 - 8)\n"
    "r0 <<= 32\nr0 |= r2\nexit",
    "r1 = 0xfffffffe\n*(u32 *)(r10 - 8) = r1\nr0 = 0x12fffffffe ll\nr1 = 3\n"
    "w0 = cmpxchg32_32(r10 - 8, w0, w1)\nr2 = *(u32 *)(r10 - 8)\nr2 <<= 40\nr0 |= r2\nexit",
    "r1 = 12\n*(u64 *)(r10 - 8) = r1\nr1 = 10\nr1 = atomic_fetch_xor((u64 *)(r10 - 8), r1)\n"
    "r0 = *(u64 *)(r10 - 8)\nr0 <<= 8\nr0 |= r1\nexit",
    "r1 = 12\n*(u64 *)(r10 - 8) = r1\nr1 = 10\nr1 = xchg_64(r10 - 8, r1)\nr0 = *(u64 *)(r10 - 8)\nr0 <<= 8\n"
    "r0 |= r1\nexit",
    "r1 = -1\n*(u64 *)(r10 - 8) = r1\nw1 = 1\nlock *(u32 *)(r10 - 8) += w1\nr0 = *(u64 *)(r10 - 8)\nexit",
    "w1 = -1\n*(u32 *)(r10 - 8) = r1\nw1 = 2\nw1 = atomic_fetch_add((u32 *)(r10 - 8), w1)\nr0 = r1\nexit",
]


@pytest.mark.parametrize("text", MEMORY_CASES)
def test_kernel_agrees_on_memory(kernel: str, text: str) -> None:
    assert _kernel_r0(text) == run(text)


def test_fault_inside_a_straight_line_run_counts_what_ran() -> None:
    """The interpreter's block execution (not re-run for other engines: the module global is not used)."""
    from xdpsim.engines.interp import Interpreter as Reference

    text = "r0 = 1\nr0 += 1\nr1 = 0\nr0 += 1\nr0 = *(u32 *)(r1 + 8)\nr0 += 1\nexit"
    counts = []
    for tracer in (None, lambda p, pc, regs: None):
        rt = Runtime()
        spec = ProgramSpec("t", "xdp", ProgType.XDP, "xdp", assemble(text))
        pid = rt.load(ObjectSpec("<t>", {"t": spec}, [])).programs["t"]
        st = RunState(rt, tracer=tracer)
        with pytest.raises(ProgramFault) as e:
            Reference().run(rt, pid, st)
        assert e.value.pc == 4
        counts.append(st.insns)
    assert counts == [5, 5]
