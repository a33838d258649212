"""tests/test_xdp_hook.py run again with the JIT as the engine (see test_jit_interp_suite.py for how)."""

from __future__ import annotations

import pytest
import test_xdp_hook
from test_xdp_hook import *  # noqa: F403 - re-collect those tests here

from xdpsim.engines.jit import JitEngine


@pytest.fixture(autouse=True)
def _jit_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(test_xdp_hook, "Interpreter", JitEngine)


def test_the_suite_really_runs_the_jit() -> None:
    assert test_xdp_hook.Interpreter is JitEngine
