"""Session-wide settings the pytest plugin fills from its command-line options (module globals so
that library functions such as golden.assert_matches_golden see them without a fixture)."""

from __future__ import annotations

from typing import Any

engine: str | None = None  # --xdpsim-engine (None: the JIT when available, else the interpreter)
update_golden: bool = False  # --xdpsim-update-golden
coverage: Any = None  # a cover.CoverageData while --xdpsim-cov is on
