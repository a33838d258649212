"""Differential testing: the same programs and packets on the interpreter, the JIT and the kernel.

`diff_program` (core.py) runs and compares; `engines.py` holds the per-engine runners and what cannot
be compared; `mapcmp.py` the engine-neutral map snapshots; `cli.py` the `xdpsim diff` and
`xdpsim check` commands; `progs.py` generated programs the verifier accepts (for the test suite).
"""

from .core import ENGINES, DiffReport, Disagreement, diff_program, first_difference, trace_packet
from .engines import EngineUnavailable, KernelRunner, Outcome, PacketIn, SimRunner, skip_reason
from .mapcmp import MapDifference, NotCompared, compare_snapshots, kernel_snapshot, sim_snapshot

__all__ = [
    "ENGINES",
    "DiffReport",
    "Disagreement",
    "EngineUnavailable",
    "KernelRunner",
    "MapDifference",
    "NotCompared",
    "Outcome",
    "PacketIn",
    "SimRunner",
    "compare_snapshots",
    "diff_program",
    "first_difference",
    "kernel_snapshot",
    "sim_snapshot",
    "skip_reason",
    "trace_packet",
]
