"""Unicast XDP redirects check the target interface's MTU, as the kernel does (xdp_ok_fwd_dev when the
frame is queued: longer than MTU + 14 + 4 bytes is -EMSGSIZE, dropped), before the devmap entry's
program: reason `redirect_mtu`, in every engine, in Pipeline.process and in replays (the JIT's batch
paths, sink mode or not, and --log). tests/test_redirect_mtu_kernel.py asks the running kernel."""

from __future__ import annotations

from pathlib import Path

import pytest
from kernel_fixtures import kernel  # noqa: F401 - the fixture
from pipeline_setup import build_bpf, build_pipeline_progs, log_rows, sink_frames

from xdpsim.io import PcapWriter
from xdpsim.pipeline import fastpath
from xdpsim.pipeline.config import parse_spec
from xdpsim.pipeline.pipeline import Pipeline
from xdpsim.pipeline.replay import replay_to_dir

ROOT = Path(__file__).resolve().parent.parent
REDIRECT = ROOT / "programs" / "redirect.o"
# an IPv4 frame, padded to the lengths below
HEAD = bytes.fromhex("ffffffffffff02000000000108004500001c0001000040017cdd0a0000010a000002")
MTU = 1000
LIMIT = MTU + 14 + 4


def frame(n: int, first: int = 0x02) -> bytes:
    return bytes([first]) + HEAD[1:] + bytes(n - len(HEAD))


# eth1 (ifindex 2: redirect.o's default out_ifindex, and the devmap entry's device) has the small MTU
TOML = """
[[interface]]
name = "eth0"
ifindex = 3
xdp = [{{ object = "{obj}", program = "{prog}" }}]
[[interface]]
name = "eth1"
ifindex = 2
mtu = {mtu}
{entries}
"""

PORT_ENTRY = """
[[map_entries]]
map = "ports"
key = "00000000"
value = "02000000"
program = "egress_mark"
"""


