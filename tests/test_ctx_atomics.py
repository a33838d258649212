"""Atomics on the context: the kernel's verifier refuses BPF_ATOMIC on ctx ("BPF_ATOMIC stores into R1
ctx is not allowed"), so both engines fault with the same message before touching the context.
Found by tests/test_jit_fuzz.py: the JIT refused the access natively, then its fault report asked the
AddressSpace, which allows an 8-byte window at xdp_md+0, and died on an internal assertion."""

from __future__ import annotations

from pathlib import Path

import pytest

from xdpsim.jit.fuzzcheck import run_case

ROOT = Path(__file__).resolve().parent.parent
# r2 = 1; r2 = map_value(0); lock *(u64 *)(r1 + 0) += r1; r0 = 8; exit  (r1 = the xdp_md pointer)
PROGRAM = "b70200000100000018220000000000000000000000000000db11000000000000b7000000080000009500000000000000"
FRAME = bytes.fromhex("ffffffffffff02000000000108004500002800010000400600000a0000010a00000204d200500000"
                      "00000000000000000000000000c08c5197595790")


@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_atomic_on_ctx_faults_before_any_access(engine: str) -> None:
    case = {"program": PROGRAM, "packet": FRAME.hex(), "object": str(ROOT / "programs/chain.o"),
            "name": "chain_count"}
    res = run_case(case, engine)
    assert res["error"] is not None
    assert "insn 3" in res["error"]
    assert "atomic operation of 8 bytes on the context at 0x200000000" in res["error"]
    assert res["data"] == FRAME.hex()  # nothing was written


def test_engines_agree() -> None:
    case = {"program": PROGRAM, "packet": FRAME.hex(), "object": str(ROOT / "programs/chain.o"),
            "name": "chain_count"}
    a, b = run_case(case, "interp"), run_case(case, "jit")
    assert a["error"] == b["error"] and a["maps"] == b["maps"]
