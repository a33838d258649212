"""A fault inside a callback (bpf_loop) run by the JIT names the faulting frame's stack window, as the
interpreter's message does (engines/jit.py `JitEngine.call` built it after restoring the caller's
window: a random-fuzz finding on a mutated calls_main)."""

from __future__ import annotations

import pytest

from xdpsim.engines.base import RunState
from xdpsim.engines.interp import Interpreter
from xdpsim.engines.jit import JitEngine
from xdpsim.errors import ProgramFault
from xdpsim.isa import Instruction as I  # noqa: N817
from xdpsim.runtime import Runtime
from xdpsim.spec import ObjectSpec, ProgramSpec, ProgType

PSEUDO_CALL, PSEUDO_FUNC, BPF_LOOP = 1, 4, 181
PROGRAM = [
    I(0x85, 0, PSEUDO_CALL, 0, 2),  # 0: call sub (pc 3), depth 1
    I(0xB7, 0, 0, 0, 0),  # 1
    I(0x95),  # 2
    I(0xB7, 1, 0, 0, 1),  # 3: sub: bpf_loop(1, cb, 0, 0)
    I(0x18, 2, PSEUDO_FUNC, 0, 6),  # 4: lddw r2, cb (pc 4 + 6 + 1 = 11)
    I(0x00, 0, 0, 0, 0),  # 5
    I(0xB7, 3, 0, 0, 0),  # 6
    I(0xB7, 4, 0, 0, 0),  # 7
    I(0x85, 0, 0, 0, BPF_LOOP),  # 8
    I(0xB7, 0, 0, 0, 0),  # 9
    I(0x95),  # 10
    I(0x79, 0, 10, -520),  # 11: cb, depth 2: r0 = *(u64 *)(r10 - 520): below its frame
    I(0x95),  # 12
]


@pytest.mark.parametrize("tier", [1, 2])
def test_callback_fault_names_its_own_stack_window(tier: int) -> None:
    out = []
    for eng in (Interpreter(), JitEngine(tier=tier)):
        rt = Runtime()
        spec = ProgramSpec("p", "xdp", ProgType.XDP, "xdp", list(PROGRAM))
        coll = rt.load(ObjectSpec("<t>", {"p": spec}, []))
        with pytest.raises(ProgramFault) as e:
            eng.run(rt, coll.programs["p"], RunState(rt, args=(0,)))
        out.append(str(e.value))
    assert "stack [0xa00, 0x1000)" in out[0], out[0]  # (depth 2: three frames open)
    assert out[1] == out[0]
