"""The running kernel's BPF_PROG_TEST_RUN limits that `xdpsim diff` works around (difftest/engines.py's
skip rules): if a kernel moves one, these say so before the differential suite reports noise."""

from __future__ import annotations

from pathlib import Path

import kernel_fixtures
import pytest

from xdpsim.difftest.engines import ETH_HLEN, MAX_LINEAR, MAX_SKB_TEST
from xdpsim.engines.kernel import KernelCollection
from xdpsim.errors import KernelError
from xdpsim.loader import load_object

kernel = kernel_fixtures.kernel
PROGRAMS = Path(__file__).resolve().parent.parent / "programs"
ARP = b"\xff" * 12 + b"\x08\x06"


def _runs(fn) -> bool:  # noqa: ANN001
    try:
        fn()
        return True
    except KernelError:
        return False


def test_xdp_limits(kernel: str) -> None:
    with KernelCollection(load_object(PROGRAMS / "parser.o")) as k:
        run = k.run_xdp
        assert _runs(lambda: run("packet_parser", ARP))
        assert not _runs(lambda: run("packet_parser", ARP[: ETH_HLEN - 1]))
        # a single-buffer program still runs on a longer frame (the rest goes in fragments): the reason
        # the diff does not run such frames anywhere
        assert _runs(lambda: run("packet_parser", ARP + bytes(MAX_LINEAR + 100)))


def test_skb_limits(kernel: str) -> None:
    with KernelCollection(load_object(PROGRAMS / "parser_tc.o")) as k:
        def run(data: bytes) -> bool:
            return _runs(lambda: k.run_skb("packet_parser", data))

        assert run(ARP + bytes(MAX_SKB_TEST - ETH_HLEN))
        assert not run(ARP + bytes(MAX_SKB_TEST - ETH_HLEN + 1))
        assert not run(ARP[: ETH_HLEN - 1])


@pytest.mark.parametrize(("ethertype", "need"), [(b"\x08\x00", 20), (b"\x86\xdd", 40)])
def test_skb_needs_the_network_header(kernel: str, ethertype: bytes, need: int) -> None:
    with KernelCollection(load_object(PROGRAMS / "parser_tc.o")) as k:
        frame = b"\xff" * 12 + ethertype + b"\x45" + bytes(need - 1)
        assert _runs(lambda: k.run_skb("packet_parser", frame))
        assert not _runs(lambda: k.run_skb("packet_parser", frame[:-1]))


def test_xdp_metadata_limits(kernel: str) -> None:
    """ctx_in metadata: multiples of 4 up to 216 bytes (what bpf_xdp_adjust_meta allows on 6.18)."""
    with KernelCollection(load_object(PROGRAMS / "parser.o")) as k:
        for n, ok in ((4, True), (216, True), (220, False), (6, False)):
            assert _runs(lambda n=n: k.run_xdp("packet_parser", ARP + bytes(46), meta=bytes(n))) is ok, n
