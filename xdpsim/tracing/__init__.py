"""Instruction traces: what each executed instruction did (xdpsim trace, the plugin's failure reports).

    from xdpsim.tracing import trace_run, format_trace
    run = trace_run(obj.programs["packet_parser"], packet)   # always on the interpreter
    run.result.action, run.steps[-1].location                  # RunResult, list[Step]
    print(format_trace(run.steps, verbose=True))
"""

from .format import format_step, format_trace
from .recorder import HelperCall, MapAccess, MemAccess, Recorder, Step, TailCall, line_table
from .run import TracedRun, trace_run

__all__ = [
    "HelperCall",
    "MapAccess",
    "MemAccess",
    "Recorder",
    "Step",
    "TailCall",
    "TracedRun",
    "format_step",
    "format_trace",
    "line_table",
    "trace_run",
]
