"""The reference interpreter: RFC 9669 (eBPF ISA v4) instruction by instruction.

Each instruction is translated once into a tiny Python function `op(R) -> next pc` whose body is the
RFC's definition written as a Python expression (the TEMPLATES below read like the RFC's tables:
`dst = (dst + src) & M64`). Registers are a list of 11 unsigned 64-bit ints. Calls, exits and tail
calls return a negative code instead of a pc, and the run loop (`Interpreter._execute`) does them:
it owns the frames, the budget, the tracer and helper dispatch. Memory goes through the runtime's
AddressSpace, so every access is checked; faults are located (program, pc, disassembly, C line) by
`engines.base.locate`. Execution semantics shared with the JIT are in engines/base.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import isa
from ..errors import ProgramFault
from ..memory import STACK, STACK_SIZE
from .base import (
    MAX_CALL_FRAMES,
    NO_ATOMIC_REGIONS,
    atomic_fault,
    bad_call_target_fault,
    budget_fault,
    call_depth_fault,
    frame_pointer,
    helper_fault,
    in_helper,
    internal_helper_fault,
    locate,
    lock_held_fault,
    prepare_stack,
    stack_low,
    tail_call_target,
)

if TYPE_CHECKING:
    from ..runtime import Runtime
    from .base import RunState

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1

# Codes an op returns instead of a pc.
EXIT, HELPER, LOCAL_CALL, CALLX = -1, -2, -3, -4


# ---------------------------------------------------------------------------- arithmetic the RFC defines


def sx8(v: int) -> int:
    return ((v & 0xFF) ^ 0x80) - 0x80


def sx16(v: int) -> int:
    return ((v & 0xFFFF) ^ 0x8000) - 0x8000


def sx32(v: int) -> int:
    return ((v & M32) ^ 0x8000_0000) - 0x8000_0000


def sx64(v: int) -> int:
    return ((v & M64) ^ (1 << 63)) - (1 << 63)


def _sdiv(a: int, b: int, bits: int) -> int:
    """Signed division truncating toward zero; by zero gives 0; INT_MIN / -1 gives INT_MIN."""
    mask = (1 << bits) - 1
    if b == 0:
        return 0
    q = abs(a) // abs(b)
    if (a < 0) != (b < 0):
        q = -q
    return q & mask  # INT_MIN / -1 = 2^(bits-1), which wraps to INT_MIN


def _smod(a: int, b: int, bits: int) -> int:
    """Signed modulo (sign of the dividend); by zero leaves the dividend; INT_MIN % -1 is 0."""
    mask = (1 << bits) - 1
    if b == 0:
        return a & mask
    r = abs(a) % abs(b)
    return (-r if a < 0 else r) & mask


def sdiv64(a: int, b: int) -> int:
    return _sdiv(sx64(a), sx64(b), 64)


def smod64(a: int, b: int) -> int:
    return _smod(sx64(a), sx64(b), 64)


def sdiv32(a: int, b: int) -> int:
    return _sdiv(sx32(a), sx32(b), 32)


def smod32(a: int, b: int) -> int:
    return _smod(sx32(a), sx32(b), 32)


def bswap16(v: int) -> int:
    return ((v & 0xFF) << 8) | ((v >> 8) & 0xFF)


def bswap32(v: int) -> int:
    return int.from_bytes((v & M32).to_bytes(4, "little"), "big")


def bswap64(v: int) -> int:
    return int.from_bytes((v & M64).to_bytes(8, "little"), "big")


# ---------------------------------------------------------------------------- templates

# {d} is the destination register, {s} the source operand (register or immediate).
ALU64 = {
    isa.BPF_ADD: "{d} = ({d} + {s}) & M64",
    isa.BPF_SUB: "{d} = ({d} - {s}) & M64",
    isa.BPF_MUL: "{d} = ({d} * {s}) & M64",
    isa.BPF_DIV: "b = {s}\n    {d} = {d} // b if b else 0",
    isa.BPF_OR: "{d} = {d} | {s}",
    isa.BPF_AND: "{d} = {d} & {s}",
    isa.BPF_LSH: "{d} = ({d} << ({s} & 63)) & M64",
    isa.BPF_RSH: "{d} = {d} >> ({s} & 63)",
    isa.BPF_NEG: "{d} = -{d} & M64",
    isa.BPF_MOD: "b = {s}\n    if b:\n        {d} = {d} % b",
    isa.BPF_XOR: "{d} = {d} ^ {s}",
    isa.BPF_MOV: "{d} = {s}",
    isa.BPF_ARSH: "{d} = (sx64({d}) >> ({s} & 63)) & M64",
}
ALU32 = {
    isa.BPF_ADD: "{d} = ({d} + {s}) & M32",
    isa.BPF_SUB: "{d} = ({d} - {s}) & M32",
    isa.BPF_MUL: "{d} = ({d} * {s}) & M32",
    isa.BPF_DIV: "a = {d} & M32\n    b = {s} & M32\n    {d} = a // b if b else 0",
    isa.BPF_OR: "{d} = ({d} | {s}) & M32",
    isa.BPF_AND: "{d} = ({d} & {s}) & M32",
    isa.BPF_LSH: "{d} = ({d} << ({s} & 31)) & M32",
    isa.BPF_RSH: "{d} = ({d} & M32) >> ({s} & 31)",
    isa.BPF_NEG: "{d} = -{d} & M32",
    isa.BPF_MOD: "a = {d} & M32\n    b = {s} & M32\n    {d} = a % b if b else a",
    isa.BPF_XOR: "{d} = ({d} ^ {s}) & M32",
    isa.BPF_MOV: "{d} = {s} & M32",
    isa.BPF_ARSH: "{d} = (sx32({d}) >> ({s} & 31)) & M32",
}
SIGNED64 = {isa.BPF_DIV: "{d} = sdiv64({d}, {s})", isa.BPF_MOD: "{d} = smod64({d}, {s})"}
SIGNED32 = {isa.BPF_DIV: "{d} = sdiv32({d}, {s})", isa.BPF_MOD: "{d} = smod32({d}, {s})"}

# conditions on {d} and {s} (unsigned, 64-bit); JMP32 rewrites operands to their low 32 bits
CONDITIONS = {
    isa.BPF_JEQ: "{d} == {s}",
    isa.BPF_JGT: "{d} > {s}",
    isa.BPF_JGE: "{d} >= {s}",
    isa.BPF_JSET: "{d} & {s}",
    isa.BPF_JNE: "{d} != {s}",
    isa.BPF_JLT: "{d} < {s}",
    isa.BPF_JLE: "{d} <= {s}",
    isa.BPF_JSGT: "{sd} > {ss}",
    isa.BPF_JSGE: "{sd} >= {ss}",
    isa.BPF_JSLT: "{sd} < {ss}",
    isa.BPF_JSLE: "{sd} <= {ss}",
}
SIGNED_JUMPS = (isa.BPF_JSGT, isa.BPF_JSGE, isa.BPF_JSLT, isa.BPF_JSLE)

# atomic read-modify-write operators (imm & ~BPF_FETCH)
ATOMIC_OPS = {isa.BPF_ADD: "+", isa.BPF_OR: "|", isa.BPF_AND: "&", isa.BPF_XOR: "^"}


def _reg(n: int) -> str:
    return f"R[{n}]"


def _alu_body(ins: isa.Instruction) -> str:
    is64 = ins.cls == isa.BPF_ALU64
    d = _reg(ins.dst)
    code = ins.code
    if code == isa.BPF_END:
        width = ins.imm
        mask = {16: "0xFFFF", 32: "M32", 64: "M64"}[width]
        if is64 or ins.source == isa.BPF_TO_BE:  # ALU64 END is the unconditional bswap (v4)
            return f"{d} = bswap{width}({d})"
        return f"{d} = {d} & {mask}"  # to little-endian on a little-endian machine: truncate
    if ins.source == isa.BPF_X:
        s = _reg(ins.src)
    else:
        s = str(ins.imm & (M64 if is64 else M32))
    if code == isa.BPF_MOV and ins.source == isa.BPF_X and ins.off:  # movsx
        return f"{d} = sx{ins.off}({s}) & {'M64' if is64 else 'M32'}"
    if code in (isa.BPF_DIV, isa.BPF_MOD) and ins.off == 1:
        return (SIGNED64 if is64 else SIGNED32)[code].format(d=d, s=s)
    return (ALU64 if is64 else ALU32)[code].format(d=d, s=s)


def _jump_body(ins: isa.Instruction, pc: int) -> str:
    code = ins.code
    target = ins.jump_target(pc)
    if code == isa.BPF_JA:
        return f"return {target}"
    is32 = ins.cls == isa.BPF_JMP32
    d = _reg(ins.dst)
    if ins.source == isa.BPF_X:
        s = _reg(ins.src)
        if is32:
            d, s = f"({d} & M32)", f"({s} & M32)"
        sd, ss = (f"sx32({d})", f"sx32({s})") if is32 else (f"sx64({d})", f"sx64({s})")
    else:
        imm = ins.imm
        if is32:
            d, s = f"({d} & M32)", str(imm & M32)
            sd, ss = f"sx32({d})", str(imm)
        else:
            s = str(imm & M64)
            sd, ss = f"sx64({d})", str(imm)
    cond = CONDITIONS[code].format(d=d, s=s, sd=sd, ss=ss)
    return f"return {target} if {cond} else {pc + 1}"


def _addr(ins: isa.Instruction, base: int) -> str:
    return f"({_reg(base)} + {ins.off}) & M64" if ins.off else _reg(base)


def _mem_body(ins: isa.Instruction) -> str:
    size = ins.size
    cls = ins.cls
    if cls == isa.BPF_LDX:
        load = f"load({_addr(ins, ins.src)}, {size})"
        if ins.mode == isa.BPF_MEMSX:
            return f"{_reg(ins.dst)} = sx{size * 8}({load}) & M64"
        return f"{_reg(ins.dst)} = {load}"
    if cls == isa.BPF_ST:
        return f"store({_addr(ins, ins.dst)}, {size}, {ins.imm & M64})"
    if ins.mode == isa.BPF_MEM:
        return f"store({_addr(ins, ins.dst)}, {size}, {_reg(ins.src)})"
    # BPF_STX | BPF_ATOMIC
    # the verifier refuses atomics on ctx and packet pointers: fault before any load or store happens
    a = f"a = {_addr(ins, ins.dst)}\n    if a >> 32 in NO_ATOMIC:\n        raise atomic_fault(a, {size})"
    s = _reg(ins.src)
    op = ins.imm
    if op == isa.BPF_CMPXCHG:
        r0 = "R[0] & M32" if size == 4 else "R[0]"
        return (f"{a}\n    old = load(a, {size})\n    if old == {r0}:\n        store(a, {size}, {s})\n"
                "    R[0] = old")
    if op == isa.BPF_XCHG:
        return f"{a}\n    old = load(a, {size})\n    store(a, {size}, {s})\n    {s} = old"
    sym = ATOMIC_OPS[op & ~isa.BPF_FETCH]
    body = f"{a}\n    old = load(a, {size})\n    store(a, {size}, old {sym} {s})"
    if op & isa.BPF_FETCH:
        body += f"\n    {s} = old"
    return body


def op_parts(ins: isa.Instruction, pc: int) -> tuple[str, str, int]:
    """(statements, terminating `return`, special code or 0) for the instruction at `pc`: the body of
    its `def op(R)` is the statements followed by the return."""
    cls = ins.cls
    if ins.opcode == isa.LDDW:
        return f"R[{ins.dst}] = {ins.imm64}", f"return {pc + 2}", 0
    if ins.opcode == isa.EXIT:
        return "", f"return {EXIT}", EXIT
    if ins.opcode == isa.CALL:
        code = LOCAL_CALL if ins.src == isa.PSEUDO_CALL else HELPER
        return "", f"return {code}", code
    if ins.opcode == isa.CALLX:
        return "", f"return {CALLX}", CALLX
    if cls in (isa.BPF_ALU, isa.BPF_ALU64):
        return _alu_body(ins), f"return {pc + 1}", 0
    if cls in (isa.BPF_JMP, isa.BPF_JMP32):
        return "", _jump_body(ins, pc), 0
    return _mem_body(ins), f"return {pc + 1}", 0


def op_source(ins: isa.Instruction, pc: int) -> tuple[str, int]:
    """(Python body of `def op(R)`, special code or 0) for the instruction at `pc`."""
    stmts, ret, special = op_parts(ins, pc)
    return (f"{stmts}\n    {ret}" if stmts else ret), special


# ---------------------------------------------------------------------------- compiled programs


@dataclass
class Compiled:
    """One program translated for the interpreter.

    `ops[pc](R) -> next pc | code`: one function per instruction (single stepping: the tracer, the
    last instructions before the budget runs out). `blocks[pc]`: for the first instruction of a
    straight-line run of non-call instructions (ending at a jump, a call/exit, or the next jump
    target), one function executing the whole run and returning the next pc; `blen[pc]` its number
    of instructions; `ordinal[pc]` the position (from 1) of each instruction in its run, so that a
    fault inside a run counts exactly the instructions executed. `info[pc]` is what the run loop
    needs for calls (HelperDef, call target, callx register)."""

    ops: list[Any]
    info: list[Any]
    blocks: list[Any]
    blen: list[int]
    ordinal: list[int]
    source: str


def _filler(R: list[int]) -> int:  # noqa: N803 - the register file is R throughout
    raise ProgramFault("executed the second half of an lddw", kind="fault")


def _leaders(prog_insns: list[isa.Instruction], spec_insns: list[isa.Instruction]) -> set[int]:
    """Instructions control can reach other than by falling through: entry, jump and call targets,
    function pointers (lddw PSEUDO_FUNC), and whatever follows a jump or a call."""
    out = {0}
    for pc, ins in enumerate(prog_insns):
        if ins.is_jump:
            out.add(ins.jump_target(pc))
            out.add(pc + 1)
        elif ins.opcode in (isa.CALL, isa.CALLX):
            out.add(pc + 1)
            if ins.opcode == isa.CALL and ins.src == isa.PSEUDO_CALL:
                out.add(pc + ins.imm + 1)
        orig = spec_insns[pc] if pc < len(spec_insns) else ins
        if orig.opcode == isa.LDDW and orig.src == isa.PSEUDO_FUNC:
            out.add(pc + orig.imm + 1)
    return out


def _indent(stmts: str) -> str:
    return "        " + stmts.replace("\n    ", "\n        ")


def _block_source(insns: list[isa.Instruction], leader: int, leaders: set[int],
                  ordinal: list[int]) -> tuple[str, int] | None:
    """Source of the run starting at `leader` and its length, or None when it is shorter than two."""
    lines: list[str] = []
    pc, count, ret = leader, 0, ""
    while pc < len(insns):
        ins = insns[pc]
        stmts, term, special = op_parts(ins, pc)
        if special or (pc != leader and pc in leaders):
            ret = f"return {pc}"
            break
        count += 1
        ordinal[pc] = count
        if ins.cls in (isa.BPF_LDX, isa.BPF_ST, isa.BPF_STX):
            lines.append(f"        p = {pc}")  # where a memory fault happened
        if stmts:
            lines.append(_indent(stmts))
        ret = term
        if ins.is_jump:
            break
        pc += 2 if ins.opcode == isa.LDDW else 1
    if count < 2:
        return None
    body = "\n".join(lines) or "        pass"
    return (f"def block{leader}(R):\n    p = {leader}\n    try:\n{body}\n    except ProgramFault as e:\n"
            f"        e.xdpsim_pc = p\n        raise\n    {ret}\n"), count


def compile_program(runtime: Runtime, prog_id: int) -> Compiled:
    prog = runtime.programs[prog_id]
    insns = prog.insns
    mem = runtime.mem
    namespace: dict[str, Any] = {
        "M64": M64, "M32": M32, "load": mem.load, "store": mem.store, "ProgramFault": ProgramFault,
        "NO_ATOMIC": NO_ATOMIC_REGIONS, "atomic_fault": atomic_fault,
        "sx8": sx8, "sx16": sx16, "sx32": sx32, "sx64": sx64, "sdiv64": sdiv64, "smod64": smod64,
        "sdiv32": sdiv32, "smod32": smod32, "bswap16": bswap16, "bswap32": bswap32, "bswap64": bswap64,
    }
    n = len(insns)
    lines: list[str] = []
    info: list[Any] = [None] * n
    executable: list[int] = []
    pc = 0
    while pc < n:
        ins = insns[pc]
        body, special = op_source(ins, pc)
        lines.append(f"def op{pc}(R):\n    {body}\n")
        executable.append(pc)
        if special == HELPER:
            info[pc] = runtime.helpers[ins.imm]
        elif special == LOCAL_CALL:
            info[pc] = pc + ins.imm + 1
        elif special == CALLX:
            info[pc] = ins.dst
        pc += 2 if ins.opcode == isa.LDDW else 1
    leaders = _leaders(insns, prog.spec.insns)
    ordinal = [0] * n
    blen = [0] * n
    for leader in sorted(x for x in leaders if x < n):
        if leader and insns[leader - 1].opcode == isa.LDDW:
            continue  # validate() keeps jumps out of lddw's second half; never a leader
        made = _block_source(insns, leader, leaders, ordinal)
        if made is not None:
            lines.append(made[0])
            blen[leader] = made[1]
    source = "\n".join(lines)
    exec(compile(source, f"<xdpsim interp: {prog.name}>", "exec"), namespace)  # noqa: S102 - our own code
    ops: list[Any] = [_filler] * n
    for pc in executable:
        ops[pc] = namespace[f"op{pc}"]
    blocks: list[Any] = [namespace[f"block{pc}"] if blen[pc] else None for pc in range(n)]
    return Compiled(ops, info, blocks, blen, ordinal, source)


# ---------------------------------------------------------------------------- the engine


class Interpreter:
    """The reference engine (`Engine` protocol of engines/base.py)."""

    name = "interp"

    def compiled(self, runtime: Runtime, prog_id: int) -> Compiled:
        prog = runtime.programs[prog_id]
        c = prog.cache.get("interp")
        if c is None:
            c = prog.cache["interp"] = compile_program(runtime, prog_id)
        return c

    def run(self, runtime: Runtime, prog_id: int, state: RunState) -> int:
        state.engine = self
        state.prog_id = prog_id
        prepare_stack(state)
        regs = [0] * 11
        for i, v in enumerate(state.args[:5]):
            regs[1 + i] = v & M64
        regs[10] = frame_pointer(0)
        r0 = self._execute(state, prog_id, 0, regs, 0)
        if state.locks:
            raise locate(lock_held_fault(state.locks), runtime, state.prog_id, state.exit_pc)
        return r0

    def call(self, state: RunState, func_addr: int, args: tuple[int, ...]) -> int:
        rt = state.runtime
        loc = rt.split_code_address(func_addr)
        if loc is None:
            raise bad_call_target_fault(func_addr)
        prog_id, pc = loc
        outer = state.depth
        depth = outer + 1
        if depth >= MAX_CALL_FRAMES:
            raise call_depth_fault(outer)
        regs = [0] * 11
        for i, v in enumerate(args[:5]):
            regs[1 + i] = v & M64
        regs[10] = frame_pointer(depth)
        mem = rt.mem
        mem.set_window(STACK, stack_low(depth), STACK_SIZE)
        state.depth = depth
        try:
            return self._execute(state, prog_id, pc, regs, depth)
        finally:
            state.depth = outer
            mem.set_window(STACK, stack_low(outer), STACK_SIZE)

    def _execute(self, st: RunState, prog_id: int, pc: int, R: list[int], depth: int) -> int:  # noqa: N803, C901
        """Run from `pc` until the frame at `depth` exits; return its r0."""
        rt = st.runtime
        mem = rt.mem
        cp = self.compiled(rt, prog_id)
        ops, info = cp.ops, cp.info
        frames: list[tuple[int, Compiled, int, int, int, int, int, int]] = []
        budget = st.budget
        tracer = st.tracer
        counts = st.helper_counts
        n = st.insns
        blocks, blen = cp.blocks, cp.blen
        start_n = n
        try:
            while True:
                f = blocks[pc]
                if f is not None and tracer is None and n + blen[pc] <= budget:
                    start_n = n
                    n += blen[pc]
                    pc = f(R)
                    continue
                n += 1
                if n > budget:
                    n -= 1
                    raise budget_fault(budget)
                if tracer is not None:
                    tracer(prog_id, pc, R)
                npc = ops[pc](R)
                if npc >= 0:
                    pc = npc
                    continue
                if npc == HELPER or npc == CALLX and rt.conformance:
                    h = info[pc] if npc == HELPER else rt.helpers.get(R[info[pc]])
                    if h is None:
                        raise helper_fault(f"helper {R[info[pc]]}", "callx to an unknown helper id")
                    counts[h.name] = counts.get(h.name, 0) + 1
                    st.insns = n
                    st.depth = depth
                    if h.impl is None:  # bpf_tail_call
                        target = tail_call_target(rt, st, R[2], R[3])
                        if target is None:
                            pc += 1
                            continue
                        st.tail_calls += 1
                        st.prog_id = prog_id = target
                        cp = self.compiled(rt, prog_id)
                        ops, info, blocks, blen = cp.ops, cp.info, cp.blocks, cp.blen
                        pc = 0
                        continue
                    try:
                        R[0] = h.impl(st, R[1], R[2], R[3], R[4], R[5]) & M64
                    except ProgramFault as e:
                        raise in_helper(h.name, e, (R[1], R[2], R[3], R[4], R[5])) from e.__cause__
                    except Exception as exc:  # an xdpsim bug in a helper: a fault of this run, cause kept
                        raise internal_helper_fault(h.name, exc) from exc
                    n = st.insns
                    pc += 1
                    continue
                if npc == EXIT:
                    if not frames:
                        st.insns = n
                        st.exit_pc = pc
                        return R[0]
                    prog_id, cp, pc, R[6], R[7], R[8], R[9], R[10] = frames.pop()
                    ops, info, blocks, blen = cp.ops, cp.info, cp.blocks, cp.blen
                    depth -= 1
                    st.depth = depth
                    mem.set_window(STACK, stack_low(depth), STACK_SIZE)
                    continue
                # a bpf-to-bpf call: LOCAL_CALL, or CALLX through a code address
                if npc == LOCAL_CALL:
                    target = info[pc]
                else:
                    addr = R[info[pc]]
                    loc = rt.split_code_address(addr)
                    if loc is None or loc[0] != prog_id:
                        raise bad_call_target_fault(addr)
                    target = loc[1]
                if depth + 1 >= MAX_CALL_FRAMES:
                    raise call_depth_fault(depth)
                frames.append((prog_id, cp, pc + 1, R[6], R[7], R[8], R[9], R[10]))
                depth += 1
                st.depth = depth
                R[10] = frame_pointer(depth)
                mem.set_window(STACK, stack_low(depth), STACK_SIZE)
                pc = target
        except ProgramFault as e:
            at = getattr(e, "xdpsim_pc", None)
            if at is not None and e.pc is None:  # inside a block: count what actually ran
                pc = at
                n = start_n + cp.ordinal[at]
            st.insns = n
            st.depth = depth
            raise locate(e, rt, prog_id, pc) from e.__cause__

