"""Shared pytest configuration (append only: several areas add their hooks here)."""

# differential suite (tests/test_differential*.py): packets and programs compared, in the terminal summary
from differential_summary import pytest_terminal_summary  # noqa: E402,F401
