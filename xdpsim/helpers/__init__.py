"""Helpers: kernel helper id -> `HelperDef(id, name, args, impl)`, with Python implementations on RunState.

`impl(state, r1, r2, r3, r4, r5) -> int` returns r0 (negative errnos are fine: engines mask to u64).
Arguments arrive as the u64 register values. Argument checks the verifier would make (a map handle
that is not a map, a map of the wrong type, a bad size) raise `ProgramFault(kind="helper")` naming the
helper and the argument (`engines.base.helper_arg_fault`); run-time failures the kernel reports with
a return value (-EINVAL, -E2BIG, ...) are returned.

`HELPERS` is the registry every Runtime copies; `register` adds to it (other hooks, e.g. TC, register
their own). `tail_call` (12) is in the registry with `impl=None`: engines handle it. Conformance mode
swaps in `conformance_helpers()` (helper 5 returns r1).

Modules: maps (map_* helpers, for_each, percpu lookup), misc (time, random, cpu, spin locks, loop),
printk (trace_printk, trace_vprintk), output (perf_event_output, ringbuf), xdp (adjust, load/store
bytes, redirect, check_mtu), csum (csum_diff), fib (fib_lookup and its route table).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .names import HELPER_NAMES

if TYPE_CHECKING:
    from ..engines.base import RunState

HelperImpl = Callable[["RunState", int, int, int, int, int], int]


@dataclass(frozen=True)
class HelperDef:
    """One helper: kernel `id`, `name` (without bpf_), `args` (argument names, for messages and the
    JIT's signatures), `impl` (None: the engine implements it, e.g. tail_call)."""

    id: int
    name: str
    args: tuple[str, ...]
    impl: HelperImpl | None


HELPERS: dict[int, HelperDef] = {}


def helper_id(name: str) -> int:
    """Kernel id of helper `name` (with or without the bpf_ prefix)."""
    n = name.removeprefix("bpf_")
    try:
        return HELPER_NAMES.index(n)
    except ValueError:
        raise KeyError(f"no kernel helper named {name!r}") from None


def helper_name(ident: int) -> str:
    """`bpf_<name>` for a kernel helper id, or a note that the id is not a kernel helper."""
    if 0 < ident < len(HELPER_NAMES):
        return f"bpf_{HELPER_NAMES[ident]}"
    return "not a kernel helper id"


def register(name: str, *args: str) -> Callable[[HelperImpl], HelperImpl]:
    """Decorator: register `impl` as the kernel helper `name` with argument names `args`."""

    def deco(impl: HelperImpl) -> HelperImpl:
        ident = helper_id(name)
        HELPERS[ident] = HelperDef(ident, name, tuple(args), impl)
        return impl

    return deco


def _conformance_helper5(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    """The bpf_conformance suite's helper 5: returns its first argument."""
    return r1


def conformance_helpers() -> dict[int, HelperDef]:
    return {5: HelperDef(5, "conformance_return_r1", ("r1",), _conformance_helper5)}


HELPERS[12] = HelperDef(12, "tail_call", ("ctx", "prog_array_map", "index"), None)

# Importing the implementation modules registers them.
# (tc imports xdp itself: its bpf_redirect, id 23, wraps XDP's and must be registered after it)
from . import csum, fib, maps, misc, output, printk, skb, skb_csum, tc, xdp  # noqa: E402,F401

__all__ = [
    "HELPERS", "HELPER_NAMES", "HelperDef", "conformance_helpers", "helper_id", "helper_name", "register",
]
