"""The JIT: eBPF -> LLVM IR (llvmlite.ir builders) -> native code (MCJIT), and its native replay loop.

Modules (the engine itself is `xdpsim.engines.jit.JitEngine`, the batch API `engines/jit_batch.py`):

- `abi`      the native ABI: every function is `i64 f(env, r1..r5, fp)`; `env` (u64 words) carries
             the region table, fault record, budget, tail-call count, CPU, time, packet offsets, map
             descriptor and program entry tables and the Python trampolines' addresses.
- `cfg`      functions (entry, bpf-to-bpf subprograms, callbacks) and basic-block leaders.
- `lower`    instruction -> IR, one method per construct; checked memory accesses against the region
             table with out-of-line slow paths (context conversion, Python, fault record).
- `verify`   the static pass proving accesses safe (stack offsets, packet ranges from the program's
             own data_end comparisons, map values after NULL checks, XDP context fields, and for
             TC the __sk_buff fields read from env: len, data, data_end, data_meta, mark, protocol,
             ingress_ifindex, ifindex (lower.TC_CTX_FIELDS; env SKB_CTX/SKB_FIELDS, abi.py)).
- `natives`  helpers lowered natively (maps through maps/native.py, tail_call as `musttail`, adjust_*,
             csum_diff, redirect(_map), load/store_bytes, ktime, prandom = MT19937, cpu id).
- `compiler` two tiers: tier 1 (compact IR, level-0 code, at once) calling a shared, disk-cached
             library of the out-of-line functions (`lower.library_module`) through their loaded
             addresses, with budget tests only at region heads (its functions' exact copies built
             when a run first nears the end of its budget), replaced between runs by tier 2 (O2,
             built in a background thread); the disk cache (tier 2 only), the process-wide MCJIT
             engine. XDPSIM_JIT_TIER=1|2 forces one tier.
- `batch`    the native replay loop (one generic function; the program's entry is an argument).
- `fuzzcheck` the differential worker the fuzz test runs in a subprocess.

Coverage (`JitEngine(coverage=True)`, its own compiled code: `ProgramInput.coverage` is in the cache
key): each basic block adds 1 to its program's counter at entry (after the budget check) and each
conditional jump adds its condition to `taken[pc]`; the counters live per runtime and program id
behind env COVER (abi.py); `JitEngine.coverage_counts` spreads block counts over their instructions
for `cover.CoverageData.add_counts` (`xdpsim/cover/jit.py` drives it for `xdpsim cover`, the pytest
plugin and golden replays). Same counts as the interpreter's tracer except inside a block a run
leaves by a memory fault (counted whole) or the budget stops (not counted).

Known differences from the interpreter (all outside what the kernel verifier accepts, or faults):
- a budget fault ends the run at the start of the basic block that exhausts the budget: the fault
  (message, instruction) is the interpreter's, but the instructions of that block before the
  exhausting one have not run: their stores have not happened, and when one of them would fault on
  memory the JIT reports the budget fault where the interpreter reports that memory fault (it runs
  the block's instructions up to it first; tests/test_jit_budget_regions.py pins both). Both tiers;
  tier 1 tests the budget only at region heads and resumes in a copy that tests every block near the
  end of the budget (lower.py `budget_regions`), which ends runs exactly as testing every block;
- an atomic on a read-only region faults as a write even when it is a cmpxchg whose comparison
  fails (the interpreter then only reads);
- a map frozen (or made read-only) after a program was compiled keeps the program's compiled stores
  into its values (maps frozen at load, like .rodata, are handled).
"""
