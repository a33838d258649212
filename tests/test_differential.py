"""The differential suite: interp, jit and the running kernel must agree on everything.

- every program in programs/ (bad_bounds.o excepted: the kernel refuses it) over every sample capture;
- hypothesis-generated frames (valid, truncated, malformed; scapy) through the bundled programs;
- generated straight-line ALU/JMP/atomic programs the verifier accepts (xdpsim.difftest.progs).

Skips, with the reason, where bpf() is not permitted; a JIT that is absent or broken loses its
column (a warning), the rest still runs. The totals are printed in the terminal summary (conftest.py).
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import pytest
from differential_summary import record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xdpsim.difftest import DiffReport, PacketIn, diff_program
from xdpsim.difftest.cli import capture_packets, format_report
from xdpsim.difftest.frames import KINDS, build, damage
from xdpsim.difftest.progs import MIN_LEN, random_program
from xdpsim.kernel.bpf import kernel_available
from xdpsim.loader import load_object

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "programs"
CAPTURES = sorted(p for p in (ROOT / "pcaps").iterdir() if p.suffix in (".pcap", ".pcapng"))
ENGINES = ("interp", "jit", "kernel")


@pytest.fixture(scope="module", autouse=True)
def _kernel() -> None:
    ok, why = kernel_available()
    if not ok:
        pytest.skip(f"differential suite needs the kernel engine: {why}")


_SPECS: dict[str, object] = {}


def _spec(name: str):  # noqa: ANN202 - ObjectSpec, loaded once per object
    if name not in _SPECS:
        _SPECS[name] = load_object(PROGRAMS / name)
    return _SPECS[name]


def _programs() -> list[tuple[str, str]]:
    out = []
    for obj in sorted(PROGRAMS.glob("*.o")):
        if obj.name == "bad_bounds.o":
            continue
        for name in load_object(obj).programs:
            out.append((obj.name, name))
    return out


ALL = _programs()


def _check(report: DiffReport, labels: dict[int, str] | None = None, *, kind: str = "captures") -> None:
    record(report, kind)
    for engine, why in report.skipped_engines.items():
        if engine == "jit":
            warnings.warn(f"{report.spec}:{report.program}: jit column skipped: {why}", stacklevel=2)
        elif "devmap" not in why and "cpumap" not in why:
            pytest.fail(f"{report.spec}:{report.program}: engine {engine} skipped: {why}")
    assert len(report.engines) >= 2, report.skipped_engines
    if not report.ok:
        where = ""
        if labels and report.disagreements:
            where = "\nfirst disagreeing packet: " + labels.get(report.disagreements[0].packet, "?")
        pytest.fail(format_report(report) + where)


def _captures() -> tuple[list[PacketIn], dict[int, str]]:
    """Every sample capture, one after the other, numbered through (labels: number -> file#index)."""
    packets: list[PacketIn] = []
    labels: dict[int, str] = {}
    for cap in CAPTURES:
        for p in capture_packets(str(cap))():
            n = len(packets)
            labels[n] = f"{cap.name}#{p.index}"
            packets.append(PacketIn(n, p.data, p.ts_ns))
    return packets, labels


_CAPS: list[tuple[list[PacketIn], dict[int, str]]] = []


@pytest.mark.parametrize(("obj", "prog"), ALL, ids=[f"{o[:-2]}:{p}" for o, p in ALL])
def test_program_over_sample_captures(obj: str, prog: str) -> None:
    if not _CAPS:
        _CAPS.append(_captures())
    packets, labels = _CAPS[0]
    report = diff_program(_spec(obj), prog, packets, engines=ENGINES)
    _check(report, labels)
    assert report.compared > 0.9 * len(packets) or "devmap" in str(report.skipped_engines)


# --- hypothesis: generated frames through the bundled programs ------------------------------------

FRAME = st.tuples(
    st.sampled_from(KINDS),
    st.integers(0, 255),  # base frames repeat (scapy is slow; frames.build caches), damage varies them
    st.one_of(st.none(), st.none(), st.none(), st.integers(0, 120)),
    st.one_of(st.just(()), st.lists(st.tuples(st.integers(0, 160), st.integers(0, 255)), max_size=3)),
)
BATCH = st.lists(FRAME, min_size=120, max_size=140)
FRAME_PROGRAMS = [(o, p) for o, p in ALL if p != "devmap_prog"]


def _frames(batch: list) -> list[PacketIn]:
    return [PacketIn(i, damage(build(kind, seed), flips, cut), ts_ns=1_000_000 * i)
            for i, (kind, seed, cut, flips) in enumerate(batch)]


@pytest.mark.parametrize(("obj", "prog"), FRAME_PROGRAMS, ids=[f"{o[:-2]}:{p}" for o, p in FRAME_PROGRAMS])
@settings(max_examples=3, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(batch=BATCH)
def test_generated_frames(obj: str, prog: str, batch: list) -> None:
    _check(diff_program(_spec(obj), prog, _frames(batch), engines=ENGINES), kind="frames")


# --- generated programs ----------------------------------------------------------------------------


def _program_packets(rng: random.Random, n: int) -> list[PacketIn]:
    out = []
    for i in range(n):
        if rng.random() < 0.5:
            data = build(rng.choice(KINDS), rng.randrange(256))
        else:
            data = rng.randbytes(rng.choice((MIN_LEN - 1, MIN_LEN, 80, 200)))
        out.append(PacketIn(i, data if len(data) >= 14 else data.ljust(14, b"\0")))
    return out


@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(rng=st.randoms(use_true_random=False))
def test_generated_programs_three_engines(rng: random.Random) -> None:
    spec = random_program(rng)
    _check(diff_program(spec, "gen", _program_packets(rng, 40), engines=ENGINES), kind="generated")


@pytest.mark.parametrize("seed", range(0, 60, 6))
def test_generated_programs_interp_kernel(seed: int) -> None:
    """A wider sweep against the reference pair only (a JIT compile per program costs most of a second;
    the JIT is held to the interpreter on these programs by the test above and tests/test_jit_fuzz.py)."""
    for s in range(seed, seed + 6):
        rng = random.Random(s)
        spec = random_program(rng, body=32)
        report = diff_program(spec, "gen", _program_packets(rng, 30), engines=("interp", "kernel"))
        _check(report, kind="generated")


def test_pipeline_chain_and_redirect(tmp_path: Path) -> None:
    """A pipeline (a libxdp-style chain of four programs from two objects, a redirect on a second
    interface) over the two-interface pcapng, in all three engines."""
    from test_diff import write_pipeline

    from xdpsim.difftest.pipeline import diff_pipeline

    pcapng = str(ROOT / "pcaps" / "mixed.pcapng")
    report = diff_pipeline(write_pipeline(tmp_path), pcapng, engines=list(ENGINES))
    _check(report, kind="pipeline")
    assert report.compared == 120


SHARED_TCPDUMP = ROOT.parent / "shared" / "pcaps" / "tcpdump"
CORPUS_PROGRAMS = [("parser.o", "packet_parser"), ("parser_tc.o", "packet_parser"),
                   ("firewall.o", "firewall"), ("rewrite.o", "swap_tx"), ("tc_nat.o", "tc_nat")]
_CORPUS: list[list[PacketIn]] = []


def _corpus(per_file: int = 5) -> list[PacketIn]:
    """The first packets of every tcpdump test capture (`../shared/pcaps/tcpdump/`), damaged ones included:
    real traffic of every kind, link types converted to Ethernet by xdpsim.io."""
    if not SHARED_TCPDUMP.is_dir():
        pytest.skip(f"shared tcpdump captures not found at {SHARED_TCPDUMP}")
    if not _CORPUS:
        from xdpsim.errors import XdpsimError

        packets: list[PacketIn] = []
        for path in sorted(SHARED_TCPDUMP.iterdir()):
            try:
                for n, p in enumerate(capture_packets(str(path))()):
                    if n >= per_file:
                        break
                    packets.append(PacketIn(len(packets), p.data, p.ts_ns))
            except (XdpsimError, OSError, ValueError):
                continue  # a capture xdpsim.io refuses (its own tests cover why)
        _CORPUS.append(packets)
    return _CORPUS[0]


@pytest.mark.parametrize(("obj", "prog"), CORPUS_PROGRAMS, ids=[f"{o[:-2]}:{p}" for o, p in CORPUS_PROGRAMS])
def test_tcpdump_corpus(obj: str, prog: str) -> None:
    packets = _corpus()
    report = diff_program(_spec(obj), prog, packets, engines=ENGINES)
    _check(report, kind="corpus")
    assert report.compared > 0.9 * len(packets)


TC_PIPELINE = """
[[interface]]
name = "eth0"
xdp = [{{ object = "{p}/firewall.o" }}]
tcx_ingress = ["{p}/tc_classify.o:tcx_guard"]
tc_ingress = [{{ object = "{p}/tc_classify.o", program = "tc_classify", priority = 1 }},
              {{ object = "{p}/tc_classify.o", program = "tc_police", priority = 2 }}]
"""


def test_pipeline_xdp_then_tc(tmp_path: Path) -> None:
    """XDP, then tcx and clsact ingress filters, over the mixed capture in all three engines."""
    from xdpsim.difftest.pipeline import diff_pipeline

    path = tmp_path / "tc.toml"
    path.write_text(TC_PIPELINE.format(p=PROGRAMS))
    report = diff_pipeline(str(path), str(ROOT / "pcaps" / "mixed.pcap"), engines=list(ENGINES))
    _check(report, kind="pipeline")
    assert report.compared == report.packets > 400
