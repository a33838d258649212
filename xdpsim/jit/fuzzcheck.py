"""Differential check worker: run cases on the interpreter and the JIT, report disagreements.

`python -m xdpsim.jit.fuzzcheck < cases.json` reads a JSON list of cases and prints one JSON line
per case: `{"i": index, "ok": bool, "interp": ..., "jit": ...}`. Tests run it in a subprocess so that
a crash of native code fails the test instead of killing pytest.

A case is `{"program": hex of the instructions, "packet": hex, "object": path or null, "name":
program name in that object}`. Without an object the program runs alone with two maps (an array
`arr` of 4 x 16 bytes and a hash `hash` of 16 x (4 -> 8 bytes)) whose handles are map ids 0 and 1.
With an object, the named program's instructions are replaced by the case's (mutated) ones.

Compared: r0 or the fault message, the packet bytes and metadata, the redirect, the tail-call count and
every map's contents; then the packet twice more (the JIT through its batch loop, so leftovers of
one packet in the frame or on the stack would show). When the fault is a budget fault only the
message is compared (the JIT stops at the start of the block that exhausts the budget: see
xdpsim/jit/__init__.py).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from .. import isa
from ..errors import XdpsimError
from ..spec import MapSpec, MapType, ObjectSpec, ProgramSpec, ProgType

STANDARD_MAPS = [
    MapSpec("arr", MapType.ARRAY, 4, 16, 4),
    MapSpec("hash", MapType.HASH, 4, 8, 16),
]


def _objspec(case: dict) -> tuple[ObjectSpec, str]:
    insns = isa.decode(bytes.fromhex(case["program"]))
    if case.get("object"):
        import copy

        from ..loader import load_object

        spec = copy.deepcopy(load_object(case["object"]))
        name = case["name"]
        spec.programs[name].insns = insns
        return spec, name
    prog = ProgramSpec("fuzz", "xdp", ProgType.XDP, "xdp", insns)
    return ObjectSpec("<fuzz>", {"fuzz": prog}, [MapSpec(**vars(m)) for m in STANDARD_MAPS]), "fuzz"


def run_case(case: dict, engine_name: str) -> dict[str, Any]:
    from ..engines.interp import Interpreter
    from ..engines.jit import JitEngine
    from ..hooks.xdp import run_xdp
    from ..runtime import Runtime

    spec, name = _objspec(case)
    rt = Runtime(seed=7)
    try:
        coll = rt.load(spec)
    except XdpsimError as e:
        return {"load": str(e)}
    engine = JitEngine() if engine_name == "jit" else Interpreter()
    out: dict[str, Any] = {}
    r = run_xdp(rt, engine, coll.programs[name], bytes.fromhex(case["packet"]), budget=20000, now_ns=12345)
    out["error"] = str(r.error) if r.error else None
    out["budget"] = r.error is not None and r.error.kind == "budget"
    out["r0"] = r.retval
    out["data"] = r.data.hex()
    out["meta"] = r.meta.hex()
    out["redirect"] = repr(r.redirect)
    out["tail_calls"] = r.tail_calls
    out["maps"] = {k: m.to_json() for k, m in coll.maps.items()}
    out["again"] = _twice(rt, engine, coll.programs[name], bytes.fromhex(case["packet"]), engine_name)
    return out


def _twice(rt: Any, engine: Any, prog_id: int, packet: bytes, engine_name: str) -> list:
    """The packet twice more, through the batch loop on the JIT (what a packet leaves behind in the
    frame or on the stack must not be seen by the next one), one run_xdp each on the interpreter."""
    import numpy as np

    from ..hooks.xdp import run_xdp

    if engine_name == "jit":
        data = np.frombuffer(packet * 2, np.uint8)
        offsets = np.array([0, len(packet)], np.int64)
        lengths = np.array([len(packet)] * 2, np.uint32)
        res = engine.run_batch(
            rt, prog_id, data, offsets, lengths, np.array([12345] * 2, np.uint64), budget=20000
        )
        return [
            (
                int(res.retval[i]) if i not in res.errors else 0,
                res.packet(i),
                str(res.errors[i]) if i in res.errors else None,
            )
            for i in range(2)
        ]
    out = []
    for _ in range(2):
        r = run_xdp(rt, engine, prog_id, packet, budget=20000, now_ns=12345)
        out.append((r.retval, r.data, str(r.error) if r.error else None))
    return out


def agree(a: dict, b: dict) -> bool:
    if a.get("budget") and b.get("budget"):
        return a["error"] == b["error"]
    return json.loads(json.dumps(a, default=repr)) == json.loads(json.dumps(b, default=repr))


def main() -> int:
    cases = json.load(sys.stdin)
    for i, case in enumerate(cases):
        a = run_case(case, "interp")
        b = run_case(case, "jit")
        print(json.dumps({"i": i, "ok": agree(a, b), "interp": a, "jit": b}, default=repr), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
