"""Capture files: pcap and pcapng readers and writers, batches for fast replay, the reference workload.

Readers yield `Packet(index, ts_ns, data, orig_len, interface, linktype)` with `data` an Ethernet frame
(linktype.py documents the header synthesised for other link types), keep `.warnings` (damage they
survived, each naming the file offset) and `.offset`, and raise `CaptureError(message, path, offset)`
for damage they cannot get past, after yielding every packet before it.

Damage policy (pcap.py and pcapng.py give the full lists):

- CaptureError at open: bad magic, truncated file header, unsupported version or link type (pcapng:
  at the first packet on an interface of an unsupported link type).
- CaptureError at the record/block: a pcap record claiming more than 262144 bytes; a pcapng block
  length below 12, not a multiple of 4 or above 16 MiB, a trailer mismatch, a bad byte-order magic.
- warning "truncated" (record=True), reading stops: the file ends inside a record header, record or
  block.
- warning "snaplen": a record longer than the snap length, yielded whole.
- warning "orig_len": original length below the captured length, taken as the captured length.
- warning "bad_record" (record=True), block skipped: a pcapng packet block inconsistent inside
  (captured length beyond the block, unknown interface).
- warning "unconvertible" (record=True), record skipped: no Ethernet form (raw IP version 5, SLL
  netlink, ...).
- warning "option" / "timestamp": malformed pcapng options ignored; timestamp clamped to int64 ns.

Every reader keeps `records == packets + skipped`; BatchReader (read_batches) gives the same packets,
warnings and errors as the streaming readers.
"""

from .batch import Batch, BatchReader, read_batches
from .capture import open_capture
from .pcap import PcapReader, PcapWriter
from .pcapng import Interface, PcapngReader, PcapngWriter
from .reader import MAX_SNAPLEN, CaptureReader
from .records import CaptureWarning, Packet

__all__ = [
    "MAX_SNAPLEN",
    "Batch",
    "BatchReader",
    "CaptureReader",
    "CaptureWarning",
    "Interface",
    "Packet",
    "PcapReader",
    "PcapWriter",
    "PcapngReader",
    "PcapngWriter",
    "open_capture",
    "read_batches",
]
