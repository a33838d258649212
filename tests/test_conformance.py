"""The bpf_conformance suite (../shared/conformance): every test passes, every negative is reported failing.

Negative files check the runner itself: xdpsim answers each honestly (the program's real r0, or the
error an invalid program deserves) and the verdict must then be "fail" -- nothing here knows the
names of those files.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from xdpsim.conformance import Outcome, parse_data, passes, run_file, run_test

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT.parent / "shared" / "conformance"
TESTS = sorted((SUITE / "tests").glob("*.data"))
NEGATIVE = sorted((SUITE / "negative").glob("*.data"))


def _engines() -> list[str]:
    try:
        has_jit = importlib.util.find_spec("xdpsim.engines.jit") is not None
        if has_jit:
            import xdpsim.engines.jit  # noqa: F401 - importable, not merely present
    except Exception:
        has_jit = False
    return ["interp", "jit"] if has_jit else ["interp"]


ENGINES = _engines()
needs_suite = pytest.mark.skipif(not TESTS, reason=f"conformance suite not found at {SUITE}")


@needs_suite
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("path", TESTS, ids=[p.name for p in TESTS])
def test_conformance(path: Path, engine: str) -> None:
    test, outcome = run_file(path, engine)
    assert passes(test, outcome), f"{path.name}: expected {test.result!r}/{test.error!r}, got {outcome}"


@needs_suite
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("path", NEGATIVE, ids=[p.name for p in NEGATIVE])
def test_negative_is_reported_failing(path: Path, engine: str) -> None:
    test, outcome = run_file(path, engine)
    assert outcome.error is not None or outcome.r0 != test.result
    assert not passes(test, outcome)


def test_parse_sections_and_verdicts() -> None:
    text = "# header\n-- asm\nmov %r0, 3\nexit\n-- mem\n01 02\n-- result\n0x3\n"
    t = parse_data(text)
    assert t.mem == b"\x01\x02" and t.result == 3 and t.asm is not None
    assert passes(t, run_test(t))
    assert not passes(t, Outcome(r0=4))
    raw = parse_data("-- raw\n0x00000003000000b7\n0x0000000000000095\n-- result\n0x3")
    assert run_test(raw).r0 == 3
    err = parse_data("-- asm\nmov %r0, 1\nexit\n-- error\nboom")
    assert not passes(err, run_test(err))  # a value where an error was claimed
    assert passes(err, Outcome(error="it went boom"))


def test_helper5_returns_r1_and_callx_takes_a_helper_id() -> None:
    t = parse_data("-- asm\nmov %r1, 77\ncall 5\nexit\n-- result\n0x4d")
    assert run_test(t).r0 == 77
    t = parse_data("-- asm\nmov %r1, 9\nmov %r2, 5\ncall %r2\nexit\n-- result\n0x9")
    assert run_test(t).r0 == 9


def _plugin(program: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xdpsim.conformance", *args], input=program,
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_plugin_protocol() -> None:
    # r0 = *(u32 *)(r1 + 0); exit -- memory 01 02 03 04
    ok = _plugin("6110000000000000 9500000000000000", "01020304", "--engine", "interp")
    assert ok.returncode == 0 and ok.stdout.strip() == "4030201"
    oob = _plugin("6110040000000000 9500000000000000", "--engine", "interp", "0102")
    assert oob.returncode == 1 and "out-of-bounds read of 4 bytes" in oob.stderr
    bad = _plugin("ff00000000000000 9500000000000000")
    assert bad.returncode == 1 and "instruction 0" in bad.stderr


@needs_suite
def test_run_data_file_returns_r0_or_raises_naming_the_file() -> None:
    from xdpsim.conformance import run_data_file
    from xdpsim.errors import XdpsimError

    assert run_data_file(SUITE / "tests" / "prime.data") == 1
    bad = SUITE / "negative" / "invalid_register.data"
    with pytest.raises(XdpsimError, match="invalid_register.data: line 1"):
        run_data_file(bad)
