"""The redirect MTU rule asked of the running kernel (skipped without root/BPF/veths, with the reason).

A live-frames test run (BPF_F_TEST_XDP_LIVE_FRAMES) really redirects: the frame enters on xs2 of the
throwaway namespace of tests/test_broadcast_kernel.py (`live` fixture: rx_count counts what arrives at
each veth's peer) and goes out of xs3, whose MTU is set to 1000 here (its peer keeps 1500, so veth's
own check at the receiving end is not what is measured). The answer: a frame of up to MTU + 18 bytes
leaves, one byte more is refused with -EMSGSIZE (the xdp_redirect_err tracepoint) -- for bpf_redirect
and for a devmap entry, with or without the entry's program, and a program that would shrink the frame
does not save it (the check is made when the frame is queued, before the program runs; a program that
grows a frame that passed it is not checked again). xdpsim's pipeline decides the same lengths alike.
"""

from __future__ import annotations

import errno
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kernel_fixtures import kernel  # noqa: F401 - the fixture
from test_broadcast_kernel import FRAME, Live, live, redirect_events  # noqa: F401 - the fixture

from xdpsim.isa import Instruction as I  # noqa: N817 - the instruction builder reads best short
from xdpsim.isa import encode, lddw
from xdpsim.pipeline.config import parse_spec
from xdpsim.pipeline.pipeline import Pipeline

MTU = 1000
LIMIT = MTU + 14 + 4
OUT = 3  # xs3
PROGRAMS = Path(__file__).resolve().parent.parent / "programs"
BPF_PROG_TYPE_XDP, BPF_FUNC_REDIRECT, BPF_FUNC_REDIRECT_MAP = 6, 23, 51
BPF_FUNC_XDP_ADJUST_META, BPF_FUNC_XDP_ADJUST_TAIL = 54, 65


def frame(n: int) -> bytes:
    return FRAME + bytes(n - len(FRAME))


class Probe:
    """Hand-written programs in the live namespace: to xs3 by bpf_redirect, or through `ports` key 1."""

    def __init__(self, live: Live) -> None:  # noqa: F811 - the fixture's value
        from xdpsim.kernel import bpf

        self.live = live
        self.map_fd = live.c.maps["ports"].fd.fd
        self.progs: list[Any] = []
        self.to_ifindex = self._load([I(0xB7, 1, 0, 0, OUT), I(0xB7, 2, 0, 0, 0),
                                      I(0x85, 0, 0, 0, BPF_FUNC_REDIRECT), I(0x95)], "xs_mtu_if")
        self.to_map = self._load([*lddw(1, self.map_fd, src=1), I(0xB7, 2, 0, 0, 1), I(0xB7, 3, 0, 0, 0),
                                  I(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP), I(0x95)], "xs_mtu_map")
        # the same with 32 bytes of XDP metadata in front of the frame (bpf_xdp_adjust_meta(ctx, -32))
        # (XDP_DROP if the helper refused: then nothing is sent and the test fails)
        self.to_ifindex_meta = self._load([I(0xB7, 2, 0, 0, -32), I(0x85, 0, 0, 0, BPF_FUNC_XDP_ADJUST_META),
                                           I(0x15, 0, 0, 2, 0), I(0xB7, 0, 0, 0, 1), I(0x95),
                                           I(0xB7, 1, 0, 0, OUT), I(0xB7, 2, 0, 0, 0),
                                           I(0x85, 0, 0, 0, BPF_FUNC_REDIRECT), I(0x95)], "xs_mtu_meta")
        # devmap entry programs: bpf_xdp_adjust_tail(ctx, delta), XDP_PASS if it worked, else XDP_DROP
        self.tail = {delta: self._load([I(0xB7, 2, 0, 0, delta), I(0x85, 0, 0, 0, BPF_FUNC_XDP_ADJUST_TAIL),
                                        I(0xB7, 6, 0, 0, 2), I(0x15, 0, 0, 1, 0), I(0xB7, 6, 0, 0, 1),
                                        I(0xBF, 0, 6), I(0x95)], f"xs_mtu_t{delta & 0xFFF}",
                                       bpf.AttachType.XDP_DEVMAP)
                     for delta in (-200, 200)}

    def _load(self, insns: list[I], name: str, attach: int = 0) -> Any:
        from xdpsim.kernel import bpf

        p = bpf.prog_load(BPF_PROG_TYPE_XDP, encode(insns), name=name, expected_attach_type=attach)
        self.progs.append(p)
        return p

    def entry(self, prog: Any | None) -> None:
        with self.live.c.netns.entered():
            self.live.c.maps["ports"].update(1, struct.pack("<II", OUT, prog.fd.fd if prog else 0))

    def run(self, prog: Any, data: bytes) -> int:
        """Frames xs3 sent because of one live-frames run of `prog` on `data` arriving at xs2."""
        from xdpsim.engines.kernel import XDP_MD
        from xdpsim.kernel import bpf

        before = self.live.received()
        with self.live.c.netns.entered():
            bpf.prog_test_run(prog.fd.fd, data, ctx_in=XDP_MD.pack(0, len(data), 0, 2, 0, 0), data_out_size=0,
                              flags=bpf.BPF_F_TEST_XDP_LIVE_FRAMES)
        for _ in range(20):  # the peer's NAPI may lag the end of the run
            got = self.live.received()[OUT] - before[OUT]
            if got:
                return got
            time.sleep(0.01)
        return 0

    def close(self) -> None:
        for p in self.progs:
            p.fd.close()


