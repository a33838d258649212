"""Capture files: pcap and pcapng readers and writers, batches for fast replay, the reference workload.

Readers yield `Packet(index, ts_ns, data, orig_len, interface, linktype)` with `data` an Ethernet frame
(linktype.py documents the header synthesised for other link types), keep `.warnings` (damage they
survived, each naming the file offset) and `.offset`, and raise `CaptureError(message, path, offset)`
for damage they cannot get past, after yielding every packet before it.
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
