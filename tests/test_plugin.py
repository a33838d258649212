"""The pytest plugin, through pytester: fixtures, capture parametrisation with readable ids, failure
reports that point at the packet and the C line (the example's deliberately broken parser), golden
updates, session coverage, and a light import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# In-process pytester runs restore sys.modules afterwards; numpy cannot be imported twice in one
# process, so everything heavy the inner runs use is imported here first.
import scapy.layers.inet  # noqa: F401
import scapy.layers.inet6  # noqa: F401

import xdpsim.api  # noqa: F401
import xdpsim.cover  # noqa: F401
import xdpsim.golden  # noqa: F401
import xdpsim.tracing  # noqa: F401
from xdpsim.testing.packets import packets_from, sample_indices
from xdpsim.testing.results import Verdict
from xdpsim.testing.runner import default_engine

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "unit-testing"
EXAMPLE_FILES = ("parser.c", "parser.o", "capture.pcap", "golden.jsonl", "test_parser.py", "pytest.ini")


@pytest.fixture
def example(pytester: pytest.Pytester) -> pytest.Pytester:
    for name in EXAMPLE_FILES:
        shutil.copy(EXAMPLE / name, pytester.path / name)
    return pytester


default_engine()  # imports the JIT when it is there


def test_plugin_import_is_light():
    code = ("import sys, xdpsim.testing.plugin, xdpsim.testing; "
            "heavy = [m for m in ('llvmlite', 'numpy', 'scapy') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registered_as_pytest11_entry_point():
    from importlib.metadata import entry_points

    assert "xdpsim.testing.plugin" in [e.value for e in entry_points(group="pytest11")]


def test_the_example_passes(example: pytest.Pytester):
    res = example.runpytest_inprocess("-q", "--xdpsim-engine", "interp", "-p", "no:cacheprovider")
    res.assert_outcomes(passed=27)


def test_capture_ids(example: pytest.Pytester):
    res = example.runpytest_inprocess("--collect-only", "-q", "-p", "no:cacheprovider")
    out = res.stdout.str()
    assert ("test_parser.py::test_every_packet_follows_the_model"
            "[4-Ether IP TCP 10.0.0.1:40002 > 10.0.0.2:telnet S]") in out
    assert "test_every_packet_follows_the_model[18-Ether ARP who has 10.0.0.2 says 10.0.0.1]" in out


def test_broken_parser_points_at_the_packet_and_the_line(example: pytest.Pytester, monkeypatch):
    clang = shutil.which("clang-19")
    if clang is None:
        pytest.skip("clang-19 is needed to build the broken parser")
    arch = subprocess.run(["uname", "-m"], capture_output=True, text=True).stdout.strip()
    subprocess.run([clang, "-O2", "-g", "-target", "bpf", f"-I/usr/include/{arch}-linux-gnu", "-DBROKEN",
                    "-c", "parser.c", "-o", "parser_broken.o"], cwd=example.path, check=True)
    monkeypatch.setenv("PARSER_OBJ", "parser_broken.o")
    res = example.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    # the golden test, the telnet SYN (4), the ssh SYN (6), the telnet SYN with IP options (15), the
    # hand-made telnet and ssh packets
    res.assert_outcomes(passed=21, failed=6)
    out = res.stdout.str()
    assert "AssertionError: assert XDP_PASS == XDP_DROP" in out
    assert "packet #4: Ether / IP / TCP 10.0.0.1:40002 > 10.0.0.2:telnet S (54 bytes)" in out
    assert "parser.c:72: if (tcp->dest == bpf_htons(TELNET_PORT))" in out
    assert "deciding program: flow_parser" in out
    assert "last 12 instructions" in out
    assert "packet 6 (Ether / IP / TCP 10.0.0.1:40003 > 10.0.0.2:ssh S):" in out  # the golden diff
    assert "    action: XDP_PASS -> XDP_DROP" in out


def test_failure_on_the_interpreter_traces_the_run_itself(pytester: pytest.Pytester):
    pytester.makepyfile(f"""
        from xdpsim.testing import XDP_PASS

        def test_it(bpf_object, scapy):
            obj = bpf_object({str(ROOT / "programs" / "parser.o")!r})
            r = obj.run(scapy.Ether() / scapy.IP() / scapy.UDP(dport=19))
            assert r.action == XDP_PASS
    """)
    res = pytester.runpytest_inprocess("-vv", "--xdpsim-engine", "interp", "-p", "no:cacheprovider")
    res.assert_outcomes(failed=1)
    out = res.stdout.str()
    assert "deciding program: parse_udp after 1 tail call(s) (engine interp)" in out
    assert "parser.c:129: if (dport == 19)" in out
    assert "replayed" not in out  # the trace tail is the run's own
    assert "parse_udp    85: if r7 == 0x1300 goto +0x1" in out  # the tail, with the deciding jump


GOLDEN_ONLY = ("-q", "-k", "golden", "-p", "no:cacheprovider")


def test_update_golden(example: pytest.Pytester):
    stale = example.path / "golden.jsonl"
    lines = stale.read_text().splitlines()
    stale.write_text("\n".join(lines[:5]) + "\n")
    res = example.runpytest_inprocess(*GOLDEN_ONLY, "--xdpsim-engine", "interp")
    res.assert_outcomes(failed=1, deselected=26)
    res = example.runpytest_inprocess(*GOLDEN_ONLY, "--xdpsim-update-golden")
    res.assert_outcomes(passed=1, deselected=26)
    assert len(stale.read_text().splitlines()) == 24
    res = example.runpytest_inprocess(*GOLDEN_ONLY, "--xdpsim-engine", "interp")
    res.assert_outcomes(passed=1, deselected=26)


def test_session_coverage(example: pytest.Pytester):
    lcov = example.path / "cov.info"
    res = example.runpytest_inprocess("-q", "--xdpsim-cov", "--xdpsim-cov-lcov", str(lcov),
                                      "--xdpsim-cov-html", str(example.path / "html"),
                                      "-p", "no:cacheprovider")
    res.assert_outcomes(passed=27)
    out = res.stdout.str()
    assert "xdpsim coverage (BPF programs, by C source line)" in out
    assert "parser.o:flow_parser" in out
    text = lcov.read_text()
    # every test's runs count: the golden replay, the 23 parametrised packets, the 2 hand-made ones,
    # and the 23 of the stats test
    assert "FNDA:71,flow_parser" in text
    assert (example.path / "html" / "index.html").exists()


def test_verdict_is_an_int_that_knows_its_run():
    v = Verdict(1, result=None)  # type: ignore[arg-type]
    assert v == 1 and hash(v) == hash(1) and repr(v) == "XDP_DROP" and str(v) == "XDP_DROP"
    assert Verdict(7, result=None).name == "7"  # type: ignore[arg-type]


def test_packets_from_and_sampling():
    params = packets_from(EXAMPLE / "capture.pcap", sample=4)
    assert [p.id for p in params] == [
        "0-Ether IP TCP 10.0.0.1:40000 > 10.0.0.2:http S",
        "5-Ether IP TCP 10.0.0.2:telnet > 10.0.0.1:40002 SA",
        "11-Ether IP UDP DNS Qry",
        "17-Ether IPv6 TCP fd00::1:40007 > fd00::2:telnet S",
    ]
    assert sample_indices(10, None) == list(range(10)) and sample_indices(3, 10) == [0, 1, 2]
    assert sample_indices(100, 3) == [0, 33, 66]


def test_kernel_engine_results_explain_themselves():
    from xdpsim.kernel.bpf import kernel_available
    from xdpsim.testing.packets import read_capture
    from xdpsim.testing.results import TestObject

    ok, why = kernel_available()
    if not ok:
        pytest.skip(f"kernel engine unavailable: {why}")
    obj = TestObject(EXAMPLE / "parser.o", "kernel")
    try:
        telnet = read_capture(EXAMPLE / "capture.pcap")[4]
        res = obj.run(telnet)
        assert res.action == 1 and res.engine == "kernel" and res.exit_pc is None
        text = "\n".join(res.explain())
        assert "packet #4: Ether / IP / TCP 10.0.0.1:40002 > 10.0.0.2:telnet S" in text
        assert "parser.c:72: if (tcp->dest == bpf_htons(TELNET_PORT))" in text  # from the interpreter replay
        assert "replayed on the interpreter" in text
    finally:
        obj.runner.close()
