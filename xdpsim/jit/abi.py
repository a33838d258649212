"""The native ABI between JIT-compiled programs and the Python side.

Every compiled function (program entry or bpf-to-bpf subprogram) has the C signature

    int64_t f(uint64_t *env, int64_t r1, int64_t r2, int64_t r3, int64_t r4, int64_t r5, int64_t fp)

`fp` is the program-visible frame pointer (r10): `(STACK << 32) | (4096 - depth*512)`, so the call
depth is implicit in it. The same signature for every function is what lets `bpf_tail_call` be a
guaranteed (`musttail`) call through the table of entry points `env[E_PROGS]`, indexed by program id.

`env` is one run's state, an array of `ENV_WORDS` u64 kept by the engine (numpy, never moves):

| word | name        | meaning |
|------|-------------|---------|
| 0    | TABLE       | host address of the AddressSpace region table (24-byte rows, see memory.py) |
| 1    | FAULT       | 0, or a `F_*` code: the run stopped; the functions unwind returning 0 |
| 2    | FAULT_PC    | instruction index of the fault (in program FAULT_PROG) |
| 3    | FAULT_ADDR  | program address of a faulting access |
| 4    | FAULT_SIZE  | access size |
| 5    | FAULT_WRITE | 1 for a write |
| 6    | BUDGET      | instructions the run may still execute (see lower.py: counted per block) |
| 7    | TAIL_CALLS  | tail calls taken so far in this run (the count the kernel carries along a chain) |
| 8    | CPU         | simulated CPU (bpf_get_smp_processor_id, per-CPU map slices) |
| 9    | NOW_NS      | bpf_ktime_get_ns |
| 10   | PRANDOM     | generator state (helpers.py's generator, advanced natively) |
| 11   | MAPS        | host address of u64[nmaps]: descriptor address per map id |
| 12   | NMAPS       | |
| 13   | PROGS       | host address of u64[nprogs]: native entry per program id (0: not compiled) |
| 14   | NPROGS      | |
| 15   | CUR_PROG    | id of the program running now (tail calls change it): faults name it |
| 16   | FRAME       | host address of the packet frame (0: no packet) |
| 17   | DATA        | packet data offset in the frame |
| 18   | DATA_END    | |
| 19   | META        | data_meta offset (== DATA when there is none) |
| 20   | META_OK     | 1 when metadata is supported |
| 21   | IFINDEX     | xdp_md ingress_ifindex |
| 22   | RXQ         | xdp_md rx_queue_index |
| 23   | EGRESS      | xdp_md egress_ifindex |
| 24   | REDIR_KIND  | 0 none, 1 ifindex (bpf_redirect), 2 map (bpf_redirect_map: map id in REDIR_MAP) |
| 25   | REDIR_INDEX | ifindex or map key |
| 26   | REDIR_MAP   | map id |
| 27   | REDIR_FLAGS | flags |
| 28   | FRAME_SIZE  | |
| 29   | TAILROOM    | |
| 30   | PY_HELPER   | address of the Python helper trampoline (ctypes CFUNCTYPE) |
| 31   | PY_MEM      | address of the Python memory slow path (ctx accesses and everything odd) |
| 32   | MAP_TYPES   | host address of u64[nmaps]: MapType per map id |
| 33   | HELPER_COUNTS | host address of u64[256]: calls per helper id made natively (statistics) |
| 34   | PY_INSN     | address of the Python instruction fallback |
| 35   | PRANDOM_STATE | host address of the Mersenne Twister state (natives.py) |
| 36   | FRAGS       | bytes of fragments (xdp.frags): the native XDP helpers defer to Python when non-zero |
| 37   | EXIT_PC     | the exit instruction that ended the last frame (RunState.exit_pc) |
| 38   | DIRTY_LO    | batch replay: lowest frame offset the packet window reached (adjusts lower it) |
| 39   | DIRTY_HI    | batch replay: highest |
| 40   | BATCH_INDEX | batch replay: index of the packet running now |
| 41-45| RET_REGS    | r1..r5 at the last function exit (a bpf-to-bpf caller sees the callee's) |
| 46-50| ENTRY_REGS  | r0, r6-r9 when a function starts: the caller's (0 when a run starts) |
| 51   | COVER       | with coverage: host address of u64[nprogs], per program id its counters' address |
| 52   | SKB_CTX     | 1 when the run's context is the TC hook's SkbContext over the run's packet: TC |
|      |             | programs then read lower.TC_CTX_FIELDS natively (packet offsets and 53-56) |
| 53-56| SKB_FIELDS  | with SKB_CTX: __sk_buff mark, protocol, ingress_ifindex, ifindex (refreshed with the |
|      |             | packet offsets after every Python callback: helpers and context stores) |
| 57   | PY_EXACT    | address of the trampoline giving a tier-1 function's exact copy (lower.py          |
|      |             | budget_regions): PY_EXACT(env, function start) -> its address, 0 with a fault set  |
| 58   | FAULT_LEFT  | 0, or 1 + BUDGET when a tier-1 access recorded its fault (tier 1 runs on to its next |
|      |             | test: the run's instruction count is taken from here); the engine zeroes it a run  |

Coverage counters of a program of n instruction slots (code compiled with coverage=True): u64[2n],
[pc] the runs of the basic block starting at pc, [n + pc] the times the conditional jump at pc was taken.

Python trampolines (addresses in env): PY_HELPER(env, pc, helper id, r1..r5, fp) -> r0,
PY_MEM(env, pc, addr, size, kind, value) -> loaded value, PY_INSN(env, pc) -> 0 (sets a fault).

Calls and tail calls keep every register, as in the interpreter: RET_REGS and ENTRY_REGS carry the
ones the native signature does not.

Fault codes: F_MEMORY (a checked access failed natively: FAULT_ADDR/SIZE/WRITE say which; Python
rebuilds the exact ProgramFault with AddressSpace.check), F_BUDGET (FAULT_PC is the start of the basic
block that exhausted the budget and FAULT_ADDR how many of its instructions still fitted: the fault
names the next one, an lddw counting once -- `budget_fault_pc`), F_DEPTH (call depth),
F_PYTHON (a Python callback raised: the engine keeps the exception and re-raises it).
"""

