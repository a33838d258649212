"""Unit tests of flow_parser (parser.c) against capture.pcap, with the xdpsim pytest plugin.

    pytest                                   # golden outcomes, every packet vs a model, hand-made packets
    pytest --xdpsim-cov --xdpsim-cov-html htmlcov   # ... and which lines of parser.c the traffic ran
    PARSER_OBJ=parser_broken.o pytest        # after `make broken`: watch the tests catch the slip

The object under test is parser.o, or $PARSER_OBJ.
"""

from __future__ import annotations

import os
import struct

import pytest

from xdpsim.testing import XDP_DROP, XDP_PASS

HERE = os.path.dirname(os.path.abspath(__file__))
OBJ = os.path.join(HERE, os.environ.get("PARSER_OBJ", "parser.o"))


def expected_verdict(frame: bytes) -> int:
    """What flow_parser should do, written independently of the C: the specification the tests hold
    the program to."""
    if len(frame) < 14:
        return XDP_DROP
    if struct.unpack_from("!H", frame, 12)[0] != 0x0800:
        return XDP_PASS
    if len(frame) < 34 or frame[14] & 0x0F < 5:
        return XDP_DROP
    l4 = 14 + (frame[14] & 0x0F) * 4
    proto = frame[23]
    if proto in (6, 17):
        if len(frame) < l4 + (20 if proto == 6 else 8):
            return XDP_DROP
        dport = struct.unpack_from("!H", frame, l4 + 2)[0]
        if (proto, dport) in ((6, 23), (17, 19)):
            return XDP_DROP
    return XDP_PASS


def test_golden_outcomes(xdpsim_golden):
    """Every packet's verdict and output bytes as recorded (by the kernel) in golden.jsonl."""
    xdpsim_golden(OBJ, "capture.pcap", "golden.jsonl")


@pytest.mark.xdpsim_capture("capture.pcap")
def test_every_packet_follows_the_model(bpf_object, packet):
    result = bpf_object(OBJ).run(packet)
    assert result.error is None
    assert result.action == expected_verdict(packet.data)


def test_telnet_is_dropped(bpf_object, scapy):
    frame = scapy.Ether() / scapy.IP(dst="10.0.0.2") / scapy.TCP(dport=23, flags="S")
    assert bpf_object(OBJ).run(frame).action == XDP_DROP


def test_ssh_passes(bpf_object, scapy):
    frame = scapy.Ether() / scapy.IP(dst="10.0.0.2") / scapy.TCP(dport=22, flags="S")
    result = bpf_object(OBJ).run(frame)
    assert result.action == XDP_PASS
    assert result.data == bytes(frame)  # a parser never rewrites


def test_stats_count_every_verdict(bpf_object, capture):
    obj = bpf_object(OBJ, fresh=True)  # its own maps: the counts below are this test's alone
    packets = capture("capture.pcap")
    verdicts = [obj.run(p).action for p in packets]
    counts = [int.from_bytes(obj.maps["stats"][i], "little") for i in range(3)]  # pass, malformed, blocked
    assert sum(counts) == len(packets)
    assert counts[0] == verdicts.count(XDP_PASS)