@pytest.fixture(scope="module")
def probe(live: Live) -> Iterator[Probe]:  # noqa: F811 - the fixture
    ns = live.c.netns.name
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "dev", f"xs{OUT}", "mtu", str(MTU)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot set the MTU of xs{OUT}: {e}")
    p = Probe(live)
    try:
        yield p
    finally:
        p.close()
        subprocess.run(["ip", "-n", ns, "link", "set", "dev", f"xs{OUT}", "mtu", "1500"], check=False)


def test_bpf_redirect_sends_up_to_mtu_plus_18_bytes(probe: Probe) -> None:
    sent = [probe.run(probe.to_ifindex, frame(n)) for n in (LIMIT - 1, LIMIT, LIMIT + 1, 1500)]
    assert sent == [1, 1, 0, 0]


def test_xdp_metadata_does_not_count(probe: Probe) -> None:
    """xdp_get_frame_len is data_end - data: 32 bytes of metadata in front change nothing."""
    sent = [probe.run(probe.to_ifindex_meta, frame(n)) for n in (LIMIT, LIMIT + 1)]
    assert sent == [1, 0]


@pytest.mark.parametrize("program", [None, -200, 200])
def test_devmap_entry_refuses_over_mtu_plus_18_with_emsgsize(probe: Probe, program: int | None) -> None:
    """Through `ports` (entry -> xs3), with no entry program, one shrinking the frame by 200 bytes (it
    cannot bring a frame back under the limit: not run), one growing it by 200 (the grown frame leaves:
    no second check)."""
    probe.entry(probe.tail[program] if program is not None else None)
    with redirect_events(probe.map_fd) as events:
        assert probe.run(probe.to_map, frame(LIMIT)) == 1
        assert events() == {"ok": 1, "err": 0, "last_err": 0}
        assert probe.run(probe.to_map, frame(LIMIT + 1)) == 0
        assert events() == {"ok": 1, "err": 1, "last_err": -errno.EMSGSIZE}


def test_the_pipeline_decides_what_the_kernel_does(probe: Probe, tmp_path: Path) -> None:
    """redirect.o's redirect_ifindex (to ifindex 2, whose MTU is 1000 in the pipeline) in the
    interpreter's pipeline, and bpf_redirect to xs3 (MTU 1000) in the kernel: the same lengths leave, the
    same are dropped (`redirect_mtu`)."""
    from test_redirect_mtu import REDIRECT, spec_file

    lengths = [60, LIMIT - 1, LIMIT, LIMIT + 1, LIMIT + 2, 1500, 1518]
    with Pipeline(parse_spec(str(spec_file(tmp_path, REDIRECT, "redirect_ifindex", mtu=MTU))),
                  engine="interp") as p:
        sim = [p.process(p.by_ifindex[3], frame(n), 0).reason for n in lengths]
    kernel_says = ["interface" if probe.run(probe.to_ifindex, frame(n)) else "redirect_mtu" for n in lengths]
    assert sim == kernel_says
    assert sim.count("redirect_mtu") == 4