from __future__ import annotations

ENV_WORDS = 64

E_TABLE = 0
E_FAULT = 1
E_FAULT_PC = 2
E_FAULT_ADDR = 3
E_FAULT_SIZE = 4
E_FAULT_WRITE = 5
E_BUDGET = 6
E_TAIL_CALLS = 7
E_CPU = 8
E_NOW_NS = 9
E_PRANDOM = 10
E_MAPS = 11
E_NMAPS = 12
E_PROGS = 13
E_NPROGS = 14
E_CUR_PROG = 15
E_FRAME = 16
E_DATA = 17
E_DATA_END = 18
E_META = 19
E_META_OK = 20
E_IFINDEX = 21
E_RXQ = 22
E_EGRESS = 23
E_REDIR_KIND = 24
E_REDIR_INDEX = 25
E_REDIR_MAP = 26
E_REDIR_FLAGS = 27
E_FRAME_SIZE = 28
E_TAILROOM = 29
E_PY_HELPER = 30
E_PY_MEM = 31
E_MAP_TYPES = 32
E_HELPER_COUNTS = 33
E_PY_INSN = 34
E_PRANDOM_STATE = 35
E_FRAGS = 36
E_EXIT_PC = 37
E_DIRTY_LO = 38
E_DIRTY_HI = 39
E_BATCH_INDEX = 40
E_RET_REGS = 41  # 41..45: r1..r5 at a function's exit (a bpf-to-bpf caller sees the callee's)
E_ENTRY_REGS = 46  # 46..50: r0, r6..r9 at a function's entry (a callee / tail-call target sees the caller's)
ENTRY_REGS = (0, 6, 7, 8, 9)
E_COVER = 51
E_SKB_CTX = 52
E_SKB_FIELDS = 53  # 53..56: mark, protocol, ingress_ifindex, ifindex
E_PY_EXACT = 57
E_FAULT_LEFT = 58

F_NONE = 0
F_MEMORY = 1
F_BUDGET = 2
F_DEPTH = 3
F_PYTHON = 4

# memory slow-path kinds (PY_MEM's `kind` argument)
M_LOAD = 0
M_STORE = 1
M_LOADSX = 2
M_ATOMIC = 3

REDIR_NONE = 0
REDIR_IFINDEX = 1
REDIR_MAP = 2
REDIR_CLEAR = 3  # bpf_redirect_map missed: RunState.redirect = None
REDIR_PY = 4  # a Python helper set RunState.redirect (devmap_hash, broadcast...)

MAX_TAIL_CALLS = 33
MAX_FRAMES = 8
FRAME_BYTES = 512
STACK_BYTES = 4096


def budget_fault_pc(insns: list, start: int, fitted: int) -> int:
    """The instruction an F_BUDGET fault names: the one after `fitted` instructions of the block at
    `start` (an lddw and its filler slot are one instruction)."""
    pc = start
    for _ in range(fitted):
        pc += 2 if insns[pc].is_lddw else 1
    return pc


# every word, the ENTRY_REGS block included, must fit the env array
assert max(v for k, v in list(globals().items()) if k.startswith("E_")) + len(ENTRY_REGS) <= ENV_WORDS
assert E_SKB_FIELDS + 4 <= ENV_WORDS
