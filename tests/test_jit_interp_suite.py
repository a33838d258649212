"""The interpreter's own tests (tests/test_interp.py), run again with the JIT as the engine.

test_interp's helpers call `Interpreter().run(...)` through the module global `Interpreter`; an
autouse fixture points that global at JitEngine, so every test below checks the JIT against the
same expectations (results and fault messages). Tests about interpreter-only features (the tracer)
are not re-run.
"""

from __future__ import annotations

import pytest
import test_interp
from test_interp import *  # noqa: F403 - re-collect the interpreter's tests here

from xdpsim.engines.jit import JitEngine

# the tracer is an interpreter feature: the JIT runs without one
del test_tracer_sees_each_instruction  # noqa: F821


@pytest.fixture(autouse=True)
def _jit_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(test_interp, "Interpreter", JitEngine)


def test_the_suite_really_runs_the_jit() -> None:
    assert test_interp.Interpreter is JitEngine
    assert test_interp.run("r0 = 42\nexit") == 42
