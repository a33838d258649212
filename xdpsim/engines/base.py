"""What every engine shares: `RunState` (one run's state), the `Engine` protocol, limits, and the
functions that build fault messages (the JIT must produce exactly the interpreter's messages, so both
call these rather than formatting their own).

Execution model every engine follows (docs/ARCHITECTURE.md, "Engines"):

- Entry: r1..r5 = `state.args` (r1 = the context address for hooks), r10 = top of frame 0
  (`frame_pointer(0)`), other registers 0. The stack region is zeroed at the start of a run and its
  valid window is the frames in use: `[STACK_SIZE - (depth + 1) * 512, STACK_SIZE)`.
- bpf-to-bpf call: a new frame (depth + 1, at most MAX_CALL_FRAMES frames in all, else
  `call_depth_fault`), r6-r9 and r10 saved and restored on exit, r1-r5 passed; after the callee
  returns r1-r5 keep the callee's last values (the verifier forbids reading them: not compared).
- Helper call: `r0 = impl(state, r1, r2, r3, r4, r5) & U64` through `runtime.helpers[id]`;
  `state.helper_counts[name] += 1`; r1-r5 unchanged.
- Tail call (helper 12): `tail_call_target(runtime, state, r2, r3)` gives the program id or None
  (fall through, r0 unchanged); on success the current frame is replaced (same depth, same r10), r1
  keeps the context, `state.prog_id` becomes the target, `state.tail_calls += 1`. From a subprogram
  the target's r0 returns to the subprogram's caller.
- callx: conformance mode: a helper call with the id in the register; otherwise the register holds a
  code address of the same program (`Runtime.split_code_address`) called as a bpf-to-bpf call.
- Budget: every executed instruction counts (`state.insns`); exceeding `state.budget` ends the run
  with `budget_fault`.
- Faults: engines raise ProgramFault; `locate(fault, runtime, prog_id, pc)` adds program, insn index,
  disassembly and C source line (only when the fault has no pc yet).
- Callbacks (bpf_loop, for_each_map_elem): helpers call `state.engine.call(state, code_addr, args)`,
  which runs the function in a new frame below the current one and returns its r0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ProgramFault
from ..memory import CTX, FRAME_STACK, PACKET, STACK, STACK_SIZE

if TYPE_CHECKING:
    from ..maps import RedirectTarget
    from ..memory import AddressSpace, PacketBuffer
    from ..runtime import Runtime

U64 = (1 << 64) - 1
U32 = (1 << 32) - 1
MAX_TAIL_CALL_CNT = 33  # include/linux/bpf.h: 33 tail calls succeed, the 34th falls through
MAX_CALL_FRAMES = 8  # kernel/bpf/verifier.c MAX_CALL_FRAMES
DEFAULT_BUDGET = 1 << 24  # instructions per run
TAIL_CALL_HELPER = 12


def frame_pointer(depth: int) -> int:
    """r10 of frame `depth` (0 = the entry function)."""
    return (STACK << 32) | (STACK_SIZE - depth * FRAME_STACK)


def stack_low(depth: int) -> int:
    """Lowest valid stack offset while `depth` is the deepest frame."""
    return STACK_SIZE - (depth + 1) * FRAME_STACK


#: tracer(prog_id, pc, regs): called before each instruction; regs is the live register list (read only)
Tracer = Callable[[int, int, list[int]], None]


@dataclass
class RunState:
    """One program run. Hooks fill the inputs; engines and helpers update the rest.

    Inputs: `runtime`, `mem` (= runtime.mem), `prog_id` (entry program), `args` (r1..r5 at entry),
    `cpu`, `now_ns` (bpf_ktime_get_ns: the packet's time), `packet` (PacketBuffer or None), `ctx`
    (the hook's context accessor), `ifindex`/`queue` (ingress), `budget` (instruction limit),
    `tracer`, `frags` (bytes past the linear part of a multi-buffer XDP frame).
    Outputs: `trace` (bpf_printk lines), `redirect` (RedirectTarget or None), `tail_calls`,
    `helper_counts` (helper name -> calls), `insns` (instructions executed), `prog_id` (the program
    that was running last: after tail calls, the one that returned), `notes`.
    Engine-private: `engine`, `depth` (current frame depth), `locks` (held bpf_spin_locks).
    """

    runtime: Runtime
    prog_id: int = 0
    args: tuple[int, ...] = ()
    cpu: int = 0
    now_ns: int = 0
    packet: PacketBuffer | None = None
    ctx: Any = None
    ifindex: int = 1
    queue: int = 0
    budget: int = DEFAULT_BUDGET
    tracer: Tracer | None = None
    frags: bytearray = field(default_factory=bytearray)
    trace: list[str] = field(default_factory=list)
    redirect: RedirectTarget | None = None
    tail_calls: int = 0
    helper_counts: dict[str, int] = field(default_factory=dict)
    insns: int = 0
    notes: list[str] = field(default_factory=list)
    engine: Engine | None = None
    depth: int = 0
    locks: set[int] = field(default_factory=set)
    scratch_top: int = 0
    exit_pc: int = 0  # the exit instruction that ended the last frame

    @property
    def mem(self) -> AddressSpace:
        return self.runtime.mem


class Engine(Protocol):
    """An execution engine. `name` is "interp" or "jit"."""

    name: str

    def run(self, runtime: Runtime, prog_id: int, state: RunState) -> int:
        """Run program `prog_id` from its first instruction with `state`; return r0 (u64).
        Raises ProgramFault (located: program, pc, disassembly, source line)."""
        ...

    def call(self, state: RunState, func_addr: int, args: tuple[int, ...]) -> int:
        """Run the BPF function at code address `func_addr` (a callback) in a new frame below
        `state.depth`, r1..r5 = args; return its r0. Used by bpf_loop and for_each_map_elem."""
        ...


# ---------------------------------------------------------------------------- run setup


def prepare_stack(state: RunState) -> None:
    """Zero the stack and open frame 0 (every engine does this at the start of `run`)."""
    mem = state.runtime.mem
    mem.stack.fill(0)
    if mem.window(STACK) != (stack_low(0), STACK_SIZE):
        mem.set_window(STACK, stack_low(0), STACK_SIZE)
    state.depth = 0


def tail_call_target(runtime: Runtime, state: RunState, map_handle: int, index: int) -> int | None:
    """bpf_tail_call's decision: the program id to jump to, or None to fall through.

    Faults (kind "helper") when r2 is not a prog array handle; falls through on an index out of
    range, an empty slot, or when MAX_TAIL_CALL_CNT tail calls already happened in this run."""
    m = runtime.map_from_handle(map_handle)
    if m is None or not hasattr(m, "at") or m.type_name != "prog_array":
        raise helper_arg_fault("tail_call", 2, "prog_array map", map_handle, state)
    target = m.at(index & U32)
    if target is None or state.tail_calls >= MAX_TAIL_CALL_CNT:
        return None
    return target


# ---------------------------------------------------------------------------- fault messages


def disassemble(ins: Any, pc: int | None = None) -> str:
    """llvm-objdump-style text of one instruction (xdpsim.asm), or its raw fields if that fails."""
    try:
        from ..asm import disassemble_insn  # late: the disassembler builds on isa, not on engines

        return str(disassemble_insn(ins, pc))
    except Exception:  # no asm module, or an instruction it cannot print: the raw fields still say it
        return f"opcode={ins.opcode:#04x} dst=r{ins.dst} src=r{ins.src} off={ins.off} imm={ins.imm}"


def locate(fault: ProgramFault, runtime: Runtime, prog_id: int, pc: int) -> ProgramFault:
    """Fill in where a fault happened (program, pc, instruction text, C source line), once."""
    if fault.pc is not None:
        return fault
    prog = runtime.programs[prog_id]
    fault.program = prog.name
    fault.pc = pc
    spec_insns = prog.spec.insns
    if 0 <= pc < len(spec_insns):
        fault.insn = disassemble(spec_insns[pc], pc)
    li = prog.spec.source_line(pc) if prog.spec.line_info else None
    if li is not None:
        text = li.text.strip()
        fault.source = f"{li.file}:{li.line}" + (f": `{text}`" if text else "")
    fault.args = (fault.describe(),)
    return fault


def budget_fault(budget: int) -> ProgramFault:
    return ProgramFault(
        f"instruction budget of {budget} exhausted (runaway loop?); raise it with budget=",
        kind="budget",
    )


def ctx_atomic_fault(addr: int, size: int) -> ProgramFault:
    """An atomic read-modify-write on the context: the kernel's verifier refuses BPF_ATOMIC on ctx
    ("BPF_ATOMIC stores into R1 ctx is not allowed"), whatever the field."""
    return ProgramFault(
        f"atomic operation of {size} bytes on the context at {addr:#x}: the kernel refuses atomics on ctx",
        kind="ctx", address=addr, size=size, region="ctx",
    )


#: regions where the verifier refuses BPF_ATOMIC (check_atomic: ctx and packet pointers, XDP and TC alike)
NO_ATOMIC_REGIONS = (CTX, PACKET)


def atomic_fault(addr: int, size: int) -> ProgramFault:
    """An atomic on a region in NO_ATOMIC_REGIONS. Both engines raise it before any access, as the
    kernel refuses the program ("BPF_ATOMIC stores into R1 ctx is not allowed", "... into R2 pkt is not
    allowed"; measured on 6.18 for every atomic op, 32 and 64 bits: tests/test_kernel_atomics.py)."""
    if addr >> 32 == CTX:
        return ctx_atomic_fault(addr, size)
    return ProgramFault(
        f"atomic operation of {size} bytes on the packet at {addr:#x}: the kernel refuses atomics on packet "
        "pointers", kind="memory", address=addr, size=size, region="packet",
    )


def call_depth_fault(depth: int) -> ProgramFault:
    return ProgramFault(
        f"call to a function in frame {depth + 1}: at most {MAX_CALL_FRAMES} frames "
        "(the kernel's MAX_CALL_FRAMES); stack overflow",
        kind="call-depth",
    )


def bad_call_target_fault(addr: int) -> ProgramFault:
    return ProgramFault(f"callx to {addr:#x}, which is not a function of this program", kind="call")


def helper_fault(name: str, reason: str, state: RunState | None = None) -> ProgramFault:
    return ProgramFault(f"bpf_{name}: {reason}", kind="helper")


def helper_arg_fault(name: str, argno: int, expected: str, value: int,
                     state: RunState | None = None) -> ProgramFault:
    """A helper argument the verifier would have refused (bad map handle, wrong map type...)."""
    desc = state.runtime.mem.describe(value) if state is not None else f"{value:#x}"
    return ProgramFault(f"bpf_{name}: argument {argno} (r{argno}) must be a {expected}, got {desc}",
                        kind="helper")


def in_helper(name: str, fault: ProgramFault, args: tuple[int, ...]) -> ProgramFault:
    """A fault raised inside helper `name` on one of its pointer arguments (a buffer that is not there,
    too short, read-only...): the verifier's argument check, so kind "helper", the reason prefixed with
    the helper and, when the faulting address is one of `args` (r1..r5), the argument."""
    if fault.pc is not None or fault.reason.startswith("bpf_"):
        return fault  # already located (a callback's own fault) or already a helper's message
    which = ""
    if fault.address is not None and fault.address in args:
        n = args.index(fault.address) + 1
        which = f"argument {n} (r{n}): "
    fault.reason = f"bpf_{name}: {which}{fault.reason}"
    fault.kind = "helper"
    return fault


def internal_helper_fault(name: str, exc: BaseException) -> ProgramFault:
    """A helper implementation failed with an unexpected Python exception (an xdpsim bug): the run
    ends with this fault (the exception chained as its cause) instead of stopping a whole replay."""
    return ProgramFault(f"bpf_{name}: xdpsim internal error ({type(exc).__name__}: {exc})", kind="internal")


def lock_held_fault(addrs: set[int]) -> ProgramFault:
    held = ", ".join(f"{a:#x}" for a in sorted(addrs))
    return ProgramFault(f"program exited holding bpf_spin_lock at {held}", kind="helper")
