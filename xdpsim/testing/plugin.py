"""The xdpsim pytest plugin (entry point `pytest11: xdpsim`). Its import is light: nothing of
llvmlite, numpy or scapy is loaded until a fixture or a failure report needs it.

Options: --xdpsim-engine {auto,interp,jit,kernel}, --xdpsim-update-golden, --xdpsim-cov,
--xdpsim-cov-html DIR, --xdpsim-cov-lcov FILE.
Fixtures: bpf_object (factory, cached per session), capture (factory: packets of a pcap), scapy
(the usual scapy layers), xdp_actions (XDP action constants), xdpsim_golden (assert_matches_golden bound to
the session's options).
Marker: @pytest.mark.xdpsim_capture(path, sample=None) parametrises the test's `packet` argument over
the capture's packets, ids "index-summary".
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from . import state

ENGINES = ("auto", "interp", "jit", "kernel")
_SAVED = pytest.StashKey[tuple]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("xdpsim", "xdpsim (eBPF programs under test)")
    g.addoption("--xdpsim-engine", choices=ENGINES, default="auto",
                help="engine for bpf_object runs and golden checks (auto: jit when available, "
                     "else interp)")
    g.addoption("--xdpsim-update-golden", action="store_true", default=False,
                help="rewrite golden files instead of comparing with them")
    g.addoption("--xdpsim-cov", action="store_true", default=False,
                help="measure C-source line and branch coverage of the BPF programs the tests run")
    g.addoption("--xdpsim-cov-html", metavar="DIR", default=None,
                help="with --xdpsim-cov: write an HTML report")
    g.addoption("--xdpsim-cov-lcov", metavar="FILE", default=None, help="with --xdpsim-cov: write LCOV")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "xdpsim_capture(path, sample=None): one test per packet of a "
                                       "capture, as the `packet` argument")
    # saved for unconfigure: a pytester run inside a test session must not reset the outer session's state
    config.stash[_SAVED] = (state.engine, state.update_golden, state.coverage)
    eng = config.getoption("--xdpsim-engine", "auto")
    state.engine = None if eng == "auto" else eng
    state.update_golden = bool(config.getoption("--xdpsim-update-golden", False))
    if config.getoption("--xdpsim-cov", False) or config.getoption("--xdpsim-cov-html", None) \
            or config.getoption("--xdpsim-cov-lcov", None):
        from ..cover.data import CoverageData

        state.coverage = CoverageData()
    else:
        state.coverage = None


def pytest_unconfigure(config: pytest.Config) -> None:
    state.engine, state.update_golden, state.coverage = config.stash.get(_SAVED, (None, False, None))


def _engine(config: pytest.Config) -> str:
    if state.engine is not None:
        return state.engine
    from .runner import default_engine

    return default_engine()


@pytest.fixture(scope="session")
def bpf_object(request: pytest.FixtureRequest) -> Any:
    """`bpf_object("programs/parser.o")` -> TestObject, one per (path, engine) for the session
    (maps keep their state between tests); `fresh=True` gives a new one; paths relative to the
    rootdir when not found from the current directory."""
    from .results import TestObject

    cache: dict[tuple[str, str], TestObject] = {}
    root = str(request.config.rootpath)

    def load(path: str | os.PathLike[str], *, engine: str | None = None, fresh: bool = False) -> TestObject:
        p = os.fspath(path)
        if not os.path.exists(p) and os.path.exists(os.path.join(root, p)):
            p = os.path.join(root, p)
        eng = engine or _engine(request.config)
        key = (os.path.abspath(p), eng)
        if fresh or key not in cache:
            obj = TestObject(p, eng, coverage=state.coverage)
            if fresh:
                return obj
            cache[key] = obj
        return cache[key]

    yield load
    for obj in cache.values():
        obj.runner.close()


@pytest.fixture(scope="session")
def capture(request: pytest.FixtureRequest) -> Any:
    """`capture("pcaps/mixed.pcap", sample=None)` -> list of CapturedPacket (index, data, ts_ns,
    summary, scapy())."""
    from .packets import read_capture

    root = str(request.config.rootpath)
    cache: dict[tuple[str, int | None], list[Any]] = {}

    def read(path: str | os.PathLike[str], sample: int | None = None) -> list[Any]:
        p = os.fspath(path)
        if not os.path.exists(p) and os.path.exists(os.path.join(root, p)):
            p = os.path.join(root, p)
        key = (os.path.abspath(p), sample)
        if key not in cache:
            cache[key] = read_capture(p, sample)
        return cache[key]

    return read


@pytest.fixture(scope="session")
def scapy() -> Any:
    """The scapy layers a packet test needs: scapy.Ether()/scapy.IP(dst=...)/scapy.TCP(dport=23)."""
    from types import SimpleNamespace

    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP, Dot1Q, Ether
    from scapy.packet import Raw

    return SimpleNamespace(Ether=Ether, IP=IP, IPv6=IPv6, TCP=TCP, UDP=UDP, ICMP=ICMP, ARP=ARP,
                           Dot1Q=Dot1Q, Raw=Raw)


@pytest.fixture(scope="session")
def xdp_actions() -> Any:
    """XDP action constants (xdp.XDP_DROP, ...): the XdpAction enum."""
    from ..hooks.xdp import XdpAction

    return XdpAction


@pytest.fixture
def xdpsim_golden(request: pytest.FixtureRequest) -> Any:
    """`xdpsim_golden(spec, pcap, golden_file)`: assert_matches_golden with the session's engine,
    --xdpsim-update-golden and --xdpsim-cov; paths relative to the test file's directory."""
    from ..golden import assert_matches_golden

    base = os.path.dirname(str(request.path))

    def check(spec: str, pcap: str, golden: str, **kw: Any) -> int:
        __tracebackhide__ = True
        def here(p: str) -> str:
            return p if os.path.isabs(p) else os.path.join(base, p)

        name, _, prog = spec.partition(":") if not spec.endswith(".toml") else (spec, "", "")
        full = here(name) + (f":{prog}" if prog else "")
        return assert_matches_golden(full, here(pcap), here(golden), **kw)

    return check


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for mark in metafunc.definition.iter_markers("xdpsim_capture"):
        if "packet" not in metafunc.fixturenames:
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: xdpsim_capture needs a `packet` argument")
        from .packets import read_capture

        path = os.fspath(mark.args[0])
        if not os.path.isabs(path):
            here = os.path.join(os.path.dirname(str(metafunc.definition.path)), path)
            path = here if os.path.exists(here) else os.path.join(str(metafunc.config.rootpath), path)
        pkts = read_capture(path, mark.kwargs.get("sample"))
        metafunc.parametrize("packet", pkts, ids=[p.id() for p in pkts])
        return


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: Any, right: Any) -> list[str] | None:
    from .results import Verdict  # light: results imports nothing heavy at module level

    v = left if isinstance(left, Verdict) else right if isinstance(right, Verdict) else None
    if v is None or op not in ("==", "!="):
        return None
    other = right if v is left else left
    name = getattr(other, "name", None) or str(other)
    lines = [f"{v.name} {op} {name}"]
    try:
        lines += v.result.explain()
    except Exception as e:  # a report that fails must not hide the assertion itself
        lines.append(f"(xdpsim could not explain the result: {type(e).__name__}: {e})")
    return lines


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    cov = state.coverage
    if cov is None:
        return
    from ..cover import build_report, text_summary, write_html, write_lcov

    report = build_report(cov)
    tr = terminalreporter
    tr.write_sep("-", "xdpsim coverage (BPF programs, by C source line)")
    if not report.programs:
        tr.write_line("no BPF program ran")
        return
    tr.write_line(text_summary(report, base=str(config.rootpath)))
    html_dir = config.getoption("--xdpsim-cov-html", None)
    if html_dir:
        index = write_html(report, html_dir)
        tr.write_line(f"HTML report: {index}")
    lcov = config.getoption("--xdpsim-cov-lcov", None)
    if lcov:
        write_lcov(report, lcov)
        tr.write_line(f"LCOV: {lcov}")