@pytest.fixture(scope="module")
def progs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/pipeline_progs.c as the kernel takes it: to_port (bpf_redirect_map through `ports`, a devmap
    of struct bpf_devmap_val) and egress_mark (its entries' program: stamps the first byte with the
    egress ifindex, drops odd lengths)."""
    return build_pipeline_progs(tmp_path_factory, kernel_safe=True)


def spec_file(tmp_path: Path, obj: Path, prog: str, entries: str = "", mtu: int = MTU) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(TOML.format(obj=obj, prog=prog, mtu=mtu, entries=entries))
    return path


def fate(p: Pipeline, data: bytes) -> tuple[str, str, str | None, str, bytes]:
    d = p.process(p.by_ifindex[3], data, 0)
    return d.outcome, d.reason, d.target, d.program, d.data


@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_bpf_redirect_over_the_mtu_is_dropped(tmp_path: Path, engine: str) -> None:
    """bpf_redirect(2): up to MTU + 18 bytes leave through eth1; one byte more is `redirect_mtu`."""
    with Pipeline(parse_spec(str(spec_file(tmp_path, REDIRECT, "redirect_ifindex"))), engine=engine) as p:
        assert fate(p, frame(LIMIT))[:3] == ("redirect", "interface", "eth1")
        d = p.process(p.by_ifindex[3], frame(LIMIT + 1), 0)
        assert (d.outcome, d.reason, d.target) == ("drop", "redirect_mtu", None)
        assert d.error is not None
        assert f"{LIMIT + 1}-byte frame to eth1" in d.error and f"MTU {MTU}" in d.error
        assert d.program == "redirect_ifindex"


@pytest.mark.parametrize("engine", ["interp", "jit"])
def test_devmap_redirect_checks_the_mtu_before_the_entry_program(tmp_path: Path, progs: Path,
                                                                 engine: str) -> None:
    """to_port through a devmap entry with egress_mark: a frame of MTU + 18 bytes is stamped by the entry's
    program and leaves; MTU + 20 (even: egress_mark would pass it) is dropped before the program runs
    (the kernel's __xdp_enqueue checks before bq_enqueue; the program runs at the flush)."""
    path = spec_file(tmp_path, progs, "to_port", PORT_ENTRY)
    with Pipeline(parse_spec(str(path)), engine=engine) as p:
        assert fate(p, frame(LIMIT)) == ("redirect", "interface", "eth1", "to_port", frame(LIMIT, first=2))
        out, reason, target, program, data = fate(p, frame(LIMIT + 2, first=0x77))
        assert (out, reason, target, program) == ("drop", "redirect_mtu", None, "to_port")
        assert data == frame(LIMIT + 2, first=0x77)  # egress_mark did not run
        # the odd length under the limit still reaches egress_mark, which drops it
        assert fate(p, frame(LIMIT - 1))[:2] == ("drop", "devmap_program")


def test_the_default_mtu_is_1500(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(TOML.format(obj=REDIRECT, prog="redirect_ifindex", mtu=1500, entries="")
                    .replace("mtu = 1500\n", ""))
    with Pipeline(parse_spec(str(path)), engine="interp") as p:
        assert fate(p, frame(1518))[:2] == ("redirect", "interface")
        assert fate(p, frame(1519))[:2] == ("drop", "redirect_mtu")


def test_cpumap_and_xsk_redirects_have_no_mtu(tmp_path: Path, progs: Path) -> None:
    """cpu_map_enqueue and the xskmap do not call xdp_ok_fwd_dev: `steer` sends odd lengths to CPU 1,
    even ones to the AF_XDP socket, however long (over eth0's MTU of 1500 and eth1's of 68)."""
    path = tmp_path / "p.toml"
    path.write_text(f"""
[[interface]]
name = "eth0"
ifindex = 3
queues = 2
xdp = [{{ object = "{progs}", program = "steer" }}]
[[interface]]
name = "eth1"
ifindex = 2
mtu = 68
[[map_entries]]
map = "cpus"
key = "01000000"
value = "0001000000000000"
[[map_entries]]
map = "xsks"
key = "00000000"
value = "05000000"
""")
    with Pipeline(parse_spec(str(path)), engine="interp") as p:
        assert fate(p, frame(2001))[:3] == ("redirect", "cpu", "cpu1")
        assert fate(p, frame(2000))[:3] == ("redirect", "xsk", "xsk-0")


# --- replays: the JIT's batch paths hand each redirect to the same routing ----------------------------


LENGTHS = [60, LIMIT - 1, LIMIT, LIMIT + 1, 1500, 13, LIMIT, 2000, 64]


def capture(tmp_path: Path) -> Path:
    path = tmp_path / "in.pcap"
    with PcapWriter(path) as w:
        for i, n in enumerate(LENGTHS):
            w.write(frame(n) if n >= len(HEAD) else bytes(n), 1_700_000_000_000_000_000 + i)
    return path


@pytest.mark.parametrize("how", ["interp", "jit-sink", "jit-batch", "jit-log"])
def test_replay_drops_frames_over_the_mtu(tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if how == "jit-batch":
        monkeypatch.setattr(fastpath, "SINK_MODE", False)
    engine = how.split("-")[0]
    pcap = capture(tmp_path)
    out = tmp_path / "out"
    stats = replay_to_dir(str(spec_file(tmp_path, REDIRECT, "redirect_ifindex")), pcap, out, engine=engine,
                          log=how in ("interp", "jit-log"))
    over = [n for n in LENGTHS if n > LIMIT]
    fits = [n for n in LENGTHS if len(HEAD) <= n <= LIMIT]
    assert stats["reasons"] == {"redirect": {"interface": len(fits)},
                                "drop": {"redirect_mtu": len(over), "frame_too_short": 1}}
    assert stats["redirect_targets"] == {"eth1": len(fits)}
    got = sink_frames(out)
    assert got["eth0/redirect-eth1.pcap"] == [frame(n) for n in fits]
    assert got["eth0/drop.pcap"] == [frame(n) if n >= len(HEAD) else bytes(n) for n in LENGTHS
                                     if n > LIMIT or n < len(HEAD)]
    assert sum(stats["errors"].values()) == len(over)
    if how in ("interp", "jit-log"):
        rows = log_rows(out)
        assert [r["reason"] for r in rows] == [
            "frame_too_short" if n < len(HEAD) else "redirect_mtu" if n > LIMIT else "interface"
            for n in LENGTHS]
        assert all("over its MTU 1000" in r["error"] for r in rows if r["reason"] == "redirect_mtu")


# --- the kernel engine: the pipeline routes its recorded targets the same way ------------------------


def test_kernel_engine_drops_over_the_mtu(kernel: str, tmp_path: Path, progs: Path) -> None:  # noqa: F811
    got = {}
    for engine in ("interp", "kernel"):
        with Pipeline(parse_spec(str(spec_file(tmp_path, REDIRECT, "redirect_ifindex"))), engine=engine) as p:
            ifindex = [fate(p, frame(n))[:3] for n in (LIMIT, LIMIT + 1)]
        path = spec_file(tmp_path, progs, "to_port", PORT_ENTRY)
        with Pipeline(parse_spec(str(path)), engine=engine) as p:
            devmap = [fate(p, frame(n)) for n in (LIMIT, LIMIT + 2)]
        got[engine] = ifindex, devmap
    assert got["kernel"] == got["interp"]
    assert [r[1] for r in got["kernel"][0]] == ["interface", "redirect_mtu"]
    assert [r[1] for r in got["kernel"][1]] == ["interface", "redirect_mtu"]


CHECK_MTU = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
/* XDP_PASS when the frame fits ifindex 2's MTU (bpf_check_mtu), else XDP_DROP */
SEC("xdp") int fits(struct xdp_md *ctx)
{
	__u32 mtu = 0;
	return bpf_check_mtu(ctx, 2, &mtu, 0, 0) ? XDP_DROP : XDP_PASS;
}
"""


def test_kernel_engine_devices_have_the_pipeline_mtu(kernel: str, tmp_path: Path) -> None:  # noqa: F811
    """The kernel engine's veths get the pipeline's `mtu`: bpf_check_mtu on ifindex 2 (MTU 1000) answers as
    in the interpreter (fits up to MTU + 14 bytes), not as for the veth default of 1500."""
    obj = build_bpf(CHECK_MTU, tmp_path / "fits.o", what="the test program")
    got = {}
    for engine in ("interp", "kernel"):
        with Pipeline(parse_spec(str(spec_file(tmp_path, obj, "fits"))), engine=engine) as p:
            got[engine] = [fate(p, frame(n))[:2] for n in (MTU + 14, MTU + 15, 1514)]
    assert got["interp"] == [("pass", "xdp_pass"), ("drop", "xdp_drop"), ("drop", "xdp_drop")]
    assert got["kernel"] == got["interp"]
