"""tests/test_interp_runtime.py on the JIT
(see test_jit_interp_suite.py for how)."""

from __future__ import annotations

import pytest
import test_interp_runtime
from test_interp_runtime import *  # noqa: F403 - re-collect those tests here

from xdpsim.engines.jit import JitEngine


@pytest.fixture(autouse=True)
def _jit_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(test_interp_runtime, "Interpreter", JitEngine)


def test_the_suite_really_runs_the_jit() -> None:
    assert test_interp_runtime.Interpreter is JitEngine
