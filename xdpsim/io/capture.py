"""Open a capture file of either format: the magic decides."""

from __future__ import annotations

import os

from ..errors import CaptureError
from .pcap import PcapReader
from .pcapng import PcapngReader, is_pcapng
from .reader import CaptureReader


def open_capture(path: str | os.PathLike[str], *, ethernet: bool = True) -> CaptureReader:
    """A PcapReader or PcapngReader for `path`; CaptureError (offset 0) when it is neither."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CaptureError(f"cannot open: {e.strerror}", p) from e
    if is_pcapng(head):
        return PcapngReader(p, ethernet=ethernet)
    return PcapReader(p, ethernet=ethernet)
