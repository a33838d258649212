"""Packets of a capture for tests: reading, sampling, readable ids (index and scapy summary), and the
text a failure report shows (summary, hexdump). scapy is imported only when a summary is asked for."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


def _ether() -> Any:
    """scapy's Ether with scapy's whole default layer set bound (`scapy.all`), so a summary (and so a
    test id) does not depend on which layers other code happened to import first: with only
    scapy.layers.inet loaded a DNS query reads `UDP ... Raw`, once anything imports scapy.layers.dns
    it reads `DNS Qry`."""
    import scapy.all  # noqa: F401 - binds every default layer
    from scapy.layers.l2 import Ether

    return Ether


def summary(data: bytes) -> str:
    """scapy's one-line summary of an Ethernet frame ("Ether / IP / TCP 10.0.0.1:1234 > ...")."""
    try:
        Ether = _ether()
        return str(Ether(data).summary())
    except Exception:  # scapy missing or a frame it cannot dissect: the length still identifies it
        return f"{len(data)} bytes"


def hexdump(data: bytes, limit: int = 256) -> list[str]:
    """tcpdump -xx style lines: offset, 16 bytes in hex, printable ASCII."""
    out = []
    for off in range(0, min(len(data), limit), 16):
        chunk = data[off:off + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        out.append(f"{off:04x}  {chunk.hex(' '):47}  {text}")
    if len(data) > limit:
        out.append(f"... ({len(data) - limit} more bytes)")
    return out


@dataclass(frozen=True)
class CapturedPacket:
    """One packet of a capture: `index` in the file, `data` (Ethernet frame), `ts_ns`, `interface`.
    `bytes(p)` is the frame, so it can be passed wherever a packet is expected."""

    index: int
    data: bytes
    ts_ns: int = 0
    interface: int = 0
    source: str = ""

    def __bytes__(self) -> bytes:
        return self.data

    def __len__(self) -> int:
        return len(self.data)

    @property
    def summary(self) -> str:
        return summary(self.data)

    def scapy(self) -> Any:
        return _ether()(self.data)

    def id(self) -> str:
        return f"{self.index}-{self.summary.replace(' / ', ' ')}"


def sample_indices(n: int, k: int | None) -> list[int]:
    """`k` indices spread evenly over `n` (all of them when k is None or >= n); deterministic."""
    if k is None or k >= n:
        return list(range(n))
    if k <= 0:
        return []
    return sorted({(i * n) // k for i in range(k)})


def read_capture(path: str | os.PathLike[str], sample: int | None = None) -> list[CapturedPacket]:
    from ..io import open_capture

    src = os.fspath(path)
    pkts = [CapturedPacket(p.index, p.data, p.ts_ns, p.interface, src) for p in open_capture(path)]
    return [pkts[i] for i in sample_indices(len(pkts), sample)]


def packets_from(path: str | os.PathLike[str], sample: int | None = None) -> list[Any]:
    """`@pytest.mark.parametrize("packet", packets_from("x.pcap", sample=50))`: one test per packet
    (every packet, or `sample` of them spread over the file), ids "index-summary"."""
    import pytest

    return [pytest.param(p, id=p.id()) for p in read_capture(path, sample)]
