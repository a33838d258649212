"""Robustness: tcpdump's 830 test captures (many hostile) and randomly damaged files.

Every capture is read to its end or refused with a CaptureError naming the file and the offset: no
other exception, no hang (a packet cap per file), and every record read is yielded or reported.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xdpsim.errors import CaptureError
from xdpsim.io import PcapngWriter, PcapWriter, open_capture, read_batches
from xdpsim.io import linktype as lt
from xdpsim.io.reader import CaptureReader

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "pcaps" / "tcpdump"
PACKET_CAP = 200_000  # far above any corpus file: more means the reader is looping


def drain(path: Path, ethernet: bool = True) -> tuple[CaptureReader | None, list, CaptureError | None]:
    """(reader, packets, error): the reader is None when the file was refused at open."""
    reader = None
    packets: list = []
    try:
        reader = open_capture(path, ethernet=ethernet)
        last = reader.offset
        for p in reader:
            packets.append(p)
            assert len(packets) <= PACKET_CAP, f"{path}: more than {PACKET_CAP} packets, reader looping?"
            assert reader.offset > last or reader.format == "pcapng", f"{path}: no progress at {last}"
            last = reader.offset
    except CaptureError as e:
        assert e.path == str(path), e
        assert e.offset is not None and 0 <= e.offset <= path.stat().st_size, e
        return reader, packets, e
    return reader, packets, None


def check_accounting(reader: CaptureReader | None, packets: list, size: int) -> None:
    if reader is None:
        return
    assert reader.packets == len(packets)
    assert [p.index for p in packets] == list(range(len(packets)))
    assert reader.records == reader.packets + reader.skipped, reader
    for w in reader.warnings:
        assert 0 <= w.offset <= size and w.path == reader.path


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.iterdir() if p.suffix in (".pcap", ".pcapng"))


@pytest.mark.skipif(not corpus_files(), reason=f"tcpdump corpus not found at {CORPUS}")
def test_tcpdump_corpus() -> None:
    files = corpus_files()
    read = refused = packets = warnings = raw_packets = 0
    reasons: dict[str, int] = {}
    for path in files:
        reader, pkts, err = drain(path)
        check_accounting(reader, pkts, path.stat().st_size)
        if err is None:
            read += 1
            packets += len(pkts)
            warnings += len(reader.warnings) if reader else 0
        else:
            refused += 1
            key = str(err).split(": ", 1)[1].split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
        # Framing without conversion: every file's records, whatever the link type.
        raw_reader, raw, raw_err = drain(path, ethernet=False)
        check_accounting(raw_reader, raw, path.stat().st_size)
        raw_packets += len(raw)
        if err is None:
            # the batch reader agrees with the streaming one
            br = read_batches(path, 64)
            flat = [p.data for b in br for p in b.packets()]
            assert flat == [p.data for p in pkts], path
            assert br.warnings == reader.warnings
    assert read + refused == len(files) >= 800
    assert read > 400 and packets > 5000
    print(f"\ntcpdump corpus: {len(files)} files, {read} read ({packets} packets, {warnings} warnings), "
          f"{refused} refused; without conversion {raw_packets} records")
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"  {n:4d} {reason}")


# -- random damage --------------------------------------------------------------------------------

FRAMES = [bytes([i]) * 6 + bytes(6) + b"\x08\x00" + bytes(range(i * 7 % 50)) for i in range(10)]


def _pcap_image() -> tuple[bytes, list[int]]:
    buf = io.BytesIO()
    with PcapWriter(buf, nanosecond=False, snaplen=1000) as w:
        ends = []
        for i, f in enumerate(FRAMES):
            w.write(f, 1_700_000_000_000_000_000 + i * 1000)
            ends.append(buf.tell())
    return buf.getvalue(), ends


def _pcapng_image() -> tuple[bytes, list[int]]:
    buf = io.BytesIO()
    w = PcapngWriter(buf)
    w.add_interface(name="a")
    w.add_interface(name="b", snaplen=1000)
    ends = []
    for i, f in enumerate(FRAMES):
        w.write(f, 1_700_000_000_000_000_000 + i, interface=i % 2)
        ends.append(buf.tell())
    w.close()
    return buf.getvalue(), ends


PCAP, PCAP_ENDS = _pcap_image()
PCAPNG, PCAPNG_ENDS = _pcapng_image()


def damage(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> tuple[bytes, int]:
    """The damaged image and the offset of the first damaged byte."""
    b = bytearray(data)
    first = len(b)
    for pos, val in flips:
        pos %= len(b)
        if b[pos] != val:
            b[pos] = val
            first = min(first, pos)
    if cut is not None:
        cut %= len(b) + 1
        del b[cut:]
        first = min(first, cut)
    return bytes(b), first


flips_st = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6)
cut_st = st.one_of(st.none(), st.integers(0, 10_000))


@pytest.mark.parametrize("image,ends", [(PCAP, PCAP_ENDS), (PCAPNG, PCAPNG_ENDS)], ids=["pcap", "pcapng"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=flips_st, cut=cut_st)
def test_random_damage(tmp_path: Path, image: bytes, ends: list[int], flips, cut) -> None:
    data, first = damage(image, flips, cut)
    path = tmp_path / "damaged"
    path.write_bytes(data)
    reader, packets, err = drain(path)
    check_accounting(reader, packets, len(data))
    # The records wholly before the first damaged byte all come out, unchanged and first.
    intact = sum(1 for e in ends if e <= first)
    assert len(packets) >= intact
    assert [p.data for p in packets[:intact]] == FRAMES[:intact]
    if not flips and cut is not None and reader is not None and ends[0] <= len(data):
        # A clean cut: exactly the whole records, and one warning if a record was cut in two.
        assert len(packets) == intact and err is None
        assert len(reader.warnings) == (0 if len(data) in ends else 1)
    # The batch reader (a separate record walk for pcap) agrees on packets, warnings and error.
    try:
        br = read_batches(path, 3)
        got, berr = [], None
        try:
            for b in br:
                got.extend(b.packets())
        except CaptureError as e:
            berr = e
    except CaptureError as e:
        assert reader is None and str(e) == str(err)
        return
    assert [p.data for p in got] == [p.data for p in packets]
    assert [p.ts_ns for p in got] == [p.ts_ns for p in packets]
    assert br.warnings == reader.warnings
    assert str(berr) == str(err)


def test_damage_helper_marks_first_byte() -> None:
    data, first = damage(PCAP, [(30, PCAP[30] ^ 1), (5, PCAP[5])], 100)
    assert first == 30 and len(data) == 100 and data[30] == PCAP[30] ^ 1
    assert struct.unpack_from("<I", PCAP)[0] == 0xA1B2C3D4


@settings(max_examples=300, deadline=None)
@given(linktype=st.sampled_from(sorted(lt.SUPPORTED)), data=st.binary(max_size=64))
def test_conversion_of_arbitrary_records(linktype: int, data: bytes) -> None:
    """Any record of a supported link type becomes an Ethernet frame or is refused with a reason."""
    convert = lt.converter(linktype)
    assert convert is not None
    try:
        frame = convert(data)
    except lt.Unconvertible as e:
        assert str(e)
        return
    assert len(frame) >= 14 or linktype == lt.ETHERNET
    if linktype != lt.ETHERNET:
        assert frame[:6] == lt.SYNTH_DST and data.endswith(frame[14:])
