"""Time, randomness, CPU identity, spin locks and bpf_loop.

Time is the packet's: `state.now_ns` (a replay gives each packet its capture timestamp), so runs are
deterministic. jiffies64 counts at HZ=250 (the common distribution setting) from that same clock.
"""

from __future__ import annotations

import errno as _errno
from typing import TYPE_CHECKING

from ..engines.base import helper_arg_fault, helper_fault
from . import register

if TYPE_CHECKING:
    from ..engines.base import RunState

HZ = 250
BPF_MAX_LOOPS = 8 * 1024 * 1024  # kernel/bpf/bpf_iter.c


@register("ktime_get_ns")
def ktime_get_ns(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    return state.now_ns


@register("ktime_get_boot_ns")
def ktime_get_boot_ns(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    return state.now_ns


@register("ktime_get_coarse_ns")
def ktime_get_coarse_ns(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    return state.now_ns


@register("ktime_get_tai_ns")
def ktime_get_tai_ns(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    return state.now_ns


@register("jiffies64")
def jiffies64(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    return state.now_ns * HZ // 1_000_000_000


@register("get_prandom_u32")
def get_prandom_u32(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    return state.runtime.rng.getrandbits(32)


@register("get_smp_processor_id")
def get_smp_processor_id(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    return state.cpu


@register("get_numa_node_id")
def get_numa_node_id(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    return 0


@register("spin_lock", "lock")
def spin_lock(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    """One simulated CPU runs at a time, so a lock never waits; the verifier's rules are checked:
    no second lock while one is held, and the lock must be released before exit."""
    state.mem.check(r1, 4, True)
    if state.locks:
        raise helper_fault("spin_lock", f"lock at {r1:#x} taken while holding another (the verifier "
                           "allows one lock at a time)")
    state.locks.add(r1)
    return 0


@register("spin_unlock", "lock")
def spin_unlock(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    state.mem.check(r1, 4, True)
    if r1 not in state.locks:
        raise helper_fault("spin_unlock", f"lock at {r1:#x} is not held")
    state.locks.discard(r1)
    return 0


@register("loop", "nr_loops", "callback_fn", "callback_ctx", "flags")
def loop(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    """bpf_loop: callback(i, ctx) for i < nr_loops, stopping after a non-zero return; returns the
    number of calls made (kernel/bpf/bpf_iter.c)."""
    if r4:
        return -_errno.EINVAL
    nr = r1 & 0xFFFF_FFFF
    if nr > BPF_MAX_LOOPS:
        return -_errno.E2BIG
    if state.runtime.split_code_address(r2) is None:
        raise helper_arg_fault("loop", 2, "function (callback)", r2, state)
    engine = state.engine
    assert engine is not None, "bpf_loop needs the engine in RunState.engine"
    for i in range(nr):
        if engine.call(state, r2, (i, r3, 0, 0, 0)) & 0xFFFF_FFFF_FFFF_FFFF:
            return i + 1
    return nr
