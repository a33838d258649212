"""What capture readers hand out: packets, and the warnings that account for records not handed out."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

# Warnings kept per kind; beyond that only counted (a file where every record is damaged must not make
# a reader's memory grow with the file).
WARNINGS_KEPT_PER_KIND = 1000


class Packet(NamedTuple):
    """One captured packet.

    `index` counts the packets a reader yielded (0, 1, 2, ...), `ts_ns` is the capture timestamp in
    integer nanoseconds since the epoch, `data` the frame as an Ethernet frame (a synthesised Ethernet
    header for other link types, see linktype.py), `orig_len` the length on the wire of the original
    record (plus the synthesised header's 14 bytes where one was added), `interface` the interface's
    index within the file (always 0 for pcap; pcapng numbers interfaces across sections in file order)
    and `linktype` the link type the record was captured with (before synthesis).
    """

    index: int
    ts_ns: int
    data: bytes
    orig_len: int
    interface: int
    linktype: int


@dataclass(frozen=True)
class CaptureWarning:
    """Damage a reader survived. `record` is true when a record was read but not yielded because of it.

    kinds: "truncated" (the file ends inside a record or block: reading stops), "snaplen" (a record
    longer than the snap length, yielded whole), "orig_len" (original length below the captured length,
    raised to it), "bad_record" (a framed pcapng block whose contents are inconsistent: skipped),
    "unconvertible" (a record that cannot be given an Ethernet header: skipped), "option" (a malformed
    pcapng option list: the rest of its options ignored), "timestamp" (a pcapng timestamp outside
    int64 nanoseconds: clamped).
    """

    path: str
    offset: int
    message: str
    kind: str
    record: bool = False

    def __str__(self) -> str:
        return f"{self.path} at offset {self.offset}: {self.message}"


class WarningList(list):
    """The warnings of one reader: a list of the first WARNINGS_KEPT_PER_KIND of each kind, with
    `counts` (every warning, by kind) and `dropped` (how many were counted but not kept)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.dropped = 0

    def add(self, w: CaptureWarning) -> None:
        self.counts[w.kind] += 1
        if self.counts[w.kind] <= WARNINGS_KEPT_PER_KIND:
            self.append(w)
        else:
            self.dropped += 1
