"""bpf_fib_lookup: a route table the pipeline fills; without one, every lookup is NOT_FWDED.

`struct bpf_fib_lookup` is 64 bytes; the table answers with a return code and may rewrite the
struct (ifindex, smac, dmac, ...). `FibTable.lookup(params: bytes, flags: int) -> (ret, params)`.
"""

from __future__ import annotations

import errno as _errno
from typing import TYPE_CHECKING, Protocol

from . import register

if TYPE_CHECKING:
    from ..engines.base import RunState

BPF_FIB_LOOKUP_SIZE = 64
BPF_FIB_LKUP_RET_SUCCESS = 0
BPF_FIB_LKUP_RET_NOT_FWDED = 4
# BPF_FIB_LOOKUP_DIRECT | OUTPUT | SKIP_NEIGH | TBID | SRC | MARK (include/uapi/linux/bpf.h)
BPF_FIB_LOOKUP_FLAGS = 0x3F


class FibTable(Protocol):
    def lookup(self, params: bytes, flags: int) -> tuple[int, bytes]: ...


@register("fib_lookup", "ctx", "params", "plen", "flags")
def fib_lookup(state: RunState, r1: int, r2: int, r3: int, r4: int, r5: int) -> int:
    plen = r3 & 0xFFFF_FFFF
    if plen < BPF_FIB_LOOKUP_SIZE or r4 & ~BPF_FIB_LOOKUP_FLAGS:
        return -_errno.EINVAL
    params = state.mem.read(r2, BPF_FIB_LOOKUP_SIZE)
    table = state.runtime.fib
    if table is None:
        return BPF_FIB_LKUP_RET_NOT_FWDED
    ret, out = table.lookup(params, r4)
    if out != params:
        state.mem.write(r2, bytes(out)[:BPF_FIB_LOOKUP_SIZE])
    return ret
