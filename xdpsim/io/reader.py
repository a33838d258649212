"""What every capture reader shares: the bookkeeping that makes each record yielded or reported.

Invariant after iteration (whether it ended normally or with a CaptureError):
`records == packets + skipped`, where `records` counts the records (pcap) or packet blocks (pcapng) the
reader met, `packets` those it yielded and `skipped` those it reported instead: the warnings with
`record=True`, plus one when a CaptureError was raised at a record. `warnings` keeps the first 1000 of
each kind and counts all of them (`warnings.counts`), so memory stays constant whatever the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import CaptureError
from .records import CaptureWarning, Packet, WarningList

# libpcap's largest snapshot length (MAXIMUM_SNAPLEN): a record claiming more is damage, not data.
MAX_SNAPLEN = 262144


class CaptureReader:
    """Base of PcapReader and PcapngReader: an iterable of Packet with `.warnings` and `.offset`."""

    format = "capture"

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        self.warnings = WarningList()
        self.offset = 0  # file offset of the next record / block to read
        self.records = 0
        self.packets = 0
        self.skipped = 0
        self._f: BinaryIO | None = None
        self._gen: Iterator[Packet] | None = None
        try:
            self._f = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as e:
            raise CaptureError(f"cannot open: {e.strerror}", self.path) from e
        self.file_size = os.fstat(self._f.fileno()).st_size

    # -- bookkeeping ------------------------------------------------------------------------------
    def _warn(self, offset: int, message: str, kind: str, record: bool = False) -> None:
        self.warnings.add(CaptureWarning(self.path, offset, message, kind, record))
        if record:
            self.skipped += 1

    def _fatal(self, offset: int, message: str, record: bool = False) -> CaptureError:
        """The error to raise; counts the record it stops at as reported."""
        if record:
            self.skipped += 1
        self.close()
        return CaptureError(message, self.path, offset)

    def _read(self, n: int) -> bytes:
        assert self._f is not None
        return self._f.read(n)

    # -- iteration --------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Packet]:
        """One pass over the file: iterating again continues where the last iteration stopped."""
        if self._gen is None:
            self._gen = self._packets() if self._f is not None else iter(())
        return self._gen

    def _packets(self) -> Iterator[Packet]:
        raise NotImplementedError

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.path!r} records={self.records} packets={self.packets} "
                f"warnings={len(self.warnings)}>")
